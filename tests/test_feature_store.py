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
    direct = lfcc.extract([__import__("sourcetrace.audio", fromlist=["x"]).load_audio(corpus.audio_path(r)) for r in corpus.rows[:3]])
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
    (corpus.root / rows[0]["path"]).write_bytes(b"not audio at all")
    sf.write(corpus.root / rows[1]["path"], np.zeros(30, np.float32), 22050)  # shorter than a frame
    sf.write(corpus.root / rows[2]["path"], np.zeros(0, np.float32), 22050)
    extractor = build_extractor(f"ssl:{tiny_models['tiny-wav2vec2']}@2", device="cpu")
    store = FeatureStore(corpus, extractor)
    report = store.compute(progress=False)
    reasons = {clip: reason for clip, _, reason in report.rejects}
    assert set(reasons) == {rows[0]["clip_id"], rows[1]["clip_id"], rows[2]["clip_id"]}
    assert "unreadable" in reasons[rows[0]["clip_id"]]
    assert "receptive field" in reasons[rows[1]["clip_id"]]
    assert "empty" in reasons[rows[2]["clip_id"]]
    assert report.computed == 45
    rejects = (store.dir / "rejects.csv").read_text().splitlines()
    assert rejects[0] == "clip_id,path,reason" and len(rejects) == 4
    assert store.load([r["clip_id"] for r in rows[3:]]).shape == (45, 32)


def test_export_npz(corpus, tmp_path):
    store = FeatureStore(corpus, build_extractor("lfcc"))
    store.compute(progress=False)
    assert store.export_npz(tmp_path / "f.npz") == 48
    with np.load(tmp_path / "f.npz", allow_pickle=False) as data:
        assert data["clip_id"].tolist() == corpus.column("clip_id")
        assert data["vectors"].shape == (48, 120)
        assert json.loads(str(data["extractor"]))["kind"] == "lfcc"
