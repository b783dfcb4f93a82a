"""Sweeps: a grid file (TOML) expanded into single runs, run by a local or a Slurm executor.

A grid names the attack families and their settings, the norms, the seeds, and the shared
training options (those of the single-run commands):

    [train]                          # shared options: the CLI option names, with underscores
    dataset = "fmnist"
    epochs = 4
    train_subset = 5000
    runs_dir = "runs/study-fmnist"   # also data_dir, keep_checkpoints, overwrite

    [grid]
    norms = ["bn", "in", "bnse", "iebn"]   # or "all", or "bn,iebn"
    seeds = [0, 1, 2]                      # or: repeats = 3 and seed = 0 (the default: 5 and 0)

    [[attack]]
    kind = "clean"
    [[attack]]
    kind = "constant"
    settings = [[2, 1], [5, 2]]      # (alpha, beta) pairs
    [[attack]]
    kind = "mix"
    extra = ["mnist"]                # a name or a list; every extra with every k
    k = [32, 64]

An `[[attack]]` table that expands to one setting may carry `name = "..."` (its experiment
dir); otherwise each setting's dir is `config.default_name(train)`, as for the single-run
commands. Every setting becomes an experiment dir in the usual layout (see experiment.py:
config.json, results.jsonl, summaries, tb/), every (setting, norm, seed) a run with its stable
key (`RunConfig.key`), so `report` and TensorBoard read a sweep's outputs unchanged, and the
single-run commands and a sweep skip each other's finished runs.

A bad grid raises ConfigError (one line naming the key) before anything is written. Runs whose
key is already in their experiment's results.jsonl are skipped, so re-running a sweep resumes it.

Executors: `local` (in this process, or `workers` spawned processes, each pinned to one GPU in
turn), `submitit-local` (submitit's local executor: one process per job, the code path that
Slurm runs) and `slurm` (a submitit job array). A job runs `runs_per_job` runs in a row.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import time
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import (
    Attack, ConfigError, ExperimentConfig, RunConfig, TrainConfig, parse_norms, resolve_device,
    resolve_experiment, resolve_train_config,
)
from .experiment import (RunBusy, check_dir, execute, is_running, open_dir, other_setting, run_lock_path, run_paths,
                         sigint_requests_stop)
from .results import read_results
from .results import write_summaries_locked as _write_summaries_locked
from .train import StopRequested, prepare_data

EXECUTORS = ("local", "submitit-local", "slurm")

# --------------------------------------------------------------------------- the grid file

_INT, _FLOAT, _STR, _BOOL, _INTS = "an integer", "a number", "a string", "a boolean (true or false)", "a list of integers"

# [train]: the options of the single-run commands (minus norm, repeats, seed: see [grid]).
TRAIN_KEYS: dict[str, str] = {
    "dataset": _STR, "preset": _STR, "epochs": _INT, "depth": _INT, "block": _STR, "width": _INT, "shortcut_norm": _STR,
    "batch_size": _INT, "lr": _FLOAT, "momentum": _FLOAT, "weight_decay": _FLOAT, "milestones": _INTS,
    "lr_gamma": _FLOAT, "train_subset": _INT, "test_subset": _INT, "amp": _BOOL, "device": _STR,
    "channels_last": _BOOL, "compile_norms": _BOOL, "eval_batch_size": _INT,
}
EXPERIMENT_KEYS: dict[str, str] = {"runs_dir": _STR, "data_dir": _STR, "keep_checkpoints": _BOOL, "overwrite": _BOOL}
GRID_KEYS = ("norms", "seeds", "repeats", "seed")
ATTACK_KEYS = {"clean": ("kind", "name"), "constant": ("kind", "settings", "name"), "mix": ("kind", "extra", "k", "name")}
_HINTS = {
    "norm": "set the norms in [grid] (norms = [...])", "repeats": "set it in [grid]", "seed": "set it in [grid]",
    "seeds": "set it in [grid]", "norms": "set it in [grid]", "attack": "use [[attack]] tables",
    "alpha": "use [[attack]] kind = \"constant\" with settings = [[alpha, beta], ...]",
    "beta": "use [[attack]] kind = \"constant\" with settings = [[alpha, beta], ...]",
    "extra": "use [[attack]] kind = \"mix\" with extra = [...]", "k": "use [[attack]] kind = \"mix\" with k = [...]",
    "name": "name an experiment in its [[attack]] table", "progress": "a command-line option (--progress)",
}


def _typename(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(v), type(v).__name__)


def _check_type(key: str, v: Any, want: str) -> Any:
    """The value if it has the type `want` (ints are numbers too; booleans are not ints)."""
    ok = {
        _INT: isinstance(v, int) and not isinstance(v, bool),
        _FLOAT: isinstance(v, (int, float)) and not isinstance(v, bool),
        _STR: isinstance(v, str),
        _BOOL: isinstance(v, bool),
        _INTS: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
    }[want]
    if not ok:
        raise ConfigError(f"{key} must be {want}, got {v!r} ({_typename(v)})")
    return float(v) if want == _FLOAT else v


def _axis(key: str, v: Any, want: str) -> list[Any]:
    """A scalar or a non-empty list of scalars of type `want`, as a list without duplicates."""
    values = v if isinstance(v, list) else [v]
    if not values:
        raise ConfigError(f"{key} is empty: give at least one value")
    out = [_check_type(key, x, want) for x in values]
    return list(dict.fromkeys(out))


def _table(key: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ConfigError(f"{key} must be a table ([{key}]), got {_typename(v)}")
    return v


@dataclass(frozen=True)
class SweepJob:
    """One run of a sweep, with its experiment dir. `device` is the grid's device option, resolved
    where the run trains (a Slurm job resolves "auto" on its own node)."""

    exp: ExperimentConfig
    run: RunConfig
    device: str = "auto"

    @property
    def key(self) -> str:
        return self.run.key

    @property
    def label(self) -> str:
        return f"{self.exp.name} {self.run.norm} seed {self.run.seed}"


@dataclass(frozen=True)
class Grid:
    """A validated grid: its experiments (settings, each with its norms and seeds)."""

    source: str
    experiments: tuple[ExperimentConfig, ...]
    device: str = "auto"

    def jobs(self) -> list[SweepJob]:
        """Every run, setting by setting, then norm by norm, then seed by seed."""
        return [SweepJob(exp, run, self.device) for exp in self.experiments for run in exp.runs()]


def load_grid(path: str | Path, *, runs_dir: str | Path | None = None, data_dir: str | Path | None = None,
              defer_device: bool = False) -> Grid:
    """Read and validate a grid file. `runs_dir` and `data_dir` override the grid's; with
    `defer_device`, a CUDA device (or "auto") is not checked here but where each run trains."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"grid file '{path}' not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"grid file '{path}' is unreadable ({type(e).__name__})") from None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ConfigError("reading a grid needs Python >= 3.11 (tomllib) or the tomli package") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {str(e).splitlines()[0]}") from None
    try:
        return parse_grid(doc, source=str(path), runs_dir=runs_dir, data_dir=data_dir, defer_device=defer_device)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def parse_grid(doc: dict[str, Any], *, source: str = "<grid>", runs_dir: str | Path | None = None,
               data_dir: str | Path | None = None, defer_device: bool = False) -> Grid:
    """Validate a parsed grid and expand it into experiments. Raises ConfigError naming the key."""
    for key in doc:
        if key not in ("train", "grid", "attack"):
            raise ConfigError(f"unknown key '{key}': a grid has [train], [grid] and [[attack]] tables")

    # [train]
    train_opts: dict[str, Any] = {}
    exp_opts: dict[str, Any] = {}
    for key, v in _table("train", doc.get("train", {})).items():
        if key in TRAIN_KEYS:
            train_opts[key] = _check_type(f"train.{key}", v, TRAIN_KEYS[key])
        elif key in EXPERIMENT_KEYS:
            exp_opts[key] = _check_type(f"train.{key}", v, EXPERIMENT_KEYS[key])
        else:
            hint = _HINTS.get(key, "choose from " + ", ".join([*TRAIN_KEYS, *EXPERIMENT_KEYS]))
            raise ConfigError(f"unknown key 'train.{key}': {hint}")
    if "milestones" in train_opts:
        train_opts["milestones"] = tuple(train_opts["milestones"])
    device = train_opts.pop("device", "auto")
    if defer_device and (device == "auto" or device.startswith("cuda")):
        if not re.fullmatch(r"auto|cuda(:\d+)?", device):
            raise ConfigError(f"train.device: unknown device '{device}': use auto, cpu or cuda[:N]")
        check_device = "cpu"  # everything else is checked here; the device where the run trains
    else:
        check_device = device
    try:
        base = resolve_train_config(**train_opts, device=check_device)
    except ConfigError as e:
        raise ConfigError(f"[train]: {e}") from None
    device = base.device if check_device == device else device
    if runs_dir is not None:
        exp_opts["runs_dir"] = str(runs_dir)
    if data_dir is not None:
        exp_opts["data_dir"] = str(data_dir)

    # [grid]
    g = _table("grid", doc.get("grid", {}))
    for key in g:
        if key not in GRID_KEYS:
            raise ConfigError(f"unknown key 'grid.{key}': choose from {', '.join(GRID_KEYS)}")
    norms_v = g.get("norms", "paper")
    if not isinstance(norms_v, str):
        norms_v = list(_axis("grid.norms", norms_v, _STR))
    try:
        norms = parse_norms(norms_v)
    except ConfigError as e:
        raise ConfigError(f"grid.norms: {e}") from None
    if "seeds" in g and ("repeats" in g or "seed" in g):
        raise ConfigError("grid.seeds: give either seeds = [...] or repeats (and seed), not both")
    if "seeds" in g:
        if isinstance(g["seeds"], list) and len(set(map(repr, g["seeds"]))) != len(g["seeds"]):
            raise ConfigError(f"grid.seeds has duplicates: {g['seeds']}")
        seeds = tuple(_axis("grid.seeds", g["seeds"], _INT))
    else:
        repeats = _check_type("grid.repeats", g.get("repeats", 5), _INT)
        seed = _check_type("grid.seed", g.get("seed", 0), _INT)
        if repeats < 1:
            raise ConfigError(f"grid.repeats must be >= 1, got {repeats}")
        seeds = tuple(seed + i for i in range(repeats))
    if any(s < 0 for s in seeds):
        raise ConfigError(f"grid.seeds must be >= 0, got {list(seeds)}")

    # [[attack]]
    attacks = doc.get("attack")
    if attacks is None:
        raise ConfigError("attack: the grid names no attack: add [[attack]] tables (kind = clean, constant or mix)")
    if not isinstance(attacks, list) or not all(isinstance(a, dict) for a in attacks):
        raise ConfigError("attack must be a list of tables ([[attack]]), got " + _typename(attacks))
    if not attacks:
        raise ConfigError("attack is empty: add [[attack]] tables (kind = clean, constant or mix)")

    settings: list[tuple[str, dict[str, Any], str | None]] = []  # (where, attack options, name)
    for i, a in enumerate(attacks, 1):
        where = f"attack[{i}]"
        if "kind" not in a:
            raise ConfigError(f"{where}.kind is missing: choose clean, constant or mix")
        kind = _check_type(f"{where}.kind", a["kind"], _STR)
        if kind not in ATTACK_KEYS:
            raise ConfigError(f"{where}.kind: unknown attack '{kind}': choose clean, constant or mix")
        for key in a:
            if key not in ATTACK_KEYS[kind]:
                hint = ("train options go into [train]" if key in TRAIN_KEYS
                        else f"a {kind} attack takes {', '.join(ATTACK_KEYS[kind])}")
                raise ConfigError(f"unknown key '{where}.{key}': {hint}")
        name = _check_type(f"{where}.name", a["name"], _STR) if "name" in a else None
        if kind == "clean":
            expanded = [{"attack": "clean"}]
        elif kind == "constant":
            if "settings" not in a:
                raise ConfigError(f"{where}.settings is missing: a list of [alpha, beta] pairs")
            pairs = a["settings"]
            if not isinstance(pairs, list):
                raise ConfigError(f"{where}.settings must be a list of [alpha, beta] pairs, got {pairs!r}")
            if not pairs:
                raise ConfigError(f"{where}.settings is empty: give at least one [alpha, beta] pair")
            expanded = []
            for p in pairs:
                if not (isinstance(p, list) and len(p) == 2):
                    raise ConfigError(f"{where}.settings must hold [alpha, beta] pairs, got {p!r}")
                alpha = _check_type(f"{where}.settings alpha", p[0], _FLOAT)
                beta = _check_type(f"{where}.settings beta", p[1], _FLOAT)
                expanded.append({"attack": "constant", "alpha": alpha, "beta": beta})
        else:
            for key in ("extra", "k"):
                if key not in a:
                    raise ConfigError(f"{where}.{key} is missing")
            extras = _axis(f"{where}.extra", a["extra"], _STR)
            ks = _axis(f"{where}.k", a["k"], _INT)
            expanded = [{"attack": "mix", "extra": e, "k": k} for e in extras for k in ks]
        if name is not None and len(expanded) > 1:
            raise ConfigError(f"{where}.name: a name is one experiment dir, but this attack has {len(expanded)} settings")
        unique = {tuple(sorted(s.items())): s for s in expanded}.values()  # [[2, 1], [2.0, 1]] is one setting
        settings += [(where, s, name) for s in unique]

    # expansion: every setting resolved and checked exactly as the single-run commands do
    experiments: dict[str, ExperimentConfig] = {}
    origin: dict[str, str] = {}
    by_identity: dict[str, str] = {}
    for where, s, name in settings:
        detail = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items() if k != "attack")
        label = f"{where} ({detail})" if detail else where
        try:
            train = resolve_train_config(**{**train_opts, **s}, device=check_device)
            exp = resolve_experiment(train, norms=norms, repeats=len(seeds), seed=seeds[0], name=name,
                                     runs_dir=exp_opts.get("runs_dir", "runs"), data_dir=exp_opts.get("data_dir"),
                                     keep_checkpoints=exp_opts.get("keep_checkpoints", False),
                                     overwrite=exp_opts.get("overwrite", False))
        except ConfigError as e:
            raise ConfigError(f"{label}: {e}") from None
        exp = dataclasses.replace(exp, seeds=seeds)
        ident = repr(sorted(train.identity().items()))
        if exp.name in experiments:
            if repr(sorted(experiments[exp.name].train.identity().items())) == ident:
                continue  # the same setting twice: one experiment
            raise ConfigError(f"{label}: its experiment dir '{exp.name}' is also that of {origin[exp.name]}, "
                              f"a different setting: give one of them a name")
        if ident in by_identity:
            raise ConfigError(f"{label}: the same setting as {origin[by_identity[ident]]} under another name")
        try:
            check_dir(exp)
        except ConfigError as e:
            raise ConfigError(f"{label}: {e}") from None
        experiments[exp.name] = exp
        origin[exp.name] = label
        by_identity[ident] = exp.name
    return Grid(source=source, experiments=tuple(experiments.values()), device=device)


