"""The controls for IEBN's initialisation: `bn-damped` (BN starting at IEBN's initial scale, no
gate) and `iebn-b0` (IEBN gating per instance, from a gate of 0.5): their initial values, the
registry and `noiseattack norms`, and the constant attack reaching them, against hand formulas."""

import json
import math

import pytest
import torch

from conftest import run_cli
from noiseattack import zoo
from noiseattack.attacks import set_constant_noise
from noiseattack.iebn import IEBN
from noiseattack.models import cifar_resnet
from noiseattack.norms import BatchNorm

from test_norms import EPS, batch_stats, bc, rand_input

SIGMOID_MINUS_1 = 1 / (1 + math.e)  # 0.26894...


def x_hat(x):
    mean, var = batch_stats(x)
    return (x - bc(mean)) / torch.sqrt(bc(var) + EPS)


def test_initial_values():
    assert SIGMOID_MINUS_1 == pytest.approx(0.2689414, abs=1e-7)
    damped = zoo.make_norm("bn-damped", 8)
    assert isinstance(damped, BatchNorm)
    assert torch.equal(damped.weight, torch.full((8,), SIGMOID_MINUS_1)) and torch.equal(damped.bias, torch.zeros(8))
    b0 = zoo.make_norm("iebn-b0", 8)
    assert isinstance(b0, IEBN)
    assert torch.equal(b0.bias_readjust, torch.zeros(1, 8, 1, 1))
    assert torch.equal(b0.weight_readjust, torch.zeros(1, 8, 1, 1))
    assert torch.equal(b0.weight, torch.ones(1, 8, 1, 1)) and torch.equal(b0.bias, torch.zeros(1, 8, 1, 1))
    assert sorted(b0.state_dict()) == sorted(IEBN(8).state_dict())  # the official names
    # at init: bn-damped scales x_hat by sigmoid(-1), as the original IEBN's gate does; iebn-b0 by 0.5
    x = rand_input()
    torch.testing.assert_close(damped(x), SIGMOID_MINUS_1 * x_hat(x))
    torch.testing.assert_close(zoo.make_norm("iebn", 8)(x), SIGMOID_MINUS_1 * x_hat(x))
    torch.testing.assert_close(b0(x), 0.5 * x_hat(x))
    # in a ResNet (the model's init touches only the convolutions)
    model = cifar_resnet(8, 10, "bn-damped")
    gammas = [m.weight for m in model.modules() if isinstance(m, BatchNorm)]
    assert gammas and all(torch.equal(g, torch.full_like(g, SIGMOID_MINUS_1)) for g in gammas)
    gates = [m.bias_readjust for m in cifar_resnet(8, 10, "iebn-b0").modules() if isinstance(m, IEBN)]
    assert gates and all(torch.equal(b, torch.zeros_like(b)) for b in gates)


def test_listed_as_controls_by_the_norms_command(capsys):
    code, out, _ = run_cli(capsys, "norms", "--format", "json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    for name, params in (("bn-damped", 2 * 16), ("iebn-b0", 4 * 16)):
        assert rows[name]["origin"] == "noiseattack" and rows[name]["params"]["16"] == params
        assert rows[name]["description"].startswith("control:")
    assert "starts damped" in rows["bn-damped"]["description"]
    assert "gates per instance" in rows["iebn-b0"]["description"]
    code, out, _ = run_cli(capsys, "norms")
    assert code == 0 and "bn-damped" in out and "iebn-b0" in out


@pytest.mark.parametrize("training", [True, False])
def test_the_constant_attack_reaches_them(training):
    alpha, beta = 2.0, 1.0
    x = rand_input()
    damped, b0 = zoo.make_norm("bn-damped", 8), zoo.make_norm("iebn-b0", 8)
    if not training:  # eval: the running statistics, after one training step
        for layer in (damped, b0):
            layer(x)
            layer.eval()
        mean, var = damped.running_mean, damped.running_var
        xh = (x - bc(mean)) / torch.sqrt(bc(var) + EPS)
    else:
        xh = x_hat(x)
    for layer in (damped, b0):
        set_constant_noise(layer, alpha, beta)
    torch.testing.assert_close(damped(x), SIGMOID_MINUS_1 * (alpha * xh + beta))
    torch.testing.assert_close(b0(x), 0.5 * (alpha * xh + beta))
    for name in ("bn-damped", "iebn-b0"):
        model = cifar_resnet(8, 10, name)
        layers = [m for m in model.modules() if type(m) is type(zoo.make_norm(name, 16))]
        # ResNet-8: the stem, 2 per block in 3 blocks, the 2 downsampling shortcuts (shortcut_norm "same")
        assert set_constant_noise(model, alpha, beta) == len(layers) == 1 + 3 * 2 + 2
        assert all((m.noise_alpha, m.noise_beta) == (alpha, beta) for m in layers)
