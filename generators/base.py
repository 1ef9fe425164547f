"""The generator interface every TTS architecture lives behind.

An architecture is one file: a `Generator` subclass that builds its official model class from a
named config, turns text into symbol ids, computes its training loss on a batch, synthesises a
mel spectrogram (or waveform) from ids, and loads its official pretrained format, which it
declares (`official_formats`). What it can do is its type: a `MelGenerator` or an
`EndToEndGenerator`, and optionally `ZeroShot` and `InferenceOnly`. Everything else (schedules,
resuming, checkpoints, corpora) is shared code that never asks which architecture it is driving.
"""

from __future__ import annotations

import json
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.core.device import resolve_device
from sourcetrace.core.errors import SourcetraceError
from sourcetrace.core.fileio import atomic_path, write_json_atomic
from sourcetrace.core.mel import MelConfig, mel_spectrogram
from sourcetrace.core.naming import CHECKPOINT_META, CHECKPOINT_WEIGHTS
from sourcetrace.core.plugins import ArchitectureTraits


class GeneratorError(SourcetraceError, ValueError):
    pass


@dataclass
class Batch:
    """Symbol ids and the per-clip training features an architecture asked for
    (`Generator.clip_features`: e.g. "mel", "audio", "pitch"), each zero-padded along every axis,
    with its lengths along the last (time) axis."""

    ids: torch.Tensor                   # (batch, symbols)
    id_lengths: torch.Tensor            # (batch,)
    features: dict[str, torch.Tensor]   # name -> (batch, ..., time)
    lengths: dict[str, torch.Tensor]    # name -> (batch,)
    epoch: int = 0                      # for losses with warm-up schedules in epochs (FastPitch)

    @property
    def mels(self) -> torch.Tensor:
        return self.features["mel"]

    @property
    def mel_lengths(self) -> torch.Tensor:
        return self.lengths["mel"]

    def to(self, device: torch.device) -> Batch:
        return Batch(self.ids.to(device), self.id_lengths.to(device),
                     {k: v.to(device) for k, v in self.features.items()},
                     {k: v.to(device) for k, v in self.lengths.items()}, self.epoch)


def load_config(architecture: str, name: str, package: str = __package__) -> dict:
    """A named config shipped in <package>/configs/<architecture>-<name>.toml (the project's
    generators/configs/, or a plug-in's own: `Generator.config_package`)."""
    folder = resources.files(package).joinpath("configs")
    entry = folder.joinpath(f"{architecture}-{name}.toml")
    if not entry.is_file():
        names = sorted(p.name[len(architecture) + 1:-5] for p in folder.iterdir()
                       if p.name.startswith(architecture + "-") and p.name.endswith(".toml")) if folder.is_dir() else []
        raise GeneratorError(f"no config {name!r} for {architecture} in {package}/configs; configs: {', '.join(names)}")
    config = tomllib.loads(entry.read_text(encoding="utf-8"))
    for section in ("model", "training", "synthesis", "mel"):
        if section not in config:
            raise GeneratorError(f"{entry}: missing [{section}]")
    config["name"] = name
    return config


