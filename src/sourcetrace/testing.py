"""The conformance kit: the contracts every generator, vocoder, feature extractor and attributor
keeps, as named checks that the project's tests and a plug-in's tests run alike, one pytest item
each (as scikit-learn's `parametrize_with_checks`), so that every broken contract shows at once:

    from sourcetrace.testing import generator_checks, parametrize_with_checks
    @parametrize_with_checks(generator_checks(MyGenerator))
    def test_my_architecture_conforms(check, tmp_path):
        check(tmp_path)

A failing check raises `ConformanceError` (an AssertionError, so pytest shows it as a failure)
naming the class and the contract it breaks. They run tiny models on the CPU in seconds; the
generator checks train a few optimizer steps on a few espeak-ng clips (espeak-ng must be installed).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from sourcetrace.attribution.base import Attributor
from sourcetrace.attribution.extractors.base import FeatureExtractor
from sourcetrace.attribution.metrics import macro_f1
from sourcetrace.core.mel import MelConfig
from sourcetrace.core.naming import step_name
from sourcetrace.datasets.espeak_datasets import make_ljspeech_like
from sourcetrace.generators.base import (
    EndToEndGenerator,
    Generator,
    GeneratorError,
    InferenceOnly,
    ZeroShot,
    read_checkpoint_meta,
)
from sourcetrace.generators.data import TrainingData
from sourcetrace.generators.training import train
from sourcetrace.vocoders.base import Vocoder, VocoderError


class ConformanceError(AssertionError):
    pass


@dataclass(frozen=True)
class Check:
    """One contract of one class, run alone in a folder of its own: `check(workdir)`."""

    subject: str  # the class under test (with its parameters), as the pytest id shows it
    name: str
    run: Callable[[Path], None]

    @property
    def id(self) -> str:
        return f"{self.subject}-{self.name}"

    def __call__(self, workdir: str | Path) -> None:
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.run(workdir)


def parametrize_with_checks(*groups: Iterable[Check]):
    """A pytest decorator giving each check of `groups` an item of its own, with the id
    `<class>-<check>`, as the argument `check`."""
    return pytest.mark.parametrize("check", [pytest.param(check, id=check.id) for group in groups for check in group])


def assert_conforms(checks: Iterable[Check], workdir: str | Path) -> None:
    """Every check, each in `workdir/<id>`, then one ConformanceError naming all that failed: for a
    class that exists only once a fixture has run (a plug-in it installs, a model it saves)."""
    failures: list[tuple[str, Exception]] = []
    for check in checks:
        try:
            check(Path(workdir) / check.id)
        except Exception as exc:  # noqa: BLE001 - a check that crashes breaks its contract too: report it with the others
            failures.append((check.id, exc))
    if failures:
        lines = [f"{name}: {exc}" if isinstance(exc, ConformanceError) else f"{name}: {type(exc).__name__}: {exc}"
                 for name, exc in failures]
        raise ConformanceError(f"{len(failures)} checks failed:\n" + "\n".join(lines)) from failures[0][1]


def _named(subject: str, check: functools.partial, writes_files: bool = True) -> Check:
    """`check` (its class and options bound) as the Check of its function's name; one that writes
    no files is called without the workdir."""
    return Check(subject, check.func.__name__, check if writes_files else lambda workdir: check())


def _subject(who, **params) -> str:
    name = getattr(who, "__name__", type(who).__name__)
    shown = ",".join(f"{key}={value}" for key, value in params.items())
    return f"{name}({shown})" if shown else name


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
    return make_ljspeech_like(folder, n_train=4, n_val=1, n_test=1, seed=0)


def generator_checks(cls, config: str = "tiny", write_official: Callable[[object, Path], Path] | None = None,
                     trust: bool = False) -> Iterator[Check]:
    """The checks of a `Generator` subclass and its named `config`: zero-init weights are a function
    of the seed; synthesis is deterministic under a seeded RNG and makes a (n_mels, frames) mel in
    the class's mel convention (a waveform if end to end); training keeps exactly the scheduled
    checkpoints, resuming an interrupted run gives the same weights, bit for bit, and a checkpoint
    reloads. A zero-shot class (`ZeroShot`) speaks in the voice of a data clip, and another
    clip changes its output; an `InferenceOnly` class is refused by training, with its reason,
    and its zero-init checkpoint reloads. `write_official` (generator, folder) -> file: writes the
    official format, which must load back exactly (with `trust`: for formats that need full
    unpickling), while a junk file is refused."""
    checks = [check_declares_an_architecture_and_a_mel_convention, check_zero_init_weights_follow_the_seed,
              check_synthesis_is_seeded_and_shaped]
    if issubclass(cls, ZeroShot):
        checks.append(check_synthesis_follows_the_reference)
    checks.append(check_synthesize_batch_matches_synthesize)
    if issubclass(cls, InferenceOnly):
        checks += [check_training_is_refused_with_its_reason, check_a_zero_init_checkpoint_reloads]
    else:
        checks += [check_training_keeps_the_scheduled_checkpoints, check_an_interrupted_run_resumes_bit_for_bit,
                   check_a_checkpoint_reloads_the_trained_weights]
    subject = _subject(cls, **({} if config == "tiny" else {"config": config}))
    for check in checks:
        yield _named(subject, functools.partial(check, cls, config))
    if write_official is not None:
        yield _named(subject, functools.partial(check_the_official_checkpoint_loads_back, cls, config, write_official,
                                                trust))
        yield _named(subject, functools.partial(check_a_junk_checkpoint_is_refused, cls, config, trust))


def _references(workdir: Path) -> list[Path]:
    return [item.audio for item in speech_data(workdir / "data").items("train")[:2]]


def _zero_init(cls, config: str, workdir: Path):
    """The zero-init model of seed 1, in the voice of the first data clip if zero-shot."""
    generator = cls.from_config_name(config, 1)
    if issubclass(cls, ZeroShot):
        generator.use_reference(_references(workdir)[0])
    return generator


def _synthesis(generator) -> torch.Tensor:
    torch.manual_seed(7)
    with generator.inference():
        return generator.synthesize(generator.synthesis_ids(SENTENCE))


def _train(cls, config: str, workdir: Path, seed: int, run: str, **kwargs):
    """Training on RESUME_STEPS from the zero-init model of `seed`, into workdir/run."""
    generator = cls.from_config_name(config, seed)
    data = TrainingData(generator, speech_data(workdir / "data").items("train"), workdir / "features")
    return train(generator, data, workdir / run, RESUME_STEPS, batch_size=2, seed=0, tensorboard=False,
                 log=lambda line: None, **kwargs)


def check_declares_an_architecture_and_a_mel_convention(cls, config: str, workdir: Path) -> None:
    _require(isinstance(cls, type) and issubclass(cls, Generator), cls, "is not a sourcetrace Generator subclass")
    _require(isinstance(getattr(cls, "architecture", None), str) and cls.architecture, cls, "sets no `architecture` name")
    _require(issubclass(cls, EndToEndGenerator) or getattr(cls, "default_vocoder", None), cls,
             "makes mels but names no `default_vocoder` kind")
    _require(isinstance(cls.from_config_name(config, 1).mel_config, MelConfig), cls, "has no MelConfig mel convention")


def check_zero_init_weights_follow_the_seed(cls, config: str, workdir: Path) -> None:
    a, b, c = (cls.from_config_name(config, seed) for seed in (1, 1, 2))
    _require(_same_weights(a.model, b.model), cls, f"zero-init weights of config {config!r} differ for one seed")
    _require(not _same_weights(a.model, c.model), cls, "zero-init weights do not depend on the seed")


def check_synthesis_is_seeded_and_shaped(cls, config: str, workdir: Path) -> None:
    a, b = _zero_init(cls, config, workdir), _zero_init(cls, config, workdir)
    out = _synthesis(a)
    _require(isinstance(out, torch.Tensor) and torch.isfinite(out).all(), cls, "synthesis is not a finite tensor")
    if issubclass(cls, EndToEndGenerator):
        _require(out.dim() == 1 and out.shape[0] > 1, cls, f"end to end, but synthesis is not a waveform: {tuple(out.shape)}")
    else:
        _require(out.dim() == 2 and out.shape[0] == a.mel_config.n_mels and out.shape[1] > 1, cls,
                 f"synthesis is {tuple(out.shape)}, not ({a.mel_config.n_mels} mels, frames)")
    _require(torch.equal(out, _synthesis(b)), cls, "synthesis differs under the same seed and weights")


def check_synthesis_follows_the_reference(cls, config: str, workdir: Path) -> None:
    generator = _zero_init(cls, config, workdir)
    out = _synthesis(generator)
    generator.use_reference(_references(workdir)[1])
    other = _synthesis(generator)
    _require(not (other.shape == out.shape and torch.equal(other, out)), cls,
             "synthesis does not depend on the reference clip")


def check_synthesize_batch_matches_synthesize(cls, config: str, workdir: Path) -> None:
    generator = _zero_init(cls, config, workdir)
    out = _synthesis(generator)
    batch = generator.synthesize_batch([generator.synthesis_ids(SENTENCE), generator.synthesis_ids("A coin.")])
    _require(len(batch) == 2 and all(x.shape[:-1] == out.shape[:-1] for x in batch), cls,
             "synthesize_batch does not give one output per utterance, shaped as synthesize's")


def check_training_keeps_the_scheduled_checkpoints(cls, config: str, workdir: Path) -> None:
    report = _train(cls, config, workdir, 1, "whole")
    kept = sorted(p.name for p in (workdir / "whole" / "checkpoints").iterdir())
    _require(kept == [step_name(s) for s in RESUME_STEPS] and report.steps_run == RESUME_STEPS[-1], cls,
             f"training on steps {RESUME_STEPS} kept {kept} after {report.steps_run} steps")


def check_an_interrupted_run_resumes_bit_for_bit(cls, config: str, workdir: Path) -> None:
    _train(cls, config, workdir, 1, "whole")
    _train(cls, config, workdir, 1, "cut", stop_after=4)
    resumed = _train(cls, config, workdir, 99, "cut")  # the weights come from the resume point, not from this seed
    _require(resumed.resumed_from == 3, cls, f"resumed from step {resumed.resumed_from}, not 3")
    for name in (step_name(3), step_name(5)):
        whole, cut = (workdir / r / "checkpoints" / name / "model.safetensors" for r in ("whole", "cut"))
        _require(whole.read_bytes() == cut.read_bytes(), cls, f"{name} of a resumed run differs from an uninterrupted one")


def check_a_checkpoint_reloads_the_trained_weights(cls, config: str, workdir: Path) -> None:
    _train(cls, config, workdir, 1, "whole")
    folder = workdir / "whole" / "checkpoints" / step_name(5)
    meta = read_checkpoint_meta(folder)
    _require(meta["architecture"] == cls.architecture and meta["step"] == 5, cls, f"checkpoint identity {meta}")
    reloaded = cls(meta["config"], meta["seed"])
    reloaded.load_weights(folder)
    trained = cls.from_config_name(config, 0)
    trained.load_weights(folder)
    _require(_same_weights(reloaded.model, trained.model)
             and not _same_weights(reloaded.model, cls.from_config_name(config, 1).model), cls,
             "a checkpoint does not reload to the trained weights")


def check_training_is_refused_with_its_reason(cls, config: str, workdir: Path) -> None:
    _require(isinstance(getattr(cls, "inference_only_reason", None), str), cls,
             "inference_only_reason is not a reason (str)")
    try:
        _train(cls, config, workdir, 1, "refused")
        refusal = ""
    except GeneratorError as exc:
        refusal = str(exc)
    _require(refusal == f"{cls.architecture} is inference-only: {cls.inference_only_reason}", cls,
             f"training an inference-only class does not raise GeneratorError with its reason (got {refusal!r})")


def check_a_zero_init_checkpoint_reloads(cls, config: str, workdir: Path) -> None:
    zero_init = _zero_init(cls, config, workdir)
    folder = zero_init.save(workdir / "zero-init", 0, "zero-init")
    reloaded = cls(read_checkpoint_meta(folder)["config"], 2)
    reloaded.load_weights(folder)
    _require(_same_weights(reloaded.model, zero_init.model), cls, "a zero-init checkpoint does not reload")


def check_the_official_checkpoint_loads_back(cls, config: str, write_official, trust: bool, workdir: Path) -> None:
    generator = _zero_init(cls, config, workdir)
    (workdir / "official").mkdir(exist_ok=True)
    path = write_official(generator, workdir / "official")
    fresh = cls.from_official(path, config, trust=trust, seed=2)  # as load_checkpoint does
    _require(_same_weights(generator.model, fresh.model), cls, f"{path.name} does not load back to the weights it holds")


def check_a_junk_checkpoint_is_refused(cls, config: str, trust: bool, workdir: Path) -> None:
    junk = workdir / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    fresh = cls.from_config_name(config, 2)
    _require(_raises(GeneratorError, lambda: fresh.load_official(junk, trust=trust)), cls,
             "load_official of a junk file does not raise GeneratorError")


# ---- vocoders -----------------------------------------------------------------------------------
def vocoder_checks(cls, config: str = "tiny",
                   write_official: Callable[[object, Path], Path] | None = None) -> Iterator[Check]:
    """The checks of a `Vocoder` subclass and one of its shipped configs: random weights are a
    function of the seed; a mel of its own convention becomes frames x hop samples in [-1, 1],
    deterministically; a mel given with its own convention is vocoded unchanged and a foreign
    sample rate is refused; batches keep each clip's length. `write_official` (vocoder, folder) ->
    file: the official format loads back exactly, while a junk file is refused."""
    checks = [check_declares_a_kind_and_a_mel_convention, check_random_weights_follow_the_seed,
              check_vocodes_frames_times_hop_samples_within_one, check_vocoding_is_deterministic,
              check_keeps_its_own_convention_and_refuses_a_foreign_rate, check_a_batch_keeps_each_clip_length]
    subject = _subject(cls, **({} if config == "tiny" else {"config": config}))
    shared = functools.cache(lambda: cls.random(config, 3))  # built once for the checks that only read it
    for check in checks:
        yield _named(subject, functools.partial(check, cls, config, shared))
    if write_official is not None:
        yield _named(subject, functools.partial(check_the_official_vocoder_file_loads_back, cls, config, shared,
                                                write_official))
        yield _named(subject, functools.partial(check_a_junk_vocoder_file_is_refused, cls, config))


def _random_mel(vocoder) -> torch.Tensor:
    """20 frames of random log-mel in the vocoder's convention."""
    torch.manual_seed(0)
    return torch.randn(vocoder.mel_config.n_mels, 20) - 5


