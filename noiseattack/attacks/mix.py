"""`mix`: the mixed-dataset attack. Each training step takes B labelled primary images and k images
from a foreign source's training split, drawn uniformly with replacement, passed through the
primary's training pipeline (its crop and flip policy, its normalization), and the model runs once
on the B + k batch: every norm's batch statistics (and BN's running ones) include the foreign
images; the loss is over the B primary images only (`base.mixed_batch_loss`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..datasets import DATASETS, EXTRA_SOURCES
from ..errors import ConfigError
from ..options import param
from .base import AttackRun, AttackSpec, register

MAX_K_PER_BATCH = 16  # k <= 16 x the batch size (the extra images are drawn with replacement)


@dataclass(frozen=True)
class MixParams:
    extra: str = param("fmnist", f"Foreign dataset whose images join every batch: {', '.join(EXTRA_SOURCES)}; "
                       "never the primary dataset itself.",
                       neutral=None, always_in_key=True, axis="foreign dataset")
    k: int = param(32, "Foreign images per batch (unlabelled, outside the loss).", neutral=0, low=0,
                   meaning="the number of extra images per batch", always_in_key=True,
                   axis="foreign images per batch (k)")


class ExtraImages:
    """Draws k foreign training images per step, uniformly with replacement, and passes them
    through the primary dataset's training pipeline (the same random crop and flip policy, or none
    without `augment`; the primary's normalization), as if they were part of the training set."""

    def __init__(self, images, k: int, *, flip: bool, normalize, augment: bool = True):
        if k < 0:
            raise ConfigError(f"k must be >= 0, got {k}")
        self.images = images  # uint8 [M, 3, 32, 32] on the training device
        self.k = k
        self.flip = flip
        self.normalize = normalize
        self.augment = augment

    def draw(self, generator, augment: bool = True):
        """k images drawn with `generator`, cropped and flipped by it too when `self.augment` and
        `augment`, normalized."""
        import torch

        from ..data import random_crop_flip

        idx = torch.randint(0, len(self.images), (self.k,), device=self.images.device, generator=generator)
        images = self.images[idx]
        if self.augment and augment:
            images = random_crop_flip(images, pad=4, flip=self.flip, generator=generator)
        return self.normalize(images)


class _MixRun(AttackRun):
    def __init__(self, extras: ExtraImages | None):
        self.extras = extras
        self.extra_images = extras.k if extras is not None else 0

    def batch_extras(self, generator, *, augment: bool = True):
        return self.extras.draw(generator, augment) if self.extras is not None else None


class Mix(AttackSpec):
    name = "mix"
    rank = 20
    help = "Mixed-dataset attack: k foreign images join every training batch (batch statistics only)."
    Params = MixParams
    axis = "mixed-dataset attack: foreign dataset, k foreign images per batch"
    grid_required = ("extra", "k")
    extra_images_option = "k"

    def label(self, p: MixParams) -> str:
        return f"{p.extra}_k{p.k}"

    def order(self, p: MixParams) -> tuple:
        return (p.extra or "", p.k)

    def order_of_label(self, label: str) -> tuple:
        if "_k" in label:
            extra, k = label.rsplit("_k", 1)
            if k.lstrip("-").isdigit():
                return (extra, int(k))
        return (label,)

    def title(self, p: MixParams) -> str:
        return f"mix attack: {p.k} {p.extra} images per batch"

    def tick(self, p: MixParams) -> str:
        return f"{p.extra}, k={p.k}"

    def name_head(self, p: MixParams) -> str:
        return f"mix-{p.extra}-k{p.k}"

    def defaults_for(self, dataset: str) -> dict:
        return {"extra": DATASETS[dataset].foreign} if dataset in DATASETS else {}

    def check(self, p: MixParams, *, batch_size: int, dataset: str | None = None) -> MixParams:
        if p.extra is None:
            raise ConfigError("mix needs --extra: choose from " + ", ".join(EXTRA_SOURCES))
        extra = p.extra.lower()
        if extra not in EXTRA_SOURCES:
            raise ConfigError(f"unknown extra dataset '{extra}': choose from {', '.join(EXTRA_SOURCES)}")
        if dataset is not None and extra == dataset.lower():
            others = ", ".join(e for e in EXTRA_SOURCES if e != extra)
            raise ConfigError(f"--extra {extra} is the dataset being trained (--dataset {dataset}): the mix attack "
                              f"needs a foreign source; choose from {others}")
        p = super().check(MixParams(extra, p.k), batch_size=batch_size, dataset=dataset)
        if p.k > MAX_K_PER_BATCH * batch_size:
            raise ConfigError(f"k must be <= {MAX_K_PER_BATCH} x the batch size ({MAX_K_PER_BATCH * batch_size} "
                              f"for --batch-size {batch_size}), got {p.k}")
        return p

    def extra_datasets(self, p: MixParams) -> tuple[str, ...]:
        return (p.extra,) if p.k > 0 else ()  # k = 0 is clean training, step for step: nothing to load

    def extra_images(self, p: MixParams) -> int:
        return p.k

    def start(self, p: MixParams, *, model, data, cfg, seed: int) -> AttackRun:
        extras = (ExtraImages(data.extra.images, p.k, flip=data.flip, normalize=data.normalize, augment=cfg.augment)
                  if data.extra is not None and p.k > 0 else None)
        return _MixRun(extras)


register(Mix())
