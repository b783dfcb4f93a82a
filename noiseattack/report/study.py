"""A study's doc, regenerated from its committed runs: the one tool behind every study script.

A study declares (`Study`): its doc and the paths it reads (each a command-line option with its
default), the generated regions of its doc (`<!-- NAME:begin -->` ... `<!-- NAME:end -->`), a `load`
that reads and checks everything before anything is written (reports, cells, claims' inputs; a bad
input is a ReportError, ConfigError or ValueError), and a `write` that writes the study's outputs
(its reports, claims) and returns the body of every region. A study whose paths follow another
option (scripts/study_protocol_doc.py: `--protocol` picks its runs, doc and out dir) declares that
option in `options` and gives the paths' defaults as functions of the parsed arguments (`Default`).
`run_study` is the pipeline: parse the command line, check that the doc has every region, load,
prune and write, replace the regions (text outside them is left as it is), write the doc
atomically; any error is one line on stderr and exit code 2, with nothing written. Running it
twice changes nothing.

The pieces studies share are here too: the per-epoch table (`epoch_table`), the status of a grid
(`status_line`), the validity checks a study's cells need (`one_training`, `one_cpu_kind`,
`fresh_seeds`), and `replace_region` (render's: the one "replace a region of a doc" there is).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError
from ..fileio import atomic_write_text
from ..config import train_config_from_dict
from .claims import Cells
from .collect import ReportError
from .render import replace_region, replace_regions  # the one "replace a region of a doc"


# --------------------------------------------------------------------------- the declaration and the pipeline


Default = Callable[[argparse.Namespace], Any]  # a path's default computed from the parsed arguments


@dataclass(frozen=True)
class Study:
    """A study's doc generator: see the module docstring."""

    prog: str  # the name in its messages: `study_doc: error: ...`
    description: str
    doc: Path | Default  # the doc whose regions are generated
    paths: dict[str, tuple[Any, str]]  # option name -> (default path, or paths with nargs, or a Default; help)
    regions: tuple[str, ...]
    load: Callable[[argparse.Namespace], Any]  # every read and check; nothing written
    write: Callable[[argparse.Namespace, Any], dict[str, str]]  # the outputs; returns each region's body
    done: str = "wrote {doc}"  # the line printed at the end (format keys: the arguments)
    nargs: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)  # option -> (count, metavars)
    # options that are not paths, parsed before the paths' defaults are resolved: option name ->
    # argparse's keywords for it (e.g. {"protocol": {"choices": [...], "default": "fmnist", "help": ...}})
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def parser(self) -> argparse.ArgumentParser:
        ap = argparse.ArgumentParser(description=self.description)
        for name, kwargs in self.options.items():
            ap.add_argument("--" + name.replace("_", "-"), **kwargs)
        for name, (default, help) in self.paths.items():
            count, metavar = self.nargs.get(name, (None, None))
            ap.add_argument("--" + name.replace("_", "-"), type=Path, default=None if callable(default) else default,
                            help=help or None, nargs=count, metavar=metavar)
        ap.add_argument("--doc", type=Path, default=None if callable(self.doc) else self.doc)
        return ap

    def parse_args(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """The command line's arguments; a path not given whose default is a function (a `Default`)
        is that function of the arguments (the options, and the paths given or with a plain default)."""
        args = self.parser().parse_args(argv)
        defaults = {**{name: default for name, (default, _) in self.paths.items()}, "doc": self.doc}
        for name, default in defaults.items():
            if callable(default) and getattr(args, name) is None:
                setattr(args, name, default(args))
        return args


def run_study(study: Study, argv: Sequence[str] | None = None) -> int:
    """Regenerate a study's outputs and doc (see the module docstring); the exit code."""
    args = study.parse_args(argv)

    def fail(message: str) -> int:
        print(f"{study.prog}: error: {message}", file=sys.stderr)
        return 2

    try:  # every check before anything is written
        text = args.doc.read_text()
        replace_regions(text, dict.fromkeys(study.regions, ""))
        state = study.load(args)
    except OSError as e:
        return fail(f"cannot read {e.filename or args.doc}: {e.strerror}")
    except (ReportError, ConfigError) as e:
        return fail(str(e))
    except ValueError as e:  # a missing region
        return fail(f"{args.doc}: {e}")
    bodies = study.write(args, state)
    atomic_write_text(args.doc, replace_regions(text, {name: bodies[name] for name in study.regions}))
    print(study.done.format(**vars(args)))
    return 0


# --------------------------------------------------------------------------- tables


def full_histories(records: Sequence[dict[str, Any]], epochs: int) -> list[list[dict[str, Any]]]:
    """The histories of the runs that trained all `epochs`."""
    return [r["history"] for r in records if len(r["history"]) == epochs]


def epochs_of(cells: Cells) -> int:
    """The most epochs a run of the cells trained."""
    return max(len(r["history"]) for rs in cells.values() for r in rs)


def epoch_table(rows: Sequence[tuple[list[str], Sequence[dict[str, Any]]]], key_head: Sequence[tuple[str, str]],
                epochs: int, shown: Sequence[int], cell: Callable[[float, float], str],
                tail: tuple[str, Callable[[list[float], list[float]], str]] | None = None) -> str:
    """A markdown table of means over seeds per epoch: one row per (key cells, records); the columns
    `key_head` ((head, markdown alignment) each), n, `ep e` for each epoch of `shown`: cell(mean test
    accuracy, mean training accuracy) over the runs that trained all `epochs`, and an optional last
    column (its head, and its text from the row's per-epoch mean test and training accuracies)."""
    head = [h for h, _ in key_head] + ["n", *(f"ep {e}" for e in shown), *([tail[0]] if tail else [])]
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join([a for _, a in key_head] + ["---:"] * (len(head) - len(key_head))) + "|"]
    for keys, records in rows:
        hist = full_histories(records, epochs)
        test = [float(np.mean([h[e]["test_acc"] for h in hist])) for e in range(epochs)]
        train = [float(np.mean([h[e]["train_acc"] for h in hist])) for e in range(epochs)]
        cells = [cell(test[e - 1], train[e - 1]) for e in shown]
        out.append("| " + " | ".join([*keys, str(len(hist)), *cells, *([tail[1](test, train)] if tail else [])]) + " |")
    return "\n".join(out)


