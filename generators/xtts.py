"""XTTS-v2 through `coqui-tts`: Coqui's own `Xtts` model (GPT-2 over DVAE audio codes, conditioned
on a reference clip through its perceiver resampler, and a HiFi-GAN decoder conditioned on a
speaker embedding), used for zero-shot voice cloning: every clip speaks in the voice of a reference
clip given per prompt (`use_reference`), through Coqui's `get_conditioning_latents` then `inference`.

Inference only (`InferenceOnly`). XTTS is end to end: `synthesize` returns its decoder's 24 kHz
waveform. Coqui's `inference` tokenises the text itself (cleaners, language tag, BPE), so the
interface's symbol ids are the prompt's characters (code points), handed back to it as text.

The HiFi-GAN decoder and speaker encoder dimensions are fixed in Coqui's code (`Xtts.init_models`
and `HifiDecoder` take none of them from `XttsArgs`): the tiny config shrinks the GPT only.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.checkpoints.official import load_torch_file
from sourcetrace.core.naming import STORED_VOICE
from sourcetrace.core.plugins import XTTS_INFERENCE_ONLY
from sourcetrace.generators.base import Batch, EndToEndGenerator, GeneratorError, InferenceOnly, ZeroShot
from sourcetrace.generators.vits import COQUI_PICKLE_GLOBALS

#: the tokens Coqui's `VoiceBpeTokenizer` relies on (stop/start text tokens, spaces, the language tag)
SPECIAL_TOKENS = ("[STOP]", "[UNK]", "[SPACE]", "[START]", "[en]")
CHARACTERS = "abcdefghijklmnopqrstuvwxyz'.,!?-:;\""
#: Inference options of `Xtts.inference`, and the voice options of `get_conditioning_latents`, read
#: from the config's [synthesis]
INFERENCE_OPTIONS = ("temperature", "length_penalty", "repetition_penalty", "top_k", "top_p")
VOICE_OPTIONS = {"max_ref_length": "max_ref_len", "gpt_cond_len": "gpt_cond_len",
                 "gpt_cond_chunk_len": "gpt_cond_chunk_len", "sound_norm_refs": "sound_norm_refs"}


def character_vocabulary():
    """A `tokenizers` BPE with no merges over lower-case English characters, in the layout of
    XTTS's vocab.json (special tokens first): the vocabulary of random-weight (zero-init) models,
    since the official 6,681-token vocab.json only comes with the official checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(CHARACTERS))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


