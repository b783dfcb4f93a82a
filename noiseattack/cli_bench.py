"""The commands `protocols`, `bench` and `leaderboard` (registered on cli.app): thin layers over
noiseattack.protocols and noiseattack.leaderboard. Bad input is one line on stderr and exit code 2,
before anything is written."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli import app, estimate_line, fail, print_line
from .config import ConfigError


@app.command()
def protocols(
    fmt: Annotated[str, typer.Option("--format", help="table (for people) or json (for programs).")] = "table",
) -> None:
    """List the benchmark protocols: their definitions and their measured cost per run."""
    from . import protocols as P

    if fmt not in ("table", "json"):
        fail(f"unknown --format '{fmt}': choose table or json")
    rows = [{**p.describe(), "cost": _cost(p)} for p in P.PROTOCOLS.values()]
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['name']} v{r['version']}: {r['summary']}")
        typer.echo(f"  device {r['device']}, {r['precision']}, threads {r['threads'] or 'not fixed'}, seeds 0-{r['seeds'] - 1}")
        typer.echo("  train: " + ", ".join(f"{k} {v}" for k, v in r["train"].items()))
        for s in r["settings"]:
            typer.echo(f"  setting {s['id']:9s} {s['title']}")
        typer.echo("  cost per run: " + (("; ".join(r["cost"])) if r["cost"] else "not measured yet (no committed runs)"))
        for note in r["notes"]:
            typer.echo(f"  note: {note}")


def _cost(proto) -> list[str]:
    """BN's cost per run in the committed runs, per setting and machine kind: the median of CPU times
    where runs recorded one, else of wall times (`results.median_cost`), and which."""
    from .leaderboard.board import machine_label, check_record, read_records
    from .results import median_cost

    runs_dir = proto.runs_dir()
    if not runs_dir.is_dir():
        return []
    by: dict[tuple[str, str], list[dict]] = defaultdict(list)
    try:
        for rec in read_records([runs_dir]):
            if rec.get("status") == "finished" and rec.get("norm") == "bn":
                by[(machine_label(rec), check_record(proto, rec))].append(rec)
    except ConfigError:
        return []
    out = []
    for (m, sid), recs in sorted(by.items()):
        cost = median_cost(recs)
        if cost is not None:
            out.append(f"bn {sid} {cost[0]:.0f} {'CPU-' if cost[1] else 'wall '}s on {m} (n={len(recs)})")
    return out


@app.command()
def bench(
    norm: Annotated[str, typer.Option(help="The layer(s) to bench, comma-separated (names, NORM+ATTN or pkg.module:Class).")],
    protocol: Annotated[str, typer.Option(help="The protocol (noiseattack protocols).")] = "fmnist",
    runs_dir: Annotated[Optional[Path], typer.Option(help="Where the runs go and the committed ones are read [default: docs/leaderboard/<protocol>/runs; with --with-baselines: runs/bench-<protocol>].")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Dataset root [default: $NOISEATTACK_DATA or ./data].")] = None,
    workers: Annotated[int, typer.Option(help="Runs at a time.")] = 1,
    threads: Annotated[Optional[int], typer.Option(help="torch threads per run [default and only value on a CPU protocol: the protocol's].")] = None,
    calibration_runs: Annotated[int, typer.Option(help="BN clean runs this machine trains for the calibration check.")] = 2,
    with_baselines: Annotated[bool, typer.Option("--with-baselines", help="Train BN here too and compare with it, instead of the committed runs (no calibration).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs and the calibration state; train nothing, write nothing.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress.")] = True,
) -> None:
    """Put a layer through a protocol's settings and seeds, and print its place on the leaderboard."""
    from rich.console import Console

    from . import protocols as P
    from .leaderboard import bench as B
    from .leaderboard.board import build

    console = Console()
    log = lambda line: print_line(console, line)  # noqa: E731
    try:
        proto = P.get(protocol)
        norms, runs, threads = _bench_inputs(proto, norm, runs_dir, with_baselines, workers, threads, calibration_runs)
        if with_baselines and "bn" not in norms:
            norms = ["bn", *norms]
        B.check_refs(proto, runs)
        doc = B.bench_grid(proto, norms, runs, data_dir)
        if dry_run:
            _bench_dry_run(proto, doc, runs, calibration_runs, with_baselines, workers)
            return
        if not with_baselines:
            _calibrate(proto, runs, data_dir, calibration_runs, workers, threads, log, progress)
        result = B.run_grid(doc, workers=workers, threads=threads, log=log, progress=progress)
        board = build(proto, [runs])
    except ConfigError as e:
        fail(str(e))
    for n in norms:
        for line in B.layer_lines(board, n):
            print_line(console, line)
    print_line(console, f"leaderboard: noiseattack leaderboard --protocol {proto.name}"
                + (f" --runs-dir {runs}" if runs != proto.runs_dir() else ""))
    if result.failed:
        raise typer.Exit(3)


