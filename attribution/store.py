"""Feature store: pooled vectors per (corpus, extractor fingerprint), keyed by clip id and audio hash.

Layout, under `<corpus>/features/` unless another root is given:

    <extractor-name>-<fingerprint[:16]>/
        extractor.json        full fingerprint (what produced these vectors)
        shard-000001.npz ...  clip_id, audio_sha256, vectors; each written to a temp file and renamed
        rejects.csv           clips that could not serve, with the reason (last run)
    audio-sha256.json         hash cache, keyed by path, size and mtime

A vector is reused only if both its clip id and the current sha256 of the clip's audio match, and
it lives in the folder of the extractor's exact fingerprint: a changed file or extractor is
recomputed, never served stale. Killing a run loses at most the clips since the last shard.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from sourcetrace.audio import AudioRejected, load_audio
from sourcetrace.corpus import Corpus
from sourcetrace.fileio import atomic_path, sha256_file, write_json_atomic, write_text_atomic

from .extractors.base import FeatureExtractor

SHARD_MAX_CLIPS = 1024
SHARD_MAX_SECONDS = 30.0


@dataclass
class ExtractionReport:
    computed: int = 0
    reused: int = 0
    rejects: list[tuple[str, str, str]] = field(default_factory=list)  # clip_id, path, reason

    @property
    def ok(self) -> bool:
        return not self.rejects


class MissingFeatures(KeyError):
    pass


class FeatureStore:
    def __init__(self, corpus: Corpus, extractor: FeatureExtractor, root: str | Path | None = None):
        self.corpus = corpus
        self.extractor = extractor
        self.root = Path(root) if root else corpus.root / "features"
        self.dir = self.root / f"{extractor.name}-{extractor.fingerprint_hash[:16]}"

    # ---- audio hashes -------------------------------------------------------------------------
    def audio_hashes(self) -> dict[str, str]:
        """clip_id -> sha256 of its audio file, re-hashing only files whose size or mtime changed."""
        cache_path = self.root / "audio-sha256.json"
        try:
            cache = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            cache = {}
        out, changed = {}, False
        for row in self.corpus.rows:
            path = self.corpus.audio_path(row)
            stat = path.stat()
            entry = cache.get(row["path"])
            if not entry or entry["size"] != stat.st_size or entry["mtime_ns"] != stat.st_mtime_ns:
                entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(path)}
                cache[row["path"]] = entry
                changed = True
            out[row["clip_id"]] = entry["sha256"]
        if changed:
            write_json_atomic(cache_path, cache)
        return out

    # ---- shards -------------------------------------------------------------------------------
    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npz"))

    def _index(self) -> dict[tuple[str, str], tuple[Path, int]]:
        index = {}
        for shard in self._shards():
            with np.load(shard, allow_pickle=False) as data:
                for row, key in enumerate(zip(data["clip_id"].tolist(), data["audio_sha256"].tolist())):
                    index[key] = (shard, row)
        return index

    def _write_shard(self, clip_ids: list[str], hashes: list[str], vectors: list[np.ndarray], prefix: str = "shard-") -> None:
        existing = sorted(self.dir.glob(f"{prefix}[0-9]*.npz"))
        number = int(existing[-1].stem.rsplit("-", 1)[1]) + 1 if existing else 1
        with atomic_path(self.dir / f"{prefix}{number:06d}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, clip_id=np.array(clip_ids), audio_sha256=np.array(hashes),
                         vectors=np.stack(vectors).astype(np.float32))

    # ---- compute ------------------------------------------------------------------------------
    def compute(self, progress: bool = True, part: tuple[int, int] = (0, 1)) -> ExtractionReport:
        """Compute every missing vector; reject (with reason) clips that cannot serve.

        `part=(k, n)`: only the clips at positions k, k + n, ... of the manifest (one task of a job
        array); parts write their own shard files, so n processes can run at once."""
        index_k, count = part
        prefix = "shard-" if count == 1 else f"shard-p{index_k:04d}of{count:04d}-"
        from tqdm import tqdm

        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / "extractor.json", self.extractor.fingerprint)
        hashes = self.audio_hashes()
        index = self._index()
        report = ExtractionReport()
        todo = []
        for row in self.corpus.rows[index_k::count]:
            if (row["clip_id"], hashes[row["clip_id"]]) in index:
                report.reused += 1
            else:
                todo.append(row)
        # Durations from the headers (no decoding) let batches group clips of similar length.
        lengths = []
        for row in todo:
            try:
                info = sf.info(str(self.corpus.audio_path(row)))
                lengths.append(int(info.frames * self.extractor.sample_rate / max(info.samplerate, 1)))
            except Exception:
                lengths.append(0)  # unreadable: rejected with its reason when loaded
        batches = self.extractor.plan_batches(lengths)
        pending: tuple[list[str], list[str], list[np.ndarray]] = ([], [], [])
        last_flush = time.monotonic()
        bar = tqdm(total=len(todo), unit="clip", desc=self.extractor.name, disable=not progress or not todo)
        for batch in batches:
            waves, kept = [], []
            for i in batch:
                row = todo[i]
                try:
                    wave = load_audio(self.corpus.audio_path(row), self.extractor.sample_rate)
                    if len(wave) < self.extractor.min_samples():
                        raise AudioRejected(row["path"], f"shorter than the extractor's receptive field "
                                            f"({len(wave)} < {self.extractor.min_samples()} samples at "
                                            f"{self.extractor.sample_rate} Hz)")
                except AudioRejected as exc:
                    report.rejects.append((row["clip_id"], row["path"], exc.reason))
                    continue
                waves.append(wave)
                kept.append(row)
            if waves:
                vectors = self.extractor.extract(waves)
                for row, vector in zip(kept, vectors):
                    if not np.isfinite(vector).all():
                        report.rejects.append((row["clip_id"], row["path"], "extractor produced non-finite values"))
                        continue
                    pending[0].append(row["clip_id"])
                    pending[1].append(hashes[row["clip_id"]])
                    pending[2].append(vector)
                    report.computed += 1
            bar.update(len(batch))
            if pending[0] and (len(pending[0]) >= SHARD_MAX_CLIPS or time.monotonic() - last_flush > SHARD_MAX_SECONDS):
                self._write_shard(*pending, prefix=prefix)
                pending = ([], [], [])
                last_flush = time.monotonic()
        if pending[0]:
            self._write_shard(*pending, prefix=prefix)
        bar.close()
        self._write_rejects(report.rejects, "rejects.csv" if count == 1 else f"rejects-p{index_k:04d}of{count:04d}.csv")
        return report

    def _write_rejects(self, rejects: list[tuple[str, str, str]], name: str = "rejects.csv") -> None:
        path = self.dir / name
        if not rejects:
            path.unlink(missing_ok=True)
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["clip_id", "path", "reason"])
        writer.writerows(rejects)
        write_text_atomic(path, buf.getvalue())

    # ---- read ---------------------------------------------------------------------------------
    def load(self, clip_ids: list[str] | None = None) -> np.ndarray:
        """Vectors for `clip_ids` (default: every clip of the corpus), in that order."""
        wanted = clip_ids if clip_ids is not None else self.corpus.column("clip_id")
        hashes = self.audio_hashes()
        index = self._index()
        missing = [c for c in wanted if (c, hashes.get(c)) not in index]
        if missing:
            raise MissingFeatures(
                f"{self.dir}: no current vector for {len(missing)} clip(s), e.g. {missing[:3]}; "
                f"run `sourcetrace features {self.corpus.root} --extractor ...` (rejected clips are listed in rejects.csv)"
            )
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for pos, clip_id in enumerate(wanted):
            shard, row = index[(clip_id, hashes[clip_id])]
            by_shard.setdefault(shard, []).append((pos, row))
        out = None
        for shard, pairs in by_shard.items():
            with np.load(shard, allow_pickle=False) as data:
                vectors = data["vectors"]
                if out is None:
                    out = np.empty((len(wanted), *vectors.shape[1:]), dtype=np.float32)
                positions, rows = zip(*pairs)
                out[list(positions)] = vectors[list(rows)]
        if out is None:
            raise MissingFeatures(f"{self.dir}: no clips requested")
        return out

    def export_npz(self, path: str | Path) -> int:
        """Write `clip_id` and `vectors` arrays for the corpus's clips that have vectors."""
        hashes = self.audio_hashes()
        index = self._index()
        clip_ids = [c for c in self.corpus.column("clip_id") if (c, hashes[c]) in index]
        vectors = self.load(clip_ids)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, clip_id=np.array(clip_ids), vectors=vectors,
                         extractor=np.array(json.dumps(self.extractor.fingerprint, sort_keys=True)))
        return len(clip_ids)
