"""The two attacks on training: constant noise in every norm, and foreign images in every batch."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import ConfigError
from .data import Normalizer, random_crop_flip
from .norms import reach_noise


def set_constant_noise(model: nn.Module, alpha: float, beta: float) -> int:
    """Make every norm layer replace its normalized activation x_hat by alpha * x_hat + beta,
    in training and in eval alike: our layers, `NORM+ATTN` composites (their norm only), a user's
    layer through its `set_noise` or the torch normalizations inside it (`noiseattack.norms`).
    Returns the number of layers attacked; a model the attack cannot reach is a ConfigError."""
    if not (math.isfinite(alpha) and alpha != 0):
        raise ConfigError(f"alpha must be finite and non-zero, got {alpha}")
    if not math.isfinite(beta):
        raise ConfigError(f"beta must be finite, got {beta}")
    n = reach_noise(model, alpha, beta)
    if n == 0:
        raise ConfigError("the constant attack reaches no layer of this model (no set_noise, no torch normalization)")
    return n


class ExtraImages:
    """Draws k foreign training images per step, uniformly with replacement, and passes them
    through the primary dataset's training pipeline (the same random crop and flip policy, or none
    without `augment`; the primary's normalization), as if they were part of the training set."""

    def __init__(self, images: torch.Tensor, k: int, *, flip: bool, normalize: Normalizer, augment: bool = True):
        if k < 0:
            raise ConfigError(f"k must be >= 0, got {k}")
        self.images = images  # uint8 [M, 3, 32, 32] on the training device
        self.k = k
        self.flip = flip
        self.normalize = normalize
        self.augment = augment

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        """k images drawn with `generator`, cropped and flipped by it too when `augment`, normalized."""
        idx = torch.randint(0, len(self.images), (self.k,), device=self.images.device, generator=generator)
        images = self.images[idx]
        if self.augment:
            images = random_crop_flip(images, pad=4, flip=self.flip, generator=generator)
        return self.normalize(images)


def mixed_batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, extras: torch.Tensor | None,
                     label_smoothing: float = 0.0):
    """One forward pass over the concatenated [B primary + k extra] batch, so that every norm
    layer's batch statistics include the extras; the loss is the mean cross-entropy (with
    `label_smoothing`) over the B primary images only. Returns (loss, logits of the primary images)."""
    b = x.shape[0]
    inputs = x if extras is None or extras.shape[0] == 0 else torch.cat([x, extras])
    logits = model(inputs)[:b]
    return nn.functional.cross_entropy(logits, y, label_smoothing=label_smoothing), logits
