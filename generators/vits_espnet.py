"""VITS through ESPnet2 (`espnet`): ESPnet's own `VITS` (its generator, HiFi-GAN multi-scale
multi-period discriminator and losses) inside its `ESPnetGANTTSModel` with the linear-spectrogram
front end, and ESPnet's text pipeline (its cleaner, phonemizer g2p and token list), driven by the
project's training loop as ESPnet's GANTrainer drives it. A second official implementation of the
architecture that `vits` (Coqui) implements, so corpora can tell the codebases apart.

Named configs hold ESPnet's config.yaml keys (`espnet_yaml`); a packed model (espnet_model_zoo's
zip or tar with meta.yaml, config.yaml and a .pth state dict) brings its own config.yaml, token
list, cleaner and g2p, read by checkpoints/official.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import yaml

from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.checkpoints.official import load_espnet_pack
from sourcetrace.generators.base import Batch, EndToEndGenerator, GeneratorError

SPECIAL_TOKENS = ("<blank>", "<unk>", "<space>")  # ESPnet's padding/blank, unknown and space symbols
END_TOKEN = "<sos/eos>"  # last in every ESPnet token list
# ESPnetGANTTSModel(...) choices this builder supports (GANTTSTask.build_model's classes)
SUPPORTED = {"tts": "vits", "feats_extract": "linear_spectrogram"}
TERMS = {"generator_adv_loss": "adversarial", "generator_kl_loss": "kl",
         "generator_feat_match_loss": "feature_matching", "generator_mel_loss": "mel",
         "generator_dur_loss": "duration", "discriminator_loss": "discriminator"}


def espnet_config(model_config: dict) -> dict:
    """The config.yaml ESPnet would write for a named config: its `espnet_yaml` keys, the text
    pipeline and the token list; or, for a model loaded from a packed model, its config.yaml
    as it was (`espnet_config`, kept in the project's checkpoints so that they rebuild it)."""

    if "espnet_config" in model_config:
        return dict(model_config["espnet_config"])
    config = yaml.safe_load(model_config["espnet_yaml"])
    symbols = list(model_config["symbols"])
    if len(set(symbols)) != len(symbols) or set(symbols) & {*SPECIAL_TOKENS, END_TOKEN}:
        raise GeneratorError("vits-espnet config: `symbols` repeats a symbol or holds a special token")
    config.update(token_type=model_config["token_type"], cleaner=model_config["cleaner"],
                  g2p=model_config["g2p"], token_list=[*SPECIAL_TOKENS, *symbols, END_TOKEN])
    return config


def build_espnet_model(config: dict, where: str) -> torch.nn.Module:
    """ESPnetGANTTSModel from a config.yaml dict, as GANTTSTask.build_model builds it (token list
    -> idim, the feature extractor's output size -> odim), for ESPnet's VITS recipes: `tts: vits`
    on a linear spectrogram, no normaliser, pitch or energy extractor. (GANTTSTask itself imports
    every ESPnet task dependency, pyworld's C++ build included.)"""
    from espnet2.gan_tts.espnet_model import ESPnetGANTTSModel
    from espnet2.gan_tts.vits import VITS
    from espnet2.tts.feats_extract.linear_spectrogram import LinearSpectrogram

    for key, value in SUPPORTED.items():
        if config.get(key) != value:
            raise GeneratorError(f"{where}: {key} is {config.get(key)!r}; vits-espnet builds {key}: {value}")
    extra = [k for k in ("normalize", "pitch_extract", "energy_extract", "pitch_normalize", "energy_normalize")
             if config.get(k) is not None] + [k for k in ("model_conf",) if config.get(k)]
    if extra or not isinstance(config.get("token_list"), list):
        raise GeneratorError(f"{where}: vits-espnet builds no {', '.join(extra) or 'model without a token_list'}")
    feats_extract = LinearSpectrogram(**(config.get("feats_extract_conf") or {}))
    tts = VITS(idim=len(config["token_list"]), odim=feats_extract.output_size(), **config.get("tts_conf", {}))
    return ESPnetGANTTSModel(feats_extract=feats_extract, normalize=None, pitch_extract=None,
                             pitch_normalize=None, energy_extract=None, energy_normalize=None, tts=tts)


def _import_g2p_en_offline() -> None:
    """Import g2p_en (ESPnet's tokenizer module imports it) without its import-time downloads: it
    calls nltk.download for missing data, which reaches the internet from a run (seen offline as
    eight `[nltk_data] Error loading ...` lines). The data it would fetch serves only the g2p_en
    front end; when that front end is asked for, `text_to_ids` names the missing resource."""
    import nltk

    download = nltk.download
    nltk.download = lambda *_args, **_kwargs: False
    try:
        import g2p_en  # noqa: F401 - imported now, so ESPnet's import finds it loaded
    finally:
        nltk.download = download


class VitsEspnetGenerator(EndToEndGenerator):
    package = "espnet"
    architecture = "vits-espnet"
    official_formats = (OfficialFormat("espnet", "an ESPnet2 VITS model", espnet_tts="vits", own_config=True),)

    def build_model(self, model_config: dict) -> torch.nn.Module:
        self.espnet_config = espnet_config(model_config)
        self._text_pipeline = None
        return build_espnet_model(self.espnet_config, f"config {self.config.get('name')!r}")

    # ---- text -----------------------------------------------------------------------------------
    def _pipeline(self):
        """ESPnet's CommonPreprocessor steps for TTS text: cleaner, tokenizer, token ids."""
        if self._text_pipeline is None:
            _import_g2p_en_offline()
            from espnet2.text.build_tokenizer import build_tokenizer
            from espnet2.text.cleaner import TextCleaner
            from espnet2.text.token_id_converter import TokenIDConverter

            config = self.espnet_config
            self._text_pipeline = (TextCleaner(config.get("cleaner")),
                                   build_tokenizer(token_type=config.get("token_type", "phn"),
                                                   g2p_type=config.get("g2p")),
                                   TokenIDConverter(config["token_list"], unk_symbol="<unk>"))
        return self._text_pipeline

    def text_to_ids(self, text: str) -> list[int]:
        try:
            cleaner, tokenizer, converter = self._pipeline()
            tokens = tokenizer.text2tokens(cleaner(text))
        except LookupError as exc:  # NLTK's missing-resource error (g2p_en, the pretrained LJSpeech VITS's g2p)
            found = re.search(r"Resource '?([\w/.]+)'? not found", str(exc))
            name = found.group(1) if found else "?"
            raise GeneratorError(f"vits-espnet: ESPnet's g2p {self.espnet_config.get('g2p')!r} needs the NLTK "
                                 f"resource {name!r}, which is not installed (python -m nltk.downloader {name}; "
                                 "the project's configs use espeak_ng_english_us_vits, which needs none)") from None
        return [int(i) for i in converter.tokens2ids(tokens)]

    # ---- training -------------------------------------------------------------------------------
    def clip_features(self, wave: torch.Tensor, ids: list[int]) -> dict[str, torch.Tensor]:
        """The waveform: ESPnet computes the linear spectrogram (and VITS its mel loss) from it."""
        return {"audio": wave.float()}

    def feature_identity(self) -> str:
        return f"waveform@{self.mel_config.sample_rate}"

    def _turns(self) -> tuple[bool, ...]:
        """forward_generator of each turn, in GANTrainer's order (generator_first: false in the recipe)."""
        return (True, False) if self.config["training"].get("generator_first") else (False, True)

    def _forward(self, batch: Batch, forward_generator: bool) -> dict:
        return self.model(text=batch.ids, text_lengths=batch.id_lengths, speech=batch.features["audio"],
                          speech_lengths=batch.lengths["audio"], forward_generator=forward_generator)

    @staticmethod
    def _named(stats: dict) -> dict[str, torch.Tensor]:
        return {name: torch.as_tensor(stats[key]).detach() for key, name in TERMS.items() if key in stats}

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Both turns' loss terms of one batch, without optimising (see train_step)."""
        losses = {}
        for forward_generator in self._turns():
            losses.update(self._named(self._forward(batch, forward_generator)["stats"]))
        return losses

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """GANTTSTask.build_optimizers: [generator (optim), discriminator (optim2)], AdamW each."""
        training = self.config["training"]
        kwargs = dict(lr=float(training["learning_rate"]), betas=tuple(float(b) for b in training["betas"]),
                      eps=float(training["eps"]), weight_decay=float(training["weight_decay"]))
        return [torch.optim.AdamW(self.model.tts.generator.parameters(), **kwargs),
                torch.optim.AdamW(self.model.tts.discriminator.parameters(), **kwargs)]

    def train_step(self, batch: Batch, optimizers: list[torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        """GANTrainer.train_one_epoch for one batch: per turn, the model's loss backpropagated, the
        gradient norm clipped when grad_clip > 0 (a non-finite norm skips the update), the turn's
        optimizer (`optim_idx`) stepped, then both optimizers' gradients cleared. The discriminator
        turn caches the generator's output for the generator turn (cache_generator_outputs).
        ExponentialLR is an epoch scheduler: lr = lr0 * gamma ** epoch."""
        training = self.config["training"]
        lr = float(training["learning_rate"]) * float(training["lr_decay_per_epoch"]) ** batch.epoch
        grad_clip = float(training["grad_clip"])
        losses = {}
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        for forward_generator in self._turns():
            out = self._forward(batch, forward_generator)
            out["loss"].backward()
            norm = None
            if grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=grad_clip)
            if norm is None or torch.isfinite(norm):
                optimizers[int(out["optim_idx"])].step()
            for optimizer in optimizers:
                optimizer.zero_grad()
            losses.update(self._named(out["stats"]))
        return losses

    # ---- synthesis ------------------------------------------------------------------------------
    def synthesize(self, ids: list[int]) -> torch.Tensor:
        synthesis = self.config["synthesis"]
        text = torch.tensor(ids, dtype=torch.long, device=self.device)
        with self.inference():
            out = self.model.tts.inference(text=text, noise_scale=float(synthesis["noise_scale"]),
                                           noise_scale_dur=float(synthesis["noise_scale_dur"]),
                                           alpha=float(synthesis["alpha"]))
        return out["wav"].cpu().clamp(-1.0, 1.0)

    def load_official(self, path: str | Path, trust: bool = False) -> None:
        """An ESPnet packed model (espnet_model_zoo: a zip or tar with meta.yaml, exp/.../config.yaml
        and the .pth state dict), read by checkpoints/official.py with weights-only loading; its
        config.yaml defines the model, the token list, cleaner and g2p. (`trust` is never needed:
        ESPnet saves plain state dicts.)"""
        pack = load_espnet_pack(path, self.architecture, error=GeneratorError)
        rate = (pack.config.get("tts_conf") or {}).get("sampling_rate", 22050)
        if rate != self.mel_config.sample_rate:
            raise GeneratorError(f"{path}: a {rate} Hz model; config {self.config['name']!r} reads and writes "
                                 f"audio at {self.mel_config.sample_rate} Hz")
        try:
            model = build_espnet_model(pack.config, f"{path}: config.yaml")
            missing, unexpected = model.load_state_dict(pack.state, strict=False)
        except GeneratorError:
            raise
        except Exception as exc:  # noqa: BLE001 - ESPnet's constructors and load_state_dict raise many types
            first = " ".join(str(exc).split())[:300]
            raise GeneratorError(f"{path}: {pack.model_member} and its config.yaml are not an ESPnet VITS "
                                 f"({type(exc).__name__}: {first})") from None
        if missing or unexpected:
            raise GeneratorError(f"{path}: {pack.model_member} does not fit the model its config.yaml builds: "
                                 f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                                 f"(e.g. {unexpected[:2]})")
        self.espnet_config, self._text_pipeline = pack.config, None
        self.config = {**self.config, "model": {"espnet_config": pack.config}}  # what checkpoints rebuild
        self.model = model.to(self.device)
