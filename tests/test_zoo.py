"""The layer zoo: registry, names, composites against timm, the constant attack inside any layer,
and the researcher's own layer by import path (contract checks, end to end through the CLI)."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import get_attn

from conftest import run_cli
from noiseattack import zoo
from noiseattack.attacks import set_constant_noise
from noiseattack.config import ConfigError, RunConfig, resolve_train_config
from noiseattack.models import cifar_resnet
from noiseattack.norms import BatchNorm, NormAttention

from test_norms import EPS, bc, batch_stats, rand_input, randomize_affine

COMPOSITES = tuple(f"bn+{a}" for a in zoo.attention_names()) + ("iebn+eca", "gn+cbam", "ln+se", "bnse+ge")
EVERY = zoo.norm_names() + COMPOSITES


# --------------------------------------------------------------------------- registry


def test_zoo_has_at_least_24_layers_and_the_paper_four_first():
    rows = zoo.describe_layers()
    assert len(rows) >= 24
    assert [r["name"] for r in rows][:4] == ["bn", "in", "bnse", "iebn"]
    assert {"gn", "ln", "bn+se", "bn+eca", "bn+cbam", "bn+gc", "evonorm-b0", "evonorm-s0", "frn", "rms", "gbn", "brn",
            "bn+das", "bn+ela", "bn+strip"} <= {r["name"] for r in rows}
    assert {r["origin"] for r in rows} <= set(zoo.ORIGINS)


def eca_kernel(c, gamma=2, b=1):  # ECA-Net's adaptive kernel size, written out
    t = int(abs(math.log2(c) + b) / gamma)
    return t if t % 2 else t + 1


@pytest.mark.parametrize("c", [16, 32, 64])
def test_parameter_counts_by_hand(c):
    counts = {r["name"]: r["params"][str(c)] for r in zoo.describe_layers()}
    assert counts["bn"] == counts["in"] == counts["gn"] == counts["ln"] == 2 * c
    assert counts["iebn"] == 4 * c
    hidden = max(4, c // 16)
    assert counts["bnse"] == 2 * c + (c * hidden + hidden) + (hidden * c + c)
    assert counts["bn+eca"] == 2 * c + eca_kernel(c)
    se_hidden = max(1, round(c / 16))  # SENet's reduction 16, rd_divisor 1
    assert counts["bn+se"] == 2 * c + (c * se_hidden + se_hidden) + (se_hidden * c + c)
    assert counts["bn+ge"] == 2 * c  # parameter-free gate


def test_gn_groups_divide_channels_with_at_least_four_each():
    for c in (8, 12, 16, 24, 32, 64, 128, 256):
        g = zoo.make_norm("gn", c).num_groups
        assert c % g == 0 and c // g >= 4 and g <= 32
    assert [zoo.make_norm("gn", c).num_groups for c in (16, 32, 64)] == [4, 8, 16]


def test_parse_norms_shorthands_order_and_errors():
    assert zoo.parse_norms("paper") == ("bn", "in", "bnse", "iebn")
    assert zoo.parse_norms("all") == zoo.norm_names()
    assert zoo.parse_norms(" BN+ECA ,bn") == ("bn+eca", "bn")
    for bad, message in [("xn", "unknown norm 'xn'"), ("bn+xa", "unknown attention 'xa'"),
                         (" BN+ECA ,bn, bn+eca", "--norm names bn[+]eca more than once"),
                         ("bn+se+eca", "one attention module per norm"), ("", "--norm is empty"),
                         ("not a path:", "not an import path")]:
        with pytest.raises(ConfigError, match=message):
            zoo.parse_norms(bad)


def test_register_norm_validates_and_is_listed():
    with pytest.raises(ConfigError, match="lowercase"):
        zoo.register_norm("Bad+Name", nn.BatchNorm2d)
    with pytest.raises(ConfigError, match="is taken"):
        zoo.register_norm("bn", nn.BatchNorm2d)
    with pytest.raises(ConfigError, match="is taken"):
        zoo.register_norm("paper", nn.BatchNorm2d)
    with pytest.raises(ConfigError, match="callable"):
        zoo.register_norm("notcallable", 3)
    zoo.register_norm("test-bn-plain", nn.BatchNorm2d, "a plain BatchNorm2d\nsecond line")
    try:
        assert "test-bn-plain" in zoo.norm_names()
        r = zoo.resolve("test-bn-plain+eca")
        assert r.origin == "user" and r.name == "test-bn-plain+eca"
        assert zoo.resolve("test-bn-plain").description == "a plain BatchNorm2d"
    finally:
        zoo._NORMS.pop("test-bn-plain")
        zoo.resolve.cache_clear()


# --------------------------------------------------------------------------- every layer


@pytest.mark.parametrize("name", EVERY)
def test_every_layer_builds_trains_in_a_resnet_and_round_trips(name):
    for c in (16, 32, 64):
        layer = zoo.make_norm(name, c)
        x = torch.randn(4, c, 8, 8)
        assert layer(x).shape == x.shape
    torch.manual_seed(0)
    model = cifar_resnet(8, 10, name).to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    F.cross_entropy(model(x), torch.arange(8) % 10).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    torch.manual_seed(1)
    twin = cifar_resnet(8, 10, name)
    twin.load_state_dict(model.state_dict())
    model.eval(), twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(twin(x.contiguous()), model(x))


def test_the_constant_attack_reaches_every_registered_layer_at_every_norm_position():
    """Every norm of the zoo takes the attack (none is documented as unreachable): in ResNet-8, the stem,
    two norms per block and two shortcuts, each with its norm attacked once."""
    for name in EVERY:
        model = cifar_resnet(8, 10, name, width=0.25)
        assert set_constant_noise(model, 2.0, 1.0) == 9, name


@pytest.mark.parametrize("attn,kwargs", [("eca", {}), ("se", {"rd_divisor": 1}), ("cbam", {}), ("gc", {}),
                                         ("ge", {"use_mlp": False}), ("coord", {}), ("ela", {}),
                                         ("strip", {"use_conv": False})])
@pytest.mark.parametrize("training", [True, False])
def test_bn_plus_attn_is_timms_module_on_our_bns_output(attn, kwargs, training):
    c = 32
    torch.manual_seed(0)
    ours = zoo.make_norm(f"bn+{attn}", c)
    assert isinstance(ours, NormAttention)
    bn = nn.BatchNorm2d(c)  # the reference pipeline, built independently
    ref = get_attn(attn)(c, **kwargs)
    bn.load_state_dict(ours.norm.state_dict())
    ref.load_state_dict(ours.attn.state_dict())  # strict: the same module, the same parameters
    with torch.no_grad():  # non-trivial parameters, shared
        for p_ours, p_ref in zip(ours.parameters(), list(bn.parameters()) + list(ref.parameters())):
            p_ours.add_(torch.randn_like(p_ours) * 0.3)
            p_ref.copy_(p_ours)
    ours.train(training), bn.train(training), ref.train(training)
    x = rand_input(n=6, c=c, h=8, w=8)
    torch.testing.assert_close(ours(x), ref(bn(x)))


# --------------------------------------------------------------------------- the constant attack anywhere


class WrapsBN(nn.Module):
    """A user's layer: a plain nn.BatchNorm2d inside, no set_noise."""

    def __init__(self, channels):
        super().__init__()
        self.inner = nn.BatchNorm2d(channels)
        self.scale = nn.Parameter(torch.full((1, channels, 1, 1), 1.5))

    def forward(self, x):
        return self.inner(x) * self.scale


