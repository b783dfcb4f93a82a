"""The grid file (TOML): its schema, its parsing and its expansion into experiments and runs.

A grid names the attack families and their settings, the norms, the seeds, and the shared
training options (those of the single-run commands):

    [train]                          # shared options: the CLI option names, with underscores
    dataset = "fmnist"
    epochs = 4
    train_subset = 5000
    runs_dir = "runs/study-fmnist"   # also data_dir, keep_checkpoints, overwrite

    [grid]
    norms = ["bn", "in", "bnse", "iebn"]   # or "all", or "bn,iebn"
    seeds = [0, 1, 2]                      # or: repeats = 3 and seed = 0 (the default: 5 and 0)

    [[attack]]
    kind = "clean"
    [[attack]]
    kind = "constant"
    settings = [[2, 1], [5, 2]]      # (alpha, beta) pairs
    [[attack]]
    kind = "mix"
    extra = ["mnist"]                # a name or a list; every extra with every k
    k = [32, 64]

An `[[attack]]` table that expands to one setting may carry `name = "..."` (its experiment
dir); otherwise each setting's dir is `config.default_name(train)`, as for the single-run
commands. Every setting becomes an experiment dir in the usual layout (see experiment.py:
config.json, results.jsonl, summaries, tb/), every (setting, norm, seed) a run with its stable
key (`RunConfig.key`), so `report` and TensorBoard read a sweep's outputs unchanged, and the
single-run commands and a sweep skip each other's finished runs.

A bad grid raises ConfigError (one line naming the key) before anything is written. Runs whose
key is already in their experiment's results.jsonl are skipped, so re-running a sweep resumes it.

Executors: `local` (in this process, or `workers` spawned processes, each pinned to one GPU in
turn), `submitit-local` (submitit's local executor: one process per job, the code path that
Slurm runs) and `slurm` (a submitit job array). A job runs `runs_per_job` runs in a row.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import (
    NORMS, ConfigError, ExperimentConfig, RunConfig, parse_norms, resolve_experiment, resolve_train_config,
)
from ..experiment import check_dir

# --------------------------------------------------------------------------- the grid file

_INT, _FLOAT, _STR, _BOOL, _INTS = "an integer", "a number", "a string", "a boolean (true or false)", "a list of integers"

# [train]: the options of the single-run commands (minus norm, repeats, seed: see [grid]).
TRAIN_KEYS: dict[str, str] = {
    "dataset": _STR, "preset": _STR, "epochs": _INT, "depth": _INT, "block": _STR, "width": _INT,
    "batch_size": _INT, "lr": _FLOAT, "momentum": _FLOAT, "weight_decay": _FLOAT, "milestones": _INTS,
    "lr_gamma": _FLOAT, "train_subset": _INT, "test_subset": _INT, "amp": _BOOL, "device": _STR,
    "channels_last": _BOOL, "compile_norms": _BOOL, "eval_batch_size": _INT,
}
EXPERIMENT_KEYS: dict[str, str] = {"runs_dir": _STR, "data_dir": _STR, "keep_checkpoints": _BOOL, "overwrite": _BOOL}
GRID_KEYS = ("norms", "seeds", "repeats", "seed")
ATTACK_KEYS = {"clean": ("kind", "name"), "constant": ("kind", "settings", "name"), "mix": ("kind", "extra", "k", "name")}
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


def _check_type(key: str, v: Any, want: str) -> Any:
    """The value if it has the type `want` (ints are numbers too; booleans are not ints)."""
    ok = {
        _INT: isinstance(v, int) and not isinstance(v, bool),
        _FLOAT: isinstance(v, (int, float)) and not isinstance(v, bool),
        _STR: isinstance(v, str),
        _BOOL: isinstance(v, bool),
        _INTS: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
    }[want]
    if not ok:
        raise ConfigError(f"{key} must be {want}, got {v!r} ({_typename(v)})")
    return float(v) if want == _FLOAT else v


def _axis(key: str, v: Any, want: str) -> list[Any]:
    """A scalar or a non-empty list of scalars of type `want`, as a list without duplicates."""
    values = v if isinstance(v, list) else [v]
    if not values:
        raise ConfigError(f"{key} is empty: give at least one value")
    out = [_check_type(key, x, want) for x in values]
    return list(dict.fromkeys(out))


def _table(key: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ConfigError(f"{key} must be a table ([{key}]), got {_typename(v)}")
    return v


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
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"grid file '{path}' not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"grid file '{path}' is unreadable ({type(e).__name__})") from None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ConfigError("reading a grid needs Python >= 3.11 (tomllib) or the tomli package") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {str(e).splitlines()[0]}") from None
    try:
        return parse_grid(doc, source=str(path), runs_dir=runs_dir, data_dir=data_dir, defer_device=defer_device)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def parse_grid(doc: dict[str, Any], *, source: str = "<grid>", runs_dir: str | Path | None = None,
               data_dir: str | Path | None = None, defer_device: bool = False) -> Grid:
    """Validate a parsed grid and expand it into experiments. Raises ConfigError naming the key."""
    for key in doc:
        if key not in ("train", "grid", "attack"):
            raise ConfigError(f"unknown key '{key}': a grid has [train], [grid] and [[attack]] tables")

    # [train]
    train_opts: dict[str, Any] = {}
    exp_opts: dict[str, Any] = {}
    for key, v in _table("train", doc.get("train", {})).items():
        if key in TRAIN_KEYS:
            train_opts[key] = _check_type(f"train.{key}", v, TRAIN_KEYS[key])
        elif key in EXPERIMENT_KEYS:
            exp_opts[key] = _check_type(f"train.{key}", v, EXPERIMENT_KEYS[key])
        else:
            hint = _HINTS.get(key, "choose from " + ", ".join([*TRAIN_KEYS, *EXPERIMENT_KEYS]))
            raise ConfigError(f"unknown key 'train.{key}': {hint}")
    if "milestones" in train_opts:
        train_opts["milestones"] = tuple(train_opts["milestones"])
    device = train_opts.pop("device", "auto")
    if defer_device and (device == "auto" or device.startswith("cuda")):
        if not re.fullmatch(r"auto|cuda(:\d+)?", device):
            raise ConfigError(f"train.device: unknown device '{device}': use auto, cpu or cuda[:N]")
        check_device = "cpu"  # everything else is checked here; the device where the run trains
    else:
        check_device = device
    try:
        base = resolve_train_config(**train_opts, device=check_device)
    except ConfigError as e:
        raise ConfigError(f"[train]: {e}") from None
    device = base.device if check_device == device else device
    if runs_dir is not None:
        exp_opts["runs_dir"] = str(runs_dir)
    if data_dir is not None:
        exp_opts["data_dir"] = str(data_dir)

    # [grid]
    g = _table("grid", doc.get("grid", {}))
    for key in g:
        if key not in GRID_KEYS:
            raise ConfigError(f"unknown key 'grid.{key}': choose from {', '.join(GRID_KEYS)}")
    norms_v = g.get("norms", "all")
    if isinstance(norms_v, str):
        try:
            norms = parse_norms(norms_v)
        except ConfigError as e:
            raise ConfigError(f"grid.norms: {e}") from None
    else:
        norms = tuple(n.lower() for n in _axis("grid.norms", norms_v, _STR))
        for n in norms:
            if n not in NORMS:
                raise ConfigError(f"grid.norms: unknown norm '{n}': choose from {', '.join(NORMS)}")
        norms = tuple(dict.fromkeys(norms))
    if "seeds" in g and ("repeats" in g or "seed" in g):
        raise ConfigError("grid.seeds: give either seeds = [...] or repeats (and seed), not both")
    if "seeds" in g:
        if isinstance(g["seeds"], list) and len(set(map(repr, g["seeds"]))) != len(g["seeds"]):
            raise ConfigError(f"grid.seeds has duplicates: {g['seeds']}")
        seeds = tuple(_axis("grid.seeds", g["seeds"], _INT))
    else:
        repeats = _check_type("grid.repeats", g.get("repeats", 5), _INT)
        seed = _check_type("grid.seed", g.get("seed", 0), _INT)
        if repeats < 1:
            raise ConfigError(f"grid.repeats must be >= 1, got {repeats}")
        seeds = tuple(seed + i for i in range(repeats))
    if any(s < 0 for s in seeds):
        raise ConfigError(f"grid.seeds must be >= 0, got {list(seeds)}")

    # [[attack]]
    attacks = doc.get("attack")
    if attacks is None:
        raise ConfigError("attack: the grid names no attack: add [[attack]] tables (kind = clean, constant or mix)")
    if not isinstance(attacks, list) or not all(isinstance(a, dict) for a in attacks):
        raise ConfigError("attack must be a list of tables ([[attack]]), got " + _typename(attacks))
    if not attacks:
        raise ConfigError("attack is empty: add [[attack]] tables (kind = clean, constant or mix)")

    settings: list[tuple[str, dict[str, Any], str | None]] = []  # (where, attack options, name)
    for i, a in enumerate(attacks, 1):
        where = f"attack[{i}]"
        if "kind" not in a:
            raise ConfigError(f"{where}.kind is missing: choose clean, constant or mix")
        kind = _check_type(f"{where}.kind", a["kind"], _STR)
        if kind not in ATTACK_KEYS:
            raise ConfigError(f"{where}.kind: unknown attack '{kind}': choose clean, constant or mix")
        for key in a:
            if key not in ATTACK_KEYS[kind]:
                hint = ("train options go into [train]" if key in TRAIN_KEYS
                        else f"a {kind} attack takes {', '.join(ATTACK_KEYS[kind])}")
                raise ConfigError(f"unknown key '{where}.{key}': {hint}")
        name = _check_type(f"{where}.name", a["name"], _STR) if "name" in a else None
        if kind == "clean":
            expanded = [{"attack": "clean"}]
        elif kind == "constant":
            if "settings" not in a:
                raise ConfigError(f"{where}.settings is missing: a list of [alpha, beta] pairs")
            pairs = a["settings"]
            if not isinstance(pairs, list):
                raise ConfigError(f"{where}.settings must be a list of [alpha, beta] pairs, got {pairs!r}")
            if not pairs:
                raise ConfigError(f"{where}.settings is empty: give at least one [alpha, beta] pair")
            expanded = []
            for p in pairs:
                if not (isinstance(p, list) and len(p) == 2):
                    raise ConfigError(f"{where}.settings must hold [alpha, beta] pairs, got {p!r}")
                alpha = _check_type(f"{where}.settings alpha", p[0], _FLOAT)
                beta = _check_type(f"{where}.settings beta", p[1], _FLOAT)
                expanded.append({"attack": "constant", "alpha": alpha, "beta": beta})
        else:
            for key in ("extra", "k"):
                if key not in a:
                    raise ConfigError(f"{where}.{key} is missing")
            extras = _axis(f"{where}.extra", a["extra"], _STR)
            ks = _axis(f"{where}.k", a["k"], _INT)
            expanded = [{"attack": "mix", "extra": e, "k": k} for e in extras for k in ks]
        if name is not None and len(expanded) > 1:
            raise ConfigError(f"{where}.name: a name is one experiment dir, but this attack has {len(expanded)} settings")
        unique = {tuple(sorted(s.items())): s for s in expanded}.values()  # [[2, 1], [2.0, 1]] is one setting
        settings += [(where, s, name) for s in unique]

    # expansion: every setting resolved and checked exactly as the single-run commands do
    experiments: dict[str, ExperimentConfig] = {}
    origin: dict[str, str] = {}
    by_identity: dict[str, str] = {}
    for where, s, name in settings:
        detail = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items() if k != "attack")
        label = f"{where} ({detail})" if detail else where
        try:
            train = resolve_train_config(**{**train_opts, **s}, device=check_device)
            exp = resolve_experiment(train, norms=norms, repeats=len(seeds), seed=seeds[0], name=name,
                                     runs_dir=exp_opts.get("runs_dir", "runs"), data_dir=exp_opts.get("data_dir"),
                                     keep_checkpoints=exp_opts.get("keep_checkpoints", False),
                                     overwrite=exp_opts.get("overwrite", False))
        except ConfigError as e:
            raise ConfigError(f"{label}: {e}") from None
        exp = dataclasses.replace(exp, seeds=seeds)
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
    return Grid(source=source, experiments=tuple(experiments.values()), device=device)
