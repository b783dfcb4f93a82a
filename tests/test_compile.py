"""--compile: the whole model torch.compile'd for the training steps. The same function as the eager
model (within the float tolerance stated below), a performance option (no key of its own), paid once
per process, and an eager fallback with one warning where compiling fails."""

import math
import warnings

import pytest
import torch
from conftest import cxx_compiler

from noiseattack import train as T
from noiseattack.config import ConfigError, RunConfig, compile_pays, resolve_train_config
from noiseattack.fileio import NoiseattackWarning

needs_compiler = pytest.mark.skipif(cxx_compiler() is None, reason="no C++ compiler: inductor cannot compile on "
                                                                    "this CPU (the fallback is tested below)")
# Compiled kernels reorder float32 sums: per step the losses agree to about 1e-6 relative; over the
# two epochs of a tiny run that compounds to well under this.
RTOL = 2e-3


def _cfg(**kw):
    return resolve_train_config(**{"dataset": "mnist", "depth": 8, "epochs": 2, "batch_size": 32, "device": "cpu",
                                   "width": 0.5, **kw})


@needs_compiler
@pytest.mark.slow
@pytest.mark.parametrize("norm, attack", [("bn", {}), ("iebn", {"attack": "constant", "alpha": 2.0, "beta": 1.0}),
                                          ("bn+eca", {"attack": "mix", "extra": "mnist-inverted", "k": 8})])
def test_compiled_training_equals_eager(fake_mnist, monkeypatch, norm, attack):
    monkeypatch.setattr(T._CompileState, "failed", False)
    data_dir = fake_mnist(n_train=96, n_test=48)
    results, keys = {}, set()
    for on in (False, True):
        cfg = _cfg(compile=on, **attack)
        run = RunConfig(cfg, norm, 0)
        keys.add(run.key)
        results[on] = T.train_run(run, T.prepare_data(cfg, data_dir))
    assert len(keys) == 1  # a performance option: a run resumes with either
    assert results[True].compiled and not results[False].compiled
    for a, b in zip(results[False].history, results[True].history):
        for k in ("train_loss", "test_loss"):
            assert b[k] == pytest.approx(a[k], rel=RTOL), k


@needs_compiler
def test_compile_is_paid_once_per_structure(fake_mnist, monkeypatch):
    """A second model of the same structure (the next run of a sweep worker) reuses the compiled code:
    dynamo captures no new graph for it (counted, not timed: timings swing with the machine's load)."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(T._CompileState, "failed", False)
    torch._dynamo.reset()  # nothing compiled in this process yet
    counters.clear()
    model = lambda seed: T.build_model(RunConfig(_cfg(compile=True), "bn", seed), 10)  # noqa: E731
    T.compile_model(model(0), _cfg(compile=True), 32)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1  # the first model was compiled
    T.compile_model(model(1), _cfg(compile=True), 32)
    assert counters["stats"]["unique_graphs"] == graphs


def test_a_model_that_cannot_compile_trains_eagerly_with_one_warning(fake_mnist, monkeypatch):
    """No C++ compiler (made so here by naming one that does not exist): one warning, the eager result."""
    import torch._inductor.config as inductor

    torch._dynamo.reset()
    monkeypatch.setattr(T._CompileState, "failed", False)
    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/c++",))
    monkeypatch.setattr(inductor, "fx_graph_cache", False)
    data_dir = fake_mnist(n_train=64, n_test=32)
    cfg = _cfg(compile=True, epochs=1)
    with pytest.warns(NoiseattackWarning, match="--compile: the model cannot be compiled here") as seen:
        got = T.train_run(RunConfig(cfg, "bn", 0), T.prepare_data(cfg, data_dir))
    assert len([w for w in seen if issubclass(w.category, NoiseattackWarning)]) == 1
    assert not got.compiled and T._CompileState.failed
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoiseattackWarning)  # once per process
        T.compile_model(T.build_model(RunConfig(cfg, "bn", 1), 10), cfg, 32)
    eager_cfg = _cfg(compile=False, epochs=1)
    want = T.train_run(RunConfig(eager_cfg, "bn", 0), T.prepare_data(eager_cfg, data_dir))
    assert got.history == want.history
    torch._dynamo.reset()


def test_the_default_follows_the_measurement(monkeypatch):
    monkeypatch.delenv("NOISEATTACK_COMPILE")  # the suite turns the default off (conftest)
    cap = torch.backends.cpu.get_cpu_capability()
    assert compile_pays("cpu") is cap.startswith("AVX512")
    assert resolve_train_config(device="cpu").compile is compile_pays("cpu")
    assert resolve_train_config(device="cpu", compile=False).compile is False
    assert not compile_pays("cuda")  # measured on an H200: 0.97x (docs/bench/gpu-h200-2026-12-04)
    monkeypatch.setenv("NOISEATTACK_COMPILE", "1")
    assert compile_pays("cuda") and resolve_train_config(device="cpu").compile is True
    monkeypatch.setenv("NOISEATTACK_COMPILE", "0")
    assert resolve_train_config(device="cpu").compile is False
    monkeypatch.setenv("NOISEATTACK_COMPILE", "yes")  # not one of the six: refused, not read as off
    with pytest.raises(ConfigError, match=r"\$NOISEATTACK_COMPILE must be 0 or 1 .*got 'yes'"):
        resolve_train_config(device="cpu")


@needs_compiler
def test_a_layer_dynamo_cannot_trace_runs_between_graphs(monkeypatch):
    """A researcher's layer with a host sync and Python control flow on a tensor value: the model
    still compiles (dynamo breaks the graph there) and computes what the eager model computes."""
    monkeypatch.setattr(T._CompileState, "failed", False)
    from noiseattack.models import cifar_resnet
    from noiseattack.zoo import register_norm

    class Fussy(torch.nn.BatchNorm2d):
        def forward(self, x):
            y = super().forward(x)
            return y * 2 if float(y.detach().abs().max()) > 1e9 else y  # never true: data-dependent branch

    register_norm("test-fussy", Fussy, "test only", replace=True)
    torch.manual_seed(0)
    model = cifar_resnet(8, 10, "test-fussy", width=0.5)
    x = torch.randn(16, 3, 32, 32)
    cfg = _cfg(compile=True)
    step, spent = T.compile_model(model, cfg, 16)
    assert step is not model and spent > 0
    eager_out = model(x)
    torch.testing.assert_close(step(x), eager_out, rtol=1e-4, atol=1e-5)
    assert math.isfinite(float(eager_out.detach().sum()))
