"""Where a NORM+ATTN layer's attention sits (`attn_placement`): after every norm (the default), once
per residual block on the residual branch before the addition (the SENet and CBAM papers), or once
per stage after its last block (the DAS paper); the block's and the stage's function written out by
hand, the attack's reach, run keys, names, the CLI and grids."""

from __future__ import annotations

import dataclasses
import shlex

import pytest
import torch
import torch.nn as nn

from conftest import run_cli
from noiseattack.attacks import set_constant_noise
from noiseattack.config import RunConfig, default_name, resolve_experiment, resolve_train_config, train_config_from_dict
from noiseattack.errors import ConfigError
from noiseattack.experiment import cli_command
from noiseattack.models import cifar_resnet
from noiseattack.norms import BatchNorm, BlockAttention, ConstantNoise, NormAttention
from noiseattack.sweep import grid as G


def _modules(model: nn.Module, cls: type) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, cls)]


# --------------------------------------------------------------------------- the network


@pytest.mark.parametrize("depth,block,n_blocks", [(20, "basic", 9), (29, "bottleneck", 9), (8, "basic", 3)])
def test_block_placement_puts_one_attention_per_block_and_plain_norms_everywhere(depth, block, n_blocks):
    model = cifar_resnet(depth, 10, "bn+se", width=0.5, block=block, attn_placement="block")
    attns = _modules(model, BlockAttention)
    # one per residual block (depth 6n+2 basic / 9n+2 bottleneck: 3n blocks), none in the stem or shortcuts
    assert len(attns) == n_blocks
    assert all(name.startswith("layer") and name.endswith(".attn") for name, _ in attns)
    assert not _modules(model, NormAttention)
    norms = _modules(model, BatchNorm)
    n_shortcuts = sum(1 for n, _ in model.named_modules() if n.endswith("downsample"))
    per_block = 2 if block == "basic" else 3
    assert len(norms) == 1 + n_blocks * per_block + n_shortcuts
    # each attention module is built for its block's output channels
    for name, m in attns:
        blk = model.get_submodule(name.rsplit(".", 1)[0])
        last_norm = blk.bn2 if block == "basic" else blk.bn3
        assert m.attn.fc1.in_channels == last_norm.num_features  # SE's squeeze: the block's output channels
    per_norm = cifar_resnet(depth, 10, "bn+se", width=0.5, block=block)
    assert len(_modules(per_norm, NormAttention)) == len(norms) and not _modules(per_norm, BlockAttention)


def test_a_basic_block_computes_the_attention_on_the_residual_branch_before_the_addition():
    torch.manual_seed(0)
    model = cifar_resnet(8, 10, "bn+cbam", width=1, attn_placement="block").eval()
    for blk in (model.layer1[0], model.layer2[0]):  # identity shortcut, then a projection shortcut
        x = torch.randn(2, blk.conv1.in_channels, 16, 16)
        with torch.no_grad():
            for m in blk.modules():  # a non-trivial gate and statistics
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
            branch = torch.relu(blk.bn1(blk.conv1(x)))
            branch = blk.bn2(blk.conv2(branch))
            shortcut = x if blk.downsample is None else blk.downsample(x)
            expected = torch.relu(blk.attn.attn(branch) + shortcut)
            assert not torch.allclose(blk.attn.attn(branch), branch)  # the gate does something
            torch.testing.assert_close(blk(x), expected)


def test_a_bottleneck_block_computes_the_attention_after_its_last_norm_before_the_addition():
    torch.manual_seed(1)
    model = cifar_resnet(11, 10, "bn+se", width=1, block="bottleneck", attn_placement="block").eval()
    blk = model.layer2[0]  # a projection shortcut
    x = torch.randn(2, blk.conv1.in_channels, 16, 16)
    with torch.no_grad():
        nn.init.normal_(blk.attn.attn.fc2.weight, 0.0, 1.0)  # a gate far from uniform
        branch = torch.relu(blk.bn1(blk.conv1(x)))
        branch = torch.relu(blk.bn2(blk.conv2(branch)))
        branch = blk.bn3(blk.conv3(branch))
        pooled = branch.mean((2, 3), keepdim=True)  # SE written out: sigmoid(fc2(relu(fc1(avgpool))))
        gate = torch.sigmoid(blk.attn.attn.fc2(torch.relu(blk.attn.attn.fc1(pooled))))
        expected = torch.relu(branch * gate + blk.downsample(x))
        torch.testing.assert_close(blk(x), expected)


