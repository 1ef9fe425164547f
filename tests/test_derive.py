"""`corpus derive`: laundered copies of a corpus. Each transform gives the sample rate, band, length or
SNR it names; the manifest keeps the labels and records the parent's audio hash and the chain; the
same seed repeats every byte, an interrupted run resumes, and bad input is refused or reported."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from sourcetrace.cli import main
from sourcetrace.core.errors import UsageError
from sourcetrace.core.fileio import sha256_file
from sourcetrace.corpus import Corpus, import_corpus
from sourcetrace.corpus.derive import TELEPHONE_BAND, derive_corpus, parse_transform


@pytest.fixture(scope="module")
def parent(speech_tree, tmp_path_factory):
    if shutil.which("ffmpeg") is None:
        if os.environ.get("SOURCETRACE_REQUIRE_FFMPEG"):
            pytest.fail("ffmpeg is not installed (tools/setup.sh installs it)")
        pytest.skip("ffmpeg is not installed: apt-get install ffmpeg")
    tree = tmp_path_factory.mktemp("tree")
    for voice in ("en-us", "en-gb-x-rp"):  # 2 voices x 2 variants x 3 prompts: 12 clips
        for ckpt in ("step-a", "step-b"):
            (tree / voice / ckpt).mkdir(parents=True)
            for i in range(3):
                shutil.copy(speech_tree / voice / ckpt / f"p{i}.wav", tree / voice / ckpt / f"p{i}.wav")
    return import_corpus(tree, tmp_path_factory.mktemp("parent") / "corpus")


def _pairs(parent: Corpus, derived: Corpus):
    by_id = {row.clip_id: row for row in parent.rows}
    for row in derived.rows:
        yield by_id[row.clip_id], row


def test_each_transform_gives_what_it_names_and_keeps_the_labels(parent, tmp_path):
    specs = {"codec:mp3:32k": None, "codec:opus:16k": None, "codec:g711": 8000, "telephone": 8000,
             "noise:snr=10": None, "resample:16000": 16000, "crop:0.5": None}
    for spec, rate in specs.items():
        assert derive_corpus(parent.root, [spec], tmp_path / spec, progress=False).failed == []
        derived = Corpus.read(tmp_path / spec)
        assert len(derived.rows) == len(parent.rows)
        for before, after in _pairs(parent, derived):
            assert (after.architecture, after.checkpoint, after.prompt_id) == (before.architecture, before.checkpoint,
                                                                              before.prompt_id)
            assert after.parent_sha256 == sha256_file(parent.audio_path(before)) and after.transform == spec
            assert after.sha256 == sha256_file(derived.audio_path(after))
            wave, got_rate = sf.read(derived.audio_path(after), dtype="float64")
            clean, clean_rate = sf.read(parent.audio_path(before), dtype="float64")
            assert got_rate == (rate or clean_rate), spec
            expected = round(len(clean) * got_rate / clean_rate) if spec != "crop:0.5" else round(0.5 * clean_rate)
            assert abs(len(wave) - expected) <= 1, spec  # mp3's encoder delay and padding removed
            if spec == "telephone":
                power = np.abs(np.fft.rfft(wave)) ** 2
                freqs = np.fft.rfftfreq(len(wave), 1 / got_rate)
                outside = power[(freqs < TELEPHONE_BAND[0] - 20) | (freqs > TELEPHONE_BAND[1] + 20)].sum()
                assert outside < 1e-4 * power.sum()  # only 16-bit rounding outside the band
            if spec == "noise:snr=10":
                noise = wave - clean
                snr = 10 * np.log10(np.mean(clean ** 2) / np.mean(noise ** 2))
                assert abs(snr - 10) < 0.5, snr
            if spec.startswith("codec:"):
                assert not np.array_equal(wave, clean[: len(wave)])  # lossy: not the parent's samples


def test_a_chain_repeats_byte_for_byte_and_an_interrupted_run_resumes(parent, tmp_path, capsys):
    chain = ["--transform", "codec:mp3:32k", "--transform", "noise:snr=20"]
    assert main(["corpus", "derive", str(parent.root), *chain, "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["corpus", "derive", str(parent.root), *chain, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    a, b = Corpus.read(tmp_path / "a"), Corpus.read(tmp_path / "b")
    assert [r.sha256 for r in a.rows] == [r.sha256 for r in b.rows]
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    assert {r.transform for r in a.rows} == {"codec:mp3:32k+noise:snr=20"}
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["audio", "derivation.json", "manifest.csv"]
    # as a kill leaves it: some clips written (atomically), no manifest yet
    (tmp_path / "a" / "manifest.csv").unlink()
    for row in a.rows[::2]:
        a.audio_path(row).unlink()
    capsys.readouterr()
    assert main(["corpus", "derive", str(parent.root), *chain, "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert f"{len(a.rows[::2])} clips made, {len(a.rows) - len(a.rows[::2])} already there" in capsys.readouterr().out
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    # another seed: other noise
    assert main(["corpus", "derive", str(parent.root), *chain, "--seed", "1", "--out", str(tmp_path / "c"),
                 "--quiet"]) == 0
    assert [r.sha256 for r in Corpus.read(tmp_path / "c").rows] != [r.sha256 for r in a.rows]


@pytest.mark.parametrize("spec, message", [
    ("codec:flac", "unknown codec 'flac'"), ("codec:mp3", "give the bitrate"), ("codec:g711:64k", "fixed bitrate"),
    ("noise:10", "noise:snr=DB"), ("noise:snr=loud", "not a number"), ("crop:-1", "must be above 0"),
    ("resample:fast", "not a number"), ("reverb", "unknown transform"),
])
def test_a_bad_spec_is_refused_before_any_work(spec, message):
    with pytest.raises(UsageError, match=message):
        parse_transform(spec)


def test_bad_input_is_refused_or_reported_and_the_good_clips_kept(parent, tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["corpus", "derive", str(parent.root), "--transform", "crop:9x", "--out", str(out)]) == 2
    assert "'crop:9x'" in capsys.readouterr().err and not out.exists()
    broken = tmp_path / "broken"
    shutil.copytree(parent.root, broken)
    victim = Corpus.read(broken).rows[0]
    (broken / victim.path).write_bytes(b"RIFF not audio")
    assert main(["corpus", "derive", str(broken), "--transform", "telephone", "--out", str(out), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert f"failed: {victim.clip_id}" in captured.err
    assert len(Corpus.read(out).rows) == len(parent.rows) - 1
    # the same folder for another derivation, or the parent's own folder, is refused
    assert main(["corpus", "derive", str(broken), "--transform", "crop:1", "--out", str(out)]) == 2
    assert "holds another derivation" in capsys.readouterr().err
    assert main(["corpus", "derive", str(broken), "--transform", "crop:1", "--out", str(broken / "x")]) == 2
    assert "inside the parent corpus" in capsys.readouterr().err


def test_laundering_scores_clean_support_against_each_laundered_query(parent, tmp_path):
    from test_laundering import laundering_scores  # the reference `bench --laundered` is tested against

    from sourcetrace.attribution.extractors import build_extractor
    from sourcetrace.attribution.store import FeatureStore
    from sourcetrace.benchmark.protocol import ClipTable, load_protocol
    from sourcetrace.benchmark.runner import AttributorSpec, run_protocol

    rate = Corpus.read(parent.root).rows[0].sample_rate
    specs = [f"resample:{rate}", "crop:0.3"]  # the first keeps every sample: a laundering that changes nothing
    for spec in specs:
        derive_corpus(parent.root, [spec], tmp_path / spec, progress=False)
    table = ClipTable.from_records(parent.rows)

    def vectors(root):
        store = FeatureStore(Corpus.read(root), build_extractor("lfcc", device="cpu"))
        store.compute(progress=False)
        return store.load(list(table.clip_id))

    clean = vectors(parent.root)
    laundered = {spec: vectors(tmp_path / spec) for spec in specs}
    assert np.array_equal(laundered[specs[0]], clean)
    protocol, attributor = load_protocol("indomain"), AttributorSpec.parse("knn:k=1")
    scores = laundering_scores(protocol, table, clean, laundered, attributor, seeds=(0, 1))
    reference = run_protocol(protocol, table, clean, attributor, seeds=(0, 1))["levels"]
    for level in protocol.levels:
        assert scores["clean"][level]["mean"] == reference[level]["mean"]  # the same splits and predictions
        assert scores[specs[0]][level] == scores["clean"][level]
    assert scores["crop:0.3"]["checkpoint"]["per_seed"] != scores["clean"]["checkpoint"]["per_seed"]
    with pytest.raises(UsageError, match="must hold every clip"):
        laundering_scores(protocol, table, clean, {"short": clean[:-1]}, attributor)
