"""Downloads for `sourcetrace fetch`, the one command that reaches the network (every other command
reads local files only: `core.offline`).

A file is fetched into `<name>.part` beside its destination, resumed from there with an HTTP Range
request after a cut connection or a killed process, checked (length, sha256) and only then renamed
to its name: a complete name is never a partial file. A file that fails its check is kept aside as
`<name>.sha256-mismatch` or `<name>.wrong-length`, never used. Redirects are followed (urllib), and
Google Drive's "cannot scan this file for viruses" page is answered (its form is submitted) so the
file itself comes back; a redirect from https to http is refused. A tar archive can be streamed,
keeping only the members asked for; archive members that would leave the destination (absolute
names, `..`), links, and two members landing at one place are never extracted.

Every failure is a `DownloadError` whose one-line message names the URL or file and what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import html.parser
import http.client
import os
import re
import shutil
import tarfile
import threading
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sourcetrace.core.errors import SourcetraceError
from sourcetrace.core.fileio import NO_SPACE, write_text_atomic

PART = ".part"
MISMATCH = ".sha256-mismatch"
WRONG_LENGTH = ".wrong-length"
CHUNK = 1 << 20
ATTEMPTS = 3            # connections per file in one fetch: a cut connection is resumed this many times
TIMEOUT_S = 60.0
USER_AGENT = "sourcetrace-fetch"

Progress = Callable[[int], None]  # called with the number of new bytes


class DownloadError(SourcetraceError, RuntimeError):
    """A download that failed; the message names the URL or file and the fix."""


class ChecksumMismatch(DownloadError):
    pass


class _RangeNotSatisfiable(Exception):
    """HTTP 416 to a Range request: `total` is the length the server states (Content-Range: bytes */N)."""

    def __init__(self, total: int | None):
        super().__init__(total)
        self.total = total


class _RangeIgnored(ConnectionError):
    """The server sent the whole file to a Range request: the part is gone, fetch again from byte 0."""


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PART)


def is_url(text: str) -> bool:
    """A URL (any scheme, in any case: `HTTP://host/m` too), not a local path."""
    return re.match(r"^[a-z][a-z0-9+.-]*://", text, re.IGNORECASE) is not None


def drive_download_url(url: str) -> str:
    """A Google Drive file's download address for a share link (`.../file/d/ID/view`, `open?id=ID`,
    `uc?id=ID`); any other URL unchanged."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.hostname != "drive.google.com":
        return url
    match = re.match(r"/file/d/([\w-]+)", parsed.path)
    file_id = match.group(1) if match else urllib.parse.parse_qs(parsed.query).get("id", [""])[0]
    if not file_id:
        return url
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


class _DriveForm(html.parser.HTMLParser):
    """The confirmation form of Drive's large-file page: its action and hidden inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and values.get("id") == "download-form":
            self.action, self._inside = values.get("action", ""), True
        elif tag == "input" and self._inside and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def _drive_confirmation(page: bytes, url: str) -> str | None:
    """The URL Drive's virus-scan warning page submits to get the file, or None if `page` is not one."""
    form = _DriveForm()
    form.feed(page.decode("utf-8", "replace"))
    if form.action is None:
        return None
    action = urllib.parse.urljoin(url, form.action)
    return f"{action}?{urllib.parse.urlencode(form.fields)}"


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Redirects followed, except from https to http (the file would come unencrypted and unauthenticated)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = urllib.parse.urljoin(req.full_url, newurl)
        if req.full_url.lower().startswith("https:") and not new.lower().startswith("https:"):
            raise DownloadError(f"{req.full_url}: the server redirects to {new}, which is not https: refused; fetch "
                                "from a lab copy with --mirror, or from the https address it should give")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoDowngrade)


