"""The harness survives any layer: layers by import path that break the contract are refused before
anything is written (one line, exit 2, with a message that says why), and a layer that fails only
during training ends its run as "failed" (one line, exit 3, no traceback, the other runs done,
nothing half-written); a layer that turns NaN ends its run as "diverged", a result of training.
Everything through the CLI, with layers written here."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from conftest import run_cli
from test_cli import tb_scalars
from noiseattack import zoo

LAYERS = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class EndsInPlace(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(self.bn(x), inplace=True)  # timm's BatchNormAct2d ends so too


class RaisesAt3(nn.Module):
    """BatchNorm that raises in its third training step."""

    def __init__(self, channels):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("boom at step 3")
        return self.bn(x)


class RaisesInEval(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        if not self.training and x.shape[0] > 4:  # the contract check's batch is 4: the test set's is not
            raise ValueError("no eval for you")
        return self.bn(x)


class NaNAt3(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.calls = 0

    def forward(self, x):
        y = self.bn(x)
        if self.training:
            self.calls += 1
            if self.calls == 3:
                y = y * float("nan")
        return y


class SaysOtherChannels(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.num_features = 2 * channels
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return self.bn(x)


def twice_the_channels(channels):
    return nn.BatchNorm2d(2 * channels)
'''


@pytest.fixture
def layers(tmp_path, monkeypatch):
    pkg = tmp_path / "work" / "faillayers"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "layers.py").write_text(textwrap.dedent(LAYERS))
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.syspath_prepend(str(tmp_path / "work"))
    yield "faillayers.layers"
    for name in [m for m in sys.modules if m.startswith("faillayers")]:
        del sys.modules[name]
    zoo.resolve.cache_clear()


def _common(data, runs, *extra):
    # 64 images in batches of 16: 4 steps per epoch, so step 3 is in the first epoch
    return ["--dataset", "mnist", "--data-dir", data, "--runs-dir", runs, "--depth", "8", "--width", "0.25",
            "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--no-progress", *extra]


def _records(runs):
    (exp,) = [d for d in runs.iterdir() if d.is_dir()]
    return exp, [json.loads(line) for line in (exp / "results.jsonl").read_text().splitlines()]


def test_a_layer_that_raises_at_step_3_is_one_line_exit_3_and_the_others_run(layers, fake_mnist, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = _common(fake_mnist(n_train=64, n_test=32), runs, "--repeats", "2")
    code, out, err = run_cli(capsys, "clean", "--norm", f"{layers}:RaisesAt3,bn", *args)
    assert code == 3, err
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 2  # one per failed seed, nothing else
    for seed, line in enumerate(lines):
        assert line.startswith(f"noiseattack: error: {layers}:RaisesAt3@")
        assert line.endswith(f" clean seed {seed}: epoch 1, step 3: RuntimeError: boom at step 3"), line
    exp, records = _records(runs)
    by = {(r["norm"].split("@")[0], r["seed"]): r for r in records}
    assert [by[("bn", s)]["status"] for s in (0, 1)] == ["finished", "finished"]  # the experiment went on
    bad = by[(f"{layers}:RaisesAt3", 0)]
    assert bad["status"] == "failed" and bad["final_acc"] is None and bad["error"] == "RuntimeError: boom at step 3"
    assert bad["failed"] == {"phase": "train", "epoch": 1, "step": 3} and bad["history"] == []
    # nothing half-written: no checkpoint, no curves of the failed runs, summaries without them
    assert not (exp / "ckpt").exists()
    assert sorted(p.name.split("-s")[0].split("@")[0] for p in (exp / "tb").iterdir()
                  if p.is_dir() and not p.name.endswith("-mean")) == ["bn", "bn"]
    (failed_mean,) = [p for p in (exp / "tb").iterdir() if p.name.startswith(layers) and p.name.endswith("-mean")]
    assert tb_scalars(failed_mean) == {}  # its mean run: the HParams config, no curves
    assert not list(exp.rglob("*.tmp"))
    summary = {line.split(",")[0].split("@")[0]: line.split(",")[1] for line in
               (exp / "summary.csv").read_text().splitlines()[1:]}
    assert summary == {f"{layers}:RaisesAt3": "0", "bn": "2"}  # n: finished runs only
    # the dry run says which runs failed; re-running trains them again (and they fail again)
    code, out, _ = run_cli(capsys, "clean", "--norm", f"{layers}:RaisesAt3,bn", *args, "--dry-run")
    assert code == 0 and [line.split()[0] for line in out.splitlines() if " seed " in line] == [
        "failed", "failed", "finished", "finished"]
    code, _, err = run_cli(capsys, "clean", "--norm", f"{layers}:RaisesAt3,bn", *args)
    assert code == 3 and len(err.strip().splitlines()) == 2


def test_a_layer_that_raises_in_evaluation_fails_there(layers, fake_mnist, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "clean", "--norm", f"{layers}:RaisesInEval", "--repeats", "1",
                             *_common(fake_mnist(n_train=64, n_test=32), runs))
    assert code == 3 and "Traceback" not in out + err
    assert err.strip().splitlines() == [
        f"noiseattack: error: {zoo.resolve(layers + ':RaisesInEval').name} clean seed 0: evaluating after epoch 1: "
        "ValueError: no eval for you"]
    _, (rec,) = _records(runs)
    assert rec["status"] == "failed" and rec["failed"]["phase"] == "eval"


def test_a_layer_that_turns_nan_at_step_3_diverges_and_is_a_result(layers, fake_mnist, tmp_path, capsys):
    """Non-finite values are divergence, as for a too-large lr: an outcome of training the layer in that
    setting (counted apart in the summaries), not an error of the harness or of the layer's code."""
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "constant", "--alpha", "2", "--beta", "1", "--norm", f"{layers}:NaNAt3,bn",
                             "--repeats", "1", *_common(fake_mnist(n_train=64, n_test=32), runs))
    assert code == 0 and "Traceback" not in out + err and not err.strip(), err
    exp, records = _records(runs)
    nan = next(r for r in records if r["norm"].startswith(f"{layers}:NaNAt3@"))
    assert nan["status"] == "diverged" and nan["diverged"]["epoch"] == 1
    assert f"{nan['norm']} seed 0: diverged at epoch 1" in " ".join(out.split())
    assert not (exp / "ckpt").exists()
    header, first = (exp / "summary.csv").read_text().splitlines()[:2]
    assert dict(zip(header.split(","), first.split(",")))["diverged"] == "1"


