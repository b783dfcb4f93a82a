"""Every hyperparameter in one place, resolved and validated before anything runs.

A `TrainConfig` fixes everything that determines the result of one training run except the
norm and the seed; a `RunConfig` adds those two. An `ExperimentConfig` is one setting (a
`TrainConfig`) repeated over several norms and seeds. Invalid input raises `ConfigError`
with a one-line message, before any file is written.

One source: each field of `TrainConfig` is declared once, with its default, bounds, help and how it
shows (`noiseattack.options.option`); the attacks' parameters come from the attack registry
(`noiseattack.attacks`, each with its neutral value), the datasets from the dataset registry
(`noiseattack.datasets`). `resolve_train_config` (and so `api.run`), the command line, the grid,
the presets, the record, `cli_command` and the default name all read the declarations: a new
training option is one field here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import attacks, datasets
from .attacks import Attack
from .errors import ConfigError
from .options import CHANGED, UNSET, Meta, at_least, check, display, fields_with_meta, meta, option


class Preset(str, Enum):
    quick = "quick"
    paper = "paper"


DATASETS = tuple(datasets.DATASETS)  # the primary datasets (noiseattack.datasets, the registry)
EXTRA_SOURCES = datasets.EXTRA_SOURCES  # mix's --extra: the datasets and the derived sources

# The norm of the projection shortcuts: "same" (the norm under test, as at every other position)
# or "bn" (a plain BatchNorm, as in the official IEBN code). See noiseattack/models.py.
SHORTCUT_NORMS = ("same", "bn")
# Where the attention module of a NORM+ATTN layer sits: "norm" (after every norm, the way SE follows
# BN in the paper's BN+SE), "block" (once per residual block, on the residual branch's output
# before the addition, as in the SENet and CBAM papers; every norm position gets the norm alone) or
# "stage" (once at the end of each of the three stages, after its last block's addition and ReLU,
# as the DAS paper places its gate). See noiseattack/models.py.
ATTN_PLACEMENTS = ("norm", "block", "stage")
# The learning-rate schedule: "step" (lr x lr_gamma after each milestone epoch, the paper's), "cosine"
# (half a cosine from lr to 0 over every training step) or "linear" (a straight line from lr to 0 over
# every training step). cosine and linear take no milestones. See train.lr_at.
LR_SCHEDULES = ("step", "cosine", "linear")
PER_BLOCK = "(per block)"  # a report's row for NORM+ATTN with attn_placement "block": `bn+cbam (per block)`
PER_STAGE = "(per stage)"  # ... and with "stage": `bn+das (per stage)`
_ROW_SUFFIX = {"block": PER_BLOCK, "stage": PER_STAGE}


def row_label(norm: str, attn_placement: str) -> str:
    """A layer's row in a report: its name, with ` (per block)` or ` (per stage)` for a NORM+ATTN layer
    placed once per block or stage (a layer without `+ATTN` is the same network under any placement)."""
    suffix = _ROW_SUFFIX.get(attn_placement)
    return f"{norm} {suffix}" if suffix and "+" in norm else norm


def layer_of_row(label: str) -> tuple[str, str]:
    """The inverse of `row_label`: (layer name, attn_placement)."""
    for placement, suffix in _ROW_SUFFIX.items():
        if label.endswith(f" {suffix}"):
            return label.removesuffix(f" {suffix}"), placement
    return label, "norm"


# Upper bounds: a value past them is a typo or a run that cannot finish (README, "Limits").
MAX_EPOCHS = 10_000
MAX_DEPTH = 1202  # the deepest CIFAR ResNet of He et al.
MAX_WIDTH = 64
MAX_BATCH_SIZE = 65_536  # training and evaluation batches; memory usually bounds them first
MAX_LR = 1e6  # room for divergence studies (a diverged run is recorded as such)
MAX_SUBSET = 10_000_000


def _model_part(t: "TrainConfig") -> str:
    return f"resnet{t.depth}" + (f"w{t.width}" if t.width != 1 else "")


def _parse_milestones(spec: str | None) -> tuple[int, ...] | None:
    if spec is None:
        return None
    try:
        return tuple(int(s) for s in spec.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--milestones must be comma-separated epochs, got '{spec}'") from None


@dataclass(frozen=True)
class _Head:
    """The primary dataset and the attack: TrainConfig's first fields (the attacks' parameters follow)."""

    dataset: str = option("cifar100", f"Primary dataset: {', '.join(DATASETS)}.", name_part=lambda t: t.dataset,
                          name_rank=10)
    attack: Attack = option(Attack.clean, cli=None)  # the command itself (clean, constant, mix, ...)


# Every attack's parameters (alpha, beta, extra, k, ...), as the attack registry declares them, each
# with its neutral value as its default: what a TrainConfig holds for the attacks it does not run.
_AttackFields = dataclasses.make_dataclass(
    "_AttackFields", [(name, tp, dataclasses.field(default=m.neutral, metadata={"option": m}))
                      for name, tp, m, _ in attacks.param_fields()], bases=(_Head,), frozen=True)
_AttackFields.__module__ = __name__


@dataclass(frozen=True)
class TrainConfig(_AttackFields):
    """One experimental setting: data, attack, model and optimisation. No norm, no seed."""

    depth: int = option(20, "ResNet depth.", preset=True, high=MAX_DEPTH, name_part=_model_part, name_rank=20,
                        axis="depth")
    block: str = option("basic", "auto (basic up to depth 110, bottleneck above where the depth is 9n+2), basic, bottleneck.", given="auto",
                        tag="")  # resolved: "basic" or "bottleneck"
    width: int | float = option(1, "Channel multiplier: 16, 32, 64 x width channels per stage; 0.25, 0.5, 0.75 give "
                                "narrower models than the default 1.", high=MAX_WIDTH, cli_type=float, in_name=True,
                                axis="width multiplier (16/32/64 × width channels)")  # an int when whole
    shortcut_norm: str = option("same", "Norm of the projection shortcuts: same (the norm under test, as everywhere "
                                "else) or bn (plain BatchNorm, the official IEBN architecture).", preset=True,
                                omit_at_default=True, cli=CHANGED, name_rank=30,
                                name_part=lambda t: f"{t.shortcut_norm}shortcut" if t.shortcut_norm != "same" else None)
    attn_placement: str = option("norm", "Where a NORM+ATTN layer's attention sits: norm (after every norm, as the "
                                 "paper's BN+SE), block (once per residual block, before the addition, as in the SENet "
                                 "and CBAM papers) or stage (once at the end of each stage, as in the DAS paper).",
                                 omit_at_default=True, cli=CHANGED, name_rank=40,
                                 name_part=lambda t: f"{t.attn_placement}attn" if t.attn_placement != "norm" else None)
    epochs: int = option(30, "Epochs.", preset=True, low=1, high=MAX_EPOCHS, name_part=lambda t: f"e{t.epochs}",
                         name_rank=60, axis="epochs")
    batch_size: int = option(128, "Labelled images per step.", preset=True, low=1, high=MAX_BATCH_SIZE, tag="bs",
                             axis="batch size")
    lr: float = option(0.1, "Initial learning rate (SGD).", preset=True, low=0, low_open=True, high=MAX_LR, tag="lr",
                       axis="learning rate")
    momentum: float = option(0.9, "SGD momentum, in [0, 1).", preset=True, tag="mom", axis="momentum")
    weight_decay: float = option(1e-4, "Weight decay, in [0, 1).", preset=True, tag="wd", axis="weight decay")
    milestones: tuple[int, ...] = option((15, 22), "Comma-separated epochs after which lr *= lr-gamma [default: 50% "
                                         "and 75% of the epochs; 81,122 for the paper preset].", preset=True,
                                         cli_type=str, parse=_parse_milestones, tag="ms",
                                         cli_when=lambda t: t.lr_schedule == "step")  # "step" only
    lr_gamma: float = option(0.1, "lr factor at each milestone.", preset=True, tag="gamma")
    lr_schedule: str = option("step", "step (lr *= lr-gamma after each milestone), cosine or linear (from lr to 0 over "
                              "the training steps; no milestones).", omit_at_default=True, cli=CHANGED, name_rank=80,
                              name_part=lambda t: t.lr_schedule if t.lr_schedule != "step" else None)
    label_smoothing: float = option(0.0, "Label smoothing of the cross-entropy, in [0, 1).", omit_at_default=True,
                                    cli=CHANGED, name_rank=90,
                                    name_part=lambda t: f"ls{t.label_smoothing:g}" if t.label_smoothing else None)
    nesterov: bool = option(False, "Nesterov momentum.", omit_at_default=True, cli=CHANGED, name_rank=100,
                            name_part=lambda t: "nesterov" if t.nesterov else None)
    train_subset: int | None = option(None, "Train on a fixed (seed 0) subset of N images.", low=1, high=MAX_SUBSET,
                                      cli=CHANGED, name_rank=50, axis="training images",
                                      name_part=lambda t: f"n{t.train_subset}" if t.train_subset else None)
    test_subset: int | None = option(None, "Evaluate on a fixed (seed 0) subset of N test images.", low=1,
                                     high=MAX_SUBSET, cli=CHANGED, tag="nt", axis="test images")
    augment: bool = option(True, "Random crops (4 px) and flips of the training batches and of the mix attack's foreign "
                           "images; --no-augment trains on the images as they are.", omit_at_default=True, cli=CHANGED,
                           name_rank=70, name_part=lambda t: None if t.augment else "noaug")
    amp: bool = option(False, "bf16 autocast (CUDA, or a CPU with bf16 support). Changes the numerics.", cli=CHANGED)
    # performance only: not part of a run's identity (PERFORMANCE_FIELDS)
    device: str = option("cpu", "auto (cuda when present), cpu, cuda[:N].", given="auto", performance=True)
    channels_last: bool = option(True, "channels_last memory format (same results, faster).", performance=True)
    compile_norms: bool = option(True, "IEBN's statistics, gate and scale-and-shift as torch.compile'd fused kernels "
                                 "(the same function, faster; falls back to the eager kernels where compiling fails).",
                                 performance=True)
    compile: bool = option(False, "torch.compile the whole model for the training steps (the same function, faster "
                           "where it pays; falls back to eager with a warning where compiling fails) [default: on for "
                           "AVX-512 CPUs, where it was measured to pay; off on GPUs (0.97x there) and AVX2-only CPUs].",
                           given=None, performance=True)  # see train.compile_model
    eval_batch_size: int = option(1000, "Batch size for evaluation.", low=1, high=MAX_BATCH_SIZE, performance=True)

    def identity(self) -> dict[str, Any]:
        """The fields that determine results, as plain JSON values.

        A field of OMITTED_AT_DEFAULT appears only when it differs from its value there
        (`shortcut_norm` only when it is not "same", `augment` only when False, a later attack's
        parameters only in its own runs, ...): the identity (and so every run key) of a setting from
        before the field existed stays what it was."""
        d = to_jsonable(dataclasses.asdict(self))
        for name in PERFORMANCE_FIELDS:
            d.pop(name)
        for name, default in OMITTED_AT_DEFAULT.items():
            if d[name] == default:
                del d[name]
        return d

    def attack_spec(self) -> attacks.AttackSpec:
        """The attack's spec (noiseattack.attacks)."""
        return attacks.get(self.attack)

    def attack_params(self) -> Any:
        """The attack's parameters (its Params dataclass) from this setting's fields."""
        return attacks.params_of(self.attack_spec(), self.__dict__)

    def setting_label(self) -> str:
        """The attack setting in a few characters: `a2_b1`, `mnist_k32`, `clean` (the attack's `label`)."""
        return self.attack_spec().label(self.attack_params())


