"""The layer zoo: one registry of every layer name the harness knows, and the rules for names.

A layer is anything `factory(channels) -> nn.Module` that keeps the shape N x C x H x W. Names:

    bn, iebn, gn, ...        a registered norm (`noiseattack norms` lists them)
    NORM+ATTN                a norm followed by an attention module on its output (bn+eca,
                             iebn+cbam, gn+se, ...); ATTN is a registered attention module
    pkg.module:Name          the researcher's own layer (a class or function called with the
                             channel count), imported by path; also as NORM or ATTN of a `+`
    paper, all               shorthands: the paper's four (bn, in, bnse, iebn); every registered norm
                             (no NORM+ATTN)

An import path resolves to its canonical name `pkg.module:Name@<sha256 of the module's source
file, 8 hex digits>`, which the run key, the results and the report carry: two versions of a
user's layer never share a key or a row. A canonical name given back (from a results file)
must match the source as it is now.

A user's layer is checked on a tiny batch at each channel count and map size of the model's norm
positions before anything is written (`check_layers`): it builds, it is an nn.Module and no lazy
module, it says it was built for the channels asked (where it says: num_features, num_channels,
normalized_shape), its forward keeps the shape and gives finite values in training and eval mode
on the model's memory format, it has a backward through the ReLU the model puts after it, and,
under the constant attack, the attack can reach it (see `noiseattack.norms`). The model follows a
user's layer by an out-of-place ReLU (`inplace_relu_after`): a forward that ends in an in-place op
is fine. Registered layers of noiseattack, torch and timm are covered by the test suite instead.

timm's attention modules are taken from `timm.layers.get_attn`, the source the field uses; `das`
is ours (`noiseattack.layers.das`). Left out on purpose: `nl`, `bat`, `lambda`, `halo`,
`bottleneck` (self-attention: far too slow on CPU for this harness), `sk`, `splat` (convolution
replacements, not gates on a norm's output), `ceca`, `gca`, `scoord` (variants; any of them works
by import path, e.g. `bn+timm.layers:SimpleCoordAttn`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
import re
import sys
import traceback
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from . import iebn, layers, norms
from .errors import ConfigError
from .norms import NormAttention, per_channel_noise, reach_noise

Factory = Callable[[int], nn.Module]
ORIGINS = ("noiseattack", "torch", "timm", "user")
PAPER = ("bn", "in", "bnse", "iebn")  # the IEBN paper's four layers
CHECK_CHANNELS = (16, 32, 64)  # the channel counts `noiseattack norms` prices a layer at
CHECK_SHAPES = ((16, 32), (32, 16), (64, 8))  # (channels, height = width) of ResNet-20's stages

_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")
_PATH = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_][\w.]*)(?:@(?P<sha>[0-9a-f]{8}))?$")


@dataclass(frozen=True)
class LayerSpec:
    """A registered layer: its name, factory, one-line description and where it comes from."""

    name: str
    factory: Factory
    description: str
    origin: str  # one of ORIGINS


_NORMS: dict[str, LayerSpec] = {}
_ATTENTIONS: dict[str, LayerSpec] = {}


def _register(table: dict[str, LayerSpec], kind: str, name: str, factory: Factory, description: str,
              origin: str, replace: bool) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{kind} name {name!r} must be lowercase letters, digits, '_', '-' or '.', "
                          "starting with a letter (no '+', ':', '@' or ',')")
    if not callable(factory):
        raise ConfigError(f"{kind} '{name}': the factory must be callable as factory(channels)")
    if origin not in ORIGINS:
        raise ConfigError(f"{kind} '{name}': origin must be one of {', '.join(ORIGINS)}")
    if name in ("paper", "all") or (not replace and (name in _NORMS or name in _ATTENTIONS)):
        raise ConfigError(f"{kind} name '{name}' is taken (pass replace=True to replace a registered layer)")
    table[name] = LayerSpec(name, factory, description.strip().splitlines()[0] if description.strip() else "", origin)
    resolve.cache_clear()


def register_norm(name: str, factory: Factory, description: str = "", *, origin: str = "user",
                  replace: bool = False) -> None:
    """Add a norm: `factory(channels) -> nn.Module`, shape-preserving on N x C x H x W.

    A registered name stands for one layer: give a changed layer a new name (or use an import path,
    whose canonical name carries a hash of the source). Registrations live in this process: a
    sweep's worker processes and Slurm jobs know only the layers registered on import of
    noiseattack and import paths."""
    _register(_NORMS, "norm", name, factory, description, origin, replace)


def register_attention(name: str, factory: Factory, description: str = "", *, origin: str = "user",
                       replace: bool = False) -> None:
    """Add an attention module usable as the ATTN of `NORM+ATTN`: `factory(channels) -> nn.Module`."""
    _register(_ATTENTIONS, "attention", name, factory, description, origin, replace)


def norm_names() -> tuple[str, ...]:
    """Every registered norm, in registration order."""
    return tuple(_NORMS)


def attention_names() -> tuple[str, ...]:
    return tuple(_ATTENTIONS)


# --------------------------------------------------------------------------- names


@dataclass(frozen=True)
class Resolved:
    """A layer name resolved: canonical name, factory, description, origin, and for a user's layer
    imported by path where its source is (module, file, sha256)."""

    name: str
    factory: Factory
    description: str
    origin: str
    sources: tuple[dict[str, str], ...] = ()

    def info(self) -> dict:
        """What a results record says about the layer."""
        out = {"origin": self.origin, "description": self.description}
        if self.sources:
            out["sources"] = [dict(s) for s in self.sources]
        return out


@functools.lru_cache(maxsize=None)
def resolve(name: str) -> Resolved:
    """The layer a name stands for (see the module docstring); ConfigError if there is none."""
    norm, attn = split(name)
    if attn is None:
        return norm
    return Resolved(f"{norm.name}+{attn.name}", _composite(norm.factory, attn.factory),
                    f"{norm.name} followed by {attn.name}: {attn.description}",
                    "user" if "user" in (norm.origin, attn.origin) else attn.origin, norm.sources + attn.sources)


def split(name: str) -> tuple[Resolved, Resolved | None]:
    """A layer name's norm and attention module, each resolved: `bn+cbam` -> (bn, cbam); a name
    without `+ATTN` (bn, bnse, iebn, a user's norm) -> (it, None). The model uses it to place the
    attention once per residual block (attn_placement "block", `noiseattack.models`)."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("a layer name is empty")
    name = name.strip()
    if name.count("+") > 1:
        raise ConfigError(f"'{name}': one attention module per norm (NORM+ATTN)")
    if "+" not in name:
        return _resolve_one(name, _NORMS, "norm"), None
    norm_part, attn_part = (s.strip() for s in name.split("+"))
    return _resolve_one(norm_part, _NORMS, "norm"), _resolve_one(attn_part, _ATTENTIONS, "attention")


def _composite(norm: Factory, attn: Factory) -> Factory:
    return lambda channels: NormAttention(norm(channels), attn(channels))


def _resolve_one(name: str, table: dict[str, LayerSpec], kind: str) -> Resolved:
    if ":" in name:
        return _import_layer(name)
    key = name.lower()
    if key not in table:
        raise ConfigError(f"unknown {kind} '{name}': choose from {', '.join(table)}"
                          + (", NORM+ATTN, 'paper', 'all'" if kind == "norm" else "")
                          + ", or an import path pkg.module:Name (see `noiseattack norms`)")
    spec = table[key]
    return Resolved(spec.name, spec.factory, spec.description, spec.origin)


def _import_layer(path: str) -> Resolved:
    m = _PATH.match(path)
    if m is None:
        raise ConfigError(f"'{path}' is not an import path of the form pkg.module:Name")
    module_name, attr = m["module"], m["attr"]
    if os.getcwd() not in sys.path:  # as `python -m` does: the user's package next to their runs
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ConfigError(f"cannot import '{module_name}' for layer '{path}': {e}") from None
    except Exception as e:  # noqa: BLE001 - any error in the user's module is bad input: one line
        raise ConfigError(f"importing '{module_name}' for layer '{path}' failed: {describe_error(e)}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"module '{module_name}' has no attribute '{attr}' (layer '{path}')")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"'{path}' is not callable: a layer is a class or function called with the channel count")
    source = _source_of(obj, module_name)
    canonical = f"{module_name}:{attr}@{source['sha256'][:8]}"
    if m["sha"] and m["sha"] != source["sha256"][:8]:
        raise ConfigError(f"layer '{path}': its source has changed since (now {canonical}); "
                          f"name it without '@{m['sha']}' to run the current version")
    doc = own_doc(obj).splitlines()
    return Resolved(canonical, obj, doc[0] if doc else f"user layer {module_name}:{attr}", "user", (source,))


def own_doc(obj) -> str:
    """The docstring `obj` itself has, cleaned; "" without one. A class's docstring is not inherited
    here (inspect.getdoc would give timm's EvoNorm2dB0 nn.Module's "Base class for all neural
    network modules.")."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc).strip() if isinstance(doc, str) else ""


def _source_of(obj, module_name: str) -> dict[str, str]:
    """The file that defines `obj` (or the module imported) and the sha256 of its bytes."""
    module = inspect.getmodule(obj) or sys.modules[module_name]
    try:
        file = inspect.getsourcefile(module) or inspect.getfile(module)
        data = open(file, "rb").read()
    except (TypeError, OSError):
        raise ConfigError(f"'{module_name}' has no source file to fingerprint: a layer imported by path "
                          "must live in a .py file") from None
    return {"module": module.__name__, "file": os.path.abspath(file), "sha256": hashlib.sha256(data).hexdigest()}


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def parse_norms(spec: str | tuple[str, ...] | list[str], what: str = "--norm") -> tuple[str, ...]:
    """`bn,iebn+eca,pkg.mod:MyNorm`, `paper` or `all` -> canonical names, in order. A layer named twice
    (`bn,bn`, `bn,BN`, `paper,iebn`) is a ConfigError: it would be trained once, not twice."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (str(s).strip() for s in items):
        if not item:
            continue
        if item.lower() == "paper":
            names += PAPER
        elif item.lower() == "all":
            names += norm_names()
        else:
            names.append(resolve(item).name)
    if not names:
        raise ConfigError(f"{what} is empty: name one or more layers (see `noiseattack norms`), 'paper' or 'all'")
    twice = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    if twice:
        raise ConfigError(f"{what} names {twice[0]} more than once (after expanding 'paper' and 'all'): "
                          "name each layer once")
    return tuple(names)


def make_norm(name: str, channels: int) -> nn.Module:
    """The layer a name stands for, for `channels` channels."""
    return resolve(name).factory(int(channels))


@functools.lru_cache(maxsize=None)
def has_iebn(name: str) -> bool:
    """Whether the layer holds IEBN modules (whose kernels, compiled or eager, a run's record names):
    asked of the layer itself, built once at 16 channels (False where it cannot be built)."""
    try:
        with torch.random.fork_rng():
            layer = make_norm(name, 16)
    except Exception:  # noqa: BLE001 - a user's layer that fails here fails its run, with its own message
        return False
    return any(isinstance(m, iebn.IEBN) for m in layer.modules())


def layer_info(name: str) -> dict:
    """Origin, description and (for a user's layer) its source, for a results record."""
    return resolve(name).info()


# --------------------------------------------------------------------------- the contract


def param_counts(name: str, channels: tuple[int, ...] = CHECK_CHANNELS) -> dict[int, int]:
    """Trainable parameters of the layer at each channel count."""
    out = {}
    with torch.random.fork_rng():
        for c in channels:
            out[c] = sum(p.numel() for p in make_norm(name, c).parameters() if p.requires_grad)
    return out


def inplace_relu_after(name: str) -> bool:
    """Whether the model may follow the layer `name` by an in-place ReLU: for the registered layers
    of noiseattack, torch and timm (tested), not after a user's layer, whose forward may end in an
    in-place op or in an op that autograd saves its output for (sigmoid, an in-place activation,
    ...): an in-place ReLU on that output would break the backward. The same function either way."""
    return resolve(name).origin != "user"


def check_layers(names: tuple[str, ...], *, reach: str | None = None, constant: bool = False,
                 channels_last: bool = True, shapes: tuple[tuple[int, int], ...] = CHECK_SHAPES) -> None:
    """Refuse (ConfigError, one line naming the rule) a user's layer that breaks the contract, at
    each (channels, height = width) of `shapes` (the model's norm positions: `models.model_shapes`),
    or that the setting's attack cannot reach (`reach`: the attack's, see `noiseattack.attacks`;
    `constant=True` is reach "constant")."""
    for name in names:
        r = resolve(name)
        if r.origin == "user":
            check_layer(r, reach=reach, constant=constant, channels_last=channels_last, shapes=shapes)


def check_layer(r: Resolved, *, reach: str | None = None, constant: bool = False, channels_last: bool = True,
                shapes: tuple[tuple[int, int], ...] = CHECK_SHAPES) -> None:
    """`check_layers` for one resolved layer."""
    reach = reach or ("constant" if constant else None)
    for c, size in shapes:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            layer = _build(r, c)
            _check_built(r.name, layer, c)
            for training in (True, False):
                _check_forward(r.name, layer, c, size, training, channels_last)
            if reach is not None:  # the layer built for the check takes the attack, and must still work under it
                _check_reach(r.name, layer, reach)
                for training in (True, False):
                    _check_forward(r.name, layer, c, size, training, channels_last)


def _check_reach(name: str, layer: nn.Module, reach: str = "constant") -> None:
    """The attack reaches `layer`: applying it (as a model would) finds a target and does not fail.
    reach "constant": set_noise(2.0, 1.0); "per-channel": per-channel alpha, beta (`norms.per_channel_noise`)."""
    if reach == "per-channel":
        try:
            noise = per_channel_noise(layer)
            noise[0].uniform_(0.9, 1.1)
            noise[1].uniform_(-0.1, 0.1)
        except ConfigError as e:
            raise ConfigError(f"layer '{name}': {e}") from None
        except Exception as e:  # noqa: BLE001 - the user's set_noise: any failure is one line
            raise ConfigError(f"layer '{name}': its set_noise with per-channel tensors failed: {describe_error(e)}") from None
        return

    unreachable = (f"layer '{name}': the constant attack cannot reach it (no set_noise(alpha, beta) method and no "
                   "torch normalization module inside); run it under mix or clean, or implement set_noise")
    try:
        reached = reach_noise(layer, 2.0, 1.0) > 0
    except ConfigError as e:  # a set_noise that refuses, e.g. NORM+ATTN whose norm the attack cannot reach
        raise ConfigError(f"layer '{name}': {e}") from None
    except Exception as e:  # noqa: BLE001 - the user's set_noise: any failure is one line
        raise ConfigError(f"layer '{name}': its set_noise(2.0, 1.0) failed: {describe_error(e)}") from None
    if not reached:
        raise ConfigError(unreachable)


def _build(r: Resolved, channels: int) -> nn.Module:
    try:
        layer = r.factory(channels)
    except Exception as e:  # noqa: BLE001 - the user's code: any failure is one line
        raise ConfigError(f"layer '{r.name}': building it for {channels} channels failed: "
                          f"{describe_error(e)}") from None
    if not isinstance(layer, nn.Module):
        raise ConfigError(f"layer '{r.name}': must be an nn.Module, got {type(layer).__name__} for {channels} channels")
    return layer


_CHANNEL_ATTRS = ("num_features", "num_channels", "normalized_shape")


def _check_built(name: str, layer: nn.Module, channels: int) -> None:
    """No lazy module (its constructor takes no channel count: `LazyBatchNorm2d(16)` is eps=16), and
    the layer says it was built for `channels` where it says it (num_features, num_channels,
    normalized_shape of the layer, or of the norm and the attention module of NORM+ATTN)."""
    from torch.nn.modules.lazy import LazyModuleMixin
    from torch.nn.parameter import is_lazy

    for m in layer.modules():
        tensors = list(m.parameters(recurse=False)) + list(m.buffers(recurse=False))
        if isinstance(m, LazyModuleMixin) or any(is_lazy(t) for t in tensors):
            cls = type(m).__name__
            plain = cls.removeprefix("Lazy")
            instead = f", e.g. torch.nn:{plain}" if plain != cls and hasattr(nn, plain) else ""
            raise ConfigError(f"layer '{name}': {cls} is a lazy module: its parameters take their shape from the "
                              f"first input and its constructor takes no channel count ({cls}({channels}) sets its "
                              f"first argument, not the channels); name a class that takes the channel count{instead}")
    for m in (layer.norm, layer.attn) if isinstance(layer, NormAttention) else (layer,):
        for attr in _CHANNEL_ATTRS:
            said = getattr(m, attr, None)
            first = said[0] if isinstance(said, (tuple, list)) and said else said
            if isinstance(first, int) and not isinstance(first, bool) and first != channels:
                raise ConfigError(f"layer '{name}': built for {channels} channels, its {type(m).__name__} says "
                                  f"{attr}={said!r}: its constructor does not take the channel count first")


def _check_forward(name: str, layer: nn.Module, channels: int, size: int, training: bool, channels_last: bool) -> None:
    """The layer's forward and backward as the model runs them: on a channels_last input (unless
    --no-channels-last), followed by the ReLU the model puts after it (`inplace_relu_after`)."""
    mode = "training" if training else "eval"
    g = torch.Generator().manual_seed(channels)
    x = torch.randn(4, channels, size, size, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    layer.train(training)
    try:
        y = layer(x)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"layer '{name}': forward failed at {channels} channels ({tuple(x.shape)}) in {mode} mode"
                          f"{_why_forward_failed(layer, x, channels)}: {describe_error(e)}") from None
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ConfigError(f"layer '{name}': must keep the shape N x C x H x W: {tuple(x.shape)} -> {got} "
                          f"({mode} mode)")
    if not torch.isfinite(y).all():
        raise ConfigError(f"layer '{name}': its output is not finite (NaN or inf) for a finite input "
                          f"({channels} channels, {mode} mode)")
    if not y.requires_grad:
        raise ConfigError(f"layer '{name}': has no backward: its output does not depend differentiably on its input")
    try:
        z = torch.relu_(y) if inplace_relu_after(name) else torch.relu(y)
        (z.float().square().mean() + y.float().mean()).backward()
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"layer '{name}': backward (after the model's ReLU) failed at {channels} channels: "
                          f"{describe_error(e)}") from None
    if x.grad is None or not torch.isfinite(x.grad).all():
        raise ConfigError(f"layer '{name}': its input gradient is missing or not finite ({mode} mode)")


def _why_forward_failed(layer: nn.Module, x: torch.Tensor, channels: int) -> str:
    """A hint where one is sure: a channel count its groups do not divide, or a forward that works
    on the same input in NCHW (it uses .view on a channels_last tensor)."""
    for attr in ("groups", "num_groups"):
        g = getattr(layer, attr, None)
        if isinstance(g, int) and g > 0 and channels % g:
            return f" ({channels} channels are not divisible by its {attr}={g})"
    if x.is_contiguous():
        return ""
    try:
        with torch.no_grad():
            layer(x.detach().contiguous())
    except Exception:  # noqa: BLE001 - it fails either way: no layout hint
        return ""
    return " (it works on an NCHW input: use .reshape, not .view, on channels_last tensors, or --no-channels-last)"


def describe_error(e: BaseException) -> str:
    """`Type: first line of the message`; for an exception without a message (a bare assert), where
    it was raised and the line that raised it, so that the one line still says why."""
    msg = _first_line(e)
    if msg:
        return f"{type(e).__name__}: {msg}"
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return f"{type(e).__name__} (no message)"
    # the innermost frame that is not an assert helper (timm's `_assert(cond, msg)` wraps `assert`)
    frame = next((f for f in reversed(frames) if not f.name.lstrip("_").startswith("assert")), frames[-1])
    line = f": {frame.line.strip()}" if frame.line else ""
    return f"{type(e).__name__} (no message) at {_short_path(frame.filename)}:{frame.lineno}{line}"


def _short_path(path: str) -> str:
    """A source file as a reader finds it: from the package root for installed code, else relative
    to the working directory where it lies below it."""
    parts = path.replace(os.sep, "/").split("/site-packages/")
    if len(parts) > 1:
        return parts[-1]
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


# --------------------------------------------------------------------------- the built-in zoo


def _builtin() -> None:
    from timm.layers import get_attn

    for name, factory, description, origin in (
        ("bn", norms.BatchNorm, "BatchNorm2d (batch statistics in training, running ones in eval)", "noiseattack"),
        ("in", norms.InstanceNorm, "InstanceNorm2d with affine (per-instance statistics, no batch statistics)",
         "noiseattack"),
        ("bnse", norms.BatchNormSE, "BN + the paper's SE gate (reduction 16, hidden max(4, C/16))", "noiseattack"),
        ("iebn", iebn.IEBN, "IEBN: BN whose scale is gated per instance by sigmoid(w * avgpool(x) + b)",
         "noiseattack"),
        ("gn", lambda c: nn.GroupNorm(norms.gn_groups(c), c),
         "GroupNorm, groups of >= 4 channels (4/8/16 groups at 16/32/64 ch.): no batch statistics", "torch"),
        ("ln", norms.ChannelLayerNorm, "LayerNorm over the channels at each position (timm LayerNorm2d, ConvNeXt's)",
         "timm"),
        ("bn-damped", norms.DampedBatchNorm,
         "control: BN with gamma starting at sigmoid(-1) = 0.2689, IEBN's initial scale, no gate (starts damped)",
         "noiseattack"),
        ("iebn-b0", iebn.IEBNGateHalf,
         "control: IEBN with the gate bias starting at 0 (gate 0.5, not 0.2689): gates per instance, less damped",
         "noiseattack"),
        ("evonorm-b0", layers.EvoNormB0,
         "EvoNorm-B0 (timm): x / max(sqrt(batch var + eps), v*x + instance std), batch statistics", "timm"),
        ("evonorm-s0", layers.EvoNormS0,
         "EvoNorm-S0 (timm): x * sigmoid(v*x) / group std, gn's groups; no batch statistics", "timm"),
        ("frn", layers.FilterResponseNorm,
         "Filter Response Norm + TLU (timm): x / sqrt(mean_hw x^2 + eps), then max(affine, tau); no batch stats",
         "timm"),
        ("rms", layers.RmsNorm, "RMSNorm over the channels at each position (timm RmsNorm2d), no bias", "timm"),
        ("gbn", layers.GhostBatchNorm,
         "Ghost BatchNorm: statistics per virtual batch of 32 (image i in ghost batch i mod N//32): more noise",
         "noiseattack"),
        ("brn", layers.BatchRenorm,
         "Batch Renormalization: r, d corrections toward the running statistics (rmax 1->3, dmax 0->5 by step 4000)",
         "noiseattack"),
    ):
        register_norm(name, factory, description, origin=origin)
    for name, kwargs, description in (
        ("se", {"rd_divisor": 1}, "squeeze-and-excitation, SENet's reduction 16 (hidden C/16, at least 1)"),
        ("ese", {}, "effective SE: one 1x1 conv, hard-sigmoid gate (CenterMask)"),
        ("eca", {}, "efficient channel attention: 1D conv across channels, adaptive kernel (ECA-Net)"),
        ("ecam", {"use_mlp": True}, "ECA with a small MLP in place of the 1D conv"),
        ("ge", {"use_mlp": False}, "gather-excite, global extent, parameter-free (GENet's GE-theta-minus)"),
        ("gc", {}, "global context block, scaled fusion (GCNet); contains a LayerNorm"),
        ("cbam", {}, "CBAM: channel then spatial attention (7x7 conv); its spatial part contains a BatchNorm"),
        ("lcbam", {}, "light CBAM: channel then spatial attention from mean and max maps; contains a BatchNorm"),
        ("coord", {}, "coordinate attention (CVPR 2021): pooled along H and W; contains a BatchNorm"),
        ("ela", {}, "efficient local attention (2024): 1D depthwise convs along H and W; contains GroupNorms"),
        ("strip", {"use_conv": False}, "strip attention, parameter-free: x * sigmoid(mean over W + mean over H)"),
    ):
        register_attention(name, functools.partial(get_attn(name), **kwargs), description, origin="timm")
    register_attention("das", layers.DAS, "DAS (2023): x * sigmoid(deformable 3x3 conv of a DW-separable "
                       "bottleneck, /4, IN, GELU): a gate per pixel", origin="noiseattack")


_builtin()


def describe_layers() -> list[dict]:
    """Every registered norm, then every attention module after BN (`bn+ATTN`): name, origin,
    parameter count at 16/32/64 channels, description. What `noiseattack norms` prints."""
    rows = []
    for name in norm_names() + tuple(f"bn+{a}" for a in attention_names()):
        r = resolve(name)
        rows.append({"name": r.name, "origin": r.origin, "description": r.description,
                     "params": {str(c): n for c, n in param_counts(name).items()}})
    return rows
