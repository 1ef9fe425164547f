"""Atomic writes keep the permission bits of the file they replace, and leave nothing but their own
(recognisable) temporary files behind when killed."""

import os

from sourcetrace.core.fileio import atomic_path, torn_writes, write_text_atomic


def test_rewriting_a_private_file_keeps_it_private(tmp_path):
    secret = tmp_path / "token.json"
    secret.write_text("old")
    os.chmod(secret, 0o600)
    old = os.umask(0o022)
    try:
        write_text_atomic(secret, "new")
        write_text_atomic(tmp_path / "fresh.json", "new")
    finally:
        os.umask(old)
    assert secret.read_text() == "new" and secret.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "fresh.json").stat().st_mode & 0o777 == 0o644  # a new file: the umask's default


def test_torn_writes_are_only_the_targets_own_temporary_files(tmp_path):
    target = tmp_path / "model.safetensors"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
    tmp.write_bytes(b"")  # what a kill during the write leaves: a file of atomic_path's own name
    for other in (".generator.json.abcd1234.tmp", "model.safetensors.tmp", ".model.safetensors", "notes.tmp"):
        (tmp_path / other).write_bytes(b"")
    assert torn_writes(target) == [tmp]