@pytest.mark.parametrize("training", [True, False])
def test_constant_attack_inside_a_users_bn_matches_the_formula(training):
    alpha, beta = 2.0, 1.0
    layer = WrapsBN(8)
    randomize_affine(layer.inner)
    x = rand_input()
    if not training:  # running statistics of their own
        layer.train()
        layer(x * 0.7 + 0.2)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    assert set_constant_noise(layer, alpha, beta) == 1
    assert set(layer.state_dict()) == set(before)  # the class changed, the state did not
    assert isinstance(layer.inner, nn.BatchNorm2d)
    layer.train(training)
    bn = layer.inner
    mean, var = batch_stats(x) if training else (before["inner.running_mean"], before["inner.running_var"])
    x_hat = (x - bc(mean)) / torch.sqrt(bc(var) + EPS)
    expected = (bc(bn.weight) * (alpha * x_hat + beta) + bc(bn.bias)) * layer.scale
    torch.testing.assert_close(layer(x), expected)
    g = torch.autograd.grad(layer(x).sum(), bn.weight)[0]  # gradients reach the real parameter
    torch.testing.assert_close(g, ((alpha * x_hat + beta) * layer.scale).sum((0, 2, 3)))


def test_constant_attack_on_gn_and_ln_matches_the_formula():
    alpha, beta, x = 2.0, -0.5, rand_input(c=16)
    gn = zoo.make_norm("gn", 16)
    randomize_affine(gn)
    set_constant_noise(gn, alpha, beta)
    xg = x.view(6, 4, -1)
    x_hat = ((xg - xg.mean(-1, keepdim=True)) / torch.sqrt(xg.var(-1, unbiased=False, keepdim=True) + EPS)).view_as(x)
    torch.testing.assert_close(gn(x), bc(gn.weight) * (alpha * x_hat + beta) + bc(gn.bias))
    ln = zoo.make_norm("ln", 16)
    randomize_affine(ln)
    set_constant_noise(ln, alpha, beta)
    mu, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    x_hat = (x - mu) / torch.sqrt(var + ln.eps)
    torch.testing.assert_close(ln(x), bc(ln.weight) * (alpha * x_hat + beta) + bc(ln.bias), rtol=1e-5, atol=1e-5)


