"""Pre-declared claims of a study, tested as one family.

A study fixes its claims before it reads its results: each is a linear contrast of cell means
(`kind="mean"`, e.g. "IEBN loses less than BN": (iebn@attack − iebn@clean) − (bn@attack − bn@clean)),
or a ratio of two cells' variances (`kind="var"`), where a cell is (label, norm) and the label
names the condition (an attack setting, a width, ...). `evaluate` gives every claim its estimate,
95% interval and p (the Welch–Satterthwaite contrast of `stats.contrast`, or the permutation test
and interval of `stats.permutation_variance_test` / `variance_ratio_ci`), adjusts the p-values
together by Holm–Bonferroni, and reads each claim:

- "supported": adjusted p below 0.05 and the estimate on the claimed side (`direction` +1: above
  0, or above 1 for a ratio; −1: below); "supported (differs)" for `direction` 0, a claim only
  that it differs;
- "contradicted": significant on the other side;
- "not distinguishable": adjusted p at or above 0.05 (no evidence either way, not evidence of
  no effect: the interval says how large an effect the data leave possible);
- "not testable (n < 3)": a cell with fewer than three finished runs; "not testable (no
  variance)": every value the same, so no test is defined;
- "not informative (every cell at chance)": more than half of every cell's runs at chance
  (`noiseattack.chance`): whatever p says, the runs measure nothing learned. Where only some cells sit
  at chance, the reading says how many.

Holm's family is every declared claim: an untestable one counts as p = 1, so a study's adjusted
p-values never fall as its later cells fill in.

The measured value of a run is its final test accuracy (`metric="final_acc"`) or its
generalization gap, the last epoch's training accuracy minus the final test accuracy
(`metric="gap"`). Used by scripts/study_doc.py and scripts/capacity_doc.py; a study of one's own
declares its `Claim`s, loads its cells with `load_cells` and renders with `claims_markdown` /
`claims_csv`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import chance
from ..config import TrainConfig, train_config_from_dict
from ..fileio import atomic_write_text
from ..results import cpu_seconds, read_results, run_cost_s
from . import build_report  # the package is initialized first, and it does not import this module
from .collect import ReportError, find_experiment_dirs, norm_rank
from .stats import (ALPHA, MIN_N, NOT_INFORMATIVE_STABILITY, contrast, fmt_p, holm, permutation_variance_test,
                    variance_ratio_ci)

Cells = dict[tuple[str, str], list[dict[str, Any]]]  # (label, norm) -> finished run records, by seed
METRICS = ("final_acc", "gap")
NOT_INFORMATIVE_CELLS = "not informative (every cell at chance)"
# a variance claim whose cell with the lower variance is mostly at chance: a collapse, not stability
COLLAPSED_LOWER = NOT_INFORMATIVE_STABILITY + " (the lower variance is a collapse to chance)"


@dataclass(frozen=True)
class Claim:
    """One pre-declared test. kind "mean": the contrast sum(w * mean(cell)) of `cells` (label, norm)
    with `weights`; kind "var": var(first cell) / var(second cell), by the permutation test.
    `direction` +1 / -1: the claim is that the estimate is above / below 0 (a ratio above / below 1);
    0: that it differs. `metric`: "final_acc" or "gap" (train − test, last epoch)."""

    id: str
    question: str
    claim: str
    kind: str
    cells: tuple[tuple[str, str], ...]
    weights: tuple[float, ...] = ()
    direction: int = 1
    metric: str = "final_acc"

    def __post_init__(self) -> None:
        if self.kind not in ("mean", "var") or self.metric not in METRICS or self.direction not in (-1, 0, 1):
            raise ValueError(f"claim {self.id}: kind, metric or direction out of range")
        if (self.kind == "var" and len(self.cells) != 2) or (self.kind == "mean" and len(self.weights) != len(self.cells)):
            raise ValueError(f"claim {self.id}: {len(self.cells)} cells for {len(self.weights)} weights ({self.kind})")


def value(record: dict[str, Any], metric: str) -> float:
    """A run's measured value: its final test accuracy, or the last epoch's training accuracy minus it."""
    if metric == "final_acc":
        return float(record["final_acc"])
    hist = record.get("history") or []
    train = hist[-1].get("train_acc") if hist else None
    return float(train) - float(record["final_acc"]) if isinstance(train, (int, float)) else math.nan


def load_cells(runs: str | Path, label: Callable[[TrainConfig], str],
               varying: Sequence[str]) -> tuple[Cells, list[dict[str, Any]]]:
    """The finished runs under `runs` per (label(config), norm), sorted by seed, and every run record
    (diverged ones too). The runs may differ only in the identity fields `varying` (the conditions
    the labels name): anything else, and the study would pool different trainings."""
    cells: Cells = defaultdict(list)
    records, trainings = [], set()
    for d in find_experiment_dirs([runs]):
        for r in read_results(d):
            cfg = train_config_from_dict(r["config"])
            trainings.add(repr(sorted((k, v) for k, v in cfg.identity().items() if k not in varying)))
            records.append(r)
            if r["status"] == "finished":
                cells[(label(cfg), r["norm"])].append(r)
    if len(trainings) > 1:
        raise ReportError(f"{runs}: its runs differ in more than {', '.join(varying)} ({len(trainings)} trainings): "
                          "a study's runs dir holds one")
    for rs in cells.values():
        rs.sort(key=lambda r: r["seed"])
    return cells, records


def _reading(p: float, est: float, direction: int, null: float) -> str:
    if p >= ALPHA:
        return "not distinguishable"
    if direction == 0:
        return "supported (differs)"
    return "supported" if (est - null) * direction > 0 else "contradicted"


def _test(c: Claim, vals: list[list[float]]) -> dict[str, Any]:
    """A claim's estimate, interval and p on its cells' values; `why` names what made it untestable."""
    out: dict[str, Any] = {"estimate": None, "ci_low": None, "ci_high": None, "p": None, "why": None}
    if min(map(len, vals)) < MIN_N:
        return {**out, "why": f"n < {MIN_N}"}
    if c.kind == "mean":
        res = contrast(vals, c.weights)
        out.update(estimate=res["estimate"], ci_low=res["ci_low"], ci_high=res["ci_high"], p=res["p"])
    else:
        out["p"] = permutation_variance_test(vals[0], vals[1])
        ratio = variance_ratio_ci(vals[0], vals[1])
        if ratio is not None:
            out.update(estimate=ratio[0], ci_low=ratio[1], ci_high=ratio[2])
        else:  # a constant cell: the ratio is 0 or infinite, its interval undefined
            va, vb = (float(np.var(v, ddof=1)) for v in vals)
            out["estimate"] = va / vb if vb > 0 else (math.inf if va > 0 else None)
    if out["p"] is None:
        out["why"] = "no variance"
    return out


def evaluate(claims: Sequence[Claim], cells: Cells) -> list[dict[str, Any]]:
    """Every claim's estimate, 95% interval, n per cell, p, Holm-adjusted p and reading. The family
    is every declared claim: an untestable one (too few runs, no variance) counts in Holm's m as
    p = 1, so that the adjusted p-values do not fall as a study's later cells fill."""
    rows = []
    for c in claims:
        vals = [[value(r, c.metric) for r in cells.get(cell, [])] for cell in c.cells]
        vals = [[v for v in vs if math.isfinite(v)] for vs in vals]
        rows.append({"id": c.id, "question": c.question, "claim": c.claim, "kind": c.kind, "metric": c.metric,
                     "n": "/".join(str(len(v)) for v in vals), **_test(c, vals)})
    adjusted = holm([1.0 if r["p"] is None else r["p"] for r in rows])
    for c, row, q in zip(claims, rows, adjusted):
        why = row.pop("why")
        row["p_holm"] = None if why else q
        row["reading"] = (f"not testable ({why})" if why else
                          _reading(q, row["estimate"], c.direction, 1.0 if c.kind == "var" else 0.0))
        at_chance = [chance.mostly(cells.get(cell, [])) for cell in c.cells]
        if all(at_chance) and not why:
            row["reading"] = NOT_INFORMATIVE_CELLS
        elif any(at_chance) and not why:
            if c.kind == "var" and q < ALPHA and at_chance[_lower_variance(vals)]:
                row["reading"] = COLLAPSED_LOWER
            row["reading"] += f" ({sum(at_chance)} of {len(c.cells)} cells at chance)"
    return rows