# --------------------------------------------------------------------------- the state of a sweep

DONE, DIVERGED, RUNNING, PARTIAL, PENDING = "done", "diverged", "running", "partial", "pending"
STATES = (DONE, DIVERGED, RUNNING, PARTIAL, PENDING)


_lock_path = run_lock_path  # the per-run lock lives in experiment.execute (CLI runs and sweeps alike)
_is_running = is_running


def status(grid: Grid) -> list[tuple[SweepJob, str, dict[str, Any] | None]]:
    """Every run of the grid with its state and its record when it has one. States: done,
    diverged (both over), running (another process trains it now), partial (a checkpoint, nobody
    training it), pending. Reads only."""
    out = []
    for exp in grid.experiments:
        replaced = exp.overwrite and other_setting(exp) is not None  # open_dir will start it afresh
        records = {} if replaced else {r["key"]: r for r in read_results(exp.dir)}
        for run in exp.runs():
            job = SweepJob(exp, run, grid.device)
            rec = records.get(run.key)
            if rec is not None:
                state = DIVERGED if rec["status"] == "diverged" else DONE
            elif replaced:
                state = PENDING
            elif _is_running(exp.dir, run):
                state = RUNNING
            elif run_paths(exp.dir, run)[0].exists():
                state = PARTIAL
            else:
                state = PENDING
            out.append((job, state, rec))
    return out


