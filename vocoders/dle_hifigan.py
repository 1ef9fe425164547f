"""NVIDIA DeepLearningExamples' PyTorch HiFi-GAN (DLE), FastPitch's vocoder in the study: the NGC
checkpoint hifigan__pyt_ckpt_mode-finetune_ds-ljs22khz, fine-tuned on FastPitch's LJSpeech mels.

What its files are (read in github.com/NVIDIA/DeepLearningExamples, PyTorch/SpeechSynthesis/HiFiGAN):
- common/utils.py `Checkpointer.maybe_save` writes `hifigan_gen_checkpoint_<epoch>.pt` with
  torch.save: a dict of 'generator' (the generator's state dict), 'gen_ema' (None, or an EMA copy
  nobody loads for inference), 'config' (the six generator hyperparameters of jik876's config),
  'train_setup' (audio and optimiser settings) and 'train_state' (epoch and step counts): plain
  dicts, lists, numbers and strings, so torch's weights-only unpickler is all the format needs.
  hifigan/entrypoints.py (torch hub's `nvidia_hifigan`) and models.py `load_and_setup_model` read
  'generator' and 'config', stripping a leading 'module.' from the keys.
- hifigan/models.py `Generator` is jik876's with its modules regrouped: `resblocks.<stage>.<kernel>`
  (nested Sequentials) where jik876 has `resblocks.<stage x kernels + kernel>`; the same forward.
  Its `load_state_dict` also takes the layout of checkpoints older than its first public release
  (2022-03, after the NGC file's 21.08 version): jik876's flat `resblocks.<n>`, and convolutions with
  a trailing dimension of 1 (the channels-last Conv2d generator, FastPitch/hifigan/models_ch_last_.py).
  Weight norm is kept in the saved state ('weight_g', 'weight_v'); DLE removes it after loading,
  which computes the same convolution. This class maps all three layouts onto the installed jik876
  generator (`hifigan._build_generator`); which one the NGC file holds is not recorded here.
- The mel convention is that of DLE's own FastPitch, whose predictions it was fine-tuned on
  (scripts/extract_fine_tune_mels.sh, hifigan/data_function.py reads them as they are): common/
  layers.py `TacotronSTFT`, common/stft.py, common/audio_processing.py: 22.05 kHz, n_fft = win =
  1024, hop 256, 80 Slaney mel bands (librosa) from 0 to 8 kHz, periodic Hann window, frames centred
  by reflect padding of n_fft / 2, log(max(mel, 1e-5)): the "centered-reflect" framing with the
  "clamp" guard. (The HiFi-GAN trained from scratch, hifigan__pyt_ckpt_ds-ljs22khz, took jik876's
  framing; give a config whose [mel] says so.) NeMo's tts_hifigan takes NeMo's exact-pad framing
  with the same guard; NeMo's FastPitch makes centred frames with log(mel + 1e-5), converted here.
  DLE's inference applies its optional denoiser only when asked (--denoising-strength, default 0):
  this class is the generator alone.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.checkpoints.official import load_torch_file
from sourcetrace.core.mel import MelConfig
from sourcetrace.vocoders.base import Vocoder, VocoderError, file_identity, random_identity
from sourcetrace.vocoders.hifigan import _build_generator

SHIPPED_CONFIGS = ("ljs22khz-finetune", "tiny")


def load_dle_hifigan_config(name_or_path: str) -> dict:
    """A shipped config (`ljs22khz-finetune`: the NGC file's mel convention and generator; `tiny`:
    for tests) or a TOML path: [mel] is the convention, [generator] what `random` builds (an
    official file brings its own 'config')."""
    return DLEHiFiGAN.read_config(name_or_path, sections=("generator", "mel"))


def jik876_state_dict(state: dict, config: dict, own: dict) -> dict:
    """A DLE generator state dict under jik876's names and shapes (`own`: the jik876 generator's
    state dict): 'module.' dropped, resblocks.<stage>.<kernel> numbered stage x kernels + kernel,
    a Conv2d weight's trailing dimension of 1 squeezed. Anything else is left for load_state_dict
    to refuse."""
    kernels = len(config["resblock_kernel_sizes"])
    mapped = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        parts = key.split(".")
        if parts[0] == "resblocks" and len(parts) == 6:  # resblocks.<stage>.<kernel>.<convs>.<n>.<param>
            key = ".".join(("resblocks", str(int(parts[1]) * kernels + int(parts[2])), *parts[3:]))
        if key in own and value.dim() == own[key].dim() + 1 and value.shape[-1] == 1:
            value = value.squeeze(-1)
        mapped[key] = value
    return mapped


class DLEHiFiGAN(Vocoder):
    """DeepLearningExamples' HiFi-GAN generator file (NGC hifigan__pyt_ckpt_*)."""

    kind = "dle-hifigan"
    family = "hifigan"
    # jik876's keys (or DDP's module.) beside its own 'config'
    official_formats = (OfficialFormat("torch", "a DeepLearningExamples HiFi-GAN generator",
                                       keys=("generator", "config"), key_prefixes=(("conv_pre.", "module.conv_pre."),),
                                       outranks=("hifigan",)),)
    shipped_configs = SHIPPED_CONFIGS
    config_format = "toml"

    def __init__(self, generator_config: dict, mel_config: MelConfig, name: str, identity: str, seed: int = 0):
        """A generator of `generator_config` with random weights drawn from `seed` (from_official loads its own)."""
        super().__init__(name, mel_config, identity)
        self.config = generator_config
        torch.manual_seed(seed)
        self.generator = _build_generator(generator_config).eval()

    @classmethod
    def from_official(cls, path: str | Path, config: str | None = None, name: str | None = None) -> DLEHiFiGAN:
        """A DLE generator file: its 'config' builds the generator, its 'generator' the weights,
        `config` (default ljs22khz-finetune) gives the mel convention."""
        checkpoint = load_torch_file(path, cls.kind, error=VocoderError)
        if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("generator"), dict)
                and isinstance(checkpoint.get("config"), dict)):
            raise VocoderError(f"{path}: not a DeepLearningExamples HiFi-GAN generator file "
                               "(a dict with a 'generator' state dict and its 'config')")
        mel = MelConfig(**load_dle_hifigan_config(config or "ljs22khz-finetune")["mel"])
        try:
            vocoder = cls(checkpoint["config"], mel, name or Path(path).name, file_identity(path))
            own = vocoder.generator.state_dict()
            vocoder.generator.load_state_dict(jik876_state_dict(checkpoint["generator"], checkpoint["config"], own))
        except Exception as exc:  # noqa: BLE001 - a config or state dict of other keys or shapes
            raise VocoderError(f"{path}: not a DeepLearningExamples HiFi-GAN generator its own 'config' describes "
                               f"({type(exc).__name__}: {exc})") from None
        return vocoder

    @classmethod
    def random(cls, config: str, seed: int, name: str | None = None) -> DLEHiFiGAN:
        settings = load_dle_hifigan_config(config)
        return cls(settings["generator"], MelConfig(**settings["mel"]), name or f"dle-hifigan-{config}-random-s{seed}",
                   random_identity(cls.kind, config, seed), seed=seed)

    @property
    def module(self) -> torch.nn.Module:
        return self.generator

    def generate_batch(self, mels: torch.Tensor) -> torch.Tensor:
        return self.generator(mels.to(next(self.generator.parameters()).device))[:, 0].cpu()
