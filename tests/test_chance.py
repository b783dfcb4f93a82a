"""Chance-level results (#25): a run whose final accuracy is within noise of always predicting the test
set's most frequent class, or that predicts a single class, is flagged wherever its result is shown: its
line, its record, the summaries, the report (columns, verdicts, box plots) and the leaderboard.
Expectations are computed here: from the test labels written to disk, the binomial bound by hand."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from noiseattack import chance, zoo
from noiseattack.datasets import DATASETS
from noiseattack.report import build_rows, collect, find_experiment_dirs
from noiseattack.report.claims import Claim, evaluate
from noiseattack.report.plots import box_plot
from test_leaderboard import FMNIST
from test_leaderboard import record as board_record
from test_leaderboard import write_runs
from test_report import record as report_record
from test_report import write_exp

REPO = Path(__file__).resolve().parents[1]

# A layer whose output is zero: the model's logits are the last layer's bias, the same for every image,
# so it predicts one class for the whole test set whatever it trains on.
ZERO = '''
import torch.nn as nn


class Zero(nn.Module):
    """BatchNorm2d times 0: nothing of the input gets through."""

    def __init__(self, channels):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return self.bn(x) * 0.0
'''


@pytest.fixture
def zero_layer(tmp_path, monkeypatch):
    pkg = tmp_path / "work" / "chancelayers"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "layers.py").write_text(textwrap.dedent(ZERO))
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.syspath_prepend(str(tmp_path / "work"))
    yield "chancelayers.layers:Zero"
    for name in [m for m in sys.modules if m.startswith("chancelayers")]:
        del sys.modules[name]
    zoo.resolve.cache_clear()


def labels_on_disk(data: Path) -> np.ndarray:
    """The labels of the fake MNIST's test split, as written to disk (idx format: 8 header bytes)."""
    return np.frombuffer((data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes()[8:], np.uint8)


def bound(share: float, n: int) -> float:
    """p + 3 * sqrt(p (1 - p) / n), in percent: the binomial bound, written out."""
    p = share / 100
    return 100 * (p + 3 * math.sqrt(p * (1 - p) / n))


# --------------------------------------------------------------------------- the definition


def test_threshold_against_a_hand_computation():
    # FashionMNIST's balanced test set: p = 0.1, n = 10000: sqrt(0.09 / 10000) = 0.003, 3 of it = 0.9 points
    assert chance.threshold(10.0, 10_000) == pytest.approx(10.9, abs=1e-12)
    # n = 1000: 3 * sqrt(0.09 / 1000) = 0.0284605 -> 12.84605 %
    assert chance.threshold(10.0, 1000) == pytest.approx(12.84605, abs=1e-5)
    # MNIST's largest class: 1135 of 10000
    assert chance.threshold(11.35, 10_000) == pytest.approx(11.35 + 300 * math.sqrt(0.1135 * 0.8865 / 10_000))
    m = chance.measure(42.0, [3, 5, 2], [0, 10, 0])  # 10 images, the largest class 5 of them, all predicted 1
    assert m == {"majority_share": 50.0, "n_test": 10, "threshold": round(50 + 300 * math.sqrt(0.25 / 10), 4),
                 "at_chance": True, "top_pred_share": 100.0, "single_class": True}
    assert chance.measure(98.0, [3, 5, 2], [3, 5, 2])["at_chance"] is False


def test_a_record_without_the_field_is_judged_from_the_registry():
    cfg = {"dataset": "fmnist", "test_subset": None}
    old = {"status": "finished", "final_acc": 10.0, "config": cfg}
    j = chance.judge(old)
    assert j["at_chance"] is True and j["single_class"] is None and j["measured"] is False
    assert j["threshold"] == pytest.approx(10.9)
    assert chance.judge({**old, "final_acc": 10.95})["at_chance"] is False
    subset = chance.judge({**old, "final_acc": 12.8, "config": {**cfg, "test_subset": 1000}})
    assert subset["n_test"] == 1000 and subset["at_chance"] is True  # 12.8 <= 12.846
    assert chance.judge({**old, "final_acc": None}) is None  # a diverged run: nothing to judge
    measured = {**old, "final_acc": 30.0, "chance": chance.measure(30.0, [8, 2], [10, 0])}
    assert chance.judge(measured)["at_chance"] is True  # the record's own measurement comes first


def test_the_registry_knows_the_real_splits(shared_data):
    """The test split's size and largest class (the chance level) and the training split's size
    (what `sweep --cost-from` scales by) are those of the real files."""
    import gzip

    def labels(folder: str, split: str) -> np.ndarray:
        return np.frombuffer(gzip.open(shared_data / folder / "raw" / f"{split}-labels-idx1-ubyte.gz").read()[8:], np.uint8)

    for name, folder in (("mnist", "MNIST"), ("fmnist", "FashionMNIST")):
        counts = np.bincount(labels(folder, "t10k"))
        info = DATASETS[name]
        assert (info.test_images, info.test_largest_class) == (counts.sum(), counts.max())
        assert info.train_images == len(labels(folder, "train"))


# --------------------------------------------------------------------------- the run's line, record, summaries


def test_a_run_that_learns_nothing_is_flagged_in_its_line_record_and_summaries(zero_layer, fake_mnist, tmp_path,
                                                                               capsys):
    data = fake_mnist(n_train=64, n_test=48)
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "clean", "--dataset", "mnist", "--norm", f"{zero_layer},bn", "--repeats", "2",
                             "--depth", "8", "--width", "0.25", "--epochs", "1", "--batch-size", "16", "--device",
                             "cpu", "--no-progress", "--data-dir", data, "--runs-dir", runs)
    assert code == 0, err
    (exp,) = [d for d in runs.iterdir() if d.is_dir()]
    records = [json.loads(line) for line in (exp / "results.jsonl").read_text().splitlines()]
    labels = labels_on_disk(data)
    share = 100 * np.bincount(labels).max() / len(labels)
    limit = bound(share, len(labels))
    for r in records:
        c = r["chance"]
        assert c["n_test"] == len(labels) == 48
        assert c["majority_share"] == pytest.approx(share, abs=1e-4)
        assert c["threshold"] == pytest.approx(limit, abs=1e-4)
        assert c["at_chance"] == (r["final_acc"] <= limit)
        assert "chance" not in r["config"]  # a result, not part of the run's identity
    zero = [r for r in records if r["norm"].startswith("chancelayers")]
    assert len(zero) == 2
    text = " ".join(out.split())
    for r in zero:  # constant logits: one class for every test image, so its share of them, at most the majority's
        assert r["chance"]["single_class"] and r["chance"]["top_pred_share"] == 100.0
        assert r["chance"]["at_chance"] and r["final_acc"] <= share + 1e-9
        assert (f"{r['norm']} seed {r['seed']}: final {r['final_acc']:.2f}% (at chance: majority class {share:.2f}%; "
                f"one class predicted for 100.0% of the test images)") in text
    header, *rows = (exp / "summary.csv").read_text().splitlines()
    assert header == "norm,n,mean,std,var,min,max,diverged,at_chance"
    got = {row.split(",")[0]: int(row.split(",")[-1]) for row in rows}
    flagged = {n: sum(1 for r in records if r["norm"] == n and (r["final_acc"] <= limit or r["chance"]["single_class"]))
               for n in got}
    assert got == flagged and got[zero[0]["norm"]] == 2
    md = (exp / "summary.md").read_text()
    assert f"| {zero[0]['norm']} | 2 | " in md and "†" in md and "† a mean with runs at chance" in md
    assert "† a mean with runs at chance" in text  # under the table the command prints


