"""Self-supervised speech models (Hugging Face wav2vec2 family): pooled hidden states of layer L.

Layer L means `hidden_states[L]` in Hugging Face terms: index 0 is the input of the first
transformer layer, index L the output of layer L (before any final encoder layer norm, which
transformers applies only to `last_hidden_state`). Only the first L layers are loaded and run;
the vector is read from the output of layer L by a forward hook, so it equals the full model's
`hidden_states[L]` without computing the other layers.

The reference vector of a clip is what the study's code computes for that clip alone:
`model(**processor(clip, sampling_rate=16000, return_tensors="pt", padding=True),
output_hidden_states=True).hidden_states[L].mean(1)`. For w2v-bert the processor (stride 2) pads a
clip with an odd fbank frame count by one fbank frame, and its attention mask excludes the stacked
frame that holds it; the model gets that mask, and the study's mean still counts that frame's
output. Pooling "mean" reproduces this; "masked-mean" averages only the frames the mask keeps.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from sourcetrace.attribution.extractors.base import EXTRACTOR_CODE_VERSION, FeatureExtractor, SpecNotTaken
from sourcetrace.attribution.extractors.fbank import BatchFbank
from sourcetrace.attribution.extractors.fbank import supports as fbank_supports
from sourcetrace.attribution.extractors.frontend import FRONTENDS, use_gemm_frontend
from sourcetrace.attribution.extractors.frontend import fits as gemm_fits
from sourcetrace.attribution.hash_cache import HashCache
from sourcetrace.core.device import resolve_device
from sourcetrace.core.errors import SourcetraceError, UsageError
from sourcetrace.core.fileio import sha256_file
from sourcetrace.core.offline import extractor_model

SUPPORTED_MODEL_TYPES = ("wav2vec2", "wav2vec2-bert", "hubert", "wavlm", "data2vec-audio")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# What each pooling averages, per clip (recorded in the fingerprint).
POOLINGS = {
    "mean": "mean over every frame the model returns for the clip alone, given the processor's own "
            "output and attention mask (the study's)",
    "masked-mean": "mean over the frames the processor's attention mask keeps for the clip alone",
}
# Bumped whenever a change to SSL extraction can change a vector (part of the fingerprint).
# 2: the processor's own attention mask reaches the model; pooling as the study's code.
SSL_CODE_VERSION = "2"


class ModelFolderError(SourcetraceError, FileNotFoundError):
    pass


@contextlib.contextmanager
def quiet_transformers():
    """No warnings or progress bars from transformers inside the block (our own progress shows)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def resolve_dtype(name: str) -> str:
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}; choose one of fp32, bf16, fp16")
    return name


def weight_files(model_dir: Path) -> list[Path]:
    """Weight files in the names save_pretrained uses (sharded or not, safetensors or pickle)."""
    return sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin")
                  and p.name.startswith(("model", "pytorch_model")))


def cached_sha256(path: Path) -> str:
    """sha256 of a (possibly multi-GB) file, remembered per path and stat signature in the user cache."""
    cache = HashCache(Path(os.environ.get("SOURCETRACE_CACHE", Path.home() / ".cache" / "sourcetrace")) / "sha256.json")
    digest = cache.sha256(path, str(path.resolve()))
    try:
        cache.save()
    except OSError:
        pass  # a read-only home only costs re-hashing next time
    return digest


def check_model_folder(model_dir: Path) -> None:
    missing = [n for n in ("config.json", "preprocessor_config.json") if not (model_dir / n).is_file()]
    if not model_dir.is_dir():
        missing = ["the folder itself"]
    elif not weight_files(model_dir):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if missing:
        raise ModelFolderError(
            f"{model_dir}: not a usable Hugging Face model folder; missing {', '.join(missing)}. "
            "Put the published model's config.json, preprocessor_config.json and weights there."
        )


NAMED_MODELS = ("xls-r-2b", "w2v-bert-2.0")


