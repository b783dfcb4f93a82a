"""Statistics over seeds: description, Welch's t-test, Brown-Forsythe, and the verdicts against BN."""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats


ALPHA = 0.05


ALPHA = 0.05
MIN_N = 3  # fewer finished runs than this: no interval, no test, no verdict


MIN_N = 3  # fewer finished runs than this: no interval, no test, no verdict
REFERENCE = "bn"


REFERENCE = "bn"
NOT_MEANINGFUL = "n<3: statistics not meaningful"


NOT_MEANINGFUL = "n<3: statistics not meaningful"
NO_REFERENCE = "no BN runs to compare with"


def describe(values: Iterable[float], confidence: float = 0.95) -> dict[str, Any]:
    """n, mean, std and var (n-1), the `confidence` t-interval of the mean, min, max.
    Undefined values (std of one value, ...) are None."""
    x = np.asarray(list(values), dtype=float)
    n = len(x)
    out: dict[str, Any] = {"n": n, "mean": None, "std": None, "var": None, "ci95_low": None, "ci95_high": None,
                           "min": None, "max": None}
    if n == 0:
        return out
    mean = float(x.mean())
    out.update(mean=mean, min=float(x.min()), max=float(x.max()))
    if n >= 2:
        std = float(x.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
        out.update(std=std, var=float(x.var(ddof=1)), ci95_low=mean - half, ci95_high=mean + half)
    return out


def _nan_to_none(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def welch_test(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, float | None]:
    """(t, two-sided p) of Welch's unequal-variance t-test of mean(a) = mean(b); None where undefined
    (both samples constant)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(np.asarray(a, float), np.asarray(b, float), equal_var=False)
    return _nan_to_none(res.statistic), _nan_to_none(res.pvalue)


def variance_test(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, float | None]:
    """(W, p) of the Brown-Forsythe test of equal variance (Levene's test centred on the median);
    None where undefined (no spread in either sample)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.levene(np.asarray(a, float), np.asarray(b, float), center="median")
    return _nan_to_none(res.statistic), _nan_to_none(res.pvalue)


def fmt_p(p: float | None) -> str:
    if p is None:
        return "undefined"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def compare(values: Sequence[float], reference: Sequence[float], alpha: float = ALPHA) -> dict[str, Any]:
    """A norm's final accuracies against BN's: the difference of the means, Welch's p, the
    Brown-Forsythe p, and a plain-language verdict on accuracy and on stability (variance)."""
    a, b = np.asarray(values, float), np.asarray(reference, float)
    out: dict[str, Any] = {"diff_vs_bn": float(a.mean() - b.mean()) if len(a) and len(b) else None,
                           "welch_p": None, "bf_p": None}
    if len(a) < MIN_N or len(b) < MIN_N:
        out.update(accuracy_verdict=NOT_MEANINGFUL, stability_verdict=NOT_MEANINGFUL)
        return out
    _, p = welch_test(a, b)
    _, q = variance_test(a, b)
    out.update(welch_p=p, bf_p=q)
    if p is None:
        out["accuracy_verdict"] = "not testable (no spread in either group)"
    elif p < alpha:
        out["accuracy_verdict"] = "better than BN" if a.mean() > b.mean() else "worse than BN"
    else:
        out["accuracy_verdict"] = f"no significant difference (p={fmt_p(p)})"
    if q is None:
        out["stability_verdict"] = "stability not testable (no spread in either group)"
    elif q < alpha:
        out["stability_verdict"] = "more stable" if a.var(ddof=1) < b.var(ddof=1) else "less stable"
    else:
        out["stability_verdict"] = f"stability not distinguishable (p={fmt_p(q)})"
    return out
