"""FastPitch through `nemo-toolkit`: NeMo's own `FastPitchModel` (aligner, pitch predictor, its mel
preprocessor and loss modules), driven by the project's training loop instead of Lightning.

Offline by construction: the G2P dictionary is the CMUdict bundled with grad-tts (NeMo would
download one through nltk), text normalisation is nemo_text_processing with its grammars cached
under ~/.cache/sourcetrace, and `from_pretrained` (NGC) is never called.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.checkpoints.official import check_file
from sourcetrace.core.nemo_support import nemo_tts_models
from sourcetrace.generators.base import Batch, GeneratorError, MelGenerator

TEXT_NORMALIZER_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sourcetrace" / "nemo-text-processing"
DATASET_CLASS = "nemo.collections.tts.data.dataset.TTSDataset"  # NeMo checks the name; no dataset is built


def _bundled_cmudict() -> str:
    import grad_tts

    return str(Path(grad_tts.__file__).parent / "text" / "cmu_dictionary")


def _normalizer_config(whitelist: str | None = None) -> dict:
    if whitelist is None:
        whitelist = str(resources.files("nemo_text_processing").joinpath(
            "text_normalization/en/data/whitelist/lj_speech.tsv"))
    return {"_target_": "nemo_text_processing.text_normalization.normalize.Normalizer", "lang": "en",
            "input_case": "cased", "whitelist": whitelist, "cache_dir": str(TEXT_NORMALIZER_CACHE)}


class FastPitchGenerator(MelGenerator):
    package = "nemo-toolkit"
    architecture = "fastpitch"
    default_vocoder = "nemo-hifigan"
    official_formats = (OfficialFormat("nemo", "a NeMo FastPitch model", nemo_target="FastPitchModel"),)

    def _nemo_config(self, model_config: dict) -> dict:
        """The `model:` section of fastpitch_align_v1.05.yaml, from the project's config tables."""
        mel = self.mel_config
        d_model = int(model_config["symbols_embedding_dim"])
        signal = {"sample_rate": mel.sample_rate, "n_mel_channels": mel.n_mels, "n_window_size": mel.win_length,
                  "n_window_stride": mel.hop_length, "n_fft": mel.n_fft, "lowfreq": mel.f_min,
                  "highfreq": mel.f_max, "window": "hann"}
        predictor = "nemo.collections.tts.modules.fastpitch.TemporalPredictor"
        config = {
            **{k: model_config[k] for k in ("learn_alignment", "bin_loss_warmup_epochs", "n_speakers",
                                            "max_token_duration", "symbols_embedding_dim",
                                            "pitch_embedding_kernel_size", "pitch_fmin", "pitch_fmax",
                                            "pitch_mean", "pitch_std")},
            **signal,
            "text_tokenizer": {
                "_target_": "nemo.collections.common.tokenizers.text_to_speech.tts_tokenizers.EnglishPhonemesTokenizer",
                "punct": True, "stresses": True, "chars": True, "apostrophe": True, "pad_with_space": True,
                "g2p": {"_target_": "nemo.collections.tts.g2p.models.en_us_arpabet.EnglishG2p",
                        "phoneme_dict": _bundled_cmudict(),
                        "phoneme_probability": float(model_config["phoneme_probability"])},
            },
            "train_ds": {"dataset": {"_target_": DATASET_CLASS}, "defer_setup": True},
            "preprocessor": {
                "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                "features": mel.n_mels, "lowfreq": mel.f_min, "highfreq": mel.f_max, "n_fft": mel.n_fft,
                "n_window_size": mel.win_length, "window_size": False, "n_window_stride": mel.hop_length,
                "window_stride": False, "pad_to": 1, "pad_value": 0, "sample_rate": mel.sample_rate,
                "window": "hann", "normalize": None, "preemph": None, "dither": 0.0, "frame_splicing": 1,
                "log": True, "log_zero_guard_type": "add",
                "log_zero_guard_value": mel.log_floor, "mag_power": 1.0,
            },
            "input_fft": {"_target_": "nemo.collections.tts.modules.transformer.FFTransformerEncoder",
                          "d_model": d_model, "d_embed": d_model, **model_config["input_fft"]},
            "output_fft": {"_target_": "nemo.collections.tts.modules.transformer.FFTransformerDecoder",
                           "d_model": d_model, **model_config["output_fft"]},
            "alignment_module": {"_target_": "nemo.collections.tts.modules.aligner.AlignmentEncoder",
                                 "n_text_channels": d_model},
            "duration_predictor": {"_target_": predictor, "input_size": d_model, **model_config["duration_predictor"]},
            "pitch_predictor": {"_target_": predictor, "input_size": d_model, **model_config["pitch_predictor"]},
        }
        if model_config.get("normalize_text"):
            config["text_normalizer"] = _normalizer_config()
            config["text_normalizer_call_kwargs"] = {"verbose": False, "punct_pre_process": True,
                                                     "punct_post_process": True}
        return config

    def build_model(self, model_config: dict) -> torch.nn.Module:
        from omegaconf import OmegaConf

        FastPitchModel = nemo_tts_models().FastPitchModel
        return FastPitchModel(cfg=OmegaConf.create(self._nemo_config(model_config)))

    # ---- text -----------------------------------------------------------------------------------
    def text_to_ids(self, text: str) -> list[int]:
        """Training tokenisation: each word phonemised with the config's probability, as NeMo's
        dataset does, but drawn from a seed derived from the text, so a run is reproducible."""
        model = self.model
        if model.text_normalizer_call is not None:
            text = model.text_normalizer_call(text, **model.text_normalizer_call_kwargs)
        model.vocab.g2p._rng.seed(int(hashlib.sha256(text.encode()).hexdigest()[:16], 16))
        return list(model.vocab(text))

    def synthesis_ids(self, text: str) -> list[int]:
        """Synthesis tokenisation: every word that has a pronunciation is phonemised (NeMo's parse)."""
        with self.inference():  # parse warns outside eval mode
            return self.model.parse(text, normalize=True)[0].tolist()

    # ---- training -------------------------------------------------------------------------------
    def clip_features(self, wave: torch.Tensor, ids: list[int]) -> dict[str, torch.Tensor]:
        """The supplementary data of NeMo's TTSDataset: the waveform (the model computes its mel),
        pyin pitch (librosa's, as NeMo computes it) normalised by the config's statistics (unvoiced = 0), and the beta-binomial
        alignment prior between symbols and mel frames."""
        from nemo.collections.tts.parts.utils.tts_dataset_utils import BetaBinomialInterpolator

        from sourcetrace.generators.pitch import pyin  # librosa.pyin's pitch, bit for bit, faster

        mc, mel = self.config["model"], self.mel_config
        frames = wave.shape[-1] // mel.hop_length + 1  # NeMo's preprocessor: centred STFT
        pitch, _, _ = pyin(wave.numpy(), fmin=mc["pitch_fmin"], fmax=mc["pitch_fmax"],
                                   frame_length=mel.win_length, hop_length=mel.hop_length, sr=mel.sample_rate,
                                   fill_na=0.0)
        pitch = torch.from_numpy(pitch[:frames]).float()
        voiced = pitch != 0.0
        pitch = torch.where(voiced, (pitch - mc["pitch_mean"]) / mc["pitch_std"], torch.zeros_like(pitch))
        prior = BetaBinomialInterpolator()(frames, len(ids))  # (frames, symbols)
        return {"audio": wave.float(), "pitch": pitch, "align_prior": torch.from_numpy(np.ascontiguousarray(prior.T)).float()}

    def feature_identity(self) -> str:
        mc = self.config["model"]
        return super().feature_identity() + repr([mc[k] for k in ("pitch_fmin", "pitch_fmax", "pitch_mean", "pitch_std")])

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """NeMo's FastPitchModel.training_step, with the batch from the project's data pipeline and
        the binarisation-loss warm-up counted in the data's epochs."""
        model = self.model
        audio, audio_lens = batch.features["audio"], batch.lengths["audio"]
        text, text_lens = batch.ids, batch.id_lengths
        mels, spec_len = model.preprocessor(input_signal=audio, length=audio_lens)
        frames = mels.shape[-1]
        pitch = batch.features["pitch"][:, :frames]
        prior = batch.features["align_prior"].transpose(1, 2)[:, :frames]  # (batch, frames, symbols)
        mels_pred, _, _, log_durs_pred, pitch_pred, attn_soft, attn_logprob, attn_hard, attn_hard_dur, pitch, *_ = model(
            text=text, durs=None, pitch=pitch, energy=None, speaker=None, pace=1.0, spec=mels, attn_prior=prior,
            mel_lens=spec_len, input_lens=text_lens)
        warmup = min(batch.epoch / self.config["model"]["bin_loss_warmup_epochs"], 1.0)
        return {
            "mel": model.mel_loss_fn(spect_predicted=mels_pred, spect_tgt=mels),
            "duration": model.duration_loss_fn(log_durs_predicted=log_durs_pred, durs_tgt=attn_hard_dur, len=text_lens),
            "alignment": model.forward_sum_loss_fn(attn_logprob=attn_logprob, in_lens=text_lens, out_lens=spec_len),
            "binarisation": model.bin_loss_fn(hard_attention=attn_hard, soft_attention=attn_soft) * warmup,
            "pitch": model.pitch_loss_fn(pitch_predicted=pitch_pred, pitch_tgt=pitch, len=text_lens),
        }

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """AdamW as upstream (betas 0.9/0.999); NoamAnnealing's warm-up is applied in train_step."""
        training = self.config["training"]
        return [torch.optim.AdamW(self.model.parameters(), lr=float(training["learning_rate"]), betas=(0.9, 0.999),
                                  weight_decay=float(training["weight_decay"]))]

    def train_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        step = int(optimizers[0].state_dict()["state"].get(0, {}).get("step", 0)) + 1
        training = self.config["training"]
        warmup = float(training["warmup_steps"])
        # NeMo's NoamAnnealing with d_model=1: lr * min(step^-0.5, step * warmup^-1.5)
        for group in optimizers[0].param_groups:
            group["lr"] = float(training["learning_rate"]) * min(step ** -0.5, step * warmup ** -1.5)
        return super().train_step(batch, optimizers)

    # ---- synthesis ------------------------------------------------------------------------------
    def synthesize(self, ids: list[int]) -> torch.Tensor:
        with self.inference():
            spect = self.model.generate_spectrogram(tokens=self.ids_tensor(ids)[0],
                                                    pace=float(self.config["synthesis"]["pace"]))
        return spect[0].cpu()

    def load_official(self, path: str | Path, trust: bool = False) -> None:
        """A `.nemo` archive (e.g. tts_en_fastpitch_align.nemo): NeMo restores it with weights-only
        loading and its allow-listed instantiation; its own G2P dictionary, heteronyms and whitelist
        come from the archive, and the normaliser's grammars are cached."""
        from omegaconf import OmegaConf, open_dict

        check_file(path, self.architecture, error=GeneratorError)  # complete, and a FastPitch model
        FastPitchModel = nemo_tts_models().FastPitchModel
        try:
            config = FastPitchModel.restore_from(str(path), map_location="cpu", return_config=True)
            with open_dict(config):
                if "text_normalizer" in config:
                    config.text_normalizer.cache_dir = str(TEXT_NORMALIZER_CACHE)
            with tempfile.TemporaryDirectory() as folder:
                override = Path(folder) / "model_config.yaml"
                OmegaConf.save(config, override)
                model = FastPitchModel.restore_from(str(path), map_location="cpu", override_config_path=str(override))
        except Exception as exc:  # noqa: BLE001 - NeMo raises many types for a bad archive
            raise GeneratorError(f"{path}: not a FastPitch .nemo archive ({type(exc).__name__}: {exc})") from None
        self.model = model.to(self.device)
