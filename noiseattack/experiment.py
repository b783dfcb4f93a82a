"""Experiments: one setting trained for every norm and seed, with its outputs under `runs/<name>/`.

    runs/<name>/config.json          the resolved setting, versions, machine, and the command to re-run it
    runs/<name>/results.jsonl        one line per finished (or diverged) run, appended, never rewritten
    runs/<name>/summary.{csv,md}     per norm: n, mean, std, var, min, max of final_acc (regenerated)
    runs/<name>/tb/<norm>-s<seed>/   TensorBoard scalars per epoch, and HParams
    runs/<name>/ckpt/<norm>-s<seed>.pt   the checkpoint of a run in progress

Re-running the same experiment resumes it: finished runs are skipped, an unfinished run
continues from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import platform
import shutil
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import __version__
from .config import Attack, ConfigError, ExperimentConfig, RunConfig, to_jsonable
from .fileio import append_jsonl, atomic_write_text
from .results import RESULTS_FILE, read_results, write_summaries
from .train import StopRequested, TrainData, prepare_data, train_run


class Interrupted(Exception):
    """The experiment stopped on SIGINT after checkpointing; re-running the command resumes it."""


@dataclass
class ExperimentResult:
    dir: Path
    records: list[dict[str, Any]]  # this experiment's runs (the norms and seeds asked for)
    summary: list[dict[str, Any]]


# --------------------------------------------------------------------------- provenance


def versions() -> dict[str, str]:
    import numpy
    import torchvision

    return {"noiseattack": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def machine(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"device": device, "cpu": cpu, "threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def cli_command(exp: ExperimentConfig) -> str:
    """The `noiseattack` command line that reproduces this experiment."""
    t = exp.train
    args = ["noiseattack", t.attack.value]
    if t.attack is Attack.constant:
        args += ["--alpha", f"{t.alpha!r}", "--beta", f"{t.beta!r}"]
    if t.attack is Attack.mix:
        args += ["--extra", str(t.extra), "--k", str(t.k)]
    args += ["--dataset", t.dataset, "--norm", ",".join(exp.norms), "--repeats", str(len(exp.seeds)),
             "--seed", str(exp.seeds[0]), "--depth", str(t.depth), "--block", t.block, "--width", str(t.width),
             "--epochs", str(t.epochs), "--batch-size", str(t.batch_size), "--lr", repr(t.lr),
             "--momentum", repr(t.momentum), "--weight-decay", repr(t.weight_decay),
             "--milestones", ",".join(map(str, t.milestones)), "--lr-gamma", repr(t.lr_gamma)]
    if t.train_subset:
        args += ["--train-subset", str(t.train_subset)]
    if t.test_subset:
        args += ["--test-subset", str(t.test_subset)]
    if t.amp:
        args.append("--amp")
    args += ["--name", exp.name, "--runs-dir", str(exp.runs_dir)]
    return " ".join(args)


# --------------------------------------------------------------------------- the experiment dir


def check_dir(exp: ExperimentConfig) -> None:
    """Refuse an existing experiment dir that holds a different setting (unless overwrite)."""
    cfg_file = exp.dir / "config.json"
    if not cfg_file.exists() or exp.overwrite:
        return
    try:
        old = json.loads(cfg_file.read_text())["identity"]
    except (json.JSONDecodeError, KeyError, OSError):
        raise ConfigError(f"{cfg_file} is unreadable: use --overwrite to start this experiment afresh") from None
    new = exp.train.identity()
    if old != new:
        diff = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                         if old.get(k) != new.get(k))
        raise ConfigError(f"{exp.dir} holds a different experiment ({diff}): use another --name, or --overwrite")


def open_dir(exp: ExperimentConfig) -> None:
    """Create (or, with overwrite, recreate) the experiment dir and write its config.json."""
    check_dir(exp)
    if exp.overwrite and exp.dir.exists():
        shutil.rmtree(exp.dir)
    norms, seeds = list(exp.norms), list(exp.seeds)
    cfg_file = exp.dir / "config.json"
    if cfg_file.exists():  # the same setting: this invocation may add norms or seeds
        old = json.loads(cfg_file.read_text())
        norms = list(dict.fromkeys(old.get("norms", []) + norms))
        seeds = sorted(set(old.get("seeds", [])) | set(seeds))
    doc = {
        "name": exp.name,
        "setting": to_jsonable(dataclasses.asdict(exp.train)),
        "identity": exp.train.identity(),
        "norms": norms,
        "seeds": seeds,
        "data_dir": str(exp.data_dir),
        "command": cli_command(exp),
        "versions": versions(),
        "machine": machine(exp.train.device),
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(cfg_file, json.dumps(doc, indent=2) + "\n")


def run_paths(exp_dir: Path, run: RunConfig) -> tuple[Path, Path]:
    """(checkpoint file, TensorBoard dir) of a run."""
    return exp_dir / "ckpt" / f"{run.run_id}.pt", exp_dir / "tb" / run.run_id


def checkpoint_progress(path: Path, run: RunConfig, steps_per_epoch: int) -> int:
    """Steps a run's checkpoint has already done (0 without a checkpoint)."""
    if not path.exists():
        return 0
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        return 0
    if payload.get("key") != run.key:
        return 0
    s = payload["state"]
    return s["epoch"] * steps_per_epoch + s["step"]