def _open(url: str, offset: int) -> http.client.HTTPResponse:
    """GET `url` (redirects followed, but not down to http) from byte `offset`; errors become one-line
    DownloadErrors."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return _OPENER.open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            match = re.match(r"bytes \*/(\d+)", exc.headers.get("Content-Range", ""))
            raise _RangeNotSatisfiable(int(match.group(1)) if match else None) from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason} (the file is not there: check the URL, "
                            "or the mirror's copy)") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"{_host(url)}: host unreachable ({exc.reason}) fetching {url}: check the network, "
                            "or fetch from a lab copy with --mirror") from None
    except (OSError, http.client.HTTPException) as exc:  # the socket failed while the headers came
        raise DownloadError(f"{_host(url)}: host unreachable ({type(exc).__name__}: {exc}) fetching {url}: "
                            "check the network, or fetch from a lab copy with --mirror") from None


def _total_length(response: http.client.HTTPResponse, offset: int) -> int | None:
    """The whole file's length as the server states it (Content-Range of a 206, else Content-Length)."""
    content_range = response.headers.get("Content-Range", "")
    match = re.match(r"bytes (?:\d+-\d+|\*)/(\d+)", content_range)
    if match:
        return int(match.group(1))
    length = response.headers.get("Content-Length")
    return int(length) + (offset if response.status == 206 else 0) if length and length.isdigit() else None


@dataclass
class Fetched:
    path: Path
    url: str          # the URL (or mirror path) it came from
    sha256: str
    size: int