TRAIN_FIELDS: dict[str, Meta] = {f.name: m for f, m in fields_with_meta(TrainConfig)}
ATTACK_FIELDS = ("attack", *attacks.field_names())  # TrainConfig fields that the attack sets
# The training options: what resolve_train_config, the command line and a grid's [train] take.
TRAIN_OPTIONS = tuple(name for name in TRAIN_FIELDS if name not in ATTACK_FIELDS)

# Fields that change speed but not the mathematics of a run: they are not part of a run's
# identity (its key), so a run may be resumed on another device or with another memory layout.
PERFORMANCE_FIELDS = tuple(name for name, m in TRAIN_FIELDS.items() if m.performance)

# Fields added after runs were committed: `identity()` leaves each out at this value, so that the
# identity (and every run key) of a setting from before the field existed stays what it was. The
# first attacks' parameters are in every identity; a later attack's are left out at their neutral value.
OMITTED_AT_DEFAULT: dict[str, Any] = {
    **{f.name: f.default for f in dataclasses.fields(TrainConfig) if meta(f).omit_at_default},
    **{name: m.neutral for name, _, m, _ in attacks.param_fields() if not m.always_in_key},
}

# Presets: every field a preset sets can be overridden by an explicit option. `quick` is TrainConfig's
# defaults (ResNet-20, 30 epochs, lr 0.1, batch 128, momentum 0.9, weight decay 1e-4, lr x 0.1 after
# epochs 15 and 22, the norm under test in the shortcuts); a preset's entries replace them.
BASE_SETTING: dict[str, Any] = {name: getattr(TrainConfig, name) for name, m in TRAIN_FIELDS.items() if m.preset}
PRESETS: dict[Preset, dict[str, Any]] = {
    Preset.quick: {},
    # The official IEBN setup (gbup-group/IEBN: `cifar.py -a iebn_resnet --block-name bottleneck
    # --depth 164 --epochs 164 --schedule 81 122 --gamma 0.1 --wd 1e-4`, with cifar.py's defaults
    # lr 0.1, train-batch 128, momentum 0.9): ResNet-164 (bottleneck blocks: `block` auto), plain
    # BatchNorm in the projection shortcuts. Every value is spelled out, not inherited.
    Preset.paper: {"depth": 164, "epochs": 164, "milestones": (81, 122), "lr_gamma": 0.1, "lr": 0.1,
                   "batch_size": 128, "momentum": 0.9, "weight_decay": 1e-4, "shortcut_norm": "bn"},
}


