"""Precise BatchNorm statistics (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): the
population statistics recomputed after training, as fvcore's `fvcore.nn.update_bn_stats` does.

Under the mix attack a BN layer's running statistics are an exponential average over batches that
held foreign images, so a low test accuracy can be corrupted *evaluation* statistics rather than a
corrupted *model*. Recomputing them on clean training batches separates the two: the weights stay
as trained, only the running mean and variance of every BN-type layer (every module with running
statistics: BN, IEBN, Ghost BN, Batch Renorm, the BatchNorm inside CBAM, ...) are replaced by the
population statistics of `PRECISE_BATCHES` clean batches combined.

The procedure is fvcore's: every such layer's momentum is set to 1 (after a forward pass its running
statistics are that batch's: mean, and unbiased variance), the model runs in training mode on each
batch without gradients, and the population mean and variance of all batches combined are computed
from the per-batch values (fvcore's `_PopulationVarianceEstimator`, the estimator of the paper's
appendix); then the momenta are restored. tests/test_precise.py compares it with fvcore. It works for any layer that updates its running statistics
as `running.lerp_(batch, momentum)`, as torch's BatchNorm and every BN-type layer of the zoo do.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

PRECISE_BATCHES = 100  # x the batch size (128): 12,800 clean training images per recomputation


def running_stat_layers(model: nn.Module) -> list[nn.Module]:
    """The layers with running statistics (BatchNorm-type): the ones PreciseBN recomputes."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BN-type layer's running mean and variance by the population statistics of all
    `batches` combined, exactly as fvcore.nn.update_bn_stats computes them (its
    `_PopulationVarianceEstimator`): each batch's mean and variance weighted by its number of values
    per channel m (N x H x W of the layer's input), the variance as E[x^2] - E[x]^2 with each batch's
    E[x^2] = mean^2 + var x (m - 1) / m (its running_var is Bessel-corrected). Returns the number of
    batches used (0 when the model has no such layer: nothing is run). Unlike fvcore's, it runs the
    model in training mode itself and restores the model's training flag and the layers' momenta."""
    layers = running_stat_layers(model)
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    sizes: dict[nn.Module, int] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp: sizes.__setitem__(mod, inp[0].numel() // inp[0].shape[1]))
             for m in layers]
    pop = [[torch.zeros_like(m.running_mean), torch.zeros_like(m.running_var), 0] for m in layers]  # mean, E[x^2], m
    was_training = model.training
    model.train()
    n = 0
    try:
        for m in layers:
            m.momentum = 1.0  # after a forward pass, a layer's running statistics are that batch's
        for x in batches:
            sizes.clear()
            model(x)
            n += 1
            for m, p in zip(layers, pop):
                size = sizes.get(m)
                if size is None:  # the layer was not used in this forward pass
                    continue
                p[2] += size
                square_mean = m.running_mean.square() + m.running_var * ((size - 1) / size)
                p[0] += (m.running_mean - p[0]) * (size / p[2])
                p[1] += (square_mean - p[1]) * (size / p[2])
    finally:
        for h in hooks:
            h.remove()
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
    for m, (mean, square_mean, total) in zip(layers, pop):
        if total:
            m.running_mean.copy_(mean)
            m.running_var.copy_(square_mean - mean.square())
    return n