class XttsGenerator(ZeroShot, InferenceOnly, EndToEndGenerator):
    package = "coqui-tts"
    architecture = "xtts"
    inference_only_reason = XTTS_INFERENCE_ONLY
    # the release's model.pth, its config.json beside it
    official_formats = (OfficialFormat(
        "torch", "a Coqui XTTS model",
        key_prefixes=(("gpt.conditioning_encoder.", "xtts.gpt.conditioning_encoder."),
                      ("hifigan_decoder.waveform_decoder.", "xtts.hifigan_decoder.")),
        pickle_globals=COQUI_PICKLE_GLOBALS, own_config=True),)

    def __init__(self, config: dict, seed: int, build: bool = True):
        self.speakers: dict[str, dict] = {}  # an official speakers_xtts.pth: name -> latents
        self._reference: str | None = None
        self._voices: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # reference -> conditioning
        super().__init__(config, seed, build=build)

    def build_model(self, model_config: dict) -> torch.nn.Module:
        from TTS.tts.configs.xtts_config import XttsArgs, XttsConfig
        from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

        if model_config.get("vocabulary") != "characters":
            raise GeneratorError(f"xtts config {self.config['name']!r}: [model] vocabulary must be \"characters\" "
                                 "(the official vocab.json comes with an official checkpoint folder)")
        tokenizer = VoiceBpeTokenizer()
        tokenizer.tokenizer = character_vocabulary()
        args = XttsArgs(**model_config["model_args"], output_sample_rate=self.mel_config.sample_rate)
        config = XttsConfig(model_args=args, languages=[self.config["synthesis"]["language"]])
        return self._ready(config, tokenizer, text_tokens=int(args.gpt_number_text_tokens or 0))

    @staticmethod
    def _ready(config, tokenizer, text_tokens: int = 0) -> torch.nn.Module:
        """Coqui's `Xtts` built as its `load_checkpoint(eval=True)` leaves it: text tokens taken from
        the tokenizer (at least `text_tokens` of them), and its GPT's inference wrapper in place from
        the start, so that its state-dict keys never change."""
        from TTS.tts.models.xtts import Xtts

        args = config.model_args  # what Coqui's init_models takes from the tokenizer
        args.gpt_number_text_tokens = max(text_tokens, tokenizer.get_number_tokens())
        args.gpt_start_text_token = tokenizer.tokenizer.token_to_id("[START]")
        args.gpt_stop_text_token = tokenizer.tokenizer.token_to_id("[STOP]")
        model = Xtts(config)
        model.tokenizer = tokenizer
        model.gpt.init_gpt_for_inference(kv_cache=args.kv_cache)
        return model

    def text_to_ids(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    # ---- training -------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise GeneratorError(f"xtts is inference-only: {self.inference_only_reason}")

    # ---- synthesis ------------------------------------------------------------------------------
    def use_reference(self, reference: str | Path) -> None:
        """A clip (any rate Coqui's loader reads); `speaker:NAME` (STORED_VOICE), a speaker of the
        official checkpoint's speakers_xtts.pth; a bare NAME is that speaker where no such clip exists."""
        written = str(reference)
        name = written.removeprefix(STORED_VOICE)
        stored_only = name != written
        if name not in self.speakers and (stored_only or not Path(reference).is_file()):
            stored = (f"speakers_xtts.pth has {len(self.speakers)}: {', '.join(sorted(self.speakers)[:8])}"
                      + (", ..." if len(self.speakers) > 8 else "") if self.speakers else "this model stores none")
            what = "not a stored speaker" if stored_only else "no such reference clip, nor a stored speaker"
            raise GeneratorError(f"{written}: {what} ({stored})")
        self._reference = name

    def _voice(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The GPT conditioning latents and speaker embedding of the current reference (cached)."""
        reference = self._reference
        if reference is None:
            raise GeneratorError("xtts speaks in the voice of a reference clip: give `sourcetrace synth --reference "
                                 "CLIP`, the recipe key references, or (in Python) use_reference(clip) first")
        voices = self._voices
        if reference not in voices:
            if reference in self.speakers:
                voice = self.speakers[reference]
                voices[reference] = (voice["gpt_cond_latent"], voice["speaker_embedding"])
            else:
                synthesis = self.config["synthesis"]
                options = {key: synthesis[name] for key, name in VOICE_OPTIONS.items()}
                try:
                    voices[reference] = self.model.get_conditioning_latents(reference, **options)
                except RuntimeError as exc:  # e.g. "Provided reference audio too short"
                    raise GeneratorError(f"{reference}: cannot be a reference clip ({exc})") from None
        return voices[reference]

    def synthesize(self, ids: list[int]) -> torch.Tensor:
        synthesis = self.config["synthesis"]
        options = {key: synthesis[key] for key in INFERENCE_OPTIONS}
        with self.inference():
            latents, speaker = self._voice()
            # use_cache=False: with transformers 5's generate, Coqui 0.28's GPT2InferenceModel gets
            # its KV cache as `cache`, not `past_key_values`, and fails; without the cache it
            # recomputes the whole prefix each step (same tokens, slower on long clips)
            out = self.model.inference("".join(chr(i) for i in ids), synthesis["language"], latents,
                                       speaker, use_cache=False, **options)
        return torch.from_numpy(out["wav"]).float().clamp(-1.0, 1.0)

    # ---- the official checkpoint folder ------------------------------------------------------------
    def load_official(self, path: str | Path, trust: bool = False) -> None:
        """Coqui's XTTS release folder: model.pth (the state dict under "model", read weights-only;
        a release that pickles its XttsConfig loads only with trust, checkpoints/official.py),
        config.json, vocab.json and, if present, speakers_xtts.pth (speaker name -> latents,
        weights-only). `path`: the folder or its model.pth. dvae.pth and mel_stats.pth serve
        Coqui's GPT trainer only and are not read."""
        from TTS.config import load_config
        from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

        path = Path(path)
        folder, model_file = (path, path / "model.pth") if path.is_dir() else (path.parent, path)
        for needed in (model_file, folder / "config.json", folder / "vocab.json"):
            if not needed.is_file():
                raise GeneratorError(f"{needed}: not found; an XTTS checkpoint folder holds model.pth, "
                                     "config.json and vocab.json")
        state = load_torch_file(model_file, self.architecture, trust, error=GeneratorError)
        try:
            config = load_config(str(folder / "config.json"))
            if config.model != "xtts":
                raise ValueError(f"config.json is of model {config.model!r}")
            if config.model_args.output_sample_rate != self.mel_config.sample_rate:
                raise ValueError(f"output rate {config.model_args.output_sample_rate} Hz, "
                                 f"config {self.config['name']!r} writes {self.mel_config.sample_rate} Hz")
            model = self._ready(config, VoiceBpeTokenizer(folder / "vocab.json"))
            weights = state["model"]
            model._load_checkpoint = lambda _path: weights  # Coqui's key conversion of the state read above
            weights = model.get_compatible_checkpoint_state_dict(model_file)
            del model._load_checkpoint
            missing, unexpected = model.load_state_dict(weights, strict=False)
        except Exception as exc:  # noqa: BLE001 - Coqui raises many types for a foreign folder
            raise GeneratorError(f"{folder}: not a Coqui XTTS checkpoint folder ({type(exc).__name__}: {exc})") from None
        aliases = {name for name in model.state_dict() if name.startswith(("gpt.gpt_inference.", "gpt.gpt.wte."))}
        missing = [k for k in missing if k not in aliases]
        if missing or unexpected:
            raise GeneratorError(f"{model_file}: weights do not fit its config.json: missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}")
        speakers = folder / "speakers_xtts.pth"
        self.speakers = load_torch_file(speakers, self.architecture, error=GeneratorError) if speakers.is_file() else {}
        self.model = model.to(self.device)  # the official config defines the model and its tokenizer
        self._voices = {}
