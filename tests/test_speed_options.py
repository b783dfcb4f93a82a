"""Every speed option computes the same thing as the plain path (within float tolerance)."""

import dataclasses
import copy
import math
import warnings

import pytest
import torch
from conftest import cxx_compiler

from noiseattack.config import RunConfig, resolve_train_config
from noiseattack.models import cifar_resnet
from noiseattack.iebn import IEBN, _Compiled, set_iebn_impl
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


@pytest.mark.parametrize("impl", ["compiled", "eager"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fused_iebn_model_equals_reference_model(impl, mode):
    """A whole ResNet-20 in float64 (so that 20 layers of float32 rounding do not blur the check)."""
    torch.manual_seed(0)
    fused = cifar_resnet(20, 10, "iebn").double()
    ref = cifar_resnet(20, 10, "iebn").double()
    ref.load_state_dict(fused.state_dict())
    assert set_iebn_impl(fused, impl) == set_iebn_impl(ref, "reference") == 21
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
    # the CLI refuses --amp on a CPU without native bf16 (too slow there); the training code still runs it
    cfg = dataclasses.replace(resolve_train_config(dataset="mnist", depth=8, epochs=1, batch_size=32, device="cpu"),
                              amp=True)
    result = train_run(RunConfig(cfg, "iebn", 0), prepare_data(cfg, fake_mnist(n_train=64, n_test=32)))
    assert result.status == "finished" and math.isfinite(result.final_acc)


@pytest.mark.parametrize("impl", ["compiled", "eager"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fused_iebn_under_bf16_autocast_matches_the_reference(impl, layout, mode):
    """bf16 in, bf16 out (parameter grads in fp32); the result stays within bf16 rounding of the reference
    layer run on the same bf16 input."""
    torch.manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    fused, ref = IEBN(16, impl=impl), IEBN(16, impl="reference")
    with torch.no_grad():
        fused.weight_readjust.normal_()
        fused.weight.uniform_(0.5, 1.5)
    ref.load_state_dict(fused.state_dict())
    x = (torch.randn(8, 16, 8, 8) * 2 + 1).bfloat16().contiguous(memory_format=fmt)
    for m in (fused, ref):
        m.set_noise(2.0, 1.0)
        m(x)
        m.train(mode == "train")
    ref_state = copy.deepcopy(ref.state_dict())  # before the step below moves the running statistics
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = fused(x1), ref(x2)
    assert y1.dtype == torch.bfloat16
    torch.testing.assert_close(y1.float(), y2.float(), rtol=2e-2, atol=3e-2)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g.to(y2.dtype))
    assert x1.grad.dtype == torch.bfloat16
    scale = x2.grad.float().abs().max()
    assert (x1.grad.float() - x2.grad.float()).abs().max() < 0.03 * scale
    for (name, p1), (_, p2) in zip(fused.named_parameters(), ref.named_parameters()):
        assert p1.grad.dtype == torch.float32
        assert (p1.grad - p2.grad).abs().max() <= 0.03 * p2.grad.abs().max() + 1e-3, name
    # Against the float64 truth on the same (bf16-valued) input, the fused layer is at least about as
    # accurate as the official sequence of ops run in bf16.
    truth = copy.deepcopy(ref).double()
    truth.load_state_dict(ref_state)
    x3 = x.double().requires_grad_()
    y3 = truth(x3)
    y3.backward(g.double())
    for ours, theirs, exact in ((y1, y2, y3), (x1.grad, x2.grad, x3.grad)):
        err_ours, err_ref = ((t.double() - exact).abs().max() for t in (ours, theirs))
        assert err_ours <= 2 * err_ref + 1e-3 * exact.abs().max(), (err_ours, err_ref)


@pytest.mark.skipif(cxx_compiler() is None, reason="no C++ compiler on this machine: the compiled IEBN kernels "
                                                    "fall back to the eager ones (tested below)")
def test_compiled_kernels_really_compile_here():
    """Where a compiler exists, the 'compiled' layers must not have quietly fallen back to eager."""
    layer = IEBN(8, impl="compiled")
    x = torch.randn(4, 8, 4, 4, requires_grad=True)
    layer(x).sum().backward()
    assert not _Compiled.failed and _Compiled.kernels is not None


def test_a_failing_compile_falls_back_to_eager_with_one_warning(monkeypatch):
    def no_compiler(*args):
        raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found\nmore detail")

    monkeypatch.setattr(_Compiled, "kernels", (no_compiler, no_compiler))
    monkeypatch.setattr(_Compiled, "failed", False)
    torch.manual_seed(0)
    compiled, eager = IEBN(8, impl="compiled"), IEBN(8, impl="eager")
    x = torch.randn(4, 8, 4, 4)
    with pytest.warns(RuntimeWarning, match="compiled kernels unavailable .*no working C\\+\\+ compiler"):
        y = compiled(x)
    torch.testing.assert_close(y, eager(x), rtol=0, atol=0)
    assert _Compiled.failed and _Compiled.get() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        compiled(x)


def test_compile_norms_is_a_performance_option(fake_mnist):
    """Same key (a run may resume with either), and both train to the same losses."""
    data_dir = fake_mnist(n_train=96, n_test=48)
    histories, keys = [], set()
    for on in (True, False):
        cfg = resolve_train_config(dataset="mnist", depth=8, epochs=2, batch_size=32, device="cpu", compile_norms=on,
                                   attack="constant", alpha=2.0, beta=1.0)
        run = RunConfig(cfg, "iebn", 0)
        keys.add(run.key)
        histories.append(train_run(run, prepare_data(cfg, data_dir)).history)
    assert len(keys) == 1
    for a, b in zip(*histories):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["test_loss"] == pytest.approx(b["test_loss"], rel=1e-3)
