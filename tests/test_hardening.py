"""Hostile but realistic inputs to releases, imports and `attribute`: outside paths in a release's
checksums, full and mounted file systems, links, empty and shared audio files, FIFOs, hour-long
clips, and the staging folders a killed pack leaves. Each test fails on the code before the fix."""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sourcetrace.cli import main
from sourcetrace.core.audio import AudioRejected, load_audio
from sourcetrace.core.fileio import sha256_file
from sourcetrace.corpus import Corpus, ManifestError, import_corpus, release
from sourcetrace.corpus.release import IncompleteRelease, pack_corpus

CLI = [sys.executable, "-m", "sourcetrace.cli"]


@pytest.fixture
def corpus(speech_tree, tmp_path) -> Path:
    import_corpus(speech_tree, tmp_path / "corpus")
    return tmp_path / "corpus"


def _in_a_small_file_system(script: str, mount: Path, size: str) -> subprocess.CompletedProcess:
    """Run `script` (sh) in a private mount namespace where `mount` is a tmpfs of `size`: the mount
    vanishes with the process, whatever happens to the test."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode:
        pytest.skip("needs root (unshare --mount) to mount a small file system")
    mount.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           f"mount -t tmpfs -o size={size} tmpfs '{mount}' && {script}"],
                          capture_output=True, text=True, timeout=300)


# ---- a release's SHA256SUMS ---------------------------------------------------------------------


def test_a_release_may_list_only_its_own_files(corpus, tmp_path, monkeypatch):
    pack_corpus(corpus, tmp_path / "rel", log=lambda _: None)
    secret = tmp_path / "outside.bin"
    secret.write_bytes(b"not part of the release")
    with open(tmp_path / "rel" / "SHA256SUMS", "a") as fh:
        fh.write(f"{sha256_file(secret)}  ../outside.bin\n{'0' * 64}  {secret}\n")
    hashed = []
    monkeypatch.setattr(release, "sha256_file", lambda p: hashed.append(Path(p)) or sha256_file(p))
    with pytest.raises(ManifestError) as caught:
        import_corpus(tmp_path / "rel", tmp_path / "back")
    problems = "\n".join(caught.value.problems)
    assert re.search(r"SHA256SUMS line \d+: path '\.\./outside\.bin' escapes .*: a release lists its own files only", problems)
    assert re.search(rf"SHA256SUMS line \d+: path '{re.escape(str(secret))}' is absolute", problems)
    assert hashed and all((tmp_path / "rel").resolve() in p.resolve().parents for p in hashed)  # no oracle outside
    assert not (tmp_path / "back").exists()


# ---- full disks, mount points and links as --out --------------------------------------------------


def test_a_full_disk_during_pack_or_import_names_the_target_and_keeps_nothing(corpus, tmp_path):
    pack_corpus(corpus, tmp_path / "rel", log=lambda _: None)
    mount = tmp_path / "small"
    run = _in_a_small_file_system(
        f"{' '.join(CLI)} corpus pack '{corpus}' --out '{mount}/rel'; echo rc=$?; "
        f"{' '.join(CLI)} corpus import '{tmp_path}/rel' --out '{mount}/back'; echo rc=$?; "
        f"find '{mount}' -mindepth 1; echo listed", mount, "300k")
    assert run.stdout.strip() == "rc=2\nrc=2\nlisted", run.stderr  # both refused, nothing left in the small file system
    errors = run.stderr.splitlines()
    assert [line.partition(": no space")[0] for line in errors] == [f"error: {mount / 'rel'}", f"error: {mount / 'back'}"]
    assert all(f"nothing was written (this output is complete or absent); free space on the file system of {mount}"
               in line for line in errors), run.stderr
    assert "nothing was written" in run.stderr and "finished work is kept" not in run.stderr
    assert str(corpus / "audio") not in run.stderr and f"{tmp_path}/rel/audio" not in run.stderr  # not the source


def test_a_full_disk_names_the_copy_destination(tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(400_000))
    mount = tmp_path / "small"
    code = (f"from sourcetrace.core.fileio import copy_file_atomic\ntry:\n copy_file_atomic('{source}', '{mount}/copy.bin')\n"
            "except OSError as exc:\n print(exc.errno, exc.filename, exc.filename2)")
    run = _in_a_small_file_system(f"{sys.executable} -c \"{code}\"", mount, "100k")
    assert run.stdout.strip() == f"28 {mount}/copy.bin None", run.stderr  # ENOSPC, the destination


def test_pack_to_an_empty_mount_point_stages_on_that_file_system(corpus, tmp_path):
    mount = tmp_path / "disk"
    run = _in_a_small_file_system(
        f"{' '.join(CLI)} corpus pack '{corpus}' --out '{mount}' && ls -A '{mount}' && "
        f"{' '.join(CLI)} corpus import '{mount}' --out '{tmp_path}/back'", mount, "64m")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[1:6] == ["README.md", "SHA256SUMS", "audio", "manifest.csv", "metadata.jsonl"]
    assert (tmp_path / "back" / "manifest.csv").read_bytes() == (corpus / "manifest.csv").read_bytes()
    assert not list(tmp_path.glob(".*packing*"))  # nothing staged on the parent's file system


def test_a_link_to_an_empty_folder_is_followed_and_a_link_to_a_file_refused_first(corpus, tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    pack_corpus(corpus, tmp_path / "link", log=lambda _: None)
    assert (tmp_path / "link").is_symlink() and (tmp_path / "target" / "metadata.jsonl").is_file()
    (tmp_path / "empty").mkdir()
    (tmp_path / "link2").symlink_to(tmp_path / "empty")
    assert main(["corpus", "import", str(tmp_path / "link"), "--out", str(tmp_path / "link2")]) == 0
    assert Corpus.read(tmp_path / "empty").rows == Corpus.read(corpus).rows
    (tmp_path / "file").write_text("x")
    (tmp_path / "link3").symlink_to(tmp_path / "file")
    with pytest.raises(ManifestError, match="is a link to .*file, which is not a folder"):
        pack_corpus(corpus, tmp_path / "link3", log=lambda _: None)
    assert not list(tmp_path.glob(".*.packing*"))  # refused before any work


# ---- clips a release must not carry ---------------------------------------------------------------


def test_two_rows_sharing_one_audio_file_are_refused_everywhere(corpus, tmp_path):
    pack_corpus(corpus, tmp_path / "rel", log=lambda _: None)
    for folder in (corpus, tmp_path / "rel"):
        manifest = folder / "manifest.csv"
        lines = manifest.read_text().splitlines(keepends=True)
        second = Corpus.read(folder).rows[1]
        lines[2] = lines[2].replace(second.path, Corpus.read(folder).rows[0].path)  # row 2 -> row 1's file
        manifest.write_text("".join(lines))
    shared = "line 3: path '.*' is the audio file of the row at line 2 too"
    with pytest.raises(ManifestError, match=shared):
        Corpus.read(corpus)
    with pytest.raises(ManifestError, match=shared):
        pack_corpus(corpus, tmp_path / "rel2", log=lambda _: None)
    with pytest.raises(ManifestError, match=shared):
        import_corpus(tmp_path / "rel", tmp_path / "back")
    assert main(["corpus", "verify", str(corpus)]) == 2


def test_an_empty_clip_whose_hash_matches_is_refused_by_pack_and_import(corpus, tmp_path):
    rel = tmp_path / "rel"
    pack_corpus(corpus, rel, log=lambda _: None)
    row, empty = Corpus.read(corpus).rows[4], hashlib.sha256(b"").hexdigest()
    for folder in (corpus, rel):  # a 0-byte clip, and every hash that names it made to match
        (folder / row.path).write_bytes(b"")
        for name in ("manifest.csv", "metadata.jsonl", "SHA256SUMS"):
            if (folder / name).exists():
                (folder / name).write_text((folder / name).read_text().replace(row.sha256, empty))
    sums = rel / "SHA256SUMS"
    sums.write_text(re.sub(r"^[0-9a-f]{64}(?=  (manifest\.csv|metadata\.jsonl)$)",
                           lambda m: sha256_file(rel / m.group(1)), sums.read_text(), flags=re.M))
    with pytest.raises(IncompleteRelease, match=r"line 6 \(audio/.*\): audio cannot be decoded"):
        pack_corpus(corpus, tmp_path / "rel2", log=lambda _: None)
    with pytest.raises(ManifestError, match=r"line 6 \(audio/.*\): audio cannot be decoded"):
        import_corpus(rel, tmp_path / "back")
    assert not (tmp_path / "rel2").exists() and not (tmp_path / "back").exists()


def test_import_of_a_tree_refuses_clips_that_cannot_be_decoded(speech_tree, tmp_path):
    shutil.copytree(speech_tree, tmp_path / "tree")
    (tmp_path / "tree" / "en-us" / "step-a" / "p3.wav").write_bytes(b"")
    with pytest.raises(ManifestError, match=r"en-us/step-a/p3\.wav: .*p3\.wav': audio cannot be decoded"):
        import_corpus(tmp_path / "tree", tmp_path / "c")
    assert not (tmp_path / "c").exists()


# ---- staging folders of killed packs ---------------------------------------------------------------


def test_a_killed_pack_leaves_a_staging_folder_the_next_pack_removes(corpus, tmp_path):
    slow = ("import sys, time; from sourcetrace.corpus import release; real = release.place_file\n"
            "release.place_file = lambda *a: (time.sleep(0.25), real(*a))\n"
            f"release.pack_corpus('{corpus}', '{tmp_path}/out/rel')")
    run = subprocess.Popen([sys.executable, "-c", slow])
    staging = tmp_path / "out" / ".rel.packing"
    deadline = time.monotonic() + 60
    while not list(staging.glob("audio/*/*/*.wav")) and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert (staging / release.OWNER).is_file()
    live = tmp_path / "out" / ".other.packing"  # a pack still running (this process): kept
    live.mkdir()
    (live / release.OWNER).write_text(release._writer())
    (tmp_path / "out" / ".older.packing").mkdir()  # an older sourcetrace's (no owner): removed
    said = []
    pack_corpus(corpus, tmp_path / "out" / "another", log=said.append)
    assert not staging.exists() and live.exists()
    assert sorted(said) == sorted([
        f"[release] removed {staging}: left by a pack or import that was killed (process {run.pid})",
        f"[release] removed {tmp_path / 'out' / '.older.packing'}: left by an interrupted or older pack or import",
        f"[release] {live}: staging folder of a pack or import still running ({socket.gethostname()}, process {os.getpid()})"])
    with pytest.raises(ManifestError, match="in use by another pack or import"):
        pack_corpus(corpus, tmp_path / "out" / "other", log=lambda _: None)


# ---- clips `attribute` and the feature store must refuse quickly -----------------------------------


def test_a_fifo_is_refused_by_name_not_read(corpus, tmp_path):
    fifo = tmp_path / "clip.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioRejected, match="not a regular file \\(a FIFO\\)"):
        load_audio(fifo)
    run = subprocess.run([*CLI, "attribute", str(fifo), "--support", str(corpus), "--extractor", "lfcc", "--k", "3",
                          "--quiet"], capture_output=True, text=True, timeout=240)
    assert run.returncode == 1 and f"error: {fifo}: not a regular file (a FIFO): give an audio file" in run.stderr
    # in a corpus, and in a tree to import: refused by name, never opened
    row = Corpus.read(corpus).rows[2]
    (corpus / row.path).unlink()
    os.mkfifo(corpus / row.path)
    with pytest.raises(ManifestError, match=rf"line 4: not a regular file \(a FIFO\): give an audio file '{row.path}'"):
        Corpus.read(corpus)
    tree = tmp_path / "tree" / "vits" / "step-1"
    tree.mkdir(parents=True)
    os.mkfifo(tree / "p0.wav")
    with pytest.raises(ManifestError, match=r"vits/step-1/p0\.wav: not a regular file \(a FIFO\)"):
        import_corpus(tmp_path / "tree", tmp_path / "imported")


def test_an_over_long_clip_is_refused_from_its_header_unless_the_limit_is_raised(corpus, tmp_path, capsys):
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, np.zeros(61 * 8000, np.float32), 8000)
    assert main(["attribute", str(long_clip), "--support", str(corpus), "--extractor", "lfcc", "--k", "3", "--quiet"]) == 1
    assert f"error: {long_clip}: 61.0 s long, above the limit of 60 s (--max-seconds)" in capsys.readouterr().err
    assert main(["attribute", str(long_clip), "--support", str(corpus), "--extractor", "lfcc", "--k", "3", "--quiet",
                 "--max-seconds", "0"]) == 0
    assert main(["attribute", str(long_clip), "--support", str(corpus), "--extractor", "lfcc", "--k", "3", "--quiet",
                 "--max-seconds", "61.5"]) == 0
    # the feature store: rejected with its length, the rest computed
    shutil.copy(long_clip, corpus / Corpus.read(corpus).rows[0].path)
    assert main(["features", str(corpus), "--extractor", "lfcc", "--store", str(tmp_path / "store"), "--quiet"]) == 1
    assert "61.0 s long, above the limit of 60 s" in capsys.readouterr().err
