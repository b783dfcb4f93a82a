"""The constant-noise and mixed-dataset attacks."""

import math

import pytest
import torch
import torch.nn as nn

from noiseattack.attacks import mixed_batch_loss, set_constant_noise
from noiseattack.config import ConfigError, RunConfig, resolve_train_config
from noiseattack.models import cifar_resnet
from noiseattack.iebn import IEBN
from noiseattack.norms import BatchNorm, BatchNormSE, InstanceNorm
from noiseattack.train import prepare_data, train_run
from noiseattack.zoo import PAPER as NORMS, make_norm

from test_norms import EPS, bc, batch_stats, iebn_by_hand, rand_input, randomize_affine


def attacked_stats_bn(layer, x, alpha, beta):
    """BN with attacked statistics mu' = mu - beta*sigma/alpha, sigma' = sigma/alpha."""
    mean, var = batch_stats(x)
    sigma = torch.sqrt(var + EPS)
    mu_a, sigma_a = mean - beta * sigma / alpha, sigma / alpha
    return bc(layer.weight) * (x - bc(mu_a)) / bc(sigma_a) + bc(layer.bias)


@pytest.mark.parametrize("alpha,beta", [(2.0, 1.0), (-0.5, 3.0), (7.0, -2.0)])
def test_bn_constant_noise_formula_and_attacked_statistics(alpha, beta):
    x = rand_input()
    layer = BatchNorm(8)
    randomize_affine(layer)
    set_constant_noise(layer, alpha, beta)
    mean, var = batch_stats(x)
    x_hat = (x - bc(mean)) / torch.sqrt(bc(var) + EPS)
    out = layer(x)
    torch.testing.assert_close(out, bc(layer.weight) * (alpha * x_hat + beta) + bc(layer.bias))
    torch.testing.assert_close(out, attacked_stats_bn(layer, x, alpha, beta))
    # the running statistics are the true ones: the attack changes x_hat, not what BN measures
    torch.testing.assert_close(layer.running_mean, 0.1 * mean)


def test_in_constant_noise_in_eval_too():
    x = rand_input()
    layer = InstanceNorm(8)
    randomize_affine(layer)
    set_constant_noise(layer, 2.0, 1.0)
    layer.eval()
    mean = x.mean(dim=(2, 3), keepdim=True)
    x_hat = (x - mean) / torch.sqrt(((x - mean) ** 2).mean(dim=(2, 3), keepdim=True) + EPS)
    torch.testing.assert_close(layer(x), bc(layer.weight) * (2 * x_hat + 1) + bc(layer.bias))


def test_bnse_gate_sees_attacked_output():
    x = rand_input(c=32)
    layer = BatchNormSE(32)
    randomize_affine(layer)
    set_constant_noise(layer, 2.0, 1.0)
    mean, var = batch_stats(x)
    x_hat = (x - bc(mean)) / torch.sqrt(bc(var) + EPS)
    y = bc(layer.bn.weight) * (2 * x_hat + 1) + bc(layer.bn.bias)
    gate = torch.sigmoid(layer.se.fc2(torch.relu(layer.se.fc1(y.mean(dim=(2, 3))))))
    torch.testing.assert_close(layer(x), y * gate[:, :, None, None])


@pytest.mark.parametrize("impl", IEBN.IMPLS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_iebn_noise_leaves_gate_input_raw(impl, mode):
    x = rand_input()
    layer = IEBN(8, impl=impl)
    randomize_affine(layer)
    set_constant_noise(layer, 2.0, 1.0)
    if mode == "eval":
        layer(rand_input(seed=4))
        layer.eval()
        mean, var = layer.running_mean.clone(), layer.running_var.clone()
    else:
        mean, var = batch_stats(x)
    torch.testing.assert_close(layer(x), iebn_by_hand(layer, x, mean, var, 2.0, 1.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", NORMS)
def test_identity_noise_changes_nothing(norm):
    torch.manual_seed(0)
    clean = make_norm(norm, 32)
    randomize_affine(clean)
    attacked = make_norm(norm, 32)
    attacked.load_state_dict(clean.state_dict())
    set_constant_noise(attacked, 1.0, 0.0)
    x = rand_input(c=32)
    assert torch.equal(clean(x), attacked(x))


def test_set_constant_noise_reaches_every_norm_and_validates():
    model = cifar_resnet(20, 10, "bnse")
    assert set_constant_noise(model, 2.0, 1.0) == 21  # stem + 18 in blocks + 2 shortcuts
    for bad in [(0.0, 1.0), (math.nan, 0.0), (math.inf, 0.0), (2.0, math.nan), (2.0, -math.inf)]:
        with pytest.raises(ConfigError):
            set_constant_noise(model, *bad)


# --------------------------------------------------------------------------- mixed dataset


def test_mixed_batch_shifts_running_statistics():
    torch.manual_seed(0)
    model = cifar_resnet(8, 10, "bn")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    extras = torch.randn(8, 3, 32, 32) * 3 + 2  # foreign images with other statistics
    mixed_batch_loss(model, x, y, None)
    rm_clean = model.bn1.running_mean.clone()
    model.load_state_dict(state)
    mixed_batch_loss(model, x, y, extras)
    rm_mixed = model.bn1.running_mean.clone()
    expected = 0.1 * model.conv1(torch.cat([x, extras])).mean(dim=(0, 2, 3))
    torch.testing.assert_close(rm_mixed, expected.detach(), rtol=1e-4, atol=1e-5)
    assert (rm_mixed - rm_clean).abs().max() > 1e-3


def test_loss_ignores_the_extras_logits():
    torch.manual_seed(0)
    model = cifar_resnet(8, 10, "bn")
    captured = {}
    model.fc.register_forward_hook(lambda m, i, out: captured.setdefault("logits", out))
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    loss, logits = mixed_batch_loss(model, x, y, torch.randn(8, 3, 32, 32))
    all_logits = captured["logits"]
    all_logits.retain_grad()
    loss.backward()
    assert all_logits.shape[0] == 24 and logits.shape[0] == 16
    assert torch.all(all_logits.grad[16:] == 0)
    assert all_logits.grad[:16].abs().sum() > 0
    torch.testing.assert_close(loss, nn.functional.cross_entropy(all_logits[:16], y))


def test_k0_is_identical_to_clean_training(fake_mnist):
    data_dir = fake_mnist(n_train=128, n_test=64)
    common = dict(dataset="mnist", depth=8, epochs=2, batch_size=32, device="cpu")
    clean = resolve_train_config(attack="clean", **common)
    mix0 = resolve_train_config(attack="mix", extra="mnist-inverted", k=0, **common)
    r_clean = train_run(RunConfig(clean, "bn", 3), prepare_data(clean, data_dir))
    r_mix0 = train_run(RunConfig(mix0, "bn", 3), prepare_data(mix0, data_dir))
    assert r_clean.history == r_mix0.history
    mix8 = resolve_train_config(attack="mix", extra="mnist-inverted", k=8, **common)
    r_mix8 = train_run(RunConfig(mix8, "bn", 3), prepare_data(mix8, data_dir))
    assert r_mix8.history != r_clean.history
