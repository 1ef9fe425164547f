"""The `sourcetrace` command line: one sub-command per stage of the pipeline.

Each command parses its options, calls one library function and prints what it returned. Errors:
a `SourcetraceError` (something a user can fix) or an `OSError` is one `error:` line, exit 2; a
failed stage of `run` exits 1; `run --plan` exits 3 when a unit is blocked (an input missing); an
interrupt 130; anything else is a bug in sourcetrace: its traceback, a line asking to report it,
exit 70 (EX_SOFTWARE).
"""

from __future__ import annotations

import argparse
import errno
import json
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any

import sourcetrace
from sourcetrace.attribution.unknown import UNKNOWN
from sourcetrace.benchmark.board import add_results, build_board, create_board
from sourcetrace.benchmark.leaderboard import DEFAULT_TITLE, build_leaderboard
from sourcetrace.benchmark.protocol import load_protocols
from sourcetrace.checkpoints.registry import load_registry, verify_folder
from sourcetrace.core.audio import MAX_CLIP_SECONDS
from sourcetrace.core.errors import SourcetraceError, StageFailed, UsageError
from sourcetrace.core.fileio import NO_SPACE
from sourcetrace.core.offline import go_offline
from sourcetrace.core.plugins import ATTRIBUTORS, EXTRACTORS, GENERATORS, VOCODERS
from sourcetrace.corpus import Corpus, import_corpus, verify_corpus
from sourcetrace.corpus.dataset_import import SKIPPED, dataset_layout, import_dataset, record_audio_facts
from sourcetrace.corpus.derive import derive_corpus
from sourcetrace.corpus.release import IncompleteRelease, pack_corpus
from sourcetrace.corpus.sets import FORMATS
from sourcetrace.datasets.espeak_datasets import make_hifitts_like, make_ljspeech_like
from sourcetrace.datasets.ljspeech import LJSpeech, standard_split
from sourcetrace.datasets.prompts import write_prompts
from sourcetrace.pipeline.backends import BACKENDS, run_study
from sourcetrace.pipeline.demo import run_demo
from sourcetrace.pipeline.fetch import artefacts_for, fetch, print_lock
from sourcetrace.pipeline.plan import EXIT_BLOCKED, plan_lines, plan_study
from sourcetrace.pipeline.recipe import load_recipe
from sourcetrace.pipeline.regenerate import check_against_recipe
from sourcetrace.pipeline.study import STAGES
from sourcetrace.pipeline.synth import synthesize_one, synthesize_recipe
from sourcetrace.pipeline.training_runs import train_from_folder, zero_inits_from_schedule

EX_SOFTWARE = 70  # sysexits.h: an internal software error


def _max_seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds >= 0 (0: no limit)") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds >= 0 (0: no limit)")
    return value or None


def _int_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers, e.g. 0,1,2") from None


# Options that several commands take, each defined here once (`_options(p, "--device", ...)`).
SHARED_OPTIONS: dict[str, dict] = {
    "--device": dict(default="auto", help="where models run: auto (cuda if available), cpu, cuda, cuda:1 ..."),
    "--dtype": dict(default="fp32", choices=["fp32", "bf16", "fp16"], help="an SSL model's compute precision"),
    "--models-dir": dict(help="folder holding named models (default: $SOURCETRACE_MODELS or "
                         "~/.cache/sourcetrace/models)"),
    "--trust": dict(action="store_true", help="allow full unpickling of an official checkpoint whose format needs it "
                    "(Matcha-TTS's .ckpt), only for the globals that format uses; only for files you trust "
                    "(the recipe key: trust = true)"),
    "--threads": dict(type=int, help="CPU threads (default: OMP_NUM_THREADS, else every CPU this process may use): "
                      "audio made on the CPU depends on the count, so fix it to reproduce a corpus byte for byte"),
    "--seed": dict(type=int, default=0, help="train: the model's initialisation and batch order; synth: the noise "
                   "seed, from which each prompt derives its own; corpus derive: the seed of each clip's noise"),
    "--config": dict(default="default", help="named model config: default (the study's) or tiny; synth: the one an "
                     "official file without its own config is loaded into (Grad-TTS)"),
    "--vocoder-weights": dict(help="a vocoder weights file (an official jik876 generator, NeMo .nemo ...); train: "
                              "each checkpoint's sample goes to TensorBoard as audio too"),
    "--vocoder-config": dict(help="hifigan: v1 (default), tiny or a config.json; nemo-hifigan: v1, tiny; "
                             "dle-hifigan: ljs22khz-finetune (default), tiny or a TOML file"),
    "--max-seconds": dict(type=_max_seconds, default=MAX_CLIP_SECONDS, metavar="S",
                          help=f"refuse longer clips, told from their header (default {MAX_CLIP_SECONDS:g}; 0: no "
                          "limit): an SSL model's memory grows with the square of a clip's length"),
    "--quiet": dict(action="store_true", help="no progress bars"),
}


