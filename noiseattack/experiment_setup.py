"""An experiment: a setting (a `TrainConfig`) with its norms, seeds, name and dirs, resolved and checked.

`resolve_experiment` checks the layers (`noiseattack.zoo`: a user's layer against the model's norm
positions, and against the setting's attack), the seeds, the name and the runs dir before anything
is written. It sits above `config` (which knows neither the layers nor the model)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .config import ExperimentConfig, TrainConfig, default_name
from .errors import ConfigError
from .models import model_shapes
from .options import at_least, at_most
from .zoo import check_layers, parse_norms

MAX_SEED = 2**32 - 1
MAX_REPEATS = 1000


def parse_seeds(spec: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """`0,5,7` -> (0, 5, 7). Order is kept, duplicates are dropped."""
    if isinstance(spec, str):
        try:
            seeds = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"--seeds must be comma-separated integers, got '{spec}'") from None
    else:
        seeds = [int(s) for s in spec]
    if not seeds:
        raise ConfigError("--seeds is empty: name one or more seeds, e.g. 0,1,2")
    twice = [s for s in dict.fromkeys(seeds) if seeds.count(s) > 1]
    if twice:
        raise ConfigError(f"--seeds names seed {twice[0]} more than once: a seed is one run per layer; name each once")
    return tuple(seeds)



def check_writable_dir(path: Path) -> None:
    """The nearest existing ancestor of `path` must be a writable directory."""
    p = path.absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise ConfigError(f"runs dir '{path}' is not writable: '{p}' is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"runs dir '{path}' is not writable ('{p}' denies write access)")


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")  # POSIX's portable file name characters, and "+"
MAX_NAME = 120  # a runs dir's name, well under every file system's 255 bytes


def check_name(name: str) -> None:
    """An experiment's name becomes a directory name on every machine a study is copied to: portable
    characters only (letters, digits, `.`, `_`, `-`, `+`; not first `.`, `-`, `+`), at most MAX_NAME."""
    if not NAME.fullmatch(name):
        bad = sorted(set(name) - set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-"))
        why = (f"has {', '.join(repr(c) for c in bad)}" if bad else "is empty" if not name
               else f"starts with {name[0]!r}")
        raise ConfigError(f"--name {name[:40]!r}{'...' if len(name) > 40 else ''} {why}: a name takes letters, digits, "
                          "'.', '_', '-' and '+' (not first), so that it is a directory name on every system")
    if len(name) > MAX_NAME:
        raise ConfigError(f"--name is {len(name)} characters long: at most {MAX_NAME}")


def resolve_experiment(
    train: TrainConfig,
    *,
    norms: str | tuple[str, ...],
    repeats: int = 5,
    seed: int = 0,
    seeds: str | tuple[int, ...] | list[int] | None = None,
    name: str | None = None,
    runs_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    keep_checkpoints: bool = False,
    overwrite: bool = False,
) -> ExperimentConfig:
    """Check and resolve an experiment around a setting; ConfigError (one line) before anything is written."""
    norms = parse_norms(norms)
    check_layers(norms, reach=train.attack_spec().reach, channels_last=train.channels_last, shapes=model_shapes(train))
    at_least("repeats", repeats, 1)
    at_most("repeats", repeats, MAX_REPEATS)
    seeds = parse_seeds(seeds) if seeds is not None else tuple(seed + i for i in range(repeats))
    if len(seeds) > MAX_REPEATS:
        raise ConfigError(f"--seeds names {len(seeds)} seeds: at most {MAX_REPEATS}")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise ConfigError(f"seeds must be in 0..{MAX_SEED}, got {bad[0]}" + (f" (and {len(bad) - 1} more)" if bad[1:] else ""))
    if name is not None:
        check_name(name)
    runs_dir = Path(runs_dir)
    try:
        check_writable_dir(runs_dir)
    except OSError as e:  # e.g. a parent that cannot be searched
        raise ConfigError(f"runs dir '{runs_dir}' cannot be used: {e.strerror or e}") from None
    if data_dir is None:
        data_dir = os.environ.get("NOISEATTACK_DATA", "data")
    return ExperimentConfig(
        train=train, norms=norms, seeds=seeds,
        name=name or default_name(train), runs_dir=runs_dir, data_dir=Path(data_dir),
        keep_checkpoints=keep_checkpoints, overwrite=overwrite,
    )