def given_default(name: str) -> Any:
    """What an option is when it is not given: None for a preset's option (the preset decides), `given`
    where the option resolves (block, device: "auto"; compile: None), else TrainConfig's default; an
    attack parameter: None (the attack's own default, or its neutral value for the other attacks)."""
    m = TRAIN_FIELDS[name]
    if name in ATTACK_FIELDS:
        return None
    if m.preset:
        return None
    return m.given if m.given is not UNSET else getattr(TrainConfig, name)


@dataclass(frozen=True)
class RunConfig:
    """One training run: a setting, a norm and a seed."""

    train: TrainConfig
    norm: str
    seed: int

    @property
    def key(self) -> str:
        """A stable hash of everything that determines this run's result."""
        payload = json.dumps(
            {"train": self.train.identity(), "norm": self.norm, "seed": self.seed}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def run_id(self) -> str:
        return f"{self.norm}-s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {"norm": self.norm, "seed": self.seed, **to_jsonable(dataclasses.asdict(self.train))}


@dataclass(frozen=True)
class ExperimentConfig:
    """A setting trained for every norm and seed; its outputs live in `runs_dir / name`."""

    train: TrainConfig
    norms: tuple[str, ...]
    seeds: tuple[int, ...]
    name: str
    runs_dir: Path
    data_dir: Path
    keep_checkpoints: bool = False
    overwrite: bool = False

    @property
    def dir(self) -> Path:
        return self.runs_dir / self.name

    def runs(self) -> list[RunConfig]:
        return [RunConfig(self.train, norm, seed) for norm in self.norms for seed in self.seeds]


def to_jsonable(obj: Any) -> Any:
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def train_config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Inverse of `dataclasses.asdict` for a TrainConfig read back from JSON (or of `identity()`).
    Missing fields take their defaults: a dict written before `shortcut_norm` existed reads as "same",
    one written before `attn_placement` existed as "norm", one written before `augment` existed as True,
    one written before an attack existed holds its neutral parameters. An unknown attack is a ValueError."""
    kw = {k: v for k, v in d.items() if k in TRAIN_FIELDS}
    kw["attack"] = Attack(kw.get("attack", "clean"))
    kw["milestones"] = tuple(kw.get("milestones", ()))
    return TrainConfig(**kw)


# --------------------------------------------------------------------------- resolution


def resolve_block(depth: int, block: str) -> str:
    """`auto` is the convention of the ResNet papers: basic blocks up to depth 110, bottlenecks above
    (164, 1001: 9n+2), except at the depths only basic blocks make (ResNet-1202: 6n+2, not 9n+2)."""
    if block not in ("auto", "basic", "bottleneck"):
        raise ConfigError(f"unknown block '{block}': choose auto, basic or bottleneck")
    if block == "auto":
        block = "bottleneck" if depth > 110 and (depth - 2) % 9 == 0 else "basic"
    if block == "basic" and (depth < 8 or (depth - 2) % 6):
        raise ConfigError(f"depth {depth} is not valid for basic blocks: use 6n+2 (20, 32, 44, 56, 110)")
    if block == "bottleneck" and (depth < 11 or (depth - 2) % 9):
        raise ConfigError(f"depth {depth} is not valid for bottleneck blocks: use 9n+2 (29, 56, 110, 164)")
    return block


def resolve_width(width: int | float) -> int | float:
    """The channel multiplier: > 0, with 16 x width a whole number of channels (0.25, 0.5, 0.75, 1,
    1.5, 2, ...). Whole values become ints, so that a run's key is the same for 2 and 2.0."""
    try:
        w = float(width)
    except (TypeError, ValueError):
        raise ConfigError(f"width must be a number, got {width!r}") from None
    if not math.isfinite(w) or w <= 0:
        raise ConfigError(f"width must be > 0, got {width}")
    if abs(16 * w - round(16 * w)) > 1e-9 or round(16 * w) < 1:
        raise ConfigError(f"width must make 16 x width a whole number of channels (0.25, 0.5, 0.75, 1, 2, ...), "
                          f"got {width}")
    return int(w) if w.is_integer() else round(16 * w) / 16


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available: use --device cpu or auto")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise ConfigError(f"unknown device '{device}': use auto, cpu or cuda[:N]")
    return device


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX): without it, bf16 autocast on
    the CPU is emulated, several times slower than fp32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compile_pays(device: str) -> bool:
    """Whether `--compile` is on by default here: where the whole compiled model was measured to train
    faster than the eager one (docs/performance.md, `scripts/bench.py`): a CPU with AVX-512 (full-width
    ResNet-20, one thread; at the fmnist protocol's half width it depends on the layer,
    `scripts/bench_protocol.py`: slower for BN, GN and IEBN, faster for BN+SE, BN+CBAM and LN). Not on a
    GPU (an H200 stepped the compiled ResNet-20 at 0.97x the eager one: its small kernels are bound by
    their launches, which inductor's default mode does not remove), nor on AVX2-only CPUs (not measured).
    $NOISEATTACK_COMPILE=0 (or 1) sets the default on every device instead (the test suite sets 0: its
    many tiny models would each be compiled)."""
    env = os.environ.get("NOISEATTACK_COMPILE", "").strip().lower()
    if env in ("0", "1", "off", "on", "false", "true"):
        return env in ("1", "on", "true")
    if env:
        raise ConfigError(f"$NOISEATTACK_COMPILE must be 0 or 1 (or off/on, false/true), got "
                          f"'{os.environ['NOISEATTACK_COMPILE']}': unset it for the machine's default")
    if device != "cpu":
        return False
    import torch

    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def _check_amp(amp: bool, device: str) -> None:
    if amp and device == "cpu" and not cpu_supports_bf16():
        raise ConfigError("--amp needs a GPU or a CPU with native bf16 (AVX-512 BF16 or AMX); this CPU has none, "
                          "so bf16 would be emulated, far slower than fp32: drop --amp")


