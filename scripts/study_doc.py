"""Regenerate the FashionMNIST study's report, plots, claims and doc tables from its committed runs.

    python scripts/study_doc.py            # docs/study-fmnist/runs -> docs/study-fmnist/ and docs/study-fmnist.md

One command, deterministic: `noiseattack report` on the runs (report.md/csv, overview.md/csv, the
PNG and SVG plots), then the study's pre-declared claims (claims.md, claims.csv), the convergence
and cost tables, and the generated regions of the doc (`<!-- NAME:begin -->` ... `<!-- NAME:end -->`
for overview, claims, convergence, cost). Text outside the regions is left as it is. Running it
twice changes nothing; tests/test_study_doc.py checks that the committed tables are what it writes.
The pipeline is `noiseattack.report.study`'s; this file declares the study (`STUDY`).

The claims are one family: their p-values are adjusted together by Holm–Bonferroni, and a claim
reads "supported" only when its adjusted p is below 0.05 with the estimate in the claimed
direction ("contradicted" when significant the other way, else "not distinguishable"). They were
fixed before the study's results were read; the report's own comparisons against BN are a separate
family (report.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's package, whichever one is installed

from noiseattack.config import ATTACK_FIELDS  # noqa: E402
from noiseattack.report import contrast, fmt_p, overview  # noqa: E402
from noiseattack.report.claims import (Cells, Claim, build_study_report, claims_markdown, cost_markdown, evaluate,  # noqa: E402
                                       load_cells, write_claims)
from noiseattack.report.collect import norm_rank  # noqa: E402
from noiseattack.report.study import Study, epoch_table, epochs_of, run_study  # noqa: E402

CLEAN, CONSTANT, FAR, NEAR = "clean", "a2_b1", "mnist-inverted_k64", "mnist_k64"
SETTING_NAMES = {CLEAN: "clean", CONSTANT: "constant (2, 1)", FAR: "mix mnist-inverted k=64", NEAR: "mix mnist k=64"}


CLAIMS = (
    Claim("a1", "a", "Under constant (2, 1) BN's accuracy varies more than BN+SE's", "var",
          ((CONSTANT, "bn"), (CONSTANT, "bnse"))),
    Claim("a2", "a", "Under constant (2, 1) BN's accuracy varies more than IEBN's", "var",
          ((CONSTANT, "bn"), (CONSTANT, "iebn"))),
    Claim("b1", "b", "IEBN loses less than BN to the far source (mnist-inverted, k=64)", "mean",
          ((FAR, "iebn"), (CLEAN, "iebn"), (FAR, "bn"), (CLEAN, "bn")), (1, -1, -1, 1)),
    Claim("b2", "b", "IEBN loses less than BN to MNIST (k=64)", "mean",
          ((NEAR, "iebn"), (CLEAN, "iebn"), (NEAR, "bn"), (CLEAN, "bn")), (1, -1, -1, 1)),
    Claim("b3", "b", "The far source hurts BN (mix mnist-inverted below clean)", "mean",
          ((FAR, "bn"), (CLEAN, "bn")), (1, -1), -1),
    Claim("b4", "b", "MNIST hurts BN (mix mnist below clean)", "mean", ((NEAR, "bn"), (CLEAN, "bn")), (1, -1), -1),
    Claim("b5", "b", "The far source hurts BN more than MNIST", "mean", ((FAR, "bn"), (NEAR, "bn")), (1, -1), -1),
    Claim("c1", "c", "A damped start alone makes BN robust: bn-damped above bn under constant (2, 1)", "mean",
          ((CONSTANT, "bn-damped"), (CONSTANT, "bn")), (1, -1)),
    Claim("c2", "c", "IEBN needs its damped start: iebn-b0 below iebn under constant (2, 1)", "mean",
          ((CONSTANT, "iebn-b0"), (CONSTANT, "iebn")), (1, -1), -1),
    Claim("c3", "c", "IEBN does more than a damped BN: iebn above bn-damped under constant (2, 1)", "mean",
          ((CONSTANT, "iebn"), (CONSTANT, "bn-damped")), (1, -1)),
    Claim("c4", "c", "The damped start changes clean accuracy: bn-damped vs bn, clean", "mean",
          ((CLEAN, "bn-damped"), (CLEAN, "bn")), (1, -1), 0),
    Claim("c5", "c", "The gate's start changes clean accuracy: iebn-b0 vs iebn, clean", "mean",
          ((CLEAN, "iebn-b0"), (CLEAN, "iebn")), (1, -1), 0),
)


def load_runs(runs: Path) -> tuple[Cells, list[dict[str, Any]]]:
    """The finished runs per (setting, norm), and every run record: one training, varied by the attack only."""
    return load_cells(runs, lambda cfg: cfg.setting_label(), ATTACK_FIELDS)


def source_check(cells: Cells, norm: str = "gn") -> str:
    """How many seeds of `norm` (no batch statistics) end equal under the two mix sources."""
    far, near = ({r["seed"]: r["final_acc"] for r in cells.get((s, norm), [])} for s in (FAR, NEAR))
    seeds = sorted(set(far) & set(near))
    same = sum(far[s] == near[s] for s in seeds)
    return (f"Check: {norm}'s final accuracy under mix mnist-inverted equals that under mix mnist for "
            f"{same} of {len(seeds)} seeds.")


def convergence_markdown(cells: Cells, setting: str = CLEAN) -> str:
    """Mean test accuracy per epoch over the seeds, per norm, in `setting`; and the final train accuracy."""
    norms = sorted({n for s, n in cells if s == setting}, key=norm_rank)
    epochs = epochs_of({k: v for k, v in cells.items() if k[0] == setting})
    table = epoch_table([([n], cells[(setting, n)]) for n in norms], [("norm", "---")], epochs,
                        range(1, epochs + 1), lambda test, train: f"{test:.1f}",
                        ("train (last)", lambda test, train: f"{train[-1]:.1f}"))
    lrs = [h["lr"] for h in next(iter(cells[(setting, norms[0])]))["history"]]
    return table + "\n\nlr per epoch: " + ", ".join(f"{lr:g}" for lr in lrs) + "."


def longer_markdown(cells: Cells,
                    longer: Cells) -> str:
    """Clean final accuracy after the study's epochs and after the convergence check's, per norm,
    and the difference with its Welch 95% interval."""
    if not longer:
        return "The convergence check has not run (no results in its runs dir)."
    e_short, e_long = (max(len(r["history"]) for rs in d.values() for r in rs) for d in (cells, longer))
    out = [f"| norm | {e_short} epochs | {e_long} epochs | difference [95% CI] | p |", "|---|---:|---:|---:|---:|"]
    for n in sorted({n for s, n in longer if s == CLEAN}, key=norm_rank):
        a, b = ([r["final_acc"] for r in d.get((CLEAN, n), [])] for d in (longer, cells))
        cell = [f"{np.mean(x):.2f} ± {np.std(x, ddof=1):.2f} ({len(x)})" if len(x) > 1 else "—" for x in (b, a)]
        res = contrast([a, b], (1, -1)) if min(len(a), len(b)) >= 2 else None
        diff = "—" if res is None or res["p"] is None else (
            f"{res['estimate']:+.2f} [{res['ci_low']:+.2f}, {res['ci_high']:+.2f}]")
        out.append(f"| {n} | {cell[0]} | {cell[1]} | {diff} | {'—' if res is None or res['p'] is None else fmt_p(res['p'])} |")
    return "\n".join(out)


REGIONS = ("overview", "claims", "convergence", "longer", "cost")


def load(args) -> dict[str, Any]:
    """Everything the doc needs, read and checked; nothing written."""
    cells, records = load_runs(args.runs)
    ran_longer = any(args.longer.rglob("results.jsonl")) if args.longer.is_dir() else False
    longer, longer_records = load_runs(args.longer) if ran_longer else ({}, [])
    return {"report": build_study_report(args.runs, None), "cells": cells, "records": records, "longer": longer,
            "longer_records": longer_records}


def write(args, s: dict[str, Any]) -> dict[str, str]:
    """The report, overview, plots and claims into args.out; the regions' bodies."""
    report, cells = s["report"], s["cells"]
    rows = evaluate(CLAIMS, cells)
    report.write(args.out)
    report.prune(args.out)
    write_claims(args.out, rows)
    return {"overview": overview.doc_body(overview.to_markdown(report.overview, report.alpha)),
            "claims": claims_markdown(rows) + "\n\n" + source_check(cells),
            "convergence": convergence_markdown(cells), "longer": longer_markdown(cells, s["longer"]),
            "cost": cost_markdown(s["records"] + s["longer_records"])}


STUDY = Study(
    prog="study_doc", description=__doc__.splitlines()[0], doc=Path("docs/study-fmnist.md"), regions=REGIONS,
    paths={"runs": (Path("docs/study-fmnist/runs"), ""),
           "longer": (Path("docs/study-fmnist/runs-convergence"),
                      "the convergence check's runs (scripts/grid_fmnist_convergence.toml)"),
           "out": (Path("docs/study-fmnist"), "")},
    load=load, write=write, done="wrote {out}/ (report, overview, claims, plots) and the tables in {doc}")


if __name__ == "__main__":
    sys.exit(run_study(STUDY))
