"""`corpus pack` / `corpus import` of a release: Hugging Face `datasets` loads it, the round trip
keeps the corpus identity, and a release is complete, checked and free of this machine's paths."""

import getpass
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf

from sourcetrace.cli import main
from sourcetrace.core.fileio import sha256_file
from sourcetrace.corpus import Corpus, ManifestError, corpus_identity, import_corpus
from sourcetrace.corpus.release import pack_corpus


def _identity(root: Path) -> str:
    corpus = Corpus.read(root)
    return corpus_identity(corpus, {r.clip_id: sha256_file(corpus.audio_path(r)) for r in corpus.rows})["sha256"]


def _require_datasets_audio():
    """HF `datasets` (installed with the TTS stacks, not with the light core) encodes and decodes
    audio with torchcodec, which needs FFmpeg's shared libraries (tools/setup.sh installs them):
    a skip without them, a failure where CI requires them."""
    pytest.importorskip("datasets", reason="HF datasets comes with the TTS stacks (SOURCETRACE_STACKS=all)")
    try:
        from torchcodec.decoders import AudioDecoder  # noqa: F401
        from torchcodec.encoders import AudioEncoder  # noqa: F401
    except (ImportError, RuntimeError, OSError) as exc:
        if os.environ.get("SOURCETRACE_REQUIRE_FFMPEG"):
            raise
        pytest.skip(f"torchcodec cannot load FFmpeg's libraries ({type(exc).__name__}): apt-get install ffmpeg")


@pytest.fixture(scope="module")
def corpus_and_release(speech_tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    import_corpus(speech_tree, root / "corpus")
    # A manifest as a user may write one (BOM, CRLF, an empty column, a number): kept byte for byte.
    manifest = root / "corpus/manifest.csv"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    lines = [lines[0] + ",vocoder,seed"] + [line + ",,0" for line in lines[1:]]
    manifest.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines + [""]).encode())
    assert main(["corpus", "pack", str(root / "corpus"), "--out", str(root / "release"), "--name", "espeak voices"]) == 0
    return root / "corpus", root / "release"


