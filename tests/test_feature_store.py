import json
import os

import numpy as np
import pytest
import soundfile as sf

from sourcetrace.attribution.extractors import build_extractor
from sourcetrace.attribution.store import FeatureStore, MissingFeatures
from sourcetrace.corpus import import_corpus


@pytest.fixture
def corpus(speech_tree, tmp_path):
    return import_corpus(speech_tree, tmp_path / "corpus")


class CountingExtractor:
    """Wraps a real extractor and counts the clips it is asked to process."""

    def __init__(self, inner):
        self.inner, self.seen = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def extract(self, waves):
        self.seen += len(waves)
        return self.inner.extract(waves)


def test_compute_then_resume_computes_only_what_is_missing(corpus):
    lfcc = build_extractor("lfcc")
    first = FeatureStore(corpus, lfcc).compute(progress=False)
    assert (first.computed, first.reused, first.ok) == (48, 0, True)
    counting = CountingExtractor(lfcc)
    second = FeatureStore(corpus, counting).compute(progress=False)
    assert (second.computed, second.reused, counting.seen) == (0, 48, 0)
    vectors = FeatureStore(corpus, lfcc).load()
    direct = lfcc.extract([__import__("sourcetrace.core.audio", fromlist=["x"]).load_audio(corpus.audio_path(r)) for r in corpus.rows[:3]])
    np.testing.assert_allclose(vectors[:3], direct, rtol=1e-6)


def test_interrupted_run_resumes_and_equals_an_uninterrupted_one(corpus, monkeypatch, tmp_path):
    import sourcetrace.attribution.store as store_mod

    lfcc = build_extractor("lfcc")
    lfcc.batch_size = 8
    monkeypatch.setattr(store_mod, "SHARD_MAX_CLIPS", 8)
    calls = {"n": 0}
    real = lfcc.extract

    def dying(waves):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(waves)

    monkeypatch.setattr(lfcc, "extract", dying)
    with pytest.raises(KeyboardInterrupt):
        FeatureStore(corpus, lfcc).compute(progress=False)
    monkeypatch.setattr(lfcc, "extract", real)
    resumed = FeatureStore(corpus, lfcc).compute(progress=False)
    assert resumed.reused == 16 and resumed.computed == 32
    fresh = FeatureStore(corpus, lfcc, root=tmp_path / "fresh")
    fresh.compute(progress=False)
    np.testing.assert_array_equal(FeatureStore(corpus, lfcc).load(), fresh.load())
    assert not list((corpus.root / "features").rglob("*.tmp"))


def test_changed_audio_and_changed_extractor_never_get_stale_vectors(corpus):
    lfcc = build_extractor("lfcc")
    store = FeatureStore(corpus, lfcc)
    store.compute(progress=False)
    before = store.load()
    path = corpus.audio_path(corpus.rows[0])
    wave, rate = sf.read(path)
    sf.write(path, wave[::-1], rate)  # same length, new content
    os.utime(path, ns=(1, 1))  # even with an old mtime, the size/mtime key changes
    with pytest.raises(MissingFeatures):
        store.load()
    report = FeatureStore(corpus, lfcc).compute(progress=False)
    assert report.computed == 1 and report.reused == 47
    after = store.load()
    assert not np.allclose(after[0], before[0]) and np.array_equal(after[1:], before[1:])
    mfcc_store = FeatureStore(corpus, build_extractor("mfcc"))
    assert mfcc_store.dir != store.dir
    assert mfcc_store.compute(progress=False).computed == 48
    fp = json.loads((mfcc_store.dir / "extractor.json").read_text())
    assert fp["kind"] == "mfcc" and fp["code_version"]


