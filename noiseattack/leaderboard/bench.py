"""`noiseattack bench`: put a layer through a protocol and place it on the protocol's leaderboard.

1. Calibration. This machine trains BN under the protocol's clean setting for a few seeds of its own
   (CALIBRATION_SEEDS, kept apart in the calibration dir; runs already there are reused) and their
   mean is tested against the committed BN runs: it must fall inside the 95% prediction interval
   for the mean of that many new runs, mean ± t(n-1) · s · sqrt(1/n + 1/k). Outside it, this
   machine does not reproduce the committed BN, so comparing a layer trained here with the
   committed runs would compare machines, not layers: the command says so and stops, and
   `--with-baselines` trains the baselines here instead.
2. The layer's runs: every setting × seed of the protocol, as a sweep (resumable, --workers),
   into the protocol's runs dir (or, with --with-baselines, into a local dir beside BN's).
3. Its place: the leaderboard built from that runs dir, printed for the layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from scipy import stats

from ..config import ConfigError
from ..protocols import Protocol
from .board import REFERENCE, Board, build, reference_runs, unranked_by

CALIBRATION_SEEDS = (1000, 1001)  # apart from every protocol's seeds 0 .. n-1
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Calibration:
    committed: list[float]  # the committed BN clean runs' final accuracies
    local: list[float]  # this machine's
    low: float | None
    high: float | None

    @property
    def ok(self) -> bool | None:
        """True inside the interval, False outside, None where it cannot be computed (n < 2)."""
        if self.low is None or not self.local:
            return None
        m = sum(self.local) / len(self.local)
        return bool(self.low <= m <= self.high)

    def line(self) -> str:
        if self.low is None:
            return f"calibration: not possible ({len(self.committed)} committed {REFERENCE} clean runs: need >= 2)"
        m = sum(self.local) / len(self.local)
        verdict = "inside" if self.ok else "OUTSIDE"
        return (f"calibration: this machine's {REFERENCE} (clean, {len(self.local)} runs) {m:.2f}% is {verdict} the 95% "
                f"prediction interval [{self.low:.2f}, {self.high:.2f}] of the {len(self.committed)} committed runs")


def prediction_interval(committed: list[float], k: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The interval in which the mean of k new draws from the committed runs' distribution falls with
    probability `confidence` (normal model): mean ± t(n-1) · s · sqrt(1/n + 1/k)."""
    n = len(committed)
    if n < 2 or k < 1:
        return None
    mean = sum(committed) / n
    s = math.sqrt(sum((x - mean) ** 2 for x in committed) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * s * math.sqrt(1 / n + 1 / k)
    return float(mean - half), float(mean + half)


def calibration(committed: list[float], local: list[float]) -> Calibration:
    pi = prediction_interval(committed, len(local))
    return Calibration(committed, local, *(pi if pi else (None, None)))


def reference_values(proto: Protocol, runs_dir: Path, seeds: tuple[int, ...] | None = None,
                     machine: str | None = None) -> list[float]:
    """Final accuracies of the finished BN clean runs of `proto` in `runs_dir` (all, or those of `seeds`;
    on `machine`)."""
    return [float(r["final_acc"]) for r in reference_runs(proto, runs_dir)
            if (seeds is None or int(r["seed"]) in seeds)
            and (machine is None or machine_id(r.get("machine") or {}) == machine)]


def machine_id(m: dict[str, Any]) -> str:
    """What makes two runs' machines the same for calibration: the GPU, else the CPU model and capability."""
    return str(m.get("gpu") or f"{m.get('cpu')} ({m.get('cpu_capability')})")


def this_machine(device: str) -> str:
    """This machine's id for `device`; "no GPU here" for a GPU protocol on a machine without one."""
    import torch

    from ..experiment import machine

    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no GPU here"
    return machine_id(machine(device))


def layer_lines(board: Board, layer: str) -> list[str]:
    """The layer's place on the board, in plain lines."""
    from .render import drop_text, precise_text, mean_cell

    row = board.row(layer)
    if row is None:
        return [f"{layer}: no finished runs on the {board.protocol.name} leaderboard yet"]
    ranked = sum(1 for r in board.rows if r.rank is not None)
    cost = f"; a run costs {row.step_cost:.2f}x BN's" if row.step_cost else ""
    out = [f"{layer} on {board.protocol.name} v{board.protocol.version}: rank {row.rank or '-'} of {ranked} "
           f"(robust accuracy {row.robust:.2f}%{cost})" if row.robust is not None else
           f"{layer}: not ranked yet (no finished run under {', '.join(unranked_by(board.protocol, row))})"]
    for s in board.protocol.settings:
        cell = row.cells.get(s.id)
        v = (cell.vs_bn or {}) if cell else {}
        diff = (f"  vs BN {v['diff_vs_bn']:+.2f}" + (f" [{v['diff_ci95_low']:+.2f}, {v['diff_ci95_high']:+.2f}]"
                                                      if v.get("diff_ci95_low") is not None else "")
                + (f", variance x{v['var_ratio']:.2f}" if v.get("var_ratio") is not None else "")
                + (f", Holm p {v['welch_p_holm']:.3g}" if v.get("welch_p_holm") is not None else "")) \
            if v.get("diff_vs_bn") is not None else ""
        extra = f"  drop {drop_text(cell)}" if s.id != "clean" else ""
        extra += f"  PreciseBN {precise_text(cell, n_wanted=board.protocol.seeds)}" if s.id == "mix" and cell is not None and cell.precise else ""
        out.append(f"  {s.title:24s} {mean_cell(cell, board.protocol.seeds):28s}{diff}{extra}")
    if row.short:
        out.append(f"  short of n = {board.protocol.seeds} in: {', '.join(row.short)} (re-run to resume)")
    return out


def bench_grid(proto: Protocol, norms: list[str], runs_dir: Path, data_dir: Path | None,
               seeds: list[int] | None = None, settings: list[str] | None = None, **perf: Any) -> dict[str, Any]:
    """The grid document of `norms` under `proto` (its seeds and settings unless given)."""
    doc = proto.grid(norms, seeds=seeds, runs_dir=runs_dir, data_dir=data_dir)
    if settings is not None:
        doc["attack"] = [proto.setting(s).grid_table() for s in settings]
    doc["train"].update({k: v for k, v in perf.items() if v is not None})
    return doc


def run_grid(doc: dict[str, Any], *, workers: int, threads: int | None, log: Callable[[str], None],
             progress: bool) -> Any:
    from .. import sweep as S

    grid = S.parse_grid(doc, source="bench")
    return S.run_sweep(grid, executor="local", workers=workers, threads=threads, runs_per_job=1,
                       slurm=S.SlurmOptions(), wait=True, progress=progress, log=log)


def check_refs(proto: Protocol, runs_dir: Path) -> None:
    """Refuse a runs dir whose records are not all this protocol's (one line, before anything runs)."""
    if runs_dir.is_dir():
        build(proto, [runs_dir])


__all__ = ["CALIBRATION_SEEDS", "Calibration", "bench_grid", "calibration", "check_refs", "layer_lines",
           "machine_id", "prediction_interval", "reference_values", "run_grid", "this_machine"]
