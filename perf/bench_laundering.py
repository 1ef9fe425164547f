"""Attribution under laundering, in miniature: the main job's corpus through a few transforms, one
protocol's splits with clean support and laundered query, macro-F1 next to the clean query's.

    python perf/bench_laundering.py [--workdir work/mini] [--transform codec:mp3:32k ...] [--json OUT]

It derives each laundered corpus under WORKDIR/laundered/ (`sourcetrace corpus derive`, resumable),
computes features with the recipe's extractors (their stores are kept, so a rerun is quick) and
prints a Markdown table. Tiny models and untrained vocoders: the numbers show the machinery and
the direction of an effect, not the study's robustness.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sourcetrace.attribution.extractors import build_extractor
from sourcetrace.attribution.store import FeatureStore
from sourcetrace.benchmark.laundering import CLEAN, laundering_scores
from sourcetrace.benchmark.protocol import ClipTable, load_protocol
from sourcetrace.benchmark.runner import AttributorSpec
from sourcetrace.corpus import Corpus
from sourcetrace.corpus.derive import derive_corpus, parse_transform
from sourcetrace.pipeline.recipe import load_study_recipe

DEFAULT_TRANSFORMS = ("codec:mp3:32k", "telephone", "noise:snr=10")


def vectors(corpus: Corpus, spec: str, models_dir: Path, clip_ids) -> tuple[str, object]:
    store = FeatureStore(corpus, build_extractor(spec, models_dir=models_dir, device="cpu"))
    report = store.compute(progress=False)
    if report.rejects:
        raise SystemExit(f"{corpus.root}: {len(report.rejects)} clips rejected by {spec}; see {store.dir}/rejects.csv")
    return store.extractor.name, store.load(list(clip_ids))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="work/mini", help="a finished `sourcetrace run recipes/mini.toml` folder")
    parser.add_argument("--recipe", default="recipes/mini.toml", help="its recipe: the extractors and attributors")
    parser.add_argument("--transform", action="append", help=f"default: {', '.join(DEFAULT_TRANSFORMS)}")
    parser.add_argument("--protocol", default="table1-01-baseline")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--json", help="write the scores here")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    transforms = [parse_transform(s).spec for s in (args.transform or DEFAULT_TRANSFORMS)]
    recipe = load_study_recipe(args.recipe, workdir)
    clean = Corpus.read(workdir / "corpus")
    table = ClipTable.from_records(clean.rows, source=str(clean.root))
    protocol = load_protocol(args.protocol)
    seeds = [int(s) for s in args.seeds.split(",")]
    timings: dict[str, float] = {}
    derived = {}
    for spec in transforms:
        t0 = time.perf_counter()
        out = workdir / "laundered" / spec.replace(":", "_").replace("=", "")
        report = derive_corpus(clean.root, [spec], out, progress=False)
        if report.failed:
            raise SystemExit(f"{spec}: {len(report.failed)} clips failed, e.g. {report.failed[0]}")
        derived[spec] = Corpus.read(out)
        timings[f"derive {spec}"] = round(time.perf_counter() - t0, 1)
    result = {"workdir": str(workdir), "protocol": protocol.name, "seeds": seeds, "systems": {}, "seconds": timings}
    for entry in recipe.features:
        t0 = time.perf_counter()
        name, X_clean = vectors(clean, entry.spec, workdir / "models", table.clip_id)
        laundered = {spec: vectors(corpus, entry.spec, workdir / "models", table.clip_id)[1]
                     for spec, corpus in derived.items()}
        scores = laundering_scores(protocol, table, X_clean, laundered, AttributorSpec.parse(entry.attributor), seeds)
        result["systems"][f"{name} {entry.attributor}"] = scores
        timings[f"features and scores {name}"] = round(time.perf_counter() - t0, 1)
    levels = protocol.levels
    print("| system | query | " + " | ".join(f"{lv} F1" for lv in levels) + " |")
    print("|---|---|" + "---|" * len(levels))
    for system, scores in result["systems"].items():
        for condition in (CLEAN, *transforms):
            cells = " | ".join(f"{scores[condition][lv]['mean']:.3f} ± {scores[condition][lv]['std']:.3f}" for lv in levels)
            print(f"| {system} | {condition} | {cells} |")
    print(json.dumps(timings))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
