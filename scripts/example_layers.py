"""Example user layers, for `--norm scripts.example_layers:NAME` from the repository root (and the
README's walk-through). A layer is any `factory(channels) -> nn.Module` that keeps N x C x H x W."""

import torch
import torch.nn as nn


class MeanOnlyBN(nn.Module):
    """Mean-only batch normalization (Salimans & Kingma, 2016): x - batch mean, then a learned bias.

    It has no torch normalization inside, so it implements the constant attack's protocol itself:
    `set_noise(alpha, beta)` makes its normalized activation x_hat = x - mean become
    alpha * x_hat + beta."""

    def __init__(self, channels: int, momentum: float = 0.1):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("running_mean", torch.zeros(1, channels, 1, 1))
        self.momentum = momentum
        self.alpha, self.beta = 1.0, 0.0

    def set_noise(self, alpha: float, beta: float) -> None:
        self.alpha, self.beta = alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean((0, 2, 3), keepdim=True)
            with torch.no_grad():
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
        else:
            mean = self.running_mean
        return self.alpha * (x - mean) + self.beta + self.bias


class BNTemperature(nn.Module):
    """BatchNorm2d followed by a learned per-channel temperature on its output: a plain torch norm
    inside, so the constant attack reaches it by conversion (no set_noise needed)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.log_t = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * torch.exp(-self.log_t)