def _apply_preset(preset: Preset, o: dict[str, Any]) -> None:
    """Replace each preset option of `o` left at None by the preset's value (`PRESETS` on top of
    `BASE_SETTING`, TrainConfig's defaults). The preset's milestones hold only for its own epoch count:
    explicit epochs without explicit milestones decay lr after 50% and 75% of the epochs (once, where
    they coincide)."""
    p = {**BASE_SETTING, **PRESETS[preset]}
    epochs_given, milestones_given = o["epochs"] is not None, o["milestones"] is not None
    for name in BASE_SETTING:
        if o[name] is None and name != "milestones":
            o[name] = p[name]
    at_least("epochs", o["epochs"], 1)
    if not milestones_given:
        e = o["epochs"]
        o["milestones"] = p["milestones"] if not epochs_given else {max(1, int(e * 0.5)), max(1, int(e * 0.75))}
    o["milestones"] = tuple(sorted(int(m) for m in o["milestones"]))


def _check_choices(o: dict[str, Any]) -> None:
    for name, what, choices, sep in (("shortcut_norm", "shortcut norm", SHORTCUT_NORMS, " or "),
                                     ("attn_placement", "attention placement", ATTN_PLACEMENTS, ", ")):
        if o[name] not in choices:
            raise ConfigError(f"unknown {what} '{o[name]}': choose {sep.join(choices)}")


