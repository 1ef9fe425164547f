"""Reports from results files: the Table-1 summary of one bench run, and the leaderboard site."""

from __future__ import annotations

import html
import re
import tomllib
from collections import defaultdict
from importlib import resources
from pathlib import Path

from sourcetrace.fileio import copy_file_atomic, write_json_atomic, write_text_atomic

from .results import ResultError

LEVEL_SHORT = {"checkpoint": "ckpt", "architecture": "arch"}


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
    header = ["#", "protocol"] + [f"{name(a, ex)} {LEVEL_SHORT[lv]}" for a, ex in systems for lv in ("checkpoint", "architecture")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (order, _), name, _title in protocols:
        row = [str(order) if order < 10**6 else "", name]
        for system in systems:
            result = by_key.get((name, system))
            for level in ("checkpoint", "architecture"):
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
        for level in ("checkpoint", "architecture"):
            if level in r["levels"] and level not in entry[3]:
                entry[3].append(level)
    return [(n, row, t, sorted(lv, key=("checkpoint", "architecture").index)) for n, row, t, lv in cols.values()]


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


def build_leaderboard(result_files: list[str | Path], out: str | Path, title: str = "sourcetrace leaderboard") -> Path:
    from .results import load_result

    loaded = [(str(f), load_result(f)) for f in result_files]
    if not loaded:
        raise ResultError("no results files given")
    check_comparable(loaded)
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    results = [r for _, r in loaded]
    columns = _columns(results)
    systems: dict[tuple[str, str], dict] = {}
    for source, r in loaded:
        system = systems.setdefault(_system(r), {"attributor": r["attributor"]["id"], "extractor": r["features"]["extractor"],
                                                 "cells": {}, "figures": []})
        for level, entry in r["levels"].items():
            system["cells"][(r["protocol"]["name"], level)] = entry
        for name, rel in sorted(r.get("figures", {}).items()):
            src = figure_file(Path(source).parent, rel)
            if src is not None:
                # fingerprint_sha256 is hex (schema.RESULT) and src a checked image name: dest stays in out.
                dest = out / "figures" / f"{r['features']['fingerprint_sha256'][:8]}-{src.name}"
                copy_file_atomic(src, dest)
                system["figures"].append((name, f"figures/{dest.name}"))
    refs = []
    if any(row is not None for _, row, _, _ in columns):
        for ref in reference_rows():
            cells = {(name, level): ref["cells"].get((row, level)) for name, row, _, levels in columns
                     if row is not None for level in levels}
            refs.append({**ref, "cells": {k: v for k, v in cells.items() if v}})
    corpus = results[0]["corpus"]
    write_text_atomic(out / "leaderboard.md", _markdown(title, corpus, columns, list(systems.values()), refs))
    write_text_atomic(out / "index.html", _html(title, corpus, columns, list(systems.values()), refs))
    write_json_atomic(out / "leaderboard.json", _model_index(corpus, columns, list(systems.values())))
    return out / "index.html"


def _escape(text) -> str:
    """Every text field of both pages goes through here: markup is shown, never run."""
    return html.escape(str(text), quote=True)


def _md(text) -> str:
    """A Markdown table cell: escaped as in the HTML page, and no `|` or newline to break the row."""
    return _escape(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _markdown(title, corpus, columns, systems, refs) -> str:
    head = ["attributor", "extractor"] + [f"{_md(name)} {LEVEL_SHORT[lv]}" for name, _, _, levels in columns for lv in levels]
    lines = [f"# {_md(title)}", "", f"Corpus {_md(corpus.get('path', ''))} (sha256 {corpus['sha256'][:16]}), "
             f"{_md(corpus.get('n_clips', '?'))} clips. Macro F1, mean ± std over seeds.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in [*systems, *refs]:
        label = _md(row["attributor"]) + (" **[published reference, full-scale corpus]**" if "source" in row else "")
        cells = [cell(row["cells"].get((name, lv))) for name, _, _, levels in columns for lv in levels]
        lines.append("| " + " | ".join([label, _md(row["extractor"]), *cells]) + " |")
    return "\n".join(lines) + "\n"


_SORT_SCRIPT = """
(function () {
  var table = document.getElementById('board');
  var body = table.tBodies[0];
  function sortBy(col, descending) {
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = parseFloat(a.cells[col].dataset.value), y = parseFloat(b.cells[col].dataset.value);
      if (isNaN(x)) x = -Infinity;
      if (isNaN(y)) y = -Infinity;
      if (x === y) return a.cells[0].textContent.localeCompare(b.cells[0].textContent);
      return descending ? y - x : x - y;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.dataset.sortedBy = (descending ? '-' : '') + col;
  }
  Array.prototype.forEach.call(table.querySelectorAll('th[data-col]'), function (th) {
    th.addEventListener('click', function () {
      var col = parseInt(th.dataset.col, 10);
      sortBy(col, table.dataset.sortedBy !== '-' + col);
    });
  });
  var m = /sort=(-?)(\\d+)/.exec(window.location.hash);
  if (m) sortBy(parseInt(m[2], 10), m[1] === '-');
})();
"""


def _html(title, corpus, columns, systems, refs) -> str:
    e = _escape
    top = ['<th rowspan="2" data-col="0">attributor</th>', '<th rowspan="2" data-col="1">extractor</th>']
    sub, col = [], 2
    for name, row, ptitle, levels in columns:
        label = f"{row:02d} · {name}" if row is not None else name
        top.append(f'<th colspan="{len(levels)}" title="{e(ptitle)}">{e(label)}</th>')
        for level in levels:
            sub.append(f'<th data-col="{col}" class="num">{e(LEVEL_SHORT[level])}</th>')
            col += 1
    body = []
    for row in [*systems, *refs]:
        is_ref = "source" in row
        cells = [f'<td data-value="{e(row["attributor"])}">{e(row["attributor"])}'
                 + (' <span class="badge">published reference</span>' if is_ref else "")
                 + "".join(f' <a href="{e(path)}">{e(name)}</a>' for name, path in row.get("figures", []))
                 + "</td>", f'<td>{e(row["extractor"])}</td>']
        for name, _, _, levels in columns:
            for level in levels:
                entry = row["cells"].get((name, level))
                value = "" if entry is None else f"{entry['mean']:.6f}"
                cells.append(f'<td class="num" data-value="{value}">{e(cell(entry))}</td>')
        body.append(f'<tr class="{"reference" if is_ref else "system"}">' + "".join(cells) + "</tr>")
    note = ("" if not refs else f'<p class="note">Rows marked <span class="badge">published reference</span> are the '
            f'numbers published in {e(refs[0]["source"])}, on the full-scale corpus: not comparable with a miniature corpus.</p>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; }}
th[data-col] {{ cursor: pointer; background: #f3f3f3; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.reference {{ background: #fff7e0; font-style: italic; }}
.badge {{ font-size: 11px; background: #e0a800; color: #000; border-radius: 3px; padding: 0 4px; font-style: normal; }}
</style></head>
<body>
<h1>{e(title)}</h1>
<p>Corpus <code>{e(corpus.get('path', ''))}</code>, sha256 <code>{e(corpus['sha256'][:16])}</code>, {e(corpus.get('n_clips', '?'))} clips.
Macro F1 (mean ± std over seeds). Click a column header to sort; <code>#sort=N</code> or <code>#sort=-N</code> in the address sorts on load.</p>
{note}
<table id="board"><thead><tr>{''.join(top)}</tr><tr>{''.join(sub)}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<script>{_SORT_SCRIPT}</script>
</body></html>
"""


def _model_index(corpus, columns, systems) -> dict:
    """In the spirit of Hugging Face's model-index / eval results: one entry per system."""
    entries = []
    for system in systems:
        metrics = []
        for name, _, ptitle, levels in columns:
            for level in levels:
                entry = system["cells"].get((name, level))
                if entry is not None:
                    metrics.append({"type": "macro_f1", "name": f"{name} ({level} level)", "value": entry["mean"],
                                    "std": entry["std"], "args": {"protocol": name, "level": level}})
        entries.append({"name": f"{system['attributor']} + {system['extractor']}", "results": [{
            "task": {"type": "audio-deepfake-model-attribution", "name": "source tracing"},
            "dataset": {"type": "sourcetrace-corpus", "name": Path(str(corpus.get("path", "corpus"))).name,
                        "revision": corpus["sha256"]},
            "metrics": metrics}]})
    return {"model-index": entries}
