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
