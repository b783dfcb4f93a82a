"""Paper fidelity: our ResNet with shortcut_norm="bn" is the official IEBN model (gbup-group/IEBN,
models/cifar/iebn_resnet.py), run keys from before the option are unchanged, and the paper preset
is the official training setup.

The official model is written out below from its description, independently of
noiseattack.models: same module names, so that its state_dict loads into ours with strict=True.
"""

import dataclasses
import hashlib
import json
import math
import shlex

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import run_cli
from noiseattack.attacks import set_constant_noise
from noiseattack.config import (PERFORMANCE_FIELDS, ConfigError, RunConfig, resolve_experiment, resolve_train_config,
                                to_jsonable, train_config_from_dict)
from noiseattack.experiment import cli_command
from noiseattack.models import cifar_resnet
from noiseattack.iebn import IEBN
from noiseattack.norms import BatchNorm
from noiseattack.train import build_model

# --------------------------------------------------------------------------- the official model


class OfficialBAN2d(nn.Module):
    """The official IEBN layer: BN without affine, then x_hat * (weight * sigmoid(avgpool(x) *
    weight_readjust + bias_readjust)) + bias. Running statistics with momentum 0.1 through
    F.batch_norm (which does not count num_batches_tracked; the official layer does not either)."""

    def __init__(self, c: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(1, c, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.weight_readjust = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.bias_readjust = nn.Parameter(torch.full((1, c, 1, 1), -1.0))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        attention = torch.sigmoid(F.adaptive_avg_pool2d(x, 1) * self.weight_readjust + self.bias_readjust)
        x_hat = F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, self.momentum,
                             self.eps)
        return x_hat * (self.weight * attention) + self.bias


OFFICIAL_NORMS = {"bn": nn.BatchNorm2d, "iebn": OfficialBAN2d}


class OfficialBasic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, downsample, norm_layer):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class OfficialBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, downsample, norm_layer):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = norm_layer(4 * planes)
        self.downsample = downsample

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class OfficialResNet(nn.Module):
    """Stem conv3x3(16) + norm + ReLU, layer1..3 (16, 32, 64 planes; stride 2 at the start of layers
    2 and 3), downsample = Sequential(conv1x1, nn.BatchNorm2d) where the shape changes, 8x8 average
    pool, fc."""

    def __init__(self, depth, num_classes, block_name, norm):
        super().__init__()
        block, n = (OfficialBasic, (depth - 2) // 6) if block_name == "basic" else (OfficialBottleneck, (depth - 2) // 9)
        norm_layer = OFFICIAL_NORMS[norm]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = norm_layer(16)
        self.inplanes = 16
        self.layer1 = self._make_layer(block, 16, n, 1, norm_layer)
        self.layer2 = self._make_layer(block, 32, n, 2, norm_layer)
        self.layer3 = self._make_layer(block, 64, n, 2, norm_layer)
        self.fc = nn.Linear(64 * block.expansion, num_classes)

    def _make_layer(self, block, planes, n, stride, norm_layer):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, norm_layer)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None, norm_layer) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.avg_pool2d(x, 8).flatten(1))


# Fields added after the runs those keys belong to (the random attack's parameters, at their neutral values
# in every other attack's setting): identity() leaves them out there, as the rule of that time had none.
RANDOM_FIELDS = ("scale_low", "scale_high", "bias_low", "bias_high", "noise_in_eval")


