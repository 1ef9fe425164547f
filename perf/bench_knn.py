"""kNN attribution: sourcetrace's KNNAttributor versus scikit-learn's KNeighborsClassifier, one run.

The study's scale: 24,000 support vectors of 1920 dimensions (40 classes x 600 prompts, xls-r-2b
width), 4,800 queries, k = 56. Reports fit+predict time of each, the ratio, and how many
predictions agree. Usage:

    python perf/bench_knn.py [--metric cosine] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def make_data(n_support, n_query, dim, n_classes, seed):
    """Overlapping Gaussian classes: many split votes, as between checkpoints of one architecture."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)).astype(np.float32)
    ys = rng.integers(0, n_classes, n_support)
    yq = rng.integers(0, n_classes, n_query)
    Xs = centres[ys] + 12.0 * rng.standard_normal((n_support, dim)).astype(np.float32)
    Xq = centres[yq] + 12.0 * rng.standard_normal((n_query, dim)).astype(np.float32)
    return Xs, np.array([f"class-{i:02d}" for i in ys]), Xq, np.array([f"class-{i:02d}" for i in yq])


def best_of(repeats, fn):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--support", type=int, default=24000)
    parser.add_argument("--queries", type=int, default=4800)
    parser.add_argument("--dim", type=int, default=1920)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--k", type=int, default=56)
    parser.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()

    import torch
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits

    from sourcetrace.attribution.knn import KNNAttributor

    torch.set_num_threads(args.threads)
    Xs, ys, Xq, yq = make_data(args.support, args.queries, args.dim, args.classes, seed=0)
    with threadpool_limits(args.threads):
        t_ref, ref = best_of(args.repeats, lambda: KNeighborsClassifier(
            n_neighbors=args.k, metric=args.metric, algorithm="brute", n_jobs=1).fit(Xs, ys).predict(Xq))
        t_ours, ours = best_of(args.repeats, lambda: KNNAttributor(k=args.k, metric=args.metric).fit(Xs, ys).predict(Xq))
    agree = float((ref == ours).mean())
    accuracy = float((ours == yq).mean())
    print(f"{args.support} x {args.dim} support, {args.queries} queries, k={args.k}, {args.metric}, "
          f"{args.threads} threads, best of {args.repeats}")
    print(f"  scikit-learn KNeighborsClassifier (brute): {t_ref:.2f} s")
    print(f"  sourcetrace KNNAttributor:                 {t_ours:.2f} s   ({t_ref / t_ours:.2f}x)")
    print(f"  identical predictions: {100 * agree:.2f} %   (accuracy {accuracy:.3f})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"sklearn_s": t_ref, "sourcetrace_s": t_ours, "speedup": t_ref / t_ours,
                       "agreement": agree, **vars(args)}, fh, indent=2)


if __name__ == "__main__":
    main()
