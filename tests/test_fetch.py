"""`sourcetrace fetch` against a loopback HTTP server this test starts (127.0.0.1 only): ranges and
resumes, cut connections, redirects, lying lengths, checksums, 404, Google Drive's confirmation page,
streamed tar members, a Hugging Face endpoint for snapshot_download, SIGKILL at random points, the
lock file, a full disk."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sourcetrace.cli import main
from sourcetrace.core.download import (
    ATTEMPTS,
    CHUNK,
    MISMATCH,
    WRONG_LENGTH,
    ChecksumMismatch,
    DownloadError,
    FetchLock,
    LockFile,
    download_file,
    drive_download_url,
    is_url,
    part_path,
    stream_tar,
    unpack_archive,
)
from sourcetrace.pipeline.fetch import (
    CHECKED,
    LOCK_FILE,
    RUNNING,
    artefacts_named,
    catalogue,
    changed_since_fetch,
    fetch,
    recipe_artefacts,
)
from sourcetrace.pipeline.recipe import load_study_recipe

ROOT = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Site:
    """What the loopback server serves and how it misbehaves; every request is recorded."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cuts: dict[str, int] = {}       # path -> how many more responses to cut after half the body
        self.lie: dict[str, int] = {}        # path -> bytes claimed beyond the real length
        self.delay = 0.0                     # seconds per 16 KB chunk
        self.requests: list[tuple[str, str, str | None]] = []
        self.sent = 0
        self.hub: dict[str, dict[str, bytes]] = {}   # a commit -> its files, of one Hugging Face repository
        self.hub_main = COMMIT
        self.pages: dict[str, bytes] = {}   # path -> a web page served instead of a file (a login page)
        self.moved: dict[str, str] = {}     # path -> an absolute URL it redirects to
        self.garble: dict[str, int] = {}    # path -> how many more responses to spoil (raw bytes) after half the body

    def ranges(self, path: str) -> list[str | None]:
        return [r for _, p, r in self.requests if p == path]


