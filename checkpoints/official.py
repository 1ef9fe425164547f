"""Official checkpoint files, read without unpickling anything, and the one trust rule.

`inspect_file` says what a file is (a `.nemo` archive, a torch.save file, zip or legacy
pickle, or an ESPnet packed model: a zip or tar with meta.yaml, the training config.yaml and a
torch.save state dict), whether it is complete (every tar member, zip entry and legacy storage is
all there), which model it holds (from its state-dict keys, NeMo's `target` class or ESPnet's
`tts` choice) and which globals its pickle would call (`pickletools.genops` reads the opcodes;
nothing is executed).

The trust rule (`load_torch_file`; every loader, verify and the messages use it): a file is
first read with torch's weights-only unpickler. A file that needs full unpickling loads only
with `--trust` (the recipe key `trust = true`), and only when every global its pickle calls is
one that the official format of that model needs (omegaconf and Lightning classes for
Matcha-TTS's `.ckpt`, Coqui config classes for VITS): any other global (`posix.system`,
`builtins.eval`, ...) is refused, trust or not, and named. Trust is never suggested for a file
that is truncated, of another format or of another model.
"""

from __future__ import annotations

import io
import pickletools
import re
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from sourcetrace.core.errors import SourcetraceError

#: how messages name what a file holds, by its architecture or vocoder kind: the names are sourcetrace.core.plugins'
#: (GENERATORS, VOCODERS; tests/test_checkpoints.py holds these keys to them), the words are this file's
MODELS = {
    "fastpitch": "a NeMo FastPitch model", "nemo-hifigan": "a NeMo HiFi-GAN vocoder",
    "vits": "a Coqui VITS model", "gradtts": "a Grad-TTS model", "matcha": "a Matcha-TTS model",
    "hifigan": "a jik876 HiFi-GAN generator", "dle-hifigan": "a DeepLearningExamples HiFi-GAN generator",
    "xtts": "a Coqui XTTS model",
    "bigvgan": "a BigVGAN generator", "vocos": "a Vocos vocoder",
    "vits-espnet": "an ESPnet2 VITS model",
}
TRUST_HINT = "--trust (recipe: trust = true)"


def model_name(model: str) -> str:
    """How messages name `model`; a plug-in's architecture or vocoder kind is named by itself."""
    return MODELS.get(model, f"a {model} model")

# Globals torch's weights-only unpickler accepts in a plain state dict.
_TORCH = re.compile(r"^(torch\._utils\._rebuild_\w+|torch\.\w*Storage|torch\.(device|Size|dtype|b?float\d*|"
                    r"float8_\w+|q?u?int\d+|bool|long|half|double|short|cfloat|cdouble|complex\d*)|"
                    r"collections\.OrderedDict|"
                    r"torch\.serialization\._get_layout|torch\._tensor\._rebuild_from_type_v2|"
                    r"torch\.nn\.parameter\.Parameter|builtins\.(set|frozenset|bytearray|dict|list|tuple|int|float|"
                    r"str|bool|bytes|complex|slice|range))$")
# What each official format needs beyond that: only these make trust meaningful. Both hold
# Python containers and may hold numpy values; Matcha's Lightning .ckpt holds omegaconf objects,
# Coqui's files Coqpit config classes.
_PLAIN = (r"typing\.Any|collections\.defaultdict|pathlib\.(Path|PosixPath|WindowsPath)|numpy\.(dtype|ndarray|"
          r"(_core|core)\.multiarray\.(_reconstruct|scalar)|dtypes\.\w+DType)")
_OFFICIAL_EXTRAS = {
    "matcha": re.compile(rf"^({_PLAIN}|builtins\.object|omegaconf\.(dictconfig\.DictConfig|listconfig\.ListConfig|"
                         r"base\.ContainerMetadata|base\.Metadata|nodes\.\w+Node)|"
                         r"(lightning\.fabric|lightning_fabric|lightning\.pytorch|pytorch_lightning)\.utilities\."
                         r"(data|parsing)\.AttributeDict)$"),
    # classes only: a module-wide pattern would admit its functions and the modules it imports
    # (coqpit.coqpit._rgetattr, coqpit.coqpit.argparse), i.e. code a pickle could call
    "vits": re.compile(rf"^({_PLAIN}|TTS(\.\w+)*\.[A-Z]\w*(Config|Args)|coqpit\.coqpit\.Coqpit)$"),
}
_OFFICIAL_EXTRAS["xtts"] = _OFFICIAL_EXTRAS["vits"]  # an XTTS release that pickles its XttsConfig
_ELEMENT_SIZE = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
                 "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "Untyped": 1, "QInt8": 1,
                 "QUInt8": 1, "QInt32": 4, "Float8_e4m3fn": 1, "Float8_e5m2": 1}
