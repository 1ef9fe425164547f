"""Official checkpoint files, read without unpickling anything, and the one trust rule.

`inspect_file` says what a file is (a `.nemo` archive, a torch.save file, zip or legacy
pickle, or an ESPnet packed model: a zip or tar with meta.yaml, the training config.yaml and a
torch.save state dict), whether it is complete (every tar member, zip entry and legacy storage is
all there), which model it holds (the registered class whose `official_formats` claims its state-dict keys,
NeMo's `target` class or ESPnet's `tts` choice: checkpoints/formats.py) and which globals its
pickle would call (checkpoints/pickle_scan.py reads the opcodes; nothing is executed).

The trust rule (`load_torch_file`; every loader, verify and the messages use it): a file is
first read with torch's weights-only unpickler. A file that needs full unpickling loads only
with `--trust` (the recipe key `trust = true`), and only when every global its pickle calls is
one that the official format of that model declares (omegaconf and Lightning classes for
Matcha-TTS's `.ckpt`, Coqui config classes for VITS): any other global (`posix.system`,
`builtins.eval`, ...) is refused, trust or not, and named. Trust is never suggested for a file
that is truncated, of another format or of another model.
"""

from __future__ import annotations

import io
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sourcetrace.checkpoints.formats import OfficialFormat
from sourcetrace.checkpoints.pickle_scan import PickleScan, scan_pickle
from sourcetrace.core.errors import SourcetraceError
from sourcetrace.core.plugins import GENERATORS, VOCODERS

TRUST_HINT = "--trust (recipe: trust = true)"


def _formats(model: str | None) -> tuple[OfficialFormat, ...]:
    """The official formats that the class registered as `model` (an architecture or a vocoder
    kind, built-in or plug-in) declares; none for a name nothing registers."""
    for registry in (GENERATORS, VOCODERS):
        if model in registry:
            return registry[model].official_formats
    return ()


def model_name(model: str) -> str:
    """How messages name `model`: its official format's words, else the name itself."""
    formats = _formats(model)
    return formats[0].display_name if formats else f"a {model} model"


def _claimant(container: str, claims: Callable[[OfficialFormat], bool]) -> str | None:
    """The one registered model whose official format of `container` claims a file, or None (none
    claims it, or several do and none outranks the others)."""
    found = {name: fmt for registry in (GENERATORS, VOCODERS) for name, cls in registry.items()
             for fmt in cls.official_formats if fmt.container == container and claims(fmt)}
    winners = [name for name in found if not any(name in fmt.outranks for fmt in found.values())]
    return winners[0] if len(winners) == 1 else None


# Globals torch's weights-only unpickler accepts in a plain state dict.
_TORCH = re.compile(r"^(torch\._utils\._rebuild_\w+|torch\.\w*Storage|torch\.(device|Size|dtype|b?float\d*|"
                    r"float8_\w+|q?u?int\d+|bool|long|half|double|short|cfloat|cdouble|complex\d*)|"
                    r"collections\.OrderedDict|"
                    r"torch\.serialization\._get_layout|torch\._tensor\._rebuild_from_type_v2|"
                    r"torch\.nn\.parameter\.Parameter|builtins\.(set|frozenset|bytearray|dict|list|tuple|int|float|"
                    r"str|bool|bytes|complex|slice|range))$")
_ELEMENT_SIZE = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
                 "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "Untyped": 1, "QInt8": 1,
                 "QUInt8": 1, "QInt32": 4, "Float8_e4m3fn": 1, "Float8_e5m2": 1}
# What reading a damaged file can raise (zip, zlib, tar, pickletools and the symbolic stack).
_READ_ERRORS = (ValueError, IndexError, KeyError, TypeError, EOFError, RuntimeError, NotImplementedError,
                struct.error, zlib.error, zipfile.BadZipFile, tarfile.TarError, OSError, MemoryError)
