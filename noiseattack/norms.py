"""Normalization layers behind one registry: `make_norm(name, channels)`.

Every norm has the same three stages:

    normalize:  x_hat = (x - mu) / sqrt(var + eps)          (statistics depend on the norm)
    noise:      x_hat <- alpha * x_hat + beta               (constant attack; identity by default)
    affine:     out = gamma * x_hat + b, or a recalibration of it (SE, IEBN)

The constant noise is folded into the affine parameters wherever the algebra allows
(gamma * (alpha * x_hat + beta) + b = (alpha * gamma) * x_hat + (beta * gamma + b)), so an
attacked step costs what a clean one does.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm


class ConstantNoise:
    """Mixin: the constant attack's alpha and beta, applied to the normalized activation.

    They are plain attributes, not buffers, so a layer's state_dict stays identical to the
    un-attacked layer's (and to the official IEBN code's). The attack is part of the
    experiment's config and is re-applied whenever a model is built.
    """

    noise_alpha: float = 1.0
    noise_beta: float = 0.0

    def set_noise(self, alpha: float, beta: float) -> None:
        self.noise_alpha = float(alpha)
        self.noise_beta = float(beta)

    @property
    def attacked(self) -> bool:
        return self.noise_alpha != 1.0 or self.noise_beta != 0.0

    def noisy_affine(self, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma * (alpha * x_hat + beta) + b  ==  (alpha * gamma) * x_hat + (beta * gamma + b)."""
        if not self.attacked:
            return weight, bias
        return weight * self.noise_alpha, torch.addcmul(bias, weight, torch.full_like(weight, self.noise_beta))

    def extra_repr(self) -> str:  # shown by print(model)
        base = super().extra_repr()  # type: ignore[misc]
        return base + (f", noise=({self.noise_alpha:g}, {self.noise_beta:g})" if self.attacked else "")


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
    """`bnse`: BN followed by a squeeze-and-excitation gate on BN's (attacked) output."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.bn = BatchNorm(channels)
        self.se = SqueezeExcite(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.bn(x))


class IEBN(ConstantNoise, _BatchNorm):
    """`iebn`: Instance Enhancement Batch Normalization (Liang et al., AAAI 2020).

        x_hat = batch-normalized x (no affine)
        a     = sigmoid(weight_readjust * avgpool(x) + bias_readjust)   per instance and channel
        out   = x_hat * (weight * a) + bias

    with weight=1, bias=0, weight_readjust=0, bias_readjust=-1 at init. The gate reads the
    layer's raw input x; the constant attack changes x_hat only. Parameter and buffer names and
    shapes are those of the official `BAN2d`, so its state_dict loads into this layer.

    `fused=True` computes the same function as out = x * S + T with per-(n, c) S and T, in one
    autograd Function with a hand-derived backward (see `_FusedIEBN`). `fused=False` is the
    official code's sequence of operations, kept as the reference that the tests compare against.
    """

    fused_by_default = True  # class-wide switch for A/B benchmarks (scripts/bench.py --ablations)

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1, fused: bool | None = None):
        super().__init__(channels, eps, momentum, affine=False)
        shape = (1, channels, 1, 1)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.weight_readjust = nn.Parameter(torch.zeros(shape))
        self.bias_readjust = nn.Parameter(torch.full(shape, -1.0))
        self.fused = self.fused_by_default if fused is None else fused

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        return self._forward_fused(x) if self.fused else self._forward_reference(x)

    def _forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(x.mean((2, 3), keepdim=True) * self.weight_readjust + self.bias_readjust)
        x_hat = F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, self.momentum, self.eps)
        if self.attacked:
            x_hat = x_hat * self.noise_alpha + self.noise_beta
        return x_hat * (self.weight * gate) + self.bias

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        return _FusedIEBN.apply(x, self.weight, self.bias, self.weight_readjust, self.bias_readjust,
                                self.running_mean, self.running_var, self.training, self.momentum, self.eps,
                                self.noise_alpha, self.noise_beta)


class _FusedIEBN(torch.autograd.Function):
    """IEBN as y = x * S + T with per-(n, c) S and T, and a hand-derived backward.

    Forward, training (m = mean over H, W of x; M = N*H*W; r = 1/sqrt(var + eps)):
        mu, var = batch mean and (biased) variance per channel   (one native pass, which also
                                                                   updates the running statistics)
        a = sigmoid(w_r * m + b_r);  G = gamma * a
        y = (alpha * (x - mu) * r + beta) * G + b  =  x * S + T,  S = alpha r G,  T = beta G + b - mu S
    Backward, with A = sum_hw g and B = sum_hw g * x (per n, c):
        dG = alpha r (B - mu A) + beta A          (= sum_hw g * (alpha x_hat + beta))
        d gamma = sum_n dG a;  dz = dG gamma a (1 - a);  d w_r = sum_n dz m;  d b_r = sum_n dz;  d b = sum_n A
        dr = alpha sum_n G (B - mu A);  dvar = -r^3 dr / 2;  dmu = -sum_n A S
        dx = g S + x U + V,  U = 2 dvar / M,  V = dmu / M - 2 dvar mu / M + dz w_r / (H W)
    In eval mode mu and var are the running statistics (constants): U = 0, V = dz w_r / (H W).
    Large tensors are touched by two reductions and two multiply-adds in the backward, and one
    reduction, one statistics pass and one multiply-add in the forward; the rest is (N, C)-sized.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, weight_r, bias_r, running_mean, running_var, training, momentum, eps,
                alpha, beta):
        n, c, h, w = x.shape
        # Computed in at least fp32. Under bf16 autocast the input is upcast once: on CPUs, bf16
        # elementwise kernels with (N, C, 1, 1) broadcasting are several times slower than fp32 ones.
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
        cdt = xf.dtype
        m = xf.sum((2, 3)) / (h * w)  # n, c: the gate's avgpool
        if training:
            mu, var = torch.batch_norm_update_stats(xf, running_mean, running_var, momentum)
        else:
            mu, var = running_mean, running_var
        mu, var = mu.to(cdt), var.to(cdt)
        r = torch.rsqrt(var + eps)
        gamma, b, wr, br = (p.view(1, c).to(cdt) for p in (weight, bias, weight_r, bias_r))
        a = torch.sigmoid(wr * m + br)
        G = gamma * a
        S = G * (alpha * r)
        T = (beta * G + b) - mu * S
        # out= keeps x's memory format (an (N, C, 1, 1) first operand would otherwise choose NCHW)
        y = torch.addcmul(T[:, :, None, None], xf, S[:, :, None, None], out=torch.empty_like(xf))
        ctx.save_for_backward(xf, m, mu, r, a, gamma, wr, S)
        ctx.training, ctx.alpha, ctx.beta = training, alpha, beta
        ctx.input_dtype, ctx.param_dtype = x.dtype, weight.dtype
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        x, m, mu, r, a, gamma, wr, S = ctx.saved_tensors  # x: the input as computed with (>= fp32)
        alpha, beta = ctx.alpha, ctx.beta
        n, c, h, w = x.shape
        g = g.to(x.dtype)
        A = g.sum((2, 3))
        B = (g * x).sum((2, 3))
        B_centred = B - mu * A
        G = gamma * a
        dG = (alpha * r) * B_centred + beta * A
        d_gamma = (dG * a).sum(0)
        dz = dG * gamma * a * (1 - a)
        d_wr = (dz * m).sum(0)
        d_br = dz.sum(0)
        d_bias = A.sum(0)
        V = dz * wr / (h * w)
        if ctx.training:
            M = n * h * w
            dr = alpha * (G * B_centred).sum(0)
            dvar = -0.5 * r ** 3 * dr
            dmu = -(A * S).sum(0)
            U = (2.0 / M) * dvar
            V = V + (dmu - 2.0 * dvar * mu) / M
            dx = torch.addcmul(V[:, :, None, None], x, U.view(1, c, 1, 1), out=torch.empty_like(x))
        else:
            dx = torch.empty_like(x).copy_(V[:, :, None, None].expand(n, c, h, w))
        dx = dx.addcmul_(g, S[:, :, None, None]).to(ctx.input_dtype)
        shape = (1, c, 1, 1)
        return (dx, d_gamma.view(shape).to(ctx.param_dtype), d_bias.view(shape).to(ctx.param_dtype),
                d_wr.view(shape).to(ctx.param_dtype), d_br.view(shape).to(ctx.param_dtype),
                None, None, None, None, None, None, None)


NORM_REGISTRY: dict[str, type[nn.Module]] = {
    "bn": BatchNorm,
    "in": InstanceNorm,
    "bnse": BatchNormSE,
    "iebn": IEBN,
}


def make_norm(name: str, channels: int, **kwargs) -> nn.Module:
    """A norm layer by name (`bn`, `in`, `bnse`, `iebn`) for `channels` channels."""
    try:
        cls = NORM_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown norm '{name}': choose from {', '.join(NORM_REGISTRY)}") from None
    return cls(channels, **kwargs)
