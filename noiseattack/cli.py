"""The `noiseattack` command line: a thin layer over `noiseattack.experiment.run`.

Every error a user can cause ends as one line on stderr and exit code 2, before anything is
written; a run whose model raises during training gets one line, is recorded as failed, the other
runs go on, and the command exits with 3; Ctrl-C checkpoints and exits with 130.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Sequence

import typer

from .startup import check_torch_pair

check_torch_pair()  # before the imports below load torchvision: a mismatched torch/torchvision pair is one line
from . import attacks, experiment
from .config import (ATTACK_FIELDS, BASE_SETTING, OMITTED_AT_DEFAULT, PERFORMANCE_FIELDS, PRESETS, TRAIN_FIELDS,
                     TRAIN_OPTIONS, ConfigError, TrainConfig, given_default, resolve_train_config, to_jsonable)
from .experiment_setup import MAX_REPEATS, resolve_experiment
from .memory import check_memory
from .options import bounds_text
from .train import load_checked_data

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Train CIFAR ResNets with swappable norms under batch-noise attacks, and compare them with statistics.",
)

EXIT_BAD_INPUT = 2
EXIT_RUNS_FAILED = 3  # some runs failed (their model raised); the others are done
EXIT_INTERRUPTED = 130


def fail(message: str) -> None:
    typer.echo(f"noiseattack: error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def _experiment_options(
    norm: Annotated[str, typer.Option(help="Comma-separated layers: names from `noiseattack norms`, NORM+ATTN "
                                           "(bn+eca), your own pkg.module:Class, 'paper' (bn,in,bnse,iebn) "
                                           "or 'all' (every registered norm, no NORM+ATTN combination).")] = "paper",
    data_dir: Annotated[Optional[Path], typer.Option(help="Dataset root [default: $NOISEATTACK_DATA or ./data].")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where experiment dirs go.")] = Path("runs"),
    name: Annotated[Optional[str], typer.Option(help="Experiment dir name [default: from the settings].")] = None,
    repeats: Annotated[int, typer.Option(help=f"Seeds per norm: seed, seed+1, ... Limits: >= 1, <= {MAX_REPEATS}.")] = 5,
    seed: Annotated[int, typer.Option(help="First seed.")] = 0,
    seeds: Annotated[Optional[str], typer.Option(help="Comma-separated seeds, e.g. 0,5,7 (overrides --repeats and --seed).")] = None,
    preset: Annotated[str, typer.Option(help="quick (ResNet-20, 30 epochs) or paper (the official IEBN setup: ResNet-164 with BatchNorm shortcuts, 164 epochs).")] = "quick",
    keep_checkpoints: Annotated[bool, typer.Option(help="Keep the checkpoints of finished runs.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing experiment dir that holds another setting.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Resolve and print the setting and its runs; train nothing, write nothing.")] = False,
) -> None:
    """The options of every attack's command besides the training options (`_option_parameters`)."""


def _preset_text(name: str) -> str:
    """` [default: the preset's: 128]`, ` [default: the preset's: same; bn for paper]`."""
    text = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else str(v)  # noqa: E731
    values = {p.value: PRESETS[p].get(name, BASE_SETTING[name]) for p in PRESETS}
    quick = values.pop("quick")
    others = [f"{text(v)} for {p}" for p, v in values.items() if v != quick]
    return f" [default: the preset's: {'; '.join([text(quick), *others])}]"


def _limits_text(m) -> str:
    """` Limits: >= 1, <= 10000.` from an option's declared bounds; "" without any."""
    text = bounds_text(m)
    return f" Limits: {text}." if text else ""