# What reading a damaged file can raise (zip, zlib, tar, pickletools and the symbolic stack).
_READ_ERRORS = (ValueError, IndexError, KeyError, TypeError, EOFError, RuntimeError, NotImplementedError,
                struct.error, zlib.error, zipfile.BadZipFile, tarfile.TarError, OSError, MemoryError)
_NEMO_TARGETS = {"FastPitchModel": "fastpitch", "HifiGanModel": "nemo-hifigan"}
_ESPNET_TTS = {"vits": "vits-espnet"}  # config.yaml's `tts` choice -> the model it holds
ESPNET_META = "meta.yaml"  # what makes a zip or tar an ESPnet packed model (espnet2/main_funcs/pack_funcs.py)


class OfficialFileError(SourcetraceError, ValueError):
    """A checkpoint file that cannot be (or must not be) loaded; the message names the file."""


@dataclass
class FileReport:
    path: Path
    format: str | None = None          # "nemo", "torch" or "espnet"; None when it is none of them
    container: str = ""                # what was found: "torch zip", "legacy torch pickle", ".nemo tar", ...
    problem: str | None = None         # why it cannot be a complete checkpoint (truncated, not one at all)
    holds: str | None = None           # a key of MODELS, when the file tells
    globals: set[str] = field(default_factory=set)

    def beyond_weights_only(self) -> list[str]:
        """Globals the weights-only unpickler refuses: what full unpickling would call."""
        return sorted(g for g in self.globals if not _TORCH.match(g))

    def foreign_globals(self, model: str | None) -> list[str]:
        """Globals that no official format of `model` needs (code a pickle could run); with no
        model, every global beyond weights-only."""
        extras = _OFFICIAL_EXTRAS.get(model)
        return [g for g in self.beyond_weights_only() if extras is None or not extras.match(g)]

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


# ---- reading pickles without running them --------------------------------------------------------

_MARK = object()
_STRINGS = {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING"}


@dataclass
class _Scan:
    globals: set[str] = field(default_factory=set)
    strings: set[str] = field(default_factory=set)
    storages: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (storage type, numel)


def _scan_pickle(stream, scan: _Scan) -> None:
    """Walk one pickle's opcodes with a symbolic stack: records the globals it names, its strings
    and torch's persistent storage ids; raises ValueError where the stream ends before STOP."""
    stack: list = []
    memo: dict = {}
    for opcode, arg, _ in pickletools.genops(stream):
        name = opcode.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = arg.partition(" ")
            glob = _global(module, attr)
            scan.globals.add(glob)
            if name == "INST":
                _pop_mark(stack)
            stack.append(glob)
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            glob = _global(module, attr) if isinstance(module, str) and isinstance(attr, str) else "?.?"
            scan.globals.add(glob)
            stack.append(glob)
        elif name in ("EXT1", "EXT2", "EXT4"):
            scan.globals.add(f"copyreg extension {arg}")
            stack.append(None)
        elif name in _STRINGS:
            value = arg if isinstance(arg, str) else str(arg)
            scan.strings.add(value)
            stack.append(value)
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo.get(arg))
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "TUPLE":
            stack.append(tuple(_pop_mark(stack)))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = stack[-n:]
            del stack[-n:]
            stack.append(tuple(items))
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("BINPERSID", "PERSID"):
            pid = stack.pop() if name == "BINPERSID" else arg
            if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
                scan.storages[str(pid[2])] = (str(pid[1]), pid[4] if isinstance(pid[4], int) else -1)
            stack.append(None)
        elif name == "DUP":
            stack.append(stack[-1])
        elif name == "NONE":
            stack.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name in ("PROTO", "FRAME", "STOP"):
            continue
        elif opcode.stack_after == [pickletools.anyobject] and not opcode.stack_before and arg is not None:
            stack.append(arg)  # ints, floats, bytes
        else:  # everything else only by its stack effect
            before = opcode.stack_before
            if pickletools.markobject in before:
                _pop_mark(stack)
                count = before.index(pickletools.markobject)
            else:
                count = len(before)
            if count:
                del stack[-count:]
            stack.extend([None] * len(opcode.stack_after))


