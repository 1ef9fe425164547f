"""SSL extraction: the naive way versus sourcetrace's truncated, batched path, measured in one run.

naive      the study's code: the full model, one clip at a time, the processor's whole output
           (`padding=True`, attention mask included) passed to it, `output_hidden_states=True`,
           mean of hidden_states[L] over every frame: the reference vectors
float32    SSLExtractor: only the first L layers, clips batched by sorted length with masks
bfloat16   the same in bfloat16
*-conv     either, with the conv front end run by the backend's conv kernels, or as channels-last
*-gemm     GEMMs (frontend.py; wav2vec2 family); without a suffix, the extractor's default (gemm on
           the CPU where it fits, conv elsewhere): `--paths naive,float32-conv,float32-gemm`

For w2v-bert models, a preprocessing breakdown follows: the processor, clip by clip (as the study
and the naive path), against the fbank of whole batches in torch on the device (fbank.py, which
SSLExtractor uses off the CPU), batched as the extractor plans them, with their largest difference;
each warmed by one untimed pass (the torch path's first pass is printed too). It depends only on the
processor, so `--model tiny-w2v-bert --paths float32` measures it in seconds.

Models have the real architectures of the study's models (shipped configs) with seeded random
weights, so nothing is downloaded; speed and memory do not depend on the weights' values. They are
kept under --workdir for reruns: 8.1 GB for xls-r-2b, 2.2 GB for w2v-bert-2.0; delete them after.
Each path runs in its own process, so peak memory (max RSS on CPU, max allocated on CUDA) is its
own. Usage:

    python perf/bench_ssl_extraction.py --model xls-r-2b --layer 8 --clips 12
    python perf/bench_ssl_extraction.py --model w2v-bert-2.0 --layer 4 --clips 12
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_clips(n: int, seed: int, min_s: float, max_s: float) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.uniform(min_s, max_s, n)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in lengths]


def peak_rss_bytes() -> int:
    """This process's own peak RSS. VmHWM belongs to the process's memory map, which exec replaces;
    getrusage's ru_maxrss is not reset by exec and would report the parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load_naive(model_dir, device):
    """The study's processor and full model."""
    from transformers import AutoFeatureExtractor, AutoModel

    return AutoFeatureExtractor.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval().to(device)


def naive_vectors(processor, model, clips: list[np.ndarray], layer: int, device) -> np.ndarray:
    """The study's code: the full model, one clip at a time, hidden_states[layer] averaged."""
    import torch

    vectors = []
    with torch.inference_mode():
        for wave in clips:
            inputs = processor(wave, sampling_rate=16000, return_tensors="pt", padding=True)
            hidden = model(**{k: v.to(device) for k, v in inputs.items()}, output_hidden_states=True).hidden_states
            vectors.append(hidden[layer].float().mean(1)[0].cpu().numpy())
    return np.stack(vectors)


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    clips = make_clips(args.clips, args.seed, args.min_seconds, args.max_seconds)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    t0 = time.perf_counter()
    if args.worker == "naive":
        processor, model = load_naive(args.model_dir, device)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        vectors = naive_vectors(processor, model, clips, args.layer, device)
    else:
        from sourcetrace.attribution.extractors.ssl import SSLExtractor

        dtype, _, frontend = args.worker.partition("-")  # e.g. float32-conv: a front end named (frontend.py)
        extractor = SSLExtractor(args.model_dir, [args.layer], device=str(device), dtype=dtype,
                                 frontend=frontend or None)
        _ = extractor.model  # load now, so loading is not counted as extraction time
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        order = extractor.plan_batches([len(c) for c in clips])
        vectors = np.empty((len(clips), extractor.vector_dim), np.float32)
        for batch in order:
            vectors[batch] = extractor.extract([clips[i] for i in batch])
    if device.type == "cuda":
        torch.cuda.synchronize()
    run_s = time.perf_counter() - t1
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else peak_rss_bytes())
    np.save(args.vectors_out, vectors)
    print(json.dumps({"load_s": load_s, "run_s": run_s, "peak_bytes": peak, "device": str(device)}))


