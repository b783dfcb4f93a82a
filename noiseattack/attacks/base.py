"""What an attack is: `AttackSpec`, the registry, and the hooks a run calls.

An attack is one `AttackSpec` subclass in one module of this package, registered with `register`:
its name (the command, `TrainConfig.attack`), its parameters (a frozen dataclass of `param` fields:
default, neutral value, bounds, help), its setting label, title and sort order for reports, the
datasets it needs, how it prepares the model (`prepare_model`, part of the model: the constant
attack reaching the norms) and what it does during a run (`start` -> an `AttackRun`: the foreign
images it adds to a batch, noise it draws per step, its random state in checkpoints). The command
line, the grid, the report, TensorBoard and the training loop read these; nothing else names an
attack. This module imports no torch at load time (a spec's runtime methods import it when called).
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from typing import Any

from ..errors import ConfigError  # noqa: F401 - also attacks.ConfigError, for callers of get()
from ..options import UNSET, Meta, bounds_text, check, display, fields_with_meta, meta


@dataclasses.dataclass(frozen=True)
class NoParams:
    """The parameters of an attack that has none (clean)."""


class AttackRun:
    """What an attack does while one run trains; the training loop calls these (the defaults do nothing)."""

    extra_images = 0  # images it adds to every training batch (the compile probe's and memory's batch)

    def batch_extras(self, generator, *, augment: bool = True):
        """The images to join this step's batch (after its B labelled images), drawn with the run's
        generator right after the batch's own draws; None for none. `augment=False`: without the
        training pipeline's random crop and flip (as PreciseBN's batches are drawn)."""
        return None

    def before_step(self) -> None:
        """Called before every training step's forward pass."""

    def before_eval(self) -> None:
        """Called before each evaluation (after an epoch)."""

    def before_eval_batch(self) -> None:
        """Called before each evaluation batch's forward pass."""

    def state_dict(self) -> dict[str, Any]:
        """Its state for the run's checkpoint (tensors and plain values: read with weights_only)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` from a checkpoint."""


def mixed_batch_loss(model, x, y, extras, label_smoothing: float = 0.0):
    """One forward pass over the concatenated [B primary + k extra] batch, so that every norm
    layer's batch statistics include the extras; the loss is the mean cross-entropy (with
    `label_smoothing`) over the B primary images only. Returns (loss, logits of the primary images)."""
    import torch

    b = x.shape[0]
    inputs = x if extras is None or extras.shape[0] == 0 else torch.cat([x, extras])
    logits = model(inputs)[:b]
    return torch.nn.functional.cross_entropy(logits, y, label_smoothing=label_smoothing), logits


