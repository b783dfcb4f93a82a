"""Normalization layers and the constant attack's reach into any layer.

Every norm has the same three stages:

    normalize:  x_hat = (x - mu) / sqrt(var + eps)          (statistics depend on the norm)
    noise:      x_hat <- alpha * x_hat + beta               (an attack; identity by default)
    affine:     out = gamma * x_hat + b, or a recalibration of it (SE, IEBN)

alpha and beta are numbers (the constant attack) or, for a layer that says its channel count
(`noise_channels`), two 1-D tensors of that many values, one per channel (the random attack, which
rewrites them in place before every step: `per_channel_noise`).

The constant noise is folded into the affine parameters wherever the algebra allows
(gamma * (alpha * x_hat + beta) + b = (alpha * gamma) * x_hat + (beta * gamma + b)), so an
attacked step costs what a clean one does.

How the attack reaches a layer (`reach_noise`), walking the module tree from the top:
  1. a module with a `set_noise(alpha, beta)` method takes the attack itself, and the walk does
     not look inside it (our layers; `NORM+ATTN` composites, which pass it to their norm only,
     so that normalizations inside an attention module stay clean; any user layer that
     implements the protocol);
  2. a torch normalization module (`_NormBase`: BatchNorm*, SyncBatchNorm, InstanceNorm*;
     `GroupNorm`; `LayerNorm`, timm's `LayerNorm2d` included) is converted in place, the way
     `SyncBatchNorm.convert_sync_batchnorm` converts, into a subclass that carries the noise by
     the same affine fold: its class changes, its parameters, buffers and state_dict do not;
  3. anything else is searched recursively, except a module marked `noise_free` (an attention
     module placed per block or per stage, `BlockAttention`), which the walk passes by.

The layer protocol: `set_noise(alpha, beta)`, and, to take per-channel noise, `noise_channels` (the
number of channels; our layers derive it from num_features, num_channels, a 1-D normalized_shape or
a 1-D weight). A layer with set_noise but without noise_channels takes the constant attack only.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _NormBase

from .errors import ConfigError

class ConstantNoise:
    """Mixin: the constant attack's alpha and beta, applied to the normalized activation.

    They are plain attributes, not buffers, so a layer's state_dict stays identical to the
    un-attacked layer's (and to the official IEBN code's). The attack is part of the
    experiment's config and is re-applied whenever a model is built.
    """

    noise_alpha: float | torch.Tensor = 1.0
    noise_beta: float | torch.Tensor = 0.0

    def set_noise(self, alpha: float | torch.Tensor, beta: float | torch.Tensor) -> None:
        """Numbers (the same for every channel), or two 1-D tensors of `noise_channels` values (held as
        they are: whoever passed them may rewrite them in place)."""
        if isinstance(alpha, torch.Tensor) or isinstance(beta, torch.Tensor):
            self.noise_alpha, self.noise_beta = check_per_channel(self, alpha, beta)
            return
        self.noise_alpha = float(alpha)
        self.noise_beta = float(beta)

    @property
    def noise_channels(self) -> int | None:
        """The channels per-channel noise is for: num_features, num_channels, a 1-D normalized_shape or
        a 1-D weight; None where none says it."""
        return affine_channels(self)

    @property
    def attacked(self) -> bool:
        return isinstance(self.noise_alpha, torch.Tensor) or self.noise_alpha != 1.0 or self.noise_beta != 0.0

    def noisy_affine(self, weight: torch.Tensor | None, bias: torch.Tensor | None,
                     like: torch.Tensor | None = None, shape: tuple[int, ...] = ()):
        """gamma * (alpha * x_hat + beta) + b  ==  (alpha * gamma) * x_hat + (beta * gamma + b).

        A norm without an affine (weight None) has gamma = 1: alpha and beta then become tensors of
        the affine's `shape`, on `like`'s device (the input). A missing bias counts as b = 0."""
        if not self.attacked:
            return weight, bias
        if weight is None:
            weight = torch.ones(shape, dtype=torch.float32 if like is None else like.dtype,
                                device=None if like is None else like.device)
        if bias is None:
            bias = torch.zeros_like(weight)
        if isinstance(self.noise_beta, torch.Tensor):  # per channel: weight has the channels' shape (C,)
            return weight * self.noise_alpha, torch.addcmul(bias, weight, self.noise_beta)
        return weight * self.noise_alpha, torch.addcmul(bias, weight, torch.full_like(weight, self.noise_beta))

    def extra_repr(self) -> str:  # shown by print(model)
        base = super().extra_repr()  # type: ignore[misc]
        if isinstance(self.noise_alpha, torch.Tensor):
            return base + ", noise=per channel"
        return base + (f", noise=({self.noise_alpha:g}, {self.noise_beta:g})" if self.attacked else "")


def affine_channels(m: nn.Module) -> int | None:
    """A norm's channel count from num_features, num_channels, a 1-D normalized_shape or a 1-D weight."""
    for attr in ("num_features", "num_channels"):
        c = getattr(m, attr, None)
        if isinstance(c, int) and not isinstance(c, bool):
            return c
    shape = getattr(m, "normalized_shape", None)
    if shape is not None and len(tuple(shape)) == 1:
        return int(tuple(shape)[0])
    w = m._parameters.get("weight") if hasattr(m, "_parameters") else None
    return int(w.shape[0]) if isinstance(w, torch.Tensor) and w.dim() == 1 else None