ESPNET_META = "meta.yaml"  # what makes a zip or tar an ESPnet packed model (espnet2/main_funcs/pack_funcs.py)


class OfficialFileError(SourcetraceError, ValueError):
    """A checkpoint file that cannot be (or must not be) loaded; the message names the file."""


@dataclass
class FileReport:
    path: Path
    format: str | None = None          # "nemo", "torch" or "espnet"; None when it is none of them
    container: str = ""                # what was found: "torch zip", "legacy torch pickle", ".nemo tar", ...
    problem: str | None = None         # why it cannot be a complete checkpoint (truncated, not one at all)
    holds: str | None = None           # the architecture or vocoder kind whose official format claims the file
    globals: set[str] = field(default_factory=set)

    def beyond_weights_only(self) -> list[str]:
        """Globals the weights-only unpickler refuses: what full unpickling would call."""
        return sorted(g for g in self.globals if not _TORCH.match(g))

    def foreign_globals(self, model: str | None) -> list[str]:
        """Globals that no official format of `model` needs (code a pickle could run); with no
        model, every global beyond weights-only."""
        formats = _formats(model) if model else ()
        return [g for g in self.beyond_weights_only() if not any(f.allows(g) for f in formats)]

    def refusal(self, model: str | None) -> str | None:
        """Why this file must not be loaded as `model` (with or without trust), or None; with no
        model, only what is wrong whatever it was meant to be."""
        foreign = self.foreign_globals(model)
        official = f"the official file of {model_name(model)}" if model else "an official checkpoint"
        calls = (f"its pickle calls {', '.join(foreign)}, which {official} never needs: refused without "
                 "unpickling (it could run code), trust or not") if foreign else None
        if self.problem:
            return f"{self.problem}; {calls}" if calls else self.problem
        if model is not None and self.holds is not None and self.holds != model:
            return f"holds {model_name(self.holds)}, not {model_name(model)}"
        return calls

    def trust_note(self, model: str) -> str | None:
        """The one line that says a sound file needs full unpickling, or None when it does not."""
        needed = self.beyond_weights_only()
        if self.refusal(model) or not needed:
            return None
        shown = ", ".join(needed[:4]) + (f" and {len(needed) - 4} more" if len(needed) > 4 else "")
        return (f"needs full unpickling ({shown}, all of which the official format uses): "
                f"load it with {TRUST_HINT} only if you trust where the file came from")


# ---- containers ----------------------------------------------------------------------------------

def _scan_zip(archive: zipfile.ZipFile, deep: bool, where: str) -> tuple[PickleScan, str | None]:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith(".pkl")]
    if len(pickles) != 1 or not (pickles[0] == "data.pkl" or pickles[0].endswith("/data.pkl")):
        # TorchScript archives hold constants.pkl too, which torch.load would hand to torch.jit.load unscanned
        return PickleScan(), f"{where}zip archive that is not a torch.save file (not exactly one pickle, data.pkl)"
    prefix = pickles[0][: -len("data.pkl")]
    scan = PickleScan()
    try:
        scan_pickle(io.BytesIO(archive.read(pickles[0])), scan)
    except _READ_ERRORS as exc:
        return scan, f"{where}torch zip whose pickle is damaged ({type(exc).__name__}: {exc})"
    missing = [k for k in scan.storages if f"{prefix}data/{k}" not in names]
    if missing:
        return scan, f"{where}torch zip missing {len(missing)} tensor storage(s), e.g. data/{missing[0]}"
    if deep:
        try:
            bad = archive.testzip()
        except _READ_ERRORS as exc:
            return scan, f"{where}torch zip with a damaged entry ({type(exc).__name__}: {exc})"
        if bad is not None:
            return scan, f"{where}torch zip with a damaged entry {bad} (CRC mismatch)"
    return scan, None


