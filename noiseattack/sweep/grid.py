"""The grid file (TOML): its schema, its parsing and its expansion into experiments and runs.

A grid names the shared training options, the axes to sweep, the norms, the seeds, and the attack
families with their settings:

    [train]                          # shared options: the CLI option names, with underscores
    dataset = "fmnist"
    epochs = 4
    train_subset = 5000
    runs_dir = "runs/study-fmnist"   # also data_dir, keep_checkpoints, overwrite

    [grid]
    norms = ["bn", "in", "bnse", "iebn"]   # or "all", or "bn,iebn"
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

Axes. Every option of [train] except those that change speed, not results (device,
channels_last, compile_norms, eval_batch_size) may instead be given in [grid] as a non-empty list
of its values (`milestones`, itself a list, as a list of lists: `milestones = [[15, 22], [10]]`);
an option is in one of the two tables, not both. The grid is the product axes x attack settings
x norms x seeds: every combination of axis values with every attack setting is one experiment
dir (in that order: the first axis varies slowest), trained for every norm and seed. The schema
comes from `TrainConfig`'s fields and types, so a field added there is a [train] key and an axis.

Names. An experiment's dir is `config.default_name(train)`, as for the single-run commands
(`clean-fmnist-resnet20w2-n5000-e4`: attack, dataset, depth, width, train_subset, epochs), plus,
for each axis that name does not show, `-<tag><value>` in the axes' order: `-bs32` (batch_size),
`-lr0.05`, `-mom0.8` (momentum), `-wd0.0005` (weight_decay), `-gamma0.2` (lr_gamma), `-ms10_20`
(milestones), `-nt1000` (test_subset), `-amp` / `-noamp`, `-basic` / `-bottleneck` (block),
`-quick` / `-paper` (preset), and `-<option>_<value>` for any other option. An `[[attack]]` table
that expands to one experiment may carry `name = "..."` instead. A run's key (`RunConfig.key`)
depends only on its resolved TrainConfig identity, norm and seed: the same as the single-run
command's with the same options, whatever the dir's name; so `report` and TensorBoard read a
sweep's outputs unchanged, and without axes the single-run commands and a sweep share dirs and
skip each other's finished runs.

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
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr,
    ValidationError, create_model,
)

from ..config import (
    PERFORMANCE_FIELDS, ConfigError, ExperimentConfig, RunConfig, TrainConfig, default_name, parse_norms,
    resolve_experiment, resolve_train_config,
)
from ..experiment import check_dir

# --------------------------------------------------------------------------- the schema

ATTACK_FIELDS = ("attack", "alpha", "beta", "extra", "k")  # TrainConfig fields that [[attack]] tables set
EXPERIMENT_KEYS: dict[str, type] = {"runs_dir": str, "data_dir": str, "keep_checkpoints": bool, "overwrite": bool}
GRID_KEYS = ("norms", "seeds", "repeats", "seed")
_STRICT = {bool: StrictBool, int: StrictInt, float: StrictFloat, str: StrictStr}  # no "4" for 4, 20.0 for 20, true for 1


def _toml_type(tp: Any) -> Any:
    """A dataclass field's type as TOML writes it: strict scalars (ints are numbers too), lists for
    tuples, strings for enums and paths; `X | None` is X (None means: not given)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        rest = tuple(_toml_type(a) for a in args if a is not type(None))
        return rest[0] if len(rest) == 1 else Union[rest]
    if origin in (tuple, list):
        return list[_toml_type(args[0])]
    if isinstance(tp, type) and issubclass(tp, (Enum, Path)):
        return StrictStr
    return _STRICT.get(tp, Any)


def _train_keys() -> dict[str, Any]:
    """[train]'s keys and types: TrainConfig's fields that resolve_train_config takes (less the
    attack's), typed as the dataclass types them, and its other options (the preset: a string)."""
    hints = typing.get_type_hints(TrainConfig)
    options = inspect.signature(resolve_train_config).parameters
    keys = {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig) if f.name in options}
    keys.update({name: str for name in options if name not in keys})
    return {name: _toml_type(tp) for name, tp in keys.items() if name not in ATTACK_FIELDS}


TRAIN_KEYS = _train_keys()
SWEEPABLE = tuple(k for k in TRAIN_KEYS if k not in PERFORMANCE_FIELDS)  # the rest do not change results


