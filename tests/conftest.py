"""Shared fixtures: tiny datasets in the real on-disk formats, so the real loading code runs."""

from __future__ import annotations

import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import os

# --compile's default off in the suite: each of its many tiny models would be compiled (tens of seconds
# each); the compiled path is tested where a test asks for it (tests/test_compile.py).
os.environ.setdefault("NOISEATTACK_COMPILE", "0")

# The real MNIST/FashionMNIST files: ../shared/data beside the checkout, or $NOISEATTACK_SHARED_DATA.
SHARED_DATA = Path(os.environ.get("NOISEATTACK_SHARED_DATA",
                                  Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """MNIST's idx format, extracted (torchvision reads these without an md5 check)."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, n, h, w) + images.astype(np.uint8).tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + labels.astype(np.uint8).tobytes())


def make_fake_mnist(root: Path, n_train: int = 256, n_test: int = 128, seed: int = 0, name: str = "MNIST") -> Path:
    """Random 28x28 images whose label is learnable: class c has a bright 4x4 patch at a fixed spot."""
    rng = np.random.default_rng(seed)
    raw = root / name / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 64, (n, 28, 28))
        for i, c in enumerate(labels):
            r, col = 2 + 6 * (c // 4), 2 + 6 * (c % 4)
            images[i, r:r + 4, col:col + 4] = 255
        write_idx(raw, prefix, images, labels)
    return root


@pytest.fixture
def fake_mnist(tmp_path: Path):
    """A factory: fake_mnist(n_train=256, n_test=128) -> a data dir holding a tiny MNIST."""

    def make(n_train: int = 256, n_test: int = 128, seed: int = 0) -> Path:
        return make_fake_mnist(tmp_path / "data", n_train, n_test, seed)

    return make


def write_fake_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """cifar-100-python/{train,test,meta} pickles in the official format (str keys)."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n).tolist()
        doc = {"filenames": [f"{split}_{i}.png" for i in range(n)], "batch_label": f"{split} batch",
               "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
               "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        with open(base / split, "wb") as f:
            pickle.dump(doc, f)
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)],
                     "coarse_label_names": [f"super{i}" for i in range(20)]}, f)
    return root


NO_SHARED_DATA = "real MNIST/FashionMNIST not found at"  # the skip reason's start, counted at the end of a run


@pytest.fixture
def shared_data(tmp_path: Path) -> Path:
    """A private copy of ../shared/data (MNIST, FashionMNIST raw .gz files); skips if absent."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir() or not (SHARED_DATA / "FashionMNIST" / "raw").is_dir():
        pytest.skip(f"{NO_SHARED_DATA} {SHARED_DATA} (the repo's ../shared/data)")
    dst = tmp_path / "realdata"
    for name in ("MNIST", "FashionMNIST"):
        shutil.copytree(SHARED_DATA / name, dst / name)
    return dst


@pytest.fixture
def log_file_output(monkeypatch):
    """Output as in a log file: rich sees no terminal (whatever the CI's environment forces)."""
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """`noiseattack ARGS` in this process, through the real entry point: (exit code, stdout, stderr)."""
    import sys

    from noiseattack import cli

    capsys.readouterr()
    argv = sys.argv
    sys.argv = ["noiseattack", *map(str, args)]
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return code, out, err


def cxx_compiler() -> str | None:
    """A C++ compiler on PATH, which the compiled IEBN kernels need on a CPU (else they fall back to eager)."""
    return next((c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)


def copy_run_records(runs: Path, dst_root: Path, root: Path) -> None:
    """The per-run records (results.jsonl, config.json) of the experiment dirs in `runs` (a path under
    `root`, or a glob pattern of them: `root / "docs/study-fmnist/runs*"`), copied under `dst_root` at
    their paths relative to `root`: a doc's evidence without the checkpoints, locks and logs of runs
    in progress."""
    for src in sorted(Path(root).glob(f"{Path(runs).relative_to(root)}/*/*")):
        if src.name in ("results.jsonl", "config.json"):
            dst = dst_root / src.relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)


def assert_region_regenerates(tmp_path: Path, script: str, doc: str, *args: str) -> None:
    """`python scripts/SCRIPT ARGS --doc COPY` on a copy of the committed DOC (a path in the repo) exits 0
    and leaves the copy byte for byte the committed doc: its generated region is what the script makes."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    copy = tmp_path / Path(doc).name
    shutil.copyfile(repo / doc, copy)
    proc = subprocess.run([sys.executable, str(repo / "scripts" / script), *args, "--doc", str(copy)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert copy.read_bytes() == (repo / doc).read_bytes(), f"{doc}: its region is not what {script} makes"


def assert_same_plots(got: Path, committed: Path, required: bool = True) -> None:
    """The plots regenerated into `got` are the committed ones in `committed`, byte for byte, in every
    format (PNG, SVG): a plot left stale by a change elsewhere (a layer's colour) fails here. The
    bytes are matplotlib's: another matplotlib version may draw them differently, which the message says."""
    import hashlib

    import matplotlib

    def plots(d: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.glob("*"))
                if p.suffix in (".png", ".svg")}

    want, have = plots(committed), plots(got)
    assert sorted(have) == sorted(want), committed
    assert want or not required, f"no plots in {committed}"
    stale = [name for name in want if have[name] != want[name]]
    assert not stale, (f"{committed}: {', '.join(stale)} differ from what the committed runs give with matplotlib "
                       f"{matplotlib.__version__}: regenerate them (or the plots were drawn by another version)")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The real-data tests skip where ../shared/data is absent: the end of the run says how many, and
    that NOISEATTACK_SHARED_DATA points them at a data dir."""
    n = sum(1 for r in terminalreporter.stats.get("skipped", [])
            if isinstance(r.longrepr, tuple) and str(r.longrepr[2]).startswith(f"Skipped: {NO_SHARED_DATA}"))
    if n:
        terminalreporter.write_line(
            f"{n} real-data test{'s' * (n != 1)} skipped: no MNIST/FashionMNIST at {SHARED_DATA}. Set "
            "NOISEATTACK_SHARED_DATA to a dir with MNIST/raw and FashionMNIST/raw (torchvision's .gz files) "
            "to run them.", yellow=True, bold=True)
