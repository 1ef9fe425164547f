"""wav2vec2's conv front end, as cuDNN/oneDNN run it ("conv") and as channels-last GEMMs ("gemm",
attribution/extractors/frontend.py), timed in one run on the same batch, with their difference.

Only the front end of the shipped model config is built (seeded random weights): for xls-r-2b that
is 4.2 M parameters, so this runs in seconds on a GPU (a minute on two CPU cores). The frames it
makes are what the encoder's layers read; each path's difference is max |x - ref| / max |ref| over
them, ref = the conv front end in the first dtype named (float32 by default). Usage:

    python perf/bench_frontend.py --model xls-r-2b --device cuda --dtypes float32,bfloat16
"""

from __future__ import annotations

import argparse
import json
import time


def frontend_timings(model: str = "xls-r-2b", device: str = "auto", dtypes: tuple[str, ...] = ("float32",),
                     clips: int = 16, seconds: float = 5.5, repeats: int = 5, seed: int = 0) -> dict:
    """Seconds per batch (best of `repeats`, after a warm-up) of each front end and dtype."""
    import torch
    from transformers import AutoConfig
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2FeatureEncoder

    from sourcetrace.attribution.extractors.frontend import GemmFeatureEncoder
    from sourcetrace.attribution.extractors.ssl import named_model_spec
    from sourcetrace.core.device import resolve_device

    target = resolve_device(device)
    config = AutoConfig.for_model(**named_model_spec(model)["config"])
    torch.manual_seed(seed)
    conv = Wav2Vec2FeatureEncoder(config).eval()
    encoders = {"conv": conv, "gemm": GemmFeatureEncoder(conv)}
    audio = torch.randn(clips, int(seconds * 16000), generator=torch.Generator().manual_seed(seed)) * 0.1
    sync = torch.cuda.synchronize if target.type == "cuda" else (lambda: None)
    out = {"model": model, "device": str(target), "clips": clips, "seconds": seconds, "dtypes": {},
           "reference": f"conv front end in {dtypes[0]}"}
    reference = None
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        inputs = audio.to(target, dtype)
        frames, row = {}, {}
        for name, encoder in encoders.items():
            encoder.to(target, dtype)
            with torch.inference_mode():
                encoder(inputs)  # warm-up: kernels, allocator
                sync()
                best = float("inf")
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    frames[name] = encoder(inputs)
                    sync()
                    best = min(best, time.perf_counter() - t0)
            row[f"{name}_s"] = best
        row["gemm_speedup"] = row["conv_s"] / row["gemm_s"]
        if reference is None:  # the first dtype's conv frames: float32 unless told otherwise
            reference = frames["conv"].float()
        for name, made in frames.items():  # max |x - reference| / max |reference|
            row[f"{name}_difference"] = float((made.float() - reference).abs().max() / reference.abs().max())
        out["dtypes"][dtype_name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="xls-r-2b", help="a shipped model config with a conv front end")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result = frontend_timings(args.model, args.device, tuple(args.dtypes.split(",")), args.clips, args.seconds,
                              args.repeats)
    for dtype, row in result["dtypes"].items():
        print(f"{args.model} front end, {dtype} on {result['device']}: conv {row['conv_s'] * 1000:.1f} ms, "
              f"gemm {row['gemm_s'] * 1000:.1f} ms ({row['gemm_speedup']:.2f}x); difference from the "
              f"{result['reference']}: conv {row['conv_difference']:.1e}, gemm {row['gemm_difference']:.1e}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
