"""The truncated, batched SSL path must give the full model's hidden_states[L], mean-pooled."""

import numpy as np
import pytest
import torch
from transformers import AutoFeatureExtractor, AutoModel

from sourcetrace.attribution.extractors import build_extractor
from sourcetrace.attribution.extractors.ssl import ModelFolderError, SSLExtractor


def clips(seed=1):
    """Five clips of different lengths (0.3 s to 1.7 s) incl. silence: batches need padding."""
    rng = np.random.default_rng(seed)
    lengths = [4800, 27200, 12000, 16000, 9100]
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in lengths]
    waves[2][:] = 0.0  # silence is valid audio
    return waves


def fbank_frames(num_samples):
    """Fbank frames of w2v-bert's processor (25 ms windows every 10 ms, no centring)."""
    return 1 + (num_samples - 400) // 160


def reference_vectors(model_dir, waves, layer, pooling="mean"):
    """The study's code: full model, one clip at a time, the processor's whole output (attention
    mask included) passed to the model, mean over every frame of hidden_states[L].
    pooling="masked-mean": mean over the frames the processor's attention mask keeps."""
    processor = AutoFeatureExtractor.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    for wave in waves:
        inputs = processor(wave, sampling_rate=16000, return_tensors="pt", padding=True)
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True).hidden_states
        assert len(hidden) == model.config.num_hidden_layers + 1
        if pooling == "mean":
            out.append(hidden[layer].mean(1)[0].numpy())
        else:  # w2v-bert: one frame per mask entry
            out.append(hidden[layer][0][inputs["attention_mask"][0].bool()].mean(0).numpy())
    return np.stack(out)


def speech_and_edge_clips(speech_tree):
    """Six espeak-ng sentences plus edge lengths: the shortest clip (2 fbank frames) and odd and
    even fbank frame counts next to it."""
    from sourcetrace.core.audio import load_audio

    speech = [load_audio(p, 16000) for p in sorted(speech_tree.rglob("*.wav"))[:12:2]]
    edges = [np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1 for n in (560, 720, 880, 1041)]
    waves = speech + edges
    parities = {fbank_frames(len(w)) % 2 for w in waves}
    assert parities == {0, 1}, "the clips must include odd and even fbank frame counts"
    return waves


def rel_err(a, b):
    return np.linalg.norm(a - b, axis=-1) / np.maximum(np.linalg.norm(b, axis=-1), 1e-12)


@pytest.mark.parametrize("name", ["tiny-wav2vec2", "tiny-w2v-bert"])
@pytest.mark.parametrize("layer", [0, 2, 4])
def test_truncated_batched_equals_full_model(tiny_models, name, layer):
    waves = clips()
    assert {fbank_frames(len(w)) % 2 for w in waves} == {0, 1}
    expected = reference_vectors(tiny_models[name], waves, layer)
    extractor = SSLExtractor(tiny_models[name], [layer], device="cpu", batch_size=8)
    assert extractor.plan_batches([len(w) for w in waves]) == [[0, 4, 2, 3, 1]]  # one padded batch, by length
    got = extractor.extract(waves)
    assert got.shape == expected.shape
    assert rel_err(got, expected).max() < 1e-6
    # Only the layers needed were built.
    assert len(extractor.model.encoder.layers) == max(layer, 1)


@pytest.mark.parametrize("name", ["tiny-wav2vec2", "tiny-w2v-bert"])
def test_speech_and_edge_lengths_match_the_study_batched_or_alone(tiny_models, speech_tree, name):
    """espeak-ng speech and edge lengths, odd and even fbank frame counts: one padded batch and
    each clip alone both give the study's vector."""
    waves = speech_and_edge_clips(speech_tree)
    expected = reference_vectors(tiny_models[name], waves, 3)
    extractor = SSLExtractor(tiny_models[name], [3], device="cpu", batch_size=len(waves), max_batch_seconds=1e6)
    assert len(extractor.plan_batches([len(w) for w in waves])) == 1
    batched = extractor.extract(waves)
    alone = np.concatenate([extractor.extract([w]) for w in waves])
    assert rel_err(batched, expected).max() < 1e-6
    assert rel_err(alone, expected).max() < 1e-6


def test_w2v_bert_odd_fbank_clips_need_the_processor_mask(tiny_models, speech_tree):
    """Why the mask matters: without it (sourcetrace before code version 2) odd clips differ."""
    folder = tiny_models["tiny-w2v-bert"]
    waves = [w for w in speech_and_edge_clips(speech_tree) if fbank_frames(len(w)) % 2 == 1 and len(w) > 16000]
    assert waves
    processor = AutoFeatureExtractor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, num_hidden_layers=3).eval()
    unmasked = []
    for wave in waves:
        inputs = processor(wave, sampling_rate=16000, return_tensors="pt", padding=True)
        assert inputs["attention_mask"][0, -1] == 0 and inputs["attention_mask"][0, :-1].all()
        with torch.no_grad():
            unmasked.append(model(input_features=inputs["input_features"], output_hidden_states=True).hidden_states[3].mean(1)[0].numpy())
    got = SSLExtractor(folder, [3], device="cpu").extract(waves)
    assert rel_err(np.stack(unmasked), got).min() > 1e-3
    assert rel_err(got, reference_vectors(folder, waves, 3)).max() < 1e-6


