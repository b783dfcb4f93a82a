"""`noiseattack report`: statistics over seeds, verdicts against BN, and plots, across experiments.

Every `results.jsonl` under the given dirs is read; runs are grouped by (dataset, model, attack,
setting, norm), where the model includes the width and the training length (train subset,
epochs), so that runs of different length are never pooled. When two experiments of the same
(dataset, model) differ in any other field of their identity (lr, batch size, milestones, test
subset, ...), a `variant` label names the differing fields and keeps them apart as well. The
exception is where attention sits (`attn_placement`): a `NORM+ATTN` layer trained with its attention
once per block or per stage is its own row, `bn+cbam (per block)`, `bn+das (per stage)`, in the
setting's comparison (`collect.placed_norm`). Failed runs (their model raised) are no result and
are left out (`results.read_results`).

Per group, over the finished runs: n, mean, std and variance (n-1), the 95% t-interval of the
mean, min, max; against BN in the same (dataset, model, variant, attack, setting): the
difference of the means with its Welch–Satterthwaite 95% interval and Welch's t-test; the
variance ratio with its 95% interval and a permutation test of equal variances (median-centred,
exact or seeded, see `stats`); the Brown-Forsythe test (`scipy.stats.levene(center="median")`)
as a column. All two-sided; the Welch p-values and the permutation p-values are each adjusted by
Holm–Bonferroni across all the comparisons of the report (`*_holm` columns), and the verdicts
use the adjusted ones at alpha 0.05. With fewer than 3 finished runs (in the row or in BN) no interval, p-value or
verdict is given. Diverged runs (in results.jsonl) and unfinished ones (a checkpoint in `ckpt/`
without a record) are counted in their own columns and listed, never part of the statistics.

Outputs (in the output dir): report.md, report.csv, overview.md and overview.csv (one row per
norm, one column per setting: `noiseattack.overview`), and PNG plots: per attack family a box
plot of final accuracy per norm and setting with the seeds overlaid, and per setting the test
accuracy per epoch (mean +- std over seeds) of each norm.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from . import overview
from ..results import RESULTS_FILE
from .collect import (ATTACK_ORDER, Group, GroupKey, ReportError, collect, excluded_runs, find_experiment_dirs,
                      missing_clean, model_label)
from .plots import DPI, PLOT_FORMATS, Plot, make_plots, safe_filename
from .render import COLUMNS, FORMATS, Report, build_rows, to_csv
from .stats import (ALPHA, MIN_N, NO_REFERENCE, NOT_MEANINGFUL, REFERENCE, adjust, compare, contrast, describe, fmt_p, holm,
                    permutation_variance_test, variance_ratio_ci, variance_test, welch_ci, welch_test)
from .sweeps import find_sweeps, make_sweep_plots

__all__ = ["ALPHA", "ATTACK_ORDER", "COLUMNS", "FORMATS", "MIN_N", "NO_REFERENCE", "NOT_MEANINGFUL", "REFERENCE",
           "Group", "GroupKey", "Plot", "Report", "ReportError", "adjust", "build_report", "build_rows", "contrast",
           "check_out_dir", "collect", "compare", "describe", "find_experiment_dirs", "fmt_p", "holm", "make_plots",
           "model_label", "permutation_variance_test", "safe_filename", "to_csv", "variance_ratio_ci",
           "variance_test", "welch_ci", "welch_test"]


def check_out_dir(path: Path) -> None:
    """`path` is a dir, or can be created as one, and is writable."""
    p = Path(path).absolute()
    if p.exists() and not p.is_dir():
        raise ReportError(f"output dir '{path}' is not a directory")
    while not p.exists():
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise ReportError(f"output dir '{path}' is not writable")


def build_report(
    dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    plots: bool = True,
    alpha: float = ALPHA,
    plot_formats: Sequence[str] = ("png", "svg"),
    dpi: int = DPI,
) -> Report:
    """Read every results.jsonl under `dirs` (recursively), compute the rows and the overview,
    render the plots (each in `plot_formats`: png at `dpi`, svg, pdf), and, when `out_dir` is
    given, write report.md, report.csv, overview.md, overview.csv and the plots there.

    Bad input (a dir that does not exist or holds no results.jsonl, an output dir that cannot be
    written, an unknown plot format, a dpi outside 50..1200) raises ReportError before anything
    is written."""
    bad = [f for f in plot_formats if f not in PLOT_FORMATS]
    if bad or (plots and not plot_formats):
        raise ReportError(f"unknown plot format '{bad[0] if bad else ''}': choose from {', '.join(PLOT_FORMATS)}")
    if not 50 <= dpi <= 1200:
        raise ReportError(f"dpi must be in 50..1200, got {dpi}")
    exp_dirs = find_experiment_dirs(dirs)
    if out_dir is not None:
        check_out_dir(Path(out_dir))
    groups, warn = collect(exp_dirs)
    if not groups:
        raise ReportError("no run records in " + ", ".join(f"'{d}'" for d in dirs)
                          + f" (every {RESULTS_FILE} is empty or unreadable)")
    rows = build_rows(groups, alpha)
    warn += missing_clean(groups)
    formats = tuple(dict.fromkeys(("png", *plot_formats)))  # the markdown shows the PNGs
    sweeps = find_sweeps(groups)
    figures = make_plots(groups, formats, dpi) + make_sweep_plots(sweeps, formats, dpi) if plots else []
    report = Report(rows=rows, sources=list(exp_dirs), excluded=excluded_runs(groups), overview=overview.build(rows, alpha),
                    warnings=warn, plots=figures, alpha=alpha, sweeps=sweeps,
                    titles={g.key.context: g.title for g in groups})
    if out_dir is not None:
        report.write(Path(out_dir))
    return report
