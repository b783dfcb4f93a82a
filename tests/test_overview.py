"""`overview.md`/`overview.csv`: the numbers equal the per-run results they summarize, recomputed
here; the significance marks follow the tests; the parameter count is the model's, counted here."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from scipy import stats

from noiseattack import overview
from noiseattack import report as R
from noiseattack.models import cifar_resnet

from test_report import runs, write_exp
from test_stats import holm_reference, perm_p_scipy


def make_runs_dir(tmp_path):
    rng = np.random.default_rng(0)
    accs = {
        ("clean", "bn"): list(70 + rng.normal(0, 0.5, 4)),
        ("clean", "bn+eca"): list(71 + rng.normal(0, 0.5, 4)),
        ("clean", "gn"): list(60 + rng.normal(0, 0.5, 4)),
        ("constant", "bn"): list(30 + rng.normal(0, 8, 4)),
        ("constant", "bn+eca"): list(32 + rng.normal(0, 8, 4)),
        ("constant", "gn"): list(65 + rng.normal(0, 0.3, 4)),
        ("mix", "bn"): list(69 + rng.normal(0, 0.5, 3)),
        ("mix", "gn"): [61.0, 62.0],  # n < 3: no mark
    }
    kw = {"clean": {}, "constant": {}, "mix": {"extra": "fmnist", "k": 32}}
    for (attack, norm), values in accs.items():
        write_exp(tmp_path / "runs", f"{attack}-{norm}", runs(norm, values, attack=attack, **kw[attack]))
    return accs


def test_overview_csv_equals_the_runs_it_summarizes(tmp_path):
    accs = make_runs_dir(tmp_path)
    rep = R.build_report([tmp_path / "runs"], tmp_path / "out", plots=False)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "overview.csv").read_text())))
    assert [r["norm"] for r in rows] == ["bn", "gn", "bn+eca"]  # the registry's order
    names = {"clean": "clean", "constant": "constant a2_b1", "mix": "mix fmnist_k32"}
    # the marks: Welch and the permutation test of variances, each family Holm-adjusted across the
    # report's comparisons against BN (those with at least 3 runs on both sides)
    tested = [(attack, norm) for (attack, norm), v in accs.items() if norm != "bn" and len(v) >= 3]
    welch = holm_reference([stats.ttest_ind(accs[c], accs[(c[0], "bn")], equal_var=False).pvalue for c in tested])
    var = holm_reference([perm_p_scipy(accs[c], accs[(c[0], "bn")]) for c in tested])
    adjusted = {c: (p, q) for c, p, q in zip(tested, welch, var)}
    for (attack, norm), values in accs.items():
        row = next(r for r in rows if r["norm"] == norm)
        s = names[attack]
        assert float(row[f"{s} mean"]) == pytest.approx(np.mean(values))
        assert float(row[f"{s} std"]) == pytest.approx(np.std(values, ddof=1))
        assert int(row[f"{s} n"]) == len(values)
        mark = ""
        if (attack, norm) in adjusted:
            p, q = adjusted[(attack, norm)]
            if p < 0.05:
                mark += "▲" if np.mean(values) > np.mean(accs[(attack, "bn")]) else "▼"
            if q < 0.05:
                mark += "◆"
        assert row[f"{s} vs_bn"] == mark
    assert next(r for r in rows if r["norm"] == "gn")["constant a2_b1 vs_bn"].startswith("▲")
    assert all(r["mix fmnist_k32 mean"] == "" for r in rows if r["norm"] == "bn+eca")  # not run
    for r in rows:  # ResNet-8 on MNIST (10 classes), counted here
        expected = sum(p.numel() for p in cifar_resnet(8, 10, r["norm"]).parameters())
        assert int(r["params"]) == expected
    md = (tmp_path / "out" / "overview.md").read_text()
    assert "| norm | params | clean | constant a2_b1 | mix fmnist_k32 |" in md
    assert rep.overview and "▲" in md


def test_overview_regenerates_from_a_report_csv(tmp_path):
    make_runs_dir(tmp_path)
    rep = R.build_report([tmp_path / "runs"], tmp_path / "out", plots=False)
    again = overview.build(overview.read_report_csv((tmp_path / "out" / "report.csv").read_text()))
    assert overview.to_csv(again) == (tmp_path / "out" / "overview.csv").read_text()
    assert overview.to_markdown(again) == overview.to_markdown(rep.overview)


def _row(norm, **p):
    base = {"dataset": "mnist", "model": "resnet8-e3", "variant": "", "attack": "constant", "setting": "a2_b1",
            "norm": norm, "n": "5", "mean": "80.0", "std": "1.0", "diff_vs_bn": "1.0" if norm != "bn" else ""}
    return {**base, **p}


def test_marks_use_the_holm_columns_and_an_old_report_csv_is_adjusted_here():
    new = [_row("bn", welch_p="", welch_p_holm="", var_p="", var_p_holm="", bf_p=""),
           _row("in", welch_p="0.01", welch_p_holm="0.02", var_p="0.01", var_p_holm="0.02", bf_p="0.9"),
           _row("iebn", welch_p="0.03", welch_p_holm="0.06", var_p="0.03", var_p_holm="0.06", bf_p="0.001")]
    cells = {r["norm"]: r["cells"]["constant a2_b1"]["vs_bn"] for r in overview.build(new, params=False)[0]["rows"]}
    assert cells == {"bn": "", "in": "▲◆", "iebn": ""}  # raw 0.03 < 0.05, adjusted 0.06: no mark
    assert "permutation test" in overview.to_markdown(overview.build(new, params=False))
    # a report.csv from before the Holm columns: Welch p 0.01 and 0.03 -> Holm 0.02 and 0.03;
    # Brown-Forsythe p 0.9 and 0.001 -> Holm 0.9 and 0.002
    old = [{k: v for k, v in r.items() if k not in ("welch_p_holm", "var_p", "var_p_holm")} for r in new]
    tables = overview.build(old, params=False)
    cells = {r["norm"]: r["cells"]["constant a2_b1"]["vs_bn"] for r in tables[0]["rows"]}
    assert cells == {"bn": "", "in": "▲", "iebn": "▲◆"}
    assert "Brown–Forsythe test: this report.csv predates the permutation test" in overview.to_markdown(tables)


def test_the_zoo_check_doc_regenerates_from_its_committed_runs(tmp_path):
    """docs/zoo-check.md's two commands, run on a copy of its committed per-run results, write its
    report, overview, plots and doc byte for byte."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from conftest import assert_same_plots, copy_run_records

    root = Path(__file__).resolve().parents[1]
    committed = root / "docs" / "zoo-check"
    if not any(committed.glob("runs/*/results.jsonl")):
        pytest.skip("no committed results in docs/zoo-check/runs")
    copy_run_records(committed / "runs", tmp_path, root)
    shutil.copyfile(root / "docs" / "zoo-check.md", tmp_path / "docs" / "zoo-check.md")
    env = {**os.environ, "PYTHONPATH": str(root)}  # this checkout's package
    for cmd in ([sys.executable, "-m", "noiseattack", "report", "docs/zoo-check/runs", "--out", "docs/zoo-check"],
                [sys.executable, str(root / "scripts" / "overview.py"), "docs/zoo-check/report.csv", "--doc",
                 "docs/zoo-check.md"]):
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
    out = tmp_path / "docs" / "zoo-check"
    for name in ("report.md", "report.csv", "overview.md", "overview.csv"):
        assert (out / name).read_bytes() == (committed / name).read_bytes(), name
    assert (tmp_path / "docs" / "zoo-check.md").read_bytes() == (root / "docs" / "zoo-check.md").read_bytes()
    assert_same_plots(out, committed)