def lr_runs(values: Sequence[float]) -> list[tuple[float, int, int]]:
    """(value, first epoch, last epoch) of each run of equal values, epochs from 1."""
    out: list[tuple[float, int, int]] = []
    for e, v in enumerate(values, 1):
        if out and math.isclose(out[-1][0], v):
            out[-1] = (out[-1][0], out[-1][1], e)
        else:
            out.append((v, e, e))
    return out


def status_line(cells: Cells, records: Sequence[dict[str, Any]], planned: int) -> str:
    """How much of a grid has run: finished runs of the planned ones, and diverged ones."""
    done = sum(len(rs) for rs in cells.values())
    diverged = sum(r["status"] == "diverged" for r in records)
    state = "complete" if done + diverged >= planned else "**incomplete: the statistics below are provisional**"
    return f"{done} of the grid's {planned} runs finished, {diverged} diverged: {state}."


# --------------------------------------------------------------------------- validity checks


def training_of(record: dict[str, Any], varying: Sequence[str]) -> str:
    """A run's training without the fields `varying` (what the study's cells vary)."""
    ident = train_config_from_dict(record["config"]).identity()
    return repr(sorted((k, v) for k, v in ident.items() if k not in varying))


def one_training(records: Sequence[dict[str, Any]], others: Sequence[dict[str, Any]], varying: Sequence[str],
                 message: str) -> None:
    """ReportError(`message`) unless `records` train as `others` do, but for the fields `varying`."""
    if records and {training_of(r, varying) for r in records} != {training_of(r, varying) for r in others}:
        raise ReportError(message)


def one_cpu_kind(records: Sequence[dict[str, Any]], what: str) -> None:
    """ReportError unless the runs ran on one CPU kind (model and torch's capability): comparisons
    within a study need one."""
    cpus = {(r.get("machine", {}).get("cpu"), r.get("machine", {}).get("cpu_capability")) for r in records}
    if len(cpus) > 1:
        raise ReportError(f"{what} ran on {len(cpus)} CPU kinds: its comparisons need one")


def fresh_seeds(seeds: set[int], earlier: Sequence[dict[str, Any]], what: str) -> None:
    """ReportError where `seeds` reuse the seeds of `earlier` runs (a control must be fresh runs)."""
    reused = sorted(seeds & {r["seed"] for r in earlier})
    if reused:
        raise ReportError(f"{what} reuse the main grid's seeds {reused}: they must be fresh runs")
