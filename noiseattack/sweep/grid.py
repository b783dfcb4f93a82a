"""The grid file (TOML): its schema, its parsing and its expansion into experiments and runs.

A grid names the shared training options, the axes to sweep, the norms, the seeds, and the attack
families with their settings:

    [train]                          # shared options: the CLI option names, with underscores
    dataset = "fmnist"
    epochs = 4
    train_subset = 5000
    runs_dir = "runs/study-fmnist"   # also data_dir, keep_checkpoints, overwrite

    [grid]
    norms = ["bn", "bn+eca", "gn", "iebn"] # layer names (noiseattack norms), "paper", "all", "bn,iebn"
    seeds = [0, 1, 2]                      # or: repeats = 3 and seed = 0 (the default: 5 and 0)
    width = [1, 2]                         # axes: any [train] option, as a list of its values
    lr = [0.1, 0.05]

    [[attack]]
    kind = "clean"
    [[attack]]
    kind = "constant"
    settings = [[2, 1], [5, 2]]      # (alpha, beta) pairs
    [[attack]]
    kind = "mix"
    extra = ["mnist"]                # a name or a list; every extra with every k
    k = [32, 64]
    norms = ["bn", "iebn"]           # any [[attack]] table: its own norms instead of [grid]'s

Norms. An [[attack]] table's `norms` replaces [grid]'s for that table's settings; a setting that
two tables name (a `clean` table for the norms, another for the controls) is one experiment dir
trained for the norms of both, in the order they appear.

Axes. Every option of [train] except those that change speed, not results (device,
channels_last, compile_norms, eval_batch_size) may instead be given in [grid] as a non-empty list
of its values (`milestones`, itself a list, as a list of lists: `milestones = [[15, 22], [10]]`);
an option is in one of the two tables, not both. The grid is the product axes x attack settings
x norms x seeds: every combination of axis values with every attack setting is one experiment
dir (in that order: the first axis varies slowest), trained for every norm and seed. The schema
comes from `TrainConfig`'s fields and types, so a field added there is a [train] key and an axis.

Names. An experiment's dir is `config.default_name(train)`, as for the single-run commands
(`clean-fmnist-resnet20w2-n5000-e4`: attack, dataset, depth, width, `-bnshortcut` for
shortcut_norm = "bn", `-blockattn` / `-stageattn` for attn_placement = "block" / "stage",
train_subset, epochs, and `-noaug` for augment = false), plus, for each axis that name does not show, `-<tag><value>` in the
axes' order: `-bs32` (batch_size), `-lr0.05`, `-mom0.8` (momentum), `-wd0.0005` (weight_decay),
`-gamma0.2` (lr_gamma), `-ms10_20` (milestones), `-nt1000` (test_subset), `-amp` / `-noamp`,
`-basic` / `-bottleneck` (block), `-quick` / `-paper` (preset), and `-<option>_<value>` for any
other option. An `[[attack]]` table that expands to one experiment may carry `name = "..."`
instead. A run's key (`RunConfig.key`) depends only on its resolved TrainConfig identity, norm and
seed: the same as the single-run command's with the same options, whatever the dir's name; so
`report` and TensorBoard read a sweep's outputs unchanged, and without axes the single-run
commands and a sweep share dirs and skip each other's finished runs.

A bad grid raises ConfigError (one line naming the key: `grid.lr[2] must be a number, got "x"
(a string)`; list items count from 1) before anything is written. Runs whose key is already in
their experiment's results.jsonl are skipped, so re-running a sweep resumes it.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import re
import tomllib
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Union

from .. import attacks
from ..config import (
    ATTACK_FIELDS, PERFORMANCE_FIELDS, TRAIN_FIELDS, ConfigError, ExperimentConfig, RunConfig, TrainConfig,
    default_name, resolve_train_config,
)
from ..experiment import check_dir
from ..memory import check_memory
from ..experiment_setup import parse_norms, resolve_experiment

# --------------------------------------------------------------------------- the schema

EXPERIMENT_KEYS: dict[str, Any] = {"runs_dir": str, "data_dir": str, "keep_checkpoints": bool, "overwrite": bool}


def _train_keys() -> dict[str, Any]:
    """[train]'s keys and types: TrainConfig's fields (less the attack's: ATTACK_FIELDS), typed as the
    dataclass types them, and resolve_train_config's other options (the preset: a string)."""
    hints, options = typing.get_type_hints(TrainConfig), inspect.signature(resolve_train_config).parameters
    keys = {name: hints[name] for name in TRAIN_FIELDS}
    return {name: keys.get(name, str) for name in [*keys, *options] if name not in ATTACK_FIELDS}


TRAIN_KEYS = _train_keys()
SWEEPABLE = tuple(k for k in TRAIN_KEYS if k not in PERFORMANCE_FIELDS)  # the rest do not change results
GRID_KEYS: dict[str, Any] = {"norms": Any, "seeds": list[int], "repeats": int, "seed": int,
                             **{key: list[TRAIN_KEYS[key]] for key in SWEEPABLE}}  # axes: lists of values
# Each attack's [[attack]] keys: kind, its own (its spec's grid_keys: lists of its parameters' values,
# or constant's (alpha, beta) pairs), a name and its norms.
ATTACK_KEYS: dict[str, dict[str, Any]] = {s.name: {"kind": str, **s.grid_keys(), "name": str, "norms": Any}
                                         for s in attacks.specs()}
ONE_OR_MORE = ("seeds", *dict.fromkeys(  # a value or a list of values: seeds, and a list of an attack's scalars
    key for keys in ATTACK_KEYS.values() for key, tp in keys.items()
    if typing.get_origin(tp) is list and typing.get_origin(typing.get_args(tp)[0]) not in (list, tuple)))
_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table"}
_HINTS = {
    **dict.fromkeys(("repeats", "seed", "seeds", "norms"), "set it in [grid]"), "attack": "use [[attack]] tables",
    **{name: spec.grid_hint(name) for name, _, _, spec in attacks.param_fields()},
    "norm": "set the norms in [grid] (norms = [...])", "name": "name an experiment in its [[attack]] table",
    "progress": "a command-line option (--progress)",
}


def _got(v: Any) -> str:
    return f"got {v!r} ({_NAMES.get(type(v), type(v).__name__)})"


def check(where: str, v: Any, tp: Any) -> Any:
    """`v` as type `tp` (a dataclass field's type, or a list of them) as TOML writes it, or a
    one-line ConfigError naming `where`: ints are numbers too, booleans are not numbers, tuples
    are lists (items count from 1: `grid.lr[2]`), `X | None` is X, `X | Y` either; other types are not
    checked here."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):  # X | None is X; X | Y is the first that fits
        options = [a for a in args if a is not type(None)]
        for a in options[:-1]:
            try:
                return check(where, v, a)
            except ConfigError:
                pass
        return check(where, v, options[-1])
    if origin in (list, tuple):
        fixed = origin is tuple and Ellipsis not in args
        if not isinstance(v, list) or (fixed and len(v) != len(args)):
            want = f"a list of {len(args)} values" if fixed else "a list"
            raise ConfigError(f"{where} must be {want}, {_got(v)}")
        return [check(f"{where}[{i}]", x, args[i - 1] if fixed else args[0]) for i, x in enumerate(v, 1)]
    if tp in _NAMES and (isinstance(v, bool) != (tp is bool) or not isinstance(v, (int, float) if tp is float else tp)):
        raise ConfigError(f"{where} must be {_NAMES[tp]}, {_got(v)}")
    return float(v) if tp is float else v


def check_table(where: str, table: Any, keys: dict[str, Any], kind: str = "", axes: bool = False) -> dict[str, Any]:
    """A table's values checked against `keys` (name -> type); an axis table's lists must not be empty."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, got {_NAMES.get(type(table), type(table).__name__)}")
    out = {}
    for key, v in table.items():
        if key not in keys:
            raise ConfigError(_unknown_key(where, key, kind))
        v = [v] if key in ONE_OR_MORE and not isinstance(v, list) else v
        if axes and key in SWEEPABLE and not isinstance(v, list):
            raise ConfigError(f"{where}.{key} must be a list of the values to sweep (one value goes into [train])")
        if axes and v == []:
            raise ConfigError(f"{where}.{key} is empty: give at least one value")
        out[key] = check(f"{where}.{key}", v, keys[key])
    return out