def test_masked_mean_pooling_leaves_out_the_processor_padding_frame(tiny_models, speech_tree):
    folder = tiny_models["tiny-w2v-bert"]
    waves = speech_and_edge_clips(speech_tree)
    masked = build_extractor(f"ssl:{folder}@2:masked-mean", device="cpu")
    study = build_extractor(f"ssl:{folder}@2", device="cpu")
    assert (masked.pooling, study.pooling) == ("masked-mean", "mean")
    assert masked.name.endswith("-masked-mean") and masked.fingerprint_hash != study.fingerprint_hash
    got, plain = masked.extract(waves), study.extract(waves)
    assert rel_err(got, reference_vectors(folder, waves, 2, pooling="masked-mean")).max() < 1e-6
    odd = np.array([fbank_frames(len(w)) % 2 == 1 for w in waves])
    assert rel_err(got[~odd], plain[~odd]).max() < 1e-6  # no padding frame: the same vector
    assert rel_err(got[odd], plain[odd]).min() > 1e-4
    with pytest.raises(ValueError, match="unknown pooling"):
        build_extractor(f"ssl:{folder}@2:median")


def test_batch_fbank_equals_the_processor_for_each_clip_alone(tiny_models, speech_tree):
    """w2v-bert's fbank for a padded batch in torch: the processor's features (within 1e-4), mask
    and length for every clip, odd frame counts and digital silence included."""
    from sourcetrace.attribution.extractors.fbank import BatchFbank

    processor = AutoFeatureExtractor.from_pretrained(tiny_models["tiny-w2v-bert"])
    speech = speech_and_edge_clips(speech_tree)
    longest = np.concatenate(speech[:4])  # ~14 s: more frames than one CPU group holds
    waves = speech + [np.zeros(9100, np.float32), longest]
    on_cpu = BatchFbank(processor, torch.device("cpu"))
    assert len(longest) // 160 > on_cpu.group_frames
    features, mask, lengths = on_cpu(waves)
    whole = BatchFbank(processor, torch.device("cpu"))
    whole.group_frames = None  # a GPU's plan: every piece of the batch in one group
    for got, expected in zip(whole(waves), (features, mask, lengths)):
        assert torch.allclose(got, expected, rtol=0, atol=1e-6)
    assert features.shape[0] == mask.shape[0] == len(waves) and features.shape[1] == mask.shape[1]
    for i, wave in enumerate(waves):
        alone = processor(wave, sampling_rate=16000, return_tensors="pt", padding=True)
        frames = alone["input_features"].shape[1]
        assert lengths[i] == frames
        assert torch.equal(mask[i], torch.nn.functional.pad(alone["attention_mask"][0].long(), (0, mask.shape[1] - frames)))
        assert (features[i, :frames] - alone["input_features"][0]).abs().max() <= 1e-4
        assert (features[i, frames:] == processor.padding_value).all()


def test_batch_fbank_leaves_steady_tones_to_the_processor(tiny_models):
    """A steady tone's mel bins barely vary over its frames, and normalising them magnifies the
    processor's float32 rounding (up to 2.5e-4 at bin variances near 1e-4): such clips take the
    processor's own path, so every clip of a batch of tones stays within 1e-4."""
    from sourcetrace.attribution.extractors.fbank import BatchFbank

    processor = AutoFeatureExtractor.from_pretrained(tiny_models["tiny-w2v-bert"])
    rng = np.random.default_rng(0)
    waves = []
    for _ in range(60):  # 2-39 frames of a sine (period 4-160 samples) over faint noise, some with a DC offset
        n = (int(rng.integers(2, 40)) - 1) * 160 + 400
        period = 160 / int(rng.choice([1, 2, 4, 5, 8, 10, 16, 20, 32, 40]))
        amplitude, noise = 10 ** rng.uniform(-3, 0), 10 ** rng.uniform(-7, -2)
        wave = amplitude * np.sin(2 * np.pi * np.arange(n) / period + rng.uniform(0, 6)) + noise * rng.standard_normal(n)
        waves.append((wave + (0.2 if rng.random() < 0.3 else 0.0)).astype(np.float32))
    features, _, lengths = BatchFbank(processor, torch.device("cpu"))(waves)
    for i, wave in enumerate(waves):
        alone = processor(wave, sampling_rate=16000, return_tensors="pt", padding=True)["input_features"][0]
        assert lengths[i] == len(alone)
        assert (features[i, : len(alone)] - alone).abs().max() <= 1e-4, f"tone {i}"


