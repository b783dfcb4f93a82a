"""The CIFAR ResNet of the IEBN authors' code (after bearpaw/pytorch-classification), with the
norm as a keyword: `cifar_resnet(depth, num_classes, norm, width=1, block="auto", shortcut_norm="same",
attn_placement="norm")`.

Stem conv3x3(16) + norm + ReLU; three stages of 16, 32, 64 planes (times `width`); basic blocks
for depth 6n+2, bottleneck blocks (expansion 4) for depth 9n+2; a conv1x1 + norm projection
shortcut (`downsample`) where the shape changes; global average pool; linear.

Two architectures, by the norm of the projection shortcuts:
  shortcut_norm="same" (our default): every norm position, the shortcuts included, uses the
      chosen norm, so that the comparison is between norms everywhere.
  shortcut_norm="bn" (the official IEBN code, gbup-group/IEBN models/cifar/iebn_resnet.py): the
      shortcuts keep a plain BatchNorm, every other position uses the chosen norm. The shortcut
      BN is noiseattack's `BatchNorm` (its state_dict is exactly nn.BatchNorm2d's, so an
      official model's state_dict loads strictly), and like every other norm layer it carries
      the constant attack: under `constant` the shortcut BNs are attacked too.
With norm="bn" both architectures are the same network.

Two places for the attention module of a `NORM+ATTN` layer, by `attn_placement`:
  "norm" (our default): at every norm position the norm followed by the attention module, the way
      the paper's BN+SE puts SE after every BN: two or three per basic block, the stem's and the
      projection shortcuts' included.
  "block" (the SENet and CBAM papers): every norm position gets the norm alone, and each residual
      block one attention module (`BlockAttention`) on its residual branch's output, after the
      branch's last norm and before the addition; none in the stem or the shortcuts.
  "stage" (the DAS paper, which gates after the skip connection at the end of each stage of a
      ResNet): every norm position gets the norm alone, and each of the three stages one attention
      module after its last block's addition and ReLU (`layer1.<n>`, `layer2.<n>`, `layer3.<n>` for
      n blocks per stage); none inside the blocks.
A layer without `+ATTN` (bn, bnse, iebn, gn, a user's norm) builds the same network either way.
An attention module placed per block or per stage is no norm: the constant attack passes it by.
After a user's layer the ReLUs are out of place (`zoo.inplace_relu_after`): the same function.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ATTN_PLACEMENTS, SHORTCUT_NORMS, TrainConfig, resolve_block
from .norms import BlockAttention
from .zoo import Factory, inplace_relu_after, make_norm, split


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, norm: str, shortcut_norm: str = "same",
                 attn: Factory | None = None, inplace: bool = True):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = make_norm(norm, planes)
        self.attn = _block_attention(attn, planes * self.expansion)
        self.relu = nn.ReLU(inplace=inplace)
        self.downsample = _shortcut(cin, planes * self.expansion, stride, norm, shortcut_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.attn is not None:
            out = self.attn(out)
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, norm: str, shortcut_norm: str = "same",
                 attn: Factory | None = None, inplace: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = make_norm(norm, planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = make_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = make_norm(norm, planes * 4)
        self.attn = _block_attention(attn, planes * self.expansion)
        self.relu = nn.ReLU(inplace=inplace)
        self.downsample = _shortcut(cin, planes * self.expansion, stride, norm, shortcut_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.attn is not None:
            out = self.attn(out)
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


def model_shapes(cfg: TrainConfig) -> tuple[tuple[int, int], ...]:
    """Every (channels, height = width) a norm position of the setting's ResNet sees on 32x32 images
    (this module): the stem, and per stage of p planes at map size s, p at s (and, in a
    bottleneck stage after the first, p at the previous stage's size: its 1x1 conv1 comes before the
    stride) and 4p at s for bottleneck blocks and their shortcuts."""
    planes = [round(16 * cfg.width), round(32 * cfg.width), round(64 * cfg.width)]
    sizes = [32, 16, 8]
    shapes = {(planes[0], 32)}
    for i, (p, s) in enumerate(zip(planes, sizes)):
        shapes.add((p, s))
        if cfg.block == "bottleneck":
            shapes.add((4 * p, s))
            if i > 0:
                shapes.add((p, sizes[i - 1]))
    return tuple(sorted(shapes))


def _block_attention(attn: Factory | None, channels: int) -> BlockAttention | None:
    """The block's attention module (attn_placement "block"), or None: no attribute in the state_dict."""
    return BlockAttention(attn(channels)) if attn is not None else None


