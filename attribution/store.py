"""Feature store: pooled vectors per (corpus, extractor fingerprint), keyed by clip id and audio hash.

Layout, under `<corpus>/features/` unless another root is given:

    <extractor-name>-<fingerprint[:16]>/
        extractor.json        full fingerprint (what produced these vectors)
        shard-000001.<sha256>.npz ...  clip_id, audio_sha256, vectors; named with the sha256 of the
                              file's own bytes; each written to a temp file and renamed
        rejects.csv           clips that could not serve, with the reason (last run)
    audio-sha256.json         hash cache, keyed by path and a stat signature (see hash_cache.py)

A vector is reused only if both its clip id and the current sha256 of the clip's audio match, and
it lives in the folder of the extractor's exact fingerprint: a changed file or extractor is
recomputed, never served stale. Every read of a shard checks its bytes against the sha256 in its
name: `compute` sets a truncated or corrupted shard aside (`<name>.corrupt`) and recomputes its
clips; `load` refuses it. The hash in the name also means two runs writing the same shard number
at once never overwrite each other. Killing a run loses at most the clips since the last shard.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from sourcetrace.attribution.extractors.base import FeatureExtractor
from sourcetrace.attribution.hash_cache import HashCache
from sourcetrace.core.audio import MAX_CLIP_SECONDS, AudioRejected
from sourcetrace.core.device import usable_cpus
from sourcetrace.core.errors import SourcetraceError, UsageError
from sourcetrace.core.fileio import atomic_path, write_json_atomic, write_text_atomic
from sourcetrace.corpus import ClipRecord, Corpus

SHARD_MAX_CLIPS = 1024
SHARD_MAX_SECONDS = 30.0
DECODE_AHEAD = 2  # batches decoded and resampled in the background while the extractor runs
# shard-[p<k>of<n>-]<number>.<sha256 of the file>.npz. A shard named without the hash (renamed, or
# written before shards were checksummed) cannot be checked: it is matched only to be refused
# like a damaged shard (compute sets it aside and recomputes its clips), never read.
SHARD_NAME = re.compile(r"^(?P<prefix>shard-(?:p\d{4}of\d{4}-)?)(?P<number>\d{6})(?:\.(?P<sha256>[0-9a-f]{64}))?\.npz$")


def _runs(items: list, count: int) -> list[list]:
    """`items` in at most `count` contiguous runs of near-equal length, in order (none if empty)."""
    step = max(1, -(-len(items) // count))
    return [items[start:start + step] for start in range(0, len(items), step)]


def default_decode_threads() -> int:
    """Threads that decode and resample clips (libsndfile, soxr and numpy release the GIL): half the
    CPUs this process may use, at most 8, so the extractor's own threads keep theirs; one on 2 CPUs."""
    return max(1, min(8, usable_cpus() // 2))


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


class CorruptShard(SourcetraceError, ValueError):
    """A shard whose bytes do not match the sha256 in its name, or that cannot be decoded."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = Path(path), problem
        super().__init__(f"{path}: {problem}")


@dataclass
class Shard:
    path: Path
    clip_ids: list[str]
    audio_sha256: list[str]
    vectors: np.ndarray


def read_shard(path: Path) -> Shard:
    """Read and verify one shard; CorruptShard (naming the file and what is wrong) otherwise."""
    match = SHARD_NAME.match(path.name)
    if match is None or match["sha256"] is None:
        raise CorruptShard(path, "feature shard without a checksum in its name (written by an older "
                           "sourcetrace or renamed): not trusted")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorruptShard(path, f"feature shard unreadable ({exc.strerror or exc})") from None
    if hashlib.sha256(raw).hexdigest() != match["sha256"]:
        raise CorruptShard(path, f"corrupt feature shard (sha256 of its {len(raw)} bytes differs from "
                           "the one in its name: truncated or altered)")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            shard = Shard(path, data["clip_id"].tolist(), data["audio_sha256"].tolist(), data["vectors"])
    except Exception as exc:  # noqa: BLE001 - checksum matched, so the writer itself wrote something undecodable
        raise CorruptShard(path, f"undecodable feature shard ({type(exc).__name__}: {exc})") from None
    if not len(shard.clip_ids) == len(shard.audio_sha256) == len(shard.vectors):
        raise CorruptShard(path, f"inconsistent feature shard ({len(shard.clip_ids)} clip ids, "
                           f"{len(shard.audio_sha256)} hashes, {len(shard.vectors)} vectors)")
    return shard


class FeatureStore:
    def __init__(self, corpus: Corpus, extractor: FeatureExtractor, root: str | Path | None = None,
                 decode_threads: int | None = None, max_seconds: float | None = MAX_CLIP_SECONDS):
        """`decode_threads`: how many threads decode clips ahead of the extractor (default:
        `default_decode_threads()`); the vectors do not depend on it. `max_seconds`: longer clips
        are rejected with their length (None: no limit)."""
        if decode_threads is not None and decode_threads < 1:
            raise UsageError(f"decode_threads must be at least 1, got {decode_threads}")
        if max_seconds is not None and not max_seconds > 0:
            raise UsageError(f"max_seconds must be above 0, got {max_seconds}")
        self.corpus = corpus
        self.extractor = extractor
        self.decode_threads = decode_threads or default_decode_threads()
        self.max_seconds = max_seconds
        self.root = Path(root) if root else corpus.root / "features"
        self.dir = self.root / f"{extractor.name}-{extractor.fingerprint_hash[:16]}"

    # ---- audio hashes -------------------------------------------------------------------------
    def audio_hashes(self) -> dict[str, str]:
        """clip_id -> sha256 of its audio file, re-hashing only files whose stat signature changed
        (size, mtime, ctime, inode: see hash_cache.py); by the decode threads (hashlib releases the GIL)."""
        cache = HashCache(self.root / "audio-sha256.json")
        def digests(rows: list[ClipRecord]) -> list[str]:
            return [cache.sha256(self.corpus.audio_path(row), row.path) for row in rows]

        runs = _runs(self.corpus.rows, self.decode_threads)
        with ThreadPoolExecutor(self.decode_threads, thread_name_prefix="hash") as pool:
            hashes = [sha for run in pool.map(digests, runs) for sha in run]
        cache.save()
        return {row.clip_id: sha for row, sha in zip(self.corpus.rows, hashes)}

    # ---- shards -------------------------------------------------------------------------------
    def _shards(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("shard-*.npz") if SHARD_NAME.match(p.name))

    def _read_shards(self, on_corrupt: Callable[[CorruptShard], None]) -> Iterator[Shard]:
        """Every verified shard, in name order; each corrupt one goes to `on_corrupt` instead."""
        for path in self._shards():
            try:
                shard = read_shard(path)
            except CorruptShard as exc:
                on_corrupt(exc)
                continue
            yield shard

    def _set_aside(self, exc: CorruptShard) -> None:
        """compute's answer to a corrupt shard: one line naming it, then move it out of the way
        (kept as <name>.corrupt for inspection) so that its clips are recomputed."""
        print(f"{exc}; set aside as {exc.path.name}.corrupt, its clips will be recomputed", file=sys.stderr)
        try:
            exc.path.replace(exc.path.with_name(exc.path.name + ".corrupt"))
        except FileNotFoundError:
            pass  # a concurrent run set it aside first

    def _refuse(self, exc: CorruptShard) -> None:
        """load's answer to a corrupt shard: stop, and say how to repair the store."""
        raise CorruptShard(exc.path, f"{exc.problem}; rerun `sourcetrace features {self.corpus.root} --extractor ...` "
                           "to recompute it") from None

    def _index(self, on_corrupt: Callable[[CorruptShard], None]) -> set[tuple[str, str]]:
        """(clip_id, audio_sha256) of every stored vector."""
        return {key for shard in self._read_shards(on_corrupt) for key in zip(shard.clip_ids, shard.audio_sha256)}

    def _write_shard(self, clip_ids: list[str], hashes: list[str], vectors: list[np.ndarray], prefix: str = "shard-") -> None:
        numbers = [int(m["number"]) for p in self.dir.glob(f"{prefix}[0-9]*.npz")
                   if (m := SHARD_NAME.match(p.name)) and m["prefix"] == prefix]
        buffer = io.BytesIO()
        np.savez(buffer, clip_id=np.array(clip_ids), audio_sha256=np.array(hashes),
                 vectors=np.stack(vectors).astype(np.float32))
        raw = buffer.getvalue()
        name = f"{prefix}{max(numbers, default=0) + 1:06d}.{hashlib.sha256(raw).hexdigest()}.npz"
        with atomic_path(self.dir / name) as tmp:
            tmp.write_bytes(raw)

    # ---- compute ------------------------------------------------------------------------------
    def compute(self, progress: bool = True, part: tuple[int, int] = (0, 1)) -> ExtractionReport:
        """Compute every missing vector; reject (with reason) clips that cannot serve.

        `part=(k, n)`: only the clips at positions k, k + n, ... of the manifest (one task of a job
        array); parts write their own shard files, so n processes can run at once."""
        index_k, count = part
        prefix = "shard-" if count == 1 else f"shard-p{index_k:04d}of{count:04d}-"

        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / "extractor.json", self.extractor.fingerprint)
        hashes = self.audio_hashes()
        index = self._index(on_corrupt=self._set_aside)
        report = ExtractionReport()
        todo = []
        for row in self.corpus.rows[index_k::count]:
            if (row.clip_id, hashes[row.clip_id]) in index:
                report.reused += 1
            else:
                todo.append(row)
        # Durations from the headers (no decoding) let batches group clips of similar length.
        lengths = []
        for row in todo:
            try:
                info = sf.info(str(self.corpus.audio_path(row)))
                lengths.append(int(info.frames * self.extractor.sample_rate / max(info.samplerate, 1)))
            except Exception:  # noqa: BLE001 - libsndfile raises several types
                lengths.append(0)  # unreadable: rejected with its reason when loaded
        batches = self.extractor.plan_batches(lengths)
        pending: tuple[list[str], list[str], list[np.ndarray]] = ([], [], [])
        last_flush = time.monotonic()
        bar = tqdm(total=len(todo), unit="clip", desc=self.extractor.name, disable=not progress or not todo)
        # A pipeline, in order: threads decode the clips of the next batches while the extractor
        # runs; another writes the previous shard. Vectors are those of the serial loop: the same
        # waves, batches, order.
        with ThreadPoolExecutor(self.decode_threads, thread_name_prefix="decode") as decoder, \
                ThreadPoolExecutor(1, thread_name_prefix="shard-writer") as writer:
            ahead: deque[tuple[list[int], list[Future]]] = deque()
            upcoming = iter(batches)
            writing: Future | None = None

            def decode_next() -> None:  # a batch in as many runs of clips as there are threads
                batch = next(upcoming, None)
                if batch is not None:
                    ahead.append((batch, [decoder.submit(self._decode, run)
                                          for run in _runs([todo[i] for i in batch], self.decode_threads)]))

            for _ in range(DECODE_AHEAD):
                decode_next()
            while ahead:
                batch, decoded = ahead.popleft()
                decode_next()
                waves, kept = [], []
                for row, wave in (clip for run in decoded for clip in run.result()):
                    if isinstance(wave, AudioRejected):
                        report.rejects.append((row.clip_id, row.path, wave.reason))
                    else:
                        waves.append(wave)
                        kept.append(row)
                if waves:
                    vectors = self.extractor.extract(waves)
                    for row, vector in zip(kept, vectors):
                        if not np.isfinite(vector).all():
                            report.rejects.append((row.clip_id, row.path, "extractor produced non-finite values"))
                            continue
                        pending[0].append(row.clip_id)
                        pending[1].append(hashes[row.clip_id])
                        pending[2].append(vector)
                        report.computed += 1
                bar.update(len(batch))
                if pending[0] and (len(pending[0]) >= SHARD_MAX_CLIPS or time.monotonic() - last_flush > SHARD_MAX_SECONDS):
                    if writing is not None:
                        writing.result()  # one shard at a time, in order; its error surfaces here
                    writing = writer.submit(self._write_shard, *pending, prefix=prefix)
                    pending = ([], [], [])
                    last_flush = time.monotonic()
            if writing is not None:
                writing.result()
        if pending[0]:
            self._write_shard(*pending, prefix=prefix)
        bar.close()
        self._write_rejects(report.rejects, "rejects.csv" if count == 1 else f"rejects-p{index_k:04d}of{count:04d}.csv")
        return report

    def _decode(self, rows: list[ClipRecord]) -> list[tuple[ClipRecord, np.ndarray | AudioRejected]]:
        """Each row's mono wave at the extractor's rate, or why it cannot serve."""
        out: list[tuple[ClipRecord, np.ndarray | AudioRejected]] = []
        for row in rows:
            try:
                out.append((row, self.extractor.read_clip(self.corpus.audio_path(row), self.max_seconds, name=row.path)))
            except AudioRejected as exc:
                out.append((row, exc))
        return out

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
        """Vectors for `clip_ids` (default: every clip of the corpus), in that order.

        Reads (and verifies) every shard once; a corrupt one raises CorruptShard, which says to
        rerun `sourcetrace features`."""
        wanted = clip_ids if clip_ids is not None else self.corpus.column("clip_id")
        hashes = self.audio_hashes()
        positions: dict[tuple[str, str | None], list[int]] = {}
        for pos, clip_id in enumerate(wanted):
            positions.setdefault((clip_id, hashes.get(clip_id)), []).append(pos)
        out, found = None, set()
        for shard in self._read_shards(self._refuse):
            for row, key in enumerate(zip(shard.clip_ids, shard.audio_sha256)):
                if key in positions:
                    if out is None:
                        out = np.empty((len(wanted), *shard.vectors.shape[1:]), dtype=np.float32)
                    out[positions[key]] = shard.vectors[row]
                    found.add(key)
        missing = [key[0] for key in positions if key not in found]
        if missing:
            raise MissingFeatures(
                f"{self.dir}: no current vector for {len(missing)} clip(s), e.g. {missing[:3]}; "
                f"run `sourcetrace features {self.corpus.root} --extractor ...` (rejected clips are listed in rejects.csv)"
            )
        if out is None:
            raise MissingFeatures(f"{self.dir}: no clips requested")
        return out

    def export_npz(self, path: str | Path) -> int:
        """Write `clip_id` and `vectors` arrays for the corpus's clips that have vectors."""
        hashes = self.audio_hashes()
        stored = self._index(on_corrupt=self._refuse)
        clip_ids = [c for c in self.corpus.column("clip_id") if (c, hashes[c]) in stored]
        vectors = self.load(clip_ids)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, clip_id=np.array(clip_ids), vectors=vectors,
                     extractor=np.array(json.dumps(self.extractor.fingerprint, sort_keys=True)))
        return len(clip_ids)
