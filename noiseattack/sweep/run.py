"""The state of a sweep's runs (`status`) and `run_sweep`, which runs the pending ones with an executor."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import chance
from ..config import ConfigError, ExperimentConfig
from ..experiment import (failure_where, fmt_eta, is_running, on_screen, open_dir, other_setting, run_paths,
                          sigint_requests_stop)
from ..results import read_results
from ..train import prepare_data
from .executors import (
    EXECUTORS, Runner, SlurmOptions, SubmititRunner, Task, cpu_count, make_runner, visible_gpus,
    write_experiment_summaries,
)
from .grid import Grid, SweepJob

# --------------------------------------------------------------------------- the state of a sweep

DONE, DIVERGED, RUNNING, PARTIAL, PENDING = "done", "diverged", "running", "partial", "pending"
STATES = (DONE, DIVERGED, RUNNING, PARTIAL, PENDING)


def replaced_by_overwrite(exp: ExperimentConfig) -> bool:
    """Whether --overwrite will start the experiment's dir afresh (it holds another setting): its
    records count for nothing."""
    return exp.overwrite and other_setting(exp) is not None


def status(grid: Grid) -> list[tuple[SweepJob, str, dict[str, Any] | None]]:
    """Every run of the grid with its state and its record when it has one. States: done,
    diverged (both over), running (another process trains it now), partial (a checkpoint, nobody
    training it), pending. Reads only."""
    out = []
    for exp in grid.experiments:
        replaced = replaced_by_overwrite(exp)
        records = {} if replaced else {r["key"]: r for r in read_results(exp.dir)}
        for run in exp.runs():
            job = SweepJob(exp, run, grid.device)
            rec = records.get(run.key)
            if rec is not None:
                state = DIVERGED if rec["status"] == "diverged" else DONE
            elif replaced:
                state = PENDING
            elif is_running(exp.dir, run):  # its lock: held by the process training it
                state = RUNNING
            elif run_paths(exp.dir, run)[0].exists():
                state = PARTIAL
            else:
                state = PENDING
            out.append((job, state, rec))
    return out


ORDERS = ("experiment", "norm")


def ordered(states: list[tuple[SweepJob, str, dict[str, Any] | None]], order: str = "experiment"
            ) -> list[tuple[SweepJob, str, dict[str, Any] | None]]:
    """`status(grid)`'s runs in the order a sweep starts them. "experiment": the grid's (one setting
    after another, each with every layer and seed). "norm": one layer after another, each in every
    setting, so that a layer's row of a leaderboard completes before the next layer starts; runs
    with a checkpoint first (their steps are done)."""
    if order not in ORDERS:
        raise ConfigError(f"unknown order '{order}': choose {', '.join(ORDERS)}")
    if order == "experiment":
        return list(states)
    norms = {n: i for i, n in enumerate(dict.fromkeys(job.run.norm for job, _, _ in states))}
    return [s for _, s in sorted(((s[1] != PARTIAL, norms[s[0].run.norm], i), s) for i, s in enumerate(states))]


def count_states(states: list[tuple[SweepJob, str, dict[str, Any] | None]]) -> dict[str, int]:
    """How many of `status(grid)`'s runs are in each of STATES (every state a key, 0 included)."""
    return {st: sum(1 for _, s, _ in states if s == st) for st in STATES}


def states_text(states: list[tuple[SweepJob, str, dict[str, Any] | None]]) -> str:
    """`count_states` in words, every state named: `3 done, 0 diverged, 1 running, 0 partial
    (checkpointed), 5 pending` (the dry runs' count line)."""
    n = count_states(states)
    return ", ".join(f"{n[st]} {st}" + (" (checkpointed)" if st == PARTIAL else "") for st in STATES)


def check_grid_data(grid: Grid) -> None:
    """Load (downloading where possible) every dataset the grid trains on, and check the subset
    sizes, so that missing data is one ConfigError before anything is written."""
    seen = set()
    for exp in grid.experiments:
        t = exp.train
        sig = (t.dataset, t.attack_spec().extra_datasets(t.attack_params()), t.train_subset, t.test_subset,
               str(exp.data_dir))
        if sig in seen:
            continue
        seen.add(sig)
        prepare_data(dataclasses.replace(t, device="cpu"), exp.data_dir)



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


def outcome_line(outcome: dict[str, Any]) -> str:
    """One line about a run's outcome."""
    head = f"{outcome['experiment']} {outcome['norm']} seed {outcome['seed']}"
    st = outcome["status"]
    if st == "finished":
        return (f"{head}: final {outcome['final_acc']:.2f}%{chance.run_note(outcome)}  "
                f"best {outcome['best_acc']:.2f}%  ({outcome['wall_time_s']:.0f} s)")
    if st == "diverged":
        d = outcome.get("diverged") or {}
        return f"{head}: diverged at epoch {d.get('epoch')} (lr {d.get('lr', float('nan')):g})"
    if st == "failed" and outcome.get("failed"):  # the run's model raised (a record in results.jsonl)
        return f"{head}: failed at {failure_where(outcome)}: {outcome.get('error', '')}"
    return f"{head}: {st}: {outcome.get('error', '')}"


