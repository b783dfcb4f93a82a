"""docs/study-protocol.md (docs/study-protocol-gpu.md) and their dirs are what
scripts/study_protocol_doc.py writes from the committed runs of the fmnist (fmnist-gpu) protocol:
run on a copy of the committed doc, it writes the doc's generated regions, the claims, the report
of the study's layers and its plots byte for byte."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_same_plots

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "study_protocol_doc.py"
PROTOCOLS = [("fmnist", "study-protocol"), ("fmnist-gpu", "study-protocol-gpu")]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("protocol, stem", PROTOCOLS)
def test_the_study_regenerates_byte_for_byte(tmp_path, protocol, stem):
    doc = tmp_path / f"{stem}.md"
    shutil.copyfile(REPO / "docs" / f"{stem}.md", doc)
    proc = run("--protocol", protocol, "--doc", str(doc), "--out", str(tmp_path / stem))
    assert proc.returncode == 0, proc.stderr
    assert doc.read_bytes() == (REPO / "docs" / f"{stem}.md").read_bytes()
    for name in ("claims.md", "claims.csv", "report.md", "report.csv", "overview.md", "overview.csv"):
        assert (tmp_path / stem / name).read_bytes() == (REPO / "docs" / stem / name).read_bytes(), name
    assert_same_plots(tmp_path / stem, REPO / "docs" / stem)


def test_the_protocol_picks_the_runs_the_doc_and_the_out_dir():
    sys.path.insert(0, str(REPO / "scripts"))
    from study_protocol_doc import STUDY

    for protocol, stem in PROTOCOLS:
        args = STUDY.parse_args(["--protocol", protocol])
        assert (args.runs, args.doc, args.out) == (Path("docs/leaderboard") / protocol / "runs",
                                                   Path(f"docs/{stem}.md"), Path("docs") / stem)
    args = STUDY.parse_args(["--protocol", "fmnist-gpu", "--doc", "d.md", "--runs", "r"])
    assert (args.runs, args.doc, args.out) == (Path("r"), Path("d.md"), Path("docs/study-protocol-gpu"))


def test_runs_of_another_protocol_are_one_line_exit_2_and_nothing_written(tmp_path):
    doc = tmp_path / "study-protocol.md"
    shutil.copyfile(REPO / "docs" / "study-protocol.md", doc)
    proc = run("--runs", "docs/leaderboard/fmnist-gpu/runs", "--doc", str(doc), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "is a cpu protocol" in proc.stderr, proc.stderr
    assert doc.read_bytes() == (REPO / "docs" / "study-protocol.md").read_bytes() and not (tmp_path / "out").exists()


def test_a_doc_without_a_region_is_one_line_exit_2_and_nothing_written(tmp_path):
    text = (REPO / "docs" / "study-protocol.md").read_text()
    begin = text.index("<!-- precise:begin -->")
    broken = text[:begin] + text[text.index("<!-- precise:end -->") + len("<!-- precise:end -->"):]
    doc = tmp_path / "study-protocol.md"
    doc.write_text(broken)
    proc = run("--doc", str(doc), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "precise:begin" in proc.stderr, proc.stderr
    assert proc.stdout == "" and doc.read_text() == broken and not (tmp_path / "out").exists()


def test_the_precise_reading_follows_the_intervals():
    sys.path.insert(0, str(REPO / "scripts"))
    from study_protocol_doc import precise_reading

    assert precise_reading([]).startswith("No mix runs")
    down = precise_reading([("bn", -60.0, -70.0, -50.0), ("iebn", -30.0, -50.0, -10.0)])
    assert "lowers* the mix accuracy of 2 of 2 layers (by 30.0 to 60.0 points" in down and "recovers" not in down
    assert "lowers* the mix accuracy of 1 of 1 layer (by 61.4 points, every" in precise_reading([("bn", -61.4, -86.0,
                                                                                                 -36.8)])
    mixed = precise_reading([("bn", 5.0, 1.0, 9.0), ("iebn", 0.1, -1.0, 1.2)])
    assert "recovers accuracy for `bn`" in mixed and "1 layer(s) show no difference" in mixed and "lowers" not in mixed


def test_precise_on_mixed_batches_is_a_column_where_runs_recorded_it():
    """Paired by run: PreciseBN on mixed batches minus the trained statistics' accuracy, with a t interval."""
    import numpy as np
    from scipy import stats

    sys.path.insert(0, str(REPO / "scripts"))
    from study_protocol_doc import precise, precise_mixed_reading

    final, clean_b, mixed_b = [90.0, 91.0, 89.0, 90.5], [30.0, 25.0, 40.0, 20.0], [89.8, 90.9, 88.8, 90.3]
    recs = [{"final_acc": f, "precise_acc": c, "precise_mixed_acc": m} for f, c, m in zip(final, clean_b, mixed_b)]
    old = {("mix", "bn"): [{k: v for k, v in r.items() if k != "precise_mixed_acc"} for r in recs]}
    assert "mixed batches" not in "\n".join(precise(old))  # runs from before it: the table as it was
    lines = precise({("mix", "bn"): recs})
    assert lines[0].endswith("| PreciseBN, mixed batches | mixed − trained [95% CI] |")
    d = np.array(mixed_b) - np.array(final)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    want = f" {np.mean(mixed_b):.2f} (4) | {d.mean():+.2f} [{d.mean() - half:+.2f}, {d.mean() + half:+.2f}] |"
    assert lines[2].endswith(want), lines[2]
    assert "On mixed batches, PreciseBN stays within a point" in lines[-1] and "`bn`" in lines[-1]
    far = precise_mixed_reading([("iebn", -5.0, -8.0, -2.0)])
    assert far.startswith("On mixed batches it still moves `iebn` by -5.00 [-8.00, -2.00]")
    wide = precise_mixed_reading([("bn", -0.5, -6.0, 5.0), ("iebn", 0.2, -0.4, 0.8)])
    assert "for `bn` the mixed-batch interval is too wide to say either (-0.50 [-6.00, +5.00])" in wide
    assert "within ±1) for `iebn`:" in wide and "moves" not in wide
    assert precise_mixed_reading([]).startswith("No mix runs")


def test_with_no_runs_an_older_report_in_the_out_dir_is_removed(tmp_path):
    """A study whose runs are gone writes "No runs yet." and takes the older report's tables and plots
    out of its out dir (they would contradict the doc); its claims are rewritten, other files stay."""
    out = tmp_path / "out"
    shutil.copytree(REPO / "docs" / "study-protocol", out)
    (out / "notes.txt").write_text("mine")
    doc = tmp_path / "study-protocol.md"
    shutil.copyfile(REPO / "docs" / "study-protocol.md", doc)
    before = sorted(p.name for p in out.iterdir())
    proc = run("--runs", str(tmp_path / "mistyped"), "--doc", str(doc), "--out", str(out))  # no such dir
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == before  # a path that is no runs dir removes nothing
    (tmp_path / "no-runs").mkdir()
    proc = run("--runs", str(tmp_path / "no-runs"), "--doc", str(doc), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["claims.csv", "claims.md", "notes.txt"]
    text = doc.read_text()
    plots = text[text.index("<!-- plots:begin -->"):text.index("<!-- plots:end -->")]
    assert "No runs yet." in plots and ".png" not in plots
