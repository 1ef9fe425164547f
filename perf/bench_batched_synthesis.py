"""Throughput of batched synthesis against one clip at a time, for the architectures that batch.

The same prompts (espeak-ng sentences, a few seconds each) go through `make_clips` (model +
the architecture's vocoder kind, random weights: speed does not depend on them) one at a time
and in chunks of --batch-size; clips/s of both and their ratio come from the same run. Usage:

    python perf/bench_batched_synthesis.py [--configs tiny,default] [--batch-size 8] [--prompts 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,default")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from sourcetrace.core.espeak import sentences
    from sourcetrace.core.plugins import GENERATORS
    from sourcetrace.generators import build_generator, generator_class
    from sourcetrace.generators.synthesis import make_clips
    from sourcetrace.vocoders import load_vocoder

    torch.set_num_threads(args.threads)
    texts = sentences(args.prompts, seed=11)
    work = Path(tempfile.mkdtemp(prefix="bench-batched-"))
    print(f"{'architecture':<10} {'config':<8} {'one at a time':>14} {'batch of ' + str(args.batch_size):>12} {'speed-up':>9}")
    for arch in sorted(a for a in GENERATORS if generator_class(a).batched_synthesis):
        for config in args.configs.split(","):
            generator = build_generator(arch, config, seed=0).to(args.device)
            vocoder = load_vocoder(generator.default_vocoder, config="v1" if config == "default" else "tiny",
                                   seed=0).to(args.device)
            paths = [work / f"{arch}-{config}-{i}.wav" for i in range(len(texts))]
            make_clips(generator, vocoder, texts[:2], 0, paths[:2])  # warm-up
            rates = []
            for size in (1, args.batch_size):
                t0 = time.perf_counter()
                for start in range(0, len(texts), size):
                    make_clips(generator, vocoder, texts[start:start + size], start, paths[start:start + size])
                rates.append(len(texts) / (time.perf_counter() - t0))
            print(f"{arch:<10} {config:<8} {rates[0]:>10.2f} c/s {rates[1]:>8.2f} c/s {rates[1] / rates[0]:>8.2f}x")


if __name__ == "__main__":
    main()