def test_batch_fbank_extraction_stays_with_the_study(tiny_models, speech_tree):
    folder = tiny_models["tiny-w2v-bert"]
    waves = speech_and_edge_clips(speech_tree)
    assert SSLExtractor(folder, [2], device="cpu").batch_fbank is None  # the processor itself on CPU
    extractor = SSLExtractor(folder, [2], device="cpu", batch_size=len(waves), max_batch_seconds=1e6, batch_fbank=True)
    assert rel_err(extractor.extract(waves), reference_vectors(folder, waves, 2)).max() < 1e-5


def test_gemm_front_end_gives_the_conv_front_ends_vectors(tiny_models, speech_tree):
    """xls-r's conv front end as channels-last GEMMs (frontend.py, the CPU's default): the reference
    vectors within the tolerance of the conv path, batched; refused where there is no
    layer-normalised conv front end."""
    folder = tiny_models["tiny-wav2vec2"]
    waves = speech_and_edge_clips(speech_tree)
    gemm = SSLExtractor(folder, [1, 2], device="cpu")
    assert gemm.frontend == "gemm"  # the CPU's default, where it fits
    assert type(gemm.model.feature_extractor).__name__ == "GemmFeatureEncoder"
    got = gemm.extract(waves)
    conv = SSLExtractor(folder, [1, 2], device="cpu", frontend="conv").extract(waves)
    for i, layer in enumerate((1, 2)):
        assert rel_err(got[:, i], reference_vectors(folder, waves, layer)).max() < 1e-6
    assert rel_err(got, conv).max() < 1e-6  # either front end: the same stored vectors, within rounding
    assert SSLExtractor(tiny_models["tiny-w2v-bert"], [2], device="cpu").frontend == "conv"  # it has none
    with pytest.raises(ValueError, match="layer-normalised conv front end"):
        SSLExtractor(tiny_models["tiny-w2v-bert"], [2], device="cpu", frontend="gemm")
    with pytest.raises(ValueError, match="unknown front end"):
        SSLExtractor(folder, [2], device="cpu", frontend="winograd")


def test_stable_layer_norm_is_bypassed_below_the_top(tiny_models):
    """xls-r applies a final encoder layer norm to last_hidden_state only: layer L < depth must not get it."""
    extractor = SSLExtractor(tiny_models["tiny-wav2vec2"], [2], device="cpu")
    assert extractor.config.do_stable_layer_norm
    waves = clips()[:1]
    model = AutoModel.from_pretrained(tiny_models["tiny-wav2vec2"], num_hidden_layers=2).eval()
    processor = AutoFeatureExtractor.from_pretrained(tiny_models["tiny-wav2vec2"])
    with torch.no_grad():
        normed = model(**processor(waves[0], sampling_rate=16000, return_tensors="pt")).last_hidden_state[0].mean(0)
    assert rel_err(extractor.extract(waves)[0], normed.numpy()) > 1e-2


@pytest.mark.parametrize("name", ["tiny-wav2vec2", "tiny-w2v-bert"])
def test_all_layers_mode_matches_each_single_layer(tiny_models, name):
    waves = clips(seed=3)
    sweep = SSLExtractor(tiny_models[name], [0, 1, 2, 3], device="cpu").extract(waves)
    assert sweep.shape == (len(waves), 4, 32)
    for layer in (0, 3):
        single = SSLExtractor(tiny_models[name], [layer], device="cpu").extract(waves)
        assert rel_err(sweep[:, layer], single).max() < 1e-6


def test_bf16_close_to_fp32(tiny_models):
    waves = clips()
    fp32 = SSLExtractor(tiny_models["tiny-wav2vec2"], [3], device="cpu").extract(waves)
    bf16 = SSLExtractor(tiny_models["tiny-wav2vec2"], [3], device="cpu", dtype="bf16").extract(waves)
    cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert bf16.dtype == np.float32 and cos.min() > 0.99


def test_min_samples_is_the_receptive_field(tiny_models):
    extractor = SSLExtractor(tiny_models["tiny-wav2vec2"], [1], device="cpu")
    n = extractor.min_samples()
    assert n == 10 + (3 - 1) * 5 + (3 - 1) * 4 * 5  # kernels 10,3,3 with strides 5,4,4
    assert extractor.extract([np.zeros(n, np.float32)]).shape == (1, 32)


