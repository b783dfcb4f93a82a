"""The zoo's new layers against their formulas, written out here: timm's EvoNorm-B0/S0, FRN and RMSNorm
with the constant attack on their own x̂, Ghost BatchNorm, Batch Renormalization and DAS; their
timm state_dicts; the attack's reach; ResNet forward/backward and state_dict round trips."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import EvoNorm2dB0, EvoNorm2dS0, FilterResponseNormTlu2d, RmsNorm2d

from noiseattack import zoo
from noiseattack.attacks import set_constant_noise
from noiseattack.layers import DAS, BatchRenorm, GhostBatchNorm
from noiseattack.models import cifar_resnet

from test_norms import EPS, bc, batch_stats, rand_input, randomize_affine

NEW_NORMS = ("evonorm-b0", "evonorm-s0", "frn", "rms", "gbn", "brn")
TIMM = {"evonorm-b0": EvoNorm2dB0, "evonorm-s0": EvoNorm2dS0, "frn": FilterResponseNormTlu2d, "rms": RmsNorm2d}
ALPHA, BETA = 2.0, -0.5


def _x_hat(name: str, layer: nn.Module, x: torch.Tensor, training: bool) -> torch.Tensor:
    """The normalized activation each layer's affine acts on, written out from its paper / timm's code."""
    c = x.shape[1]
    if name == "evonorm-b0":  # x / max(sqrt(var_B + eps), v x + sqrt(var_inst + eps))
        var_b = batch_stats(x)[1] if training else layer.running_var
        inst = x.var(dim=(2, 3), unbiased=False, keepdim=True)
        return x / torch.maximum(torch.sqrt(bc(var_b) + layer.eps).expand_as(x), bc(layer.v) * x + torch.sqrt(inst + layer.eps))
    if name == "evonorm-s0":  # x sigmoid(v x) / sqrt(var_group + eps), groups of 4 channels at 16
        g = c // 4
        xg = x.reshape(x.shape[0], g, -1)
        var = xg.var(-1, unbiased=False, keepdim=True).expand_as(xg).reshape_as(x)
        return x * torch.sigmoid(bc(layer.v) * x) / torch.sqrt(var + layer.eps)
    if name == "frn":  # x / sqrt(mean_hw x^2 + eps)
        return x / torch.sqrt((x ** 2).mean(dim=(2, 3), keepdim=True) + layer.eps)
    if name == "rms":  # x / sqrt(mean_c x^2 + eps)
        return x / torch.sqrt((x ** 2).mean(dim=1, keepdim=True) + layer.eps)
    raise KeyError(name)


def _out(name: str, layer: nn.Module, x_hat: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    y = bc(layer.weight) * (alpha * x_hat + beta) + (bc(layer.bias) if getattr(layer, "bias", None) is not None else 0)
    return torch.maximum(y, bc(layer.tau)) if name == "frn" else y


@pytest.mark.parametrize("name", list(TIMM))
@pytest.mark.parametrize("training", [True, False])
def test_timm_norms_match_their_formula_timm_and_the_attack_on_their_x_hat(name, training):
    layer = zoo.make_norm(name, 16)
    assert isinstance(layer, TIMM[name])
    randomize_affine(layer)
    if name == "evonorm-b0":
        layer.running_var.uniform_(0.5, 2.0)
    x = rand_input(c=16)
    layer.train(training)
    before = layer.state_dict()
    ref = TIMM[name](16, **({"groups": 4} if name == "evonorm-s0" else {}))
    ref.load_state_dict(before)  # timm's state_dict, strictly
    ref.train(training)
    x_hat = _x_hat(name, layer, x, training)
    torch.testing.assert_close(layer(x), _out(name, layer, x_hat), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x), ref(x), rtol=1e-6, atol=1e-6)
    assert set_constant_noise(layer, ALPHA, BETA) == 1
    assert layer.state_dict().keys() == before.keys()
    torch.testing.assert_close(layer(x), _out(name, layer, x_hat, ALPHA, BETA), rtol=1e-5, atol=1e-5)
    g = torch.autograd.grad(layer(x).sum(), layer.weight)[0]  # the gradient reaches timm's parameter
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_evonorm_b0_running_variance_as_timm():
    layer, x = zoo.make_norm("evonorm-b0", 8), rand_input()
    layer.train()
    layer(x)
    n = x.numel() / 8
    torch.testing.assert_close(layer.running_var, 0.9 + 0.1 * batch_stats(x)[1] * n / (n - 1))


def test_evonorm_s0_groups_work_at_every_width():
    assert [zoo.make_norm("evonorm-s0", c).groups for c in (4, 8, 16, 32, 64)] == [1, 2, 4, 8, 16]


def test_rms_without_affine_takes_the_attack():
    layer = zoo.resolve("rms").factory(8)
    plain = type(layer)(8, affine=False)
    x = rand_input()
    set_constant_noise(plain, ALPHA, BETA)
    torch.testing.assert_close(plain(x), ALPHA * x / torch.sqrt((x ** 2).mean(1, keepdim=True) + plain.eps) + BETA)


# --------------------------------------------------------------------------- Ghost BatchNorm


def _ghost_reference(x, layer, vb):
    """Each ghost batch (image i in ghost batch i mod G, G = max(1, N // vb)) normalized on its own."""
    n = x.shape[0]
    g = max(1, n // vb)
    out = torch.empty_like(x)
    means, uvars, counts = [], [], []
    for k in range(g):
        idx = [i for i in range(n) if i % g == k]
        mean, var = batch_stats(x[idx])
        out[idx] = (x[idx] - bc(mean)) / torch.sqrt(bc(var) + EPS)
        m = len(idx) * x.shape[2] * x.shape[3]
        means.append(mean), uvars.append(var * m / (m - 1)), counts.append(m)
    w = torch.tensor(counts, dtype=x.dtype) / sum(counts)
    return out, sum(wi * mi for wi, mi in zip(w, means)), sum(wi * vi for wi, vi in zip(w, uvars))


@pytest.mark.parametrize("n", [3, 10, 11, 16])
def test_ghost_bn_normalizes_each_ghost_batch_on_its_own(n):
    vb = 4  # G = 1 (3 images: BN), 2 (10: 5 + 5; 11: 6 + 5), 4 (16)
    layer = GhostBatchNorm(8, virtual_batch=vb)
    randomize_affine(layer)
    x = rand_input(n=n)
    x_hat, mean, uvar = _ghost_reference(x, layer, vb)
    torch.testing.assert_close(layer(x), bc(layer.weight) * x_hat + bc(layer.bias))
    torch.testing.assert_close(layer.running_mean, 0.1 * mean)
    torch.testing.assert_close(layer.running_var, 0.9 + 0.1 * uvar)
    set_constant_noise(layer, ALPHA, BETA)
    torch.testing.assert_close(layer(x), bc(layer.weight) * (ALPHA * x_hat + BETA) + bc(layer.bias))
    if n == 3:  # one ghost batch: BatchNorm2d exactly, running statistics included
        bn, ours = nn.BatchNorm2d(8), GhostBatchNorm(8, virtual_batch=vb)
        torch.testing.assert_close(ours(x), bn(x))
        torch.testing.assert_close(ours.running_var, bn.running_var)
    layer.eval()  # eval: the running statistics
    expected = bc(layer.weight) * (ALPHA * (x - bc(layer.running_mean)) / torch.sqrt(bc(layer.running_var) + EPS)
                                   + BETA) + bc(layer.bias)
    torch.testing.assert_close(layer(x), expected)


def test_ghost_bn_under_the_mix_layout_puts_foreign_images_in_every_ghost_batch():
    """128 primary images then 32 foreign ones (the mix attack's batch): 5 ghost batches of 32, each
    with 6 or 7 foreign images, so changing the foreign images changes every primary image's output."""
    layer = zoo.make_norm("gbn", 4)
    x = torch.randn(160, 4, 2, 2)
    other = x.clone()
    other[128:] = other[128:] * 3 + 2
    changed = (layer(x)[:128] - layer(other)[:128]).abs().amax((1, 2, 3)) > 1e-4
    assert changed.all()
    assert sorted(sum(1 for i in range(128, 160) if i % 5 == k) for k in range(5)) == [6, 6, 6, 7, 7]


# --------------------------------------------------------------------------- Batch Renormalization


@pytest.mark.parametrize("step,rmax,dmax", [(0, 1, 0), (499, 1, 0), (500, 1, 0), (2250, 2, 5 * 1750 / 2000),
                                            (2500, 1 + 2 * 2000 / 3500, 5), (4000, 3, 5), (10 ** 6, 3, 5)])
def test_batch_renorm_schedule(step, rmax, dmax):
    layer = BatchRenorm(4)
    layer.num_batches_tracked.fill_(step)
    got = [float(v) for v in layer.limits()]
    assert got == pytest.approx([rmax, dmax], abs=1e-6)


@pytest.mark.parametrize("step", [0, 3000])
def test_batch_renorm_formula_clipping_and_gradients(step):
    layer = BatchRenorm(8)
    randomize_affine(layer)
    with torch.no_grad():
        layer.running_mean.copy_(torch.linspace(-3, 3, 8))  # far from the batch: d clips at +-dmax
        layer.running_var.copy_(torch.linspace(0.05, 40, 8))  # r clips at both ends
        layer.num_batches_tracked.fill_(step)
    rm, rv = layer.running_mean.clone(), layer.running_var.clone()
    rmax = 1 + 2 * min(max((step - 500) / 3500, 0), 1)
    dmax = 5 * min(max((step - 500) / 2000, 0), 1)
    x = rand_input().requires_grad_(True)
    mean, var = batch_stats(x)
    sigma_b, sigma = torch.sqrt(var + EPS), torch.sqrt(rv + EPS)
    r = (sigma_b / sigma).clamp(1 / rmax, rmax).detach()
    d = ((mean - rm) / sigma).clamp(-dmax, dmax).detach()
    if step:
        assert (r == rmax).any() and (r == 1 / rmax).any() and (d.abs() == dmax).any()
    expected = bc(layer.weight) * ((x - bc(mean)) / bc(sigma_b) * bc(r) + bc(d)) + bc(layer.bias)
    out = layer(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(x)
    torch.testing.assert_close(torch.autograd.grad((out * g).sum(), x)[0],
                               torch.autograd.grad((expected * g).sum(), x)[0], rtol=1e-4, atol=1e-5)
    n = x.numel() / 8
    torch.testing.assert_close(layer.running_mean, 0.9 * rm + 0.1 * mean.detach())
    torch.testing.assert_close(layer.running_var, 0.9 * rv + 0.1 * var.detach() * n / (n - 1))
    assert int(layer.num_batches_tracked) == step + 1
    set_constant_noise(layer, ALPHA, BETA)  # the attack on x_hat = (x - mu_B) / sigma_B * r + d
    layer.running_mean.copy_(rm), layer.running_var.copy_(rv), layer.num_batches_tracked.fill_(step)
    torch.testing.assert_close(layer(x), bc(layer.weight) * (ALPHA * ((x - bc(mean)) / bc(sigma_b) * bc(r) + bc(d))
                                                             + BETA) + bc(layer.bias), rtol=1e-5, atol=1e-5)
    layer.eval()
    eval_ref = nn.BatchNorm2d(8).eval()
    eval_ref.load_state_dict(layer.state_dict())  # BatchNorm2d's state_dict
    with torch.no_grad():
        # gamma (alpha x_hat + beta) + b with x_hat from the running statistics, from BatchNorm2d's w x_hat + b
        torch.testing.assert_close(layer(x), ALPHA * eval_ref(x) + BETA * bc(layer.weight)
                                   + (1 - ALPHA) * bc(layer.bias), rtol=1e-5, atol=1e-5)


def test_batch_renorm_resumes_from_its_state_dict_bit_identically():
    torch.manual_seed(0)
    xs = [torch.randn(8, 4, 3, 3) * (1 + i) for i in range(6)]
    a = BatchRenorm(4)
    a.num_batches_tracked.fill_(2997)  # crosses the relaxation's steps
    b = BatchRenorm(4)
    b.load_state_dict(a.state_dict())
    outs_a = [a(x) for x in xs]
    outs_b = [b(x) for x in xs[:3]]
    c = BatchRenorm(4)
    c.load_state_dict(b.state_dict())  # a checkpoint after 3 steps
    outs_b += [c(x) for x in xs[3:]]
    assert all(torch.equal(p, q) for p, q in zip(outs_a, outs_b))
    assert int(c.num_batches_tracked) == 3003


# --------------------------------------------------------------------------- DAS


def _gelu(v):
    return 0.5 * v * (1 + math.erf(v / math.sqrt(2)))


def test_das_against_a_hand_computation_with_fractional_offsets():
    """Two channels on a 3x3 map, reduction 4 (one bottleneck channel), offsets (dy, dx) = (0, 0.5) at
    every kernel point: bilinear sampling halfway between two neighbours, zero outside the map."""
    torch.manual_seed(0)
    das = DAS(2)
    x = torch.randn(1, 2, 3, 3)
    with torch.no_grad():
        das.depthwise.weight.copy_(torch.randn(2, 1, 3, 3))
        das.pointwise.weight.copy_(torch.tensor([[[[0.7]], [[-1.3]]]]))
        das.norm.weight.fill_(1.5), das.norm.bias.fill_(0.2)
        das.offset.bias.copy_(torch.tensor([0.0, 0.5] * 9))
        das.deform.weight.copy_(torch.randn(1, 1, 3, 3))
        das.deform.bias.fill_(-0.1)
        out = das(x)
    X, Wd, Wp = x[0].tolist(), das.depthwise.weight[:, 0].tolist(), das.pointwise.weight[0, :, 0, 0].tolist()

    def at(m, i, j):  # zero padding
        return m[i][j] if 0 <= i < 3 and 0 <= j < 3 else 0.0

    dw = [[[sum(Wd[c][a][b] * at(X[c], i + a - 1, j + b - 1) for a in range(3) for b in range(3)) for j in range(3)]
           for i in range(3)] for c in range(2)]
    pw = [[Wp[0] * dw[0][i][j] + Wp[1] * dw[1][i][j] for j in range(3)] for i in range(3)]
    mu = sum(map(sum, pw)) / 9
    var = sum((v - mu) ** 2 for row in pw for v in row) / 9
    f = [[_gelu(1.5 * (v - mu) / math.sqrt(var + das.norm.eps) + 0.2) for v in row] for row in pw]
    K = das.deform.weight[0, 0].tolist()

    def sample(i, y):  # f at (i, y + 0.5): halfway between columns y and y + 1
        return 0.5 * (at(f, i, y) + at(f, i, y + 1))

    for i in range(3):
        for j in range(3):
            z = sum(K[a][b] * sample(i + a - 1, j + b - 1) for a in range(3) for b in range(3)) - 0.1
            gate = 1 / (1 + math.exp(-z))
            for c in range(2):
                assert out[0, c, i, j].item() == pytest.approx(X[c][i][j] * gate, rel=1e-5, abs=1e-6)


def test_das_offsets_start_at_zero_in_a_resnet_and_gate_per_pixel():
    torch.manual_seed(0)
    model = cifar_resnet(8, 10, "bn+das", width=0.5, attn_placement="stage")
    gates = [m for m in model.modules() if isinstance(m, DAS)]
    assert len(gates) == 3 and all(g.offset.weight.abs().sum() == 0 for g in gates)  # He init leaves them at 0
    x = torch.randn(2, 16, 8, 8)
    gate = gates[1].gate(x)
    assert gate.shape == (2, 1, 8, 8) and ((gate > 0) & (gate < 1)).all()
    assert DAS(16, gate_channels="channel").gate(x).shape == x.shape


def test_das_is_passed_by_by_the_attack_and_its_norm_stays_clean():
    layer = zoo.make_norm("bn+das", 16)
    assert set_constant_noise(layer, ALPHA, BETA) == 1 and layer.norm.noise_alpha == ALPHA
    assert type(layer.attn.norm) is nn.InstanceNorm2d


def test_strip_attention_is_parameter_free_and_its_formula():
    layer = zoo.make_norm("bn+strip", 8)
    y = rand_input(c=8)
    assert sum(p.numel() for p in layer.attn.parameters()) == 0
    expected = y * torch.sigmoid(y.mean(dim=3, keepdim=True) + y.mean(dim=2, keepdim=True))
    torch.testing.assert_close(layer.attn(y), expected)


# --------------------------------------------------------------------------- in the ResNet


@pytest.mark.parametrize("name", NEW_NORMS + ("bn+das", "bn+ela", "bn+strip", "evonorm-s0+das"))
def test_new_layers_train_in_a_resnet_at_every_width_under_the_attack_and_round_trip(name):
    for width in (0.25, 0.5, 1):
        torch.manual_seed(0)
        model = cifar_resnet(8, 10, name, width=width).to(memory_format=torch.channels_last)
        assert set_constant_noise(model, ALPHA, BETA) == 9  # stem + 2 per block + 2 shortcuts
        x = torch.randn(6, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        F.cross_entropy(model(x), torch.arange(6)).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters()), (name, width)
    twin = cifar_resnet(8, 10, name, width=1)
    twin.load_state_dict(model.state_dict())
    set_constant_noise(twin, ALPHA, BETA)
    model.eval(), twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(twin(x.contiguous()), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c", [16, 32, 64])
def test_parameter_counts_by_hand(c):
    counts = {r["name"]: r["params"][str(c)] for r in zoo.describe_layers()}
    assert counts["evonorm-b0"] == counts["evonorm-s0"] == counts["frn"] == 3 * c  # gamma, beta, v or tau
    assert counts["rms"] == c and counts["gbn"] == counts["brn"] == 2 * c
    assert counts["bn+strip"] == 2 * c  # parameter-free
    r = c // 4  # DAS: depthwise 9C, pointwise C*r, IN 2r, offsets 18*9r + 18, deformable 9r + 1
    assert counts["bn+das"] == 2 * c + 9 * c + c * r + 2 * r + (18 * 9 * r + 18) + (9 * r + 1)
    assert len(zoo.describe_layers()) >= 24
