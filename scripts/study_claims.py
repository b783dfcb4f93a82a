"""The IEBN paper's two robustness claims, tested on a study's results (markdown to stdout).

    python scripts/study_claims.py runs/study-fmnist

(a) "Under the constant attack BN's accuracy varies much more than SE's or IEBN's":
    per constant setting, the std of final accuracy over seeds per norm, BN's variance over the
    other norm's, the Brown-Forsythe test of equal variance (robust, but weak at small n) and the
    F-test (assumes normality).
(b) "IEBN holds up better than BN under the mixed attack": per mix setting, IEBN's mean minus
    BN's (Welch's t-test), and the difference of the two norms' drops from their clean accuracy,
    (IEBN_mix - IEBN_clean) - (BN_mix - BN_clean), with a Welch-Satterthwaite 95% interval.
Only finished runs count; diverged runs are listed apart.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from noiseattack.config import train_config_from_dict  # noqa: E402
from noiseattack.report import find_experiment_dirs, fmt_p, variance_test, welch_test  # noqa: E402
from noiseattack.results import read_results  # noqa: E402


def load(runs_dir: str) -> tuple[dict[tuple[str, str], list[float]], list[str]]:
    accs: dict[tuple[str, str], list[float]] = defaultdict(list)
    diverged = []
    for d in find_experiment_dirs([runs_dir]):
        for r in read_results(d):
            setting = train_config_from_dict(r["config"]).setting_label()
            if r["status"] == "finished":
                accs[(setting, r["norm"])].append(r["final_acc"])
            else:
                diverged.append(f"{setting} {r['norm']} seed {r['seed']}")
    return accs, diverged


def f_test(a, b) -> float:
    """Two-sided p of the F-test of equal variances (assumes normal data; more power than
    Brown-Forsythe at n = 3, where one of the three deviations from the median is always 0)."""
    f = np.var(a, ddof=1) / np.var(b, ddof=1)
    cdf = stats.f.cdf(f, len(a) - 1, len(b) - 1)
    return float(2 * min(cdf, 1 - cdf))


def difference_of_drops(mix_a, clean_a, mix_b, clean_b):
    """(estimate, low, high) of (mean(mix_a) - mean(clean_a)) - (mean(mix_b) - mean(clean_b)), 95%."""
    groups = [np.asarray(g, float) for g in (mix_a, clean_a, mix_b, clean_b)]
    est = (groups[0].mean() - groups[1].mean()) - (groups[2].mean() - groups[3].mean())
    parts = [g.var(ddof=1) / len(g) for g in groups]
    se = math.sqrt(sum(parts))
    df = sum(parts) ** 2 / sum(p ** 2 / (len(g) - 1) for p, g in zip(parts, groups))
    half = stats.t.ppf(0.975, df) * se
    return est, est - half, est + half


def main() -> None:
    runs_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/study-fmnist"
    accs, diverged = load(runs_dir)
    settings = sorted({s for s, _ in accs})
    norms = ["bn", "in", "bnse", "iebn"]

    print("### (a) Stability under the constant attack\n")
    print("| setting | norm | n | mean | std | var(BN) / var(norm) | Brown–Forsythe p vs BN | F-test p vs BN |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for s in ["clean"] + [s for s in settings if s.startswith("a")]:
        bn = accs.get((s, "bn"), [])
        for norm in norms:
            x = accs.get((s, norm), [])
            if not x:
                continue
            std = np.std(x, ddof=1) if len(x) > 1 else math.nan
            ratio = np.var(bn, ddof=1) / np.var(x, ddof=1) if norm != "bn" and len(x) > 1 and len(bn) > 1 else math.nan
            p = fmt_p(variance_test(x, bn)[1]) if norm != "bn" and len(x) >= 3 and len(bn) >= 3 else "—"
            f = fmt_p(f_test(bn, x)) if norm != "bn" and len(x) >= 3 and len(bn) >= 3 else "—"
            print(f"| {s} | {norm} | {len(x)} | {np.mean(x):.2f} | {std:.2f} | "
                  f"{'—' if math.isnan(ratio) else f'{ratio:.2f}'} | {p} | {f} |")

    print("\n### (b) IEBN against BN under the mixed attack\n")
    print("| setting | BN mean | IEBN mean | IEBN − BN | Welch p | BN drop from clean | IEBN drop from clean "
          "| IEBN drop − BN drop [95% CI] |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for s in [s for s in settings if "_k" in s]:
        bn, ie = accs.get((s, "bn"), []), accs.get((s, "iebn"), [])
        bn0, ie0 = accs.get(("clean", "bn"), []), accs.get(("clean", "iebn"), [])
        if min(len(bn), len(ie), len(bn0), len(ie0)) < 2:
            continue
        est, lo, hi = difference_of_drops(ie, ie0, bn, bn0)
        print(f"| {s} | {np.mean(bn):.2f} | {np.mean(ie):.2f} | {np.mean(ie) - np.mean(bn):+.2f} | "
              f"{fmt_p(welch_test(ie, bn)[1])} | {np.mean(bn) - np.mean(bn0):+.2f} | {np.mean(ie) - np.mean(ie0):+.2f} | "
              f"{est:+.2f} [{lo:+.2f}, {hi:+.2f}] |")
    print(f"\nDiverged runs: {', '.join(diverged) if diverged else 'none'}.")


if __name__ == "__main__":
    main()
