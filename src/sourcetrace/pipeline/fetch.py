"""`sourcetrace fetch`: every input a recipe names that can be downloaded (datasets, official
checkpoints, SSL model folders, the NLTK data of ESPnet's g2p), or single artefacts by name. The one
command that reaches the network; runs stay offline (`core.offline`).

The catalogue is read from the layer that owns each fact: the official checkpoints from
checkpoints/registry.toml, the datasets from datasets/sources.toml, the NLTK data from
generators/sources.toml, the SSL models from attribution/extractors/models/ (the model's JSON names
its Hugging Face repository, sources.toml its revision and licence). Downloads are resumable and
checked (core/download.py); where a publisher gives no sha256, the first fetch records one in
`<workdir>/fetch.lock` once the artefact is complete (unpacked where it is an archive), and every later
fetch refuses a file that differs from it; a model folder copied from a mirror folder is pinned the
same way (a sha256 over its files). One fetch at a time in a work folder (`FetchLock`). `run` and
`run --plan` check the files fetch.lock lists through `changed_since_fetch`.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import json
import os
import shutil
import sys
import threading
import tomllib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from sourcetrace.checkpoints.registry import OfficialCheckpoint, load_registry
from sourcetrace.core.download import (
    PART,
    ChecksumMismatch,
    DownloadError,
    Fetched,
    FetchLock,
    LockFile,
    download_file,
    drive_download_url,
    folder_sha256,
    is_url,
    stream_tar,
    unpack_archive,
    unzipped,
)
from sourcetrace.core.errors import SourcetraceError, UsageError
from sourcetrace.core.fileio import read_user_text, sha256_file, write_json_atomic
from sourcetrace.core.offline import default_models_dir, extractor_model
from sourcetrace.core.schema import FETCH_MODEL, FETCH_SOURCE, check
from sourcetrace.pipeline.recipe import StudyRecipe, load_study_recipe

LOCK_FILE = "fetch.lock"
RUNNING = "fetch.lock.pid"     # flocked while a fetch runs in the work folder (FetchLock)
CHECKED = "fetch.checked.json"  # each locked file's length and mtime when its sha256 was last found right
OFFICIAL = "official"          # where `fetch NAME` puts an official checkpoint, relative to the workdir
DOWNLOADS = "downloads"        # archives while they are taken apart
MODELS = "models"              # the relative path of an SSL model folder in a mirror
SOURCES = (("sourcetrace.datasets", "sources.toml"), ("sourcetrace.generators", "sources.toml"))
SPEAKER = "{speaker}"


class FetchError(SourcetraceError, ValueError):
    pass


def _per_speaker(patterns: Iterable[str], speakers: Iterable[str]) -> tuple[str, ...]:
    """`patterns` with {speaker} written out for each speaker (a pattern without it: once)."""
    return tuple(p.replace(SPEAKER, s) for p in patterns for s in (tuple(speakers) if SPEAKER in p else ("",)))


@dataclass(frozen=True)
class Artefact:
    """One thing `fetch` can get. `path`: its destination relative to the work folder (or absolute);
    `key`: its relative path in a mirror and its name in fetch.lock (the catalogue's default place)."""

    name: str
    title: str
    urls: tuple[str, ...]
    size: int | None
    sha256: str
    licence: str
    citation: str
    path: str
    key: str
    unpack: str                        # file | zip-members | archive | stream | hf
    members: tuple[str, ...] = ()      # archive paths to keep (fnmatch; {speaker}); zip-members: base names
    strip: int = 0
    done_when: tuple[str, ...] = ()    # globs under the destination that say it is complete
    unzip: bool = False                # a zip kept whole and unpacked beside itself (NLTK's layout)
    speakers: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()      # other names of an official file (Matcha's vocoder)
    companion_of: str = ""             # the official checkpoint id a companion file goes with
    repo: str = ""                     # hf: the Hugging Face repository, its revision and the files taken
    revision: str = ""
    allow: tuple[str, ...] = ()
    models_dir: Path | None = None
    note: str = ""                     # why there is no URL: how to get it by hand

    def destination(self, workdir: str | os.PathLike) -> Path:
        if self.unpack == "hf":
            assert self.models_dir is not None
            return self.models_dir / self.path
        return Path(workdir) / self.path

    def missing_speakers(self, workdir: str | os.PathLike) -> tuple[str, ...]:
        dest = self.destination(workdir)
        return tuple(s for s in self.speakers
                     if not all(any(dest.glob(g.replace(SPEAKER, s))) for g in self.done_when if SPEAKER in g))

    def present(self, workdir: str | os.PathLike) -> bool:
        dest = self.destination(workdir)
        if self.unpack == "file":
            found = any((dest.parent / n).is_file() for n in (dest.name, *self.aliases))
            return found and (not self.unzip or unzipped(dest))
        if self.unpack == "zip-members":
            return all((dest.parent / n).is_file() for n in self.members)
        if self.unpack == "hf":
            return (dest / "config.json").is_file()
        return dest.is_dir() and all(any(dest.glob(g)) for g in _per_speaker(self.done_when, self.speakers))

    def shown_urls(self) -> str:
        if self.unpack == "hf":
            return f"{self.urls[0]} (revision {self.revision or 'main, resolved and locked on first fetch'})"
        return " ".join(self.urls) if self.urls else f"none: {self.note}"


# ---- the catalogue -------------------------------------------------------------------------------
def _package_folder(package: str) -> Path:
    """A package's folder, found without running its __init__ (generators' and extractors' import torch)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations  # a package (datasets/: a namespace package)
    return Path(next(iter(spec.submodule_search_locations)))


def _data_file(package: str, name: str) -> tuple[dict, str]:
    """A TOML data file of a package, read without importing the package."""
    folder = _package_folder(package)
    where = f"{package.removeprefix('sourcetrace.').replace('.', '/')}/{name}"
    try:
        return tomllib.loads(folder.joinpath(name).read_text(encoding="utf-8")), where
    except tomllib.TOMLDecodeError as exc:
        raise FetchError(f"{where}: not valid TOML ({exc})") from None


def _source_artefacts() -> list[Artefact]:
    out = []
    for package, name in SOURCES:
        raw, where = _data_file(package, name)
        for key, entry in check(raw, FETCH_SOURCE, where, FetchError).items():
            unpack = entry["unpack"]
            if (unpack != "file") != ("members" in entry and "done_when" in entry):
                raise FetchError(f"{where} [{key}]: an archive needs members and done_when; a file takes neither")
            path = entry["destination"]
            out.append(Artefact(
                key, entry["title"], tuple(entry["urls"]), entry.get("size"), entry.get("sha256", ""),
                entry["licence"], entry["citation"], path,
                path if unpack == "file" else f"{DOWNLOADS}/{PurePosixPath(entry['urls'][0]).name}", unpack,
                tuple(entry.get("members", ())), entry.get("strip", 0), tuple(entry.get("done_when", ())),
                entry.get("unzip", False), tuple(entry.get("speakers", ()))))
    return out


def _checkpoint_artefacts(entry: OfficialCheckpoint) -> list[Artefact]:
    """An official checkpoint (its companions inside its zip), and each companion that has its own URL."""
    folder = PurePosixPath(OFFICIAL, entry.folder) if entry.folder else PurePosixPath(OFFICIAL)
    path = str(folder / entry.file)
    base = Artefact(entry.id, entry.source, (entry.url,) if entry.url else (), entry.size, entry.sha256, entry.licence,
                    entry.citation, path, path, "file", aliases=entry.aliases,
                    note=f"no download URL is known ({entry.source}): put the file at the destination by hand")
    if entry.archive:
        return [replace(base, key=f"{DOWNLOADS}/{PurePosixPath(entry.url).name}", unpack="zip-members",
                        members=(entry.file, *entry.companions), aliases=())]
    out = [base]
    companion_urls = dict(entry.companion_urls)
    for companion in entry.companions:
        companion_path = str(folder / companion)
        url = companion_urls.get(companion, "")
        out.append(replace(base, name=f"{entry.id}/{companion}", title=f"{companion}, beside {entry.file}",
                           urls=(url,) if url else (), size=None, sha256="", path=companion_path, key=companion_path,
                           aliases=(), companion_of=entry.id))
    return out


def _shipped_model(name: str) -> dict | None:
    """A shipped SSL model's description (extractors' models/<name>.json), read without torch."""
    path = _package_folder("sourcetrace.attribution.extractors") / "models" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _model_artefacts(names: Iterable[str] | None = None) -> list[Artefact]:
    """The shipped SSL models that have a Hugging Face repository (all, or those of `names`)."""
    raw, where = _data_file("sourcetrace.attribution.extractors", "models/sources.toml")
    entries = check(raw, FETCH_MODEL, where, FetchError)
    out = []
    for name, entry in entries.items():
        model = _shipped_model(name)
        if model is None or not model.get("hf_name"):
            raise FetchError(f"{where} [{name}]: not a shipped model with a Hugging Face repository (models/*.json)")
        if names is not None and name not in names:
            continue
        repo = model["hf_name"]
        out.append(Artefact(name, f"Hugging Face model {repo}", (f"https://huggingface.co/{repo}",), entry.get("size"),
                            "", entry["licence"], entry["citation"], name, f"{MODELS}/{name}", "hf",
                            repo=repo, revision=entry["revision"], allow=tuple(entry["allow"]),
                            models_dir=default_models_dir()))
    return out


def _files_catalogue() -> list[Artefact]:
    out = _source_artefacts()
    for entry in load_registry():
        out.extend(_checkpoint_artefacts(entry))
    return out


def catalogue() -> list[Artefact]:
    """Every artefact `fetch NAME` knows, in a fixed order: datasets, NLTK data, official checkpoints, SSL models."""
    return _files_catalogue() + _model_artefacts()


def artefacts_named(names: Iterable[str]) -> list[Artefact]:
    """The artefacts `fetch NAME...` asks for: each by its exact name, an official checkpoint's id
    bringing its companion files (`vits/pretrained` with `vits/pretrained/config.json`)."""
    known = catalogue()
    out: list[Artefact] = []
    for name in names:
        found = [a for a in known if name in (a.name, a.companion_of)]
        if not found:
            under = [a.name for a in known if a.name.startswith(f"{name}/")]
            close = under or difflib.get_close_matches(name, [a.name for a in known], n=5, cutoff=0.6)
            raise UsageError(f"fetch {name}: no such artefact"
                             + (f"; did you mean {', '.join(close)}" if close else "")
                             + " (`fetch RECIPE --dry-run` lists a recipe's; or give a recipe file)")
        out.extend(a for a in found if a not in out)
    return out


def _relative(path: Path, workdir: Path) -> str:
    try:
        return path.relative_to(workdir).as_posix()
    except ValueError:
        return str(path)


def recipe_artefacts(recipe: StudyRecipe, workdir: str | os.PathLike) -> list[Artefact]:
    """What `recipe` (as `load_study_recipe(path, base=workdir)` reads it) needs that `fetch` can get,
    at the places the recipe names: its [data] datasets (HiFi-TTS: the fine-tune speakers, where a
    recipe fine-tunes), the official checkpoints its pretrained models and vocoders name (by file
    name, with their companions and what their loaders need), and the shipped SSL models of [features]."""
    workdir = Path(workdir)
    by_name = {a.name: a for a in _source_artefacts()}
    out: list[Artefact] = []
    if recipe.data.make_mini is None:
        if recipe.data.ljspeech:
            out.append(replace(by_name["ljspeech"], path=recipe.data.ljspeech))
        finetunes = any("finetuned" in a.roles and a.finetuned is not None for a in recipe.corpus.architectures.values())
        if recipe.data.hifitts and finetunes:
            out.append(replace(by_name["hifitts"], path=recipe.data.hifitts, speakers=recipe.corpus.finetune_speakers))
    if recipe.training.pretrained == "official":
        files = [a.pretrained for a in recipe.corpus.architectures.values() if a.pretrained is not None]
        files += [v.weights for v in recipe.corpus.vocoders.values() if v.weights is not None]
        registry = load_registry()
        for path in files:
            entry = next((e for e in registry if path.name in (e.file, *e.aliases)), None)
            if entry is None:
                continue
            for artefact in _checkpoint_artefacts(entry):
                placed = path.parent / PurePosixPath(artefact.path).name if artefact.name != entry.id else path
                out.append(replace(artefact, path=_relative(placed, workdir)))
            out.extend(by_name[need] for need in entry.needs if by_name[need] not in out)
    models = [model.name for e in recipe.features if not e.random and (model := extractor_model(e.spec)) and model.named]
    if models:
        out.extend(_model_artefacts(models))
    return out


def artefacts_for(targets: list[str], workdir: str | os.PathLike) -> list[Artefact]:
    """A recipe file (one target ending in .toml) or artefact names."""
    if len(targets) == 1 and targets[0].endswith(".toml"):
        return recipe_artefacts(load_study_recipe(targets[0], base=Path(workdir), classes=False), workdir)
    if any(t.endswith(".toml") for t in targets):
        raise UsageError("fetch: give one recipe file, or artefact names (not both)")
    return artefacts_named(targets)


# ---- fetching ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    artefact: Artefact
    status: str                   # present | fetched | failed
    message: str = ""
    sha256: str = ""


@dataclass
class FetchReport:
    workdir: Path
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def _mirrored(artefact: Artefact, mirror: str | None) -> tuple[str, ...]:
    """Where to fetch from: the mirror's copy (same relative path as the catalogue's place), else the
    publisher's URLs (a Google Drive share link turned into its download address)."""
    if mirror is None:
        return tuple(drive_download_url(u) for u in artefact.urls)
    if is_url(mirror):
        return (f"{mirror.rstrip('/')}/{artefact.key}",)
    return (str(Path(mirror) / artefact.key),)


