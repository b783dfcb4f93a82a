"""timm's normalization layers, with the constant attack defined on *their* normalized activation.

Each class subclasses timm's, so its parameters, buffers and state_dict are timm's (a state_dict
loads either way, strictly), and its forward is timm's with one addition: the normalized
activation x̂, the tensor the layer's affine (γ, b) acts on, becomes α·x̂ + β under the constant
attack (`set_noise`), folded into the affine as in our other norms:
γ·(α·x̂ + β) + b = (αγ)·x̂ + (βγ + b). Unattacked, each computes timm's function exactly (tested).

x̂ per layer, as timm computes it (v, τ learned per channel; ε the layer's eps):

    evonorm-b0  EvoNorm-B0 (Liu, Brock, Simonyan & Le, "Evolving Normalization-Activation Layers",
                NeurIPS 2020), timm `EvoNorm2dB0`:
                    x̂ = x / max(√(σ²_B + ε), v·x + √(σ²_inst + ε))
                σ²_B the batch variance per channel in training (its running average in eval: the
                layer keeps `running_var`, no running mean), σ²_inst the variance per instance and
                channel over H, W. eps 1e-3 (timm's).
    evonorm-s0  EvoNorm-S0, timm `EvoNorm2dS0`:  x̂ = x · sigmoid(v·x) / √(σ²_group + ε)
                σ²_group per instance and group of channels over the group's channels, H and W.
                The swish-like numerator belongs to x̂: it is what the affine acts on. Groups as
                `gn`'s (`norms.gn_groups`: groups of >= 4 channels, 4/8/16 at 16/32/64 channels;
                timm's default of 32 groups does not divide 16 channels). No batch statistics.
    frn         Filter Response Normalization with its TLU (Singh & Krishnan, CVPR 2020), timm
                `FilterResponseNormTlu2d`:  x̂ = x / √(ν² + ε), ν² = mean over H, W of x² per instance
                and channel;  out = max(γ·x̂ + b, τ)  (the TLU after the affine). No batch statistics.
    rms         RMSNorm over the channels at each position, timm `RmsNorm2d`:
                x̂ = x / √(mean over C of x² + ε);  out = γ·x̂  (no bias: under attack the shift is βγ).
                eps 1e-6 (timm's). No batch statistics.

EvoNorm's layers act as norm *and* activation; the model still puts its ReLU after them.
"""

from __future__ import annotations

import torch
from timm.layers import EvoNorm2dB0, EvoNorm2dS0, FilterResponseNormTlu2d, RmsNorm2d
from timm.layers.evo_norm import group_std, instance_std
from timm.layers.filter_response_norm import inv_instance_rms

from ..norms import ConstantNoise, gn_groups

_C = (1, -1, 1, 1)  # a per-channel vector over N x C x H x W


class EvoNormB0(ConstantNoise, EvoNorm2dB0):
    """`evonorm-b0`: timm's EvoNorm2dB0 (batch statistics); the attack on x / max(√(σ²_B+ε), v·x + σ_inst)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
        x_dtype = x.dtype
        x_hat = x
        if self.v is not None:  # timm's forward, step for step
            if self.training:
                var = x.float().var(dim=(0, 2, 3), unbiased=False)
                n = x.numel() / x.shape[1]
                self.running_var.copy_(self.running_var * (1 - self.momentum) +
                                       var.detach() * self.momentum * (n / (n - 1)))
            else:
                var = self.running_var
            left = var.add(self.eps).sqrt_().to(x_dtype).view(_C).expand_as(x)
            right = x * self.v.to(x_dtype).view(_C) + instance_std(x, self.eps)
            x_hat = x / left.max(right)
        weight, bias = self.noisy_affine(self.weight, self.bias)
        return x_hat * weight.to(x_dtype).view(_C) + bias.to(x_dtype).view(_C)


class EvoNormS0(ConstantNoise, EvoNorm2dS0):
    """`evonorm-s0`: timm's EvoNorm2dS0 with gn's groups; the attack on x·sigmoid(v·x) / σ_group."""

    def __init__(self, channels: int, groups: int | None = None, eps: float = 1e-5):
        super().__init__(channels, groups=gn_groups(channels) if groups is None else groups, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
        x_dtype = x.dtype
        x_hat = x
        if self.v is not None:
            v = self.v.view(_C).to(x_dtype)
            x_hat = x * (x * v).sigmoid() / group_std(x, self.groups, self.eps)
        weight, bias = self.noisy_affine(self.weight, self.bias)
        return x_hat * weight.view(_C).to(x_dtype) + bias.view(_C).to(x_dtype)


class FilterResponseNorm(ConstantNoise, FilterResponseNormTlu2d):
    """`frn`: timm's FilterResponseNormTlu2d (FRN + TLU); the attack on x / √(ν² + ε), before the TLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
        x_dtype = x.dtype
        x_hat = x * inv_instance_rms(x, self.eps)
        weight, bias = self.noisy_affine(self.weight, self.bias)
        y = x_hat * weight.view(_C).to(dtype=x_dtype) + bias.view(_C).to(dtype=x_dtype)
        return torch.maximum(y, self.tau.reshape(_C).to(dtype=x_dtype)) if self.tau is not None else y


class RmsNorm(ConstantNoise, RmsNorm2d):
    """`rms`: timm's RmsNorm2d (RMSNorm over the channels at each position); the attack on x / rms_c(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat = x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)  # timm's rms_norm2d
        weight, bias = self.noisy_affine(self.weight, None, like=x, shape=tuple(self.normalized_shape))
        if weight is not None:
            x_hat = x_hat * weight.reshape(_C)
        return x_hat + bias.reshape(_C) if bias is not None else x_hat
