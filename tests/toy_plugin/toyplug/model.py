"""A toy text-to-mel architecture and a toy vocoder, each a real (small) torch model.

ToyGenerator: characters -> embedding -> two convolutions -> one mel frame group per character
(`frames_per_symbol` frames each); training stretches the prediction to the clip's length.
ToyVocoder: one convolution over the mel, then a linear map from each frame to its `hop` samples.
ToyExtractor and ToyKNN: a feature extractor and an attributor, to show those kinds too.

The toy's "official" checkpoint is a format of its own, which ToyGenerator declares
(`official_formats`): a torch.save dict whose TOY_OFFICIAL_KEY holds the state dict. sourcetrace
recognises such a file by that declaration alone (synth FILE, train --init-from FILE, checkpoints
verify).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sourcetrace.attribution.extractors.base import FeatureExtractor
from sourcetrace.attribution.knn import KNNAttributor
from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.checkpoints.official import load_torch_file
from sourcetrace.core.mel import MelConfig
from sourcetrace.generators.base import Batch, GeneratorError, MelGenerator
from sourcetrace.vocoders.base import Vocoder, VocoderError, file_identity, random_identity

SYMBOLS = " abcdefghijklmnopqrstuvwxyz.,?!'-"
TOY_OFFICIAL_KEY = "toy_text_to_mel"


class ToyTextToMel(nn.Module):
    def __init__(self, n_mels: int, hidden: int, kernel_size: int, frames_per_symbol: int):
        super().__init__()
        self.frames_per_symbol, self.n_mels = frames_per_symbol, n_mels
        self.embedding = nn.Embedding(len(SYMBOLS) + 1, hidden)
        self.encoder = nn.Sequential(nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2), nn.ReLU(),
                                     nn.Conv1d(hidden, hidden, kernel_size, padding=kernel_size // 2), nn.ReLU())
        self.to_mel = nn.Conv1d(hidden, n_mels * frames_per_symbol, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(batch, symbols) -> (batch, n_mels, symbols * frames_per_symbol) log mel."""
        h = self.encoder(self.embedding(ids).transpose(1, 2))
        frames = self.to_mel(h)  # (batch, n_mels * f, symbols)
        b, _, s = frames.shape
        return frames.view(b, self.frames_per_symbol, self.n_mels, s).permute(0, 2, 3, 1).reshape(b, self.n_mels, -1) - 5.0


class ToyGenerator(MelGenerator):
    architecture = "toyarch"
    default_vocoder = "toyvoc"
    config_package = "toyplug"  # its named configs: toyplug/configs/toyarch-<name>.toml
    package = "toyplug"
    official_formats = (OfficialFormat("torch", "a toy text-to-mel model", keys=(TOY_OFFICIAL_KEY,),
                                       key_prefixes=(("embedding.",), ("to_mel.",))),)

    def __init__(self, config: dict, seed: int):  # the constructor a plug-in may have written before `build`
        self.symbols = SYMBOLS
        super().__init__(config, seed)

    def build_model(self, model_config: dict) -> nn.Module:
        return ToyTextToMel(self.mel_config.n_mels, **model_config)

    def text_to_ids(self, text: str) -> list[int]:
        return [self.symbols.index(c) + 1 for c in text.lower() if c in self.symbols] or [1]

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        predicted = self.model(batch.ids)
        terms = []
        for row in range(len(batch.ids)):
            own = predicted[row:row + 1, :, : int(batch.id_lengths[row]) * self.model.frames_per_symbol]
            frames = int(batch.mel_lengths[row])
            stretched = nn.functional.interpolate(own, size=frames, mode="linear", align_corners=False)[0]
            terms.append((stretched - batch.mels[row, :, :frames]).abs().mean())
        return {"l1": torch.stack(terms).mean()}

    def synthesize(self, ids: list[int]) -> torch.Tensor:
        mel = self.model(self.ids_tensor(ids)[0])[0]
        return mel + float(self.config["synthesis"]["noise_scale"]) * torch.randn_like(mel)

    def load_official(self, path: str | Path, trust: bool = False) -> None:
        """The toy's "official" format (read under sourcetrace's trust rule: weights-only)."""
        checkpoint = load_torch_file(path, self.architecture, trust=trust, error=GeneratorError)
        if not isinstance(checkpoint, dict) or TOY_OFFICIAL_KEY not in checkpoint:
            raise GeneratorError(f"{path}: not a toyarch checkpoint (no {TOY_OFFICIAL_KEY!r})")
        self.model.load_state_dict(checkpoint[TOY_OFFICIAL_KEY])