def _lower_variance(vals: list[list[float]]) -> int:
    """Which of a variance claim's two cells has the smaller sample variance."""
    return int(np.var(vals[1], ddof=1) < np.var(vals[0], ddof=1))


def _num(v: float | None, kind: str) -> str:
    if v is None or math.isinf(v):
        return "∞" if kind == "var" else "—"
    return f"{v:.3g}" if kind == "var" else f"{v:+.2f}"


def _p(p: float | None) -> str:
    return "—" if p is None else fmt_p(p)


def claims_markdown(rows: Sequence[dict[str, Any]]) -> str:
    out = ["| id | claim | n | estimate [95% CI] | p | Holm p | reading |", "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        est = "—" if r["estimate"] is None else _num(r["estimate"], r["kind"]) + (
            "" if r["ci_low"] is None else f" [{_num(r['ci_low'], r['kind'])}, {_num(r['ci_high'], r['kind'])}]")
        if r["kind"] == "var" and r["estimate"] is not None:
            est = "ratio " + est
        out.append(f"| {r['id']} | {r['claim']} | {r['n']} | {est} | {_p(r['p'])} | {_p(r['p_holm'])} | "
                   f"**{r['reading']}** |")
    return "\n".join(out)


CSV_FIELDS = ("id", "question", "claim", "kind", "metric", "n", "estimate", "ci_low", "ci_high", "p", "p_holm",
              "reading")


