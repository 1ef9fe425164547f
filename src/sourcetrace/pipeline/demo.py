"""The built-in default job: attribute a small corpus the project makes itself, end to end.

espeak-ng voices stand in for architectures and voice variants for checkpoints (these are NOT the
study's generators and the numbers are NOT the study's). The job makes the audio, imports it as a
corpus, extracts LFCC and tiny-SSL features through the feature store, runs the `indomain` and
`holdout` benchmark protocols (results files, figures, a leaderboard site), and detects clips of a
held-out "architecture" as unknown. Audio, corpus, model and features are reused when they exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sourcetrace.attribution.unknown import UnknownDetector
from sourcetrace.benchmark.leaderboard import build_leaderboard
from sourcetrace.benchmark.protocol import load_protocol
from sourcetrace.benchmark.splits import split_prompts
from sourcetrace.core.espeak import sentences, speak
from sourcetrace.core.fileio import write_json_atomic
from sourcetrace.corpus import MANIFEST, Corpus, import_corpus

# architecture (espeak voice) -> checkpoints (voice variant, words per minute, pitch)
DEMO_GENERATORS = {
    "en-us": {"v-m1": ("m1", 160, 50), "v-m3": ("m3", 175, 45), "v-f2": ("f2", 150, 60)},
    "en-gb-x-rp": {"v-m1": ("m1", 160, 50), "v-m3": ("m3", 175, 45), "v-f2": ("f2", 150, 60)},
    "en-gb-scotland": {"v-m1": ("m1", 160, 50), "v-m3": ("m3", 175, 45), "v-f2": ("f2", 150, 60)},
    "en-029": {"v-m1": ("m1", 160, 50), "v-m3": ("m3", 175, 45)},
}
HELD_OUT_ARCHITECTURE = "en-029"  # never in support: the "unknown" generator
DEMO_HOLDOUT = ("en-us/v-m3", "en-gb-scotland/v-m3")  # checkpoints only in query: attributed to their voice?


def make_demo_tree(out: Path, n_prompts: int, seed: int = 0) -> Path:
    """`<architecture>/<checkpoint>/<prompt>.wav` + `.txt` transcripts (an importable folder tree)."""
    texts = sentences(n_prompts, seed=seed)
    for arch, checkpoints in DEMO_GENERATORS.items():
        for ckpt, (variant, speed, pitch) in checkpoints.items():
            folder = out / arch / ckpt
            folder.mkdir(parents=True, exist_ok=True)
            for i, text in enumerate(texts):
                wav = folder / f"p{i:03d}.wav"
                if not wav.exists():
                    speak(text, wav, voice=f"{arch}+{variant}", speed=speed, pitch=pitch)
                    (folder / f"p{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
    return out


def run_demo(out: str | Path, n_prompts: int = 40, k: int = 10, seed: int = 0, progress: bool = True) -> dict:
    from sourcetrace.attribution.extractors import build_extractor
    from sourcetrace.attribution.extractors.ssl import named_model_spec, save_random_model
    from sourcetrace.attribution.knn import KNNAttributor
    from sourcetrace.attribution.store import FeatureStore
    from sourcetrace.benchmark.bench import run_bench

    out = Path(out)
    corpus_dir = out / "corpus"
    if not (corpus_dir / MANIFEST).exists():
        print(f"[demo] synthesising {n_prompts} prompts x {sum(map(len, DEMO_GENERATORS.values()))} voices with espeak-ng")
        make_demo_tree(out / "source", n_prompts, seed=seed)
        import_corpus(out / "source", corpus_dir)
    else:
        print(f"[demo] corpus exists: {corpus_dir}")
    corpus = Corpus.read(corpus_dir)
    tiny = named_model_spec("tiny-wav2vec2")
    model_dir = save_random_model(tiny["config"], tiny["preprocessor"], out / "models" / "tiny-wav2vec2", seed=seed)
    # Cepstral statistics need standardising (c0 dwarfs the rest); SSL vectors are used as the study does.
    systems = [("lfcc", f"knn:k={k},standardize=true"), (f"ssl:{model_dir}@2", f"knn:k={k}")]

    # 1. Attribution: the generic benchmark protocols, results files, figures and a leaderboard site.
    protocols = [load_protocol("indomain"), load_protocol("holdout")]
    failures = run_bench(corpus_dir, protocols, systems, out / "results", holdout=list(DEMO_HOLDOUT),
                         device="cpu", progress=progress)
    page = build_leaderboard(sorted((out / "results").glob("*.json")), out / "site",
                             title="sourcetrace miniature demo (espeak-ng voices; not the study's numbers)")

    # 2. Unknown detection: the held-out voice never enters the support set.
    split = split_prompts(corpus.column("prompt_id"), seed=seed)
    prompt_of = np.array(corpus.column("prompt_id"))
    arch = np.array(corpus.column("architecture"))
    checkpoint = np.array(corpus.column("checkpoint"))
    part = {name: np.isin(prompt_of, ids) for name, ids in split.items()}
    known = arch != HELD_OUT_ARCHITECTURE
    unknown_results = {}
    for extractor_spec, attributor in systems:
        extractor = build_extractor(extractor_spec, device="cpu")
        X = FeatureStore(corpus, extractor).load()  # computed by the benchmark above
        knn = KNNAttributor(k=k, standardize="standardize=true" in attributor)
        knn.fit(X[known & part["support"]], checkpoint[known & part["support"]])
        detector = UnknownDetector(knn).calibrate(X[known & part["validation"]], X[~known & part["validation"]])
        unknown_results[extractor.name] = detector.evaluate(X[known & part["query"]], X[~known & part["query"]])
    write_json_atomic(out / "unknown-detection.json", {"held_out_architecture": HELD_OUT_ARCHITECTURE, "k": k,
                                                       "seed": seed, "results": unknown_results})
    print(f"\nUnknown detection (support without {HELD_OUT_ARCHITECTURE}; threshold at the validation EER point):")
    print(f"{'extractor':<40} {'EER':>6} {'AUROC':>6} {'FPR@95TPR':>10} {'false unknown':>14} {'missed unknown':>15}")
    for name, r in unknown_results.items():
        print(f"{name:<40} {r['eer']:>6.3f} {r['auroc']:>6.3f} {r['fpr95']:>10.3f} "
              f"{r['false_unknown_rate']:>14.3f} {r['missed_unknown_rate']:>15.3f}")
    print(f"\nMiniature demo: espeak-ng voices stand in for generators; these are NOT the study's numbers.\n"
          f"leaderboard: {page}\nfigures: {out / 'results' / 'figures'}")
    return {"failures": failures, "unknown_detection": unknown_results, "leaderboard": str(page)}
