"""`constant`: the paper's constant noise. Every norm layer replaces its normalized activation x̂ by
α·x̂ + β, in training and in eval alike: the attack is part of the trained model. It reaches a layer
through `noiseattack.norms.reach_noise` (our layers, `NORM+ATTN` composites' norms, a user's
`set_noise` or the torch normalizations inside a layer), folded into the affine at no cost."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import ConfigError
from ..options import param
from .base import AttackSpec, register

MAX_NOISE = 1000.0  # |alpha| and |beta|


@dataclass(frozen=True)
class ConstantParams:
    alpha: float = param(2.0, "x_hat -> alpha * x_hat + beta in every norm (finite, non-zero).", neutral=1.0,
                         abs_high=MAX_NOISE, nonzero="alpha = 0 erases the normalized activation",
                         always_in_key=True, axis="α")
    beta: float = param(1.0, "The constant shift (finite).", neutral=0.0, abs_high=MAX_NOISE, always_in_key=True,
                        axis="β")


def set_constant_noise(model, alpha: float, beta: float) -> int:
    """Make every norm layer replace its normalized activation x_hat by alpha * x_hat + beta,
    in training and in eval alike: our layers, `NORM+ATTN` composites (their norm only), a user's
    layer through its `set_noise` or the torch normalizations inside it (`noiseattack.norms`).
    Returns the number of layers attacked; a model the attack cannot reach is a ConfigError."""
    from ..norms import reach_noise

    if not (math.isfinite(alpha) and alpha != 0):
        raise ConfigError(f"alpha must be finite and non-zero, got {alpha}")
    if not math.isfinite(beta):
        raise ConfigError(f"beta must be finite, got {beta}")
    n = reach_noise(model, alpha, beta)
    if n == 0:
        raise ConfigError("the constant attack reaches no layer of this model (no set_noise, no torch normalization)")
    return n


class Constant(AttackSpec):
    name = "constant"
    rank = 10
    help = "Constant-noise attack: every norm's normalized activation becomes alpha * x_hat + beta."
    Params = ConstantParams
    reach = "constant"
    axis = "constant attack setting (x̂ → α·x̂ + β in every norm)"
    grid_required = ("settings",)

    def label(self, p: ConstantParams) -> str:
        return f"a{p.alpha:g}_b{p.beta:g}"

    def order_of_label(self, label: str) -> tuple:
        m = re.fullmatch(r"a(?P<a>[^_]+)_b(?P<b>.+)", label)
        return (float(m["a"]), float(m["b"])) if m else (label,)

    def title(self, p: ConstantParams) -> str:
        return f"constant attack α={p.alpha:g}, β={p.beta:g}"

    def tick(self, p: ConstantParams) -> str:
        return f"α={p.alpha:g}, β={p.beta:g}"

    def name_head(self, p: ConstantParams) -> str:
        return f"constant-a{p.alpha:g}-b{p.beta:g}"

    def grid_keys(self) -> dict:
        return {"settings": list[tuple[float, float]]}  # (alpha, beta) pairs

    def grid_hint(self, name: str) -> str:
        return f"use [[attack]] kind = \"{self.name}\" with settings = [[alpha, beta], ...]"

    def grid_settings(self, table: dict) -> list[dict]:
        return [{"attack": self.name, "alpha": a, "beta": b} for a, b in table["settings"]]

    def grid_table(self, p: ConstantParams) -> dict:
        return {"kind": self.name, "settings": [[p.alpha, p.beta]]}

    def prepare_model(self, model, p: ConstantParams) -> None:
        set_constant_noise(model, p.alpha, p.beta)


register(Constant())
