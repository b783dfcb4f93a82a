"""Run records (one JSON line per finished, diverged or failed run) and the per-norm summaries built
from the finished and diverged ones. A failed run (its model raised) is no result: `read_results`
leaves it out, and the run is trained again (`read_failures` lists them)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from . import chance
from .fileio import atomic_write_text, locked, read_jsonl

RESULTS_FILE = "results.jsonl"
# The version of a record's layout, in every record written since (`"schema": 1`); a record without
# it is from before the field existed and has the same layout. Raised when a field changes meaning.
RECORD_SCHEMA = 1
DONE_STATUSES = ("finished", "diverged")  # runs that are over; anything else runs again

SUMMARY_COLUMNS = ("norm", "n", "mean", "std", "var", "min", "max", "diverged", "at_chance")


def _seconds(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 else None


def cpu_seconds(rec: dict[str, Any]) -> float | None:
    """The run's CPU time where it trained on a CPU at one thread and recorded one (`cpu_time_s`): its
    cost without the time it waited for a CPU it shared; None otherwise (a GPU run's CPU time is not
    its cost, and at more threads the CPU time adds theirs up)."""
    m = rec.get("machine") or {}
    return _seconds(rec.get("cpu_time_s")) if m.get("device", "cpu") == "cpu" and m.get("threads") == 1 else None


def run_cost_s(rec: dict[str, Any]) -> float | None:
    """What a run cost, in seconds of one machine slot: `cpu_seconds` where there is one, else its wall
    time; None where it recorded neither."""
    return cpu_seconds(rec) or _seconds(rec.get("wall_time_s"))


def median_cost(records: Iterable[dict[str, Any]]) -> tuple[float, bool] | None:
    """The typical cost of these runs, and whether it is a CPU time: the median of their CPU times
    (`cpu_seconds`) where any recorded one (a wall time also counts the waits for a CPU that other
    processes shared), else of their wall times; None where none recorded either."""
    costs = [(c, cpu_seconds(r) is not None) for r in records if (c := run_cost_s(r)) is not None]
    if not costs:
        return None
    cpu = [c for c, is_cpu in costs if is_cpu]
    return float(np.median(cpu or [c for c, _ in costs])), bool(cpu)


def read_results(exp_dir: Path) -> list[dict[str, Any]]:
    """The records of an experiment dir; for a run recorded twice (it can happen only when two
    processes race on the same run), the first record counts."""
    seen: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(Path(exp_dir) / RESULTS_FILE):
        if "key" in rec and rec.get("status") in DONE_STATUSES:
            seen.setdefault(rec["key"], rec)
    return list(seen.values())


def read_failures(exp_dir: Path) -> list[dict[str, Any]]:
    """The records of runs whose last attempt failed (status "failed": the model raised) and that are
    not done: what re-running the experiment trains again."""
    done = {r["key"] for r in read_results(exp_dir)}
    last: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(Path(exp_dir) / RESULTS_FILE):
        if "key" in rec and rec["key"] not in done:
            last[rec["key"]] = rec
    return [r for r in last.values() if r.get("status") == "failed"]


def summarize(records: Iterable[dict[str, Any]], norms: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Per norm: n finished runs, mean, std (n-1), variance, min, max of final_acc, the number of
    diverged runs (not part of the statistics), and how many of the finished runs are at chance
    (`noiseattack.chance`: in the statistics, and marked)."""
    records = list(records)
    order = list(dict.fromkeys(list(norms or []) + [r["norm"] for r in records]))
    rows = []
    for norm in order:
        finished = [r for r in records if r["norm"] == norm and r["status"] == "finished"]
        accs = np.array([r["final_acc"] for r in finished], float)
        diverged = sum(1 for r in records if r["norm"] == norm and r["status"] == "diverged")
        n = len(accs)
        rows.append({
            "norm": norm,
            "n": n,
            "mean": float(accs.mean()) if n else math.nan,
            "std": float(accs.std(ddof=1)) if n > 1 else math.nan,
            "var": float(accs.var(ddof=1)) if n > 1 else math.nan,
            "min": float(accs.min()) if n else math.nan,
            "max": float(accs.max()) if n else math.nan,
            "diverged": diverged,
            "at_chance": chance.count(finished),
        })
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def summary_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r[k]) for k in SUMMARY_COLUMNS})
    return buf.getvalue()


def summary_markdown(rows: list[dict[str, Any]], title: str = "") -> str:
    head = "| " + " | ".join(SUMMARY_COLUMNS) + " |"
    sep = "|" + "|".join("---" if c == "norm" else "---:" for c in SUMMARY_COLUMNS) + "|"
    body = ["| " + " | ".join(_fmt(r[c]) + (chance.MARK if c == "mean" and r["at_chance"] else "")
                              for c in SUMMARY_COLUMNS) + " |" for r in rows]
    note = [chance.legend("a mean"), ""] if any(r["at_chance"] for r in rows) else []
    lines = ([f"# {title}", ""] if title else []) + [
        "final_acc: test accuracy (%) after the last epoch; std and var over seeds (n-1).", "", head, sep, *body, "",
        *note]
    return "\n".join(lines)


def write_summaries(exp_dir: Path, norms: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Regenerate summary.csv and summary.md from results.jsonl, and TensorBoard's per-norm mean runs
    (tb/<norm>-mean, `tbhparams.write_mean_runs`)."""
    from .tbhparams import write_mean_runs

    exp_dir = Path(exp_dir)
    rows = summarize(read_results(exp_dir), norms)
    atomic_write_text(exp_dir / "summary.csv", summary_csv(rows))
    atomic_write_text(exp_dir / "summary.md", summary_markdown(rows, exp_dir.name))
    write_mean_runs(exp_dir)
    return rows


def write_summaries_locked(exp_dir: Path, norms: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """`write_summaries` under the experiment's summary lock, so that a process with a stale view
    of results.jsonl cannot overwrite the summaries of a newer one (CLI runs and sweeps alike)."""
    exp_dir = Path(exp_dir)
    with locked(exp_dir / ".locks" / "summary"):
        for name in ("summary.csv", "summary.md"):  # left by a process killed while writing them
            for tmp in exp_dir.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
        return write_summaries(exp_dir, norms)
