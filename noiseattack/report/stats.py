"""Statistics over seeds: description, the comparisons against BN, Holm's adjustment, the verdicts.

Against BN, per comparison:
- the difference of the means with its Welch–Satterthwaite 95% interval, and Welch's t-test;
- the variance ratio var(norm)/var(BN) with a 95% interval, and a permutation test of equal
  variances (`permutation_variance_test`): the two samples are centred by their own medians
  (an odd sample losing its median's zero residual), pooled, and split again in every way (exactly when there are at most EXACT_SPLITS splits, else
  PERMUTATIONS random splits from a fixed seed); the statistic is |log(var(first)/var(second))|.
  It assumes no normality, only that the two centred samples are exchangeable under the null
  (the same shape of distribution up to scale). The interval is the set of ratios this test does
  not reject at 5% (`variance_ratio_ci`), so it excludes 1 when the raw test rejects (up to the
  bisection: the test's p is a step function of the ratio, not always monotone);
- the Brown–Forsythe test (Levene's centred on the median), kept as a column.
`holm` adjusts the p-values of one family (all the mean tests, or all the variance tests, of a
report) by Holm–Bonferroni; the verdicts use the adjusted p-values (`adjust`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats


ALPHA = 0.05
MIN_N = 3  # fewer finished runs than this: no interval, no test, no verdict
REFERENCE = "bn"
NOT_MEANINGFUL = "n<3: statistics not meaningful"
NO_REFERENCE = "no BN runs to compare with"
NOT_INFORMATIVE = "not informative (both at chance)"  # both sides' runs mostly at chance (noiseattack.chance)
# the variances differ, but the side with the lower one is mostly at chance: a collapsed model's accuracy
# barely varies, which is no stability (a side at chance with the higher variance is: it collapses in some seeds)
NOT_INFORMATIVE_STABILITY = "stability not informative"
STABILITY_AT_CHANCE = NOT_INFORMATIVE_STABILITY + " (the lower variance is {}'s runs at chance)"
EXACT_SPLITS = 20_000  # up to this many splits the permutation test enumerates them all
PERMUTATIONS = 20_000  # else this many random splits
PERMUTATION_SEED = 20240613  # fixed: the same data always give the same p
_RATIO_RANGE = 1e12  # the variance-ratio interval is searched within ratiô / 1e12 .. ratiô * 1e12


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


def welch_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """The `confidence` interval of mean(a) - mean(b): the difference ± t(df) · se, with
    se² = var(a)/n_a + var(b)/n_b and the Welch–Satterthwaite df. None where undefined (n < 2 in
    either sample, or both samples constant)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return None
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(va + vb)
    diff = float(a.mean() - b.mean())
    return diff - half, diff + half


def contrast(groups: Sequence[Sequence[float]], weights: Sequence[float], confidence: float = 0.95
             ) -> dict[str, float | None]:
    """A linear contrast of independent group means, sum_i w_i · mean_i (e.g. weights (1, -1, -1, 1)
    on (A under attack, A clean, B under attack, B clean): A's change under the attack minus B's),
    with se² = sum_i w_i² var_i / n_i, the Welch–Satterthwaite df = (sum_i v_i)² / sum_i v_i² / (n_i - 1)
    (v_i = w_i² var_i / n_i), its `confidence` t-interval and the two-sided p of estimate = 0. With two
    groups and weights (1, -1) it is Welch's t-test. `estimate` only where a group has fewer than 2
    values or every group is constant (ci_low, ci_high, p, df then None)."""
    xs = [np.asarray(g, float) for g in groups]
    if len(xs) != len(weights) or not xs or any(len(x) == 0 for x in xs):
        raise ValueError("contrast: one weight per group, and every group non-empty")
    est = float(sum(w * x.mean() for w, x in zip(weights, xs)))
    out: dict[str, float | None] = {"estimate": est, "ci_low": None, "ci_high": None, "p": None, "df": None}
    if any(len(x) < 2 for x in xs):
        return out
    parts = [w * w * x.var(ddof=1) / len(x) for w, x in zip(weights, xs)]
    var = sum(parts)
    if var == 0:
        return out
    df = var ** 2 / sum(v * v / (len(x) - 1) for v, x in zip(parts, xs) if v > 0)
    se = math.sqrt(var)
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(est) / se, df))
    out.update(ci_low=est - half, ci_high=est + half, p=p, df=float(df))
    return out


