"""Reports from results files: the Table-1 summary of one bench run, and the leaderboard site."""

from __future__ import annotations

import html
import inspect
import re
import tomllib
from collections import defaultdict
from importlib import resources
from pathlib import Path

from sourcetrace.benchmark.results import ResultError
from sourcetrace.core.fileio import copy_file_atomic, sha256_file, write_json_atomic, write_text_atomic
from sourcetrace.core.schema import LEVELS, STUDY_LEVELS

LEVEL_SHORT = {"checkpoint": "ckpt", "architecture": "arch", "implementation": "impl", "vocoder-family": "vocoder",
               "finetune-speaker": "speaker"}


def _shown_levels(results: list[dict]) -> list[str]:
    """The study's two levels (always, as Table 1 has them), then every other level a result scores."""
    scored = {level for r in results for level in r["levels"]}
    return [level for level in LEVELS if level in STUDY_LEVELS or level in scored]


def cell(entry: dict | None) -> str:
    return "n/a" if entry is None else f"{entry['mean']:.3f} ± {entry['std']:.3f}"


def _protocol_order(result: dict) -> tuple:
    row = result["protocol"].get("table1_row")
    return (row if row is not None else 10**6, result["protocol"]["name"])


def _system(result: dict) -> tuple[str, str]:
    return result["attributor"]["id"], result["features"]["extractor"]


def table1_summary(results: list[dict]) -> str:
    """Protocols as rows (Table 1 layout), one ckpt/arch column pair per (attributor, extractor)."""
    systems = sorted({_system(r) for r in results})
    protocols = sorted({(_protocol_order(r), r["protocol"]["name"], r["protocol"]["title"]) for r in results})
    by_key = {(r["protocol"]["name"], _system(r)): r for r in results}
    several = len({a for a, _ in systems}) > 1
    name = lambda a, ex: f"{ex} [{a}]" if several else ex  # noqa: E731
    levels = _shown_levels(results)
    header = ["#", "protocol"] + [f"{name(a, ex)} {LEVEL_SHORT[lv]}" for a, ex in systems for lv in levels]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (order, _), name, _title in protocols:
        row = [str(order) if order < 10**6 else "", name]
        for system in systems:
            result = by_key.get((name, system))
            for level in levels:
                row.append(cell(result["levels"].get(level)) if result else "—")
        lines.append("| " + " | ".join(row) + " |")
    attributors = sorted({a for a, _ in systems})
    return "\n".join(lines) + "\n\nattributor(s): " + "; ".join(attributors) + "\n"


# ---- leaderboard ------------------------------------------------------------------------------


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
        keys[(r["protocol"]["name"], _system(r))].append(source)
    dupes = [files for files in keys.values() if len(files) > 1]
    if dupes:
        raise ResultError(f"the same protocol and system appear twice: {', '.join(dupes[0])}")


def reference_rows() -> list[dict]:
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


def _columns(results: list[dict]) -> list[tuple[str, int | None, str, list[str]]]:
    """(protocol name, table1 row, title, levels) in Table-1 order."""
    cols = {}
    for r in sorted(results, key=_protocol_order):
        p = r["protocol"]
        entry = cols.setdefault(p["name"], (p["name"], p.get("table1_row"), p["title"], []))
        for level in LEVELS:
            if level in r["levels"] and level not in entry[3]:
                entry[3].append(level)
    return [(n, row, t, sorted(lv, key=LEVELS.index)) for n, row, t, lv in cols.values()]


IMAGE_MAGIC = {".png": (b"\x89PNG\r\n\x1a\n",), ".pdf": (b"%PDF-",), ".svg": (b"<?xml", b"<svg")}
_FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def figure_file(results_dir: Path, rel: str) -> Path | None:
    """The figure a results file links, if it is an image (PNG, SVG or PDF, by content) inside the
    results folder with a plain file name; None otherwise. A hostile results file cannot make the
    leaderboard copy /etc/hostname into the site."""
    src = results_dir / rel
    try:
        inside = results_dir.resolve() in src.resolve().parents
    except (RuntimeError, OSError):  # a symlink loop
        return None
    magic = IMAGE_MAGIC.get(src.suffix.lower())
    if not (inside and magic and _FIGURE_NAME.fullmatch(src.name) and src.is_file()):
        return None
    with open(src, "rb") as fh:
        head = fh.read(256).lstrip()
    return src if head.startswith(magic) else None