def _cli_parameter(name: str, tp: Any, default: Any, help: str) -> inspect.Parameter:
    """A `--name` option of a command (a bool as `--name/--no-name`), typed for typer."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (typing.Union, types.UnionType) else [tp]
    tp = args[0] if len(args) == 1 else float  # int | float (width): a number
    flag = "--" + name.replace("_", "-")
    decls = [f"{flag}/--no-{flag[2:]}"] if tp is bool else []
    annotation = Annotated[Optional[tp] if default is None else tp, typer.Option(*decls, help=help)]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _option_parameters() -> list[inspect.Parameter]:
    """Every training option (TrainConfig's fields but the attack's) as a command-line option: its help,
    its default (None where the preset or the machine decides), its type (`cli_type` where the
    command line writes it otherwise: milestones as "15,22")."""
    hints = typing.get_type_hints(TrainConfig)
    out = []
    for name in TRAIN_OPTIONS:
        m = TRAIN_FIELDS[name]
        help = m.help + _limits_text(m) + (_preset_text(name) if m.preset and "[default:" not in m.help else "")
        out.append(_cli_parameter(name, m.cli_type or hints[name], given_default(name), help))
    return out


def _resolved_parameters(fn: Callable[..., Any]) -> list[inspect.Parameter]:
    """fn's parameters (but **kwargs) with their annotations evaluated, `Annotated` extras kept.

    Under `from __future__ import annotations` they are strings; typer evaluates them itself
    only for a signature it computes, not for the `__signature__` set below, where a string
    annotation would hide the `typer.Option(help=...)` inside it."""
    hints = typing.get_type_hints(fn, include_extras=True)
    return [p.replace(annotation=hints.get(p.name, p.annotation), kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(fn).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]


def _by_dataset(spec: attacks.AttackSpec, name: str) -> str:
    """` [default: fmnist; mnist for --dataset fmnist]` for a parameter whose default depends on the
    dataset (`AttackSpec.defaults_for`); "" for the others."""
    from .datasets import DATASETS

    values = {d: defaults[name] for d in DATASETS if name in (defaults := spec.defaults_for(d))}
    if not values:
        return ""
    common = max(set(values.values()), key=list(values.values()).count)
    others = "".join(f"; {v} for --dataset {d}" for d, v in values.items() if v != common)
    return f" [default: {common}{others}]"


def _attack_command(spec: attacks.AttackSpec) -> None:
    """`noiseattack NAME`: the attack's parameters (its defaults, its help), then the training options
    and the experiment's options; registered on the app."""
    hints = typing.get_type_hints(spec.Params)
    own = []
    for f, m in spec.param_fields():
        per_dataset = _by_dataset(spec, f.name)
        own.append(_cli_parameter(f.name, hints[f.name], None if per_dataset else f.default,
                                  m.help + _limits_text(m) + per_dataset))
    params = own + _option_parameters() + _resolved_parameters(_experiment_options)

    def command(**o: Any) -> None:
        _run(spec.name, **o)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = spec.name
    app.command(name=spec.name, help=spec.help)(command)


def _train_config(attack: str, o: dict[str, Any]):
    """The command's options -> the resolved TrainConfig (the attack's parameters, the training options
    (`resolve_train_config` parses those the command line writes otherwise), the preset)."""
    options = {name: o[name] for name in (*ATTACK_FIELDS[1:], *TRAIN_OPTIONS) if name in o}
    return resolve_train_config(attack=attack, preset=o["preset"], **options)


