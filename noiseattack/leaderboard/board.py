"""A protocol's leaderboard, computed from the per-run records (results.jsonl) of its runs dir.

Every record must be one of the protocol's runs: its setting's identity one of the protocol's
settings (`Protocol.setting_of`), its device class the protocol's, and, on a CPU protocol, the
protocol's thread count. Anything else in the runs dir (another protocol's or version's runs,
another precision, a GPU run on a CPU board, a layer's runs made from two versions of its source)
is refused with one line: a leaderboard never mixes results.

Per layer and setting: the finished runs' final accuracies (n, mean, std, 95% CI), their
comparison with BN's in the same setting (difference of means with its Welch 95% interval,
variance ratio with its permutation interval; Holm-adjusted across the whole board, means and
variances as two families; not informative where both cells sit at chance, `noiseattack.chance`), the
number of runs at chance, the drop from the layer's clean accuracy (with its interval) and,
under the mix attack, the accuracy with PreciseBN statistics. The rank orders layers by their
robust accuracy: the mean of their attacked settings' mean accuracies (clean excluded), as
RobustBench ranks by robust accuracy (`RANKED_BY`). A layer short of the protocol's n in a setting is
ranked on what it has and marked; a layer without a finished run in some attacked setting has no
robust accuracy (a mean over fewer attacks is not the same number) and is listed unranked.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import attacks, chance
from ..config import ConfigError
from ..protocols import Protocol
from ..report.stats import ALPHA, MIN_N, adjust, compare, contrast, describe, informative, variance_differs
from ..results import RESULTS_FILE, cpu_seconds, run_cost_s

REFERENCE = "bn"
CALIBRATION_DIR = "calibration"  # beside a runs dir: `noiseattack bench`'s BN runs on the machine that benches
SCHEMA = 1  # leaderboard.json's schema version
RANKED_BY = ("Ranked by robust accuracy, the mean of the attacked settings' means; a layer without finished runs "
             "in every attacked setting is listed unranked (–)")


# The PreciseBN accuracies a record may hold (noiseattack.train.precise_accuracies): Cell attribute, record key
PRECISE_FIELDS = (("precise", "precise_acc"), ("precise_mixed", "precise_mixed_acc"))


@dataclass
class Cell:
    """One layer under one setting."""

    runs: list[dict[str, Any]]  # finished records, by seed
    diverged: int = 0
    failed: int = 0
    stats: dict[str, Any] = field(default_factory=dict)  # describe() of final_acc
    vs_bn: dict[str, Any] | None = None  # compare() with BN's cell (None for BN, or without BN runs)
    drop: dict[str, Any] | None = None  # contrast(): this setting's mean minus the layer's clean mean
    precise: dict[str, Any] | None = None  # describe() of precise_acc (None: no BN-type layer, or not recorded)
    precise_mixed: dict[str, Any] | None = None  # describe() of precise_mixed_acc (statistics of mixed batches)

    @property
    def values(self) -> list[float]:
        return [float(r["final_acc"]) for r in self.runs]

    @property
    def done(self) -> int:
        """Runs that reached their end: finished or diverged (a result of training, not re-run). The
        statistics are over the finished ones."""
        return len(self.runs) + self.diverged

    @property
    def seeds(self) -> list[int]:
        return [int(r["seed"]) for r in self.runs]

    @property
    def at_chance(self) -> int:
        """How many of the finished runs are at chance (`noiseattack.chance`)."""
        return chance.count(self.runs)


@dataclass
class Row:
    layer: str
    origin: str
    description: str
    params: int | None
    cells: dict[str, Cell]
    step_cost: float | None = None  # a run's cost over BN's, on a machine kind they share (`_step_cost`)
    robust: float | None = None  # mean of the attacked settings' means
    rank: int | None = None
    short: list[str] = field(default_factory=list)  # settings with fewer done runs (`Cell.done`) than the protocol's n


@dataclass
class Board:
    protocol: Protocol
    rows: list[Row]
    runs_dirs: list[str]
    records: int
    machines: dict[str, int]  # "cpu (capability)" or GPU name -> runs
    warnings: list[str] = field(default_factory=list)
    hours: dict[str, float] = field(default_factory=dict)  # machine -> its runs' hours (`results.run_cost_s`)
    splits: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (layer, setting, machine_split)

    def row(self, layer: str) -> Row | None:
        return next((r for r in self.rows if r.layer == layer), None)


# --------------------------------------------------------------------------- reading the runs


def read_records(runs_dirs: list[Path]) -> list[dict[str, Any]]:
    out, seen = [], set()
    for d in runs_dirs:
        if not d.is_dir():
            raise ConfigError(f"runs dir '{d}' does not exist")
        for f in sorted(d.rglob(RESULTS_FILE)):
            for i, line in enumerate(f.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    raise ConfigError(f"{f}:{i} is not a JSON line") from None
                if rec.get("key") not in seen:  # the same run committed in two dirs counts once
                    seen.add(rec.get("key"))
                    out.append({**rec, "_file": str(f)})
    return out


def check_record(proto: Protocol, rec: dict[str, Any]) -> str:
    """The record's setting id, or ConfigError (one line) when it is not a run of `proto`."""
    where = f"{rec.get('_file')}: run {rec.get('norm')} seed {rec.get('seed')}"
    config = rec.get("config")
    if not isinstance(config, dict):
        raise ConfigError(f"{where} has no config: not a noiseattack run record")
    setting = proto.setting_of(config)
    if setting is None:
        raise ConfigError(f"{where} is not a run of protocol {proto.name} v{proto.version} (another protocol, version "
                          f"or precision): keep other runs out of {proto.name}'s runs dir")
    device = str((rec.get("machine") or {}).get("device", config.get("device", "cpu")))
    if device.split(":")[0] != proto.device:
        raise ConfigError(f"{where} ran on {device}, but protocol {proto.name} is a {proto.device} protocol "
                          f"(device is part of a result: {'fmnist-gpu' if proto.device == 'cpu' else 'fmnist'}'s board "
                          f"takes it)")
    threads = (rec.get("machine") or {}).get("threads")
    if proto.threads is not None and threads is not None and threads != proto.threads:
        raise ConfigError(f"{where} ran at {threads} threads; protocol {proto.name} fixes {proto.threads}")
    return setting