class _Bounded:
    """A file whose reads never ask for more than is left (a damaged length field in a pickle
    would otherwise allocate gigabytes before finding the end of the file)."""

    def __init__(self, fh, size: int):
        self.fh, self.size = fh, size

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.fh.tell()
        return self.fh.read(left if n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.fh.readline(self.size - self.fh.tell())

    def tell(self) -> int:
        return self.fh.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.fh.seek(offset, whence)


def _scan_legacy(fh, size: int) -> tuple[PickleScan, str | None]:
    """torch.save's legacy format: magic, protocol and sys-info pickles, the object's pickle, the
    storage keys' pickle, then each storage as an 8-byte element count and its bytes."""
    scan = PickleScan()
    try:
        scan_pickle(fh, scan)
        if scan.globals or fh.tell() == size:  # torch's first pickle is only its magic number
            return scan, "a plain pickle, not a torch.save file"
        for _ in range(4):
            scan_pickle(fh, scan)
    except _READ_ERRORS as exc:
        return scan, f"legacy torch pickle that ends early or is damaged ({type(exc).__name__}: {exc})"
    for key in sorted(scan.storages):
        kind, numel = scan.storages[key]
        element = _ELEMENT_SIZE.get(kind.rsplit(".", 1)[-1].removesuffix("Storage"))
        head = fh.read(8)
        if len(head) < 8:
            return scan, f"legacy torch pickle truncated: tensor storage {key} is missing"
        count = struct.unpack("<q", head)[0]
        if element is None or count < 0:
            return scan, f"legacy torch pickle with an unreadable storage {key} ({kind})"
        if numel >= 0 and count != numel:
            return scan, f"legacy torch pickle damaged: storage {key} has {count} elements, its tensor says {numel}"
        fh.seek(count * element, io.SEEK_CUR)
        if fh.tell() > size:
            return scan, f"legacy torch pickle truncated: storage {key} ends {fh.tell() - size} bytes past the end"
    if fh.tell() != size:
        return scan, f"legacy torch pickle with {size - fh.tell()} unexpected bytes after its last storage"
    return scan, None


def _inspect_nemo(path: Path, size: int, deep: bool, report: FileReport, compressed: bool) -> FileReport:
    """A cut in a compressed archive shows as a decompression error; in a plain one, as a member
    that ends past the end of the file. (A tar with meta.yaml is an ESPnet packed model.)"""
    report.format, report.container = "nemo", ".nemo tar"
    try:
        with tarfile.open(path) as tar:
            if any(m.name == ESPNET_META for m in tar.getmembers()):
                return _inspect_espnet(_PackedTar(tar), deep, report)
            members = {Path(m.name).name: m for m in tar.getmembers()}
            cut = [m.name for m in members.values() if m.isfile() and not compressed and m.offset_data + m.size > size]
            if cut:
                report.problem = f"truncated .nemo archive: {cut[0]} ends past the end of the file"
                return report
            if not {"model_config.yaml", "model_weights.ckpt"} <= set(members):
                report.format, report.problem = None, "tar archive without model_config.yaml and model_weights.ckpt"
                return report
            config = tar.extractfile(members["model_config.yaml"]).read().decode("utf-8", "replace")
            target = re.search(r"^target:\s*['\"]?([\w.]+)", config, re.MULTILINE)
            if target:
                name = target.group(1).rsplit(".", 1)[-1]
                report.holds = _claimant("nemo", lambda fmt: fmt.nemo_target == name)
            with zipfile.ZipFile(tar.extractfile(members["model_weights.ckpt"])) as archive:
                scan, problem = _scan_zip(archive, deep, "model_weights.ckpt is a ")
            report.globals = scan.globals
            report.problem = problem
    except SourcetraceError:
        raise  # the registry's (a plug-in that cannot be loaded), not the file's
    except _READ_ERRORS as exc:
        what = ".nemo archive" if path.suffix == ".nemo" else "tar archive (a .nemo or an ESPnet packed model)"
        report.problem = f"truncated or damaged {what} ({type(exc).__name__}: {exc})"
    return report


class _PackedZip:
    """An ESPnet packed model in a zip: its member names and bytes."""

    kind = "zip"

    def __init__(self, archive: zipfile.ZipFile):
        self.archive = archive

    def names(self) -> list[str]:
        return self.archive.namelist()

    def open(self, name: str):
        return self.archive.open(name)

    def damaged(self) -> str | None:
        return self.archive.testzip()


class _PackedTar:
    """An ESPnet packed model in a tar (.tar, .tgz, .tbz2, .txz): its member names and bytes."""

    kind = "tar"

    def __init__(self, tar: tarfile.TarFile):
        self.tar = tar

    def names(self) -> list[str]:
        return [m.name for m in self.tar.getmembers() if m.isfile()]

    def open(self, name: str):
        return self.tar.extractfile(name)

    def damaged(self) -> str | None:
        return None  # a tar has no checksums of its contents; a cut shows as a read error


@dataclass
class EspnetPack:
    """What an ESPnet packed model holds: the parsed training config.yaml, where the state dict is
    inside the archive, and (from `load_espnet_pack`) the state dict itself."""

    config: dict
    model_member: str
    state: dict | None = None


def _read_espnet_pack(packed) -> EspnetPack:
    """meta.yaml names the training config (yaml_files.train_config) and the weights
    (files.model_file) by the paths they were packed under (pack_funcs.pack: relative to where it
    ran, or absolute, which archives store without the leading /). YAML is read with safe_load."""

    names = set(packed.names())
    meta = yaml.safe_load(packed.open(ESPNET_META).read())
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict) or not isinstance(
            meta.get("yaml_files"), dict):
        raise ValueError(f"{ESPNET_META} without its files and yaml_files tables")
    members = {}
    for table, key in (("yaml_files", "train_config"), ("files", "model_file")):
        value = meta[table].get(key)
        if not isinstance(value, str):
            raise ValueError(f"{ESPNET_META} names no {table}.{key} (not a TTS model's pack)")
        member = value if value in names else value.lstrip("/")
        if member not in names:
            raise ValueError(f"{ESPNET_META} names {value} as {key}, which the archive lacks")
        members[key] = member
    config = yaml.safe_load(packed.open(members["train_config"]).read())
    if not isinstance(config, dict):
        raise ValueError(f"{members['train_config']} is not a YAML mapping")
    return EspnetPack(config, members["model_file"])


