"""Experiments: one setting trained for every norm and seed, with its outputs under `runs/<name>/`.

    runs/<name>/config.json          the resolved setting, versions, machine, and the command to re-run it
    runs/<name>/results.jsonl        one line per finished, diverged (or failed) run, appended, never rewritten
    runs/<name>/summary.{csv,md}     per norm: n, mean, std, var, min, max of final_acc, diverged, at chance (regenerated)
    runs/<name>/tb/<norm>-s<seed>/   TensorBoard scalars per epoch, and the run's HParams session
    runs/<name>/tb/<norm>-mean/      the norm's mean curves over its finished runs, and the HParams config
    runs/<name>/ckpt/<norm>-s<seed>.pt   the checkpoint of a run in progress (removed when it ends)
    runs/<name>/.locks/<norm>-s<seed>    the run's lock: held by the process that trains it

Re-running the same experiment resumes it: finished runs are skipped, an unfinished run
continues from its checkpoint. One process at a time trains a run: `execute` holds the run's
lock (an flock, dropped by the kernel when its holder dies), for CLI runs and sweeps alike.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import platform
import shlex
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import __version__, chance
from .config import (TRAIN_FIELDS, TRAIN_OPTIONS, ConfigError, ExperimentConfig, RunConfig, TrainConfig, row_label,
                     to_jsonable)
from .fileio import append_jsonl, atomic_write_text, is_locked, locked
from .iebn import iebn_kernels
from .memory import check_memory
from .options import CHANGED
from .results import RECORD_SCHEMA, RESULTS_FILE, read_results, write_summaries_locked
from .zoo import has_iebn, layer_info
from .tbhparams import BEST_ACC_TAG, FINAL_ACC_TAG, epoch_scalars, session_summaries, write_mean_runs
from .train import StopRequested, TrainData, prepare_data, read_checkpoint, train_run


class Interrupted(Exception):
    """The experiment stopped on SIGINT after checkpointing; re-running the command resumes it."""


class RunBusy(Exception):
    """Another process holds the run's lock: it is training this run now."""


@dataclass
class ExperimentResult:
    dir: Path
    records: list[dict[str, Any]]  # this experiment's runs (the norms and seeds asked for), finished or diverged
    summary: list[dict[str, Any]]
    failed: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # this invocation's failed runs


# --------------------------------------------------------------------------- provenance


def _layer(run: RunConfig) -> dict[str, Any]:
    """What a results record says about the run's layer (`zoo.layer_info`), with where its attention sits."""
    info = layer_info(run.norm)
    if row_label(run.norm, run.train.attn_placement) != run.norm:
        info["description"] += (" (the attention once per residual block, before the addition)"
                                if run.train.attn_placement == "block" else
                                " (the attention once per stage, after its last block)")
    return info


