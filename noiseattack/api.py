"""The Python API, for notebooks and scripts: what the CLI does, as functions.

    import noiseattack as na

    na.register_norm("mynorm", MyNorm, "BN with my twist")     # or an import path: "pkg.mod:MyNorm"
    result = na.run("constant", norms="bn,mynorm", alpha=2, beta=1, dataset="fmnist", epochs=3,
                    train_subset=4000, repeats=3, runs_dir="runs")
    rows = na.load_results("runs")                              # one dict per run
    report = na.make_report("runs", out_dir="runs")             # statistics, verdicts, plots
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from .config import resolve_train_config
from .experiment import ExperimentResult
from .experiment_setup import resolve_experiment


def run(attack: str = "clean", norms: str | Iterable[str] = "paper", *, repeats: int = 5, seed: int = 0,
        seeds: Iterable[int] | None = None, name: str | None = None, runs_dir: str | Path = "runs",
        data_dir: str | Path | None = None, keep_checkpoints: bool = False, overwrite: bool = False,
        progress: bool = False, log: Callable[[str], None] | None = print, **options: Any) -> ExperimentResult:
    """Train one setting for every norm and seed, exactly as `noiseattack ATTACK` does (same
    directory layout, resume, results and keys). `options` are the training options of the CLI with
    underscores: alpha, beta (constant), extra, k (mix), dataset, preset, depth, width, epochs,
    batch_size, lr, train_subset, device, ... Returns the experiment's records and summary rows.
    `seeds` and `milestones` may also be written as on the command line ("0,5,7"). Bad input (an
    unknown option, another attack's parameter, a value out of its limits, a batch that cannot fit in
    the device's memory, ...) raises `noiseattack.ConfigError` (one line) before anything is written."""
    import inspect

    from . import experiment
    from .config import check_options_known

    check_options_known(options, others=[p for p in inspect.signature(run).parameters if p != "options"])
    train = resolve_train_config(attack=attack, **options)
    exp = resolve_experiment(train, norms=norms if isinstance(norms, str) else tuple(norms), repeats=repeats,
                             seed=seed, seeds=seeds if seeds is None or isinstance(seeds, str) else list(seeds), name=name,
                             runs_dir=runs_dir, data_dir=data_dir, keep_checkpoints=keep_checkpoints,
                             overwrite=overwrite)
    return experiment.run(exp, progress=progress, log=log)


ROW_FIELDS = ("experiment", "norm", "seed", "status", "final_acc", "best_acc", "precise_acc", "precise_mixed_acc",
              "epochs_done", "wall_time_s", "cpu_time_s")  # None where a record has no such value


def load_results(paths: str | Path | Iterable[str | Path]) -> list[dict[str, Any]]:
    """One flat dict per run found under `paths` (experiment dirs, dirs searched recursively, or
    results.jsonl files): the run's outcome (ROW_FIELDS), its whole setting (dataset, attack, alpha,
    beta, extra, k, depth, width, epochs, lr, ...), `setting` (a2_b1, mnist_k32, clean), `origin`
    of the layer, and `dir`. `pandas.DataFrame(load_results(...))` makes a table of it."""
    from .config import train_config_from_dict
    from .report import find_experiment_dirs
    from .results import RESULTS_FILE, read_results

    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    dirs = [Path(p).parent if Path(p).name == RESULTS_FILE else Path(p) for p in items]
    rows = []
    for exp_dir in find_experiment_dirs(dirs):
        for rec in read_results(exp_dir):
            cfg = rec.get("config") or {}
            row = {k: rec.get(k) for k in ROW_FIELDS}
            row.update({k: v for k, v in cfg.items() if k not in row})
            try:
                row["setting"] = train_config_from_dict(cfg).setting_label()
            except (TypeError, ValueError, KeyError):
                row["setting"] = None
            row["origin"] = (rec.get("layer") or {}).get("origin")
            row["dir"] = str(exp_dir)
            rows.append(row)
    return rows


def make_report(dirs: str | Path | Iterable[str | Path] = "runs", out_dir: str | Path | None = None, *,
           plots: bool = True):
    """`noiseattack report` as a function: a Report (rows, overview, plots); written to `out_dir` if given."""
    from .report import build_report

    items = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
    return build_report(items, out_dir, plots=plots)


def write_tensorboard(dirs: str | Path | Iterable[str | Path] = "runs") -> tuple[int, int, list[Path]]:
    """`noiseattack tensorboard` as a function: TensorBoard logs rebuilt from the run records of every
    experiment dir under `dirs` (each recorded run that has no logs gets its curves and HParams
    session, each norm its mean run; `tbhparams.write_run_logs`). Returns (runs written, runs that
    had logs, the experiment dirs). A dir without records raises ConfigError."""
    from .fileio import locked
    from .report import find_experiment_dirs
    from .tbhparams import write_run_logs

    items = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
    exps = find_experiment_dirs(items)
    written = kept = 0
    for d in exps:
        with locked(d / ".locks" / "summary"):  # the mean runs' writers (training, sweeps) hold it too
            w, k = write_run_logs(d)
        written, kept = written + w, kept + k
    return written, kept, exps
