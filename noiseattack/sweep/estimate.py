"""What a sweep's runs left will cost (`estimate_left`, the dry runs' last line): by the grid's own
finished runs, and, for a grid with none yet, by another dataset's runs of the same layers and
settings (`lent_runs`, `sweep --cost-from`)."""

from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..config import PERFORMANCE_FIELDS, ConfigError, to_jsonable, train_config_from_dict
from ..datasets import DATASETS
from ..results import RESULTS_FILE, median_cost, read_results, run_cost_s
from .grid import Grid, SweepJob
from .run import DIVERGED, DONE, replaced_by_overwrite

Med = dict[tuple[Path, str], tuple[float, bool]]  # (experiment dir, layer) -> (median cost, a CPU time?)


@dataclass(frozen=True)
class Estimate:
    """The runs a sweep has left, costed by the finished ones (`results.run_cost_s`; `estimate_left`
    says how): `costs`, in seconds, of the runs that have something to go by, and `unknown` runs
    with nothing (no finished run of their layer anywhere in the grid's dirs, none in their
    experiment); `lent` of the costed runs went by another dataset's runs (`cost_from`). Runs in
    progress or checkpointed count whole."""

    costs: tuple[float, ...]
    unknown: int
    lent: int = 0

    @property
    def seconds(self) -> float:
        return sum(self.costs)

    def finish_s(self, workers: int) -> float:
        """When `workers` slots would finish the costed runs, longest first, each to the slot free first."""
        slots = [0.0] * max(1, min(workers, len(self.costs)))
        for c in sorted(self.costs, reverse=True):
            slots[slots.index(min(slots))] += c
        return max(slots, default=0.0)


def estimate_left(grid: Grid, states: list[tuple[SweepJob, str, dict[str, Any] | None]],
                  cost_from: Sequence[Path] = ()) -> Estimate:
    """`Estimate` of the runs in `states` (`status(grid)`) not over, by every finished run in the grid's
    experiment dirs (another grid's seeds of the same setting count too; a dir that --overwrite
    replaces, as `status` reads it, does not). A run costs the median of its layer's finished runs
    in its setting (of their CPU times where some recorded one); else, with `cost_from` (runs dirs or
    experiment dirs), its layer's runs there in the same setting on another dataset (`lent_runs`); else
    its layer's median in another setting scaled by what the layers the two settings share cost in each
    (`_carried`); else the median of its setting's finished runs. `Estimate.lent` counts the runs whose
    cost went by a lent run in any of these ways."""
    by_norm: dict[tuple[Path, str], list[dict[str, Any]]] = defaultdict(list)
    for exp in grid.experiments:
        if replaced_by_overwrite(exp):
            continue
        for rec in read_results(exp.dir):
            if rec.get("status") == "finished" and run_cost_s(rec) is not None:  # a diverged run stopped early
                by_norm[(exp.dir, rec.get("norm"))].append(rec)
    lent = {k: v for k, v in lent_runs(grid, cost_from).items() if k not in by_norm}
    by_norm.update(lent)
    med = {k: median_cost(v) for k, v in by_norm.items()}
    costs, unknown, n_lent = [], 0, 0
    for job, state, _ in states:
        if state in (DONE, DIVERGED):
            continue
        key = (job.exp.dir, job.run.norm)
        if key in med:
            cost, used = med[key][0], {key}
        else:
            cost, used = _carried(med, *key)
            if cost is None and (mine := [k for k in by_norm if k[0] == job.exp.dir]):
                cost, used = median_cost(r for k in mine for r in by_norm[k])[0], set(mine)
        if cost is None:
            unknown += 1
        else:
            costs.append(cost)
            n_lent += bool(used & lent.keys())
    return Estimate(tuple(costs), unknown, n_lent)


# A run's config fields that do not change what its steps cost: a run that differs from another only
# in these prices it (scaled by the training images: `lent_runs`). Its performance options (compile,
# memory layout, evaluation batch: PERFORMANCE_FIELDS) are not compared either: they resolve by the
# machine, so a lent run is priced as it ran; its device is compared.
COST_NEUTRAL = frozenset({"norm", "seed", "dataset", "extra", "train_subset", "test_subset",
                          *(set(PERFORMANCE_FIELDS) - {"device"})})


