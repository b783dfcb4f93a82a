"""Protocols, `noiseattack bench` and `noiseattack leaderboard` (#20): definitions, the calibration
check, the board's statistics against values recomputed here from the records, the files, the page,
and the refusals."""

import csv
import html
import io
import json
import math
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from scipy import stats

from noiseattack import leaderboard as L
from noiseattack import protocols as P
from noiseattack.config import RunConfig, default_name, resolve_train_config
from noiseattack.leaderboard import bench as B

REPO = Path(__file__).resolve().parents[1]
FMNIST = P.get("fmnist")


def record(proto, norm, setting, seed, acc, *, cpu="Test CPU", threads=1, status="finished", precise=None, wall=100.0,
           device=None):
    cfg = proto.train_config(setting, "cpu")
    run = RunConfig(cfg, norm, seed)
    hist = [{"epoch": e + 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 80.0, "test_loss": 1.0,
             "test_acc": acc - (cfg.epochs - 1 - e)} for e in range(cfg.epochs)]
    return {"key": run.key, "experiment": default_name(cfg), "norm": norm, "seed": seed, "status": status, "final_acc": acc,
            "best_acc": acc, "diverged": None, "precise_acc": precise, "wall_time_s": wall, "epochs_done": cfg.epochs,
            "history": hist, "config": {**run.to_dict(), "device": device or proto.device},
            "layer": {"origin": "noiseattack", "description": norm},
            "machine": {"device": device or proto.device, "cpu": cpu, "cpu_capability": "AVX512", "threads": threads}}


def write_runs(root: Path, records) -> Path:
    for r in records:
        d = root / r["experiment"]
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "results.jsonl", "a") as f:
            f.write(json.dumps(r) + "\n")
    return root


ACC = {("bn", "clean"): [91.5, 91.2, 91.7, 91.4, 91.1], ("bn", "constant"): [85.0, 86.8, 84.5, 84.6, 87.0],
       ("bn", "mix"): [90.7, 89.8, 89.0, 90.1, 89.5], ("iebn", "clean"): [90.0, 91.0, 90.9, 90.5, 90.7],
       ("iebn", "constant"): [90.7, 90.9, 90.9, 91.0, 90.6], ("iebn", "mix"): [90.0, 88.9, 89.3, 89.9, 89.6]}


@pytest.fixture
def board_runs(tmp_path):
    recs = [record(FMNIST, n, s, seed, v, precise=v + 0.5 if s == "mix" else None)
            for (n, s), vals in ACC.items() for seed, v in enumerate(vals)]
    return write_runs(tmp_path / "runs", recs)


# --------------------------------------------------------------------------- protocols


def test_fmnist_resolves_to_the_train_configs_it_claims():
    want = dict(dataset="fmnist", depth=20, width=0.5, epochs=3, batch_size=128, lr=0.1, momentum=0.9,
                weight_decay=1e-4, lr_schedule="linear", augment=False, device="cpu")
    assert FMNIST.train_config("clean", "cpu").identity() == resolve_train_config(**want).identity()
    assert FMNIST.train_config("constant", "cpu").identity() == resolve_train_config(
        **want, attack="constant", alpha=2, beta=1).identity()
    assert FMNIST.train_config("mix", "cpu").identity() == resolve_train_config(
        **want, attack="mix", extra="mnist-inverted", k=128).identity()
    assert FMNIST.device == "cpu" and FMNIST.threads == 1 and FMNIST.precision == "fp32" and FMNIST.seeds == 5
    keys = FMNIST.keys("iebn")
    assert len(keys) == 15 and set(keys.values()) == {(s, seed) for s in ("clean", "constant", "mix")
                                                       for seed in range(5)}
    gpu = P.get("fmnist-gpu")
    assert gpu.identities() == FMNIST.identities()  # the same recipe: the board, not the identity, holds the device


