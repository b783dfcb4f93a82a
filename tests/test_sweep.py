"""`noiseattack sweep`: a tiny grid end to end with the local and the submitit local executors,
resuming, the dry run, the grid validation, and the ready grids in scripts/."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import re
import shlex
import statistics
from pathlib import Path

import pytest

from conftest import run_cli

from noiseattack import sweep as S
from noiseattack import attacks
from noiseattack.config import ConfigError, RunConfig, TrainConfig, resolve_experiment, resolve_train_config
from noiseattack.results import read_results
from noiseattack.sweep.grid import swept_suffix

REPO = Path(__file__).resolve().parents[1]

TINY_GRID = """\
[train]
dataset = "mnist"
depth = 8
epochs = 1
batch_size = 64
device = "cpu"

[grid]
norms = ["bn", "iebn"]
seeds = [0, 1]

[[attack]]
kind = "clean"

[[attack]]
kind = "constant"
settings = [[2, 1]]
"""
EXPERIMENTS = ("clean-mnist-resnet8-e1", "constant-a2-b1-mnist-resnet8-e1")


def final_accs(runs_dir: Path) -> dict[str, float]:
    return {r["key"]: r["final_acc"] for name in EXPERIMENTS for r in read_results(runs_dir / name)}


@pytest.fixture
def tiny(tmp_path: Path, fake_mnist) -> dict[str, Path]:
    data = fake_mnist(n_train=256, n_test=128)
    grid = tmp_path / "grid.toml"
    grid.write_text(TINY_GRID.replace('device = "cpu"', f'device = "cpu"\ndata_dir = "{data}"'))
    return {"grid": grid, "data": data, "tmp": tmp_path}


@pytest.mark.slow
def test_local_and_submitit_local_give_the_same_runs(tiny, capsys, log_file_output):
    pytest.importorskip("submitit")
    grid, tmp = tiny["grid"], tiny["tmp"]
    local, sub = tmp / "runs-local", tmp / "runs-submitit"

    code, out, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(local), "--threads", "1")
    assert code == 0, err
    assert "8 to run" in out
    # Not a terminal (a log file): the bar is not redrawn, so every run's line carries its count and the ETA.
    done = re.findall(r"^✓ .*seed \d: final .*\((\d+) s\)  \[(\d) of 8 done · ETA (\d+:\d\d:\d\d)\]$", out, flags=re.M)
    assert [int(d) for _, d, _ in done] == list(range(1, 9)) and done[-1][2] == "0:00:00"
    code, out, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(sub), "--no-progress", "--threads", "1",
                             "--executor", "submitit-local", "--workers", "2", "--runs-per-job", "4")
    assert code == 0, err
    assert (sub / ".submitit").is_dir()  # submitit's pickles and logs: the jobs ran through it

    a, b = final_accs(local), final_accs(sub)
    expected = {r.key for exp in S.load_grid(grid, runs_dir=local).experiments for r in exp.runs()}
    assert set(a) == set(b) == expected and len(expected) == 8
    assert a == b  # same seeds, same CPU numerics: the same final accuracies

    for runs in (local, sub):  # the layout of the single-run commands
        for name in EXPERIMENTS:
            d = runs / name
            assert {"config.json", "results.jsonl", "summary.csv", "summary.md", "tb"} <= {p.name for p in d.iterdir()}
            assert sorted(p.name for p in (d / "tb").iterdir() if p.is_dir()) == [
                "bn-mean", "bn-s0", "bn-s1", "iebn-mean", "iebn-s0", "iebn-s1"]
            assert not list((d / "tb").glob("events.out.tfevents.*"))  # the HParams config is in the mean runs
            cfg = json.loads((d / "config.json").read_text())
            assert cfg["norms"] == ["bn", "iebn"] and cfg["seeds"] == [0, 1]
            assert "| bn | 2 |" in (d / "summary.md").read_text()

    report = pytest.importorskip("noiseattack.report")
    rep = report.build_report([local], None, plots=False)
    assert len(rep.sources) == 2 and rep.rows


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_reruns_a_deleted_one(tiny, capsys):
    grid, tmp = tiny["grid"], tiny["tmp"]
    runs = tmp / "runs"
    g = S.load_grid(grid, runs_dir=runs)
    first = S.run_sweep(g, progress=False)
    assert len(first.ran) == 8 and len(first.records) == 8 and not first.failed and not first.pending

    before = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    again = S.run_sweep(S.load_grid(grid, runs_dir=runs), progress=False)
    assert again.ran == [] and again.skipped == 8 and len(again.records) == 8
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()} == before  # nothing written

    # Drop one result line: that run, and only it, is pending and runs again.
    results = runs / EXPERIMENTS[1] / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    dropped = json.loads(lines[2])
    results.write_text("".join(lines[:2] + lines[3:]))
    code, out, _ = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), "--dry-run")
    assert code == 0
    pending = [line for line in out.splitlines() if line.startswith("pending")]
    assert len(pending) == 1 and dropped["key"] in pending[0]
    assert "7 done" in out.splitlines()[-2] and "1 pending" in out.splitlines()[-2]
    same_layer = [r for r in read_results(runs / EXPERIMENTS[1]) if r["norm"] == dropped["norm"]]
    cost = [r["cpu_time_s"] if r["machine"]["threads"] == 1 else r["wall_time_s"] for r in same_layer]
    g = S.load_grid(grid, runs_dir=runs)
    assert S.estimate_left(g, S.status(g)).costs == (statistics.median(cost),) and min(cost) > 0
    assert out.splitlines()[-1].startswith("left: 1 run ≈ "), out

    # While another process trains it (holds its lock), a sweep leaves it alone.
    lock = runs / EXPERIMENTS[1] / ".locks" / f"{dropped['norm']}-s{dropped['seed']}"
    lock.parent.mkdir(exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        code, out, _ = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), "--dry-run")
        assert [line.split()[0] for line in out.splitlines()[:-1]].count("running") == 1
        busy = S.run_sweep(S.load_grid(grid, runs_dir=runs), progress=False)
        assert busy.ran == [] and [j.key for j in busy.pending] == [dropped["key"]]
        code, out, _ = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), "--no-progress")
        assert code == 0 and "7 done, 1 running in another process, 0 to run" in out  # not counted as done
        fcntl.flock(f, fcntl.LOCK_UN)

    code, out, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), "--no-progress", "--workers", "2")
    assert code == 0, err
    assert "1 to run" in out and len(re.findall(r"^✓ ", out, flags=re.M)) == 1
    recs = read_results(runs / EXPERIMENTS[1])
    assert len(recs) == 4 and sum(r["key"] == dropped["key"] for r in recs) == 1
    redone = next(r for r in recs if r["key"] == dropped["key"])
    assert redone["final_acc"] == dropped["final_acc"]  # same seed: the same run


def test_dry_run_lists_every_run_and_writes_nothing(tiny, capsys):
    grid, tmp = tiny["grid"], tiny["tmp"]
    runs = tmp / "runs"
    code, out, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), "--dry-run")
    assert code == 0, err
    lines = out.strip().splitlines()
    g = S.load_grid(grid, runs_dir=runs)
    keys = [j.key for j in g.jobs()]
    assert len(lines) == 10 and [line.split()[1] for line in lines[:8]] == keys
    assert all(line.startswith("pending") for line in lines[:8])
    assert "8 runs in 2 experiments: 0 done" in lines[-2]
    assert lines[-1] == "left: 8 runs; no finished run in their settings to estimate their cost by"
    assert not runs.exists()


def test_the_norm_order_runs_one_layer_after_another_checkpointed_runs_first(tiny, capsys):
    """--order norm: each layer in every setting before the next layer (a leaderboard row completes
    sooner), runs with a checkpoint before all others; the dry run lists them in that order."""
    grid, runs = tiny["grid"], tiny["tmp"] / "runs"
    g = S.load_grid(grid, runs_dir=runs)
    states = S.status(g)
    clean, constant = (e.name for e in g.experiments)
    want = [(n, e, seed) for n in ("bn", "iebn") for e in (clean, constant) for seed in (0, 1)]
    assert [(j.run.norm, j.exp.name, j.run.seed) for j, _, _ in S.ordered(states, "norm")] == want
    assert S.ordered(states, "experiment") == states  # the grid's order: setting by setting
    partial = [(j, S.PARTIAL if (j.run.norm, j.exp.name, j.run.seed) == ("iebn", constant, 1) else st, r)
               for j, st, r in states]
    assert [(j.run.norm, j.exp.name, j.run.seed) for j, _, _ in S.ordered(partial, "norm")] == [
        ("iebn", constant, 1), *[w for w in want if w != ("iebn", constant, 1)]]
    code, out, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), "--dry-run", "--order", "norm")
    assert code == 0, err
    keys = {j.key: (j.run.norm, j.exp.name, j.run.seed) for j, _, _ in states}
    assert [keys[line.split()[1]] for line in out.splitlines()[:8]] == want and not runs.exists()
    code, out, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), "--order", "layer")
    assert code == 2 and err.strip() == "noiseattack: error: unknown order 'layer': choose experiment, norm" and not runs.exists()
    with pytest.raises(ConfigError, match="unknown order 'layer'"):
        S.run_sweep(g, progress=False, order="layer")
    assert not runs.exists()


def test_a_sweep_in_norm_order_trains_layer_by_layer(tiny):
    grid, runs = tiny["grid"], tiny["tmp"] / "runs"
    grid.write_text(grid.read_text().replace("seeds = [0, 1]", "seeds = [0]"))
    result = S.run_sweep(S.load_grid(grid, runs_dir=runs), progress=False, order="norm")
    assert [(r["norm"], r["experiment"]) for r in result.ran] == [(n, e) for n in ("bn", "iebn") for e in EXPERIMENTS]


BAD_GRIDS = {
    # an unknown key
    "unknown train key": ('[train]\nepoch = 3\n', "train.epoch"),
    "unknown table": ('[sweep]\nx = 1\n', "'sweep'"),
    "unknown attack key": ('[[attack]]\nkind = "constant"\nsettings = [[2, 1]]\nk = 3\n', "attack[1].k"),
    "norm in train": ('[train]\nnorm = "bn"\n', "train.norm"),
    # a wrong type
    "string for int": ('[train]\nepochs = "4"\n', "train.epochs"),
    "float for int": ('[train]\ndepth = 20.0\n', "train.depth"),
    "bool for number": ('[train]\nlr = true\n', "train.lr"),
    "seed type": ('[grid]\nseeds = [0, "1"]\n', "grid.seeds"),
    "pair type": ('[[attack]]\nkind = "constant"\nsettings = [[2, "1"]]\n', "attack[1].settings"),
    # an empty axis
    "empty norms": ('[grid]\nnorms = []\n', "grid.norms"),
    "empty seeds": ('[grid]\nseeds = []\n', "grid.seeds"),
    "empty settings": ('[[attack]]\nkind = "constant"\nsettings = []\n', "attack[1].settings"),
    "empty k": ('[[attack]]\nkind = "mix"\nextra = "fmnist"\nk = []\n', "attack[1].k"),
    "no attack": ('[train]\nepochs = 1\n', "attack"),
    # an invalid value
    "zero epochs": ('[train]\nepochs = 0\n', "epochs"),
    "bad depth": ('[train]\ndepth = 9\n', "depth"),
    "bad dataset": ('[train]\ndataset = "svhn"\n', "dataset 'svhn'"),
    "bad norm": ('[grid]\nnorms = ["bn", "xn"]\n', "grid.norms"),
    "zero repeats": ('[grid]\nrepeats = 0\n', "grid.repeats"),
    "zero alpha": ('[[attack]]\nkind = "constant"\nsettings = [[0, 1]]\n', "alpha"),
    "bad kind": ('[[attack]]\nkind = "noise"\n', "attack[1].kind"),
    "bad extra": ('[[attack]]\nkind = "mix"\nextra = "svhn"\nk = 8\n', "svhn"),
    "bad attack norm": ('[[attack]]\nkind = "clean"\nnorms = ["bn", "xn"]\n', "attack[1].norms"),
    "empty attack norms": ('[[attack]]\nkind = "clean"\nnorms = []\n', "attack[1].norms"),
    "attack norms type": ('[[attack]]\nkind = "clean"\nnorms = 3\n', "attack[1].norms"),
    "negative k": ('[[attack]]\nkind = "mix"\nextra = "mnist-inverted"\nk = [-1]\n', "k must be >= 0"),
    "name for many": ('[[attack]]\nkind = "mix"\nextra = "mnist-inverted"\nk = [8, 16]\nname = "x"\n', "attack[1].name"),
    "not toml": ('[train\n', "not valid TOML"),
    # a bad axis
    "unknown axis": ('[grid]\nwidht = [1, 2]\n', "grid.widht"),
    "axis element type": ('[grid]\nlr = [0.1, "0.05"]\n', "grid.lr[2]"),
    "axis float for int": ('[grid]\nbatch_size = [32, 64.0]\n', "grid.batch_size[2]"),
    "empty axis": ('[grid]\nbatch_size = []\n', "grid.batch_size is empty"),
    "axis not a list": ('[grid]\nwidth = 2\n', "grid.width must be a list"),
    "axis cannot be swept": ('[grid]\ndevice = ["cpu", "auto"]\n', "grid.device cannot be swept"),
    "experiment key as axis": ('[grid]\nruns_dir = ["a", "b"]\n', "grid.runs_dir cannot be swept"),
    "attack field as axis": ('[grid]\nk = [8, 16]\n', "grid.k"),
    "axis also in train": ('[train]\nwidth = 2\n[grid]\nwidth = [1, 2]\n', "grid.width"),
    "bad axis value": ('[grid]\ndepth = [20, 9]\n', "depth 9"),
    "name for many with axes": ('[grid]\nlr = [0.1, 0.2]\n[[attack]]\nkind = "clean"\nname = "x"\n', "attack[1].name"),
}


@pytest.mark.parametrize("case", list(BAD_GRIDS))
def test_bad_grid_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    text, key = BAD_GRIDS[case]
    if "[[attack]]" not in text and case != "no attack":
        text += '\n[[attack]]\nkind = "clean"\n'
    grid = tmp_path / "bad.toml"
    grid.write_text(text)
    runs = tmp_path / "runs"
    for extra in ([], ["--dry-run"]):
        code, out, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), "--data-dir",
                                 str(tmp_path / "data"), "--no-progress", *extra)
        assert code == 2, (case, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("noiseattack: error: "), err
        assert key in lines[0], (key, lines[0])
        assert str(grid) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # nothing written


def test_bad_options_are_exit_2(tiny, capsys):
    grid, tmp = tiny["grid"], tiny["tmp"]
    for args, msg in ((["--executor", "ray"], "unknown executor 'ray'"), (["--workers", "0"], "workers"),
                      (["--time", "soon"], "--time"), (["--slurm-option", "account"], "KEY=VALUE")):
        code, _, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(tmp / "runs"), "--no-progress", *args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp / "runs").exists()


def test_an_existing_dir_with_another_setting_is_refused(tiny, capsys):
    grid, tmp = tiny["grid"], tiny["tmp"]
    other = resolve_train_config(dataset="mnist", depth=8, epochs=2, device="cpu")  # e2, not e1
    d = tmp / "runs" / EXPERIMENTS[0]
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"identity": other.identity()}))
    code, _, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(tmp / "runs"), "--no-progress")
    assert code == 2 and "different experiment" in err and "epochs" in err
    assert sorted(p.name for p in d.iterdir()) == ["config.json"]


def test_slurm_submits_one_array_whose_jobs_run(tiny, capsys, monkeypatch):
    """Without a cluster: fake sbatch/srun record what submitit submits; then one of the pickled
    array jobs runs here, as a Slurm node would run it."""
    submitit = pytest.importorskip("submitit")
    grid, tmp = tiny["grid"], tiny["tmp"]
    bin_dir, log = tmp / "bin", tmp / "sbatch.log"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {log}\nfor a; do f=$a; done\ncat "$f" >> {log}\n'
                                    'echo "Submitted batch job 4242"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    runs = tmp / "runs"
    code, out, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), "--executor", "slurm", "--no-wait",
                             "--partition", "gpu", "--time", "2:00:00", "--gpus-per-job", "1", "--cpus-per-job", "4",
                             "--array-parallelism", "3", "--slurm-option", "account=abc")
    assert code == 0, err
    assert "job array 4242" in out
    script = log.read_text()
    for line in ("--array=0-7%3", "--partition=gpu", "--gpus-per-node=1", "--time=120", "--cpus-per-task=4",
                 "--account=abc"):
        assert f"#SBATCH {line}" in script
    pickles = sorted((runs / ".submitit").glob("4242_*/4242_*_submitted.pkl"))
    assert len(pickles) == 8
    delayed = submitit.core.utils.DelayedSubmission.load(pickles[0])
    assert isinstance(delayed.function, S.SubmititTask) and hasattr(delayed.function, "checkpoint")
    (task,) = delayed.args
    assert task.threads == 4 and task.jobs[0].exp.runs_dir.is_absolute()
    (rec,) = delayed.function(task)
    assert rec["status"] == "finished" and rec["key"] == task.jobs[0].key
    assert [r["key"] for r in read_results(runs / EXPERIMENTS[0])] == [rec["key"]]


def test_parse_time():
    assert [S.parse_time(t) for t in ("90", "1:30", "2:00:00", "1-00:00:00", "1-2", "0:30")] == [90, 2, 120, 1440, 1560, 1]
    with pytest.raises(ConfigError):
        S.parse_time("1h")


def _script_runs(script: Path, runs_dir: Path) -> set[tuple[str, str]]:
    """(experiment name, run key) of every run scripts/study_fmnist.sh trains, from its text."""
    text = script.read_text()
    common = shlex.split(re.search(r"COMMON=\((.*?)\)", text, re.S).group(1).replace('"$RUNS"', "RUNS"))
    out = set()
    for line in re.findall(r"^noiseattack (clean|constant|mix)(.*)\"\$\{COMMON\[@\]\}\"$", text, re.M):
        cmd, args = line[0], shlex.split(line[1]) + common
        o: dict[str, str | bool] = {}
        i = 0
        while i < len(args):
            name = args[i][2:].replace("-", "_")
            if name.startswith("no_"):
                o[name[3:]], i = False, i + 1
            else:
                o[name], i = args[i + 1], i + 2
        train = resolve_train_config(
            attack=cmd, dataset=o["dataset"], alpha=float(o.get("alpha", 1)), beta=float(o.get("beta", 0)),
            extra=o.get("extra"), k=int(o.get("k", 0)), epochs=int(o["epochs"]), train_subset=int(o["train_subset"]),
            test_subset=int(o["test_subset"]), device=o["device"])
        exp = resolve_experiment(train, norms=o["norm"], repeats=int(o["repeats"]), seed=int(o["seed"]),
                                 runs_dir=runs_dir)
        out |= {(exp.name, r.key) for r in exp.runs()}
    return out


def test_fmnist_study_grid_reproduces_the_script(tmp_path):
    expected = _script_runs(REPO / "scripts" / "study_fmnist.sh", tmp_path)
    assert len(expected) == 5 * 4 * 5  # settings x norms x seeds, as the script says
    g = S.load_grid(REPO / "scripts" / "grid_fmnist_study.toml", runs_dir=tmp_path)
    assert {(j.exp.name, j.key) for j in g.jobs()} == expected
    # and, without the override, the script's runs dir: a sweep and the script skip each other's runs
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    doc = tomllib.loads((REPO / "scripts" / "grid_fmnist_study.toml").read_text())
    assert doc["train"]["runs_dir"] == "runs/study-fmnist"


def test_paper_grid(tmp_path):
    g = S.load_grid(REPO / "scripts" / "grid_paper.toml", runs_dir=tmp_path, defer_device=True)
    jobs = g.jobs()
    trains = [e.train for e in g.experiments]
    assert {t.dataset for t in trains} == {"cifar100"}
    assert {(t.depth, t.block, t.epochs, t.milestones) for t in trains} == {(164, "bottleneck", 164, (81, 122))}
    assert {(t.alpha, t.beta) for t in trains if t.attack.value == "constant"} >= {(2.0, 1.0)}
    assert {(t.extra, t.k) for t in trains if t.attack.value == "mix"} == {
        (e, k) for e in ("mnist", "fmnist") for k in (8, 16, 32, 64)}
    assert any(t.attack.value == "clean" for t in trains)
    assert all(e.norms == ("bn", "in", "bnse", "iebn") and e.seeds == (0, 1, 2, 3, 4) for e in g.experiments)
    assert len(jobs) == len(g.experiments) * 20 and len({j.key for j in jobs}) == len(jobs)
    assert g.device == "auto"  # resolved on each Slurm job's node


# --------------------------------------------------------------------------- axes over train options

AXES_GRID = """\
[train]
dataset = "mnist"
depth = 8
epochs = 1
device = "cpu"

