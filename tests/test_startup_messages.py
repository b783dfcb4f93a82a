"""What a user meets before anything trains (#25, items 4, 9, 10 and 11), through the CLI where they
meet it: data errors that say what failed, a mismatched torch/torchvision pair as one line, the
end of a test run naming NOISEATTACK_SHARED_DATA, and a log file's first line unbroken."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlsplit

import pytest
import torch
import torchvision.datasets as tvd

from conftest import run_cli
from noiseattack.startup import matching_pair_command
from test_first_contact import SMALL, _run_on_read_only

REPO = Path(__file__).resolve().parents[1]


def _env(first: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a command run from a log file: no terminal settings; the checkout (after
    `first`) on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
                                                            "COLUMNS")}
    path = [str(first) if first else None, str(REPO), env.get("PYTHONPATH")]
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, path)), **extra)
    return env


# --------------------------------------------------------------------------- 4. data errors name what failed

def _offline(monkeypatch, module: str, reason: OSError) -> None:
    """Every download raises the URLError urllib raises for `reason` (no network, at once)."""
    def offline(url, *args, **kwargs):
        raise URLError(reason)

    monkeypatch.setattr(f"torchvision.datasets.{module}.download_and_extract_archive", offline)


def test_a_data_dir_that_does_not_exist_without_network_says_both(capsys, tmp_path, monkeypatch):
    _offline(monkeypatch, "mnist", socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    data, runs = tmp_path / "nonexistent", tmp_path / "runs"
    code, out, err = run_cli(capsys, "clean", "--dataset", "mnist", *SMALL, "--data-dir", data, "--runs-dir", runs)
    assert code == 2 and err.count("\n") == 1 and out == "", err
    hosts = ", ".join(urlsplit(m).hostname for m in tvd.MNIST.mirrors)
    raw = data / "MNIST" / "raw"
    assert err.startswith(f"noiseattack: error: mnist: data missing in {raw} (no such directory: {data}) and the "
                          f"download failed: no network ({hosts}: Name or service not known); put "
                          "train-images-idx3-ubyte.gz, "), err
    assert err.rstrip().endswith(f"into {raw}")
    assert ":)" not in err and "()" not in err  # torchvision's 'Error downloading ...:' said nothing after the colon
    assert not data.exists() and not runs.exists()


def test_cifar_without_network_says_no_network(capsys, tmp_path, monkeypatch):
    _offline(monkeypatch, "cifar", ConnectionRefusedError(111, "Connection refused"))
    data = tmp_path / "data"
    data.mkdir()
    code, out, err = run_cli(capsys, "clean", "--dataset", "cifar10", *SMALL, "--data-dir", data, "--runs-dir",
                             tmp_path / "runs")
    assert code == 2 and err.count("\n") == 1, err
    assert (f"cifar10: data missing in {data} and the download failed: no network (Connection refused); put "
            "cifar-10-python.tar.gz") in err


def test_a_data_dir_that_is_a_file_says_so(capsys, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("not a dir")
    code, out, err = run_cli(capsys, "clean", "--dataset", "mnist", *SMALL, "--data-dir", data, "--runs-dir",
                             tmp_path / "runs")
    assert code == 2 and err.count("\n") == 1, err
    assert (f"mnist: data missing in {data / 'MNIST' / 'raw'} (not a directory: {data}) and nothing can be written "
            f"there (Not a directory: {data / 'MNIST'}); put ") in err
    assert "download" not in err  # nothing was downloaded: the dir was refused first


def test_a_read_only_empty_data_dir_is_not_said_to_hold_archives(tmp_path):
    data = tmp_path / "empty"
    data.mkdir()
    code, out, err = _run_on_read_only(tmp_path, data, ["clean", "--dataset", "mnist", *SMALL, "--data-dir", data,
                                                        "--runs-dir", tmp_path / "runs"])
    assert code == 2 and err.count("\n") == 1, err
    assert f"mnist: data missing in {data / 'MNIST' / 'raw'} and nothing can be written there (" in err
    assert re.search(r"\((Read-only file system|Permission denied): ", err), err
    assert "holds" not in err and "download" not in err and "Traceback" not in err
    assert list(data.iterdir()) == []


# --------------------------------------------------------------------------- 9. a mismatched torch/torchvision pair

FAKE_TORCHVISION = '''\
"""A torchvision built for another torch: its import registers an operator its _C never defined,
as torchvision/_meta_registrations.py does."""
import torch


@torch.library.register_fake("torchvision::nms")
def meta_nms(dets, scores, iou_threshold):
    return dets
'''


@pytest.fixture
def mismatched_torchvision(tmp_path: Path) -> Path:
    """A site dir holding torchvision 0.28.0 (its metadata and a package whose import fails as a
    mismatched build's does), to put before the real one on PYTHONPATH."""
    site = tmp_path / "site"
    (site / "torchvision").mkdir(parents=True)
    (site / "torchvision" / "__init__.py").write_text(FAKE_TORCHVISION)
    (site / "torchvision-0.28.0.dist-info").mkdir()
    (site / "torchvision-0.28.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchvision\nVersion: 0.28.0\n")
    return site


@pytest.mark.parametrize("entry", [["-m", "noiseattack"], ["-c", "from noiseattack.cli import main; main()"]],
                         ids=["python -m noiseattack", "the noiseattack script"])
def test_a_mismatched_pair_is_one_line_with_both_versions_and_the_fix(mismatched_torchvision, tmp_path, entry):
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True,
                           env=_env(mismatched_torchvision))
    assert "RuntimeError: operator torchvision::nms does not exist" in probe.stderr  # what the user saw before
    proc = subprocess.run([sys.executable, *entry, "--help"], capture_output=True, text=True, cwd=tmp_path,
                          env=_env(mismatched_torchvision))
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr == (
        f"noiseattack: error: torchvision 0.28.0 does not work with torch {torch.__version__} (operator "
        f"torchvision::nms does not exist): install a matching pair, e.g. {matching_pair_command(torch.__version__)}\n")


