"""Two BatchNorms that act on batch noise itself: Ghost BatchNorm turns it up (statistics over virtual
batches of 32), Batch Renormalization turns it down (corrections toward the running statistics).

Both keep BatchNorm2d's parameters, buffers and state_dict (weight, bias, running_mean,
running_var, num_batches_tracked), use the running statistics in eval exactly as BatchNorm2d does,
and take the constant attack on their normalized activation x̂ (the tensor the affine acts on),
folded into the affine: γ·(α·x̂ + β) + b.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..norms import ConstantNoise

_C = (1, -1, 1, 1)


class _EvalAsBatchNorm(ConstantNoise, nn.BatchNorm2d):
    def _eval(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.noisy_affine(self.weight, self.bias)
        return F.batch_norm(x, self.running_mean, self.running_var, weight, bias, False, 0.0, self.eps)


class GhostBatchNorm(_EvalAsBatchNorm):
    """`gbn`: Ghost Batch Normalization (Hoffer, Hubara & Soudry, "Train longer, generalize better:
    closing the generalization gap in large batch training of neural networks", NeurIPS 2017):
    in training, each virtual ("ghost") batch of `virtual_batch` = 32 images is normalized with its
    own mean and biased variance per channel, so the statistics are noisier than the batch's
    (batch noise turned up); in eval, the running statistics, as BatchNorm2d.

    Ghost batches: a batch of N images has G = max(1, N // 32) of them, and image i belongs to ghost
    batch i mod G (strided, not contiguous chunks): every ghost batch has 32 to 63 images (sizes
    differ by at most one; no small remainder group with a noisy variance), and under the mix
    attack, whose batch is the 128 primary images followed by the k foreign ones, every ghost batch
    holds the batch's share of foreign images (k = 32: 5 ghost batches of 32, each 25 or 26 primary
    and 6 or 7 foreign; k = 8: 4 of 34, each 32 primary and 2 foreign). Contiguous chunks would put
    the foreign images in ghost batches of their own, away from every primary image: the attack
    would never reach the primary statistics. With 128 images (no attack): 4 ghost batches of 32.
    Since the data order is random, strided and contiguous ghost batches are alike without an attack.

    Running statistics: one update per step (momentum 0.1, as BN): the mean toward the batch mean
    (the count-weighted mean of the ghost means), the variance toward the count-weighted mean of
    the ghost batches' unbiased variances, an estimate of the population variance (as BN's unbiased
    batch variance is), so eval normalizes as BN's would. With one ghost batch this is BN exactly."""

    def __init__(self, channels: int, virtual_batch: int = 32, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.virtual_batch = int(virtual_batch)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", virtual_batch={self.virtual_batch}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
        if not self.training:
            return self._eval(x)
        n, c = x.shape[:2]
        g = max(1, n // self.virtual_batch)
        xf = x.float()
        ghost = torch.arange(n, device=x.device) % g  # image i -> ghost batch i mod G
        count = torch.bincount(ghost, minlength=g).to(xf.dtype) * (x.shape[2] * x.shape[3])  # values per channel
        mean = torch.zeros(g, c, device=x.device, dtype=xf.dtype).index_add(0, ghost, xf.sum((2, 3)))
        mean = mean / count[:, None]
        centered = xf - mean[ghost][:, :, None, None]
        var = torch.zeros(g, c, device=x.device, dtype=xf.dtype).index_add(0, ghost, centered.square().sum((2, 3)))
        var = var / count[:, None]
        x_hat = centered * torch.rsqrt(var + self.eps)[ghost][:, :, None, None]
        with torch.no_grad():
            w = count[:, None] / count.sum()
            self.running_mean.lerp_((mean * w).sum(0), self.momentum)
            self.running_var.lerp_((var * (count / (count - 1))[:, None] * w).sum(0), self.momentum)
            self.num_batches_tracked.add_(1)
        weight, bias = self.noisy_affine(self.weight, self.bias)
        return (x_hat * weight.view(_C) + bias.view(_C)).to(x.dtype)


class BatchRenorm(_EvalAsBatchNorm):
    """`brn`: Batch Renormalization (Ioffe, "Batch Renormalization: Towards Reducing Minibatch
    Dependence in Batch-Normalized Models", NeurIPS 2017). In training, with the batch's mean μ_B and
    σ_B = √(biased variance + ε) per channel, and σ = √(running_var + ε), μ = running_mean:

        r = clip(σ_B / σ, 1/rmax, rmax),  d = clip((μ_B − μ) / σ, −dmax, dmax)   (no gradient)
        x̂ = (x − μ_B) / σ_B · r + d

    so the output depends less on the batch (batch noise turned down); gradients flow through μ_B
    and σ_B as in BN. Then the running statistics are updated as BatchNorm2d's (momentum 0.1, the
    unbiased batch variance; the paper averages σ itself: we keep BN's buffers and eval path). In
    eval, the running statistics, as BatchNorm2d (x̂ = (x − μ)/σ, which r and d move training toward).

    Schedule, in training steps t (the buffer num_batches_tracked, so a checkpoint resumes it
    exactly): rmax = 1, dmax = 0 (BN) for t < 500, then linearly to rmax = 3 at t = 4000 and dmax = 5
    at t = 2500, constant after. The paper's schedule (BN for 5000 steps, rmax 3 at 40k, dmax 5 at
    25k) divided by 10, for runs of a few thousand steps: a 30-epoch CIFAR run of batch 128 has
    11,700; a run shorter than 500 steps trains as BN."""

    R_MAX, D_MAX = 3.0, 5.0
    WARMUP, R_FULL, D_FULL = 500, 4000, 2500  # steps

    def limits(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rmax, dmax) at the current step, as tensors on the buffers' device (no host sync)."""
        t = self.num_batches_tracked.to(self.running_var.dtype)
        rmax = 1.0 + (self.R_MAX - 1.0) * ((t - self.WARMUP) / (self.R_FULL - self.WARMUP)).clamp(0.0, 1.0)
        dmax = self.D_MAX * ((t - self.WARMUP) / (self.D_FULL - self.WARMUP)).clamp(0.0, 1.0)
        return rmax, dmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
        if not self.training:
            return self._eval(x)
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(0, 2, 3), correction=0)
        std = torch.sqrt(var + self.eps)
        rmax, dmax = self.limits()
        inv_running_std = torch.rsqrt(self.running_var + self.eps)
        r = torch.minimum(torch.maximum(std.detach() * inv_running_std, 1.0 / rmax), rmax)
        d = torch.minimum(torch.maximum((mean.detach() - self.running_mean) * inv_running_std, -dmax), dmax)
        with torch.no_grad():
            n = x.numel() / x.shape[1]
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * (n / (n - 1)), self.momentum)
            self.num_batches_tracked.add_(1)
        weight, bias = self.noisy_affine(self.weight, self.bias)
        scale = weight * r / std  # y = gamma * ((x - mu_B) / sigma_B * r + d) + b = x * scale + shift
        shift = bias + weight * (d - mean * r / std)
        return (xf * scale.view(_C) + shift.view(_C)).to(x.dtype)
