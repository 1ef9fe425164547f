"""Hostile or broken inputs: every write stays inside its output folder, every file kind is type-checked
at load, every user-caused failure is one `error:` line (the traceback only with --debug), and
atomically written files get the user's umask."""

import errno
import json
import os
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sourcetrace.benchmark.leaderboard import build_leaderboard
from sourcetrace.benchmark.protocol import ClipTable, ProtocolError, load_protocol, parse_protocol
from sourcetrace.benchmark.results import ResultError
from sourcetrace.benchmark.runner import AttributorSpec, make_result, run_protocol
from sourcetrace.benchmark.synthetic import clustered_vectors, study_rows
from sourcetrace.cli import main
from sourcetrace.core.fileio import atomic_path, outside_note, write_text_atomic
from sourcetrace.corpus import Corpus, ManifestError, import_corpus, verify_corpus
from sourcetrace.pipeline.recipe import RecipeError, load_recipe

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    """A genuine results object of a small synthetic corpus (no audio, no features)."""
    rows = study_rows(n_prompts=10, vocoder_variants=False)
    table, X = ClipTable.from_records(rows), clustered_vectors(rows, dim=8)
    spec = AttributorSpec.parse("knn:k=3")
    protocol = load_protocol("indomain")
    run = run_protocol(protocol, table, X, spec, seeds=[0])
    return make_result(protocol, run, spec, "synthetic", {"kind": "synthetic"}, "f" * 64,
                       {"path": "synthetic", "sha256": "a" * 64, "n_clips": len(rows)}, "test")


