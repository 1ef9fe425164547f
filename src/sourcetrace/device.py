"""The one reading of a `--device` value."""

from __future__ import annotations


def resolve_device(name):
    """A torch.device; "auto" is the GPU when there is one, else the CPU."""
    import torch

    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
