"""The device-generic speed paths give the same answers as the simple ones.

kNN: the torch search (any device) against a float64 numpy reference, and on a GPU against the CPU.
Feature store: the pipelined loop against the serial one, bit for bit. SSL: the phase breakdown.
"""

import numpy as np
import pytest
import torch

from sourcetrace.attribution.knn import KNNAttributor
from sourcetrace.benchmark.protocol import ClipTable, load_suite
from sourcetrace.benchmark.runner import AttributorSpec, run_protocol
from sourcetrace.benchmark.synthetic import clustered_vectors, study_rows


def _numpy_neighbours(S, Q, k, metric):
    """Float64 brute force, ordered by (distance, support index): the reference."""
    S, Q = S.astype(np.float64), Q.astype(np.float64)
    if metric == "cosine":
        d = 1.0 - (Q / np.linalg.norm(Q, axis=1, keepdims=True)) @ (S / np.linalg.norm(S, axis=1, keepdims=True)).T
    else:
        d = np.sqrt(np.maximum(((Q[:, None, :] - S[None, :, :]) ** 2).sum(-1), 0))
    idx = np.array([np.lexsort((np.arange(len(S)), row))[:k] for row in d])
    return idx


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_torch_search_on_cpu_predicts_as_the_numpy_reference(metric):
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((5, 16)) * 3
    y = rng.integers(0, 5, 400)
    X = (centres[y] + rng.standard_normal((400, 16))).astype(np.float32)
    S, Q, ys = X[:300], X[300:], y[:300]
    knn = KNNAttributor(k=9, metric=metric, device="cpu", chunk_size=33).fit(S, ys)
    ref = _numpy_neighbours(S, Q, 9, metric)
    votes = np.stack([np.bincount(ys[row], minlength=5) for row in ref])
    np.testing.assert_array_equal(knn.predict(Q), np.argmax(votes, axis=1))
    # Neighbour sets agree wherever float32 and float64 cannot disagree (no near-tie at the boundary).
    assert np.mean([set(a) == set(b) for a, b in zip(knn.kneighbors(Q)[1], ref)]) > 0.97


def test_knn_device_is_a_setting_not_an_identity(monkeypatch):
    spec = AttributorSpec.parse("knn:k=5")
    assert spec.build(device="cpu").params() == spec.build().params()
    assert KNNAttributor(device="auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    import sourcetrace.attribution.knn as knn_module

    asked = []  # the device names kNN is built with, each run on the CPU here
    monkeypatch.setattr(knn_module, "resolve_device", lambda name: (asked.append(name), torch.device("cpu"))[1])
    rows = study_rows(n_prompts=12)
    run_protocol(load_suite("table1")[0], ClipTable.from_rows(rows), clustered_vectors(rows, dim=8), spec, seeds=[0],
                 device="cuda:3")
    assert asked and set(asked) == {"cuda:3"}  # the runner's device reaches every search


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_knn_on_the_gpu_predicts_as_on_the_cpu():
    rows = study_rows(n_prompts=60)
    table, X = ClipTable.from_rows(rows), clustered_vectors(rows, dim=64)
    protocol = load_suite("table1")[0]
    spec = AttributorSpec.parse("knn:k=15")
    cpu = run_protocol(protocol, table, X, spec, seeds=[0], device="cpu")
    gpu = run_protocol(protocol, table, X, spec, seeds=[0], device="cuda")
    assert gpu["levels"]["checkpoint"]["confusion"] == cpu["levels"]["checkpoint"]["confusion"]


@pytest.mark.parametrize("name", ["tiny-wav2vec2", "tiny-w2v-bert"])
def test_pipelined_store_is_bit_identical_to_the_serial_loop(tiny_models, speech_tree, tmp_path, monkeypatch, name):
    """Background decoding and shard writing change nothing: each vector equals the serial loop's
    (decode the batch, extract it), bit for bit, in the same order; shards are still written in turn."""
    import sourcetrace.attribution.store as store_mod
    from sourcetrace.attribution.extractors.ssl import SSLExtractor
    from sourcetrace.attribution.store import FeatureStore
    from sourcetrace.audio import load_audio
    from sourcetrace.corpus import import_corpus

    corpus = import_corpus(speech_tree, tmp_path / "corpus")
    extractor = SSLExtractor(tiny_models[name], [2], device="cpu", batch_size=5)
    monkeypatch.setattr(store_mod, "SHARD_MAX_CLIPS", 7)  # several shards, written while extracting
    store = FeatureStore(corpus, extractor)
    report = store.compute(progress=False)
    assert report.computed == len(corpus.rows) and len(list(store.dir.glob("shard-*.npz"))) >= 6
    waves = [load_audio(corpus.audio_path(r), extractor.sample_rate) for r in corpus.rows]
    serial = np.empty((len(waves), extractor.vector_dim), np.float32)
    for batch in extractor.plan_batches([len(w) for w in waves]):
        serial[batch] = extractor.extract([waves[i] for i in batch])
    np.testing.assert_array_equal(store.load(), serial)


def test_phase_timing_breaks_extraction_down_without_changing_it(tiny_models):
    from sourcetrace.attribution.extractors.ssl import SSLExtractor

    waves = [np.random.default_rng(i).standard_normal(4000 + 900 * i).astype(np.float32) * 0.1 for i in range(4)]
    extractor = SSLExtractor(tiny_models["tiny-wav2vec2"], [1], device="cpu")
    plain = extractor.extract(waves)
    extractor.phase_seconds = {}
    timed = extractor.extract(waves)
    np.testing.assert_array_equal(timed, plain)
    assert set(extractor.phase_seconds) == {"preprocess", "copy", "forward", "pool"}
    assert all(v >= 0 for v in extractor.phase_seconds.values()) and extractor.phase_seconds["forward"] > 0
