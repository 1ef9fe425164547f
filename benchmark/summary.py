"""The Table-1 summary of one bench run (summary.md): protocols as rows, one column per system and level."""

from __future__ import annotations

from sourcetrace.core.schema import LEVELS, STUDY_LEVELS

#: A level's name in a column header ("table1-01-baseline ckpt").
LEVEL_SHORT = {"checkpoint": "ckpt", "architecture": "arch", "implementation": "impl", "vocoder-family": "vocoder",
               "finetune-speaker": "speaker"}


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
    for (order, _), name, _title in protocols:
        row = [str(order) if order < 10**6 else "", name]
        for system in systems:
            result = by_key.get((name, system))
            for level in levels:
                row.append(score_cell(result["levels"].get(level)) if result else "—")
        lines.append("| " + " | ".join(row) + " |")
    attributors = sorted({a for a, _ in systems})
    return "\n".join(lines) + "\n\nattributor(s): " + "; ".join(attributors) + "\n"
