"""The CIFAR ResNet: structure, parameter count, every depth and norm forward and backward."""

import pytest
import torch
import torch.nn as nn

from noiseattack.config import ConfigError
from noiseattack.models import Bottleneck, cifar_resnet
from noiseattack.zoo import PAPER as NORMS, make_norm


def expected_params_resnet20_bn(num_classes):
    """ResNet-20 with projection shortcuts, counted by hand: convs + 2 params per BN channel + fc."""
    conv = lambda cin, cout, k: cin * cout * k * k
    p = conv(3, 16, 3) + 2 * 16
    for cin, cout in [(16, 16), (16, 32), (32, 64)]:
        p += conv(cin, cout, 3) + conv(cout, cout, 3) + 4 * cout  # first block
        if cin != cout:
            p += conv(cin, cout, 1) + 2 * cout  # projection shortcut
        p += 2 * (2 * conv(cout, cout, 3) + 4 * cout)  # two more blocks
    return p + 64 * num_classes + num_classes


def test_resnet20_parameter_count():
    model = cifar_resnet(20, 100, "bn")
    assert sum(p.numel() for p in model.parameters()) == expected_params_resnet20_bn(100)


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_position_uses_the_chosen_norm(norm):
    model = cifar_resnet(20, 10, norm)
    cls = type(make_norm(norm, 16))
    count = sum(isinstance(m, cls) for m in model.modules())
    assert count == 1 + 9 * 2 + 2  # stem, two per basic block, two projection shortcuts
    others = [type(m).__name__ for m in model.modules()
              if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and not isinstance(m, cls)
              and not (norm == "bnse" and isinstance(m, type(make_norm("bn", 16))))]
    assert others == []


def test_resnet164_is_bottleneck_with_expansion_4():
    model = cifar_resnet(164, 100, "bn")
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 3 * 18
    assert model.fc.in_features == 256


@pytest.mark.parametrize("depth, block", [(20, "basic"), (110, "basic"), (164, "bottleneck"), (1001, "bottleneck"),
                                          (1202, "basic")])
def test_the_automatic_block_is_the_resnet_papers(depth, block):
    """Basic blocks up to 110, bottlenecks above (ResNet-164, -1001: 9n+2), but ResNet-1202, which only
    basic blocks make (6n+2, not 9n+2)."""
    from noiseattack.config import resolve_block

    assert resolve_block(depth, "auto") == block


@pytest.mark.parametrize("depth", [20, 164])
@pytest.mark.parametrize("norm", NORMS)
def test_depths_build_and_train_with_every_norm(depth, norm):
    torch.manual_seed(0)
    model = cifar_resnet(depth, 100, norm)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 100)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_width_and_invalid_depth():
    assert cifar_resnet(20, 10, "bn", width=2).fc.in_features == 128
    with pytest.raises(ConfigError, match="depth 21"):
        cifar_resnet(21, 10, "bn")
    with pytest.raises(ConfigError, match="bottleneck"):
        cifar_resnet(32, 10, "bn", block="bottleneck")  # 30 is not a multiple of 9


def test_channels_last_gives_the_same_result():
    torch.manual_seed(0)
    model = cifar_resnet(8, 10, "iebn")
    x = torch.randn(8, 3, 32, 32)
    ref = model(x)
    cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-4)


def test_lr_schedule():
    from noiseattack.config import resolve_train_config
    from noiseattack.train import lr_at

    lrs = lambda cfg: [round(lr_at(cfg, e), 10) for e in range(cfg.epochs)]
    quick = resolve_train_config(epochs=8, device="cpu")
    assert quick.milestones == (4, 6) and lrs(quick) == [0.1] * 4 + [0.01] * 2 + [0.001] * 2
    paper = resolve_train_config(preset="paper", device="cpu")
    assert (paper.depth, paper.block, paper.epochs, paper.milestones) == (164, "bottleneck", 164, (81, 122))
    assert lrs(paper)[80:83] == [0.1, 0.01, 0.01] and lrs(paper)[121:123] == [0.01, 0.001]
    short = resolve_train_config(epochs=2, device="cpu")  # 50% and 75% of 2 epochs are the same epoch
    assert lrs(short) == [0.1, 0.01]
    assert resolve_train_config(preset="paper", epochs=10, device="cpu").milestones == (5, 7)


def test_narrow_channels_last_training_step():
    """Width 0.25 has 4-channel stages: a strided 1x1 convolution's backward on channels_last with fewer
    than 8 channels corrupted the heap in torch 2.14 (the process died); the shortcut avoids that kernel."""
    import torch.nn.functional as F

    from noiseattack.models import PointwiseConv

    torch.manual_seed(0)
    model = cifar_resnet(8, 10, "bn", width=0.25).to(memory_format=torch.channels_last)
    x = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    for _ in range(2):
        F.cross_entropy(model(x), torch.arange(64) % 10).backward()
    conv = PointwiseConv(4, 8, 1, stride=2, bias=False).double()
    ref = nn.Conv2d(4, 8, 1, stride=2, bias=False).double()
    ref.load_state_dict(conv.state_dict())
    z = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(conv(z), ref(z))