def _unknown_key(table: str, key: str, kind: str) -> str:
    """The error for a key that `table` (an [[attack]] table: `kind`) does not take, with a hint."""
    if table == "grid" and (key in TRAIN_KEYS or key in EXPERIMENT_KEYS):
        return f"grid.{key} cannot be swept (it changes speed or where runs go, not results): set it in [train]"
    if kind:
        hint = ("train options go into [train] (or, as lists, into [grid] to sweep them)" if key in TRAIN_KEYS
                else f"a {kind} attack takes {', '.join(ATTACK_KEYS[kind])}")
    else:
        hint = _HINTS.get(key, "choose from " + ", ".join(GRID_KEYS if table == "grid"
                                                         else [*TRAIN_KEYS, *EXPERIMENT_KEYS]))
    return f"unknown key '{table}.{key}': {hint}"


def _norms(v: Any, where: str = "grid.norms") -> tuple[str, ...]:
    """"paper", "all", "bn,iebn" or a list of names, checked only by config.parse_norms (which knows the norms)."""
    names = v if isinstance(v, list) else [v]
    if not (names and all(isinstance(n, str) and n.strip() and (len(names) == 1 or "," not in n) for n in names)):
        raise ConfigError(f"{where} must be a layer name, a list of them, \"bn,iebn\", \"paper\" or \"all\", "
                          f"got {v!r}")
    try:
        return parse_norms(names if len(names) > 1 else names[0], what=where)
    except ConfigError as e:
        raise ConfigError(e.args[0] if e.args[0].startswith(where) else f"{where}: {e}") from None


