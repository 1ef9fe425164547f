"""Seconds per training step and real-time factor of synthesis, per architecture and config.

Data: a small LJSpeech-format set spoken by espeak-ng (sentences of 2-4 s). A training step is the
architecture's whole optimizer step (VITS: discriminator and generator). Synthesis RTF = wall
time / seconds of audio produced, for the acoustic model alone and with the architecture's own
vocoder kind in its full-size config, random weights (speed does not depend on the weights); VITS
is end to end, so both numbers are its own. `--nondeterministic` leaves oneDNN on (training is
reproducible bit for bit only without it; see generators/training.py). Usage:

    python benchmarks/bench_generators.py [--configs tiny,default] [--steps 3] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def measure_generator(arch: str, config: str, lj, work: Path, steps: int, batch_size: int, device: str,
                      deterministic: bool, vocoders: dict) -> dict:
    """Seconds per training step (after one warm-up step) and synthesis RTF of one architecture."""
    from sourcetrace.generators import build_generator
    from sourcetrace.generators.data import TrainingData
    from sourcetrace.generators.training import determinism
    from sourcetrace.vocoders import load_vocoder

    generator = build_generator(arch, config, seed=0).to(device)
    data = TrainingData(generator, lj.items("train"), work / "features")
    optimizers = generator.optimizers()
    generator.model.train()
    times = []
    with determinism(deterministic):
        for step in range(steps + 1):  # the first step warms up and is not counted
            t0 = time.perf_counter()
            generator.train_step(data.batch(step, batch_size, seed=0).to(generator.device), optimizers)
            if generator.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    vocoder = None
    if not generator.end_to_end:
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
            "seconds_per_step": sum(times[1:]) / steps, "rtf_acoustic": acoustic / audio,
            "rtf_with_vocoder": vocoded / audio, "threads": torch.get_num_threads(), "device": device,
            "deterministic": deterministic}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architectures", default="fastpitch,gradtts,matcha,vits")
    parser.add_argument("--configs", default="tiny,default")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nondeterministic", action="store_true", help="oneDNN on, as in an unconstrained run")
    parser.add_argument("--json")
    args = parser.parse_args()

    from sourcetrace.datasets.espeak_datasets import make_ljspeech_like

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-generators-"))
    lj = make_ljspeech_like(work / "lj", n_train=8, n_val=1, n_test=args.prompts)
    vocoders = {}
    rows = []
    print(f"{'architecture':<10} {'config':<8} {'params':>9} {'s/step':>8} {'RTF acoustic':>13} {'RTF +HiFi-GAN':>14}")
    for arch in args.architectures.split(","):
        for config in args.configs.split(","):
            row = measure_generator(arch, config, lj, work, args.steps, args.batch_size, args.device,
                                    not args.nondeterministic, vocoders)
            rows.append(row)
            print(f"{arch:<10} {config:<8} {row['params']:>9,} {row['seconds_per_step']:>8.3f} {row['rtf_acoustic']:>13.3f} "
                  f"{row['rtf_with_vocoder']:>14.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
