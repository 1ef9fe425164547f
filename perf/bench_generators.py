"""Seconds per training step and real-time factor of synthesis, per architecture and config.

Data: a small LJSpeech-format set spoken by espeak-ng (sentences of 2-4 s). A training step is the
architecture's whole optimizer step (VITS: discriminator and generator). Synthesis RTF = wall
time / seconds of audio produced, for the acoustic model alone and with the architecture's own
vocoder kind in its full-size config, random weights (speed does not depend on the weights); VITS
is end to end, so both numbers are its own. `--nondeterministic` leaves oneDNN on (training is
reproducible bit for bit only without it; see generators/training.py). `--vocoders` times each
vocoder kind alone (full-size config, random weights) on the 22.05 kHz mels of the test prompts'
audio, conversion included (Vocos: re-analysis to 24 kHz and resampling back). `--check-resume`
also trains each model again in a fresh process and once stopped halfway and resumed (in two more
processes), and says whether the checkpoints are the same bit for bit (deterministic runs only).
`--isolate` measures each architecture and vocoder in a fresh process and adds its wall time (build,
data, steps, synthesis) and peak resident memory: the full-size smoke of the study's default configs
(issue 24: every generator and vocoder builds, trains and synthesises on this codebase). Usage:

    python perf/bench_generators.py [--configs tiny,default] [--steps 3] [--batch-size 4] [--check-resume]
    python perf/bench_generators.py --architectures "" --vocoders vocos:mel-24khz
    python perf/bench_generators.py --configs default --steps 2 --batch-size 2 --prompts 1 --isolate \
        --architectures fastpitch,gradtts,matcha,vits,vits-espnet,xtts --json perf/results/cpu-2core-full-size-smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch


def measure_generator(arch: str, config: str, lj, work: Path, steps: int, batch_size: int, device: str,
                      deterministic: bool, vocoders: dict) -> dict:
    """Seconds per training step (after one warm-up step) and synthesis RTF of one architecture."""
    from sourcetrace.generators import EndToEndGenerator, InferenceOnly, ZeroShot, build_generator
    from sourcetrace.generators.data import TrainingData
    from sourcetrace.generators.training import determinism
    from sourcetrace.vocoders import load_vocoder

    t_build = time.perf_counter()
    generator = build_generator(arch, config, seed=0).to(device)
    build_seconds = time.perf_counter() - t_build
    times = []
    if not isinstance(generator, InferenceOnly):  # XTTS: no training step to time
        data = TrainingData(generator, lj.items("train"), work / "features")
        optimizers = generator.optimizers()
        generator.model.train()
        with determinism(deterministic, strict=generator.device.type == "cuda"):  # as training runs
            for step in range(steps + 1):  # the first step warms up and is not counted
                t0 = time.perf_counter()
                generator.train_step(data.batch(step, batch_size, seed=0).to(generator.device), optimizers)
                if generator.device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
    if isinstance(generator, ZeroShot):  # zero-shot: the voice of a training clip (its conditioning is timed once)
        generator.use_reference(lj.items("train")[0].audio)
    vocoder = None
    if not isinstance(generator, EndToEndGenerator):
        kind = generator.default_vocoder
        if kind not in vocoders:
            vocoders[kind] = load_vocoder(kind, config="v1", seed=0).to(device)
        vocoder = vocoders[kind]
    acoustic = vocoded = audio = 0.0
    for utt in lj.items("test"):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        output = generator.synthesize(generator.synthesis_ids(utt.text))
        t1 = time.perf_counter()
        wave = output if vocoder is None else vocoder(output, generator.mel_config)
        if generator.device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        acoustic += t1 - t0
        vocoded += t2 - t0
        audio += len(wave) / generator.mel_config.sample_rate
    params = sum(p.numel() for p in generator.model.parameters())
    return {"architecture": arch, "config": config, "params": params, "batch_size": batch_size,
            "build_seconds": build_seconds, "seconds_per_step": sum(times[1:]) / steps if times else None, "rtf_acoustic": acoustic / audio,
            "rtf_with_vocoder": vocoded / audio, "threads": torch.get_num_threads(), "device": device,
            "deterministic": deterministic}


def _train_run(arch: str, config: str, items: list, features: Path, run_dir: Path, steps: int, batch_size: int,
               device: str, stop_after: int | None, threads: int) -> None:
    """One deterministic run through `train`, as a user runs it (in this process or a fresh one)."""
    from sourcetrace.generators import build_generator
    from sourcetrace.generators.data import TrainingData
    from sourcetrace.generators.training import train

    torch.set_num_threads(threads)  # CPU results depend on it: the same in every process
    generator = build_generator(arch, config, seed=0).to(device)
    train(generator, TrainingData(generator, items, features), run_dir, [steps], batch_size, seed=0,
          resume_every=max(steps // 2, 1), stop_after=stop_after, log=lambda _: None, tensorboard=False)


def check_resume(arch: str, config: str, lj, work: Path, steps: int, batch_size: int, device: str) -> dict:
    """Deterministic training reproduced on this device, checkpoints compared bit for bit with a
    first run of `steps` steps in this process (where other work has already used the device):
    `fresh`, the same run in a new process (a first use of cuBLAS, which reads
    CUBLAS_WORKSPACE_CONFIG then); `resumed`, a new process stopped halfway and another one
    resuming it, as after a crash. Each through `train`, as a user runs it."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from safetensors.torch import load_file

    from sourcetrace.generators.base import CHECKPOINT_WEIGHTS

    root = work / f"resume-{arch}-{config}"
    shutil.rmtree(root, ignore_errors=True)
    args = (arch, config, lj.items("train"), work / "features")
    options = (steps, batch_size, device)

    def in_new_process(run_dir: Path, stop_after: int | None = None) -> None:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            pool.submit(_train_run, *args, run_dir, *options, stop_after, torch.get_num_threads()).result()

    def weights(run_dir: Path) -> dict[str, torch.Tensor]:
        (folder,) = (run_dir / "checkpoints").iterdir()
        return load_file(folder / CHECKPOINT_WEIGHTS)

    t0 = time.perf_counter()
    _train_run(*args, root / "first", *options, None, torch.get_num_threads())
    in_new_process(root / "fresh")
    in_new_process(root / "resumed", stop_after=max(steps // 2, 1))
    in_new_process(root / "resumed")
    first = weights(root / "first")
    row = {"architecture": arch, "config": config, "steps": steps, "batch_size": batch_size, "device": device,
           "seconds": time.perf_counter() - t0}
    for name in ("fresh", "resumed"):
        other = weights(root / name)
        row[f"{name}_equals_first"] = all(torch.equal(first[k], other[k]) for k in first)
        row[f"{name}_max_abs_difference"] = max(float((first[k].double() - other[k].double()).abs().max())
                                                for k in first if first[k].numel())
    shutil.rmtree(root)
    return row


def measure_vocoder(kind: str, config: str, lj, device: str) -> dict:
    """Synthesis RTF of one vocoder kind on the study's mels (22.05 kHz, 80 bands) of real audio."""
    from sourcetrace.core.audio import load_audio
    from sourcetrace.core.mel import MelConfig, mel_spectrogram
    from sourcetrace.vocoders import load_vocoder

    vocoder, study = load_vocoder(kind, config=config, seed=0).to(device), MelConfig()
    mels = [mel_spectrogram(torch.from_numpy(load_audio(utt.audio, study.sample_rate)), study) for utt in lj.items("test")]
    vocoder(mels[0][:, :20], study)  # warm-up
    seconds = audio = 0.0
    for mel in mels:
        t0 = time.perf_counter()
        wave = vocoder(mel, study)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        audio += len(wave) / study.sample_rate
    return {"vocoder": kind, "family": vocoder.family, "config": config, "device": device,
            "params": sum(p.numel() for p in vocoder.module.parameters()), "rtf": seconds / audio,
            "threads": torch.get_num_threads()}


def _isolated(measure, *args) -> dict:
    """`measure(*args)` in this (fresh) process, with its wall time and the process's peak memory."""
    t0 = time.perf_counter()
    row = measure(*args)
    row["process_seconds"] = time.perf_counter() - t0
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return row


def _child(send, threads: int, measure, *args) -> None:
    torch.set_num_threads(threads)
    try:
        send.send(("ok", _isolated(measure, *args)))
    except Exception as exc:  # noqa: BLE001 - reported as the item's row; the parent goes on with the next
        send.send(("error", f"{type(exc).__name__}: {exc}"))


def _in_fresh_process(threads: int, timeout: float, name: dict, measure, *args) -> dict:
    """`measure(*args)` in a fresh (spawned) process; past `timeout` seconds it is killed and the row says so."""
    from multiprocessing import get_context

    context = get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, threads, measure, *args))
    t0 = time.perf_counter()
    process.start()
    send.close()
    outcome = receive.recv() if receive.poll(timeout) else ("timeout", f"killed after {timeout:.0f} s")
    process.kill() if outcome[0] == "timeout" else process.join()
    if outcome[0] == "ok":
        return outcome[1]
    return {**name, "failed": outcome[1], "process_seconds": time.perf_counter() - t0}


