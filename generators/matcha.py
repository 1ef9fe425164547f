"""Matcha-TTS through the `matcha-tts` package: the official `MatchaTTS` model class, driven by
the project's training loop (matcha's own Hydra/Lightning entry point expects a repository)."""

from __future__ import annotations

from pathlib import Path

import torch

from sourcetrace.checkpoints.formats import PLAIN_PICKLE_GLOBALS, OfficialFormat
from sourcetrace.checkpoints.official import load_torch_file
from sourcetrace.generators.base import Batch, GeneratorError, MelGenerator


class MatchaGenerator(MelGenerator):
    package = "matcha-tts"
    architecture = "matcha"
    default_vocoder = "hifigan"
    # the release's Lightning .ckpt: its state dict looks like Grad-TTS's, beside the Lightning
    # keys; its hyper-parameters are omegaconf objects, so loading it needs trust
    official_formats = (OfficialFormat(
        "torch", "a Matcha-TTS model", keys=("state_dict", "hyper_parameters"),
        key_prefixes=(("decoder.estimator.down_blocks.",),), outranks=("gradtts",),
        pickle_globals=(rf"{PLAIN_PICKLE_GLOBALS}|builtins\.object|omegaconf\.(dictconfig\.DictConfig|"
                        r"listconfig\.ListConfig|base\.ContainerMetadata|base\.Metadata|nodes\.\w+Node)|"
                        r"(lightning\.fabric|lightning_fabric|lightning\.pytorch|pytorch_lightning)\.utilities\."
                        r"(data|parsing)\.AttributeDict")),)

    def build_model(self, model_config: dict) -> torch.nn.Module:
        from matcha.models.matcha_tts import MatchaTTS
        from omegaconf import OmegaConf

        encoder = OmegaConf.create(model_config["encoder"])
        return MatchaTTS(
            n_vocab=int(model_config["n_vocab"]), n_spks=1, spk_emb_dim=int(model_config["spk_emb_dim"]),
            n_feats=self.mel_config.n_mels, encoder=encoder, decoder=dict(model_config["decoder"]),
            cfm=OmegaConf.create(model_config["cfm"]), data_statistics=dict(model_config["data_statistics"]),
            out_size=None, optimizer=None, scheduler=None, prior_loss=bool(model_config["prior_loss"]),
        )

    def text_to_ids(self, text: str) -> list[int]:
        from matcha.text import text_to_sequence
        from matcha.utils.utils import intersperse

        cleaners = list(self.config["model"]["cleaners"])
        return intersperse(text_to_sequence(text, cleaners)[0], 0)  # add_blank, as upstream

    def _normalise(self, mels: torch.Tensor) -> torch.Tensor:
        stats = self.config["model"]["data_statistics"]
        return (mels - float(stats["mel_mean"])) / float(stats["mel_std"])

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        frames = torch.arange(batch.mels.shape[-1], device=batch.mels.device)
        mels = self._normalise(batch.mels) * (frames[None, :] < batch.mel_lengths[:, None])[:, None, :]
        out_size = self.config["training"].get("out_size_frames") or None
        dur, prior, diff, *_ = self.model(x=batch.ids, x_lengths=batch.id_lengths, y=mels, y_lengths=batch.mel_lengths,
                                          spks=None, out_size=out_size)
        return {"duration": dur, "prior": prior, "diffusion": diff}

    batched_synthesis = True

    def synthesize(self, ids: list[int]) -> torch.Tensor:
        return self.synthesize_batch([ids])[0]

    def synthesize_batch(self, ids: list[list[int]]) -> list[torch.Tensor]:
        synthesis = self.config["synthesis"]
        try:
            with self.inference():
                out = self.model.synthesise(*self.padded_ids(ids), n_timesteps=int(synthesis["n_timesteps"]),
                                            temperature=float(synthesis["temperature"]),
                                            length_scale=float(synthesis["length_scale"]))
        finally:
            self._drop_rope_caches()
        mels, lengths = out["mel"].cpu(), out["mel_lengths"].cpu()  # denormalised by matcha
        return [mels[i, :, : int(lengths[i])] for i in range(len(mels))]

    def _drop_rope_caches(self) -> None:
        """matcha's synthesise runs under torch.inference_mode, so the rotary-embedding caches it
        builds are inference tensors that a later training step cannot backpropagate through."""
        for module in self.model.modules():
            if hasattr(module, "cos_cached"):
                module.cos_cached = module.sin_cached = None

    def load_official(self, path: str | Path, trust: bool = False) -> None:
        """matcha_ljspeech.ckpt is a Lightning checkpoint holding omegaconf objects: it loads only
        with full unpickling, so only with trust (see checkpoints/official.py), for a file you trust."""
        from matcha.models.matcha_tts import MatchaTTS

        checkpoint = load_torch_file(path, self.architecture, trust, error=GeneratorError)
        try:
            model = MatchaTTS(**checkpoint["hyper_parameters"])
            model.load_state_dict(checkpoint["state_dict"])
        except Exception as exc:  # noqa: BLE001
            raise GeneratorError(f"{path}: not a Matcha-TTS checkpoint ({type(exc).__name__}: {exc})") from None
        self.model = model.to(self.device)  # the official hyper-parameters define the model