def check_declares_a_kind_and_a_mel_convention(cls, config: str, shared: Callable[[], Vocoder], workdir: Path) -> None:
    _require(isinstance(cls, type) and issubclass(cls, Vocoder), cls, "is not a sourcetrace Vocoder subclass")
    _require(isinstance(getattr(cls, "kind", None), str) and cls.kind, cls, "sets no `kind` name")
    _require(config in cls.shipped_configs, cls, f"config {config!r} is not among shipped_configs {cls.shipped_configs}")
    vocoder = shared()
    _require(isinstance(vocoder.mel_config, MelConfig), cls, "has no MelConfig mel convention")
    _require(isinstance(vocoder.name, str) and vocoder.name and len(vocoder.identity) == 64, cls,
             "needs a name and a sha256 identity")


def check_random_weights_follow_the_seed(cls, config: str, shared: Callable[[], Vocoder], workdir: Path) -> None:
    a, b, c = shared(), cls.random(config, 3), cls.random(config, 4)
    _require(_same_weights(a.module, b.module) and a.identity == b.identity, cls, "random weights differ for one seed")
    _require(not _same_weights(a.module, c.module) and a.identity != c.identity, cls, "random weights ignore the seed")


def check_vocodes_frames_times_hop_samples_within_one(cls, config: str, shared: Callable[[], Vocoder],
                                                      workdir: Path) -> None:
    vocoder = shared()
    wave = vocoder(_random_mel(vocoder))
    hop = vocoder.mel_config.hop_length
    _require(wave.shape == (20 * hop,), cls, f"20 frames became {tuple(wave.shape)} samples, not ({20 * hop},)")
    _require(torch.isfinite(wave).all() and wave.abs().max() <= 1.0, cls, "waveform is not finite within [-1, 1]")


