"""The full `table1` suite over cached features at the study's scale, timed.

56 checkpoints (4 architectures x pretrained, 9 scheduled, 3 zero-init, 1 fine-tune) x 600
prompts, plus the swapped-vocoder clips: 69,600 clips. Features are synthetic clustered vectors of
the two study extractors' widths (1920 for xls-r-2b, 1024 for w2v-bert-2.0): the runner's cost does
not depend on where vectors came from. Every protocol x 3 seeds x its levels, kNN with k = 56, on
`--device` (the products and the top-k; `sourcetrace bench --device` does the same).

`--compare-device cpu` (with `--device cuda`) also predicts every split and level on that device,
timed, and counts the predictions that differ between the two; `--compare-topk` runs the suite a
second time with `torch.topk` picking the neighbours on the CPU (the search before the compiled
selection of `attribution/knn_select.py`), timed, and checks the results are identical; `--naive`
times one scikit-learn KNeighborsClassifier fit and predict per (protocol, seed, variant, level). The machine's load
(`os.getloadavg`) and the process's CPU seconds (all threads) are printed with the wall times: on
a shared machine, CPU seconds measure the work. Usage:

    python perf/bench_table1.py [--threads 2] [--device cpu|cuda] [--compare-device cpu] [--compare-topk] [--naive] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import time


def table1_timings(prompts: int = 600, device: str = "cpu", compare_device: str | None = None, naive: bool = False,
                   curves: bool = False, dims=(("xls-r-2b-width", 1920), ("w2v-bert-2.0-width", 1024)),
                   compare_topk: bool = False, log=print) -> dict:
    """Wall and CPU seconds of the suite per extractor width on `device`; with `compare_device`,
    the predictions of every split on both devices, timed, and how many differ; with
    `compare_topk`, the suite again with `torch.topk` picking the neighbours on the CPU (the
    search before the compiled selection), timed, and whether its results are identical."""
    import numpy as np
    from sklearn.neighbors import KNeighborsClassifier

    import sourcetrace.attribution.knn as knn_module
    from sourcetrace.benchmark.protocol import ClipTable, build_splits, load_suite
    from sourcetrace.benchmark.runner import AttributorSpec, predict_levels, run_protocol
    from sourcetrace.benchmark.synthetic import clustered_vectors, study_rows
    from sourcetrace.core.device import resolve_device

    rows = study_rows(prompts)
    table = ClipTable.from_records(rows)
    suite = load_suite("table1")
    spec = AttributorSpec.parse("knn:k=56")
    splits = [(p, s) for p in suite for s in build_splits(p, table, [0, 1, 2])]
    log(f"{len(rows)} clips, {len(set(table.checkpoint))} checkpoints, {prompts} prompts, "
        f"{len(suite)} protocols x 3 seeds, device {device}")
    out = {"clips": len(rows), "device": device, "compare_device": compare_device, "extractors": {}}
    if "cpu" in {resolve_device(d).type for d in (device, compare_device) if d}:
        t0 = time.perf_counter()
        select_nearest = knn_module.compiled_selection()
        out["cpu_selection"] = "compiled" if select_nearest is not None else "torch.topk (numba unavailable)"
        if select_nearest is not None:
            select_nearest(np.zeros((1, 2), np.float32), 1)
            out["cpu_selection_compile_s"] = time.perf_counter() - t0
            log(f"CPU neighbour selection compiled (or loaded from numba's disk cache) in "
                f"{out['cpu_selection_compile_s']:.1f} s, outside the timings")
    for name, dim in dims:
        X = clustered_vectors(rows, dim=dim)
        entry = out["extractors"][name] = {"dim": dim, "products": sum(len(s.support) * len(s.query) for _, s in splits)}
        t0, c0 = time.perf_counter(), time.process_time()
        runs = [run_protocol(protocol, table, X, spec, seeds=(0, 1, 2), curves=curves, device=device) for protocol in suite]
        entry["suite_s"], entry["suite_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        log(f"  {name} ({dim}-d): table1 suite in {entry['suite_s']:.1f} s ({entry['suite_cpu_s']:.1f} CPU s), "
            f"{entry['products'] / 1e9:.2f} G distance products; load {os.getloadavg()[0]:.2f}")
        if compare_topk and out.get("cpu_selection") == "compiled":  # else both would be torch.topk
            knn_module.select_on_cpu = False
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                topk_runs = [run_protocol(protocol, table, X, spec, seeds=(0, 1, 2), curves=curves, device=device)
                             for protocol in suite]
                entry["topk_suite_s"], entry["topk_suite_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
            finally:
                knn_module.select_on_cpu = True
            entry["topk_results_identical"] = topk_runs == runs
            log(f"  {name}: with torch.topk selecting: {entry['topk_suite_s']:.1f} s ({entry['topk_suite_cpu_s']:.1f} CPU s); "
                f"results identical: {entry['topk_results_identical']}; load {os.getloadavg()[0]:.2f}")
        if compare_device:
            predictions = []
            for where, label in ((device, "predict"), (compare_device, "compare_predict")):
                t0, c0 = time.perf_counter(), time.process_time()
                predictions.append([predict_levels(spec, X, table, s, p.levels, device=where) for p, s in splits])
                entry[f"{label}_s"], entry[f"{label}_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
            entry["predictions"] = sum(len(s.query) * len(p.levels) for p, s in splits)
            entry["predictions_differing"] = sum(int((a[lv] != b[lv]).sum()) for a, b in zip(*predictions) for lv in a)
            log(f"  {name}: predictions on {device} {entry['predict_s']:.1f} s, on {compare_device} "
                f"{entry['compare_predict_s']:.1f} s; {entry['predictions_differing']} of {entry['predictions']} differ")
        if naive:
            t0 = time.perf_counter()
            for protocol, split in splits:
                for level in protocol.levels:
                    y = (table.checkpoint if level == "checkpoint" else table.architecture).astype(str)
                    clf = KNeighborsClassifier(n_neighbors=56, metric="cosine", algorithm="brute")
                    clf.fit(X[split.support], y[split.support]).predict(X[split.query])
            entry["sklearn_s"] = time.perf_counter() - t0
            log(f"  {name}: scikit-learn, one fit+predict per level: {entry['sklearn_s']:.1f} s")
    out["total_s"] = sum(e["suite_s"] for e in out["extractors"].values())
    out["total_cpu_s"] = sum(e["suite_cpu_s"] for e in out["extractors"].values())
    log(f"total {out['total_s']:.1f} s ({out['total_cpu_s']:.1f} CPU s) for both extractors")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the kNN search runs: cpu, cuda, auto")
    parser.add_argument("--curves", action="store_true", help="also compute validation F1 for k = 1..150 (figure 1)")
    parser.add_argument("--compare-device", help="also predict every split on this device and count differences")
    parser.add_argument("--naive", action="store_true", help="also time scikit-learn per level (slow)")
    parser.add_argument("--compare-topk", action="store_true",
                        help="also run the suite with torch.topk selecting neighbours on the CPU, and compare")
    parser.add_argument("--json", help="write the timings here")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads; load average at start {os.getloadavg()}")
    with threadpool_limits(args.threads):
        result = table1_timings(args.prompts, args.device, args.compare_device, args.naive, args.curves,
                                compare_topk=args.compare_topk)
    result["threads"], result["load_average_end"] = args.threads, os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
