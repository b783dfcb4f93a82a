"""Regenerate the FashionMNIST study's report, plots, claims and doc tables from its committed runs.

    python scripts/study_doc.py            # docs/study-fmnist/runs -> docs/study-fmnist/ and docs/study-fmnist.md

One command, deterministic: `noiseattack report` on the runs (report.md/csv, overview.md/csv, the
PNG and SVG plots), then the study's pre-declared claims (claims.md, claims.csv), the convergence
and cost tables, and the generated regions of the doc (`<!-- NAME:begin -->` ... `<!-- NAME:end -->`
for overview, claims, convergence, cost). Text outside the regions is left as it is. Running it
twice changes nothing; tests/test_study_doc.py checks that the committed tables are what it writes.

The claims are one family: their p-values are adjusted together by Holm–Bonferroni, and a claim
reads "supported" only when its adjusted p is below 0.05 with the estimate in the claimed
direction ("contradicted" when significant the other way, else "not distinguishable"). They were
fixed before the study's results were read; the report's own comparisons against BN are a separate
family (report.md).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from noiseattack import overview
from noiseattack.config import train_config_from_dict
from noiseattack.fileio import atomic_write_text
from noiseattack.report import (ALPHA, ReportError, build_report, contrast, find_experiment_dirs, fmt_p, holm,
                                permutation_variance_test, variance_ratio_ci)
from noiseattack.report.collect import norm_rank
from noiseattack.report.render import replace_region
from noiseattack.results import read_results

ATTACK_FIELDS = ("attack", "alpha", "beta", "extra", "k")
CLEAN, CONSTANT, FAR, NEAR = "clean", "a2_b1", "mnist-inverted_k64", "mnist_k64"
SETTING_NAMES = {CLEAN: "clean", CONSTANT: "constant (2, 1)", FAR: "mix mnist-inverted k=64", NEAR: "mix mnist k=64"}


@dataclass(frozen=True)
class Claim:
    """One pre-declared test. kind "mean": the contrast sum(w * mean(cell)) of `cells` (setting, norm)
    with `weights`; kind "var": var(first cell) / var(second cell), by the permutation test.
    `direction` +1 / -1: the claim is that the estimate is above / below 0 (a ratio above / below 1);
    0: that it differs."""

    id: str
    question: str
    claim: str
    kind: str
    cells: tuple[tuple[str, str], ...]
    weights: tuple[float, ...] = ()
    direction: int = 1


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


def load(runs: Path) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], list[dict[str, Any]]]:
    """The finished runs per (setting, norm), sorted by seed, and every run record (diverged too).
    Every run must share one model and training (the identity less the attack's fields)."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    records, models = [], set()
    for d in find_experiment_dirs([runs]):
        for r in read_results(d):
            cfg = train_config_from_dict(r["config"])
            models.add(repr(sorted((k, v) for k, v in cfg.identity().items() if k not in ATTACK_FIELDS)))
            records.append(r)
            if r["status"] == "finished":
                cells[(cfg.setting_label(), r["norm"])].append(r)
    if len(models) > 1:
        raise ReportError(f"{runs}: its runs differ in more than the attack ({len(models)} trainings): "
                          "a study's runs dir holds one")
    for rs in cells.values():
        rs.sort(key=lambda r: r["seed"])
    return cells, records


def _reading(p: float | None, est: float, direction: int, null: float) -> str:
    if p is None:
        return "not testable"
    if p >= ALPHA:
        return "not distinguishable"
    if direction == 0:
        return "supported (differs)"
    return "supported" if (est - null) * direction > 0 else "contradicted"


def evaluate(cells: dict[tuple[str, str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every claim's estimate, 95% interval, n per cell, p, Holm-adjusted p (the claims are one
    family) and reading."""
    rows = []
    for c in CLAIMS:
        accs = [[r["final_acc"] for r in cells.get(cell, [])] for cell in c.cells]
        row: dict[str, Any] = {"id": c.id, "question": c.question, "claim": c.claim, "kind": c.kind,
                               "n": "/".join(str(len(a)) for a in accs), "estimate": None, "ci_low": None,
                               "ci_high": None, "p": None}
        if min(map(len, accs)) >= 3:
            if c.kind == "mean":
                res = contrast(accs, c.weights)
                row.update(estimate=res["estimate"], ci_low=res["ci_low"], ci_high=res["ci_high"], p=res["p"])
            else:
                ratio = variance_ratio_ci(accs[0], accs[1])
                row["p"] = permutation_variance_test(accs[0], accs[1])
                if ratio is not None:
                    row.update(estimate=ratio[0], ci_low=ratio[1], ci_high=ratio[2])
        rows.append(row)
    for c, row, q in zip(CLAIMS, rows, holm([r["p"] for r in rows])):
        row["p_holm"] = q
        row["reading"] = ("not testable (n < 3)" if row["estimate"] is None else
                          _reading(q, row["estimate"], c.direction, 1.0 if c.kind == "var" else 0.0))
    return rows


def _num(v: float | None, kind: str) -> str:
    if v is None:
        return "∞" if kind == "var" else "—"
    return f"{v:.3g}" if kind == "var" else f"{v:+.2f}"


def _p(p: float | None) -> str:
    return "—" if p is None else fmt_p(p)


def claims_markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| id | claim | n | estimate [95% CI] | p | Holm p | reading |", "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        est = "—" if r["estimate"] is None else (
            f"{_num(r['estimate'], r['kind'])} [{_num(r['ci_low'], r['kind'])}, {_num(r['ci_high'], r['kind'])}]")
        if r["kind"] == "var" and r["estimate"] is not None:
            est = "ratio " + est
        out.append(f"| {r['id']} | {r['claim']} | {r['n']} | {est} | {_p(r['p'])} | {_p(r['p_holm'])} | "
                   f"**{r['reading']}** |")
    return "\n".join(out)


def source_check(cells: dict[tuple[str, str], list[dict[str, Any]]], norm: str = "gn") -> str:
    """How many seeds of `norm` (no batch statistics) end equal under the two mix sources."""
    far, near = ({r["seed"]: r["final_acc"] for r in cells.get((s, norm), [])} for s in (FAR, NEAR))
    seeds = sorted(set(far) & set(near))
    same = sum(far[s] == near[s] for s in seeds)
    return (f"Check: {norm}'s final accuracy under mix mnist-inverted equals that under mix mnist for "
            f"{same} of {len(seeds)} seeds.")


def claims_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    fields = ["id", "question", "claim", "kind", "n", "estimate", "ci_low", "ci_high", "p", "p_holm", "reading"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in fields})
    return buf.getvalue()


def convergence_markdown(cells: dict[tuple[str, str], list[dict[str, Any]]], setting: str = CLEAN) -> str:
    """Mean test accuracy per epoch over the seeds, per norm, in `setting`; and the final train accuracy."""
    norms = sorted({n for s, n in cells if s == setting}, key=norm_rank)
    epochs = max(len(r["history"]) for n in norms for r in cells[(setting, n)])
    head = ["norm", "n", *(f"ep {e}" for e in range(1, epochs + 1)), "train (last)"]
    out = ["| " + " | ".join(head) + " |", "|---|" + "|".join("---:" for _ in head[1:]) + "|"]
    for n in norms:
        hist = [r["history"] for r in cells[(setting, n)]]
        test = [np.mean([h[e]["test_acc"] for h in hist]) for e in range(epochs)]
        train = np.mean([h[-1]["train_acc"] for h in hist])
        out.append("| " + " | ".join([n, str(len(hist)), *(f"{t:.1f}" for t in test), f"{train:.1f}"]) + " |")
    lrs = [h["lr"] for h in next(iter(cells[(setting, norms[0])]))["history"]]
    out += ["", "lr per epoch: " + ", ".join(f"{lr:g}" for lr in lrs) + "."]
    return "\n".join(out)


def longer_markdown(cells: dict[tuple[str, str], list[dict[str, Any]]],
                    longer: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
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
        out.append(f"| {n} | {cell[0]} | {cell[1]} | {diff} | {_p(None if res is None else res['p'])} |")
    return "\n".join(out)


def cost_markdown(records: list[dict[str, Any]]) -> str:
    """Runs, diverged runs, threads, wall time per run (= CPU time at one thread) per norm and in all."""
    by_norm: dict[str, list[float]] = defaultdict(list)
    for r in records:
        by_norm[r["norm"]].append(r["wall_time_s"])
    threads = sorted({r["machine"]["threads"] for r in records})
    total = sum(sum(v) for v in by_norm.values())
    diverged = sum(r["status"] == "diverged" for r in records)
    torch = sorted({r["versions"]["torch"] for r in records})
    out = [f"{len(records)} runs ({diverged} diverged), torch {', '.join(torch)}, "
           f"{' and '.join(map(str, threads))} thread(s) per run: **{total / 3600:.2f} CPU-hours** of training "
           "(the sum of the runs' wall times; one thread each).", "",
           "| norm | runs | mean wall time per run (s) |", "|---|---:|---:|"]
    for n in sorted(by_norm, key=norm_rank):
        out.append(f"| {n} | {len(by_norm[n])} | {np.mean(by_norm[n]):.0f} |")
    return "\n".join(out)


REGIONS = ("overview", "claims", "convergence", "longer", "cost")


def _fail(message: str) -> int:
    print(f"study_doc: error: {message}", file=sys.stderr)
    return 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("docs/study-fmnist/runs"))
    ap.add_argument("--longer", type=Path, default=Path("docs/study-fmnist/runs-convergence"),
                    help="the convergence check's runs (scripts/grid_fmnist_convergence.toml)")
    ap.add_argument("--out", type=Path, default=Path("docs/study-fmnist"))
    ap.add_argument("--doc", type=Path, default=Path("docs/study-fmnist.md"))
    args = ap.parse_args()
    try:  # every check before anything is written
        text = args.doc.read_text()
        for name in REGIONS:
            replace_region(text, name, "")
        report = build_report([args.runs], args.out)
    except OSError as e:
        return _fail(f"cannot read {e.filename or args.doc}: {e.strerror}")
    except ValueError as e:
        return _fail(f"{args.doc}: {e}")
    except ReportError as e:
        return _fail(str(e))
    try:
        cells, records = load(args.runs)
        longer, longer_records = load(args.longer) if args.longer.is_dir() else ({}, [])
    except ReportError as e:
        return _fail(str(e))
    rows = evaluate(cells)
    atomic_write_text(args.out / "claims.md", "# Claims\n\n" + claims_markdown(rows) + "\n")
    atomic_write_text(args.out / "claims.csv", claims_csv(rows))
    bodies = {"overview": overview.doc_body(overview.to_markdown(report.overview, report.alpha)),
              "claims": claims_markdown(rows) + "\n\n" + source_check(cells), "convergence": convergence_markdown(cells), "longer": longer_markdown(cells, longer),
              "cost": cost_markdown(records + longer_records)}
    for name in REGIONS:
        text = replace_region(text, name, bodies[name])
    atomic_write_text(args.doc, text)
    print(f"wrote {args.out}/ (report, overview, claims, plots) and the tables in {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