def test_constant_attack_without_affine():
    x = rand_input()
    bn = nn.BatchNorm2d(8, affine=False)
    set_constant_noise(bn, 3.0, 0.5)
    mean, var = batch_stats(x)
    torch.testing.assert_close(bn(x), 3.0 * (x - bc(mean)) / torch.sqrt(bc(var) + EPS) + 0.5)


def test_composite_attack_reaches_the_norm_not_the_attentions_own_bn():
    layer = zoo.make_norm("bn+cbam", 16)
    inner_bns = [m for m in layer.attn.modules() if isinstance(m, nn.BatchNorm2d)]
    classes = [type(m) for m in inner_bns]
    assert inner_bns and set_constant_noise(layer, 2.0, 1.0) == 1
    assert layer.norm.noise_alpha == 2.0 and layer.norm.noise_beta == 1.0
    assert [type(m) for m in inner_bns] == classes  # not converted: part of the attention
    model = cifar_resnet(8, 10, "bn+cbam")
    assert set_constant_noise(model, 2.0, 1.0) == 9  # stem + 2 in each of 3 blocks + 2 shortcuts, none in CBAM
    assert sum(isinstance(m, BatchNorm) and m.attacked for m in model.modules()) == 9


def test_a_set_noise_layer_takes_the_attack_itself():
    class Own(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.bn = nn.BatchNorm2d(c)  # not to be converted: the layer decides
            self.got = None

        def set_noise(self, alpha, beta):
            self.got = (alpha, beta)

        def forward(self, x):
            return self.bn(x)

    layer = Own(8)
    assert set_constant_noise(layer, 2.0, 1.0) == 1
    assert layer.got == (2.0, 1.0) and type(layer.bn) is nn.BatchNorm2d


# --------------------------------------------------------------------------- user layers by import path


GOOD = '''
import torch.nn as nn

class MyNorm(nn.Module):
    """BatchNorm with a learnable output gain."""
    def __init__(self, channels):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return self.bn(x)

class Shrinks(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels // 2, 1)

    def forward(self, x):
        return self.conv(x)

class NotFinite(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.w = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x * self.w.view(1, -1, 1, 1) / 0.0

class NoNorm(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x):
        return x * self.w


class BadNoise(NoNorm):
    def set_noise(self, alpha, beta):
        raise RuntimeError("alpha unsupported")

import torch
'''


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "work" / "mylayers"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "layers.py").write_text(textwrap.dedent(GOOD))
    monkeypatch.chdir(tmp_path / "work")  # as a user runs it: their package in the working dir
    monkeypatch.syspath_prepend(str(tmp_path / "work"))
    yield pkg
    for name in [m for m in sys.modules if m.startswith("mylayers")]:
        del sys.modules[name]
    zoo.resolve.cache_clear()


def test_import_path_resolves_to_a_hash_of_its_source(user_pkg):
    import hashlib

    r = zoo.resolve("mylayers.layers:MyNorm")
    sha = hashlib.sha256((user_pkg / "layers.py").read_bytes()).hexdigest()
    assert r.name == f"mylayers.layers:MyNorm@{sha[:8]}" and r.origin == "user"
    assert r.description == "BatchNorm with a learnable output gain."
    assert r.info()["sources"][0]["sha256"] == sha
    assert zoo.resolve(r.name).name == r.name  # the canonical name resolves to itself
    with pytest.raises(ConfigError, match="its source has changed"):
        zoo.resolve("mylayers.layers:MyNorm@00000000")
    train = resolve_train_config(dataset="mnist", device="cpu")
    other = RunConfig(train, f"mylayers.layers:MyNorm@{'1' * 8}", 0)
    assert RunConfig(train, r.name, 0).key != other.key  # two versions never share a key
    assert zoo.resolve("bn+mylayers.layers:NoNorm").name == f"bn+mylayers.layers:NoNorm@{sha[:8]}"


