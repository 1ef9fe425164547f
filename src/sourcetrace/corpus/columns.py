"""The manifest's columns, in one table: `ClipRecord`, one typed row of `manifest.csv`.

Each field is a column: its type (a manifest spelling of `sourcetrace.core.schema`), whether the
header must have it, what it means and which stage writes it. Every other description of the
columns (the README's contract, a release's dataset card, the importers' defaults, the row
validator) is derived from this table. A manifest may carry columns the table does not know: they
are kept, as text, in `ClipRecord.extra`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from decimal import Decimal

from sourcetrace.core.schema import (
    MANIFEST_BOOL,
    MANIFEST_INT,
    MANIFEST_SECONDS,
    MANIFEST_TEXT,
    Optional,
    Record,
    problems,
)

IMPORT, SYNTH, DERIVE = "corpus import", "synth", "corpus derive"  # the stages that write manifests


def _column(meaning: str, written_by: tuple[str, ...], spec=MANIFEST_TEXT, required: bool = False,
            empty_ok: bool = True):
    """A field of ClipRecord described as a column; a required one has no default."""
    default = MISSING if required else ("" if spec is MANIFEST_TEXT else None)
    return field(default=default, metadata={"spec": spec, "required": required, "meaning": meaning,
                                            "written_by": written_by, "empty_ok": empty_ok})


@dataclass(frozen=True)
class ClipRecord:
    """One clip of a corpus: a row of `manifest.csv`, each value of its column's type ("" or None
    where the manifest leaves it empty)."""

    clip_id: str = _column("unique id of the clip", (IMPORT, SYNTH), required=True, empty_ok=False)
    path: str = _column("the clip's path in the corpus (equals the audio's `file_name`)", (IMPORT, SYNTH),
                        required=True, empty_ok=False)
    architecture: str = _column("the generator's architecture (label)", (IMPORT, SYNTH), required=True,
                                empty_ok=False)
    checkpoint: str = _column("the generator's checkpoint (label)", (IMPORT, SYNTH), required=True, empty_ok=False)
    prompt_id: str = _column("id of the text prompt", (IMPORT, SYNTH), required=True, empty_ok=False)
    text: str = _column("the text spoken", (IMPORT, SYNTH), required=True)
    vocoder: str = _column("the vocoder that made the waveform", (IMPORT, SYNTH))
    vocoder_family: str = _column("the vocoder's family (hifigan, vocos, bigvgan, ...)", (IMPORT, SYNTH))
    speaker: str = _column("the speaker the generator was trained on", (IMPORT, SYNTH))
    seed: int | None = _column("the synthesis seed", (IMPORT, SYNTH), MANIFEST_INT)
    sample_rate: int | None = _column("sample rate of the audio, Hz", (IMPORT, SYNTH), MANIFEST_INT)
    duration_s: Decimal | None = _column("duration of the audio, seconds", (IMPORT, SYNTH), MANIFEST_SECONDS)
    sha256: str = _column("sha256 of the audio file", (IMPORT, SYNTH))
    implementation: str = _column("the generator's package and version", (IMPORT, SYNTH))
    split_group: str = _column("a group label the imported CSV gives, kept as it is (no protocol reads it)", (IMPORT,))
    reference: str = _column("the reference (a clip, or speaker:NAME) a zero-shot generator spoke the prompt in "
                             "the voice of", (IMPORT, SYNTH))
    system: str = _column("the system (attack) label as the dataset's protocol spells it (ASVspoof `A16`, ADD `3`); "
                          "`checkpoint` holds the label attribution scores (ASVspoof 2019's A16 is A04)", (IMPORT,))
    key: str = _column("`bonafide` or `spoof` as the dataset's protocol says (bonafide rows are the real class)", (IMPORT,))
    split: str = _column("the dataset's own split of the clip (`train`, `dev`, `eval`; empty: in no list)", (IMPORT,))
    codec: str = _column("the codec condition the dataset's protocol gives (ASVspoof 5: `-`, C01-C11)", (IMPORT,))
    language: str = _column("the language of the clip (ISO code as the dataset gives it)", (IMPORT,))
    gender: str = _column("the speaker's gender as the dataset's protocol gives it", (IMPORT,))
    role: str = _column("the checkpoint's role (pretrained, scheduled, ...)", (SYNTH,))
    checkpoint_sha256: str = _column("sha256 of the checkpoint's weights", (SYNTH,))
    vocoder_sha256: str = _column("identity of the vocoder's weights", (SYNTH,))
    vocoder_swapped: bool | None = _column("1 if vocoded by a vocoder other than its architecture's default, else 0",
                                           (SYNTH,), MANIFEST_BOOL)
    batch_size: int | None = _column("synthesis batch size", (SYNTH,), MANIFEST_INT)
    sourcetrace: str = _column("sourcetrace version that synthesised the clip", (SYNTH,))
    parent_sha256: str = _column("sha256 of the audio a derived (laundered) clip was made from", (DERIVE,))
    transform: str = _column("the transforms a derived clip went through, in order (codec:mp3:32k+noise:snr=10)",
                             (DERIVE,))
    extra: Mapping[str, str] = field(default_factory=dict, hash=False)  # columns the table does not know

    @classmethod
    def from_row(cls, row: Mapping[str, str]) -> ClipRecord:
        """The record of a manifest row whose values passed `row_problems`."""
        known = {name: _parse(COLUMNS[name]["spec"], row[name]) for name in COLUMNS if name in row}
        return cls(**known, extra={k: v for k, v in row.items() if k not in COLUMNS})

    def cell(self, column: str) -> str:
        """The value of `column` as the manifest spells it ("" where empty or absent)."""
        if column not in COLUMNS:
            return self.extra.get(column, "")
        return spell(getattr(self, column))


COLUMNS: dict[str, Mapping] = {f.name: f.metadata for f in fields(ClipRecord) if f.name != "extra"}
REQUIRED_COLUMNS = tuple(name for name, c in COLUMNS.items() if c["required"])
NON_EMPTY_COLUMNS = tuple(name for name, c in COLUMNS.items() if not c["empty_ok"])  # labels and keys
IMPORTED_COLUMNS = tuple(name for name, c in COLUMNS.items() if not c["required"] and IMPORT in c["written_by"])
AUDIO_FACTS = ("sha256", "sample_rate", "duration_s")  # what `corpus import` and `synth` measure of every clip
# Every required column is text, which any string spells: only the typed ones need a look (a
# 700,000-row manifest of a public set is read in seconds, not minutes).
assert all(COLUMNS[name]["spec"] is MANIFEST_TEXT for name in REQUIRED_COLUMNS)
TYPED_ROW = Record({name: Optional(c["spec"]) for name, c in COLUMNS.items() if c["spec"] is not MANIFEST_TEXT})


def row_problems(row: Mapping[str, str]) -> list[str]:
    """Values of known columns that are not their type's one spelling; an empty value is no value."""
    missing = [f"missing required key {name!r}" for name in REQUIRED_COLUMNS if name not in row]
    return missing + problems({k: v for k in TYPED_ROW.fields if (v := row.get(k, "")) != ""}, TYPED_ROW)