def check_per_channel(layer: nn.Module, alpha, beta) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha and beta as per-channel noise for `layer`: two 1-D tensors of its `noise_channels` values."""
    c = getattr(layer, "noise_channels", None)
    ok = all(isinstance(t, torch.Tensor) and t.dim() == 1 for t in (alpha, beta))
    if c is None or not ok or alpha.shape[0] != c or beta.shape[0] != c:
        got = tuple(tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (alpha, beta))
        raise ConfigError(f"{type(layer).__name__}: per-channel noise needs two 1-D tensors of its "
                          f"{c if c is not None else '(unknown: no noise_channels)'} channels, got {got}")
    return alpha, beta


# --------------------------------------------------------------------------- any torch norm

CONVERTIBLE = (_NormBase, nn.GroupNorm, nn.LayerNorm)  # out = weight * x_hat + bias, per channel or element


class _NoiseCarrier(ConstantNoise):
    """Mixed, by a class change, into a torch normalization module whose forward computes
    `self.weight * x_hat + self.bias`: under attack that forward runs with the folded affine in
    place of the parameters (the same tensors autograd sees: the gradients reach the parameters)."""

    def forward(self, *args, **kwargs):
        if not self.attacked:
            return super().forward(*args, **kwargs)
        params = self._parameters
        saved = params.get("weight"), params.get("bias")
        params["weight"], params["bias"] = self.noisy_affine(*saved, like=args[0] if args else None,
                                                             shape=_affine_shape(self))
        try:
            return super().forward(*args, **kwargs)
        finally:
            params["weight"], params["bias"] = saved


def _affine_shape(m: nn.Module) -> tuple[int, ...]:
    if isinstance(m, nn.LayerNorm):
        return tuple(m.normalized_shape)
    return (m.num_channels,) if isinstance(m, nn.GroupNorm) else (m.num_features,)


_CARRIERS: dict[type, type] = {}


def _carrier_class(cls: type) -> type:
    """`Noisy<cls>`: cls with the noise mixed in (one per class; importable from this module, so a
    converted module still pickles)."""
    if cls not in _CARRIERS:
        name = f"Noisy{cls.__name__}"
        while name in globals() and globals()[name] is not _CARRIERS.get(cls):
            name += "_"
        _CARRIERS[cls] = type(name, (_NoiseCarrier, cls), {"__module__": __name__, "__qualname__": name})
        globals()[name] = _CARRIERS[cls]
    return _CARRIERS[cls]


def noise_targets(module: nn.Module) -> list[nn.Module]:
    """The modules the constant attack acts on inside `module` (see the module docstring): those
    with a `set_noise` method, outermost first, and the torch normalization modules elsewhere."""
    if getattr(module, "noise_free", False):  # an attention module between blocks (BlockAttention)
        return []
    if callable(getattr(module, "set_noise", None)) or isinstance(module, CONVERTIBLE):
        return [module]
    return [t for child in module.children() for t in noise_targets(child)]


def reach_noise(module: nn.Module, alpha, beta) -> int:
    """Put x_hat -> alpha * x_hat + beta into every target of `module` (converting torch norms in
    place); returns how many there are (0: the attack cannot reach this module)."""
    targets = noise_targets(module)
    for t in targets:
        _convert(t)
        t.set_noise(alpha, beta)
    return len(targets)


def _convert(t: nn.Module) -> None:
    if not callable(getattr(t, "set_noise", None)):
        t.__class__ = _carrier_class(type(t))


def noise_channels_of(target: nn.Module) -> int | None:
    """The channels a target of `noise_targets` takes per-channel noise for (None: it takes numbers only)."""
    if isinstance(target, CONVERTIBLE) and not callable(getattr(target, "set_noise", None)):
        return affine_channels(target)  # a torch norm, converted when reached: its affine's channels
    c = getattr(target, "noise_channels", None)
    return c if isinstance(c, int) and not isinstance(c, bool) else None


def per_channel_noise(module: nn.Module, device: str | torch.device = "cpu") -> torch.Tensor:
    """Give every target of `module` its own per-channel alpha and beta: slices of one (2, C) tensor on
    `device` (row 0 alpha, row 1 beta; C the targets' channels, in the walk's order), set to the
    identity (1, 0); the caller rewrites it in place. ConfigError where no target is reached, or a
    target cannot take per-channel noise (a user's set_noise without noise_channels)."""
    targets = noise_targets(module)
    if not targets:
        raise ConfigError("the attack reaches no layer of this model (no set_noise, no torch normalization)")
    sizes = [noise_channels_of(t) for t in targets]
    for t, c in zip(targets, sizes):
        if c is None:
            raise ConfigError(f"{type(t).__name__} takes the constant attack but not per-channel noise: it says no "
                              "noise_channels (give it one, and accept 1-D alpha, beta tensors in set_noise)")
    noise = torch.empty(2, sum(sizes), device=device)
    noise[0].fill_(1.0)
    noise[1].fill_(0.0)
    offset = 0
    for t, c in zip(targets, sizes):
        _convert(t)
        t.set_noise(noise[0, offset:offset + c], noise[1, offset:offset + c])
        offset += c
    return noise


# --------------------------------------------------------------------------- our layers


class BatchNorm(ConstantNoise, nn.BatchNorm2d):
    """`bn`: BatchNorm2d (batch statistics in training, running statistics in eval)."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(channels, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.attacked:
            return super().forward(x)
        if self.training:
            self.num_batches_tracked.add_(1)
        w, b = self.noisy_affine(self.weight, self.bias)
        return F.batch_norm(x, self.running_mean, self.running_var, w, b, self.training, self.momentum, self.eps)


def gn_groups(channels: int) -> int:
    """GroupNorm's group count: the most groups (at most 32, GN's default) of at least 4 channels
    each that divide the channels: 4 groups at 16 channels, 8 at 32, 16 at 64, 2 at 8."""
    return next((g for g in range(min(32, channels // 4), 0, -1) if channels % g == 0), 1)


IEBN_INITIAL_GATE = 1.0 / (1.0 + math.exp(1.0))  # sigmoid(-1) = 0.2689: IEBN's gate at init (w = 0, b = -1)


class DampedBatchNorm(BatchNorm):
    """`bn-damped`, a control for IEBN's initialisation: BN whose γ starts at sigmoid(-1) ≈ 0.2689,
    the scale IEBN's gate gives x̂ at init (γ · sigmoid(0 · avgpool(x) - 1)), with no gate: it
    *starts damped* like IEBN but does not gate per instance. Otherwise `bn` (the attack reaches it
    the same way)."""

    def reset_parameters(self) -> None:  # called by nn.BatchNorm2d.__init__
        super().reset_parameters()
        with torch.no_grad():
            self.weight.fill_(IEBN_INITIAL_GATE)


class InstanceNorm(ConstantNoise, nn.InstanceNorm2d):
    """`in`: InstanceNorm2d with affine; per-instance statistics in training and in eval."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(channels, eps=eps, affine=True, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.noisy_affine(self.weight, self.bias)
        return F.instance_norm(x, None, None, w, b, True, self.momentum, self.eps)


