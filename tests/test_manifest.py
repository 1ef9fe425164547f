"""The manifest's one table of columns: the typed record, its one spelling per type, and every
description of the columns (README contract, dataset card) derived from it."""

import re
from pathlib import Path

import pytest

from sourcetrace.corpus import ClipRecord, Corpus, ManifestError, import_corpus
from sourcetrace.corpus.columns import COLUMNS, REQUIRED_COLUMNS, columns_table, row_problems
from sourcetrace.corpus.release import pack_corpus

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = ",".join(REQUIRED_COLUMNS)


def test_the_readme_contract_is_the_table():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- manifest columns: [^\n]*-->\n(.*?)<!-- end of manifest columns -->", text, re.S)
    assert block, "README.md lost its generated table of manifest columns"
    assert block.group(1) == columns_table(), "README.md's column table differs: paste columns_table() into it"


def test_the_dataset_card_describes_each_column_as_the_table_does(speech_tree, tmp_path):
    corpus = import_corpus(speech_tree, tmp_path / "c")
    Corpus(corpus.root, corpus.rows, [*corpus.columns, "vocoder_swapped", "my_note"]).write()
    pack_corpus(tmp_path / "c", tmp_path / "rel", log=lambda _: None)
    card = (tmp_path / "rel" / "README.md").read_text(encoding="utf-8")
    described = dict(re.findall(r"^\| `([^`]+)` \| (.*) \|$", card, re.M))
    assert described.pop("audio") and described.pop("my_note") == "a column of this corpus"
    assert described == {name: COLUMNS[name]["meaning"] for name in described}
    assert set(described) == set(corpus.columns) | {"vocoder_swapped"}


def test_a_record_reads_back_to_the_bytes_it_was_read_from(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    text = (f"{HEADER},my_note,seed,duration_s,vocoder_swapped,sample_rate\n"
            "c1,a.wav,arch,arch/ckpt,p1,\"two\nlines\",kept as is,-3,0.500,1,22050\n")
    (tmp_path / "manifest.csv").write_text(text)
    corpus = Corpus.read(tmp_path)
    row = corpus.rows[0]
    assert (row.seed, str(row.duration_s), row.vocoder_swapped, row.sample_rate) == (-3, "0.500", True, 22050)
    assert row.extra == {"my_note": "kept as is"} and row.cell("my_note") == "kept as is" and row.cell("speaker") == ""
    (tmp_path / "manifest.csv").unlink()
    corpus.write()
    assert (tmp_path / "manifest.csv").read_text() == text


@pytest.mark.parametrize(("column", "value", "what"), [
    ("vocoder_swapped", "true", "boolean spelling: sourcetrace writes 1 for true and 0 for false"),
    ("vocoder_swapped", "yes", "boolean spelling"),
    ("seed", "007", "an integer written as sourcetrace writes it"),
    ("sample_rate", "22.05k", "an integer"),
    ("duration_s", "1e3", "a number of seconds"),
])
def test_a_value_not_in_its_one_spelling_is_refused_naming_file_line_and_column(tmp_path, column, value, what):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "b.wav").write_bytes(b"")
    (tmp_path / "manifest.csv").write_text(f"{HEADER},{column}\nc1,a.wav,x,x/y,p1,,\nc2,b.wav,x,x/y,p2,,{value}\n")
    with pytest.raises(ManifestError, match=r"manifest\.csv: 1 problem") as caught:
        Corpus.read(tmp_path, require_files=False)
    assert caught.value.problems[0].startswith(f"line 3: {column} must be")
    assert what in caught.value.problems[0] and repr(value) in caught.value.problems[0]


def test_an_imported_csv_is_checked_with_its_own_line_numbers(speech_tree, tmp_path):
    (tmp_path / "list.csv").write_text("path,architecture,checkpoint,vocoder_swapped\n"
                                       f"{speech_tree}/en-us/step-a/p0.wav,en-us,en-us/a,0\n"
                                       f"{speech_tree}/en-us/step-a/p1.wav,en-us,en-us/a,True\n")
    with pytest.raises(ManifestError, match=r"list\.csv: 1 problem.*\n  line 3: vocoder_swapped must be one of 1, 0"):
        import_corpus(tmp_path / "list.csv", tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_every_known_column_has_a_field_and_unknown_values_are_not_checked():
    assert list(COLUMNS)[:len(REQUIRED_COLUMNS)] == list(REQUIRED_COLUMNS)
    assert row_problems({**dict.fromkeys(REQUIRED_COLUMNS, "x"), "anything": "007", "seed": ""}) == []
    record = ClipRecord.from_row({**dict.fromkeys(REQUIRED_COLUMNS, "x"), "batch_size": "4", "role": "scheduled"})
    assert record.batch_size == 4 and record.role == "scheduled" and record.vocoder_swapped is None
