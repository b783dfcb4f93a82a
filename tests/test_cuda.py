"""The GPU path. Tests marked `cuda` need a CUDA GPU and skip, with the reason, without one; CI has
none, so `scripts/gpu_check.sh` runs them (`pytest -m cuda`) whenever a GPU is lent and its logs
are committed under docs/bench/. The last test runs where there is no GPU: `--device cuda` is
refused there with one line."""

import dataclasses
import math

import pytest
import torch
from conftest import run_cli

from noiseattack import zoo
from noiseattack.config import ConfigError, RunConfig, check_memory, resolve_train_config
from noiseattack.iebn import IEBN
from noiseattack.train import StopRequested, prepare_data, train_run

HAS_CUDA = torch.cuda.is_available()
NO_GPU = "no CUDA GPU here: scripts/gpu_check.sh runs these tests where a GPU is lent"


def on_cuda(test):
    """Marked `cuda` (pytest -m cuda selects them) and skipped, with the reason, without a GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not HAS_CUDA, reason=NO_GPU)(test))


def _cfg(**kw):
    base = dict(dataset="mnist", depth=8, width=0.5, epochs=1, batch_size=32, device="cuda", compile=False)
    return resolve_train_config(**{**base, **kw})


def _layers() -> list[str]:
    return [row["name"] for row in zoo.describe_layers()]


@pytest.mark.parametrize("attack", [{"attack": "constant", "alpha": 2.0, "beta": 1.0},
                                    {"attack": "mix", "extra": "mnist-inverted", "k": 16}], ids=["constant", "mix"])
@pytest.mark.parametrize("norm", _layers())
@on_cuda
def test_every_layer_trains_on_cuda_under_both_attacks(fake_mnist, norm, attack):
    cfg = _cfg(**attack)
    result = train_run(RunConfig(cfg, norm, 0), prepare_data(cfg, fake_mnist(n_train=96, n_test=48)))
    assert result.status == "finished" and math.isfinite(result.final_acc)



@on_cuda
def test_amp_trains_on_cuda_close_to_fp32(fake_mnist):
    data_dir = fake_mnist(n_train=256, n_test=128)
    losses = {}
    for amp in (False, True):
        cfg = _cfg(amp=amp, epochs=2)
        losses[amp] = train_run(RunConfig(cfg, "iebn", 0), prepare_data(cfg, data_dir)).history[0]["train_loss"]
    assert math.isfinite(losses[True]) and losses[True] == pytest.approx(losses[False], rel=0.05)


@on_cuda
@pytest.mark.parametrize("impl", ["compiled", "eager"])
@pytest.mark.parametrize("training", [True, False])
def test_iebn_kernels_on_cuda_equal_the_cpu(impl, training):
    torch.manual_seed(0)
    cpu = IEBN(16, impl="eager")
    with torch.no_grad():
        cpu.weight_readjust.normal_()
        cpu.running_mean.normal_()
        cpu.running_var.uniform_(0.5, 2.0)
    gpu = IEBN(16, impl=impl).cuda()
    gpu.load_state_dict(cpu.state_dict())
    cpu.set_noise(2.0, 1.0)
    gpu.set_noise(2.0, 1.0)
    cpu.train(training)
    gpu.train(training)
    x = torch.randn(8, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    xc, xg = x.clone().requires_grad_(), x.cuda().requires_grad_()
    yc, yg = cpu(xc), gpu(xg)
    torch.testing.assert_close(yg.cpu(), yc, rtol=1e-4, atol=1e-5)
    (yc * yc).sum().backward()
    (yg * yg).sum().backward()
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, rtol=1e-4, atol=1e-4)
    for (name, pc), (_, pg) in zip(cpu.named_parameters(), gpu.named_parameters()):
        torch.testing.assert_close(pg.grad.cpu(), pc.grad, rtol=1e-4, atol=1e-4, msg=name)
    torch.testing.assert_close(gpu.running_var.cpu(), cpu.running_var, rtol=1e-5, atol=1e-6)


@on_cuda
@pytest.mark.parametrize("norm", ["bn", "iebn"])
def test_checkpoint_and_resume_on_cuda_continue_identically(fake_mnist, tmp_path, norm):
    """A run stopped mid-epoch and resumed from its checkpoint ends exactly as the run trained in one go,
    and the same seed trains the same run twice (cuDNN in its deterministic mode)."""
    cfg = _cfg(epochs=2, attack="mix", extra="mnist-inverted", k=8)
    data = prepare_data(cfg, fake_mnist(n_train=160, n_test=64))
    run = RunConfig(cfg, norm, 3)
    whole = [train_run(run, data).history for _ in range(2)]
    assert whole[0] == whole[1]
    ckpt, steps = tmp_path / "run.pt", [0]

    def stop() -> bool:
        steps[0] += 1
        return steps[0] == 7  # in the second epoch (5 steps per epoch)

    with pytest.raises(StopRequested):
        train_run(run, data, checkpoint=ckpt, on_step=lambda: None, should_stop=stop)
    assert ckpt.exists()
    resumed = train_run(run, data, checkpoint=ckpt)
    assert resumed.history == whole[0]


@on_cuda
def test_compiled_model_on_cuda_equals_eager(fake_mnist):
    data = None
    histories = {}
    for on in (False, True):
        cfg = _cfg(compile=on, epochs=2)
        data = data or prepare_data(cfg, fake_mnist(n_train=128, n_test=64))
        result = train_run(RunConfig(cfg, "bn", 0), data)
        assert result.compiled is on
        histories[on] = result.history
    for a, b in zip(histories[False], histories[True]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-3)


@on_cuda
def test_memory_check_reads_the_gpus_free_memory():
    free_gib = torch.cuda.mem_get_info()[0] / 2**30
    check_memory(_cfg(batch_size=128))  # a small batch fits
    big = dataclasses.replace(_cfg(), depth=1202, width=4, batch_size=65536)
    with pytest.raises(ConfigError, match=r"more than the [\d.]+ GiB free on cuda") as e:
        check_memory(big)
    assert f"{free_gib:.1f} GiB free" in str(e.value) or "GiB free on cuda" in str(e.value)


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is here: the refusal is for machines without one")
def test_device_cuda_is_refused_with_one_line_where_there_is_no_gpu(tmp_path, capsys):
    code, out, err = run_cli(capsys, "constant", "--dataset", "mnist", "--device", "cuda", "--runs-dir", tmp_path / "r",
                             "--dry-run")
    assert code == 2 and err.count("\n") == 1
    assert "CUDA is not available" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