def test_the_matching_pair_command():
    assert matching_pair_command("2.13.0+cpu") == (
        'pip install --force-reinstall torch==2.13.0+cpu "torchvision==0.28.*" '
        '--index-url https://download.pytorch.org/whl/cpu')
    assert matching_pair_command("2.14.1+cu130") == (
        'pip install --force-reinstall torch==2.14.1+cu130 "torchvision==0.29.*" '
        '--index-url https://download.pytorch.org/whl/cu130')
    assert matching_pair_command("2.14.1") == 'pip install --force-reinstall torch==2.14.1 "torchvision==0.29.*"'
    assert "pytorch.org" in matching_pair_command(None)


def test_the_readme_pins_a_matching_cpu_pair():
    readme = (REPO / "README.md").read_text()
    (torch_v, vision_v), = re.findall(r"pip install torch==2\.(\d+)\.\d+ torchvision==0\.(\d+)\.\d+ "
                                       r"--index-url https://download\.pytorch\.org/whl/cpu", readme)
    assert int(vision_v) == int(torch_v) + 15


# --------------------------------------------------------------------------- 10. skipped real-data tests say why

def test_skipped_real_data_tests_end_the_run_with_the_variable(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_realdata.py"],
                          capture_output=True, text=True, cwd=REPO,
                          env=_env(NOISEATTACK_SHARED_DATA=str(tmp_path / "none")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (f"1 real-data test skipped: no MNIST/FashionMNIST at {tmp_path / 'none'}. Set NOISEATTACK_SHARED_DATA "
            "to a dir with MNIST/raw and FashionMNIST/raw") in proc.stdout, proc.stdout


# --------------------------------------------------------------------------- 11. a log file's first line

def test_the_first_line_of_a_log_file_is_not_broken_at_80_columns(tmp_path, fake_mnist):
    runs = tmp_path / ("a-runs-dir-whose-path-is-longer-than-eighty-columns-" + "x" * 30)
    log = tmp_path / "log"
    with open(log, "w") as f:  # `noiseattack ... > log`
        proc = subprocess.run([sys.executable, "-m", "noiseattack", "clean", *SMALL, "--dataset", "mnist", "--name",
                               "exp", "--data-dir", str(fake_mnist(n_train=64, n_test=32)), "--runs-dir", str(runs),
                               "--dry-run"], stdout=f, stderr=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first = log.read_text().splitlines()[0]
    assert first == f"exp -> {runs / 'exp'}" and len(first) > 80


def test_a_sweep_s_first_line_in_a_log_file_is_one_line(capsys, tmp_path, fake_mnist, log_file_output, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    folder = tmp_path / ("grids-in-a-folder-whose-name-is-long-enough-to-pass-eighty-columns-" + "y" * 20)
    folder.mkdir()
    grid = folder / "grid.toml"
    grid.write_text(f'[train]\ndataset = "mnist"\ndepth = 8\nepochs = 1\nbatch_size = 32\ndevice = "cpu"\n'
                    f'compile_norms = false\ndata_dir = "{fake_mnist(n_train=64, n_test=32)}"\n\n'
                    '[grid]\nnorms = ["bn"]\nseeds = [0]\n\n[[attack]]\nkind = "clean"\n')
    code, out, err = run_cli(capsys, "sweep", grid, "--runs-dir", tmp_path / "runs", "--threads", "1", "--no-progress")
    assert code == 0, err
    assert out.splitlines()[0] == f"{grid}: 1 runs in 1 experiments, 0 done, 1 to run (local)"
