"""Executors: the job function every executor runs (`run_task`), and the runners that run tasks
in this process, in spawned processes, or through submitit (its local executor, or Slurm)."""

from __future__ import annotations

import os
import re
import math
import time
import traceback
import dataclasses
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError, ExperimentConfig, RunConfig, TrainConfig, resolve_device
from ..experiment import RunBusy, execute, open_dir, sigint_requests_stop
from ..results import read_results
from ..results import write_summaries_locked
from ..train import StopRequested, prepare_data
from .grid import SweepJob

EXECUTORS = ("local", "submitit-local", "slurm")

# --------------------------------------------------------------------------- the job function

_DATA_CACHE: dict[tuple, Any] = {}


def _data_for(train: TrainConfig, data_dir: Path):
    """The run's TrainData, kept for the next run of this process that trains on the same data."""
    sig = (train.dataset, train.attack_spec().extra_datasets(train.attack_params()), train.train_subset,
           train.test_subset, train.device, train.channels_last, str(Path(data_dir).absolute()))
    if sig not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[sig] = prepare_data(train, data_dir)
    return _DATA_CACHE[sig]


def write_experiment_summaries(exp: ExperimentConfig) -> None:
    """Regenerate an experiment's summaries (`results.write_summaries_locked`: the lock keeps a stale view
    from overwriting a newer one)."""
    write_summaries_locked(exp.dir, exp.norms)


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
        write_experiment_summaries(exp)
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


def visible_gpus(device: str) -> list[str]:
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


class Runner:
    """Runs tasks in `capacity` slots; `submit` starts tasks, `wait` returns the finished ones."""

    capacity: int
    poll_s: float = 0.5
    detach_on_stop = False  # on Ctrl-C: stop waiting for the tasks in flight (they run elsewhere)

    def submit(self, batch: list[tuple[int, Task]]) -> None: ...

    def wait(self, timeout: float) -> list[tuple[int, Task, list[dict[str, Any]]]]: ...

    def close(self) -> None: ...


class _InlineRunner(Runner):
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


class _PoolRunner(Runner):
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


class SubmititRunner(Runner):
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


def make_runner(executor: str, workers: int, capacity: int, slurm: SlurmOptions, folder: Path,
                on_epoch: Callable[[SweepJob, dict[str, float]], None] | None = None) -> Runner:
    """The runner for `executor` with `capacity` slots: inline (local, one worker; `on_epoch` sees
    every epoch), a process pool (local), or submitit (submitit-local, slurm) logging to `folder`."""
    if executor == "local":
        return _InlineRunner(on_epoch) if workers == 1 else _PoolRunner(workers)
    params: dict[str, Any] = {"name": "noiseattack-sweep",
                              "timeout_min": slurm.time_min or (7 * 24 * 60 if executor != "slurm" else None)}
    if executor == "slurm":
        params.update(gpus_per_node=slurm.gpus_per_job, cpus_per_task=slurm.cpus_per_job, mem_gb=slurm.mem_gb,
                      slurm_partition=slurm.partition, slurm_array_parallelism=slurm.array_parallelism,
                      slurm_additional_parameters=dict(slurm.extra) or None)
    return SubmititRunner("local" if executor == "submitit-local" else "slurm", folder, capacity, params)