def claims_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                    for k in CSV_FIELDS})
    return buf.getvalue()


def _layer_lines(src: Path, norms: set[str]) -> bytes:
    """The lines of a results.jsonl whose record is a run of one of `norms`, b"" where there is none; a
    line that is not a record (torn, not JSON) is kept beside them, for `build_report` to warn about as
    it does without a filter."""
    kept, matched = [], False
    for raw in src.read_bytes().splitlines(keepends=True):
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            kept.append(raw if raw.strip() else b"")
            continue
        if not isinstance(rec, dict) or rec.get("norm") in norms:
            kept.append(raw)
            matched = matched or isinstance(rec, dict)
    return b"".join(kept) if matched else b""


def build_study_report(runs: str | Path | Sequence[str | Path], out_dir: str | Path,
                       norms: str | Sequence[str] | None = None):
    """`build_report` on the run records alone: a copy of every results.jsonl and config.json under
    `runs` (a dir, or several), without the checkpoints, locks and logs of runs in progress on this
    machine, so that a study's report is a function of its committed results. With `norms` (a name
    or several), only those layers' records: a study of some of a leaderboard's layers (an
    experiment dir without any of them is left out)."""
    dirs = [Path(runs)] if isinstance(runs, (str, Path)) else [Path(d) for d in runs]
    wanted = None if norms is None else {norms} if isinstance(norms, str) else set(norms)
    with tempfile.TemporaryDirectory() as tmp:
        copies = []
        for i, d in enumerate(dirs):
            copy = Path(tmp) / str(i) / d.name
            for src in sorted(d.rglob("results.jsonl")):
                kept = src.read_bytes() if wanted is None else _layer_lines(src, wanted)
                if wanted is not None and not kept:
                    continue
                dst = copy / src.relative_to(d)
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(kept)
                if (src.parent / "config.json").is_file():
                    shutil.copyfile(src.parent / "config.json", dst.parent / "config.json")
            if copy.is_dir():
                copies.append(copy)
            elif wanted is None:
                copies.append(d)  # nothing to copy: build_report says what is wrong with the dir
        if not copies:
            raise ReportError(f"no runs of {', '.join(sorted(wanted)) or 'any layer'} in "
                              + ", ".join(f"'{d}'" for d in dirs))
        return build_report(copies, out_dir)