def test_bad_clips_are_rejected_with_reasons_and_the_rest_kept(corpus, tiny_models):
    rows = corpus.rows
    (corpus.root / rows[0].path).write_bytes(b"not audio at all")
    sf.write(corpus.root / rows[1].path, np.zeros(30, np.float32), 22050)  # shorter than a frame
    sf.write(corpus.root / rows[2].path, np.zeros(0, np.float32), 22050)
    extractor = build_extractor(f"ssl:{tiny_models['tiny-wav2vec2']}@2", device="cpu")
    store = FeatureStore(corpus, extractor)
    report = store.compute(progress=False)
    reasons = {clip: reason for clip, _, reason in report.rejects}
    assert set(reasons) == {rows[0].clip_id, rows[1].clip_id, rows[2].clip_id}
    assert "unreadable" in reasons[rows[0].clip_id]
    assert "receptive field" in reasons[rows[1].clip_id]
    assert "empty" in reasons[rows[2].clip_id]
    assert report.computed == 45
    rejects = (store.dir / "rejects.csv").read_text().splitlines()
    assert rejects[0] == "clip_id,path,reason" and len(rejects) == 4
    assert store.load([r.clip_id for r in rows[3:]]).shape == (45, 32)


def test_export_npz(corpus, tmp_path):
    store = FeatureStore(corpus, build_extractor("lfcc"))
    store.compute(progress=False)
    assert store.export_npz(tmp_path / "f.npz") == 48
    with np.load(tmp_path / "f.npz", allow_pickle=False) as data:
        assert data["clip_id"].tolist() == corpus.column("clip_id")
        assert data["vectors"].shape == (48, 120)
        assert json.loads(str(data["extractor"]))["kind"] == "lfcc"


