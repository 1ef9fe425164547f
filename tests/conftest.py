import os

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seeded(tmp_path, monkeypatch):
    """Every test: fixed seeds, one torch thread, and a private cache folder."""
    torch.manual_seed(0)
    np.random.seed(0)
    monkeypatch.setenv("SOURCETRACE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random-init models of both study architectures, saved as Hugging Face folders."""
    from sourcetrace.attribution.extractors import named_model_spec
    from sourcetrace.attribution.extractors.ssl import save_random_model

    root = tmp_path_factory.mktemp("models")
    out = {}
    for name in ("tiny-wav2vec2", "tiny-w2v-bert"):
        spec = named_model_spec(name)
        out[name] = save_random_model(spec["config"], spec["preprocessor"], root / name, seed=0)
    return out


@pytest.fixture(scope="session")
def speech_tree(tmp_path_factory):
    """Real speech from espeak-ng: <architecture>/<checkpoint>/<prompt>.wav, 3 voices x 2 variants x 8 prompts."""
    from sourcetrace.espeak import sentences, speak

    root = tmp_path_factory.mktemp("speech")
    texts = sentences(8, seed=1)
    for arch in ("en-us", "en-gb-x-rp", "en-gb-scotland"):
        for ckpt, (variant, speed) in {"step-a": ("m1", 160), "step-b": ("f2", 140)}.items():
            for i, text in enumerate(texts):
                speak(text, root / arch / ckpt / f"p{i}.wav", voice=f"{arch}+{variant}", speed=speed)
                (root / arch / ckpt / f"p{i}.txt").write_text(text)
    return root
