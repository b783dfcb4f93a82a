"""What a sweep's dry run says its runs left will cost: by the grid's own finished runs
(`sweep.estimate_left`), and, for a grid with none yet, by another dataset's runs of the same layers
and settings (`--cost-from`, `sweep.lent_runs`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from test_sweep import tiny  # noqa: F401 - the fixture: a two-setting, two-layer, two-seed grid

from noiseattack import sweep as S
from noiseattack.config import RunConfig
from noiseattack.results import run_cost_s

ONE_THREAD = {"device": "cpu", "threads": 1}


def _costed(run: RunConfig, status: str, **cost) -> dict:
    return {"key": run.key, "norm": run.norm, "seed": run.seed, "status": status, "final_acc": 50.0, **cost}


def _write(exp_dir: Path, recs: list[dict]) -> None:
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_dry_run_costs_the_runs_left_by_the_finished_ones(tiny, capsys):
    """Each run left costs the median of its layer's finished runs in its setting (CPU time where a
    one-thread CPU run recorded one, else wall time), else its layer's cost in another setting scaled
    by the layers both settings have, else the setting's median; a diverged run is no cost to go by;
    the time at W workers is when W slots finish them, longest first."""
    grid, runs = tiny["grid"], tiny["tmp"] / "runs"
    clean, constant = S.load_grid(grid, runs_dir=runs).experiments
    by = {(r.norm, r.seed): r for r in clean.runs()}
    recs = [_costed(by[("bn", 0)], "finished", cpu_time_s=5400.0, wall_time_s=9000.0, machine=ONE_THREAD),
            _costed(by[("iebn", 0)], "finished", wall_time_s=1800.0),  # written before CPU times were kept
            _costed(by[("iebn", 1)], "diverged", cpu_time_s=60.0, machine=ONE_THREAD)]
    recs.append({**recs[0], "key": "another-grid's-seed", "seed": 7, "cpu_time_s": 9000.0})  # same setting
    _write(clean.dir, recs)
    # left: bn seed 1 (bn's median of 5400 and 9000 s: 2.0 h), iebn seed 1 (diverged: over);
    # constant: 4 runs, nothing to go by
    code, out, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), "--dry-run", "--workers", "2")
    assert code == 0, err
    assert out.splitlines()[-1] == (
        "left: 5 runs; 1 of them ≈ 2.0 h of run time (each at the median of its layer's finished runs in its "
        "setting, else its layer's in another setting scaled by the layers both have, else the setting's; "
        "CPU time where a run trained at one CPU thread, else wall time), ≈ 2.0 h "
        "at 2 workers; 4 with no finished run in their setting to go by")

    two_threads, gpu = {"device": "cpu", "threads": 2}, {"device": "cuda", "threads": 1}
    _write(clean.dir, [_costed(by[("bn", 0)], "finished", cpu_time_s=100.0, wall_time_s=200.0, machine=gpu),
                       _costed(by[("bn", 1)], "diverged", wall_time_s=9.0)])
    _write(constant.dir, [_costed(r, "finished", cpu_time_s=300.0, wall_time_s=350.0, machine=two_threads)
                          for r in constant.runs() if r.norm == "bn"])
    g = S.load_grid(grid, runs_dir=runs)
    est = S.estimate_left(g, S.status(g))
    # clean: iebn seeds 0, 1 have no runs of their own: the setting's median, bn's one finished run (a GPU
    # run: its wall time, 200 s); constant: the iebn runs take bn's (two threads: wall time, 350 s)
    assert sorted(est.costs) == [200.0, 200.0, 350.0, 350.0] and est.unknown == 0
    assert est.finish_s(2) == 550.0 and est.finish_s(8) == 350.0 and est.finish_s(1) == 1100.0
    # iebn has runs in clean only, at 3x bn's: constant's iebn runs carry that over, 3 x bn's 350 s there
    _write(clean.dir, [_costed(by[("bn", 0)], "finished", wall_time_s=100.0),
                       _costed(by[("iebn", 0)], "finished", wall_time_s=300.0)])
    est = S.estimate_left(g, S.status(g))
    assert sorted(est.costs) == [100.0, 300.0, 1050.0, 1050.0] and est.unknown == 0
    # a CPU time is not scaled by a wall time: iebn's (wall) against bn's (CPU) in clean carries nothing
    _write(clean.dir, [_costed(by[("bn", 0)], "finished", wall_time_s=900.0, cpu_time_s=100.0, machine=ONE_THREAD),
                       _costed(by[("iebn", 0)], "finished", wall_time_s=300.0)])
    est = S.estimate_left(g, S.status(g))
    assert sorted(est.costs) == [100.0, 300.0, 350.0, 350.0]  # constant's iebn: the setting's 350 s
    # a cell with CPU times goes by them alone: the wall times of runs that shared their CPUs are longer
    _write(clean.dir, [_costed(by[("bn", 0)], "finished", wall_time_s=900.0),
                       _costed(by[("bn", 1)], "finished", wall_time_s=950.0, cpu_time_s=120.0, machine=ONE_THREAD)])
    est = S.estimate_left(g, S.status(g))
    assert sorted(est.costs) == [120.0, 120.0, 350.0, 350.0]  # clean iebn: the setting's (bn's) 120 s
    assert run_cost_s({"wall_time_s": float("nan")}) is None and run_cost_s({"wall_time_s": True}) is None
    assert run_cost_s({"cpu_time_s": 5.0, "wall_time_s": 8.0, "machine": None}) == 8.0


def _lender(tiny, *, dataset: str, subset: int | None = None, depth: int = 8) -> tuple[Path, list]:
    """Another runs dir holding the tiny grid's settings on `dataset` (a train subset of `subset`,
    a depth of `depth`): where `--cost-from` looks; its experiments, to write records into."""
    text = tiny["grid"].read_text().replace('dataset = "mnist"', f'dataset = "{dataset}"').replace(
        "depth = 8", f"depth = {depth}" + (f"\ntrain_subset = {subset}" if subset else ""))
    path = tiny["tmp"] / f"lender-{dataset}-{subset}-{depth}.toml"
    path.write_text(text)
    runs = tiny["tmp"] / "lender"
    return runs, S.load_grid(path, runs_dir=runs).experiments


def _records(exp, norm: str, cpu_s: float, **extra) -> list[dict]:
    """Finished one-thread CPU records of `norm`'s runs in `exp`, each with its config and `cpu_s`."""
    return [_costed(r, "finished", cpu_time_s=cpu_s, wall_time_s=2 * cpu_s, machine=ONE_THREAD,
                    config={**r.to_dict(), **extra}) for r in exp.runs() if r.norm == norm]


