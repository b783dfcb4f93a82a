"""DAS, a deformable attention gate for CNNs (Salajegheh, Asadi, Saryazdi & Mudur, "DAS: A Deformable
Attention to Capture Salient Information in CNNs", 2023, arXiv:2311.12091), as an attention module:
`das` in `NORM+ATTN` (`bn+das`), at every norm position or, as its authors place it, once at the
end of each stage of the ResNet (`--attn-placement stage`).

    f    = GELU(Norm(PW(DW(x))))         DW: depthwise 3x3 conv; PW: 1x1 conv, C -> C_r = max(1, C // reduction)
    off  = Conv3x3(f)                    2 x 3 x 3 offsets per pixel, predicted from the features
    gate = sigmoid(DeformConv3x3(f, off))  one channel: a gate in (0, 1) per pixel
    out  = x * gate

The article's one hyperparameter is the bottleneck's channel reduction; after the depthwise-
separable convolution it normalizes with Instance or Layer Normalization (its ablation chose
these). Its authors gate after the skip connection at the end of each of a ResNet's stages (four in
theirs, three here) and report +0.79% on CIFAR-100 with ResNet-18 and +1.91% on ImageNet with
ResNet-50, at a cost linear in the number of pixels.

Choices the article leaves open (or that could not be read from it here), and ours:
  - reduction 4 (C_r = C // 4, at least 1: 4/8/16 at 16/32/64 channels, 1 at 4 channels);
  - InstanceNorm2d with affine (of the two the ablation kept); no conv biases before it;
  - GELU after the normalization;
  - the gate has one channel (per pixel, shared by the channels); `gate_channels="channel"` gives
    one per pixel and channel (the deformable conv then maps C_r -> C);
  - the offset predictor is a plain 3x3 conv on f, initialised to zero (as in Deformable ConvNets:
    DAS starts as a regular 3x3 conv gate); it is no nn.Conv2d, so the ResNet's He init of
    convolutions leaves it at zero. The deformable conv keeps torchvision's init.
Under the constant attack DAS is no norm: its InstanceNorm stays clean (as inside every attention).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import DeformConv2d


class OffsetPredictor(nn.Module):
    """A 3x3 conv (padding 1) from `channels` to 2 x 3 x 3 offsets per pixel, zero at init. Not an
    nn.Conv2d subclass, so that a model's init of its convolutions does not touch it."""

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2 * kernel * kernel, channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(2 * kernel * kernel))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return F.conv2d(f, self.weight, self.bias, padding=self.weight.shape[-1] // 2)


class DAS(nn.Module):
    """`das`: the DAS gate, x * sigmoid(DeformConv(GELU(IN(PW(DW(x)))))), one gate per pixel (module docstring)."""

    def __init__(self, channels: int, reduction: int = 4, gate_channels: str = "pixel"):
        super().__init__()
        if gate_channels not in ("pixel", "channel"):
            raise ValueError(f"gate_channels must be 'pixel' or 'channel', got {gate_channels!r}")
        reduced = max(1, channels // reduction)
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, reduced, 1, bias=False)
        self.norm = nn.InstanceNorm2d(reduced, affine=True)
        self.act = nn.GELU()
        self.offset = OffsetPredictor(reduced)
        self.deform = DeformConv2d(reduced, channels if gate_channels == "channel" else 1, 3, padding=1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        f = self.act(self.norm(self.pointwise(self.depthwise(x))))
        return torch.sigmoid(self.deform(f, self.offset(f)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)