def test_a_layer_ending_in_an_in_place_op_trains(layers, fake_mnist, tmp_path, capsys):
    """The model follows a user's layer by an out-of-place ReLU: an in-place ReLU on the output of an
    in-place sigmoid would break the backward (torch: 'modified by an inplace operation')."""
    import torch

    layer = zoo.make_norm(f"{layers}:EndsInPlace", 4)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):  # the hazard is real
        torch.relu_(layer(x)).sum().backward()
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "constant", "--alpha", "2", "--beta", "1", "--norm", f"{layers}:EndsInPlace",
                             "--repeats", "1", *_common(fake_mnist(n_train=64, n_test=32), runs))
    assert code == 0, err
    _, (rec,) = _records(runs)
    assert rec["status"] == "finished"


@pytest.mark.parametrize("layer,extra,message", [
    ("torch.nn:LazyBatchNorm2d", ["--no-channels-last"],
     "LazyBatchNorm2d is a lazy module: its parameters take their shape from the first input and its constructor "
     "takes no channel count (LazyBatchNorm2d(4) sets its first argument, not the channels); name a class that "
     "takes the channel count, e.g. torch.nn:BatchNorm2d"),
    ("{pkg}:SaysOtherChannels", [], "built for 4 channels, its SaysOtherChannels says num_features=8"),
    ("{pkg}:twice_the_channels", [], "built for 4 channels, its BatchNorm2d says num_features=8"),
    ("timm.layers:EvoNorm2dS0", [],
     "forward failed at 4 channels ((4, 4, 32, 32)) in training mode (4 channels are not divisible by its "
     "groups=32): AssertionError (no message) at timm/layers/evo_norm.py:"),
])
def test_a_layer_built_for_other_channels_is_refused_saying_which_and_why(layers, fake_mnist, tmp_path, capsys,
                                                                           layer, extra, message):
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "clean", "--norm", layer.format(pkg=layers), "--repeats", "1",
                             *_common(fake_mnist(n_train=64, n_test=32), runs), *extra)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert ".view" not in err and "Traceback" not in out + err
    assert not runs.exists()