class AttackSpec:
    """An attack. Subclasses set the class attributes and override what differs from the defaults."""

    name: str = ""
    rank: int = 100  # its place among the attacks: commands, report columns, plots
    help: str = ""  # the command's help; its first line is the command's summary
    Params: type = NoParams
    reach: str | None = None  # how it reaches the norms: "constant" (set_noise with alpha, beta; user
    # layers checked for it), "per-channel" (set_noise with per-channel tensors), None (it does not)
    axis: str = ""  # the x-axis label of its box plot
    grid_required: tuple[str, ...] = ()  # [[attack]] keys a grid must give
    extra_images_option = ""  # the parameter that sets `extra_images` (mix's "k"), for messages

    # ------------------------------------------------------------------ the setting

    def param_fields(self) -> list[tuple[dataclasses.Field, Meta]]:
        return fields_with_meta(self.Params)

    def defaults(self) -> Any:
        return self.Params()

    def label(self, p: Any) -> str:
        """The setting in a few characters (`a2_b1`, `mnist_k32`): a report's setting, a TB column."""
        return self.name

    def order(self, p: Any) -> tuple:
        """The sort key of its settings: (alpha, beta), (extra, k), ..."""
        return tuple(dataclasses.astuple(p))

    def order_of_label(self, label: str) -> tuple:
        """`order` from a label alone (a report.csv has no parameters); (label,) where it does not parse."""
        return (label,)

    def title(self, p: Any) -> str:
        """A setting's heading in reports and plots."""
        return f"{self.name} ({self.label(p)})"

    def family(self) -> str:
        """Its settings together, in a box plot's title (`constant attack`)."""
        return f"{self.name} attack"

    def tick(self, p: Any) -> str:
        """A setting's tick label on its box plot."""
        return self.label(p)

    def column(self, label: str) -> str:
        """A setting's column in the overview."""
        return f"{self.name} {label}"

    def name_head(self, p: Any) -> str:
        """The start of an experiment's default name: `constant-a2-b1`."""
        return "-".join([self.name, self.label(p)]) if dataclasses.fields(p) else self.name

    def defaults_for(self, dataset: str) -> dict[str, Any]:
        """Parameters whose default depends on the primary dataset (mix: its foreign source)."""
        return {}

    def check(self, p: Any, *, batch_size: int, dataset: str | None = None) -> Any:
        """The parameters checked against their bounds, and against the primary `dataset` where
        given (one-line ConfigError), typed as declared."""
        hints = typing.get_type_hints(self.Params)
        values = {}
        for f, m in self.param_fields():
            v = getattr(p, f.name)
            tp = hints[f.name]
            if tp is float and isinstance(v, (int, float)) and not isinstance(v, bool):
                v = float(v)
            elif tp is int and isinstance(v, float) and v.is_integer():
                v = int(v)
            check(display(f), v, m)
            values[f.name] = v
        return self.Params(**values)

    def extra_datasets(self, p: Any) -> tuple[str, ...]:
        """The datasets it loads besides the primary one."""
        return ()

    def extra_images(self, p: Any) -> int:
        """Images it adds to every training batch."""
        return 0

    def cli_args(self, p: Any) -> list[str]:
        """Its options on the command line that reproduces a run: `--alpha 2.0 --beta 1.0`."""
        out = []
        for f, _ in self.param_fields():
            v = getattr(p, f.name)
            flag = "--" + f.name.replace("_", "-")
            out += ([flag if v else f"--no-{flag[2:]}"] if isinstance(v, bool) else [flag, str(v)])
        return out

    def hparams(self, p: Any) -> dict[str, Any]:
        """Its parameters as TensorBoard HParams."""
        return dataclasses.asdict(p)

    # ------------------------------------------------------------------ grids

    def grid_keys(self) -> dict[str, Any]:
        """Its keys in an [[attack]] table (besides kind, name, norms), each a list of values."""
        hints = typing.get_type_hints(self.Params)
        return {f.name: list[hints[f.name]] for f, _ in self.param_fields()}

    def grid_hint(self, name: str) -> str:
        """What to write instead of its parameter `name` in [train] or [grid]."""
        return f"use [[attack]] kind = \"{self.name}\" with {name} = [...]"

    def grid_settings(self, table: dict[str, Any]) -> list[dict[str, Any]]:
        """An [[attack]] table (checked against `grid_keys`) -> its settings: every combination of the
        values given (a key not given takes the attack's default)."""
        keys = [k for k in self.grid_keys() if k in table]
        return [{"attack": self.name, **dict(zip(keys, combo))} for combo in itertools.product(*(table[k] for k in keys))]

    def grid_table(self, p: Any) -> dict[str, Any]:
        """The [[attack]] table of one setting."""
        return {"kind": self.name, **{k: [v] for k, v in dataclasses.asdict(p).items()}}

    # ------------------------------------------------------------------ the run

    def prepare_model(self, model, p: Any) -> None:
        """Make the attack part of a freshly built model (before it moves to its device)."""

    def start(self, p: Any, *, model, data, cfg, seed: int) -> AttackRun:
        """What it does while a run trains (`model` on its device, `data` the run's TrainData)."""
        return AttackRun()


_REGISTRY: dict[str, AttackSpec] = {}