def _global(module: str, attr: str) -> str:
    """module.name as Python 3 resolves it (protocol 2 pickles name `__builtin__`, `copy_reg`)."""
    module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
    return f"{module}.{attr}"


def _pop_mark(stack: list) -> list:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1:]
            del stack[i:]
            return items
    raise ValueError("MARK missing")


def _holds(strings: set[str]) -> str | None:
    """Which model a state dict is, from its keys (the official checkpoints' layouts)."""
    if "state_dict" in strings and "hyper_parameters" in strings and any(
            s.startswith("decoder.estimator.down_blocks.") for s in strings):
        return "matcha"
    if any(s.startswith("text_encoder.") for s in strings) and any(
            s.startswith(("waveform_decoder.", "posterior_encoder.")) for s in strings):
        return "vits"
    if any(s.startswith(("gpt.conditioning_encoder.", "xtts.gpt.conditioning_encoder.")) for s in strings) and any(
            s.startswith(("hifigan_decoder.waveform_decoder.", "xtts.hifigan_decoder.")) for s in strings):
        return "xtts"
    if any(s.startswith("decoder.estimator.") for s in strings) and any(
            s.startswith("encoder.proj_w") for s in strings):
        return "gradtts"
    if "generator" in strings and any(s.startswith("activation_post.") for s in strings):
        return "bigvgan"  # a HiFi-GAN layout with Snake activations
    if any(s.startswith("backbone.convnext.") for s in strings) and any(s.startswith("head.") for s in strings):
        return "vocos"
    if {"generator", "config"} <= strings and any(s.startswith(("conv_pre.", "module.conv_pre.")) for s in strings):
        return "dle-hifigan"  # DeepLearningExamples' file: jik876's keys (or DDP's module.) beside its 'config'
    if "generator" in strings and any(s.startswith("conv_pre.") for s in strings) and any(
            s.startswith("ups.") for s in strings):
        return "hifigan"
    return None


# ---- containers ----------------------------------------------------------------------------------

def _scan_zip(archive: zipfile.ZipFile, deep: bool, where: str) -> tuple[_Scan, str | None]:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith(".pkl")]
    if len(pickles) != 1 or not (pickles[0] == "data.pkl" or pickles[0].endswith("/data.pkl")):
        # TorchScript archives hold constants.pkl too, which torch.load would hand to torch.jit.load unscanned
        return _Scan(), f"{where}zip archive that is not a torch.save file (not exactly one pickle, data.pkl)"
    prefix = pickles[0][: -len("data.pkl")]
    scan = _Scan()
    try:
        _scan_pickle(io.BytesIO(archive.read(pickles[0])), scan)
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


def _scan_legacy(fh, size: int) -> tuple[_Scan, str | None]:
    """torch.save's legacy format: magic, protocol and sys-info pickles, the object's pickle, the
    storage keys' pickle, then each storage as an 8-byte element count and its bytes."""
    scan = _Scan()
    try:
        _scan_pickle(fh, scan)
        if scan.globals or fh.tell() == size:  # torch's first pickle is only its magic number
            return scan, "a plain pickle, not a torch.save file"
        for _ in range(4):
            _scan_pickle(fh, scan)
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
                report.holds = _NEMO_TARGETS.get(target.group(1).rsplit(".", 1)[-1])
            with zipfile.ZipFile(tar.extractfile(members["model_weights.ckpt"])) as archive:
                scan, problem = _scan_zip(archive, deep, "model_weights.ckpt is a ")
            report.globals = scan.globals
            report.problem = problem
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
    import yaml

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
    import yaml

    report.format, report.container = "espnet", f"ESPnet packed model ({packed.kind})"
    try:
        if deep and (bad := packed.damaged()) is not None:
            report.problem = f"ESPnet packed model with a damaged entry {bad} (CRC mismatch)"
            return report
        pack = _read_espnet_pack(packed)
        tts = pack.config.get("tts")
        report.holds = _ESPNET_TTS.get(tts, f"espnet-{tts}") if isinstance(tts, str) else None
        with zipfile.ZipFile(packed.open(pack.model_member)) as archive:
            scan, report.problem = _scan_zip(archive, deep, f"{pack.model_member} is a ")
        report.globals = scan.globals
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
    report.holds = _holds(scan.strings)
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
