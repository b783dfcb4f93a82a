"""What an option is: a dataclass field with its help, bounds and how it shows, in one place.

Every hyperparameter of a run is a field of `config.TrainConfig` (a training option) or of an attack's
parameter dataclass (`noiseattack.attacks`), made with `option()` or `param()`. Its default, its
bounds and its help are read from there by the validation (`check`), the command line (each field
becomes a `--flag` with that help), `api.run` and `resolve_train_config` (its keywords), the grid
(its keys and types), the presets, the record (`results.jsonl`'s `config`), the experiment's
command line (`cli_command`), the experiment's default name and the docs. This module imports
neither torch nor the rest of the package.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigError

ALWAYS, CHANGED = "always", "changed"  # how `cli_command` shows an option: always, or where it is not the default


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # no value given (neither None nor a default)


@dataclass(frozen=True)
class Meta:
    """An option's metadata (see `option`)."""

    help: str = ""
    display: str | None = None  # its name in messages ("batch size"); the field name with spaces by default
    low: float | None = None  # bounds: value >= low (> low with low_open), value <= high, |value| <= abs_high
    high: float | None = None
    low_open: bool = False
    abs_high: float | None = None
    nonzero: str | None = None  # refuse 0, saying why
    meaning: str | None = None  # said in the bound's message: "k must be >= 0 (the number of ...), got -1"
    given: Any = UNSET  # what a user gives by default, where it differs from the stored
    # default and is resolved ("auto" for block and device, None for compile)
    preset: bool = False  # the default comes from the preset (`config.PRESETS`): None on the command line
    performance: bool = False  # changes speed, not results: not part of a run's identity (its key)
    omit_at_default: bool = False  # added after runs were committed: left out of the identity at its default
    cli: str | None = ALWAYS  # cli_command: ALWAYS, CHANGED, or None (never); see `cli_when`
    cli_when: Callable[[Any], bool] | None = None  # shown only where this holds for the TrainConfig
    cli_type: Any = None  # the command line's type where it differs (milestones: "15,22")
    parse: Callable[[Any], Any] | None = None  # the command line's value -> the option's
    name_part: Callable[[Any], str | None] | None = None  # its part of the experiment's default name
    name_rank: int = 1000  # where that part goes (config.default_name)
    in_name: bool = False  # shown in another option's name_part (width: in depth's `resnet20w2`)
    tag: str | None = None  # a grid dir's tag for it when swept (-bs32); None: `-<name>_<value>`
    axis: str | None = None  # the report's axis label when it is swept
    # attack parameters (noiseattack.attacks)
    neutral: Any = UNSET  # the value a TrainConfig holds when another attack runs
    always_in_key: bool = False  # in every run's identity (the parameters of the first attacks)


def option(default: Any, help: str = "", **meta: Any) -> Any:
    """A dataclass field: `default` and the metadata of `Meta` (help, bounds, how it shows)."""
    return dataclasses.field(default=default, metadata={"option": Meta(help=help, **meta)})


def param(default: Any, help: str = "", *, neutral: Any, **meta: Any) -> Any:
    """An attack parameter: `default` is the attack's own default setting (the command's default),
    `neutral` what a TrainConfig holds when another attack runs (no attack: alpha 1, k 0, ...)."""
    return option(default, help, neutral=neutral, **meta)


def meta(field: dataclasses.Field) -> Meta:
    return field.metadata.get("option") or Meta()


def display(field: dataclasses.Field) -> str:
    return meta(field).display or field.name.replace("_", " ")


def fields_with_meta(cls: type) -> list[tuple[dataclasses.Field, Meta]]:
    return [(f, meta(f)) for f in dataclasses.fields(cls)]


def at_least(name: str, value: float | None, low: float, meaning: str | None = None) -> None:
    if value is not None and value < low:
        raise ConfigError(f"{name} must be >= {low}" + (f" ({meaning})" if meaning else "") + f", got {value}")


def at_most(name: str, value: float | None, high: float) -> None:
    if value is not None and value > high:
        raise ConfigError(f"{name} must be <= {high:g}, got {value:g}" if isinstance(value, float)
                          else f"{name} must be <= {high}, got {value}")


def finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}")


def check(name: str, value: Any, m: Meta) -> None:
    """`value` within the bounds of `m`, or a one-line ConfigError naming the option `name`."""
    if value is None or isinstance(value, (bool, str, tuple, list)):
        return
    if isinstance(value, float):
        finite(name, value)
    if m.nonzero is not None and value == 0:
        raise ConfigError(f"{name} must be non-zero: {m.nonzero}")
    if m.low is not None:
        if m.low_open and value <= m.low:
            raise ConfigError(f"{name} must be > {m.low:g}, got {value}")
        at_least(name, value, m.low, m.meaning)
    if m.abs_high is not None:
        at_most(f"|{name}|", abs(value), m.abs_high)
    if m.high is not None:
        at_most(name, value, m.high)


def bounds_text(m: Meta) -> str:
    """The bounds in words, for help and docs: `>= 1, <= 10000`; "" without any."""
    parts = []
    if m.low is not None:
        parts.append(f"{'>' if m.low_open else '>='} {m.low:g}")
    if m.high is not None:
        parts.append(f"<= {m.high:g}")
    if m.abs_high is not None:
        parts.append(f"within ±{m.abs_high:g}")
    if m.nonzero is not None:
        parts.append("non-zero")
    return ", ".join(parts)
