"""Paired comparisons between two settings of one axis (e.g. ConViT against DeiT), matched by seed.

Two trials that differ only in the compared axis and share a seed trained on the same data subset, in the same
order, from the same validation split: their difference removes the subset-to-subset variance that dominates
at small data fractions.  For each pair d_s = metric(candidate, s) − metric(reference, s); we report the mean
of d, its two-sided 95 % Student-t confidence interval, mean ± t_{0.975, n−1} · sd(d) / √n, and n.  With
n = 1 there is no interval (shown as a plain value).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping

from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval (nan bounds when n < 2) over ``n`` values."""

    mean: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 2, signed: bool = True) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        sign = "+" if signed else ""
        if self.n < 2:
            return f"{self.mean:{sign}.{digits}f} (n=1)"
        return f"{self.mean:{sign}.{digits}f} [{self.low:{sign}.{digits}f}, {self.high:{sign}.{digits}f}]"

    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)


def mean_interval(values: list[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and two-sided Student-t confidence interval of ``values`` (NaNs dropped)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = statistics.fmean(values)
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(candidate: Mapping[str, float], reference: Mapping[str, float],
                      confidence: float = CONFIDENCE) -> Interval:
    """Mean candidate − reference over the seeds both have, with its confidence interval."""
    seeds = sorted(set(candidate) & set(reference))
    return mean_interval([candidate[s] - reference[s] for s in seeds], confidence)
