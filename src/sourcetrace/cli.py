"""The `sourcetrace` command line: one sub-command per stage of the pipeline."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np


def _extractor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--extractor", required=True,
                   help="lfcc | mfcc | ssl:<model-folder>@<layer> | xls-r-2b@8 | w2v-bert-2.0@4 (A..B for all layers A to B)")
    p.add_argument("--models-dir", help="folder holding named models (default: $SOURCETRACE_MODELS or ~/.cache/sourcetrace/models)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--batch-size", type=int, help="most clips a batch (default: chosen from clip lengths and memory)")


def _build_extractor(args):
    from sourcetrace.attribution.extractors import build_extractor

    return build_extractor(args.extractor, models_dir=args.models_dir, device=args.device, dtype=args.dtype,
                           batch_size=args.batch_size)


def cmd_demo(args) -> int:
    from sourcetrace.demo import run_demo

    results = run_demo(args.out, n_prompts=args.prompts, k=args.k, progress=not args.quiet)
    return 1 if results["failures"] else 0


def cmd_corpus_import(args) -> int:
    from sourcetrace.corpus import import_corpus

    corpus = import_corpus(args.src, args.out, link=args.link)
    archs = sorted(set(corpus.column("architecture")))
    print(f"imported {len(corpus.rows)} clips, {len(set(corpus.column('checkpoint')))} checkpoints, "
          f"{len(archs)} architectures -> {corpus.manifest_path}")
    return 0


def cmd_corpus_validate(args) -> int:
    from sourcetrace.corpus import Corpus

    corpus = Corpus.read(args.corpus)
    print(f"{corpus.manifest_path}: valid, {len(corpus.rows)} clips")
    return 0


def cmd_corpus_verify(args) -> int:
    from sourcetrace.corpus import Corpus, verify_corpus

    corpus = Corpus.read(args.corpus, require_files=False)
    problems = verify_corpus(corpus)
    if args.recipe:
        from sourcetrace.recipe import load_recipe
        from sourcetrace.regenerate import check_against_recipe

        problems += check_against_recipe(corpus, load_recipe(args.recipe))
    for problem in problems:
        print(f"{corpus.manifest_path}: {problem}", file=sys.stderr)
    print(f"{corpus.manifest_path}: {len(corpus.rows)} clips checked, {len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_features(args) -> int:
    from sourcetrace.attribution.store import FeatureStore
    from sourcetrace.corpus import Corpus

    corpus = Corpus.read(args.corpus)
    store = FeatureStore(corpus, _build_extractor(args), root=args.store)
    report = store.compute(progress=not args.quiet)
    print(f"{store.dir}: {report.computed} computed, {report.reused} reused, {len(report.rejects)} rejected")
    for clip_id, path, reason in report.rejects:
        print(f"  rejected {clip_id} ({path}): {reason}", file=sys.stderr)
    if report.rejects:
        print(f"rejects listed in {store.dir / 'rejects.csv'}", file=sys.stderr)
    if args.export:
        n = store.export_npz(args.export)
        print(f"exported {n} vectors -> {args.export}")
    return 1 if report.rejects else 0


def cmd_attribute(args) -> int:
    from sourcetrace.attribution.knn import KNNAttributor
    from sourcetrace.attribution.store import FeatureStore
    from sourcetrace.attribution.unknown import UNKNOWN, calibrate_leave_one_class_out
    from sourcetrace.audio import AudioRejected, load_audio
    from sourcetrace.corpus import Corpus, label_values

    corpus = Corpus.read(args.support)
    extractor = _build_extractor(args)
    store = FeatureStore(corpus, extractor, root=args.store)
    report = store.compute(progress=not args.quiet)
    rejected = {r[0] for r in report.rejects}
    keep = [i for i, c in enumerate(corpus.column("clip_id")) if c not in rejected]
    X = store.load([corpus.rows[i]["clip_id"] for i in keep])
    y = np.array(label_values(corpus, args.level))[keep]
    make = lambda: KNNAttributor(k=args.k, metric=args.metric, standardize=args.standardize)  # noqa: E731
    knn = make().fit(X, y)
    threshold, calibration = args.threshold, None
    if threshold is None and not args.no_unknown:
        calibration = calibrate_leave_one_class_out(make, X, y)
        threshold = calibration["threshold"]

    waves, clips, failed = [], [], []
    for clip in args.clips:
        try:
            wave = load_audio(clip, extractor.sample_rate)
            if len(wave) < extractor.min_samples():
                raise AudioRejected(clip, f"shorter than the extractor's receptive field ({extractor.min_samples()} samples)")
            waves.append(wave)
            clips.append(clip)
        except AudioRejected as exc:
            failed.append({"clip": str(clip), "error": exc.reason})
            print(f"error: {exc}", file=sys.stderr)
    answers = []
    if waves:
        Q = np.empty((len(waves), X.shape[1]), np.float32)
        for batch in extractor.plan_batches([len(w) for w in waves]):
            Q[batch] = extractor.extract([waves[i] for i in batch])
        scores = knn.outlier_score(Q)
        for clip, ranked, score in zip(clips, knn.rank(Q), scores):
            unknown = threshold is not None and score > threshold
            answers.append({"clip": str(clip), "verdict": UNKNOWN if unknown else ranked[0]["label"],
                            "outlier_score": float(score), "threshold": threshold, "candidates": ranked})
    if args.json:
        print(json.dumps({"level": args.level, "k": args.k, "extractor": extractor.fingerprint,
                          "calibration": calibration, "results": answers, "errors": failed}, indent=2))
    else:
        for a in answers:
            note = f" (outlier score {a['outlier_score']:.4f} > threshold {a['threshold']:.4f})" if a["verdict"] == UNKNOWN else ""
            print(f"{a['clip']}: {a['verdict']}{note}")
            for rank, c in enumerate(a["candidates"][: args.top], start=1):
                print(f"  {rank}. {c['label']:<40} votes {c['votes']:.3f}  mean distance {c['mean_distance']:.4f}")
    return 1 if failed or report.rejects else 0


def cmd_bench(args) -> int:
    from sourcetrace.benchmark.bench import run_bench
    from sourcetrace.benchmark.protocol import load_protocol, load_suite

    if bool(args.suite) == bool(args.protocol):
        raise ValueError("give either --suite NAME or one or more --protocol NAME|FILE")
    protocols = load_suite(args.suite) if args.suite else [load_protocol(p) for p in args.protocol]
    seeds = [int(s) for s in args.seeds.split(",")]
    holdout = [h for h in (args.holdout or "").split(",") if h]
    systems = [(extractor, args.attributor) for extractor in args.extractor]
    failures = run_bench(args.corpus, protocols, systems, args.out, seeds=seeds,
                         holdout=holdout, figures=not args.no_figures, device=args.device, dtype=args.dtype,
                         models_dir=args.models_dir, progress=not args.quiet,
                         command=shlex.join(["sourcetrace", *args.argv]))
    return 1 if failures else 0


def cmd_leaderboard(args) -> int:
    from sourcetrace.benchmark.report import build_leaderboard

    files = []
    for item in args.results:
        path = Path(item)
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    page = build_leaderboard(files, args.out, title=args.title)
    print(f"leaderboard of {len(files)} result file(s): {page} (+ leaderboard.md, leaderboard.json)")
    return 0


def cmd_datasets_make_mini(args) -> int:
    from sourcetrace.datasets.espeak_datasets import make_hifitts_like, make_ljspeech_like

    out = Path(args.out)
    lj = make_ljspeech_like(out / "LJSpeech-mini", args.train, args.val, args.test)
    manifest = make_hifitts_like(out / "hifitts-mini", args.speaker_clips)
    print(f"{lj.root}: {len(lj.items('train'))} train, {len(lj.items('val'))} val, {len(lj.items('test'))} test "
          f"(split in {lj.root / 'split.tsv'})\n{manifest}: {args.speaker_clips} clips of speaker 9136")
    return 0


def cmd_datasets_prompts(args) -> int:
    from sourcetrace.datasets.ljspeech import LJSpeech, standard_split
    from sourcetrace.datasets.prompts import write_prompts

    dataset = LJSpeech(args.ljspeech, split=standard_split(args.split) if args.split else None, check_audio=False)
    prompts = dataset.prompts()
    write_prompts(args.out, prompts)
    print(f"{len(prompts)} prompts (val + test transcripts) -> {args.out}")
    return 0


def cmd_checkpoints_verify(args) -> int:
    from sourcetrace.checkpoints.registry import load_registry, verify_folder

    rows = verify_folder(args.folder, load_registry(args.registry) if args.registry else None)
    for row in rows:
        where = str(row.path) if row.path else "-"
        print(f"{row.status:<8} {row.entry.id:<26} {row.entry.file:<30} {where}")
        if row.sha256:
            print(f"{'':<8} sha256 {row.sha256}" + ("" if row.entry.sha256 else "  (no published hash in the registry)"))
        if row.entry.trust == "full-unpickling" and row.path:
            print(f"{'':<8} this official format needs full unpickling: load it only with an explicit trust option")
        for problem in row.problems:
            print(f"{'':<8} problem: {problem}")
        if row.path is None:
            print(f"{'':<8} get it from: {row.entry.source}" + (f" <{row.entry.url}>" if row.entry.url else ""))
    bad = sum(r.status == "bad" for r in rows)
    missing = sum(r.status == "missing" for r in rows)
    print(f"{len(rows) - bad - missing} ok, {bad} bad, {missing} missing")
    return 1 if bad or (missing and args.require_all) else 0


def _training_utterances(data: str, speaker: str, clips: int):
    """An LJSpeech folder (its split.tsv if present, else the standard split) gives its train
    split; a HiFi-TTS folder gives the seeded `clips`-clip subset of `speaker`."""
    from sourcetrace.datasets.hifitts import HiFiTTS
    from sourcetrace.datasets.ljspeech import LJSpeech, standard_split

    folder = Path(data)
    if (folder / "metadata.csv").is_file():
        split = standard_split(folder / "split.tsv") if (folder / "split.tsv").is_file() else None
        return LJSpeech(folder, split=split).items("train")
    return HiFiTTS(folder).study_subset(speaker, n=clips)


def cmd_train(args) -> int:
    from sourcetrace.checkpoints.registry import load_schedule
    from sourcetrace.generators import build_generator, load_generator
    from sourcetrace.generators.data import TrainingData
    from sourcetrace.generators.training import checkpoint_name, save_zero_init, train

    schedule = load_schedule(args.schedule)
    run_dir = Path(args.run_dir)
    if args.zero_init:
        for seed in schedule.zero_init_seeds:
            folder = save_zero_init(build_generator(args.architecture, args.config, seed), run_dir, f"zero-init-s{seed}")
            print(f"[train] {folder}")
        return 0
    steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    if args.init_from:
        generator = load_generator(args.init_from)
        if generator.architecture != args.architecture:
            raise ValueError(f"{args.init_from} is a {generator.architecture} checkpoint, not {args.architecture}")
        steps = steps or [schedule.finetune_steps]
        final = f"ft-{schedule.finetune_speaker}"
        names = lambda step: final if step == steps[-1] else checkpoint_name(step)  # noqa: E731
    else:
        generator = build_generator(args.architecture, args.config, args.seed)
        steps = steps or list(schedule.steps)
        names = checkpoint_name
    generator.to(args.device)
    if not args.data:
        raise ValueError("--data is required (an LJSpeech folder, or a HiFi-TTS folder with --init-from)")
    data = TrainingData(generator, _training_utterances(args.data, schedule.finetune_speaker, schedule.finetune_clips),
                        cache_dir=run_dir / "features", progress=True)
    sample_vocoder = None
    if args.vocoder_weights and not generator.end_to_end:
        from sourcetrace.vocoders import load_vocoder

        vocoder = load_vocoder(args.vocoder_kind or generator.default_vocoder, args.vocoder_weights, args.vocoder_config)
        sample_vocoder = lambda mel: vocoder(mel, generator.mel_config)  # noqa: E731
    report = train(generator, data, run_dir, steps, batch_size=args.batch_size or schedule.batch_size, seed=args.seed,
                   names=names, tensorboard=not args.no_tensorboard, sample_vocoder=sample_vocoder)
    print(f"[train] {report.steps_run} steps from step {report.resumed_from}, {report.seconds_per_step:.3f} s/step; "
          f"checkpoints in {run_dir / 'checkpoints'}")
    return 0


def cmd_synth(args) -> int:
    if args.recipe:
        return _synth_recipe(args)
    if not args.checkpoint or not args.prompts:
        raise ValueError("give a CHECKPOINT folder and --prompts, or --recipe FILE")
    import sourcetrace
    from sourcetrace.datasets.prompts import read_prompts
    from sourcetrace.fileio import sha256_file
    from sourcetrace.generators import load_generator
    from sourcetrace.generators.base import CHECKPOINT_WEIGHTS
    from sourcetrace.generators.synthesis import synthesize_prompts
    from sourcetrace.vocoders import load_vocoder

    generator = load_generator(args.checkpoint).to(args.device)
    vocoder = None
    if not generator.end_to_end:
        if not args.vocoder_weights and args.random_vocoder is None:
            raise ValueError(f"{generator.architecture} makes mel spectrograms: give --vocoder-weights FILE "
                             "(an official HiFi-GAN) or --random-vocoder SEED (untrained, for tests)")
        vocoder = load_vocoder(args.vocoder_kind or generator.default_vocoder, args.vocoder_weights,
                               args.vocoder_config, args.random_vocoder, name=args.vocoder_name)
    elif args.vocoder_weights or args.random_vocoder is not None:
        raise ValueError(f"{generator.architecture} is end to end: it has no vocoder to give or swap")
    label = args.label or f"{generator.architecture}/{Path(args.checkpoint).name}"
    provenance = {"checkpoint_sha256": sha256_file(Path(args.checkpoint) / CHECKPOINT_WEIGHTS),
                  "implementation": generator.implementation(), "sourcetrace": sourcetrace.__version__}
    made, skipped = synthesize_prompts(generator, label, read_prompts(args.prompts), args.out, vocoder=vocoder,
                                       vocoder_swapped=args.vocoder_swapped, seed=args.seed, provenance=provenance)
    print(f"[synth] {label}: {made} clips made, {skipped} already there -> {Path(args.out) / 'manifest.csv'}")
    return 0


def _synth_recipe(args) -> int:
    from sourcetrace.recipe import load_recipe
    from sourcetrace.regenerate import regenerate

    index, _, count = (args.shard or "0/1").partition("/")
    if not (index.isdigit() and count.isdigit()):
        raise ValueError(f"--shard {args.shard!r}: expected K/N, e.g. 3/16 (task K of N, counted from 0)")
    report = regenerate(load_recipe(args.recipe), args.out, shard=(int(index), int(count)), device=args.device)
    print(f"[synth] {report.made} clips made, {report.skipped} already there, {len(report.failed)} job(s) skipped; "
          + (f"manifest written: {Path(args.out) / 'manifest.csv'}" if report.manifest_written
             else "manifest not written yet (clips missing: rerun, or wait for the other shards)"))
    for failure in report.failed:
        print(f"[synth] skipped: {failure}", file=sys.stderr)
    return 1 if report.failed else 0


def cmd_run(args) -> int:
    from sourcetrace.backends import LocalBackend, SlurmBackend
    from sourcetrace.study import STAGES, Study

    study = Study(args.recipe, args.workdir)
    stages = tuple(args.stages.split(",")) if args.stages else STAGES
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    if args.backend == "slurm":
        cfg = study.slurm
        backend = SlurmBackend(study.path("slurm"), partition=cfg.get("partition"),
                               timeout_min=int(cfg.get("timeout_min", 60)), cpus_per_task=int(cfg.get("cpus_per_task", 1)),
                               mem_gb=cfg.get("mem_gb"))
    else:
        backend = LocalBackend()
    study.run(backend, stages)
    print(f"[run] {study.title}\n[run] leaderboard: {study.path('site/index.html')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sourcetrace", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the built-in default job: attribute a small espeak-ng corpus end to end")
    p.add_argument("--out", default="sourcetrace-demo", help="work folder (reused: finished stages are skipped)")
    p.add_argument("--prompts", type=int, default=40)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    corpus = sub.add_parser("corpus", help="build and check corpora").add_subparsers(dest="corpus_command", required=True)
    p = corpus.add_parser("import", help="folder tree <arch>/<ckpt>/*.wav, manifest-style CSV, or path|speaker|system list")
    p.add_argument("src")
    p.add_argument("--out", required=True)
    p.add_argument("--link", choices=["copy", "hardlink"], default="copy")
    p.set_defaults(func=cmd_corpus_import)
    p = corpus.add_parser("validate", help="check a corpus folder against the manifest contract")
    p.add_argument("corpus")
    p.set_defaults(func=cmd_corpus_validate)
    p = corpus.add_parser("verify", help="re-hash and re-read every clip against the manifest (sha256, duration), "
                                         "and check the manifest against its recipe")
    p.add_argument("corpus")
    p.add_argument("--recipe", help="the recipe the corpus was generated from: clip set, conditions, seeds, hashes")
    p.set_defaults(func=cmd_corpus_verify)

    data = sub.add_parser("datasets", help="training datasets and prompt sets").add_subparsers(dest="datasets_command", required=True)
    p = data.add_parser("make-mini", help="small LJSpeech- and HiFi-TTS-format datasets spoken by espeak-ng")
    p.add_argument("out")
    p.add_argument("--train", type=int, default=40)
    p.add_argument("--val", type=int, default=5)
    p.add_argument("--test", type=int, default=10)
    p.add_argument("--speaker-clips", type=int, default=20, help="clips of the HiFi-TTS-format speaker 9136")
    p.set_defaults(func=cmd_datasets_make_mini)
    p = data.add_parser("prompts", help="write the study's prompt set (LJSpeech val + test transcripts)")
    p.add_argument("ljspeech", help="an LJSpeech-1.1 folder")
    p.add_argument("--out", required=True)
    p.add_argument("--split", help="split file (default: the standard split shipped with sourcetrace)")
    p.set_defaults(func=cmd_datasets_prompts)

    ckpt = sub.add_parser("checkpoints", help="the official checkpoints").add_subparsers(dest="checkpoints_command", required=True)
    p = ckpt.add_parser("verify", help="check a folder of downloaded official checkpoints against the registry")
    p.add_argument("folder")
    p.add_argument("--require-all", action="store_true", help="a missing checkpoint is a failure too")
    p.add_argument("--registry", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_checkpoints_verify)

    p = sub.add_parser("train", help="train a generator on a checkpoint schedule (resumable), or make zero-init models")
    p.add_argument("architecture")
    p.add_argument("--data", help="an LJSpeech-format folder, or a HiFi-TTS folder for fine-tuning")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--config", default="default", help="named model config: default (the study's) or tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", default="study", help="study or mini (checkpoints/schedules.toml)")
    p.add_argument("--steps", help="comma-separated steps overriding the schedule's")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--init-from", help="fine-tune from this checkpoint folder")
    p.add_argument("--zero-init", action="store_true", help="only save the schedule's zero-init models")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--vocoder-weights", help="a vocoder weights file: checkpoint samples go to TensorBoard as audio too")
    p.add_argument("--vocoder-kind", help="hifigan or nemo-hifigan (default: the architecture's)")
    p.add_argument("--vocoder-config", help="the vocoder's config (hifigan: v1, tiny or a config.json)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="a whole study from a recipe: datasets, training, corpus, features, benchmark, "
                                   "leaderboard (resumable; a rerun with nothing changed does nothing)")
    p.add_argument("recipe", help="e.g. recipes/mini.toml (the miniature study) or recipes/study.toml")
    p.add_argument("--workdir", default=".", help="where everything is written (default: the current folder)")
    p.add_argument("--backend", choices=("local", "slurm"), default="local",
                   help="local: in this process; slurm: jobs and job arrays through submitit ([slurm] table)")
    p.add_argument("--stages", help="comma-separated subset of data,train,synth,features,bench")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("synth", help="synthesise a prompt set with one checkpoint, or a whole recipe, into a "
                                     "corpus (resumable)")
    p.add_argument("checkpoint", nargs="?", help="a checkpoint folder written by `sourcetrace train`")
    p.add_argument("--recipe", help="a recipe file: generate its whole [corpus] (every checkpoint and vocoder condition)")
    p.add_argument("--shard", help="K/N: with --recipe, only every N-th job starting at K (job arrays)")
    p.add_argument("--prompts", help="prompt TSV (prompt_id, text)")
    p.add_argument("--out", required=True, help="corpus folder (created, or appended to)")
    p.add_argument("--label", help="checkpoint name in the corpus (default: <architecture>/<folder name>)")
    p.add_argument("--seed", type=int, default=0, help="noise seed; each prompt derives its own from it")
    p.add_argument("--vocoder-weights", help="official vocoder file (jik876 generator or NeMo .nemo)")
    p.add_argument("--vocoder-kind", help="hifigan or nemo-hifigan (default: the architecture's own)")
    p.add_argument("--vocoder-config", help="hifigan: v1 (default), tiny or a config.json; nemo-hifigan: v1, tiny")
    p.add_argument("--vocoder-name", help="the name the manifest records (default: the weights file's name)")
    p.add_argument("--vocoder-swapped", action="store_true", help="mark the clips as vocoded by another "
                   "architecture's vocoder (the study's vocoder conditions)")
    p.add_argument("--random-vocoder", type=int, metavar="SEED", help="an untrained vocoder (tests only)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda ...")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("features", help="compute (resumably) pooled features of every clip of a corpus")
    p.add_argument("corpus")
    _extractor_args(p)
    p.add_argument("--store", help="feature store root (default: <corpus>/features)")
    p.add_argument("--export", help="also write clip_id and vectors arrays to this .npz")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("attribute", help="name the generator of clips by kNN against a support corpus")
    p.add_argument("clips", nargs="+")
    p.add_argument("--support", required=True, help="corpus folder of known generators")
    _extractor_args(p)
    p.add_argument("--store", help="feature store root (default: <support>/features)")
    p.add_argument("--level", default="checkpoint", help="manifest column to attribute at (checkpoint, architecture, ...)")
    p.add_argument("--k", type=int, default=56)
    p.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    p.add_argument("--standardize", action="store_true", help="z-score every dimension over the support set "
                   "first (recommended for lfcc/mfcc; the study's SSL setting is off)")
    p.add_argument("--threshold", type=float, help="outlier-score threshold for 'unknown' (default: calibrated "
                   "on the support set, each class held out in turn)")
    p.add_argument("--no-unknown", action="store_true", help="always name a known class")
    p.add_argument("--top", type=int, default=5, help="candidates shown per clip")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_attribute)

    p = sub.add_parser("bench", help="run benchmark protocols (e.g. the study's Table 1) on a corpus")
    p.add_argument("corpus")
    p.add_argument("--suite", help="table1 (the study's 12 conditions) or generic")
    p.add_argument("--protocol", action="append", help="a built-in protocol name or a protocol .toml file (repeatable)")
    p.add_argument("--extractor", action="append", required=True, help="feature extractor spec (repeatable)")
    p.add_argument("--attributor", default="knn", help="name[:key=value,...], e.g. knn:k=56 or probe:C=0.5")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--holdout", help="checkpoints for the holdout protocol, comma-separated")
    p.add_argument("--out", required=True, help="folder for results JSON, summary.md and figures/")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--models-dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_bench, batch_size=None)

    p = sub.add_parser("leaderboard", help="aggregate results files into a Markdown + HTML + JSON leaderboard")
    p.add_argument("results", nargs="+", help="results JSON files or folders of them")
    p.add_argument("--out", required=True, help="site folder")
    p.add_argument("--title", default="sourcetrace leaderboard")
    p.set_defaults(func=cmd_leaderboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sourcetrace.attribution.extractors import ModelFolderError
    from sourcetrace.benchmark.results import ResultError
    from sourcetrace.checkpoints.registry import RegistryError
    from sourcetrace.corpus import ManifestError
    from sourcetrace.datasets.prompts import DatasetError
    from sourcetrace.generators.base import GeneratorError
    from sourcetrace.study import StageFailed

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ManifestError, ModelFolderError, ResultError, DatasetError, RegistryError, GeneratorError, ValueError,
            FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StageFailed as exc:
        print(f"failed: {exc}\nwhat finished is kept: rerun the same command to resume", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
