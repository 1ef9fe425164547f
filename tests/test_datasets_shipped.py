"""The public source-tracing sets as distributed (issue 23): small replicas of each set's documented
layout and protocol files, with tiny synthesised audio, imported in place and with copies; rows,
labels and the official splits checked against counts made here from what the replica holds."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.metrics import f1_score, roc_auc_score, roc_curve
from test_openset import tada_eer

from sourcetrace.attribution.extractors import build_extractor
from sourcetrace.attribution.knn import KNNAttributor
from sourcetrace.attribution.ood_scores import build_ood_score
from sourcetrace.attribution.store import FeatureStore
from sourcetrace.benchmark.openset import DEFAULT_OOD_SCORES
from sourcetrace.benchmark.protocol import ClipTable, ProtocolError, build_splits, load_protocol, load_suite
from sourcetrace.benchmark.runner import AttributorSpec, make_result, predict_levels, run_protocol
from sourcetrace.benchmark.synthetic import clustered_vectors, study_rows
from sourcetrace.cli import main
from sourcetrace.core.errors import UsageError
from sourcetrace.core.fileio import sha256_file
from sourcetrace.corpus import Corpus, ManifestError, corpus_identity, dataset_import, verify_corpus
from sourcetrace.corpus.dataset_import import SKIPPED, dataset_layout, import_dataset, record_audio_facts
from sourcetrace.corpus.manifest import IN_PLACE

RATE = 16000


def _audio(path: Path, seed: int, seconds: float = 0.25) -> None:
    """A short clip: a seeded tone plus noise, distinct per clip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * seconds)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * (200 + 40 * (seed % 17)) * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, wave.astype(np.float32), RATE)


# ---- replicas: (root, expected rows {clip_id: (split, checkpoint, architecture, system)}) ----------------------------


def asvspoof2019(root: Path) -> dict[str, tuple[str, str, str]]:
    """LA/ as the zip unpacks: protocols and flac folders; 2 train speakers, 1 dev, 2 eval."""
    base, expected, seed = root / "LA", {}, 0
    plan = {"train": (["A01", "A02", "A03", "A04", "A05", "A06"] * 2 + ["-"] * 2, ["LA_0079", "LA_0080"], "T"),
            "dev": (["A01", "A02", "A03", "A04", "A05", "A06", "-"], ["LA_0069"], "D"),
            "eval": ([f"A{i:02d}" for i in range(7, 20)] + ["-"], ["LA_0001", "LA_0002"], "E")}
    names = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
    for split, (systems, speakers, letter) in plan.items():
        lines = []
        for i, system in enumerate(systems):
            clip = f"LA_{letter}_{1000000 + i}"
            key = "bonafide" if system == "-" else "spoof"
            lines.append(f"{speakers[i % len(speakers)]} {clip} - {system} {key}")
            _audio(base / f"ASVspoof2019_LA_{split}" / "flac" / f"{clip}.flac", seed := seed + 1)
            label = {"-": "bonafide", "A16": "A04", "A19": "A06"}.get(system, system)
            expected[clip] = (split, label, label, system)
        protocol = base / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{names[split]}.txt"
        protocol.parent.mkdir(parents=True, exist_ok=True)
        protocol.write_text("\n".join(lines) + "\n")
    return expected


def asvspoof5(root: Path) -> dict[str, tuple[str, str, str]]:
    expected, seed = {}, 100
    plan = (("train", "ASVspoof5.train.tsv", "flac_T", "T", [f"A{i:02d}" for i in range(1, 9)], ["T_4850", "T_1000"]),
            ("dev", "ASVspoof5.dev.track_1.tsv", "flac_D", "D", [f"A{i:02d}" for i in range(9, 17)], ["D_0062"]),
            ("eval", "ASVspoof5.eval.track_1.tsv", "flac_E_eval", "E", [f"A{i:02d}" for i in range(17, 33)], ["E_0001"]))
    for split, name, folder, letter, systems, speakers in plan:
        lines = []
        for i, system in enumerate([*systems, "bonafide"]):
            clip = f"{letter}_{i:010d}"
            key = "bonafide" if system == "bonafide" else "spoof"
            codec = f"C{(i % 11) + 1:02d}" if split == "eval" else "-"
            lines.append(f"{speakers[i % len(speakers)]} {clip} F {codec} - - {'AC1' if key == 'spoof' else 'bonafide'} "
                         f"{system} {key} -")
            _audio(root / folder / f"{clip}.flac", seed := seed + 1)
            expected[clip] = (split, system, system, system)
        (root / name).write_text("\n".join(lines) + "\n")
    return expected


MLAAD_MODELS = {  # folder -> (language, model_name, architecture)
    "fake/en/tts_models_en_ljspeech_vits": ("en", "tts_models/en/ljspeech/vits", "vits"),
    "fake/en/tts_models_en_ljspeech_tacotron2-DDC": ("en", "tts_models/en/ljspeech/tacotron2-DDC", "tacotron2"),
    "fake/de/tts_models_de_thorsten_vits": ("de", "tts_models/de/thorsten/vits", "vits"),
    "fake/de/griffin_lim": ("de", "griffin_lim", "griffin_lim"),
}
MLAAD_LISTS = {"train": ["fake/en/tts_models_en_ljspeech_vits", "fake/en/tts_models_en_ljspeech_tacotron2-DDC"],
               "dev": ["fake/en/tts_models_en_ljspeech_vits", "fake/de/tts_models_de_thorsten_vits"],
               "eval": ["fake/en/tts_models_en_ljspeech_tacotron2-DDC", "fake/de/griffin_lim"]}