def _verified(artefact: Artefact, lock: LockFile) -> str | None:
    return artefact.sha256 or lock.sha256(artefact.key)


def _recorder(artefact: Artefact, lock: LockFile) -> Callable[[Fetched], None]:
    """Writes a file's first sha256 to fetch.lock as pending before the file takes its name (the publisher
    gives none); `fetch` pins it once the artefact is complete."""
    def record(fetched: Fetched) -> None:
        if not artefact.sha256 and lock.sha256(artefact.key) is None:
            lock.record_pending(artefact.key, fetched.url, fetched.sha256, fetched.size)
    return record


def _download(artefact: Artefact, dest: Path, lock: LockFile, mirror: str | None, progress) -> str:
    """`dest` fetched and checked, unless an earlier fetch placed it whole (it takes its name only then;
    that fetch was killed, or its unpacking failed): its hash is then the one recorded for it, or computed."""
    if dest.is_file():
        recorded = lock.files.get(artefact.key) or lock.pending.get(artefact.key)
        if recorded and recorded.get("size") == dest.stat().st_size:
            return recorded["sha256"]
        found, expected = sha256_file(dest), _verified(artefact, lock)
        if expected and found != expected:
            raise ChecksumMismatch(f"{dest}: sha256 {found}, not the expected {expected}: move it away and rerun")
        if not expected:
            lock.record_pending(artefact.key, "(in place before fetch)", found, dest.stat().st_size)
        return found
    return download_file(_mirrored(artefact, mirror), dest, sha256=_verified(artefact, lock), size=artefact.size,
                         progress=progress, on_verified=_recorder(artefact, lock)).sha256