def _handler(site: Site):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self._serve(head=True)

        def do_GET(self):
            self._serve(head=False)

        def _json(self, obj):
            self._page(json.dumps(obj).encode(), "application/json")

        def _page(self, page: bytes, content_type: str = "text/html; charset=utf-8"):
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def _serve(self, head: bool):
            path, _, query = self.path.partition("?")
            site.requests.append((self.command, path, self.headers.get("Range")))
            params = dict(urllib.parse.parse_qsl(query))
            if path in site.moved:
                self.send_response(302)
                self.send_header("Location", site.moved[path])
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if path.startswith("/redirect/"):
                self.send_response(302)
                self.send_header("Location", path.removeprefix("/redirect"))
                self.send_header("Content-Length", "0")
                return self.end_headers()
            if path in site.pages:
                return self._page(site.pages[path])
            if path == "/drive/uc":
                if params.get("confirm") == "t" and params.get("uuid") == "u-1":
                    return self._file("/drive.bin", head)
                page = (b'<html><body>Google Drive can\'t scan this file for viruses.<form id="download-form" '
                        b'action="/drive/uc" method="get"><input type="hidden" name="id" value="' + params["id"].encode()
                        + b'"><input type="hidden" name="export" value="download"><input type="hidden" name="confirm" '
                        b'value="t"><input type="hidden" name="uuid" value="u-1"></form></body></html>')
                return self._page(page)
            hub = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+))?(?:/.*)?", path)
            if hub:
                repo, what, revision = hub.groups()
                commit = site.hub_main if revision in ("main", None) else revision
                if commit not in site.hub:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RevisionNotFound")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                files = site.hub[commit]
                if what != "tree":
                    return self._json({"id": repo, "sha": commit, "siblings": [{"rfilename": f} for f in files]})
                return self._json([{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                                   for f, b in files.items()])
            resolve = re.fullmatch(r"/[^/]+/[^/]+/resolve/([^/]+)/(.+)", path)
            if resolve and resolve.group(1) in site.hub:
                body = site.hub[resolve.group(1)][resolve.group(2)]
                self.send_response(200)
                self.send_header("X-Repo-Commit", resolve.group(1))
                self.send_header("ETag", f'"{hashlib.sha1(body).hexdigest()}"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                return None
            return self._file(path, head)

        def _file(self, path: str, head: bool):
            if path not in site.files:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                return self.end_headers()
            body = site.files[path]
            claimed = len(body) + site.lie.get(path, 0)
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match:
                start = int(match.group(1))
                if start >= claimed:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{claimed}")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{claimed - 1}/{claimed}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(claimed - start))
            self.end_headers()
            if head:
                return None
            rest = body[start:]
            if site.cuts.get(path, 0) > 0:
                site.cuts[path] -= 1
                rest = rest[: len(rest) // 2]
            if site.garble.get(path, 0) > 0:  # half the body, then bytes outside TLS: the client's read fails
                site.garble[path] -= 1
                self.wfile.write(rest[: len(rest) // 2])
                self.wfile.flush()
                os.write(self.connection.fileno(), b"\x17\x03\x03\x00\x10" + bytes(16))
                self.close_connection = True
                return None
            for i in range(0, len(rest), 1 << 14):
                self.wfile.write(rest[i:i + (1 << 14)])
                site.sent += len(rest[i:i + (1 << 14)])
                if site.delay:
                    time.sleep(site.delay)
            self.close_connection = True
            return None

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hung up (a killed fetch): nothing to report


@contextlib.contextmanager
def _serving(site: Site, tls: ssl.SSLContext | None = None):
    """`site` served on 127.0.0.1 (over TLS with `tls`) while the block runs; yields its base URL."""
    httpd = _Server(("127.0.0.1", 0), _handler(site))
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server():
    site = Site()
    with _serving(site) as site.url:
        yield site


@pytest.fixture
def tls_server(server, tmp_path_factory, monkeypatch):
    """The same site over https, with a self-signed certificate the client is told to trust (SSL_CERT_FILE)."""
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command for a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with _serving(server, context) as server.tls_url:
        yield server


def _bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _tar(members: dict[str, bytes] | list[tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:
        for name, data in members.items() if isinstance(members, dict) else members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


# ---- the engine ----------------------------------------------------------------------------------
def test_a_cut_connection_is_resumed_with_a_range_request(server, tmp_path):
    data = server.files["/a.bin"] = _bytes(300_000)
    server.cuts["/a.bin"] = 1
    fetched = download_file([f"{server.url}/a.bin"], tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == data and fetched.sha256 == hashlib.sha256(data).hexdigest()
    assert server.ranges("/a.bin") == [None, f"bytes={len(data) // 2}-"]
    assert not part_path(tmp_path / "a.bin").exists()


def test_a_fetch_cut_every_time_keeps_its_part_and_the_rerun_resumes_it(server, tmp_path):
    data = server.files["/a.bin"] = _bytes(300_000)
    server.cuts["/a.bin"] = ATTEMPTS
    with pytest.raises(DownloadError, match=r"the connection was cut after \d+ bytes.*rerun to resume"):
        download_file([f"{server.url}/a.bin"], tmp_path / "a.bin")
    held = part_path(tmp_path / "a.bin").stat().st_size
    assert 0 < held < len(data) and not (tmp_path / "a.bin").exists()  # a part is never the file
    download_file([f"{server.url}/a.bin"], tmp_path / "a.bin")
    assert server.ranges("/a.bin")[-1] == f"bytes={held}-"
    assert (tmp_path / "a.bin").read_bytes() == data


def test_a_redirect_is_followed_and_a_missing_file_is_a_404_line(server, tmp_path):
    data = server.files["/a.bin"] = _bytes(1000)
    download_file([f"{server.url}/redirect/a.bin"], tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == data
    with pytest.raises(DownloadError, match=r"/nothing\.bin: HTTP 404 Not Found"):
        download_file([f"{server.url}/nothing.bin"], tmp_path / "b.bin")


def test_a_redirect_from_https_down_to_http_is_refused(tls_server, tmp_path):
    data = tls_server.files["/a.bin"] = _bytes(1000)
    download_file([f"{tls_server.tls_url}/a.bin"], tmp_path / "a.bin")  # https itself works
    assert (tmp_path / "a.bin").read_bytes() == data
    tls_server.moved["/down/a.bin"] = f"{tls_server.url}/a.bin"
    with pytest.raises(DownloadError, match=r"/down/a\.bin: the server redirects to http://.* not https: refused"):
        download_file([f"{tls_server.tls_url}/down/a.bin"], tmp_path / "b.bin")
    assert not (tmp_path / "b.bin").exists() and ("GET", "/a.bin", None) not in tls_server.requests[1:]


def test_a_network_error_mid_file_names_the_url_keeps_the_part_and_resumes(tls_server, tmp_path):
    data = tls_server.files["/a.bin"] = _bytes(3 * CHUNK)
    tls_server.garble["/a.bin"] = 1  # an SSLError (errno 1) mid-file: a network failure, not the local file's
    download_file([f"{tls_server.tls_url}/a.bin"], tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == data and tls_server.ranges("/a.bin") == [None, f"bytes={CHUNK}-"]
    tls_server.garble["/a.bin"] = ATTEMPTS
    with pytest.raises(DownloadError) as failed:
        download_file([f"{tls_server.tls_url}/a.bin"], tmp_path / "b.bin")
    message = str(failed.value)
    assert message.startswith(f"{tls_server.tls_url}/a.bin: the connection was cut after") and "SSLError" in message
    assert f"kept in {part_path(tmp_path / 'b.bin')}: rerun to resume" in message and "\n" not in message
    download_file([f"{tls_server.tls_url}/a.bin"], tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == data


def test_a_mirror_url_is_a_url_whatever_the_case_of_its_scheme(server, tmp_path, capsys):
    assert is_url("HTTP://127.0.0.1:9/m") and is_url("https://x/y") and not is_url("/srv/mirror")
    data = server.files["/official/generator_v1"] = _bytes(1000)
    mirror = server.url.replace("http://", "HTTP://")
    assert main(["fetch", "vocoder/hifigan-matcha", "--workdir", str(tmp_path), "--mirror", mirror, "--quiet"]) == 0
    assert (tmp_path / "official" / "generator_v1").read_bytes() == data


def test_an_unreachable_host_says_so(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"127\.0\.0\.1:{port}: host unreachable .*--mirror"):
        download_file([f"http://127.0.0.1:{port}/a.bin"], tmp_path / "a.bin")


def test_a_server_that_claims_more_bytes_than_it_sends_is_refused_and_the_part_kept(server, tmp_path):
    server.files["/a.bin"] = _bytes(5000)
    server.lie["/a.bin"] = 1000
    with pytest.raises(DownloadError, match="the connection was cut after 5000 bytes"):
        download_file([f"{server.url}/a.bin"], tmp_path / "a.bin")
    assert not (tmp_path / "a.bin").exists()


def test_a_wrong_length_or_checksum_is_set_aside_under_a_name_that_says_so(server, tmp_path):
    data = server.files["/a.bin"] = _bytes(5000)
    with pytest.raises(DownloadError, match="wrong length .*5000 bytes, expected 5001"):
        download_file([f"{server.url}/a.bin"], tmp_path / "a.bin", size=5001)
    assert (tmp_path / f"a.bin{WRONG_LENGTH}").read_bytes() == data and not (tmp_path / "a.bin").exists()
    with pytest.raises(ChecksumMismatch, match="differs from the expected 0000"):
        download_file([f"{server.url}/a.bin"], tmp_path / "b.bin", sha256="0" * 64)
    assert (tmp_path / f"b.bin{MISMATCH}").read_bytes() == data and not (tmp_path / "b.bin").exists()


def test_google_drives_confirmation_page_is_answered(server, tmp_path):
    data = server.files["/drive.bin"] = _bytes(20_000)
    download_file([f"{server.url}/drive/uc?id=abc&export=download"], tmp_path / "hifigan.pt")
    assert (tmp_path / "hifigan.pt").read_bytes() == data
    assert drive_download_url("https://drive.google.com/file/d/15AeZO2Zo4NBl7PG8oGgfQk0J1PpjaOgI/view") == (
        "https://drive.usercontent.google.com/download?id=15AeZO2Zo4NBl7PG8oGgfQk0J1PpjaOgI&export=download&confirm=t")


def test_a_web_page_instead_of_a_file_is_refused(server, tmp_path):
    server.pages["/a.bin"] = b"<html><form action='/login'>sign in</form></html>"
    with pytest.raises(DownloadError, match="sent a web page, not the file"):
        download_file([f"{server.url}/a.bin"], tmp_path / "a.bin")
    assert not (tmp_path / "a.bin").exists() and not part_path(tmp_path / "a.bin").exists()


def _links_and_escapes() -> bytes:
    """A tar whose members try to leave the destination or link out of it, beside one plain member."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, kind, target in (("d/../../evil", tarfile.REGTYPE, ""), ("/abs/evil", tarfile.REGTYPE, ""),
                                   ("d/link", tarfile.SYMTYPE, "/etc/passwd"), ("d/hard", tarfile.LNKTYPE, "d/ok"),
                                   ("d/ok", tarfile.REGTYPE, "")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, target, 2 if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(b"ok") if kind == tarfile.REGTYPE else None)
    return out.getvalue()


def test_archive_members_that_leave_the_destination_or_link_are_not_extracted(tmp_path):
    archive = tmp_path / "in" / "a.tar"
    archive.parent.mkdir()
    archive.write_bytes(_links_and_escapes())
    placed = unpack_archive(archive, tmp_path / "out" / "x", ("*",))
    assert placed == [tmp_path / "out" / "x" / "d" / "ok"]
    stream_tar(str(archive), tmp_path / "streamed", ("*",))
    assert _tree(tmp_path / "streamed") == {"d/ok": b"ok"}
    zipped = tmp_path / "in" / "a.zip"
    zipped.write_bytes(_zip({"../evil": b"x", "/abs/evil": b"x", "d/../../evil2": b"x", "d/ok": b"ok"}))
    assert unpack_archive(zipped, tmp_path / "out" / "z", ("*",)) == [tmp_path / "out" / "z" / "d" / "ok"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "in/a.tar", "in/a.zip", "out/x/d/ok", "out/z/d/ok", "streamed/d/ok"]


def test_two_members_landing_at_one_place_are_refused_and_nothing_is_placed(tmp_path):
    flat = tmp_path / "release.zip"
    flat.write_bytes(_zip({"x/config.json": b"1", "y/config.json": b"2", "x/model.pth": b"w"}))
    with pytest.raises(DownloadError, match=r"release\.zip: two members land at .*config\.json; nothing of it was"):
        unpack_archive(flat, tmp_path / "official", ("config.json", "model.pth"), flatten=True)
    twice = tmp_path / "twice.tar"
    twice.write_bytes(_tar([("a/metadata.csv", b"1"), ("a/metadata.csv", b"2")], mode="w"))
    with tarfile.open(twice) as tar:
        assert tar.getnames() == ["a/metadata.csv", "a/metadata.csv"]
    with pytest.raises(DownloadError, match=r"twice\.tar: two members land at"):
        unpack_archive(twice, tmp_path / "data", ("a/*",), strip=1)
    with pytest.raises(DownloadError, match=r"twice\.tar: two members land at"):
        stream_tar(str(twice), tmp_path / "data", ("a/*",), strip=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "official", "release.zip", "twice.tar"]
    assert not any((tmp_path / "official").iterdir()) and not any((tmp_path / "data").iterdir())


def test_local_file_failures_are_one_line_download_errors_and_a_folder_in_the_way_stops_all(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip({"a.txt": b"a", "b.txt": b"b"}))
    (tmp_path / "out" / "b.txt").mkdir(parents=True)
    with pytest.raises(DownloadError, match=r"out/b\.txt: a folder is where .*a\.zip puts a file: move it away"):
        unpack_archive(archive, tmp_path / "out", ("*",))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(DownloadError, match=r"file/sub: cannot unpack .*a\.zip into it \(Not a directory"):
        unpack_archive(archive, tmp_path / "file" / "sub", ("*",))
    (tmp_path / "taken").mkdir()  # a folder where the download would take its name
    with pytest.raises(DownloadError, match=r"taken: cannot take its name from taken\.part \(Is a directory"):
        download_file([str(archive)], tmp_path / "taken")
    with pytest.raises(DownloadError, match=r"file: cannot be made to hold the download \(File exists"):
        download_file([str(archive)], tmp_path / "file" / "a.zip")


def test_a_broken_download_is_never_pinned_nor_present_and_a_good_one_replaces_it(server, tmp_path, capsys):
    server.files["/nltk_data/corpora/cmudict.zip"] = b"<html>not a zip</html>" * 50
    argv = ["fetch", "nltk/cmudict", "--workdir", str(tmp_path), "--mirror", server.url, "--quiet"]
    zipped = tmp_path / "nltk_data" / "corpora" / "cmudict.zip"
    for _ in range(2):  # the rerun tries the file it has again: never "present"
        assert main(argv) == 1
        captured = capsys.readouterr()
        assert f"error: nltk/cmudict: {zipped}: not a readable zip or tar archive" in captured.err
        assert "delete it and rerun" in captured.err and len(captured.err.splitlines()) == 1
        assert "present" not in captured.out and "[file." not in (tmp_path / LOCK_FILE).read_text()
    zipped.unlink()
    good = server.files["/nltk_data/corpora/cmudict.zip"] = _zip({"cmudict/cmudict": b"A AH0\n", "cmudict/README": b"r"})
    assert main(argv) == 0 and "fetched: nltk/cmudict" in capsys.readouterr().out
    assert (zipped.parent / "cmudict" / "cmudict").read_bytes() == b"A AH0\n"
    lock = (tmp_path / LOCK_FILE).read_text()
    key = "nltk_data/corpora/cmudict.zip"
    assert f'[file."{key}"]\nurl = "{server.url}/{key}"\nsha256 = "{hashlib.sha256(good).hexdigest()}"' in lock
    assert "[pending." not in lock
    assert main(argv) == 0 and "present: nltk/cmudict" in capsys.readouterr().out
    (zipped.parent / "cmudict" / "README").unlink()  # an unzipped member gone: not present, unzipped again
    assert main(argv) == 0 and "fetched: nltk/cmudict" in capsys.readouterr().out
    assert (zipped.parent / "cmudict" / "README").read_bytes() == b"r"
    # an archive the same way: LJSpeech
    server.files["/downloads/LJSpeech-1.1.tar.bz2"] = b"BZh9 not really"
    [ljspeech] = artefacts_named(["ljspeech"])
    [outcome] = fetch([ljspeech], tmp_path, mirror=server.url, progress=False).outcomes
    assert outcome.status == "failed" and "LJSpeech-1.1.tar.bz2: not a readable zip or tar archive" in outcome.message
    assert '[file."downloads/' not in (tmp_path / LOCK_FILE).read_text()
    (tmp_path / "downloads" / "LJSpeech-1.1.tar.bz2").unlink()
    good = server.files["/downloads/LJSpeech-1.1.tar.bz2"] = _tar({"LJSpeech-1.1/metadata.csv": b"m"}, mode="w:bz2")
    assert [o.status for o in fetch([ljspeech], tmp_path, mirror=server.url, progress=False).outcomes] == ["fetched"]
    assert f'sha256 = "{hashlib.sha256(good).hexdigest()}"' in (tmp_path / LOCK_FILE).read_text()


def test_a_fetch_killed_after_the_rename_or_after_the_unzip_keeps_the_hash(server, tmp_path):
    """What a fetch killed between its steps leaves: the zip in place with its pending hash (killed before
    the unzip), then the unzipped artefact with it still pending (killed before it pinned it)."""
    good = _zip({"cmudict/cmudict": b"A AH0\n"})
    sha = hashlib.sha256(good).hexdigest()
    [cmudict] = artefacts_named(["nltk/cmudict"])
    zipped = cmudict.destination(tmp_path)
    zipped.parent.mkdir(parents=True)
    zipped.write_bytes(good)
    LockFile(tmp_path / LOCK_FILE).record_pending(cmudict.key, "u", sha, len(good))
    assert not cmudict.present(tmp_path)  # the zip alone is not the artefact
    [outcome] = fetch([cmudict], tmp_path, mirror=server.url, progress=False).outcomes  # the server has no copy
    assert (outcome.status, outcome.sha256) == ("fetched", sha) and server.requests == []
    assert LockFile(tmp_path / LOCK_FILE).sha256(cmudict.key) == sha
    (tmp_path / LOCK_FILE).unlink()
    LockFile(tmp_path / LOCK_FILE).record_pending(cmudict.key, "u", sha, len(good))
    [outcome] = fetch([cmudict], tmp_path, mirror=server.url, progress=False).outcomes
    assert outcome.status == "present" and LockFile(tmp_path / LOCK_FILE).sha256(cmudict.key) == sha


def test_a_second_fetch_in_the_same_workdir_is_refused_naming_the_first(server, tmp_path, capsys):
    server.files["/official/generator_v1"] = _bytes(1000)
    argv = ["fetch", "vocoder/hifigan-matcha", "--workdir", str(tmp_path), "--mirror", server.url, "--quiet"]
    with FetchLock(tmp_path / RUNNING):  # another fetch holds the work folder
        assert main(argv) == 2
        assert f"another fetch (pid {os.getpid()}) is running in {tmp_path}" in capsys.readouterr().err
        assert not (tmp_path / "official").exists()
    assert main(argv) == 0 and (tmp_path / RUNNING).read_text() == ""


def test_the_lock_file_keeps_what_another_writer_recorded(tmp_path):
    first, second = LockFile(tmp_path / LOCK_FILE), LockFile(tmp_path / LOCK_FILE)
    first.record_file("a", "u", "1" * 64, 1)
    second.record_file("b", "u", "2" * 64, 2)
    assert LockFile(tmp_path / LOCK_FILE).files == {"a": {"url": "u", "sha256": "1" * 64, "size": 1},
                                                   "b": {"url": "u", "sha256": "2" * 64, "size": 2}}
    first.record_pending("c", "u", "3" * 64, 3)
    assert LockFile(tmp_path / LOCK_FILE).sha256("c") is None  # pending: not yet what later fetches check
    second.confirm("c")
    assert LockFile(tmp_path / LOCK_FILE).sha256("c") == "3" * 64 and "b" in first.files


# ---- the catalogue and the command -----------------------------------------------------------------
def test_the_study_recipe_lists_every_artefact_it_needs_at_its_paths(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SOURCETRACE_MODELS", str(tmp_path / "models"))
    recipe = load_study_recipe(ROOT / "recipes" / "study.toml", base=tmp_path)
    found = {a.name: a for a in recipe_artefacts(recipe, tmp_path)}
    assert sorted(found) == sorted([
        "ljspeech", "hifitts", "fastpitch/pretrained", "gradtts/pretrained", "matcha/pretrained", "vits/pretrained",
        "vocoder/hifigan-dle", "vocoder/hifigan-gradtts", "vocoder/hifigan-gradtts/hifigan-config.json",
        "vocoder/hifigan-matcha", "xls-r-2b", "w2v-bert-2.0"])
    assert found["hifitts"].speakers == ("9136",)
    assert found["vits/pretrained"].destination(tmp_path) == tmp_path / "official" / "model_file.pth"
    assert found["xls-r-2b"].destination(tmp_path) == tmp_path / "models" / "xls-r-2b"
    assert not any(a.present(tmp_path) for a in found.values())
    assert main(["fetch", str(ROOT / "recipes" / "study.toml"), "--dry-run", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for artefact in found.values():
        assert f"{artefact.name}  [missing]\n  url: " in out and str(artefact.destination(tmp_path)) in out
    assert "url: none: no download URL is known" in out  # Grad-TTS's checkpoint: a Drive folder, no file link
    assert "size: unknown" in out and "12 artefacts, 12 to fetch" in out
    miniature = load_study_recipe(ROOT / "recipes" / "mini.toml", base=tmp_path)
    assert recipe_artefacts(miniature, tmp_path) == []  # espeak-ng data, stand-ins, random models: nothing to fetch


def test_the_beyond_recipe_needs_the_nltk_data_of_espnets_g2p(tmp_path):
    recipe = load_study_recipe(ROOT / "recipes" / "beyond.toml", base=tmp_path)
    names = [a.name for a in recipe_artefacts(recipe, tmp_path)]
    assert {"nltk/cmudict", "nltk/averaged_perceptron_tagger_eng", "xtts/pretrained/vocab.json"} <= set(names)
    assert "hifitts" not in names  # no fine-tunes in this recipe


def test_unknown_names_and_catalogue_entries_are_refused(tmp_path, capsys):
    assert main(["fetch", "ljspech", "--workdir", str(tmp_path)]) == 2
    assert "fetch ljspech: no such artefact; did you mean ljspeech" in capsys.readouterr().err
    assert main(["fetch", "--workdir", str(tmp_path)]) == 2 and "give a recipe file" in capsys.readouterr().err
    assert main(["fetch", "--print-lock", "--workdir", str(tmp_path)]) == 2
    assert f"{tmp_path / LOCK_FILE}: no lock file yet" in capsys.readouterr().err
    assert len({a.name for a in catalogue()}) == len(catalogue())


def test_a_name_is_exact_and_a_checkpoint_brings_only_its_own_companions(capsys, tmp_path):
    assert [a.name for a in artefacts_named(["vocoder/hifigan-gradtts"])] == [
        "vocoder/hifigan-gradtts", "vocoder/hifigan-gradtts/hifigan-config.json"]
    assert [a.name for a in artefacts_named(["vocoder/hifigan-matcha"])] == ["vocoder/hifigan-matcha"]
    assert main(["fetch", "vocoder", "--workdir", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "fetch vocoder: no such artefact; did you mean vocoder/hifigan-dle, " in err and "vits" not in err


def test_a_file_artefact_pins_its_hash_in_the_lock_and_a_changed_remote_is_refused(server, tmp_path, capsys):
    data = server.files["/official/generator_v1"] = _bytes(10_000)
    argv = ["fetch", "vocoder/hifigan-matcha", "--workdir", str(tmp_path), "--mirror", server.url, "--quiet"]
    assert main(argv) == 0
    assert (tmp_path / "official" / "generator_v1").read_bytes() == data
    assert main(["fetch", "--print-lock", "--workdir", str(tmp_path)]) == 0
    assert f'sha256 = "{hashlib.sha256(data).hexdigest()}"' in capsys.readouterr().out
    assert main(argv) == 0 and "present: vocoder/hifigan-matcha" in capsys.readouterr().out
    placed = tmp_path / "official" / "generator_v1"
    placed.write_bytes(bytes(len(data)))  # same length, other bytes: only --verify sees it
    assert main(argv) == 0 and main([*argv, "--verify"]) == 1
    assert "move it away and rerun" in capsys.readouterr().err
    placed.write_bytes(data[:-1])  # a cut copy: its length gives it away
    assert main(argv) == 1 and "has 9999 bytes where fetch.lock" in capsys.readouterr().err
    (tmp_path / "official" / "generator_v1").unlink()
    server.files["/official/generator_v1"] = _bytes(10_000, seed=1)  # the publisher changed the file
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "vocoder/hifigan-matcha:" in err and "differs from the expected" in err
    assert not (tmp_path / "official" / "generator_v1").exists()
    assert (tmp_path / "official" / f"generator_v1{MISMATCH}").is_file()


def test_a_locked_file_is_hashed_again_only_when_its_length_or_mtime_moved(server, tmp_path):
    data = server.files["/official/generator_v1"] = _bytes(10_000)
    artefacts = artefacts_named(["vocoder/hifigan-matcha"])
    assert not fetch(artefacts, tmp_path, mirror=server.url, progress=False).failed
    placed = tmp_path / "official" / "generator_v1"
    assert changed_since_fetch(artefacts, tmp_path, rehash=True) == {}
    before = placed.stat().st_mtime_ns
    placed.write_bytes(bytes(len(data)))
    os.utime(placed, ns=(before, before))  # same length and mtime as fetch saw: trusted without reading it
    assert changed_since_fetch(artefacts, tmp_path, rehash=True) == {}
    os.utime(placed, ns=(before + 10**9, before + 10**9))  # touched: read again
    assert "has sha256" in changed_since_fetch(artefacts, tmp_path, rehash=True)["vocoder/hifigan-matcha"]
    assert changed_since_fetch(artefacts, tmp_path, rehash=False) == {}  # `run --plan`: lengths only
    placed.write_bytes(data)
    assert changed_since_fetch(artefacts, tmp_path, rehash=True) == {}


def test_one_failure_does_not_stop_the_others(server, tmp_path, capsys):
    server.files["/official/generator_v1"] = _bytes(1000)
    argv = ["fetch", "vocoder/hifigan-matcha", "gradtts/pretrained", "matcha/pretrained", "--workdir", str(tmp_path),
            "--mirror", server.url, "--quiet"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "fetched: vocoder/hifigan-matcha" in captured.out and "1 of 3 artefacts in place" in captured.out
    assert "matcha/pretrained:" in captured.err and "HTTP 404" in captured.err


def test_a_zip_release_gives_its_file_and_companions_and_a_mirror_folder_works(tmp_path, monkeypatch):
    release = _zip({"tts_models--en--ljspeech--vits/model_file.pth": b"weights",
                    "tts_models--en--ljspeech--vits/config.json": b"{}", "tts_models--en--ljspeech--vits/x.txt": b""})
    mirror = tmp_path / "mirror" / "downloads"
    mirror.mkdir(parents=True)
    (mirror / "tts_models--en--ljspeech--vits.zip").write_bytes(release)
    work = tmp_path / "work"
    report = fetch(artefacts_named(["vits/pretrained"]), work, mirror=str(tmp_path / "mirror"), progress=False)
    assert [o.status for o in report.outcomes] == ["fetched"]
    assert sorted(p.name for p in (work / "official").iterdir()) == ["config.json", "model_file.pth"]
    assert not (work / "downloads" / "tts_models--en--ljspeech--vits.zip").exists()  # taken apart, then deleted
    model = tmp_path / "mirror" / "models" / "xls-r-2b"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    monkeypatch.setenv("SOURCETRACE_MODELS", str(tmp_path / "models"))
    assert not fetch(artefacts_named(["xls-r-2b"]), work, mirror=str(tmp_path / "mirror"), progress=False).failed
    assert (tmp_path / "models" / "xls-r-2b" / "config.json").read_text() == "{}"
    assert '[file."models/xls-r-2b"]' in (work / LOCK_FILE).read_text()  # the folder's hash, pinned like a file's
    shutil.rmtree(tmp_path / "models" / "xls-r-2b")
    (model / "config.json").write_text('{"changed": 1}')  # the mirror's copy changed since
    [outcome] = fetch(artefacts_named(["xls-r-2b"]), work, mirror=str(tmp_path / "mirror"), progress=False).outcomes
    assert outcome.status == "failed" and "not the" in outcome.message and "check the mirror's copy" in outcome.message
    assert not (tmp_path / "models" / "xls-r-2b").exists()


def test_hifitts_is_streamed_keeping_only_the_recipes_speakers(server, tmp_path):
    members = {"hi_fi_tts_v0/92_manifest_clean_train.json": b"{}", "hi_fi_tts_v0/audio/92_clean/a/1.flac": b"92",
               "hi_fi_tts_v0/9136_manifest_other_train.json": b"{}\n", "hi_fi_tts_v0/9136_manifest_other_dev.json": b"",
               "hi_fi_tts_v0/audio/9136_other/b/2.flac": _bytes(50_000), "hi_fi_tts_v0/LICENSE": b"cc"}
    archive = server.files["/downloads/hi_fi_tts_v0.tar.gz"] = _tar(members)
    [hifitts] = artefacts_named(["hifitts"])
    hifitts = replace(hifitts, speakers=("9136",))
    report = fetch([hifitts], tmp_path, mirror=server.url, progress=False)
    assert [o.status for o in report.outcomes] == ["fetched"], report.outcomes
    dest = tmp_path / "data" / "hi_fi_tts_v0"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "9136_manifest_other_dev.json", "9136_manifest_other_train.json", "audio/9136_other/b/2.flac"]
    assert (dest / "audio/9136_other/b/2.flac").read_bytes() == members["hi_fi_tts_v0/audio/9136_other/b/2.flac"]
    assert hifitts.present(tmp_path) and not (tmp_path / "downloads").exists()  # the archive was never stored
    assert report.outcomes[0].sha256 == hashlib.sha256(archive).hexdigest()
    more = replace(hifitts, speakers=("92", "9136"))
    assert not more.present(tmp_path) and more.missing_speakers(tmp_path) == ("92",)
    fetch([more], tmp_path, mirror=server.url, progress=False)
    assert (dest / "audio/92_clean/a/1.flac").read_bytes() == b"92" and more.present(tmp_path)
    [outcome] = fetch([replace(hifitts, speakers=("9136", "6097"))], tmp_path, mirror=server.url, progress=False).outcomes
    assert outcome.status == "failed" and "*/6097_manifest_*.json" in outcome.message


def test_a_hugging_face_folder_comes_through_snapshot_download_at_a_locked_commit(server, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    files = {"config.json": b'{"model_type": "wav2vec2"}', "preprocessor_config.json": b"{}",
             "pytorch_model.bin": _bytes(30_000), "README.md": b"not taken"}
    server.hub = {COMMIT: files}
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("SOURCETRACE_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    [model] = artefacts_named(["xls-r-2b"])
    report = fetch([model], tmp_path / "work", progress=False)
    assert [o.status for o in report.outcomes] == ["fetched"], report.outcomes
    folder = tmp_path / "models" / "xls-r-2b"
    assert {p.name for p in folder.iterdir() if p.is_file()} == {"config.json", "preprocessor_config.json",
                                                                  "pytorch_model.bin"}
    assert (folder / "pytorch_model.bin").read_bytes() == files["pytorch_model.bin"]
    lock = (tmp_path / "work" / LOCK_FILE).read_text()
    assert f'commit = "{COMMIT}"' in lock and 'repo = "facebook/wav2vec2-xls-r-2b"' in lock
    # the hub's main moves on; a later fetch asks for the locked commit, and refuses when it is gone
    shutil.rmtree(folder)
    server.hub = {COMMIT: files, "f" * 40: {**files, "pytorch_model.bin": b"new"}}
    server.hub_main = "f" * 40
    fetch([model], tmp_path / "work", progress=False)
    assert (folder / "pytorch_model.bin").read_bytes() == files["pytorch_model.bin"]
    assert any(p == f"/api/models/facebook/wav2vec2-xls-r-2b/revision/{COMMIT}" for _, p, _ in server.requests)
    shutil.rmtree(folder)
    server.hub = {"f" * 40: server.hub["f" * 40]}
    [outcome] = fetch([model], tmp_path / "work", progress=False).outcomes
    assert outcome.status == "failed" and "xls-r-2b" in outcome.message and not folder.exists()


def _fetch_command(workdir: Path, url: str, names: list[str]) -> list[str]:
    return [sys.executable, "-m", "sourcetrace.cli", "fetch", *names, "--workdir", str(workdir), "--mirror", url,
            "--quiet", "--jobs", "2"]


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but the mtimes `run` compares (fetch.checked.json): they differ from run to run."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != CHECKED}


def test_a_fetch_killed_at_random_points_and_rerun_gives_the_same_files(server, tmp_path):
    server.files["/official/generator_v1"] = _bytes(400_000, seed=1)
    server.files["/downloads/tts_models--en--ljspeech--vits.zip"] = _zip(
        {"v/model_file.pth": _bytes(300_000, seed=2), "v/config.json": b"{}"})
    server.files["/downloads/LJSpeech-1.1.tar.bz2"] = _tar(
        {"LJSpeech-1.1/metadata.csv": b"LJ001-0001|a|a\n", "LJSpeech-1.1/wavs/LJ001-0001.wav": _bytes(200_000, seed=3)},
        mode="w:bz2")
    [hifitts] = artefacts_named(["hifitts"])
    server.files["/downloads/hi_fi_tts_v0.tar.gz"] = _tar(
        {**{f"hi_fi_tts_v0/{s}_manifest_clean_train.json": s.encode() for s in hifitts.speakers},
         "hi_fi_tts_v0/audio/92_clean/1.flac": _bytes(200_000, 4)})
    server.files["/nltk_data/corpora/cmudict.zip"] = _zip({"cmudict/cmudict": _bytes(200_000, 5), "cmudict/README": b"r"})
    names = ["vocoder/hifigan-matcha", "vits/pretrained", "ljspeech", "hifitts", "nltk/cmudict"]
    reference = tmp_path / "reference"
    assert not fetch(artefacts_named(names), reference, mirror=server.url, progress=False).failed
    expected, total = _tree(reference), server.sent
    assert "LJSpeech-1.1/metadata.csv" not in expected and "data/LJSpeech-1.1/metadata.csv" in expected
    server.delay = 0.004
    work, rng, killed = tmp_path / "work", random.Random(0), 0
    for _ in range(3):
        start = server.sent
        threshold = start + rng.randrange(total // 3)
        process = subprocess.Popen(_fetch_command(work, server.url, names), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        while process.poll() is None and server.sent < threshold:
            time.sleep(0.001)
        killed += process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert killed >= 2  # most kills landed while it fetched
    server.delay = 0
    assert not fetch(artefacts_named(names), work, mirror=server.url, progress=False).failed
    assert _tree(work) == expected


def test_a_full_disk_names_the_file_system_and_the_rerun_resumes_after_space_is_freed(server, tmp_path):
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs user and mount namespaces (unshare -rm) for a small tmpfs")
    data = server.files["/official/generator_v1"] = _bytes(300_000)
    small = tmp_path / "small"
    small.mkdir()
    command = " ".join(_fetch_command(small, server.url, ["vocoder/hifigan-matcha"]))
    script = (f"mount -t tmpfs -o size=128k tmpfs {small} && {{ {command}; echo rc=$?; }}; "
              f"mount -o remount,size=1m {small} && {command} && cp {small}/official/generator_v1 {tmp_path}/got")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert f"no space left on the file system {small}" in done.stderr and "rc=1" in done.stdout, done.stderr
    assert "free space and rerun to resume" in done.stderr
    assert (tmp_path / "got").read_bytes() == data
    assert server.ranges("/official/generator_v1")[-1].startswith("bytes=")