def test_a_grid_with_no_runs_is_priced_by_another_datasets_runs(tiny, capsys):
    """Runs with none of their own to go by take the runs in --cost-from of their layer and setting
    on another dataset, scaled by an epoch's images (MNIST's 60 000 training images over a 20 000-image
    subset: 3x); a run of another model prices nothing, nor does a diverged one; the grid's own runs
    come first; a field a lender's record lacks (written before it existed) is not held against it."""
    grid, runs = tiny["grid"], tiny["tmp"] / "runs"
    clean, constant = S.load_grid(grid, runs_dir=runs).experiments
    lender, (l_clean, l_constant) = _lender(tiny, dataset="fmnist", subset=20_000)
    _, (deeper, _) = _lender(tiny, dataset="fmnist", subset=20_000, depth=14)
    old = [{k: v for k, v in r["config"].items() if k != "channels_last"} for r in _records(l_constant, "iebn", 1)]
    _write(l_clean.dir, _records(l_clean, "bn", 100.0) + _records(deeper, "iebn", 1.0)
           + [{**r, "status": "diverged"} for r in _records(l_clean, "iebn", 1.0)])
    _write(l_constant.dir, [{**r, "config": c} for r, c in zip(_records(l_constant, "iebn", 50.0), old)])

    g = S.load_grid(grid, runs_dir=runs)
    est = S.estimate_left(g, S.status(g), [lender])
    # clean: bn 2 x 300 s (lent, 3 x 100); iebn: nothing of its own or lent (the deeper and the diverged
    # runs do not count), nothing to carry (no layer has runs in both settings): the setting's median,
    # bn's 300 s. constant: iebn 2 x 150 s (lent); bn likewise the setting's, iebn's 150 s. All 8 went by
    # lent runs
    assert sorted(est.costs) == [150.0] * 4 + [300.0] * 4 and est.unknown == 0 and est.lent == 8
    assert S.estimate_left(g, S.status(g)) == S.Estimate((), 8, 0)  # without the lender: nothing to go by

    _write(clean.dir, _records(clean, "bn", 40.0)[:1])  # the grid's own bn run in clean: it prices bn there
    est = S.estimate_left(g, S.status(g), [lender / l_clean.name, lender / l_constant.name])  # experiment dirs
    # clean: bn seed 1 and iebn (the setting's median) at bn's own 40 s; constant as before (lent)
    assert sorted(est.costs) == [40.0] * 3 + [150.0] * 4 and est.lent == 4

    code, out, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), "--dry-run", "--cost-from", str(lender))
    assert code == 0, err
    assert out.splitlines()[-1].startswith("left: 7 runs ≈ 0.2 h of run time (") and out.splitlines()[-1].endswith(
        f"; 4 of them priced by the runs in {lender} of their layer and setting on another dataset, scaled by "
        "an epoch's images")


