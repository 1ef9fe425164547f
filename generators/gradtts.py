"""Grad-TTS through the `grad-tts` package (a fork of the official code that ships the model only):
the project provides data, loss driving and checkpoints around the official `GradTTS` class."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.checkpoints.official import load_torch_file
from sourcetrace.generators.base import Batch, GeneratorError, MelGenerator


@lru_cache(maxsize=1)
def _cmudict():
    from grad_tts.text import cmudict

    return cmudict.CMUDict()  # the CMUdict bundled with grad-tts: no download


class GradTTSGenerator(MelGenerator):
    package = "grad-tts"
    architecture = "gradtts"
    default_vocoder = "hifigan"
    # the official grad-tts.pt: a plain state dict
    official_formats = (OfficialFormat("torch", "a Grad-TTS model",
                                       key_prefixes=(("decoder.estimator.",), ("encoder.proj_w",))),)

    def build_model(self, model_config: dict) -> torch.nn.Module:
        from grad_tts import GradTTS
        from grad_tts.text.symbols import symbols

        return GradTTS(n_vocab=len(symbols) + 1, n_spks=1, **model_config)

    def text_to_ids(self, text: str) -> list[int]:
        from grad_tts.text import text_to_sequence
        from grad_tts.text.symbols import symbols
        from grad_tts.utils import intersperse

        return intersperse(text_to_sequence(text, dictionary=_cmudict()), len(symbols))  # add_blank, as upstream

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        out_size = self.config["training"].get("out_size_frames")
        # Upstream crops a random segment of out_size frames; a batch holding a shorter clip trains
        # on whole clips instead (upstream fails on such batches).
        if out_size and int(batch.mel_lengths.min()) < out_size:
            out_size = None
        dur, prior, diff = self.model.compute_loss(batch.ids, batch.id_lengths, batch.mels, batch.mel_lengths,
                                                   out_size=out_size)
        return {"duration": dur, "prior": prior, "diffusion": diff}

    def clip_gradients(self) -> None:
        """Upstream train.py clips encoder and decoder gradient norms separately."""
        value = float(self.config["training"]["grad_clip"])
        torch.nn.utils.clip_grad_norm_(self.model.encoder.parameters(), max_norm=value)
        torch.nn.utils.clip_grad_norm_(self.model.decoder.parameters(), max_norm=value)

    batched_synthesis = True

    def synthesize(self, ids: list[int]) -> torch.Tensor:
        return self.synthesize_batch([ids])[0]

    def synthesize_batch(self, ids: list[list[int]]) -> list[torch.Tensor]:
        synthesis = self.config["synthesis"]
        with self.inference():
            _, decoded, attn = self.model(*self.padded_ids(ids), n_timesteps=int(synthesis["n_timesteps"]),
                                          temperature=float(synthesis["temperature"]), stoc=False,
                                          length_scale=float(synthesis["length_scale"]))
        frames = attn.sum(dim=(1, 2, 3)).round().long().cpu()  # the monotonic path gives each frame one symbol
        decoded = decoded.cpu()
        return [decoded[i, :, : int(frames[i])] for i in range(len(decoded))]

    def load_official(self, path: str | Path, trust: bool = False) -> None:
        """grad-tts.pt is a plain state dict: it loads weights-only, no trust needed."""
        state = load_torch_file(path, self.architecture, trust, error=GeneratorError)
        if not isinstance(state, dict):
            raise GeneratorError(f"{path}: holds a {type(state).__name__}, not a Grad-TTS state dict")
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise GeneratorError(f"{path}: does not fit config {self.config['name']!r}: missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}")