def _listify(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


def _distinct(v: list[Any]) -> list[Any]:
    if len(set(map(repr, v))) != len(v):
        raise ValueError(f"has duplicates: {v}")
    return v


def _pair(v: Any) -> Any:
    if not (isinstance(v, list) and len(v) == 2):
        raise ValueError(f"must be an [alpha, beta] pair, got {v!r}")
    return v


def _one_or_more(tp: Any) -> Any:
    """A value or a non-empty list of values, as a list."""
    return Annotated[list[tp], BeforeValidator(_listify), Field(min_length=1)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CleanAttack(_Table):
    kind: Literal["clean"]
    name: Optional[StrictStr] = None

    def settings_(self) -> list[dict[str, Any]]:
        return [{"attack": "clean"}]


class ConstantAttack(_Table):
    kind: Literal["constant"]
    settings: Annotated[list[Annotated[list[StrictFloat], BeforeValidator(_pair)]], Field(min_length=1)]
    name: Optional[StrictStr] = None

    def settings_(self) -> list[dict[str, Any]]:
        return [{"attack": "constant", "alpha": a, "beta": b} for a, b in self.settings]


class MixAttack(_Table):
    kind: Literal["mix"]
    extra: _one_or_more(StrictStr)
    k: _one_or_more(StrictInt)
    name: Optional[StrictStr] = None

    def settings_(self) -> list[dict[str, Any]]:
        return [{"attack": "mix", "extra": e, "k": k} for e in self.extra for k in self.k]


ATTACKS = {"clean": CleanAttack, "constant": ConstantAttack, "mix": MixAttack}

TrainTable = create_model(
    "TrainTable", __base__=_Table,
    **{key: (Optional[tp], None) for key, tp in {**TRAIN_KEYS, **EXPERIMENT_KEYS}.items()},
)
GridTable = create_model(
    "GridTable", __base__=_Table,
    norms=(_one_or_more(StrictStr), ["all"]),
    seeds=(Optional[Annotated[_one_or_more(Annotated[StrictInt, Field(ge=0)]), AfterValidator(_distinct)]], None),
    repeats=(Annotated[StrictInt, Field(ge=1)], 5),
    seed=(Annotated[StrictInt, Field(ge=0)], 0),
    **{key: (Optional[Annotated[list[TRAIN_KEYS[key]], Field(min_length=1)]], None) for key in SWEEPABLE},
)


class GridFile(_Table):
    train: TrainTable = TrainTable()  # type: ignore[valid-type]
    grid: GridTable = GridTable()  # type: ignore[valid-type]
    attack: Annotated[list[Annotated[Union[CleanAttack, ConstantAttack, MixAttack], Field(discriminator="kind")]],
                      Field(min_length=1)]


# --------------------------------------------------------------------------- one-line errors

_WANT = {"int_type": "an integer", "float_type": "a number", "string_type": "a string",
         "bool_type": "a boolean (true or false)", "list_type": "a list", "model_type": "a table",
         "model_attributes_type": "a table", "dict_type": "a table"}
_ADD_ATTACKS = "add [[attack]] tables (kind = clean, constant or mix)"
_MISSING = {"settings": ": a list of [alpha, beta] pairs"}
_HINTS = {
    "norm": "set the norms in [grid] (norms = [...])", "repeats": "set it in [grid]", "seed": "set it in [grid]",
    "seeds": "set it in [grid]", "norms": "set it in [grid]", "attack": "use [[attack]] tables",
    "alpha": "use [[attack]] kind = \"constant\" with settings = [[alpha, beta], ...]",
    "beta": "use [[attack]] kind = \"constant\" with settings = [[alpha, beta], ...]",
    "extra": "use [[attack]] kind = \"mix\" with extra = [...]", "k": "use [[attack]] kind = \"mix\" with k = [...]",
    "name": "name an experiment in its [[attack]] table", "progress": "a command-line option (--progress)",
}


def _typename(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(v), type(v).__name__)


def _where(loc: tuple[Any, ...]) -> str:
    """("attack", 0, "mix", "k", 1) -> "attack[1].k[2]": items count from 1; the attack's kind is not a key."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part + 1}]"
        elif not (i == 2 and loc[0] == "attack" and part in ATTACKS):
            out += f".{part}" if out else str(part)
    return out


def _unknown_key(loc: tuple[Any, ...], where: str) -> str:
    key = loc[-1]
    if len(loc) == 1:
        return f"unknown key '{key}': a grid has [train], [grid] and [[attack]] tables"
    if loc[0] == "grid" and (key in TRAIN_KEYS or key in EXPERIMENT_KEYS):
        why = "it changes speed, not results" if key in TRAIN_KEYS else "it says where and how runs are kept"
        return f"{where} cannot be swept ({why}): set it in [train]"
    if loc[0] == "train":
        hint = _HINTS.get(key, "choose from " + ", ".join([*TRAIN_KEYS, *EXPERIMENT_KEYS]))
    elif loc[0] == "grid":
        hint = _HINTS.get(key) if key in ATTACK_FIELDS else None
        hint = hint or f"choose from {', '.join(GRID_KEYS)}, or a [train] option to sweep: {', '.join(SWEEPABLE)}"
    else:
        kind = loc[2]
        hint = ("train options go into [train] (or, as lists, into [grid] to sweep them)" if key in TRAIN_KEYS
                else f"a {kind} attack takes {', '.join(ATTACKS[kind].model_fields)}")
    return f"unknown key '{where}': {hint}"


def error_line(err: dict[str, Any]) -> str:
    """One line naming the key, from one of pydantic's errors."""
    loc, kind, v, ctx = err["loc"], err["type"], err.get("input"), err.get("ctx", {})
    where = _where(loc)
    if kind == "extra_forbidden":
        return _unknown_key(loc, where)
    if kind == "missing":
        if where == "attack":
            return f"attack: the grid names no attack: {_ADD_ATTACKS}"
        return f"{where} is missing{_MISSING.get(str(loc[-1]), '')}"
    if kind == "union_tag_not_found":
        return f"{where}.kind is missing: choose clean, constant or mix"
    if kind == "union_tag_invalid":
        return f"{where}.kind: unknown attack '{ctx.get('tag')}': choose clean, constant or mix"
    if kind == "too_short" and not v:
        return f"{where} is empty: " + (_ADD_ATTACKS if where == "attack" else "give at least one value")
    if kind in ("greater_than_equal", "greater_than"):
        return f"{where} must be {'>=' if 'ge' in ctx else '>'} {ctx.get('ge', ctx.get('gt'))}, got {v!r}"
    if kind == "value_error":
        return f"{where} {ctx.get('error')}"
    if where == "attack" and kind == "list_type":
        return f"attack must be a list of tables ([[attack]]), got {_typename(v)}"
    if len(loc) == 1 and kind in _WANT:
        return f"{where} must be a table ([{where}]), got {_typename(v)}"
    if len(loc) == 2 and loc[0] == "grid" and loc[1] in SWEEPABLE and kind == "list_type":
        return f"{where} must be a list of the values to sweep, got {v!r} ({_typename(v)}): one value goes into [train]"
    if kind in _WANT:
        return f"{where} must be {_WANT[kind]}, got {v!r} ({_typename(v)})"
    return f"{where}: {err['msg']}"


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


_IN_DEFAULT_NAME = ("dataset", "depth", "width", "train_subset", "epochs")  # what config.default_name shows
_TAGS = {"batch_size": "bs", "lr": "lr", "momentum": "mom", "weight_decay": "wd", "lr_gamma": "gamma",
         "milestones": "ms", "test_subset": "nt", "block": "", "preset": ""}


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
    try:
        g = GridFile.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(error_line(e.errors(include_url=False)[0])) from None
    given = {k: getattr(g.train, k) for k in g.train.model_fields_set}
    train_opts = {k: v for k, v in given.items() if k in TRAIN_KEYS}
    exp_opts = {"runs_dir": "runs", **{k: v for k, v in given.items() if k in EXPERIMENT_KEYS}}
    exp_opts.update({k: str(v) for k, v in (("runs_dir", runs_dir), ("data_dir", data_dir)) if v is not None})
    axes = {k: getattr(g.grid, k) for k in doc.get("grid", {}) if k in SWEEPABLE}  # in the file's order
    for key in axes:
        if key in train_opts:
            raise ConfigError(f"grid.{key}: also set in [train]: give an option in one of the two tables")
    raw = doc.get("grid", {}).get("norms", "all")
    names = [(f"grid.norms[{i}]" if isinstance(raw, list) else "grid.norms", n) for i, n in enumerate(g.grid.norms, 1)]
    norms: tuple[str, ...] = ()
    for where, n in names:  # a string: "all" or "bn,iebn"; a list: one norm per item
        try:
            if isinstance(raw, list) and ("," in n or not n.strip()):
                raise ConfigError(f"'{n}' is not one norm name")
            norms += parse_norms(n)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    if g.grid.seeds is not None and g.grid.model_fields_set & {"repeats", "seed"}:
        raise ConfigError("grid.seeds: give either seeds = [...] or repeats (and seed), not both")
    seeds = tuple(g.grid.seeds or range(g.grid.seed, g.grid.seed + g.grid.repeats))

    device = train_opts.pop("device", "auto")
    check_device = device
    if defer_device and (device == "auto" or device.startswith("cuda")):
        if not re.fullmatch(r"auto|cuda(:\d+)?", device):
            raise ConfigError(f"train.device: unknown device '{device}': use auto, cpu or cuda[:N]")
        check_device = "cpu"  # everything else is checked here; the device where the run trains
    combos = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    for combo in combos:  # the shared options first: their errors name [train]
        try:
            base = resolve_train_config(**train_opts, **combo, device=check_device)
        except ConfigError as e:
            raise ConfigError(f"{_label('[train] with [grid]', combo) if combo else '[train]'}: {e}") from None
    device = base.device if check_device == device else device
    exp_kw = dict(norms=tuple(dict.fromkeys(norms)), seeds=seeds, **exp_opts)
    settings = _attack_settings(g.attack, len(combos))
    experiments = _experiments(settings, combos, {**train_opts, "device": check_device}, exp_kw)
    return Grid(source=source, experiments=experiments, device=device)


def _attack_settings(attacks: list[Any], n_combos: int) -> list[tuple[str, dict[str, Any], str | None]]:
    """(where, attack options, name) of every attack setting, in the grid's order, without repeats."""
    out = []
    for i, a in enumerate(attacks, 1):
        unique = list({tuple(sorted(s.items())): s for s in a.settings_()}.values())  # [2, 1] and [2.0, 1]: one
        n = len(unique) * n_combos
        if a.name is not None and n > 1:
            raise ConfigError(f"attack[{i}].name: a name is one experiment dir, but this attack has {n} settings"
                              + (" with the grid's axes" if n_combos > 1 else ""))
        out += [(f"attack[{i}]", s, a.name) for s in unique]
    return out


def _experiments(settings: list[tuple[str, dict[str, Any], str | None]], combos: list[dict[str, Any]],
                 train_opts: dict[str, Any], exp_kw: dict[str, Any]) -> tuple[ExperimentConfig, ...]:
    """Every axis combination with every attack setting, resolved and checked exactly as the
    single-run commands do; one experiment per distinct setting."""
    experiments: dict[str, ExperimentConfig] = {}
    origin: dict[str, str] = {}
    by_identity: dict[str, str] = {}
    for combo in combos:
        for where, s, name in settings:
            label = _label(where, {**s, **combo})
            try:
                train = resolve_train_config(**train_opts, **combo, **s)
                exp = resolve_experiment(train, name=name or default_name(train) + swept_suffix(train, combo),
                                         **exp_kw)
            except ConfigError as e:
                raise ConfigError(f"{label}: {e}") from None
            ident = repr(sorted(train.identity().items()))
            if exp.name in experiments:
                if repr(sorted(experiments[exp.name].train.identity().items())) == ident:
                    continue  # the same setting twice: one experiment
                raise ConfigError(f"{label}: its experiment dir '{exp.name}' is also that of {origin[exp.name]}, "
                                  f"a different setting: give one of them a name")
            if ident in by_identity:
                raise ConfigError(f"{label}: the same setting as {origin[by_identity[ident]]} under another name")
            try:
                check_dir(exp)
            except ConfigError as e:
                raise ConfigError(f"{label}: {e}") from None
            experiments[exp.name] = exp
            origin[exp.name] = label
            by_identity[ident] = exp.name
    return tuple(experiments.values())