[grid]
norms = ["bn", "iebn"]
seeds = [0, 1]
width = [1, 2]
batch_size = [32, 64]
lr = [0.1, 0.05]

[[attack]]
kind = "clean"

[[attack]]
kind = "constant"
settings = [[2, 1]]
"""


def _single_run_keys(name: str, **options) -> list[str]:
    """The keys the single-run command (`noiseattack clean/constant ...`) gives these options, norms bn, iebn, seeds 0, 1."""
    train = resolve_train_config(dataset="mnist", depth=8, epochs=1, device="cpu", **options)
    exp = resolve_experiment(train, norms="bn,iebn", seeds="0,1", name=name, runs_dir="unused")
    return [r.key for r in exp.runs()]


def test_axes_expand_to_the_product_with_names_and_single_run_keys(tmp_path, capsys):
    grid = tmp_path / "axes.toml"
    grid.write_text(AXES_GRID)
    expected_names, expected_keys = [], []
    for width in (1, 2):  # the first axis varies slowest, then the attacks
        for bs in (32, 64):
            for lr in (0.1, 0.05):
                for head, attack in (("clean", {"attack": "clean"}),
                                     ("constant-a2-b1", {"attack": "constant", "alpha": 2, "beta": 1})):
                    name = f"{head}-mnist-resnet8{'w2' if width == 2 else ''}-e1-bs{bs}-lr{lr}"
                    expected_names.append(name)
                    expected_keys += _single_run_keys(name, width=width, batch_size=bs, lr=lr, **attack)
    g = S.load_grid(grid, runs_dir=tmp_path / "runs")
    assert [e.name for e in g.experiments] == expected_names and len(expected_names) == 16
    assert [j.key for j in g.jobs()] == expected_keys and len(set(expected_keys)) == 64
    assert [j.key for j in S.load_grid(grid, runs_dir=tmp_path / "elsewhere").jobs()] == expected_keys  # stable

    code, out, err = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(tmp_path / "runs"), "--dry-run")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert [line.split()[1] for line in lines[:-2]] == expected_keys
    assert {Path(line.split()[2]).name for line in lines[:-2]} == set(expected_names)
    assert "64 runs in 16 experiments: 0 done" in lines[-2] and not (tmp_path / "runs").exists()


def test_an_attack_table_s_norms_replace_the_grid_s_and_a_repeated_setting_merges(tmp_path):
    """Controls trained under some settings only: [[attack]] norms = [...] replaces [grid].norms for
    that table; a setting named twice is one dir with the norms of both (in order), and every run's
    key is the single-run command's."""
    doc = {"train": {"dataset": "mnist", "depth": 8, "epochs": 1, "device": "cpu"},
           "grid": {"norms": ["bn", "iebn"], "seeds": [0, 1]},
           "attack": [{"kind": "clean"}, {"kind": "mix", "extra": "fmnist", "k": 8, "norms": "gn"},
                      {"kind": "clean", "norms": ["bn-damped", "bn"]}]}
    g = S.parse_grid(doc, runs_dir=tmp_path)
    assert [(e.name, e.norms) for e in g.experiments] == [
        ("clean-mnist-resnet8-e1", ("bn", "iebn", "bn-damped")), ("mix-fmnist-k8-mnist-resnet8-e1", ("gn",))]
    expected = []
    for norm in ("bn", "iebn", "bn-damped"):
        for seed in (0, 1):
            expected.append(RunConfig(resolve_train_config(dataset="mnist", depth=8, epochs=1, device="cpu"),
                                      norm, seed).key)
    mix = resolve_train_config(dataset="mnist", depth=8, epochs=1, device="cpu", attack="mix", extra="fmnist", k=8)
    expected += [RunConfig(mix, "gn", seed).key for seed in (0, 1)]
    assert [j.key for j in g.jobs()] == expected and len(set(expected)) == 8


