"""The leaderboard site: results files in; index.html (templates/site.html.j2), the exports, the
published results and their figures out, with relative links only and machine paths cut."""

from __future__ import annotations

import inspect
import re
import tomllib
from collections import defaultdict
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup

from sourcetrace.benchmark.exports import (
    LAUNDERING_NOTE,
    OPEN_SET_COLUMNS,
    OPEN_SET_NOTE,
    corpus_line,
    csv_table,
    escaped,
    laundering_markdown,
    laundering_table,
    markdown_table,
    model_index,
    open_set_markdown,
    open_set_rows,
)
from sourcetrace.benchmark.figures import figure_file
from sourcetrace.benchmark.results import (
    ResultError,
    laundered_by,
    load_result,
    number_problems,
    result_name,
    result_paths,
)
from sourcetrace.benchmark.scrub import public_copy
from sourcetrace.benchmark.summary import protocol_order, scope_footnotes, scope_marks, system_key
from sourcetrace.core.fileio import copy_file_atomic, sha256_file, write_json_atomic, write_text_atomic
from sourcetrace.core.plugins import ATTRIBUTORS
from sourcetrace.core.schema import LEVELS, STUDY_LEVELS

DEFAULT_TITLE = "sourcetrace leaderboard"  # of a site whose command gives no --title
# Score columns shown side by side before the page opens on one level (the architecture level,
# the one most protocols have); the page's script still shows every level where they fit the window.
MAX_COLUMNS_BOTH_LEVELS = 10


def check_comparable(results: list[tuple[str, dict]]) -> None:
    """One corpus, and one definition per protocol name: otherwise numbers are not comparable."""
    corpora = defaultdict(list)
    for source, r in results:
        corpora[r["corpus"]["sha256"]].append(source)
    if len(corpora) > 1:
        groups = "; ".join(f"{h[:12]}: {', '.join(files[:3])}" for h, files in corpora.items())
        raise ResultError(f"results come from {len(corpora)} different corpora (corpus sha256 {groups}); "
                          "a leaderboard compares systems on one corpus: pass results of one corpus only")
    seen: dict[str, tuple[int, str, str]] = {}
    for source, r in results:
        p = r["protocol"]
        first = seen.setdefault(p["name"], (p["version"], p["sha256"], source))
        if (p["version"], p["sha256"]) != first[:2]:
            raise ResultError(f"{source}: protocol {p['name']!r} version {p['version']} (sha256 {p['sha256'][:12]}) "
                              f"differs from version {first[0]} (sha256 {first[1][:12]}) in {first[2]}; "
                              "rerun both with the same protocol definition")
    keys = defaultdict(list)
    for source, r in results:
        keys[(r["protocol"]["name"], system_key(r), laundered_by(r))].append(source)
    dupes = [files for files in keys.values() if len(files) > 1]
    if dupes:
        raise ResultError(f"the same protocol and system appear twice: {', '.join(dupes[0])}")


def reference_rows() -> list[dict]:
    """The study's published Table 1 (reference/study-table1.toml), one row per system."""
    data = tomllib.loads(resources.files(__package__).joinpath("reference", "study-table1.toml").read_text())
    rows = []
    for system in data["system"]:
        cells = {}
        for key, value in system.items():
            if "." in key:
                number, level = key.split(".")
                cells[(int(number), level)] = {"mean": value[0], "std": value[1]}
        rows.append({"attributor": system["attributor"], "extractor": system["extractor"], "cells": cells,
                     "source": data["source"]})
    return rows


def open_set_reference_rows(datasets) -> list[dict]:
    """Published open-set results (reference/open-set.toml) for any of `datasets`, in file order."""
    data = tomllib.loads(resources.files(__package__).joinpath("reference", "open-set.toml").read_text(encoding="utf-8"))
    return [row for row in data["row"] if set(row["datasets"]) & set(datasets)]


def _columns(results: list[dict]) -> list[tuple[str, int | None, str, list[str]]]:
    """(protocol name, table1 row, title, levels) in Table-1 order."""
    cols: dict[str, tuple[str, int | None, str, list[str]]] = {}
    for r in sorted(results, key=protocol_order):
        p = r["protocol"]
        entry = cols.setdefault(p["name"], (p["name"], p.get("table1_row"), p["title"], []))
        for level in LEVELS:
            if level in r["levels"] and level not in entry[3]:
                entry[3].append(level)
    return [(n, row, t, sorted(lv, key=LEVELS.index)) for n, row, t, lv in cols.values()]