def check_data(grid: Grid) -> None:
    """Load (downloading where possible) every dataset the grid trains on, and check the subset
    sizes, so that missing data is one ConfigError before anything is written."""
    seen = set()
    for exp in grid.experiments:
        t = exp.train
        sig = (t.dataset, t.extra if t.attack is Attack.mix and t.k > 0 else None, t.train_subset, t.test_subset,
               str(exp.data_dir))
        if sig in seen:
            continue
        seen.add(sig)
        prepare_data(dataclasses.replace(t, device="cpu"), exp.data_dir)


# --------------------------------------------------------------------------- the job function

_DATA_CACHE: dict[tuple, Any] = {}


def _data_for(train: TrainConfig, data_dir: Path):
    """The run's TrainData, kept for the next run of this process that trains on the same data."""
    sig = (train.dataset, train.extra if train.attack is Attack.mix and train.k > 0 else None, train.train_subset,
           train.test_subset, train.device, train.channels_last, str(Path(data_dir).absolute()))
    if sig not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[sig] = prepare_data(train, data_dir)
    return _DATA_CACHE[sig]


def write_summaries_locked(exp: ExperimentConfig) -> None:
    """Regenerate an experiment's summaries; the lock keeps a stale view from overwriting a newer one."""
    _write_summaries_locked(exp.dir, exp.norms)