def test_other_axes_are_named_by_their_tags(tmp_path):
    doc = {"train": {"dataset": "mnist", "depth": 8, "epochs": 4, "device": "cpu"},
           "grid": {"norms": "bn", "seeds": [0], "milestones": [[1], [2, 3]], "momentum": [0.8],
                    "weight_decay": [0.0005], "lr_gamma": [0.2], "test_subset": [100], "train_subset": [200],
                    "block": ["auto"], "amp": [False]},
           "attack": [{"kind": "mix", "extra": "fmnist", "k": 8}]}
    g = S.parse_grid(doc, runs_dir=tmp_path)
    tail = "-mom0.8-wd0.0005-gamma0.2-nt100-basic-noamp"
    assert [e.name for e in g.experiments] == [f"mix-fmnist-k8-mnist-resnet8-n200-e4-ms1{tail}",
                                               f"mix-fmnist-k8-mnist-resnet8-n200-e4-ms2_3{tail}"]
    assert [e.train.milestones for e in g.experiments] == [(1,), (2, 3)]
    assert all(e.train.train_subset == 200 and e.train.momentum == 0.8 for e in g.experiments)


def test_augment_in_train_and_as_an_axis_names_its_dirs_once(tmp_path):
    """`augment = false` in [train] gives the single-run command's `-noaug` dirs and keys; as an axis,
    default_name already tells the two apart, so the axis adds no `-augment`/`-noaugment` tag."""
    grid = tmp_path / "g.toml"
    grid.write_text('[train]\ndataset = "mnist"\ndepth = 8\nepochs = 1\ndevice = "cpu"\naugment = false\n'
                    '[grid]\nnorms = ["bn"]\nseeds = [0]\n[[attack]]\nkind = "clean"\n'
                    '[[attack]]\nkind = "mix"\nextra = "fmnist"\nk = 8\n')
    g = S.load_grid(grid, runs_dir=tmp_path / "runs")
    assert [e.name for e in g.experiments] == ["clean-mnist-resnet8-e1-noaug", "mix-fmnist-k8-mnist-resnet8-e1-noaug"]
    assert all(e.train.augment is False for e in g.experiments)
    assert g.jobs()[0].key == _single_run_keys("clean-mnist-resnet8-e1-noaug", augment=False)[0]

    grid.write_text(grid.read_text().replace("augment = false\n", "").replace('seeds = [0]', 'seeds = [0]\n'
                                                                              'augment = [true, false]'))
    g = S.load_grid(grid, runs_dir=tmp_path / "runs")
    assert [e.name for e in g.experiments] == ["clean-mnist-resnet8-e1", "mix-fmnist-k8-mnist-resnet8-e1",
                                               "clean-mnist-resnet8-e1-noaug", "mix-fmnist-k8-mnist-resnet8-e1-noaug"]
    assert [e.train.augment for e in g.experiments] == [True, True, False, False]
    keys = [j.key for j in g.jobs()]
    assert keys[0] == _single_run_keys("clean-mnist-resnet8-e1")[0]  # the augmented runs keep their keys
    assert keys[2] == _single_run_keys("clean-mnist-resnet8-e1-noaug", augment=False)[0]
    assert len(set(keys)) == 4
    assert swept_suffix(g.experiments[2].train, {"augment": False, "lr": 0.1}) == "-lr0.1"  # lr: the resolved value


