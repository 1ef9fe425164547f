"""The Table-1 summary of one bench run (summary.md): protocols as rows, one column per system and level."""

from __future__ import annotations

from sourcetrace.core.schema import LEVELS, STUDY_LEVELS

#: A level's name in a column header ("table1-01-baseline ckpt").
LEVEL_SHORT = {"checkpoint": "ckpt", "architecture": "arch", "implementation": "impl", "vocoder-family": "vocoder",
               "finetune-speaker": "speaker"}


# What an open-set protocol's level scores count (its results' `scored_on`, benchmark.runner): the
# closed-set numbers as the public sets publish them (known systems only), or, where the query holds
# no known system, every clip. The tables mark such protocols: they never mix silently with the others.
KNOWN_SYSTEMS = "query clips of known systems (closed set; open-set numbers in open_set)"
EVERY_QUERY_CLIP = "every query clip, unseen systems counted as errors (the query holds no known system)"
SCOPE_MARKS = {KNOWN_SYSTEMS: "†", EVERY_QUERY_CLIP: "‡"}
SCOPE_NOTES = {"†": "† closed-set macro F1 on the query clips of known systems only (as the public sets publish it); "
                    "the open-set numbers, with unknown as a class, are in the results' open_set block (Open set table).",
               "‡": "‡ every query clip, unseen systems counted as errors: the query holds no known system and no "
                    "open-set number can be scored (the results' open_set_not_scored says why)."}


def scope_marks(results: list[dict]) -> dict[str, str]:
    """Protocol name -> its marks (†, ‡: one per distinct `scored_on` of its levels) for the results
    whose levels say what they count."""
    marks = {}
    for r in results:
        said = {entry.get("scored_on") for entry in r["levels"].values()} - {None}
        if said:
            marks[r["protocol"]["name"]] = "".join(sorted(SCOPE_MARKS[s] for s in said if s in SCOPE_MARKS))
    return marks


def scope_footnotes(marks: dict[str, str]) -> list[str]:
    """The notes for the marks a table uses, in mark order."""
    return [note for mark, note in SCOPE_NOTES.items() if any(mark in m for m in marks.values())]


def score_cell(entry: dict | None) -> str:
    """A level's score as the Markdown tables show it: `0.519 ± 0.003`."""
    return "n/a" if entry is None else f"{entry['mean']:.3f} ± {entry['std']:.3f}"


def protocol_order(result: dict) -> tuple:
    """Table-1 rows first, in their order; other protocols after them, by name."""
    row = result["protocol"].get("table1_row")
    return (row if row is not None else 10**6, result["protocol"]["name"])


def system_key(result: dict) -> tuple[str, str]:
    """(attributor id, extractor): what one row of a leaderboard, or one column group of a summary, compares."""
    return result["attributor"]["id"], result["features"]["extractor"]


def _shown_levels(results: list[dict]) -> list[str]:
    """The study's two levels (always, as Table 1 has them), then every other level a result scores."""
    scored = {level for r in results for level in r["levels"]}
    return [level for level in LEVELS if level in STUDY_LEVELS or level in scored]


def table1_summary(results: list[dict]) -> str:
    """Protocols as rows (Table 1 layout), one ckpt/arch column pair per (attributor, extractor)."""
    systems = sorted({system_key(r) for r in results})
    protocols = sorted({(protocol_order(r), r["protocol"]["name"], r["protocol"]["title"]) for r in results})
    by_key = {(r["protocol"]["name"], system_key(r)): r for r in results}
    several = len({a for a, _ in systems}) > 1
    name = lambda a, ex: f"{ex} [{a}]" if several else ex  # noqa: E731
    levels = _shown_levels(results)
    header = ["#", "protocol"] + [f"{name(a, ex)} {LEVEL_SHORT[lv]}" for a, ex in systems for lv in levels]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    marks = scope_marks(results)
    for (order, _), name, _title in protocols:
        row = [str(order) if order < 10**6 else "", name + (f" {marks[name]}" if name in marks else "")]
        for system in systems:
            result = by_key.get((name, system))
            for level in levels:
                row.append(score_cell(result["levels"].get(level)) if result else "—")
        lines.append("| " + " | ".join(row) + " |")
    attributors = sorted({a for a, _ in systems})
    notes = "".join(f"\n{note}\n" for note in scope_footnotes(marks))
    return "\n".join(lines) + "\n" + notes + "\nattributor(s): " + "; ".join(attributors) + "\n"
