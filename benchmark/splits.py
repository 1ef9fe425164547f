"""Reproducible prompt splits: support / validation / query."""

from __future__ import annotations

import numpy as np

from sourcetrace.core.errors import UsageError

DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


def split_prompts(prompt_ids, seed: int, fractions=DEFAULT_FRACTIONS) -> dict[str, list[str]]:
    """Partition the distinct prompt ids into support/validation/query with a seeded permutation.

    The result depends only on the set of ids and the seed (ids are sorted first), so the same
    corpus gives the same split on every machine. 600 prompts -> 420 / 60 / 120 as in the study.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
        raise UsageError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    ids = sorted(set(prompt_ids))
    if len(ids) < 3:
        raise UsageError(f"need at least 3 distinct prompts to split, got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_support = max(1, int(round(fractions[0] * len(ids))))
    n_val = max(1, int(round(fractions[1] * len(ids))))
    n_support = min(n_support, len(ids) - n_val - 1)
    shuffled = [ids[i] for i in order]
    return {
        "support": sorted(shuffled[:n_support]),
        "validation": sorted(shuffled[n_support:n_support + n_val]),
        "query": sorted(shuffled[n_support + n_val:]),
    }
