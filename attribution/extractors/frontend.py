"""wav2vec2's convolutional front end as matrix products in channels-last layout.

Profiled on a GPU (shared/notes/gpu.md), xls-r-2b's front end took most of the bf16 GPU time:
cuDNN ran its bf16 conv1d layers on implicit-GEMM kernels without tensor cores, and each layer
norm over channels needed two transposes. Here each layer keeps (batch, frames, channels): the
kernel windows are cut out with `unfold` and multiplied by the conv weight as one GEMM (which
runs on tensor cores in bf16/fp16), and the layer norm and GELU act on the last axis with no
transpose. Same parameters, same arithmetic up to summation order.

Used where measured faster: `SSLExtractor`'s default on the CPU (perf/bench_frontend.py measures
it); on a GPU only when asked (`frontend="gemm"`) until
`perf/gpu_check.py`, which times both, says it wins there. Layer-normalised front ends only
(xls-r, wav2vec2-large-lv60 style): a group-normalised one normalises over time and keeps its
conv layers.
"""

from __future__ import annotations

import torch
from torch import nn

from sourcetrace.core.errors import UsageError

FRONTENDS = ("conv", "gemm")


class GemmConvLayer(nn.Module):
    """One `Wav2Vec2LayerNormConvLayer` on (batch, frames, channels): unfold, GEMM, layer norm, activation."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        conv = layer.conv
        self.kernel, self.stride = conv.kernel_size[0], conv.stride[0]
        # (out, in, kernel) -> (out, in * kernel): the order unfold gives each window's values.
        self.weight = nn.Parameter(conv.weight.detach().reshape(conv.out_channels, -1), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), requires_grad=False)
        self.layer_norm = layer.layer_norm
        self.activation = layer.activation

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        windows = hidden.unfold(1, self.kernel, self.stride)  # (batch, frames', channels, kernel)
        out = nn.functional.linear(windows.flatten(2), self.weight, self.bias)
        return self.activation(self.layer_norm(out))


class GemmFeatureEncoder(nn.Module):
    """Drop-in for `Wav2Vec2FeatureEncoder` (layer norm): returns (batch, channels, frames) as it does,
    a transposed view of the channels-last result (the model transposes it straight back)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(GemmConvLayer(layer) for layer in encoder.conv_layers)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        hidden = input_values[:, :, None]  # (batch, samples, 1 channel)
        for layer in self.layers:
            hidden = layer(hidden)
        return hidden.transpose(1, 2)


def fits(config) -> bool:
    """From a model's config, before loading it: a conv front end with layer norm (w2v-bert has no
    conv front end; a group-normalised one normalises over time). `supports` checks the model itself."""
    return config.model_type != "wav2vec2-bert" and getattr(config, "feat_extract_norm", "layer") != "group"


def supports(model: nn.Module) -> bool:
    """A wav2vec2-family model whose front end is unpadded conv1d layers, each followed by a layer
    norm over channels and an activation (wav2vec2/HuBERT/WavLM with feat_extract_norm "layer",
    data2vec-audio): told by the layers' parts, whatever their classes are called."""
    encoder = getattr(model, "feature_extractor", None)
    layers = getattr(encoder, "conv_layers", None)
    return bool(layers) and all(
        isinstance(getattr(layer, "conv", None), nn.Conv1d) and layer.conv.padding == (0,) and layer.conv.groups == 1
        and isinstance(getattr(layer, "layer_norm", None), nn.LayerNorm) and hasattr(layer, "activation")
        for layer in layers)


def use_gemm_frontend(model: nn.Module) -> None:
    """Swap the model's conv front end for the GEMM one, in place."""
    if not supports(model):
        raise UsageError(f"{type(model).__name__}: no layer-normalised conv front end to replace "
                         "(w2v-bert has none; group-normalised ones normalise over time)")
    model.feature_extractor = GemmFeatureEncoder(model.feature_extractor)
