"""The attack registry: one `AttackSpec` per attack, in one module of this package each (clean.py,
constant.py, mix.py, ...).

Every module of this package but `base` is imported here and registers its attack (`base.register`),
so adding an attack is adding a module. `Attack` is the enum of their names (`TrainConfig.attack`), in
the registry's order (each spec's `rank`). What a spec declares and what reads it: see `base`. The
names of the first modules' runtime pieces (`set_constant_noise`, `ExtraImages`, `mixed_batch_loss`)
are importable from here as before.
"""

from __future__ import annotations

import importlib
import pkgutil
from enum import Enum

from .base import (AttackRun, AttackSpec, ConfigError, NoParams, describe_attacks, field_names, get, markdown_table,
                   mixed_batch_loss, names, neutral_values, param_fields, params_of, rank, register, specs)


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name != "base" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()

Attack = Enum("Attack", {name: name for name in names()}, type=str, module=__name__, qualname="Attack")
Attack.__doc__ = "An attack's name: one per registered attack (noiseattack.attacks)."

_MOVED = {"set_constant_noise": "constant", "ExtraImages": "mix", "MAX_K_PER_BATCH": "mix", "MAX_NOISE": "constant"}

__all__ = ["Attack", "AttackRun", "AttackSpec", "ConfigError", "NoParams", "describe_attacks", "field_names", "get",
           "markdown_table", "mixed_batch_loss", "names",
           "neutral_values", "param_fields", "params_of", "rank", "register", "specs", *_MOVED]


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(f"{__name__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
