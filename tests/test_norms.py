"""Each norm against its formula, written out here independently of noiseattack.norms."""

import pytest
import torch
import torch.nn as nn

from noiseattack.iebn import IEBN
from noiseattack.norms import BatchNorm, BatchNormSE, InstanceNorm

EPS = 1e-5


def batch_stats(x):
    mean = x.mean(dim=(0, 2, 3))
    var = ((x - mean.view(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3))  # biased, as used to normalize
    return mean, var


def bc(v):  # broadcast a per-channel vector over N, C, H, W
    return v.reshape(1, -1, 1, 1)


def rand_input(n=6, c=8, h=5, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g) * 2.5 + 1.5


def randomize_affine(layer, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if p.dim() and p.shape[0] != 1 else 0.3))


def test_bn_train_and_eval():
    x = rand_input()
    layer = BatchNorm(8)
    randomize_affine(layer)
    mean, var = batch_stats(x)
    expected = bc(layer.weight) * (x - bc(mean)) / torch.sqrt(bc(var) + EPS) + bc(layer.bias)
    torch.testing.assert_close(layer(x), expected)
    n = x.numel() / x.shape[1]
    torch.testing.assert_close(layer.running_mean, 0.1 * mean)
    torch.testing.assert_close(layer.running_var, 0.9 * torch.ones(8) + 0.1 * var * n / (n - 1))
    layer.eval()
    rm, rv = layer.running_mean.clone(), layer.running_var.clone()
    expected_eval = bc(layer.weight) * (x - bc(rm)) / torch.sqrt(bc(rv) + EPS) + bc(layer.bias)
    torch.testing.assert_close(layer(x), expected_eval)
    torch.testing.assert_close(layer.running_mean, rm)  # eval does not update


def test_bn_keeps_batchnorm2d_state_dict():
    ours = BatchNorm(8).state_dict()
    ref = nn.BatchNorm2d(8).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_in_uses_instance_stats_in_train_and_eval(mode):
    x = rand_input()
    layer = InstanceNorm(8)
    randomize_affine(layer)
    getattr(layer, mode)()
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    expected = bc(layer.weight) * (x - mean) / torch.sqrt(var + EPS) + bc(layer.bias)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("channels,hidden", [(16, 4), (32, 4), (64, 4), (128, 8), (256, 16)])
def test_se_hidden_width(channels, hidden):
    se = BatchNormSE(channels).se
    assert se.fc1.out_features == hidden and se.fc2.out_features == channels


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_bnse_formula(mode):
    x = rand_input(c=32)
    layer = BatchNormSE(32)
    randomize_affine(layer)
    if mode == "eval":
        layer(x)  # give it running statistics first
        layer.eval()
    bn = layer.bn
    if mode == "train":
        mean, var = batch_stats(x)
    else:
        mean, var = bn.running_mean.clone(), bn.running_var.clone()
    y = bc(bn.weight) * (x - bc(mean)) / torch.sqrt(bc(var) + EPS) + bc(bn.bias)
    s = y.mean(dim=(2, 3))
    h = torch.relu(s @ layer.se.fc1.weight.T + layer.se.fc1.bias)
    gate = torch.sigmoid(h @ layer.se.fc2.weight.T + layer.se.fc2.bias)
    expected = y * gate[:, :, None, None]
    torch.testing.assert_close(layer(x), expected)


def iebn_by_hand(layer, x, mean, var, alpha=1.0, beta=0.0):
    """out = (alpha * x_hat + beta) * (gamma * a) + b, a = sigmoid(w * avgpool(x) + b_r)."""
    x_hat = (x - bc(mean)) / torch.sqrt(bc(var) + EPS)
    pooled = x.mean(dim=(2, 3), keepdim=True)
    a = torch.sigmoid(pooled * layer.weight_readjust + layer.bias_readjust)
    return (alpha * x_hat + beta) * (layer.weight * a) + layer.bias


def test_iebn_init_and_official_names():
    layer = IEBN(8)
    sd = layer.state_dict()
    # The official BAN2d (gbup-group/IEBN, models/cifar/iebn_resnet.py): _BatchNorm(affine=False)
    # buffers plus four (1, C, 1, 1) parameters.
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        "weight": (1, 8, 1, 1), "bias": (1, 8, 1, 1), "weight_readjust": (1, 8, 1, 1),
        "bias_readjust": (1, 8, 1, 1), "running_mean": (8,), "running_var": (8,), "num_batches_tracked": (),
    }
    assert torch.all(layer.weight == 1) and torch.all(layer.bias == 0)
    assert torch.all(layer.weight_readjust == 0) and torch.all(layer.bias_readjust == -1)