def test_descriptions_are_the_classes_own_docstrings_or_none(layers):
    assert zoo.resolve("timm.layers:EvoNorm2dB0").description == "user layer timm.layers:EvoNorm2dB0"
    assert zoo.resolve("timm.layers:FilterResponseNormTlu2d").description == \
        "user layer timm.layers:FilterResponseNormTlu2d"
    assert zoo.resolve("timm.layers:BatchNormAct2d").description == "BatchNorm + Activation"
    assert zoo.resolve(f"{layers}:RaisesAt3").description == "BatchNorm that raises in its third training step."
    assert zoo.resolve(f"{layers}:EndsInPlace").description == f"user layer {layers}:EndsInPlace"


def test_a_failed_run_in_a_sweep_is_one_line_each_and_exit_3(layers, fake_mnist, tmp_path, capsys):
    data = fake_mnist(n_train=64, n_test=32)
    grid = tmp_path / "grid.toml"
    grid.write_text(textwrap.dedent(f'''
        [train]
        dataset = "mnist"
        depth = 8
        width = 0.25
        epochs = 1
        batch_size = 16
        device = "cpu"
        data_dir = "{data}"
        [grid]
        norms = ["bn", "{layers}:RaisesAt3"]
        seeds = [0]
        [[attack]]
        kind = "clean"
    '''))
    code, out, err = run_cli(capsys, "sweep", grid, "--runs-dir", tmp_path / "runs", "--no-progress", "--threads", "1")
    assert code == 3 and "Traceback" not in out + err, err
    assert "failed at epoch 1, step 3: RuntimeError: boom at step 3" in " ".join(out.split())
    assert "1 runs failed" in err


def test_the_readme_survey_of_torch_torchvision_and_timm_norms_is_what_the_harness_does():
    """README's table (`scripts/layer_survey.py`): for each module named, whether it runs under clean and
    mix and whether the constant attack reaches it, as the harness decides now."""
    import re
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import layer_survey

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("<!-- layer-survey:begin -->")[1].split("<!-- layer-survey:end -->")[0]
    rows = [line.split(" | ") for line in table.strip().splitlines()[2:]]
    checked = 0
    for first, clean, constant, _ in rows:
        for path in re.findall(r"`([\w.]+:\w+)`", first):
            got = layer_survey.survey_one(path)
            assert (got[0].split(":")[0], got[1].split(":")[0]) == (clean, constant), (path, got)
            checked += 1
    assert checked >= 30


@pytest.mark.parametrize("depth,block,width", [(20, "basic", 1), (8, "basic", 0.25), (29, "bottleneck", 0.5)])
def test_the_contract_check_sees_every_shape_a_norm_position_of_the_model_sees(depth, block, width):
    import torch

    from noiseattack.config import resolve_train_config
    from noiseattack.models import cifar_resnet, model_shapes
    from noiseattack.norms import BatchNorm

    seen = set()
    model = cifar_resnet(depth, 10, "bn", width=width, block=block)
    for m in model.modules():
        if isinstance(m, BatchNorm):
            m.register_forward_hook(lambda mod, inp, out: seen.add((out.shape[1], out.shape[2])))
    model(torch.randn(2, 3, 32, 32))
    cfg = resolve_train_config(depth=depth, block=block, width=width, device="cpu")
    assert set(model_shapes(cfg)) == seen