def short_attributor(attributor: dict, limit: int = 32) -> str:
    """`knn k=5` for knn(k=5,metric=cosine,standardize=False,weights=uniform): only the parameters
    that differ from the attributor's defaults (the full id goes on hover)."""
    cls, params = ATTRIBUTORS.get(attributor["name"]), attributor.get("params")
    written = re.fullmatch(r"\w+\(([^()]*)\)", attributor["id"])
    if not isinstance(params, dict) and written:  # a results file without params: read them from the id
        params = dict(item.partition("=")[::2] for item in written.group(1).split(","))
    if cls is None or not isinstance(params, dict):
        text = attributor["id"]
    else:
        defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
        changed = [f"{k}={v}" for k, v in sorted(params.items()) if k not in defaults or str(defaults[k]) != str(v)]
        text = " ".join([attributor["name"], *changed])
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _short_protocol(name: str) -> str:
    """table1-04-ood-five-random -> ood five random (the row number is shown beside it)."""
    return re.sub(r"^table1-\d+-", "", name).replace("-", " ")


def build_leaderboard(result_files: list[str | Path], out: str | Path, title: str = DEFAULT_TITLE) -> Path:
    """index.html, leaderboard.md, leaderboard.csv, leaderboard.json (Hugging Face model-index),
    results/*.json and figures/: relative links only, absolute paths cut (public_copy). A folder
    given stands for its *.json files. Results under laundering (`bench --laundered`) go to their own
    Laundering table beside their clean result, never into the clean columns."""
    loaded = [(str(f), load_result(f)) for f in result_paths(result_files)]
    if not loaded:
        raise ResultError("no results files given")
    refused = [f"{source}: refused: {'; '.join(problems)}" for source, problems
               in ((source, number_problems(r)) for source, r in loaded) if problems]
    if refused:
        raise ResultError("\n".join(refused))
    check_comparable(loaded)
    out = Path(out)
    title = public_copy(title)
    results = [public_copy(r) for _, r in loaded]
    columns = _columns([r for r in results if laundered_by(r) is None])
    systems: dict[tuple[str, str], dict] = {}
    open_rows: list[dict] = []
    for (source, _), r in zip(loaded, results):
        system = systems.setdefault(system_key(r), {"attributor": r["attributor"]["id"], "short": short_attributor(r["attributor"]),
                                                    "extractor": r["features"]["extractor"], "cells": {}, "links": {},
                                                    "seeds": {}, "figures": [], "open": {}, "laundered": {},
                                                    "laundered_seeds": {}})
        link = f"results/{result_name(r)}"
        write_json_atomic(out / link, r)
        transform = laundered_by(r)
        if transform is not None:  # the Laundering table's; its open-set block stays in its results file
            system["laundered_seeds"][(r["protocol"]["name"], transform)] = r["seeds"]
            for level, entry in r["levels"].items():
                system["laundered"][(r["protocol"]["name"], level, transform)] = entry
            continue
        system["links"][r["protocol"]["name"]], system["seeds"][r["protocol"]["name"]] = link, r["seeds"]
        if "open_set" in r:
            open_rows += open_set_rows(system, r, link)
            system["open"][r["protocol"]["name"]] = r["open_set"]
        for level, entry in r["levels"].items():
            system["cells"][(r["protocol"]["name"], level)] = entry
        for name, rel in sorted(r.get("figures", {}).items()):
            src = figure_file(Path(source).parent, rel)
            if src is not None:
                # A content hash and a checked image name: dest stays in out, and one figure is copied once.
                figure = (name, f"figures/{sha256_file(src)[:12]}-{src.name}")
                copy_file_atomic(src, out / figure[1])
                if figure not in system["figures"]:
                    system["figures"].append(figure)
    shorts = [(s["short"], s["extractor"]) for s in systems.values()]
    for system in systems.values():  # two ids with one short name (a hand-edited id): show the ids
        if shorts.count((system["short"], system["extractor"])) > 1:
            system["short"] = short_attributor({"name": "", "id": system["attributor"]})
    refs = []
    if any(row is not None for _, row, _, _ in columns):
        for ref in reference_rows():
            cells = {(name, level): ref["cells"].get((row, level)) for name, row, _, levels in columns
                     if row is not None for level in levels}
            refs.append({**ref, "short": ref["attributor"], "cells": {k: v for k, v in cells.items() if v}})
    corpus = results[0]["corpus"]
    rows = [*(s for s in systems.values() if s["links"]), *refs]  # systems with laundered results only: not here
    open_refs = open_set_reference_rows({r["open_set"].get("dataset") for r in results if "open_set" in r})
    marks = scope_marks(results)
    write_text_atomic(out / "leaderboard.md", markdown_table(title, corpus, columns, rows, marks)
                      + (open_set_markdown(open_rows, open_refs) if open_rows else "") + laundering_markdown(list(systems.values())))
    write_text_atomic(out / "leaderboard.csv", csv_table(columns, rows))
    write_text_atomic(out / "index.html", _page(title, corpus, columns, rows, open_rows, open_refs, marks,
                                                laundering_table(list(systems.values()))))
    write_json_atomic(out / "leaderboard.json", model_index(corpus, columns, list(systems.values())))
    return out / "index.html"


