"""First contact (#11): what a new user meets first: --help, input limits, data errors, TensorBoard,
resume messages, an 80-column terminal, --amp on a CPU, and checkpoints that cannot run code."""

from __future__ import annotations

import inspect
import json
import re
import typing
from pathlib import Path

import pytest
import torch
import typer.models

from conftest import run_cli
from noiseattack import cli, config, data as data_lib


def _option_helps(fn) -> dict[str, str]:
    """{parameter name: help text} of every typer Option/Argument declared on fn, read from its source
    annotations (not from the command typer builds)."""
    out = {}
    for name, hint in typing.get_type_hints(fn, include_extras=True).items():
        for extra in getattr(hint, "__metadata__", ()):
            if isinstance(extra, typer.models.ParameterInfo) and extra.help:
                out[name] = extra.help
    return out


def _commands() -> list[tuple[str, dict[str, str]]]:
    cmds = []
    for info in cli.app.registered_commands:
        fn = getattr(info.callback, "__wrapped__", info.callback)
        helps = _option_helps(fn)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()):
            helps.update(_option_helps(cli._shared_options))  # clean, constant, mix take the shared options
        cmds.append((info.name or fn.__name__.replace("_", "-"), helps))
    return cmds


def _squash(text: str) -> str:
    """Without whitespace: help is wrapped at spaces and after hyphens."""
    return "".join(text.split())


def test_every_command_help_shows_every_option_help(capsys):
    commands = _commands()
    assert {"clean", "constant", "mix", "report", "sweep"} <= {name for name, _ in commands}
    for name, helps in commands:
        code, out, err = run_cli(capsys, name, "--help")
        assert code == 0, err
        shown = _squash(out)
        missing = [p for p, h in helps.items() if _squash(h) not in shown]
        assert not missing, f"`noiseattack {name} --help` lacks the help of {missing}"
    assert len(dict(commands)["mix"]) >= 30  # the shared options were found


@pytest.mark.parametrize("command,option", [("clean", "--dataset"), ("mix", "--dataset"), ("mix", "--extra")])
def test_dataset_help_lists_the_datasets(capsys, command, option):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    text = _squash(out)
    start = text.index(option + "<str>")
    entry = text[start:start + 120]
    names = re.findall(r"[a-z0-9]+", entry.split(":", 1)[1])
    assert set(data_lib.DATASETS) <= set(names), entry


# --------------------------------------------------------------------------- 2. input limits

def _refused(capsys, tmp_path, *args) -> str:
    """Run the CLI on args that must be refused: exit 2, one line on stderr, nothing written. -> the line."""
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, *args, "--runs-dir", runs, "--data-dir", tmp_path / "nodata", "--device", "cpu",
                             "--no-progress")
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("noiseattack: error:"), err
    assert "Traceback" not in err + out
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.rglob("*"))
    assert not (tmp_path / "nodata").exists()
    return err


@pytest.mark.parametrize("args,message", [
    (["mix", "--k", "1000000"], "k must be <= 16 x the batch size (2048 for --batch-size 128), got 1000000"),
    (["mix", "--k", "65", "--batch-size", "4"], "k must be <= 16 x the batch size (64 for --batch-size 4), got 65"),
    (["clean", "--train-subset", "10"], "train subset 10 is smaller than the batch size 128"),
    (["clean", "--epochs", "100000"], "epochs must be <= 10000, got 100000"),
    (["clean", "--depth", "2000"], "depth must be <= 1202, got 2000"),
    (["clean", "--width", "1000"], "width must be <= 64, got 1000"),
    (["clean", "--batch-size", "100000"], "batch size must be <= 65536, got 100000"),
    (["clean", "--eval-batch-size", "1000000"], "eval batch size must be <= 65536, got 1000000"),
    (["clean", "--lr", "1000"], "lr must be <= 10, got 1000"),
    (["clean", "--momentum", "1.5"], "momentum and weight decay must be < 1"),
    (["clean", "--weight-decay", "2"], "momentum and weight decay must be < 1"),
    (["clean", "--epochs", "4", "--milestones", "2,9"], "milestones must be epochs <= 4"),
    (["clean", "--train-subset", "100000000"], "train subset must be <= 10000000"),
    (["clean", "--test-subset", "100000000"], "test subset must be <= 10000000"),
    (["constant", "--alpha", "1e9"], "|alpha| must be <= 1000, got 1e+09"),
    (["constant", "--beta", "-5000"], "|beta| must be <= 1000, got 5000"),
    (["clean", "--seed", "-1"], "seeds must be in 0..4294967295, got -1"),
    (["clean", "--seed", str(2**33)], f"seeds must be in 0..4294967295, got {2**33}"),
    (["clean", "--seeds", "0,-3"], "seeds must be in 0..4294967295, got -3"),
    (["clean", "--repeats", "100000"], "repeats must be <= 1000, got 100000"),
])
def test_numeric_options_have_upper_limits(capsys, tmp_path, args, message):
    assert message in _refused(capsys, tmp_path, *args)


