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
    for (attack, norm), values in accs.items():
        row = next(r for r in rows if r["norm"] == norm)
        s = names[attack]
        assert float(row[f"{s} mean"]) == pytest.approx(np.mean(values))
        assert float(row[f"{s} std"]) == pytest.approx(np.std(values, ddof=1))
        assert int(row[f"{s} n"]) == len(values)
        mark = ""
        if norm != "bn" and len(values) >= 3:
            ref = accs[(attack, "bn")]
            if stats.ttest_ind(values, ref, equal_var=False).pvalue < 0.05:
                mark += "▲" if np.mean(values) > np.mean(ref) else "▼"
            if stats.levene(values, ref, center="median").pvalue < 0.05:
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