def test_same_size_edit_with_mtime_restored_is_recomputed(corpus, monkeypatch):
    """`cp -p`, `rsync -t` and `touch -r` put the old mtime back on new content of the same size:
    the hash cache must still see the change (ctime, inode)."""
    import sourcetrace.attribution.hash_cache as hash_cache

    monkeypatch.setattr(hash_cache, "RACY_WINDOW_NS", 0)  # trust every entry: only the signature decides
    lfcc = build_extractor("lfcc")
    store = FeatureStore(corpus, lfcc)
    store.compute(progress=False)
    before = store.load()
    in_place, renamed = (corpus.audio_path(row) for row in corpus.rows[:2])
    for path in (in_place, renamed):
        stat = path.stat()
        wave, rate = sf.read(path)
        if path == in_place:  # cp -p / touch -r: same inode, new bytes
            sf.write(path, wave[::-1], rate)
        else:  # rsync -t: a new file renamed over the old one
            sf.write(path.with_suffix(".new.wav"), wave[::-1], rate)
            os.replace(path.with_suffix(".new.wav"), path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    report = FeatureStore(corpus, lfcc).compute(progress=False)
    assert (report.computed, report.reused) == (2, 46)
    after = store.load()
    assert not np.allclose(after[:2], before[:2]) and np.array_equal(after[2:], before[2:])


def test_hash_of_a_file_changed_just_before_hashing_is_checked_again(tmp_path, monkeypatch):
    """A file hashed within the racy window of its last change could change again in the same
    timestamp tick: hashed again next time, then trusted once the hash is older than the change."""
    import sourcetrace.attribution.hash_cache as hash_cache

    calls = []
    monkeypatch.setattr(hash_cache, "sha256_file", lambda p: calls.append(p) or "digest")
    path = tmp_path / "clip.wav"
    path.write_bytes(b"new")
    cache = hash_cache.HashCache(tmp_path / "cache.json")
    assert cache.sha256(path, "clip") == "digest" and cache.sha256(path, "clip") == "digest"
    assert len(calls) == 2
    monkeypatch.setattr(hash_cache, "RACY_WINDOW_NS", 0)  # the hash is now older than the window
    cache.sha256(path, "clip")
    cache.save()
    assert len(calls) == 2 and hash_cache.HashCache(tmp_path / "cache.json").sha256(path, "clip") == "digest"
    assert len(calls) == 2


def damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # one flipped byte inside the vectors
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "flipped byte"])
def test_damaged_shard_is_refused_by_load_and_recomputed_by_features(corpus, monkeypatch, capsys, how):
    import sourcetrace.attribution.store as store_mod
    from sourcetrace.attribution.store import CorruptShard
    from sourcetrace.cli import main

    lfcc = build_extractor("lfcc")
    lfcc.batch_size = 8
    monkeypatch.setattr(store_mod, "SHARD_MAX_CLIPS", 8)
    store = FeatureStore(corpus, lfcc)
    store.compute(progress=False)
    before = store.load()
    shards = sorted(store.dir.glob("shard-*.npz"))
    assert len(shards) == 6 and all(len(s.name.split(".")[1]) == 64 for s in shards)
    damage(shards[2], how)
    with pytest.raises(CorruptShard, match=rf"{shards[2].name}.*rerun `sourcetrace features"):
        store.load()
    capsys.readouterr()
    assert main(["features", str(corpus.root), "--extractor", "lfcc", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "8 computed, 40 reused" in out
    assert [line for line in err.splitlines() if shards[2].name in line] == [err.strip()]
    assert "Traceback" not in err and (store.dir / f"{shards[2].name}.corrupt").is_file()
    np.testing.assert_array_equal(store.load(), before)
    assert main(["features", str(corpus.root), "--extractor", "lfcc", "--quiet"]) == 0
    assert "0 computed, 48 reused" in capsys.readouterr().out


def test_bench_names_and_repairs_a_corrupt_shard_without_a_traceback(corpus, capsys):
    """bench (which crashed with `Bad CRC-32`) first brings the store up to date: the damaged
    shard is named, set aside and recomputed, and the benchmark runs."""
    from sourcetrace.cli import main

    lfcc = build_extractor("lfcc")
    store = FeatureStore(corpus, lfcc)
    store.compute(progress=False)
    shard = next(store.dir.glob("shard-*.npz"))
    damage(shard, "flipped byte")
    capsys.readouterr()
    code = main(["bench", str(corpus.root), "--protocol", "indomain", "--extractor", "lfcc", "--seeds", "0",
                 "--attributor", "knn:k=3", "--no-figures", "--out", str(corpus.root / "results")])
    out, err = capsys.readouterr()
    print(out, err, file=__import__("sys").__stderr__)
    assert code == 0 and "Traceback" not in err and shard.name in err and "recomputed" in err


def test_shard_without_a_checksum_is_not_trusted(corpus):
    """Shards named without their sha256 (older sourcetrace) are set aside and recomputed."""
    lfcc = build_extractor("lfcc")
    store = FeatureStore(corpus, lfcc)
    store.compute(progress=False)
    (shard,) = store.dir.glob("shard-*.npz")
    shard.rename(store.dir / "shard-000001.npz")
    report = store.compute(progress=False)
    assert (report.computed, report.reused) == (48, 0)


@pytest.mark.parametrize("decode_threads", [1, 3])
def test_an_extractor_planning_empty_batches_still_gets_every_clip(corpus, decode_threads):
    """A plug-in's own `plan_batches` may yield an empty batch: it is skipped, not an error."""
    lfcc = build_extractor("lfcc")

    class Planner(CountingExtractor):
        def plan_batches(self, num_samples):
            return [[], *self.inner.plan_batches(num_samples), []]

    planner = Planner(lfcc)
    report = FeatureStore(corpus, planner, decode_threads=decode_threads).compute(progress=False)
    assert (report.computed, report.rejects, planner.seen) == (48, [], 48)


def test_every_extractor_kind_is_built_through_the_registry(monkeypatch):
    """build_extractor has no table of its own: the class registered under a spec's name builds it."""
    from sourcetrace.attribution.extractors.spectral import CepstralExtractor
    from sourcetrace.core.plugins import EXTRACTORS

    class Marked(CepstralExtractor):
        pass

    monkeypatch.setitem(EXTRACTORS._loaded, "mfcc", Marked)
    assert type(build_extractor("mfcc")) is Marked and build_extractor("mfcc").name == "mfcc"
    assert type(build_extractor("lfcc")) is CepstralExtractor