def test_a_test_subset_is_judged_on_its_own_labels(zero_layer, fake_mnist, tmp_path, capsys):
    from noiseattack.data import load_datasets

    data = fake_mnist(n_train=64, n_test=100)
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "clean", "--dataset", "mnist", "--norm", zero_layer, "--repeats", "1",
                             "--test-subset", "40", "--depth", "8", "--width", "0.25", "--epochs", "1",
                             "--batch-size", "16", "--device", "cpu", "--no-progress", "--data-dir", data,
                             "--runs-dir", runs)
    assert code == 0, err
    (exp,) = [d for d in runs.iterdir() if d.is_dir()]
    (rec,) = [json.loads(line) for line in (exp / "results.jsonl").read_text().splitlines()]
    subset = load_datasets(["mnist"], data)["mnist"].test.subset(40).labels.numpy()
    share = 100 * np.bincount(subset).max() / 40
    assert rec["chance"]["n_test"] == 40 and rec["chance"]["majority_share"] == pytest.approx(share)
    assert rec["chance"]["threshold"] == pytest.approx(bound(share, 40), abs=1e-4)


def test_a_sweep_line_and_its_table_mark_runs_at_chance(zero_layer, fake_mnist, tmp_path, capsys, log_file_output):
    data = fake_mnist(n_train=64, n_test=32)
    grid = tmp_path / "grid.toml"
    grid.write_text(textwrap.dedent(f"""\
        [train]
        dataset = "mnist"
        depth = 8
        width = 0.25
        epochs = 1
        batch_size = 32
        device = "cpu"
        data_dir = "{data}"
        runs_dir = "{tmp_path / 'runs'}"

        [grid]
        norms = ["{zero_layer}"]
        seeds = [0]

        [[attack]]
        kind = "clean"
        """))
    code, out, err = run_cli(capsys, "sweep", grid, "--no-progress")
    assert code == 0, err
    (exp,) = [d for d in (tmp_path / "runs").iterdir() if d.is_dir()]
    (rec,) = [json.loads(line) for line in (exp / "results.jsonl").read_text().splitlines()]
    share = 100 * np.bincount(labels_on_disk(data)).max() / 32
    text = " ".join(out.split())
    assert f"seed 0: final {rec['final_acc']:.2f}% (at chance: majority class {share:.2f}%; one class" in text
    assert "at chance" in text and "† a mean with runs at chance" in text
    code, out, err = run_cli(capsys, "sweep", grid, "--dry-run")
    assert code == 0, err
    assert f"final {rec['final_acc']:.2f}% (at chance: majority class {share:.2f}%; one class" in " ".join(out.split())


