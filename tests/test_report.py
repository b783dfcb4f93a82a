"""`noiseattack report`: the statistics against independent computations, the verdicts, the
bookkeeping of diverged and unfinished runs, and the command end to end on a tiny real runs dir."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from noiseattack import report as R
from noiseattack.cli import app
from noiseattack.config import Attack, RunConfig, TrainConfig
from noiseattack.fileio import append_jsonl

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- synthetic runs dirs


def record(norm: str, seed: int, final_acc: float | None, *, experiment: str = "exp", attack: str = "constant",
           alpha: float = 2.0, beta: float = 1.0, extra: str | None = None, k: int = 0, epochs: int = 3,
           lr: float = 0.1, train_subset: int | None = None, augment: bool = True) -> dict:
    """A results.jsonl record shaped as experiment.execute writes it; final_acc None = diverged."""
    if attack != "constant":
        alpha, beta = 1.0, 0.0
    train = TrainConfig(dataset="mnist", attack=Attack(attack), alpha=alpha, beta=beta, extra=extra, k=k, depth=8,
                        epochs=epochs, lr=lr, train_subset=train_subset, milestones=(1, 2), augment=augment)
    run = RunConfig(train, norm, seed)
    diverged = final_acc is None
    n_hist = epochs - 1 if diverged else epochs
    end = 50.0 if diverged else final_acc
    history = [{"epoch": e, "lr": lr, "train_loss": 1.0 / e, "train_acc": 50.0 + e, "test_loss": 1.0 / e,
                "test_acc": end * e / epochs} for e in range(1, n_hist + 1)]
    if not diverged:
        history[-1]["test_acc"] = final_acc
    return {"key": run.key, "experiment": experiment, "norm": norm, "seed": seed,
            "status": "diverged" if diverged else "finished", "final_acc": final_acc,
            "best_acc": max((h["test_acc"] for h in history), default=None),
            "diverged": {"epoch": epochs, "lr": lr} if diverged else None, "epochs_done": len(history),
            "history": history, "config": run.to_dict()}


def write_exp(root: Path, name: str, records: list[dict]) -> Path:
    d = root / name
    for r in records:
        append_jsonl(d / "results.jsonl", {**r, "experiment": name})
    return d


def runs(norm: str, accs: list[float | None], **kw) -> list[dict]:
    return [record(norm, seed, acc, **kw) for seed, acc in enumerate(accs)]


def row(rep: R.Report, norm: str, **match) -> dict:
    found = [r for r in rep.rows if r["norm"] == norm and all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (norm, match, rep.rows)
    return found[0]


# --------------------------------------------------------------------------- statistics


def test_describe_matches_a_hand_computed_sample():
    d = R.describe([1, 2, 3, 4, 5])
    t_975_4 = 2.7764451051977987  # from a t table: 97.5% quantile, 4 degrees of freedom
    half = t_975_4 * math.sqrt(2.5) / math.sqrt(5)
    assert d["n"] == 5
    assert d["mean"] == pytest.approx(3.0, abs=1e-15)
    assert d["std"] == pytest.approx(math.sqrt(2.5), rel=1e-14)
    assert d["var"] == pytest.approx(2.5, rel=1e-14)
    assert d["ci95_low"] == pytest.approx(3 - half, rel=1e-12)
    assert d["ci95_high"] == pytest.approx(3 + half, rel=1e-12)
    assert (d["min"], d["max"]) == (1.0, 5.0)
    one = R.describe([7.0])
    assert one["mean"] == 7.0 and one["std"] is None and one["ci95_low"] is None
    assert R.describe([])["mean"] is None


def test_welch_p_matches_the_formula_and_a_published_example():
    # Published R output (t.test(ts1, ts2), the Welch test by default):
    #   t = -1.8325, df = 17.9, p-value = 0.08356
    ts1 = [11, 9, 10, 11, 10, 12, 9, 11, 12, 9]
    ts2 = [11, 13, 10, 13, 12, 9, 11, 12, 12, 11]
    n1, n2 = len(ts1), len(ts2)
    m1, m2 = sum(ts1) / n1, sum(ts2) / n2
    v1 = sum((x - m1) ** 2 for x in ts1) / (n1 - 1)
    v2 = sum((x - m2) ** 2 for x in ts2) / (n2 - 1)
    t = (m1 - m2) / math.sqrt(v1 / n1 + v2 / n2)  # Welch's t
    df = (v1 / n1 + v2 / n2) ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))  # Welch-Satterthwaite
    p_formula = 2 * stats.t.sf(abs(t), df)

    got_t, got_p = R.welch_test(ts1, ts2)
    assert got_t == pytest.approx(t, rel=1e-12)
    assert got_p == pytest.approx(p_formula, rel=1e-10)
    assert t == pytest.approx(-1.8325, abs=5e-5) and df == pytest.approx(17.9, abs=5e-2)
    assert got_p == pytest.approx(0.08356, abs=5e-6)
    assert R.compare(ts1, ts2)["welch_p"] == got_p


def test_brown_forsythe_matches_the_formula():
    a = [80.0, 80.2, 79.9, 80.1, 79.7, 80.4]
    b = [70.0, 90.0, 75.0, 85.0, 60.0, 95.0, 80.0]
    groups = [a, b]
    z = [[abs(x - float(np.median(g))) for x in g] for g in groups]
    n = sum(len(g) for g in groups)
    zbar = [sum(zi) / len(zi) for zi in z]
    zall = sum(sum(zi) for zi in z) / n
    between = sum(len(zi) * (m - zall) ** 2 for zi, m in zip(z, zbar))
    within = sum((x - m) ** 2 for zi, m in zip(z, zbar) for x in zi)
    w = (n - 2) / (2 - 1) * between / within
    got_w, got_p = R.variance_test(a, b)
    assert got_w == pytest.approx(w, rel=1e-12)
    assert got_p == pytest.approx(stats.f.sf(w, 1, n - 2), rel=1e-10)


# --------------------------------------------------------------------------- verdicts


HIGH = [90.0, 91.0, 92.0, 90.5, 91.5]
LOW = [80.0, 81.0, 82.0, 80.5, 81.5]
TIGHT = [80.0, 80.1, 79.9, 80.05, 79.95, 80.02]
LOOSE = [60.0, 100.0, 70.0, 90.0, 75.0, 85.0]


def test_compare_verdicts_flip():
    assert R.compare(HIGH, LOW)["accuracy_verdict"] == "better than BN"
    assert R.compare(LOW, HIGH)["accuracy_verdict"] == "worse than BN"
    same = R.compare(LOW, list(LOW))
    assert same["accuracy_verdict"] == "no significant difference (p=1.000)"
    assert same["stability_verdict"] == "stability not distinguishable (p=1.000)"
    assert R.compare(TIGHT, LOOSE)["stability_verdict"] == "more stable"
    assert R.compare(LOOSE, TIGHT)["stability_verdict"] == "less stable"
    assert R.compare(TIGHT, LOOSE)["accuracy_verdict"].startswith("no significant difference (p=")
    small = R.compare([1.0, 2.0], HIGH)
    assert small["accuracy_verdict"] == small["stability_verdict"] == R.NOT_MEANINGFUL
    assert small["welch_p"] is None and small["bf_p"] is None
    assert R.compare(HIGH, [1.0, 2.0])["accuracy_verdict"] == R.NOT_MEANINGFUL


def test_report_verdicts_per_row(tmp_path):
    write_exp(tmp_path, "a", runs("bn", LOW) + runs("iebn", HIGH) + runs("in", list(LOW)) + runs("bnse", [85.0, 86.0]))
    write_exp(tmp_path, "b", runs("bn", LOOSE, alpha=5, beta=2) + runs("iebn", TIGHT, alpha=5, beta=2))
    write_exp(tmp_path, "c", runs("bn", TIGHT, alpha=0.5, beta=0) + runs("iebn", LOOSE, alpha=0.5, beta=0)
              + runs("in", LOW, alpha=0.5, beta=0))
    rep = R.build_report([tmp_path], plots=False)
    assert row(rep, "bn", setting="a2_b1")["accuracy_verdict"] == "reference"
    assert row(rep, "iebn", setting="a2_b1")["accuracy_verdict"] == "better than BN"
    assert row(rep, "iebn", setting="a2_b1")["diff_vs_bn"] == pytest.approx(10.0)
    assert row(rep, "in", setting="a2_b1")["accuracy_verdict"].startswith("no significant difference")
    bnse = row(rep, "bnse", setting="a2_b1")
    assert bnse["accuracy_verdict"] == bnse["stability_verdict"] == R.NOT_MEANINGFUL
    assert bnse["ci95_low"] is None and bnse["welch_p"] is None and bnse["mean"] == pytest.approx(85.5)
    assert row(rep, "iebn", setting="a5_b2")["stability_verdict"] == "more stable"
    assert row(rep, "iebn", setting="a0.5_b0")["stability_verdict"] == "less stable"
    # Holm changes this one (it was "less stable" unadjusted). The five permutation p-values of the
    # report: 2/924 twice (TIGHT against LOOSE and back: the observed split and its mirror are the
    # two most extreme of C(12, 6) = 924), 4/210 for LOW against TIGHT here (LOW's 5 runs leave 4
    # residuals besides its median's 0: C(10, 4) = 210 splits, 4 as extreme as the observed),
    # 1 twice (LOW and HIGH against LOW: the same spread). Holm: 5·2/924 = 0.0108, 4·2/924 = 0.0087
    # (kept at 0.0108), 3·4/210 = 0.057 > 0.05: not significant after adjustment.
    in_c = row(rep, "in", setting="a0.5_b0")
    assert in_c["var_p"] == pytest.approx(4 / 210) and in_c["var_p_holm"] == pytest.approx(3 * 4 / 210)
    assert in_c["stability_verdict"] == "stability not distinguishable (p=0.057)"
    assert row(rep, "iebn", setting="a0.5_b0")["var_p_holm"] == pytest.approx(5 * 2 / 924)
    # rows in order: settings by (alpha, beta), norms bn, in, bnse, iebn
    assert [(r["setting"], r["norm"]) for r in rep.rows][:5] == [
        ("a0.5_b0", "bn"), ("a0.5_b0", "in"), ("a0.5_b0", "iebn"), ("a2_b1", "bn"), ("a2_b1", "in")]


def test_bn_with_too_few_runs_makes_every_row_not_meaningful(tmp_path):
    write_exp(tmp_path, "a", runs("bn", [80.0, 81.0]) + runs("iebn", HIGH))
    rep = R.build_report([tmp_path], plots=False)
    assert row(rep, "bn")["accuracy_verdict"] == f"reference ({R.NOT_MEANINGFUL})"
    assert row(rep, "bn")["ci95_low"] is None
    assert row(rep, "iebn")["accuracy_verdict"] == R.NOT_MEANINGFUL
    assert row(rep, "iebn")["ci95_low"] is not None  # its own interval is still meaningful


def test_no_bn_in_a_setting(tmp_path):
    write_exp(tmp_path, "a", runs("iebn", HIGH))
    rep = R.build_report([tmp_path], plots=False)
    assert row(rep, "iebn")["accuracy_verdict"] == R.NO_REFERENCE and row(rep, "iebn")["diff_vs_bn"] is None


# --------------------------------------------------------------------------- bookkeeping


def test_diverged_and_unfinished_are_counted_not_in_the_statistics(tmp_path):
    d = write_exp(tmp_path, "a", runs("bn", [80.0, 81.0, 82.0, None]) + runs("iebn", [None, 90.0, 91.0, 92.0]))
    (d / "ckpt").mkdir()
    (d / "ckpt" / "iebn-s7.pt").write_bytes(b"x")  # a run in progress
    (d / "ckpt" / "bn-s0.pt").write_bytes(b"x")  # kept checkpoint of a recorded run: not unfinished
    rep = R.build_report([tmp_path], tmp_path / "out", plots=False)
    bn, iebn = row(rep, "bn"), row(rep, "iebn")
    assert (bn["n"], bn["diverged"], bn["unfinished"]) == (3, 1, 0)
    assert (iebn["n"], iebn["diverged"], iebn["unfinished"]) == (3, 1, 1)
    assert bn["mean"] == pytest.approx(81.0) and iebn["mean"] == pytest.approx(91.0)
    assert bn["seeds"] == "0 1 2" and iebn["seeds"] == "1 2 3"
    statuses = sorted((e["norm"], e["seed"], e["status"]) for e in rep.excluded)
    assert statuses == [("bn", 3, "diverged"), ("iebn", 0, "diverged"), ("iebn", 7, "unfinished")]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Runs not in the statistics" in md and "diverged in epoch 3" in md and "iebn-s7.pt" in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text())))
    assert [(r["norm"], r["n"], r["diverged"], r["unfinished"]) for r in rows] == [("bn", "3", "1", "0"),
                                                                                  ("iebn", "3", "1", "1")]


def test_an_experiment_whose_first_run_is_in_progress_is_shown(tmp_path):
    write_exp(tmp_path, "a", runs("bn", LOW))
    d = tmp_path / "b"
    (d / "ckpt").mkdir(parents=True)
    (d / "ckpt" / "iebn-s0.pt").write_bytes(b"x")
    setting = record("iebn", 0, 1.0, alpha=5, beta=2)["config"]
    (d / "config.json").write_text(json.dumps({"name": "b", "setting": setting}))
    rep = R.build_report([tmp_path], plots=False)
    r = row(rep, "iebn")
    assert (r["setting"], r["n"], r["unfinished"], r["mean"]) == ("a5_b2", 0, 1, None)
    assert r["accuracy_verdict"] == R.NO_REFERENCE


def test_runs_of_different_length_or_setting_are_not_pooled(tmp_path):
    write_exp(tmp_path, "short", runs("bn", LOW, epochs=3))
    write_exp(tmp_path, "long", runs("bn", HIGH, epochs=6))
    write_exp(tmp_path, "sub", runs("bn", HIGH, epochs=3, train_subset=100))
    write_exp(tmp_path, "lr", runs("bn", HIGH, epochs=3, lr=0.05))
    write_exp(tmp_path, "mix", runs("bn", LOW, attack="mix", extra="fmnist", k=32))
    write_exp(tmp_path, "clean", runs("bn", LOW, attack="clean"))
    write_exp(tmp_path / "copy", "short", runs("bn", LOW, epochs=3))  # the same runs again: counted once
    rep = R.build_report([tmp_path, tmp_path / "short"], plots=False)
    keys = {(r["model"], r["variant"], r["attack"], r["setting"]): r["n"] for r in rep.rows}
    assert keys == {
        ("resnet8-e3", "lr=0.1", "constant", "a2_b1"): 5,
        ("resnet8-e3", "lr=0.05", "constant", "a2_b1"): 5,
        ("resnet8-e6", "", "constant", "a2_b1"): 5,
        ("resnet8-n100-e3", "", "constant", "a2_b1"): 5,
        ("resnet8-e3", "lr=0.1", "mix", "fmnist_k32"): 5,
        ("resnet8-e3", "lr=0.1", "clean", "clean"): 5,
    }
    assert any("counted once" in w for w in rep.warnings)
    assert [r["attack"] for r in rep.rows if r["model"] == "resnet8-e3" and r["variant"] == "lr=0.1"] == [
        "clean", "constant", "mix"]


def test_runs_without_augmentation_are_their_own_variant(tmp_path):
    """A --no-augment experiment of the same model is never pooled with an augmented one: the variant
    says which is which (the augmented, whose records carry augment true, with its default)."""
    for subset in (100, 200):
        write_exp(tmp_path, f"aug{subset}", runs("bn", LOW, attack="clean", train_subset=subset))
        write_exp(tmp_path, f"noaug{subset}", runs("bn", HIGH, attack="clean", train_subset=subset, augment=False))
    assert record("bn", 0, 80.0, augment=False)["config"]["augment"] is False
    rep = R.build_report([tmp_path], plots=False)
    rows = {(r["model"], r["variant"]): (r["n"], r["mean"]) for r in rep.rows}
    assert rows == {(f"resnet8-n{n}-e3", f"augment={a}"): (5, pytest.approx(np.mean(HIGH if a == "False" else LOW)))
                    for n in (100, 200) for a in ("True", "False")}
    # the sweeps against the training-set size: one per augmentation, the unaugmented one labelled so
    labels = sorted(s.label() for s in rep.sweeps if s.option == "train_subset")
    assert labels == ["MNIST · ResNet-8, 3 epochs · clean", "MNIST · ResNet-8, 3 epochs, no augmentation · clean"]


def test_plots_are_pngs_with_safe_names(tmp_path):
    write_exp(tmp_path, "a", runs("bn", LOW) + runs("iebn", HIGH + [None]) + runs("in", [70.0]))
    write_exp(tmp_path, "b", runs("bn", LOW, alpha=-0.5, beta=1e6) + runs("iebn", HIGH, alpha=-0.5, beta=1e6))
    write_exp(tmp_path, "m", runs("bn", LOW, attack="mix", extra="fmnist", k=32)
              + runs("iebn", HIGH, attack="mix", extra="fmnist", k=32))
    out = tmp_path / "out"
    rep = R.build_report([tmp_path], out)
    names = sorted(p.filename for p in rep.plots)
    assert names == ["box_mnist_resnet8-e3_constant.png", "box_mnist_resnet8-e3_mix.png",
                     "curves_mnist_resnet8-e3_constant_a-0.5_b1e06.png", "curves_mnist_resnet8-e3_constant_a2_b1.png",
                     "curves_mnist_resnet8-e3_mix_fmnist_k32.png"]
    for n in names:
        data = (out / n).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5000
    assert (out / "report.md").read_text().count("](box_mnist") == 2


def test_missing_or_empty_dirs_raise(tmp_path):
    with pytest.raises(R.ReportError, match="does not exist"):
        R.build_report([tmp_path / "nope"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(R.ReportError, match="holds no results.jsonl"):
        R.build_report([tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the command


def test_cli_report_on_a_real_runs_dir(tmp_path, fake_mnist):
    data = fake_mnist(n_train=128, n_test=64)  # 2 steps of 64 per run: the machine is shared
    runs_dir = tmp_path / "runs"
    cli = CliRunner()
    res = cli.invoke(app, ["constant", "--dataset", "mnist", "--data-dir", str(data), "--runs-dir", str(runs_dir),
                           "--norm", "bn,iebn", "--repeats", "3", "--epochs", "1", "--depth", "8",
                           "--batch-size", "64", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output

    res = cli.invoke(app, ["report", str(runs_dir)])
    assert res.exit_code == 0, res.stderr
    assert "| bn | 3 | 0 | 0 |" in res.stdout and "| iebn | 3 | 0 | 0 |" in res.stdout
    for name in ("report.md", "report.csv"):
        assert (runs_dir / name).is_file()
    rows = list(csv.DictReader(io.StringIO((runs_dir / "report.csv").read_text())))
    assert [(r["norm"], r["n"], r["setting"], r["model"]) for r in rows] == [
        ("bn", "3", "a2_b1", "resnet8-e1"), ("iebn", "3", "a2_b1", "resnet8-e1")]
    pngs = sorted(runs_dir.glob("*.png"))
    assert [p.name for p in pngs] == ["box_mnist_resnet8-e1_constant.png", "curves_mnist_resnet8-e1_constant_a2_b1.png"]
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5000

    out = tmp_path / "elsewhere"
    res = cli.invoke(app, ["report", str(runs_dir), "--out", str(out), "--format", "json", "--no-plots"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [r["norm"] for r in doc["rows"]] == ["bn", "iebn"] and doc["alpha"] == 0.05
    assert sorted(p.name for p in out.iterdir()) == ["overview.csv", "overview.md", "report.csv", "report.md"]

    res = cli.invoke(app, ["report", str(runs_dir), "--out", str(out), "--format", "csv", "--no-plots"])
    assert res.exit_code == 0 and res.stdout.startswith("dataset,model,variant,attack,setting,norm,n,")


@pytest.mark.parametrize("args", [["missing"], ["empty"], ["empty", "--format", "xml"]])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args):
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / args[0])] + args[1:]
    res = CliRunner().invoke(app, ["report", *args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("noiseattack: error: ")
    assert not (tmp_path / "out").exists() and list((tmp_path / "empty").iterdir()) == []


def test_plot_titles_formats_and_dpi(tmp_path):
    write_exp(tmp_path / "runs", "a", runs("bn", LOW) + runs("iebn", HIGH))
    out = tmp_path / "out"
    rep = R.build_report([tmp_path / "runs"], out, plot_formats=["svg", "pdf"], dpi=80)
    box = next(p for p in rep.plots if p.kind == "box")
    assert box.title.startswith("MNIST · ResNet-8, full training set, 3 epochs")
    assert "resnet8-e3" not in box.title
    for stem in ("box_mnist_resnet8-e3_constant", "curves_mnist_resnet8-e3_constant_a2_b1"):
        assert (out / f"{stem}.png").read_bytes()[:8] == PNG_SIGNATURE
        assert b"<svg" in (out / f"{stem}.svg").read_bytes()[:500]
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    from PIL import Image

    small = Image.open(out / "box_mnist_resnet8-e3_constant.png").size
    R.build_report([tmp_path / "runs"], out, plot_formats=["png"], dpi=160)
    big = Image.open(out / "box_mnist_resnet8-e3_constant.png").size
    assert big[0] == pytest.approx(2 * small[0], rel=0.02)  # twice the dpi, twice the pixels
    for kw, message in [({"plot_formats": ["gif"]}, "unknown plot format 'gif'"), ({"dpi": 5}, "dpi must be in")]:
        with pytest.raises(R.ReportError, match=message):
            R.build_report([tmp_path / "runs"], tmp_path / "never", **kw)
    assert not (tmp_path / "never").exists()


def test_report_without_clean_runs_says_so(tmp_path):
    write_exp(tmp_path / "runs", "a", runs("bn", LOW) + runs("iebn", HIGH))
    rep = R.build_report([tmp_path / "runs"], None, plots=False)
    assert any("no clean runs for mnist · resnet8-e3" in w and "clean reference is missing" in w for w in rep.warnings)
    write_exp(tmp_path / "runs", "c", runs("bn", LOW, attack="clean") + runs("iebn", HIGH, attack="clean"))
    rep = R.build_report([tmp_path / "runs"], None, plots=False)
    assert not any("no clean runs" in w for w in rep.warnings)


def test_a_study_report_of_some_layers_keeps_their_records_only(tmp_path):
    """build_study_report(..., norms=...): the records of those layers (a name or several), torn lines
    kept for the report's usual warning, an experiment dir without any of them left out, and a filter
    that keeps nothing refused with a ReportError."""
    from noiseattack.report import ReportError
    from noiseattack.report.claims import build_study_report

    runs = Path(__file__).resolve().parents[1] / "docs" / "leaderboard" / "fmnist" / "runs"
    clean, constant = runs / "clean-fmnist-resnet20w0.5-e3-noaug-linear", runs / "constant-a2-b1-fmnist-resnet20w0.5-e3-noaug-linear"
    if not (clean / "results.jsonl").exists() or not (constant / "results.jsonl").exists():
        pytest.skip("no committed fmnist leaderboard runs")
    def records(d: Path) -> list[dict]:
        return [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines() if line.strip()]

    recs = records(clean)
    bn = [r for r in recs if r["norm"] == "bn" and r["status"] == "finished"][:3]
    iebn = [r for r in recs if r["norm"] == "iebn" and r["status"] == "finished"][:2]
    assert len(bn) == 3 and len(iebn) == 2
    for src, lines in ((clean, [json.dumps(r) for r in bn + iebn] + ["", '{"torn": ']),
                       (constant, [json.dumps(r) for r in records(constant) if r["norm"] == "iebn"][:1])):
        (tmp_path / src.name).mkdir()
        (tmp_path / src.name / "results.jsonl").write_text("\n".join(lines) + "\n")
        shutil.copyfile(src / "config.json", tmp_path / src.name / "config.json")
    report = build_study_report(tmp_path, None, norms="bn")
    assert {(r["norm"], r["n"]) for r in report.rows} == {("bn", 3)}
    assert [Path(d).name for d in report.sources] == [clean.name]  # the dir without bn runs is left out
    assert any("torn or corrupt line" in w for w in report.warnings)
    both = build_study_report(tmp_path, None, norms=["bn", "iebn"])
    assert sorted((r["setting"], r["norm"], r["n"]) for r in both.rows) == [
        ("a2_b1", "iebn", 1), ("clean", "bn", 3), ("clean", "iebn", 2)]
    with pytest.raises(ReportError, match="no runs of ln in"):
        build_study_report(tmp_path, None, norms=["ln"])