def _done_record(exp_dir: Path, key: str) -> dict[str, Any] | None:
    for rec in read_results(exp_dir):
        if rec["key"] == key:
            return {**rec, "skipped": True}
    return None


def _outcome(job: SweepJob, status: str, error: str) -> dict[str, Any]:
    return {"key": job.key, "experiment": job.exp.name, "norm": job.run.norm, "seed": job.run.seed,
            "status": status, "error": error}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else "") if isinstance(e, ConfigError) else f"{type(e).__name__}: {text[0] if text else ''}"


def run_job(job: SweepJob, *, should_stop: Callable[[], bool] = lambda: False,
            on_epoch: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train one run of a sweep: load its data (kept across runs in this process), open its
    experiment dir, train it (resuming its checkpoint), append its record to results.jsonl and
    return the record. A run already in results.jsonl is not trained again: its record comes
    back with "skipped": true; nor is a run that another process is training (a second sweep of
    the same grid): {"status": "busy"}. Any error comes back as {"status": "failed", "error":
    one line}; a requested stop as {"status": "interrupted"}, after the run's checkpoint is written."""
    try:
        train = dataclasses.replace(job.exp.train, device=resolve_device(job.device))
        exp = dataclasses.replace(job.exp, train=train, overwrite=False)
        run = RunConfig(train, job.run.norm, job.run.seed)
        assert run.key == job.key  # the device is not part of a run's identity
        done = _done_record(exp.dir, run.key)
        if done is not None:
            return done
        data = _data_for(train, exp.data_dir)
        open_dir(exp)
        try:  # execute holds the run's lock, and skips the run if it finished while we were loading
            rec = execute(run, exp.dir, data, keep_checkpoints=exp.keep_checkpoints, on_epoch=on_epoch,
                          should_stop=should_stop)
        except RunBusy:
            return _outcome(job, "busy", "another process is training this run")
        write_summaries_locked(exp)
        return rec
    except StopRequested as e:
        return _outcome(job, "interrupted", str(e))
    except Exception as e:  # noqa: BLE001 - one run's failure must not end the sweep
        traceback.print_exc()
        return _outcome(job, "failed", _one_line(e))


@dataclass(frozen=True)
class Task:
    """What one worker process or one job-array element does: some runs, one after the other."""

    jobs: tuple[SweepJob, ...]
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES for this task's process (local executors)
    threads: int | None = None  # torch threads


def run_task(task: Task, *, on_epoch: Callable[[SweepJob, dict[str, float]], None] | None = None) -> list[dict[str, Any]]:
    """Run a task's runs in turn (the job function of every executor). Ctrl-C stops the run in
    progress at its next step, after writing its checkpoint; the runs after it are not started."""
    import torch

    if task.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = task.gpu  # before CUDA starts in this process
    if task.threads is not None:
        torch.set_num_threads(task.threads)
    out: list[dict[str, Any]] = []
    with sigint_requests_stop() as should_stop:
        for job in task.jobs:
            if should_stop():
                out.append(_outcome(job, "interrupted", "not started"))
                continue
            cb = (lambda rec, job=job: on_epoch(job, rec)) if on_epoch is not None else None
            out.append(run_job(job, should_stop=should_stop, on_epoch=cb))
    return out


class SubmititTask:
    """The callable submitit pickles. On a timeout or a preemption, submitit calls `checkpoint`
    and requeues the task: its finished runs are skipped, the run in progress resumes from its
    last checkpoint (written after every epoch)."""

    def __call__(self, task: Task) -> list[dict[str, Any]]:
        return run_task(task)

    def checkpoint(self, task: Task) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(SubmititTask(), task)


# --------------------------------------------------------------------------- executors


@dataclass
class SlurmOptions:
    """What each job of a Slurm array asks for (submitit's AutoExecutor parameters)."""

    partition: str | None = None
    time_min: int | None = None  # None: the partition's default (Slurm); a week (submitit-local)
    gpus_per_job: int = 1
    cpus_per_job: int | None = None
    mem_gb: int | None = None
    array_parallelism: int = 32
    extra: dict[str, str] = field(default_factory=dict)  # slurm_additional_parameters, e.g. account, qos
    folder: Path | None = None  # submitit's logs and pickles [default: <runs dir>/.submitit]


def parse_time(spec: str) -> int:
    """Slurm's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", spec.strip())
    if not m:
        raise ConfigError(f"--time '{spec}' is not a Slurm time: use minutes, H:MM:SS or D-HH:MM:SS")
    d, a, b, c = (int(x) if x is not None else None for x in m.groups())
    if d is not None:  # D-H, D-H:M, D-H:M:S
        minutes = d * 1440 + a * 60 + (b or 0) + (c or 0) / 60
    elif c is not None:  # H:M:S
        minutes = a * 60 + b + c / 60
    elif b is not None:  # M:S
        minutes = a + b / 60
    else:
        minutes = a
    if minutes <= 0:
        raise ConfigError(f"--time '{spec}' must be positive")
    return math.ceil(minutes)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _visible_gpus(device: str) -> list[str]:
    """The GPUs local workers are pinned to in turn: none unless runs train on "cuda" (or "auto"
    where CUDA is present) without an explicit index."""
    if device not in ("auto", "cuda"):
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env:
        return [g.strip() for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


class _Runner:
    """Runs tasks in `capacity` slots; `submit` starts tasks, `wait` returns the finished ones."""

    capacity: int
    poll_s: float = 0.5
    detach_on_stop = False  # on Ctrl-C: stop waiting for the tasks in flight (they run elsewhere)

    def submit(self, batch: list[tuple[int, Task]]) -> None: ...

    def wait(self, timeout: float) -> list[tuple[int, Task, list[dict[str, Any]]]]: ...

    def close(self) -> None: ...


class _InlineRunner(_Runner):
    """One run after the other, in this process."""

    capacity = 1

    def __init__(self, on_epoch=None) -> None:
        self.done: list[tuple[int, Task, list[dict[str, Any]]]] = []
        self.on_epoch = on_epoch

    def submit(self, batch):
        import torch

        for slot, task in batch:
            threads = torch.get_num_threads()
            try:
                self.done.append((slot, task, run_task(task, on_epoch=self.on_epoch)))
            finally:
                torch.set_num_threads(threads)

    def wait(self, timeout):
        done, self.done = self.done, []
        return done

    def close(self):
        _DATA_CACHE.clear()


def _init_worker() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # idle workers ignore Ctrl-C; a run in progress stops cleanly


class _PoolRunner(_Runner):
    """`workers` spawned processes, one per slot (a slot keeps its process, its GPU and its data)."""

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.capacity = workers
        self.ctx = multiprocessing.get_context("spawn")
        self.pools: dict[int, ProcessPoolExecutor] = {}
        self.futures: dict[Future, tuple[int, Task]] = {}

    def _pool(self, slot: int) -> ProcessPoolExecutor:
        if slot not in self.pools:
            self.pools[slot] = ProcessPoolExecutor(1, mp_context=self.ctx, initializer=_init_worker)
        return self.pools[slot]

    def submit(self, batch):
        for slot, task in batch:
            self.futures[self._pool(slot).submit(run_task, task)] = (slot, task)

    def wait(self, timeout):
        if not self.futures:
            return []
        done, _ = wait_futures(list(self.futures), timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        for fut in done:
            slot, task = self.futures.pop(fut)
            try:
                outcomes = fut.result()
            except Exception as e:  # the worker process died (killed, out of memory, ...)
                self.pools.pop(slot).shutdown(wait=False, cancel_futures=True)
                outcomes = [_outcome(j, "failed", f"worker process died ({_one_line(e)})") for j in task.jobs]
            out.append((slot, task, outcomes))
        return out

    def close(self):
        for pool in self.pools.values():
            pool.shutdown(wait=True, cancel_futures=True)


class _SubmititRunner(_Runner):
    """submitit: `cluster="local"` (a process per job, as many at a time as slots) or "slurm"
    (the whole sweep as one job array; Slurm keeps `array_parallelism` of it running)."""

    def __init__(self, cluster: str, folder: Path, capacity: int, params: dict[str, Any]) -> None:
        import submitit

        self.cluster = cluster
        self.capacity = capacity
        self.poll_s = 0.5 if cluster == "local" else 10.0
        self.detach_on_stop = cluster == "slurm"
        self.folder = folder
        self.executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)
        self.executor.update_parameters(**params)
        self.jobs: list[tuple[Any, int, Task]] = []
        self.job_ids: list[str] = []

    def submit(self, batch):
        fn = SubmititTask()
        jobs = self.executor.map_array(fn, [task for _, task in batch])
        for job, (slot, task) in zip(jobs, batch):
            self.jobs.append((job, slot, task))
            self.job_ids.append(str(job.job_id))

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            out, still = [], []
            for job, slot, task in self.jobs:
                if not job.done():
                    still.append((job, slot, task))
                    continue
                try:
                    outcomes = job.result()
                except Exception as e:  # the job crashed, timed out for good, or was cancelled
                    msg = str(e).strip().splitlines()
                    outcomes = [_outcome(j, "failed", f"job {job.job_id}: {type(e).__name__}: "
                                                      f"{msg[-1] if msg else ''}") for j in task.jobs]
                out.append((slot, task, outcomes))
            self.jobs = still
            if out or not self.jobs or time.monotonic() >= deadline:
                return out
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def close(self):
        try:  # submitit's local jobs leave an empty dir named after the "%j" placeholder
            (self.folder / "%j").rmdir()
        except OSError:
            pass


# --------------------------------------------------------------------------- the sweep


class Interrupted(Exception):
    """The sweep stopped on Ctrl-C: the runs in progress wrote their checkpoints (a Slurm array
    keeps running); re-running the sweep resumes it. `result` is what was done until then."""

    def __init__(self, message: str, result: "SweepResult") -> None:
        super().__init__(message)
        self.result = result


@dataclass
class SweepResult:
    records: list[dict[str, Any]]  # the grid's finished and diverged runs (this time or before), grid order
    ran: list[dict[str, Any]]  # what this invocation did: records, and failed / interrupted outcomes
    failed: list[dict[str, Any]]
    pending: list[SweepJob]  # runs not done when the sweep ended (failed, interrupted, not waited for)
    skipped: int  # runs that were done before the sweep started
    interrupted: bool = False
    job_ids: list[str] = field(default_factory=list)  # submitit's job ids


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
                    console=Console(stderr=True), disable=not enabled, transient=False)


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def describe(outcome: dict[str, Any]) -> str:
    """One line about a run's outcome."""
    head = f"{outcome['experiment']} {outcome['norm']} seed {outcome['seed']}"
    st = outcome["status"]
    if st == "finished":
        return f"{head}: final {outcome['final_acc']:.2f}%  best {outcome['best_acc']:.2f}%  ({outcome['wall_time_s']:.0f} s)"
    if st == "diverged":
        d = outcome.get("diverged") or {}
        return f"{head}: diverged at epoch {d.get('epoch')} (lr {d.get('lr', float('nan')):g})"
    return f"{head}: {st}: {outcome.get('error', '')}"


def run_sweep(
    grid: Grid,
    *,
    executor: str = "local",
    workers: int = 1,
    threads: int | None = None,
    runs_per_job: int = 1,
    slurm: SlurmOptions | None = None,
    wait: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every run of the grid that is not done yet and return the records.

    executor: "local" (in this process when workers == 1, else `workers` spawned processes, each
    pinned to one GPU in turn), "submitit-local" (submitit's local executor, `workers` jobs at a
    time) or "slurm" (a submitit job array; `slurm` holds what each job asks for). threads: torch
    threads per worker [default: CPUs // workers when workers > 1; --cpus-per-job on Slurm].
    Bad input raises ConfigError before anything is written. A run that fails does not stop the
    others: it is in `failed` and stays pending. Ctrl-C stops the runs in progress at their next
    step (after a checkpoint) and raises Interrupted; a Slurm array keeps running.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor '{executor}': choose {', '.join(EXECUTORS)}")
    for name, v in (("workers", workers), ("runs per job", runs_per_job)):
        if v < 1:
            raise ConfigError(f"{name} must be >= 1, got {v}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    slurm = slurm or SlurmOptions()
    if executor != "local":
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError(f"--executor {executor} needs submitit: pip install -e '.[slurm]'") from None
    if executor == "slurm":
        if shutil.which("sbatch") is None:
            raise ConfigError("--executor slurm needs Slurm's sbatch on the PATH (run it on a login node), "
                              "or use --executor submitit-local")
        if slurm.array_parallelism < 1:
            raise ConfigError(f"array parallelism must be >= 1, got {slurm.array_parallelism}")
        if slurm.gpus_per_job < 0:
            raise ConfigError(f"gpus per job must be >= 0, got {slurm.gpus_per_job}")
    check_data(grid)  # missing data: one error before anything is written

    states = status(grid)
    todo = [job for job, st, _ in states if st not in (DONE, DIVERGED, RUNNING)]
    skipped = sum(st in (DONE, DIVERGED) for _, st, _ in states)
    log = log or (lambda s: None)
    elsewhere = sum(st == RUNNING for _, st, _ in states)
    if elsewhere:
        log(f"{elsewhere} runs are being trained by another process: not started here")

    # Slots and what each task gets: a GPU (local executors) and a number of torch threads.
    if executor == "slurm":
        capacity, gpus = max(1, -(-len(todo) // runs_per_job)), []
        threads = threads or slurm.cpus_per_job
    else:
        capacity = workers
        gpus = _visible_gpus(grid.device) if (executor != "local" or workers > 1) else []
        if threads is None and workers > 1:
            threads = max(1, cpu_count() // workers)
    tasks = deque(Task(tuple(todo[i:i + runs_per_job])) for i in range(0, len(todo), runs_per_job))

    result = SweepResult(records=[], ran=[], failed=[], pending=[], skipped=skipped)
    for exp in {job.exp.name: job.exp for job in todo}.values():  # the dirs with work to do
        open_dir(exp)
    if executor != "local":  # a job may start in another working directory
        tasks = deque(Task(tuple(_absolute(j) for j in t.jobs)) for t in tasks)

    grid_jobs = [job for job, _, _ in states]
    by_key = {job.key: job for job in grid_jobs}
    touched: dict[str, ExperimentConfig] = {}
    counts = {"done": skipped, "diverged": sum(st == DIVERGED for _, st, _ in states), "failed": 0,
              "running": 0, "pending": len(todo)}
    t0 = time.monotonic()
    completed_now = 0

    def counts_text() -> str:
        return (f"done {counts['done']} · diverged {counts['diverged']} · failed {counts['failed']} · "
                f"running {counts['running']} · pending {counts['pending']}")

    def eta() -> str:
        left = counts["running"] + counts["pending"]
        if not left:
            return _fmt_eta(0)
        if not completed_now:
            return _fmt_eta(None)
        return _fmt_eta((time.monotonic() - t0) / completed_now * left)

    runner: _Runner | None = None
    show = progress and bool(todo) and (wait or executor != "slurm")
    with _progress(show) as bar, sigint_requests_stop() as should_stop:
        task_id = bar.add_task(f"sweep {Path(grid.source).name}", total=len(todo), counts=counts_text(), eta=eta())

        def refresh() -> None:
            bar.update(task_id, counts=counts_text(), eta=eta())

        def on_epoch(job: SweepJob, rec: dict[str, float]) -> None:
            bar.update(task_id, description=f"{job.label} · epoch {int(rec['epoch'])}/{job.exp.train.epochs}")

        if todo:
            if executor == "local" and workers == 1:
                runner = _InlineRunner(on_epoch)
            elif executor == "local":
                runner = _PoolRunner(workers)
            else:
                folder = slurm.folder or (grid.experiments[0].runs_dir / ".submitit")
                params: dict[str, Any] = {"name": "noiseattack-sweep",
                                          "timeout_min": slurm.time_min or (7 * 24 * 60 if executor != "slurm" else None)}
                if executor == "slurm":
                    params.update(gpus_per_node=slurm.gpus_per_job, cpus_per_task=slurm.cpus_per_job,
                                  mem_gb=slurm.mem_gb, slurm_partition=slurm.partition,
                                  slurm_array_parallelism=slurm.array_parallelism,
                                  slurm_additional_parameters=dict(slurm.extra) or None)
                runner = _SubmititRunner("local" if executor == "submitit-local" else "slurm", folder, capacity, params)
        try:
            free = list(range(capacity))
            in_flight = 0
            def stopping() -> bool:  # Ctrl-C here, or a run that stopped on it (in its own process group)
                return should_stop() or result.interrupted

            while tasks or in_flight:
                if stopping():
                    result.interrupted = True
                    if runner.detach_on_stop or not in_flight:
                        break
                batch = []
                while tasks and free and not stopping():
                    slot = free.pop(0)
                    task = dataclasses.replace(tasks.popleft(), gpu=gpus[slot % len(gpus)] if gpus else None,
                                               threads=threads)
                    batch.append((slot, task))
                if batch:
                    runner.submit(batch)
                    in_flight += len(batch)
                    n = sum(len(t.jobs) for _, t in batch)
                    counts["running"] += n
                    counts["pending"] -= n
                    if isinstance(runner, _SubmititRunner) and executor == "slurm":
                        log(f"submitted {n} runs as Slurm job array {runner.job_ids[0].split('_')[0]}")
                    if not wait and executor == "slurm" and not tasks:
                        refresh()
                        break
                refresh()
                for slot, task, outcomes in runner.wait(runner.poll_s):
                    free.append(slot)
                    free.sort()
                    in_flight -= 1
                    for job, out in zip(task.jobs, outcomes):
                        counts["running"] -= 1
                        result.ran.append(out)
                        touched[job.exp.name] = job.exp
                        st = out["status"]
                        if st in ("finished", "diverged"):
                            completed_now += 1
                            counts["done"] += 1
                            counts["diverged"] += st == "diverged"
                            bar.advance(task_id)
                        elif st == "failed":
                            completed_now += 1
                            counts["failed"] += 1
                            result.failed.append(out)
                            bar.advance(task_id)
                        elif st == "busy":  # another sweep trains it: still pending here
                            counts["pending"] += 1
                        else:
                            counts["pending"] += 1
                            result.interrupted = True
                        mark = {"finished": "✓ ", "diverged": "! ", "busy": "· ", "interrupted": "‖ "}.get(st, "✗ ")
                        log(mark + describe(out))
                    refresh()
            if isinstance(runner, _SubmititRunner):
                result.job_ids = list(runner.job_ids)
        finally:
            if runner is not None and not (runner.detach_on_stop and result.interrupted):
                runner.close()

    for exp in touched.values():
        write_summaries_locked(exp)
    done_keys = set()
    for exp in grid.experiments:
        wanted = {r.key for r in exp.runs()}
        for rec in read_results(exp.dir):
            if rec["key"] in wanted:
                result.records.append(rec)
                done_keys.add(rec["key"])
    order = {job.key: i for i, job in enumerate(grid_jobs)}
    result.records.sort(key=lambda r: order[r["key"]])
    result.pending = [by_key[k] for k in order if k not in done_keys]
    if result.interrupted:
        where = (f"Slurm job array {result.job_ids[0].split('_')[0]} keeps running (scancel it to stop it)"
                 if executor == "slurm" and result.job_ids else "runs in progress wrote their checkpoints")
        raise Interrupted(f"{len(result.pending)} runs not done; {where}", result)
    return result


def _absolute(job: SweepJob) -> SweepJob:
    exp = dataclasses.replace(job.exp, runs_dir=job.exp.runs_dir.absolute(), data_dir=job.exp.data_dir.absolute())
    return dataclasses.replace(job, exp=exp)