def _run(attack: str, **o: Any) -> None:
    from rich.console import Console

    console = Console()
    try:
        train = _train_config(attack, o)
        check_memory(train)
        exp = resolve_experiment(
            train, norms=o["norm"], repeats=o["repeats"], seed=o["seed"], seeds=o["seeds"], name=o["name"], runs_dir=o["runs_dir"],
            data_dir=o["data_dir"], keep_checkpoints=o["keep_checkpoints"], overwrite=o["overwrite"],
        )
        experiment.check_dir(exp)
        if not o["dry_run"]:  # a dry run plans without the data (a login node, say)
            load_checked_data(train, exp.data_dir)  # every missing dataset, before the settings are shown
        console.print(f"[bold]{exp.name}[/bold] -> {exp.dir}", soft_wrap=True)  # one line, at any width
        shown = [n for n in TRAIN_OPTIONS if n in OMITTED_AT_DEFAULT or n in PERFORMANCE_FIELDS]  # not in identity
        console.print_json(json.dumps({"norms": list(exp.norms), "seeds": list(exp.seeds), **train.identity(),
                                       **to_jsonable({n: getattr(train, n) for n in shown})}))
        if o["dry_run"]:
            _print_runs(exp)
            return
        result = experiment.run(exp, progress=o["progress"], log=lambda line: print_line(console, line),
                                on_failure=lambda line: typer.echo(f"noiseattack: error: {line}", err=True))
    except ConfigError as e:
        fail(str(e))
    except experiment.Interrupted as e:
        typer.echo(f"noiseattack: interrupted ({e}); checkpoint written. Re-run the same command to resume.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    _print_summary(console, result.summary, exp.dir)
    if result.failed:  # each said in its own line as it happened; the others are done
        raise typer.Exit(EXIT_RUNS_FAILED)


def estimate_line(est, workers: int, cost_from: Sequence[Path] = ()) -> str:
    """The dry run's last line: what the runs left will cost, by the finished ones (`sweep.estimate_left`)
    and, for the `est.lent` runs with none of their own, by `cost_from`'s."""
    known, left = len(est.costs), len(est.costs) + est.unknown
    if not left:
        return "left: nothing to run"
    if not known:
        return f"left: {left} runs; no finished run in their settings to estimate their cost by"
    some = f"left: {left} runs; {known} of them" if est.unknown else f"left: {left} run{'s' if left != 1 else ''}"
    text = (f"{some} ≈ {est.seconds / 3600:.1f} h of run time (each at the median of its layer's finished runs in "
            f"its setting, else its layer's in another setting scaled by the layers both have, else the setting's; "
            "CPU time where a run trained at one CPU thread, else wall time)")
    if workers > 1:
        text += f", ≈ {est.finish_s(workers) / 3600:.1f} h at {workers} workers"
    if est.lent:
        text += (f"; {est.lent} of them priced by the runs in {', '.join(map(str, cost_from))} of their layer and "
                 "setting on another dataset, scaled by an epoch's images")
    return text + (f"; {est.unknown} with no finished run in their setting to go by" if est.unknown else "")


def _print_runs(exp) -> None:
    """--dry-run: one line per run (done, diverged or pending, its key) and a count."""
    from .results import read_failures, read_results

    records = {r["key"]: r for r in read_results(exp.dir)}
    failed = {r["key"] for r in read_failures(exp.dir)}
    for r in exp.runs():
        state = records[r.key]["status"] if r.key in records else "failed" if r.key in failed else "pending"
        typer.echo(f"{state:8s} {r.key}  {r.norm:4s} seed {r.seed}")
    n_done = sum(r.key in records for r in exp.runs())
    typer.echo(f"{exp.name}: {len(exp.runs())} runs, {n_done} done or diverged, "
               f"{len(exp.runs()) - n_done} to run (dry run: nothing trained or written)")


def _print_summary(console, rows: list[dict[str, Any]], exp_dir: Path) -> None:
    from rich.table import Table

    from .tbhparams import comparison_url

    columns = ("norm", "n", "mean", "std", "var", "min", "max", "diverged", "at_chance")
    table = Table(title=f"final test accuracy (%) · {exp_dir.name}")
    for col in columns:
        table.add_column(col.replace("_", " "), justify="left" if col == "norm" else "right")
    for r in rows:
        table.add_row(*[_table_cell(r, c) for c in columns])
    console.print(table)
    _chance_legend(console, rows)
    print_line(console, f"results: {exp_dir / 'results.jsonl'}")
    print_line(console, f"summaries: {exp_dir / 'summary.md'}")
    print_line(console, f"TensorBoard: tensorboard --logdir {exp_dir / 'tb'}")
    print_line(console, f"  the norms' means, coloured by norm: {comparison_url()}")


def _table_cell(row: dict[str, Any], column: str) -> str:
    """A summary row's value as a table shows it: floats to 2 decimals, the mean marked where runs are at chance."""
    from .chance import MARK

    v = row[column]
    text = v if isinstance(v, str) else (f"{v:.2f}" if isinstance(v, float) else str(v))
    return text + (MARK if column == "mean" and row.get("at_chance") else "")


def _chance_legend(console, rows: list[dict[str, Any]]) -> None:
    """The legend of the chance mark, under a table that shows it."""
    from .chance import legend

    if any(r.get("at_chance") for r in rows):
        print_line(console, legend("a mean"))


def print_line(console, line: str) -> None:
    """One line as it is: never broken by rich at the terminal width (a path stays copyable), no markup."""
    console.print(line, soft_wrap=True, markup=False, highlight=False)


for _spec in attacks.specs():  # clean, constant, mix, ...: one command each, in the registry's order
    _attack_command(_spec)


@app.command(name="attacks")
def attacks_command(
    fmt: Annotated[str, typer.Option("--format", help="table (for people) or json (for programs).")] = "table",
) -> None:
    """List every attack (its command) with its parameters: default, value when another attack runs, limits."""
    if fmt not in ("table", "json"):
        fail(f"unknown --format '{fmt}': choose table or json")
    if fmt == "json":
        typer.echo(json.dumps(attacks.describe_attacks(), indent=2))
        return
    typer.echo(attacks.markdown_table())


@app.command()
def norms(
    fmt: Annotated[str, typer.Option("--format", help="table (for people) or json (for programs).")] = "table",
) -> None:
    """List every layer: name, origin, parameters at 16/32/64 channels, and what it is."""
    from . import zoo

    if fmt not in ("table", "json"):
        fail(f"unknown --format '{fmt}': choose table or json")
    rows = zoo.describe_layers()
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    typer.echo(f"{'name':{width}s}  {'origin':11s}  {'params @16/32/64':>18s}  description")
    for r in rows:
        params = "/".join(str(r["params"][str(c)]) for c in zoo.CHECK_CHANNELS)
        typer.echo(f"{r['name']:{width}s}  {r['origin']:11s}  {params:>18s}  {r['description']}")
    typer.echo(f"\nAny NORM+ATTN works (norms: {', '.join(zoo.norm_names())}; attention: "
               f"{', '.join(zoo.attention_names())}), and so does your own layer by import path, "
               "--norm pkg.module:Class (called with the channel count). 'paper' = bn,in,bnse,iebn; "
               "'all' = every registered norm above, no NORM+ATTN combination.")


@app.command()
def report(
    runs_dirs: Annotated[Optional[list[Path]], typer.Argument(
        metavar="RUNS_DIR", show_default=False,
        help="Dirs searched recursively for results.jsonl [default: runs].")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Where report.md, report.csv, overview.md, overview.csv and the PNG plots go [default: the first RUNS_DIR].")] = None,
    fmt: Annotated[str, typer.Option("--format", help="What to print on stdout: md, csv or json.")] = "md",
    plots: Annotated[bool, typer.Option(help="Write the plots (box plots per attack, accuracy curves).")] = True,
    plot_format: Annotated[str, typer.Option(help="Plot files, comma-separated: png, svg, pdf (PNG is always "
                                                  "written: report.md shows it).")] = "png,svg",
    dpi: Annotated[int, typer.Option(help="Resolution of the PNG plots (50..1200).")] = 150,
) -> None:
    """Statistics over seeds, verdicts against BN (Welch's t for the means, a permutation test for the
    variances, Holm-adjusted), and plots, for every experiment found."""
    from . import report as report_lib

    dirs = list(runs_dirs) if runs_dirs else [Path("runs")]
    if fmt not in report_lib.FORMATS:
        fail(f"unknown --format '{fmt}': choose {', '.join(report_lib.FORMATS)}")
    try:
        rep = report_lib.build_report(dirs, out if out is not None else dirs[0], plots=plots, dpi=dpi,
                                      plot_formats=[f.strip().lower() for f in plot_format.split(",") if f.strip()])
    except ConfigError as e:
        fail(str(e))
    typer.echo(rep.render(fmt), nl=False)
    for w in rep.warnings:
        typer.echo(f"noiseattack: warning: {w}", err=True)
    where = rep.files[-1].parent if rep.files else Path(".")
    typer.echo(f"noiseattack: {len(rep.rows)} rows from {len(rep.sources)} experiment dir(s); wrote report.md, "
               f"report.csv, overview.md, overview.csv and {len(rep.plots)} plot(s) "
               f"({', '.join(sorted({f for p in rep.plots for f in p.files}))}) to {where}", err=True)


@app.command()
def tensorboard(
    dirs: Annotated[Optional[list[Path]], typer.Argument(
        metavar="RUNS_DIR", show_default=False, help="Dirs searched recursively for results.jsonl [default: runs].")] = None,
) -> None:
    """TensorBoard logs rebuilt from run records, for runs without them (committed runs carry results.jsonl, not tb/)."""
    from .api import write_tensorboard
    from .tbhparams import comparison_url

    dirs = list(dirs) if dirs else [Path("runs")]
    try:
        written, kept, exps = write_tensorboard(dirs)
    except ConfigError as e:
        fail(str(e))
    typer.echo(f"noiseattack: wrote the logs of {written} run(s) ({kept} had theirs, left as they are) and each norm's "
               f"mean in {len(exps)} experiment dir(s)")
    logdir = f"--logdir {dirs[0]}" if len(dirs) == 1 else "--logdir_spec " + ",".join(f"{i}:{d}" for i, d in enumerate(dirs))
    typer.echo(f"  tensorboard {logdir}\n  the norms' means, coloured by experiment and norm: {comparison_url()}")


@app.command()
def sweep(
    grid: Annotated[Path, typer.Argument(metavar="GRID.toml", help="The grid: attacks, norms, seeds, shared options (see scripts/grid_*.toml).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List every run and whether it is done; run nothing.")] = False,
    executor: Annotated[str, typer.Option(help="local, submitit-local (submitit's local executor: what Slurm runs) or slurm.")] = "local",
    workers: Annotated[int, typer.Option(help="Runs at a time (local, submitit-local); each worker is pinned to one GPU, round robin.")] = 1,
    threads: Annotated[Optional[int], typer.Option(help="torch threads per worker [default: CPUs // workers when workers > 1; --cpus-per-job on Slurm].")] = None,
    runs_per_job: Annotated[int, typer.Option(help="Runs one worker job (process or array task) does in a row.")] = 1,
    runs_dir: Annotated[Optional[Path], typer.Option(help="Where experiment dirs go [default: the grid's runs_dir, else ./runs].")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Dataset root [default: the grid's data_dir, $NOISEATTACK_DATA or ./data].")] = None,
    partition: Annotated[Optional[str], typer.Option(help="Slurm partition.")] = None,
    time: Annotated[Optional[str], typer.Option(help="Time limit per job: minutes, H:MM:SS or D-HH:MM:SS [default: the partition's].")] = None,
    gpus_per_job: Annotated[int, typer.Option(help="GPUs per Slurm job (0 on a CPU cluster).")] = 1,
    cpus_per_job: Annotated[Optional[int], typer.Option(help="CPUs per Slurm job.")] = None,
    mem_gb: Annotated[Optional[int], typer.Option(help="Memory per Slurm job (GB).")] = None,
    array_parallelism: Annotated[int, typer.Option(help="Slurm jobs of the array running at once.")] = 32,
    slurm_option: Annotated[Optional[list[str]], typer.Option(help="Any other sbatch option as KEY=VALUE (repeatable), e.g. account=abc.")] = None,
    submitit_dir: Annotated[Optional[Path], typer.Option(help="submitit's logs and pickles [default: RUNS_DIR/.submitit].")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the Slurm jobs (--no-wait: submit and exit).")] = True,
    progress: Annotated[bool, typer.Option(help="Show the sweep's progress.")] = True,
    cost_from: Annotated[Optional[list[Path]], typer.Option(help="With --dry-run: price runs with none of their own to go by by this runs dir's (or experiment dir's) runs of the same layer and setting on another dataset, scaled by an epoch's images (repeatable).")] = None,
    order: Annotated[str, typer.Option(help="Which runs start first: experiment (the grid's order, one setting after another) or norm (one layer after another in every setting, runs with a checkpoint first: a leaderboard row completes sooner).")] = "experiment",
) -> None:
    """Run a grid of experiments (attack settings x norms x seeds); finished runs are skipped."""
    from rich.console import Console

    from . import sweep as S

    console = Console()
    try:
        if executor not in S.EXECUTORS:
            raise ConfigError(f"unknown executor '{executor}': choose {', '.join(S.EXECUTORS)}")
        extra = {}
        for item in slurm_option or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--slurm-option '{item}' must be KEY=VALUE")
            extra[key.strip().replace("-", "_")] = value
        for name, v, low in (("--cpus-per-job", cpus_per_job, 1), ("--mem-gb", mem_gb, 1)):
            if v is not None and v < low:
                raise ConfigError(f"{name} must be >= {low}, got {v}")
        options = S.SlurmOptions(partition=partition, time_min=S.parse_time(time) if time else None,
                                 gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job, mem_gb=mem_gb,
                                 array_parallelism=array_parallelism, extra=extra, folder=submitit_dir)
        S.check_options(executor, workers, threads, runs_per_job, options)  # before the grid: a dry run too
        if cost_from and not dry_run:
            raise ConfigError("--cost-from prices a dry run's runs: use it with --dry-run")
        g = S.load_grid(grid, runs_dir=runs_dir, data_dir=data_dir, defer_device=executor == "slurm")
        states = S.ordered(S.status(g), order)
        if dry_run:
            _sweep_dry_run(grid, g, states, workers, cost_from or [])
            return
        n = S.count_states(states)
        todo, elsewhere = n[S.PARTIAL] + n[S.PENDING], n[S.RUNNING]
        console.print(f"[bold]{grid}[/bold]: {len(states)} runs in {len(g.experiments)} experiments, "
                      f"{len(states) - todo - elsewhere} done, "
                      + (f"{elsewhere} running in another process, " if elsewhere else "") + f"{todo} to run ({executor})",
                      soft_wrap=True)
        result = S.run_sweep(g, executor=executor, workers=workers, threads=threads, runs_per_job=runs_per_job,
                             slurm=options, wait=wait, progress=progress, order=order,
                             log=lambda line: print_line(console, line))
    except ConfigError as e:
        fail(str(e))
    except S.Interrupted as e:
        typer.echo(f"noiseattack: interrupted ({e}). Re-run the same command to resume.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    if executor == "slurm" and not wait:
        arrays = ", ".join(sorted({j.split("_")[0] for j in result.job_ids}))
        console.print(f"{len(result.pending)} runs submitted (Slurm job array {arrays}). Re-run the same command "
                      f"with --dry-run to see their state.", soft_wrap=True)
        return
    _print_sweep_summary(console, g, result.records)
    if result.failed:
        typer.echo(f"noiseattack: {len(result.failed)} runs failed (re-run the sweep to retry them):", err=True)
        for out in result.failed:
            typer.echo(f"  {out['experiment']} {out['norm']} seed {out['seed']}: {out['error']}", err=True)
        raise typer.Exit(EXIT_RUNS_FAILED)


def _sweep_dry_run(path: Path, grid, states, workers: int, cost_from: list[Path]) -> None:
    """sweep --dry-run: one line per run (its state, key, dir, and final accuracy once over), the
    count by state, and what the runs left will cost (by `cost_from`'s runs too, where given)."""
    from . import sweep as S
    from .chance import run_note

    est = S.estimate_left(grid, states, cost_from)  # first: a bad --cost-from is an error before any line
    for job, st, rec in states:
        acc = f"  final {rec['final_acc']:.2f}%{run_note(rec)}" if rec and rec.get("final_acc") is not None else ""
        typer.echo(f"{st:8s} {job.key}  {job.exp.dir}  {job.run.norm:4s} seed {job.run.seed}{acc}")
    typer.echo(f"{path}: {len(states)} runs in {len(grid.experiments)} experiments: {S.states_text(states)}")
    typer.echo(estimate_line(est, workers, cost_from))


def _print_sweep_summary(console, grid, records: list[dict[str, Any]]) -> None:
    from rich.table import Table

    from .results import summarize
    from .tbhparams import comparison_url

    columns = ("experiment", "norm", "n", "mean", "std", "diverged", "at_chance")
    table = Table(title="final test accuracy (%) per experiment and norm")
    for col in columns:
        table.add_column(col.replace("_", " "), justify="left" if col in ("experiment", "norm") else "right")
    rows = []
    for exp in grid.experiments:
        for r in summarize([x for x in records if x["experiment"] == exp.name], exp.norms):
            rows.append(r)
            table.add_row(*[_table_cell({**r, "experiment": exp.name}, c) for c in columns])
    console.print(table)
    _chance_legend(console, rows)
    runs_dirs = sorted({str(exp.runs_dir) for exp in grid.experiments})
    print_line(console, f"results: {', '.join(runs_dirs)}   TensorBoard: tensorboard --logdir {runs_dirs[0]}")
    print_line(console, f"  the norms' means, coloured by experiment and norm: {comparison_url()}")


def main() -> None:
    """Entry point: click's usage errors become one line on stderr with exit code 2; our own
    warnings (a torn line in results.jsonl) one line each."""
    import warnings

    from .fileio import NoiseattackWarning

    def show(message, category, *args, **kwargs) -> None:
        if issubclass(category, NoiseattackWarning):
            typer.echo(f"noiseattack: warning: {message}", err=True)
        else:
            default_show(message, category, *args, **kwargs)

    try:
        with warnings.catch_warnings():
            default_show, warnings.showwarning = warnings.showwarning, show
            code = app(standalone_mode=False)
    except _click_classes("UsageError") as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `noiseattack` alone: the help
            typer.echo(e.format_message(), err=True)
        else:
            message = " ".join(e.format_message().split())  # one line, even for a multi-line message
            typer.echo(f"noiseattack: error: {message}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except (*_click_classes("Abort"), typer.Abort):
        sys.exit(EXIT_INTERRUPTED)
    except (*_click_classes("Exit"), typer.Exit) as e:
        sys.exit(getattr(e, "exit_code", 0))
    sys.exit(code if isinstance(code, int) else 0)


def _click_classes(name: str) -> tuple[type[BaseException], ...]:
    """click's exception class `name`, from whichever click typer runs on: older typer releases
    depend on click, recent ones ship their own copy (typer._click) and do not install click."""
    classes = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            classes.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(classes)


from . import cli_bench  # noqa: E402,F401 - registers protocols, bench and leaderboard on `app`

if __name__ == "__main__":
    main()