def write_result(folder: Path, result: dict, name: str = "r.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(result))
    return folder / name


# ---- 4. every file a command writes stays inside its output folder ------------------------------


def test_leaderboard_copies_only_images_inside_the_results_folder(result, tmp_path):
    results = tmp_path / "deep" / "er" / "results"
    (results / "figures").mkdir(parents=True)
    (results / "figures" / "f1.png").write_bytes(PNG)
    (results / "figures" / "plot.svg").write_text('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>')
    (results / "figures" / "notes.png").write_text("not an image")
    (tmp_path / "outside.png").write_bytes(PNG)
    (results / "figures" / "link.png").symlink_to(tmp_path / "outside.png")
    hostile = {**result, "figures": {"hostname": "../../../../../../etc/hostname", "fake": "figures/notes.png",
                                     "outside": "../../../outside.png", "link": "figures/link.png",
                                     "good": "figures/f1.png", "vector": "figures/plot.svg"}}
    source = write_result(results, hostile)
    build_leaderboard([source], tmp_path / "site")
    copied = sorted(p.name for p in (tmp_path / "site" / "figures").iterdir())
    # Named by content hash: two submissions' f1.png never overwrite each other.
    assert sorted(name.split("-", 1)[1] for name in copied) == ["f1.png", "plot.svg"]
    page = (tmp_path / "site" / "index.html").read_text()
    assert "hostname" not in page and "notes.png" not in page and "outside" not in page and "link.png" not in page


def test_a_results_fingerprint_cannot_name_a_path(result, tmp_path):
    (tmp_path / "results" / "figures").mkdir(parents=True)
    (tmp_path / "results" / "figures" / "f1.png").write_bytes(PNG)
    hostile = json.loads(json.dumps(result))
    hostile["features"]["fingerprint_sha256"] = "../../WROTE"
    hostile["figures"] = {"good": "figures/f1.png"}
    source = write_result(tmp_path / "results", hostile)
    before = files_under(tmp_path)
    with pytest.raises(ResultError, match=r"r\.json: features\.fingerprint_sha256 must be 64 lowercase hex digits, "
                                          r"not '\.\./\.\./WROTE'"):
        build_leaderboard([source], tmp_path / "site")
    assert files_under(tmp_path) == before


def _tiny_sources(tmp_path: Path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(src / name, np.zeros(1600, np.float32), 16000)
    return src


@pytest.mark.parametrize("kind", ["csv", "list"])
def test_corpus_import_refuses_a_checkpoint_outside_out_before_writing(tmp_path, kind):
    src = _tiny_sources(tmp_path)
    if kind == "csv":
        listing = src / "list.csv"
        listing.write_text("path,architecture,checkpoint\na.wav,vits,vits/pt\nb.wav,vits,../../../x\n")
        bad_line = 3
    else:
        listing = src / "list.txt"
        listing.write_text("a.wav|spk|tts_a\nb.wav|spk|../../../x\n")
        bad_line = 2
    out = tmp_path / "a" / "b" / "out"
    before = files_under(tmp_path)
    with pytest.raises(ManifestError, match=rf"line {bad_line}: checkpoint '\.\./\.\./\.\./x' .* outside .*audio"):
        import_corpus(listing, out)
    assert files_under(tmp_path) == before and not out.exists() and not (tmp_path / "a").exists()


def test_corpus_import_refuses_two_clips_with_one_destination(tmp_path):
    src = _tiny_sources(tmp_path)
    (src / "list.csv").write_text("path,architecture,checkpoint,clip_id\na.wav,vits,vits/pt,x/y\nb.wav,vits,vits/pt,x__y\n")
    with pytest.raises(ManifestError, match="line 3: clip would be written to 'audio/vits/pt/x__y.wav', as the clip at line 2"):
        import_corpus(src / "list.csv", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_import_leaves_no_partial_corpus(speech_tree, tmp_path, monkeypatch, capsys):
    real_copy, calls = shutil.copyfile, []

    def copy_until_the_disk_fills(src, dest, *args, **kwargs):
        calls.append(dest)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write(2) reports it: no file name
        return real_copy(src, dest, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copy_until_the_disk_fills)
    assert main(["corpus", "import", str(speech_tree), "--out", str(tmp_path / "new" / "c")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {tmp_path / 'new' / 'c'}: no space left on the device (disk full or quota reached) "
                          "while writing audio/") and ".wav: nothing was written" in err
    assert f"free space on the file system of {tmp_path}" in err and "and rerun" in err
    assert not (tmp_path / "new").exists()


def test_recipe_paths_outside_the_workdir_are_said(tmp_path):
    assert outside_note(tmp_path / "work" / "prompts.tsv", tmp_path / "work") == ""
    note = outside_note(tmp_path / "elsewhere" / "prompts.tsv", tmp_path / "work")
    assert note == f" (outside the workdir {tmp_path / 'work'}: the recipe's path)"


# ---- 5. manifests, protocols, results and recipes are checked at load ---------------------------


@pytest.fixture()
def corpus_dir(speech_tree, tmp_path) -> Path:
    import_corpus(speech_tree, tmp_path / "c")
    return tmp_path / "c"


def test_manifest_with_a_byte_order_mark_is_read(corpus_dir):
    manifest = corpus_dir / "manifest.csv"
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())
    assert len(Corpus.read(corpus_dir).rows) == 48


def test_manifest_with_a_repeated_column_is_refused(corpus_dir):
    manifest = corpus_dir / "manifest.csv"
    lines = manifest.read_text().splitlines()
    lines[0] += ",architecture"
    lines[1:] = [line + ",other" for line in lines[1:]]
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"manifest\.csv: 1 problem.*\n  header repeats column\(s\) 'architecture'"):
        Corpus.read(corpus_dir)


def test_messages_give_physical_lines_after_quoted_newlines(corpus_dir, capsys):
    corpus = Corpus.read(corpus_dir)
    corpus.rows[0] = replace(corpus.rows[0], text="two\nlines")
    corpus.rows[1] = replace(corpus.rows[1], text="three\r\nphysical\rlines")
    corpus.write()
    # Rows start on lines 2, 4 and 7; break the third row (clip 3) in two ways.
    text = (corpus_dir / "manifest.csv").read_text()
    assert text.splitlines()[6].startswith(corpus.rows[2].clip_id + ",")
    (corpus_dir / corpus.rows[2].path).unlink()
    with pytest.raises(ManifestError, match=rf"line 7: missing file '{corpus.rows[2].path}'"):
        Corpus.read(corpus_dir)
    again = Corpus.read(corpus_dir, require_files=False)
    assert again.lines[:4] == [2, 4, 7, 8]
    assert f"line 7 ({corpus.rows[2].path}): missing file" in verify_corpus(again)
    start = text.index("\n" + corpus.rows[2].clip_id + ",")
    arch = f",{corpus.rows[2].architecture},"
    (corpus_dir / "manifest.csv").write_text(text[:start] + text[start:].replace(arch, ",,", 1))
    with pytest.raises(ManifestError, match="line 7: empty architecture"):
        Corpus.read(corpus_dir, require_files=False)


def test_a_symlink_loop_is_a_manifest_problem(corpus_dir):
    rows = Corpus.read(corpus_dir).rows
    path = corpus_dir / rows[3].path
    path.unlink()
    path.symlink_to(path)
    with pytest.raises(ManifestError, match=rf"manifest\.csv: 1 problem.*\n  line 5: path '{rows[3].path}' is a symlink loop"):
        Corpus.read(corpus_dir)


def test_a_header_only_manifest_is_an_error_for_every_command(corpus_dir, capsys):
    manifest = corpus_dir / "manifest.csv"
    manifest.write_text(manifest.read_text().splitlines()[0] + "\n")
    expected = f"error: {manifest}: 1 problem(s):\n  no clips: the manifest has a header but no rows\n"
    for command in (["corpus", "validate", str(corpus_dir)],
                    ["bench", str(corpus_dir), "--protocol", "indomain", "--extractor", "lfcc", "--out",
                     str(corpus_dir.parent / "r"), "--quiet"],
                    ["attribute", str(manifest), "--support", str(corpus_dir), "--extractor", "lfcc", "--quiet"]):
        assert main(command) == 2
        assert capsys.readouterr().err == expected


GOOD_PROTOCOL = ('title="t"\nversion=1\nprompts="disjoint"\nvocoder="default"\nlevels=["architecture"]\n'
                 'support={roles=["all"]}\nquery={roles=["all"]}\n')


@pytest.mark.parametrize("extra, message", [
    ('table1_row = "../../../etc"\n', r"table1_row must be an integer 1\.\.99, not '\.\./\.\./\.\./etc'"),
    ("table1_row = 0\n", r"table1_row must be an integer 1\.\.99, not 0"),
    ("balance_query = 1\n", "balance_query must be a boolean, not 1"),
    ('checkpoints = ["disjoint"]\n', "checkpoints must be one of shared, disjoint"),
])
def test_protocol_fields_are_type_checked_at_load(tmp_path, extra, message):
    (tmp_path / "p.toml").write_text(GOOD_PROTOCOL + extra)
    with pytest.raises(ProtocolError, match=rf"p\.toml: {message}"):
        load_protocol(str(tmp_path / "p.toml"))


def test_protocol_types_of_nested_and_required_keys():
    for text, message in [(GOOD_PROTOCOL.replace("version=1", 'version="1"'), "version must be an integer"),
                          (GOOD_PROTOCOL.replace('title="t"\n', ""), "missing required key 'title'"),
                          (GOOD_PROTOCOL.replace('query={roles=["all"]}', "query={roles=[1], holdout=\"y\"}"),
                           r"query\.roles\[0\] must be one of .*; query\.holdout must be a boolean")]:
        with pytest.raises(ProtocolError, match=message):
            parse_protocol(text, "x", "x.toml")


def test_results_fields_are_type_checked_at_load(result, tmp_path, capsys):
    bad = json.loads(json.dumps(result))
    bad["protocol"]["table1_row"] = "../../../etc"
    bad["levels"]["checkpoint"]["mean"] = "high"
    bad["figures"] = {"x": 3}
    source = write_result(tmp_path / "results", bad)
    assert main(["leaderboard", "render", str(source), "--out", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {source}: protocol.table1_row must be an integer 1..99, not '../../../etc'; ")
    assert "levels.checkpoint.mean must be a number, not 'high'" in err and "figures.x must be a string, not 3" in err
    assert not (tmp_path / "site").exists() or not any((tmp_path / "site").rglob("*.html"))


def test_recipe_fields_are_type_checked_at_load(tmp_path):
    (tmp_path / "r.toml").write_text('[corpus]\nprompts = "p.tsv"\nschedule = "mini"\nseed = "0"\n'
                                     '[corpus.architectures.gradtts]\nruns = "r"\nvocoder = "v"\ntrust = "no"\n'
                                     '[corpus.vocoders.v]\nkind = "hifigan"\nseed = 1.5\n')
    with pytest.raises(RecipeError, match=r"r\.toml \[corpus\]: seed must be an integer, not '0'; "
                                          r"architectures\.gradtts\.trust must be a boolean, not 'no'; "
                                          r"vocoders\.v\.seed must be an integer, not 1\.5"):
        load_recipe(tmp_path / "r.toml", base=tmp_path)


# ---- 6. one clear line for every OS error, the traceback behind --debug ------------------------


def _fsync_full_under(folder: Path, monkeypatch):
    """fsync of any file under `folder` fails as on a full disk (every atomic write fsyncs)."""
    real = os.fsync

    def fsync(fd):
        if str(folder) in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_in_features_is_one_line(corpus_dir, monkeypatch, capsys):
    _fsync_full_under(corpus_dir / "features", monkeypatch)
    assert main(["features", str(corpus_dir), "--extractor", "lfcc", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {corpus_dir / 'features'}")
    assert ": no space left on the device (disk full or quota reached): free space on the filesystem of " in err


def test_disk_full_while_writing_bench_results_is_one_line(corpus_dir, monkeypatch, capsys):
    out = corpus_dir.parent / "results"
    _fsync_full_under(out, monkeypatch)
    code = main(["bench", str(corpus_dir), "--protocol", "indomain", "--extractor", "lfcc", "--attributor", "knn:k=3",
                 "--seeds", "0", "--no-figures", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {out / 'indomain__knn'}") and ".json: no space left on the device" in err
    assert f"`df -h {out}`" in err


def test_a_writer_that_hides_the_disk_full_error_still_says_so(tmp_path, monkeypatch):
    """libsndfile reports ENOSPC as "System error."; /dev/full makes it fail for real."""
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 0))
    target = tmp_path / "clip.wav"
    with pytest.raises(OSError) as info, atomic_path(target):
        sf.write("/dev/full", np.zeros(100_000, np.float32), 16000, format="WAV")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert "LibsndfileError" in str(info.value) and not list(tmp_path.iterdir())


def test_debug_flag_shows_the_traceback(tmp_path, capsys):
    assert main(["corpus", "validate", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", "corpus", "validate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.endswith("corpus import`.\n")


@pytest.mark.tts
def test_a_pickle_named_safetensors_is_one_clear_line(tmp_path, capsys):
    from sourcetrace.generators import build_generator

    folder = build_generator("gradtts", "tiny", 0).save(tmp_path / "ckpt", 0, "zero-init")
    (folder / "model.safetensors").write_bytes(pickle.dumps({"weights": list(range(1000))}))
    assert main(["synth", str(folder), "--prompts", str(tmp_path / "p.tsv"), "--out", str(tmp_path / "c"),
                 "--random-vocoder", "0"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {folder / 'model.safetensors'}: cannot read (Error while deserializing header: header too large)\n"


# ---- 7. the user's umask ----------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_atomic_writes_get_the_mode_of_a_plain_write(speech_tree, result, tmp_path, umask):
    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
        write_text_atomic(tmp_path / "atomic.txt", "x")
        corpus = import_corpus(speech_tree, tmp_path / "c")
        page = build_leaderboard([write_result(tmp_path / "results", result)], tmp_path / "site")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == expected
    for path in (tmp_path / "atomic.txt", corpus.manifest_path, tmp_path / "c" / corpus.rows[0].path, page,
                 tmp_path / "site" / "leaderboard.md"):
        assert path.stat().st_mode & 0o777 == expected, path


# ---- 8. leaderboard.md escapes markup as the HTML page does -----------------------------------


def test_leaderboard_markdown_escapes_markup(result, tmp_path):
    hostile = json.loads(json.dumps(result))
    hostile["attributor"]["id"] = "<script>alert(1)</script>"
    hostile["features"]["extractor"] = '<img src=x onerror="alert(2)">|x\ny'
    hostile["corpus"]["path"] = "<b>corpus</b>"
    build_leaderboard([write_result(tmp_path / "results", hostile)], tmp_path / "site", title="<i>board</i>")
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "<" not in md and ">" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;\\|x y" in md
    assert md.startswith("# &lt;i&gt;board&lt;/i&gt;\n") and "Corpus &lt;b&gt;corpus&lt;/b&gt;" in md
    html = (tmp_path / "site" / "index.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the same escaping on both pages


def test_prompt_ids_and_labels_cannot_place_clips_outside_the_corpus(tmp_path, capsys):
    """A prompt id or checkpoint label becomes part of a clip's path: `../` in either is refused."""
    pytest.importorskip("grad_tts", reason="the TTS stacks are installed by tools/setup.sh")
    from sourcetrace.core.naming import UnsafeName, clip_location
    from sourcetrace.datasets.prompts import DatasetError, read_prompts

    prompts = tmp_path / "prompts.tsv"
    prompts.write_text("prompt_id\ttext\n../../escaped\tHello there.\n")
    with pytest.raises(DatasetError, match=r"line 2: prompt_id '../../escaped' cannot name a clip file"):
        read_prompts(prompts)
    for label, prompt_id in (("gradtts/..", "p1"), ("gradtts/../../x", "p1"), ("gradtts/ok", "..")):
        with pytest.raises(UnsafeName):
            clip_location(label, prompt_id)
    prompts.write_text("prompt_id\ttext\np1\tHello there.\n")
    run = tmp_path / "run"
    assert main(["train", "gradtts", "--run-dir", str(run), "--config", "tiny", "--schedule", "micro",
                 "--zero-init", "--device", "cpu"]) == 0
    checkpoint = next((run / "checkpoints").iterdir())
    before = files_under(tmp_path)
    code = main(["synth", str(checkpoint), "--prompts", str(prompts), "--out", str(tmp_path / "corpus" / "c"),
                 "--label", "gradtts/../../../escaped", "--random-vocoder", "0", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code != 0 and "cannot name a file" in err, err
    assert not any(p.suffix == ".wav" for p in files_under(tmp_path) - before)