# A path as the machine that ran the benchmark spelled it (/home/alice/corpus, ~/x, C:\Users\x):
# a published page shows only its last part. Relative paths (work/mini/corpus) and closing
# tags (</b>, shown escaped) are left alone.
# A space continues the path while the next word still leads to a separator ("/home/alice smith/x").
_MACHINE_PATH = re.compile(r"(?<![\w.<-])(?:~[\w.-]*/|[A-Za-z]:[\\/]|/)[^\s'\"<>/\\]+"
                           r"(?:[^\s'\"<>]| (?=[^\s'\"<>/\\]+[/\\]))*")


def _last_part(path: str) -> str:
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1]


def public_copy(value):
    """`value` (a results object, or any JSON value) with every absolute path cut to `…/last-part`:
    a leaderboard site must not say where, or as whom, the benchmark ran."""
    if isinstance(value, str):
        return _MACHINE_PATH.sub(lambda m: "…/" + _last_part(m.group()), value)
    if isinstance(value, list):
        return [public_copy(v) for v in value]
    if isinstance(value, dict):
        return {public_copy(k): public_copy(v) for k, v in value.items()}
    return value


def short_attributor(attributor: dict, limit: int = 32) -> str:
    """`knn k=5` for knn(k=5,metric=cosine,standardize=False,weights=uniform): only the parameters
    that differ from the attributor's defaults (the full id goes on hover)."""
    from sourcetrace.attribution.registry import ATTRIBUTORS

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


def build_leaderboard(result_files: list[str | Path], out: str | Path, title: str = "sourcetrace leaderboard") -> Path:
    """index.html, leaderboard.md, leaderboard.csv, leaderboard.json (Hugging Face model-index),
    results/*.json and figures/: relative links only, absolute paths cut (public_copy)."""
    from sourcetrace.benchmark.results import load_result, number_problems, result_file_name

    loaded = [(str(f), load_result(f)) for f in result_files]
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
    columns = _columns(results)
    systems: dict[tuple[str, str], dict] = {}
    for (source, _), r in zip(loaded, results):
        system = systems.setdefault(_system(r), {"attributor": r["attributor"]["id"], "short": short_attributor(r["attributor"]),
                                                 "extractor": r["features"]["extractor"], "cells": {}, "links": {},
                                                 "seeds": {}, "figures": []})
        link = f"results/{result_file_name(r['protocol']['name'], r['attributor']['id'], r['features']['extractor'])}"
        write_json_atomic(out / link, r)
        system["links"][r["protocol"]["name"]], system["seeds"][r["protocol"]["name"]] = link, r["seeds"]
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
    corpus, rows = results[0]["corpus"], [*systems.values(), *refs]
    write_text_atomic(out / "leaderboard.md", _markdown(title, corpus, columns, rows))
    write_text_atomic(out / "leaderboard.csv", _csv(columns, rows))
    write_text_atomic(out / "index.html", _html(title, corpus, columns, rows))
    write_json_atomic(out / "leaderboard.json", _model_index(corpus, columns, list(systems.values())))
    return out / "index.html"


def _escape(text) -> str:
    """Every text field of both pages goes through here: markup is shown, never run."""
    return html.escape(str(text), quote=True)


