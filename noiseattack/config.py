"""Every hyperparameter in one place, resolved and validated before anything runs.

A `TrainConfig` fixes everything that determines the result of one training run except the
norm and the seed; a `RunConfig` adds those two. An `ExperimentConfig` is one setting (a
`TrainConfig`) repeated over several norms and seeds. Invalid input raises `ConfigError`
with a one-line message, before any file is written.
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
from typing import Any

from . import datasets
from .errors import ConfigError


class Attack(str, Enum):
    clean = "clean"
    constant = "constant"
    mix = "mix"


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

# What every preset starts from; a preset's own entries replace these.
BASE_SETTING: dict[str, Any] = {
    "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "lr_gamma": 0.1, "shortcut_norm": "same",
}

# Presets: every field a preset sets can be overridden by an explicit option.
PRESETS: dict[Preset, dict[str, Any]] = {
    Preset.quick: {"depth": 20, "epochs": 30},
    # The official IEBN setup (gbup-group/IEBN: `cifar.py -a iebn_resnet --block-name bottleneck
    # --depth 164 --epochs 164 --schedule 81 122 --gamma 0.1 --wd 1e-4`, with cifar.py's defaults
    # lr 0.1, train-batch 128, momentum 0.9): ResNet-164 (bottleneck blocks: `block` auto), plain
    # BatchNorm in the projection shortcuts. Every value is spelled out, not inherited.
    Preset.paper: {"depth": 164, "epochs": 164, "milestones": (81, 122), "lr_gamma": 0.1, "lr": 0.1,
                   "batch_size": 128, "momentum": 0.9, "weight_decay": 1e-4, "shortcut_norm": "bn"},
}

# Fields that change speed but not the mathematics of a run: they are not part of a run's
# identity (its key), so a run may be resumed on another device or with another memory layout.
PERFORMANCE_FIELDS = ("device", "channels_last", "compile_norms", "compile", "eval_batch_size")

# Fields added after runs were committed: `identity()` leaves each out at this value, so that the
# identity (and every run key) of a setting from before the field existed stays what it was.
OMITTED_AT_DEFAULT: dict[str, Any] = {"shortcut_norm": "same", "attn_placement": "norm", "augment": True,
                                      "lr_schedule": "step", "label_smoothing": 0.0, "nesterov": False}


@dataclass(frozen=True)
class TrainConfig:
    """One experimental setting: data, attack, model and optimisation. No norm, no seed."""

    dataset: str = "cifar100"
    attack: Attack = Attack.clean
    alpha: float = 1.0  # constant attack: x_hat -> alpha * x_hat + beta
    beta: float = 0.0
    extra: str | None = None  # mix attack: the foreign dataset ...
    k: int = 0  # ... and how many of its images join every training batch
    depth: int = 20
    block: str = "basic"  # resolved: "basic" or "bottleneck"
    width: int | float = 1  # channel multiplier: stages of 16, 32, 64 x width channels (an int when whole)
    shortcut_norm: str = "same"  # the projection shortcuts' norm: "same" or "bn" (SHORTCUT_NORMS)
    attn_placement: str = "norm"  # NORM+ATTN's attention: after every norm, once per block or stage (ATTN_PLACEMENTS)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (15, 22)  # epochs after which lr is multiplied by lr_gamma ("step" only)
    lr_gamma: float = 0.1
    lr_schedule: str = "step"  # LR_SCHEDULES: step (milestones), cosine or linear to 0 per step
    label_smoothing: float = 0.0  # cross-entropy label smoothing (torch's: the target mixes in 1/classes)
    nesterov: bool = False  # Nesterov momentum
    train_subset: int | None = None  # a fixed subset (seed 0) of the training split
    test_subset: int | None = None  # a fixed subset (seed 0) of the test split
    augment: bool = True  # random crops (CROP_PAD) and flips of the training batches and of mix's foreign images
    amp: bool = False  # bf16 autocast (CUDA only); changes the numerics, so part of the key
    # performance only (see PERFORMANCE_FIELDS)
    device: str = "cpu"
    channels_last: bool = True
    compile_norms: bool = True  # IEBN's full-size work in torch.compile'd kernels (eager fallback)
    compile: bool = False  # the whole model torch.compile'd (eager fallback); see train.compile_model
    eval_batch_size: int = 1000

    def identity(self) -> dict[str, Any]:
        """The fields that determine results, as plain JSON values.

        A field of OMITTED_AT_DEFAULT appears only when it differs from its value there
        (`shortcut_norm` only when it is not "same", `augment` only when False, ...): the identity
        (and so every run key) of a setting from before the field existed stays what it was."""
        d = to_jsonable(dataclasses.asdict(self))
        for name in PERFORMANCE_FIELDS:
            d.pop(name)
        for name, default in OMITTED_AT_DEFAULT.items():
            if d[name] == default:
                del d[name]
        return d

    def setting_label(self) -> str:
        """The attack setting in a few characters: `a2_b1`, `k32`, `clean`."""
        if self.attack is Attack.constant:
            return f"a{self.alpha:g}_b{self.beta:g}"
        if self.attack is Attack.mix:
            return f"{self.extra}_k{self.k}"
        return "clean"


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
    one written before `attn_placement` existed as "norm", one written before `augment` existed as True."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in d.items() if k in names}
    kw["attack"] = Attack(kw.get("attack", "clean"))
    kw["milestones"] = tuple(kw.get("milestones", ()))
    return TrainConfig(**kw)


# --------------------------------------------------------------------------- resolution


def parse_norms(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Layer names (`bn,iebn+eca,pkg.mod:MyNorm`, `paper`, `all`) -> canonical names: see `noiseattack.zoo`."""
    from .zoo import parse_norms as parse

    return parse(spec)


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
    return tuple(dict.fromkeys(seeds))