def test_a_lent_run_must_have_trained_as_the_setting_would(tiny):
    """A field a lender's record lacks takes the value runs had before it existed (attn_placement
    "norm"): such a record prices a setting at that value, not one at another; its performance options
    (compile, memory layout) and the machine's are not compared; its device is."""
    lender, (l_clean, _) = _lender(tiny, dataset="fmnist")
    old = [{**r, "config": {k: v for k, v in r["config"].items() if k != "attn_placement"}}
           for r in _records(l_clean, "bn", 10.0, compile=True, channels_last=False)]
    gpu = [{**r, "key": r["key"] + "-gpu", "config": {**r["config"], "device": "cuda"}} for r in _records(l_clean, "iebn", 1.0)]
    _write(l_clean.dir, old + gpu)
    text = tiny["grid"].read_text()
    for placement, lent in (("norm", {("bn", 10.0)}), ("block", set())):
        tiny["grid"].write_text(text.replace("[grid]", f'attn_placement = "{placement}"\n[grid]'))
        g = S.load_grid(tiny["grid"], runs_dir=tiny["tmp"] / "runs")
        found = S.lent_runs(g, [lender])
        assert {(n, run_cost_s(r)) for (d, n), rs in found.items() if d == g.experiments[0].dir for r in rs} == lent


def test_cost_from_is_for_a_dry_run_of_an_existing_dir(tiny, capsys):
    grid, runs = tiny["grid"], tiny["tmp"] / "runs"
    for args, message in ((["--cost-from", str(tiny["tmp"])], "--cost-from prices a dry run's runs: use it with --dry-run"),
                          (["--dry-run", "--cost-from", str(tiny["tmp"] / "nope")], f"--cost-from {tiny['tmp'] / 'nope'}: no such directory")):
        code, out, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), *args)
        assert (code, out, err) == (2, "", f"noiseattack: error: {message}\n") and not runs.exists()


@pytest.mark.parametrize("compile_default", ["0", "1"])
def test_the_mnist_protocol_is_priced_by_the_fmnist_boards_runs(monkeypatch, compile_default):
    """The README's example on the committed runs: every layer and setting of the mnist grid finds its
    runs on the fmnist board (the same model and attacks; MNIST's and FashionMNIST's 60 000 training
    images: no scaling), whatever layout their records were written in, and whatever this machine's
    compile default (the board's runs were compiled)."""
    from noiseattack.results import read_results

    monkeypatch.setenv("NOISEATTACK_COMPILE", compile_default)
    root = Path(__file__).resolve().parents[1]
    board = root / "docs/leaderboard/fmnist/runs"
    grid = S.load_grid(root / "docs/leaderboard/mnist/grid-1-second-primary.toml", runs_dir=root / "docs/leaderboard/mnist/runs")
    lent = S.lent_runs(grid, [board])
    assert set(lent) >= {(exp.dir, n) for exp in grid.experiments for n in exp.norms}
    by_attack = {exp.name.split("-")[0]: exp for exp in grid.experiments}
    clean_bn = [run_cost_s(r) for r in read_results(board / "clean-fmnist-resnet20w0.5-e3-noaug-linear")
                if r["norm"] == "bn" and r["status"] == "finished"]
    assert sorted(run_cost_s(r) for r in lent[(by_attack["clean"].dir, "bn")]) == sorted(clean_bn) and min(clean_bn) > 0