def test_a_batch_that_cannot_fit_in_memory_is_refused(capsys, tmp_path):
    # ResNet-1202 at width 64 keeps > 8 GiB of activations per image (its 3 stages of 200 blocks of two
    # 3x3 convs of 1024x32x32, 2048x16x16, 4096x8x8 outputs, in fp32): 2176 images need terabytes
    err = _refused(capsys, tmp_path, "mix", "--k", "2048", "--batch-size", "128", "--depth", "1202", "--block", "basic",
                   "--width", "64")
    assert "a training batch of 2176 images (batch size + k) needs about" in err and "GiB free on cpu" in err
    err = _refused(capsys, tmp_path, "clean", "--eval-batch-size", "65536", "--depth", "1202", "--block", "basic",
                   "--width", "64", "--batch-size", "1")
    assert "an evaluation batch of 65536 images needs about" in err


# --------------------------------------------------------------------------- 9. --amp on a CPU without bf16

def test_amp_is_refused_on_a_cpu_without_bf16(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "cpu_supports_bf16", lambda: False)
    err = _refused(capsys, tmp_path, "clean", "--amp")
    assert "--amp needs a GPU or a CPU with native bf16" in err and "drop --amp" in err


def test_amp_is_allowed_on_a_cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(config, "cpu_supports_bf16", lambda: True)
    assert config.resolve_train_config(dataset="mnist", device="cpu", amp=True).amp is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_is_allowed_on_cuda_whatever_the_cpu(monkeypatch):
    monkeypatch.setattr(config, "cpu_supports_bf16", lambda: False)
    assert config.resolve_train_config(dataset="mnist", device="cuda", amp=True).amp is True


def test_the_bf16_probe_answers_for_this_cpu():
    assert config.cpu_supports_bf16() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


# --------------------------------------------------------------------------- 10. checkpoints cannot run code

TINY = ("--dataset", "mnist", "--norm", "bn", "--repeats", "1", "--depth", "8", "--epochs", "1", "--batch-size", "32",
        "--device", "cpu", "--no-compile-norms", "--name", "exp")


class Planted:
    """Unpickling it (weights_only=False) runs code: it creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": "whatever", "model": Planted(marker), "state": {"epoch": 0, "step": 3}}, path)


def test_a_planted_checkpoint_does_not_run_and_the_run_starts_afresh(capsys, tmp_path, fake_mnist):
    control = tmp_path / "control-marker"
    _plant(tmp_path / "control.pt", control)
    torch.load(tmp_path / "control.pt", weights_only=False)  # the plant is live: a full unpickler runs it
    assert control.exists()

    runs, marker = tmp_path / "runs", tmp_path / "marker"
    _plant(runs / "exp" / "ckpt" / "bn-s0.pt", marker)
    code, out, err = run_cli(capsys, "clean", *TINY, "--data-dir", fake_mnist(n_train=64, n_test=32),
                             "--runs-dir", runs, "--no-progress")
    assert code == 0, err
    assert not marker.exists()
    assert "bn-s0.pt: unreadable checkpoint" in err and "starts afresh" in err
    (rec,) = [json.loads(line) for line in (runs / "exp" / "results.jsonl").read_text().splitlines()]
    assert rec["status"] == "finished" and rec["epochs_done"] == 1 and len(rec["history"]) == 1
    assert not (runs / "exp" / "ckpt" / "bn-s0.pt").exists()
