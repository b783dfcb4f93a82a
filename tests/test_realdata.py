"""A small run on the real FashionMNIST (primary) and MNIST (extra) files from ../shared/data."""

import json

from typer.testing import CliRunner

from noiseattack.cli import app


def run_once(data, runs):
    result = CliRunner().invoke(app, [
        "mix", "--dataset", "fmnist", "--extra", "mnist", "--k", "32", "--norm", "bn", "--repeats", "1",
        "--epochs", "1", "--train-subset", "4000", "--test-subset", "2000", "--batch-size", "64", "--lr", "0.05",
        "--data-dir", str(data), "--runs-dir", str(runs), "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    (line,) = (runs / "mix-mnist-k32-fmnist-resnet20-n4000-e1" / "results.jsonl").read_text().splitlines()
    return json.loads(line)


def test_fmnist_mixed_with_mnist_learns_and_is_reproducible(shared_data, tmp_path):
    first = run_once(shared_data, tmp_path / "a")
    second = run_once(shared_data, tmp_path / "b")
    assert first["final_acc"] > 30.0, first["final_acc"]  # chance is 10%
    assert first["final_acc"] == second["final_acc"]
    assert first["history"] == second["history"]
