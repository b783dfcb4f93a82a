"""The report against a swept training option (width here), on tiny synthetic results: grouping,
values recomputed here, the plot, and nothing new for reports without a sweep."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from noiseattack import report as R
from noiseattack.config import Attack, RunConfig, TrainConfig
from noiseattack.fileio import append_jsonl

from test_report import PNG_SIGNATURE, runs, write_exp


def width_record(norm, seed, width, test_acc, train_acc, attn_placement="norm"):
    train = TrainConfig(dataset="fmnist", attack=Attack.clean, depth=8, width=width, epochs=3, train_subset=600,
                        milestones=(1, 2), attn_placement=attn_placement)
    run = RunConfig(train, norm, seed)
    history = [{"epoch": e, "lr": 0.1, "train_loss": 1.0, "train_acc": train_acc - 3 + e, "test_loss": 1.0,
                "test_acc": test_acc - 3 + e} for e in range(1, 4)]
    return {"key": run.key, "norm": norm, "seed": seed, "status": "finished", "final_acc": test_acc,
            "best_acc": test_acc, "diverged": None, "epochs_done": 3, "history": history, "config": run.to_dict()}


def test_report_groups_by_a_swept_width(tmp_path):
    rng = np.random.default_rng(0)
    truth = {}
    for width in (0.5, 1, 2):
        for norm in ("bn", "bn+cbam"):
            test = 70 + 5 * np.log2(width) + rng.normal(0, 1, 3)
            train = test + 10 * width + rng.normal(0, 0.5, 3)
            truth[(width, norm)] = (test, train)
            write_exp(tmp_path / "runs", f"clean-w{width}",
                      [width_record(norm, s, width, float(test[s]), float(train[s])) for s in range(3)])
    out = tmp_path / "out"
    rep = R.build_report([tmp_path / "runs"], out)
    assert [s.option for s in rep.sweeps] == ["width"] and rep.sweeps[0].values == [0.5, 1, 2]
    rows = list(csv.DictReader(io.StringIO((out / "sweeps.csv").read_text())))
    assert [(r["value"], r["norm"]) for r in rows] == [(v, n) for v in ("0.5", "1", "2") for n in ("bn", "bn+cbam")]
    for r in rows:
        test, train = truth[(float(r["value"]) if r["value"] == "0.5" else int(r["value"]), r["norm"])]
        assert float(r["mean"]) == pytest.approx(test.mean())
        assert float(r["std"]) == pytest.approx(test.std(ddof=1))
        assert float(r["train_mean"]) == pytest.approx(train.mean())
        assert float(r["gap_mean"]) == pytest.approx((train - test).mean())
        assert float(r["gap_std"]) == pytest.approx((train - test).std(ddof=1))
    pngs = [sorted(out.glob(f"{stem}_*.png")) for stem in ("sweep", "sweep-curves")]
    md = (out / "report.md").read_text()
    assert "## Against a swept training option" in md
    for found in pngs:
        assert len(found) == 1 and found[0].read_bytes()[:8] == PNG_SIGNATURE and f"]({found[0].name})" in md
    assert "| width | norm | n | mean | std | train acc | train − test (mean ± std) |" in md


def test_attention_once_per_block_is_a_row_beside_the_same_setting_s_layers(tmp_path):
    """bn+cbam trained with attn_placement "block" is the row `bn+cbam (per block)` of the setting
    without the option: one width sweep of three rows, compared with BN like any layer."""
    rng = np.random.default_rng(2)
    truth = {}
    for width in (0.5, 1):
        for norm, placement, label in (("bn", "norm", "bn"), ("bn+cbam", "norm", "bn+cbam"),
                                       ("bn+cbam", "block", "bn+cbam (per block)")):
            test = 70 + rng.normal(0, 1, 3)
            truth[(width, label)] = test
            write_exp(tmp_path / ("runs-block" if placement == "block" else "runs"), f"clean-w{width}",
                      [width_record(norm, s, width, float(test[s]), float(test[s]) + 5, placement) for s in range(3)])
    rep = R.build_report([tmp_path / "runs", tmp_path / "runs-block"], tmp_path / "out", plots=False)
    (sweep,) = rep.sweeps
    rows = R.sweeps.sweep_rows(sweep)
    assert [(r["value"], r["norm"]) for r in rows] == [(w, n) for w in (0.5, 1)
                                                       for n in ("bn", "bn+cbam", "bn+cbam (per block)")]
    for r in rows:
        assert r["mean"] == pytest.approx(truth[(r["value"], r["norm"])].mean())
    per_block = [row for row in rep.rows if row["norm"] == "bn+cbam (per block)"]
    assert len(per_block) == 2 and all(row["variant"] == "" for row in rep.rows)
    for width, model in ((0.5, "resnet8w0.5-n600-e3"), (1, "resnet8-n600-e3")):  # compared with the same width's bn
        (row,) = [row for row in per_block if row["model"] == model]
        assert row["diff_vs_bn"] == pytest.approx(truth[(width, "bn+cbam (per block)")].mean()
                                                  - truth[(width, "bn")].mean())


def test_one_block_placement_experiment_compares_per_block_attention_with_its_bn(tmp_path):
    """`--norm bn,bn+cbam --attn-placement block`: bn (the same network under either placement) is the
    reference of bn+cbam (per block); with bn also trained under the default placement and the same
    seeds, each (bn, seed) counts once."""
    write_exp(tmp_path / "runs", "block", [width_record("bn", s, 1, 70.0 + s, 80.0, "block") for s in range(3)]
              + [width_record("bn+cbam", s, 1, 60.0 + 2 * s, 80.0, "block") for s in range(3)])
    rep = R.build_report([tmp_path / "runs"], plots=False)
    assert [(row["norm"], row["n"], row["variant"]) for row in rep.rows] == [("bn", 3, ""), ("bn+cbam (per block)", 3, "")]
    assert rep.rows[1]["diff_vs_bn"] == pytest.approx(62.0 - 71.0)
    write_exp(tmp_path / "runs", "norm", [width_record("bn", s, 1, 70.0 + s, 80.0) for s in range(3)])
    rep = R.build_report([tmp_path / "runs"], plots=False)
    assert [(row["norm"], row["n"]) for row in rep.rows] == [("bn", 3), ("bn+cbam (per block)", 3)]
    assert any("counted once" in w for w in rep.warnings)


def test_of_twin_runs_a_finished_one_counts_before_a_diverged_one(tmp_path):
    """bn seed 0 diverged under one placement and finished under the other (one network, one seed):
    the finished run counts, whichever dir is read first."""
    diverged = width_record("bn", 0, 1, 10.0, 10.0)
    diverged.update(status="diverged", final_acc=None)
    for first, second in (("a", "b"), ("b", "a")):
        root = tmp_path / first
        write_exp(root / first, "x", [diverged, width_record("bn", 1, 1, 71.0, 80.0), width_record("bn", 2, 1, 72.0, 80.0)])
        write_exp(root / second, "y", [width_record("bn", 0, 1, 70.0, 80.0, "block")])
        rep = R.build_report([root], plots=False)
        (row,) = rep.rows
        assert (row["n"], row["diverged"], row["mean"]) == (3, 0, pytest.approx(71.0))


def test_no_sweep_no_change(tmp_path):
    write_exp(tmp_path / "runs", "a", runs("bn", [80.0, 81.0, 82.0]) + runs("iebn", [90.0, 91.0, 92.0]))
    write_exp(tmp_path / "runs", "b", runs("bn", [70.0, 71.0, 72.0], alpha=5.0, beta=2.0))  # another attack setting
    rep = R.build_report([tmp_path / "runs"], tmp_path / "out", plots=False)
    assert rep.sweeps == [] and not (tmp_path / "out" / "sweeps.csv").exists()
    assert "swept" not in (tmp_path / "out" / "report.md").read_text()


def test_sweep_curves_draw_train_and_test_per_epoch_for_each_value(tmp_path):
    """One panel per width; per norm a solid test line and a dashed train line whose points are the
    means over seeds at each epoch, recomputed here from the records written."""
    rng = np.random.default_rng(1)
    written = {}
    for width in (0.25, 1):
        for norm in ("bn", "bn+cbam"):
            test = 60 + rng.normal(0, 2, 4)
            train = test + 20 * width
            recs = [width_record(norm, s, width, float(test[s]), float(train[s])) for s in range(4)]
            written[(width, norm)] = recs
            write_exp(tmp_path / "runs", f"clean-w{width}", recs)
    rep = R.build_report([tmp_path / "runs"], plots=False)
    (sweep,) = rep.sweeps
    fig = R.sweeps.sweep_curves_plot(sweep, "t")
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["width = 0.25", "width = 1"]
    for ax, width in zip(axes, (0.25, 1)):
        lines = [ln for ln in ax.get_lines()]
        assert len(lines) == 4  # test and train, for each of the two norms
        for norm, (test_line, train_line) in zip(("bn", "bn+cbam"), zip(lines[::2], lines[1::2])):
            recs = written[(width, norm)]
            for line, metric, style in ((test_line, "test_acc", "-"), (train_line, "train_acc", "--")):
                expect = [np.mean([r["history"][e][metric] for r in recs]) for e in range(3)]
                assert list(line.get_xdata()) == [1, 2, 3] and line.get_linestyle() == style
                assert np.allclose(line.get_ydata(), expect)


def test_prune_removes_only_the_plots_this_report_did_not_write(tmp_path):
    write_exp(tmp_path / "runs", "a", runs("bn", [80.0, 81.0, 82.0]))
    out = tmp_path / "out"
    out.mkdir()
    old = ["box_old.pdf", "box_old.png", "curves_old.svg", "sweep-curves_old.png", "sweep_old.svg"]
    for name in old + ["figure.png", "notes.txt"]:
        (out / name).write_text("x")
    assert R.build_report([tmp_path / "runs"], out, plots=False).prune(out) == []  # no plots drawn: nothing to judge by
    rep = R.build_report([tmp_path / "runs"], out)
    assert rep.prune(out) == [out / n for n in sorted(old)]
    left = sorted(f.name for f in out.iterdir())
    assert {"figure.png", "notes.txt"} <= set(left) and not any("old" in n for n in left)
    assert sorted(n for n in left if n.endswith(".png") and n != "figure.png") == sorted(p.filename for p in rep.plots)