def _check_sources(records: list[dict[str, Any]]) -> None:
    """A user's layer (`pkg.mod:Name@hash`) from two versions of its source never shares a board."""
    by_path: dict[str, set[str]] = defaultdict(set)
    for r in records:
        name = str(r.get("norm", ""))
        if "@" in name:
            path, sha = name.rsplit("@", 1)
            by_path[path].add(sha)
    for path, shas in by_path.items():
        if len(shas) > 1:
            raise ConfigError(f"runs of {path} from {len(shas)} versions of its source ({', '.join(sorted(shas))}): "
                              "a changed layer is a new layer; keep one version's runs in the runs dir")


# --------------------------------------------------------------------------- the board


def build(proto: Protocol, runs_dirs: list[Path]) -> Board:
    """The leaderboard of `proto` from the records under `runs_dirs` (refusing any foreign run)."""
    records = read_records(runs_dirs)
    _check_sources(records)
    cells: dict[str, dict[str, Cell]] = defaultdict(dict)
    machines: dict[str, int] = defaultdict(int)
    seconds: dict[str, float] = defaultdict(float)
    for rec in records:
        setting = check_record(proto, rec)
        cell = cells[rec["norm"]].setdefault(setting, Cell(runs=[]))
        status = rec.get("status")
        if status == "finished" and isinstance(rec.get("final_acc"), (int, float)):
            cell.runs.append(rec)
        elif status == "diverged":
            cell.diverged += 1
        else:
            cell.failed += 1
        label = machine_label(rec)
        machines[label] += 1
        seconds[label] += run_cost_s(rec) or 0.0
    rows = [_row(proto, layer, by_setting) for layer, by_setting in cells.items()]
    _compare(proto, rows, calibration_runs(proto, runs_dirs))
    _rank(proto, rows)
    warnings = [] if any(r.layer == REFERENCE for r in rows) or not rows else [
        f"no {REFERENCE} runs: nothing to compare with"]
    splits = [(r.layer, s.id, sp) for r in rows for s in proto.settings
              if s.id in r.cells and (sp := machine_split(r.cells[s.id].runs)) is not None]
    return Board(proto, rows, [str(d) for d in runs_dirs], len(records), dict(sorted(machines.items())), warnings,
                 {m: seconds[m] / 3600 for m in sorted(machines)}, splits)


def machine_label(rec: dict[str, Any]) -> str:
    """The kind of machine a run trained on: its GPU, else its CPU and vector capability (e.g.
    'AMD EPYC (AVX512)'); 'machine not recorded' for a record without machine facts."""
    m = rec.get("machine") or {}
    if m.get("gpu"):
        return str(m["gpu"])
    if not m.get("cpu") and not m.get("cpu_capability"):
        return "machine not recorded"
    return f"{m.get('cpu') or 'unknown CPU'} ({m.get('cpu_capability') or 'capability not recorded'})"