def _check_optimizer(o: dict[str, Any]) -> None:
    """What the bounds of each option (TRAIN_FIELDS) do not say: lr gamma in (0, 1], milestones >= 1,
    momentum and weight decay in [0, 1), label smoothing in [0, 1)."""
    for name in ("lr_gamma", "momentum", "weight_decay", "label_smoothing"):
        check(display_name(name), o[name], TRAIN_FIELDS[name])
    if not 0 < o["lr_gamma"] <= 1:
        raise ConfigError(f"lr gamma must be in (0, 1], got {o['lr_gamma']}")
    if any(m < 1 for m in o["milestones"]):
        raise ConfigError(f"milestones must be epochs >= 1, got {list(o['milestones'])}")
    if o["weight_decay"] < 0 or o["momentum"] < 0:
        raise ConfigError("momentum and weight decay must be >= 0")
    if o["momentum"] >= 1 or o["weight_decay"] >= 1:
        raise ConfigError(f"momentum and weight decay must be < 1, got {o['momentum']:g} and {o['weight_decay']:g}")
    if not 0 <= o["label_smoothing"] < 1:
        raise ConfigError(f"label smoothing must be in [0, 1), got {o['label_smoothing']:g}")
    if any(m > o["epochs"] for m in o["milestones"]):
        raise ConfigError(f"milestones must be epochs <= {o['epochs']} (the number of epochs), "
                          f"got {list(o['milestones'])}")