# --------------------------------------------------------------------------- the report


def _report_csv(capsys, runs: Path, out: Path) -> list[dict]:
    code, text, err = run_cli(capsys, "report", runs, "--out", out, "--format", "csv", "--no-plots")
    assert code == 0, err
    return list(csv.DictReader(io.StringIO(text)))


def test_a_comparison_of_two_sides_at_chance_is_not_informative(tmp_path, capsys):
    """MNIST (registry: largest test class 11.35%, so at chance up to 12.30% on 10,000 images): a layer that
    predicts a minority class (~5%) against a BN at the majority's ~10% differs significantly (Welch), and
    says nothing about either layer. Under another setting only BN sits at chance: tested, and marked."""
    runs = tmp_path / "runs"
    limit = bound(11.35, 10_000)
    bn_chance, low = [9.0, 9.5, 10.0, 10.5, 11.0], [5.0, 5.2, 5.4, 5.6, 5.8]
    assert max(bn_chance + low) <= limit
    write_exp(runs, "a", [report_record("bn", s, v) for s, v in enumerate(bn_chance)]
              + [report_record("gn", s, v) for s, v in enumerate(low)])
    write_exp(runs, "b", [report_record("bn", s, v, alpha=3.0) for s, v in enumerate(bn_chance)]
              + [report_record("gn", s, v, alpha=3.0) for s, v in enumerate([60.0, 61.0, 62.0, 63.0, 64.0])])
    rows = _report_csv(capsys, runs, tmp_path / "out")
    both = next(r for r in rows if r["norm"] == "gn" and r["setting"] == "a2_b1")
    one = next(r for r in rows if r["norm"] == "gn" and r["setting"] == "a3_b1")
    assert float(both["welch_p_holm"]) < 0.05  # the test still runs: significant, and meaningless
    assert both["accuracy_verdict"] == both["stability_verdict"] == "not informative (both at chance)"
    assert both["at_chance"] == "5" and one["at_chance"] == "0"
    assert one["accuracy_verdict"] == "better than BN (BN at chance)"
    assert all(r["at_chance"] == "5" for r in rows if r["norm"] == "bn")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| gn | 5 | 0 | 0 | 5 | 5.40† |" in md and "**at chance** (†" in md
    overview = (tmp_path / "out" / "overview.md").read_text()
    assert "5.40† ± 0.32 (5) |" in overview  # no ▼: not informative
    assert "62.00 ± 1.58 (5)▲" in overview and "† a mean with runs at chance" in overview


def test_claims_whose_cells_all_sit_at_chance_are_not_informative():
    at = [{"final_acc": v, "status": "finished", "config": {"dataset": "fmnist"}} for v in (5.0, 5.5, 6.0, 6.5)]
    up = [{"final_acc": v, "status": "finished", "config": {"dataset": "fmnist"}} for v in (80.0, 81.0, 82.0, 83.0)]
    cells = {("x", "bn"): at, ("x", "gn"): [{**r, "final_acc": r["final_acc"] + 3} for r in at], ("y", "gn"): up}
    rows = evaluate([Claim("c1", "q", "gn above bn at x", "mean", (("x", "gn"), ("x", "bn")), (1, -1)),
                     Claim("c2", "q", "gn above bn, y vs x", "mean", (("y", "gn"), ("x", "bn")), (1, -1))], cells)
    assert rows[0]["p"] < 0.05 and rows[0]["reading"] == "not informative (every cell at chance)"
    assert rows[1]["reading"] == "supported (1 of 2 cells at chance)"


def test_the_box_plot_draws_the_chance_line(tmp_path):
    runs = tmp_path / "runs"
    write_exp(runs, "a", [report_record("bn", s, v) for s, v in enumerate([9.0, 9.5, 10.0])]
              + [report_record("gn", s, v) for s, v in enumerate([60.0, 61.0, 62.0])])
    write_exp(runs, "c", [report_record("bn", s, v, attack="clean") for s, v in enumerate([90.0, 91.0, 92.0])])
    groups, _ = collect(find_experiment_dirs([runs]))
    constant = [g for g in groups if g.key.attack == "constant"]
    ax = box_plot(constant, "t", "setting").axes[0]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [11.35, 11.35]  # MNIST's majority class
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "chance: majority\nclass, 11.35%" in labels
    assert f"at chance: up to\n{bound(11.35, 10_000):.2f}% (3 s.e.)" in labels  # the shaded band's entry
    clean_ax = box_plot([g for g in groups if g.key.attack == "clean"], "t", "setting").axes[0]
    assert not [line for line in clean_ax.get_lines() if line.get_linestyle() == "--"]  # no run at chance: no line
    assert all("chance" not in t.get_text() for t in clean_ax.get_legend().get_texts())
    assert {r["norm"]: r["at_chance"] for r in build_rows(constant)} == {"bn": 3, "gn": 0}


# --------------------------------------------------------------------------- the leaderboard


def test_the_committed_leaderboard_marks_its_run_at_chance(tmp_path, capsys):
    committed = REPO / "docs" / "leaderboard" / "fmnist" / "runs"
    records = [json.loads(line) for f in committed.rglob("results.jsonl") for line in f.read_text().splitlines()]
    # FashionMNIST's full test set, 1000 images per class: at chance up to 10 + 0.9 points
    expected = {}
    for r in records:
        if r["status"] == "finished" and r["config"]["test_subset"] is None:
            key = (r["norm"], r["experiment"].split("-")[0])
            expected[key] = expected.get(key, 0) + (r["final_acc"] <= 10.9)
    assert expected.get(("ln", "clean")), "the committed ln clean run at 10.00% is gone: pick another example"
    code, _, err = run_cli(capsys, "leaderboard", "--runs-dir", committed, "--out", tmp_path)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO((tmp_path / "leaderboard.csv").read_text())))
    got = {(r["layer"], r["setting"]): int(r["at_chance"]) for r in rows if int(r["n"])}
    assert got == expected
    md = (tmp_path / "leaderboard.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    (ln,) = [line for line in table if "| `ln` |" in line]
    assert ")†" in ln  # its clean cell
    assert sum(line.count(")†") for line in table) == sum(1 for v in expected.values() if v)
    assert "† a cell with runs at chance" in md
    assert "† a cell with runs at chance" in (tmp_path / "leaderboard.html").read_text()


def test_the_leaderboard_marks_no_difference_between_two_cells_at_chance(tmp_path, capsys):
    limit = bound(10.0, 10_000)
    accs = {("bn", "constant"): [9.6, 9.9, 10.0, 10.2, 10.4], ("iebn", "constant"): [6.0, 6.1, 6.2, 6.3, 6.4],
            ("bn", "clean"): [91.5, 91.2, 91.7, 91.4, 91.1], ("iebn", "clean"): [85.0, 85.5, 85.2, 85.3, 85.1]}
    assert max(accs[("bn", "constant")] + accs[("iebn", "constant")]) <= limit
    runs = write_runs(tmp_path / "runs", [board_record(FMNIST, n, s, seed, v) for (n, s), vals in accs.items()
                                          for seed, v in enumerate(vals)])
    code, md, err = run_cli(capsys, "leaderboard", "--runs-dir", runs, "--out", tmp_path / "out")
    assert code == 0, err
    rows = {(r["layer"], r["setting"]): r for r in csv.DictReader(io.StringIO(
        (tmp_path / "out" / "leaderboard.csv").read_text()))}
    at = rows[("iebn", "constant")]
    assert float(at["welch_p_holm"]) < 0.05 and at["marks"] == "" and at["at_chance"] == "5"
    assert rows[("iebn", "clean")]["marks"] == "▼" and rows[("iebn", "clean")]["at_chance"] == "0"
    text = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "6.20 ± 0.16 (5)† |" in text and "10.02 ± 0.30 (5)† |" in text


def test_a_lower_variance_that_is_a_collapse_to_chance_is_no_stability():
    """A layer stuck at chance barely varies: its variance test against a BN that trained says "lower", and
    that is a collapse, not stability, so no "more stable" and no ◆ (the accuracy verdict stands). A layer
    that collapses in some seeds only varies more than BN: that is instability, and keeps its ◆."""
    from noiseattack.leaderboard.board import marks as board_marks
    from noiseattack.report import stats as S
    from noiseattack.report.overview import marks as overview_marks

    trained = [85.0, 80.0, 88.0, 78.0, 90.0, 83.0]
    stuck = [10.0, 10.0, 10.0, 10.0, 10.0, 10.1]
    cmp = S.compare(stuck, trained, chance=(True, False))
    assert cmp["var_p"] < 0.05 and cmp["welch_p"] < 0.05
    assert cmp["stability_verdict"] == "stability not informative (the lower variance is this layer's runs at chance)"
    assert cmp["accuracy_verdict"] == "worse than BN (this layer at chance)"
    assert board_marks(cmp) == overview_marks(cmp) == "▼"
    bn_stuck = S.compare(trained, stuck, chance=(False, True))  # the same, BN the collapsed side
    assert bn_stuck["stability_verdict"] == "stability not informative (the lower variance is BN's runs at chance)"
    assert board_marks(bn_stuck) == overview_marks(bn_stuck) == "▲"

    steady = [85.0, 85.5, 86.0, 84.5, 85.2, 85.8, 85.1, 85.1]
    flaky = [10.0, 10.0, 10.0, 10.5, 11.0, 40.0, 60.0, 85.0]  # mostly at chance (as flagged), the higher variance
    cmp = S.compare(flaky, steady, chance=(True, False))
    assert cmp["var_p"] < 0.05 and cmp["stability_verdict"] == "less stable (this layer at chance)"
    assert board_marks(cmp).endswith("◆") and overview_marks(cmp).endswith("◆")


def test_a_variance_claim_whose_lower_variance_is_a_collapse_is_not_stability():
    """A claim "BN varies more than gn" where gn sits at chance (barely varying) reads 'stability not
    informative', not 'supported'; where the collapsed cell has the higher variance, it still reads."""
    rec = lambda v: {"final_acc": v, "status": "finished", "config": {"dataset": "fmnist"}}  # noqa: E731
    spread = [rec(v) for v in (85.0, 80.0, 88.0, 78.0, 90.0, 83.0)]
    stuck = [rec(v) for v in (10.0, 10.0, 10.0, 10.0, 10.0, 10.1)]
    steady = [rec(v) for v in (85.0, 85.5, 86.0, 84.5, 85.2, 85.8, 85.1, 85.1)]
    flaky = [rec(v) for v in (5.0, 7.0, 9.0, 10.0, 10.9, 40.0, 70.0, 90.0)]  # 5 of 8 at chance (fmnist: <= 10.9)
    cells = {("x", "bn"): spread, ("x", "gn"): stuck, ("y", "bn"): steady, ("y", "gn"): flaky}
    rows = evaluate([Claim("v1", "q", "BN varies more than gn at x", "var", (("x", "bn"), ("x", "gn"))),
                     Claim("v2", "q", "gn varies more than BN at y", "var", (("y", "gn"), ("y", "bn")))], cells)
    assert rows[0]["p"] < 0.05 and rows[0]["reading"] == (
        "stability not informative (the lower variance is a collapse to chance) (1 of 2 cells at chance)")
    assert rows[1]["p"] < 0.05 and rows[1]["reading"] == "supported (1 of 2 cells at chance)"
