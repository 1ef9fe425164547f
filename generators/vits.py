"""VITS through `coqui-tts`: Coqui's own `Vits` model (generator + multi-period discriminator, its
tokenizer with espeak-ng phonemes, its losses), driven by the project's training loop instead of
Coqui's Trainer (which keeps only the last five checkpoints and writes ~1 GB `best_model` files).

VITS is end to end: `synthesize` returns the waveform of its internal HiFi-GAN-style decoder, so
there is no separate vocoder to choose or swap.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sourcetrace.checkpoints.formats import PLAIN_PICKLE_GLOBALS, OfficialFormat
from sourcetrace.checkpoints.official import load_torch_file
from sourcetrace.generators.base import Batch, EndToEndGenerator, GeneratorError

PHASES = ("discriminator", "generator")  # Coqui's optimizer indices 0 and 1
TERMS = {"loss_gen": "adversarial", "loss_kl": "kl", "loss_feat": "feature_matching", "loss_mel": "mel",
         "loss_duration": "duration"}


#: What a Coqui release's pickle holds beyond weights (VITS's model_file.pth, an XTTS release that
#: pickles its XttsConfig): its config classes only. A module-wide pattern would admit its
#: functions and the modules it imports (coqpit.coqpit._rgetattr, coqpit.coqpit.argparse), i.e.
#: code a pickle could call.
COQUI_PICKLE_GLOBALS = rf"{PLAIN_PICKLE_GLOBALS}|TTS(\.\w+)*\.[A-Z]\w*(Config|Args)|coqpit\.coqpit\.Coqpit"


class VitsGenerator(EndToEndGenerator):
    package = "coqui-tts"
    architecture = "vits"
    official_formats = (OfficialFormat("torch", "a Coqui VITS model",
                                       key_prefixes=(("text_encoder.",), ("waveform_decoder.", "posterior_encoder.")),
                                       pickle_globals=COQUI_PICKLE_GLOBALS),)

    def _coqui_config(self, model_config: dict):
        from TTS.config.shared_configs import BaseAudioConfig
        from TTS.tts.configs.vits_config import VitsArgs, VitsConfig

        mel, training = self.mel_config, self.config["training"]
        audio = BaseAudioConfig(sample_rate=mel.sample_rate, fft_size=mel.n_fft, win_length=mel.win_length,
                                hop_length=mel.hop_length, num_mels=mel.n_mels, mel_fmin=mel.f_min,
                                mel_fmax=mel.f_max)
        synthesis = self.config["synthesis"]
        args = VitsArgs(**model_config["model_args"], inference_noise_scale=float(synthesis["inference_noise_scale"]),
                        inference_noise_scale_dp=float(synthesis["inference_noise_scale_dp"]),
                        length_scale=float(synthesis["length_scale"]))
        return VitsConfig(audio=audio, model_args=args, text_cleaner=model_config["text_cleaner"],
                          use_phonemes=bool(model_config["use_phonemes"]), phonemizer=model_config["phonemizer"],
                          phoneme_language=model_config["phoneme_language"], add_blank=bool(model_config["add_blank"]),
                          lr_gen=float(training["learning_rate"]), lr_disc=float(training["learning_rate"]),
                          grad_clip=[float(training["grad_clip"])] * 2)

    def build_model(self, model_config: dict) -> torch.nn.Module:
        from TTS.tts.models.vits import Vits

        model = Vits(self._coqui_config(model_config))
        divisor = model_config.get("discriminator_width_divisor", 1)
        if not (isinstance(divisor, int) and divisor >= 1):
            raise GeneratorError(f"VITS config {self.config.get('name', '')!r}: discriminator_width_divisor must be a "
                                 f"whole number >= 1 (1: Coqui's widths), got {divisor!r}")
        if divisor > 1:
            narrow_discriminator(model.disc, divisor)
        return model

    def text_to_ids(self, text: str) -> list[int]:
        return list(self.model.tokenizer.text_to_ids(text))

    # ---- training -------------------------------------------------------------------------------
    def clip_features(self, wave: torch.Tensor, ids: list[int]) -> dict[str, torch.Tensor]:
        """The waveform: Coqui computes the linear and mel spectrograms from it on the device."""
        return {"audio": wave.float()}

    def feature_identity(self) -> str:
        return f"waveform@{self.mel_config.sample_rate}"

    def _coqui_batch(self, batch: Batch) -> dict:
        wave = batch.features["audio"].unsqueeze(1)  # (batch, 1, samples), as Coqui's collate
        coqui = {"tokens": batch.ids, "token_lens": batch.id_lengths, "waveform": wave,
                 "waveform_rel_lens": batch.lengths["audio"].float() / wave.shape[-1],
                 "d_vectors": None, "speaker_ids": None, "language_ids": None}
        return self.model.format_batch_on_device(coqui)

    def _criteria(self) -> list[torch.nn.Module]:
        if not hasattr(self, "_criteria_cache"):
            self._criteria_cache = self.model.get_criterion()
        return self._criteria_cache

    @staticmethod
    def _named(phase: int, terms: dict) -> dict[str, torch.Tensor]:
        if phase == 0:
            return {"discriminator": terms["loss"]}
        return {name: terms[key] for key, name in TERMS.items() if key in terms}

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Both phases' loss terms of one batch, without optimising (see train_step)."""
        coqui, losses = self._coqui_batch(batch), {}
        for phase, criterion in enumerate(self._criteria()):
            _, terms = self.model.train_step(coqui, criterion, phase)
            losses.update(self._named(phase, terms))
        return losses

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Coqui's two AdamW optimizers: [discriminator, generator]."""
        return self.model.get_optimizer()

    def train_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        """Coqui's Trainer step for a GAN: the discriminator steps on the generator's detached
        output, then the generator steps; each optimizer's gradients clipped at grad_clip; both
        learning rates decayed once per epoch (ExponentialLR, scheduler_after_epoch)."""
        training = self.config["training"]
        lr = float(training["learning_rate"]) * float(training["lr_decay_per_epoch"]) ** batch.epoch
        coqui, losses = self._coqui_batch(batch), {}
        for phase, (optimizer, criterion) in enumerate(zip(optimizers, self._criteria(), strict=True)):
            for group in optimizer.param_groups:
                group["lr"] = lr
            _, terms = self.model.train_step(coqui, criterion, phase)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm=float(training["grad_clip"]))
            optimizer.step()
            losses.update({k: v.detach() for k, v in self._named(phase, terms).items()})
        return losses

    # ---- synthesis ------------------------------------------------------------------------------
    def synthesize(self, ids: list[int]) -> torch.Tensor:
        x, x_lengths = self.ids_tensor(ids)
        with self.inference():
            out = self.model.inference(x, aux_input={"x_lengths": x_lengths, "d_vectors": None,
                                                     "speaker_ids": None, "language_ids": None})
        return out["model_outputs"][0, 0].cpu().clamp(-1.0, 1.0)

    def load_official(self, path: str | Path, trust: bool = False) -> None:
        """Coqui's `model_file.pth` with the `config.json` beside it. The state dict is read with
        weights-only; one that needs full unpickling loads only with trust (checkpoints/official.py)."""
        from TTS.config import load_config
        from TTS.tts.models.vits import Vits

        path = Path(path)
        config_file = path.with_name("config.json")
        if not config_file.is_file():
            raise GeneratorError(f"{path}: Coqui VITS needs its config.json beside the checkpoint ({config_file} not found)")
        state = load_torch_file(path, self.architecture, trust, error=GeneratorError)
        try:
            model = Vits(load_config(str(config_file)))
            weights = {k: v for k, v in state["model"].items() if "speaker_encoder" not in k}
            model.load_state_dict(weights)
        except Exception as exc:  # noqa: BLE001
            raise GeneratorError(f"{path}: not a Coqui VITS checkpoint for {config_file.name} "
                                 f"({type(exc).__name__}: {exc})") from None
        self.model = model.to(self.device)  # the official config defines the model and its tokenizer