def _process_note(row: dict) -> str:
    return f"  ({row['process_seconds']:.0f} s, {row['peak_rss_mb']:,.0f} MB peak)" if "peak_rss_mb" in row else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architectures", default="fastpitch,gradtts,matcha,vits,vits-espnet")
    parser.add_argument("--configs", default="tiny,default")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nondeterministic", action="store_true", help="oneDNN on, as in an unconstrained run")
    parser.add_argument("--check-resume", action="store_true",
                        help="also train --steps in a fresh process and once stopped halfway and resumed, and "
                             "compare the checkpoints bit for bit")
    parser.add_argument("--vocoders", default="hifigan:v1,nemo-hifigan:v1,vocos:mel-24khz,bigvgan:v2-22khz-80band-fmax8k-256x",
                        help='kind:config,... timed alone on real mels ("" for none)')
    parser.add_argument("--isolate", action="store_true",
                        help="each architecture and vocoder in a fresh process: adds its wall time and peak memory")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="with --isolate: seconds one architecture or vocoder may take before it is killed")
    parser.add_argument("--json")
    args = parser.parse_args()

    from sourcetrace.datasets.espeak_datasets import make_ljspeech_like

    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]  # other work on the machine inflates the times: recorded with them
    work = Path(tempfile.mkdtemp(prefix="bench-generators-"))
    lj = make_ljspeech_like(work / "lj", n_train=8, n_val=1, n_test=args.prompts)
    vocoders = {}
    rows = []
    print(f"{'architecture':<10} {'config':<8} {'params':>9} {'s/step':>8} {'RTF acoustic':>13} {'RTF +HiFi-GAN':>14}")
    for arch in filter(None, args.architectures.split(",")):
        for config in args.configs.split(","):
            measure = (measure_generator, arch, config, lj, work, args.steps, args.batch_size, args.device,
                       not args.nondeterministic, {} if args.isolate else vocoders)
            name = {"architecture": arch, "config": config}
            row = _in_fresh_process(args.threads, args.timeout, name, *measure) if args.isolate else measure[0](*measure[1:])
            rows.append(row)
            if "failed" in row:
                print(f"{arch:<10} {config:<8} failed: {row['failed']}")
                continue
            step = "-" if row["seconds_per_step"] is None else f"{row['seconds_per_step']:.3f}"
            print(f"{arch:<10} {config:<8} {row['params']:>9,} {step:>8} {row['rtf_acoustic']:>13.3f} "
                  f"{row['rtf_with_vocoder']:>14.3f}" + _process_note(row))
            if args.check_resume and not args.nondeterministic and row["seconds_per_step"] is not None:
                row["resume"] = check_resume(arch, config, lj, work, args.steps, args.batch_size, args.device)
                print(f"{'':<10} {'':<8} same checkpoints in a fresh process: {row['resume']['fresh_equals_first']}, "
                      f"stopped halfway and resumed: {row['resume']['resumed_equals_first']}")
    for spec in filter(None, args.vocoders.split(",")):
        kind, _, config = spec.partition(":")
        measure = (measure_vocoder, kind, config or "v1", lj, args.device)
        name = {"vocoder": kind, "config": config or "v1"}
        row = _in_fresh_process(args.threads, args.timeout, name, *measure) if args.isolate else measure[0](*measure[1:])
        rows.append(row)
        if "failed" in row:
            print(f"vocoder {kind:<12} failed: {row['failed']}")
            continue
        print(f"vocoder {kind:<12} {row['config']:<28} {row['params']:>12,} RTF {row['rtf']:.3f}" + _process_note(row))
    if args.json:
        report = {"command": " ".join(["python", *sys.argv]), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "device": args.device, "cpu": platform.processor() or platform.machine(), "cpus": len(os.sched_getaffinity(0)),
                  "torch": torch.__version__, "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]},
                  "rows": rows}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