def _escape_output(value) -> Markup:
    """Autoescaping as the page has always spelled it (html.escape: &quot;, &#x27;): every `{{ }}`
    of the template is escaped here, and nothing reaches it as Markup, so nothing is trusted."""
    return Markup(escaped(value))


_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("sourcetrace.benchmark", "templates"), autoescape=True,
                                finalize=_escape_output, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def _page(title, corpus, columns, rows, open_rows=(), open_refs=(), marks=None, laundering=([], [])) -> str:
    """index.html: the table (sortable, one level or all), its protocols' legend, links to the exports."""
    by_level = [(level, [(name, row, ptitle) for name, row, ptitle, levels in columns if level in levels])
                for level in LEVELS]
    by_level = [(level, cols) for level, cols in by_level if cols]
    present = [level for level, _ in by_level]
    n_scores = sum(len(cols) for _, cols in by_level)
    one = "architecture" if "architecture" in present else present[0]
    shown = "both" if n_scores <= MAX_COLUMNS_BOTH_LEVELS or len(by_level) == 1 else one
    # "both" shows every level (the study has two); selecting one level hides the others' columns.
    named = [level for level in LEVELS if level in STUDY_LEVELS or level in present]
    marks = marks or {}
    headers = [{"level": level, "name": name, "title": ptitle, "number": "" if row is None else f"{row:02d}",
                "label": _short_protocol(name) + (f" {marks[name]}" if name in marks else "")}
               for level, cols in by_level for name, row, ptitle in cols]
    every = "both" if len(by_level) == 2 else "all levels"
    choices = [(level, f"{level} level") for level in present] + ([("both", every)] if len(by_level) > 1 else [])
    references = [r["source"] for r in rows if "source" in r]
    path, sha, clips = corpus_line(corpus)
    return _TEMPLATES.get_template("site.html.j2").render(
        title=title, corpus_path=path, corpus_sha=sha, n_clips=clips, shown=shown, choices=choices,
        hidden_columns=", ".join(f"table[data-level={a}] .lv-{b}" for a in named for b in named if a != b),
        hash_levels="|".join(named + ["both"]), level_spans=[(level, len(cols)) for level, cols in by_level],
        headers=headers, rows=[_page_row(row, headers) for row in rows],
        reference_source=references[0] if references else None,
        legend=[("" if row is None else f"{row:02d}", name, ptitle) for name, row, ptitle, _ in columns],
        laundering_head=laundering[0], laundering_rows=laundering[1], laundering_note=LAUNDERING_NOTE,
        scope_notes=scope_footnotes(marks), open_rows=list(open_rows), open_columns=[c for _, _, c in OPEN_SET_COLUMNS], open_note=OPEN_SET_NOTE,
        open_refs=[{**ref, "published": "; ".join(f"{n['value']:g} {n['what']}" for n in ref["numbers"])}
                   for ref in open_refs])


def _page_row(row: dict, headers: list[dict]) -> dict:
    """One system's (or published reference's) row of the page: names, figure links, one score per header."""
    scores = []
    for header in headers:
        entry = row["cells"].get((header["name"], header["level"]))
        scores.append({"level": header["level"], "link": row.get("links", {}).get(header["name"]),
                       **({"mean": None} if entry is None else
                          {"mean": f"{entry['mean']:.3f}", "std": f"±{entry['std']:.3f}", "value": f"{entry['mean']:.6f}"})})
    return {"reference": "source" in row, "short": row["short"], "attributor": row["attributor"],
            "extractor": row["extractor"], "scores": scores,
            "figures": [(name.replace("_", " "), path) for name, path in row.get("figures", [])]}
