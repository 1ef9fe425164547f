import json

import numpy as np
import pytest
import soundfile as sf

from sourcetrace.cli import main
from sourcetrace.datasets.espeak_datasets import make_hifitts_like, make_ljspeech_like
from sourcetrace.datasets.hifitts import HiFiTTS
from sourcetrace.datasets.ljspeech import LJSpeech, standard_split
from sourcetrace.datasets.prompts import DatasetError, Prompt, read_prompts, write_prompts


def test_shipped_standard_split_is_the_studys():
    split = standard_split()
    counts = {name: sum(v == name for v in split.values()) for name in ("train", "val", "test")}
    assert counts == {"train": 12500, "val": 100, "test": 500} and len(split) == 13100


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    lj = make_ljspeech_like(root / "lj", n_train=6, n_val=2, n_test=3, seed=0)
    make_hifitts_like(root / "hifi", n_train=7)
    return root, lj


def test_espeak_ljspeech_like_dataset_reads_back(mini):
    root, _ = mini
    again = LJSpeech(root / "lj", split=standard_split(root / "lj" / "split.tsv"))
    assert [len(again.items(s)) for s in ("train", "val", "test")] == [6, 2, 3]
    utt = again.items("train")[0]
    wave, rate = sf.read(utt.audio)
    assert rate == 22050 and len(wave) > rate // 2 and utt.text.endswith(".")
    prompts = again.prompts()
    assert len(prompts) == 5 and [p.prompt_id for p in prompts] == sorted(p.prompt_id for p in prompts)


def test_espeak_hifitts_like_dataset_and_seeded_subset(mini):
    root, _ = mini
    data = HiFiTTS(root / "hifi")
    assert data.speakers() == ["9136"]
    items = data.items("9136")
    assert len(items) == 7 and sf.info(str(items[0].audio)).samplerate == 44100
    subset = data.study_subset(n=4, seed=0)
    assert subset == data.study_subset(n=4, seed=0) != data.study_subset(n=4, seed=1)
    with pytest.raises(DatasetError, match="7 clips, 500 needed"):
        data.study_subset()


def test_the_two_speakers_differ(mini):
    """The fine-tune must see a new speaker: the voices' mean pitch proxies differ clearly."""
    root, lj = mini
    def zero_crossing_rate(path):
        w, _ = sf.read(path)
        return np.mean(np.abs(np.diff(np.sign(w))) > 0)
    lj_zcr = np.mean([zero_crossing_rate(u.audio) for u in lj.items("train")])
    hifi_zcr = np.mean([zero_crossing_rate(u.audio) for u in HiFiTTS(root / "hifi").items("9136")])
    assert abs(lj_zcr - hifi_zcr) > 0.01


def edited_copy(src, dest, file_name, edit):
    """Copy a dataset folder and rewrite the lines of one of its files with `edit(lines)`."""
    import shutil

    shutil.copytree(src, dest)
    path = dest / file_name
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ljspeech_rejects_malformed_rows_with_file_and_line(mini, tmp_path):
    root, _ = mini

    def edit(lines):
        lines[1] = "LJ001-0002|only two fields"
        lines[2] = lines[2].replace(lines[2].split("|")[0], "LJ999-9999")

    meta = edited_copy(root / "lj", tmp_path / "lj", "metadata.csv", edit)
    with pytest.raises(DatasetError) as err:
        LJSpeech(tmp_path / "lj", split=standard_split(tmp_path / "lj" / "split.tsv"))
    assert str(meta) in str(err.value) and "line 2: expected" in str(err.value) and "line 3: missing audio" in str(err.value)
    with pytest.raises(DatasetError, match="10 id.s. not in the split"):
        LJSpeech(root / "lj", split={"LJ001-0001": "train"})


def test_hifitts_rejects_bad_manifest_lines(mini, tmp_path):
    root, _ = mini

    def edit(lines):
        lines[0] = "{not json"
        lines[1] = json.dumps({**json.loads(lines[1]), "audio_filepath": "../../etc/passwd"})

    edited_copy(root / "hifi", tmp_path / "hifi", "9136_manifest_other_train.json", edit)
    with pytest.raises(DatasetError) as err:
        HiFiTTS(tmp_path / "hifi").items("9136")
    assert "line 1: not a manifest entry" in str(err.value) and "line 2: audio_filepath" in str(err.value)


def test_prompt_files_round_trip_and_reject_bad_rows(tmp_path):
    prompts = [Prompt("LJ001-0001", "Hello there."), Prompt("LJ001-0002", "Second one.")]
    write_prompts(tmp_path / "p.tsv", prompts)
    assert read_prompts(tmp_path / "p.tsv") == prompts
    (tmp_path / "bad.tsv").write_text("prompt_id\ttext\na\tone\na\ttwo\nb\n")
    with pytest.raises(DatasetError, match=r"line 3: duplicate prompt_id 'a'.*line 4: expected 2"):
        read_prompts(tmp_path / "bad.tsv")
    with pytest.raises(DatasetError, match="line 1"):
        (tmp_path / "nohead.tsv").write_text("a\tb\n")
        read_prompts(tmp_path / "nohead.tsv")


def test_cli_make_mini_and_prompts(tmp_path, capsys):
    assert main(["datasets", "make-mini", str(tmp_path), "--train", "3", "--val", "1", "--test", "1",
                 "--speaker-clips", "2"]) == 0
    assert main(["datasets", "prompts", str(tmp_path / "LJSpeech-mini"), "--split",
                 str(tmp_path / "LJSpeech-mini" / "split.tsv"), "--out", str(tmp_path / "prompts.tsv")]) == 0
    assert len(read_prompts(tmp_path / "prompts.tsv")) == 2
    assert main(["datasets", "prompts", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.tsv")]) == 2
    assert "metadata.csv: not found" in capsys.readouterr().err