def save_official(generator: ToyGenerator, path: str | Path) -> Path:
    """The toy's "official" file of `generator`'s weights."""
    torch.save({TOY_OFFICIAL_KEY: generator.model.state_dict()}, path)
    return Path(path)


def load_toyvoc_config(config: str) -> dict:
    if config in ToyVocoder.shipped_configs:
        return json.loads(resources.files("toyplug").joinpath("configs", f"toyvoc-{config}.json").read_text())
    return json.loads(Path(config).read_text())


class ToyVocoder(Vocoder):
    kind = "toyvoc"
    shipped_configs = ("tiny",)

    def __init__(self, config: dict, name: str, identity: str):
        super().__init__(name, MelConfig(), identity)
        hop = self.mel_config.hop_length
        self.net = nn.Sequential(nn.Conv1d(self.mel_config.n_mels, config["hidden"], config["kernel_size"],
                                           padding=config["kernel_size"] // 2), nn.Tanh(),
                                 nn.Conv1d(config["hidden"], hop, 1))

    @property
    def module(self) -> nn.Module:
        return self.net

    @classmethod
    def random(cls, config: str, seed: int, name: str | None = None) -> ToyVocoder:
        torch.manual_seed(seed)
        return cls(load_toyvoc_config(config), name or f"toyvoc-{config}-random-s{seed}",
                   random_identity(cls.kind, config, seed))

    @classmethod
    def from_official(cls, path, config: str | None = None, name: str | None = None) -> ToyVocoder:
        path = Path(path)
        vocoder = cls(load_toyvoc_config(config or "tiny"), name or path.name, file_identity(path))
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            vocoder.net.load_state_dict(state["net"])
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a foreign file
            raise VocoderError(f"{path}: not a toyvoc weights file ({exc})") from None
        return vocoder

    def generate_batch(self, mels: torch.Tensor) -> torch.Tensor:  # generate: the base class's batch of one
        samples = self.net(mels)  # (batch, hop, frames): each frame's hop samples
        return torch.tanh(samples.transpose(1, 2).reshape(len(mels), -1))


class ToyExtractor(FeatureExtractor):
    """Spec `toyext` or `toyext:<frame>`: mean and std of log frame energies and zero-crossing rates."""

    def __init__(self, frame: str = "400"):
        self.frame = int(frame)

    @property
    def name(self) -> str:
        return f"toyext-{self.frame}"

    @property
    def fingerprint(self) -> dict:
        return {"kind": "toyext", "frame": self.frame, "sample_rate": self.sample_rate, "code": "1"}

    def min_samples(self) -> int:
        return self.frame

    def extract(self, waves) -> np.ndarray:
        out = []
        for wave in waves:
            frames = np.asarray(wave, np.float64)[: len(wave) // self.frame * self.frame].reshape(-1, self.frame)
            energy = np.log(np.mean(frames ** 2, axis=1) + 1e-8)
            crossings = np.mean(np.abs(np.diff(np.sign(frames), axis=1)) > 0, axis=1)
            out.append([energy.mean(), energy.std(), crossings.mean(), crossings.std()])
        return np.asarray(out, np.float32)


class ToyKNN(KNNAttributor):
    """kNN under another name: it votes among neighbours, so the
    benchmark shares its neighbour searches and draws its F1-vs-k curves (a capability, not a name)."""

    name = "toyknn"