def lent_runs(grid: Grid, dirs: Sequence[Path]) -> dict[tuple[Path, str], list[dict[str, Any]]]:
    """The finished runs in `dirs` (runs dirs, whose experiment dirs are read, or experiment dirs)
    that price the grid's runs, by (the grid's experiment dir, layer): a run of the same layer whose
    config (a record's read as `train_config_from_dict` reads it: a field written after the run takes
    the value the run had) equals the experiment's but for COST_NEUTRAL fields, on the grid's kind of
    device (any where the grid leaves it to the machine that runs it), its cost scaled by the images of
    an epoch (the train subset, else the dataset's training split) in the grid's setting over its own.
    The mnist protocol priced by the fmnist board's runs, say: the same model, steps and attacks on
    another dataset."""
    device = None if grid.device == "auto" else grid.device.split(":")[0]
    mine = [(exp, {k: device if k == "device" else v for k, v in _config(dataclasses.asdict(exp.train)).items()
                   if k != "device" or device}) for exp in grid.experiments]
    out: dict[tuple[Path, str], list[dict[str, Any]]] = defaultdict(list)
    for root in dirs:
        if not Path(root).is_dir():
            raise ConfigError(f"--cost-from {root}: no such directory")
        for d in (Path(root), *sorted(p for p in Path(root).iterdir() if p.is_dir())):
            for rec in read_results(d) if (d / RESULTS_FILE).is_file() else ():
                theirs = _config(rec.get("config"))
                if rec.get("status") != "finished" or run_cost_s(rec) is None or theirs is None:
                    continue
                for exp, setting in mine:
                    if (ratio := _epoch_ratio(setting, theirs)) is not None:
                        out[(exp.dir, rec.get("norm"))].append(
                            {**rec, **{f: rec[f] * ratio for f in ("cpu_time_s", "wall_time_s") if type(rec.get(f)) in (int, float)}})
    return dict(out)


def _config(d: Any) -> dict[str, Any] | None:
    """A TrainConfig's fields as JSON values, from a setting's or a record's (missing fields at the
    value a run had before they existed); None where a record's cannot be read."""
    try:
        cfg = to_jsonable(dataclasses.asdict(train_config_from_dict(d)))
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    return {**cfg, "device": str(cfg["device"]).split(":")[0]}


def _epoch_ratio(mine: dict[str, Any], theirs: dict[str, Any]) -> float | None:
    """The images of an epoch in `mine` (a setting's config) over `theirs` (a record's), where the two
    differ only in COST_NEUTRAL fields; None where they differ otherwise or an epoch's size is unknown."""
    if any(mine[f] != theirs[f] for f in mine.keys() - COST_NEUTRAL):
        return None
    sizes = [c.get("train_subset") or getattr(DATASETS.get(c.get("dataset")), "train_images", 0) for c in (mine, theirs)]
    return sizes[0] / sizes[1] if all(sizes) else None


def _carried(med: Med, exp_dir: Path, norm: str) -> tuple[float | None, set[tuple[Path, str]]]:
    """`norm`'s median cost in another setting, times the setting's cost over that one's for the
    layers with runs in both (the median of every such product; a layer's cost and the shared
    layer's it is compared with are both CPU times or both wall times), and the cells it went by;
    None where there is none (a mix step costs more than a clean one, and a slow layer is slow in
    every setting)."""
    here = {n: c for (d, n), (c, _) in med.items() if d == exp_dir}
    pairs = [((d, n), (d, m)) for (d, n), (_, cpu) in med.items() if n == norm and d != exp_dir
             for m in here if (d, m) in med and med[(d, m)][1] == cpu]
    if not pairs:
        return None, set()
    guess = statistics.median(med[a][0] * here[b[1]] / med[b][0] for a, b in pairs)
    return guess, {k for a, b in pairs for k in (a, b, (exp_dir, b[1]))}