def write_claims(out_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    """claims.md and claims.csv in `out_dir`."""
    atomic_write_text(Path(out_dir) / "claims.md", "# Claims\n\n" + claims_markdown(rows) + "\n")
    atomic_write_text(Path(out_dir) / "claims.csv", claims_csv(rows))


def _cpu_timed(records: Sequence[dict[str, Any]]) -> bool:
    """Whether any run's cost is a CPU time (`results.cpu_seconds`), not a wall time: the cost texts say so."""
    return any(cpu_seconds(r) is not None for r in records)


def cpu_line(records: Sequence[dict[str, Any]]) -> str:
    """The CPUs the runs trained on, as their records name them (model and torch's capability:
    AVX2, AVX512, ...), with the number of runs on each, and their hours where runs recorded CPU times
    (`results.run_cost_s`); older records do not name the CPU."""
    kinds: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    for r in records:
        m = r.get("machine") or {}
        kind = f"{m['cpu']} ({m.get('cpu_capability', 'capability not recorded')})" if "cpu" in m else "not recorded"
        kinds[kind] += 1
        seconds[kind] += run_cost_s(r) or 0.0
    measured = _cpu_timed(records)
    return "CPU: " + "; ".join(f"{k}: {n} run{'s' if n != 1 else ''}" + (f", {seconds[k] / 3600:.2f} h" if measured else "")
                               for k, n in sorted(kinds.items())) + "."


def cost_markdown(records: Sequence[dict[str, Any]], by: Callable[[dict[str, Any]], str] = lambda r: r["norm"],
                  column: str = "norm") -> str:
    """Runs, diverged runs, threads, and time per run per `by(record)` (the norm unless told) and in all:
    each run's CPU time where it recorded one at one thread (`results.run_cost_s`), else its wall time
    (= CPU time at one thread on a quiet machine); a run that recorded neither is counted, not timed."""
    groups: dict[str, list[float]] = defaultdict(list)
    runs: dict[str, int] = defaultdict(int)
    for r in records:
        runs[by(r)] += 1
        cost = run_cost_s(r)
        if cost is not None:
            groups[by(r)].append(cost)
    measured = _cpu_timed(records)
    threads = sorted({r["machine"]["threads"] for r in records})
    total = sum(sum(v) for v in groups.values())
    diverged = sum(r["status"] == "diverged" for r in records)
    torch = sorted({r["versions"]["torch"] for r in records})
    gpus = sorted({str(r["machine"]["gpu"]) for r in records if r["machine"].get("gpu")})
    what = ("the sum of the runs' CPU times where recorded at one thread, else wall times" if measured
            else "the sum of the runs' wall times")
    hours = (f"**{total / 3600:.2f} run-hours** of training on {', '.join(gpus)} (the sum of the runs' wall times; "
             "runs that shared a GPU overlap in time)" if gpus else
             f"**{total / 3600:.2f} CPU-hours** of training ({what}; one thread each)")
    out = [f"{len(records)} runs ({diverged} diverged), torch {', '.join(torch)}, "
           f"{' and '.join(map(str, threads))} thread(s) per run: {hours}.", "", cpu_line(records), "",
           f"| {column} | runs | mean {'time' if measured and not gpus else 'wall time'} per run (s) |", "|---|---:|---:|"]
    for k in sorted(runs, key=norm_rank if column == "norm" else str):
        out.append(f"| {k} | {runs[k]} | {np.mean(groups[k]):.0f} |" if groups[k] else f"| {k} | {runs[k]} | – |")
    return "\n".join(out)