def register(spec: AttackSpec) -> AttackSpec:
    """Add an attack (each module of this package registers its own on import)."""
    if not spec.name or spec.name in _REGISTRY:
        raise ConfigError(f"attack name {spec.name!r} is empty or taken")
    if not dataclasses.is_dataclass(spec.Params):
        raise ConfigError(f"attack '{spec.name}': Params must be a dataclass")
    taken = {f.name for s in _REGISTRY.values() for f, _ in s.param_fields()}
    for f, m in spec.param_fields():
        if f.name in taken or m.neutral is UNSET:
            raise ConfigError(f"attack '{spec.name}': parameter '{f.name}' is another attack's, or has no neutral value")
    _REGISTRY[spec.name] = spec
    ordered = sorted(_REGISTRY.values(), key=lambda s: (s.rank, s.name))
    _REGISTRY.clear()
    _REGISTRY.update((s.name, s) for s in ordered)
    return spec


def get(name: Any) -> AttackSpec:
    """The attack named `name` (a string or a config.Attack); ConfigError for an unknown one."""
    key = getattr(name, "value", name)
    try:
        return _REGISTRY[key]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown attack '{key}': choose {', '.join(_REGISTRY)}") from None


def names() -> tuple[str, ...]:
    """Every attack, in its order (rank)."""
    return tuple(_REGISTRY)


def specs() -> tuple[AttackSpec, ...]:
    return tuple(_REGISTRY.values())


def rank(name: str) -> tuple[int, str]:
    """An attack's place among the attacks (a report's order); an unknown one last."""
    order = names()
    return (order.index(name), name) if name in order else (len(order), name)


def param_fields() -> list[tuple[str, Any, Meta, AttackSpec]]:
    """Every attack's parameters: (name, TrainConfig type, metadata, attack), in the attacks' order.
    The type admits None where the neutral value is None (mix's extra)."""
    out = []
    for s in specs():
        hints = typing.get_type_hints(s.Params)
        for f, m in s.param_fields():
            tp = hints[f.name]
            out.append((f.name, tp | None if m.neutral is None else tp, m, s))
    return out


def field_names() -> tuple[str, ...]:
    """The TrainConfig fields the attacks' parameters are: alpha, beta, extra, k, ..."""
    return tuple(name for name, *_ in param_fields())


def neutral_values() -> dict[str, Any]:
    """Every attack parameter at its neutral value (what a TrainConfig holds for the attacks not run)."""
    return {name: m.neutral for name, _, m, _ in param_fields()}


def params_of(spec: AttackSpec, values: dict[str, Any]) -> Any:
    """The attack's parameters from a TrainConfig's fields (or any dict holding them)."""
    return spec.Params(**{f.name: values[f.name] for f, _ in spec.param_fields()})


def meta_of(field: dataclasses.Field) -> Meta:
    return meta(field)


def describe_attacks() -> list[dict[str, Any]]:
    """Every attack: name, summary, and its parameters (name, default, neutral value, limits, help).
    What `noiseattack attacks` prints and the README's table shows."""
    rows = []
    for s in specs():
        params = [{"name": f.name, "default": f.default, "neutral": m.neutral, "limits": bounds_text(m),
                   "help": m.help} for f, m in s.param_fields()]
        rows.append({"name": s.name, "summary": s.help.split(". ")[0].split(": ")[0], "params": params,
                     "label": s.label(s.defaults())})
    return rows


def markdown_table() -> str:
    """The attacks and their parameters as a markdown table (the README's `attacks` region)."""
    out = ["| attack | parameter (`--flag`) | default | otherwise | limits | what |", "|---|---|---|---|---|---|"]
    for a in describe_attacks():
        if not a["params"]:
            out.append(f"| `{a['name']}` | — | | | | {a['summary']} |")
        for p in a["params"]:
            flag = "--" + p["name"].replace("_", "-")
            out.append(f"| `{a['name']}` | `{flag}` | {p['default']} | {p['neutral']} | {p['limits'] or '—'} | "
                       f"{p['help']} |")
    return "\n".join(out)
