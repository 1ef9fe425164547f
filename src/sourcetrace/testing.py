"""The conformance kit: the contracts every generator, vocoder, feature extractor and attributor
keeps, as functions that the project's tests and a plug-in's tests call alike.

    from sourcetrace.testing import check_generator
    def test_my_architecture_conforms(tmp_path):
        check_generator(MyGenerator, tmp_path)

Each check raises `ConformanceError` (an AssertionError, so pytest shows it as a failure) naming
the class and the contract it breaks. They run tiny models on the CPU in seconds; the generator
check trains a few optimizer steps on a few espeak-ng clips (espeak-ng must be installed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sourcetrace.core.naming import step_name


class ConformanceError(AssertionError):
    pass


def _require(condition, who, contract: str) -> None:
    if not condition:
        raise ConformanceError(f"{getattr(who, '__qualname__', who)}: {contract}")


def _raises(error: type[Exception], call: Callable[[], object]) -> bool:
    try:
        call()
    except error:
        return True
    return False


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- generators ---------------------------------------------------------------------------------
SENTENCE = "The old sailor found a silver coin."
RESUME_STEPS = [2, 3, 5]  # a micro schedule; interrupted after step 4, the resume point is step 3


def speech_data(folder: str | Path):
    """A tiny LJSpeech-format folder of espeak-ng clips (made once, reused when rerun)."""
    from sourcetrace.datasets.espeak_datasets import make_ljspeech_like

    return make_ljspeech_like(folder, n_train=4, n_val=1, n_test=1, seed=0)


def check_generator(cls, workdir: str | Path, config: str = "tiny", data=None,
                    write_official: Callable[[object, Path], Path] | None = None, trust: bool = False) -> None:
    """A `Generator` subclass and its named `config`: zero-init weights are a function of the seed;
    synthesis is deterministic under a seeded RNG and makes a (n_mels, frames) mel in the class's
    mel convention (a waveform if end to end); training keeps exactly the scheduled checkpoints,
    and resuming an interrupted run gives the same weights, bit for bit; a checkpoint reloads. A
    zero-shot class (`ZeroShot`) speaks in the voice of a data clip, and another clip
    changes its output; an `InferenceOnly` class is refused by training, with its reason, and
    its zero-init checkpoint reloads.
    `data`: an LJSpeech folder (default: a few espeak-ng clips under `workdir`); `write_official`
    (generator, folder) -> file: writes the official format, which must load back exactly (with
    `trust`: for formats that need full unpickling)."""
    from sourcetrace.core.mel import MelConfig
    from sourcetrace.generators.base import EndToEndGenerator, Generator, GeneratorError, InferenceOnly, ZeroShot

    workdir = Path(workdir)
    _require(isinstance(cls, type) and issubclass(cls, Generator), cls, "is not a sourcetrace Generator subclass")
    _require(isinstance(getattr(cls, "architecture", None), str) and cls.architecture, cls, "sets no `architecture` name")
    end_to_end = issubclass(cls, EndToEndGenerator)
    _require(end_to_end or getattr(cls, "default_vocoder", None), cls, "makes mels but names no `default_vocoder` kind")
    a, b, c = (cls.from_config_name(config, seed) for seed in (1, 1, 2))
    _require(isinstance(a.mel_config, MelConfig), cls, "has no MelConfig mel convention")
    _require(_same_weights(a.model, b.model), cls, f"zero-init weights of config {config!r} differ for one seed")
    _require(not _same_weights(a.model, c.model), cls, "zero-init weights do not depend on the seed")

    lj = speech_data(workdir / "data") if data is None else data
    references = [item.audio for item in lj.items("train")[:2]]
    if issubclass(cls, ZeroShot):
        for g in (a, b):
            g.use_reference(references[0])
    outputs = []
    for g in (a, b):
        torch.manual_seed(7)
        with g.inference():
            outputs.append(g.synthesize(g.synthesis_ids(SENTENCE)))
    out = outputs[0]
    _require(isinstance(out, torch.Tensor) and torch.isfinite(out).all(), cls, "synthesis is not a finite tensor")
    if end_to_end:
        _require(out.dim() == 1 and out.shape[0] > 1, cls, f"end to end, but synthesis is not a waveform: {tuple(out.shape)}")
    else:
        _require(out.dim() == 2 and out.shape[0] == a.mel_config.n_mels and out.shape[1] > 1, cls,
                 f"synthesis is {tuple(out.shape)}, not ({a.mel_config.n_mels} mels, frames)")
    _require(torch.equal(outputs[0], outputs[1]), cls, "synthesis differs under the same seed and weights")
    if issubclass(cls, ZeroShot):
        b.use_reference(references[1])
        torch.manual_seed(7)
        other = b.synthesize(b.synthesis_ids(SENTENCE))
        _require(not (other.shape == out.shape and torch.equal(other, out)), cls,
                 "synthesis does not depend on the reference clip")
    batch = a.synthesize_batch([a.synthesis_ids(SENTENCE), a.synthesis_ids("A coin.")])
    _require(len(batch) == 2 and all(x.shape[:-1] == out.shape[:-1] for x in batch), cls,
             "synthesize_batch does not give one output per utterance, shaped as synthesize's")

    if issubclass(cls, InferenceOnly):
        _check_inference_only(cls, config, workdir, lj, a)
    else:
        _check_training(cls, config, workdir, lj, a)

    if write_official is not None:
        (workdir / "official").mkdir(exist_ok=True)
        path = write_official(a, workdir / "official")
        fresh = cls.from_official(path, config, trust=trust, seed=2)  # as load_checkpoint does
        _require(_same_weights(a.model, fresh.model), cls, f"{path.name} does not load back to the weights it holds")
        junk = workdir / "official" / "junk.pt"
        junk.write_bytes(b"not a checkpoint")
        _require(_raises(GeneratorError, lambda: fresh.load_official(junk, trust=trust)), cls,
                 "load_official of a junk file does not raise GeneratorError")


def _check_inference_only(cls, config: str, workdir: Path, lj, zero_init) -> None:
    """Training refuses the class, naming why; its zero-init checkpoint saves and reloads."""
    from sourcetrace.generators.base import GeneratorError, read_checkpoint_meta
    from sourcetrace.generators.data import TrainingData
    from sourcetrace.generators.training import train

    _require(isinstance(getattr(cls, "inference_only_reason", None), str), cls,
             "inference_only_reason is not a reason (str)")
    generator = cls.from_config_name(config, 1)
    try:
        train(generator, TrainingData(generator, lj.items("train"), workdir / "features"), workdir / "refused",
              RESUME_STEPS, batch_size=2, seed=0, tensorboard=False, log=lambda line: None)
        refusal = ""
    except GeneratorError as exc:
        refusal = str(exc)
    _require(refusal == f"{cls.architecture} is inference-only: {cls.inference_only_reason}", cls,
             f"training an inference-only class does not raise GeneratorError with its reason (got {refusal!r})")
    folder = zero_init.save(workdir / "zero-init", 0, "zero-init")
    meta = read_checkpoint_meta(folder)
    reloaded = cls(meta["config"], 2)
    reloaded.load_weights(folder)
    _require(_same_weights(reloaded.model, zero_init.model), cls, "a zero-init checkpoint does not reload")


def _check_training(cls, config: str, workdir: Path, lj, zero_init) -> None:
    """Scheduled checkpoints, bit-identical resume, and a checkpoint that reloads."""
    from sourcetrace.generators.base import read_checkpoint_meta
    from sourcetrace.generators.data import TrainingData
    from sourcetrace.generators.training import train

    cache = workdir / "features"

    def run(seed: int, run_dir: str, **kwargs):
        generator = cls.from_config_name(config, seed)
        return train(generator, TrainingData(generator, lj.items("train"), cache), workdir / run_dir, RESUME_STEPS,
                     batch_size=2, seed=0, tensorboard=False, log=lambda line: None, **kwargs)

    report = run(1, "whole")
    kept = sorted(p.name for p in (workdir / "whole" / "checkpoints").iterdir())
    _require(kept == [step_name(s) for s in RESUME_STEPS] and report.steps_run == RESUME_STEPS[-1], cls,
             f"training on steps {RESUME_STEPS} kept {kept} after {report.steps_run} steps")
    run(1, "cut", stop_after=4)
    resumed = run(99, "cut")  # the weights come from the resume point, not from this seed
    _require(resumed.resumed_from == 3, cls, f"resumed from step {resumed.resumed_from}, not 3")
    for name in (step_name(3), step_name(5)):
        whole, cut = (workdir / r / "checkpoints" / name / "model.safetensors" for r in ("whole", "cut"))
        _require(whole.read_bytes() == cut.read_bytes(), cls, f"{name} of a resumed run differs from an uninterrupted one")

    folder = workdir / "whole" / "checkpoints" / step_name(5)
    meta = read_checkpoint_meta(folder)
    _require(meta["architecture"] == cls.architecture and meta["step"] == 5, cls, f"checkpoint identity {meta}")
    reloaded = cls(meta["config"], meta["seed"])
    reloaded.load_weights(folder)
    trained = cls.from_config_name(config, 0)
    trained.load_weights(folder)
    _require(_same_weights(reloaded.model, trained.model) and not _same_weights(reloaded.model, zero_init.model), cls,
             "a checkpoint does not reload to the trained weights")


# ---- vocoders -----------------------------------------------------------------------------------
def check_vocoder(cls, workdir: str | Path, config: str = "tiny",
                  write_official: Callable[[object, Path], Path] | None = None) -> None:
    """A `Vocoder` subclass and one of its shipped configs: random weights are a function of the
    seed; a mel of its own convention becomes frames x hop samples in [-1, 1]; a mel given with its
    own convention is vocoded unchanged and a foreign sample rate is refused; batches keep each
    clip's length. `write_official` (vocoder, folder) -> file: the official format loads back exactly."""
    from sourcetrace.core.mel import MelConfig
    from sourcetrace.vocoders.base import Vocoder, VocoderError

    workdir = Path(workdir)
    _require(isinstance(cls, type) and issubclass(cls, Vocoder), cls, "is not a sourcetrace Vocoder subclass")
    _require(isinstance(getattr(cls, "kind", None), str) and cls.kind, cls, "sets no `kind` name")
    _require(config in cls.shipped_configs, cls, f"config {config!r} is not among shipped_configs {cls.shipped_configs}")
    a, b, c = (cls.random(config, seed) for seed in (3, 3, 4))
    _require(isinstance(a.mel_config, MelConfig), cls, "has no MelConfig mel convention")
    _require(_same_weights(a.module, b.module) and a.identity == b.identity, cls, "random weights differ for one seed")
    _require(not _same_weights(a.module, c.module) and a.identity != c.identity, cls, "random weights ignore the seed")
    _require(isinstance(a.name, str) and a.name and len(a.identity) == 64, cls, "needs a name and a sha256 identity")
    torch.manual_seed(0)
    mel = torch.randn(a.mel_config.n_mels, 20) - 5
    wave = a(mel)
    hop = a.mel_config.hop_length
    _require(wave.shape == (20 * hop,), cls, f"20 frames became {tuple(wave.shape)} samples, not ({20 * hop},)")
    _require(torch.isfinite(wave).all() and wave.abs().max() <= 1.0, cls, "waveform is not finite within [-1, 1]")
    _require(torch.equal(wave, b(mel)), cls, "vocoding is not deterministic")
    _require(torch.equal(wave, a(mel, a.mel_config)), cls, "a mel in its own convention is changed before vocoding")
    foreign = MelConfig(sample_rate=a.sample_rate // 2, f_max=a.sample_rate / 4)
    _require(_raises(VocoderError, lambda: a(mel, foreign)), cls, "vocodes a mel of another sample rate")
    short = mel[:, :7]
    waves = a.batch([mel, short])
    _require([w.shape[0] for w in waves] == [20 * hop, 7 * hop], cls, "batch does not keep each clip's length")

    if write_official is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        path = write_official(a, workdir)
        loaded = cls.from_official(path, config=config)
        _require(torch.equal(loaded(mel), wave), cls, f"{path.name} does not load back to the weights it holds")
        _require(loaded.identity != a.identity and len(loaded.identity) == 64, cls,
                 "an official file's identity must be its own sha256")
        junk = workdir / "junk"
        junk.write_bytes(b"not a vocoder")
        _require(_raises(VocoderError, lambda: cls.from_official(junk, config=config)), cls,
                 "from_official of a junk file does not raise VocoderError")


# ---- feature extractors -------------------------------------------------------------------------
def _clips(sample_rate: int, lengths: list[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = [np.arange(n) / sample_rate for n in lengths]
    return [(0.3 * np.sin(2 * np.pi * (150 + 60 * i) * x) + 0.05 * rng.standard_normal(len(x))).astype(np.float32)
            for i, x in enumerate(t)]


def check_extractor(extractor, atol: float = 1e-4) -> None:
    """A `FeatureExtractor` instance: a JSON fingerprint (the identity of its vectors) and a
    file-name-safe name; one finite float32 vector per clip from its shortest clip up, the same
    whether a clip comes alone or in a batch, the same when run again, different for different
    audio; batch plans cover every clip once."""
    from sourcetrace.attribution.extractors.base import FeatureExtractor

    who = type(extractor)
    _require(isinstance(extractor, FeatureExtractor), who, "is not a sourcetrace FeatureExtractor")
    fingerprint = extractor.fingerprint
    _require(isinstance(fingerprint, dict) and fingerprint, who, "fingerprint is not a non-empty dict")
    _require(json.loads(json.dumps(fingerprint, sort_keys=True)) == fingerprint, who, "fingerprint is not plain JSON")
    _require(extractor.fingerprint_hash == extractor.fingerprint_hash, who, "fingerprint hash is not stable")
    _require(re.fullmatch(r"[\w.@+=,-]+", extractor.name or ""), who, f"name {extractor.name!r} is not file-name-safe")
    rate, shortest = extractor.sample_rate, int(extractor.min_samples())
    _require(shortest >= 1, who, f"min_samples is {shortest}")
    clips = _clips(rate, [shortest, rate // 2, int(1.3 * rate)])
    together = extractor.extract(clips)
    _require(isinstance(together, np.ndarray) and together.dtype == np.float32 and len(together) == len(clips), who,
             f"extract of {len(clips)} clips gave {getattr(together, 'shape', together)!r}, not float32 (n, ...)")
    _require(np.isfinite(together).all(), who, "vectors are not finite (the shortest clip included)")
    alone = np.concatenate([extractor.extract([clip]) for clip in clips])
    _require(np.allclose(alone, together, atol=atol, rtol=1e-4), who, "a clip's vector depends on its batch")
    _require(np.array_equal(extractor.extract(clips), together), who, "extract is not deterministic")
    _require(not np.allclose(together[1], together[2]), who, "different audio gives the same vector")
    plan = extractor.plan_batches([len(c) for c in clips])
    _require(sorted(i for batch in plan for i in batch) == list(range(len(clips))), who,
             f"plan_batches {plan} does not cover each clip exactly once")


# ---- attributors --------------------------------------------------------------------------------
def blobs(n_classes: int = 4, per_class: int = 30, dim: int = 8, spread: float = 0.5, seed: int = 0):
    """Separable Gaussian classes: (vectors float32, labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)) * 3
    X = np.concatenate([c + spread * rng.standard_normal((per_class, dim)) for c in centres]).astype(np.float32)
    return X, np.repeat([f"class-{i}" for i in range(n_classes)], per_class)


def check_attributor(cls, **params) -> None:
    """An `Attributor` subclass built with `params`: the benchmark's `name:key=value` parameters
    are its constructor's and `params()` reports them as plain JSON; fit/predict shapes and sorted
    classes; predictions are the best scores and separate separable classes; bad inputs are
    refused; a neighbour-voting attributor (`votes_among_neighbours`) keeps kNN's interface."""
    import inspect

    from sourcetrace.attribution.base import Attributor
    from sourcetrace.attribution.metrics import macro_f1

    _require(isinstance(cls, type) and issubclass(cls, Attributor), cls, "is not a sourcetrace Attributor subclass")
    _require(re.fullmatch(r"[a-z][\w-]*", cls.name or ""), cls, f"name {cls.name!r} is not a lower-case word")
    signature = inspect.signature(cls.__init__).parameters
    _require(all(p.default is not inspect.Parameter.empty for k, p in signature.items() if k != "self"
                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)), cls,
             "every constructor parameter needs a default (the benchmark builds it from name:key=value)")
    vectors, labels = blobs(per_class=40)
    X, y, Q, yq = vectors[::2], labels[::2], vectors[1::2], labels[1::2]  # same classes, other draws
    attributor = cls(**params)
    _require(_raises(RuntimeError, lambda: attributor.predict(Q)), cls, "predict before fit does not raise RuntimeError")
    reported = attributor.params()
    _require(isinstance(reported, dict) and set(reported) <= set(signature), cls,
             f"params() {reported!r} are not constructor parameters")
    _require(json.loads(json.dumps(reported)) == reported, cls, "params() is not plain JSON")
    _require(attributor.fit(X, y) is attributor, cls, "fit does not return the attributor")
    _require(list(attributor.classes_) == sorted(set(y)), cls, "classes_ are not the sorted labels")
    scores = attributor.predict_scores(Q)
    _require(scores.shape == (len(Q), len(attributor.classes_)) and np.isfinite(scores).all(), cls,
             f"predict_scores shape {scores.shape}, not ({len(Q)}, {len(attributor.classes_)}) finite")
    predicted = attributor.predict(Q)
    _require(predicted.shape == (len(Q),) and (predicted == attributor.classes_[scores.argmax(1)]).all(), cls,
             "predict is not the best-scoring class")
    _require(macro_f1(yq, predicted) > 0.9, cls, "cannot separate well-separated classes")
    _require(np.array_equal(cls(**params).fit(X, y).predict(Q), predicted), cls, "a refit predicts otherwise")
    outliers = attributor.outlier_score(Q)
    _require(outliers.shape == (len(Q),) and np.isfinite(outliers).all(), cls, "outlier_score is not one number a query")
    _require(_raises(ValueError, lambda: cls(**params).fit(X, y[:-1])), cls, "fit with fewer labels than vectors")
    _require(_raises(ValueError, lambda: attributor.predict(Q[:, :3])), cls, "predict of the wrong dimension")
    if cls.votes_among_neighbours:
        knn = cls(**params).fit(X, y)
        dist, idx = knn.kneighbors(Q)
        _require(idx.shape == dist.shape == (len(Q), knn.k), cls, "kneighbors is not (queries, k)")
        coarse = np.where(np.isin(y, ["class-0", "class-1"]), "low", "high")
        _require(np.array_equal(knn.relabel(coarse).predict(Q), cls(**params).fit(X, coarse).predict(Q)), cls,
                 "relabel does not equal a fresh fit on the new labels")
