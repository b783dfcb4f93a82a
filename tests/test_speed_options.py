"""Every speed option computes the same thing as the plain path (within float tolerance)."""

import math

import pytest
import torch

from noiseattack.config import RunConfig, resolve_train_config
from noiseattack.models import cifar_resnet
from noiseattack.norms import IEBN
from noiseattack.train import prepare_data, train_run


def test_channels_last_on_and_off_train_the_same(fake_mnist):
    data_dir = fake_mnist(n_train=96, n_test=48)
    histories = []
    for cl in (True, False):
        cfg = resolve_train_config(dataset="mnist", depth=8, epochs=2, batch_size=32, device="cpu", channels_last=cl,
                                   attack="constant", alpha=2.0, beta=1.0)
        histories.append(train_run(RunConfig(cfg, "iebn", 0), prepare_data(cfg, data_dir)).history)
    for a, b in zip(*histories):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-3)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fused_iebn_model_equals_reference_model(mode):
    """A whole ResNet-20 in float64 (so that 20 layers of float32 rounding do not blur the check)."""
    torch.manual_seed(0)
    fused = cifar_resnet(20, 10, "iebn").double()
    ref = cifar_resnet(20, 10, "iebn").double()
    ref.load_state_dict(fused.state_dict())
    for m in ref.modules():
        if isinstance(m, IEBN):
            m.fused = False
    x = torch.randn(16, 3, 32, 32, dtype=torch.float64)
    if mode == "eval":
        with torch.no_grad():  # give the running statistics non-trivial values
            fused(x * 2)
            ref(x * 2)
    fused.train(mode == "train")
    ref.train(mode == "train")
    y1, y2 = fused(x), ref(x)
    torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-12)
    y1.square().sum().backward()
    y2.square().sum().backward()
    for (name, p1), (_, p2) in zip(fused.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_amp_runs_on_cpu(fake_mnist):
    cfg = resolve_train_config(dataset="mnist", depth=8, epochs=1, batch_size=32, device="cpu", amp=True)
    result = train_run(RunConfig(cfg, "iebn", 0), prepare_data(cfg, fake_mnist(n_train=64, n_test=32)))
    assert result.status == "finished" and math.isfinite(result.final_acc)
