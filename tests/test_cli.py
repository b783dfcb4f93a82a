"""The CLI end to end on tiny data: files written, TensorBoard content, exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torchvision
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from conftest import cxx_compiler, write_fake_cifar100
from noiseattack.cli import app

TINY = ["--depth", "8", "--epochs", "2", "--batch-size", "32", "--device", "cpu", "--no-progress"]


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def tb_scalars(run_dir: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for f in run_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return out


def check_experiment(exp: Path, norms, repeats, epochs=2):
    lines = [json.loads(line) for line in (exp / "results.jsonl").read_text().splitlines()]
    assert sorted((r["norm"], r["seed"]) for r in lines) == sorted((n, s) for n in norms for s in range(repeats))
    for r in lines:
        assert r["status"] == "finished" and len(r["history"]) == epochs
        assert r["final_acc"] == r["history"][-1]["test_acc"]
        assert r["best_acc"] == max(h["test_acc"] for h in r["history"])
        assert r["config"]["norm"] == r["norm"] and r["config"]["seed"] == r["seed"]
        scalars = tb_scalars(exp / "tb" / f"{r['norm']}-s{r['seed']}")
        assert scalars["test/acc"] == pytest.approx([h["test_acc"] for h in r["history"]])
        assert scalars["zz_final/test_acc"] == pytest.approx([r["final_acc"]])
    summary = (exp / "summary.csv").read_text().splitlines()
    assert summary[0] == "norm,n,mean,std,var,min,max,diverged,at_chance"
    for norm in norms:
        row = next(line.split(",") for line in summary[1:] if line.startswith(norm + ","))
        accs = [r["final_acc"] for r in lines if r["norm"] == norm]
        assert int(row[1]) == repeats
        assert float(row[2]) == pytest.approx(sum(accs) / len(accs), abs=1e-4)
    assert "| norm | n | mean |" in (exp / "summary.md").read_text()
    cfg = json.loads((exp / "config.json").read_text())
    assert {"noiseattack", "torch", "torchvision"} <= set(cfg["versions"]) and cfg["machine"]["device"] == "cpu"
    return lines


def test_constant_and_mix_write_results_summaries_and_tensorboard(fake_mnist, tmp_path):
    data = fake_mnist(n_train=128, n_test=64)
    runs = tmp_path / "runs"
    invoke("constant", "--alpha", 2, "--beta", 1, "--dataset", "mnist", "--norm", "bn,iebn", "--repeats", 2,
           "--data-dir", data, "--runs-dir", runs, *TINY)
    exp = runs / "constant-a2-b1-mnist-resnet8-e2"
    lines = check_experiment(exp, ["bn", "iebn"], 2)
    assert all(r["config"]["alpha"] == 2 and r["config"]["beta"] == 1 for r in lines)
    # which IEBN kernels trained it (provenance): compiled by default, wherever a C++ compiler exists
    expected = "compiled" if cxx_compiler() else "eager"
    assert [r["machine"].get("iebn_kernels") for r in lines if r["norm"] == "iebn"] == [expected] * 2
    assert all("iebn_kernels" not in r["machine"] for r in lines if r["norm"] == "bn")
    assert not list((exp / "ckpt").glob("*.pt")) if (exp / "ckpt").exists() else True

    result = invoke("mix", "--extra", "mnist-inverted", "--k", 16, "--dataset", "mnist", "--norm", "bnse,in", "--repeats", 2,
                    "--data-dir", data, "--runs-dir", runs, *TINY)
    exp = runs / "mix-mnist-inverted-k16-mnist-resnet8-e2"
    lines = check_experiment(exp, ["bnse", "in"], 2)
    assert all(r["config"]["k"] == 16 and r["config"]["extra"] == "mnist-inverted" for r in lines)
    assert "final test accuracy" in result.output  # the summary table


def test_clean_on_cifar100_format(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    data = write_fake_cifar100(tmp_path / "data", n_train=96, n_test=32)
    runs = tmp_path / "runs"
    invoke("clean", "--norm", "bn", "--repeats", 1, "--data-dir", data, "--runs-dir", runs, *TINY)
    lines = check_experiment(runs / "clean-cifar100-resnet8-e2", ["bn"], 1)
    assert lines[0]["config"]["dataset"] == "cifar100"


def test_rerun_skips_finished_runs(fake_mnist, tmp_path):
    data = fake_mnist(n_train=64, n_test=32)
    args = ["clean", "--dataset", "mnist", "--norm", "bn", "--repeats", 1, "--data-dir", data,
            "--runs-dir", tmp_path / "runs", *TINY]
    invoke(*args)
    results = tmp_path / "runs" / "clean-mnist-resnet8-e2" / "results.jsonl"
    before = results.read_bytes()
    invoke(*args)
    assert results.read_bytes() == before


@pytest.mark.parametrize("args,message", [
    (["constant", "--alpha", "0"], "alpha must be non-zero"),
    (["clean", "--norm", "bn,xn"], "unknown norm 'xn'"),
    (["mix", "--k", "-1"], "k must be >= 0"),
    (["clean", "--dataset", "svhn"], "unknown dataset 'svhn'"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, message):
    # this checkout's package, not whichever one `pip install -e` points at (cwd is tmp_path)
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "noiseattack", *args, "--runs-dir", str(tmp_path / "runs"),
                           "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and proc.stderr.startswith("noiseattack: error:")
    assert list(tmp_path.iterdir()) == []