Setting = tuple[str, dict[str, Any], str | None, tuple[str, ...] | None]  # where, options, name, norms


def _attack_settings(tables: Any, n_combos: int) -> list[Setting]:
    """The [[attack]] tables, checked: (where, attack options, name, the table's own norms or None)
    of every setting, without repeats."""
    kinds = ", ".join(attacks.names())
    if not tables:
        raise ConfigError(f"attack: the grid names no attack: add [[attack]] tables (kind = {kinds})")
    if not isinstance(tables, list):
        raise ConfigError(f"attack must be a list of tables ([[attack]]), got {_NAMES.get(type(tables))}")
    out = []
    for i, a in enumerate(tables, 1):
        where, kind = f"attack[{i}]", a.get("kind") if isinstance(a, dict) else None
        if isinstance(a, dict) and not (isinstance(kind, str) and kind in ATTACK_KEYS):
            raise ConfigError(f"{where}.kind: unknown attack {kind!r}: choose {kinds}" if "kind" in a
                              else f"{where}.kind is missing: choose {kinds}")
        a = check_table(where, a, ATTACK_KEYS.get(kind, {}), kind, axes=True)
        spec = attacks.get(kind)
        missing = [key for key in spec.grid_required if key not in a]
        if missing:
            raise ConfigError(f"{where}.{missing[0]} is missing")
        expanded = spec.grid_settings(a)
        unique = list({tuple(sorted(s.items())): s for s in expanded}.values())  # [2, 1] and [2.0, 1]: one
        if a.get("name") is not None and len(unique) * n_combos > 1:
            raise ConfigError(f"{where}.name: a name is one experiment dir, but this attack has "
                              f"{len(unique) * n_combos} settings" + (" with the grid's axes" if n_combos > 1 else ""))
        norms = _norms(a["norms"], f"{where}.norms") if "norms" in a else None
        out += [(where, s, a.get("name"), norms) for s in unique]
    return out


# --------------------------------------------------------------------------- parsing and expansion