def narrow_discriminator(disc: torch.nn.Module, divisor: int) -> None:
    """Divide the channel widths of Coqui's VITS discriminator (its scale and period discriminators)
    by `divisor`, in place, keeping every kernel, stride, padding and the weight norm; group counts
    are divided too (at least 1), so grouped layers stay grouped where the widths allow.

    Coqui fixes these widths in code (up to 1,024 channels) and offers no config field for them; at
    the tiny configs' size the full-width discriminator is 99 % of the parameters and most of a
    training step. The generator, which makes the clips, is Coqui's own, untouched. Only tiny
    configs narrow (`discriminator_width_divisor`); the study's config keeps Coqui's discriminator."""
    from torch import nn

    def narrowed(conv: nn.Module, out_channels: int | None = None) -> nn.Module:
        cls = nn.Conv1d if isinstance(conv, nn.Conv1d) else nn.Conv2d
        ins = conv.in_channels if conv.in_channels == 1 else conv.in_channels // divisor
        outs = out_channels or conv.out_channels // divisor
        groups = max(1, conv.groups // divisor)
        if ins < 1 or outs < 1 or ins % groups or outs % groups:
            raise GeneratorError(f"discriminator_width_divisor {divisor} leaves a layer of {conv.in_channels} -> "
                                 f"{conv.out_channels} channels (groups {conv.groups}) without a whole channel per group")
        return nn.utils.parametrizations.weight_norm(
            cls(ins, outs, conv.kernel_size, conv.stride, padding=conv.padding, groups=groups))

    for net in disc.nets:
        net.convs = nn.ModuleList(narrowed(conv) for conv in net.convs)
        net.conv_post = narrowed(net.conv_post, out_channels=1)
