"""`random`: random noise on the statistics, the stochastic counterpart of the constant attack.

Every training step, every norm layer that the constant attack reaches (`noiseattack.norms`) gets
its own α and β per channel, drawn afresh: α ~ U(scale_low, scale_high), β ~ U(bias_low,
bias_high), independent across channels and layers and shared by the images of the batch, applied
like the constant attack's fold: γ·(α·x̂ + β) + b. Unlike the constant attack it changes nothing
the model could learn to undo: it is noise, as real batch noise is, not a fixed distortion.

Reference semantics: TensorFlow's `tf.keras.layers.BatchNormalization(adjustment=...)` (TF 1.x-2.x,
`tensorflow/python/keras/layers/normalization.py`), "a function taking the Tensor containing the
(dynamic) shape of the input tensor and returning a pair (scale, bias) to apply to the normalized
values (before gamma and beta), only during training"; its documented example
`adjustment = lambda shape: (tf.random.uniform(shape[-1:], 0.93, 1.07), tf.random.uniform(shape[-1:],
-0.1, 0.1))` "will scale the normalized value by up to 7% up or down, then shift the result by up to
0.1 (with independent scaling and bias for each feature but shared across all examples)". That
example is the default here, and the noise is off in evaluation unless `noise_in_eval` (then every
evaluation batch draws its own, from the same generator). TensorFlow refuses an adjustment with
Ghost Batch Normalization; here `gbn` takes it like every norm (one α, β per channel for the whole
batch, all ghost batches alike).

The draws: one generator per run, on the training device, seeded from the run's seed (`noise_seed`:
not the run's data generator, whose draws stay what they are). Before each training step one
`torch.rand(2, C)` is drawn, C the channels of all the layers reached, in the model's module order;
the layer at offset o with c channels takes α = scale_low + (scale_high − scale_low)·u[0, o:o+c]
and β = bias_low + (bias_high − bias_low)·u[1, o:o+c] (in float32). The generator's state is part
of the run's checkpoint, so a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..options import param
from .base import AttackRun, AttackSpec, register

MAX_NOISE = 1000.0  # |each bound|, as the constant attack's |alpha| and |beta|
_NUM = r"[-+0-9.e]+?"


@dataclass(frozen=True)
class RandomParams:
    scale_low: float = param(0.93, "Lower bound of the scale: alpha ~ U(scale-low, scale-high) per channel and step.",
                             neutral=1.0, abs_high=MAX_NOISE, axis="lower bound of α")
    scale_high: float = param(1.07, "Upper bound of the scale (>= scale-low).", neutral=1.0, abs_high=MAX_NOISE,
                              axis="upper bound of α")
    bias_low: float = param(-0.1, "Lower bound of the shift: beta ~ U(bias-low, bias-high) per channel and step.",
                            neutral=0.0, abs_high=MAX_NOISE, axis="lower bound of β")
    bias_high: float = param(0.1, "Upper bound of the shift (>= bias-low).", neutral=0.0, abs_high=MAX_NOISE,
                             axis="upper bound of β")
    noise_in_eval: bool = param(False, "Draw noise for every evaluation batch too (TensorFlow's adjustment, the "
                                "default, applies in training only).", neutral=False)


def noise_seed(seed: int) -> int:
    """The noise generator's seed for a run's seed: 32 bits of sha256("noiseattack.random:<seed>"), so that
    it is not the run's data generator (seeded with the run's seed itself)."""
    return int.from_bytes(hashlib.sha256(f"noiseattack.random:{seed}".encode()).digest()[:4], "big")


class _RandomRun(AttackRun):
    """The per-channel α, β of every layer reached: one (2, C) tensor on the device whose slices the
    layers hold (`norms.per_channel_noise`), rewritten in place at every draw."""

    def __init__(self, p: RandomParams, model, device: str, seed: int):
        import torch

        from ..norms import per_channel_noise

        self.noise = per_channel_noise(model, device)
        self.low = torch.tensor([[p.scale_low], [p.bias_low]], device=device)
        self.span = torch.tensor([[p.scale_high - p.scale_low], [p.bias_high - p.bias_low]], device=device)
        self.u = torch.empty_like(self.noise)
        self.generator = torch.Generator(device=device).manual_seed(noise_seed(seed))
        self.in_eval = p.noise_in_eval

    def draw(self) -> None:
        import torch

        torch.rand(self.u.shape, generator=self.generator, device=self.u.device, out=self.u)
        torch.mul(self.u, self.span, out=self.noise)
        self.noise.add_(self.low)

    def before_step(self) -> None:
        self.draw()

    def before_eval(self) -> None:
        if not self.in_eval:  # training only: the identity (α = 1, β = 0) until the next step draws
            self.noise[0].fill_(1.0)
            self.noise[1].fill_(0.0)

    def before_eval_batch(self) -> None:
        if self.in_eval:
            self.draw()

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"].cpu())


class Random(AttackSpec):
    name = "random"
    rank = 30
    help = ("Random-noise attack: every training step, every norm's x_hat becomes alpha * x_hat + beta with alpha "
            "and beta drawn per channel, uniformly (TensorFlow's BatchNormalization adjustment; its example is the "
            "default).")
    Params = RandomParams
    reach = "per-channel"
    axis = "random attack setting (x̂ → α·x̂ + β, α and β drawn per step and channel)"

    def label(self, p: RandomParams) -> str:
        return f"s{p.scale_low:g}to{p.scale_high:g}_b{p.bias_low:g}to{p.bias_high:g}" + ("_eval" if p.noise_in_eval
                                                                                        else "")

    def order_of_label(self, label: str) -> tuple:
        m = re.fullmatch(rf"s({_NUM})to({_NUM})_b({_NUM})to({_NUM})(_eval)?", label)
        if m is None:
            return (label,)
        try:
            return (*(float(x) for x in m.groups()[:4]), m[5] is not None)
        except ValueError:
            return (label,)

    def title(self, p: RandomParams) -> str:
        return (f"random attack α~U({p.scale_low:g}, {p.scale_high:g}), β~U({p.bias_low:g}, {p.bias_high:g})"
                + (", in eval too" if p.noise_in_eval else ""))

    def tick(self, p: RandomParams) -> str:
        return f"α~U({p.scale_low:g},{p.scale_high:g}), β~U({p.bias_low:g},{p.bias_high:g})" + (
            ", eval" if p.noise_in_eval else "")

    def name_head(self, p: RandomParams) -> str:
        return (f"random-s{p.scale_low:g}to{p.scale_high:g}-b{p.bias_low:g}to{p.bias_high:g}"
                + ("-eval" if p.noise_in_eval else ""))

    def check(self, p: RandomParams, *, batch_size: int, dataset: str | None = None) -> RandomParams:
        p = super().check(p, batch_size=batch_size, dataset=dataset)
        for what, low, high in (("scale", p.scale_low, p.scale_high), ("bias", p.bias_low, p.bias_high)):
            if low > high:
                raise ConfigError(f"{what} low must be <= {what} high, got {low:g} > {high:g}")
        return p

    def start(self, p: RandomParams, *, model, data, cfg, seed: int) -> AttackRun:
        return _RandomRun(p, model, cfg.device, seed)


register(Random())
