"""Reliability (issue 5): a killed or interrupted experiment resumes to the same results, results
are only ever appended, divergence is a recorded result, bad input is one line and exit code 2
with nothing written, and config.json holds the exact command that re-runs an experiment.

The subprocess tests run `python -m noiseattack` with OMP_NUM_THREADS=1 (the same numerics in
every process); the others run the CLI in this process. Data: a tiny fake MNIST (256 + 128
images), ResNet-8.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.error import URLError

import pytest
import torch

from conftest import make_fake_mnist, run_cli
from noiseattack import experiment
from noiseattack import train as train_mod
from noiseattack.config import RunConfig, resolve_experiment, resolve_train_config
from noiseattack.fileio import TornLineWarning, read_jsonl
from noiseattack.results import read_results

REPO = Path(__file__).resolve().parents[1]
NAME = "exp"

# 2 norms x 2 seeds, 3 epochs of 8 steps each: long enough to be killed in the middle of it.
# --no-compile-norms: the kill delays scale with the reference's run time, which would include the
# first process's kernel compilation; the compiled kernels resume bit-identically too (in process, below).
KILL_ARGS = ("clean", "--dataset", "mnist", "--norm", "bn,iebn", "--repeats", "2", "--depth", "8", "--epochs", "3",
             "--batch-size", "32", "--device", "cpu", "--no-progress", "--no-compile-norms", "--name", NAME)
# What the in-process tests start from: one epoch of 4 steps.
TINY = ("--dataset", "mnist", "--norm", "bn", "--repeats", "1", "--depth", "8", "--epochs", "1", "--batch-size", "64",
        "--device", "cpu", "--no-progress")
RESUME_LINE = "Re-run the same command to resume"
VOLATILE = ("wall_time_s", "cpu_time_s", "compile_s", "finished_at", "machine", "skipped")  # not part of a run's result


# --------------------------------------------------------------------------- helpers


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def start(runs: Path, data: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "noiseattack", *KILL_ARGS, "--runs-dir", str(runs),
                             "--data-dir", str(data), *extra],
                            env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(runs: Path, data: Path) -> str:
    proc = start(runs, data)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return err


def progress(exp_dir: Path) -> tuple:
    """What changes whenever a run makes progress: checkpoints written, results appended."""
    files = [exp_dir / "results.jsonl"]
    try:
        files += sorted((exp_dir / "ckpt").iterdir())
    except OSError:
        pass
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:  # not there (yet, or any more)
            continue
        out.append((f.name, st.st_mtime_ns, st.st_size))
    return tuple(out)


def wait_for(cond, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        if proc is not None and proc.poll() is not None:
            return
        time.sleep(0.01)


def result(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in VOLATILE}


def assert_same_results(exp_dir: Path, reference: dict[str, dict]) -> None:
    """Every line of results.jsonl is complete, each (norm, seed) is there exactly once, and each
    run's result (final and best accuracy, the history of every epoch, ...) equals the reference."""
    raw = (exp_dir / "results.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.splitlines()]
    assert sorted((r["norm"], r["seed"]) for r in lines) == sorted((r["norm"], r["seed"]) for r in reference.values())
    for rec in lines:
        assert result(rec) == result(reference[rec["key"]]), rec["key"]


def tree(*roots: Path) -> dict[str, tuple]:
    """Every file and dir under the roots, files with size and mtime: 'nothing written' compares two
    of these. (A dir's mtime changes when a dir created in it is removed again.)"""
    out = {}
    for root in roots:
        if root.exists():
            for p in [root, *root.rglob("*")]:
                st = p.stat()
                out[str(p)] = ("dir",) if p.is_dir() else (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def kill_data(tmp_path_factory) -> Path:
    return make_fake_mnist(tmp_path_factory.mktemp("killdata"), n_train=256, n_test=128)


@pytest.fixture(scope="module")
def reference(kill_data, tmp_path_factory) -> dict[str, dict]:
    """The records of an uninterrupted run of KILL_ARGS, by key."""
    runs = tmp_path_factory.mktemp("reference")
    finish(runs, kill_data)
    recs = read_jsonl(runs / NAME / "results.jsonl")
    assert len(recs) == 4 and all(r["status"] == "finished" for r in recs)
    assert not (runs / NAME / "ckpt").exists()  # checkpoints of finished runs, and their dir, are removed
    return {r["key"]: r for r in recs}


@pytest.fixture
def data(fake_mnist) -> Path:
    return fake_mnist(n_train=256, n_test=128)


# --------------------------------------------------------------------------- 1. resume


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(reference, kill_data, tmp_path):
    rng = random.Random(2024)
    runs = tmp_path / "runs"
    exp_dir = runs / NAME
    # Delays scale with this machine's speed, so that work is left for every kill: an attempt lasts
    # at most one epoch (a third of a run) plus 0.3 of a run; 4 kills take less than the 4 runs.
    run_s = sum(r["wall_time_s"] for r in reference.values()) / len(reference)
    kills, moments = 0, []
    for _ in range(8):
        before = progress(exp_dir)
        proc = start(runs, kill_data)
        # Let it get somewhere (a checkpoint or a result line more), then kill it after a random delay:
        # mid-step, mid-evaluation, mid-write, between runs, ...
        wait_for(lambda: progress(exp_dir) != before, proc)
        delay = rng.uniform(0, 0.3 * run_s)
        time.sleep(delay)
        if proc.poll() is not None:
            break
        proc.kill()
        proc.communicate(timeout=30)
        kills += 1
        moments.append((round(delay, 2), len(read_jsonl(exp_dir / "results.jsonl"))))
        if kills == 4:
            break
    print("kills (delay after progress, results lines):", moments)
    assert kills >= 3, f"the experiment ended before it was killed 3 times: {moments}"
    assert len(read_jsonl(exp_dir / "results.jsonl")) < 4, "nothing left to resume"

    err = finish(runs, kill_data)
    assert "warning" not in err  # a SIGKILL cannot tear an append: no torn line to skip
    assert_same_results(exp_dir, reference)
    assert not (exp_dir / "ckpt").exists()
    assert not list(exp_dir.rglob("*.tmp"))  # temp files of killed atomic writes are cleaned up
    summary = (exp_dir / "summary.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in summary[1:]] == [["bn", "2"], ["iebn", "2"]]


@pytest.mark.slow
def test_sigint_checkpoints_exits_130_and_resumes_to_the_same_results(reference, kill_data, tmp_path):
    runs = tmp_path / "runs"
    ckpt_dir = runs / NAME / "ckpt"
    proc = start(runs, kill_data)
    # The first checkpoint (end of epoch 1): the handler is installed; then a moment into epoch 2.
    wait_for(lambda: ckpt_dir.is_dir() and any(not p.name.startswith(".") for p in ckpt_dir.iterdir()), proc)
    time.sleep(0.15)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("noiseattack: interrupted") and RESUME_LINE in last
    assert [p.name for p in ckpt_dir.iterdir()], "no checkpoint to resume from"

    finish(runs, kill_data)
    assert_same_results(runs / NAME, reference)


@pytest.mark.parametrize("norm", ["bnse", "iebn", "brn"])  # iebn: with its compiled kernels (the default);
# brn: its schedule's step counter is a buffer in the checkpoint
def test_a_stop_mid_epoch_resumes_bit_identically(norm, data, tmp_path):
    """In process: stop after step 6 (epoch 2 of 3, step 2 of 4), resume from the checkpoint."""
    cfg = resolve_train_config(dataset="mnist", depth=8, epochs=3, batch_size=64, device="cpu")
    run = RunConfig(cfg, norm, 3)
    d = train_mod.prepare_data(cfg, data)
    whole = train_mod.train_run(run, d)

    ckpt = tmp_path / "c.pt"
    steps = [0]

    def count() -> None:
        steps[0] += 1

    with pytest.raises(train_mod.StopRequested, match="epoch 2, step 2"):
        train_mod.train_run(run, d, checkpoint=ckpt, on_step=count, should_stop=lambda: steps[0] >= 6)
    payload = torch.load(ckpt, weights_only=False)
    assert {"model", "optimizer", "state", "rng", "schedule", "key"} <= set(payload)
    assert payload["schedule"]["lr_now"] == pytest.approx(0.01)  # epoch 2 of 3, after milestone 1 (of 1, 2)
    assert {"generator", "torch"} <= set(payload["rng"])  # and "cuda" on a CUDA machine
    assert payload["state"]["epoch"] == 1 and payload["state"]["step"] == 2 and len(payload["state"]["history"]) == 1

    resumed = train_mod.train_run(run, d, checkpoint=ckpt)
    assert resumed.status == "finished"
    assert resumed.final_acc == whole.final_acc and resumed.history == whole.history


# --------------------------------------------------------------------------- 2. append-only results


def test_a_torn_last_line_is_skipped_with_a_warning_and_its_run_redone(data, tmp_path, capsys, log_file_output):
    ref_runs, runs = tmp_path / "ref", tmp_path / "runs"
    code, _, err = run_cli(capsys, "clean", *TINY, "--norm", "bn,iebn", "--data-dir", data, "--runs-dir", ref_runs,
                           "--name", NAME)
    assert code == 0, err
    reference = {r["key"]: r for r in read_jsonl(ref_runs / NAME / "results.jsonl")}

    code, _, err = run_cli(capsys, "clean", *TINY, "--data-dir", data, "--runs-dir", runs, "--name", NAME)
    assert code == 0, err
    results = runs / NAME / "results.jsonl"
    iebn_line = next(json.dumps(r) for r in reference.values() if r["norm"] == "iebn")
    with open(results, "a") as f:  # iebn's line, torn by a kill mid-write
        f.write(iebn_line[:len(iebn_line) // 2])
    before = results.read_bytes()
    with pytest.warns(TornLineWarning, match="results.jsonl:2: ignoring a torn"):
        assert len(read_results(runs / NAME)) == 1

    with_progress = [a for a in TINY if a != "--no-progress"]
    code, out, err = run_cli(capsys, "clean", *with_progress, "--norm", "bn,iebn", "--data-dir", data, "--runs-dir", runs,
                             "--name", NAME)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings and all(w.startswith("noiseattack: warning:") and "torn" in w for w in warnings)
    assert "iebn  seed 0: final" in out and "bn    seed 0" not in out  # iebn redone, bn skipped
    # Not a terminal: the run's line says how far the runs are (the bar is not redrawn in a log file).
    assert re.search(r"^iebn  seed 0: final .*\(\d+ s\)  \[1 of 1 done · ETA 0:00:00\]$", out, flags=re.M), out
    after = results.read_bytes()
    assert after.startswith(before)  # only appended to: the old bytes, torn fragment included, untouched
    assert after[len(before):len(before) + 1] == b"\n" and after.endswith(b"\n")
    assert after[len(before) + 1:].count(b"\n") == 1  # one new line
    with pytest.warns(TornLineWarning):
        recs = read_results(runs / NAME)
    assert sorted(r["norm"] for r in recs) == ["bn", "iebn"]
    for rec in recs:
        assert result(rec) == result(reference[rec["key"]])


# --------------------------------------------------------------------------- 3. divergence


def test_divergence_is_recorded_and_the_experiment_goes_on(data, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "clean", *TINY, "--norm", "bn,iebn", "--repeats", "2", "--epochs", "2",
                             "--lr", "1e6", "--data-dir", data, "--runs-dir", runs, "--name", NAME)
    assert code == 0, err
    recs = read_jsonl(runs / NAME / "results.jsonl")
    assert len(recs) == 4
    for rec in recs:
        assert rec["status"] == "diverged" and rec["diverged"] == {"epoch": 1, "lr": 1e6}
        assert rec["final_acc"] is None and rec["epochs_done"] == 0
    assert out.count("diverged at epoch 1 (lr 1e+06)") == 4
    summary = (runs / NAME / "summary.csv").read_text().splitlines()
    assert summary[1:] == ["bn,0,nan,nan,nan,nan,nan,2,0", "iebn,0,nan,nan,nan,nan,nan,2,0"]  # diverged, at chance
    assert not (runs / NAME / "ckpt").exists()


def test_one_diverged_run_is_counted_apart_from_the_statistics(data, tmp_path, capsys, monkeypatch):
    """bn seed 1 gets NaN activations from its 5th training step (epoch 2): it diverges, the others finish."""
    real_build = train_mod.build_model

    def build(run, num_classes):
        model = real_build(run, num_classes)
        if (run.norm, run.seed) == ("bn", 1):
            calls = [0]

            def poison(module, inputs, output):
                if module.training:
                    calls[0] += 1
                    if calls[0] > 4:
                        return output * math.nan
                return output

            model.register_forward_hook(poison)
        return model

    monkeypatch.setattr(train_mod, "build_model", build)
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "clean", *TINY, "--norm", "bn,iebn", "--repeats", "2", "--epochs", "3",
                             "--milestones", "1", "--lr-gamma", "0.5", "--data-dir", data, "--runs-dir", runs,
                             "--name", NAME)
    assert code == 0, err
    assert "bn    seed 1: diverged at epoch 2 (lr 0.05)" in out
    recs = {(r["norm"], r["seed"]): r for r in read_jsonl(runs / NAME / "results.jsonl")}
    assert len(recs) == 4
    bad = recs[("bn", 1)]
    assert bad["status"] == "diverged" and bad["diverged"] == {"epoch": 2, "lr": 0.05}
    assert len(bad["history"]) == 1 and bad["final_acc"] is None
    assert all(r["status"] == "finished" and len(r["history"]) == 3 for k, r in recs.items() if k != ("bn", 1))

    header, *rows = (runs / NAME / "summary.csv").read_text().splitlines()
    rows = {r.split(",")[0]: dict(zip(header.split(","), r.split(","))) for r in rows}
    assert rows["bn"]["n"] == "1" and rows["bn"]["diverged"] == "1"
    assert float(rows["bn"]["mean"]) == pytest.approx(recs[("bn", 0)]["final_acc"], abs=1e-4)
    assert rows["iebn"]["n"] == "2" and rows["iebn"]["diverged"] == "0"

    from noiseattack.report import build_report

    rep = build_report([runs], None, plots=False)
    by_norm = {r["norm"]: r for r in rep.rows}
    assert by_norm["bn"]["n"] == 1 and by_norm["bn"]["diverged"] == 1
    assert by_norm["bn"]["mean"] == pytest.approx(recs[("bn", 0)]["final_acc"])
    assert by_norm["iebn"]["n"] == 2 and by_norm["iebn"]["diverged"] == 0


# --------------------------------------------------------------------------- 5. input checking


BAD_INPUTS = [
    # (id, command, extra args, what the message says)
    ("unknown-norm", "clean", ["--norm", "xn"], "unknown norm 'xn'"),
    ("unknown-dataset", "clean", ["--dataset", "svhn"], "unknown dataset 'svhn'"),
    ("unknown-extra", "mix", ["--extra", "svhn"], "unknown extra dataset 'svhn'"),
    ("unknown-preset", "clean", ["--preset", "huge"], "unknown preset 'huge'"),
    ("alpha-zero", "constant", ["--alpha", "0"], "alpha must be non-zero"),
    ("alpha-nan", "constant", ["--alpha", "nan"], "alpha must be finite"),
    ("alpha-inf", "constant", ["--alpha", "inf"], "alpha must be finite"),
    ("alpha-minus-inf", "constant", ["--alpha", "-inf"], "alpha must be finite"),
    ("beta-nan", "constant", ["--beta", "nan"], "beta must be finite"),
    ("beta-inf", "constant", ["--beta", "inf"], "beta must be finite"),
    ("k-negative", "mix", ["--extra", "mnist-inverted", "--k", "-1"], "k must be >= 0"),
    ("repeats-zero", "clean", ["--repeats", "0"], "repeats must be >= 1"),
    ("seeds-garbage", "clean", ["--seeds", "0,x"], "--seeds must be comma-separated integers"),
    ("epochs-zero", "clean", ["--epochs", "0"], "epochs must be >= 1"),
    ("depth-basic", "clean", ["--depth", "9"], "depth 9 is not valid for basic blocks"),
    ("depth-bottleneck", "clean", ["--depth", "30", "--block", "bottleneck"], "depth 30 is not valid for bottleneck"),
    ("batch-size-zero", "clean", ["--batch-size", "0"], "batch size must be >= 1"),
    ("lr-zero", "clean", ["--lr", "0"], "lr must be > 0"),
    ("lr-negative", "clean", ["--lr", "-0.1"], "lr must be > 0"),
    ("train-subset-zero", "clean", ["--train-subset", "0"], "train subset must be >= 1"),
    ("train-subset-too-large", "clean", ["--train-subset", "257"], "train subset 257 is larger than mnist's training split (256)"),
    ("not-an-int", "clean", ["--epochs", "three"], "Invalid value for '--epochs'"),
    ("runs-dir-not-writable", "clean", ["--runs-dir", "{tmp}/a-file/runs"], "is not writable"),
    ("data-missing", "clean", ["--data-dir", "{tmp}/nodata"], "data missing in"),
    ("data-md5", "clean", ["--data-dir", "{real}"], "md5 mismatch"),
]


@pytest.mark.parametrize("command,extra,message", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_nothing_written(command, extra, message, data, tmp_path, capsys,
                                                          monkeypatch, request):
    (tmp_path / "a-file").write_text("a regular file, not a directory\n")
    real = None
    if "{real}" in " ".join(extra):
        real = request.getfixturevalue("shared_data")
        corrupt = real / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
        raw = bytearray(corrupt.read_bytes())
        raw[100] ^= 0xFF
        corrupt.write_bytes(bytes(raw))
        message += f" (corrupt or wrong file): {corrupt}"

    def no_network(url, *args, **kwargs):  # as on a machine without internet, but at once
        raise URLError("no network")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", no_network)
    extra = [a.format(tmp=tmp_path, real=real) for a in extra]
    runs = tmp_path / "runs"
    before = tree(tmp_path)
    code, out, err = run_cli(capsys, command, *TINY, "--data-dir", data, "--runs-dir", runs, *extra)
    assert code == 2, (out, err)
    assert err.endswith("\n") and err.count("\n") == 1, err  # one line
    assert err.startswith("noiseattack: error: ") and message in err
    assert tree(tmp_path) == before  # neither the runs dir nor any data dir changed
    assert not runs.exists()


def test_a_different_setting_in_an_existing_dir_is_refused_unless_overwrite(data, tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ("clean", *TINY, "--data-dir", data, "--runs-dir", runs, "--name", NAME)
    code, _, err = run_cli(capsys, *base)
    assert code == 0, err
    results = runs / NAME / "results.jsonl"
    before, first_results = tree(runs), results.read_bytes()

    code, _, err = run_cli(capsys, *base, "--lr", "0.05")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"noiseattack: error: {runs / NAME} holds a different experiment (lr 0.1 -> 0.05)")
    assert "--overwrite" in err
    assert tree(runs) == before

    # --overwrite with the same setting keeps the dir: re-running the same command always resumes.
    code, out, err = run_cli(capsys, *base, "--overwrite")
    assert code == 0, err
    assert results.read_bytes() == first_results
    assert "seed 0: final" not in out  # skipped, not trained again

    code, out, err = run_cli(capsys, *base, "--lr", "0.05", "--overwrite")
    assert code == 0, err
    assert "bn    seed 0: final" in out
    recs = read_jsonl(results)
    assert len(recs) == 1 and recs[0]["config"]["lr"] == 0.05
    assert json.loads((runs / NAME / "config.json").read_text())["identity"]["lr"] == 0.05


def test_checkpoints_are_removed_unless_kept(data, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, _, err = run_cli(capsys, "clean", *TINY, "--repeats", "2", "--data-dir", data, "--runs-dir", runs,
                           "--name", "gone")
    assert code == 0, err
    assert not (runs / "gone" / "ckpt").exists()  # the files, and the then-empty dir

    code, _, err = run_cli(capsys, "clean", *TINY, "--repeats", "2", "--data-dir", data, "--runs-dir", runs,
                           "--name", "kept", "--keep-checkpoints")
    assert code == 0, err
    kept = sorted(p.name for p in (runs / "kept" / "ckpt").iterdir())
    assert kept == ["bn-s0.pt", "bn-s1.pt"]
    payload = torch.load(runs / "kept" / "ckpt" / "bn-s0.pt", weights_only=False)
    assert payload["state"]["epoch"] == 1 and payload["state"]["perm"] is None  # the end of the last epoch

    # A checkpoint left behind by a kill between a run's record and its cleanup goes on the next run.
    (runs / "gone" / "ckpt").mkdir()
    (runs / "gone" / "ckpt" / "bn-s0.pt").write_bytes(b"stale")
    code, _, err = run_cli(capsys, "clean", *TINY, "--repeats", "2", "--data-dir", data, "--runs-dir", runs,
                           "--name", "gone")
    assert code == 0, err
    assert not (runs / "gone" / "ckpt").exists()

    # An unreadable checkpoint of a pending run (not one of ours: our writes are atomic) is a warning,
    # and the run starts afresh, to the same result.
    (runs / "gone" / "ckpt").mkdir()
    (runs / "gone" / "ckpt" / "bn-s2.pt").write_bytes(b"garbage")
    code, out, err = run_cli(capsys, "clean", *TINY, "--seeds", "2", "--data-dir", data, "--runs-dir", runs,
                             "--name", "gone")
    assert code == 0, err
    assert err.startswith("noiseattack: warning: ") and "unreadable checkpoint" in err and err.count("\n") == 1
    assert "bn    seed 2: final" in out and not (runs / "gone" / "ckpt").exists()


# --------------------------------------------------------------------------- locks


def test_a_run_that_another_process_trains_is_left_to_it_then_waited_for(data, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ("clean", *TINY, "--repeats", "2", "--data-dir", data, "--runs-dir", runs, "--name", NAME)
    lock = runs / NAME / ".locks" / "bn-s0"
    lock.parent.mkdir(parents=True)
    results = runs / NAME / "results.jsonl"
    f = open(lock, "a")
    fcntl.flock(f, fcntl.LOCK_EX)  # "another process" trains bn seed 0

    def release_after_seed_1() -> None:
        wait_for(lambda: results.exists() and results.read_bytes().count(b"\n") >= 1, timeout=120)
        time.sleep(0.3)
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()

    t = threading.Thread(target=release_after_seed_1)
    t.start()
    try:
        code, out, err = run_cli(capsys, *args)
    finally:
        t.join()
    assert code == 0, err
    assert "another process is training it" in out and "waiting for the other process" in out
    assert [(r["norm"], r["seed"]) for r in read_jsonl(results)] == [("bn", 1), ("bn", 0)]

    # The same lock for sweeps and single runs: execute refuses a run whose lock is held.
    train = resolve_train_config(dataset="mnist", depth=8, epochs=1, batch_size=64, device="cpu")
    run = RunConfig(train, "iebn", 0)
    with open(lock.parent / "iebn-s0", "a") as g:
        fcntl.flock(g, fcntl.LOCK_EX)
        assert experiment.is_running(runs / NAME, run)
        with pytest.raises(experiment.RunBusy):
            experiment.execute(run, runs / NAME, train_mod.prepare_data(train, data))


# --------------------------------------------------------------------------- 6. reproducibility


def test_config_json_holds_the_exact_command_and_the_versions(data, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, _, err = run_cli(capsys, "constant", *TINY, "--alpha", "2", "--beta", "0.5", "--norm", "bn,in",
                           "--seeds", "0,5", "--data-dir", data, "--runs-dir", runs, "--name", NAME)
    assert code == 0, err
    doc = json.loads((runs / NAME / "config.json").read_text())
    assert doc["seeds"] == [0, 5] and doc["norms"] == ["bn", "in"]
    assert {"noiseattack", "torch", "torchvision", "numpy", "python"} <= set(doc["versions"])
    assert {"device", "cpu", "threads", "platform"} <= set(doc["machine"])
    argv = shlex.split(doc["command"])
    assert argv[:2] == ["noiseattack", "constant"]
    assert "--seeds" in argv and argv[argv.index("--seeds") + 1] == "0,5" and "--repeats" not in argv
    first = {r["key"]: r for r in read_jsonl(runs / NAME / "results.jsonl")}
    assert all(r["versions"] == doc["versions"] for r in first.values())

    # The recorded command, into another runs dir, trains the same runs to the same results.
    argv[argv.index("--runs-dir") + 1] = str(tmp_path / "again")
    code, _, err = run_cli(capsys, *argv[1:], "--no-progress")
    assert code == 0, err
    again = {r["key"]: r for r in read_jsonl(tmp_path / "again" / NAME / "results.jsonl")}
    assert again.keys() == first.keys()
    for key, rec in again.items():
        assert result(rec) == result(first[key])

    # Consecutive seeds are written as --repeats/--seed; seeds added later are merged into the command.
    exp = resolve_experiment(resolve_train_config(dataset="mnist", depth=8, epochs=1, device="cpu"), norms="bn",
                             repeats=3, seed=4, runs_dir=tmp_path)
    assert "--repeats 3 --seed 4" in experiment.cli_command(exp)
    assert "--seeds 4,5,6,9" in experiment.cli_command(exp, seeds=[9, 4, 5, 6])


def test_sigterm_requests_a_stop_like_ctrl_c():
    import os
    import signal

    from noiseattack.experiment import sigint_requests_stop

    before = signal.getsignal(signal.SIGTERM)
    with sigint_requests_stop() as should_stop:
        assert not should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert should_stop()
    assert signal.getsignal(signal.SIGTERM) is before
