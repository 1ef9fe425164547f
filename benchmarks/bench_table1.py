"""The full `table1` suite over cached features at the study's scale, timed.

56 checkpoints (4 architectures x pretrained, 9 scheduled, 3 zero-init, 1 fine-tune) x 600
prompts, plus the swapped-vocoder clips: 69,600 clips. Features are synthetic clustered vectors of
the two study extractors' widths (1920 for xls-r-2b, 1024 for w2v-bert-2.0): the runner's cost does
not depend on where vectors came from. Every protocol x 3 seeds x its levels, kNN with k = 56.
Reported against the naive way in the same run: one scikit-learn KNeighborsClassifier fit and
predict per (protocol, seed, variant, level). Usage:

    python benchmarks/bench_table1.py [--threads 2] [--naive]
"""

from __future__ import annotations

import argparse
import time



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--curves", action="store_true", help="also compute validation F1 for k = 1..150 (figure 1)")
    parser.add_argument("--naive", action="store_true", help="also time scikit-learn per level (slow)")
    args = parser.parse_args()

    import torch
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits

    from sourcetrace.benchmark.protocol import ClipTable, build_splits, load_suite
    from sourcetrace.benchmark.runner import AttributorSpec, run_protocol
    from sourcetrace.benchmark.synthetic import clustered_vectors, study_rows

    torch.set_num_threads(args.threads)
    rows = study_rows(args.prompts)
    table = ClipTable.from_rows(rows)
    suite = load_suite("table1")
    spec = AttributorSpec.parse("knn:k=56")
    print(f"{len(rows)} clips, {len(set(table.checkpoint))} checkpoints, {args.prompts} prompts, "
          f"{len(suite)} protocols x 3 seeds, {args.threads} threads")
    total = 0.0
    for name, dim in (("xls-r-2b-width", 1920), ("w2v-bert-2.0-width", 1024)):
        X = clustered_vectors(rows, dim=dim)
        with threadpool_limits(args.threads):
            t0 = time.perf_counter()
            means = {}
            for protocol in suite:
                run = run_protocol(protocol, table, X, spec, seeds=(0, 1, 2), curves=args.curves)
                means[protocol.table1_row] = {lv: v["mean"] for lv, v in run["levels"].items()}
            elapsed = time.perf_counter() - t0
            total += elapsed
            print(f"  {name} ({dim}-d): table1 suite in {elapsed:.1f} s")
            if args.naive:
                t0 = time.perf_counter()
                for protocol in suite:
                    for split in build_splits(protocol, table, [0, 1, 2]):
                        for level in protocol.levels:
                            y = (table.checkpoint if level == "checkpoint" else table.architecture).astype(str)
                            clf = KNeighborsClassifier(n_neighbors=56, metric="cosine", algorithm="brute")
                            clf.fit(X[split.support], y[split.support]).predict(X[split.query])
                print(f"  {name}: scikit-learn, one fit+predict per level: {time.perf_counter() - t0:.1f} s")
    print(f"total {total:.1f} s for both extractors")


if __name__ == "__main__":
    main()