def _md(text) -> str:
    """A Markdown table cell: escaped as in the HTML page, and no `|` or newline to break the row."""
    return _escape(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _corpus_line(corpus: dict) -> tuple[str, str, str]:
    return str(corpus.get("path", "")), corpus["sha256"][:16], str(corpus.get("n_clips", "?"))


def _markdown(title, corpus, columns, rows) -> str:
    head = ["attributor", "extractor"] + [f"{_md(name)} {LEVEL_SHORT[lv]}" for name, _, _, levels in columns for lv in levels]
    path, sha, clips = _corpus_line(corpus)
    lines = [f"# {_md(title)}", "", f"Corpus {_md(path)} (sha256 {sha}), {_md(clips)} clips. Macro F1, mean ± std over seeds.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        label = _md(row["attributor"]) + (" **[published reference, full-scale corpus]**" if "source" in row else "")
        cells = [cell(row["cells"].get((name, lv))) for name, _, _, levels in columns for lv in levels]
        lines.append("| " + " | ".join([label, _md(row["extractor"]), *cells]) + " |")
    return "\n".join(lines) + "\n"


def _csv(columns, rows) -> str:
    """The table as CSV: one row per system, mean and std per (protocol, level). Text cells that a
    spreadsheet would run as a formula (=, +, -, @) get a leading apostrophe."""
    import csv
    import io

    def text(value) -> str:
        value = str(value)
        return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["attributor", "extractor", "published_reference"]
                    + [f"{name} {level} {stat}" for name, _, _, levels in columns for level in levels for stat in ("mean", "std")])
    for row in rows:
        numbers = []
        for name, _, _, levels in columns:
            for level in levels:
                entry = row["cells"].get((name, level))
                numbers += ["", ""] if entry is None else [repr(float(entry["mean"])), repr(float(entry["std"]))]
        writer.writerow([text(row["attributor"]), text(row["extractor"]), "source" in row, *numbers])
    return buffer.getvalue()


_PAGE_SCRIPT = """
(function () {
  var table = document.getElementById('board');
  var body = table.tBodies[0];
  function sortBy(col, descending) {
    var rows = Array.prototype.slice.call(body.rows);
    var text = col < 2;
    rows.sort(function (a, b) {
      var p = a.cells[col].dataset.value, q = b.cells[col].dataset.value;
      if (text) return (descending ? -1 : 1) * p.localeCompare(q);
      var x = parseFloat(p), y = parseFloat(q);
      if (isNaN(x)) x = -Infinity;
      if (isNaN(y)) y = -Infinity;
      if (x === y) return a.cells[0].dataset.value.localeCompare(b.cells[0].dataset.value);
      return descending ? y - x : x - y;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.dataset.sortedBy = (descending ? '-' : '') + col;
  }
  function showLevel(level) {
    table.dataset.level = level;
    var radio = document.querySelector('input[name=level][value="' + level + '"]');
    if (radio) radio.checked = true;
  }
  Array.prototype.forEach.call(table.querySelectorAll('th[data-col]'), function (th) {
    th.addEventListener('click', function () {
      var col = parseInt(th.dataset.col, 10);
      sortBy(col, table.dataset.sortedBy !== '-' + col);
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll('input[name=level]'), function (radio) {
    radio.addEventListener('change', function () { showLevel(radio.value); });
  });
  var level = /level=([a-z-]+)/.exec(window.location.hash);
  if (level) {
    showLevel(level[1]);
  } else if (table.dataset.level !== 'both' && document.querySelector('input[name=level][value=both]')) {
    var fallback = table.dataset.level;  // both levels side by side, where they fit the window
    showLevel('both');
    if (document.documentElement.scrollWidth > document.documentElement.clientWidth) showLevel(fallback);
  }
  var m = /sort=(-?)(\\d+)/.exec(window.location.hash);
  if (m) sortBy(parseInt(m[2], 10), m[1] === '-');
})();
"""

# Score columns shown side by side before the page opens on one level (the architecture level,
# the one most protocols have); the page's script still shows every level where they fit the window.
MAX_COLUMNS_BOTH_LEVELS = 10


def _html(title, corpus, columns, rows) -> str:
    e = _escape
    by_level = [(level, [(name, row, ptitle) for name, row, ptitle, levels in columns if level in levels])
                for level in LEVELS]
    by_level = [(level, cols) for level, cols in by_level if cols]
    present = [level for level, _ in by_level]
    n_scores = sum(len(cols) for _, cols in by_level)
    one = "architecture" if "architecture" in present else present[0]
    shown = "both" if n_scores <= MAX_COLUMNS_BOTH_LEVELS or len(by_level) == 1 else one
    # "both" shows every level (the study has two); selecting one level hides the others' columns.
    named = [level for level in LEVELS if level in STUDY_LEVELS or level in present]
    hide = ", ".join(f"table[data-level={a}] .lv-{b}" for a in named for b in named if a != b)
    hash_levels = "|".join(named + ["both"])
    top = ['<th rowspan="2" data-col="0">attributor</th>', '<th rowspan="2" data-col="1">features</th>']
    sub, order, col = [], [], 2
    for level, cols in by_level:
        top.append(f'<th colspan="{len(cols)}" class="lv-{level}">{e(level)} level</th>')
        for name, row, ptitle in cols:
            number = f"{row:02d}" if row is not None else ""
            sub.append(f'<th data-col="{col}" class="num lv-{level}" title="{e(name)}: {e(ptitle)}">'
                       f'<b>{e(number)}</b> <span class="pname">{e(_short_protocol(name))}</span></th>')
            order.append((name, level))
            col += 1
    body = []
    for row in rows:
        is_ref = "source" in row
        label = (f'<td data-value="{e(row["short"])}" title="{e(row["attributor"])}"><span class="sys">{e(row["short"])}</span>'
                 + (' <span class="badge">published</span>' if is_ref else "")
                 + "".join(f' <a class="fig" href="{e(path)}">{e(name.replace("_", " "))}</a>'
                           for name, path in row.get("figures", []))
                 + "</td>")
        cells = [label, f'<td data-value="{e(row["extractor"])}" title="{e(row["extractor"])}">'
                        f'<span class="sys">{e(row["extractor"])}</span></td>']
        for name, level in order:
            entry = row["cells"].get((name, level))
            if entry is None:
                cells.append(f'<td class="num lv-{level}" data-value="">—</td>')
                continue
            mean, std = f"{entry['mean']:.3f}", f"±{entry['std']:.3f}"
            link = row.get("links", {}).get(name)
            shown_mean = f'<a href="{e(link)}" title="result file">{mean}</a>' if link else mean
            cells.append(f'<td class="num lv-{level}" data-value="{entry["mean"]:.6f}">{shown_mean}<small>{std}</small></td>')
        body.append(f'<tr class="{"reference" if is_ref else "system"}">' + "".join(cells) + "</tr>")
    choices = present + (["both"] if len(by_level) > 1 else [])
    every = "both" if len(by_level) == 2 else "all levels"
    selector = " ".join(f'<label><input type="radio" name="level" value="{c}"{" checked" if c == shown else ""}> '
                        f'{every if c == "both" else c + " level"}</label>' for c in choices)
    legend = "".join(f"<li>{'' if row is None else f'<b>{row:02d}</b> '}{e(name)}: {e(ptitle)}</li>"
                     for name, row, ptitle, _ in columns)
    note = ("" if not any("source" in r for r in rows) else
            f'<p class="note">Rows marked <span class="badge">published</span> are the numbers published in '
            f'{e(next(r["source"] for r in rows if "source" in r))}, on the full-scale corpus: not comparable with a miniature corpus.</p>')
    path, sha, clips = _corpus_line(corpus)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; max-width: 1300px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 4px; }}