def _clean(v: Any) -> Any:
    """NaN and inf become null, so that results.jsonl is strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def hparams(run: RunConfig) -> dict[str, Any]:
    t = run.train
    return {"norm": run.norm, "attack": t.attack.value, "alpha": t.alpha, "beta": t.beta, "extra": t.extra or "none",
            "k": t.k, "dataset": t.dataset, "depth": t.depth, "width": t.width, "epochs": t.epochs, "seed": run.seed}


def execute(
    run: RunConfig,
    exp_dir: Path,
    data: TrainData,
    *,
    keep_checkpoints: bool = False,
    on_step: Callable[[], None] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Train one run (resuming its checkpoint), log it to TensorBoard, append its record to
    results.jsonl, and return the record."""
    from torch.utils.tensorboard import SummaryWriter

    ckpt, tb_dir = run_paths(exp_dir, run)
    writer: list[SummaryWriter] = []

    def log_epoch(rec: dict[str, float]) -> None:
        if not writer:  # purge events a killed attempt wrote at or after this epoch
            writer.append(SummaryWriter(str(tb_dir), purge_step=int(rec["epoch"])))
        w, e = writer[0], int(rec["epoch"])
        w.add_scalar("test/acc", rec["test_acc"], e)
        w.add_scalar("test/loss", rec["test_loss"], e)
        w.add_scalar("train/acc", rec["train_acc"], e)
        w.add_scalar("train/loss", rec["train_loss"], e)
        w.add_scalar("lr", rec["lr"], e)
        w.flush()
        if on_epoch is not None:
            on_epoch(rec)

    try:
        result = train_run(run, data, checkpoint=ckpt, on_step=on_step, on_epoch=log_epoch, should_stop=should_stop)
        w = writer[0] if writer else SummaryWriter(str(tb_dir))
        metrics = {"hparam/final_acc": result.final_acc, "hparam/best_acc": result.best_acc}
        # run_name="." keeps the HParams entry in the run's own log dir, next to its scalars.
        w.add_hparams({**hparams(run), "status": result.status}, metrics, run_name=".")
        w.close()
    finally:
        for w in writer:
            w.close()
    record = _clean({
        "key": run.key, "experiment": exp_dir.name, "norm": run.norm, "seed": run.seed, "status": result.status,
        "final_acc": result.final_acc, "best_acc": result.best_acc, "diverged": result.diverged,
        "wall_time_s": round(result.wall_time_s, 3), "epochs_done": len(result.history),
        "history": result.history, "config": run.to_dict(), "noiseattack": __version__,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    append_jsonl(exp_dir / RESULTS_FILE, record)
    if not keep_checkpoints:
        ckpt.unlink(missing_ok=True)
    return record


@contextmanager
def sigint_requests_stop() -> Iterator[Callable[[], bool]]:
    """While active, Ctrl-C asks the run to stop at the end of its current step (a second
    Ctrl-C interrupts at once). Yields the predicate the training loop polls."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag.is_set
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=False)


def run(exp: ExperimentConfig, *, progress: bool = True, log: Callable[[str], None] | None = None) -> ExperimentResult:
    """Run every (norm, seed) of an experiment that is not done yet, then write the summaries.

    Bad input (a different setting in the dir, missing data, ...) raises ConfigError before
    anything is written. SIGINT stops after the current step, checkpoints, and raises Interrupted.
    """
    check_dir(exp)
    data = prepare_data(exp.train, exp.data_dir)  # data errors come before any write
    open_dir(exp)
    done = {r["key"] for r in read_results(exp.dir)}
    pending = [r for r in exp.runs() if r.key not in done]
    bs = min(exp.train.batch_size, len(data.train))
    steps_per_epoch = len(data.train) // bs
    steps_per_run = exp.train.epochs * steps_per_epoch

    with _progress(progress) as bar, sigint_requests_stop() as should_stop:
        task = bar.add_task("starting", total=steps_per_run * len(pending))
        for i, r in enumerate(pending):
            ckpt, _ = run_paths(exp.dir, r)
            bar.advance(task, checkpoint_progress(ckpt, r, steps_per_epoch))
            label = f"[{i + 1}/{len(pending)}] {r.norm} seed {r.seed}"
            bar.update(task, description=label)

            def on_epoch(rec, label=label):
                bar.update(task, description=f"{label} · epoch {rec['epoch']}/{exp.train.epochs} · "
                                             f"test acc {rec['test_acc']:.2f}%")

            try:
                rec = execute(r, exp.dir, data, keep_checkpoints=exp.keep_checkpoints,
                              on_step=lambda: bar.advance(task), on_epoch=on_epoch, should_stop=should_stop)
            except StopRequested as e:
                raise Interrupted(f"{r.run_id}: {e}") from None
            if log is not None:
                acc = "diverged at epoch {epoch} (lr {lr:g})".format(**rec["diverged"]) if rec["diverged"] \
                    else f"final {rec['final_acc']:.2f}%  best {rec['best_acc']:.2f}%"
                log(f"{r.norm:5s} seed {r.seed}: {acc}  ({rec['wall_time_s']:.0f} s)")
            write_summaries(exp.dir, exp.norms)
    wanted = {r.key for r in exp.runs()}
    records = [r for r in read_results(exp.dir) if r["key"] in wanted]
    rows = [row for row in write_summaries(exp.dir, exp.norms) if row["norm"] in exp.norms]
    return ExperimentResult(exp.dir, records, rows)