@pytest.mark.parametrize("norm", ["bn", "bnse", "iebn", "gn"])
def test_a_layer_without_attention_builds_the_same_network_either_way(norm):
    torch.manual_seed(3)
    a = cifar_resnet(8, 10, norm, width=0.5)
    torch.manual_seed(3)
    b = cifar_resnet(8, 10, norm, width=0.5, attn_placement="block")
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_the_constant_attack_reaches_the_norms_and_not_the_block_attention():
    model = cifar_resnet(8, 10, "bn+cbam", width=0.5, attn_placement="block")
    # the stem's norm, 2 per basic block, 2 projection shortcuts: the attention modules are not counted
    assert set_constant_noise(model, 2.0, 1.0) == 1 + 2 * 3 + 2
    for name, m in _modules(model, BatchNorm):
        if ".attn." not in name:
            assert (m.noise_alpha, m.noise_beta) == (2.0, 1.0), name
    inner = [m for _, blk in _modules(model, BlockAttention) for m in blk.modules() if isinstance(m, nn.BatchNorm2d)]
    assert inner  # CBAM's spatial gate holds a BatchNorm: it is part of the attention and stays clean
    assert not any(isinstance(m, ConstantNoise) for m in inner)
    model(torch.randn(4, 3, 32, 32)).sum().backward()


def test_an_unknown_placement_is_refused():
    with pytest.raises(ConfigError, match="unknown attention placement 'blocks': choose norm, block, stage"):
        resolve_train_config(attn_placement="blocks", device="cpu")
    with pytest.raises(ValueError, match="unknown attention placement"):
        cifar_resnet(8, 10, "bn+se", attn_placement="stem")


# --------------------------------------------------------------------------- once per stage (DAS's placement)


@pytest.mark.parametrize("depth,block", [(20, "basic"), (29, "bottleneck")])
def test_stage_placement_puts_one_attention_at_the_end_of_each_stage(depth, block):
    model = cifar_resnet(depth, 10, "bn+das", width=0.5, block=block, attn_placement="stage")
    n = 3  # blocks per stage: depth 20 basic (6n+2), 29 bottleneck (9n+2)
    attns = _modules(model, BlockAttention)
    assert [name for name, _ in attns] == [f"layer{i}.{n}" for i in (1, 2, 3)]
    assert not _modules(model, NormAttention)
    expansion = 4 if block == "bottleneck" else 1
    assert [m.attn.depthwise.in_channels for _, m in attns] == [8 * expansion, 16 * expansion, 32 * expansion]
    assert all(blk.attn is None for stage in (model.layer1, model.layer2, model.layer3) for blk in stage[:n])


def test_a_stage_computes_its_blocks_then_the_attention_after_the_last_addition():
    torch.manual_seed(0)
    model = cifar_resnet(8, 10, "bn+das", width=1, attn_placement="stage").eval()
    stage = model.layer2
    x = torch.randn(2, 16, 16, 16)
    with torch.no_grad():
        nn.init.normal_(stage[1].attn.deform.weight, 0.0, 1.0)  # a gate far from uniform
        after_block = stage[0](x)  # the block's addition and ReLU
        gate = stage[1].attn.gate(after_block)
        assert gate.std() > 0.05
        torch.testing.assert_close(stage(x), after_block * gate)


def test_the_constant_attack_passes_the_stage_attention_by():
    model = cifar_resnet(8, 10, "bn+das", width=0.5, attn_placement="stage")
    assert set_constant_noise(model, 2.0, 1.0) == 1 + 2 * 3 + 2  # the norms only
    assert not any(isinstance(m, ConstantNoise) for _, blk in _modules(model, BlockAttention) for m in blk.modules())
    model(torch.randn(4, 3, 32, 32)).sum().backward()


def test_stage_placement_keys_names_rows_and_cli(tmp_path, capsys):
    from noiseattack.config import layer_of_row, row_label

    per_norm = resolve_train_config(dataset="mnist", depth=8, epochs=2, device="cpu")
    stage = dataclasses.replace(per_norm, attn_placement="stage")
    assert stage.identity() == {**per_norm.identity(), "attn_placement": "stage"}
    assert RunConfig(stage, "bn+das", 0).key not in {RunConfig(per_norm, "bn+das", 0).key,
                                                     RunConfig(dataclasses.replace(per_norm, attn_placement="block"),
                                                               "bn+das", 0).key}
    assert default_name(stage) == "clean-mnist-resnet8-stageattn-e2"
    assert row_label("bn+das", "stage") == "bn+das (per stage)" and row_label("bn", "stage") == "bn"
    assert layer_of_row("bn+das (per stage)") == ("bn+das", "stage")
    assert layer_of_row("bn+cbam (per block)") == ("bn+cbam", "block") and layer_of_row("bn") == ("bn", "norm")
    code, out, err = run_cli(capsys, "clean", "--dataset", "mnist", "--depth", "8", "--epochs", "2", "--norm",
                             "bn,bn+das", "--repeats", "1", "--runs-dir", tmp_path / "runs", "--device", "cpu",
                             "--attn-placement", "stage", "--dry-run")
    assert code == 0 and "clean-mnist-resnet8-stageattn-e2 ->" in out, err