def display_name(name: str) -> str:
    """An option's name in messages: `batch size`, `lr gamma`."""
    return display(next(f for f in dataclasses.fields(TrainConfig) if f.name == name))


def _attack_values(attack: Attack, given: dict[str, Any], batch_size: int, dataset: str) -> dict[str, Any]:
    """Every attack parameter: the attack's own checked (those not given take its defaults, or the
    dataset's where they depend on it: mix's foreign source), the other attacks' at their neutral values
    (given another value, such a parameter is refused: the attack would ignore it)."""
    spec = attacks.get(attack)
    own = {f.name for f, _ in spec.param_fields()}
    neutral = attacks.neutral_values()
    foreign = [k for k in ATTACK_FIELDS[1:] if k not in own and given.get(k) is not None and given[k] != neutral[k]]
    if foreign:
        raise ConfigError(f"{foreign[0]} is not a parameter of the {spec.name} attack (its parameters: "
                          f"{', '.join(sorted(own)) or 'none'})")
    values = {**spec.defaults_for(dataset), **{k: v for k, v in given.items() if k in own and v is not None}}
    p = spec.Params(**values)
    return {**attacks.neutral_values(), **dataclasses.asdict(spec.check(p, batch_size=batch_size, dataset=dataset))}


class UnknownOption(ConfigError, TypeError):
    """An unknown keyword of resolve_train_config (`noiseattack.run`'s options): bad input (one line,
    the nearest option named) and, as for any function, a TypeError."""


def check_options_known(options: Iterable[str], others: Sequence[str] = ()) -> None:
    """Raise UnknownOption for the first of `options` that is neither a keyword of resolve_train_config
    nor one of `others` (a caller's own keywords), naming the nearest of them all."""
    import difflib

    known = [*TRAIN_FIELDS, "preset", *others]
    for name in options:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            raise UnknownOption(f"unknown option '{name}'" + (f": did you mean '{near[0]}'?" if near else
                                                             f" (the options: {', '.join(known)})"))


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """Every option of resolve_train_config: given, or its `given_default` (a string where the command
    line writes the option otherwise, milestones "15,22", parsed as it parses it). An unknown keyword is
    an UnknownOption."""
    check_options_known(options)
    o = {name: options.get(name, given_default(name)) for name in TRAIN_FIELDS}
    for name, m in TRAIN_FIELDS.items():
        if m.parse is not None and isinstance(o[name], str):
            o[name] = m.parse(o[name])
    o["attack"] = options.get("attack", Attack.clean)
    o["preset"] = options.get("preset", Preset.quick)
    return o