def _shortcut(cin: int, cout: int, stride: int, norm: str, shortcut_norm: str) -> nn.Module | None:
    """The projection shortcut conv1x1 + norm where the shape changes (None: the identity). Its norm
    is `norm` for shortcut_norm="same", noiseattack's BatchNorm for "bn"."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(PointwiseConv(cin, cout, 1, stride=stride, bias=False),
                         make_norm(norm if shortcut_norm == "same" else "bn", cout))


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution (no padding) that applies its stride by subsampling first: the same function,
    parameters and state_dict as nn.Conv2d(cin, cout, 1, stride=s). torch 2.14's CPU kernel for a
    strided 1x1 convolution's backward on channels_last inputs with fewer than 8 channels corrupts
    the heap ("free(): invalid next size"; width 0.25 has 4-channel stages)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        if (sh, sw) == (1, 1):
            return super().forward(x)
        return F.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias, 1, 0, self.dilation, self.groups)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, norm: str, width: int | float = 1, block: str = "auto",
                 shortcut_norm: str = "same", attn_placement: str = "norm"):
        super().__init__()
        if shortcut_norm not in SHORTCUT_NORMS:
            raise ValueError(f"unknown shortcut norm '{shortcut_norm}': choose {' or '.join(SHORTCUT_NORMS)}")
        if attn_placement not in ATTN_PLACEMENTS:
            raise ValueError(f"unknown attention placement '{attn_placement}': choose {', '.join(ATTN_PLACEMENTS)}")
        inplace = inplace_relu_after(norm)  # not after a user's layer (its forward may end in an in-place op)
        attn = None
        if attn_placement != "norm":  # the norm alone at every norm position, its attention once per block or stage
            norm_part, attn_part = split(norm)
            norm, attn = norm_part.name, (attn_part.factory if attn_part is not None else None)
        block_attn, stage_attn = (attn, None) if attn_placement == "block" else (None, attn)
        block = resolve_block(depth, block)
        block_cls, n = (BasicBlock, (depth - 2) // 6) if block == "basic" else (Bottleneck, (depth - 2) // 9)
        planes = [round(16 * width), round(32 * width), round(64 * width)]  # width 0.5: 8, 16, 32
        self.conv1 = conv3x3(3, planes[0])
        self.bn1 = make_norm(norm, planes[0])
        self.relu = nn.ReLU(inplace=inplace)
        cin = planes[0]
        stages = []
        for i, p in enumerate(planes):
            blocks = []
            for j in range(n):
                blocks.append(block_cls(cin, p, 2 if (i > 0 and j == 0) else 1, norm, shortcut_norm, block_attn,
                                        inplace))
                cin = p * block_cls.expansion
            if stage_attn is not None:  # after the stage's last block (its addition and ReLU): layer<i>.<n>
                blocks.append(BlockAttention(stage_attn(cin)))
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He init, fan-out, as the authors' code
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


def cifar_resnet(depth: int, num_classes: int, norm: str, width: int | float = 1, block: str = "auto",
                 shortcut_norm: str = "same", attn_placement: str = "norm") -> CifarResNet:
    """The CIFAR ResNet (see the module docstring); shortcut_norm="bn" is the official IEBN architecture,
    attn_placement="block" or "stage" puts a NORM+ATTN layer's attention once per residual block or stage."""
    return CifarResNet(depth, num_classes, norm, width, block, shortcut_norm, attn_placement)