def check_options(executor: str, workers: int, threads: int | None, runs_per_job: int, slurm: SlurmOptions) -> None:
    """The executor's options, and what it needs installed: one ConfigError before anything runs."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor '{executor}': choose {', '.join(EXECUTORS)}")
    for name, v in (("--workers", workers), ("--runs-per-job", runs_per_job)):
        if v < 1:
            raise ConfigError(f"{name} must be >= 1, got {v}")
    cpus = max(1, cpu_count())
    if executor != "slurm" and workers > cpus:  # Slurm's parallelism is --array-parallelism's
        raise ConfigError(f"--workers must be at most {cpus} (the CPUs here), got {workers}")
    if threads is not None and not 1 <= threads <= cpus:
        raise ConfigError(f"--threads must be 1 .. {cpus} (the CPUs here), got {threads}")
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


class _Tally:
    """The sweep's counts (done, diverged, failed, running, pending) and its ETA from the runs
    completed by this invocation."""

    def __init__(self, done: int, diverged: int, pending: int) -> None:
        self.counts = {"done": done, "diverged": diverged, "failed": 0, "running": 0, "pending": pending}
        self.t0 = time.monotonic()
        self.completed, self.todo = 0, pending

    def text(self) -> str:
        c = self.counts
        return (f"done {c['done']} · diverged {c['diverged']} · failed {c['failed']} · "
                f"running {c['running']} · pending {c['pending']}")

    def eta(self) -> str:
        left = self.counts["running"] + self.counts["pending"]
        if not left:
            return fmt_eta(0)
        return fmt_eta((time.monotonic() - self.t0) / self.completed * left if self.completed else None)

    def line(self) -> str:
        """This invocation's runs that ended, of those it set out to run, and the ETA, for a log line:
        "[3 of 8 done · ETA 0:12:30]" (the progress bar's count)."""
        return f"[{self.completed} of {self.todo} done · ETA {self.eta()}]"

    def submitted(self, n: int) -> None:
        self.counts["running"] += n
        self.counts["pending"] -= n

    def outcome(self, status: str) -> bool:
        """Count one run's outcome; True when it is over (finished, diverged or failed)."""
        self.counts["running"] -= 1
        if status in ("finished", "diverged", "failed"):
            self.completed += 1
            self.counts["failed" if status == "failed" else "done"] += 1
            self.counts["diverged"] += status == "diverged"
            return True
        self.counts["pending"] += 1  # busy (another sweep trains it) or interrupted: still pending
        return False


_MARKS = {"finished": "✓ ", "diverged": "! ", "busy": "· ", "interrupted": "‖ "}


def _drive(runner: Runner, tasks: deque, gpus: list[str], threads: int | None, result: SweepResult,
           tally: _Tally, bar, task_id, should_stop: Callable[[], bool], log: Callable[[str], None],
           detach_after_submit: bool) -> dict[str, ExperimentConfig]:
    """Feed the tasks to the runner's slots until all are back (or Ctrl-C), counting and logging
    every outcome into `result`; returns the experiments that got a new outcome."""
    touched: dict[str, ExperimentConfig] = {}
    free, in_flight = list(range(runner.capacity)), 0

    def refresh() -> None:
        bar.update(task_id, counts=tally.text(), eta=tally.eta())

    bar_off_screen = not bar.disable and not on_screen(bar)  # e.g. a log file: the bar is not redrawn

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
            batch.append((slot, dataclasses.replace(tasks.popleft(), gpu=gpus[slot % len(gpus)] if gpus else None,
                                                    threads=threads)))
        if batch:
            runner.submit(batch)
            in_flight += len(batch)
            n = sum(len(t.jobs) for _, t in batch)
            tally.submitted(n)
            if isinstance(runner, SubmititRunner) and runner.cluster == "slurm":
                log(f"submitted {n} runs as Slurm job array {runner.job_ids[0].split('_')[0]}")
            if detach_after_submit and not tasks:
                break
        refresh()
        for slot, task, outcomes in runner.wait(runner.poll_s):
            free.append(slot)
            free.sort()
            in_flight -= 1
            for job, out in zip(task.jobs, outcomes):
                result.ran.append(out)
                touched[job.exp.name] = job.exp
                if tally.outcome(out["status"]):
                    bar.advance(task_id)
                    if out["status"] == "failed":
                        result.failed.append(out)
                elif out["status"] != "busy":
                    result.interrupted = True
                line = _MARKS.get(out["status"], "✗ ") + outcome_line(out)
                log(line + "  " + tally.line() if bar_off_screen else line)
            refresh()
    refresh()
    return touched


def _gather(grid: Grid, result: SweepResult) -> None:
    """The grid's records (finished or diverged, this time or before) in grid order, and its pending runs."""
    jobs = grid.jobs()
    order = {job.key: i for i, job in enumerate(jobs)}
    for exp in grid.experiments:
        wanted = {r.key for r in exp.runs()}
        result.records += [rec for rec in read_results(exp.dir) if rec["key"] in wanted]
    result.records.sort(key=lambda r: order[r["key"]])
    done = {r["key"] for r in result.records}
    result.pending = [job for job in jobs if job.key not in done]


def _slots(grid: Grid, executor: str, workers: int, threads: int | None, runs_per_job: int,
           slurm: SlurmOptions, n_todo: int) -> tuple[int, list, int | None]:
    """How many tasks run at once, the GPUs the local executors pin them to in turn, and the torch
    threads each gets (CPUs // workers by default; --cpus-per-job on Slurm)."""
    if executor == "slurm":
        return max(1, -(-n_todo // runs_per_job)), [], threads or slurm.cpus_per_job
    gpus = visible_gpus(grid.device) if (executor != "local" or workers > 1) else []
    if threads is None and workers > 1:
        threads = max(1, cpu_count() // workers)
    return workers, gpus, threads


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
    order: str = "experiment",
) -> SweepResult:
    """Run every run of the grid that is not done yet and return the records.

    executor: "local" (in this process when workers == 1, else `workers` spawned processes, each
    pinned to one GPU in turn), "submitit-local" (submitit's local executor, `workers` jobs at a
    time) or "slurm" (a submitit job array; `slurm` holds what each job asks for). threads: torch
    threads per worker [default: CPUs // workers when workers > 1; --cpus-per-job on Slurm].
    order: which runs start first (`ordered`: "experiment", the grid's order, or "norm", layer by layer).
    Bad input raises ConfigError before anything is written. A run that fails does not stop the
    others: it is in `failed` and stays pending. Ctrl-C stops the runs in progress at their next
    step (after a checkpoint) and raises Interrupted; a Slurm array keeps running.
    """
    slurm = slurm or SlurmOptions()
    ordered([], order)  # an unknown order: one ConfigError before anything (data included) is touched
    check_options(executor, workers, threads, runs_per_job, slurm)
    check_grid_data(grid)  # missing data: one error before anything is written

    states = ordered(status(grid), order)
    todo = [job for job, st, _ in states if st not in (DONE, DIVERGED, RUNNING)]
    log = log or (lambda s: None)
    elsewhere = sum(st == RUNNING for _, st, _ in states)
    if elsewhere:
        log(f"{elsewhere} runs are being trained by another process: not started here")

    capacity, gpus, threads = _slots(grid, executor, workers, threads, runs_per_job, slurm, len(todo))
    tasks = deque(Task(tuple(todo[i:i + runs_per_job])) for i in range(0, len(todo), runs_per_job))

    skipped = sum(st in (DONE, DIVERGED) for _, st, _ in states)
    result = SweepResult(records=[], ran=[], failed=[], pending=[], skipped=skipped)
    for exp in {job.exp.name: job.exp for job in todo}.values():  # the dirs with work to do
        open_dir(exp)
    if executor != "local":  # a job may start in another working directory
        tasks = deque(Task(tuple(_absolute(j) for j in t.jobs)) for t in tasks)

    tally = _Tally(skipped, sum(st == DIVERGED for _, st, _ in states), len(todo))
    runner: Runner | None = None
    touched: dict[str, ExperimentConfig] = {}
    show = progress and bool(todo) and (wait or executor != "slurm")
    with _progress(show) as bar, sigint_requests_stop() as should_stop:
        task_id = bar.add_task(f"sweep {Path(grid.source).name}", total=len(todo), counts=tally.text(), eta=tally.eta())

        def on_epoch(job: SweepJob, rec: dict[str, float]) -> None:
            bar.update(task_id, description=f"{job.label} · epoch {int(rec['epoch'])}/{job.exp.train.epochs}")

        try:
            if todo:
                runner = make_runner(executor, workers, capacity, slurm,
                                     slurm.folder or (grid.experiments[0].runs_dir / ".submitit"), on_epoch)
                touched = _drive(runner, tasks, gpus, threads, result, tally, bar, task_id, should_stop, log,
                                 detach_after_submit=not wait and executor == "slurm")
            if isinstance(runner, SubmititRunner):
                result.job_ids = list(runner.job_ids)
        finally:
            if runner is not None and not (runner.detach_on_stop and result.interrupted):
                runner.close()

    for exp in touched.values():
        write_experiment_summaries(exp)
    _gather(grid, result)
    if result.interrupted:
        where = (f"Slurm job array {result.job_ids[0].split('_')[0]} keeps running (scancel it to stop it)"
                 if executor == "slurm" and result.job_ids else "runs in progress wrote their checkpoints")
        raise Interrupted(f"{len(result.pending)} runs not done; {where}", result)
    return result


def _absolute(job: SweepJob) -> SweepJob:
    exp = dataclasses.replace(job.exp, runs_dir=job.exp.runs_dir.absolute(), data_dir=job.exp.data_dir.absolute())
    return dataclasses.replace(job, exp=exp)