@pytest.mark.parametrize("layer,message", [
    ("mylayers.layers:Shrinks", "must keep the shape N x C x H x W"),
    ("mylayers.layers:NotFinite", "its output is not finite"),
    ("mylayers.nothere:X", "cannot import 'mylayers.nothere'"),
    ("mylayers.layers:Missing", "has no attribute 'Missing'"),
])
def test_a_broken_user_layer_is_one_line_exit_2_nothing_written(user_pkg, fake_mnist, tmp_path, capsys, layer,
                                                                  message):
    data = fake_mnist()
    runs = tmp_path / "runs"
    code, _, err = run_cli(capsys, "clean", "--norm", f"bn,{layer}", "--dataset", "mnist", "--data-dir", data,
                           "--runs-dir", runs, "--device", "cpu", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and message in err and err.startswith("noiseattack: error:")
    assert not runs.exists()


def test_unreachable_layer_refused_under_constant_accepted_under_mix(user_pkg, fake_mnist, tmp_path, capsys):
    data = fake_mnist(n_train=64, n_test=32)
    runs = tmp_path / "runs"
    common = ["--norm", "mylayers.layers:NoNorm", "--dataset", "mnist", "--data-dir", data, "--runs-dir", runs,
              "--depth", "8", "--epochs", "1", "--batch-size", "32", "--repeats", "1", "--device", "cpu",
              "--no-progress"]
    code, _, err = run_cli(capsys, "constant", "--alpha", "2", "--beta", "1", *common)
    assert code == 2 and "the constant attack cannot reach it" in err and err.count("\n") == 1
    assert not runs.exists()
    composite = [a if a != "mylayers.layers:NoNorm" else "mylayers.layers:NoNorm+eca" for a in common]
    code, _, err = run_cli(capsys, "constant", "--alpha", "2", "--beta", "1", *composite)
    assert code == 2 and err.count("\n") == 1 and "cannot reach the norm of this NORM+ATTN layer" in err
    assert not runs.exists()
    broken = [a if a != "mylayers.layers:NoNorm" else "mylayers.layers:BadNoise" for a in common]
    code, _, err = run_cli(capsys, "constant", "--alpha", "2", "--beta", "1", *broken)
    assert code == 2 and err.count("\n") == 1 and "set_noise(2.0, 1.0) failed: RuntimeError: alpha unsupported" in err
    assert not runs.exists()
    code, _, err = run_cli(capsys, "mix", "--extra", "mnist-inverted", "--k", "8", *common)
    assert code == 0, err
    assert len((next(runs.iterdir()) / "results.jsonl").read_text().splitlines()) == 1


def test_user_layer_trains_end_to_end_under_constant_through_the_cli(user_pkg, fake_mnist, tmp_path):
    data = fake_mnist(n_train=64, n_test=32)
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "noiseattack", "constant", "--alpha", "2", "--beta", "1",
                           "--norm", "bn,mylayers.layers:MyNorm", "--dataset", "mnist", "--data-dir", str(data),
                           "--runs-dir", str(runs), "--depth", "8", "--epochs", "1", "--batch-size", "32",
                           "--repeats", "1", "--device", "cpu", "--no-progress"],
                          capture_output=True, text=True, cwd=user_pkg.parent, env=env)
    assert proc.returncode == 0, proc.stderr
    exp = runs / "constant-a2-b1-mnist-resnet8-e1"
    records = [json.loads(line) for line in (exp / "results.jsonl").read_text().splitlines()]
    user = next(r for r in records if r["norm"].startswith("mylayers.layers:MyNorm@"))
    assert user["layer"]["origin"] == "user" and user["layer"]["sources"][0]["module"] == "mylayers.layers"
    assert user["status"] == "finished" and math.isfinite(user["final_acc"])
    config = json.loads((exp / "config.json").read_text())
    assert user["norm"] in config["norms"] and config["layers"][user["norm"]]["origin"] == "user"
    assert "--norm bn,mylayers.layers:MyNorm@" in config["command"]