def test_a_shortcut_norm_axis_is_named_once(tmp_path):
    """default_name shows `-bnshortcut`; the axis adds no `-shortcut_norm_bn` tag on top."""
    doc = {"train": {"dataset": "mnist", "depth": 8, "epochs": 1, "device": "cpu"},
           "grid": {"norms": "bn", "seeds": [0], "shortcut_norm": ["same", "bn"]}, "attack": [{"kind": "clean"}]}
    g = S.parse_grid(doc, runs_dir=tmp_path)
    assert [e.name for e in g.experiments] == ["clean-mnist-resnet8-e1", "clean-mnist-resnet8-bnshortcut-e1"]


def test_every_result_changing_train_option_is_an_axis():
    """The schema follows TrainConfig: its fields (less the attack's, which [[attack]] sets) are [train] keys,
    and all but the speed-only ones are axes."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    attack_fields = {"attack", "alpha", "beta", "extra", "k"} | set(attacks.field_names())  # every attack's parameters
    assert set(S.TRAIN_KEYS) == fields - attack_fields | {"preset"}
    assert set(S.SWEEPABLE) == set(S.TRAIN_KEYS) - {"device", "channels_last", "compile_norms", "compile", "eval_batch_size"}


@pytest.mark.slow
def test_axes_sweep_resumes_and_shares_keys_with_the_single_run_command(tmp_path, fake_mnist, capsys):
    data = fake_mnist(n_train=256, n_test=128)
    grid = tmp_path / "grid.toml"
    grid.write_text(f'[train]\ndataset = "mnist"\ndepth = 8\nepochs = 1\ndevice = "cpu"\ndata_dir = "{data}"\n'
                    '[grid]\nnorms = ["bn"]\nseeds = [0]\nbatch_size = [32, 64]\n[[attack]]\nkind = "clean"\n')
    runs = tmp_path / "runs"
    first = S.run_sweep(S.load_grid(grid, runs_dir=runs), progress=False)
    assert [r["status"] for r in first.ran] == ["finished", "finished"] and not first.pending
    names = ["clean-mnist-resnet8-e1-bs32", "clean-mnist-resnet8-e1-bs64"]
    assert sorted(p.name for p in runs.iterdir()) == names
    recs = [read_results(runs / n) for n in names]
    assert [[r["config"]["batch_size"] for r in rs] for rs in recs] == [[32], [64]]

    before = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    again = S.run_sweep(S.load_grid(grid, runs_dir=runs), progress=False)
    assert again.ran == [] and again.skipped == 2 and len(again.records) == 2
    code, out, _ = run_cli(capsys, "sweep", str(grid), "--runs-dir", str(runs), "--dry-run")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[:-2]] == ["done", "done"]
    assert out.splitlines()[-1] == "left: nothing to run"
    # the single-run command with the same options, in that dir, finds its run done
    code, out, err = run_cli(capsys, "clean", "--dataset", "mnist", "--depth", "8", "--epochs", "1", "--batch-size",
                             "32", "--norm", "bn", "--seeds", "0", "--device", "cpu", "--name", names[0], "--runs-dir",
                             str(runs), "--data-dir", str(data), "--no-progress")
    assert code == 0, err
    assert read_results(runs / names[0]) == recs[0]
    assert {p for p in runs.rglob("*") if p.is_file()} == set(before)  # nothing trained: no new tb/ or checkpoint
    assert all(p.read_bytes() == b for p, b in before.items() if p.name == "results.jsonl")


def test_fractional_width_axis(tmp_path):
    from noiseattack import sweep as S

    grid = tmp_path / "g.toml"
    grid.write_text('[train]\ndataset = "mnist"\nepochs = 1\n[grid]\nwidth = [0.5, 1, 2.0]\nnorms = ["bn"]\nrepeats = 1\n'
                    '[[attack]]\nkind = "clean"\n')
    g = S.load_grid(grid, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    assert [e.train.width for e in g.experiments] == [0.5, 1, 2]
    assert [e.name for e in g.experiments] == ["clean-mnist-resnet20w0.5-e1", "clean-mnist-resnet20-e1",
                                               "clean-mnist-resnet20w2-e1"]
    grid.write_text(grid.read_text().replace("0.5", "0.3"))
    with pytest.raises(ConfigError, match="16 x width a whole number"):
        S.load_grid(grid, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")


def test_the_log_line_counts_this_sweeps_runs_and_extrapolates_their_eta(monkeypatch):
    from noiseattack.experiment import fmt_eta
    from noiseattack.sweep import run as R

    assert (fmt_eta(3725), fmt_eta(0.4), fmt_eta(None), fmt_eta(float("inf"))) == ("1:02:05", "0:00:00", "-:--:--", "-:--:--")
    now = [100.0]
    monkeypatch.setattr(R.time, "monotonic", lambda: now[0])
    tally = R._Tally(done=2, diverged=0, pending=3)  # 2 done before this sweep, 3 to run
    tally.submitted(2)
    assert tally.line() == "[0 of 3 done · ETA -:--:--]"  # no run has ended: no rate yet
    now[0] = 160.0
    assert tally.outcome("finished")
    assert tally.line() == "[1 of 3 done · ETA 0:02:00]"  # 60 s per run, 2 left (1 running, 1 pending)
    assert not tally.outcome("busy")  # trained by another process: back to pending, not counted
    assert tally.line() == "[1 of 3 done · ETA 0:02:00]"


def test_every_committed_grid_file_is_a_valid_grid():
    """The grids the project runs (docs/, scripts/, examples) all parse and name at least one run:
    a typo in one would stop scripts/fill_leaderboards.sh or scripts/gpu_check.sh only when reached."""
    from pathlib import Path

    from noiseattack.sweep import load_grid

    repo = Path(__file__).resolve().parents[1]
    grids = [p for d in ("docs", "scripts", "examples") for p in sorted((repo / d).rglob("*.toml"))
             if "runs" not in p.parts]
    assert any("leaderboard" in p.parts for p in grids)
    for p in grids:
        g = load_grid(p, defer_device=True)
        assert sum(len(e.runs()) for e in g.experiments) > 0, p
