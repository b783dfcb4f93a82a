"""Sweeps: a grid file (TOML) expanded into single runs, run by a local or a Slurm executor.

- grid.py: the grid file: its schema (derived from TrainConfig), its one-line errors, and its
  expansion (axes x attack settings x norms x seeds) into experiment dirs and runs; the syntax
  and the naming rule are in its docstring.
- run.py: the state of every run (`status`) and `run_sweep`, which runs the pending ones.
- estimate.py: what the runs left will cost (the dry run's last line), by finished runs.
- executors.py: the job function (`run_task`) and the runners below.

Every setting becomes an experiment dir in the usual layout (see experiment.py: config.json,
results.jsonl, summaries, tb/), every (setting, norm, seed) a run with its stable key
(`RunConfig.key`), so `report` and TensorBoard read a sweep's outputs unchanged. A bad grid
raises ConfigError (one line naming the key) before anything is written. Runs whose key is
already in their experiment's results.jsonl are skipped, so re-running a sweep resumes it.

Executors: `local` (in this process, or `workers` spawned processes, each pinned to one GPU in
turn), `submitit-local` (submitit's local executor: one process per job, the code path that
Slurm runs) and `slurm` (a submitit job array). A job runs `runs_per_job` runs in a row.
"""

from .executors import EXECUTORS, SlurmOptions, SubmititTask, Task, cpu_count, parse_time, run_job, run_task
from .grid import SWEEPABLE, TRAIN_KEYS, Grid, SweepJob, load_grid, parse_grid
from .estimate import Estimate, estimate_left, lent_runs
from .run import (
    DIVERGED, DONE, ORDERS, PARTIAL, PENDING, RUNNING, STATES, Interrupted, SweepResult, check_grid_data,
    check_options, count_states, ordered, outcome_line, run_sweep, states_text, status,
)

check_data, describe = check_grid_data, outcome_line  # their former names (train.check_data, stats.describe)

__all__ = [
    "DIVERGED", "DONE", "EXECUTORS", "Estimate", "Grid", "Interrupted", "ORDERS", "PARTIAL", "PENDING", "RUNNING", "STATES", "SlurmOptions",
    "SWEEPABLE", "SubmititTask", "SweepJob", "SweepResult", "Task", "check_grid_data", "check_options", "count_states", "cpu_count", "estimate_left", "lent_runs", "ordered", "outcome_line", "states_text",
    "load_grid",
    "parse_grid", "parse_time", "run_job", "run_sweep", "run_task", "status", "TRAIN_KEYS",
]