th {{ background: #f3f3f3; font-weight: normal; }}
th[data-col] {{ cursor: pointer; vertical-align: bottom; }}
th.num {{ max-width: 5em; font-size: 10px; hyphens: auto; }}
th.num b {{ font-size: 13px; display: block; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
td.num small {{ display: block; color: #666; font-size: 10px; }}
td.num a {{ color: inherit; }}
.sys {{ display: inline-block; max-width: 16em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; vertical-align: bottom; }}
a.fig {{ font-size: 10px; }}
tr.reference {{ background: #fff7e0; font-style: italic; }}
.badge {{ font-size: 10px; background: #e0a800; color: #000; border-radius: 3px; padding: 0 4px; font-style: normal; }}
{hide} {{ display: none; }}
.legend {{ font-size: 12px; columns: 2; }}
</style></head>
<body>
<h1>{e(title)}</h1>
<p>Corpus <code>{e(path)}</code>, sha256 <code>{e(sha)}</code>, {e(clips)} clips.
Macro F1, mean (± std over seeds); each score links to its result file. Hover a name for its full parameters.
Click a column header to sort; <code>#sort=N</code>, <code>#sort=-N</code> and <code>#level={hash_levels}</code>
in the address apply on load.</p>
{note}
<p class="levels">Show: {selector}</p>
<table id="board" data-level="{shown}"><thead><tr>{''.join(top)}</tr><tr>{''.join(sub)}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<h2>Protocols</h2>
<ul class="legend">{legend}</ul>
<p>Also here: <a href="leaderboard.csv">leaderboard.csv</a> (the table), <a href="leaderboard.json">leaderboard.json</a>
(Hugging Face <code>model-index</code>), <a href="leaderboard.md">leaderboard.md</a>.</p>
<script>{_PAGE_SCRIPT}</script>
</body></html>
"""


def _model_index(corpus, columns, systems) -> dict:
    """Hugging Face model-index (the model card metadata leaderboards read): one entry per system,
    one metric per (protocol, level), std and seeds in the metric's args."""
    entries = []
    for system in systems:
        metrics = []
        for name, _, _, levels in columns:
            for level in levels:
                entry = system["cells"].get((name, level))
                if entry is not None:
                    metrics.append({"type": "f1", "name": f"macro F1, {name} ({level} level)", "value": entry["mean"],
                                    "config": f"{name}/{level}",
                                    "args": {"average": "macro", "protocol": name, "level": level, "std": entry["std"],
                                             "seeds": system["seeds"][name]}})
        entries.append({"name": f"{system['attributor']} + {system['extractor']}", "results": [{
            "task": {"type": "audio-classification", "name": "audio deepfake model attribution (source tracing)"},
            "dataset": {"type": "sourcetrace-corpus", "name": _last_part(str(corpus.get("path") or "corpus")),
                        "revision": corpus["sha256"]},
            "metrics": metrics}]})
    return {"model-index": entries}