@pytest.mark.parametrize("impl", IEBN.IMPLS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_iebn_formula(impl, mode):
    x = rand_input()
    layer = IEBN(8, impl=impl)
    randomize_affine(layer)
    if mode == "eval":
        layer(rand_input(seed=5))
        layer.eval()
        mean, var = layer.running_mean.clone(), layer.running_var.clone()
    else:
        mean, var = batch_stats(x)
    torch.testing.assert_close(layer(x), iebn_by_hand(layer, x, mean, var), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IEBN.IMPLS)
def test_iebn_running_stats_match_bn(impl):
    x = rand_input()
    layer, bn = IEBN(8, impl=impl), nn.BatchNorm2d(8)
    for _ in range(3):
        layer(x * 1.3 + 0.2)
        bn(x * 1.3 + 0.2)
    torch.testing.assert_close(layer.running_mean, bn.running_mean)
    torch.testing.assert_close(layer.running_var, bn.running_var)


@pytest.mark.parametrize("impl", IEBN.IMPLS)
def test_iebn_gate_parameters_get_gradients(impl):
    layer = IEBN(8, impl=impl)
    randomize_affine(layer)
    layer(rand_input()).square().sum().backward()
    for name in ("weight_readjust", "bias_readjust", "weight", "bias"):
        g = getattr(layer, name).grad
        assert g is not None and g.abs().sum() > 0, name


@pytest.mark.parametrize("impl", ["compiled", "eager"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fused_iebn_equals_reference_forward_and_backward(impl, layout, mode):
    """channels_last with C=8, H*W=20 also exercises the eager kernels' lane widening (4 positions x 8 channels)."""
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    fused, ref = IEBN(8, impl=impl), IEBN(8, impl="reference")
    randomize_affine(fused)
    ref.load_state_dict(fused.state_dict())
    for m in (fused, ref):
        m.set_noise(2.0, 1.0)
        m(rand_input(seed=7))
        getattr(m, mode)()
    x1 = rand_input().contiguous(memory_format=fmt).requires_grad_()
    x2 = rand_input().requires_grad_()
    g = torch.randn(6, 8, 5, 4, generator=torch.Generator().manual_seed(3)).contiguous(memory_format=fmt)
    y1, y2 = fused(x1), ref(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    assert y1.is_contiguous(memory_format=fmt) and y1._base is None  # keeps the layout; not a view
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for (name, p1), (_, p2) in zip(fused.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-4, msg=name)
    torch.testing.assert_close(fused.running_mean, ref.running_mean)
    torch.testing.assert_close(fused.running_var, ref.running_var)


@pytest.mark.parametrize("impl", IEBN.IMPLS)
def test_official_state_dict_loads_and_matches(impl):
    from test_paper_fidelity import OfficialBAN2d  # the official layer, transcribed once

    official = OfficialBAN2d(8)
    randomize_affine(official)
    official(rand_input(seed=9))  # running stats
    ours = IEBN(8, impl=impl)
    ours.load_state_dict(official.state_dict(), strict=True)
    x = rand_input()
    for mode in ("eval", "train"):
        official.train(mode == "train")
        ours.train(mode == "train")
        torch.testing.assert_close(ours(x), official(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("training", [True, False])
def test_fused_iebn_gradcheck(compiled, layout, training):
    """The hand-written backward of the fused IEBN against finite differences (float64)."""
    from noiseattack.iebn import _FusedIEBN

    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.randn(5, 4, 2, 4, dtype=torch.float64, generator=g).contiguous(memory_format=fmt).requires_grad_()
    params = [torch.randn(1, 4, 1, 1, dtype=torch.float64, generator=g).requires_grad_() for _ in range(4)]
    rm = torch.randn(4, dtype=torch.float64, generator=g)
    rv = torch.rand(4, dtype=torch.float64, generator=g) + 0.5

    def f(x, weight, bias, wr, br):  # fresh copies: training updates the running statistics in place
        return _FusedIEBN.apply(x, weight, bias, wr, br, rm.clone(), rv.clone(), training, 0.1, EPS, 2.0, 1.0,
                                compiled)

    assert torch.autograd.gradcheck(f, (x, *params))