def test_datasets_loads_the_release_with_every_column(corpus_and_release, tmp_path):
    _require_datasets_audio()
    import yaml

    import datasets

    corpus_dir, release = corpus_and_release
    corpus = Corpus.read(corpus_dir)
    ds = datasets.load_dataset(str(release), cache_dir=str(tmp_path / "hf"))
    assert list(ds) == ["train"]
    train = ds["train"]
    assert train.num_rows == len(corpus.rows) == 48
    assert train.column_names == ["audio", *corpus.columns]
    for column in corpus.columns:  # every value the manifest's string, empty ones included
        assert train[column] == corpus.column(column), column
    clip = train[5]
    expected, rate = sf.read(str(corpus.audio_path(corpus.rows[5])), dtype="float32")
    samples = clip["audio"].get_all_samples()
    assert samples.sample_rate == rate and samples.data.shape == (1, len(expected))
    assert float(abs(samples.data[0].numpy() - expected).max()) < 1e-6

    header = yaml.safe_load((release / "README.md").read_text(encoding="utf-8").split("---\n")[1])
    assert header["license"] == "cc-by-4.0" and header["task_categories"] == ["audio-classification"]
    assert header["size_categories"] == ["n<1K"] and header["pretty_name"] == "espeak voices"
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": ["metadata.jsonl", "audio/**"]}]
    assert datasets.Features._from_yaml_list(header["dataset_info"]["features"]) == train.features
    assert header["dataset_info"]["splits"][0]["num_examples"] == 48


def test_round_trip_keeps_the_corpus_identity(corpus_and_release, tmp_path):
    corpus_dir, release = corpus_and_release
    assert main(["corpus", "import", str(release), "--out", str(tmp_path / "back")]) == 0
    assert (tmp_path / "back/manifest.csv").read_bytes() == (corpus_dir / "manifest.csv").read_bytes()
    assert _identity(tmp_path / "back") == _identity(corpus_dir)
    card = (release / "README.md").read_text(encoding="utf-8")
    assert f"corpus sha256 (manifest bytes and every clip's audio hash, as in benchmark results): `{_identity(corpus_dir)}`" in card
    sums = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=release, capture_output=True, text=True)
    assert sums.returncode == 0, sums.stdout + sums.stderr


def test_release_holds_no_path_or_name_of_this_machine(corpus_and_release):
    _, release = corpus_and_release
    private = [str(release.parent), str(Path.home()), str(Path.cwd()), socket.gethostname(), "/tmp/"]
    user = re.compile(rf"\b{re.escape(getpass.getuser())}\b")
    texts = [p for p in release.rglob("*") if p.is_file() and p.suffix.lower() != ".wav"]
    assert {p.name for p in texts} == {"README.md", "metadata.jsonl", "manifest.csv", "SHA256SUMS"}
    for path in texts:
        text = path.read_text(encoding="utf-8")
        assert not [s for s in private if s in text], path
        assert not user.search(text), path


def test_corrupt_clip_fails_the_pack_by_name_and_writes_nothing(corpus_and_release, tmp_path, capsys):
    corpus_dir, _ = corpus_and_release
    shutil.copytree(corpus_dir, tmp_path / "corpus")
    clip = Corpus.read(tmp_path / "corpus").rows[7].path
    data = bytearray((tmp_path / "corpus" / clip).read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / "corpus" / clip).write_bytes(bytes(data))
    assert main(["corpus", "pack", str(tmp_path / "corpus"), "--out", str(tmp_path / "rel")]) == 1
    err = capsys.readouterr().err
    assert f"line 9 ({clip}): sha256 differs from the manifest" in err
    assert not [p.name for p in tmp_path.iterdir() if "rel" in p.name]  # no release, no staging folder


def test_pack_refuses_a_non_empty_out_and_fills_an_empty_one(corpus_and_release, tmp_path, capsys):
    corpus_dir, _ = corpus_and_release
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken/notes.txt").write_text("mine")
    assert main(["corpus", "pack", str(corpus_dir), "--out", str(tmp_path / "taken")]) == 2
    assert "taken: 1 problem(s):\n  already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert main(["corpus", "pack", str(corpus_dir), "--out", str(tmp_path / "empty"), "--link", "hardlink",
                 "--license", "cc0-1.0"]) == 0
    row = Corpus.read(corpus_dir).rows[0]
    assert os.path.samefile(tmp_path / "empty" / row.path, corpus_dir / row.path)
    assert 'license: "cc0-1.0"' in (tmp_path / "empty/README.md").read_text(encoding="utf-8")


def test_recipe_and_journals_are_hashed_and_absolute_paths_refused(corpus_and_release, tmp_path):
    corpus_dir, _ = corpus_and_release
    shutil.copytree(corpus_dir, tmp_path / "corpus")
    journal = tmp_path / "corpus/parts/en-us__step-a.jsonl"
    journal.parent.mkdir()
    journal.write_text('{"clip_id": "en-us/step-a/p0", "path": "audio/x.wav"}\n')
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[corpus]\nprompts = "data/prompts.tsv"\nschedule = "mini"\n')
    pack_corpus(tmp_path / "corpus", tmp_path / "rel", recipe=recipe)
    card = (tmp_path / "rel/README.md").read_text(encoding="utf-8")
    assert f"- `provenance/recipe.toml`: sha256 `{sha256_file(recipe)}`" in card
    assert f"  - `parts/en-us__step-a.jsonl`: 1 clips, sha256 `{sha256_file(journal)}`" in card
    assert (tmp_path / "rel/provenance/recipe.toml").read_bytes() == recipe.read_bytes()
    assert f"{sha256_file(recipe)}  provenance/recipe.toml" in (tmp_path / "rel/SHA256SUMS").read_text()

    recipe.write_text('[corpus]\nprompts = "/shared/study/prompts.tsv"\n')
    with pytest.raises(ManifestError, match=r"(?s)recipe.toml: 1 problem.*line 2: holds '/shared/'"):
        pack_corpus(tmp_path / "corpus", tmp_path / "rel2", recipe=recipe)
    assert not (tmp_path / "rel2").exists()


def test_import_refuses_an_edited_release(corpus_and_release, tmp_path):
    _, release = corpus_and_release
    shutil.copytree(release, tmp_path / "rel")
    rows = Corpus.read(tmp_path / "rel").rows
    (tmp_path / "rel" / rows[3].path).write_bytes(b"RIFF")
    with pytest.raises(ManifestError, match=re.escape(f"{rows[3].path}: sha256 differs from SHA256SUMS")):
        import_corpus(tmp_path / "rel", tmp_path / "back")
    shutil.copy(release / rows[3].path, tmp_path / "rel" / rows[3].path)
    lines = (tmp_path / "rel/metadata.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = lines[2].replace('"prompt_id": "p2"', '"prompt_id": "p9"')
    (tmp_path / "rel/metadata.jsonl").write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ManifestError, match=r"metadata.jsonl line 3: prompt_id differ\(s\) from manifest.csv \(line 4\)"):
        import_corpus(tmp_path / "rel", tmp_path / "back")
    assert not (tmp_path / "back").exists()


def test_pack_needs_no_hugging_face_datasets(corpus_and_release, tmp_path):
    corpus_dir, _ = corpus_and_release
    code = ("import sys; from sourcetrace.cli import main; "
            f"rc = main(['corpus', 'pack', {str(corpus_dir)!r}, '--out', {str(tmp_path / 'rel')!r}]); "
            "assert rc == 0 and 'datasets' not in sys.modules, sorted(m for m in sys.modules if 'datasets' in m)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_pack_refuses_names_a_release_or_datasets_would_misread(corpus_and_release, tmp_path):
    corpus_dir, _ = corpus_and_release
    shutil.copytree(corpus_dir, tmp_path / "corpus")
    corpus = Corpus.read(tmp_path / "corpus")
    (tmp_path / "corpus/README.md").write_bytes((tmp_path / "corpus" / corpus.rows[1].path).read_bytes())
    corpus.rows[1] = replace(corpus.rows[1], path="README.md", sha256="")
    corpus.rows = [replace(row, extra={"audio_file_name": "x"}) for row in corpus.rows]
    corpus.write()
    with pytest.raises(ManifestError) as caught:
        pack_corpus(tmp_path / "corpus", tmp_path / "rel")
    assert caught.value.problems == [
        "column 'audio_file_name': `datasets` gives this name a meaning in an audio folder; rename it",
        "line 3: path 'README.md' is a file of the release itself; move the clip"]
    assert not (tmp_path / "rel").exists()
