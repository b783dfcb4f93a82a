"""The capacity study's evidence regenerates: `python scripts/capacity_doc.py`, run on a copy of the
committed per-run results (results.jsonl and config.json only), writes the committed tables (report,
sweeps, claims, and the doc with its generated regions) and the same set of plots."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_same_plots

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "docs" / "study-capacity"
TABLES = ("report.md", "report.csv", "sweeps.csv", "overview.md", "overview.csv", "claims.md", "claims.csv")
OUTS = ("", "follow-up")  # the main grid's report, the follow-up's


def committed_results() -> dict[str, bytes]:
    """The study's results.jsonl and config.json files as committed (git HEAD), by path: a sweep that
    is still appending to the working tree's files does not change what the doc was generated from.
    Outside a git checkout, the working tree's files."""
    def wanted(path: str) -> bool:
        parts = path.split("/")
        return len(parts) == 5 and parts[2].startswith("runs") and parts[4] in ("results.jsonl", "config.json")

    try:
        git = ["git", "-C", str(ROOT)]
        listed = subprocess.run([*git, "ls-files", "docs/study-capacity"], capture_output=True, text=True, check=True)
        return {n: subprocess.run([*git, "show", f"HEAD:{n}"], capture_output=True, check=True).stdout
                for n in listed.stdout.splitlines() if wanted(n)}
    except (OSError, subprocess.CalledProcessError):
        return {str(f.relative_to(ROOT)): f.read_bytes() for f in STUDY.glob("runs*/*/*")
                if wanted(f.relative_to(ROOT).as_posix())}


COMMITTED = committed_results()


def copy_results(dst_root: Path) -> None:
    for name, data in COMMITTED.items():
        dst = dst_root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)


def regenerate(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "capacity_doc.py")], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not any(n.startswith("docs/study-capacity/runs/") and n.endswith("results.jsonl") for n in COMMITTED),
                    reason="no committed results in docs/study-capacity/runs")
def test_the_capacity_doc_regenerates_from_the_committed_results(tmp_path):
    copy_results(tmp_path)
    (tmp_path / "docs" / "study-capacity.md").write_bytes((ROOT / "docs" / "study-capacity.md").read_bytes())
    proc = regenerate(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "docs" / "study-capacity.md").read_bytes() == (ROOT / "docs" / "study-capacity.md").read_bytes()
    for sub in OUTS:
        out, committed = tmp_path / "docs" / "study-capacity" / sub, STUDY / sub
        for name in TABLES:
            if (committed / name).exists() or (out / name).exists():
                assert (out / name).read_bytes() == (committed / name).read_bytes(), f"{sub}/{name}"
        assert_same_plots(out, committed, required=not sub)


def a_committed_record(tmp_path: Path, norm: str | None = None) -> dict:
    """The committed results copied into `tmp_path`, and one main-grid record (of `norm`, if given)."""
    copy_results(tmp_path)
    src = next((tmp_path / "docs" / "study-capacity" / "runs").glob("*/results.jsonl"), None)
    if src is None:
        pytest.skip("no committed results in docs/study-capacity/runs")
    return next(r for r in map(json.loads, src.read_text().splitlines()) if norm in (None, r["norm"]))


def assert_refused(tmp_path: Path, bad_runs: Path, rec: dict, message: str) -> None:
    """With `rec` written to `bad_runs`/results.jsonl, the command says `message` in one line, exits 2
    and writes nothing."""
    bad_runs.mkdir(parents=True)
    (bad_runs / "results.jsonl").write_text(json.dumps(rec) + "\n")
    doc = tmp_path / "docs" / "study-capacity.md"
    doc.write_bytes((ROOT / "docs" / "study-capacity.md").read_bytes())
    proc = regenerate(tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert doc.read_bytes() == (ROOT / "docs" / "study-capacity.md").read_bytes()
    assert not (tmp_path / "docs" / "study-capacity" / "report.md").exists()


def test_a_runs_dir_that_mixes_trainings_is_one_line_exit_2(tmp_path):
    """Runs that differ in more than the width (here: the epochs) are not one study."""
    rec = a_committed_record(tmp_path)
    rec["config"]["epochs"] -= 1
    assert_refused(tmp_path, tmp_path / "docs" / "study-capacity" / "runs" / "other", rec, "differ in more than width")


def test_a_follow_up_run_not_placed_per_block_is_one_line_exit_2(tmp_path):
    """The follow-up's runs-block holds bn+cbam with attn_placement "block" only: a bn run there (here
    a main-grid bn record, placed per block) is refused before anything is written."""
    rec = a_committed_record(tmp_path, "bn")
    rec["config"]["attn_placement"] = "block"
    assert_refused(tmp_path, tmp_path / "docs" / "study-capacity" / "runs-block" / "misplaced", rec,
                   "attn_placement = 'block' only")


def test_follow_up_runs_that_train_otherwise_are_one_line_exit_2(tmp_path):
    """The follow-up compares its runs with one another as the main grid's: a control trained for
    fewer epochs is refused, not compared."""
    rec = a_committed_record(tmp_path, "bn")
    rec["config"]["epochs"] -= 1
    shutil.rmtree(tmp_path / "docs" / "study-capacity" / "runs-controls", ignore_errors=True)  # the one control
    assert_refused(tmp_path, tmp_path / "docs" / "study-capacity" / "runs-controls" / "shorter", rec,
                   "train otherwise than the main grid's")
