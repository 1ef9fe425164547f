"""One GPU check: every speed figure the study's compute plan needs, in one command and one JSON.

Sections (each timed, each recorded even when another fails; `--sections` picks some):

ssl         both study models (xls-r-2b @ 8, w2v-bert-2.0 @ 4) with the real architectures and seeded
            random weights built from the shipped configs: the naive way (the study's code, one clip
            at a time), SSLExtractor in fp32 and in bf16, each after a warm-up batch, with the
            extractor's phases (preprocess, copy, forward, pool) and the decoding of the clips from
            22.05 kHz WAV (decode), and each fast path's largest relative error against naive; for
            xls-r also with its conv front end as channels-last GEMMs (`*-gemm-frontend`, and the
            front end alone both ways: `frontend`; adopt it as the GPU default only if faster at the
            same error).
features    `sourcetrace features` end to end (a subprocess, as a user runs it) on a generated
            corpus of 6,000 synthetic clips of 1-10 s at 22.05 kHz, xls-r-2b @ 8, bf16; then the
            store's ceiling on the same clips (an extractor that costs nothing: decoding,
            planning, shard writes), one decode thread against the default count.
generators  seconds per training step (batch 16) and synthesis RTF (acoustic model, and with its
            HiFi-GAN V1) at default size, deterministic (on CUDA: torch refuses ops without a
            deterministic kernel; such an op is recorded by name) and not, for each study
            architecture whose stack imports here; the others are recorded as not available.
            Where deterministic training runs, `resume`: 4 steps trained in this process, again in
            a fresh process, and in a fresh process stopped at step 2 then resumed by another,
            checkpoints compared bit for bit (bench_generators.check_resume).
knn         the `table1` suite's kNN (69,600 clips, both extractor widths) on this device, then every
            split's predictions on this device and on the CPU, timed, with the count that differ.

`--small` is a dry run of the same code with tiny models and few clips (about a minute on two CPU
cores): the same JSON shape, `"dry_run": true`. Only a full run on a GPU gives figures to report;
do not commit a dry run's JSON under perf/results/.

On the device tool's GPU image (no network; its packages: tools/gpu-image-packages.txt), bring
what it lacks, built here (about 5 MB; the image's Python is 3.12):

    bash tools/gpu-wheels.sh .whl 3.12      # sourcetrace, tools/gpu-wheels.txt, grad-tts

.whl/ is git-ignored: name it in the device tool's `carry`. There (grad-tts's source, where no
local Python 3.12 built its wheel, is compiled with the image's Cython and compiler; if that
fails, Grad-TTS is reported as not available):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    if ls .whl/*.tar.gz >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps \
        --no-build-isolation --target /tmp/site .whl/*.tar.gz; fi
    PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 perf/gpu_check.py --out $OUT/gpu_check.json \
        --budget-s 420 --workdir /tmp/gpu-check 2>&1 | tee $OUT/gpu_check.log

Rehearsed on the CPU by tests/test_gpu_check.py: `python tools/gpu_image.py image DIR
--with-wheel-list` links only the image's packages and the wheel list's into DIR, and the dry run
runs in a bare venv with PYTHONPATH=SITE:DIR, nothing else importable. That checks names, not
versions: the packages linked are this machine's (with what their versions need here); the
image's own versions, the 3.12 wheels and building grad-tts there meet first on the device.

It needs about 12 GB of disk under --workdir (random-init model folders, the corpus) and runs in
under 8 minutes on one H100/H200 (an estimate: no full run yet). The JSON is rewritten after each
section (`"complete": false` until the end), so a run cut off by a time limit keeps what it
finished (`"complete": true` once the run has ended, with its failed and skipped sections
listed); `--budget-s` starts no section after that many seconds. NeMo and Coqui (FastPitch,
VITS) are a few GB: not brought, so reported as not available; Matcha-TTS needs libespeak-ng on
the image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts

FULL = {"ssl_models": (("xls-r-2b", 8), ("w2v-bert-2.0", 4)), "naive_clips": 48, "fast_clips": 600,
        "seconds": (1.0, 10.0), "corpus_clips": 6000, "corpus_model": ("xls-r-2b", 8),
        "generator_config": "default", "batch_size": 16, "steps": 5, "resume_steps": 4, "prompts": 3, "knn_prompts": 600,
        "architectures": ("fastpitch", "gradtts", "matcha", "vits")}
SMALL = {"ssl_models": (("tiny-wav2vec2", 2), ("tiny-w2v-bert", 2)), "naive_clips": 4, "fast_clips": 16,
         "seconds": (0.5, 3.0), "corpus_clips": 40, "corpus_model": ("tiny-wav2vec2", 2),
         "generator_config": "tiny", "batch_size": 2, "steps": 1, "resume_steps": 2, "prompts": 1, "knn_prompts": 30,
         "architectures": ("gradtts",)}  # the stack a stock GPU image can hold; the others are slow to import
SECTIONS = ("ssl", "features", "generators", "knn")
RATE = 22050  # the TTS models' rate: clips are decoded and resampled to 16 kHz, as in the study


def random_model(name: str, workdir: Path) -> Path:
    from sourcetrace.attribution.extractors.ssl import named_model_spec, save_random_model

    spec = named_model_spec(name)
    return save_random_model(spec["config"], spec["preprocessor"], workdir / f"random-{name}", seed=0)


def write_clips(folder: Path, n: int, seconds: tuple[float, float], seed: int = 0,
                names: list[str] | None = None) -> list[Path]:
    """Synthetic 22.05 kHz WAV clips (noise under a tone): speed does not depend on content."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, length in enumerate(rng.uniform(*seconds, n)):
        path = folder / f"{names[i] if names else f'clip-{i:05d}'}.wav"
        if not path.exists():
            t = np.arange(int(length * RATE)) / RATE
            wave = 0.05 * rng.standard_normal(len(t)) + 0.1 * np.sin(2 * np.pi * rng.uniform(100, 400) * t)
            sf.write(path, wave.astype(np.float32), RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def synthetic_corpus(root: Path, n: int, seconds: tuple[float, float], seed: int):
    """A corpus of `n` synthetic clips under `root` (four architectures, eight checkpoints each)."""
    from sourcetrace.corpus import ClipRecord, Corpus

    paths = write_clips(root / "audio", n, seconds, seed=seed)
    rows = [ClipRecord(clip_id=p.stem, path=f"audio/{p.name}", architecture=f"arch{i % 4}",
                       checkpoint=f"arch{i % 4}/ckpt{i % 8}", prompt_id=f"p{i // 8}", text="")
            for i, p in enumerate(paths)]
    corpus = Corpus(root=root, rows=rows)
    corpus.write()
    return corpus


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def check_ssl(size: dict, device_name: str, workdir: Path, log) -> dict:
    import torch
    from bench_frontend import frontend_timings
    from bench_ssl_extraction import load_naive, naive_vectors
    from transformers import AutoConfig

    from sourcetrace.attribution.extractors.frontend import fits as gemm_fits
    from sourcetrace.attribution.extractors.ssl import SSLExtractor, named_model_spec
    from sourcetrace.core.audio import load_audio
    from sourcetrace.core.device import resolve_device

    device = resolve_device(device_name)
    paths = write_clips(workdir / "ssl-clips", size["fast_clips"], size["seconds"], seed=1)
    t0 = time.perf_counter()
    waves = [load_audio(p, 16000) for p in paths]
    decode_s = time.perf_counter() - t0
    audio_s = sum(len(w) for w in waves) / 16000
    out = {"clips": len(waves), "audio_seconds": audio_s, "decode_s": decode_s,
           "decode_clips_per_s": len(waves) / decode_s, "models": {}}
    for name, layer in size["ssl_models"]:
        t0 = time.perf_counter()
        model_dir = random_model(name, workdir)
        entry = out["models"][f"{name}@{layer}"] = {"model_build_s": time.perf_counter() - t0, "paths": {}}
        naive_waves = waves[: size["naive_clips"]]
        _reset_peak(device)
        t0 = time.perf_counter()
        processor, model = load_naive(model_dir, device)
        load_s = time.perf_counter() - t0
        naive_vectors(processor, model, naive_waves[:1], layer, device)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        reference = naive_vectors(processor, model, naive_waves, layer, device)
        _sync(device)
        run_s = time.perf_counter() - t0
        entry["paths"]["naive"] = {"clips": len(naive_waves), "run_s": run_s, "load_s": load_s,
                                   "clips_per_s": len(naive_waves) / run_s, "peak_gib": _peak_gib(device)}
        del processor, model
        log(f"[ssl] {name}@{layer} naive: {len(naive_waves) / run_s:.1f} clips/s")
        frontends = ["conv", "gemm"] if gemm_fits(AutoConfig.for_model(**named_model_spec(name)["config"])) else ["conv"]
        if "gemm" in frontends:  # the front end alone, both ways, same batch (bench_frontend.py)
            entry["frontend"] = frontend_timings(name, str(device), ("float32", "bfloat16"))
            log(f"[ssl] {name} front end: " + ", ".join(
                f"{d} gemm {r['gemm_speedup']:.2f}x conv (differences {r['conv_difference']:.1e} / "
                f"{r['gemm_difference']:.1e})"
                for d, r in entry["frontend"]["dtypes"].items()))
        variants = [(dtype, frontend) for frontend in frontends for dtype in ("float32", "bfloat16")]
        for dtype, frontend in variants:
            path = dtype if frontend == "conv" else f"{dtype}-gemm-frontend"
            _reset_peak(device)
            t0 = time.perf_counter()
            extractor = SSLExtractor(model_dir, [layer], device=str(device), dtype=dtype, frontend=frontend)
            _ = extractor.model  # load now, outside the timed extraction
            load_s = time.perf_counter() - t0
            batches = extractor.plan_batches([len(w) for w in waves])
            extractor.extract([waves[i] for i in batches[len(batches) // 2]])  # warm-up: kernels, allocator
            _sync(device)
            t0 = time.perf_counter()
            vectors = np.empty((len(waves), extractor.vector_dim), np.float32)
            for batch in batches:
                vectors[batch] = extractor.extract([waves[i] for i in batch])
            _sync(device)
            run_s = time.perf_counter() - t0
            extractor.phase_seconds = {}  # a second pass, synchronised per phase, for the breakdown
            for batch in batches:
                extractor.extract([waves[i] for i in batch])
            a, b = vectors[: len(reference)].astype(np.float64), reference.astype(np.float64)
            entry["paths"][path] = {
                "clips": len(waves), "run_s": run_s, "load_s": load_s, "clips_per_s": len(waves) / run_s,
                "audio_seconds_per_s": audio_s / run_s, "batches": len(batches),
                "max_batch_seconds": extractor.max_batch_seconds, "peak_gib": _peak_gib(device),
                "phases_s": {"decode": decode_s, **extractor.phase_seconds},
                "max_relative_error_vs_naive": float((np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)).max()),
            }
            log(f"[ssl] {name}@{layer} {path}: {len(waves) / run_s:.1f} clips/s, phases "
                + ", ".join(f"{k} {v:.2f} s" for k, v in entry["paths"][path]["phases_s"].items()))
            del extractor
        for path, row in entry["paths"].items():
            if path != "naive":
                row["speedup_vs_naive"] = row["clips_per_s"] / entry["paths"]["naive"]["clips_per_s"]
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def check_features(size: dict, device_name: str, workdir: Path, log) -> dict:
    from bench_decode import decode_ceiling

    from sourcetrace.attribution.store import default_decode_threads
    from sourcetrace.core.device import resolve_device

    name, layer = size["corpus_model"]
    model_dir = random_model(name, workdir)
    root = workdir / f"corpus-{size['corpus_clips']}"
    t0 = time.perf_counter()
    corpus = synthetic_corpus(root, size["corpus_clips"], size["seconds"], seed=2)
    paths = [corpus.audio_path(row) for row in corpus.rows]
    generate_s = time.perf_counter() - t0
    store = workdir / f"store-{size['corpus_clips']}"
    if store.exists():
        import shutil

        shutil.rmtree(store)  # end to end means computing every vector
    dtype = "bf16" if resolve_device(device_name).type == "cuda" else "fp32"
    cmd = [sys.executable, "-m", "sourcetrace.cli", "features", str(root), "--extractor", f"ssl:{model_dir}@{layer}",
           "--device", device_name, "--dtype", dtype, "--store", str(store), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    import soundfile as sf

    audio_s = sum(sf.info(str(p)).duration for p in paths)
    log(f"[features] {len(paths)} clips ({audio_s:.0f} s of audio) in {wall_s:.1f} s end to end")
    threads = sorted({1, default_decode_threads()})
    ceiling = decode_ceiling(corpus, threads)  # the store with an extractor that costs nothing
    log("[features] the store's ceiling (decode, plan, write): " + ", ".join(
        f"{n} decode thread(s) {row['clips_per_s']:.0f} clips/s" for n, row in ceiling["threads"].items()))
    return {"clips": len(paths), "audio_seconds": audio_s, "extractor": f"{name}@{layer}", "dtype": dtype,
            "corpus_generation_s": generate_s, "wall_s": wall_s, "clips_per_s": len(paths) / wall_s,
            "command": " ".join(cmd[1:]), "stdout_tail": proc.stdout[-500:], "store_ceiling": ceiling}


def check_generators(size: dict, device_name: str, workdir: Path, log) -> dict:
    import torch
    from bench_generators import check_resume, measure_generator

    from sourcetrace.core.device import resolve_device
    from sourcetrace.core.espeak import sentences
    from sourcetrace.core.fileio import write_text_atomic
    from sourcetrace.core.plugins import STUDY_ARCHITECTURES
    from sourcetrace.datasets.ljspeech import LJSpeech
    from sourcetrace.generators.base import GeneratorError

    device = str(resolve_device(device_name))
    lj_root = workdir / "lj-synthetic"  # no espeak-ng on GPU images: synthetic audio, real sentences
    n_train = max(size["batch_size"], 8)
    texts = sentences(n_train + size["prompts"], seed=0)
    ids = [f"LJ001-{i + 1:04d}" for i in range(len(texts))]
    write_clips(lj_root / "wavs", len(ids), (2.0, 4.0), seed=3, names=ids)
    write_text_atomic(lj_root / "metadata.csv", "".join(f"{i}|{t}|{t}\n" for i, t in zip(ids, texts)))
    split = {utt: "train" if n < n_train else "test" for n, utt in enumerate(ids)}
    lj = LJSpeech(lj_root, split=split)
    out, vocoders = {}, {}
    for arch in STUDY_ARCHITECTURES:
        if arch not in size["architectures"]:
            out[arch] = {"available": None, "reason": "not run in this size (--small runs Grad-TTS only)"}
            continue
        try:
            from sourcetrace.generators import build_generator

            build_generator(arch, "tiny", seed=0)  # does the stack import here?
        except Exception as exc:  # noqa: BLE001 - an absent stack says so in many ways (ImportError, OSError for a missing library)
            out[arch] = {"available": False, "reason": f"{type(exc).__name__}: {str(exc)[:300]}"}
            log(f"[generators] {arch}: not available ({type(exc).__name__})")
            continue
        out[arch] = {"available": True}
        for mode, deterministic in (("deterministic", True), ("nondeterministic", False)):
            try:  # deterministic on CUDA refuses ops without a deterministic kernel, naming the op
                row = measure_generator(arch, size["generator_config"], lj, workdir, size["steps"],
                                        size["batch_size"], device, deterministic, vocoders)
            except Exception as exc:  # noqa: BLE001 - recorded (e.g. out of memory); the other architectures go on
                out[arch][mode] = {"error": str(exc) if isinstance(exc, GeneratorError)
                                   else f"{type(exc).__name__}: {str(exc)[:1000]}"}
                log(f"[generators] {arch} {mode}: {out[arch][mode]['error']}")
                continue
            out[arch][mode] = row
            log(f"[generators] {arch} {mode}: {row['seconds_per_step']:.3f} s/step at batch {size['batch_size']}, "
                f"RTF {row['rtf_acoustic']:.3f} / {row['rtf_with_vocoder']:.3f} with vocoder")
            if deterministic:
                try:  # a failure here keeps every figure measured so far
                    resume = out[arch]["resume"] = check_resume(arch, size["generator_config"], lj, workdir,
                                                                size["resume_steps"], size["batch_size"], device)
                except Exception as exc:  # noqa: BLE001 - recorded, and the section goes on
                    out[arch]["resume"] = {"error": f"{type(exc).__name__}: {str(exc)[:1000]}"}
                    log(f"[generators] {arch} resume check failed: {out[arch]['resume']['error']}")
                    continue
                same = {True: "equal", False: "DIFFERENT"}
                log(f"[generators] {arch} deterministic, {size['resume_steps']} steps: in a fresh process "
                    f"{same[resume['fresh_equals_first']]}, stopped and resumed {same[resume['resumed_equals_first']]}")
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return out


def check_knn(size: dict, device_name: str, workdir: Path, log) -> dict:
    from bench_table1 import table1_timings

    from sourcetrace.core.device import resolve_device

    device = str(resolve_device(device_name))
    return table1_timings(size["knn_prompts"], device=device, compare_device="cpu",
                          log=lambda m: log(f"[knn] {m}"))


CHECKS = {"ssl": check_ssl, "features": check_features, "generators": check_generators, "knn": check_knn}


def environment(device_name: str) -> dict:
    import torch

    from sourcetrace.core.device import resolve_device

    device = resolve_device(device_name)
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "device": str(device), "load_average": os.getloadavg()}
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30, cuda=torch.version.cuda)
    else:
        env["gpu"] = None
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON to write")
    parser.add_argument("--small", "--dry-run", action="store_true", help="tiny models, few clips: checks the script")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--workdir", help="model folders and corpora (default: a temporary folder, removed)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no section after this many seconds (recorded as skipped); leave room for "
                             "the longest section before a device's time limit")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    size = SMALL if args.small else FULL
    scratch = None if args.workdir else tempfile.TemporaryDirectory(prefix="gpu-check-")
    workdir = Path(args.workdir or scratch.name)
    started = time.perf_counter()
    result = {"schema": "sourcetrace-gpu-check/1", "dry_run": args.small,
              "note": "a dry run (--small): tiny models, few clips; not figures to report" if args.small else "",
              "environment": environment(args.device), "sizes": {k: v for k, v in size.items()},
              "sections": {}, "errors": {}}

    def log(message: str) -> None:
        print(f"{time.perf_counter() - started:6.1f}s {message}", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(complete: bool) -> None:
        """The JSON as it stands, replaced whole after every section: a run killed by the device's
        time limit still leaves every section it finished (`"complete": false`)."""
        result.update(complete=complete, seconds_total=time.perf_counter() - started)
        result["environment"]["load_average_end"] = os.getloadavg()
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str))
        os.replace(tmp, out)

    write(complete=False)  # the environment, before anything can fail
    for section in args.sections.split(","):
        if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
            result.setdefault("skipped", []).append(section)
            log(f"[{section}] skipped: the budget of {args.budget_s:.0f} s is spent")
            continue
        t0 = time.perf_counter()
        try:
            result["sections"][section] = CHECKS[section](size, args.device, workdir, log)
        except Exception:  # noqa: BLE001 - a failed section is reported with the others
            result["errors"][section] = traceback.format_exc()[-4000:]
            log(f"[{section}] FAILED:\n{result['errors'][section]}")
        result.setdefault("section_seconds", {})[section] = time.perf_counter() - t0
        write(complete=False)
    write(complete=True)
    log(f"wrote {out} ({len(result['errors'])} section(s) failed, {len(result.get('skipped', []))} skipped)")
    if scratch is not None:
        scratch.cleanup()
    sys.exit(1 if result["errors"] or result.get("skipped") else 0)


if __name__ == "__main__":
    main()