def preprocessing_breakdown(model_dir: Path, clips: list[np.ndarray], device: str, threads: int) -> dict:
    """Clips/s of w2v-bert's per-clip processor versus the batched torch fbank, same clips and device.

    Each path first runs over all the clips untimed (FFT plans, allocator pools, a CUDA context: a
    once-per-process cost, reported as the torch path's cold pass), then a timed pass."""
    import torch

    from sourcetrace.attribution.extractors.ssl import SSLExtractor
    from sourcetrace.core.device import resolve_device

    torch.set_num_threads(threads)
    extractor = SSLExtractor(model_dir, [0], device=device, batch_fbank=True)
    target = resolve_device(device)
    sync = torch.cuda.synchronize if target.type == "cuda" else (lambda: None)
    batches = extractor.plan_batches([len(c) for c in clips])

    def processor_pass():
        return [extractor.processor(c, sampling_rate=16000, return_tensors="pt", padding=True)["input_features"][0]
                .to(target) for c in clips]

    def torch_pass():
        out = {}
        for batch in batches:
            features, _, lengths = extractor.batch_fbank([clips[i] for i in batch])
            out.update({i: features[j, : lengths[j]] for j, i in enumerate(batch)})
        return out

    def timed(run):
        t0 = time.perf_counter()
        result = run()
        sync()
        return result, time.perf_counter() - t0

    processor_pass()  # warm-up; the torch path's first pass is its warm-up, and is reported
    alone, processor_s = timed(processor_pass)
    _, cold_s = timed(torch_pass)
    batched, torch_s = timed(torch_pass)
    diff = max(float((batched[i] - alone[i]).abs().max()) for i in range(len(clips)))
    return {"processor_clips_per_s": len(clips) / processor_s, "torch_fbank_clips_per_s": len(clips) / torch_s,
            "torch_fbank_cold_clips_per_s": len(clips) / cold_s,
            "batches": len(batches), "max_abs_diff": diff, "device": str(target)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="xls-r-2b", help="a shipped model config: xls-r-2b, w2v-bert-2.0, tiny-wav2vec2 ...")
    parser.add_argument("--layer", type=int, default=8)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="perf/.work", help="random-init model folders are kept here")
    parser.add_argument("--paths", default="naive,float32,bfloat16")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--vectors-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from sourcetrace.attribution.extractors.ssl import named_model_spec, save_random_model

    spec = named_model_spec(args.model)
    workdir = Path(args.workdir)
    t0 = time.perf_counter()
    model_dir = save_random_model(spec["config"], spec["preprocessor"], workdir / f"random-{args.model}", seed=0)
    print(f"model folder {model_dir} ready in {time.perf_counter() - t0:.1f} s")
    lengths = [len(c) for c in make_clips(args.clips, args.seed, args.min_seconds, args.max_seconds)]
    total_audio = sum(lengths) / 16000
    if spec["config"]["model_type"] == "wav2vec2-bert":  # odd counts get the processor's masked padding frame
        odd = sum((1 + (n - 400) // 160) % 2 for n in lengths)
        print(f"fbank frame counts: {odd} odd, {len(lengths) - odd} even")
    results = {}
    for path in args.paths.split(","):
        out = workdir / f"vectors-{args.model}-{path}.npy"
        cmd = [sys.executable, __file__, "--worker", path, "--model-dir", str(model_dir), "--vectors-out", str(out),
               "--layer", str(args.layer), "--clips", str(args.clips), "--min-seconds", str(args.min_seconds),
               "--max-seconds", str(args.max_seconds), "--threads", str(args.threads), "--device", args.device,
               "--seed", str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{path} failed:\n{proc.stderr[-3000:]}")
        results[path] = json.loads(proc.stdout.strip().splitlines()[-1])
        results[path]["vectors"] = np.load(out)
        r = results[path]
        print(f"{path:>9}: {args.clips / r['run_s']:7.3f} clips/s  ({r['run_s']:.1f} s for {total_audio:.0f} s of audio), "
              f"load {r['load_s']:.1f} s, peak {r['peak_bytes'] / 2**30:.2f} GiB on {r['device']}")
    summary = {"model": args.model, "layer": args.layer, "clips": args.clips, "audio_seconds": total_audio,
               "threads": args.threads, "paths": {}}
    base = results.get("naive")
    for path, r in results.items():
        entry = {"clips_per_s": args.clips / r["run_s"], "run_s": r["run_s"], "load_s": r["load_s"],
                 "peak_gib": r["peak_bytes"] / 2**30, "device": r["device"]}
        if base is not None and path != "naive":
            a, b = r["vectors"].astype(np.float64), base["vectors"].astype(np.float64)
            entry["speedup_vs_naive"] = base["run_s"] / r["run_s"]
            entry["peak_memory_vs_naive"] = r["peak_bytes"] / base["peak_bytes"]
            entry["max_relative_error"] = float((np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).max())
            entry["min_cosine"] = float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())
            print(f"{path:>9} vs naive: {entry['speedup_vs_naive']:.1f}x clips/s, peak memory "
                  f"{100 * entry['peak_memory_vs_naive']:.0f}%, max relative error {entry['max_relative_error']:.2e}, "
                  f"min cosine {entry['min_cosine']:.6f}")
        summary["paths"][path] = entry
    if spec["config"]["model_type"] == "wav2vec2-bert":
        clips = make_clips(args.clips, args.seed, args.min_seconds, args.max_seconds)
        pre = preprocessing_breakdown(model_dir, clips, args.device, args.threads)
        print(f"preprocessing on {pre['device']}: processor per clip {pre['processor_clips_per_s']:.1f} clips/s, "
              f"torch fbank per batch {pre['torch_fbank_clips_per_s']:.1f} clips/s "
              f"({pre['torch_fbank_clips_per_s'] / pre['processor_clips_per_s']:.2f}x; its first pass in this process "
              f"{pre['torch_fbank_cold_clips_per_s']:.1f} clips/s), "
              f"max abs difference {pre['max_abs_diff']:.1e}")
        summary["preprocessing"] = pre
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
