"""Bootstrap intervals over seeds and captions (two levels), shared by every row of a table.

A replicate draws S seeds with replacement from the S evaluation seeds and, for each drawn seed,
N captions (= images) with replacement from its N; the statistic is the mean over the drawn seeds
of the per-seed score on the drawn captions. Every row of a table is resampled with the *same*
draws (the rows share the captions of each seed), so the difference of two rows' replicates is a
paired bootstrap of their difference, and "the paper's ordering holds" is read off its interval.

Per-caption scores are ratios of sums (``num / den`` over the drawn captions): a mean has
``den = 1``, "facts true" is true facts / stated facts, and a caption without the quantity (e.g.
no hard negative) has ``num = den = 0``. Set-level scores (FID, IS) are recomputed on each
replicate's resampled images by a callable instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xlxmert.errors import XLXMERTError


@dataclass(frozen=True)
class Draws:
    """``seeds: int[B, S]`` (indices into the evaluation seeds) and ``items: int[B, S, N]``."""

    seeds: np.ndarray
    items: np.ndarray

    @property
    def n_boot(self) -> int:
        return int(self.seeds.shape[0])


def bootstrap_draws(n_seeds: int, n_items: int, n_boot: int, seed: int = 0) -> Draws:
    """The replicates' resampled seeds and captions (the same for every row of a table)."""
    if n_seeds < 1 or n_items < 1 or n_boot < 1:
        raise XLXMERTError(f"bootstrap needs seeds, items and replicates, got {n_seeds}, {n_items}, {n_boot}")
    rng = np.random.default_rng(seed)
    seeds = rng.integers(n_seeds, size=(n_boot, n_seeds))
    items = rng.integers(n_items, size=(n_boot, n_seeds, n_items))
    return Draws(seeds, items)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def point_estimate(num: np.ndarray, den: np.ndarray | None = None) -> float | None:
    """Mean over seeds of each seed's ``sum(num) / sum(den)``; ``num, den: [S, N]``."""
    num = np.asarray(num, dtype=float)
    den = np.ones_like(num) if den is None else np.asarray(den, dtype=float)
    per_seed = _ratio(num.sum(axis=1), den.sum(axis=1))
    return None if np.all(np.isnan(per_seed)) else float(np.nanmean(per_seed))


def ratio_replicates(num: np.ndarray, den: np.ndarray | None, draws: Draws) -> np.ndarray:
    """``float[B]``: each replicate's statistic of per-caption ``num, den: [S, N]``."""
    num = np.asarray(num, dtype=float)
    den = np.ones_like(num) if den is None else np.asarray(den, dtype=float)
    if num.shape != den.shape or num.ndim != 2:
        raise XLXMERTError(
            f"bootstrap: num and den must both be [seeds, items], got {num.shape}, {den.shape}"
        )
    s = draws.seeds[:, :, None]
    per_seed = _ratio(num[s, draws.items].sum(axis=2), den[s, draws.items].sum(axis=2))  # [B, S]
    with np.errstate(invalid="ignore"):
        return np.array([np.nanmean(r) if not np.all(np.isnan(r)) else np.nan for r in per_seed])


def set_replicates(statistic: Callable[[int, np.ndarray], float], draws: Draws, n_boot: int) -> np.ndarray:
    """``float[n_boot]``: the first ``n_boot`` replicates of a set-level score;
    ``statistic(seed_index, item_indices)`` scores one seed's resampled captions."""
    n_boot = min(n_boot, draws.n_boot)
    return np.array(
        [
            np.mean([statistic(int(s), items) for s, items in zip(draws.seeds[b], draws.items[b])])
            for b in range(n_boot)
        ]
    )


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float] | None:
    """The central ``confidence`` percentile interval of ``replicates`` (None when all are NaN)."""
    replicates = np.asarray(replicates, dtype=float)
    if replicates.size == 0 or np.all(np.isnan(replicates)):
        return None
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.nanpercentile(replicates, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_interval(
    values: np.ndarray, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """The 95 % (``confidence``) bootstrap interval of the mean of ``values`` (``[N]``: one seed,
    or ``[S, N]``: seeds × captions, resampled on both levels)."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[None]
    if values.ndim != 2 or values.size == 0:
        raise XLXMERTError(f"bootstrap_interval needs [N] or [seeds, N] values, got shape {values.shape}")
    draws = bootstrap_draws(values.shape[0], values.shape[1], n_boot, seed)
    interval = percentile_interval(ratio_replicates(values, None, draws), confidence)
    assert interval is not None  # finite values always give one
    return interval


def verdict(difference: tuple[float, float] | None) -> str:
    """The paper's ordering read off the interval of (better − worse), signed so > 0 agrees."""
    if difference is None:
        return "undecided (no interval)"
    lo, hi = difference
    if lo > 0:
        return "held"
    if hi < 0:
        return "not held (reversed)"
    return "not held (interval includes 0)"
