"""What a handful of seeds establishes: a paired bootstrap interval for a difference of means.

The results sweep runs each method on the same seeds (seed ``s`` of every method shares the
base model, the data order of fine-tuning and the test set), so the question "is method A's
pruned model better than method B's?" is one about the per-seed differences ``a_s - b_s``.
``paired_bootstrap`` resamples those differences with replacement (Efron & Tibshirani 1993,
ch. 13: the percentile interval). With few seeds (``n ** n`` resamples at most
``EXACT_LIMIT``: up to 6 seeds) it enumerates every resample, so the interval is exact for
the bootstrap distribution and needs no random draws; beyond that it draws ``resamples``
with a fixed seed.

With 3 seeds the bootstrap distribution has at most 10 distinct means, and the 95% interval
is the range of the per-seed differences: the verdict is descriptive (every seed agrees, or
not), its nominal coverage is not reached at such sizes. ``verdict`` reads an interval:
"better" or "worse" only when it excludes 0 and rests on at least ``MIN_PAIRS`` seeds;
"not distinguishable" otherwise (an interval containing 0 does not show the two are equal).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

EXACT_LIMIT = 50_000  # enumerate every resample when n ** n is at most this (n <= 6)
# Below this many pairs the bootstrap has too few distinct resamples to mean anything (one
# pair gives a point interval around any difference); the verdict then says so.
MIN_PAIRS = 3


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over paired samples and its bootstrap percentile interval."""

    mean: float
    low: float
    high: float
    level: float
    n: int
    method: str  # "exact" (every resample enumerated) or "monte carlo"

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _resample_means(diffs: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, str]:
    n = len(diffs)
    if n**n <= EXACT_LIMIT:
        index = np.array(list(itertools.product(range(n), repeat=n)))
        return diffs[index].mean(axis=1), "exact"
    rng = np.random.default_rng(seed)
    return diffs[rng.integers(0, n, size=(resamples, n))].mean(axis=1), "monte carlo"


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    level: float = 0.95,
    resamples: int = 20_000,
    seed: int = 0,
) -> PairedDifference:
    """The mean of ``a_i - b_i`` with its ``level`` percentile bootstrap interval.

    ``a`` and ``b`` are paired (same seeds, same order). The interval's ends are the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means (numpy's
    ``inverted_cdf``: the smallest resample mean whose share at or below it reaches the
    level's tail).
    """
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.ndim != 1 or a_arr.shape != b_arr.shape or len(a_arr) == 0:
        raise ValueError(
            f"paired_bootstrap needs two equally long, non-empty lists of paired values, got "
            f"{len(np.atleast_1d(a_arr))} and {len(np.atleast_1d(b_arr))}"
        )
    if not (np.all(np.isfinite(a_arr)) and np.all(np.isfinite(b_arr))):
        raise ValueError("paired_bootstrap needs finite values (a missing result is not 0)")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if int(resamples) < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    diffs = a_arr - b_arr
    means, method = _resample_means(diffs, int(resamples), seed)
    # inverted_cdf: each end is a resample mean itself, never interpolated past one; with 3
    # pairs the 95% interval is then [min, max] of the differences, so "better" needs every
    # seed better (linear interpolation let one losing seed be outvoted)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return PairedDifference(
        float(diffs.mean()), float(low), float(high), float(level), len(diffs), method
    )


def verdict(difference: PairedDifference, margin: float = 0.0) -> str:
    """The claim an interval supports: "better" when it lies wholly above ``margin``,
    "worse" when wholly below ``-margin``, else "not distinguishable"; "too few seeds"
    under ``MIN_PAIRS`` pairs."""
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be >= 0, got {margin}")
    if difference.n < MIN_PAIRS:
        return "too few seeds"
    if difference.low > margin:
        return "better"
    if difference.high < -margin:
        return "worse"
    return "not distinguishable"