def check_vocoding_is_deterministic(cls, config: str, shared: Callable[[], Vocoder], workdir: Path) -> None:
    a, b = shared(), cls.random(config, 3)
    mel = _random_mel(a)
    _require(torch.equal(a(mel), b(mel)), cls, "vocoding is not deterministic")


def check_keeps_its_own_convention_and_refuses_a_foreign_rate(cls, config: str, shared: Callable[[], Vocoder],
                                                              workdir: Path) -> None:
    vocoder = shared()
    mel = _random_mel(vocoder)
    _require(torch.equal(vocoder(mel), vocoder(mel, vocoder.mel_config)), cls,
             "a mel in its own convention is changed before vocoding")
    foreign = MelConfig(sample_rate=vocoder.sample_rate // 2, f_max=vocoder.sample_rate / 4)
    _require(_raises(VocoderError, lambda: vocoder(mel, foreign)), cls, "vocodes a mel of another sample rate")


def check_a_batch_keeps_each_clip_length(cls, config: str, shared: Callable[[], Vocoder], workdir: Path) -> None:
    vocoder = shared()
    mel = _random_mel(vocoder)
    hop = vocoder.mel_config.hop_length
    waves = vocoder.batch([mel, mel[:, :7]])
    _require([w.shape[0] for w in waves] == [20 * hop, 7 * hop], cls, "batch does not keep each clip's length")


def check_the_official_vocoder_file_loads_back(cls, config: str, shared: Callable[[], Vocoder], write_official,
                                                workdir: Path) -> None:
    vocoder = shared()
    mel = _random_mel(vocoder)
    path = write_official(vocoder, workdir)
    loaded = cls.from_official(path, config=config)
    _require(torch.equal(loaded(mel), vocoder(mel)), cls, f"{path.name} does not load back to the weights it holds")
    _require(loaded.identity != vocoder.identity and len(loaded.identity) == 64, cls,
             "an official file's identity must be its own sha256")


def check_a_junk_vocoder_file_is_refused(cls, config: str, workdir: Path) -> None:
    junk = workdir / "junk"
    junk.write_bytes(b"not a vocoder")
    _require(_raises(VocoderError, lambda: cls.from_official(junk, config=config)), cls,
             "from_official of a junk file does not raise VocoderError")


# ---- feature extractors -------------------------------------------------------------------------
def extractor_checks(extractor, atol: float = 1e-4) -> Iterator[Check]:
    """The checks of a `FeatureExtractor` instance: a JSON fingerprint (the identity of its
    vectors) and a file-name-safe name; one finite float32 vector per clip from its shortest clip
    up, the same whether a clip comes alone or in a batch (within `atol`), the same when run again,
    different for different audio; batch plans cover every clip once."""
    subject = _subject(type(extractor), name=getattr(extractor, "name", None))
    for check in (check_fingerprint_is_plain_json, check_name_is_file_name_safe,
                  check_vectors_are_finite_float32_from_the_shortest_clip):
        yield _named(subject, functools.partial(check, extractor), writes_files=False)
    yield _named(subject, functools.partial(check_a_vector_does_not_depend_on_its_batch, extractor, atol),
                 writes_files=False)
    for check in (check_extract_is_deterministic, check_different_audio_gives_different_vectors,
                  check_batch_plans_cover_every_clip_once):
        yield _named(subject, functools.partial(check, extractor), writes_files=False)


def _clips(extractor) -> list[np.ndarray]:
    """Three clips: the extractor's shortest, half a second, 1.3 seconds."""
    rate = extractor.sample_rate
    rng = np.random.default_rng(0)
    t = [np.arange(n) / rate for n in (int(extractor.min_samples()), rate // 2, int(1.3 * rate))]
    return [(0.3 * np.sin(2 * np.pi * (150 + 60 * i) * x) + 0.05 * rng.standard_normal(len(x))).astype(np.float32)
            for i, x in enumerate(t)]


def check_fingerprint_is_plain_json(extractor) -> None:
    who = type(extractor)
    _require(isinstance(extractor, FeatureExtractor), who, "is not a sourcetrace FeatureExtractor")
    fingerprint = extractor.fingerprint
    _require(isinstance(fingerprint, dict) and fingerprint, who, "fingerprint is not a non-empty dict")
    _require(json.loads(json.dumps(fingerprint, sort_keys=True)) == fingerprint, who, "fingerprint is not plain JSON")
    _require(extractor.fingerprint_hash == extractor.fingerprint_hash, who, "fingerprint hash is not stable")


def check_name_is_file_name_safe(extractor) -> None:
    _require(re.fullmatch(r"[\w.@+=,-]+", extractor.name or ""), type(extractor),
             f"name {extractor.name!r} is not file-name-safe")


def check_vectors_are_finite_float32_from_the_shortest_clip(extractor) -> None:
    who = type(extractor)
    shortest = int(extractor.min_samples())
    _require(shortest >= 1, who, f"min_samples is {shortest}")
    clips = _clips(extractor)
    together = extractor.extract(clips)
    _require(isinstance(together, np.ndarray) and together.dtype == np.float32 and len(together) == len(clips), who,
             f"extract of {len(clips)} clips gave {getattr(together, 'shape', together)!r}, not float32 (n, ...)")
    _require(np.isfinite(together).all(), who, "vectors are not finite (the shortest clip included)")


def check_a_vector_does_not_depend_on_its_batch(extractor, atol: float) -> None:
    clips = _clips(extractor)
    alone = np.concatenate([extractor.extract([clip]) for clip in clips])
    _require(np.allclose(alone, extractor.extract(clips), atol=atol, rtol=1e-4), type(extractor),
             "a clip's vector depends on its batch")


def check_extract_is_deterministic(extractor) -> None:
    clips = _clips(extractor)
    _require(np.array_equal(extractor.extract(clips), extractor.extract(clips)), type(extractor),
             "extract is not deterministic")


def check_different_audio_gives_different_vectors(extractor) -> None:
    vectors = extractor.extract(_clips(extractor))
    _require(not np.allclose(vectors[1], vectors[2]), type(extractor), "different audio gives the same vector")


def check_batch_plans_cover_every_clip_once(extractor) -> None:
    clips = _clips(extractor)
    plan = extractor.plan_batches([len(c) for c in clips])
    _require(sorted(i for batch in plan for i in batch) == list(range(len(clips))), type(extractor),
             f"plan_batches {plan} does not cover each clip exactly once")


# ---- attributors --------------------------------------------------------------------------------
def blobs(n_classes: int = 4, per_class: int = 30, dim: int = 8, spread: float = 0.5, seed: int = 0):
    """Separable Gaussian classes: (vectors float32, labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)) * 3
    X = np.concatenate([c + spread * rng.standard_normal((per_class, dim)) for c in centres]).astype(np.float32)
    return X, np.repeat([f"class-{i}" for i in range(n_classes)], per_class)


def attributor_checks(cls, **params) -> Iterator[Check]:
    """The checks of an `Attributor` subclass built with `params`: the benchmark's `name:key=value`
    parameters are its constructor's and `params()` reports them as plain JSON; fit/predict shapes
    and sorted classes; predictions are the best scores and separate separable classes; bad inputs
    are refused; a neighbour-voting attributor (`votes_among_neighbours`) keeps kNN's interface."""
    checks = [check_declares_a_name_and_defaulted_parameters, check_predict_before_fit_is_refused,
              check_params_are_plain_json_constructor_parameters, check_fit_returns_itself_with_sorted_classes,
              check_predict_is_the_best_scoring_class, check_separates_separable_classes,
              check_a_refit_predicts_the_same, check_outlier_score_is_one_number_a_query, check_bad_inputs_are_refused]
    if getattr(cls, "votes_among_neighbours", False):
        checks += [check_kneighbors_is_queries_by_k, check_relabel_equals_a_fresh_fit]
    subject = _subject(cls, **params)
    for check in checks:
        yield _named(subject, functools.partial(check, cls, **params), writes_files=False)


def _split():
    """Fit and query halves of the same separable classes (other draws): X, y, Q, yq."""
    vectors, labels = blobs(per_class=40)
    return vectors[::2], labels[::2], vectors[1::2], labels[1::2]


def _fitted(cls, params: dict):
    X, y, _, _ = _split()
    attributor = cls(**params)
    attributor.fit(X, y)
    return attributor


def check_declares_a_name_and_defaulted_parameters(cls, **params) -> None:
    _require(isinstance(cls, type) and issubclass(cls, Attributor), cls, "is not a sourcetrace Attributor subclass")
    _require(re.fullmatch(r"[a-z][\w-]*", cls.name or ""), cls, f"name {cls.name!r} is not a lower-case word")
    signature = inspect.signature(cls.__init__).parameters
    _require(all(p.default is not inspect.Parameter.empty for k, p in signature.items() if k != "self"
                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)), cls,
             "every constructor parameter needs a default (the benchmark builds it from name:key=value)")


def check_predict_before_fit_is_refused(cls, **params) -> None:
    _, _, Q, _ = _split()
    _require(_raises(RuntimeError, lambda: cls(**params).predict(Q)), cls,
             "predict before fit does not raise RuntimeError")


def check_params_are_plain_json_constructor_parameters(cls, **params) -> None:
    reported = cls(**params).params()
    _require(isinstance(reported, dict) and set(reported) <= set(inspect.signature(cls.__init__).parameters), cls,
             f"params() {reported!r} are not constructor parameters")
    _require(json.loads(json.dumps(reported)) == reported, cls, "params() is not plain JSON")


def check_fit_returns_itself_with_sorted_classes(cls, **params) -> None:
    X, y, _, _ = _split()
    attributor = cls(**params)
    _require(attributor.fit(X, y) is attributor, cls, "fit does not return the attributor")
    _require(list(attributor.classes_) == sorted(set(y)), cls, "classes_ are not the sorted labels")


def check_predict_is_the_best_scoring_class(cls, **params) -> None:
    _, _, Q, _ = _split()
    attributor = _fitted(cls, params)
    scores = attributor.predict_scores(Q)
    _require(scores.shape == (len(Q), len(attributor.classes_)) and np.isfinite(scores).all(), cls,
             f"predict_scores shape {scores.shape}, not ({len(Q)}, {len(attributor.classes_)}) finite")
    predicted = attributor.predict(Q)
    _require(predicted.shape == (len(Q),) and (predicted == attributor.classes_[scores.argmax(1)]).all(), cls,
             "predict is not the best-scoring class")


def check_separates_separable_classes(cls, **params) -> None:
    _, _, Q, yq = _split()
    _require(macro_f1(yq, _fitted(cls, params).predict(Q)) > 0.9, cls, "cannot separate well-separated classes")


def check_a_refit_predicts_the_same(cls, **params) -> None:
    _, _, Q, _ = _split()
    _require(np.array_equal(_fitted(cls, params).predict(Q), _fitted(cls, params).predict(Q)), cls,
             "a refit predicts otherwise")


def check_outlier_score_is_one_number_a_query(cls, **params) -> None:
    _, _, Q, _ = _split()
    outliers = _fitted(cls, params).outlier_score(Q)
    _require(outliers.shape == (len(Q),) and np.isfinite(outliers).all(), cls,
             "outlier_score is not one number a query")


def check_bad_inputs_are_refused(cls, **params) -> None:
    X, y, Q, _ = _split()
    _require(_raises(ValueError, lambda: cls(**params).fit(X, y[:-1])), cls, "fit with fewer labels than vectors")
    attributor = _fitted(cls, params)
    _require(_raises(ValueError, lambda: attributor.predict(Q[:, :3])), cls, "predict of the wrong dimension")


def check_kneighbors_is_queries_by_k(cls, **params) -> None:
    _, _, Q, _ = _split()
    knn = _fitted(cls, params)
    dist, idx = knn.kneighbors(Q)
    _require(idx.shape == dist.shape == (len(Q), knn.k), cls, "kneighbors is not (queries, k)")


def check_relabel_equals_a_fresh_fit(cls, **params) -> None:
    X, y, Q, _ = _split()
    coarse = np.where(np.isin(y, ["class-0", "class-1"]), "low", "high")
    _require(np.array_equal(_fitted(cls, params).relabel(coarse).predict(Q), cls(**params).fit(X, coarse).predict(Q)),
             cls, "relabel does not equal a fresh fit on the new labels")