def mlaad(root: Path) -> dict[str, tuple[str, str, str]]:
    """4 models x 6 clips; texts (original files) shared across models; lists take 2 clips per model."""
    expected, seed, meta_rows = {}, 200, {}
    for folder, (lang, model, arch) in MLAAD_MODELS.items():
        rows = ["path|original_file|language|is_original_language|duration|training_data|model_name|architecture|transcript"]
        for i in range(6):
            path = f"{folder}/clip_{i}.wav"
            _audio(root / path, seed := seed + 1)
            rows.append(f"./{path}|book_{i % 3}.wav|{lang}|True|0.25|ljspeech|{model}|{arch}|text {i % 3} | with a pipe")
            meta_rows[path] = model
            expected[path.removesuffix(".wav")] = ("", model, arch, "")
        (root / folder / "meta.csv").write_text("\n".join(rows) + "\n")
    offset = {"train": 0, "dev": 2, "eval": 4}
    for split, folders in MLAAD_LISTS.items():
        lines = ["path,model_name"]
        for folder in folders:
            for i in range(offset[split], offset[split] + 2):
                path = f"{folder}/clip_{i}.wav"
                lines.append(f"{path},{meta_rows[path]}")
                clip = path.removesuffix(".wav")
                expected[clip] = (split, *expected[clip][1:])
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    for split in ("dev", "eval"):  # the unseen-language, unseen-model condition: the German models absent from train
        unseen = [f"{f}/clip_{i}.wav" for f in MLAAD_LISTS[split] if f.startswith("fake/de")
                  for i in range(offset[split], offset[split] + 2)]
        (root / f"{split}___lang_not_seen___model_not_seen.csv").write_text(
            "path,model_name\n" + "".join(f"{p},{meta_rows[p]}\n" for p in unseen))
    return expected


def add2023(root: Path) -> dict[str, tuple[str, str, str]]:
    """Classes 0-6 in train and dev, 0-7 in eval (7: the class training never shows)."""
    expected, seed = {}, 300
    for split, letter, classes in (("train", "T", range(7)), ("dev", "D", range(7)), ("eval", "E", range(8))):
        lines = []
        for i, label in enumerate([*classes, *classes]):
            name = f"ADD2023_T3_{letter}_{i:08d}"
            _audio(root / f"ADD2023_Track3_{split}" / "wav" / f"{name}.wav", seed := seed + 1)
            lines.append(f"{name}.wav {label}")
            expected[name] = (split, str(label), str(label), str(label))
        (root / f"ADD2023_Track3_{split}" / "label.txt").write_text("\n".join(lines) + "\n")
    return expected


def wavefake(root: Path) -> dict[str, tuple[str, str, str]]:
    expected, seed = {}, 400
    for folder in ("ljspeech_melgan", "ljspeech_hifiGAN", "ljspeech_waveglow", "jsut_multi_band_melgan"):
        prompts = [f"LJ001-{i:04d}" for i in range(1, 11)] if folder.startswith("ljspeech") else ["BASIC5000_0001"]
        for prompt in prompts:
            _audio(root / folder / f"{prompt}_gen.wav", seed := seed + 1)
            expected[f"{folder}/{prompt}_gen"] = ("", folder, folder.partition("_")[2].lower(), "")
    return expected


REPLICAS = {"asvspoof2019-la": asvspoof2019, "asvspoof5": asvspoof5, "mlaad": mlaad, "add2023-t3": add2023,
            "wavefake": wavefake}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    """Each set's replica root and its expected rows, built once (read-only from here on)."""
    out = {}
    for name, build in REPLICAS.items():
        root = tmp_path_factory.mktemp(name)
        out[name] = (root, build(root))
    return out


@pytest.mark.parametrize("name", list(REPLICAS))
def test_each_set_imports_in_place_with_every_row_and_label(replicas, tmp_path, name):
    root, expected = replicas[name]
    assert dataset_layout(root) == name  # each layout is detected, and only as itself
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    report = import_dataset(root, tmp_path / "c", in_place=True)
    assert (report.format, report.clips, report.skipped) == (name, len(expected), [])
    corpus = Corpus.read(tmp_path / "c")
    assert corpus.audio_root == root.resolve() and not (tmp_path / "c" / "audio").exists()
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written into the dataset
    got = {r.clip_id: (r.split, r.checkpoint, r.architecture, r.system) for r in corpus.rows}
    assert got == expected
    assert all(corpus.audio_path(r).is_file() for r in corpus.rows)
    assert Counter(r.split for r in corpus.rows) == Counter(v[0] for v in expected.values())


def test_labels_at_several_levels_and_every_protocol_column_kept(replicas, tmp_path):
    root, _ = replicas["asvspoof5"]
    import_dataset(root, tmp_path / "a5", in_place=True)
    row = next(r for r in Corpus.read(tmp_path / "a5").rows if r.clip_id == "E_0000000003")
    assert (row.speaker, row.gender, row.codec, row.key, row.split, row.system) == ("E_0001", "F", "C04", "spoof", "eval", "A20")
    assert row.extra == {"codec_q": "-", "codec_seed": "-", "attack_tag": "AC1", "tmp": "-"}
    root, _ = replicas["mlaad"]
    import_dataset(root, tmp_path / "ml", in_place=True)
    rows = {r.clip_id: r for r in Corpus.read(tmp_path / "ml").rows}
    clip = rows["fake/de/tts_models_de_thorsten_vits/clip_3"]
    assert (clip.architecture, clip.checkpoint, clip.language, clip.prompt_id, clip.text, clip.split) == (
        "vits", "tts_models/de/thorsten/vits", "de", "book_0.wav", "text 0 | with a pipe", "dev")
    assert clip.cell("condition") == "lang_not_seen___model_not_seen" and clip.cell("training_data") == "ljspeech"
    root, _ = replicas["wavefake"]
    import_dataset(root, tmp_path / "wf", in_place=True)
    wf = {r.clip_id: r for r in Corpus.read(tmp_path / "wf").rows}
    assert {(r.checkpoint, r.architecture, r.vocoder, r.speaker) for r in wf.values()} == {
        ("ljspeech_melgan", "melgan", "melgan", "ljspeech"), ("ljspeech_hifiGAN", "hifigan", "hifigan", "ljspeech"),
        ("ljspeech_waveglow", "waveglow", "waveglow", "ljspeech"),
        ("jsut_multi_band_melgan", "multi_band_melgan", "multi_band_melgan", "jsut")}