def _options(p: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        p.add_argument(name, **SHARED_OPTIONS[name])


def _extractor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--extractor", required=True, help=_extractor_help())
    _options(p, "--models-dir", "--device", "--dtype")
    p.add_argument("--batch-size", type=int, help="most clips a batch (default: chosen from clip lengths and memory)")
    _options(p, "--max-seconds")


def _extractor_help() -> str:
    """The --extractor grammar, with the installed extractor plug-ins (sourcetrace.core.plugins)."""
    plugins = "".join(f" | {name}[:<argument>]" for name in EXTRACTORS.plugin_names())
    return ("lfcc | mfcc | ssl:<model-folder>@<layer> | <shipped-model>@<layer>, e.g. xls-r-2b@8, w2v-bert-2.0@4, "
            "tiny-wav2vec2@2, loaded from --models-dir/<shipped-model>/ (A..B for all layers A to B)"
            + plugins)


def _build_extractor(args):
    from sourcetrace.attribution.extractors import build_extractor

    return build_extractor(args.extractor, models_dir=args.models_dir, device=args.device, dtype=args.dtype,
                           batch_size=args.batch_size)


def cmd_demo(args) -> int:
    results = run_demo(args.out, n_prompts=args.prompts, k=args.k, progress=not args.quiet)
    return 1 if results["failures"] else 0


def cmd_corpus_import(args) -> int:
    if args.format or args.in_place or dataset_layout(args.src):
        report = import_dataset(args.src, args.out, format=args.format, in_place=args.in_place, link=args.link)
        for line in report.skipped:
            print(f"skipped {line}", file=sys.stderr)
        for line in report.left_out:
            print(f"left out {line}", file=sys.stderr)
        print(f"imported {report.clips} clips of {report.format}" + (" in place" if args.in_place else "")
              + f" -> {report.manifest}" + (f"; {len(report.skipped)} line(s) skipped (listed above and in "
                                             f"{report.manifest.parent / SKIPPED})" if report.skipped else "")
              + (f"; {len(report.left_out)} folder(s) left out by design (listed above)" if report.left_out else ""))
        return 1 if report.skipped else 0
    corpus = import_corpus(args.src, args.out, link=args.link)
    archs = sorted(set(corpus.column("architecture")))
    print(f"imported {len(corpus.rows)} clips, {len(set(corpus.column('checkpoint')))} checkpoints, "
          f"{len(archs)} architectures -> {corpus.manifest_path}")
    return 0


def cmd_corpus_hash(args) -> int:
    hashed, problems = record_audio_facts(args.corpus, progress=not args.quiet)
    for problem in problems:
        print(f"{args.corpus}: {problem}", file=sys.stderr)
    print(f"{args.corpus}: {hashed} clips hashed and recorded, {len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_corpus_validate(args) -> int:
    corpus = Corpus.read(args.corpus)
    print(f"{corpus.manifest_path}: valid, {len(corpus.rows)} clips")
    return 0


def cmd_corpus_verify(args) -> int:
    corpus = Corpus.read(args.corpus, require_files=False)
    problems = verify_corpus(corpus)
    if args.recipe:
        problems += check_against_recipe(corpus, load_recipe(args.recipe))
    for problem in problems:
        print(f"{corpus.manifest_path}: {problem}", file=sys.stderr)
    print(f"{corpus.manifest_path}: {len(corpus.rows)} clips checked, {len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_corpus_derive(args) -> int:
    report = derive_corpus(args.corpus, args.transform, args.out, seed=args.seed, progress=not args.quiet)
    for failure in report.failed:
        print(f"[derive] failed: {failure}", file=sys.stderr)
    print(f"[derive] {report.made} clips made, {report.reused} already there, {len(report.failed)} failed -> "
          + (f"{Path(args.out) / 'manifest.csv'}" if report.made + report.reused else "no manifest written"))
    return 1 if report.failed else 0


def cmd_corpus_pack(args) -> int:
    try:
        report = pack_corpus(args.corpus, args.out, license=args.license, recipe=args.recipe, link=args.link,
                             name=args.name)
    except IncompleteRelease as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return 1
    print(f"packed {report.clips} clips ({report.bytes / 1e6:.1f} MB of audio), corpus sha256 "
          f"{report.corpus_sha256[:16]} -> {report.out} (load it with datasets.load_dataset)")
    return 0


def cmd_features(args) -> int:
    from sourcetrace.attribution.store import FeatureStore

    corpus = Corpus.read(args.corpus)
    store = FeatureStore(corpus, _build_extractor(args), root=args.store, decode_threads=args.decode_threads,
                         max_seconds=args.max_seconds)
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
    from sourcetrace.attribution.attribute import Support, SupportAttributor

    extractor = _build_extractor(args)
    support = Support.load(Corpus.read(args.support), extractor, store_root=args.store, progress=not args.quiet,
                           max_seconds=args.max_seconds)
    if support.report.rejects:
        print(f"{len(support.report.rejects)} support clip(s) rejected by {extractor.name} and left out, "
              f"listed in {support.store.dir / 'rejects.csv'}", file=sys.stderr)
    attributor = SupportAttributor(support, level=args.level, unknown_level=args.unknown_level, k=args.k,
                                   metric=args.metric, standardize=args.standardize, threshold=args.threshold,
                                   detect_unknown=not args.no_unknown)
    answers, failed = attributor.attribute(args.clips)
    for f in failed:
        print(f"error: {f['clip']}: {f['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps({"level": args.level, "unknown_level": attributor.unknown_level, "k": args.k,
                          "extractor": extractor.fingerprint, "calibration": attributor.calibration,
                          "results": answers, "errors": failed}, indent=2))
    else:
        _print_attribution(answers, attributor.calibration, args)
    return 1 if failed or support.report.rejects else 0


def _print_attribution(answers: list[dict], calibration: dict | None, args) -> None:
    for a in answers:
        note = ""
        if a["verdict"] == UNKNOWN:
            note = f" (outlier score {a['outlier_score']:.4f} > threshold {a['threshold']:.4f})"
        elif a["support_clips"]:
            same = ", ".join(f"{s['clip_id']} [{s['label']}]" for s in a["support_clips"])
            note = f" (identical to support clip {same})"
        print(f"{a['clip']}: {a['verdict']}{note}")
        for rank, c in enumerate(a["candidates"][: args.top], start=1):
            print(f"  {rank}. {c['label']:<40} votes {c['votes']:.3f}  mean distance {c['mean_distance']:.4f}")
    if calibration is None:
        print("unknown detection: off (--no-unknown)")
    elif calibration["source"] == "given":
        print(f"unknown detection: outlier score > {calibration['threshold']:.4f} (threshold given)")
    else:
        c = calibration
        print(f"unknown detection: outlier score (mean {args.metric} distance to the {args.k} nearest support clips) "
              f"> {c['threshold']:.4f}, the equal-error point with each {c['level']} held out in turn "
              f"({len(c['held_out'])} {c['level']}s, {c['folds']} prompt folds): EER {c['eer']:.3f}, AUROC "
              f"{c['auroc']:.3f}; in calibration {100 * c['false_unknown_rate']:.1f} % of clips of known "
              f"{c['level']}s were called unknown and {100 * c['detection_rate']:.1f} % of clips of a held-out one "
              f"({100 * min(c['held_out'].values()):.0f} to {100 * max(c['held_out'].values()):.0f} % by {c['level']})")


def cmd_bench(args) -> int:
    from sourcetrace.benchmark.bench import run_bench

    holdout = [h for h in (args.holdout or "").split(",") if h]
    systems = [(extractor, args.attributor) for extractor in args.extractor]
    failures = run_bench(args.corpus, load_protocols(args.suite, args.protocol), systems, args.out, seeds=args.seeds,
                         holdout=holdout, figures=not args.no_figures, device=args.device, dtype=args.dtype,
                         models_dir=args.models_dir, progress=not args.quiet, max_seconds=args.max_seconds,
                         command=shlex.join(["sourcetrace", *args.argv]), laundered=args.laundered or [])
    return 1 if failures else 0


def cmd_leaderboard_render(args) -> int:
    page = build_leaderboard(args.results, args.out, title=args.title)
    print(f"leaderboard: {page} (+ leaderboard.md, leaderboard.csv, leaderboard.json, results/)")
    return 0


def cmd_leaderboard_init(args) -> int:
    path, corpus_hash = create_board(args.board, corpus=args.corpus, corpus_hash=args.corpus_sha256,
                                     protocols=args.protocols)
    print(f"board {args.board}: corpus sha256 {corpus_hash[:16]}...; {path}")
    return 0


def cmd_leaderboard_add(args) -> int:
    added = add_results(args.board, args.results, args.submitter)
    print(f"board {args.board}: {added} result(s) added")
    return 0


def cmd_leaderboard_build(args) -> int:
    page = build_board(args.board, args.out, title=args.title)
    print(f"leaderboard: {page} (+ leaderboard.md, leaderboard.csv, leaderboard.json, results/)")
    return 0


def cmd_datasets_make_mini(args) -> int:
    out = Path(args.out)
    lj = make_ljspeech_like(out / "LJSpeech-mini", args.train, args.val, args.test)
    manifest = make_hifitts_like(out / "hifitts-mini", args.speaker_clips)
    print(f"{lj.root}: {len(lj.items('train'))} train, {len(lj.items('val'))} val, {len(lj.items('test'))} test "
          f"(split in {lj.root / 'split.tsv'})\n{manifest}: {args.speaker_clips} clips of speaker 9136")
    return 0


def cmd_datasets_prompts(args) -> int:
    dataset = LJSpeech(args.ljspeech, split=standard_split(args.split) if args.split else None, check_audio=False)
    prompts = dataset.prompts()
    write_prompts(args.out, prompts)
    print(f"{len(prompts)} prompts (val + test transcripts) -> {args.out}")
    return 0


def cmd_checkpoints_verify(args) -> int:
    rows = verify_folder(args.folder, load_registry(args.registry) if args.registry else None)
    for row in rows:
        where = str(row.path) if row.path else "-"
        print(f"{row.status:<8} {row.entry.id:<26} {row.entry.file:<30} {where}")
        if row.sha256:
            print(f"{'':<8} sha256 {row.sha256}" + ("" if row.entry.sha256 else "  (no published hash in the registry)"))
        if row.note:
            print(f"{'':<8} {row.note}")
        for problem in row.problems:
            print(f"{'':<8} problem: {problem}")
        if row.path is None:
            print(f"{'':<8} get it from: {row.entry.source}" + (f" <{row.entry.url}>" if row.entry.url else ""))
    bad = sum(r.status == "bad" for r in rows)
    missing = sum(r.status == "missing" for r in rows)
    print(f"{len(rows) - bad - missing} ok, {bad} bad, {missing} missing")
    return 1 if bad or (missing and args.require_all) else 0


def cmd_train(args) -> int:
    if args.zero_init:
        for folder in zero_inits_from_schedule(args.architecture, args.config, args.schedule, args.run_dir):
            print(f"[train] {folder}")
        return 0
    report = train_from_folder(args.architecture, args.run_dir, args.data, config=args.config, schedule=args.schedule,
                               steps=args.steps, seed=args.seed, batch_size=args.batch_size, device=args.device,
                               init_from=args.init_from, trust=args.trust, speaker=args.speaker,
                               tensorboard=not args.no_tensorboard, deterministic=not args.nondeterministic,
                               vocoder_weights=args.vocoder_weights, vocoder_kind=args.vocoder_kind,
                               vocoder_config=args.vocoder_config)
    print(f"[train] {report.steps_run} steps from step {report.resumed_from}, {report.seconds_per_step:.3f} s/step; "
          f"checkpoints in {Path(args.run_dir) / 'checkpoints'}")
    return 0


def cmd_synth(args) -> int:
    if args.recipe:
        outcome = synthesize_recipe(args.recipe, args.out, shard=args.shard, device=args.device, threads=args.threads)
        report = outcome.report
        if report.manifest_written:
            result = f"manifest written: {Path(args.out) / 'manifest.csv'}"
        elif report.failed:
            result = (f"manifest not written: {len(report.failed)} job(s) failed (below); fix or remove them in the "
                      "recipe, then rerun (finished clips are kept)")
        else:
            result = ("manifest not written yet: other shards' clips are missing (it is written by the last shard "
                      "to finish)")
        print(f"[synth] {report.made} clips made, {report.skipped} already there, {len(report.failed)} job(s) failed, "
              f"{_threads_note(outcome.threads)}; " + result)
        for failure in report.failed:
            print(f"[synth] failed: {failure}", file=sys.stderr)
        return 1 if report.failed else 0
    if not args.checkpoint or not args.prompts:
        raise UsageError("give a CHECKPOINT (folder or official file) and --prompts, or --recipe FILE")
    outcome = synthesize_one(args.checkpoint, args.prompts, args.out, architecture=args.architecture,
                             config=args.config, trust=args.trust, label=args.label, references=args.reference,
                             seed=args.seed, vocoder_weights=args.vocoder_weights, vocoder_kind=args.vocoder_kind,
                             vocoder_config=args.vocoder_config, vocoder_name=args.vocoder_name,
                             vocoder_swapped=args.vocoder_swapped, random_vocoder=args.random_vocoder,
                             device=args.device, threads=args.threads)
    for failure in outcome.report.failed:
        print(f"[synth] failed: {failure}", file=sys.stderr)
    print(f"[synth] {outcome.label}: {outcome.report.made} clips made, {outcome.report.skipped} already there, "
          f"{_threads_note(outcome.threads)} -> {Path(args.out) / 'manifest.csv'}")
    return 1 if outcome.report.failed else 0


def _threads_note(threads: int) -> str:
    """What the summary says of the thread count: CPU-made audio depends on it (--threads fixes it)."""
    return f"{threads} CPU thread{'s' if threads != 1 else ''}"


def _size(size: int | None) -> str:
    return "unknown" if size is None else f"{size:,} bytes"


def cmd_fetch(args) -> int:
    if args.print_lock:
        print(print_lock(args.workdir), end="")
        return 0
    if not args.targets:
        raise UsageError("fetch: give a recipe file (e.g. recipes/study.toml) or artefact names (or --print-lock)")
    artefacts = artefacts_for(args.targets, args.workdir)
    if args.dry_run:
        for a in artefacts:
            state = "present" if a.present(args.workdir) else "missing"
            print(f"{a.name}  [{state}]\n  url: {a.shown_urls()}\n  size: {_size(a.size)}\n"
                  f"  destination: {a.destination(args.workdir)}\n  licence: {a.licence}"
                  + (f"\n  speakers: {' '.join(a.speakers)} (the rest of the archive is not kept)" if a.speakers else ""))
        missing = sum(not a.present(args.workdir) for a in artefacts)
        print(f"[fetch] {len(artefacts)} artefacts, {missing} to fetch (dry run: nothing downloaded)")
        return 0
    report = fetch(artefacts, args.workdir, mirror=args.mirror, jobs=args.jobs, progress=not args.quiet,
                   verify=args.verify)
    for outcome in report.outcomes:
        if outcome.status == "failed":
            print(f"error: {outcome.message}", file=sys.stderr)
        else:
            what = "commit" if outcome.artefact.unpack == "hf" else "sha256"  # a model folder's is its commit
            done = f" ({what} {outcome.sha256})" if outcome.sha256 else ""
            print(f"[fetch] {outcome.status}: {outcome.artefact.name} -> {outcome.artefact.destination(args.workdir)}{done}")
    print(f"[fetch] {len(report.outcomes) - len(report.failed)} of {len(report.outcomes)} artefacts in place"
          + (f"; {len(report.failed)} failed: fix what each error line says and rerun (finished files are kept)"
             if report.failed else ""))
    return 1 if report.failed else 0


def cmd_run(args) -> int:
    if args.json and not args.plan:
        raise UsageError("--json goes with --plan (the plan as JSON); a run prints its log")
    if args.plan:
        plan = plan_study(args.recipe, args.workdir, backend=args.backend, stages=args.stages)
        print(json.dumps(plan.to_json(), indent=1) if args.json else "\n".join(plan_lines(plan)))
        return plan.exit_code
    study = run_study(args.recipe, args.workdir, backend=args.backend, stages=args.stages)
    print(f"[run] {study.title}\n[run] leaderboard: {study.path('site/index.html')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sourcetrace", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="the built-in default job: attribute a small espeak-ng corpus end to end")
    p.add_argument("--out", default="sourcetrace-demo", help="work folder (reused: finished stages are skipped)")
    p.add_argument("--prompts", type=int, default=40, help="prompts each espeak-ng voice speaks (default: 40)")
    p.add_argument("--k", type=int, default=10, help="neighbours of the kNN attributors (default: 10)")
    _options(p, "--quiet")
    p.set_defaults(func=cmd_demo)

    corpus = sub.add_parser("corpus", help="build and check corpora").add_subparsers(dest="corpus_command", required=True)
    p = corpus.add_parser("import", help="a public source-tracing set as distributed (--format), a folder tree "
                                         "<arch>/<ckpt>/*.wav, a manifest-style CSV, or a path|speaker|system list")
    p.add_argument("src", help="the dataset root (or list, CSV, tree, release)")
    p.add_argument("--out", required=True, help="the corpus folder to write (manifest.csv and, unless --in-place, audio/)")
    p.add_argument("--format", choices=list(FORMATS), help="the set's layout (default: detected where unambiguous)")
    p.add_argument("--in-place", action="store_true",
                   help="reference the (read-only) dataset root instead of copying its audio; hashed lazily")
    p.add_argument("--link", choices=["copy", "hardlink"], default="copy",
                   help="how audio enters the corpus: copied, or hard-linked (no extra space; a copy where the file "
                        "systems differ)")
    p.set_defaults(func=cmd_corpus_import)
    p = corpus.add_parser("hash", help="record sha256, sample rate and duration of every clip that lacks them "
                                       "(an in-place import), in one streaming pass")
    p.add_argument("corpus", help="the corpus folder (its manifest.csv is rewritten)")
    _options(p, "--quiet")
    p.set_defaults(func=cmd_corpus_hash)
    p = corpus.add_parser("validate", help="check a corpus folder against the manifest contract")
    p.add_argument("corpus", help="the corpus folder (holding manifest.csv)")
    p.set_defaults(func=cmd_corpus_validate)
    p = corpus.add_parser("verify", help="re-hash and re-read every clip against the manifest (sha256, duration), "
                                         "and check the manifest against its recipe")
    p.add_argument("corpus", help="the corpus folder (holding manifest.csv)")
    p.add_argument("--recipe", help="the recipe the corpus was generated from: clip set, conditions, seeds, hashes")
    p.set_defaults(func=cmd_corpus_verify)
    p = corpus.add_parser("derive", help="a laundered copy of a corpus: every clip through a codec, the telephone "
                                         "band, noise, resampling or cropping (labels kept, parent hash recorded)")
    p.add_argument("corpus", help="the corpus to launder (left as it is)")
    p.add_argument("--transform", action="append", required=True, metavar="SPEC",
                   help="codec:mp3:32k, codec:opus:16k, codec:g711, codec:amr-nb, telephone, noise:snr=10, "
                        "resample:8000, crop:2.0; repeat it to chain transforms, in order")
    p.add_argument("--out", required=True, help="the derived corpus folder (new, or the same derivation to resume)")
    _options(p, "--seed", "--quiet")
    p.set_defaults(func=cmd_corpus_derive)
    p = corpus.add_parser("pack", help="write the corpus as a Hugging Face datasets audio folder with a dataset card "
                                       "(`corpus import` reads it back)")
    p.add_argument("corpus", help="the corpus folder to release")
    p.add_argument("--out", required=True, help="the release folder (new, or empty)")
    p.add_argument("--license", default="cc-by-4.0", help="license id for the dataset card (default: cc-by-4.0)")
    p.add_argument("--recipe", help="the recipe the corpus was generated from: shipped in provenance/, hashed in the card")
    p.add_argument("--name", help="the dataset's pretty name (default: the corpus folder's name)")
    p.add_argument("--link", choices=["copy", "hardlink"], default="copy",
                   help="hardlink: the release shares the corpus's audio files (same filesystem; edit neither)")
    p.set_defaults(func=cmd_corpus_pack)

    data = sub.add_parser("datasets", help="training datasets and prompt sets").add_subparsers(dest="datasets_command", required=True)
    p = data.add_parser("make-mini", help="small LJSpeech- and HiFi-TTS-format datasets spoken by espeak-ng")
    p.add_argument("out", help="folder for LJSpeech-mini/ and hifitts-mini/ (clips already there are kept)")
    p.add_argument("--train", type=int, default=40, help="LJSpeech-format training clips (default: 40)")
    p.add_argument("--val", type=int, default=5, help="validation clips (default: 5); val + test transcripts are the prompts")
    p.add_argument("--test", type=int, default=10, help="test clips (default: 10)")
    p.add_argument("--speaker-clips", type=int, default=20, help="clips of the HiFi-TTS-format speaker 9136")
    p.set_defaults(func=cmd_datasets_make_mini)
    p = data.add_parser("prompts", help="write the study's prompt set (LJSpeech val + test transcripts)")
    p.add_argument("ljspeech", help="an LJSpeech-1.1 folder")
    p.add_argument("--out", required=True, help="the prompt TSV to write (prompt_id, text)")
    p.add_argument("--split", help="split file (default: the standard split shipped with sourcetrace)")
    p.set_defaults(func=cmd_datasets_prompts)

    ckpt = sub.add_parser("checkpoints", help="the official checkpoints").add_subparsers(dest="checkpoints_command", required=True)
    p = ckpt.add_parser("verify", help="check a folder of downloaded official checkpoints against the registry")
    p.add_argument("folder", help="a folder holding the downloaded official files (found at any depth, by name or alias)")
    p.add_argument("--require-all", action="store_true", help="a missing checkpoint is a failure too")
    p.add_argument("--registry", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_checkpoints_verify)

    p = sub.add_parser("train", help="train a generator on a checkpoint schedule (resumable), or make zero-init models")
    p.add_argument("architecture", help=f"one of {GENERATORS.describe()}")
    p.add_argument("--data", help="an LJSpeech-format folder, or a HiFi-TTS folder for fine-tuning")
    p.add_argument("--run-dir", required=True, help="the run folder: checkpoints/, resume/, tensorboard/ (rerun to resume)")
    _options(p, "--config", "--seed")
    p.add_argument("--schedule", default="study", help="study or mini (checkpoints/schedules.toml)")
    p.add_argument("--steps", type=_int_list, help="comma-separated steps overriding the schedule's")
    p.add_argument("--batch-size", type=int, help="clips a step (default: the schedule's)")
    p.add_argument("--init-from", help="fine-tune from this checkpoint: a folder, or an official file of the registry")
    p.add_argument("--speaker", help="with --init-from: the HiFi-TTS speaker to fine-tune on (default: the schedule's, "
                   "9136); the checkpoint is named ft-<speaker>")
    _options(p, "--trust")
    p.add_argument("--zero-init", action="store_true", help="only save the schedule's zero-init models")
    p.add_argument("--no-tensorboard", action="store_true", help="write no loss curves and samples to <run-dir>/tensorboard")
    p.add_argument("--nondeterministic", action="store_true", help="allow kernels without a deterministic "
                   "implementation (faster; checkpoints then vary from run to run)")
    _options(p, "--vocoder-weights")
    p.add_argument("--vocoder-kind", help=f"one of {VOCODERS.describe()} (default: the architecture's own)")
    _options(p, "--vocoder-config", "--device")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="a whole study from a recipe: datasets, training, corpus, features, benchmark, "
                                   "leaderboard (resumable; a rerun with nothing changed does nothing)")
    p.add_argument("recipe", help="e.g. recipes/mini.toml (the miniature study) or recipes/study.toml")
    p.add_argument("--workdir", default=".", help="where everything is written (default: the current folder)")
    p.add_argument("--backend", choices=BACKENDS, default="local",
                   help="local: in this process; slurm: jobs and job arrays through submitit ([slurm] table)")
    p.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--plan", action="store_true",
                   help="run nothing: print each stage's units (done, pending, or blocked by a missing input), the "
                        "device-hours and disk per stage, and with --backend slurm the jobs it would submit; exit "
                        f"{EXIT_BLOCKED} if a unit is blocked (an input missing), 0 if every unit can run")
    p.add_argument("--json", action="store_true", help="with --plan: the plan as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("fetch", help="download what a recipe needs (datasets, official checkpoints, SSL models, NLTK "
                                     "data) or artefacts by name: resumable, checked, the one command that downloads")
    p.add_argument("targets", nargs="*", metavar="RECIPE|NAME",
                   help="a recipe (e.g. recipes/study.toml), or artefact names (ljspeech, hifitts, xls-r-2b, an official "
                        "checkpoint id such as vits/pretrained)")
    p.add_argument("--workdir", default=".", help="where the artefacts and fetch.lock go (the recipe's work folder)")
    p.add_argument("--dry-run", action="store_true", help="list each artefact's URL, size and destination; fetch nothing")
    p.add_argument("--mirror", metavar="DIR|URL", help="fetch from a lab copy with the catalogue's relative paths "
                   "(official/..., downloads/<archive>, models/<name>/) instead of the publishers")
    p.add_argument("--print-lock", action="store_true", help="print fetch.lock (the sha256 of each file as first "
                   "fetched, each model's commit) to pin a lab's copies")
    p.add_argument("--verify", action="store_true", help="re-hash the files already in place against the catalogue or "
                   "fetch.lock (and record the hash of a file put in place by hand); without it only their length is checked")
    p.add_argument("--jobs", type=int, default=4, help="artefacts fetched at once (default 4)")
    _options(p, "--quiet")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("synth", help="synthesise a prompt set with one checkpoint, or a whole recipe, into a "
                                     "corpus (resumable)")
    p.add_argument("checkpoint", nargs="?", help="a checkpoint folder written by `sourcetrace train`, or an official "
                   "file of the registry (.nemo, Coqui model_file.pth, grad-tts.pt, Lightning .ckpt)")
    p.add_argument("--architecture", help=f"the architecture of an official file that does not tell it "
                   f"({GENERATORS.describe()})")
    _options(p, "--config", "--trust")
    p.add_argument("--recipe", help="a recipe file: generate its whole [corpus] (every checkpoint and vocoder condition)")
    p.add_argument("--shard", help="K/N: with --recipe, only every N-th job starting at K (job arrays)")
    p.add_argument("--prompts", help="prompt TSV (prompt_id, text)")
    p.add_argument("--out", required=True, help="corpus folder (created, or appended to)")
    p.add_argument("--label", help="checkpoint name in the corpus (default: <architecture>/<folder name>)")
    p.add_argument("--reference", action="append", help="zero-shot architectures (xtts): a reference clip whose voice "
                   "the prompts are spoken in, or speaker:NAME, a voice the checkpoint stores; repeat it for several "
                   "(prompt i gets reference i mod n)")
    _options(p, "--seed", "--vocoder-weights")
    p.add_argument("--vocoder-kind", help=f"one of {VOCODERS.describe()} (default: the architecture's own)")
    _options(p, "--vocoder-config")
    p.add_argument("--vocoder-name", help="the name the manifest records (default: the weights file's name)")
    p.add_argument("--vocoder-swapped", action="store_true", help="mark the clips as vocoded by another "
                   "architecture's vocoder (the study's vocoder conditions)")
    p.add_argument("--random-vocoder", type=int, metavar="SEED", help="an untrained vocoder (tests only)")
    _options(p, "--device", "--threads")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("features", help="compute (resumably) pooled features of every clip of a corpus")
    p.add_argument("corpus", help="the corpus folder")
    _extractor_args(p)
    p.add_argument("--store", help="feature store root (default: <corpus>/features)")
    p.add_argument("--export", help="also write clip_id and vectors arrays to this .npz")
    p.add_argument("--decode-threads", type=int, help="threads that decode clips ahead of the extractor "
                   "(default: half the CPUs this process may use, at most 8); the vectors do not depend on it")
    _options(p, "--quiet")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("attribute", help="name the generator of clips by kNN against a support corpus")
    p.add_argument("clips", nargs="+", help="audio files to attribute")
    p.add_argument("--support", required=True, help="corpus folder of known generators")
    _extractor_args(p)
    p.add_argument("--store", help="feature store root (default: <support>/features)")
    p.add_argument("--level", default="checkpoint", help="manifest column to attribute at (checkpoint, architecture, ...)")
    p.add_argument("--k", type=int, default=56, help="neighbours that vote (default: 56, the study's)")
    p.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine", help="distance between feature vectors")
    p.add_argument("--standardize", action="store_true", help="z-score every dimension over the support set "
                   "first (recommended for lfcc/mfcc; the study's SSL setting is off)")
    p.add_argument("--unknown-level", default="architecture", help="manifest column the unknown decision is about: "
                   "the threshold is calibrated on the support set holding out each of its values in turn "
                   "(default architecture: unknown = from no known architecture)")
    p.add_argument("--threshold", type=float, help="outlier-score threshold for 'unknown' (default: calibrated, "
                   "see --unknown-level)")
    p.add_argument("--no-unknown", action="store_true", help="always name a known class")
    p.add_argument("--top", type=int, default=5, help="candidates shown per clip")
    p.add_argument("--json", action="store_true", help="print the answers, calibration and errors as JSON")
    _options(p, "--quiet")
    p.set_defaults(func=cmd_attribute)

    p = sub.add_parser("bench", help="run benchmark protocols (e.g. the study's Table 1) on a corpus")
    p.add_argument("corpus", help="the corpus folder (features are cached in its feature store, <corpus>/features)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--suite", help="a suite of benchmark/suites.toml: table1 (the study's 12 conditions), beyond "
                       "(questions past the study) ...")
    which.add_argument("--protocol", action="append", help="a built-in protocol name or a protocol .toml file "
                       "(repeatable)")
    p.add_argument("--extractor", action="append", required=True, help="feature extractor spec (repeatable)")
    p.add_argument("--attributor", default="knn", help=f"name[:key=value,...] with name one of "
                   f"{ATTRIBUTORS.describe()}, e.g. knn:k=56 or probe:C=0.5")
    p.add_argument("--seeds", type=_int_list, default=[0, 1, 2], help="comma-separated (default 0,1,2)")
    p.add_argument("--holdout", help="checkpoints for the holdout protocol, comma-separated")
    p.add_argument("--out", required=True, help="folder for results JSON, summary.md and figures/")
    p.add_argument("--laundered", action="append", metavar="DERIVED", help="a `corpus derive` copy of CORPUS "
                   "(repeatable): one more result per protocol and system, clean support and this corpus's query")
    p.add_argument("--no-figures", action="store_true", help="skip the study's figures (results and summary only)")
    _options(p, "--models-dir", "--device", "--dtype", "--max-seconds", "--quiet")
    p.set_defaults(func=cmd_bench, batch_size=None)

    p = sub.add_parser("leaderboard", help="results -> a static leaderboard site (render); or a board that takes "
                           "checked submissions from many machines (init, add, build)")
    board = p.add_subparsers(dest="leaderboard_command", required=True)
    title: dict[str, Any] = dict(default=DEFAULT_TITLE, help=f"page title (default: {DEFAULT_TITLE})")
    p = board.add_parser("render", help="one machine's results -> a static site")
    p.add_argument("results", nargs="+", help="results JSON files, or folders of them")
    p.add_argument("--out", required=True, help="the site folder")
    p.add_argument("--title", **title)
    p.set_defaults(func=cmd_leaderboard_render)
    p = board.add_parser("init", help="a board for the results of one corpus")
    p.add_argument("board", help="the board folder (new)")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--corpus", help="the corpus folder (its sha256 is computed as bench does)")
    given.add_argument("--corpus-sha256", help="the corpus sha256 (from a result's corpus.sha256)")
    p.add_argument("--protocols", default="table1", help="a suite (table1, beyond ...) or protocol names / .toml "
                   "files, comma-separated (default table1)")
    p.set_defaults(func=cmd_leaderboard_init)
    p = board.add_parser("add", help="check results and add them to a board, with a ledger line")
    p.add_argument("results", nargs="+", help="results JSON files, or folders of them")
    p.add_argument("--board", required=True, help="the board folder")
    p.add_argument("--submitter", required=True, help="who submits, written to the board's ledger")
    p.set_defaults(func=cmd_leaderboard_add)
    p = board.add_parser("build", help="a board's results -> a static site")
    p.add_argument("board", help="the board folder")
    p.add_argument("--out", required=True, help="the site folder")
    p.add_argument("--title", **title)
    p.set_defaults(func=cmd_leaderboard_build)
    return parser


def os_error_message(exc: OSError) -> str:
    """One line for a failed file operation: the path, what went wrong, and what to do."""

    path = exc.filename if exc.filename is not None else "(unnamed file)"
    if exc.errno in NO_SPACE:
        folder = Path(str(path)).parent
        return (f"{path}: no space left on the device (disk full or quota reached): free space on the "
                f"filesystem of {folder} (`df -h {folder}`), then rerun the same command: finished work is kept")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{path}: permission denied: make it (or its folder) writable, or choose another path"
    if exc.errno == errno.EROFS:
        return f"{path}: the filesystem is read-only: choose a writable output folder"
    also = f" -> {exc.filename2}" if exc.filename2 else ""
    return f"{path}{also}: {exc.strerror or exc}"


def error_line(exc: BaseException) -> tuple[str, int]:
    """The message and exit code of a failed command: what went wrong and what to do, in one line;
    for an exception no user can cause (a bug, `is_bug`), the line asking to report it, EX_SOFTWARE."""
    if is_bug(exc):
        return (f"error: this is a bug in sourcetrace {sourcetrace.__version__}: please report it with the "
                "traceback above and the command you ran to the sourcetrace maintainers"), EX_SOFTWARE
    if isinstance(exc, StageFailed):
        return f"failed: {exc}\nwhat finished is kept: rerun the same command to resume", 1
    if isinstance(exc, KeyboardInterrupt):
        return ("interrupted: rerun the same command to resume (stages keep what they finished; an import or "
                "a release is written whole or not at all)"), 130
    if isinstance(exc, SourcetraceError):
        return f"error: {exc}", 2
    assert isinstance(exc, OSError)  # what is_bug leaves
    return f"error: {os_error_message(exc)}", 2


def is_bug(exc: BaseException) -> bool:
    """An exception no user can cause: neither a SourcetraceError, an OSError nor an interrupt."""
    return not isinstance(exc, (SourcetraceError, OSError, KeyboardInterrupt))


def main(argv: list[str] | None = None) -> int:
    """Run one command; anything a user can cause ends in one `error:` line (exit 2), the
    traceback only with --debug; a bug prints its traceback and asks to be reported (exit 70).
    A command line argparse refuses exits 2 with its usage line (returned, not raised)."""
    go_offline()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a refused command line (2)
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = argv
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - each kind ends in its line and exit code
        if args.debug or is_bug(exc):
            traceback.print_exc()
        message, code = error_line(exc)
        print(message, file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