@dataclass(frozen=True)
class SweepJob:
    """One run of a sweep, with its experiment dir. `device` is the grid's device option, resolved
    where the run trains (a Slurm job resolves "auto" on its own node)."""

    exp: ExperimentConfig
    run: RunConfig
    device: str = "auto"

    @property
    def key(self) -> str:
        return self.run.key

    @property
    def label(self) -> str:
        return f"{self.exp.name} {self.run.norm} seed {self.run.seed}"


@dataclass(frozen=True)
class Grid:
    """A validated grid: its experiments (settings, each with its norms and seeds)."""

    source: str
    experiments: tuple[ExperimentConfig, ...]
    device: str = "auto"

    def jobs(self) -> list[SweepJob]:
        """Every run, setting by setting, then norm by norm, then seed by seed."""
        return [SweepJob(exp, run, self.device) for exp in self.experiments for run in exp.runs()]


def load_grid(path: str | Path, *, runs_dir: str | Path | None = None, data_dir: str | Path | None = None,
              defer_device: bool = False) -> Grid:
    """Read and validate a grid file. `runs_dir` and `data_dir` override the grid's; with
    `defer_device`, a CUDA device (or "auto") is not checked here but where each run trains."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"grid file '{path}' not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"grid file '{path}' is unreadable ({type(e).__name__})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {str(e).splitlines()[0]}") from None
    try:
        return parse_grid(doc, source=str(path), runs_dir=runs_dir, data_dir=data_dir, defer_device=defer_device)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# What config.default_name shows (the options that declare a name_part, or are shown in another's), and
# the tags of the others when swept (each option's `tag`; the preset is no option: its value alone).
_IN_DEFAULT_NAME = tuple(name for name, m in TRAIN_FIELDS.items() if m.name_part is not None or m.in_name)
_TAGS = {**{name: m.tag for name, m in TRAIN_FIELDS.items() if m.tag is not None}, "preset": ""}


def _text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "_".join(map(_text, v)) or "none"
    return str(v.value if isinstance(v, Enum) else v)


def swept_suffix(train: TrainConfig, axes: dict[str, Any]) -> str:
    """What an experiment's name adds to `default_name(train)` for its axis values, e.g. `-bs32-lr0.05`."""
    parts = []
    for key, given in axes.items():
        if key in _IN_DEFAULT_NAME:
            continue
        value = getattr(train, key, given)  # resolved (block "auto" -> "basic"); the preset is not a field
        if isinstance(value, bool):
            parts.append(key if value else f"no{key}")
        else:
            parts.append(_TAGS.get(key, f"{key}_") + _text(value))
    return "".join("-" + re.sub(r"[^A-Za-z0-9._+-]", "_", p) for p in parts)


def _label(where: str, values: dict[str, Any]) -> str:
    detail = ", ".join(f"{k} {_text(v)}" for k, v in values.items() if k != "attack")
    return f"{where} ({detail})" if detail else where


