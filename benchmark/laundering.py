"""Does attribution survive laundering? A protocol's splits with clean support and laundered query.

Each derived corpus (`sourcetrace corpus derive`) holds the clips of the clean one under the same
ids, passed through a transform. For every split of the protocol the attributor is fitted on the
clean support vectors and asked about the query clips' laundered vectors; the clean query gives the
reference score the same way, so the two are directly comparable (same splits, same seeds).
"""

from __future__ import annotations

import numpy as np

from sourcetrace.attribution.metrics import macro_f1
from sourcetrace.benchmark.protocol import ClipTable, Protocol, build_splits
from sourcetrace.benchmark.results import seed_summary
from sourcetrace.benchmark.runner import AttributorSpec, predict_levels
from sourcetrace.core.errors import UsageError

CLEAN = "clean"


def laundering_scores(protocol: Protocol, table: ClipTable, clean: np.ndarray, laundered: dict[str, np.ndarray],
                      spec: AttributorSpec, seeds=(0, 1, 2), device: str = "cpu") -> dict[str, dict[str, dict]]:
    """{query condition ("clean", then each transform): {level: {"mean", "std", "per_seed"}}}: macro-F1
    over the protocol's seeds with the clean support. Every matrix is aligned with `table`'s rows."""
    for name, X in laundered.items():
        if X.shape != clean.shape:
            raise UsageError(f"laundered vectors {name!r} have shape {X.shape}, the clean ones {clean.shape}: "
                             "the derived corpus must hold every clip of the clean one")
    splits = build_splits(protocol, table, list(seeds))
    out: dict[str, dict[str, dict]] = {}
    for condition, source in {CLEAN: clean, **laundered}.items():
        per_level: dict[str, list[dict]] = {level: [] for level in protocol.levels}
        X = clean if source is clean else clean.copy()  # one copy per condition: its query rows swapped per split
        for split in splits:
            X[split.query] = source[split.query]
            predictions = predict_levels(spec, X, table, split, protocol.levels, device=device)
            X[split.query] = clean[split.query]
            for level in protocol.levels:
                y_true = table.labels(level)[split.query]
                labels = sorted(set(y_true) | set(predictions[level]))
                per_level[level].append({"seed": split.seed, "variant": split.variant,
                                         "macro_f1": macro_f1(y_true, predictions[level], labels=labels)})
        out[condition] = {level: dict(zip(("mean", "std"), seed_summary(runs), strict=True), per_seed=runs)
                          for level, runs in per_level.items()}
    return out
