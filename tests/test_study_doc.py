"""The FashionMNIST study's evidence regenerates: `python scripts/study_doc.py`, run on a copy of
the committed per-run results (results.jsonl and config.json only), writes the committed tables
(report, overview, claims, and the doc with its generated regions) byte for byte."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_same_plots, copy_run_records

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "study-fmnist" / "runs"
TABLES = ("report.md", "report.csv", "overview.md", "overview.csv", "claims.md", "claims.csv")


@pytest.mark.skipif(not any(RUNS.glob("*/results.jsonl")), reason="no committed study results in docs/study-fmnist/runs")
def test_the_study_doc_regenerates_from_the_committed_results(tmp_path):
    copy_run_records(RUNS.parent / "runs*", tmp_path, ROOT)  # the study's runs and the convergence check's
    (tmp_path / "docs" / "study-fmnist.md").write_bytes((ROOT / "docs" / "study-fmnist.md").read_bytes())
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "study_doc.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for name in TABLES:
        got = (tmp_path / "docs" / "study-fmnist" / name).read_bytes()
        assert got == (ROOT / "docs" / "study-fmnist" / name).read_bytes(), name
    assert (tmp_path / "docs" / "study-fmnist.md").read_bytes() == (ROOT / "docs" / "study-fmnist.md").read_bytes()
    assert_same_plots(tmp_path / "docs" / "study-fmnist", ROOT / "docs" / "study-fmnist")


def test_a_doc_without_its_regions_is_one_line_exit_2(tmp_path):
    runs = tmp_path / "docs" / "study-fmnist" / "runs"
    src = next(RUNS.glob("*/results.jsonl"), None)
    if src is None:
        pytest.skip("no committed study results in docs/study-fmnist/runs")
    (runs / src.parent.name).mkdir(parents=True)
    shutil.copyfile(src, runs / src.parent.name / "results.jsonl")
    (tmp_path / "docs" / "study-fmnist.md").write_text("# a doc without generated regions\n")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "study_doc.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "overview:begin" in proc.stderr
    assert (tmp_path / "docs" / "study-fmnist.md").read_text() == "# a doc without generated regions\n"


def test_a_convergence_dir_without_results_reads_as_not_run(tmp_path):
    """The convergence check's dir may exist before any of its runs finished (a sweep just started)."""
    if not any(RUNS.glob("*/results.jsonl")):
        pytest.skip("no committed study results in docs/study-fmnist/runs")
    copy_run_records(RUNS, tmp_path, ROOT)
    (tmp_path / "docs" / "study-fmnist" / "runs-convergence" / "clean-started").mkdir(parents=True)
    doc = tmp_path / "docs" / "study-fmnist.md"
    doc.write_bytes((ROOT / "docs" / "study-fmnist.md").read_bytes())
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "study_doc.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "The convergence check has not run (no results in its runs dir)." in doc.read_text()