def parse_grid(doc: dict[str, Any], *, source: str = "<grid>", runs_dir: str | Path | None = None,
               data_dir: str | Path | None = None, defer_device: bool = False) -> Grid:
    """Validate a parsed grid and expand it into experiments. Raises ConfigError naming the key."""
    for key in doc:
        if key not in ("train", "grid", "attack"):
            raise ConfigError(f"unknown key '{key}': a grid has [train], [grid] and [[attack]] tables")
    given = check_table("train", doc.get("train", {}), {**TRAIN_KEYS, **EXPERIMENT_KEYS})
    grid = check_table("grid", doc.get("grid", {}), GRID_KEYS, axes=True)
    train_opts = {k: v for k, v in given.items() if k in TRAIN_KEYS}
    exp_opts = {"runs_dir": "runs", **{k: v for k, v in given.items() if k in EXPERIMENT_KEYS}}
    exp_opts.update({k: str(v) for k, v in (("runs_dir", runs_dir), ("data_dir", data_dir)) if v is not None})
    axes = {k: v for k, v in grid.items() if k in SWEEPABLE}  # in the file's order
    for key in axes:
        if key in train_opts:
            raise ConfigError(f"grid.{key}: also set in [train]: give an option in one of the two tables")
    if "seeds" in grid and ("repeats" in grid or "seed" in grid):
        raise ConfigError("grid.seeds: give either seeds = [...] or repeats (and seed), not both")
    if grid.get("repeats", 1) < 1:
        raise ConfigError(f"grid.repeats must be >= 1, got {grid['repeats']}")
    seeds = grid.get("seeds") or list(range(grid.get("seed", 0), grid.get("seed", 0) + grid.get("repeats", 5)))
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"grid.seeds must be distinct and >= 0, got {seeds}")
    exp_kw = dict(norms=_norms(grid.get("norms", "paper")), seeds=tuple(seeds), **exp_opts)
    device = train_opts.pop("device", "auto")
    check_device = device
    if defer_device and (device == "auto" or device.startswith("cuda")):
        if not re.fullmatch(r"auto|cuda(:\d+)?", device):
            raise ConfigError(f"train.device: unknown device '{device}': use auto, cpu or cuda[:N]")
        check_device = "cpu"  # everything else is checked here; the device where the run trains
    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    settings = _attack_settings(doc.get("attack"), len(combos))
    for combo in combos:  # the shared options first: their errors name [train]
        try:
            base = resolve_train_config(**train_opts, **combo, device=check_device)
        except ConfigError as e:
            raise ConfigError(f"{_label('[train] with [grid]', combo) if combo else '[train]'}: {e}") from None
    device = base.device if check_device == device else device
    experiments = _experiments(settings, combos, {**train_opts, "device": check_device}, exp_kw)
    # The batches against the free memory of the CPU the runs train on: here, unless a Slurm job runs
    # them (defer_device). A GPU sweep's workers each check their GPU as they start (experiment.prepare),
    # so that this process holds no CUDA context for the whole sweep.
    if not defer_device and base.device == "cpu":
        for exp in experiments:
            try:
                check_memory(exp.train)
            except ConfigError as e:
                raise ConfigError(f"{exp.name}: {e}") from None
    return Grid(source=source, experiments=experiments, device=device)


def _experiments(settings: list[Setting], combos: list[dict[str, Any]],
                 train_opts: dict[str, Any], exp_kw: dict[str, Any]) -> tuple[ExperimentConfig, ...]:
    """Every axis combination with every attack setting, resolved and checked exactly as the
    single-run commands do; one experiment per distinct setting (a setting named by two [[attack]]
    tables is one experiment trained for the norms of both)."""
    experiments: dict[str, ExperimentConfig] = {}
    origin: dict[str, str] = {}
    by_identity: dict[str, str] = {}
    for combo in combos:
        for where, s, name, norms in settings:
            label = _label(where, {**s, **combo})
            try:
                train = resolve_train_config(**train_opts, **combo, **s)
                exp = resolve_experiment(train, name=name or default_name(train) + swept_suffix(train, combo),
                                         **{**exp_kw, **({"norms": norms} if norms else {})})
            except ConfigError as e:
                raise ConfigError(f"{label}: {e}") from None
            ident = repr(sorted(train.identity().items()))
            if by_identity.get(ident, exp.name) != exp.name:
                raise ConfigError(f"{label}: the same setting as {origin[by_identity[ident]]} under another name")
            if exp.name in experiments:
                if ident in by_identity:  # the same setting twice: one experiment, with the norms of both
                    merged = tuple(dict.fromkeys(experiments[exp.name].norms + exp.norms))
                    experiments[exp.name] = dataclasses.replace(experiments[exp.name], norms=merged)
                    continue
                raise ConfigError(f"{label}: its experiment dir '{exp.name}' is also that of {origin[exp.name]}, "
                                  f"a different setting: give one of them a name")
            try:
                check_dir(exp)
            except ConfigError as e:
                raise ConfigError(f"{label}: {e}") from None
            experiments[exp.name] = exp
            origin[exp.name] = label
            by_identity[ident] = exp.name
    return tuple(experiments.values())
