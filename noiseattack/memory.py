"""The memory a run needs on its device, against what is free there: `check_memory`, run by the
command line before anything is written."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ConfigError


def bytes_per_image(depth: int, width: int | float, block: str) -> tuple[int, int]:
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


def check_memory(cfg: Any) -> None:
    """Refuse a setting (a TrainConfig) whose training batch (the batch size, plus the images the attack
    adds: mix's k) or evaluation batch cannot fit in the device's free memory, by the estimate of
    `bytes_per_image`."""
    free = available_memory(cfg.device)
    if free is None:
        return
    spec = cfg.attack_spec()
    extra, option = spec.extra_images(cfg.attack_params()), spec.extra_images_option
    train_b, eval_b = bytes_per_image(cfg.depth, cfg.width, cfg.block)
    for what, images, per_image in (("a training batch", cfg.batch_size + extra, train_b),
                                    ("an evaluation batch", cfg.eval_batch_size, eval_b)):
        need = images * per_image
        if need > free:
            hint = f" (batch size + {option})" if extra and "training" in what else ""
            raise ConfigError(f"{what} of {images} images{hint} needs about {need / 2**30:.1f} GiB for "
                              f"ResNet-{cfg.depth} width {cfg.width}, more than the {free / 2**30:.1f} GiB free on "
                              f"{cfg.device}: use a smaller batch{f', --{option}' if hint else ''} or model")