def machine_split(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A cell's finished runs split by machine kind (`machine_label`), where more than one kind trained
    them (None else): `machines`, [(kind, n, mean final accuracy)] with the most runs first; `diff`,
    `ci_low`, `ci_high`, `p`: the first kind's mean minus the second's, Welch's 95% interval and p
    (None where either has fewer than 2 runs). A cell's numbers pool its kinds; this says whether they may."""
    by: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        by[machine_label(r)].append(float(r["final_acc"]))
    if len(by) < 2:
        return None
    kinds = sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    res = contrast([kinds[0][1], kinds[1][1]], (1, -1))
    return {"machines": [(m, len(v), statistics.fmean(v)) for m, v in kinds], "diff": res["estimate"],
            "ci_low": res["ci_low"], "ci_high": res["ci_high"], "p": res["p"]}


def _row(proto: Protocol, layer: str, by_setting: dict[str, Cell]) -> Row:
    from .. import zoo

    try:
        info = zoo.layer_info(layer)
        origin, description = info.get("origin", "user"), info.get("description", "")
    except ConfigError:  # a user's layer that is not importable here: what its records say
        any_rec = next(c.runs[0] for c in by_setting.values() if c.runs) if any(c.runs for c in by_setting.values()) \
            else {}
        info = any_rec.get("layer") or {}
        origin, description = info.get("origin", "user"), info.get("description", "")
    for cell in by_setting.values():
        cell.runs.sort(key=lambda r: int(r["seed"]))
        cell.stats = describe(cell.values)
        for attr, key in PRECISE_FIELDS:
            values = [float(r[key]) for r in cell.runs if isinstance(r.get(key), (int, float))]
            setattr(cell, attr, describe(values) if values else None)
    short = [s.id for s in proto.settings if by_setting.get(s.id, Cell(runs=[])).done < proto.seeds]
    return Row(layer, origin, description.split("\n")[0], _params(proto, layer), by_setting, short=short)


def _params(proto: Protocol, layer: str) -> int | None:
    import torch

    from ..models import cifar_resnet

    try:
        cfg = proto.train_config(proto.settings[0], "cpu")
        with torch.device("meta"):
            net = cifar_resnet(cfg.depth, 10 if cfg.dataset != "cifar100" else 100, layer, width=cfg.width,
                               shortcut_norm=cfg.shortcut_norm, attn_placement=cfg.attn_placement)
        return sum(p.numel() for p in net.parameters() if p.requires_grad)
    except Exception:  # noqa: BLE001 - a user's layer that cannot be built here
        return None


def reference_runs(proto: Protocol, runs_dir: Path) -> list[dict[str, Any]]:
    """BN's finished clean runs of `proto` under `runs_dir`, of any seed; any other record is passed over."""
    if not runs_dir.is_dir():
        return []
    out = []
    for rec in read_records([runs_dir]):
        try:
            setting = check_record(proto, rec)
        except ConfigError:
            continue
        if setting == "clean" and rec.get("norm") == REFERENCE and rec.get("status") == "finished":
            out.append(rec)
    return out


def calibration_runs(proto: Protocol, runs_dirs: list[Path]) -> list[dict[str, Any]]:
    """`reference_runs` in the `CALIBRATION_DIR` beside each runs dir: `noiseattack bench`'s check of a
    machine (other seeds of the same setting). They are no cell's runs; they give the step cost a BN
    reference on a machine kind whose BN runs are not on the board."""
    return [r for d in runs_dirs for r in reference_runs(proto, Path(d).parent / CALIBRATION_DIR)]


def _compare(proto: Protocol, rows: list[Row], calibration: list[dict[str, Any]]) -> None:
    """Each cell against BN's (Holm across the board), the drops from clean, the step costs (BN's side
    with its `calibration` runs)."""
    ref = next((r for r in rows if r.layer == REFERENCE), None)
    comparisons = []
    for row in rows:
        clean = row.cells.get("clean")
        for sid, cell in row.cells.items():
            if sid != "clean" and clean is not None and cell.runs and clean.runs:
                cell.drop = contrast([cell.values, clean.values], [1, -1])
            if ref is not None and row is not ref and sid in ref.cells and cell.runs:
                bn = ref.cells[sid]
                cell.vs_bn = compare(cell.values, bn.values, chance=(chance.mostly(cell.runs), chance.mostly(bn.runs)))
                if ref.cells[sid].drop is not None and cell.drop is not None:  # the drop minus BN's drop
                    cell.vs_bn["drop_vs_bn"] = contrast(
                        [cell.values, clean.values, ref.cells[sid].values, ref.cells["clean"].values], [1, -1, -1, 1])
                comparisons.append(cell.vs_bn)
        row.step_cost = _step_cost(row, ref, _cost_settings(proto), [] if row is ref else calibration)
    adjust(comparisons, ALPHA)


def _cost_settings(proto: Protocol) -> list[str]:
    """The settings whose runs take the same steps as clean ones: their attack adds no image to a batch."""
    return [st.id for st in proto.settings if attacks.get(st.options["attack"]).extra_images(st.params()) == 0]


def _step_cost(row: Row, ref: Row | None, settings: list[str], calibration: list[dict[str, Any]]) -> float | None:
    """The layer's cost per run over BN's, from their runs in `settings` (the same steps as clean: the
    more runs, the better the fastest of them) on the machine kind they share most: the ratio of
    median CPU times (`results.cpu_seconds`: one thread per run, not inflated by waiting for a CPU) of
    the runs that recorded one, where both sides have such runs (runs written before it was recorded left out),
    else the ratio of the fastest wall times (runs that shared the CPUs only ever took longer, so the
    fastest is the least disturbed); on a GPU, wall times. BN's side includes its `calibration` runs
    (clean ones) where the settings hold clean."""
    mine, theirs = defaultdict(list), defaultdict(list)
    for side, r_ in ((mine, row), (theirs, ref)):
        for sid in settings:
            for r in (r_.cells[sid].runs if r_ is not None and sid in r_.cells else []):
                side[machine_label(r)].append(r)
    for r in (calibration if "clean" in settings else []):
        theirs[machine_label(r)].append(r)
    shared = sorted(set(mine) & set(theirs), key=lambda m: -(len(mine[m]) + len(theirs[m])))
    if not shared:
        return None
    a, b = mine[shared[0]], theirs[shared[0]]
    cpu_a, cpu_b = ([c for c in map(cpu_seconds, side) if c is not None] for side in (a, b))
    if cpu_a and cpu_b:
        return statistics.median(cpu_a) / statistics.median(cpu_b)
    return min(float(r["wall_time_s"]) for r in a) / min(float(r["wall_time_s"]) for r in b)


def unranked_by(proto: Protocol, row: Row) -> list[str]:
    """The attacked settings in which `row` has no finished run: what keeps it from a robust accuracy."""
    return [s.id for s in proto.settings if s.id != "clean" and not (s.id in row.cells and row.cells[s.id].runs)]


def _rank(proto: Protocol, rows: list[Row]) -> None:
    """Robust accuracy (the mean of the attacked settings' means) and rank; None for both where a
    layer has no finished run in one of the protocol's attacked settings (`unranked_by`)."""
    attacked_ids = [s.id for s in proto.settings if s.id != "clean"]
    for row in rows:
        means = [row.cells[sid].stats["mean"] for sid in attacked_ids] if not unranked_by(proto, row) else []
        row.robust = sum(means) / len(means) if means else None
    rows.sort(key=lambda r: (r.robust is None, -(r.robust or 0.0), r.layer))
    for i, row in enumerate(rows, 1):
        row.rank = i if row.robust is not None else None


def marks(cmp: dict[str, Any] | None, alpha: float = ALPHA) -> str:
    """▲ / ▼: mean above / below BN's, ◆: variance different from BN's, by Holm-adjusted p < alpha; none
    where both sides sit at chance (not informative), and no ◆ where the lower variance is a side's
    collapse to chance (`stats.variance_differs`)."""
    if not cmp or not informative(cmp):
        return ""
    out = ""
    p, diff = cmp.get("welch_p_holm"), cmp.get("diff_vs_bn")
    if p is not None and diff is not None and p < alpha:
        out += "▲" if diff > 0 else "▼"
    if variance_differs(cmp, cmp.get("var_p_holm"), alpha):
        out += "◆"
    return out


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


__all__ = ["Board", "CALIBRATION_DIR", "Cell", "MIN_N", "RANKED_BY", "REFERENCE", "Row", "build", "check_record", "marks",
           "read_records", "reference_runs", "unranked_by"]