def _fetch_file(artefact: Artefact, workdir: Path, lock: LockFile, mirror: str | None, progress) -> str:
    dest = artefact.destination(workdir)
    sha256 = _download(artefact, dest, lock, mirror, progress)
    if artefact.unzip:
        unpack_archive(dest, dest.parent, ("*",))
    return sha256


def _fetch_archive(artefact: Artefact, workdir: Path, lock: LockFile, mirror: str | None, progress) -> str:
    dest = artefact.destination(workdir)
    archive = workdir / artefact.key
    sha256 = _download(artefact, archive, lock, mirror, progress)
    if artefact.unpack == "zip-members":
        unpack_archive(archive, dest.parent, artefact.members, flatten=True)
    else:
        unpack_archive(archive, dest, artefact.members, strip=artefact.strip, last=artefact.done_when)
    archive.unlink()
    return sha256


def _fetch_stream(artefact: Artefact, workdir: Path, lock: LockFile, mirror: str | None, progress) -> str:
    speakers = artefact.missing_speakers(workdir) or artefact.speakers
    members, last = _per_speaker(artefact.members, speakers), _per_speaker(artefact.done_when, speakers)
    errors = []
    for url in _mirrored(artefact, mirror):
        try:
            sha256 = stream_tar(url, artefact.destination(workdir), members, strip=artefact.strip, last=last,
                                sha256=_verified(artefact, lock), progress=progress,
                                on_verified=_recorder(artefact, lock)).sha256
        except ChecksumMismatch:
            raise
        except DownloadError as exc:
            errors.append(str(exc))
            continue
        absent = artefact.missing_speakers(workdir)
        if absent:
            raise DownloadError(f"{url}: the archive holds no {' or '.join(artefact.done_when)} of speaker(s) "
                                f"{', '.join(absent)}: check the recipe's speakers")
        return sha256
    raise DownloadError("; ".join(errors))