def test_protocols_command_lists_every_protocol(capsys):
    code, out, _ = run_cli(capsys, "protocols", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == list(P.PROTOCOLS)
    assert rows[0]["settings"][2] == {"id": "mix", "title": "mix mnist-inverted k=128", "attack": "mix",
                                      "extra": "mnist-inverted", "k": 128}


def test_protocols_costs_bn_runs_by_their_cpu_times_where_they_have_them(tmp_path, monkeypatch, capsys):
    """`protocols`' cost per run: BN's median CPU time per setting and machine kind where runs recorded
    one (wall times count the waits for a shared CPU), else its median wall time, and which."""
    from noiseattack.results import median_cost

    recs = [{**record(FMNIST, "bn", "clean", i, 91.0, wall=w), "cpu_time_s": c} for i, (w, c) in
            enumerate([(900.0, 250.0), (400.0, 260.0), (300.0, None)])]
    recs += [record(FMNIST, "bn", "constant", i, 85.0, wall=w) for i, w in enumerate([300.0, 500.0])]
    monkeypatch.setattr(P.Protocol, "runs_dir", lambda self: write_runs(tmp_path / "runs", recs))
    code, out, _ = run_cli(capsys, "protocols", "--format", "json")
    label = f"Test CPU (AVX512)"
    assert code == 0 and json.loads(out)[0]["cost"] == [f"bn clean 255 CPU-s on {label} (n=3)",
                                                        f"bn constant 400 wall s on {label} (n=2)"]
    assert median_cost([]) is None and median_cost([{"wall_time_s": 5.0}]) == (5.0, False)


# --------------------------------------------------------------------------- bench


def test_bench_dry_run_lists_the_protocol_runs_and_which_are_done(tmp_path, capsys):
    runs = write_runs(tmp_path / "runs", [record(FMNIST, "iebn", "constant", 2, 90.0, wall=3600.0)])
    code, out, err = run_cli(capsys, "bench", "--norm", "iebn", "--runs-dir", runs, "--dry-run")
    assert code == 0, err
    lines = [l for l in out.splitlines() if l.split()[0] in ("done", "pending", "partial", "diverged")]
    assert len(lines) == 15 and sum(l.startswith("done") for l in lines) == 1
    assert any(l.startswith("done") and "constant-a2-b1" in l and "iebn seed 2" in l for l in lines)
    assert "15 runs: 1 done, 0 diverged, 0 running, 0 partial (checkpointed), 14 pending (dry run" in out
    assert not (tmp_path / "calibration").exists()
    # what the rest costs: the 4 constant runs at the finished one's hour; clean and mix: nothing to go by
    assert "\nleft: 14 runs; 4 of them ≈ 4.0 h of run time (" in out and "; 10 with no finished run" in out


def test_calibration_accepts_runs_from_the_committed_distribution_and_rejects_a_shifted_one():
    rng = np.random.default_rng(0)
    committed = list(91.4 + 0.3 * rng.standard_normal(10))
    inside = B.calibration(committed, list(91.4 + 0.3 * rng.standard_normal(2)))
    assert inside.ok is True
    shifted = B.calibration(committed, [90.2, 90.4])  # 1.1 points below: about 4 standard errors
    assert shifted.ok is False and "OUTSIDE" in shifted.line()
    # the interval, written out: mean ± t(n-1) · s · sqrt(1/n + 1/k)
    x = np.array(committed)
    half = stats.t.ppf(0.975, 9) * x.std(ddof=1) * math.sqrt(1 / 10 + 1 / 2)
    assert (shifted.low, shifted.high) == pytest.approx((x.mean() - half, x.mean() + half))
    assert B.calibration([91.0], [91.0]).ok is None  # one committed run: no interval


def test_calibration_compares_with_every_committed_bn_clean_run(tmp_path):
    """The committed side is every finished BN clean run of the protocol (a board at n = 10 has seeds
    0-9, not only the protocol's 5); the local side those of the calibration seeds on this machine;
    other layers, settings and unfinished runs are passed over."""
    vals = [91.5, 91.2, 91.7, 91.4, 91.1, 91.0, 91.9, 91.3, 91.6, 91.2]
    recs = [record(FMNIST, "bn", "clean", seed, v, cpu="Kind A") for seed, v in enumerate(vals)]
    recs += [record(FMNIST, "bn", "mix", 0, 50.0), record(FMNIST, "iebn", "clean", 0, 50.0),
             {**record(FMNIST, "bn", "clean", 10, math.nan, status="diverged"), "diverged": {"epoch": 1, "lr": 0.1}}]
    runs = write_runs(tmp_path / "runs", recs)
    assert B.reference_values(FMNIST, runs) == vals
    assert B.reference_values(FMNIST, runs, seeds=(1, 3)) == [91.2, 91.4]
    assert B.reference_values(FMNIST, runs, machine="Kind A (AVX512)") == vals
    assert B.reference_values(FMNIST, runs, machine="Kind B (AVX512)") == []
    assert B.reference_values(FMNIST, tmp_path / "nowhere") == []


def test_bench_stops_where_the_machine_is_not_calibrated(tmp_path, capsys):
    here = B.this_machine("cpu")
    cpu, cap = here.rsplit(" (", 1)
    committed = [record(FMNIST, "bn", "clean", s, v) for s, v in enumerate([91.5, 91.2, 91.7, 91.4, 91.1])]
    runs = write_runs(tmp_path / "lb" / "runs", committed)
    calib = [record(FMNIST, "bn", "clean", s, 88.0, cpu=cpu) for s in B.CALIBRATION_SEEDS]
    for r in calib:
        r["machine"]["cpu_capability"] = cap.rstrip(")")
    write_runs(tmp_path / "lb" / "calibration", calib)
    code, out, err = run_cli(capsys, "bench", "--norm", "iebn", "--runs-dir", runs, "--no-progress")
    assert code == 2 and err.count("\n") == 1
    assert "OUTSIDE" in err and "--with-baselines" in err
    assert [p.name for p in runs.iterdir()] == ["clean-fmnist-resnet20w0.5-e3-noaug-linear"]  # nothing trained


# --------------------------------------------------------------------------- the board


def test_board_numbers_equal_statistics_recomputed_from_the_records(board_runs):
    board = L.build_leaderboard(FMNIST, [board_runs])
    iebn, bn = board.row("iebn"), board.row("bn")
    for s in ("clean", "constant", "mix"):
        a, b = np.array(ACC[("iebn", s)]), np.array(ACC[("bn", s)])
        c = iebn.cells[s]
        assert c.stats["mean"] == pytest.approx(a.mean()) and c.stats["std"] == pytest.approx(a.std(ddof=1))
        assert c.vs_bn["diff_vs_bn"] == pytest.approx(a.mean() - b.mean())
        assert c.vs_bn["welch_p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
        assert c.vs_bn["var_ratio"] == pytest.approx(a.var(ddof=1) / b.var(ddof=1))
    # Holm over the board's three mean comparisons
    p = sorted(stats.ttest_ind(np.array(ACC[("iebn", s)]), np.array(ACC[("bn", s)]), equal_var=False).pvalue
               for s in ("clean", "constant", "mix"))
    holm = [min(1, 3 * p[0]), max(min(1, 3 * p[0]), min(1, 2 * p[1]))]
    got = sorted(iebn.cells[s].vs_bn["welch_p_holm"] for s in ("clean", "constant", "mix"))
    assert got[:2] == pytest.approx(holm)
    drop = np.mean(ACC[("iebn", "constant")]) - np.mean(ACC[("iebn", "clean")])
    assert iebn.cells["constant"].drop["estimate"] == pytest.approx(drop)
    assert iebn.cells["mix"].precise["mean"] == pytest.approx(np.mean(ACC[("iebn", "mix")]) + 0.5)
    robust = {n: (np.mean(ACC[(n, "constant")]) + np.mean(ACC[(n, "mix")])) / 2 for n in ("bn", "iebn")}
    assert iebn.robust == pytest.approx(robust["iebn"]) and bn.robust == pytest.approx(robust["bn"])
    assert [r.layer for r in board.rows] == sorted(robust, key=lambda n: -robust[n])
    assert bn.step_cost == 1.0 and iebn.short == []


def test_a_cell_short_of_n_is_marked_in_its_precise_columns_too(tmp_path):
    """iebn with 3 of its 5 mix runs: the mix cell and its PreciseBN cell (the same runs re-evaluated)
    both say (3*), in the markdown and on the page; a full cell is unmarked."""
    from noiseattack.leaderboard.page import to_html
    from noiseattack.leaderboard.render import to_markdown

    recs = [record(FMNIST, n, s, seed, v, precise=v + 0.5 if s == "mix" else None)
            for (n, s), vals in ACC.items() for seed, v in enumerate(vals) if not (n == "iebn" and s == "mix" and seed > 2)]
    board = L.build_leaderboard(FMNIST, [write_runs(tmp_path / "runs", recs)])
    row = next(line for line in to_markdown(board).splitlines() if line.startswith("| ") and "`iebn`" in line)
    mix = np.array(ACC[("iebn", "mix")][:3])
    assert f"| {mix.mean():.2f} ± {mix.std(ddof=1):.2f} (3*) |" in row
    assert f"| {mix.mean() + 0.5:.2f} ± {mix.std(ddof=1):.2f} (3*) |" in row
    assert row.count("*") == 2 and "(5)" in row  # clean and constant: full
    page = to_html(board, L.HOW_TO_ADD)
    assert html.escape(f"{mix.mean() + 0.5:.2f} ± {mix.std(ddof=1):.2f} (3*)") in page


def test_a_layer_without_runs_in_an_attacked_setting_is_listed_unranked(tmp_path, capsys):
    """iebn with clean and constant runs but none under mix (a row the queue has not reached): its
    constant mean alone is not a robust accuracy, so it gets none and no rank, and is listed after the
    ranked layers; with one mix run (short of n) it is ranked again, on the mean of both attacks."""
    from noiseattack.leaderboard.render import to_csv, to_json, to_markdown

    recs = [record(FMNIST, n, s, seed, v) for (n, s), vals in ACC.items() for seed, v in enumerate(vals)
            if not (n == "iebn" and s == "mix")]
    runs = write_runs(tmp_path / "runs", recs)
    board = L.build_leaderboard(FMNIST, [runs])
    iebn, bn = board.row("iebn"), board.row("bn")
    assert (iebn.robust, iebn.rank) == (None, None)  # its constant mean, 90.82, would top BN's 88.25
    assert bn.rank == 1 and bn.robust == pytest.approx((np.mean(ACC[("bn", "constant")]) + np.mean(ACC[("bn", "mix")])) / 2)
    assert [r.layer for r in board.rows] == ["bn", "iebn"]
    row = next(line for line in to_markdown(board).splitlines() if "`iebn`" in line and line.startswith("| "))
    assert row.startswith("| – | `iebn` |")
    assert [r["rank"] for r in json.loads(to_json(board))["rows"] if r["layer"] == "iebn"] == [None]
    assert {r["robust_acc"] for r in csv.DictReader(io.StringIO(to_csv(board))) if r["layer"] == "iebn"} == {""}
    assert B.layer_lines(board, "iebn")[0] == "iebn: not ranked yet (no finished run under mix)"
    write_runs(runs, [record(FMNIST, "iebn", "mix", 0, 89.0)])
    iebn = L.build_leaderboard(FMNIST, [runs]).row("iebn")
    assert iebn.rank == 1 and iebn.robust == pytest.approx((np.mean(ACC[("iebn", "constant")]) + 89.0) / 2)


def diverged(proto, norm, setting, seed):
    r = record(proto, norm, setting, seed, math.nan, status="diverged")
    return {**r, "best_acc": 80.0, "diverged": {"epoch": 2, "lr": 0.1}}


def test_diverged_runs_are_shown_beside_n_count_as_done_and_stay_out_of_the_statistics(tmp_path):
    """iebn under constant: 3 finished and 2 diverged runs (seeds 3, 4): the cell's statistics are the
    3 finished runs', it reads `(3, 2 diverged)` with no `*` (all 5 seeds are done) and is not short;
    gn, every mix run diverged: `– (5 diverged)`, no robust accuracy, no rank; the legend says why."""
    from noiseattack.leaderboard.page import to_html
    from noiseattack.leaderboard.render import DIVERGED_LEGEND, to_markdown

    recs = [record(FMNIST, n, s, seed, v) for (n, s), vals in ACC.items() for seed, v in enumerate(vals)
            if not (n == "iebn" and s == "constant" and seed >= 3)]
    recs += [diverged(FMNIST, "iebn", "constant", seed) for seed in (3, 4)]
    recs += [record(FMNIST, "gn", s, seed, 88.0 + seed / 10) for s in ("clean", "constant") for seed in range(5)]
    recs += [diverged(FMNIST, "gn", "mix", seed) for seed in range(5)]
    board = L.build_leaderboard(FMNIST, [write_runs(tmp_path / "runs", recs)])
    iebn, gn = board.row("iebn"), board.row("gn")
    cell, finished = iebn.cells["constant"], np.array(ACC[("iebn", "constant")][:3])
    assert (len(cell.runs), cell.diverged, cell.done) == (3, 2, 5) and iebn.short == []
    assert cell.stats["mean"] == pytest.approx(finished.mean())
    assert cell.vs_bn["welch_p"] == pytest.approx(
        stats.ttest_ind(finished, np.array(ACC[("bn", "constant")]), equal_var=False).pvalue)
    md = to_markdown(board)
    row = next(line for line in md.splitlines() if "`iebn`" in line and line.startswith("| "))
    assert f"| {finished.mean():.2f} ± {finished.std(ddof=1):.2f} (3, 2 diverged)" in row and "*" not in row
    gn_row = next(line for line in md.splitlines() if "`gn`" in line and line.startswith("| "))
    assert gn_row.startswith("| – | `gn` |") and "| – (5 diverged) |" in gn_row and (gn.robust, gn.rank) == (None, None)
    assert gn.short == [] and DIVERGED_LEGEND in md and html.escape(DIVERGED_LEGEND) in to_html(board, L.HOW_TO_ADD)
    assert B.layer_lines(board, "gn")[0] == "gn: not ranked yet (no finished run under mix)"
    clean_only = [r for r in recs if r["status"] == "finished"]  # without the diverged runs: no legend
    assert DIVERGED_LEGEND not in to_markdown(L.build_leaderboard(FMNIST, [write_runs(tmp_path / "b", clean_only)]))


def test_step_cost_takes_bn_from_the_calibration_dir_where_the_board_has_no_bn_of_the_layers_machine_kind(tmp_path):
    """BN's board runs on one CPU kind, iebn's on another: no shared kind, no step cost. `noiseattack
    bench`'s calibration runs (BN clean, seeds 1000 and 1001, in calibration/ beside the runs dir) on
    iebn's kind give it one: iebn's median CPU time over theirs. They join no cell; a record there
    that is not a BN clean run of the protocol is passed over."""
    def timed(r, cpu_s):
        return {**r, "cpu_time_s": cpu_s}

    recs = [timed(record(FMNIST, "bn", s, seed, v, cpu="Kind A"), 250.0) for (n, s), vals in ACC.items()
            if n == "bn" for seed, v in enumerate(vals)]
    iebn_cpu = {"clean": [300.0, 310.0, 320.0, 330.0, 340.0], "constant": [305.0, 315.0, 325.0, 335.0, 345.0]}
    recs += [timed(record(FMNIST, "iebn", s, seed, v, cpu="Kind B"), iebn_cpu.get(s, [900.0] * 5)[seed])
             for (n, s), vals in ACC.items() if n == "iebn" for seed, v in enumerate(vals)]
    runs = write_runs(tmp_path / "lb" / "runs", recs)
    board = L.build_leaderboard(FMNIST, [runs])
    assert board.row("iebn").step_cost is None and board.row("bn").step_cost == 1.0
    write_runs(tmp_path / "lb" / "calibration",
               [timed(record(FMNIST, "bn", "clean", 1000, 91.3, cpu="Kind B"), 200.0),
                timed(record(FMNIST, "bn", "clean", 1001, 91.6, cpu="Kind B"), 220.0),
                timed(record(FMNIST, "bn", "mix", 1002, 90.0, cpu="Kind B"), 5.0),  # not clean: passed over
                timed(record(FMNIST, "iebn", "clean", 1003, 90.0, cpu="Kind B"), 5.0)])  # not BN: passed over
    board = L.build_leaderboard(FMNIST, [runs])
    want = np.median(iebn_cpu["clean"] + iebn_cpu["constant"]) / np.median([200.0, 220.0])
    assert board.row("iebn").step_cost == pytest.approx(want) and board.row("bn").step_cost == 1.0
    robust = (np.mean(ACC[("iebn", "constant")]) + np.mean(ACC[("iebn", "mix")])) / 2
    assert B.layer_lines(board, "iebn")[0] == (f"iebn on fmnist v1: rank 1 of 2 (robust accuracy {robust:.2f}%; "
                                               f"a run costs {want:.2f}x BN's)")
    assert len(board.row("bn").cells["clean"].runs) == 5 and board.records == len(recs)


def test_step_cost_is_the_median_cpu_time_ratio_of_runs_with_one_or_else_the_fastest_wall_time_ratio(tmp_path):
    walls = {"bn": [100.0, 300.0, 120.0], "iebn": [130.0, 520.0, 125.0]}
    cpus = {"bn": [95.0, 99.0, 97.0], "iebn": [118.0, 110.0, 121.0]}

    def board(with_cpu):
        recs = []
        for n in walls:
            for seed, (w, c) in enumerate(zip(walls[n], cpus[n])):
                r = record(FMNIST, n, "clean", seed, 90.0 + seed, wall=w)
                if with_cpu(n, seed):
                    r["cpu_time_s"] = c
                recs.append(r)
        root = write_runs(tmp_path / f"runs{len(list(tmp_path.iterdir()))}", recs)
        return {r.layer: r for r in L.build_leaderboard(FMNIST, [root]).rows}

    rows = board(lambda n, seed: True)
    assert rows["iebn"].step_cost == pytest.approx(118.0 / 97.0) and rows["bn"].step_cost == 1.0
    rows = board(lambda n, seed: not (n == "bn" and seed == 2))  # a run without it: the medians of the others
    assert rows["iebn"].step_cost == pytest.approx(118.0 / 97.0)
    rows = board(lambda n, seed: not (n == "bn" and seed == 1))
    assert rows["iebn"].step_cost == pytest.approx(118.0 / 96.0)
    rows = board(lambda n, seed: n == "iebn")  # BN's runs have none: wall times, the fastest
    assert rows["iebn"].step_cost == pytest.approx(125.0 / 100.0)


def test_step_cost_pools_clean_and_constant_runs_but_not_mix(tmp_path):
    """Constant runs take clean ones' steps: their fastest counts; mix runs (k more images per batch) do not."""
    walls = {("bn", "clean"): 300.0, ("bn", "constant"): 100.0, ("bn", "mix"): 50.0,
             ("iebn", "clean"): 400.0, ("iebn", "constant"): 120.0, ("iebn", "mix"): 20.0}
    recs = [record(FMNIST, n, s, 0, 90.0, wall=w) for (n, s), w in walls.items()]
    rows = {r.layer: r for r in L.build_leaderboard(FMNIST, [write_runs(tmp_path / "r", recs)]).rows}
    assert rows["iebn"].step_cost == pytest.approx(120.0 / 100.0)


def test_step_cost_on_a_gpu_board_reads_wall_times_even_with_cpu_times(tmp_path):
    gpu = P.get("fmnist-gpu")
    recs = []
    for n, walls, cpu in (("bn", [100.0, 90.0], 50.0), ("iebn", [99.0, 180.0], 10.0)):
        for seed, w in enumerate(walls):
            r = record(gpu, n, "clean", seed, 90.0, wall=w, device="cuda", cpu="Test CPU")
            r["machine"]["gpu"] = "Test GPU"
            recs.append({**r, "cpu_time_s": cpu})
    rows = {r.layer: r for r in L.build_leaderboard(gpu, [write_runs(tmp_path / "g", recs)]).rows}
    assert rows["iebn"].step_cost == pytest.approx(99.0 / 90.0)


def test_a_run_records_its_cpu_time_and_a_resume_keeps_counting(fake_mnist, tmp_path, capsys, monkeypatch):
    """cpu_time_s is the process's CPU time over the run: positive, and at one thread no more than its
    wall time (times the threads) plus a little; a run stopped and resumed still records it (the checkpoint keeps it)."""
    import json as _json

    data = fake_mnist(n_train=64, n_test=32)
    common = ["--dataset", "mnist", "--data-dir", data, "--depth", "8", "--width", "0.25", "--epochs", "2",
              "--batch-size", "16", "--device", "cpu", "--no-progress", "--norm", "bn", "--repeats", "1"]
    code, out, err = run_cli(capsys, "clean", *common, "--runs-dir", tmp_path / "a")
    assert code == 0, err
    (exp,) = list((tmp_path / "a").iterdir())
    (rec,) = map(_json.loads, (exp / "results.jsonl").read_text().splitlines())
    import torch

    assert 0 < rec["cpu_time_s"] <= rec["wall_time_s"] * torch.get_num_threads() * 1.2 + 0.5, rec

    from noiseattack.train import StopRequested, prepare_data, read_checkpoint, train_run

    cfg = resolve_train_config(dataset="mnist", depth=8, width=0.25, epochs=2, batch_size=16, device="cpu",
                               compile=False)
    run, prepared, ck = RunConfig(cfg, "bn", 0), prepare_data(cfg, data), tmp_path / "ck.pt"
    calls = iter(range(1000))
    with pytest.raises(StopRequested):
        train_run(run, prepared, checkpoint=ck, should_stop=lambda: next(calls) == 5)
    before = read_checkpoint(ck)["state"]["cpu_time_s"]
    assert before > 0
    payload = read_checkpoint(ck)
    import noiseattack.train as T

    class StoppedClock:  # the CPU clock does not move while the run resumes: it records what the checkpoint kept
        perf_counter = staticmethod(time.perf_counter)
        process_time = staticmethod(lambda: 777.0)

    monkeypatch.setattr(T, "time", StoppedClock)
    assert train_run(run, prepared, checkpoint=ck).cpu_time_s == round(before, 3)
    monkeypatch.undo()
    del payload["state"]["cpu_time_s"]  # a checkpoint written before it was kept
    torch.save(payload, ck)
    resumed = train_run(run, prepared, checkpoint=ck)
    assert resumed.status == "finished" and resumed.cpu_time_s is None


def test_the_mixed_batch_precise_column_appears_where_runs_recorded_it(tmp_path, capsys):
    """Runs from before precise_mixed_acc existed: no column; once some run holds it, a column of their mean."""
    recs = [record(FMNIST, n, s, seed, v, precise=v - 50 if s == "mix" else None)
            for (n, s), vals in ACC.items() for seed, v in enumerate(vals)]
    code, md, err = run_cli(capsys, "leaderboard", "--runs-dir", write_runs(tmp_path / "old", recs), "--out",
                            tmp_path / "o1")
    assert code == 0, err
    assert "PreciseBN on mixed batches" not in (tmp_path / "o1" / "leaderboard.md").read_text()
    for i, r in enumerate(recs):
        if r["norm"] == "iebn" and r["experiment"].startswith("mix"):
            r["precise_mixed_acc"] = r["final_acc"] - 0.25 * (1 + i % 2)
    code, md, err = run_cli(capsys, "leaderboard", "--runs-dir", write_runs(tmp_path / "new", recs), "--out",
                            tmp_path / "o2")
    assert code == 0, err
    mixed = [r["precise_mixed_acc"] for r in recs if "precise_mixed_acc" in r]
    table = [[c.strip() for c in ln.split("|")[1:-1]]
             for ln in (tmp_path / "o2" / "leaderboard.md").read_text().splitlines() if ln.startswith("| ")]
    at = table[0].index("mix, PreciseBN on mixed batches")
    rows = {r[1]: r for r in table[1:]}
    assert rows["`iebn`"][at] == f"{np.mean(mixed):.2f} ± {np.std(mixed, ddof=1):.2f} (5)"
    assert rows["`bn`"][at] == "–"
    csv_rows = list(csv.DictReader(open(tmp_path / "o2" / "leaderboard.csv")))
    got = {(r["layer"], r["setting"]): r for r in csv_rows}
    assert float(got[("iebn", "mix")]["precise_mixed_mean"]) == pytest.approx(np.mean(mixed), abs=1e-4)
    assert got[("bn", "mix")]["precise_mixed_n"] == "0"
    assert "PreciseBN on mixed batches" in (tmp_path / "o2" / "leaderboard.html").read_text()


def test_files_are_written_and_regenerate_identically(board_runs, tmp_path, capsys):
    out = tmp_path / "out"
    code, md, err = run_cli(capsys, "leaderboard", "--runs-dir", board_runs, "--out", out)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(L.FILES)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    run_cli(capsys, "leaderboard", "--runs-dir", board_runs, "--out", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert md == first["leaderboard.md"].decode() and "| 1 | `iebn` |" in md
    rows = list(__import__("csv").DictReader(first["leaderboard.csv"].decode().splitlines()))
    assert len(rows) == 6 and {r["layer"] for r in rows} == {"bn", "iebn"}
    doc = json.loads(first["leaderboard.json"])
    assert doc["protocol"]["name"] == "fmnist" and doc["rows"][0]["layer"] == "iebn"


@pytest.mark.parametrize("protocol", [p.name for p in P.PROTOCOLS.values()])
def test_the_committed_leaderboard_regenerates_byte_for_byte(tmp_path, capsys, protocol):
    committed = REPO / "docs" / "leaderboard" / protocol
    if not (committed / "leaderboard.md").exists():
        pytest.skip(f"no committed {protocol} leaderboard yet")
    code, _, err = run_cli(capsys, "leaderboard", "--protocol", protocol, "--runs-dir", committed / "runs",
                           "--out", tmp_path)
    assert code == 0, err
    for name in L.FILES:
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name


@pytest.mark.slow
def test_the_page_opens_in_a_browser_and_shows_the_rows(board_runs, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no Chromium here (apt-get install chromium): the page's rows are not checked in a browser")
    L.write_leaderboard(L.build_leaderboard(FMNIST, [board_runs]), tmp_path)
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          (tmp_path / "leaderboard.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'id="row-iebn"' in dom and 'id="row-bn"' in dom and "<svg" in dom
    assert dom.index('id="row-iebn"') < dom.index('id="row-bn"')  # ranked


# --------------------------------------------------------------------------- refusals


def test_runs_of_a_foreign_protocol_are_refused(tmp_path, capsys):
    other = record(P.get("mnist"), "bn", "clean", 0, 99.0)
    runs = write_runs(tmp_path / "runs", [record(FMNIST, "bn", "clean", 0, 91.0), other])
    for args in (["leaderboard", "--runs-dir", runs, "--out", tmp_path / "out"],
                 ["bench", "--norm", "iebn", "--runs-dir", runs, "--dry-run"]):
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and "is not a run of protocol fmnist v1" in err, args
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    ({"threads": 2}, "ran at 2 threads; protocol fmnist fixes 1"),
    ({"device": "cuda"}, "ran on cuda, but protocol fmnist is a cpu protocol"),
])
def test_other_threads_or_device_are_refused(tmp_path, capsys, change, message):
    r = record(FMNIST, "bn", "clean", 0, 91.0)
    r["machine"].update(change)
    runs = write_runs(tmp_path / "runs", [r])
    code, _, err = run_cli(capsys, "leaderboard", "--runs-dir", runs, "--out", tmp_path / "out")
    assert code == 2 and message in err and not (tmp_path / "out").exists()


def test_two_versions_of_a_layers_source_are_refused(tmp_path, capsys):
    runs = write_runs(tmp_path / "runs", [record(FMNIST, "my.mod:Norm@0123abcd", "clean", 0, 91.0),
                                          record(FMNIST, "my.mod:Norm@89abcdef", "clean", 1, 91.0)])
    code, _, err = run_cli(capsys, "leaderboard", "--runs-dir", runs, "--out", tmp_path / "out")
    assert code == 2 and "from 2 versions of its source" in err


@pytest.mark.parametrize("args, message", [
    (["bench", "--norm", "iebn", "--protocol", "nope", "--dry-run"], "unknown protocol 'nope'"),
    (["leaderboard", "--protocol", "nope"], "unknown protocol 'nope'"),
    (["bench", "--norm", "torch.nn:Linear", "--dry-run"], "torch.nn:Linear"),
    (["bench", "--norm", "iebn", "--threads", "2", "--dry-run"], "fixes 1 thread(s) per run"),
    (["bench", "--norm", "iebn", "--threads", "64", "--dry-run"], "fixes 1 thread(s) per run"),  # not the CPUs here
    (["bench", "--norm", "iebn", "--workers", "0", "--dry-run"], "--workers must be"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_footer_gives_each_machine_kind_its_runs_and_hours(tmp_path):
    """Hours per machine kind: CPU time where a run recorded one, else wall time; diverged runs count."""
    recs = [record(FMNIST, "bn", "clean", 0, 91.0, wall=7200.0, cpu="CPU A"),
            {**record(FMNIST, "bn", "clean", 1, 91.0, wall=9000.0, cpu="CPU A"), "cpu_time_s": 1800.0},
            record(FMNIST, "iebn", "clean", 0, 10.0, wall=3600.0, cpu="CPU B", status="diverged")]
    board = L.build_leaderboard(FMNIST, [write_runs(tmp_path / "r", recs)])
    label_a, label_b = sorted(board.machines)
    assert board.hours == {label_a: pytest.approx(2.5), label_b: pytest.approx(1.0)}
    files = L.render_files(board)
    footer = f"3 runs from 2 machine(s): {label_a}: 2 runs, 2.5 h; {label_b}: 1 run, 1.0 h ("
    assert footer in files["leaderboard.md"] and html.escape(footer) in files["leaderboard.html"]
    assert json.loads(files["leaderboard.json"])["run_hours"] == {label_a: 2.5, label_b: 1.0}


def test_a_cell_trained_on_two_machine_kinds_is_split_with_welchs_test(tmp_path):
    """#21: where both CPU kinds contribute to a cell, the board splits it by kind and tests whether
    they differ (Welch's t-test, recomputed here with scipy); cells of one kind are not listed."""
    a, b = [91.0, 91.4, 90.8, 91.2], [90.1, 90.5, 89.9]
    recs = [record(FMNIST, "bn", "clean", i, v, cpu="CPU A") for i, v in enumerate(a)]
    recs += [record(FMNIST, "bn", "clean", 4 + i, v, cpu="CPU B") for i, v in enumerate(b)]
    recs += [record(FMNIST, "bn", "constant", i, 85.0 + i, cpu="CPU A") for i in range(3)]
    board = L.build_leaderboard(FMNIST, [write_runs(tmp_path / "r", recs)])
    label_a, label_b = sorted(board.machines)
    assert [(layer, sid) for layer, sid, _ in board.splits] == [("bn", "clean")]
    sp = board.splits[0][2]
    assert [(m, n) for m, n, _ in sp["machines"]] == [(label_a, 4), (label_b, 3)]  # the most runs first
    assert sp["machines"][0][2] == pytest.approx(np.mean(a)) and sp["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert sp["p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    files = L.render_files(board)
    row = (f"| `bn` | clean | {label_a}: {np.mean(a):.2f} (4); {label_b}: {np.mean(b):.2f} (3) | "
           f"{np.mean(a) - np.mean(b):+.2f} [")
    assert row in files["leaderboard.md"] and "more than one machine kind" in files["leaderboard.html"]
    assert json.loads(files["leaderboard.json"])["machine_splits"][0]["machines"][1] == {
        "machine": label_b, "n": 3, "mean": round(float(np.mean(b)), 4)}
    one_kind = L.build_leaderboard(FMNIST, [write_runs(tmp_path / "one", recs[:4])])
    assert one_kind.splits == [] and "more than one machine kind" not in L.render_files(one_kind)["leaderboard.md"]


def test_machine_label_names_the_gpu_else_the_cpu_and_says_when_nothing_was_recorded():
    from noiseattack.leaderboard.board import machine_label

    assert machine_label({"machine": {"cpu": "AMD EPYC", "cpu_capability": "AVX512", "gpu": None}}) == "AMD EPYC (AVX512)"
    assert machine_label({"machine": {"cpu": "Xeon", "gpu": "NVIDIA H200"}}) == "NVIDIA H200"
    assert machine_label({"machine": {"cpu": "Xeon"}}) == "Xeon (capability not recorded)"
    assert machine_label({"machine": {"cpu": None, "cpu_capability": "AVX2"}}) == "unknown CPU (AVX2)"
    assert machine_label({}) == machine_label({"machine": None}) == "machine not recorded"