def randomize_(model: nn.Module, gen: torch.Generator) -> None:
    """Every parameter and running statistic random (positive variances), so that no init
    convention and no idle gate (weight_readjust = 0 at init) can hide a difference."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(3)
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) + 0.5)
            elif name.endswith(("conv1.weight", "conv2.weight", "conv3.weight", "downsample.0.weight")):
                fan_out = t.shape[0] * t.shape[2] * t.shape[3]
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * math.sqrt(2.0 / fan_out))
            elif name.startswith("fc."):
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * 0.1)
            else:  # norm parameters: weight around 1; bias, weight_readjust, bias_readjust around 0
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * 0.5 + (1.0 if name.endswith("weight") else 0.0))


# --------------------------------------------------------------------------- equality with the official model


@pytest.mark.parametrize("norm", ["bn", "iebn"])
@pytest.mark.parametrize("depth,block", [(20, "basic"), (164, "bottleneck")])
def test_ours_with_bn_shortcuts_is_the_official_model(depth, block, norm):
    gen = torch.Generator().manual_seed(depth)
    official = OfficialResNet(depth, 100, block, norm).double()
    randomize_(official, gen)
    ours = cifar_resnet(depth, 100, norm, block=block, shortcut_norm="bn").double()
    ours.load_state_dict(official.state_dict(), strict=True)
    shortcuts = [m[1] for m in ours.modules() if isinstance(m, nn.Sequential) and len(m) == 2
                 and isinstance(m[0], nn.Conv2d)]
    assert len(shortcuts) == (2 if block == "basic" else 3) and all(type(s) is BatchNorm for s in shortcuts)
    if norm == "iebn":
        assert sum(isinstance(m, IEBN) for m in ours.modules()) == sum(
            isinstance(m, OfficialBAN2d) for m in official.modules())

    x = torch.randn(2, 3, 32, 32, generator=gen, dtype=torch.float64)
    for mode in ("train", "eval"):
        official.train(mode == "train")
        ours.train(mode == "train")
        ref, out = official(x), ours(x)
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9, msg=f"{mode} logits")
        if mode == "train":  # the same running statistics and counts afterwards, and the same gradients
            ref_state, our_state = official.state_dict(), ours.state_dict()
            for name in ref_state:
                if "running" in name or "num_batches" in name:
                    torch.testing.assert_close(our_state[name], ref_state[name], rtol=1e-9, atol=1e-12, msg=name)
            (ref.square().sum()).backward()
            (out.square().sum()).backward()
            ours_params = dict(ours.named_parameters())
            for name, p in official.named_parameters():
                torch.testing.assert_close(ours_params[name].grad, p.grad, rtol=1e-7, atol=1e-9, msg=name)


def test_constant_attack_reaches_the_shortcut_bn():
    torch.manual_seed(0)
    model = cifar_resnet(20, 10, "iebn", shortcut_norm="bn").double()
    attacked = set_constant_noise(model, 2.0, 1.0)
    assert attacked == 1 + 9 * 2 + 2  # stem, two per block, and both shortcut BNs
    bn = model.layer2[0].downsample[1]
    assert type(bn) is BatchNorm and (bn.noise_alpha, bn.noise_beta) == (2.0, 1.0)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    seen = {}
    bn.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0].detach().clone(), y=out.detach().clone()))
    gamma, b = bn.weight.detach().view(1, -1, 1, 1), bn.bias.detach().view(1, -1, 1, 1)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)

    model.train()
    model(x)
    xs = seen["x"]
    mean = xs.mean((0, 2, 3), keepdim=True)
    var = xs.var((0, 2, 3), unbiased=False, keepdim=True)
    x_hat = (xs - mean) / torch.sqrt(var + 1e-5)
    torch.testing.assert_close(seen["y"], gamma * (2 * x_hat + 1) + b)

    model.eval()
    with torch.no_grad():
        model(x)
    xs = seen["x"]
    x_hat = (xs - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + 1e-5)
    torch.testing.assert_close(seen["y"], gamma * (2 * x_hat + 1) + b)


# --------------------------------------------------------------------------- run keys and configs


def old_key(train, norm, seed):
    """RunConfig.key by the rule from before shortcut_norm (and augment, attn_placement) existed: the
    sha256 of the non-performance fields, without shortcut_norm, augment and attn_placement."""
    ident = {k: v for k, v in to_jsonable(dataclasses.asdict(train)).items()
             if k not in PERFORMANCE_FIELDS and k not in ("shortcut_norm", "augment", "attn_placement", "lr_schedule",
                                                             "label_smoothing", "nesterov", *RANDOM_FIELDS)}
    payload = json.dumps({"train": ident, "norm": norm, "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def test_default_shortcut_keeps_every_run_key():
    quick = resolve_train_config(device="cpu")
    assert quick.shortcut_norm == "same" and "shortcut_norm" not in quick.identity()
    assert RunConfig(quick, "iebn", 0).key == old_key(quick, "iebn", 0)
    # keys computed with the code before this option (commit 372452c): results on disk stay finished
    assert RunConfig(quick, "iebn", 0).key == "1f30c07173ac5ef3"
    study = resolve_train_config(attack="constant", alpha=2, beta=1, dataset="fmnist", train_subset=4000, epochs=15,
                                 device="cpu")
    assert RunConfig(study, "iebn", 0).key == "41bc77077bd7695b"
    # the paper preset's former architecture is still reachable with --shortcut-norm same
    former_paper = resolve_train_config(preset="paper", shortcut_norm="same", device="cpu")
    assert RunConfig(former_paper, "iebn", 0).key == "e43be235253ae5a2"

    official = dataclasses.replace(quick, shortcut_norm="bn")
    assert official.identity() == {**quick.identity(), "shortcut_norm": "bn"}
    assert RunConfig(official, "iebn", 0).key != RunConfig(quick, "iebn", 0).key


def test_config_dicts_with_and_without_the_field_read_back():
    quick = resolve_train_config(device="cpu")
    old = to_jsonable(dataclasses.asdict(quick))
    del old["shortcut_norm"]  # a results.jsonl record or config.json written before the option
    assert train_config_from_dict(old) == quick
    official = resolve_train_config(shortcut_norm="bn", device="cpu")
    assert train_config_from_dict(to_jsonable(dataclasses.asdict(official))) == official
    assert train_config_from_dict(json.loads(json.dumps(official.identity()))).shortcut_norm == "bn"


def test_paper_preset_is_the_official_setup():
    paper = resolve_train_config(preset="paper", dataset="cifar100", device="cpu")
    got = {f: getattr(paper, f) for f in ("shortcut_norm", "depth", "block", "epochs", "milestones", "lr_gamma",
                                          "lr", "batch_size", "momentum", "weight_decay")}
    assert got == {"shortcut_norm": "bn", "depth": 164, "block": "bottleneck", "epochs": 164, "milestones": (81, 122),
                   "lr_gamma": 0.1, "lr": 0.1, "batch_size": 128, "momentum": 0.9, "weight_decay": 1e-4}
    # every option still overrides the preset
    assert resolve_train_config(preset="paper", shortcut_norm="same", lr=0.05, device="cpu").shortcut_norm == "same"
    assert resolve_train_config(preset="paper", lr=0.05, device="cpu").lr == 0.05
    # the quick preset means what it meant
    quick = resolve_train_config(device="cpu")
    assert (quick.depth, quick.epochs, quick.milestones, quick.shortcut_norm, quick.lr, quick.batch_size,
            quick.momentum, quick.weight_decay, quick.lr_gamma) == (20, 30, (15, 22), "same", 0.1, 128, 0.9, 1e-4, 0.1)
    with pytest.raises(ConfigError, match="unknown shortcut norm 'gn'"):
        resolve_train_config(shortcut_norm="gn", device="cpu")


def test_cli_command_names_the_shortcut_norm(tmp_path, capsys):
    quick = resolve_experiment(resolve_train_config(device="cpu"), norms="bn", repeats=1, runs_dir=tmp_path / "runs")
    assert "--shortcut-norm" not in cli_command(quick)
    paper = resolve_experiment(resolve_train_config(preset="paper", device="cpu"), norms="bn,iebn", repeats=2,
                               runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    args = shlex.split(cli_command(paper))
    assert args[args.index("--shortcut-norm") + 1] == "bn"
    # the re-run command resolves to the same setting (and the same run keys)
    code, out, err = run_cli(capsys, *args[1:], "--dry-run", "--no-progress")
    assert code == 0, err
    assert all(r.key in out for r in paper.runs())
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- the CLI and the grid


def test_paper_preset_dry_run_shows_the_official_setup_and_writes_nothing(tmp_path, capsys):
    code, out, err = run_cli(capsys, "clean", "--preset", "paper", "--norm", "bn,iebn", "--dataset", "cifar100",
                             "--runs-dir", tmp_path / "runs", "--device", "cpu", "--dry-run")
    assert code == 0, err
    for line in ('"shortcut_norm": "bn"', '"depth": 164', '"block": "bottleneck"', '"epochs": 164', '"lr": 0.1',
                 '"batch_size": 128', '"momentum": 0.9', '"weight_decay": 0.0001', '"lr_gamma": 0.1'):
        assert line in out, line
    assert out.count("pending ") == 10  # 2 norms x 5 seeds
    assert list(tmp_path.iterdir()) == []
    code, out, err = run_cli(capsys, "clean", "--runs-dir", tmp_path / "runs", "--device", "cpu", "--dry-run")
    assert code == 0 and '"shortcut_norm": "same"' in out  # shown for the default too


@pytest.mark.parametrize("command", ["clean", "constant", "mix"])
def test_unknown_shortcut_norm_is_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, command, "--shortcut-norm", "gn", "--runs-dir", tmp_path / "runs",
                             "--data-dir", tmp_path / "data", "--device", "cpu")
    assert code == 2
    assert err == "noiseattack: error: unknown shortcut norm 'gn': choose same or bn\n"
    assert list(tmp_path.iterdir()) == []


def test_grid_train_table_takes_the_shortcut_norm(tmp_path):
    from noiseattack.sweep import parse_grid

    doc = {"train": {"preset": "quick", "shortcut_norm": "bn", "device": "cpu"},
           "grid": {"norms": ["iebn"], "repeats": 1}, "attack": [{"kind": "clean"}]}
    grid = parse_grid(doc, runs_dir=tmp_path / "runs")
    assert [e.train.shortcut_norm for e in grid.experiments] == ["bn"]
    doc["train"]["shortcut_norm"] = "gn"
    with pytest.raises(ConfigError, match="unknown shortcut norm 'gn'"):
        parse_grid(doc, runs_dir=tmp_path / "runs")


# --------------------------------------------------------------------------- training builds what the key says


def test_training_builds_the_official_shortcuts():
    cfg = resolve_train_config(preset="paper", depth=20, device="cpu", compile_norms=False)
    model = build_model(RunConfig(cfg, "iebn", 0), 10)
    assert type(model.layer2[0].downsample[1]) is BatchNorm
