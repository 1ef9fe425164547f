"""The study's figures: validation F1 versus k (figure 1) and checkpoint confusion matrices (figure 2);
and which linked figure files a leaderboard may publish."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sourcetrace.core.fileio import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_f1_versus_k(curves: dict[str, dict[str, float]], out: str | Path, title: str) -> Path:
    """One curve per (extractor, level): validation macro F1 against k."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curve in sorted(curves.items()):
        ks = sorted(int(k) for k in curve)
        f1 = [curve[str(k)] for k in ks]
        best = int(np.argmax(f1))
        ax.plot(ks, f1, label=f"{label} (best k={ks[best]}, F1={f1[best]:.3f})")
    ax.set_xlabel("k (neighbours)")
    ax.set_ylabel("validation macro F1")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, Path(out))


def plot_checkpoint_confusions(labels: list[str], matrix, architecture_of: dict[str, str], out: str | Path,
                               title: str) -> Path:
    """One panel per architecture: its checkpoints' rows and columns, rows normalised to recall."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=float)
    archs = sorted({architecture_of[c] for c in labels})
    fig, axes = plt.subplots(1, len(archs), figsize=(4.2 * len(archs) + 1, 4.6), squeeze=False, layout="constrained")
    for ax, arch in zip(axes[0], archs):
        pos = [i for i, c in enumerate(labels) if architecture_of[c] == arch]
        sub = matrix[np.ix_(pos, pos)]
        rows = matrix[pos].sum(1, keepdims=True)  # all predictions for these true classes
        shown = np.divide(sub, rows, out=np.zeros_like(sub), where=rows > 0)
        image = ax.imshow(shown, vmin=0, vmax=1, cmap="viridis")
        names = [labels[i].split("/", 1)[-1] for i in pos]
        ax.set_xticks(range(len(pos)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(pos)), names, fontsize=7)
        ax.set_xlabel("predicted checkpoint")
        ax.set_ylabel("true checkpoint")
        ax.set_title(arch)
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.02, label="share of the true checkpoint's clips")
    fig.suptitle(title)
    return _save(fig, Path(out))


IMAGE_MAGIC = {".png": (b"\x89PNG\r\n\x1a\n",), ".pdf": (b"%PDF-",), ".svg": (b"<?xml", b"<svg")}
_FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def figure_file(results_dir: Path, rel: str) -> Path | None:
    """The figure a results file links, if it is an image (PNG, SVG or PDF, by content) inside the
    results folder with a plain file name; None otherwise. A hostile results file cannot make the
    leaderboard copy /etc/hostname into the site."""
    src = results_dir / rel
    try:
        inside = results_dir.resolve() in src.resolve().parents
    except (RuntimeError, OSError):  # a symlink loop
        return None
    magic = IMAGE_MAGIC.get(src.suffix.lower())
    if not (inside and magic and _FIGURE_NAME.fullmatch(src.name) and src.is_file()):
        return None
    with open(src, "rb") as fh:
        head = fh.read(256).lstrip()
    return src if head.startswith(magic) else None