def shipped_models() -> list[str]:
    """Every model description shipped with the project: the study's models and tiny test models."""
    folder = resources.files(__package__).joinpath("models")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def named_model_spec(name: str) -> dict:
    """The shipped description of a model: its HF name, study layer, config and preprocessor."""
    if name not in shipped_models():
        raise UsageError(f"unknown model {name!r}; shipped models: {', '.join(shipped_models())}")
    text = resources.files(__package__).joinpath("models", f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def parse_layers(text: str, spec: str) -> list[int]:
    try:
        if ".." in text:
            first, last = (int(x) for x in text.split("..", 1))
            if first > last:
                raise ValueError
            return list(range(first, last + 1))
        return [int(text)]
    except ValueError:
        raise UsageError(f"extractor spec {spec!r}: layer must be an integer L or a range A..B") from None


class SSLExtractor(FeatureExtractor):
    """Pooled hidden_states[L] (or every layer in `layers`) of each clip, as computed for the clip
    alone; batching pads only with frames that are masked and left out of the pooling."""

    @classmethod
    def from_spec(cls, spec: str, *, models_dir: str | os.PathLike | None = None, device: str = "auto",
                  dtype: str = "float32", batch_size: int | None = None) -> SSLExtractor:
        """`ssl:<model-folder>@<layers>[:<pooling>]`, or `<shipped model>@<layers>[:<pooling>]`
        loaded from `models_dir`/<shipped model>/ after checking its config is that model's."""
        model = extractor_model(spec, models_dir)
        if model is None:
            raise SpecNotTaken(spec)
        layer_text, _, pooling = spec.rsplit("@", 1)[1].partition(":")
        pooling = pooling or "mean"
        if pooling not in POOLINGS:
            raise UsageError(f"extractor spec {spec!r}: unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        layers = parse_layers(layer_text, spec)
        if not model.named:
            return cls(model.folder, layers, device=device, dtype=dtype, batch_size=batch_size, pooling=pooling)
        source, model_dir = model.source, model.folder
        if source not in shipped_models():  # the study's models and the tiny test ones: one grammar for CLI and recipes
            raise UsageError(f"extractor spec {spec!r}: {source!r} is neither ssl:<folder> nor one of {', '.join(shipped_models())}")
        named = named_model_spec(source)
        if not model_dir.is_dir():
            raise ModelFolderError(
                f"{model_dir}: no such folder. Download the published {named['hf_name'] or source + ' (a test model)'} "
                f"(config.json, preprocessor_config.json, model weights) into it, or point "
                f"--models-dir / SOURCETRACE_MODELS at the folder that holds {source}/."
            )
        config_file = model_dir / "config.json"
        if config_file.is_file():
            found, expected = json.loads(config_file.read_text()), named["config"]
            for key in ("model_type", "hidden_size", "num_hidden_layers"):
                if found.get(key) != expected[key]:
                    raise ModelFolderError(f"{config_file}: {key} is {found.get(key)!r}, but {named['hf_name']} "
                                           f"has {expected[key]!r}: wrong model in this folder?")
        return cls(model_dir, layers, device=device, dtype=dtype, batch_size=batch_size, label=source, pooling=pooling)

    def __init__(self, model_dir: str | os.PathLike, layers: Sequence[int], device: str = "auto",
                 dtype: str = "float32", batch_size: int | None = None, max_batch_seconds: float | None = None,
                 label: str | None = None, pooling: str = "mean", batch_fbank: bool | None = None,
                 frontend: str | None = None):
        from transformers import AutoConfig, AutoFeatureExtractor

        self.model_dir = Path(model_dir)
        check_model_folder(self.model_dir)
        if pooling not in POOLINGS:
            raise UsageError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.layers = sorted(set(int(x) for x in layers))
        self.dtype_name = resolve_dtype(dtype)
        self.device = resolve_device(device)
        self.label = label or self.model_dir.name
        config = AutoConfig.from_pretrained(self.model_dir)
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise UsageError(f"{self.model_dir}/config.json: model_type {config.model_type!r} is not a "
                             f"wav2vec2-family model ({', '.join(SUPPORTED_MODEL_TYPES)})")
        self.full_depth = config.num_hidden_layers
        if self.layers[0] < 0 or self.layers[-1] > self.full_depth:
            raise UsageError(f"{self.model_dir}: layer(s) {self.layers} out of range 0..{self.full_depth}")
        self.config = config
        self.processor = AutoFeatureExtractor.from_pretrained(self.model_dir)
        self.sample_rate = int(getattr(self.processor, "sampling_rate", 16000))
        # Group-normalised conv front ends (wav2vec2-base style) normalise over time, so padding
        # would change every vector: such models run one clip per batch.
        # data2vec-audio's positional embedding is a stack of convs with layer norms: a batch's
        # padding leaks into a clip's last frames through it (tiny model: 13 % off for a 0.3-s clip
        # padded to 1.7 s), so it runs one clip per batch too.
        group_norm = getattr(config, "feat_extract_norm", "layer") == "group"
        self.pads_exactly = not group_norm and config.model_type != "data2vec-audio"
        self._weights = weight_files(self.model_dir)
        self._model = None
        # w2v-bert's fbank for a whole batch on the device (fbank.py), within 1e-4 of the processor's:
        # by default where the processor's per-clip numpy loop would feed an accelerator. On the CPU
        # the processor (the study's exact path) stays: there the model's forward takes far longer
        # than the fbank, so batching the fbank would save little.
        if batch_fbank is None:
            batch_fbank = self.device.type != "cpu"
        self.batch_fbank = BatchFbank(self.processor, self.device) if batch_fbank and fbank_supports(self.processor) else None
        # The conv front end as the backend's conv kernels run it ("conv") or as GEMMs in
        # channels-last layout ("gemm", frontend.py): the same vectors within float rounding. On the
        # CPU the GEMMs are faster (xls-r-2b in fp32, measured by perf/bench_frontend.py and
        # bench_ssl_extraction.py); on a GPU it is not measured yet
        # (gpu_check.py times both), so "conv" stays the default there.
        if frontend is None:
            frontend = "gemm" if self.device.type == "cpu" and gemm_fits(config) else "conv"
        if frontend not in FRONTENDS:
            raise UsageError(f"unknown front end {frontend!r}; choose one of {', '.join(FRONTENDS)}")
        if frontend == "gemm" and not gemm_fits(config):
            raise UsageError(f"{self.model_dir}: frontend='gemm' needs a layer-normalised conv front end "
                             f"(model_type {config.model_type!r}, feat_extract_norm "
                             f"{getattr(config, 'feat_extract_norm', None)!r})")
        self.frontend = frontend
        self.batch_size = batch_size if self.pads_exactly else 1
        self.max_batch_seconds = max_batch_seconds if max_batch_seconds is not None else self._auto_batch_seconds()
        #: set to {} to add each phase's seconds (preprocess, copy, forward, pool) to it; each phase
        #: then synchronises the device, so leave it None except to measure
        self.phase_seconds: dict[str, float] | None = None

    # ---- identity -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        span = f"{self.layers[0]}..{self.layers[-1]}" if len(self.layers) > 1 else f"{self.layers[0]}"
        pooling = "" if self.pooling == "mean" else f"-{self.pooling}"
        return f"ssl-{self.label}-L{span}-{self.dtype_name}{pooling}"

    @functools.cached_property
    def fingerprint(self) -> dict:  # hashing multi-GB weights once per process is enough
        return {
            "kind": "ssl",
            "model_type": self.config.model_type,
            "config_sha256": sha256_file(self.model_dir / "config.json"),
            "preprocessor_sha256": sha256_file(self.model_dir / "preprocessor_config.json"),
            "weights": [{"file": p.name, "size": p.stat().st_size, "sha256": cached_sha256(p)} for p in self._weights],
            "layers": self.layers,
            "pooling": POOLINGS[self.pooling],
            "dtype": self.dtype_name,
            "code_version": f"{EXTRACTOR_CODE_VERSION}/ssl-{SSL_CODE_VERSION}",
            # only where it applies, so other models keep their stored vectors; data2vec-audio's
            # were computed in padded batches (inexact) before this key and are recomputed
            **({"one_clip_per_batch": True} if not self.pads_exactly else {}),
            # low precision on a CPU: vectors stored before oneDNN was bypassed (wrong on AMX CPUs) are recomputed
            **({"cpu_kernels": "pytorch"} if self.device.type == "cpu" and self.dtype_name != "float32" else {}),
        }

    @property
    def vector_dim(self) -> int:
        return self.config.hidden_size

    # ---- model ----------------------------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = self._load_truncated()
        return self._model

    def _load_truncated(self) -> torch.nn.Module:
        from transformers import AutoModel

        depth = max(self.layers[-1], 1)  # layer 0 is the input of layer 1: keep one layer to hook
        with quiet_transformers():  # "weights of layers > L not used" is the point, not a problem
            model = AutoModel.from_pretrained(self.model_dir, num_hidden_layers=depth,
                                              dtype=DTYPES[self.dtype_name], use_safetensors=None)
        if self.frontend == "gemm":
            use_gemm_frontend(model)
        model.eval().to(self.device)
        if getattr(model, "masked_spec_embed", None) is not None:
            model.config.apply_spec_augment = False
        return model

    def _output_frames(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Frames the model makes of inputs of these lengths (fbank frames for w2v-bert: one each)."""
        if self.config.model_type == "wav2vec2-bert":
            return input_lengths
        lengths = input_lengths
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride):
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths

    def min_samples(self) -> int:
        if self.config.model_type == "wav2vec2-bert":
            # 25 ms fbank frames every 10 ms, stacked in pairs (stride 2): two frames needed.
            return 400 + 160
        need = 1
        for kernel, stride in reversed(list(zip(self.config.conv_kernel, self.config.conv_stride))):
            need = (need - 1) * stride + kernel
        return need

    def _auto_batch_seconds(self) -> float:
        """Padded seconds of audio a batch may hold: fixed on CPU, from free memory on CUDA."""
        if self.device.type != "cuda":
            return 16.0
        free, _ = torch.cuda.mem_get_info(self.device)
        frames_per_s = 50.0
        bytes_per_value = 4 if self.dtype_name == "float32" else 2
        conv_channels = max(getattr(self.config, "conv_dim", [512]))
        # Live activations per second of audio: the first conv layer dominates (16000/5 frames),
        # then a few copies of the hidden states and the attention matrix of the longest clip.
        per_second = bytes_per_value * (conv_channels * 3200 * 3 + self.config.hidden_size * frames_per_s * 12)
        return float(max(4.0, min(1200.0, 0.3 * free / per_second)))

    # ---- extraction -----------------------------------------------------------------------------
    def _pad(self, waves: Sequence[np.ndarray]) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        """Preprocess each clip alone, exactly as the study's code does, then pad the batch.

        Returns the input name, the padded inputs, the attention mask (each clip's own mask from
        the processor, then zeros for the batch padding), each clip's input length (what the
        processor returned for it alone, its own padding frame included) and whether the
        processor returns a mask at all (the reference passes the model whatever it returns).
        With `batch_fbank`, w2v-bert's features come from fbank.py: the same, for the whole batch."""
        if self.batch_fbank is not None:
            return ("input_features", *self.batch_fbank(waves), True)
        items = [self.processor(np.asarray(w, dtype=np.float32), sampling_rate=self.sample_rate,
                                return_tensors="pt", padding=True) for w in waves]
        input_name = "input_features" if "input_features" in items[0] else "input_values"
        tensors = [item[input_name][0] for item in items]
        lengths = torch.tensor([t.shape[0] for t in tensors])
        longest = int(lengths.max())
        pad_value = float(getattr(self.processor, "padding_value", 0.0))
        values = torch.full((len(tensors), longest, *tensors[0].shape[1:]), pad_value, dtype=tensors[0].dtype)
        attention_mask = torch.zeros(len(tensors), longest, dtype=torch.long)
        for i, (t, item) in enumerate(zip(tensors, items)):
            values[i, : t.shape[0]] = t
            attention_mask[i, : t.shape[0]] = item["attention_mask"][0] if "attention_mask" in item else 1
        return input_name, values, attention_mask, lengths, "attention_mask" in items[0]

    def _pooling_mask(self, attention_mask: torch.Tensor, lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Boolean (batch, frames): the frames each clip's vector averages."""
        frames = torch.arange(num_frames)[None, :]
        if self.pooling == "mean":
            return frames < self._output_frames(lengths)[:, None]
        if self.config.model_type == "wav2vec2-bert":
            return attention_mask[:, :num_frames].bool()  # one model frame per mask entry
        return frames < self._output_frames(attention_mask.sum(-1))[:, None]

    @contextlib.contextmanager
    def _phase(self, name: str):
        """Time one phase of `extract` into `phase_seconds` when it is set (a benchmark's breakdown)."""
        if self.phase_seconds is None:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + time.perf_counter() - start

    def _to_device(self, tensor: torch.Tensor, **kwargs) -> torch.Tensor:
        """Host tensors reach a GPU from pinned memory without blocking the host; elsewhere a plain `.to`."""
        if self.device.type == "cuda" and tensor.device.type == "cpu":
            return tensor.pin_memory().to(self.device, non_blocking=True, **kwargs)
        return tensor.to(self.device, **kwargs)

    @torch.inference_mode()
    def extract(self, waves: Sequence[np.ndarray]) -> np.ndarray:
        model = self.model
        with self._phase("preprocess"):
            input_name, values, attention_mask, lengths, processor_masks = self._pad(waves)
        with self._phase("copy"):
            model_inputs = {input_name: self._to_device(values, dtype=DTYPES[self.dtype_name])}
            if self.pads_exactly or processor_masks:  # group-norm models run one clip a batch: the mask is its own
                model_inputs["attention_mask"] = self._to_device(attention_mask)
        captured: dict[int, torch.Tensor] = {}
        hooks = []
        layers = model.encoder.layers
        if 0 in self.layers:
            hooks.append(layers[0].register_forward_pre_hook(
                lambda _m, args, kwargs: captured.__setitem__(0, args[0] if args else kwargs["hidden_states"]),
                with_kwargs=True))
        for index in self.layers:
            if index > 0:
                hooks.append(layers[index - 1].register_forward_hook(
                    lambda _m, _a, out, index=index: captured.__setitem__(index, out[0] if isinstance(out, tuple) else out)))
        try:
            with self._phase("forward"), _onednn_off_for_low_precision(self.device, DTYPES[self.dtype_name]):
                model(**model_inputs)
        finally:
            for hook in hooks:
                hook.remove()
        with self._phase("pool"):  # the one synchronisation per batch: fetching the vectors
            num_frames = captured[self.layers[0]].shape[1]
            mask = self._to_device(self._pooling_mask(attention_mask, lengths, num_frames)).unsqueeze(-1).float()
            pooled = [(captured[i].float() * mask).sum(1) / mask.sum(1).clamp(min=1.0) for i in self.layers]
            stacked = torch.stack(pooled, dim=1) if len(self.layers) > 1 else pooled[0]
            return stacked.cpu().numpy().astype(np.float32)


def _onednn_off_for_low_precision(device: torch.device, dtype: torch.dtype):
    """oneDNN computes bf16 grouped convolutions wrongly on CPUs with AMX (measured on an Intel Xeon
    with amx_bf16: wav2vec2's positional convolution off by a relative 1.13, pooled vectors at cosine
    0.95 to fp32); PyTorch's own kernels agree with fp32 (cosine 0.99997). Low precision on a CPU
    therefore runs without oneDNN; fp32 and GPUs are untouched."""
    if device.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
        return torch.backends.mkldnn.flags(enabled=False)
    return contextlib.nullcontext()


def save_random_model(config: dict, preprocessor: dict, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build a model of `config` with seeded random weights and save it as a Hugging Face folder.

    Used for tests, the miniature study and benchmarks with the real architectures: nothing is
    downloaded. Written to a temporary folder and renamed, so a folder that exists is complete.
    """
    from transformers import AutoConfig, AutoModel

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    cfg = dict(config)
    model_type = cfg.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **cfg)
    torch.manual_seed(seed)
    model = AutoModel.from_config(hf_config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with quiet_transformers():
            model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
