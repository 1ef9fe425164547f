"""The kNN and every open-set score at ASVspoof 5 size, on synthetic vectors (issue 23, item 5).

ASVspoof 5: about 180,000 support (train) vectors and 680,000 query (eval) vectors of 1,024 dims.
This script builds the full synthetic support, fits every score on it (the trained heads of energy
and max-logit on a subsample: see `--head-rows`), times each on a slice of queries against the full
support, and projects the full query set (every score is linear in the number of queries once the
support is fixed). It measures peak RSS after the kNN slices at two slice sizes (bounded memory:
the peak must not grow with the queries), checks on a size that fits that the chunked results equal
unchunked ones, measures this CPU's float32 matmul rate, and projects the kNN on an H100 from its
FLOPs and stated matmul rates. About 3 minutes on the 2-core development machine. Usage:

    python perf/bench_openset_scale.py [--json perf/results/cpu-2core-openset-scale.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import sys
import time
from datetime import UTC, datetime

import numpy as np

FULL_SUPPORT, FULL_QUERIES, DIM = 180_000, 680_000, 1024
#: NVIDIA H100 SXM5 datasheet, dense (without sparsity): FP32 67 TFLOP/s (CUDA cores), TF32 tensor
#: 494.7 TFLOP/s, BF16 tensor 989.4 TFLOP/s; HBM3 3.35 TB/s. The projection assumes half of peak
#: for the matmul (`--gpu-efficiency`) and one write + one read of the nearness matrix for the top-k.
H100 = {"fp32_tflops": 67.0, "tf32_tflops": 494.7, "bf16_tflops": 989.4, "hbm_tb_per_s": 3.35}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss: KiB on Linux


def synthetic(n: int, centres: np.ndarray, rng, spread: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, len(centres), n)
    X = rng.standard_normal((n, centres.shape[1]), dtype=np.float32)
    X *= spread
    X += centres[labels]
    return X, np.array([f"A{c:02d}" for c in range(len(centres))])[labels]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def matmul_gflops(torch, threads: int) -> float:
    a, b = torch.randn(2048, DIM), torch.randn(DIM, 8192)
    torch.matmul(a, b)
    best = min(timed(lambda: torch.matmul(a, b))[0] for _ in range(3))
    return 2 * 2048 * DIM * 8192 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--support", type=int, default=FULL_SUPPORT)
    parser.add_argument("--full-queries", type=int, default=FULL_QUERIES)
    parser.add_argument("--knn-slice", type=int, default=800, help="queries timed for the kNN scores")
    parser.add_argument("--slice", type=int, default=20_000, help="queries timed for the other scores")
    parser.add_argument("--classes", type=int, default=32, help="known systems (ASVspoof 5 train: A01-A08 ...)")
    parser.add_argument("--k", type=int, default=21, help="k of the kNN attributor (TADA: 21)")
    parser.add_argument("--head-rows", type=int, default=6000, help="support rows the probe head is fitted on")
    parser.add_argument("--check-support", type=int, default=20_000)
    parser.add_argument("--check-queries", type=int, default=2_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu-efficiency", type=float, default=0.5)
    parser.add_argument("--json")
    args = parser.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    from sourcetrace.attribution import knn as knn_module
    from sourcetrace.attribution.knn import KNNAttributor
    from sourcetrace.attribution.metrics import auroc
    from sourcetrace.attribution.ood_scores import BLOCK_ROWS, OOD_SCORES, build_ood_score

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (args.classes + 4, DIM)).astype(np.float32)
    report: dict = {"device": f"CPU, {args.threads} threads ({platform.processor() or platform.machine()})",
                    "command": "python " + shlex.join(sys.argv),
                    "date": datetime.now(UTC).date().isoformat(), "settings": vars(args),
                    "chunking": {"knn_chunk_bytes": knn_module.CHUNK_BYTES, "ood_block_rows": BLOCK_ROWS}}
    with threadpool_limits(args.threads):
        report["cpu_matmul_fp32_gflops"] = gflops = matmul_gflops(torch, args.threads)
        print(f"float32 matmul on this CPU: {gflops:.1f} GFLOP/s")
        t_data, (Xs, ys) = timed(lambda: synthetic(args.support, centres[: args.classes], rng))
        rss_support = peak_rss_gib()
        print(f"support {Xs.shape} float32 ({Xs.nbytes / 2**30:.2f} GiB) made in {t_data:.1f} s; peak RSS {rss_support:.2f} GiB")
        Xq, _ = synthetic(args.slice, centres[: args.classes], rng)
        is_unseen = np.arange(args.slice) % 4 == 0  # every 4th query from one of 4 systems the support lacks
        Xq[is_unseen] = synthetic(int(is_unseen.sum()), centres[args.classes:], rng)[0]

        scores: dict[str, dict] = {}
        # The kNN attributor (closed-set answers) and the knn-distance score: one neighbour search each.
        knn = KNNAttributor(k=args.k, metric="cosine")
        t_fit, _ = timed(lambda: knn.fit(Xs, ys))
        rss_by_slice = {}
        for n in (args.knn_slice // 2, args.knn_slice):
            t, _ = timed(lambda n=n: knn.predict(Xq[:n]))
            rss_by_slice[n] = peak_rss_gib()
        scores[f"knn attributor (k={args.k}, cosine)"] = {"fit_s": t_fit, "slice": args.knn_slice, "slice_s": t,
                                                          "chunk_rows": knn.chunk_rows()}
        knn = None  # its normalised support copy freed before the next score
        for name in OOD_SCORES:
            head = name in ("energy", "max-logit")
            fit_rows = min(args.head_rows, args.support) if head else args.support
            score = build_ood_score(name)
            t_fit, _ = timed(lambda score=score, fit_rows=fit_rows: score.fit(Xs[:fit_rows], ys[:fit_rows]))
            n = args.knn_slice if name == "knn-distance" else args.slice
            t, values = timed(lambda score=score, n=n: score.score(Xq[:n]))
            if name == "knn-distance":
                rss_by_slice[f"knn-distance {n}"] = peak_rss_gib()
            unknown = is_unseen[:n]
            scores[score.id] = {"fit_s": t_fit, "fit_rows": fit_rows, "slice": n, "slice_s": t,
                                "auroc_on_slice": auroc(values[~unknown], values[unknown])}
            del score
        for name, entry in scores.items():
            entry["per_query_ms"] = 1e3 * entry["slice_s"] / entry["slice"]
            entry["projected_full_query_s_this_cpu"] = entry["slice_s"] / entry["slice"] * args.full_queries
            print(f"  {name[:40]:<40} {entry['slice']:>6} queries in {entry['slice_s']:7.2f} s -> {args.full_queries} in "
                  f"{entry['projected_full_query_s_this_cpu'] / 60:7.1f} min (fit {entry['fit_s']:.1f} s)")
        report["scores"] = dict(zip(scores, scores.values()))
        report["peak_rss_gib"] = {"after_support": rss_support, "after_knn_slices": {str(k): v for k, v in rss_by_slice.items()},
                                  "end": peak_rss_gib()}
        del Xs, Xq

        # Chunked equals unchunked, on a size whose unchunked nearness matrix fits.
        Xs, ys = synthetic(args.check_support, centres[: args.classes], rng)
        Xq, _ = synthetic(args.check_queries, centres, rng)
        whole = KNNAttributor(k=args.k, metric="euclidean", chunk_size=args.check_queries)
        saved, knn_module.CHUNK_BYTES = knn_module.CHUNK_BYTES, 2**40
        try:
            d_whole, i_whole = whole.fit(Xs, ys).kneighbors(Xq)
            assert whole.chunk_rows() == args.check_queries
        finally:
            knn_module.CHUNK_BYTES = saved
        small = KNNAttributor(k=args.k, metric="euclidean", chunk_size=97).fit(Xs, ys)
        d_small, i_small = small.kneighbors(Xq)
        check = {"support": args.check_support, "queries": args.check_queries, "knn_chunk_rows": [args.check_queries, 97],
                 "knn_identical_neighbours": float(np.mean(i_small == i_whole)),
                 "knn_max_relative_distance_diff": float(np.abs(d_small - d_whole).max() / np.abs(d_whole).max())}
        for name in OOD_SCORES:
            fit_rows = min(args.head_rows, args.check_support) if name in ("energy", "max-logit") else args.check_support
            score = build_ood_score(name).fit(Xs[:fit_rows], ys[:fit_rows])
            score.block_rows = args.check_queries
            one = score.score(Xq)
            score.block_rows = 113
            check[f"{name}_max_relative_diff_blocks_113_vs_one"] = float(np.abs(score.score(Xq) - one).max()
                                                                          / max(np.abs(one).max(), 1e-30))
        report["chunked_equals_unchunked"] = check
        print("chunked vs unchunked:", json.dumps(check))

    flops = 2.0 * args.support * args.full_queries * DIM
    nearness_bytes = 4.0 * args.support * args.full_queries
    topk_s = 2 * nearness_bytes / (H100["hbm_tb_per_s"] * 1e12)
    report["projection"] = {
        "knn_matmul_flops": flops,
        "this_cpu_matmul_only_s": flops / (gflops * 1e9),
        "h100_assumption": {**H100, "efficiency": args.gpu_efficiency,
                            "topk": "one write and one read of the 4-byte nearness matrix at HBM bandwidth"},
        "h100_knn_s": {precision: flops / (H100[f"{precision}_tflops"] * 1e12 * args.gpu_efficiency) + topk_s
                       for precision in ("fp32", "tf32", "bf16")},
        "note": "sourcetrace's kNN multiplies in float32 (torch's default: no TF32 for matmul), so the fp32 line is "
                "what it does on an H100 today; the other scores are cheaper than the kNN by orders of magnitude.",
    }
    report["memory"] = {
        "support_gib": args.support * DIM * 4 / 2**30,
        "query_full_gib": args.full_queries * DIM * 4 / 2**30,
        "knn_nearness_chunk_gib": knn_module.CHUNK_BYTES / 2**30,
        "ood_block_gib": BLOCK_ROWS * DIM * 4 / 2**30,
        "statement": "peak beyond the inputs = one kNN nearness chunk (CHUNK_BYTES) + one block of queries (BLOCK_ROWS rows) "
                     "+ the outputs (k distances and indices, 12 bytes each, per query); the cosine kNN holds a normalised "
                     "copy of the support. The query matrix itself may be a np.load(mmap_mode='r') array: it is read block by block.",
    }
    print(json.dumps(report["projection"]["h100_knn_s"]), f"this CPU, matmul alone: {report['projection']['this_cpu_matmul_only_s'] / 3600:.2f} h")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
            fh.write("\n")


if __name__ == "__main__":
    main()