def _inspect_espnet(packed, deep: bool, report: FileReport) -> FileReport:

    report.format, report.container = "espnet", f"ESPnet packed model ({packed.kind})"
    try:
        if deep and (bad := packed.damaged()) is not None:
            report.problem = f"ESPnet packed model with a damaged entry {bad} (CRC mismatch)"
            return report
        pack = _read_espnet_pack(packed)
        tts = pack.config.get("tts")
        if isinstance(tts, str):
            report.holds = _claimant("espnet", lambda fmt: fmt.espnet_tts == tts) or f"espnet-{tts}"
        with zipfile.ZipFile(packed.open(pack.model_member)) as archive:
            scan, report.problem = _scan_zip(archive, deep, f"{pack.model_member} is a ")
        report.globals = scan.globals
    except SourcetraceError:
        raise  # the registry's (a plug-in that cannot be loaded), not the file's
    except (*_READ_ERRORS, yaml.YAMLError) as exc:
        report.problem = f"truncated or damaged ESPnet packed model ({type(exc).__name__}: {exc})"
    return report


def inspect_file(path: str | Path, deep: bool = False) -> FileReport:
    """What `path` is, read without unpickling; `deep` also checks every zip entry's CRC (verify)."""
    path = Path(path)
    report = FileReport(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        report.problem = f"cannot be read ({exc.strerror or exc})"
        return report
    if head[:4] == b"PK\x03\x04":
        report.format, report.container = "torch", "torch zip"
        try:
            with zipfile.ZipFile(path) as archive:
                if ESPNET_META in archive.namelist():
                    return _inspect_espnet(_PackedZip(archive), deep, report)
                scan, report.problem = _scan_zip(archive, deep, "")
        except _READ_ERRORS as exc:
            report.problem = f"truncated or damaged torch zip ({type(exc).__name__}: {exc})"
            return report
    elif head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        report.format, report.container = "torch", "legacy torch pickle"
        try:
            with open(path, "rb") as fh:
                scan, report.problem = _scan_legacy(_Bounded(fh, size), size)
        except OSError as exc:
            report.problem = f"cannot be read ({exc.strerror or exc})"
            return report
    elif head[257:262] == b"ustar" or head[:2] == b"\x1f\x8b" or tarfile.is_tarfile(path):
        return _inspect_nemo(path, size, deep, report, compressed=head[:2] == b"\x1f\x8b")
    else:
        what = ("an HTML page (a failed download?)" if head.lstrip()[:1] == b"<"
                else "neither a .nemo tar, a torch zip nor a pickle")
        report.problem = f"not a checkpoint: {what}"
        return report
    report.globals = scan.globals
    report.holds = _claimant("torch", lambda fmt: fmt.holds_keys(scan.strings))
    return report


def check_file(path: str | Path, model: str, error: type[Exception] = OfficialFileError) -> FileReport:
    """The file's report; raises `error`, naming the file, when it must not be loaded as `model`."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    report = inspect_file(path)
    problem = report.refusal(model)
    if problem:
        raise error(f"{path}: {problem}")
    return report


def load_torch_file(path: str | Path, model: str, trust: bool = False, error: type[Exception] = OfficialFileError):
    """torch.load under the trust rule (module docstring): weights-only when that is all the
    file needs; full unpickling only with `trust` and only for the globals the official format
    of `model` needs. Every refusal raises `error` naming the file."""
    import torch

    report = check_file(path, model, error)
    if report.format != "torch":  # torch.load also takes tar and TorchScript files, whose pickles are not scanned
        raise error(f"{path}: {describe(report)}, not a torch.save file")
    full = bool(report.beyond_weights_only())
    if full and not trust:
        raise error(f"{path}: {report.trust_note(model)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not full)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise error(f"{path}: {report.container} that cannot be read as {model_name(model)} "
                    f"({type(exc).__name__}: {first})") from None


def load_espnet_pack(path: str | Path, model: str, error: type[Exception] = OfficialFileError) -> EspnetPack:
    """An ESPnet packed model (espnet_model_zoo's format): its training config and its state dict,
    read with torch.load(weights_only=True). ESPnet saves plain state dicts, so no trust is ever
    needed: a pack whose pickle calls anything else is refused (check_file). Raises `error`
    naming the file."""
    import torch

    report = check_file(path, model, error)
    if report.format != "espnet":
        raise error(f"{path}: {describe(report)}, not an ESPnet packed model (a zip or tar with {ESPNET_META})")
    try:
        with (zipfile.ZipFile(path) if zipfile.is_zipfile(path) else tarfile.open(path)) as archive:
            packed = _PackedZip(archive) if isinstance(archive, zipfile.ZipFile) else _PackedTar(archive)
            pack = _read_espnet_pack(packed)
            pack.state = torch.load(io.BytesIO(packed.open(pack.model_member).read()), map_location="cpu",
                                    weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip, tar, yaml and torch raise many types for a damaged file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise error(f"{path}: {report.container} that cannot be read as {model_name(model)} "
                    f"({type(exc).__name__}: {first})") from None
    return pack


def describe(report: FileReport) -> str:
    """One phrase for messages: what the file was found to be."""
    if report.problem:
        return report.problem
    if report.holds:
        return f"{report.container} holding {model_name(report.holds)}"
    return f"{report.container} of an unrecognised model"