class SqueezeExcite(nn.Module):
    """y * sigmoid(W2 relu(W1 avgpool(y))), with biases, as in SENet."""

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 4):
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        s = y.mean((2, 3))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return y * gate[:, :, None, None]


class BatchNormSE(nn.Module):
    """`bnse`: BN followed by a squeeze-and-excitation gate on BN's (attacked) output: the paper's
    SE (reduction 16, hidden width max(4, C // 16), biases). `bn+se` is timm's SEModule instead
    (hidden width C // 16 rounded, at least 1; see noiseattack.zoo)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.bn = BatchNorm(channels)
        self.se = SqueezeExcite(channels, reduction)

    def set_noise(self, alpha, beta) -> None:
        self.bn.set_noise(alpha, beta)  # the SE gate stays as it is

    @property
    def noise_channels(self) -> int | None:
        return self.bn.noise_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.bn(x))


def _timm_layernorm2d() -> type:
    from timm.layers import LayerNorm2d

    return LayerNorm2d


class ChannelLayerNorm(_timm_layernorm2d()):
    """`ln`: LayerNorm over the channels at each position (timm's LayerNorm2d, ConvNeXt's), with
    timm's parameters and state_dict, computed in place on N x C x H x W instead of through two
    permutes: the same function (tested against timm's), and no channels_last-strided gradient into
    an NCHW model's convolutions (with 4 channels it reached torch 2.14's faulty strided 1x1
    convolution backward: see models.PointwiseConv)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mu = torch.var_mean(x, dim=1, keepdim=True, correction=0)
        y = (x - mu) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight[:, None, None]
        return y + self.bias[:, None, None] if self.bias is not None else y


