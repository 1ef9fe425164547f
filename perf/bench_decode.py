"""The feature store's ceiling: clips per second through `FeatureStore.compute` when the extractor
costs nothing, so decoding and resampling (22.05 kHz WAV -> 16 kHz), planning and shard writing
are all that is timed; decode threads 1 against more, in one run. On a GPU the extractor can run
faster than one thread decodes: this says where the store, not the model, would be the limit.

The clips are synthetic (noise under a tone, 1-10 s); each store first hashes every clip (what
a first run does; timed apart), then computes. Usage:

    python perf/bench_decode.py [--clips 600] [--threads 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from sourcetrace.attribution.extractors.base import FeatureExtractor


class FreeExtractor(FeatureExtractor):
    """A vector of zeros per clip, at once: the store's own costs alone."""

    max_batch_seconds = 120.0

    @property
    def fingerprint(self) -> dict:
        return {"benchmark": "free"}

    @property
    def name(self) -> str:
        return "free"

    def min_samples(self) -> int:
        return 1

    def extract(self, waves):
        return np.zeros((len(waves), 4), np.float32)


def decode_ceiling(corpus, threads: list[int], max_batch_seconds: float = 120.0) -> dict:
    """Clips per second through the store for each decode thread count (a fresh store each)."""
    from sourcetrace.attribution.hash_cache import RACY_WINDOW_NS
    from sourcetrace.attribution.store import FeatureStore

    extractor = FreeExtractor()
    extractor.max_batch_seconds = max_batch_seconds
    # A hash taken within the racy window of a file's last change is taken again by `compute`:
    # wait until every clip is older, so hashing stays out of the timed part.
    newest = max(os.stat(corpus.audio_path(row)).st_ctime_ns for row in corpus.rows)
    time.sleep(max(0.0, (newest + RACY_WINDOW_NS - time.time_ns()) / 1e9 + 0.1))
    rows = {}
    for n in threads:
        root = Path(tempfile.mkdtemp(prefix="bench-decode-"))
        store = FeatureStore(corpus, extractor, root=root, decode_threads=n)
        t0 = time.perf_counter()
        store.audio_hashes()  # a first run hashes every clip; later runs find the hash cache
        hash_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = store.compute(progress=False)
        seconds = time.perf_counter() - t0
        rows[str(n)] = {"hash_s": hash_s, "hash_clips_per_s": len(corpus.rows) / hash_s, "seconds": seconds,
                        "clips_per_s": report.computed / seconds}
        shutil.rmtree(root)
    base = rows[str(threads[0])]
    for row in rows.values():
        row["speedup"] = row["clips_per_s"] / base["clips_per_s"]
        row["hash_speedup"] = row["hash_clips_per_s"] / base["hash_clips_per_s"]
    return {"clips": len(corpus.rows), "max_batch_seconds": max_batch_seconds, "threads": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=600)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--json")
    args = parser.parse_args()
    from gpu_check import synthetic_corpus

    work = Path(tempfile.mkdtemp(prefix="bench-decode-corpus-"))
    corpus = synthetic_corpus(work, args.clips, (1.0, 10.0), seed=2)
    result = decode_ceiling(corpus, [int(n) for n in args.threads.split(",")])
    shutil.rmtree(work)
    for n, row in result["threads"].items():
        print(f"{n} decode thread(s): {row['clips_per_s']:.0f} clips/s ({row['speedup']:.2f}x); first hashing "
              f"{row['hash_clips_per_s']:.0f} clips/s ({row['hash_speedup']:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
