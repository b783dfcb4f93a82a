"""The random attack (noiseattack/attacks/random_noise.py): per-step, per-channel alpha and beta drawn
uniformly (TensorFlow's BatchNormalization adjustment), through the constant attack's reach and fold."""

from __future__ import annotations

import copy
import json
import shlex

import pytest
import torch
import torch.nn as nn

from noiseattack import attacks
from noiseattack.attacks.random_noise import RandomParams, noise_seed
from noiseattack.cli import app
from noiseattack.config import ConfigError, RunConfig, resolve_train_config
from noiseattack.data import Normalizer, Split
from noiseattack.norms import BatchNorm
from noiseattack.train import StopRequested, TrainData, train_run

SPEC = attacks.get("random")


def start(model: nn.Module, p: RandomParams = RandomParams(), seed: int = 7):
    cfg = resolve_train_config(attack="random", device="cpu")
    return SPEC.start(p, model=model, data=None, cfg=cfg, seed=seed)


def hand_bn(x: torch.Tensor, bn: nn.BatchNorm2d, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """BN in training mode with x_hat -> alpha * x_hat + beta per channel, by hand."""
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), unbiased=False, keepdim=True)
    x_hat = (x - mean) / torch.sqrt(var + bn.eps)
    c = (1, -1, 1, 1)
    return bn.weight.view(c) * (alpha.view(c) * x_hat + beta.view(c)) + bn.bias.view(c)


def test_the_draws_are_a_hand_computation_from_the_seeded_generator():
    """Two layers (3 and 5 channels) over two steps: each step one torch.rand(2, 8) from the generator
    seeded with noise_seed(seed); the first layer takes columns 0-2, the second 3-7; alpha = low +
    (high - low) * u[0], beta likewise from u[1]."""
    torch.manual_seed(0)
    model = nn.Sequential(BatchNorm(3), nn.Conv2d(3, 5, 1), BatchNorm(5))
    with torch.no_grad():
        for bn in (model[0], model[2]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    p = RandomParams(0.5, 1.5, -0.3, 0.2)
    run = start(model, p, seed=11)
    g = torch.Generator().manual_seed(noise_seed(11))
    x = torch.randn(6, 3, 4, 4)
    for _ in range(2):
        run.before_step()
        u = torch.rand(2, 8, generator=g)
        alpha, beta = 0.5 + (1.5 - 0.5) * u[0], -0.3 + (0.2 - (-0.3)) * u[1]
        y1 = hand_bn(x, model[0], alpha[:3], beta[:3])
        expected = hand_bn(model[1](y1), model[2], alpha[3:], beta[3:])
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert noise_seed(11) != 11 and noise_seed(11) == noise_seed(11)


def test_training_only_by_default_and_every_eval_batch_with_the_option():
    torch.manual_seed(0)
    model = nn.Sequential(BatchNorm(4))
    clean = copy.deepcopy(model)
    x = torch.randn(8, 4, 3, 3)
    run = start(model)
    run.before_step()
    assert not torch.allclose(model(x), clean(x))  # training: attacked
    model.eval(), clean.eval()
    run.before_eval()
    run.before_eval_batch()
    assert torch.equal(model(x), clean(x))  # eval: exactly the clean function
    model2 = copy.deepcopy(clean)
    run2 = start(model2, RandomParams(noise_in_eval=True))
    run2.before_eval()
    run2.before_eval_batch()
    first = model2(x)
    run2.before_eval_batch()
    assert not torch.allclose(first, clean(x)) and not torch.allclose(first, model2(x))  # a fresh draw per batch


def test_the_setting_label_and_name_are_new_and_the_bounds_are_checked():
    t = resolve_train_config(attack="random", dataset="mnist", device="cpu")
    assert (t.scale_low, t.scale_high, t.bias_low, t.bias_high, t.noise_in_eval) == (0.93, 1.07, -0.1, 0.1, False)
    label = t.setting_label()
    assert label == "s0.93to1.07_b-0.1to0.1" and SPEC.order_of_label(label) == (0.93, 1.07, -0.1, 0.1, False)
    others = [resolve_train_config(device="cpu", **o).setting_label() for o in
              ({}, {"attack": "constant"}, {"attack": "mix", "extra": "mnist", "k": 32})]
    assert label not in others and t.attack_spec().name_head(t.attack_params()) == "random-s0.93to1.07-b-0.1to0.1"
    ident = t.identity()
    assert ident["attack"] == "random" and ident["scale_low"] == 0.93 and "noise_in_eval" not in ident
    assert "scale_low" not in resolve_train_config(device="cpu").identity()  # the other attacks' keys are as before
    with pytest.raises(ConfigError, match="scale low must be <= scale high"):
        resolve_train_config(attack="random", scale_low=1.2, scale_high=1.1, device="cpu")
    with pytest.raises(ConfigError, match=r"\|bias high\| must be <= 1000"):
        resolve_train_config(attack="random", bias_high=5000.0, device="cpu")


def tiny_data(n: int = 64) -> TrainData:
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                  torch.randint(0, 10, (n,), generator=g))
    return TrainData(split, split, None, 10, True, Normalizer((0.5,) * 3, (0.25,) * 3, "cpu", False))


