"""The built-in default job: attribute a small corpus the project makes itself, end to end.

espeak-ng voices stand in for architectures and voice variants for checkpoints (these are NOT the
study's generators and the numbers are NOT the study's). The job makes the audio, imports it as a
corpus, extracts LFCC and tiny-SSL features through the feature store, attributes query clips with
kNN at checkpoint and architecture level, and detects clips of a held-out "architecture" as unknown.
Every stage is skipped when its output exists, so a rerun does no work twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .corpus import MANIFEST, Corpus, import_corpus
from .espeak import sentences, speak
from .fileio import write_json_atomic

# architecture (espeak voice) -> checkpoints (voice variant, words per minute, pitch)
DEMO_GENERATORS = {
    "en-us": {"v-m1": ("m1", 160, 50), "v-m3": ("m3", 175, 45), "v-f2": ("f2", 150, 60)},
    "en-gb-x-rp": {"v-m1": ("m1", 160, 50), "v-m3": ("m3", 175, 45), "v-f2": ("f2", 150, 60)},
    "en-gb-scotland": {"v-m1": ("m1", 160, 50), "v-m3": ("m3", 175, 45), "v-f2": ("f2", 150, 60)},
    "en-029": {"v-m1": ("m1", 160, 50), "v-m3": ("m3", 175, 45)},
}
HELD_OUT_ARCHITECTURE = "en-029"  # never in support: the "unknown" generator


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
    from sourcetrace.attribution.extractors import build_extractor, named_model_spec
    from sourcetrace.attribution.extractors.ssl import save_random_model
    from sourcetrace.attribution.knn import KNNAttributor
    from sourcetrace.attribution.metrics import macro_f1
    from sourcetrace.attribution.store import FeatureStore
    from sourcetrace.attribution.unknown import UnknownDetector
    from sourcetrace.benchmark.splits import split_prompts

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

    split = split_prompts(corpus.column("prompt_id"), seed=seed)
    clip_ids = corpus.column("clip_id")
    prompt_of = np.array(corpus.column("prompt_id"))
    arch = np.array(corpus.column("architecture"))
    ckpt = np.array(corpus.column("checkpoint"))
    known = arch != HELD_OUT_ARCHITECTURE
    part = {name: np.isin(prompt_of, ids) for name, ids in split.items()}

    results: dict = {"corpus": str(corpus_dir), "clips": len(corpus.rows), "k": k, "seed": seed,
                     "held_out_architecture": HELD_OUT_ARCHITECTURE, "extractors": {}}
    failed = False
    for spec in ("lfcc", f"ssl:{model_dir}@2"):
        extractor = build_extractor(spec, device="cpu")
        store = FeatureStore(corpus, extractor)
        report = store.compute(progress=progress)
        print(f"[demo] {extractor.name}: {report.computed} computed, {report.reused} reused, {len(report.rejects)} rejected")
        failed |= not report.ok
        rejected = {clip_id for clip_id, _, _ in report.rejects}
        use = np.array([c not in rejected for c in clip_ids])
        X = store.load([c for c, u in zip(clip_ids, use) if u])
        is_known, labels_at = known[use], {"checkpoint": ckpt[use], "architecture": arch[use]}
        support, validation, query = (part[name][use] for name in ("support", "validation", "query"))
        entry = {"fingerprint": extractor.fingerprint_hash}
        make = lambda: KNNAttributor(k=k, standardize=not spec.startswith("ssl:"))  # noqa: E731
        for level, labels in labels_at.items():
            knn = make().fit(X[support & is_known], labels[support & is_known])
            entry[f"macro_f1_{level}"] = macro_f1(labels[query & is_known], knn.predict(X[query & is_known]),
                                                  labels=np.unique(labels[is_known]))
        knn = make().fit(X[support & is_known], labels_at["checkpoint"][support & is_known])
        detector = UnknownDetector(knn).calibrate(X[validation & is_known], X[validation & ~is_known])
        entry["unknown_detection"] = detector.evaluate(X[query & is_known], X[query & ~is_known])
        results["extractors"][extractor.name] = entry
    write_json_atomic(out / "demo-results.json", results)
    print_summary(results)
    results["failed"] = failed
    return results


def print_summary(results: dict) -> None:
    print(f"\nMiniature attribution demo ({results['clips']} clips, k={results['k']}; espeak-ng voices, "
          "not the study's generators: these numbers are not the study's)")
    print(f"{'extractor':<40} {'F1 ckpt':>8} {'F1 arch':>8} {'EER unk':>8} {'AUROC':>7}")
    for name, e in results["extractors"].items():
        u = e["unknown_detection"]
        print(f"{name:<40} {e['macro_f1_checkpoint']:>8.3f} {e['macro_f1_architecture']:>8.3f} "
              f"{u['eer']:>8.3f} {u['auroc']:>7.3f}")
    print(json.dumps({"results": str(Path(results["corpus"]).parent / "demo-results.json")}))