def _splits(corpus_dir: Path, protocol: str):
    corpus = Corpus.read(corpus_dir)
    table = ClipTable.from_records(corpus.rows, source=str(corpus_dir))
    [split] = build_splits(load_protocol(protocol), table, [0])
    return table, split


def test_official_splits_known_and_unseen_systems(replicas, tmp_path):
    root, expected = replicas["asvspoof2019-la"]
    import_dataset(root, tmp_path / "a19", in_place=True)
    table, split = _splits(tmp_path / "a19", "asvspoof2019-la-official")
    spoof = {split_name: sorted(c for c, (s, label, _, _) in expected.items() if s == split_name and label != "bonafide")
             for split_name in ("train", "dev", "eval")}
    assert sorted(table.clip_id[split.support]) == spoof["train"]
    assert sorted(table.clip_id[split.calibration]) == spoof["dev"]
    assert sorted(table.clip_id[split.query]) == spoof["eval"]
    truth = dict(zip(table.clip_id[split.query], split.truth(table, "checkpoint")))
    by_system = {expected[c][3]: label for c, label in truth.items()}
    assert by_system["A16"] == "A04" and by_system["A19"] == "A06"  # the set's known eval systems
    assert {s for s, label in by_system.items() if label == "unknown"} == {f"A{i:02d}" for i in range(7, 19)} - {"A16"}
    assert set(split.truth(table, "checkpoint", "calibration")) == {f"A{i:02d}" for i in range(1, 7)}
    # speakers of the official splits are disjoint already: the leak-free variant drops nothing
    _, leakfree = _splits(tmp_path / "a19", "asvspoof2019-la-leakfree")
    assert leakfree.leaks_dropped == {"speaker": 0} and len(leakfree.query) == len(split.query)

    root, expected = replicas["asvspoof5"]
    import_dataset(root, tmp_path / "a5", in_place=True)
    table, split = _splits(tmp_path / "a5", "asvspoof5-official")
    assert (len(split.support), len(split.calibration), len(split.query)) == (8, 8, 16)
    assert set(split.truth(table, "checkpoint")) == {"unknown"}  # A17-A32: none seen in training


def test_mlaad_lists_conditions_and_the_text_disjoint_variant(replicas, tmp_path):
    root, expected = replicas["mlaad"]
    import_dataset(root, tmp_path / "ml", in_place=True)
    table, split = _splits(tmp_path / "ml", "mlaad-official")
    assert (len(split.support), len(split.calibration), len(split.query)) == (4, 4, 4)
    truth = dict(zip(table.checkpoint[split.query], split.truth(table, "checkpoint")))
    assert truth == {"tts_models/en/ljspeech/tacotron2-DDC": "tts_models/en/ljspeech/tacotron2-DDC",
                     "griffin_lim": "unknown"}
    assert set(split.truth(table, "architecture")) == {"tacotron2", "unknown"}
    _, condition = _splits(tmp_path / "ml", "mlaad-lang-not-seen-model-not-seen")
    assert sorted(table.clip_id[condition.query]) == ["fake/de/griffin_lim/clip_4", "fake/de/griffin_lim/clip_5"]
    assert sorted(table.clip_id[condition.calibration]) == ["fake/de/tts_models_de_thorsten_vits/clip_2",
                                                            "fake/de/tts_models_de_thorsten_vits/clip_3"]
    # texts: support holds clips 0, 1 (books 0, 1); a calibration/query clip i speaks book i % 3
    _, leakfree = _splits(tmp_path / "ml", "mlaad-leakfree")
    kept = [c for c in table.clip_id[np.concatenate([leakfree.calibration, leakfree.query])]]
    assert sorted(kept) == sorted(c for c, (s, _, _, _) in expected.items()
                                  if s in ("dev", "eval") and int(c[-1]) % 3 == 2)
    assert leakfree.leaks_dropped == {"prompt_id": 8 - len(kept)}


def test_add_and_wavefake_protocols_run(replicas, tmp_path):
    root, _ = replicas["add2023-t3"]
    import_dataset(root, tmp_path / "add", in_place=True)
    table, split = _splits(tmp_path / "add", "add2023-t3-official")
    assert (len(split.support), len(split.calibration), len(split.query)) == (14, 14, 16)
    assert Counter(split.truth(table, "checkpoint"))["unknown"] == 2  # class 7, eval only
    root, _ = replicas["wavefake"]
    import_dataset(root, tmp_path / "wf", in_place=True)
    corpus = Corpus.read(tmp_path / "wf")
    table = ClipTable.from_records(corpus.rows)
    splits = build_splits(load_protocol("wavefake-ljspeech"), table, [0, 1])
    for split in splits:  # the LJSpeech vocoders only; no utterance on both sides
        assert set(table.column("speaker")[np.concatenate([split.support, split.query])]) == {"ljspeech"}
        assert not set(table.prompt_id[split.support]) & set(table.prompt_id[split.query])
    assert [p.name for p in load_suite("public-sets")][:2] == ["asvspoof2019-la-official", "asvspoof2019-la-leakfree"]