@contextlib.contextmanager
def _hub_online(constants, endpoint: str | None) -> Iterator[None]:
    """huggingface_hub reads HF_HUB_OFFLINE and HF_ENDPOINT once, when imported, and every command sets
    the first (`go_offline`): fetch alone lifts it while it fetches, and points every request of the
    library (its own look-ups too, not only those given `endpoint=`) at the HF_ENDPOINT of now."""
    before = constants.HF_HUB_OFFLINE, constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE
    constants.HF_HUB_OFFLINE = False
    if endpoint:
        constants.ENDPOINT = endpoint
        constants.HUGGINGFACE_CO_URL_TEMPLATE = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE = before


_HUB = threading.Lock()  # _hub_online changes a module global: one Hugging Face fetch at a time


def _fetch_hf(artefact: Artefact, workdir: Path, lock: LockFile, mirror: str | None, progress) -> str:
    """snapshot_download of the pinned revision (the catalogue's, else the one fetch.lock recorded, else
    the default branch, resolved to its commit and recorded) into `<folder>.part`, renamed when whole."""
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    dest = artefact.destination(workdir)
    part = dest.with_name(dest.name + PART)
    if dest.exists():  # fetch renames a whole folder into place: this one is someone else's
        raise FetchError(f"{dest}: a folder without config.json is in the way: move it away and rerun")
    endpoint = os.environ.get("HF_ENDPOINT") or None  # a lab's hub mirror serves model folders
    if mirror is not None and is_url(mirror) and endpoint is None:
        raise FetchError(f"a Hugging Face folder comes from a mirror folder (--mirror DIR, holding {artefact.key}/) "
                         "or from a hub mirror (set HF_ENDPOINT), not a URL mirror")
    if mirror is not None and not is_url(mirror):
        source = Path(mirror) / artefact.key
        if not (source / "config.json").is_file():
            raise FetchError(f"{source}: no such model folder in the mirror")
        shutil.rmtree(part, ignore_errors=True)
        shutil.copytree(source, part)
        found, size = folder_sha256(part)
        expected = lock.sha256(artefact.key)
        if expected and found != expected:
            shutil.rmtree(part)
            raise FetchError(f"{source}: the mirror's folder has sha256 {found} (over its files), not the {expected} "
                             f"{LOCK_FILE} recorded when it was first fetched: check the mirror's copy")
        if not expected:
            lock.record_pending(artefact.key, str(source), found, size)
        os.replace(part, dest)
        return found
    pinned = lock.revision(artefact.key)
    if artefact.revision and pinned and pinned != artefact.revision:
        raise FetchError(f"{artefact.name}: {LOCK_FILE} pins commit {pinned}, the catalogue {artefact.revision}: "
                         f"delete the entry from {workdir / LOCK_FILE} to take the catalogue's")
    try:
        with _HUB, _hub_online(constants, endpoint):
            commit = HfApi(endpoint=endpoint).repo_info(artefact.repo, revision=artefact.revision or pinned or None).sha
            if commit is None or (pinned and commit != pinned):
                raise FetchError(f"{artefact.name}: the hub answered commit {commit} for {pinned}")
            snapshot_download(artefact.repo, revision=commit, local_dir=part, allow_patterns=list(artefact.allow),
                              endpoint=endpoint)
    except HfHubHTTPError as exc:
        raise FetchError(f"{artefact.name}: {artefact.repo}: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        if isinstance(exc, SourcetraceError):
            raise
        raise FetchError(f"{artefact.name}: {artefact.repo}: host unreachable or write failed ({exc}); rerun to "
                         "resume") from None
    if pinned is None:
        lock.record_revision(artefact.key, artefact.repo, commit)
    os.replace(part, dest)
    return commit


FETCHERS: dict[str, Callable[..., str]] = {"file": _fetch_file, "zip-members": _fetch_archive, "archive": _fetch_archive,
                                           "stream": _fetch_stream, "hf": _fetch_hf}


def _check_present(artefact: Artefact, workdir: Path, lock: LockFile, verify: bool) -> Outcome:
    """A file already in place against what the catalogue or fetch.lock says it is: its length always (cheap),
    its sha256 with `verify` (which also records, for a file put in place by hand, the hash it has now)."""
    dest = artefact.destination(workdir)
    if artefact.unpack == "hf" and verify and lock.sha256(artefact.key):  # a folder copied from a mirror folder
        found = folder_sha256(dest)[0]
        if found != lock.sha256(artefact.key):
            return Outcome(artefact, "failed", f"{artefact.name}: {dest} has sha256 {found} (over its files), not "
                                               f"the {lock.sha256(artefact.key)} of {LOCK_FILE}: move it away and rerun")
        return Outcome(artefact, "present", sha256=found)
    if artefact.unpack != "file":
        return Outcome(artefact, "present")
    path = next(p for p in (dest.parent / n for n in (dest.name, *artefact.aliases)) if p.is_file())
    size, expected_size = path.stat().st_size, artefact.size or lock.files.get(artefact.key, {}).get("size")
    if expected_size is not None and size != expected_size:
        return Outcome(artefact, "failed", f"{artefact.name}: {path} has {size} bytes where {LOCK_FILE} or the catalogue "
                                           f"says {expected_size}: move it away and rerun to fetch it again")
    expected = _verified(artefact, lock)
    if not verify:
        return Outcome(artefact, "present")
    found = sha256_file(path)
    if expected and found != expected:
        return Outcome(artefact, "failed", f"{artefact.name}: {path} has sha256 {found}, not the {expected} of "
                                           f"{'the catalogue' if artefact.sha256 else LOCK_FILE}: move it away and rerun")
    if not expected:
        lock.record_file(artefact.key, "(in place before fetch)", found, size)
    return Outcome(artefact, "present", sha256=found)


def fetch(artefacts: list[Artefact], workdir: str | os.PathLike, *, mirror: str | None = None, jobs: int = 4,
          progress: bool = True, verify: bool = False) -> FetchReport:
    """Fetch every artefact not yet present, `jobs` at a time; a failure is its outcome's message, the
    others go on. A byte bar counts what arrives (sizes where known). Files in place are checked
    (`_check_present`)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with FetchLock(workdir / RUNNING):
        return _fetch_locked(artefacts, workdir, mirror, jobs, progress, verify)


def _fetch_locked(artefacts: list[Artefact], workdir: Path, mirror: str | None, jobs: int, progress: bool,
                  verify: bool) -> FetchReport:
    lock = LockFile(workdir / LOCK_FILE)
    report = FetchReport(workdir)
    todo = [a for a in artefacts if not a.present(workdir)]
    for artefact in artefacts:
        if artefact not in todo:
            lock.confirm(artefact.key)  # complete, but its fetch was killed before it said so
            if artefact.unpack in ("archive", "zip-members"):
                (workdir / artefact.key).unlink(missing_ok=True)  # placed by a fetch killed before it deleted it
    report.outcomes = [_check_present(a, workdir, lock, verify) for a in artefacts if a not in todo]
    sizes = [a.size for a in todo if a.size is not None]
    bar = tqdm(total=sum(sizes) if len(sizes) == len(todo) else None, unit="B", unit_scale=True, unit_divisor=1024,
               desc="[fetch]", disable=not progress or not todo, file=sys.stderr)
    bar_lock = threading.Lock()

    def advance(n: int) -> None:
        with bar_lock:
            bar.update(n)

    def one(artefact: Artefact) -> Outcome:
        if not artefact.urls and mirror is None:
            return Outcome(artefact, "failed", f"{artefact.name}: {artefact.note} "
                                               f"({artefact.destination(workdir)})")
        try:
            sha = FETCHERS[artefact.unpack](artefact, workdir, lock, mirror, advance)
        except (SourcetraceError, OSError) as exc:
            return Outcome(artefact, "failed", f"{artefact.name}: {exc}")
        if not artefact.present(workdir):
            return Outcome(artefact, "failed", f"{artefact.name}: fetched, but {artefact.destination(workdir)} is "
                                               "still incomplete: move it away and rerun")
        lock.confirm(artefact.key)
        return Outcome(artefact, "fetched", sha256=sha)

    with bar, ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        report.outcomes += list(pool.map(one, todo))
    order = {a.name: i for i, a in enumerate(artefacts)}
    report.outcomes.sort(key=lambda o: order[o.artefact.name])
    _remember_checked(workdir, lock, report.outcomes)
    return report


def _stamp(artefact: Artefact, workdir: Path) -> tuple[Path, list[int]]:
    """The file (or model folder) in place and its [bytes, newest mtime_ns]: what says it has not changed."""
    dest = artefact.destination(workdir)
    if artefact.unpack == "hf":
        stats = [p.stat() for p in dest.rglob("*") if p.is_file()]
        return dest, [sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]
    path = next(p for p in (dest.parent / n for n in (dest.name, *artefact.aliases)) if p.is_file())
    stat = path.stat()
    return path, [stat.st_size, stat.st_mtime_ns]


def _locked(artefacts: Iterable[Artefact], workdir: Path, lock: LockFile) -> list[Artefact]:
    """The artefacts in place whose kept file or folder fetch.lock pins (not archives: they are deleted)."""
    return [a for a in artefacts if a.unpack in ("file", "hf") and a.key in lock.files and a.present(workdir)]


def _read_checked(workdir: Path) -> dict[str, dict]:
    path = workdir / CHECKED
    try:
        return json.loads(read_user_text(path)) if path.is_file() else {}
    except (json.JSONDecodeError, SourcetraceError):
        return {}  # a cache: rebuilt by hashing again


def _remember_checked(workdir: Path, lock: LockFile, outcomes: Iterable[Outcome]) -> None:
    """The stamps of the artefacts whose sha256 a fetch just found to be fetch.lock's: `run` need not hash them."""
    found = {o.artefact.key: o.sha256 for o in outcomes if o.sha256}
    fresh = {a.key: {"sha256": found[a.key], "stamp": _stamp(a, workdir)[1]}
             for a in _locked((o.artefact for o in outcomes), workdir, lock) if found.get(a.key) == lock.sha256(a.key)}
    if fresh:
        write_json_atomic(workdir / CHECKED, {**_read_checked(workdir), **fresh})


def changed_since_fetch(artefacts: Iterable[Artefact], workdir: str | os.PathLike, *, rehash: bool) -> dict[str, str]:
    """What is wrong (by artefact name) with each file or model folder in place that fetch.lock pins and
    that is no longer what was fetched: its length, always (cheap: `run --plan`); with `rehash` (`run`)
    its sha256 too, but only where its length or mtime moved since its sha256 was last found right
    (fetch.checked.json): an unchanged 40 GB is not read again."""
    workdir = Path(workdir)
    if not (workdir / LOCK_FILE).is_file():
        return {}
    lock, checked = LockFile(workdir / LOCK_FILE), _read_checked(workdir)
    problems: dict[str, str] = {}
    hashed = False
    for artefact in _locked(artefacts, workdir, lock):
        entry = lock.files[artefact.key]
        path, stamp = _stamp(artefact, workdir)
        if stamp[0] != entry.get("size", stamp[0]):
            problems[artefact.name] = f"{path} has {stamp[0]} bytes where {LOCK_FILE} says {entry['size']}"
        elif rehash and checked.get(artefact.key) != {"sha256": entry["sha256"], "stamp": stamp}:
            found = folder_sha256(path)[0] if artefact.unpack == "hf" else sha256_file(path)
            if found != entry["sha256"]:
                problems[artefact.name] = f"{path} has sha256 {found} where {LOCK_FILE} says {entry['sha256']}"
            else:
                checked[artefact.key], hashed = {"sha256": found, "stamp": stamp}, True
    if hashed:
        write_json_atomic(workdir / CHECKED, checked)
    return problems


def print_lock(workdir: str | os.PathLike) -> str:
    """fetch.lock's text, for a lab to pin its copies (the file itself may be committed)."""
    path = Path(workdir) / LOCK_FILE
    if not path.is_file():
        raise UsageError(f"{path}: no lock file yet: `sourcetrace fetch` writes it on its first download")
    return LockFile(path).text()