class NormAttention(nn.Module):
    """`NORM+ATTN`: a norm followed by an attention module on its output, the way SE follows BN.
    The constant attack reaches the norm only; the attention module's own normalizations (CBAM's
    BatchNorm, GC's LayerNorm) are part of the attention and stay clean."""

    def __init__(self, norm: nn.Module, attn: nn.Module):
        super().__init__()
        self.norm = norm
        self.attn = attn

    def set_noise(self, alpha, beta) -> None:
        if reach_noise(self.norm, alpha, beta) == 0:
            raise ConfigError("the constant attack cannot reach the norm of this NORM+ATTN layer")

    @property
    def noise_channels(self) -> int | None:
        """Its norm's channels, where every target inside the norm says the same."""
        sizes = {noise_channels_of(t) for t in noise_targets(self.norm)}
        return sizes.pop() if len(sizes) == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.norm(x))


class BlockAttention(nn.Module):
    """An attention module placed once per residual block (attn_placement "block"), on the residual
    branch's output before the addition, or once per stage ("stage"), after its last block. It is
    no norm: the constant attack's walk (`noise_targets`)
    passes it by (`noise_free`), so its own normalizations (CBAM's BatchNorm, GC's LayerNorm) stay
    clean, as inside `NORM+ATTN`, and it is not counted among the layers attacked."""

    noise_free = True

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)