def resolve_train_config(**options: Any) -> TrainConfig:
    """Apply the preset, then the explicit options, then check every value.

    The keywords are `attack`, `preset` and TrainConfig's fields (the attacks' parameters included:
    alpha, beta, extra, k, ...; see the signature). An option left at None takes the preset's value
    (`PRESETS`, on top of `BASE_SETTING`); an attack parameter left at None takes its attack's default."""
    o = _given(options)
    try:
        attack = Attack(getattr(o["attack"], "value", o["attack"]))
    except ValueError:
        raise ConfigError(f"unknown attack '{o['attack']}': choose {', '.join(attacks.names())}") from None
    try:
        preset = Preset(o.pop("preset"))
    except ValueError:
        raise ConfigError(f"unknown preset '{options['preset']}': choose {', '.join(p.value for p in Preset)}") from None
    dataset = o["dataset"] = o["dataset"].lower()
    if dataset not in DATASETS:
        only_extra = (f" ({dataset} is a foreign source for the mix attack's --extra only)"
                      if dataset in EXTRA_SOURCES else "")
        raise ConfigError(f"unknown dataset '{dataset}': choose from {', '.join(DATASETS)}{only_extra}")
    if o["lr_schedule"] not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr schedule '{o['lr_schedule']}': choose {', '.join(LR_SCHEDULES)}")
    if o["lr_schedule"] != "step" and o["milestones"]:
        raise ConfigError(f"milestones belong to the step schedule: the {o['lr_schedule']} schedule decays lr to 0 "
                          "over the training steps by itself (drop --milestones)")
    _apply_preset(preset, o)
    _check_choices(o)
    if o["lr_schedule"] != "step":
        o["milestones"] = ()
    o.update(_attack_values(attack, o, o["batch_size"], o["dataset"]), attack=attack)
    o["width"] = resolve_width(o["width"])
    for name in TRAIN_OPTIONS:  # each option's bounds (TrainConfig's declarations)
        check(display_name(name), o[name], TRAIN_FIELDS[name])
    _check_optimizer(o)
    o["block"] = resolve_block(o["depth"], o["block"])
    if o["train_subset"] is not None and o["train_subset"] < o["batch_size"]:
        raise ConfigError(f"train subset {o['train_subset']} is smaller than the batch size {o['batch_size']}: "
                          f"use --batch-size {o['train_subset']} or less, or a larger --train-subset")
    o["device"] = resolve_device(o["device"])
    _check_amp(o["amp"], o["device"])
    if o["compile"] is None:
        o["compile"] = compile_pays(o["device"])
    return TrainConfig(**_typed(o))


def _typed(o: dict[str, Any]) -> dict[str, Any]:
    """The resolved values as TrainConfig stores them: floats as floats, ints as ints, bools as bools."""
    out = dict(o)
    for f in dataclasses.fields(TrainConfig):
        v, tp = out[f.name], f.type
        if v is None or f.name in ATTACK_FIELDS or f.name == "width":
            continue
        if tp == "float":
            out[f.name] = float(v)
        elif tp == "int":
            out[f.name] = int(v)
        elif tp == "bool":
            out[f.name] = bool(v)
    return out


def _signature():
    """resolve_train_config's keywords, for help() and inspect: attack, preset, then every option."""
    import inspect
    import typing

    hints = typing.get_type_hints(TrainConfig)
    params = [inspect.Parameter("attack", inspect.Parameter.KEYWORD_ONLY, default=Attack.clean, annotation="Attack | str"),
              inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, default=Preset.quick,
                                annotation="Preset | str")]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=given_default(name),
                                 annotation=hints[name] | None if given_default(name) is None else hints[name])
               for name in TRAIN_FIELDS if name != "attack"]
    return inspect.Signature(params, return_annotation=TrainConfig)


resolve_train_config.__signature__ = _signature()  # type: ignore[attr-defined]


def default_name(cfg: TrainConfig) -> str:
    """`constant-a2-b1-cifar100-resnet20-e30`, `mix-fmnist-k32-cifar100-resnet20-e30`,
    `clean-cifar100-resnet164-bnshortcut-e164` (BatchNorm shortcuts: the paper preset),
    `clean-fmnist-resnet20-blockattn-n2000-e45` (NORM+ATTN's attention once per block; `-stageattn`
    once per stage),
    `clean-fmnist-resnet20w0.5-n6000-e15-noaug` (no crops or flips): the attack's head, then the part
    of every option that declares one (`name_part`), in their `name_rank` order."""
    parts = [(m.name_rank, m.name_part(cfg)) for m in TRAIN_FIELDS.values() if m.name_part is not None]
    head = cfg.attack_spec().name_head(cfg.attack_params())
    return "-".join([head, *(part for _, part in sorted(parts, key=lambda x: x[0]) if part)])


_MOVED = {  # names that lived here, importable from here as before
    **dict.fromkeys(("resolve_experiment", "parse_norms", "parse_seeds", "check_writable_dir", "MAX_SEED",
                     "MAX_REPEATS"), "experiment_setup"),
    **dict.fromkeys(("available_memory", "check_memory"), "memory"),
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f".{_MOVED[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
