"""The report's statistics against hand computations and independent implementations: Holm's
adjustment, the Welch interval of a difference of means, the permutation test of equal variances
and the interval of the variance ratio it gives, and the family-wise adjustment of one report."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from noiseattack import report as R
from noiseattack.report import stats as S


def holm_reference(pvalues):
    """Holm-Bonferroni, step-down, written out: sort, multiply the i-th smallest (from 0) by m - i,
    carry the maximum forward, clip at 1; None is not part of the family."""
    defined = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    defined.sort()
    m = len(defined)
    out = [None] * len(pvalues)
    for rank, (_, i) in enumerate(defined):
        out[i] = min(1.0, max((m - j) * defined[j][0] for j in range(rank + 1)))
    return out


def perm_p_enumerated(a, b):
    """Exact p of the permutation test of equal variances, by enumeration in pure Python: centre each
    sample by its median (an odd one then drops its median's residual, 0), pool, and count the
    splits whose |log(var ratio)| is at least the observed."""
    ra, rb = centred(a), centred(b)
    pooled = ra + rb

    def stat(g1, g2):
        return abs(math.log(statistics.variance(g1)) - math.log(statistics.variance(g2)))

    observed = stat(ra, rb)
    hits = total = 0
    for first in itertools.combinations(range(len(pooled)), len(ra)):
        g1 = [pooled[i] for i in first]
        g2 = [pooled[i] for i in range(len(pooled)) if i not in first]
        total += 1
        hits += stat(g1, g2) >= observed - 1e-9
    return hits / total


def centred(x):
    """x minus its median, without the median's own zero residual when len(x) is odd."""
    r = [v - statistics.median(x) for v in x]
    if len(x) % 2:
        r.remove(min(r, key=abs))
    return r


def perm_p_scipy(a, b, n_resamples=np.inf):
    """The same test by scipy.stats.permutation_test (exact when n_resamples is inf)."""
    ra, rb = np.asarray(centred(a)), np.asarray(centred(b))

    def stat(x, y, axis):
        return np.abs(np.log(np.var(x, axis=axis, ddof=1)) - np.log(np.var(y, axis=axis, ddof=1)))

    return stats.permutation_test((ra, rb), stat, permutation_type="independent", vectorized=True,
                                  n_resamples=n_resamples, alternative="greater").pvalue


# --------------------------------------------------------------------------- Holm


def test_holm_on_a_hand_computed_example():
    # sorted: 0.005, 0.01, 0.03, 0.04 (m = 4) -> 4*0.005 = 0.02, 3*0.01 = 0.03, 2*0.03 = 0.06,
    # 1*0.04 = 0.04 -> raised to the running maximum 0.06; back in the input's order:
    got = R.holm([0.01, None, 0.04, 0.03, 0.005])
    assert got[1] is None
    assert [got[i] for i in (0, 2, 3, 4)] == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert R.holm([0.6, 0.7]) == [1.0, 1.0]  # 2*0.6 = 1.2 clipped to 1; 0.7 raised to 1
    assert R.holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # 2*0.4 = 0.8; 1*0.5 raised to 0.8
    assert R.holm([0.2]) == [0.2] and R.holm([]) == [] and R.holm([None]) == [None]
    rng = np.random.default_rng(3)
    ps = list(rng.uniform(0, 0.2, 12) ** 2) + [None, 1.0, 0.0]
    got, want = R.holm(ps), holm_reference(ps)
    assert [g is None for g in got] == [w is None for w in want]
    assert [g for g in got if g is not None] == pytest.approx([w for w in want if w is not None], rel=1e-12)


# --------------------------------------------------------------------------- Welch interval


@pytest.mark.parametrize("a, b", [
    ([11, 9, 10, 11, 10, 12, 9, 11, 12, 9], [11, 13, 10, 13, 12, 9, 11, 12, 12, 11]),
    ([80.1, 79.5, 81.2], [60.0, 75.0, 90.0, 70.5, 88.0]),
    ([1.0, 1.0, 1.0, 2.0], [5.0, 5.5, 7.0]),
])
def test_welch_interval_matches_scipy(a, b):
    want = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    low, high = R.welch_ci(a, b)
    assert (low, high) == pytest.approx((want.low, want.high), rel=1e-10)
    row = R.compare(a, b)
    assert (row["diff_ci95_low"], row["diff_ci95_high"]) == pytest.approx((want.low, want.high), rel=1e-10)
    assert R.welch_ci([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) is None and R.welch_ci([1.0], [1.0, 2.0]) is None


def test_a_two_group_contrast_is_welch_s_test():
    a, b = [71.0, 73.5, 70.2, 74.1, 72.0], [60.0, 66.0, 58.5, 70.0]
    got = R.contrast([a, b], [1, -1])
    want = stats.ttest_ind(a, b, equal_var=False)
    ci = want.confidence_interval(0.95)
    assert got["p"] == pytest.approx(want.pvalue, rel=1e-10) and got["df"] == pytest.approx(want.df, rel=1e-10)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert got["estimate"] == pytest.approx(statistics.mean(a) - statistics.mean(b))


def test_a_difference_of_drops_by_hand():
    """(A_attack - A_clean) - (B_attack - B_clean) on four small groups, written out: means, the
    variances of the means, Welch–Satterthwaite df, the t quantile and the two-sided p."""
    groups = [[60.0, 62.0, 64.0], [70.0, 71.0, 75.0], [40.0, 50.0, 45.0, 41.0], [72.0, 74.0, 73.0]]
    means = [62.0, 72.0, 44.0, 73.0]
    variances = [4.0, 7.0, (16.0 + 36.0 + 1.0 + 9.0) / 3, 1.0]  # sum of squared deviations / (n - 1)
    ns = [3, 3, 4, 3]
    v = [var / n for var, n in zip(variances, ns)]  # every weight is +-1
    est = (means[0] - means[1]) - (means[2] - means[3])
    df = sum(v) ** 2 / sum(x * x / (n - 1) for x, n in zip(v, ns))
    t = est / math.sqrt(sum(v))
    got = R.contrast(groups, [1, -1, -1, 1])
    assert got["estimate"] == pytest.approx(est) and est == 19.0
    assert got["df"] == pytest.approx(df)
    assert got["p"] == pytest.approx(2 * stats.t.sf(abs(t), df))
    half = stats.t.ppf(0.975, df) * math.sqrt(sum(v))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((est - half, est + half))


def test_a_contrast_without_spread_has_no_interval():
    assert R.contrast([[1.0, 1.0], [2.0, 2.0]], [1, -1]) == {"estimate": -1.0, "ci_low": None, "ci_high": None,
                                                             "p": None, "df": None}
    assert R.contrast([[1.0], [2.0, 3.0]], [1, -1])["p"] is None
    with pytest.raises(ValueError):
        R.contrast([[1.0, 2.0]], [1, -1])


# --------------------------------------------------------------------------- permutation test


@pytest.mark.parametrize("a, b", [
    ([80.0, 80.1, 79.9, 80.05], [60.0, 100.0, 70.0, 90.0]),  # 70 splits
    ([1.0, 2.0, 4.0], [0.0, 10.0, 25.0, 26.0]),  # 35 splits, unequal n
    ([90.0, 91.0, 92.0, 90.5, 91.5], [80.0, 81.0, 82.0, 80.5, 81.5]),  # equal spreads
    ([3.0, 7.0, 1.0, 9.0, 4.0, 6.0], [5.0, 2.0, 8.0]),
])
def test_permutation_test_equals_the_enumeration(a, b):
    want = perm_p_enumerated(a, b)
    assert R.permutation_variance_test(a, b) == pytest.approx(want, abs=1e-15)
    assert R.permutation_variance_test(a, b) == pytest.approx(perm_p_scipy(a, b), rel=1e-12)
    assert R.compare(a, b)["var_p"] == pytest.approx(want, abs=1e-15)


def test_permutation_test_hand_counted():
    # Median-centred residuals: a -> (-0.1, 0, 0.1), b -> (-10, 0, 10); each drops its median's 0,
    # leaving (-0.1, 0.1) and (-10, 10). Of the C(4, 2) = 6 splits, the observed one and its mirror
    # have variances 0.02 vs 200 (|log ratio| = log 1e4); the other four pair a small residual with
    # a large one on each side, variances 24.5 vs 24.5 or 50.0 vs 50.0 (log ratio 0). So p = 2/6:
    # with 3 runs against 3 no p can be below 1/3, and the variance ratio's interval is unbounded.
    a, b = [5.0, 5.1, 5.2], [40.0, 50.0, 60.0]
    assert R.permutation_variance_test(a, b) == pytest.approx(1 / 3, abs=1e-15)
    assert perm_p_enumerated(a, b) == pytest.approx(1 / 3, abs=1e-15)
    ratio, low, high = R.variance_ratio_ci(a, b)
    assert ratio == pytest.approx(0.01 / 100) and low == 0.0 and high is None
    assert R.permutation_variance_test([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) is None


def test_permutation_test_random_splits_when_there_are_many():
    rng = np.random.default_rng(7)
    a, b = list(rng.normal(0, 1, 10)), list(rng.normal(0, 2.5, 10))  # C(20, 10) = 184756 splits
    assert math.comb(20, 10) > S.EXACT_SPLITS
    p = R.permutation_variance_test(a, b)
    assert p == R.permutation_variance_test(a, b)  # seeded: the same p every time
    exact = perm_p_scipy(a, b)
    assert abs(p - exact) < 4 * math.sqrt(exact * (1 - exact) / S.PERMUTATIONS) + 2 / S.PERMUTATIONS


def test_variance_ratio_interval_inverts_the_test():
    a = [80.0, 80.3, 79.6, 80.1, 79.8, 80.4]
    b = [70.0, 90.0, 75.0, 85.0, 60.0, 95.0, 80.0]
    ratio, low, high = R.variance_ratio_ci(a, b)
    assert ratio == pytest.approx(np.var(a, ddof=1) / np.var(b, ddof=1), rel=1e-12)
    assert 0 < low < ratio < high
    # the bounds are where the permutation test of "var(a)/var(b) = r" crosses 5%
    assert R.permutation_variance_test(a, b, low) >= 0.05 > R.permutation_variance_test(a, b, low * 0.999)
    assert R.permutation_variance_test(a, b, high) >= 0.05 > R.permutation_variance_test(a, b, high * 1.001)
    # ... which is the enumeration's test on a's values rescaled to make the ratio r
    r = (low + ratio) / 2
    scaled = [np.median(a) + (x - np.median(a)) / math.sqrt(r) for x in a]
    assert R.permutation_variance_test(a, b, r) == pytest.approx(perm_p_enumerated(scaled, b))
    assert high < 1 and R.permutation_variance_test(a, b) < 0.05  # the interval excludes 1: rejected
    loose = R.variance_ratio_ci([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 3.5, 4.5])
    assert loose[1] < 1 < loose[2] and R.permutation_variance_test([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 3.5, 4.5]) >= 0.05


# --------------------------------------------------------------------------- one report's family


def test_adjust_holds_each_family_apart():
    tight, loose = [80.0, 80.1, 79.9, 80.05, 79.95, 80.02], [60.0, 100.0, 70.0, 90.0, 75.0, 85.0]
    high, low = [90.0, 91.0, 92.0, 90.5, 91.5], [80.0, 81.0, 82.0, 80.5, 81.5]
    comps = [R.compare(tight, loose), R.compare(high, low), R.compare(low, tight), R.compare([1.0, 2.0], low)]
    raw_welch = [c["welch_p"] for c in comps]
    raw_var = [c["var_p"] for c in comps]
    assert raw_welch[3] is None and raw_var[3] is None  # n < 3: not in the family
    R.adjust(comps)
    assert [c["welch_p_holm"] for c in comps] == holm_reference(raw_welch)
    assert [c["var_p_holm"] for c in comps] == holm_reference(raw_var)
    assert [c["welch_p"] for c in comps] == raw_welch  # the raw ones stay
    assert comps[3]["accuracy_verdict"] == R.NOT_MEANINGFUL
    # low against tight: raw Welch p 0.048 < 0.05, but 3 tests: Holm 3 x 0.048 > 0.05
    assert raw_welch[2] < 0.05 and comps[2]["welch_p_holm"] >= 0.05
    assert comps[2]["accuracy_verdict"].startswith("no significant difference (p=")
    assert comps[1]["accuracy_verdict"] == "better than BN" and comps[0]["stability_verdict"] == "more stable"
