"""Run protocols x seeds x levels over one feature matrix and turn predictions into results."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from sourcetrace.attribution.base import Attributor
from sourcetrace.attribution.knn import KNNAttributor
from sourcetrace.attribution.metrics import accuracy, confusion, macro_f1, per_class_report
from sourcetrace.attribution.unknown import UNKNOWN
from sourcetrace.benchmark.protocol import ClipTable, Protocol, build_splits
from sourcetrace.benchmark.results import SCHEMA_VERSION, now_utc, package_versions, seed_summary
from sourcetrace.benchmark.summary import EVERY_QUERY_CLIP, KNOWN_SYSTEMS
from sourcetrace.core.errors import UsageError
from sourcetrace.core.plugins import ATTRIBUTORS

DEFAULT_SEEDS = (0, 1, 2)
MAX_K_CURVE = 150


@dataclass(frozen=True)
class AttributorSpec:
    """`name[:key=value,...]`, e.g. `knn:k=56,metric=cosine` or `probe:C=0.5`."""

    name: str
    params: tuple[tuple[str, object], ...]

    @classmethod
    def parse(cls, text: str) -> AttributorSpec:
        name, _, rest = text.partition(":")
        if name not in ATTRIBUTORS:
            raise UsageError(f"unknown attributor {name!r}; choose one of {', '.join(sorted(ATTRIBUTORS))}")
        signature = inspect.signature(ATTRIBUTORS[name].__init__).parameters
        params = {}
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if not eq or key not in signature or key == "self":
                allowed = ", ".join(k for k in signature if k != "self")
                raise UsageError(f"attributor {text!r}: bad parameter {item!r}; {name} takes {allowed}")
            default = signature[key].default
            if isinstance(default, bool):
                params[key] = value.lower() in ("1", "true", "yes", "on")
            elif isinstance(default, (int, float)):
                try:
                    params[key] = type(default)(value)
                except ValueError:
                    raise UsageError(f"attributor {text!r}: {key}={value!r} is not a number "
                                     f"({type(default).__name__})") from None
            else:
                params[key] = value
        return cls(name, tuple(sorted(params.items())))

    def build(self, **settings) -> Attributor:
        """`settings`: constructor arguments outside the identity (say, kNN's device)."""
        return ATTRIBUTORS[self.name](**{**dict(self.params), **settings})

    @property
    def id(self) -> str:
        """Full parameters (defaults included): the identity of the attributor on a leaderboard."""
        full = self.build().params()
        return self.name + ("(" + ",".join(f"{k}={v}" for k, v in sorted(full.items())) + ")" if full else "")


def build_on_device(spec: AttributorSpec, device: str) -> Attributor:
    """The spec's attributor, searching on `device` where it takes one (kNN)."""
    takes_device = "device" in inspect.signature(ATTRIBUTORS[spec.name].__init__).parameters
    return spec.build(**({"device": device} if takes_device else {}))


def predict_levels(spec: AttributorSpec, X: np.ndarray, table: ClipTable, split, levels,
                   device: str = "cpu", query_X: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Predictions per level. kNN searches neighbours once: they do not depend on the labels.
    `device`: where a neighbour search runs, for attributors that take one (kNN). `query_X`: the query
    clips' vectors from another matrix with X's rows (a laundered copy of the corpus); X's by default."""
    Xs, Xq = X[split.support], (X if query_X is None else query_X)[split.query]
    out = {}
    if ATTRIBUTORS[spec.name].votes_among_neighbours:
        searcher = build_on_device(spec, device).fit(Xs, table.labels("checkpoint")[split.support])
        dist, idx = searcher.kneighbors(Xq)
        for level in levels:
            voter = searcher.relabel(table.labels(level)[split.support])
            out[level] = voter.classes_[np.argmax(voter.scores_from_neighbors(dist, idx), axis=1)]
        return out
    for level in levels:
        out[level] = spec.build().fit(Xs, table.labels(level)[split.support]).predict(Xq)
    return out


def f1_versus_k(X: np.ndarray, table: ClipTable, split, level: str, metric: str, max_k: int = MAX_K_CURVE,
                device: str = "cpu") -> dict[int, float]:
    """Validation macro F1 of kNN for every k from 1 to max_k, from one neighbour search."""
    ys, yv = table.labels(level)[split.support], table.labels(level)[split.validation]
    max_k = min(max_k, len(split.support))
    knn = KNNAttributor(k=max_k, metric=metric, device=device).fit(X[split.support], ys)
    _, idx = knn.kneighbors(X[split.validation])
    onehot = np.eye(len(knn.classes_), dtype=np.int32)[knn.support_labels_[idx]]  # (n, k, classes)
    votes = np.cumsum(onehot, axis=1)
    curve = {}
    for k in range(1, max_k + 1):
        pred = knn.classes_[np.argmax(votes[:, k - 1], axis=1)]  # ties: first class, as KNNAttributor
        curve[k] = macro_f1(yv, pred, labels=sorted(set(yv) | set(pred)))  # the same classes as the table
    return curve


def run_protocol(protocol: Protocol, table: ClipTable, X: np.ndarray, spec: AttributorSpec,
                 seeds=DEFAULT_SEEDS, usable: np.ndarray | None = None, holdout: list[str] | None = None,
                 curves: bool = False, device: str = "cpu", query_X: np.ndarray | None = None) -> dict:
    """Every seed (and vocoder variant) of one protocol -> the `levels` part of a results file.
    `query_X`: the query's vectors from this matrix instead of X (support and validation stay X's).

    `device`: where kNN searches ("cpu", "cuda", "auto"). An open-set protocol (`Protocol.open_set`)
    scores its macro F1 (and accuracy) on the query clips of known systems, as the sets publish closed-set
    numbers, and says so in each level's `scored_on`; its confusion keeps every query clip."""
    splits = build_splits(protocol, table, list(seeds), usable=usable, holdout=holdout)
    per_level: dict[str, dict] = {lv: {"per_seed": [], "true": [], "pred": [], "labels": set()} for lv in protocol.levels}
    split_info = []
    for split in splits:
        preds = predict_levels(spec, X, table, split, protocol.levels, device=device, query_X=query_X)
        for level in protocol.levels:
            y_true = split.truth(table, level)  # `unknown` for unseen systems where the protocol says so
            # Classes in the query's truth or predicted: a true class never predicted scores 0, a
            # predicted class absent from the truth scores 0 (false alarms), a class in neither
            # (say, an architecture a hold-out query lacks) has no F1 to measure.
            labels = sorted(set(y_true) | set(preds[level]))
            acc = per_level[level]
            entry = {"seed": split.seed, "variant": split.variant,
                     "macro_f1": macro_f1(y_true, preds[level], labels=labels),
                     "n_support": int(len(split.support)), "n_query": int(len(split.query)), "n_classes": len(labels)}
            known = y_true != UNKNOWN
            if protocol.open_set and known.any():
                scored_true, scored_pred = y_true[known], preds[level][known]
                scored_labels = sorted(set(scored_true) | set(scored_pred))
                entry.update(macro_f1=macro_f1(scored_true, scored_pred, labels=scored_labels),
                             accuracy=accuracy(scored_true, scored_pred), n_scored=int(known.sum()),
                             n_classes=len(scored_labels))
            if protocol.open_set:
                acc["scored_on"] = KNOWN_SYSTEMS if known.any() else EVERY_QUERY_CLIP
            acc["per_seed"].append(entry)
            acc["true"].append(y_true)
            acc["pred"].append(preds[level])
            acc["labels"].update(labels)
        info: dict[str, Any] = {"seed": split.seed, "variant": split.variant, "support_checkpoints": split.support_checkpoints,
                "query_checkpoints": split.query_checkpoints, "n_support": int(len(split.support)),
                "n_validation": int(len(split.validation)), "n_query": int(len(split.query))}
        if len(split.calibration) or split.leaks_dropped or split.mark_unseen:  # a shipped split's own sides
            info.update(n_calibration=int(len(split.calibration)), leaks_dropped=split.leaks_dropped)
        split_info.append(info)
    levels = {}
    for level, acc in per_level.items():
        mean, std = seed_summary(acc["per_seed"])  # vocoder variants averaged within a seed first
        labels = sorted(acc["labels"])
        y_true, y_pred = np.concatenate(acc["true"]), np.concatenate(acc["pred"])
        names, matrix = confusion(y_true, y_pred, labels=labels)
        levels[level] = {
            "mean": mean, "std": std,
            "per_seed": acc["per_seed"],
            "confusion": {"labels": names, "matrix": matrix.tolist(), "pooled_over": "seeds and variants"},
            "per_class": per_class_report(y_true, y_pred, labels=labels),
            **({"scored_on": acc["scored_on"]} if protocol.open_set else {}),
        }
        if (curves and ATTRIBUTORS[spec.name].votes_among_neighbours and not protocol.disjoint_checkpoints
                and all(len(s.validation) for s in splits)):  # a set's dev list may hold unseen systems only
            metric = dict(spec.params).get("metric", "cosine")
            per_k = [f1_versus_k(X, table, s, level, metric, device=device) for s in splits]
            ks = sorted(set.intersection(*(set(c) for c in per_k)))
            levels[level]["validation_f1_vs_k"] = {str(k): float(np.mean([c[k] for c in per_k])) for k in ks}
    return {"levels": levels, "splits": split_info, "seeds": sorted({s.seed for s in splits})}


def make_result(protocol: Protocol, run: dict, spec: AttributorSpec, extractor_name: str, fingerprint: dict,
                fingerprint_sha256: str, corpus: dict, command: str, open_set: dict | None = None) -> dict:
    """`open_set`: the block `benchmark.openset.run_open_set` gives, for a protocol with calibration
    rows and unseen systems labelled unknown."""
    return {
        "schema_version": SCHEMA_VERSION,
        "protocol": {"name": protocol.name, "version": protocol.version, "sha256": protocol.sha256,
                     "title": protocol.title, "table1_row": protocol.table1_row, "definition": protocol.definition},
        "corpus": corpus,
        "features": {"extractor": extractor_name, "fingerprint": fingerprint, "fingerprint_sha256": fingerprint_sha256},
        "attributor": {"name": spec.name, "id": spec.id, "params": spec.build().params()},
        "seeds": run["seeds"],  # the seeds its splits ran (a shipped split runs once, whatever was asked)
        "levels": run["levels"],
        "splits": run["splits"],
        **({"open_set": open_set} if open_set is not None else {}),
        "provenance": {"command": command, "created": now_utc(), "versions": package_versions(),
                       "std": "population std (ddof=0) over seeds of the per-seed macro F1"},
    }