def test_bad_rows_are_reported_with_file_and_line_and_skipped(tmp_path, capsys):
    root = tmp_path / "a19"
    asvspoof2019(root)
    train = root / "LA" / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.train.trn.txt"
    good = train.read_text().splitlines()
    bad = ["LA_0079 LA_T_9999999 - A01",               # wrong column count
           "LA_0079 LA_T_1000000 - A01 spoof",         # duplicate id (line 1's)
           "LA_0079 LA_T_1000001 - A42 spoof",         # unknown system label
           "LA_0079 LA_T_7777777 - A02 spoof"]         # missing file
    train.write_text("\n".join(good + bad) + "\n")
    n = len(good)
    report = import_dataset(root, tmp_path / "c", format="asvspoof2019-la", in_place=True)
    assert report.skipped == [
        f"{train}:{n + 1}: 4 fields, expected 5 (SPEAKER FILE - SYSTEM KEY)",
        f"{train}:{n + 3}: unknown system label 'A42' for key 'spoof' (A01-A19 for spoof, '-' for bonafide)",
        f"{train}:{n + 2}: duplicate clip id 'LA_T_1000000' (first at {train}:1)",
        f"{train}:{n + 4}: missing file 'LA/ASVspoof2019_LA_train/flac/LA_T_7777777.flac'"]
    assert report.clips == len(Corpus.read(tmp_path / "c").rows) == 14 + 7 + 14  # every good row kept
    assert (tmp_path / "c" / SKIPPED).read_text().splitlines() == report.skipped
    code = main(["corpus", "import", str(root), "--out", str(tmp_path / "c2"), "--in-place"])
    err = capsys.readouterr().err
    assert code == 1 and f"skipped {train}:{n + 4}: missing file" in err and (tmp_path / "c2" / "manifest.csv").is_file()


