"""How often the permutation test of equal variances rejects when the variances are equal: its
rejection rate at alpha = 0.05 under the null, by simulation (both samples drawn from one
distribution: normal, Student's t with 3 degrees of freedom, exponential; n runs per side).

    python scripts/variance_null.py                    # print the table
    python scripts/variance_null.py --doc README.md    # and write it into the README's region

With --doc, the table replaces the region between `<!-- variance-null:begin -->` and
`<!-- variance-null:end -->`; the draws come from a fixed seed, so running it again changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from noiseattack.report.stats import ALPHA, permutation_variance_test  # noqa: E402
from noiseattack.report.render import update_region  # noqa: E402

REGION = "variance-null"
SIZES = (5, 6, 7, 8)
DRAWS = 1000
SEED = 0
DISTRIBUTIONS = {"normal": lambda rng, n: rng.normal(size=n),
                 "t₃": lambda rng, n: rng.standard_t(3, size=n),
                 "exponential": lambda rng, n: rng.exponential(size=n)}
# numpy's legacy RandomState: its streams are frozen (NEP 19), so the table is the same on any numpy;
# default_rng's may change between numpy versions.


def rejection_rates(draws: int = DRAWS, seed: int = SEED) -> dict[str, dict[int, float]]:
    """{distribution: {n: share of `draws` pairs of n-run samples whose p <= ALPHA}}."""
    rng = np.random.RandomState(seed)
    out: dict[str, dict[int, float]] = {}
    for name, draw in DISTRIBUTIONS.items():
        out[name] = {}
        for n in SIZES:
            ps = [permutation_variance_test(draw(rng, n), draw(rng, n)) for _ in range(draws)]
            out[name][n] = sum(p is not None and p <= ALPHA for p in ps) / draws
    return out


def table(rates: dict[str, dict[int, float]], draws: int = DRAWS) -> str:
    out = ["| both samples from | " + " | ".join(f"n = {n} per side" for n in SIZES) + " |",
           "|---|" + "---:|" * len(SIZES)]
    out += [f"| {name} | " + " | ".join(f"{r[n]:.3f}" for n in SIZES) + " |" for name, r in rates.items()]
    return "\n".join(out + ["", f"Rejection rate of the permutation test at α = {ALPHA} under the null, {draws} draws "
                                f"per cell (seed {SEED}): `python scripts/variance_null.py --doc README.md`."])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", type=Path, help="a markdown file whose variance-null region is replaced")
    args = ap.parse_args()
    return update_region(args.doc, REGION, lambda: table(rejection_rates()), "variance_null")


if __name__ == "__main__":
    sys.exit(main())