def variance_test(a: Sequence[float], b: Sequence[float]) -> tuple[float | None, float | None]:
    """(W, p) of the Brown-Forsythe test of equal variance (Levene's test centred on the median);
    None where undefined (no spread in either sample)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.levene(np.asarray(a, float), np.asarray(b, float), center="median")
    return _nan_to_none(res.statistic), _nan_to_none(res.pvalue)


def _splits(n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(first, second, exact): index arrays (splits × n_a, splits × n_b) into the pooled values
    (the first sample, then the second). Every split, the observed one among them, when there are
    at most EXACT_SPLITS; else PERMUTATIONS random ones drawn with PERMUTATION_SEED."""
    n = n_a + n_b
    if math.comb(n, n_a) <= EXACT_SPLITS:
        first = np.array(list(itertools.combinations(range(n), n_a)), dtype=np.intp)
        exact = True
    else:
        rng = np.random.default_rng(PERMUTATION_SEED)
        first = np.sort(np.argsort(rng.random((PERMUTATIONS, n)), axis=1)[:, :n_a], axis=1)
        exact = False
    taken = np.zeros((len(first), n), dtype=bool)
    np.put_along_axis(taken, first, True, axis=1)
    second = np.nonzero(~taken)[1].reshape(len(first), n_b)
    return first, second, exact