def test_a_resumed_run_draws_what_the_uninterrupted_one_draws(tmp_path):
    """The noise generator's state is in the checkpoint: stopped mid-epoch and resumed, the run's
    history is bit-identical to the uninterrupted run's."""
    cfg = resolve_train_config(attack="random", dataset="mnist", depth=8, epochs=2, batch_size=16, device="cpu",
                               channels_last=False, compile_norms=False, compile=False, eval_batch_size=64)
    run = RunConfig(cfg, "bn", 3)
    whole = train_run(run, tiny_data())
    steps = [0]

    def stop_after_five() -> bool:
        steps[0] += 1
        return steps[0] == 5

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(StopRequested):
        train_run(run, tiny_data(), checkpoint=ckpt, should_stop=stop_after_five)
    assert "generator" in torch.load(ckpt, weights_only=True)["attack"]
    resumed = train_run(run, tiny_data(), checkpoint=ckpt)
    assert resumed.status == whole.status == "finished"
    assert [dict(h) for h in resumed.history] == [dict(h) for h in whole.history]


REAL = ["--dataset", "mnist", "--train-subset", "256", "--test-subset", "256", "--epochs", "1", "--depth", "8",
        "--batch-size", "64", "--device", "cpu", "--no-compile", "--no-compile-norms", "--no-progress"]


def test_the_random_attack_runs_on_real_data_through_the_cli_a_grid_and_the_api(shared_data, tmp_path):
    from typer.testing import CliRunner

    import noiseattack as na
    from noiseattack import sweep as S

    runs = tmp_path / "runs"
    res = CliRunner().invoke(app, ["random", "--scale-low", "0.93", "--scale-high", "1.07", "--bias-low", "-0.1",
                                   "--bias-high", "0.1", "--norm", "bn,iebn", "--repeats", "1", *REAL,
                                   "--data-dir", str(shared_data), "--runs-dir", str(runs)])
    assert res.exit_code == 0, res.output
    (exp,) = runs.iterdir()
    assert exp.name == "random-s0.93to1.07-b-0.1to0.1-mnist-resnet8-n256-e1"
    records = [json.loads(line) for line in (exp / "results.jsonl").read_text().splitlines()]
    assert {r["status"] for r in records} == {"finished"} and {r["config"]["attack"] for r in records} == {"random"}
    assert {r["schema"] for r in records} == {1}  # the record layout's version, in every record
    assert "iebn_kernels" in next(r for r in records if r["norm"] == "iebn")["machine"]
    command = json.loads((exp / "config.json").read_text())["command"]
    assert "--scale-low 0.93" in command and "--bias-low -0.1" in command and "--no-noise-in-eval" in command
    rerun = CliRunner().invoke(app, shlex.split(command)[1:] + ["--no-progress"])  # the recorded command resumes
    assert rerun.exit_code == 0 and "all 2 runs are done" in rerun.output, rerun.output

    grid = tmp_path / "grid.toml"
    grid.write_text(f'[train]\ndataset = "mnist"\ntrain_subset = 256\ntest_subset = 256\nepochs = 1\ndepth = 8\n'
                    f'batch_size = 64\ndevice = "cpu"\ncompile = false\ncompile_norms = false\n'
                    f'runs_dir = "{runs}"\ndata_dir = "{shared_data}"\n[grid]\nnorms = ["bn"]\nseeds = [0]\n'
                    '[[attack]]\nkind = "random"\n[[attack]]\nkind = "random"\nbias_low = [-0.2]\nbias_high = [0.2]\n')
    g = S.load_grid(grid)
    assert [e.name for e in g.experiments] == [exp.name, "random-s0.93to1.07-b-0.2to0.2-mnist-resnet8-n256-e1"]
    result = S.run_sweep(g, progress=False)
    assert not result.failed and len(result.records) == 2 and result.skipped == 1  # bn seed 0: the CLI's run

    out = na.run("random", norms="bn", scale_low=0.8, scale_high=1.2, dataset="mnist", train_subset=256,
                 test_subset=256, epochs=1, depth=8, batch_size=64, device="cpu", compile=False, compile_norms=False,
                 repeats=1, runs_dir=runs, data_dir=shared_data, log=None)
    assert out.dir.name.startswith("random-s0.8to1.2-b-0.1to0.1") and out.records[0]["status"] == "finished"
    report = na.make_report(runs, out_dir=tmp_path / "report", plots=False)
    assert {r["attack"] for r in report.rows} == {"random"} and "s0.8to1.2_b-0.1to0.1" in {r["setting"] for r in report.rows}