def _hash_file(path: Path) -> tuple[hashlib._Hash, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
            size += len(block)
    return digest, size


def _no_space(exc: OSError, dest: Path, part: Path) -> DownloadError:
    folder = dest.parent
    mount = folder.resolve()
    while not os.path.ismount(mount):
        mount = mount.parent
    kept = f"{part.stat().st_size} bytes kept in {part.name}; " if part.is_file() else ""
    return DownloadError(f"{dest}: no space left on the file system {mount} (`df -h {folder}`): {kept}free space "
                         f"and rerun to resume ({os.strerror(exc.errno or 0)})")


def _file_error(exc: OSError, path: Path, what: str) -> DownloadError:
    """A local file's failure as a one-line DownloadError (a full disk: the file system's message)."""
    if exc.errno in NO_SPACE:
        return _no_space(exc, path, path)
    return DownloadError(f"{path}: {what} ({os.strerror(exc.errno) if exc.errno else exc}"
                         f"{f': {exc.filename}' if exc.filename and exc.filename != str(path) else ''}): "
                         "fix it and rerun")


def _rename(part: Path, final: Path) -> None:
    try:
        os.replace(part, final)
    except OSError as exc:
        raise _file_error(exc, final, f"cannot take its name from {part.name}") from None


def _set_aside(part: Path, dest: Path, suffix: str) -> Path:
    aside = dest.with_name(dest.name + suffix)
    _rename(part, aside)
    return aside


def _copy_local(source: Path, part: Path, offset: int, digest, progress: Progress | None) -> None:
    if not source.is_file():
        raise DownloadError(f"{source}: no such file in the mirror (the same relative path as the catalogue's "
                            "destination is expected)")
    with open(source, "rb") as src, open(part, "ab") as out:
        src.seek(offset)
        for block in iter(lambda: src.read(CHUNK), b""):
            out.write(block)
            digest.update(block)
            if progress:
                progress(len(block))


class _NetworkFailed(ConnectionError):
    """The connection failed mid-file with an error of its own (EHOSTUNREACH, an SSLError): like a cut,
    the part is kept and resumed; the local file is not at fault."""


def _read(response: http.client.HTTPResponse) -> bytes:
    try:
        return response.read(CHUNK)
    except http.client.HTTPException:
        raise
    except OSError as exc:
        raise _NetworkFailed(f"{type(exc).__name__}: {exc}") from exc


def _transfer(url: str, part: Path, digest, progress: Progress | None) -> int | None:
    """Append the rest of `url` to `part`; returns the total length the server states, or None.
    Raises http.client.IncompleteRead/ConnectionError when the connection is cut or fails."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset)
    except _RangeNotSatisfiable as exc:
        if exc.total == offset:  # the part holds the whole file already
            return exc.total
        raise DownloadError(f"{url}: the server refused to resume at byte {offset}; delete {part} and rerun") from None
    with contextlib.closing(response):
        if response.headers.get_content_type() == "text/html" and not url.lower().endswith((".html", ".htm")):
            page = response.read(1 << 20)
            confirmed = _drive_confirmation(page, response.geturl())
            if confirmed is None:
                raise DownloadError(f"{url}: the server sent a web page, not the file (a login or an error "
                                    "page): open the URL in a browser to see why")
            return _transfer(confirmed, part, digest, progress)
        if offset and response.status != 206:  # the server ignores Range: start again from byte 0
            part.unlink()
            raise _RangeIgnored
        total = _total_length(response, offset)
        with open(part, "ab") as out:
            while True:
                block = _read(response)
                if not block:
                    break
                out.write(block)
                digest.update(block)
                if progress:
                    progress(len(block))
            out.flush()
            os.fsync(out.fileno())
        received = part.stat().st_size
        if total is not None and received < total:
            raise http.client.IncompleteRead(b"", total - received)
        return total


Verified = Callable[[Fetched], None]  # told what arrived, checked, before it takes its name (fetch.lock)


def download_file(urls: Iterable[str], dest: str | os.PathLike, *, sha256: str | None = None,
                  size: int | None = None, progress: Progress | None = None,
                  on_verified: Verified | None = None) -> Fetched:
    """Fetch the first of `urls` that answers into `dest` (a URL or a local path of a mirror folder),
    resuming `dest.part` if a previous fetch left one. `sha256`/`size`: what the file must be, where
    known; `on_verified` is called once it passed, before the rename. Raises DownloadError
    (ChecksumMismatch for a wrong hash: the file is set aside)."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _file_error(exc, dest.parent, "cannot be made to hold the download") from None
    part = part_path(dest)
    errors = []
    for url in urls:
        try:
            return _download_one(url, dest, part, sha256, size, progress, on_verified)
        except ChecksumMismatch:
            raise
        except DownloadError as exc:
            errors.append(str(exc))
    raise DownloadError("; ".join(errors) if errors else f"{dest}: no URL to fetch it from")


def _download_one(url: str, dest: Path, part: Path, sha256: str | None, size: int | None,
                  progress: Progress | None, on_verified: Verified | None) -> Fetched:
    local = None if is_url(url) else Path(url)
    if progress and part.exists():
        progress(part.stat().st_size)  # what an earlier fetch left, counted once
    total: int | None = None
    for attempt in range(1, ATTEMPTS + 1):
        digest, _ = _hash_file(part) if part.exists() else (hashlib.sha256(), 0)
        try:
            if local is not None:
                _copy_local(local, part, part.stat().st_size if part.exists() else 0, digest, progress)
                total = local.stat().st_size
            else:
                total = _transfer(url, part, digest, progress)
            break
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise _no_space(exc, dest, part) from None
            if not isinstance(exc, ConnectionError) and exc.errno is not None:  # a local file's fault
                raise DownloadError(f"{exc.filename or part}: {os.strerror(exc.errno)}") from None
            cut = str(exc) if isinstance(exc, _NetworkFailed) else f"{type(exc).__name__}: {exc}"
        except http.client.HTTPException as exc:  # IncompleteRead: the connection was cut mid-file
            cut = f"{type(exc).__name__}"
        if attempt == ATTEMPTS:
            held = part.stat().st_size if part.exists() else 0
            raise DownloadError(f"{url}: the connection was cut after {held} bytes, {ATTEMPTS} times ({cut}); "
                                f"they are kept in {part}: rerun to resume") from None
    received = part.stat().st_size
    if (size is not None and received != size) or (total is not None and received != total):
        aside = _set_aside(part, dest, WRONG_LENGTH)
        expected = size if size is not None else total
        raise DownloadError(f"{dest}: wrong length from {url}: {received} bytes, expected {expected}; set aside "
                            f"as {aside.name} (not used); check the URL or the mirror's copy, delete it and rerun")
    found = digest.hexdigest()
    if sha256 and found != sha256:
        aside = _set_aside(part, dest, MISMATCH)
        raise ChecksumMismatch(f"{dest}: sha256 {found} from {url} differs from the expected {sha256}; set aside "
                               f"as {aside.name} (not used): the remote file changed or is corrupt")
    fetched = Fetched(dest, url, found, received)
    if on_verified:
        on_verified(fetched)
    _rename(part, dest)
    return fetched


# ---- archives ------------------------------------------------------------------------------------
class _CountingReader:
    """A response read through, counting bytes for the progress bar and the sha256."""

    def __init__(self, raw, progress: Progress | None):
        self.raw, self.progress, self.digest, self.size = raw, progress, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        block = self.raw.read(n)
        self.digest.update(block)
        self.size += len(block)
        if self.progress and block:
            self.progress(len(block))
        return block


def _member_target(name: str, strip: int, flatten: bool) -> PurePosixPath | None:
    """Where an archive member goes, relative to the destination: None for a path that would leave it."""
    path = PurePosixPath(name)
    parts = [p for p in path.parts if p not in ("", ".")]
    if path.is_absolute() or ".." in parts:
        return None
    parts = parts[-1:] if flatten else parts[strip:]
    return PurePosixPath(*parts) if parts else None


class _Staging:
    """Members written under `<dest>/.fetch-staging-<archive>/` (one folder per archive: two archives
    may unpack into one folder at once) and moved to their places only when the archive has been read
    whole, the files of `last` (globs) after every other: a killed fetch leaves nothing that looks
    complete, and a rerun starts the staging folder afresh. Two members landing at one place are
    refused (nothing is placed): which one the user wants is not ours to guess."""

    def __init__(self, dest: Path, last: Iterable[str], archive: str):
        self.dest, self.last, self.archive = dest, tuple(last), archive
        self.folder = dest / f".fetch-staging-{PurePosixPath(urllib.parse.urlsplit(archive).path).name}"
        try:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
        except OSError as exc:
            raise _file_error(exc, dest, f"cannot unpack {archive} into it") from None
        self.written: list[PurePosixPath] = []

    def write(self, relative: PurePosixPath, source) -> None:
        if relative in self.written:
            raise DownloadError(f"{self.archive}: two members land at {self.dest / relative}; nothing of it was "
                                "placed: unpack it by hand, keeping the one you want")
        target = self.folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
        self.written.append(relative)

    def commit(self) -> list[Path]:
        def is_last(relative: PurePosixPath) -> bool:
            return any(fnmatch.fnmatch(str(relative), g) for g in self.last)

        in_the_way = [self.dest / r for r in self.written if (self.dest / r).is_dir()]
        if in_the_way:
            self.discard()
            raise DownloadError(f"{in_the_way[0]}: a folder is where {self.archive} puts a file: move it away and rerun")
        placed = []
        for relative in sorted(self.written, key=lambda r: (is_last(r), str(r))):
            final = self.dest / relative
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _file_error(exc, final.parent, f"cannot hold what {self.archive} puts there") from None
            _rename(self.folder / relative, final)
            placed.append(final)
        shutil.rmtree(self.folder, ignore_errors=True)
        return placed

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _wanted(name: str, members: Iterable[str], flatten: bool) -> bool:
    return any(fnmatch.fnmatch(PurePosixPath(name).name if flatten else name, p) for p in members)


def stream_tar(url: str, dest: str | os.PathLike, members: Iterable[str], *, strip: int = 0,
               last: Iterable[str] = (), sha256: str | None = None, progress: Progress | None = None,
               on_verified: Verified | None = None) -> Fetched:
    """Read the tar archive at `url` (or a mirror's local path; any compression tarfile knows) as it
    arrives and keep only the members whose names match `members` (fnmatch patterns), the first `strip`
    path components removed, under `dest`; the archive itself is never stored. Nothing is placed
    unless the whole archive was read and its sha256 is `sha256` (where given). A cut stream restarts
    from the beginning on the next fetch (a compressed tar cannot be entered in the middle)."""
    dest, members = Path(dest), tuple(members)
    local = None if is_url(url) else Path(url)
    if local is not None and not local.is_file():
        raise DownloadError(f"{local}: no such file in the mirror (the catalogue's relative path is expected)")
    staging = _Staging(dest, last, url)
    raw = open(local, "rb") if local is not None else _open(url, 0)  # noqa: SIM115 - closed below
    reader = _CountingReader(raw, progress)
    try:
        with contextlib.closing(raw), tarfile.open(fileobj=reader, mode="r|*") as archive:  # type: ignore[call-overload]
            for member in archive:
                target = _member_target(member.name, strip, False)
                if not member.isfile() or target is None or not _wanted(member.name, members, False):
                    continue
                source = archive.extractfile(member)
                if source is not None:
                    staging.write(target, source)
            while reader.read(CHUNK):  # the rest (tar padding): the sha256 covers the whole archive
                pass
        found = reader.digest.hexdigest()
        if not staging.written:
            raise DownloadError(f"{url}: no member of the archive matches {', '.join(members)}")
        if sha256 and found != sha256:
            raise ChecksumMismatch(f"{url}: the archive's sha256 {found} differs from the expected {sha256}: the "
                                   "remote file changed or is corrupt; nothing of it was kept")
        fetched = Fetched(dest, url, found, reader.size)
        if on_verified:
            on_verified(fetched)
        staging.commit()
    except OSError as exc:
        staging.discard()
        if exc.errno in NO_SPACE:
            raise _no_space(exc, dest, staging.folder) from None
        raise DownloadError(f"{url}: the archive stream failed after {reader.size} bytes ({exc}); rerun to "
                            "fetch it again (a streamed archive restarts from its beginning)") from None
    except (tarfile.TarError, EOFError, http.client.HTTPException, DownloadError) as exc:
        staging.discard()
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(f"{url}: the archive stream failed after {reader.size} bytes ({type(exc).__name__}: "
                            f"{exc}); rerun to fetch it again (a streamed archive restarts from its beginning)") from None
    return fetched


def unzipped(archive: Path) -> bool:
    """Every file of the zip `archive` is beside it, where `unpack_archive(archive, archive.parent, ("*",))`
    puts them (False for a file that is not a readable zip)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except (OSError, zipfile.BadZipFile):
        return False
    targets = [t for t in (_member_target(n, 0, False) for n in names) if t is not None]
    return bool(targets) and all((archive.parent / t).is_file() for t in targets)


def folder_sha256(folder: Path) -> tuple[str, int]:
    """A folder's sha256 (over its files' relative paths and sha256s, sorted) and its bytes in all."""
    digest, total = hashlib.sha256(), 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        file_digest, size = _hash_file(path)
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_digest.hexdigest()}\n".encode())
        total += size
    return digest.hexdigest(), total


def unpack_archive(archive: Path, dest: Path, members: Iterable[str], *, strip: int = 0, flatten: bool = False,
                   last: Iterable[str] = ()) -> list[Path]:
    """Take the members of a zip or tar file matching `members` (fnmatch; of the base name with
    `flatten`, which drops every folder) out into `dest`, all placed at once (`_Staging`)."""
    members = tuple(members)
    staging = _Staging(dest, last, str(archive))
    try:
        with contextlib.ExitStack() as stack:
            if zipfile.is_zipfile(archive):
                zf = stack.enter_context(zipfile.ZipFile(archive))
                for name in zf.namelist():
                    target = _member_target(name, strip, flatten)
                    if not name.endswith("/") and target is not None and _wanted(name, members, flatten):
                        with zf.open(name) as source:
                            staging.write(target, source)
            else:
                tar = stack.enter_context(tarfile.open(archive))
                for member in tar:
                    target = _member_target(member.name, strip, flatten)
                    contents = tar.extractfile(member) if member.isfile() else None
                    if contents is not None and target is not None and _wanted(member.name, members, flatten):
                        staging.write(target, contents)
    except OSError as exc:
        staging.discard()
        if exc.errno in NO_SPACE:
            raise _no_space(exc, dest, staging.folder) from None
        raise _file_error(exc, archive, f"unpacking into {dest} failed") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, DownloadError) as exc:
        staging.discard()
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(f"{archive}: not a readable zip or tar archive ({type(exc).__name__}): delete it and "
                            "rerun to fetch it again (if it comes back broken, so is the copy at its URL or "
                            "mirror)") from None
    names = {str(r) for r in staging.written}
    missing = [m for m in members if not any(fnmatch.fnmatch(n, m) for n in names)] if flatten else []
    if missing or not staging.written:
        staging.discard()
        raise DownloadError(f"{archive}: the archive holds no {', '.join(missing or members)}")
    return staging.commit()


# ---- the lock file -------------------------------------------------------------------------------
def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class LockFile:
    """`fetch.lock` in the work folder: the sha256 (and length) of every artefact fetched whose publisher
    gives no hash, and the commit each Hugging Face folder resolved to, as first fetched. Later fetches
    refuse a file that differs. A hash is `pending` from the moment its file is verified until the
    artefact is complete (unpacked where it is an archive), then `file`: a broken archive is never
    pinned, and a fetch killed in between confirms it on the next run (`confirm`). Thread-safe; each
    change re-reads the file and rewrites it atomically (the fetch holding `FetchLock` is its only
    writer, but what another wrote before is kept)."""

    TABLES = ("file", "pending", "revision")

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self.files: dict[str, dict] = {}
        self.pending: dict[str, dict] = {}
        self.revisions: dict[str, dict] = {}
        self._read()

    def _read(self) -> None:
        try:
            raw = tomllib.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else {}
        except tomllib.TOMLDecodeError as exc:
            raise DownloadError(f"{self.path}: not valid TOML ({exc}); fix it or delete it (the hashes are "
                                "recorded again on the next fetch)") from None
        self.files, self.pending, self.revisions = (dict(raw.get(t, {})) for t in self.TABLES)

    def sha256(self, key: str) -> str | None:
        return self.files.get(key, {}).get("sha256")

    def revision(self, key: str) -> str | None:
        return self.revisions.get(key, {}).get("commit")

    def _change(self, edit: Callable[[], object]) -> None:
        """`edit` applied to the file as it is now (re-read), then written; an edit returning False changed nothing."""
        with self._lock:
            self._read()
            if edit() is not False:
                write_text_atomic(self.path, self.text())

    def record_file(self, key: str, url: str, sha256: str, size: int) -> None:
        def edit() -> None:
            self.pending.pop(key, None)
            self.files[key] = {"url": url, "sha256": sha256, "size": size}
        self._change(edit)

    def record_pending(self, key: str, url: str, sha256: str, size: int) -> None:
        self._change(lambda: self.pending.__setitem__(key, {"url": url, "sha256": sha256, "size": size}))

    def confirm(self, key: str) -> None:
        """The pending hash of `key` pinned: its artefact is complete."""
        def edit() -> bool:
            entry = self.pending.pop(key, None)
            if entry is not None:
                self.files.setdefault(key, entry)
            return entry is not None
        self._change(edit)

    def record_revision(self, key: str, repo: str, commit: str) -> None:
        self._change(lambda: self.revisions.__setitem__(key, {"repo": repo, "commit": commit}))

    def text(self) -> str:
        lines = ["# sourcetrace fetch: what each artefact was when first fetched (commit it to pin a lab's copies;",
                 "# a pending hash is of a download not yet unpacked, pinned only once it is)"]
        for table, entries in zip(self.TABLES, (self.files, self.pending, self.revisions), strict=True):
            for key in sorted(entries):
                lines.append(f"\n[{table}.{_toml_string(key)}]")
                for field, value in entries[key].items():
                    lines.append(f"{field} = {value if isinstance(value, int) else _toml_string(str(value))}")
        return "\n".join(lines) + "\n"


class FetchLock:
    """An exclusive flock on `<workdir>/fetch.lock.pid` while a fetch runs: a second fetch in the same
    work folder is refused, naming the process that holds it (two would append to one `.part` and
    rewrite each other's fetch.lock). The kernel drops the lock when its process dies, even by SIGKILL."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def __enter__(self) -> FetchLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DownloadError(f"{self.path}: another fetch (pid {holder}) is running in {self.path.parent}: wait "
                                "for it to finish, or fetch into another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no pid left behind by a fetch that ended
            os.close(self._fd)  # closing drops the flock
            self._fd = None