def test_fingerprint_names_model_layer_dtype_and_changes_with_weights(tiny_models, tmp_path):
    import shutil

    fp = SSLExtractor(tiny_models["tiny-wav2vec2"], [2], device="cpu").fingerprint
    assert fp["layers"] == [2] and fp["dtype"] == "float32" and fp["weights"][0]["sha256"]
    other = SSLExtractor(tiny_models["tiny-wav2vec2"], [3], device="cpu").fingerprint
    assert fp != other
    copy = tmp_path / "copy"
    shutil.copytree(tiny_models["tiny-wav2vec2"], copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert SSLExtractor(copy, [2], device="cpu").fingerprint["weights"] != fp["weights"]


def test_missing_named_model_folder_says_what_to_put_where(tmp_path):
    with pytest.raises(ModelFolderError, match=r"facebook/wav2vec2-xls-r-2b.*config.json"):
        build_extractor("xls-r-2b@8", models_dir=tmp_path)


def test_wrong_model_in_named_folder_is_refused(tiny_models, tmp_path):
    import shutil

    shutil.copytree(tiny_models["tiny-wav2vec2"], tmp_path / "xls-r-2b")
    with pytest.raises(ModelFolderError, match="hidden_size"):
        build_extractor("xls-r-2b@8", models_dir=tmp_path)


def test_layer_out_of_range_and_bad_spec(tiny_models):
    with pytest.raises(ValueError, match="out of range"):
        build_extractor(f"ssl:{tiny_models['tiny-wav2vec2']}@9")
    with pytest.raises(ValueError, match="layer must be"):
        build_extractor(f"ssl:{tiny_models['tiny-wav2vec2']}@top")
    with pytest.raises(ValueError, match="unknown extractor"):
        build_extractor("wavlm")


def test_w2v_bert_min_samples_gives_a_finite_vector(tiny_models):
    """One stacked fbank frame normalises to NaN (variance with ddof=1): two are the minimum."""
    extractor = SSLExtractor(tiny_models["tiny-w2v-bert"], [1], device="cpu")
    assert extractor.min_samples() == 560
    assert np.isfinite(extractor.extract([np.zeros(560, np.float32)])).all()


@pytest.mark.parametrize("model_type, extra", [
    ("hubert", {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}),
    ("wavlm", {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}),
    ("wavlm", {"do_stable_layer_norm": False, "feat_extract_norm": "layer"}),
    ("data2vec-audio", {}),
])
def test_other_wav2vec2_family_models_are_exact_too(tmp_path, model_type, extra):
    """HuBERT, WavLM (relative position bias, tuple layer outputs) and data2vec-audio (one clip per
    batch) through the same path, the GEMM front end included (the CPU's default: their conv
    layers are told by their parts, whatever their classes are called)."""
    from sourcetrace.attribution.extractors.ssl import named_model_spec, save_random_model

    spec = named_model_spec("tiny-wav2vec2")
    config = {**spec["config"], "model_type": model_type, **extra}
    if model_type == "wavlm":
        config.update(num_buckets=32, max_bucket_distance=100)
    folder = save_random_model(config, spec["preprocessor"], tmp_path / model_type, seed=0)
    waves = clips(seed=5)
    expected = reference_vectors(folder, waves, 3)
    extractor = SSLExtractor(folder, [3], device="cpu")
    plan = extractor.plan_batches([len(w) for w in waves])  # as the feature store runs them
    # data2vec-audio's stack of positional convs would carry a batch's padding into a clip's frames
    assert (max(map(len, plan)) == 1) == (model_type == "data2vec-audio")
    assert ("one_clip_per_batch" in extractor.fingerprint) == (model_type == "data2vec-audio")  # old stores recomputed
    got = np.empty((len(waves), extractor.vector_dim), np.float32)
    for batch in plan:
        got[batch] = extractor.extract([waves[i] for i in batch])
    assert type(extractor.model.feature_extractor).__name__ == "GemmFeatureEncoder"
    assert rel_err(got, expected).max() < 1e-6


def test_group_norm_front_end_runs_one_clip_per_batch(tmp_path):
    """wav2vec2-base-style models normalise the conv output over time: padding would change them."""
    from sourcetrace.attribution.extractors.ssl import named_model_spec, save_random_model

    spec = named_model_spec("tiny-wav2vec2")
    config = {**spec["config"], "feat_extract_norm": "group", "do_stable_layer_norm": False}
    folder = save_random_model(config, {**spec["preprocessor"], "return_attention_mask": False}, tmp_path / "base", seed=0)
    extractor = SSLExtractor(folder, [2], device="cpu", batch_size=8)
    assert extractor.frontend == "conv"  # the GEMM front end is for layer-normalised conv layers only
    waves = clips(seed=6)
    assert all(len(b) == 1 for b in extractor.plan_batches([len(w) for w in waves]))
    assert rel_err(extractor.extract(waves[:1]), reference_vectors(folder, waves[:1], 2)).max() < 1e-6