def _bench_inputs(proto, norm: str, runs_dir: Path | None, with_baselines: bool, workers: int,
                  threads: int | None, calibration_runs: int):
    from .sweep import SlurmOptions, check_options
    from .zoo import check_layers, parse_norms

    if proto.threads is not None:  # before the machine's limits: no other value would do
        if threads is not None and threads != proto.threads:
            raise ConfigError(f"protocol {proto.name} fixes {proto.threads} thread(s) per run (results depend on the "
                              f"thread count): drop --threads {threads}")
        threads = proto.threads
    check_options("local", workers, threads, 1, SlurmOptions())
    norms = list(parse_norms(norm))
    check_layers(tuple(norms), constant=any(s.options["attack"] == "constant" for s in proto.settings))
    if not 1 <= calibration_runs <= 10:
        raise ConfigError(f"--calibration-runs must be 1 .. 10, got {calibration_runs}")
    default = Path("runs") / f"bench-{proto.name}" if with_baselines else proto.runs_dir()
    return norms, Path(runs_dir) if runs_dir is not None else default, threads


def _calibrate(proto, runs: Path, data_dir, k: int, workers: int, threads, log, progress: bool) -> None:
    from .leaderboard import bench as B
    from .leaderboard.board import CALIBRATION_DIR

    committed = B.reference_values(proto, runs)
    if len(committed) < 2:
        log(f"calibration: skipped ({len(committed)} committed bn clean runs in {runs}: nothing to compare with; "
            "--with-baselines trains BN here)")
        return
    calib_dir = runs.parent / CALIBRATION_DIR
    seeds = list(B.CALIBRATION_SEEDS[:k]) if k <= len(B.CALIBRATION_SEEDS) else \
        [B.CALIBRATION_SEEDS[0] + i for i in range(k)]
    here = B.this_machine(proto.device)
    local = B.reference_values(proto, calib_dir, tuple(seeds), machine=here)
    if len(local) < k:
        log(f"calibration: training bn (clean) for seeds {', '.join(map(str, seeds))} on this machine ({here})")
        B.run_grid(B.bench_grid(proto, ["bn"], calib_dir, data_dir, seeds=seeds, settings=["clean"]),
                   workers=min(workers, k), threads=threads, log=log, progress=progress)
        local = B.reference_values(proto, calib_dir, tuple(seeds), machine=here)
    cal = B.calibration(committed, local)
    log(cal.line())
    if cal.ok is False:
        raise ConfigError(f"{cal.line()}: this machine does not reproduce the committed BN, so its runs would not "
                          "compare with the committed ones; use --with-baselines to train the baselines here")


def _bench_dry_run(proto, doc, runs: Path, k: int, with_baselines: bool, workers: int) -> None:
    from . import sweep as S
    from .leaderboard import bench as B
    from .leaderboard.board import CALIBRATION_DIR

    grid = S.parse_grid(doc, source="bench", defer_device=True)  # a GPU protocol is dry-runnable anywhere
    states = S.status(grid)
    for job, st, _ in states:
        typer.echo(f"{st:8s} {job.key}  {job.exp.name}  {job.run.norm} seed {job.run.seed}")
    typer.echo(f"{proto.name} v{proto.version}: {len(states)} runs: {S.states_text(states)} "
               "(dry run: nothing trained or written)")
    typer.echo(estimate_line(S.estimate_left(grid, states), workers))  # a new layer: at its settings' medians
    if not with_baselines:
        local = B.reference_values(proto, runs.parent / CALIBRATION_DIR, tuple(B.CALIBRATION_SEEDS[:k]),
                                   machine=B.this_machine(proto.device))
        committed = B.reference_values(proto, runs)
        typer.echo(f"calibration: {len(committed)} committed bn clean runs; {len(local)} of {k} calibration runs "
                   f"of this machine found in {runs.parent / CALIBRATION_DIR}")


@app.command()
def leaderboard(
    protocol: Annotated[str, typer.Option(help="The protocol (noiseattack protocols).")] = "fmnist",
    runs_dir: Annotated[Optional[list[Path]], typer.Option(help="Runs dir(s) to read [default: docs/leaderboard/<protocol>/runs].")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Where leaderboard.{md,csv,json,html} go [default: docs/leaderboard/<protocol>].")] = None,
    fmt: Annotated[str, typer.Option("--format", help="What to print on stdout: md, csv or json.")] = "md",
) -> None:
    """Build a protocol's leaderboard from its committed runs: markdown, CSV, JSON and a static HTML page."""
    from . import leaderboard as L
    from . import protocols as P

    if fmt not in ("md", "csv", "json"):
        fail(f"unknown --format '{fmt}': choose md, csv or json")
    try:
        proto = P.get(protocol)
        board = L.build_leaderboard(proto, runs_dir)
        target = out if out is not None else proto.runs_dir().parent
        files = L.render_files(board)
        L.write_leaderboard(board, target)
    except ConfigError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write the leaderboard to {target}: {e.strerror or e}")
    typer.echo(files[{"md": "leaderboard.md", "csv": "leaderboard.csv", "json": "leaderboard.json"}[fmt]], nl=False)
    typer.echo(f"noiseattack: {len(board.rows)} layers from {board.records} runs; wrote "
               f"{', '.join(L.FILES)} to {target}", err=True)