def test_the_overview_counts_the_per_stage_network_s_parameters():
    from noiseattack.overview import model_params
    from noiseattack.layers import DAS

    das = lambda c: sum(p.numel() for p in DAS(c).parameters())
    expected = model_params("fmnist", "resnet20-e4", "bn") + das(16) + das(32) + das(64)
    assert model_params("fmnist", "resnet20-e4", "bn+das (per stage)") == expected


# --------------------------------------------------------------------------- keys, names, CLI, grids


def test_keys_names_and_records():
    per_norm = resolve_train_config(dataset="fmnist", width=0.125, train_subset=2000, epochs=45, augment=False,
                                    device="cpu")
    block = dataclasses.replace(per_norm, attn_placement="block")
    assert "attn_placement" not in per_norm.identity()  # the default: every existing key stays
    assert block.identity() == {**per_norm.identity(), "attn_placement": "block"}
    assert RunConfig(block, "bn+cbam", 0).key != RunConfig(per_norm, "bn+cbam", 0).key
    assert default_name(per_norm) == "clean-fmnist-resnet20w0.125-n2000-e45-noaug"
    assert default_name(block) == "clean-fmnist-resnet20w0.125-blockattn-n2000-e45-noaug"
    assert train_config_from_dict(RunConfig(block, "bn", 0).to_dict()) == block
    old = {k: v for k, v in RunConfig(per_norm, "bn", 0).to_dict().items() if k != "attn_placement"}
    assert train_config_from_dict(old) == per_norm  # a record from before the option reads as "norm"


def test_dry_run_and_the_re_run_command(tmp_path, capsys):
    args = ["clean", "--dataset", "mnist", "--depth", "8", "--epochs", "2", "--norm", "bn,bn+cbam", "--repeats", "1",
            "--runs-dir", tmp_path / "runs", "--device", "cpu", "--dry-run"]
    code, out, err = run_cli(capsys, *args, "--attn-placement", "block")
    assert code == 0, err
    assert "clean-mnist-resnet8-blockattn-e2 ->" in out and '"attn_placement": "block"' in out
    assert not (tmp_path / "runs").exists()
    code, out, err = run_cli(capsys, *args, "--attn-placement", "stem")
    assert code == 2 and err.strip().splitlines() == [
        "noiseattack: error: unknown attention placement 'stem': choose norm, block, stage"]
    train = resolve_train_config(dataset="mnist", depth=8, epochs=2, attn_placement="block", device="cpu")
    exp = resolve_experiment(train, norms="bn+cbam", repeats=1, runs_dir=tmp_path / "runs")
    cmd = shlex.split(cli_command(exp))
    assert cmd[cmd.index("--attn-placement") + 1] == "block"
    code, out, err = run_cli(capsys, *cmd[1:], "--dry-run")
    assert code == 0 and exp.runs()[0].key in out, err
    per_norm = resolve_experiment(dataclasses.replace(train, attn_placement="norm"), norms="bn", repeats=1,
                                  runs_dir=tmp_path / "runs")
    assert "--attn-placement" not in cli_command(per_norm)


def test_placement_as_a_grid_axis_is_named_once():
    doc = {"train": {"dataset": "mnist", "depth": 8, "epochs": 1, "device": "cpu"},
           "grid": {"norms": "bn+cbam", "seeds": [0], "attn_placement": ["norm", "block"]},
           "attack": [{"kind": "clean"}]}
    g = G.parse_grid(doc)
    assert [e.name for e in g.experiments] == ["clean-mnist-resnet8-e1", "clean-mnist-resnet8-blockattn-e1"]
    assert len({j.key for j in g.jobs()}) == 2
    doc["grid"]["attn_placement"] = ["norm", "stem"]
    with pytest.raises(ConfigError, match="attention placement 'stem'"):
        G.parse_grid(doc)


def test_the_overview_counts_the_per_block_network_s_parameters():
    """The report's row `bn+cbam (per block)`: BN's network plus one CBAM per block (3 per stage of
    ResNet-20 at 2/4/8 channels), counted here from timm's module."""
    from timm.layers import get_attn

    from noiseattack.overview import model_params

    cbam = lambda c: sum(p.numel() for p in get_attn("cbam")(c).parameters())
    expected = model_params("fmnist", "resnet20w0.125-n2000-e45", "bn") + 3 * (cbam(2) + cbam(4) + cbam(8))
    assert model_params("fmnist", "resnet20w0.125-n2000-e45", "bn+cbam (per block)") == expected
    assert model_params("fmnist", "resnet20w0.125-n2000-e45", "bn+cbam") > expected  # 21 modules, not 9
