"""The one reading of a `--device` value, and the one setting of the CPU thread count."""

from __future__ import annotations

import os

from sourcetrace.core.errors import UsageError


def resolve_device(name):
    """A torch.device; "auto" is the GPU when there is one, else the CPU."""
    import torch

    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N") from None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a Slurm allocation, taskset), not the machine's."""
    return len(os.sched_getaffinity(0))


def default_cpu_threads() -> int:
    """torch's default CPU thread count: OMP_NUM_THREADS, else the CPUs this process may use."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return usable_cpus()


def pin_threads(threads: int | None = None) -> int:
    """Set torch's CPU thread count to `threads` (else the default above) and return it: audio made
    on the CPU depends on it, so whatever synthesises sets it, never keeps one left by earlier work."""
    import torch

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    count = threads or default_cpu_threads()
    torch.set_num_threads(count)
    return count
