"""Laundered copies of a corpus: every clip passed through a chain of transforms (a lossy codec, the
telephone band, noise at a given SNR, resampling, cropping) into a new corpus, whose manifest keeps
the parent's labels and records, per clip, the parent audio's sha256 and the transform chain.

Forensic use asks first whether attribution survives what happens to audio in the wild; a derived
corpus is an ordinary corpus, so every command (features, attribute, bench) takes it as it is.

Transforms (`--transform SPEC`, repeatable, applied in order):
  codec:mp3:32k  codec:opus:16k   a lossy codec at a bitrate, decoded back to the clip's sample rate
  codec:g711     codec:amr-nb     a narrowband telephone codec (8 kHz out; AMR-NB needs FFmpeg built with it)
  telephone                       band 300-3400 Hz at 8 kHz
  noise:snr=10                    white Gaussian noise at that SNR in dB (seeded per clip)
  resample:8000                   to that sample rate
  crop:2.0                        the first 2.0 seconds
Output clips are 16-bit PCM WAV. The result is a pure function of the parent audio, the chain and
the seed on one machine (FFmpeg's encoders are run bit-exact; a different FFmpeg build may encode a
codec differently).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from sourcetrace.core.errors import SourcetraceError, UsageError
from sourcetrace.core.fileio import atomic_path, sha256_file, write_json_atomic
from sourcetrace.corpus.manifest import Corpus, audio_facts

DERIVATION = "derivation.json"  # in the derived corpus: what it was made from and how (resume checks it)
SCRATCH = ".scratch"  # in the derived corpus while it is made: the codecs' files
TELEPHONE_BAND = (300.0, 3400.0)
NARROWBAND_RATE = 8000


class DeriveError(SourcetraceError, RuntimeError):
    """A transform that cannot run here (FFmpeg or one of its encoders missing) or failed on a clip."""


@dataclass(frozen=True)
class ClipContext:
    """What a transform may use besides the samples: the clip's own noise generator, and a scratch
    folder inside the output (a codec's file is written there, never outside the corpus)."""

    rng: np.random.Generator
    scratch: Path


@dataclass(frozen=True)
class Transform:
    """One step of a chain: `spec` is its canonical spelling, `apply` maps (wave, rate, context) to (wave, rate)."""

    spec: str
    apply: Callable[[np.ndarray, int, ClipContext], tuple[np.ndarray, int]]
    check: Callable[[], None] = lambda: None  # what it needs of this machine, checked before any clip


def _number(text: str, what: str, spec: str) -> float:
    try:
        value = float(text[:-1]) * 1000 if text.lower().endswith("k") else float(text)
    except ValueError:
        raise UsageError(f"--transform {spec!r}: {what} {text!r} is not a number") from None
    if not value > 0:
        raise UsageError(f"--transform {spec!r}: {what} must be above 0")
    return value


# name -> (FFmpeg encoder, container, fixed encoding rate or None to keep the clip's, output rate or None)
CODECS: dict[str, tuple[str, str, int | None, int | None]] = {
    "mp3": ("libmp3lame", "mp3", None, None),
    "opus": ("libopus", "ogg", 48000, None),  # Opus encodes at 48 kHz; decoded back to the clip's rate
    "g711": ("pcm_mulaw", "wav", NARROWBAND_RATE, NARROWBAND_RATE),
    "amr-nb": ("libopencore_amrnb", "amr", NARROWBAND_RATE, NARROWBAND_RATE),
}
BITRATE_CODECS = ("mp3", "opus")
BITEXACT = ["-fflags", "+bitexact", "-flags:a", "+bitexact"]


def to_pcm16(wave: np.ndarray) -> np.ndarray:
    """16-bit samples, scaled as libsndfile reads them (x 32768), so a clip read and written unchanged
    keeps every sample (libsndfile's own float writer scales by 32767)."""
    return np.clip(np.round(wave.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def _ffmpeg_exe(spec: str) -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise DeriveError(f"--transform {spec!r} needs FFmpeg: `apt-get install ffmpeg` (Debian/Ubuntu)")
    return exe


def _check_encoder(encoder: str, spec: str) -> None:
    """Refuse, before any clip, a codec this FFmpeg cannot encode."""
    done = subprocess.run([_ffmpeg_exe(spec), "-hide_banner", "-encoders"], capture_output=True, text=True, check=False)
    if not any(line.split()[1:2] == [encoder] for line in done.stdout.splitlines() if line.startswith(" ")):
        raise DeriveError(f"--transform {spec!r}: this FFmpeg has no {encoder} encoder; install an FFmpeg built "
                          "with that library, or choose another codec")


def _ffmpeg(args: list[str], data: bytes, spec: str) -> bytes:
    done = subprocess.run([_ffmpeg_exe(spec), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
                          input=data, capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise DeriveError(f"--transform {spec!r}: FFmpeg failed: {message[-1] if message else done.returncode}")
    return done.stdout


def _codec(spec: str, name: str, bitrate: float | None) -> Transform:
    encoder, container, encode_rate, out_rate = CODECS[name]

    def apply(wave: np.ndarray, rate: int, context: ClipContext) -> tuple[np.ndarray, int]:
        pcm = to_pcm16(wave).astype("<i2").tobytes()
        raw_in = ["-f", "s16le", "-ar", str(rate), "-ac", "1", "-i", "pipe:0"]
        rate_args = ["-ar", str(encode_rate)] if encode_rate else []
        bitrate_args = ["-b:a", str(int(bitrate))] if bitrate else []
        back = out_rate or rate
        # a seekable file, not a pipe: the encoder writes its delay and padding into the header
        # (LAME's gapless info), so the decoder gives back exactly the clip's samples
        with tempfile.TemporaryDirectory(dir=context.scratch, prefix="codec-") as tmp:
            coded = Path(tmp) / f"clip.{container}"
            _ffmpeg([*raw_in, *BITEXACT, *rate_args, "-c:a", encoder, *bitrate_args, str(coded)], pcm, spec)
            decoded = _ffmpeg(["-i", str(coded), *BITEXACT, "-f", "s16le", "-ar", str(back), "-ac", "1", "pipe:1"],
                              b"", spec)
        return np.frombuffer(decoded, dtype="<i2").astype(np.float32) / 32768.0, back
    return Transform(spec, apply, check=lambda: _check_encoder(encoder, spec))


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    return wave if rate == target else soxr.resample(wave, rate, target, quality="HQ").astype(np.float32)


def _telephone(wave: np.ndarray, rate: int, _context: ClipContext) -> tuple[np.ndarray, int]:
    """Zero-phase band limit to 300-3400 Hz at 8 kHz (the resampler removes what lies above 4 kHz)."""
    narrow = _resample(wave, rate, NARROWBAND_RATE)
    spectrum = np.fft.rfft(narrow.astype(np.float64))
    freqs = np.fft.rfftfreq(len(narrow), 1.0 / NARROWBAND_RATE)
    spectrum[(freqs < TELEPHONE_BAND[0]) | (freqs > TELEPHONE_BAND[1])] = 0.0
    return np.fft.irfft(spectrum, n=len(narrow)).astype(np.float32), NARROWBAND_RATE


def _noise(snr_db: float) -> Callable:
    def apply(wave: np.ndarray, rate: int, context: ClipContext) -> tuple[np.ndarray, int]:
        power = float(np.mean(wave.astype(np.float64) ** 2))  # silence stays silent: no level to set noise by
        noise = context.rng.standard_normal(len(wave)) * np.sqrt(power / 10 ** (snr_db / 10))
        return (wave + noise).astype(np.float32), rate
    return apply


def parse_transform(spec: str) -> Transform:
    """The transform a `--transform` SPEC names (see the module's docstring)."""
    name, _, argument = spec.partition(":")
    if name == "codec":
        codec, _, bitrate = argument.partition(":")
        if codec not in CODECS:
            raise UsageError(f"--transform {spec!r}: unknown codec {codec!r}; codecs: {', '.join(CODECS)}")
        if codec in BITRATE_CODECS and not bitrate:
            raise UsageError(f"--transform {spec!r}: give the bitrate, e.g. codec:{codec}:32k")
        if codec not in BITRATE_CODECS and bitrate:
            raise UsageError(f"--transform {spec!r}: {codec} has a fixed bitrate; write codec:{codec}")
        bits_per_s = _number(bitrate, "bitrate", spec) if bitrate else None
        return _codec(f"codec:{codec}" + (f":{bits_per_s / 1000:g}k" if bits_per_s else ""), codec, bits_per_s)
    if name == "telephone" and not argument:
        return Transform("telephone", _telephone)
    if name == "noise":
        key, _, value = argument.partition("=")
        if key != "snr":
            raise UsageError(f"--transform {spec!r}: write noise:snr=DB, e.g. noise:snr=10")
        try:
            snr = float(value)
        except ValueError:
            raise UsageError(f"--transform {spec!r}: SNR {value!r} is not a number (dB)") from None
        return Transform(f"noise:snr={snr:g}", _noise(snr))
    if name == "resample":
        target = int(_number(argument, "sample rate", spec))
        return Transform(f"resample:{target}", lambda wave, rate, _context: (_resample(wave, rate, target), target))
    if name == "crop":
        seconds = _number(argument, "length", spec)
        return Transform(f"crop:{seconds:g}", lambda wave, rate, _context: (wave[: int(round(seconds * rate))], rate))
    raise UsageError(f"--transform {spec!r}: unknown transform; one of codec:mp3:32k, codec:opus:16k, codec:g711, "
                     "codec:amr-nb, telephone, noise:snr=10, resample:8000, crop:2.0")


def chain_spec(transforms: list[Transform]) -> str:
    """The chain as the manifest's `transform` column spells it: specs joined by '+'."""
    return "+".join(t.spec for t in transforms)


def derive_clip(source: Path, transforms: list[Transform], seed: int, clip_id: str,
                scratch: Path) -> tuple[np.ndarray, int]:
    """The clip at `source` (mono: channels averaged) through the chain; noise seeded by (seed, clip_id)."""
    wave, rate = sf.read(str(source), dtype="float32", always_2d=True)
    wave = wave.mean(axis=1)
    context = ClipContext(np.random.default_rng([seed, int(hashlib.sha256(clip_id.encode()).hexdigest()[:15], 16)]),
                          scratch)
    for transform in transforms:
        wave, rate = transform.apply(wave, rate, context)
    return wave, rate


@dataclass
class DeriveReport:
    made: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)  # "clip_id: why", one per clip left out


def derive_corpus(parent: str | Path, specs: list[str], out: str | Path, seed: int = 0,
                  progress: bool = True) -> DeriveReport:
    """Write the laundered copy of the corpus at `parent` into `out`. Resumable: clips are written
    atomically and one made by the same derivation is kept; a clip that fails is reported and left out,
    the rest written, the manifest written last."""
    if not specs:
        raise UsageError("give at least one --transform SPEC")
    transforms = [parse_transform(s) for s in specs]
    for transform in transforms:
        transform.check()
    corpus = Corpus.read(parent)
    out = Path(out)
    if out.resolve() == corpus.root.resolve() or corpus.root.resolve() in out.resolve().parents:
        raise UsageError(f"--out {out}: inside the parent corpus {corpus.root}; choose a folder outside it")
    derivation = {"parent_manifest_sha256": sha256_file(corpus.manifest_path), "transform": chain_spec(transforms),
                  "seed": seed}
    record = out / DERIVATION
    if record.is_file():
        if json.loads(record.read_text(encoding="utf-8")) != derivation:
            raise UsageError(f"{out}: holds another derivation ({record}); choose an empty --out folder")
    elif out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out}: not empty; choose an empty folder")
    targets = [PurePosixPath(row.path).with_suffix(".wav").as_posix() for row in corpus.rows]
    clashes = sorted(t for t, n in Counter(targets).items() if n > 1)
    if clashes:
        raise UsageError(f"{corpus.manifest_path}: clips that differ only in their suffix would share the derived "
                         f"file {clashes[0]!r} ({len(clashes)} such paths); rename them in the parent corpus")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, derivation)
    scratch = out / SCRATCH
    shutil.rmtree(scratch, ignore_errors=True)  # a killed run's codec files
    scratch.mkdir()
    report, rows = DeriveReport(), []
    for row, path in tqdm(list(zip(corpus.rows, targets, strict=True)), desc="derive", unit="clip", disable=not progress):
        target = out / path
        try:
            if target.is_file():
                report.reused += 1
            else:
                wave, rate = derive_clip(corpus.audio_path(row), transforms, seed, row.clip_id, scratch)
                with atomic_path(target) as tmp:
                    sf.write(str(tmp), to_pcm16(wave), rate, subtype="PCM_16", format="WAV")
                report.made += 1
        except (DeriveError, OSError, RuntimeError) as exc:  # a clip libsndfile cannot read, a codec that fails
            report.failed.append(f"{row.clip_id}: {exc}")
            continue
        rows.append(replace(row, path=path, parent_sha256=row.sha256 or sha256_file(corpus.audio_path(row)),
                            transform=derivation["transform"], **audio_facts(target)))
    shutil.rmtree(scratch, ignore_errors=True)
    if rows:
        Corpus(root=out, rows=rows).write()
    return report


def read_derived(parent: Corpus, audio_hashes: dict[str, str], folder: str | Path) -> tuple[Corpus, dict]:
    """The corpus at `folder` and its derivation record, once it is proven a laundered copy of
    `parent`: its derivation.json names the parent's manifest, and every clip of the parent is there
    under its id, made from the audio the parent holds now (`audio_hashes`: clip id -> sha256). A
    laundered query scored against a clean support means nothing otherwise."""
    folder = Path(folder)
    record = folder / DERIVATION
    if not record.is_file():
        raise UsageError(f"{folder}: not a derived corpus (no {DERIVATION}); make it with `sourcetrace corpus derive "
                         f"{parent.root} --transform SPEC --out {folder}`")
    try:
        derivation = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{record}: cannot read ({exc})") from None
    if not (isinstance(derivation, dict) and isinstance(derivation.get("transform"), str) and derivation["transform"]
            and type(derivation.get("seed")) is int):
        raise UsageError(f"{record}: not a derivation record (a transform chain and a seed); derive the corpus again")
    manifest = sha256_file(parent.manifest_path)
    if derivation.get("parent_manifest_sha256") != manifest:
        raise UsageError(f"{folder}: derived from another corpus (its {DERIVATION} names parent manifest sha256 "
                         f"{str(derivation.get('parent_manifest_sha256'))[:16]}..., {parent.root}'s is {manifest[:16]}...); "
                         f"derive it from {parent.root} again")
    derived = Corpus.read(folder)
    rows = {row.clip_id: row for row in derived.rows}
    missing = [clip_id for clip_id in audio_hashes if clip_id not in rows]
    if missing:
        raise UsageError(f"{folder}: lacks {len(missing)} clips of {parent.root} (e.g. {missing[0]!r}); a laundered "
                         "copy must hold every clip: rerun `sourcetrace corpus derive` on it to make them")
    stale = [clip_id for clip_id, sha in audio_hashes.items() if rows[clip_id].parent_sha256 != sha]
    if stale:
        raise UsageError(f"{folder}: {len(stale)} clips were not made from {parent.root}'s audio (parent_sha256 differs, "
                         f"e.g. {stale[0]!r}); derive it from {parent.root} again")
    return derived, derivation