def versions() -> dict[str, str]:
    import numpy
    import timm
    import torchvision

    return {"noiseattack": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def machine(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"device": device, "cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _run_machine(device: str) -> dict[str, Any]:
    """What a run record keeps of the machine: device, CPU model and capability, torch threads (and GPU)."""
    return {k: v for k, v in machine(device).items() if k != "platform"}


def _option_args(t: TrainConfig, name: str) -> list[str]:
    """A training option on the command line, as it declares (`options.Meta.cli`): always, or only where
    it is not the default (`--shortcut-norm bn`, `--no-augment`), or where `cli_when` holds."""
    m, v = TRAIN_FIELDS[name], getattr(t, name)
    hidden = m.cli == CHANGED and v == getattr(TrainConfig, name)  # at its default
    if m.cli is None or hidden or (m.cli_when is not None and not m.cli_when(t)):
        return []
    flag = "--" + name.replace("_", "-")
    if isinstance(v, bool):
        return [flag if v else f"--no-{flag[2:]}"]
    return [flag, ",".join(map(str, v)) if isinstance(v, tuple) else str(v)]


def cli_command(exp: ExperimentConfig, norms: list[str] | tuple[str, ...] | None = None,
                seeds: list[int] | tuple[int, ...] | None = None) -> str:
    """The `noiseattack` command line (shell-quoted) that reproduces this experiment: every field of
    the setting explicitly (no preset: each training option as it declares, `_option_args`), the exact
    seeds, and the device, data and output dirs."""
    t = exp.train
    norms = list(exp.norms if norms is None else norms)
    seeds = sorted(exp.seeds if seeds is None else seeds)
    args = ["noiseattack", t.attack.value, *t.attack_spec().cli_args(t.attack_params()), "--norm", ",".join(norms)]
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        args += ["--repeats", str(len(seeds)), "--seed", str(seeds[0])]
    else:
        args += ["--seeds", ",".join(map(str, seeds))]
    args += [arg for name in TRAIN_OPTIONS for arg in _option_args(t, name)]
    args += ["--data-dir", str(exp.data_dir), "--name", exp.name, "--runs-dir", str(exp.runs_dir)]
    return shlex.join(args)


# --------------------------------------------------------------------------- the experiment dir


def other_setting(exp: ExperimentConfig) -> str | None:
    """Why the experiment dir holds a different setting (a one-line diff), or None when it holds
    this setting or nothing yet."""
    cfg_file = exp.dir / "config.json"
    if not cfg_file.exists():
        return None
    try:
        old = json.loads(cfg_file.read_text())["identity"]
    except (json.JSONDecodeError, KeyError, TypeError, OSError):
        return f"{cfg_file} is unreadable"
    new = exp.train.identity()
    if old == new:
        return None
    diff = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                     if old.get(k) != new.get(k))
    return f"{exp.dir} holds a different experiment ({diff})"


def check_dir(exp: ExperimentConfig) -> None:
    """Refuse an existing experiment dir that holds a different setting (unless overwrite)."""
    why = other_setting(exp)
    if why is not None and not exp.overwrite:
        raise ConfigError(f"{why}: use another --name, or --overwrite to replace it")


def open_dir(exp: ExperimentConfig) -> None:
    """Create the experiment dir (with overwrite, replace one that holds a different setting) and
    write its config.json. A dir that holds the same setting is kept, with or without overwrite,
    so that re-running the same command always resumes."""
    check_dir(exp)
    if exp.overwrite and exp.dir.exists() and other_setting(exp) is not None:
        shutil.rmtree(exp.dir)
    with locked(exp.dir / ".locks" / "config"):  # two processes adding norms or seeds: no lost update
        remove_stale_temp_files(exp.dir, "config.json")
        _write_config(exp)
        with locked(exp.dir / ".locks" / "summary"):  # the HParams config, in tb/<norm>-mean (tbhparams)
            write_mean_runs(exp.dir)


def remove_stale_temp_files(folder: Path, name: str) -> None:
    """Remove the temp files that a process killed inside `atomic_write(folder / name)` left behind.
    Call it only while holding the lock under which `name` is written."""
    for tmp in folder.glob(f".{name}.*.tmp"):
        tmp.unlink(missing_ok=True)


def _write_config(exp: ExperimentConfig) -> tuple[list[str], list[int]]:
    """Write config.json; return the norms and seeds it lists (of this and earlier invocations)."""
    norms, seeds = list(exp.norms), list(exp.seeds)
    cfg_file = exp.dir / "config.json"
    created = None
    if cfg_file.exists():  # the same setting: this invocation may add norms or seeds
        old = json.loads(cfg_file.read_text())
        norms = list(dict.fromkeys(old.get("norms", []) + norms))
        seeds = sorted(set(old.get("seeds", [])) | set(seeds))
        created = old.get("created_at", old.get("written_at"))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    doc = {
        "name": exp.name,
        "setting": to_jsonable(dataclasses.asdict(exp.train)),
        "identity": exp.train.identity(),
        "norms": norms,
        "layers": {n: layer_info(n) for n in norms},
        "seeds": seeds,
        "data_dir": str(exp.data_dir),
        "command": cli_command(exp, norms, seeds),  # every norm and seed of the dir
        "versions": versions(),  # of the latest invocation; each record in results.jsonl has its own
        "machine": machine(exp.train.device),
        "created_at": created or now,
        "written_at": now,
    }
    atomic_write_text(cfg_file, json.dumps(doc, indent=2) + "\n")
    return norms, seeds


def run_paths(exp_dir: Path, run: RunConfig) -> tuple[Path, Path]:
    """(checkpoint file, TensorBoard dir) of a run."""
    return exp_dir / "ckpt" / f"{run.run_id}.pt", exp_dir / "tb" / run.run_id


def run_lock_path(exp_dir: Path, run: RunConfig) -> Path:
    return exp_dir / ".locks" / run.run_id


def is_running(exp_dir: Path, run: RunConfig) -> bool:
    """Whether a process (here or, on a shared file system, elsewhere) is training the run."""
    return is_locked(run_lock_path(exp_dir, run))


def done_record(exp_dir: Path, run: RunConfig) -> dict[str, Any] | None:
    """The run's record in results.jsonl, or None when it is not done."""
    for rec in read_results(exp_dir):
        if rec["key"] == run.key:
            return rec
    return None


def drop_checkpoint(exp_dir: Path, run: RunConfig) -> None:
    """Remove a run's checkpoint, and the ckpt/ dir once it is empty."""
    ckpt, _ = run_paths(exp_dir, run)
    ckpt.unlink(missing_ok=True)
    try:
        ckpt.parent.rmdir()
    except OSError:  # not empty (other runs in progress), or already gone
        pass


def checkpoint_position(path: Path, run: RunConfig) -> tuple[int, int] | None:
    """(epoch in progress, 0-based; steps of it done) of a run's checkpoint; None without a readable one."""
    if not path.exists():
        return None
    try:
        payload = read_checkpoint(path)
        if not isinstance(payload, dict) or payload.get("key") != run.key:
            return None
        return int(payload["state"]["epoch"]), int(payload["state"]["step"])
    except Exception:  # noqa: BLE001 - unreadable: the run starts afresh (train.load_checkpoint warns)
        return None


def _clean(v: Any) -> Any:
    """NaN and inf become null, so that results.jsonl is strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def execute(
    run: RunConfig,
    exp_dir: Path,
    data: TrainData,
    *,
    keep_checkpoints: bool = False,
    wait: bool = False,
    on_step: Callable[[], None] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Train one run (resuming its checkpoint), log it to TensorBoard, append its record to
    results.jsonl, and return the record.

    The run's lock is held throughout, so no two processes (CLI runs or sweep workers) train the
    same run at once. When another process holds it: RunBusy, or, with `wait`, wait for it (a
    requested stop ends the wait with StopRequested). A run found done once the lock is held is
    not trained again: its record comes back with "skipped": true."""
    lock = run_lock_path(exp_dir, run)
    while True:
        with locked(lock, block=False) as mine:
            if mine:
                done = done_record(exp_dir, run)
                if done is not None:  # finished by another process (or killed before its cleanup)
                    if not keep_checkpoints:
                        drop_checkpoint(exp_dir, run)
                    return {**done, "skipped": True}
                return _execute_locked(run, exp_dir, data, keep_checkpoints=keep_checkpoints, on_step=on_step,
                                       on_epoch=on_epoch, should_stop=should_stop)
        if not wait:
            raise RunBusy(f"{run.run_id}: another process is training this run")
        if should_stop():
            raise StopRequested("stopped while waiting for another process that trains this run")
        time.sleep(0.5)


def _execute_locked(run: RunConfig, exp_dir: Path, data: TrainData, *, keep_checkpoints: bool, on_step, on_epoch,
                    should_stop) -> dict[str, Any]:
    from torch.utils.tensorboard import SummaryWriter

    ckpt, tb_dir = run_paths(exp_dir, run)
    if ckpt.parent.is_dir():
        remove_stale_temp_files(ckpt.parent, ckpt.name)
    writer: list[SummaryWriter] = []

    def log_epoch(rec: dict[str, float]) -> None:
        if not writer:  # purge events a killed attempt wrote at or after this epoch
            writer.append(SummaryWriter(str(tb_dir), purge_step=int(rec["epoch"])))
        w, e = writer[0], int(rec["epoch"])
        for tag, value in epoch_scalars(rec):  # the curves, and the losses' log10
            w.add_scalar(tag, value, e)
        w.flush()
        if on_epoch is not None:
            on_epoch(rec)

    try:
        result = train_run(run, data, checkpoint=ckpt, on_step=on_step, on_epoch=log_epoch, should_stop=should_stop)
        if result.status != "failed":
            w = writer[0] if writer else SummaryWriter(str(tb_dir))
            # the HParams session, in the run's own log dir next to its curves; its columns: tb/<norm>-mean
            w.add_scalar(FINAL_ACC_TAG, result.final_acc, len(result.history))
            w.add_scalar(BEST_ACC_TAG, result.best_acc, len(result.history))
            for summary in session_summaries(run, result.status):
                w.file_writer.add_summary(summary)
            w.close()
    finally:
        for w in writer:
            w.close()
    failure = {"error": result.error, "failed": result.failed} if result.status == "failed" else {}
    record = _clean({
        "schema": RECORD_SCHEMA, "key": run.key, "experiment": exp_dir.name, "norm": run.norm, "seed": run.seed, "status": result.status,
        "final_acc": result.final_acc, "best_acc": result.best_acc, "diverged": result.diverged, **failure,
        "precise_acc": result.precise_acc,
        **({"precise_mixed_acc": result.precise_mixed_acc} if result.precise_mixed_acc is not None else {}),
        **({"chance": result.chance} if result.chance is not None else {}),
        "wall_time_s": round(result.wall_time_s, 3),
        **({"cpu_time_s": result.cpu_time_s} if result.cpu_time_s is not None else {}), "compile_s": result.compile_s,
        "epochs_done": len(result.history),
        "history": result.history, "config": run.to_dict(), "layer": _layer(run), "noiseattack": __version__,
        "versions": versions(), "machine": {**_run_machine(run.train.device), "compiled": result.compiled,
                                            **({"iebn_kernels": iebn_kernels(run.train.compile_norms)}
                                               if has_iebn(run.norm) else {})},
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    append_jsonl(exp_dir / RESULTS_FILE, record)
    if not keep_checkpoints:
        drop_checkpoint(exp_dir, run)
        if result.status == "failed":  # curves of a run that has no result: re-running starts it afresh
            shutil.rmtree(tb_dir, ignore_errors=True)
    return record


def failure_where(rec: dict[str, Any]) -> str:
    """Where a failed run's model raised: `building the model`, `epoch 1, step 3`, `evaluating after epoch 2`."""
    where = rec.get("failed") or {}
    if where.get("phase") == "build":
        return "building the model"
    if where.get("phase") == "eval":
        return f"evaluating after epoch {where.get('epoch')}"
    return f"epoch {where.get('epoch')}, step {where.get('step')}"


def failure_line(rec: dict[str, Any], setting: str) -> str:
    """The one line about a failed run: layer, setting, seed, where and the error."""
    return f"{rec['norm']} {setting} seed {rec['seed']}: {failure_where(rec)}: {rec.get('error')}"


@contextmanager
def sigint_requests_stop() -> Iterator[Callable[[], bool]]:
    """While active, Ctrl-C (SIGINT) or SIGTERM (a scheduler's preemption notice) asks the run to
    stop at the end of its current step; a second signal interrupts at once. Yields the predicate
    the training loop polls."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag.is_set
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag.is_set
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def fmt_eta(seconds: float | None) -> str:
    """h:mm:ss; "-:--:--" while unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def on_screen(bar) -> bool:
    """Whether a rich progress bar is shown and redrawn as it goes (rich's own test): False when it is
    disabled, or in a log file or a dumb terminal, where rich prints it only once at the end."""
    con = bar.console
    return not bar.disable and (con.is_jupyter or (con.is_terminal and not con.is_dumb_terminal))


def _progress(enabled: bool):
    from rich.console import Console
    from rich.table import Column
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    # The description gives way (an ellipsis) on a narrow terminal; the counts and times keep their width.
    description = TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1))
    return Progress(description, BarColumn(bar_width=10), MofNCompleteColumn(), TextColumn("steps"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=False, expand=True)


def prepare(exp: ExperimentConfig) -> TrainData:
    """Check the dir and the data (before any write), then create the experiment dir and its config.json.
    Every error, an OS error included (a runs dir that cannot be created), is a one-line ConfigError."""
    check_dir(exp)
    check_memory(exp.train)
    data = prepare_data(exp.train, exp.data_dir)
    try:
        open_dir(exp)
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(exp.dir) else ""
        raise ConfigError(f"cannot create the experiment dir {exp.dir}{where}: {e.strerror or e}") from None
    return data


def _pending_runs(exp: ExperimentConfig, log: Callable[[str], None]) -> list[RunConfig]:
    """The runs not done yet; says how many are done, and removes the checkpoints of done runs."""
    done = {r["key"] for r in read_results(exp.dir)}
    if not exp.keep_checkpoints:  # a kill between a run's record and its cleanup leaves a checkpoint
        for r in exp.runs():
            if r.key in done and run_paths(exp.dir, r)[0].exists():
                with locked(run_lock_path(exp.dir, r), block=False) as mine:
                    if mine:
                        drop_checkpoint(exp.dir, r)
    pending = [r for r in exp.runs() if r.key not in done]
    n_runs = len(exp.runs())
    if not pending:
        log(f"all {n_runs} runs are done; nothing to train (report: noiseattack report {exp.dir})")
    elif len(pending) < n_runs:
        log(f"{n_runs - len(pending)} of {n_runs} runs are done; {len(pending)} to train")
    return pending


def _run_line(r: RunConfig, rec: dict[str, Any]) -> str:
    """One line about a run that ended."""
    if rec.get("skipped"):
        how = "diverged" if rec["status"] == "diverged" else "finished"
        return f"{r.norm:5s} seed {r.seed}: {how} by another process"
    acc = "diverged at epoch {epoch} (lr {lr:g})".format(**rec["diverged"]) if rec["diverged"] \
        else f"final {rec['final_acc']:.2f}%{chance.run_note(rec)}  best {rec['best_acc']:.2f}%"
    return f"{r.norm:5s} seed {r.seed}: {acc}  ({rec['wall_time_s']:.0f} s)"


def _how_far(bar, t0: float, trained: int, ended: int, total: int) -> str:
    """`  [3 of 10 done · ETA 12m]`: the runs ended and the time left at this process's pace
    (`trained` steps since `t0`; the steps left are the bar's)."""
    left = bar.tasks[0].remaining or 0
    eta = (time.monotonic() - t0) / trained * left if trained else (0 if not left else None)
    return f"  [{ended} of {total} done · ETA {fmt_eta(eta)}]"


def run(exp: ExperimentConfig, *, progress: bool = True, log: Callable[[str], None] | None = None,
        on_failure: Callable[[str], None] | None = None) -> ExperimentResult:
    """Run every (norm, seed) of an experiment that is not done yet, then write the summaries.

    A run whose model raises (a layer's bug, at some step) ends as "failed": `on_failure` (default
    `log`) gets one line (`failure_line`), its record (status "failed", no result) goes to
    results.jsonl, and the other runs go on; re-running the command trains it again.

    Bad input (a different setting in the dir, missing data, ...) raises ConfigError before
    anything is written. SIGINT stops after the current step, checkpoints, and raises Interrupted.
    A run that another process is training (a sweep, another CLI run) is left to it: the other
    runs go first, then this process waits for it to end (and resumes it if that process died).
    """
    log = log or (lambda s: None)
    on_failure = on_failure or log
    failed: list[dict[str, Any]] = []
    data = prepare(exp)
    pending = _pending_runs(exp, log)
    bs = min(exp.train.batch_size, len(data.train))
    steps_per_epoch = len(data.train) // bs
    steps_per_run = exp.train.epochs * steps_per_epoch

    with _progress(progress and bool(pending)) as bar, sigint_requests_stop() as should_stop:
        task = bar.add_task("starting", total=steps_per_run * len(pending))
        off_screen = not bar.disable and not on_screen(bar)
        t0, trained = time.monotonic(), [0]  # steps trained by this process (not those resumed)
        queue = [(r, False) for r in pending]  # (run, wait for its lock): busy runs come back at the end
        i = ended = 0
        while i < len(queue):
            r, wait = queue[i]
            i += 1
            if should_stop():
                raise Interrupted(f"stopped before {r.run_id}")
            ckpt, _ = run_paths(exp.dir, r)
            pos = checkpoint_position(ckpt, r)
            start = 0 if pos is None else pos[0] * steps_per_epoch + pos[1]
            if pos is not None and not wait:
                log(f"resuming {r.run_id} from epoch {pos[0] + 1}, step {pos[1]}")
            label = f"[{ended + 1}/{len(pending)}] {r.run_id}"
            bar.update(task, description=label)
            advanced = [0]

            def on_step() -> None:
                advanced[0] += 1
                bar.advance(task)

            def on_epoch(rec, label=label):
                bar.update(task, description=f"{label} epoch {rec['epoch']}/{exp.train.epochs} "
                                             f"test {rec['test_acc']:.1f}%")

            if wait:
                log(f"{r.norm:5s} seed {r.seed}: waiting for the other process that is training it")
            try:
                bar.advance(task, start)
                rec = execute(r, exp.dir, data, keep_checkpoints=exp.keep_checkpoints, wait=wait,
                              on_step=on_step, on_epoch=on_epoch, should_stop=should_stop)
            except RunBusy:
                bar.advance(task, -start)
                log(f"{r.norm:5s} seed {r.seed}: another process is training it; the other runs go first")
                queue.append((r, True))
                continue
            except StopRequested as e:
                raise Interrupted(f"{r.run_id}: {e}") from None
            bar.advance(task, steps_per_run - start - advanced[0])
            ended += 1
            if rec["status"] == "failed":
                failed.append(rec)
                on_failure(failure_line(rec, exp.train.setting_label()))
                continue
            line = _run_line(r, rec)
            if off_screen:  # a log file: the bar is not redrawn there, so the line says how far the runs are
                trained[0] += advanced[0]
                line += _how_far(bar, t0, trained[0], ended, len(pending))
            log(line)
            write_summaries_locked(exp.dir, exp.norms)
    wanted = {r.key for r in exp.runs()}
    records = [r for r in read_results(exp.dir) if r["key"] in wanted]
    rows = [row for row in write_summaries_locked(exp.dir, exp.norms) if row["norm"] in exp.norms]
    return ExperimentResult(exp.dir, records, rows, failed)