class Generator(ABC):
    """What every architecture provides; subclass `MelGenerator` or `EndToEndGenerator`."""

    architecture: ClassVar[str]
    #: the package whose configs/ folder holds the named configs (<architecture>-<name>.toml): a
    #: plug-in names its own
    config_package: ClassVar[str] = __package__
    #: the official file formats of its pretrained checkpoints (what checkpoints/official.py
    #: recognises files by and applies the trust rule with); a format with `own_config` carries
    #: its model config (XTTS's config.json, an ESPnet pack's config.yaml), so `load_official`
    #: builds the model and such a class's __init__ takes `build=False`
    official_formats: ClassVar[tuple[OfficialFormat, ...]] = ()

    @classmethod
    def traits(cls) -> ArchitectureTraits:
        """What the class is, as a recipe's checks ask it (core.plugins.architecture_traits)."""
        return ArchitectureTraits(end_to_end=issubclass(cls, EndToEndGenerator), zero_shot=issubclass(cls, ZeroShot),
                                  inference_only=getattr(cls, "inference_only_reason", None)
                                  if issubclass(cls, InferenceOnly) else None,
                                  default_vocoder=getattr(cls, "default_vocoder", None))

    def __init__(self, config: dict, seed: int, build: bool = True):
        """Build the official model class from `config` with weights drawn from `seed` ("zero-init");
        `build=False` leaves `model` to `load_official` (an official format with `own_config`)."""
        self.config = config
        self.seed = int(seed)
        self.mel_config = MelConfig(**config["mel"])
        torch.manual_seed(self.seed)
        self.model: torch.nn.Module = self.build_model(config["model"]) if build else None
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> Generator:
        """Move the model; batches and synthesis inputs follow. ("auto": CUDA when available.)"""
        self.device = resolve_device(device)
        self.model.to(self.device)
        return self

    @contextmanager
    def inference(self):
        """Eval mode without gradients for synthesis, then the mode the model was in (training)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train(was_training)

    def ids_tensor(self, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One utterance as the (batch of 1) symbol and length tensors the models take."""
        return (torch.tensor([ids], dtype=torch.long, device=self.device),
                torch.tensor([len(ids)], device=self.device))

    @classmethod
    def from_config_name(cls, name: str, seed: int, build: bool = True) -> Generator:
        config = load_config(cls.architecture, name, cls.config_package)
        # `build` is passed only when False: a plug-in's own __init__(config, seed) keeps working
        return cls(config, seed) if build else cls(config, seed, build=False)

    @classmethod
    def from_official(cls, path: str | Path, config: str = "default", trust: bool = False,
                      seed: int = 0) -> Generator:
        """An official file loaded into the named `config`, or into the model its own config
        defines (a format with `own_config`: nothing is built first)."""
        own_config = any(fmt.own_config for fmt in cls.official_formats)
        generator = cls.from_config_name(config, seed, build=not own_config)
        generator.load_official(path, trust=trust)
        return generator

    # ---- what each architecture provides ------------------------------------------------------
    @abstractmethod
    def build_model(self, model_config: dict) -> torch.nn.Module:
        ...

    @abstractmethod
    def text_to_ids(self, text: str) -> list[int]:
        ...

    def synthesis_ids(self, text: str) -> list[int]:
        """Symbol ids for synthesis (an architecture whose training tokenisation is stochastic
        makes it deterministic here)."""
        return self.text_to_ids(text)

    @abstractmethod
    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms of one training batch; their sum is optimised (by `train_step`)."""

    @abstractmethod
    def synthesize(self, ids: list[int]) -> torch.Tensor:
        """(n_mels, frames) log-mel spectrogram (a `MelGenerator`) or (samples,) waveform (an
        `EndToEndGenerator`), using the global torch RNG for any noise: the caller seeds it per prompt."""

    #: whether `synthesize_batch` runs the model on several utterances at once
    batched_synthesis: ClassVar[bool] = False

    def synthesize_batch(self, ids: list[list[int]]) -> list[torch.Tensor]:
        """One output per utterance, as `synthesize`. Architectures whose official inference takes
        padded batches override this (and set batched_synthesis; their `synthesize` is then a batch
        of one); the noise of a batch is drawn at once, so an output depends on the batch it was
        made in. The default runs the utterances one at a time."""
        return [self.synthesize(one) for one in ids]

    def padded_ids(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.zeros(len(ids), max(len(i) for i in ids), dtype=torch.long)
        for row, one in enumerate(ids):
            x[row, : len(one)] = torch.tensor(one, dtype=torch.long)
        return x.to(self.device), torch.tensor([len(i) for i in ids], device=self.device)

    @abstractmethod
    def load_official(self, path: str | Path, trust: bool = False) -> None:
        """Load the weights of the official pretrained checkpoint. Formats that need full
        unpickling raise unless `trust` is set."""

    # ---- shared -------------------------------------------------------------------------------
    #: the distribution whose version identifies the official implementation
    package: ClassVar[str] = ""

    def implementation(self) -> str:
        try:
            return f"{self.package} {metadata.version(self.package)}"
        except metadata.PackageNotFoundError:
            return self.package

    def clip_features(self, wave: torch.Tensor, ids: list[int]) -> dict[str, torch.Tensor]:
        """What training needs of one clip (mono float wave at the config's rate), computed once
        and cached: by default its log-mel spectrogram in the config's convention."""
        return {"mel": mel_spectrogram(wave, self.mel_config)}

    def feature_identity(self) -> str:
        """Changes whenever `clip_features` would compute something else (names the cache)."""
        return repr(sorted(self.mel_config.as_dict().items()))

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """One optimizer per model part that steps on its own (GAN generators and discriminators)."""
        training = self.config["training"]
        return [torch.optim.Adam(self.model.parameters(), lr=float(training["learning_rate"]),
                                 weight_decay=float(training.get("weight_decay", 0.0)))]

    def train_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        """One optimizer step: the sum of `loss` terms, backpropagated, clipped and applied.
        Adversarial architectures override this with their generator/discriminator alternation."""
        losses = self.loss(batch)
        (optimizer,) = optimizers
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        self.clip_gradients()
        optimizer.step()
        return {k: v.detach() for k, v in losses.items()}

    def clip_gradients(self) -> None:
        """Clip the gradient norm at the config's grad_clip (an architecture may clip as upstream does)."""
        value = self.config["training"].get("grad_clip")
        if value:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=float(value))

    def meta(self, step: int, role: str) -> dict:
        return {"architecture": self.architecture, "config": self.config, "seed": self.seed, "step": step, "role": role}

    def save(self, folder: str | Path, step: int, role: str,
             on_written: Callable[[str], None] | None = None) -> Path:
        """Weights (safetensors) and identity (JSON) in `folder`, each written atomically;
        `on_written(file name)` is called once each file is in place (training's `after_write`)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state, _ = self._state_without_aliases()
        with atomic_path(folder / CHECKPOINT_WEIGHTS) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp))
        if on_written is not None:
            on_written(CHECKPOINT_WEIGHTS)
        write_json_atomic(folder / CHECKPOINT_META, self.meta(step, role))
        if on_written is not None:
            on_written(CHECKPOINT_META)
        return folder

    def _state_without_aliases(self) -> tuple[dict[str, torch.Tensor], set[str]]:
        """The state dict with each shared tensor once, under its first name in sorted order (NeMo
        registers FastPitch's aligner under two names), and the names left out."""
        state, kept, aliases = self.model.state_dict(), {}, set()
        seen: dict[tuple, str] = {}
        for name in sorted(state):
            tensor = state[name]
            key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
            if tensor.numel() and key in seen:
                aliases.add(name)
                continue
            seen[key] = name
            kept[name] = tensor
        return kept, aliases

    def load_weights(self, folder: str | Path) -> None:
        folder = Path(folder)
        try:
            state = load_file(str(folder / CHECKPOINT_WEIGHTS))
        except (OSError, RuntimeError, ValueError, SafetensorError) as exc:  # e.g. a pickle named .safetensors
            raise GeneratorError(f"{folder / CHECKPOINT_WEIGHTS}: cannot read ({exc})") from None
        missing, unexpected = self.model.load_state_dict(state, strict=False)  # copies onto the model's device
        missing = [k for k in missing if k not in self._state_without_aliases()[1]]
        if missing or unexpected:
            raise GeneratorError(f"{folder}: weights do not fit {self.architecture} config "
                                 f"{self.config['name']!r}: missing {missing[:3]}, unexpected {unexpected[:3]}")


class MelGenerator(Generator):
    """An architecture whose `synthesize` makes a log-mel spectrogram: a vocoder makes the waveform."""

    #: the vocoder kind (sourcetrace.vocoders) the study pairs with the architecture
    default_vocoder: ClassVar[str]


class EndToEndGenerator(Generator):
    """An architecture whose own decoder makes the waveform (VITS): it takes no vocoder."""


class ZeroShot(ABC):
    """A generator that speaks in the voice of a reference clip given per prompt (XTTS); corpora
    record the clip in the `reference` column."""

    @abstractmethod
    def use_reference(self, reference: str | Path) -> None:
        """Speak in the voice of `reference` from the next synthesis on: a clip, or `speaker:NAME`
        (core.naming.STORED_VOICE) for a voice the checkpoint stores."""


class InferenceOnly:
    """A generator that cannot be trained here: training refuses it, giving `inference_only_reason`."""

    inference_only_reason: ClassVar[str]


def read_checkpoint_meta(folder: str | Path) -> dict:
    path = Path(folder) / CHECKPOINT_META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GeneratorError(f"{path}: not a sourcetrace checkpoint ({exc})") from None
    for key in ("architecture", "config", "seed", "step", "role"):
        if key not in meta:
            raise GeneratorError(f"{path}: missing {key!r}")
    return meta
