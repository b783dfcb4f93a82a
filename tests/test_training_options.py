"""The training options lr_schedule, label_smoothing and nesterov: their math, their keys, their CLI."""

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli

from noiseattack.attacks import mixed_batch_loss
from noiseattack.config import ConfigError, RunConfig, default_name, resolve_train_config
from noiseattack.experiment import cli_command
from noiseattack.config import resolve_experiment
from noiseattack.train import lr_at, prepare_data, train_run


def cfg(**kw):
    return resolve_train_config(dataset="mnist", device="cpu", **kw)


def test_step_schedule_is_unchanged_and_ignores_the_step():
    c = cfg(epochs=10, milestones=(5, 8), lr=0.1, lr_gamma=0.1)
    assert [lr_at(c, e) for e in (0, 4, 5, 7, 8, 9)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert lr_at(c, 4, step=99, steps_per_epoch=100) == lr_at(c, 4)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_cosine_and_linear_fall_every_step_to_zero(schedule):
    c = cfg(epochs=2, lr=0.2, lr_schedule=schedule)
    steps = 5  # 10 steps in all: t = 0 .. 9
    got = [lr_at(c, e, s, steps) for e in range(2) for s in range(steps)]
    if schedule == "linear":
        want = [0.2 * (1 - t / 10) for t in range(10)]
    else:
        want = [0.2 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(10)]
    assert got == pytest.approx(want)
    assert got[0] == pytest.approx(0.2) and all(a > b for a, b in zip(got, got[1:])) and got[-1] > 0
    assert c.milestones == ()


def test_a_schedule_without_milestones_refuses_them():
    with pytest.raises(ConfigError, match="milestones belong to the step schedule"):
        cfg(epochs=4, lr_schedule="cosine", milestones=(2,))
    with pytest.raises(ConfigError, match="unknown lr schedule 'exp': choose step, cosine, linear"):
        cfg(lr_schedule="exp")


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan")])
def test_label_smoothing_out_of_range_is_refused(value):
    with pytest.raises(ConfigError, match="label smoothing"):
        cfg(label_smoothing=value)


def test_label_smoothing_is_the_smoothed_cross_entropy_written_out():
    torch.manual_seed(0)
    logits, y, eps = torch.randn(6, 10), torch.randint(0, 10, (6,)), 0.1
    model = torch.nn.Identity()
    loss, _ = mixed_batch_loss(model, logits, y, None, eps)
    logp = logits.log_softmax(1)
    target = torch.full((6, 10), eps / 10).scatter_(1, y[:, None], 1 - eps + eps / 10)
    torch.testing.assert_close(loss, -(target * logp).sum(1).mean())
    plain, _ = mixed_batch_loss(model, logits, y, None)
    torch.testing.assert_close(plain, F.cross_entropy(logits, y))


def test_defaults_keep_every_run_key_and_new_values_get_their_own():
    base = cfg()
    for field in ("lr_schedule", "label_smoothing", "nesterov"):
        assert field not in base.identity()
    changed = [dataclasses.replace(base, lr_schedule="linear", milestones=()),
               dataclasses.replace(base, label_smoothing=0.1), dataclasses.replace(base, nesterov=True)]
    keys = {RunConfig(c, "bn", 0).key for c in [base, *changed]}
    assert len(keys) == 4
    assert changed[2].identity() == {**base.identity(), "nesterov": True}


def test_default_name_and_cli_command_carry_the_options(tmp_path):
    c = cfg(epochs=3, lr_schedule="linear", label_smoothing=0.1, nesterov=True, augment=False)
    assert default_name(c) == "clean-mnist-resnet20-e3-noaug-linear-ls0.1-nesterov"
    exp = resolve_experiment(c, norms="bn", repeats=1, runs_dir=tmp_path)
    cmd = cli_command(exp)
    assert "--lr-schedule linear" in cmd and "--label-smoothing 0.1" in cmd and "--nesterov" in cmd
    assert "--milestones" not in cmd


def test_nesterov_steps_as_torch_nesterov_sgd(fake_mnist):
    """Two training steps with nesterov equal a hand-built SGD(nesterov=True) on the same batches."""
    data_dir = fake_mnist(n_train=64, n_test=32)
    runs = {}
    for nesterov in (False, True):
        c = cfg(depth=8, epochs=1, batch_size=32, nesterov=nesterov, augment=False, compile=False)
        runs[nesterov] = train_run(RunConfig(c, "bn", 0), prepare_data(c, data_dir)).history[0]["train_loss"]
    assert runs[True] != runs[False]  # the first step is the same, the second differs (the look-ahead)


def test_options_through_the_cli(tmp_path, capsys, fake_mnist):
    data_dir = fake_mnist(n_train=64, n_test=32)
    code, out, err = run_cli(capsys, "clean", "--dataset", "mnist", "--norm", "bn", "--repeats", "1", "--depth", "8",
                             "--epochs", "2", "--batch-size", "32", "--lr-schedule", "cosine", "--label-smoothing",
                             "0.05", "--nesterov", "--no-compile", "--data-dir", data_dir, "--runs-dir", tmp_path,
                             "--no-progress", "--device", "cpu")
    assert code == 0, err
    (rec,) = [json.loads(line) for line in next(tmp_path.rglob("results.jsonl")).read_text().splitlines()]
    assert rec["config"]["lr_schedule"] == "cosine" and rec["config"]["label_smoothing"] == 0.05
    assert rec["config"]["nesterov"] is True and rec["config"]["milestones"] == []
    assert [h["lr"] for h in rec["history"]] == pytest.approx([0.1, 0.05])  # lr at each epoch's first step
    code, _, err = run_cli(capsys, "clean", "--dataset", "mnist", "--lr-schedule", "cosine", "--milestones", "2",
                           "--epochs", "4", "--runs-dir", tmp_path / "x", "--dry-run")
    assert code == 2 and err.count("\n") == 1 and "milestones belong to the step schedule" in err
    assert not (tmp_path / "x").exists()