def resolve_block(depth: int, block: str) -> str:
    """`auto` is the convention of the ResNet papers: basic blocks up to depth 110, bottlenecks above."""
    if block not in ("auto", "basic", "bottleneck"):
        raise ConfigError(f"unknown block '{block}': choose auto, basic or bottleneck")
    if block == "auto":
        block = "basic" if depth <= 110 else "bottleneck"
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


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {value}")


def _at_least(name: str, value: int | float | None, low: int | float) -> None:
    if value is not None and value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")


def _apply_preset(preset: Preset, **o: Any) -> dict[str, Any]:
    """The options `o`, in their order, each None replaced by the preset's value (`PRESETS` on top of
    `BASE_SETTING`). The preset's milestones hold only for its own epoch count: explicit epochs
    without explicit milestones decay lr after 50% and 75% of the epochs (once, where they coincide)."""
    p = {**BASE_SETTING, **PRESETS[preset]}
    out = {k: (p[k] if v is None and k in p and k != "milestones" else v) for k, v in o.items()}
    if out["milestones"] is None and o["epochs"] is None:
        out["milestones"] = p.get("milestones")
    _at_least("epochs", out["epochs"], 1)
    if out["milestones"] is None:
        e = out["epochs"]
        out["milestones"] = {max(1, int(e * 0.5)), max(1, int(e * 0.75))}
    out["milestones"] = tuple(sorted(int(m) for m in out["milestones"]))
    return out


# Upper bounds: a value past them is a typo or a run that cannot finish (README, "Limits").
MAX_K_PER_BATCH = 16  # mix: k <= 16 x the batch size (the extra images are drawn with replacement)
MAX_EPOCHS = 10_000
MAX_DEPTH = 1202  # the deepest CIFAR ResNet of He et al.
MAX_WIDTH = 64
MAX_BATCH_SIZE = 65_536  # training and evaluation batches; memory usually bounds them first
MAX_LR = 1e6  # room for divergence studies (a diverged run is recorded as such)
MAX_NOISE = 1000.0  # |alpha| and |beta| of the constant attack
MAX_SEED = 2**32 - 1
MAX_REPEATS = 1000
MAX_SUBSET = 10_000_000


def _at_most(name: str, value: int | float | None, high: int | float) -> None:
    if value is not None and value > high:
        raise ConfigError(f"{name} must be <= {high:g}, got {value:g}" if isinstance(value, float)
                          else f"{name} must be <= {high}, got {value}")


