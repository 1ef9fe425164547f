"""`sourcetrace bench`: features once through the store, every protocol x seed x level, results + figures."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sourcetrace.attribution.extractors import build_extractor
from sourcetrace.attribution.store import FeatureStore
from sourcetrace.attribution.unknown import UNKNOWN
from sourcetrace.benchmark.figures import plot_checkpoint_confusions, plot_f1_versus_k
from sourcetrace.benchmark.openset import protocol_open_set
from sourcetrace.benchmark.protocol import ClipTable, Protocol, ProtocolError, UnsatisfiableProtocol
from sourcetrace.benchmark.results import ResultError, file_slug, load_result, result_file_name, result_name
from sourcetrace.benchmark.runner import AttributorSpec, make_result, run_protocol
from sourcetrace.benchmark.summary import table1_summary
from sourcetrace.core.audio import MAX_CLIP_SECONDS
from sourcetrace.core.errors import UsageError
from sourcetrace.core.fileio import write_json_atomic, write_text_atomic
from sourcetrace.corpus import Corpus, corpus_identity
from sourcetrace.corpus.derive import read_derived


def _up_to_date(path: Path, identity: dict) -> dict | None:
    """The stored result when it was computed from exactly these inputs (protocol file, corpus
    audio, features, attributor, seeds, hold-out list); None when anything differs or is unreadable."""
    if not path.is_file():
        return None
    try:
        result = load_result(path)
    except ResultError:
        return None
    return result if result.get("identity") == identity else None


@dataclass(frozen=True)
class QuerySource:
    """Where one set of results takes its query vectors: the clean corpus (`transform` None), or a
    laundered copy of it (support and calibration stay clean)."""

    X: np.ndarray
    usable: np.ndarray
    laundering: dict | None = None  # the results' `laundering` block: transform, seed, the derived corpus's identity

    @property
    def transform(self) -> str | None:
        return None if self.laundering is None else self.laundering["transform"]


def laundered_copies(corpus: Corpus, audio_hashes: dict[str, str], folders) -> list[tuple[Corpus, dict]]:
    """Each --laundered folder as (derived corpus, its derivation record), proven a copy of `corpus`
    (corpus.derive.read_derived); two folders with one transform chain would write one results file."""
    copies: list[tuple[Corpus, dict]] = []
    seen: dict[str, str] = {}
    for folder in folders:
        derived, derivation = read_derived(corpus, audio_hashes, folder)
        if derivation["transform"] in seen:
            raise UsageError(f"--laundered {folder} and {seen[derivation['transform']]} both hold "
                             f"{derivation['transform']!r}: give one folder per transform chain")
        seen[derivation["transform"]] = folder
        copies.append((derived, derivation))
    return copies


def _features(store: FeatureStore, table: ClipTable, extractor_spec: str, label: str, progress: bool,
              log) -> tuple[np.ndarray, np.ndarray, bool]:
    """The store's vectors in `table`'s row order (zeros for rejected clips), which rows are usable,
    and whether any clip was rejected (listed in the store's rejects.csv)."""
    report = store.compute(progress=progress)
    log(f"[bench] {label}: {report.computed} computed, {report.reused} reused, {len(report.rejects)} rejected")
    if report.rejects:
        log(f"[bench] rejected clips are listed in {store.dir / 'rejects.csv'}; protocols needing them will fail")
    rejected = {clip_id for clip_id, _, _ in report.rejects}
    usable = np.array([c not in rejected for c in table.clip_id])
    X = np.zeros((len(table), 0), np.float32)
    if usable.any():
        loaded = store.load([c for c, u in zip(table.clip_id, usable) if u])
        if loaded.ndim != 2:
            raise UsageError(f"extractor {extractor_spec!r} gives several layers per clip; bench one layer (@L)")
        X = np.zeros((len(table), loaded.shape[1]), np.float32)
        X[usable] = loaded
    return X, usable, bool(report.rejects)


def run_bench(corpus_dir: str | Path, protocols: list[Protocol], systems: list[tuple[str, str]],
              out: str | Path, seeds=(0, 1, 2), holdout: list[str] | None = None, figures: bool = True,
              device: str = "auto", dtype: str = "fp32", models_dir: str | None = None, progress: bool = True,
              command: str | None = None, log=print, max_seconds: float | None = MAX_CLIP_SECONDS,
              laundered=()) -> int:
    """Run every protocol for every (extractor spec, attributor spec) system. An open-set protocol (a
    public set's official splits) also gets its `open_set` block (benchmark.openset.protocol_open_set),
    or `open_set_not_scored` saying why its lists cannot give one.

    `laundered`: folders of derived corpora (`corpus derive` of this one): for each, one more result
    per protocol and system, beside the clean one: the same splits and seeds, the attributor fitted on
    the clean support, asked about the laundered query (an open-set threshold set on the clean
    calibration). The clean results are the same files with or without them.

    Returns the number of failures (rejected clips count as one, each protocol that cannot run as one).
    """
    corpus = Corpus.read(corpus_dir)
    table = ClipTable.from_records(corpus.rows, source=str(corpus.root))
    out = Path(out)
    failures = 0
    command = command or shlex.join(sys.argv)
    all_results: list[dict] = []  # clean ones: the figures and summary.md are theirs
    computed: list[dict] = []
    copies: list[tuple[Corpus, dict]] | None = None
    for extractor_spec, attributor in systems:
        spec = AttributorSpec.parse(attributor)
        extractor = build_extractor(extractor_spec, device=device, dtype=dtype, models_dir=models_dir)
        store = FeatureStore(corpus, extractor, max_seconds=max_seconds)
        audio_hashes = store.audio_hashes()
        if copies is None:  # checked before any feature is computed
            copies = laundered_copies(corpus, audio_hashes, laundered)
        X, usable, rejected = _features(store, table, extractor_spec, extractor.name, progress, log)
        failures += rejected
        corpus_id = corpus_identity(corpus, audio_hashes)
        sources = [QuerySource(X, usable)]
        for derived, derivation in copies:
            derived_store = FeatureStore(derived, extractor, max_seconds=max_seconds)
            derived_id = corpus_identity(derived, derived_store.audio_hashes())
            X_derived, usable_derived, rejected = _features(derived_store, table, extractor_spec,
                                                            f"{extractor.name} on {derived.root} ({derivation['transform']})",
                                                            progress, log)
            failures += rejected
            sources.append(QuerySource(X_derived, usable & usable_derived,
                                       {"transform": derivation["transform"], "seed": derivation.get("seed"),
                                        "corpus": derived_id}))
        for protocol in protocols:
            identity = {"protocol_sha256": protocol.sha256, "corpus_sha256": corpus_id["sha256"],
                        "fingerprint_sha256": extractor.fingerprint_hash, "attributor": spec.id,
                        "seeds": list(seeds),
                        "holdout": sorted(holdout or []) if protocol.uses_holdout else [],
                        # results of an open-set protocol from before it was scored open set are stale
                        **({"scoring": "closed set on known systems + open set"} if protocol.open_set else {})}
            for source in sources:
                name = result_file_name(protocol.name, spec.id, extractor.name, source.transform)
                where = f"{protocol.name} ({extractor.name}" + (f", query {source.transform})" if source.transform else ")")
                source_identity = identity if source.laundering is None else {
                    **identity, "laundering": {"transform": source.transform,
                                               "corpus_sha256": source.laundering["corpus"]["sha256"]}}
                previous = _up_to_date(out / name, source_identity)
                if previous is not None:
                    if source.laundering is None:
                        all_results.append(previous)
                    log(f"[bench] {where}: up to date, nothing to do ({name})")
                    continue
                clean = source.laundering is None
                query_X = None if clean else source.X
                try:
                    run = run_protocol(protocol, table, X, spec, seeds=seeds, usable=source.usable, holdout=holdout,
                                       curves=figures and clean, device=device, query_X=query_X)
                    open_set, not_scored = (protocol_open_set(protocol, table, X, spec, seeds[0], usable=source.usable,
                                                              device=device, query_X=query_X)
                                            if protocol.open_set else (None, ""))
                except (UnsatisfiableProtocol, ProtocolError, ValueError) as exc:
                    failures += 1
                    log(f"[bench] {where}: FAILED: {exc}")
                    continue
                result = make_result(protocol, run, spec, extractor.name, extractor.fingerprint,
                                     extractor.fingerprint_hash, corpus_id, command, open_set=open_set)
                if not_scored:
                    result["open_set_not_scored"] = not_scored
                result["figures"], result["identity"] = {}, source_identity
                if clean:
                    all_results.append(result)
                    computed.append(result)
                else:
                    result["laundering"] = source.laundering
                    write_json_atomic(out / name, result)
                levels = ", ".join(f"{lv} {v['mean']:.3f} ± {v['std']:.3f}" for lv, v in run["levels"].items())
                scope = f" [macro F1 on {run['levels'][protocol.levels[0]]['scored_on']}]" if protocol.open_set else ""
                log(f"[bench] {where}: {levels}{scope}")
                for line in open_set_lines(open_set, not_scored):
                    log(f"[bench]   {line}")
    if figures and computed:
        _figures(all_results, table, out)
    for result in all_results if computed else []:  # figure links may change for reused results too
        write_json_atomic(out / result_name(result), result)
    if all_results:
        summary = table1_summary(all_results)
        write_text_atomic(out / "summary.md", summary)
        log("\n" + summary)
    log(f"[bench] results in {out}" + (f"; {failures} failure(s)" if failures else ""))
    return failures


def open_set_lines(block: dict | None, not_scored: str = "") -> list[str]:
    """What bench prints of a result's open-set block: one line per out-of-domain score."""
    if block is None:
        return [f"open set not scored: {not_scored}"] if not_scored else []
    lines = [f"open set ({block['level']} level, threshold by {block['threshold_rule']} on calibration, "
             f"{block['n_query']} query clips): closed-set macro F1 on known systems {block['closed_set']['macro_f1']:.3f}"]
    for name, entry in block["scores"].items():
        detection = entry["detection"]
        lines.append(f"  {name}: open-set macro F1 (unknown a class) {entry['open_set']['macro_f1']:.3f}, "
                     f"EER {detection['eer']:.3f}, AUROC {detection['auroc']:.3f}, FPR95 {detection['fpr95']:.3f}")
    return lines


def _figures(results: list[dict], table: ClipTable, out: Path) -> None:
    """Figure 1 from the first in-domain protocol with validation curves; figure 2 per extractor."""
    curves: dict[str, dict[str, float]] = {}
    architecture_of = {**dict(zip(table.checkpoint, table.architecture)), UNKNOWN: UNKNOWN}  # unseen systems' row
    with_curves = [r for r in results if any("validation_f1_vs_k" in v for v in r["levels"].values())]
    if with_curves:
        first = min(with_curves, key=lambda r: (r["protocol"].get("table1_row") or 10**6, r["protocol"]["name"]))["protocol"]["name"]
        for r in with_curves:
            if r["protocol"]["name"] == first:
                for level, entry in r["levels"].items():
                    if "validation_f1_vs_k" in entry:
                        curves[f"{r['features']['extractor']} · {level}"] = entry["validation_f1_vs_k"]
        path = plot_f1_versus_k(curves, out / "figures" / "f1_vs_k.png", f"Validation macro F1 versus k ({first})")
        for r in with_curves:
            if r["protocol"]["name"] == first:
                r["figures"]["f1_vs_k"] = str(path.relative_to(out))
    done = set()
    for r in sorted(results, key=lambda r: (r["protocol"].get("table1_row") or 10**6, r["protocol"]["name"])):
        extractor = r["features"]["extractor"]
        if "checkpoint" in r["levels"] and extractor not in done:
            done.add(extractor)
            conf = r["levels"]["checkpoint"]["confusion"]
            path = plot_checkpoint_confusions(conf["labels"], conf["matrix"], architecture_of,
                                              out / "figures" / f"confusion-{file_slug(extractor)}.png",
                                              f"Checkpoint confusion per architecture: {r['protocol']['name']}, {extractor}")
            r["figures"]["confusion"] = str(path.relative_to(out))
