"""TensorBoard for an experiment: HParams (one session per run), the per-norm mean runs, and the
scalars each epoch writes.

    tb/<norm>-s<seed>/   one run: its curves per epoch, its final metrics and its HParams session
    tb/<norm>-mean/      per norm: the mean curves over the norm's finished runs (diverged runs are
                         left out, as in the summaries), and the experiment-level HParams config

Training writes them as it goes; `write_run_logs` rebuilds them from the run records (results.jsonl)
where a run has none (committed runs: their tb/ is not committed).

The Time Series tab colours each run on its own (by the run's position in the list), so that seeds
of one norm get unrelated colours; it can colour by a regex over run names and filter runs, and it
takes both from the URL (`runColorGroup=regex:...`, `runFilter=...`): `comparison_url` opens it on
the means only, coloured by norm. The experiment-level HParams config (which columns exist, and
which come first) lives in the mean runs, not in tb/ itself, where TensorBoard would list it as a
stray run named `.`. TensorBoard reads it from whichever run holds it; every mean run holds the same.

TensorBoard orders the HParams columns by (not `differs`, name), shows the first five, and then the
metrics; numbers are shown with 5 significant digits (a seed 0 as `0.0000`). So the config holds
the columns that tell runs apart, norm, seed (a string: `0`) and setting, and the metrics fit
beside them on a 1400 px screen; the setting's other hparams (attack, alpha, beta, extra, k,
dataset, depth, width, epochs) are constant within a dir and stay in each run's session, and a
diverged run's session ends as a failure (the Status filter).
The final metrics get tags that sort after `test/` and `train/`, so that the Time Series tab opens
on the curves rather than on single-point charts; each loss also has a log10 curve, on which a
run whose loss explodes does not flatten the others.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from .config import RunConfig, TrainConfig, train_config_from_dict

FINAL_ACC_TAG = "zz_final/test_acc"  # "zz_": after test/ and train/ in every sorted listing
BEST_ACC_TAG = "zz_final/best_test_acc"
METRICS = ((FINAL_ACC_TAG, "final_acc"), (BEST_ACC_TAG, "best_acc"))
LEADING = ("norm", "seed", "setting")  # the columns shown first, in this (alphabetical) order
COLUMNS = LEADING  # the experiment-level config's columns: few, so that the metrics fit on the screen
CURVES = (("test/acc", "test_acc"), ("test/loss", "test_loss"), ("train/acc", "train_acc"),
          ("train/loss", "train_loss"), ("train/lr", "lr"))  # (tag, key of a history record)
LOG_CURVES = (("test/log10_loss", "test_loss"), ("train/log10_loss", "train_loss"))
MEAN_SUFFIX = "-mean"  # tb/<norm>-mean
COLOR_BY_NORM = "(.*)-"  # a run name up to its last '-': the norm, for bn-s0 and bn-mean alike
_STAMP = ".content"  # in a mean run's dir: the config and means its events files hold (the last one wins)
KEEP_OLD_S = 600  # a mean run's replaced events files are deleted once this old: TensorBoard has read past them


def run_hparams(run: RunConfig, status: str) -> dict[str, Any]:
    """A run's hparams: what tells it apart first, then the setting's attack parameters and the rest.
    The seed is a string: TensorBoard shows a number with 5 significant digits (0.0000)."""
    t = run.train
    attack = t.attack_spec().hparams(t.attack_params())
    return {"norm": run.norm, "seed": str(run.seed), "setting": t.setting_label(), "attack": t.attack.value, **attack,
            "dataset": t.dataset, "depth": t.depth, "width": t.width, "epochs": t.epochs, "status": status}


def epoch_scalars(rec: dict[str, Any]) -> list[tuple[str, float]]:
    """The (tag, value) pairs of one epoch's record: the curves, then the losses' log10 (where the
    loss is finite and positive)."""
    out = [(tag, float(rec[key])) for tag, key in CURVES if rec.get(key) is not None]
    for tag, key in LOG_CURVES:
        v = rec.get(key)
        if v is not None and math.isfinite(v) and v > 0:
            out.append((tag, math.log10(v)))
    return out


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    data.version = metadata.PLUGIN_DATA_VERSION
    smd = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                                                 content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=smd)])


def _info(name: str, values: list[Any]) -> api_pb2.HParamInfo:
    info = api_pb2.HParamInfo(name=name, differs=name in LEADING)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        info.type = api_pb2.DATA_TYPE_FLOAT64
        info.domain_interval.min_value, info.domain_interval.max_value = min(values), max(values)
    else:
        info.type = api_pb2.DATA_TYPE_STRING
        info.domain_discrete.extend([str(v) for v in dict.fromkeys(values)])
    return info


def experiment_summary(train: TrainConfig, norms: list[str], seeds: list[int]) -> Summary:
    """The experiment-level config: the columns `COLUMNS` of `run_hparams` with their domains, and the metrics."""
    runs = [RunConfig(train, n, s) for n in norms for s in sorted(seeds)]
    rows = [run_hparams(r, "finished") for r in runs]
    domains = {name: [row[name] for row in rows] for name in COLUMNS}
    exp = api_pb2.Experiment(
        hparam_infos=[_info(name, values) for name, values in domains.items()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=label)
                      for tag, label in METRICS])
    return _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=exp))


def session_summaries(run: RunConfig, status: str) -> list[Summary]:
    """A run's session: its start (the hparams) and its end (success, or failure when it diverged)."""
    start = plugin_data_pb2.SessionStartInfo()
    for name, value in run_hparams(run, status).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            start.hparams[name].number_value = value
        else:
            start.hparams[name].string_value = str(value)
    end = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.STATUS_SUCCESS if status == "finished" else api_pb2.STATUS_FAILURE)
    return [_summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
            _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))]


