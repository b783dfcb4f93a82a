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

from .executors import EXECUTORS, SlurmOptions, SubmititTask, Task, cpu_count, parse_time, run_job, run_task
from .grid import Grid, SweepJob, load_grid, parse_grid
from .run import (
    DIVERGED, DONE, PARTIAL, PENDING, RUNNING, STATES, Interrupted, SweepResult, check_data, describe, run_sweep,
    status,
)

__all__ = [
    "DIVERGED", "DONE", "EXECUTORS", "Grid", "Interrupted", "PARTIAL", "PENDING", "RUNNING", "STATES", "SlurmOptions",
    "SubmititTask", "SweepJob", "SweepResult", "Task", "check_data", "cpu_count", "describe", "load_grid",
    "parse_grid", "parse_time", "run_job", "run_sweep", "run_task", "status",
]