def test_in_place_paths_may_not_leave_the_dataset_root(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    for name in ("a.wav", "b.wav"):
        _audio(root / "ok" / name, 1)
    _audio(outside / "x.wav", 2)
    _audio(outside / "sub" / "y.wav", 3)
    os.symlink(outside / "x.wav", root / "ok" / "link.wav")          # a file linked out
    os.symlink(outside / "sub", root / "linked", target_is_directory=True)  # a folder linked out
    os.symlink(root / "ok" / "a.wav", root / "ok" / "inside.wav")    # a link within the root is fine
    listing = root / "list.txt"
    listing.write_text("ok/a.wav|s|tts_a\n../outside/x.wav|s|tts_a\n"
                       f"{outside / 'x.wav'}|s|tts_a\nok/link.wav|s|tts_b\nlinked/y.wav|s|tts_b\nok/inside.wav|s|tts_b\n")
    report = import_dataset(listing, tmp_path / "c", format="path-speaker-system", in_place=True)
    assert [line.split(": ", 1)[0] for line in report.skipped] == [f"{listing}:{n}" for n in (2, 3, 4, 5)]
    assert "must be relative and stay inside" in report.skipped[0] and "must be relative" in report.skipped[1]
    assert "symlink out of the dataset root" in report.skipped[2] and "escapes the dataset root" in report.skipped[3]
    corpus = Corpus.read(tmp_path / "c")
    assert [r.path for r in corpus.rows] == ["ok/a.wav", "ok/inside.wav"]
    manifest = corpus.manifest_path
    for bad in ("../outside/x.wav", str(outside / "x.wav"), "ok/link.wav"):  # a manifest edited to leave the root
        manifest.write_text(manifest.read_text().replace("ok/inside.wav", bad))
        with pytest.raises(ManifestError, match="absolute|escapes|symlink out"):
            Corpus.read(tmp_path / "c")
        manifest.write_text(manifest.read_text().replace(bad, "ok/inside.wav"))
    json.loads((tmp_path / "c" / IN_PLACE).read_text())  # the marker the corpus names its root in


def test_identity_covers_the_root_files_by_hash(replicas, tmp_path):
    src, _ = replicas["wavefake"]
    root = tmp_path / "wf"
    for p in src.rglob("*.wav"):
        (root / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        (root / p.relative_to(src)).write_bytes(p.read_bytes())
    import_dataset(root, tmp_path / "c", in_place=True)
    corpus = Corpus.read(tmp_path / "c")
    store = FeatureStore(corpus, build_extractor("lfcc"), decode_threads=1)
    assert all("corpus hash" in problem for problem in verify_corpus(corpus))  # nothing recorded yet: says how
    before = corpus_identity(corpus, store.audio_hashes())["sha256"]
    assert corpus_identity(corpus, store.audio_hashes())["sha256"] == before
    hashed, problems = record_audio_facts(tmp_path / "c", progress=False)  # `corpus hash`: recorded in the manifest
    assert (hashed, problems) == (len(corpus.rows), [])
    corpus = Corpus.read(tmp_path / "c")
    assert verify_corpus(corpus) == [] and all(r.sample_rate == RATE for r in corpus.rows)
    changed = root / "ljspeech_melgan" / "LJ001-0003_gen.wav"
    _audio(changed, 999)
    problems = verify_corpus(corpus)
    assert len(problems) == 1 and "sha256 differs" in problems[0] and "LJ001-0003_gen" in problems[0]
    store = FeatureStore(Corpus.read(tmp_path / "c"), build_extractor("lfcc"), decode_threads=1)
    assert corpus_identity(corpus, store.audio_hashes())["sha256"] != before


def test_copy_import_places_audio_in_the_corpus(replicas, tmp_path):
    root, expected = replicas["add2023-t3"]
    import_dataset(root, tmp_path / "c", format="add2023-t3")
    corpus = Corpus.read(tmp_path / "c")
    assert corpus.audio_root is None and len(corpus.rows) == len(expected)
    assert all(r.path.startswith("audio/") and r.sha256 and r.sample_rate == RATE for r in corpus.rows)
    assert verify_corpus(corpus) == []


@pytest.mark.parametrize("name", list(REPLICAS))
def test_import_features_bench_leaderboard_one_command_each(replicas, tmp_path, name):
    root, expected = replicas[name]
    corpus, results = tmp_path / name, tmp_path / "results"
    assert main(["corpus", "import", str(root), "--format", name, "--in-place", "--out", str(corpus)]) == 0
    assert main(["features", str(corpus), "--extractor", "lfcc", "--quiet"]) == 0
    assert main(["bench", str(corpus), "--suite", name, "--extractor", "lfcc", "--attributor", "knn:k=3",
                 "--out", str(results), "--quiet"]) == 0  # figures too: `unknown` has no architecture
    assert main(["leaderboard", "render", str(results), "--out", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / "index.html").is_file()
    files = {p.name.split("__")[0]: json.loads(p.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in results"))
             for p in results.glob("*.json")}
    assert sorted(files) == sorted(p.name for p in load_suite(name))
    if name == "asvspoof2019-la":
        info = files["asvspoof2019-la-official"]["splits"][0]  # one per seed, all the same lists
        spoof = Counter(s for s, label, _, _ in expected.values() if label != "bonafide")
        assert (info["n_support"], info["n_calibration"], info["n_query"]) == (spoof["train"], spoof["dev"], spoof["eval"])
        assert "unknown" in files["asvspoof2019-la-official"]["levels"]["checkpoint"]["confusion"]["labels"]


def test_detection_only_where_one_layout_fits(replicas, tmp_path, speech_tree):
    assert dataset_layout(speech_tree) is None  # a corpus tree stays `corpus import`'s own
    both = tmp_path / "both"
    (both / "fake" / "en" / "m").mkdir(parents=True)
    (both / "fake" / "en" / "m" / "meta.csv").write_text("path|x\n")
    (both / "ASVspoof5.train.tsv").write_text("")
    assert dataset_layout(both) is None
    with pytest.raises(UsageError, match="the layouts of asvspoof5, mlaad; name it with --format"):
        import_dataset(both, tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no known dataset layout"):
        import_dataset(tmp_path / "empty", tmp_path / "d")


def test_a_missing_protocol_file_is_reported_not_ignored(tmp_path):
    root = tmp_path / "a19"
    expected = asvspoof2019(root)
    protocol = root / "LA" / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.eval.trl.txt"
    protocol.unlink()
    report = import_dataset(root, tmp_path / "c", in_place=True)
    assert report.skipped == [f"{protocol}: no such protocol file: its clips are not imported"]
    assert report.clips == sum(1 for s, _, _, _ in expected.values() if s != "eval")


def _independent_open_set(X, labels, support, calibration, query, rule, closed, ood):
    """The open-set numbers of one out-of-domain score from its own scores, by scikit-learn and TADA's
    code: the threshold on calibration (TADA's EER, or the (floor(R n) + 1)-th highest known score),
    unknown above it, macro F1 with unknown a class; EER, AUROC, FPR95 of known versus unseen."""
    cal, q = ood.score(X[calibration]), ood.score(X[query])
    cal_unknown = labels[calibration] == "unknown"
    if rule == "eer":
        threshold = tada_eer(cal_unknown.astype(int), cal)[1]
    else:
        rate = float(rule.removeprefix("fpr="))
        threshold = np.sort(cal[~cal_unknown])[::-1][int(np.floor(rate * (~cal_unknown).sum()))]
    truth, unseen = labels[query], labels[query] == "unknown"
    answers = np.where(q > threshold, "unknown", closed)
    fpr, tpr, _ = roc_curve(~unseen, -q, drop_intermediate=False)  # known the positives, -score their confidence
    return threshold, {"open_set.macro_f1": f1_score(truth, answers, average="macro", zero_division=0),
                       "open_set.accuracy": float(np.mean(truth == answers)),
                       "detection.eer": tada_eer(unseen.astype(int), q)[0],
                       "detection.auroc": roc_auc_score(unseen, q),
                       "detection.fpr95": float(fpr[np.argmax(tpr >= 0.95)])}


def _system_sides(expected, name):
    """Support / calibration / query clip ids and each clip's label (`unknown` off support for systems
    the support lacks), from the replica's own plan: ASVspoof 2019 LA spoofed clips of train / dev /
    eval; MLAAD's train / dev / eval lists."""
    sides = {side: sorted(c for c, (split, label, _, _) in expected.items() if split == wanted and label != "bonafide")
             for side, wanted in (("support", "train"), ("calibration", "dev"), ("query", "eval"))}
    known = {expected[c][1] for c in sides["support"]}
    label = {c: expected[c][1] if c in sides["support"] or expected[c][1] in known else "unknown"
             for ids in sides.values() for c in ids}
    return sides, label


@pytest.mark.parametrize("name, threshold", [("asvspoof2019-la", "fpr=0.05"), ("mlaad", "eer")])
def test_bench_writes_the_open_set_block_the_scores_give_and_the_leaderboard_shows_it(replicas, tmp_path, name,
                                                                                        threshold):
    torch.set_num_threads(1)
    root, expected = replicas[name]
    corpus_dir, results, protocol = tmp_path / "c", tmp_path / "results", f"{name}-official"
    assert main(["corpus", "import", str(root), "--format", name, "--in-place", "--out", str(corpus_dir)]) == 0
    assert main(["bench", str(corpus_dir), "--protocol", protocol, "--extractor", "lfcc", "--attributor", "knn:k=3",
                 "--seeds", "0,1", "--out", str(results), "--no-figures", "--quiet"]) == 0
    [path] = results.glob(f"{protocol}__*.json")
    result = json.loads(path.read_text())
    block = result["open_set"]
    assert (block["dataset"], block["threshold_rule"], block["level"]) == (name, threshold, "checkpoint")

    sides, label = _system_sides(expected, name)
    corpus = Corpus.read(corpus_dir)
    store = FeatureStore(corpus, build_extractor("lfcc"), decode_threads=1)
    ids = [c for ids in sides.values() for c in ids]
    X = store.load(ids)
    rows = {side: np.array([ids.index(c) for c in sides[side]]) for side in sides}
    labels = np.array([label[c] for c in ids])
    support, calibration, query = rows["support"], rows["calibration"], rows["query"]
    assert (block["n_support"], block["n_calibration"], block["n_query"]) == tuple(map(len, sides.values()))
    closed = KNNAttributor(k=3).fit(X[support], labels[support]).predict(X[query])
    known = labels[query] != "unknown"
    assert 0 < known.sum() < len(query)
    closed_f1 = f1_score(labels[query][known], closed[known], average="macro", zero_division=0)
    assert block["closed_set"]["macro_f1"] == pytest.approx(closed_f1, abs=1e-9)
    assert block["closed_set"]["accuracy"] == pytest.approx(np.mean(labels[query][known] == closed[known]), abs=1e-9)
    assert block["closed_set"]["n"] == known.sum()
    assert set(block["scores"]) == {build_ood_score(s).id for s in DEFAULT_OOD_SCORES}
    for spec in DEFAULT_OOD_SCORES:
        ood = build_ood_score(spec).fit(X[support], labels[support])
        entry = block["scores"][ood.id]
        mine, numbers = _independent_open_set(X, labels, support, calibration, query, threshold, closed, ood)
        assert entry["detection"]["threshold"] == pytest.approx(mine, abs=1e-9)
        for key, value in numbers.items():
            part, metric = key.split(".")
            assert entry[part][metric] == pytest.approx(value, abs=1e-9), (spec, key)

    # the main table: closed set on known systems (the same number), said in the result, marked in the tables
    level = result["levels"]["checkpoint"]
    assert level["scored_on"].startswith("query clips of known systems")
    assert level["mean"] == pytest.approx(closed_f1, abs=1e-9) and level["std"] == 0.0
    assert [s["n_scored"] for s in level["per_seed"]] == [int(known.sum())]  # the set's lists run once
    assert result["seeds"] == [0]  # --seeds 0,1 asked: a shipped split is the same for every seed
    assert "unknown" in level["confusion"]["labels"]  # the confusion keeps every query clip
    summary = (results / "summary.md").read_text()
    assert f"| {protocol} † |" in summary and "† closed-set macro F1 on the query clips of known systems" in summary

    site = tmp_path / "site"
    assert main(["leaderboard", "render", str(results), "--out", str(site)]) == 0
    md, page = (site / "leaderboard.md").read_text(), (site / "index.html").read_text()
    assert f"{protocol} ckpt †" in md and "## Open set" in md and "### Published open-set results" in md
    assert 'id="open-set"' in page and 'id="open-set-published"' in page and "known systems only" in page
    assert "TADA" in md and "published, other split" in md  # TADA's row names both sets
    assert ("63% EER with an F1-score of 0.31" in md) == (name == "mlaad")  # MLAAD's official baseline only there
    assert "86.83" not in md
    knn_id = build_ood_score("knn-distance").id
    with open(site / "leaderboard.csv", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert float(row[f"{protocol} checkpoint known-systems mean"]) == pytest.approx(closed_f1, abs=1e-9)
    assert float(row[f"{protocol} open-set {knn_id} open F1"]) == block["scores"][knn_id]["open_set"]["macro_f1"]
    assert float(row[f"{protocol} open-set {knn_id} AUROC"]) == block["scores"][knn_id]["detection"]["auroc"]
    metrics = json.loads((site / "leaderboard.json").read_text())["model-index"][0]["results"][0]["metrics"]
    eer = next(m for m in metrics if m["config"] == f"{protocol}/open-set/{knn_id}" and m["args"]["metric"] == "EER")
    assert eer["value"] == block["scores"][knn_id]["detection"]["eer"] and eer["args"]["threshold_rule"] == threshold


def test_a_set_whose_lists_hold_no_known_system_says_why_it_has_no_open_set_block(replicas, tmp_path):
    root, _ = replicas["asvspoof5"]
    corpus_dir, results = tmp_path / "c", tmp_path / "results"
    assert main(["corpus", "import", str(root), "--in-place", "--out", str(corpus_dir)]) == 0
    assert main(["bench", str(corpus_dir), "--protocol", "asvspoof5-official", "--extractor", "lfcc", "--attributor",
                 "knn:k=3", "--seeds", "0", "--out", str(results), "--no-figures", "--quiet"]) == 0
    [path] = results.glob("asvspoof5-official__*.json")
    result = json.loads(path.read_text())
    assert "open_set" not in result and "0 clips of known systems and 16 of unseen" in result["open_set_not_scored"]
    assert result["levels"]["checkpoint"]["scored_on"].startswith("every query clip")
    assert result["levels"]["checkpoint"]["mean"] == 0.0  # every eval system unseen: no closed-set answer is right
    assert "| asvspoof5-official ‡ |" in (results / "summary.md").read_text()


def test_open_set_protocol_keys_are_checked_when_loaded(tmp_path):
    base = 'title = "t"\nversion = 1\nprompts = "disjoint"\nvocoder = "default"\nlevels = ["checkpoint"]\n' \
           'support = { roles = ["all"] }\nquery = { roles = ["all"] }\n'
    for extra, message in (('threshold = "fpr=0.05"\n', "open-set settings: they need a calibration side"),
                           ('dataset = "timit"\n', "dataset 'timit' is not a set sourcetrace reads"),
                           ('threshold = "fpr=5"\n', "threshold rule 'fpr=5': say 'eer' or 'fpr=R'")):
        path = tmp_path / "p.toml"
        path.write_text(base + extra)
        with pytest.raises(ProtocolError, match=message):
            load_protocol(str(path))
    assert [(p.dataset, p.threshold, p.open_set) for p in load_suite("asvspoof2019-la")] == [
        ("asvspoof2019-la", "fpr=0.05", True)] * 2
    assert not load_protocol("wavefake-ljspeech").open_set and not load_protocol("table1-01-baseline").open_set


def test_a_table1_protocol_has_no_open_set_block_and_scores_every_query_clip_as_before():
    rows = study_rows(n_prompts=10, vocoder_variants=False)
    table, X = ClipTable.from_records(rows), clustered_vectors(rows, dim=8)
    protocol, spec = load_protocol("table1-01-baseline"), AttributorSpec.parse("knn:k=5")
    run = run_protocol(protocol, table, X, spec, seeds=[0, 1])
    result = make_result(protocol, run, spec, "synthetic", {}, "f" * 64, {"sha256": "a" * 64}, "test")
    assert "open_set" not in result and "open_set_not_scored" not in result
    for level, entry in result["levels"].items():
        assert "scored_on" not in entry
        for seed, split in zip((0, 1), build_splits(protocol, table, [0, 1])):
            predicted = predict_levels(spec, X, table, split, [level])[level]
            truth = table.labels(level)[split.query]
            [stored] = [e for e in entry["per_seed"] if e["seed"] == seed]
            assert set(stored) == {"seed", "variant", "macro_f1", "n_support", "n_query", "n_classes"}
            assert stored["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0),
                                                       abs=1e-12)

def test_a_stale_dataset_root_marker_never_redirects_a_later_import(replicas, tmp_path, monkeypatch):
    root, expected = replicas["add2023-t3"]
    out = tmp_path / "c"
    import_dataset(root, out, in_place=True)
    (out / "manifest.csv").unlink()  # the user starts again in the same folder, with copies this time
    import_dataset(root, out)
    corpus = Corpus.read(out)
    assert corpus.audio_root is None and not (out / IN_PLACE).exists() and verify_corpus(corpus) == []
    (out / "manifest.csv").unlink()  # `corpus import` of a list into a folder an in-place import left
    (out / IN_PLACE).write_text(json.dumps({"root": str(root), "format": "add2023-t3"}))
    listing = tmp_path / "list" / "list.txt"
    for i in range(2):
        _audio(listing.parent / f"{i}.wav", 500 + i)
    listing.write_text("0.wav|s|tts_a\n1.wav|s|tts_b\n")
    assert main(["corpus", "import", str(listing), "--out", str(out)]) == 0
    assert Corpus.read(out).audio_root is None and not (out / IN_PLACE).exists()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    for step in ("write_json_atomic", "_write"):  # a kill while the marker, then the manifest is written
        fresh = tmp_path / step
        with monkeypatch.context() as m:
            m.setattr(dataset_import, step, killed)
            with pytest.raises(KeyboardInterrupt):
                import_dataset(root, fresh, in_place=True)
        assert not (fresh / "manifest.csv").exists()  # never a manifest without its root
        import_dataset(root, fresh)  # and a copy import after the kill reads its own folder
        assert Corpus.read(fresh).audio_root is None and len(Corpus.read(fresh).rows) == len(expected)


def test_corpus_hash_resumes_after_a_kill_and_reports_undecodable_clips(replicas, tmp_path, monkeypatch, capsys):
    src, expected = replicas["wavefake"]
    root = tmp_path / "wf"
    for p in src.rglob("*.wav"):
        (root / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
        (root / p.relative_to(src)).write_bytes(p.read_bytes())
    broken = root / "ljspeech_waveglow" / "LJ001-0010_gen.wav"
    broken.write_bytes(b"not audio at all")
    import_dataset(root, tmp_path / "c", in_place=True)
    manifest, progress = tmp_path / "c" / "manifest.csv", tmp_path / "c" / dataset_import.HASH_PROGRESS
    real, calls = dataset_import.audio_facts, []

    def killed_at_sixth(path):
        calls.append(path)
        if len(calls) == 6:  # a kill with a line half written
            with open(progress, "a") as fh:
                fh.write(f"{broken.relative_to(root)}\t0123")
            raise KeyboardInterrupt
        return real(path)

    with monkeypatch.context() as m:
        m.setattr(dataset_import, "audio_facts", killed_at_sixth)
        with pytest.raises(KeyboardInterrupt):
            record_audio_facts(tmp_path / "c", progress=False)
    assert len(progress.read_text().splitlines()) == 5 + 1  # five clips kept, one torn line
    calls.clear()
    with monkeypatch.context() as m:
        m.setattr(dataset_import, "audio_facts", lambda path: calls.append(path) or real(path))
        hashed, problems = record_audio_facts(tmp_path / "c", progress=False)  # the rerun continues
    assert len(calls) == len(expected) - 5 and hashed == len(expected) - 1 and not progress.exists()
    assert problems == [f"line {len(expected) + 1} ({broken}): audio cannot be decoded"]
    rows = {r.path: r for r in Corpus.read(tmp_path / "c").rows}
    assert not rows["ljspeech_waveglow/LJ001-0010_gen.wav"].sha256
    assert all(r.sha256 == sha256_file(root / p) and r.sample_rate == RATE
               for p, r in rows.items() if p != "ljspeech_waveglow/LJ001-0010_gen.wav")
    before = manifest.read_bytes()
    assert main(["corpus", "hash", str(tmp_path / "c"), "--quiet"]) == 1  # reported again, nothing lost
    assert str(broken) in capsys.readouterr().err and manifest.read_bytes() == before


def test_a_list_file_and_a_folder_meet_the_reader_they_need(tmp_path, capsys):
    folder = tmp_path / "data"
    for i in range(2):
        _audio(folder / f"{i}.wav", 600 + i)
    listing = folder / "list.txt"
    listing.write_text("0.wav|s|tts_a\n1.wav|s|tts_b\n")
    assert main(["corpus", "import", str(listing), "--in-place", "--out", str(tmp_path / "c")]) == 0
    assert len(Corpus.read(tmp_path / "c").rows) == 2
    other = folder / "list.lst"
    other.write_text(listing.read_text())
    with pytest.raises(UsageError, match="is read with --format path-speaker-system"):
        import_dataset(other, tmp_path / "d", in_place=True)
    with pytest.raises(UsageError, match=r"--format path-speaker-system reads a list file of path\|speaker\|system "
                                         r"lines .*, not a folder"):
        import_dataset(folder, tmp_path / "d", format="path-speaker-system")
    with pytest.raises(UsageError, match="--format wavefake reads .*, not a file; .* --format path-speaker-system"):
        import_dataset(listing, tmp_path / "d", format="wavefake")
    assert main(["corpus", "import", str(folder), "--format", "path-speaker-system", "--out", str(tmp_path / "d")]) == 2
    assert "reads a list file" in capsys.readouterr().err


def test_a_list_line_of_four_fields_is_refused_naming_the_three(tmp_path):
    _audio(tmp_path / "a.wav", 1)
    _audio(tmp_path / "b.wav", 2)
    listing = tmp_path / "list.txt"
    listing.write_text("a.wav|s|tts_a\nb.wav|s|tts_b|extra\n")
    report = import_dataset(listing, tmp_path / "c", in_place=True)
    assert report.clips == 1 and report.skipped == [
        f"{listing}:2: 4 field(s), expected 3: path|speaker|system (the audio file relative to the list's folder, "
        "its speaker, the system that made it); a line with more fields is refused, not cut to three"]


def test_wavefake_folders_without_a_vocoder_are_reported(tmp_path, capsys):
    root = tmp_path / "wf"
    expected = wavefake(root)
    _audio(root / "common_voices_prompts_from_conformer_fastspeech2_pwg_ljspeech" / "0_gen.wav", 700)
    assert main(["corpus", "import", str(root), "--in-place", "--out", str(tmp_path / "c")]) == 0  # by design
    err = capsys.readouterr()
    tts = root / "common_voices_prompts_from_conformer_fastspeech2_pwg_ljspeech"
    assert f"left out {tts}: WaveFake's TTS-pipeline folder" in err.err and "1 folder(s) left out" in err.out
    assert len(Corpus.read(tmp_path / "c").rows) == len(expected)
    _audio(root / "ljspeech-melgan" / "LJ001-0001_gen.wav", 701)  # a typo: not WaveFake's layout
    (root / "ljspeech_empty").mkdir()
    report = import_dataset(root, tmp_path / "d", in_place=True)
    assert report.skipped == [f"{root / 'ljspeech-melgan'}: not a <ljspeech|jsut>_<vocoder> folder: its clips are "
                              "not imported", f"{root / 'ljspeech_empty'}: no *.wav in this vocoder folder"]
    assert report.left_out == [f"{tts}: WaveFake's TTS-pipeline folder, not one vocoder: no vocoder label, not imported"]
    assert main(["corpus", "import", str(root), "--in-place", "--out", str(tmp_path / "e")]) == 1


def test_a_condition_list_only_tags_clips_of_the_main_lists(tmp_path):
    root = tmp_path / "mlaad"
    mlaad(root)
    condition = root / "dev___lang_not_seen___model_not_seen.csv"
    lines = condition.read_text().splitlines()
    condition.write_text("\n".join([*lines, "fake/de/griffin_lim/clip_0.wav,griffin_lim"]) + "\n")  # in no main list
    report = import_dataset(root, tmp_path / "c", in_place=True)
    assert report.skipped == [f"{condition}:{len(lines) + 1}: clip 'fake/de/griffin_lim/clip_0.wav' is in no main "
                              "list (train.csv, dev.csv, eval.csv): a condition list only tags their clips"]
    rows = {r.clip_id: r for r in Corpus.read(tmp_path / "c").rows}
    assert rows["fake/de/griffin_lim/clip_0"].cell("split") == rows["fake/de/griffin_lim/clip_0"].cell("condition") == ""
    assert rows["fake/de/tts_models_de_thorsten_vits/clip_2"].cell("condition") == "lang_not_seen___model_not_seen"