def _log_var_ratio(g1: np.ndarray, g2: np.ndarray, tiny: float) -> np.ndarray:
    """|log(var(g1) / var(g2))| along the last axis (n-1 variances, two-pass); inf where exactly
    one group is constant (variance <= tiny), 0 where both are."""
    v1, v2 = g1.var(axis=-1, ddof=1), g2.var(axis=-1, ddof=1)
    v1, v2 = np.where(v1 <= tiny, 0.0, v1), np.where(v2 <= tiny, 0.0, v2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(np.log(v1) - np.log(v2))
    return np.nan_to_num(t, nan=0.0, posinf=np.inf)


def _permutation_p(ra: np.ndarray, rb: np.ndarray, splits: tuple[np.ndarray, np.ndarray, bool],
                   ratio: float) -> float:
    """p of H0 var(a)/var(b) = ratio, from the median-centred residuals ra, rb (ra scaled by
    1/sqrt(ratio) to make the null one of equal variances)."""
    first, second, exact = splits
    sa = ra / math.sqrt(ratio)
    x = np.concatenate([sa, rb])
    tiny = float(np.max(x * x)) * 1e-28  # rounding of a constant group's two-pass variance
    t = _log_var_ratio(x[first], x[second], tiny)
    obs = float(_log_var_ratio(sa, rb, tiny))
    hits = int(np.count_nonzero(t >= obs - 1e-9 * max(1.0, obs))) if math.isfinite(obs) else int(
        np.count_nonzero(np.isinf(t)))
    if exact:
        return hits / len(t)
    return (hits + 1) / (len(t) + 1)


def _centred(x: np.ndarray) -> np.ndarray:
    """x minus its median; of an odd-sized sample without the median itself, whose residual is
    always exactly 0 (a "structural zero": kept, it makes the test conservative, e.g. no p below
    0.048 with 5 runs against 5; Hines & O'Hara Hines 2000 remove it from Levene's test the same way)."""
    r = x - np.median(x)
    if len(x) % 2:
        r = np.delete(r, int(np.argmin(np.abs(r))))
    return r


def _residuals(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or len(b) < 3 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return None
    return _centred(a), _centred(b)


def permutation_variance_test(a: Sequence[float], b: Sequence[float], ratio: float = 1.0) -> float | None:
    """Two-sided p of the permutation test of var(a)/var(b) = `ratio` (1: equal variances) on the
    median-centred samples (`_centred`: an odd sample loses its median's zero residual): the
    fraction of splits of the pooled residuals whose |log(var ratio)| is at least the observed
    one (every split when there are at most EXACT_SPLITS; else (1 + hits) / (1 + PERMUTATIONS)
    over random splits, seeded). None where undefined (n < 3 in either sample, or both constant)."""
    res = _residuals(a, b)
    if res is None:
        return None
    return _permutation_p(res[0], res[1], _splits(len(res[0]), len(res[1])), ratio)


def variance_ratio_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95
                      ) -> tuple[float, float, float | None] | None:
    """(var(a)/var(b), low, high): the ratios r that `permutation_variance_test(a, b, r)` does not
    reject at 1 - confidence, found by bisection on log r (to 1e-4 relative) either side of the
    ratio of the residuals' variances, where the test's p is 1 (with an even n on both sides that
    is var(a)/var(b) itself). low is 0.0 and high None (unbounded) where even 1e∓12 times that is
    not rejected, as always with 3 runs against 3 (the smallest attainable p is 2/6). None where
    a sample is constant or has fewer than 3 runs."""
    res = _residuals(a, b)
    if res is None or np.ptp(res[0]) == 0 or np.ptp(res[1]) == 0:
        return None
    ra, rb = res
    est = float(np.var(a, ddof=1) / np.var(b, ddof=1))
    centre = float(ra.var(ddof=1) / rb.var(ddof=1))
    splits = _splits(len(ra), len(rb))
    level = 1 - confidence

    def accepted(log_r: float) -> bool:
        return _permutation_p(ra, rb, splits, math.exp(log_r)) >= level

    bounds = []
    for sign in (-1.0, 1.0):
        inside, outside = math.log(centre), math.log(centre) + sign * math.log(_RATIO_RANGE)
        if accepted(outside):
            bounds.append(None)
            continue
        while abs(outside - inside) > 1e-4:
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if accepted(mid) else (inside, mid)
        bounds.append(math.exp(inside))
    return est, (0.0 if bounds[0] is None else bounds[0]), bounds[1]


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in the input's order: with the m defined p-values sorted
    p(1) <= ... <= p(m), adjusted p(i) = max over j <= i of min(1, (m - j + 1) p(j)). None stays
    None (not part of the family)."""
    defined = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(defined)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for j, (p, i) in enumerate(defined):
        running = max(running, min(1.0, (m - j) * p))
        out[i] = running
    return out


def fmt_p(p: float | None) -> str:
    if p is None:
        return "undefined"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _verdicts(out: dict[str, Any], alpha: float) -> None:
    """The accuracy and stability verdicts from the Holm-adjusted p-values in `out`; where both sides sit
    at chance (`_chance`), not informative, whatever the p-values; where one side does, marked so."""
    p, q = out["welch_p_holm"], out["var_p_holm"]
    mine, bn = out.get("_chance", (False, False))
    if mine and bn:
        out["accuracy_verdict"] = out["stability_verdict"] = NOT_INFORMATIVE
        return
    if p is None:
        out["accuracy_verdict"] = "not testable (no spread in either group)"
    elif p < alpha:
        out["accuracy_verdict"] = "better than BN" if out["_higher"] else "worse than BN"
    else:
        out["accuracy_verdict"] = f"no significant difference (p={fmt_p(p)})"
    if q is None:
        out["stability_verdict"] = "stability not testable (no spread in either group)"
    elif q < alpha and (mine if out["_stabler"] else bn):
        out["stability_verdict"] = STABILITY_AT_CHANCE.format("this layer" if out["_stabler"] else "BN")
    elif q < alpha:
        out["stability_verdict"] = "more stable" if out["_stabler"] else "less stable"
    else:
        out["stability_verdict"] = f"stability not distinguishable (p={fmt_p(q)})"
    if mine or bn:
        note = f" ({'BN' if bn else 'this layer'} at chance)"
        out["accuracy_verdict"] += note
        if not out["stability_verdict"].startswith(NOT_INFORMATIVE_STABILITY):  # it says so already
            out["stability_verdict"] += note


def variance_differs(cmp: dict[str, Any], q: float | None, alpha: float = ALPHA) -> bool:
    """◆: the comparison's Holm-adjusted variance p `q` is below alpha and its stability verdict does
    not discount it (not both sides at chance, not a lower variance that is a collapse to chance). It
    reads the verdict's text (a report.csv row has no other trace of the chance rule), so a row written
    before the rule existed keeps its ◆ until its report is regenerated."""
    verdict = str(cmp.get("stability_verdict") or "")
    return q is not None and q < alpha and verdict != NOT_INFORMATIVE and not verdict.startswith(
        NOT_INFORMATIVE_STABILITY)


def informative(cmp: dict[str, Any] | None) -> bool:
    """Whether a comparison's tests say something: not where both sides sit at chance (NOT_INFORMATIVE)."""
    return not cmp or cmp.get("accuracy_verdict") != NOT_INFORMATIVE


def compare(values: Sequence[float], reference: Sequence[float], alpha: float = ALPHA,
            chance: tuple[bool, bool] = (False, False)) -> dict[str, Any]:
    """A norm's final accuracies against BN's: the difference of the means with its Welch 95%
    interval and Welch's p, the variance ratio with its 95% interval and the permutation p, the
    Brown–Forsythe p, and plain-language verdicts on accuracy and on stability (variance). Alone
    this is a family of one: the `_holm` p-values equal the raw ones until `adjust` sets them.
    `chance`: whether (this norm's, BN's) runs sit at chance (`noiseattack.chance.mostly`): both, and
    the verdicts are NOT_INFORMATIVE (the p-values stay, and stay in Holm's families: conservative);
    one, and the verdicts say which. Keys starting with `_` are for `adjust` (the directions, the
    chance flags), not report columns."""
    a, b = np.asarray(values, float), np.asarray(reference, float)
    out: dict[str, Any] = {"diff_vs_bn": float(a.mean() - b.mean()) if len(a) and len(b) else None,
                           "diff_ci95_low": None, "diff_ci95_high": None, "welch_p": None, "welch_p_holm": None,
                           "var_ratio": None, "var_ratio_ci95_low": None, "var_ratio_ci95_high": None,
                           "var_p": None, "var_p_holm": None, "bf_p": None}
    if len(a) < MIN_N or len(b) < MIN_N:
        out.update(accuracy_verdict=NOT_MEANINGFUL, stability_verdict=NOT_MEANINGFUL)
        return out
    ci = welch_ci(a, b)
    if ci is not None:
        out.update(diff_ci95_low=ci[0], diff_ci95_high=ci[1])
    ratio = variance_ratio_ci(a, b)
    if ratio is not None:
        out.update(var_ratio=ratio[0], var_ratio_ci95_low=ratio[1], var_ratio_ci95_high=ratio[2])
    elif b.var() > 0:
        out["var_ratio"] = float(a.var(ddof=1) / b.var(ddof=1))
    out.update(welch_p=welch_test(a, b)[1], var_p=permutation_variance_test(a, b), bf_p=variance_test(a, b)[1],
               _higher=bool(a.mean() > b.mean()), _stabler=bool(a.var(ddof=1) < b.var(ddof=1)),
               _chance=(bool(chance[0]), bool(chance[1])))
    out.update(welch_p_holm=out["welch_p"], var_p_holm=out["var_p"])
    _verdicts(out, alpha)
    return out


def adjust(comparisons: Sequence[dict[str, Any]], alpha: float = ALPHA) -> None:
    """Holm–Bonferroni across `comparisons` (the `compare` results of one report), each family on
    its own: the Welch p-values, and the permutation variance p-values. Sets `welch_p_holm` and
    `var_p_holm` and redoes the verdicts of the comparisons that were tested."""
    welch = holm([c.get("welch_p") for c in comparisons])
    var = holm([c.get("var_p") for c in comparisons])
    for c, p, q in zip(comparisons, welch, var):
        if "_higher" not in c:  # not tested (n < MIN_N): no p-values, verdicts stand
            continue
        c["welch_p_holm"], c["var_p_holm"] = p, q
        _verdicts(c, alpha)