def spell(value) -> str:
    """A typed value as the manifest writes it: the one spelling readers accept."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _parse(spec, text: str):
    if text == "" and spec is not MANIFEST_TEXT:
        return None
    if spec is MANIFEST_INT:
        return int(text)
    if spec is MANIFEST_SECONDS:
        return Decimal(text)
    if spec is MANIFEST_BOOL:
        return text == "1"
    return text


def columns_of(rows: list[Mapping[str, str]], columns: tuple[str, ...] | list[str] = REQUIRED_COLUMNS) -> list[str]:
    """`columns` then every other column the rows name, in order of first appearance."""
    out = list(columns)
    for row in rows:
        out.extend(c for c in row if c not in out)
    return out


def columns_table() -> str:
    """The README contract's table of columns (tests/test_manifest.py checks the README holds it)."""
    lines = ["| column | type | required | meaning | written by |", "|---|---|---|---|---|"]
    kinds = {id(MANIFEST_TEXT): "text", id(MANIFEST_INT): "integer", id(MANIFEST_SECONDS): "decimal",
             id(MANIFEST_BOOL): "boolean (`1`/`0`)"}
    for name, c in COLUMNS.items():
        lines.append(f"| `{name}` | {kinds[id(c['spec'])]} | {'yes' if c['required'] else 'no'} | {c['meaning']} "
                     f"| {', '.join(f'`{s}`' for s in c['written_by'])} |")
    return "\n".join(lines) + "\n"
