"""Macro F1: sourcetrace's count (attribution/metrics.py) versus scikit-learn's f1_score, one run.

The benchmark's F1-versus-k curves call macro F1 once per k, protocol, seed and level: 6,600 times
in the miniature study's bench stage. Shapes of the study's validation split at checkpoint level:
40 classes, 60 prompts each. Reports microseconds per call of each, the ratio, and whether every
value is the same float (it must be: results files keep their bytes). Usage:

    python perf/bench_macro_f1.py [--classes 40] [--per-class 60] [--calls 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--json")
    args = parser.parse_args()

    from sklearn.metrics import f1_score

    from sourcetrace.attribution.metrics import macro_f1

    rng = np.random.default_rng(0)
    names = np.array([f"arch{i % 4}/step-{i:06d}" for i in range(args.classes)])
    y_true = np.repeat(names, args.per_class)
    predictions = [np.where(rng.random(len(y_true)) < 0.5, y_true, names[rng.integers(0, args.classes, len(y_true))])
                   for _ in range(args.calls)]
    labels = sorted(set(names))

    def timed(fn) -> tuple[float, list[float]]:
        start = time.perf_counter()
        values = [fn(y_pred) for y_pred in predictions]
        return (time.perf_counter() - start) / args.calls * 1e6, values

    reference_us, reference = timed(lambda p: f1_score(y_true, p, labels=labels, average="macro", zero_division=0))
    ours_us, ours = timed(lambda p: macro_f1(y_true, p, labels))
    report = {"classes": args.classes, "per_class": args.per_class, "calls": args.calls,
              "scikit_learn_us_per_call": round(reference_us, 1), "sourcetrace_us_per_call": round(ours_us, 1),
              "speedup": round(reference_us / ours_us, 1),
              "identical": all(float(a) == b for a, b in zip(reference, ours, strict=True))}
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    if not report["identical"]:
        raise SystemExit("macro F1 differs from scikit-learn's")


if __name__ == "__main__":
    main()
