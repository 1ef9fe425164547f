"""The leaderboard's tables beside its page: leaderboard.md, leaderboard.csv and leaderboard.json
(Hugging Face model-index). `columns` are (protocol name, Table-1 row, title, levels) in Table-1
order; `rows` are the systems, then the published reference rows (those with a `source`); `marks`
(protocol name -> †/‡, summary.scope_marks) says which protocols' closed-set cells count known systems
only. A system's `open` holds the open-set blocks of its results by protocol: the CSV gives them one
column per (protocol, out-of-domain score, OPEN_SET_COLUMNS metric), the model-index one metric each."""

from __future__ import annotations

import csv
import html
import io

from sourcetrace.benchmark.scrub import last_part
from sourcetrace.benchmark.summary import KNOWN_SYSTEMS, LEVEL_SHORT, scope_footnotes, score_cell
from sourcetrace.core.schema import LEVELS


def escaped(text) -> str:
    """Every text field of the page and the Markdown table goes through here: markup is shown, never run."""
    return html.escape(str(text), quote=True)


def _md(text) -> str:
    """A Markdown table cell: escaped as in the HTML page, and no `|` or newline to break the row."""
    return escaped(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def corpus_line(corpus: dict) -> tuple[str, str, str]:
    """(path, short sha256, number of clips) of the results' corpus, as both pages name it."""
    return str(corpus.get("path", "")), corpus["sha256"][:16], str(corpus.get("n_clips", "?"))


def markdown_table(title, corpus, columns, rows, marks=None) -> str:
    marks = marks or {}
    head = ["attributor", "extractor"] + [f"{_md(name)} {LEVEL_SHORT[lv]}{' ' + marks[name] if name in marks else ''}"
                                          for name, _, _, levels in columns for lv in levels]
    path, sha, clips = corpus_line(corpus)
    lines = [f"# {_md(title)}", "", f"Corpus {_md(path)} (sha256 {sha}), {_md(clips)} clips. Macro F1, mean ± std over seeds.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        label = _md(row["attributor"]) + (" **[published reference, full-scale corpus]**" if "source" in row else "")
        cells = [score_cell(row["cells"].get((name, lv))) for name, _, _, levels in columns for lv in levels]
        lines.append("| " + " | ".join([label, _md(row["extractor"]), *cells]) + " |")
    lines += [line for note in scope_footnotes(marks) for line in ("", _md(note))]
    return "\n".join(lines) + "\n"


#: The open-set numbers a result carries per out-of-domain score: (part, key, column name), in table order.
OPEN_SET_COLUMNS = (("closed_set", "macro_f1", "closed F1"), ("open_set", "macro_f1", "open F1"),
                    ("detection", "eer", "EER"), ("detection", "auroc", "AUROC"), ("detection", "fpr95", "FPR95"))
OPEN_SET_NOTE = ("Threshold set on the calibration split (at its EER, or as the rule says) and applied unchanged to "
                 "the query. closed F1: macro F1 on the clips of known systems; open F1: macro F1 with \"unknown\" "
                 "as one more class; EER, AUROC, FPR95: known versus unseen systems (a higher out-of-domain score "
                 "means unknown).")


def open_set_values(block: dict) -> dict[str, list[float]]:
    """Out-of-domain score -> its OPEN_SET_COLUMNS numbers, from a result's open-set block."""
    return {name: [float((block["closed_set"] if part == "closed_set" else entry[part])[key])
                   for part, key, _ in OPEN_SET_COLUMNS]
            for name, entry in sorted(block["scores"].items())}


def open_set_rows(system: dict, result: dict, link: str) -> list[dict]:
    """One row per out-of-domain score of a result's open-set block, its numbers formatted."""
    block = result["open_set"]
    return [{"protocol": result["protocol"]["name"], "short": system["short"], "attributor": system["attributor"],
             "extractor": system["extractor"], "score": name, "rule": block.get("threshold_rule", "eer"), "link": link,
             "values": [f"{v:.3f}" for v in values]}
            for name, values in open_set_values(block).items()]


def open_set_columns(rows) -> list[tuple[str, str]]:
    """(protocol, out-of-domain score) of every open-set block the rows hold, sorted."""
    return sorted({(protocol, score) for row in rows for protocol, block in row.get("open", {}).items()
                   for score in block["scores"]})


def open_set_markdown(rows: list[dict], references: list[dict]) -> str:
    """The open-set section of leaderboard.md: the results' rows, then the published reference rows."""
    head = ["protocol", "attributor", "extractor", "out-of-domain score", "threshold"] + [c for _, _, c in OPEN_SET_COLUMNS]
    lines = ["", "## Open set", "", OPEN_SET_NOTE, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["protocol"], row["short"], row["extractor"], row["score"], row["rule"]]
        lines.append("| " + " | ".join([*map(_md, cells), *row["values"]]) + " |")
    if references:
        lines += ["", "### Published open-set results", "",
                  "Each number as its source publishes it (the metric said beside it); rows on another split are "
                  "not comparable.", "", "| sets | system | split | published | source |", "|---|---|---|---|---|"]
        for ref in references:
            published = "; ".join(f"{n['value']:g} {n['what']}" for n in ref["numbers"])
            lines.append("| " + " | ".join(_md(x) for x in (", ".join(ref["datasets"]), ref["system"], ref["split"],
                                                               published, f"{ref['source']} {ref['note']}")) + " |")
    return "\n".join(lines) + "\n"


LAUNDERING_NOTE = ("Support clean, query laundered: each transform's query clips come from a `corpus derive` copy of the "
                   "corpus, over the same splits and seeds as the clean result. Macro F1, mean ± std over seeds; "
                   "drop: clean minus laundered.")


def laundered_cells(systems) -> list[tuple[str, str, str]]:
    """(protocol, level, transform) of every laundered score the systems hold (their `laundered`), sorted."""
    return sorted({cell for system in systems for cell in system.get("laundered", {})})


def laundering_table(systems) -> tuple[list[str], list[list[str]]]:
    """The Laundering table: one row per (protocol, system, level) with laundered results, the clean
    score, then each transform's score and its drop (`n/a` where a result is missing); drop > 0: F1 fell."""
    cells = laundered_cells(systems)
    transforms = sorted({transform for _, _, transform in cells})
    head = ["protocol", "attributor", "extractor", "level", "clean"] + [f"{t} {part}" for t in transforms
                                                                        for part in ("F1", "drop")]
    levels = sorted({lv for _, lv, _ in cells}, key=LEVELS.index)
    body = []
    for protocol in sorted({p for p, _, _ in cells}):
        for system in systems:
            for level in levels:
                laundered = {t: system.get("laundered", {}).get((protocol, level, t)) for t in transforms}
                if not any(laundered.values()):
                    continue
                clean = system["cells"].get((protocol, level))
                row = [protocol, system["short"], system["extractor"], level, score_cell(clean)]
                for entry in laundered.values():
                    drop = "n/a" if entry is None or clean is None else f"{clean['mean'] - entry['mean']:+.3f}"
                    row += [score_cell(entry), drop]
                body.append(row)
    return head, body


def laundering_markdown(systems) -> str:
    """The Laundering section of leaderboard.md ("" without laundered results)."""
    head, body = laundering_table(systems)
    if not body:
        return ""
    lines = ["", "## Laundering", "", LAUNDERING_NOTE, "", "| " + " | ".join(map(_md, head)) + " |",
             "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(_md, row)) + " |" for row in body]
    return "\n".join(lines) + "\n"


def csv_table(columns, rows) -> str:
    """The table as CSV: one row per system, mean and std per (protocol, level) (`known-systems` or
    `every-clip` in the header where the results say what an open-set protocol's closed set counts),
    then the open-set numbers: one column per (protocol, out-of-domain score, metric), `open-set` in
    the header; then the laundered scores: mean and std per (protocol, level, transform), `laundered` in
    the header. Text cells that a spreadsheet would run as a formula (=, +, -, @) get a leading apostrophe."""
    scope = {cell: " known-systems" if entry["scored_on"] == KNOWN_SYSTEMS else " every-clip"
             for row in rows for cell, entry in row["cells"].items() if "scored_on" in entry}
    open_columns = open_set_columns(rows)
    laundered_columns = laundered_cells(rows)

    def text(value) -> str:
        value = str(value)
        return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["attributor", "extractor", "published_reference"]
                    + [f"{name} {level}{scope.get((name, level), '')} {stat}" for name, _, _, levels in columns for level in levels
                       for stat in ("mean", "std")]
                    + [f"{protocol} open-set {score} {column}" for protocol, score in open_columns
                       for _, _, column in OPEN_SET_COLUMNS]
                    + [f"{protocol} {level} laundered {transform} {stat}" for protocol, level, transform in laundered_columns
                       for stat in ("mean", "std")])
    for row in rows:
        numbers = []
        for name, _, _, levels in columns:
            for level in levels:
                entry = row["cells"].get((name, level))
                numbers += ["", ""] if entry is None else [repr(float(entry["mean"])), repr(float(entry["std"]))]
        for protocol, score in open_columns:
            block = row.get("open", {}).get(protocol)
            values = open_set_values(block).get(score) if block else None
            numbers += [""] * len(OPEN_SET_COLUMNS) if values is None else [repr(v) for v in values]
        for cell in laundered_columns:
            entry = row.get("laundered", {}).get(cell)
            numbers += ["", ""] if entry is None else [repr(float(entry["mean"])), repr(float(entry["std"]))]
        writer.writerow([text(row["attributor"]), text(row["extractor"]), "source" in row, *numbers])
    return buffer.getvalue()


#: The model-index metric type of each OPEN_SET_COLUMNS entry.
OPEN_SET_TYPES = {"closed F1": "f1", "open F1": "f1", "EER": "eer", "AUROC": "roc_auc", "FPR95": "fpr95"}


def model_index(corpus, columns, systems) -> dict:
    """Hugging Face model-index (the model card metadata leaderboards read): one entry per system,
    one metric per (protocol, level), std and seeds in the metric's args (and `scored_on` where the
    result says what its closed set counts); one metric per open-set number (protocol, out-of-domain
    score, OPEN_SET_COLUMNS metric), the threshold rule and level in its args; one macro F1 per laundered
    (protocol, level, transform), the transform, std and drop in its args."""
    entries = []
    for system in systems:
        metrics = []
        for name, _, _, levels in columns:
            for level in levels:
                entry = system["cells"].get((name, level))
                if entry is not None:
                    scored = {"scored_on": entry["scored_on"]} if "scored_on" in entry else {}
                    metrics.append({"type": "f1", "name": f"macro F1, {name} ({level} level"
                                    + (", closed set" if scored else "") + ")", "value": entry["mean"],
                                    "config": f"{name}/{level}",
                                    "args": {"average": "macro", "protocol": name, "level": level, "std": entry["std"],
                                             "seeds": system["seeds"][name], **scored}})
        for name, block in sorted(system.get("open", {}).items()):
            for score, values in open_set_values(block).items():
                for (_, _, column), value in zip(OPEN_SET_COLUMNS, values):
                    metrics.append({"type": OPEN_SET_TYPES[column], "name": f"open set {column}, {name} ({score})",
                                    "value": value, "config": f"{name}/open-set/{score}",
                                    "args": {"protocol": name, "ood_score": score, "metric": column,
                                             "level": block.get("level"), "threshold_rule": block.get("threshold_rule"),
                                             "dataset": block.get("dataset")}})
        for (name, level, transform), entry in sorted(system.get("laundered", {}).items()):
            clean = system["cells"].get((name, level))
            metrics.append({"type": "f1", "name": f"macro F1, {name} ({level} level), query laundered by {transform}",
                            "value": entry["mean"], "config": f"{name}/{level}/laundered/{transform}",
                            "args": {"average": "macro", "protocol": name, "level": level, "laundering": transform,
                                     "std": entry["std"], "drop": None if clean is None else clean["mean"] - entry["mean"],
                                     "seeds": system["laundered_seeds"][(name, transform)]}})
        entries.append({"name": f"{system['attributor']} + {system['extractor']}", "results": [{
            "task": {"type": "audio-classification", "name": "audio deepfake model attribution (source tracing)"},
            "dataset": {"type": "sourcetrace-corpus", "name": last_part(str(corpus.get("path") or "corpus")),
                        "revision": corpus["sha256"]},
            "metrics": metrics}]})
    return {"model-index": entries}
