"""Checks at start-up, before anything imports torchvision's operators.

A torchvision built for another torch (a CPU-only torch from a mirror beside torchvision's default
CUDA build, or two releases apart) fails inside its own import, e.g. `RuntimeError: operator
torchvision::nms does not exist`, which would end `noiseattack --help` in a traceback. The CLI calls
`check_torch_pair` first: one line naming both versions and the command that installs a matching
pair, and exit code 2.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

EXIT_BROKEN_INSTALL = 2  # the CLI's exit code for input that cannot run (see noiseattack.cli)
WHEEL_INDEX = "https://download.pytorch.org/whl/"  # PyTorch's wheels: /cpu, /cu128, ...


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _torch_version() -> str | None:
    """The imported torch's own version (with its local label, +cpu or +cu128), else its metadata's."""
    try:
        import torch

        return str(torch.__version__)
    except Exception:  # noqa: BLE001 - a broken torch: say what the metadata says
        return _version("torch")


def matching_pair_command(torch_version: str | None) -> str:
    """The pip command that installs torch `torch_version` with the torchvision built for it: torch 2.N
    goes with torchvision 0.(N+15), both from the same index (the CPU or CUDA build of torch's local
    label), reinstalled so that pip does not keep a torchvision it thinks satisfies the pin."""
    m = re.match(r"^2\.(\d+)\.(\d+)(?:\+([\w.]+))?", torch_version or "")
    if not m:
        return ("pip install --force-reinstall torch torchvision (one command, one index: "
                "https://pytorch.org/get-started/locally/)")
    minor, patch, label = int(m.group(1)), m.group(2), m.group(3)
    torch_pin = f"torch==2.{minor}.{patch}" + (f"+{label}" if label else "")
    vision_pin = f'"torchvision==0.{minor + 15}.*"'
    index = f" --index-url {WHEEL_INDEX}{label}" if label else ""
    return f"pip install --force-reinstall {torch_pin} {vision_pin}{index}"


def torch_pair_problem() -> str | None:
    """Import torchvision; None when it imports, else one line about the pair and how to mend it."""
    try:
        import torchvision  # noqa: F401 - its import registers its operators with torch: what fails
    except Exception as e:  # noqa: BLE001 - RuntimeError (operators), ImportError, OSError (its _C library)
        torch_v, vision_v = _torch_version(), _version("torchvision")
        reason = " ".join(str(e).split()) or type(e).__name__
        if vision_v is None:
            what = f"torchvision is not installed beside torch {torch_v}"
        else:
            what = f"torchvision {vision_v} does not work with torch {torch_v} ({reason})"
        return f"{what}: install a matching pair, e.g. {matching_pair_command(torch_v)}"
    return None


def check_torch_pair() -> None:
    """`torch_pair_problem` as one line on stderr and exit code 2; nothing when the pair imports."""
    problem = torch_pair_problem()
    if problem is not None:
        sys.stderr.write(f"noiseattack: error: {problem}\n")
        raise SystemExit(EXIT_BROKEN_INSTALL)