def test_norms_command_lists_layers_with_parameters(capsys):
    code, out, _ = run_cli(capsys, "norms", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) >= 10 and rows[0]["name"] == "bn" and rows[0]["params"] == {"16": 32, "32": 64, "64": 128}
    code, out, _ = run_cli(capsys, "norms")
    assert code == 0 and "bn+cbam" in out and "pkg.module:Class" in out
    code, _, err = run_cli(capsys, "norms", "--format", "xml")
    assert code == 2 and err.count("\n") == 1


@pytest.mark.parametrize("width", [0.25, 0.5, 0.75])
def test_fractional_widths_build_every_layer(width):
    for name in EVERY:
        model = cifar_resnet(8, 10, name, width=width)
        assert model.conv1.out_channels == round(16 * width) and model.fc.in_features == round(64 * width)
        x = torch.randn(4, 3, 32, 32)
        F.cross_entropy(model(x), torch.arange(4)).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), name


@pytest.mark.parametrize("width,message", [("0.3", "16 x width a whole number"), ("0", "width must be > 0"),
                                           ("-1", "width must be > 0"), ("65", "width must be <= 64")])
def test_bad_widths_are_one_line_exit_2(tmp_path, capsys, width, message):
    code, _, err = run_cli(capsys, "clean", "--width", width, "--runs-dir", tmp_path / "runs", "--device", "cpu")
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_whole_widths_keep_their_keys():
    a, b = resolve_train_config(width=2.0, device="cpu"), resolve_train_config(width=2, device="cpu")
    assert a.width == 2 and isinstance(a.width, int) and RunConfig(a, "bn", 0).key == RunConfig(b, "bn", 0).key
    assert resolve_train_config(width=0.5, device="cpu").width == 0.5


@pytest.mark.parametrize("training", [True, False])
def test_ln_is_timms_layernorm2d(training):
    from timm.layers import LayerNorm2d

    ours, ref = zoo.make_norm("ln", 16), LayerNorm2d(16)
    assert isinstance(ours, LayerNorm2d)
    randomize_affine(ours)
    ref.load_state_dict(ours.state_dict())
    ours.train(training), ref.train(training)
    x = rand_input(c=16).requires_grad_(True)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)
    gx_ours, gw_ours = torch.autograd.grad(ours(x).square().sum(), (x, ours.weight))
    gx_ref, gw_ref = torch.autograd.grad(ref(x).square().sum(), (x, ref.weight))
    torch.testing.assert_close(gx_ours, gx_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw_ours, gw_ref, rtol=1e-4, atol=1e-4)


def test_composite_with_an_unreachable_norm_is_refused_by_the_attack():
    layer = NormAttention(nn.Identity(), nn.BatchNorm2d(8))  # a BN in the attention does not count
    with pytest.raises(ConfigError, match="cannot reach the norm"):
        set_constant_noise(layer, 2.0, 1.0)
    assert type(layer.attn) is nn.BatchNorm2d


def test_a_layer_that_breaks_under_the_attack_is_refused(user_pkg, fake_mnist, tmp_path, capsys):
    """The check runs the layer again after the attack reached it: a set_noise that leaves it
    producing NaN is caught before anything is written (clean training would accept it)."""
    (user_pkg / "noisy.py").write_text(textwrap.dedent('''
        import torch
        import torch.nn as nn


        class NaNUnderNoise(nn.Module):
            def __init__(self, channels):
                super().__init__()
                self.bn = nn.BatchNorm2d(channels)
                self.scale = 1.0

            def set_noise(self, alpha, beta):
                self.scale = float("nan")

            def forward(self, x):
                return self.bn(x) * self.scale
    '''))
    data = fake_mnist(n_train=64, n_test=32)
    runs = tmp_path / "runs"
    common = ["--norm", "mylayers.noisy:NaNUnderNoise", "--dataset", "mnist", "--data-dir", data, "--runs-dir", runs,
              "--device", "cpu", "--no-progress", "--depth", "8", "--epochs", "1", "--batch-size", "32", "--repeats", "1"]
    code, _, err = run_cli(capsys, "constant", "--alpha", "2", "--beta", "1", *common)
    assert code == 2 and err.count("\n") == 1 and "its output is not finite" in err and not runs.exists()
    code, _, err = run_cli(capsys, "clean", *common)
    assert code == 0, err