def _check_upper_limits(*, attack: "Attack", alpha: float, beta: float, k: int, depth: int, width: int, epochs: int,
                        batch_size: int, eval_batch_size: int, lr: float, momentum: float, weight_decay: float,
                        milestones: tuple[int, ...], train_subset: int | None, test_subset: int | None) -> None:
    """The upper bounds of every numeric option (the lower ones are checked where they are resolved)."""
    if attack is Attack.constant:
        _at_most("|alpha|", abs(alpha), MAX_NOISE)
        _at_most("|beta|", abs(beta), MAX_NOISE)
    if k > MAX_K_PER_BATCH * batch_size:
        raise ConfigError(f"k must be <= {MAX_K_PER_BATCH} x the batch size ({MAX_K_PER_BATCH * batch_size} "
                          f"for --batch-size {batch_size}), got {k}")
    _at_most("depth", depth, MAX_DEPTH)
    _at_most("width", width, MAX_WIDTH)
    _at_most("epochs", epochs, MAX_EPOCHS)
    _at_most("batch size", batch_size, MAX_BATCH_SIZE)
    _at_most("eval batch size", eval_batch_size, MAX_BATCH_SIZE)
    _at_most("lr", lr, MAX_LR)
    if momentum >= 1 or weight_decay >= 1:
        raise ConfigError(f"momentum and weight decay must be < 1, got {momentum:g} and {weight_decay:g}")
    if any(m > epochs for m in milestones):
        raise ConfigError(f"milestones must be epochs <= {epochs} (the number of epochs), got {list(milestones)}")
    _at_most("train subset", train_subset, MAX_SUBSET)
    _at_most("test subset", test_subset, MAX_SUBSET)
    if train_subset is not None and train_subset < batch_size:
        raise ConfigError(f"train subset {train_subset} is smaller than the batch size {batch_size}: "
                          f"use --batch-size {train_subset} or less, or a larger --train-subset")


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
    faster than the eager one (docs/performance.md, `scripts/bench.py`): a CPU with AVX-512. Not on a
    GPU (an H200 stepped the compiled ResNet-20 at 0.97x the eager one: its small kernels are bound by
    their launches, which inductor's default mode does not remove), nor on AVX2-only CPUs (not measured)."""
    if device != "cpu":
        return False
    import torch

    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def _check_amp(amp: bool, device: str) -> None:
    if amp and device == "cpu" and not cpu_supports_bf16():
        raise ConfigError("--amp needs a GPU or a CPU with native bf16 (AVX-512 BF16 or AMX); this CPU has none, "
                          "so bf16 would be about 10x slower than fp32: drop --amp")


def _bytes_per_image(depth: int, width: int | float, block: str) -> tuple[int, int]:
    """(training, evaluation) memory per image of a CIFAR ResNet, estimated from its activations:
    every conv output counts 3 fp32 tensors kept for the backward pass (conv, norm and ReLU outputs)
    in training, and the largest activation twice in evaluation."""
    hw = (1024, 256, 64)  # 32x32, 16x16, 8x8
    planes = [16 * width * 2**s for s in range(3)]
    elems = planes[0] * hw[0]  # the stem
    if block == "basic":
        n = (depth - 2) // 6
        elems += sum(2 * n * c * a for c, a in zip(planes, hw)) + sum(c * a for c, a in zip(planes[1:], hw[1:]))
    else:
        n = (depth - 2) // 9
        elems += sum(n * 6 * c * a + 4 * c * a for c, a in zip(planes, hw))  # conv1, conv2, conv3 (4C); shortcut
    largest = max(c * a * (4 if block == "bottleneck" else 1) for c, a in zip(planes, hw))
    return int(12 * elems), int(2 * 4 * largest)


def available_memory(device: str) -> int | None:
    """Bytes free for a run on `device` (MemAvailable on a CPU), or None where unknown."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    if device != "cpu":
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: "TrainConfig") -> None:
    """Refuse a setting whose training batch (batch size + k images) or evaluation batch cannot fit in
    the device's free memory, by the estimate of `_bytes_per_image`."""
    free = available_memory(cfg.device)
    if free is None:
        return
    train_b, eval_b = _bytes_per_image(cfg.depth, cfg.width, cfg.block)
    for what, images, per_image in (("a training batch", cfg.batch_size + cfg.k, train_b),
                                    ("an evaluation batch", cfg.eval_batch_size, eval_b)):
        need = images * per_image
        if need > free:
            hint = " (batch size + k)" if cfg.k and "training" in what else ""
            raise ConfigError(f"{what} of {images} images{hint} needs about {need / 2**30:.1f} GiB for "
                              f"ResNet-{cfg.depth} width {cfg.width}, more than the {free / 2**30:.1f} GiB free on "
                              f"{cfg.device}: use a smaller batch{', --k' if hint else ''} or model")


def _attack_options(attack: Attack, alpha: float, beta: float, extra: str | None,
                    k: int) -> tuple[float, float, str | None, int]:
    """The attack's own options checked, and the others' reset to their no-attack values."""
    if attack is Attack.constant:
        _finite("alpha", alpha)
        _finite("beta", beta)
        if alpha == 0:
            raise ConfigError("alpha must be non-zero: alpha = 0 erases the normalized activation")
    else:
        alpha, beta = 1.0, 0.0
    if attack is not Attack.mix:
        return alpha, beta, None, 0
    if extra is None:
        raise ConfigError("mix needs --extra: choose from " + ", ".join(EXTRA_SOURCES))
    extra = extra.lower()
    if extra not in EXTRA_SOURCES:
        raise ConfigError(f"unknown extra dataset '{extra}': choose from {', '.join(EXTRA_SOURCES)}")
    if k < 0:
        raise ConfigError(f"k must be >= 0 (the number of extra images per batch), got {k}")
    return alpha, beta, extra, k


def _check_optimizer(lr: float, lr_gamma: float, milestones: tuple[int, ...], momentum: float,
                     weight_decay: float) -> None:
    _finite("lr", lr)
    if lr <= 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    _finite("lr gamma", lr_gamma)
    if not 0 < lr_gamma <= 1:
        raise ConfigError(f"lr gamma must be in (0, 1], got {lr_gamma}")
    if any(m < 1 for m in milestones):
        raise ConfigError(f"milestones must be epochs >= 1, got {list(milestones)}")
    _finite("momentum", momentum)
    _finite("weight decay", weight_decay)
    if weight_decay < 0 or momentum < 0:
        raise ConfigError("momentum and weight decay must be >= 0")


def resolve_train_config(
    *,
    attack: Attack | str = Attack.clean,
    dataset: str = "cifar100",
    alpha: float = 1.0,
    beta: float = 0.0,
    extra: str | None = None,
    k: int = 0,
    preset: Preset | str = Preset.quick,
    depth: int | None = None,
    block: str = "auto",
    width: int | float = 1,
    shortcut_norm: str | None = None,
    attn_placement: str = "norm",
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    milestones: tuple[int, ...] | None = None,
    lr_gamma: float | None = None,
    lr_schedule: str = "step",
    label_smoothing: float = 0.0,
    nesterov: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    augment: bool = True,
    amp: bool = False,
    device: str = "auto",
    channels_last: bool = True,
    compile_norms: bool = True,
    compile: bool | None = None,
    eval_batch_size: int = 1000,
) -> TrainConfig:
    """Apply the preset, then the explicit options, then check every value.

    An option left at None takes the preset's value (`PRESETS`, on top of `BASE_SETTING`)."""
    try:
        attack = Attack(attack)
    except ValueError:
        raise ConfigError(f"unknown attack '{attack}': choose {', '.join(a.value for a in Attack)}") from None
    try:
        preset = Preset(preset)
    except ValueError:
        raise ConfigError(f"unknown preset '{preset}': choose {', '.join(p.value for p in Preset)}") from None
    dataset = dataset.lower()
    if dataset not in DATASETS:
        only_extra = (f" ({dataset} is a foreign source for the mix attack's --extra only)"
                      if dataset in EXTRA_SOURCES else "")
        raise ConfigError(f"unknown dataset '{dataset}': choose from {', '.join(DATASETS)}{only_extra}")

    if lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr schedule '{lr_schedule}': choose {', '.join(LR_SCHEDULES)}")
    if lr_schedule != "step" and milestones:
        raise ConfigError(f"milestones belong to the step schedule: the {lr_schedule} schedule decays lr to 0 "
                          "over the training steps by itself (drop --milestones)")
    o = _apply_preset(preset, depth=depth, epochs=epochs, milestones=milestones, batch_size=batch_size, lr=lr,
                      momentum=momentum, weight_decay=weight_decay, lr_gamma=lr_gamma, shortcut_norm=shortcut_norm)
    depth, epochs, milestones, batch_size, lr, momentum, weight_decay, lr_gamma, shortcut_norm = o.values()
    if shortcut_norm not in SHORTCUT_NORMS:
        raise ConfigError(f"unknown shortcut norm '{shortcut_norm}': choose {' or '.join(SHORTCUT_NORMS)}")
    if attn_placement not in ATTN_PLACEMENTS:
        raise ConfigError(f"unknown attention placement '{attn_placement}': choose {', '.join(ATTN_PLACEMENTS)}")

    if lr_schedule != "step":
        milestones = ()
    alpha, beta, extra, k = _attack_options(attack, alpha, beta, extra, k)
    _finite("label smoothing", label_smoothing)
    if not 0 <= label_smoothing < 1:
        raise ConfigError(f"label smoothing must be in [0, 1), got {label_smoothing:g}")

    width = resolve_width(width)
    for name, v in (("batch size", batch_size), ("eval batch size", eval_batch_size),
                    ("train subset", train_subset), ("test subset", test_subset)):
        _at_least(name, v, 1)
    _check_optimizer(lr, lr_gamma, milestones, momentum, weight_decay)
    block = resolve_block(depth, block)
    _check_upper_limits(attack=attack, alpha=alpha, beta=beta, k=k, depth=depth, width=width, epochs=epochs,
                        batch_size=batch_size, eval_batch_size=eval_batch_size, lr=lr, momentum=momentum,
                        weight_decay=weight_decay, milestones=milestones, train_subset=train_subset,
                        test_subset=test_subset)
    device = resolve_device(device)
    _check_amp(amp, device)
    if compile is None:
        compile = compile_pays(device)
    return TrainConfig(
        dataset=dataset, attack=attack, alpha=float(alpha), beta=float(beta), extra=extra, k=int(k),
        depth=int(depth), block=block, width=width, shortcut_norm=shortcut_norm,
        attn_placement=attn_placement, epochs=int(epochs), batch_size=int(batch_size),
        lr=float(lr), momentum=float(momentum), weight_decay=float(weight_decay), milestones=milestones,
        lr_gamma=float(lr_gamma), lr_schedule=lr_schedule, label_smoothing=float(label_smoothing),
        nesterov=bool(nesterov), train_subset=train_subset, test_subset=test_subset, augment=bool(augment), amp=amp,
        device=device, channels_last=channels_last, compile_norms=bool(compile_norms), compile=bool(compile),
        eval_batch_size=int(eval_batch_size),
    )


def default_name(cfg: TrainConfig) -> str:
    """`constant-a2-b1-cifar100-resnet20-e30`, `mix-fmnist-k32-cifar100-resnet20-e30`,
    `clean-cifar100-resnet164-bnshortcut-e164` (BatchNorm shortcuts: the paper preset),
    `clean-fmnist-resnet20-blockattn-n2000-e45` (NORM+ATTN's attention once per block; `-stageattn`
    once per stage),
    `clean-fmnist-resnet20w0.5-n6000-e15-noaug` (no crops or flips)."""
    if cfg.attack is Attack.constant:
        head = f"constant-a{cfg.alpha:g}-b{cfg.beta:g}"
    elif cfg.attack is Attack.mix:
        head = f"mix-{cfg.extra}-k{cfg.k}"
    else:
        head = "clean"
    model = f"resnet{cfg.depth}" + (f"w{cfg.width}" if cfg.width != 1 else "")
    parts = [head, cfg.dataset, model]
    if cfg.shortcut_norm != "same":
        parts.append(f"{cfg.shortcut_norm}shortcut")
    if cfg.attn_placement != "norm":
        parts.append(f"{cfg.attn_placement}attn")
    if cfg.train_subset:
        parts.append(f"n{cfg.train_subset}")
    parts.append(f"e{cfg.epochs}")
    if not cfg.augment:
        parts.append("noaug")
    if cfg.lr_schedule != "step":
        parts.append(cfg.lr_schedule)
    if cfg.label_smoothing:
        parts.append(f"ls{cfg.label_smoothing:g}")
    if cfg.nesterov:
        parts.append("nesterov")
    return "-".join(parts)


def check_writable_dir(path: Path) -> None:
    """The nearest existing ancestor of `path` must be a writable directory."""
    p = path.absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise ConfigError(f"runs dir '{path}' is not writable: '{p}' is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"runs dir '{path}' is not writable ('{p}' denies write access)")


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
    from .models import model_shapes
    from .zoo import check_layers

    norms = parse_norms(norms)
    check_layers(norms, constant=train.attack is Attack.constant, channels_last=train.channels_last,
                 shapes=model_shapes(train))
    _at_least("repeats", repeats, 1)
    _at_most("repeats", repeats, MAX_REPEATS)
    seeds = parse_seeds(seeds) if seeds is not None else tuple(seed + i for i in range(repeats))
    if len(seeds) > MAX_REPEATS:
        raise ConfigError(f"--seeds names {len(seeds)} seeds: at most {MAX_REPEATS}")
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise ConfigError(f"seeds must be in 0..{MAX_SEED}, got {bad[0]}" + (f" (and {len(bad) - 1} more)" if bad[1:] else ""))
    if name is not None and (not name or "/" in name or name in (".", "..")):
        raise ConfigError(f"--name '{name}' must be a plain directory name")
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