# --------------------------------------------------------------------------- the per-norm mean runs


def mean_curves(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The mean over the finished runs among `records` (one norm's): per epoch, each history key
    over the runs that have a finite value for it; the mean final and best accuracy, seconds per
    epoch, and n."""
    finished = [r for r in records if r.get("status") == "finished"]
    epochs: dict[int, dict[str, list[float]]] = {}
    for r in finished:
        for h in r.get("history") or []:
            for _, key in CURVES:
                v = h.get(key)
                if v is not None and math.isfinite(v):
                    epochs.setdefault(int(h["epoch"]), {}).setdefault(key, []).append(float(v))
    history = [{"epoch": e, **{k: math.fsum(vs) / len(vs) for k, vs in keys.items()}}
               for e, keys in sorted(epochs.items())]
    final = {}
    for name in ("final_acc", "best_acc"):
        vs = [float(r[name]) for r in finished if r.get(name) is not None and math.isfinite(r[name])]
        if vs:
            final[name] = math.fsum(vs) / len(vs)
    per_epoch = [r["wall_time_s"] / len(r["history"]) for r in finished if r.get("wall_time_s") and r.get("history")]
    if per_epoch:  # the mean run's time per epoch: TensorBoard's relative time axis
        final["epoch_s"] = math.fsum(per_epoch) / len(per_epoch)
    return {"n": len(finished), "history": history, **final}


def comparison_url(port: int = 6006, means_only: bool = True) -> str:
    """TensorBoard's Time Series on the per-norm means only (`<norm>-mean`), coloured by norm and
    unsmoothed: clearing the run filter (or `means_only=False`) shows every seed in its norm's colour."""
    params = {"runFilter": MEAN_SUFFIX + "$"} if means_only else {}
    params.update({"runColorGroup": "regex:" + COLOR_BY_NORM, "smoothing": "0"})
    query = "&".join(f"{k}={quote(v, safe=':$()*.')}" for k, v in params.items())
    return f"http://localhost:{port}/?{query}#timeseries"


def write_mean_runs(exp_dir: Path) -> None:
    """Write tb/<norm>-mean/ for every norm of the experiment dir (its config.json): the experiment-level
    HParams config and the norm's mean curves (`mean_curves` of results.jsonl). Call it under the
    experiment's summary lock. The config that older versions wrote into tb/ itself (listed by
    TensorBoard as a run named `.`) is removed.

    TensorBoard reads a run's events files in name order, never goes back to one, and keeps the first
    HParams config it sees. So new curves go into a new file named to sort last, which starts by
    dropping the points before it (a SessionLog START at step 1; the config is at step 0), and the
    replaced files are deleted once KEEP_OLD_S old (a TensorBoard that is reading one cannot move on
    if it is gone). A new config (norms or seeds added) starts the run afresh: one file, config first.
    A mean run whose content has not changed is left as it is."""
    from .fileio import atomic_write_text
    from .results import read_results

    exp_dir = Path(exp_dir)
    try:
        cfg = json.loads((exp_dir / "config.json").read_text())
        train = train_config_from_dict(cfg["setting"])
        norms, seeds = list(cfg["norms"]), [int(s) for s in cfg["seeds"]]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no readable config.json: not an experiment dir this version wrote
    tb = exp_dir / "tb"
    for old in [*tb.glob("events.out.tfevents.*"), tb / ".hparams"]:
        old.unlink(missing_ok=True)
    records = read_results(exp_dir)
    config = experiment_summary(train, norms, seeds)
    config_hex = config.SerializeToString().hex()
    for norm in dict.fromkeys(norms + [r["norm"] for r in records]):
        means = mean_curves([r for r in records if r["norm"] == norm])
        run_dir = tb / f"{norm}{MEAN_SUFFIX}"
        for tmp in run_dir.glob(".mean.*.tmp"):  # left by a process killed while writing one
            tmp.unlink(missing_ok=True)
        events = sorted(run_dir.glob("events.out.tfevents.*"))
        try:
            old = json.loads((run_dir / _STAMP).read_text()) if events else {}
        except (OSError, ValueError):
            old = {}
        if old.get("config") != config_hex:  # afresh: the config first, in the run's first file
            for f in events:
                f.unlink(missing_ok=True)
            _write_mean_run(run_dir, events, config, means, train.epochs)
        elif old.get("means") != json.loads(json.dumps(means)):
            _write_mean_run(run_dir, events, None, means, train.epochs)
            for f in events[1:-1]:  # the first holds the config; the previous one may be being read
                if time.time() - f.stat().st_mtime > KEEP_OLD_S:
                    f.unlink(missing_ok=True)
        else:
            continue
        atomic_write_text(run_dir / _STAMP, json.dumps({"config": config_hex, "means": means}, sort_keys=True))


def _write_mean_run(run_dir: Path, previous: list[Path], config: Summary | None, means: dict[str, Any],
                    epochs: int) -> None:
    """A new events file in run_dir, named to sort after `previous`, complete before it appears under
    that name: the config (when given) at step 0, a SessionLog START at step 1 (on which TensorBoard
    drops the points it read from an earlier file), the mean curves and the mean final metrics."""
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    stamps = [p.name.split(".")[3] for p in previous]  # events.out.tfevents.<seconds>.<...>
    number = max([int(time.time())] + [int(t) + 1 for t in stamps if t.isdigit()])
    now = time.time()
    events = [Event(wall_time=now, step=0, file_version="brain.Event:2")]
    if config is not None:
        events.append(Event(wall_time=now, step=0, summary=config))
    events.append(Event(wall_time=now, step=1, session_log=SessionLog(status=SessionLog.START)))
    # wall times as the mean run's: TensorBoard's relative time axis
    events += _curve_events(means["history"], means, now, means.get("epoch_s", 0.0), epochs)
    _write_events(run_dir, events, f"events.out.tfevents.{number:010d}.noiseattack.mean")


def _curve_events(history: list[dict[str, Any]], finals: dict[str, Any], t0: float, epoch_s: float,
                  epochs: int) -> list:
    """Each epoch's scalars (`epoch_scalars`) at its step, then the final metrics of `finals` (METRICS'
    names, where finite) at the last step; wall times t0 + epoch_s per epoch."""
    from tensorboard.compat.proto.event_pb2 import Event

    events = [Event(wall_time=t0 + epoch_s * h["epoch"], step=int(h["epoch"]), summary=Summary(value=[
        Summary.Value(tag=tag, simple_value=value) for tag, value in epoch_scalars(h)])) for h in history]
    final = [Summary.Value(tag=tag, simple_value=float(finals[name])) for tag, name in METRICS
             if isinstance(finals.get(name), (int, float)) and math.isfinite(finals[name])]
    if final:
        step = len(history) or epochs
        events.append(Event(wall_time=t0 + epoch_s * step, step=step, summary=Summary(value=final)))
    return events


def _write_events(run_dir: Path, events: list, name: str) -> None:
    """An events file `name` in run_dir, complete before it appears under that name."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".mean.{os.getpid()}.tmp"  # no 'tfevents' in the name: TensorBoard does not read it
    with open(tmp, "wb") as f:
        writer = RecordWriter(f)
        for event in events:
            writer.write(event.SerializeToString())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, run_dir / name)


def write_run_logs(exp_dir: Path) -> tuple[int, int]:
    """TensorBoard logs of an experiment dir's recorded runs, where a run has none: committed runs carry
    their records (results.jsonl), not tb/, so a clone or another machine rebuilds the logs from them.
    Each finished or diverged run gets tb/<norm>-s<seed>/ as training writes it (its curves per epoch,
    its final and best accuracy, its HParams session), then each norm gets its mean run
    (`write_mean_runs`). Returns (runs written, runs that had logs already and were left as they are)."""
    from tensorboard.compat.proto.event_pb2 import Event

    from .results import read_results

    exp_dir, written, kept = Path(exp_dir), 0, 0
    for rec in read_results(exp_dir):
        if not isinstance(rec.get("config"), dict):
            continue  # not a record this version can read a setting from
        run = RunConfig(train_config_from_dict(rec["config"]), str(rec["norm"]), int(rec["seed"]))
        run_dir = exp_dir / "tb" / run.run_id
        if any(run_dir.glob("events.out.tfevents.*")):
            kept += 1
            continue
        history = rec.get("history") or []
        epoch_s = float(rec.get("wall_time_s") or 0.0) / max(1, len(history))
        t0 = time.time()
        events = [Event(wall_time=t0, step=0, file_version="brain.Event:2")]
        events += _curve_events(history, rec, t0, epoch_s, run.train.epochs)
        step = len(history) or run.train.epochs
        events += [Event(wall_time=t0 + epoch_s * step, step=step, summary=summary)
                   for summary in session_summaries(run, str(rec["status"]))]
        _write_events(run_dir, events, f"events.out.tfevents.{int(t0):010d}.noiseattack.records")
        written += 1
    write_mean_runs(exp_dir)
    return written, kept
