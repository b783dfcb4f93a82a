"""First contact (#11): what a new user meets first: --help, input limits, data errors, TensorBoard,
resume messages, an 80-column terminal, --amp on a CPU, and checkpoints that cannot run code."""

from __future__ import annotations

import gzip
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import typer.models

from conftest import run_cli
from test_cli import tb_scalars
from noiseattack import cli, config, data as data_lib, experiment
from noiseattack.train import StopRequested

REPO = Path(__file__).resolve().parents[1]


def _option_helps(fn) -> dict[str, str]:
    """{parameter name: help text} of every typer Option/Argument declared on fn, read from its source
    annotations (not from the command typer builds)."""
    out = {}
    for name, hint in typing.get_type_hints(fn, include_extras=True).items():
        for extra in getattr(hint, "__metadata__", ()):
            if isinstance(extra, typer.models.ParameterInfo) and extra.help:
                out[name] = extra.help
    return out


def _commands() -> list[tuple[str, dict[str, str]]]:
    cmds = []
    for info in cli.app.registered_commands:
        fn = getattr(info.callback, "__wrapped__", info.callback)
        helps = _option_helps(fn)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()):
            helps.update(_option_helps(cli._shared_options))  # clean, constant, mix take the shared options
        cmds.append((info.name or fn.__name__.replace("_", "-"), helps))
    return cmds


def _squash(text: str) -> str:
    """Without whitespace: help is wrapped at spaces and after hyphens."""
    return "".join(text.split())


def test_every_command_help_shows_every_option_help(capsys):
    commands = _commands()
    assert {"clean", "constant", "mix", "report", "sweep"} <= {name for name, _ in commands}
    for name, helps in commands:
        code, out, err = run_cli(capsys, name, "--help")
        assert code == 0, err
        shown = _squash(out)
        missing = [p for p, h in helps.items() if _squash(h) not in shown]
        assert not missing, f"`noiseattack {name} --help` lacks the help of {missing}"
    assert len(dict(commands)["mix"]) >= 30  # the shared options were found


@pytest.mark.parametrize("command,option", [("clean", "--dataset"), ("mix", "--dataset"), ("mix", "--extra")])
def test_dataset_help_lists_the_datasets(capsys, command, option):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    text = _squash(out)
    start = text.index(option + "<str>")
    entry = text[start:start + 120]
    names = re.findall(r"[a-z0-9]+", entry.split(":", 1)[1])
    assert set(data_lib.DATASETS) <= set(names), entry


# --------------------------------------------------------------------------- 2. input limits

def _refused(capsys, tmp_path, *args) -> str:
    """Run the CLI on args that must be refused: exit 2, one line on stderr, nothing written. -> the line."""
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, *args, "--runs-dir", runs, "--data-dir", tmp_path / "nodata", "--device", "cpu",
                             "--no-progress")
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("noiseattack: error:"), err
    assert "Traceback" not in err + out
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.rglob("*"))
    assert not (tmp_path / "nodata").exists()
    return err


@pytest.mark.parametrize("args,message", [
    (["mix", "--k", "1000000"], "k must be <= 16 x the batch size (2048 for --batch-size 128), got 1000000"),
    (["mix", "--k", "65", "--batch-size", "4"], "k must be <= 16 x the batch size (64 for --batch-size 4), got 65"),
    (["clean", "--train-subset", "10"], "train subset 10 is smaller than the batch size 128"),
    (["clean", "--epochs", "100000"], "epochs must be <= 10000, got 100000"),
    (["clean", "--depth", "2000"], "depth must be <= 1202, got 2000"),
    (["clean", "--width", "1000"], "width must be <= 64, got 1000"),
    (["clean", "--batch-size", "100000"], "batch size must be <= 65536, got 100000"),
    (["clean", "--eval-batch-size", "1000000"], "eval batch size must be <= 65536, got 1000000"),
    (["clean", "--lr", "1e7"], "lr must be <= 1e+06, got 1e+07"),
    (["clean", "--momentum", "1.5"], "momentum and weight decay must be < 1"),
    (["clean", "--weight-decay", "2"], "momentum and weight decay must be < 1"),
    (["clean", "--epochs", "4", "--milestones", "2,9"], "milestones must be epochs <= 4"),
    (["clean", "--train-subset", "100000000"], "train subset must be <= 10000000"),
    (["clean", "--test-subset", "100000000"], "test subset must be <= 10000000"),
    (["constant", "--alpha", "1e9"], "|alpha| must be <= 1000, got 1e+09"),
    (["constant", "--beta", "-5000"], "|beta| must be <= 1000, got 5000"),
    (["clean", "--seed", "-1"], "seeds must be in 0..4294967295, got -1"),
    (["clean", "--seed", str(2**33)], f"seeds must be in 0..4294967295, got {2**33}"),
    (["clean", "--seeds", "0,-3"], "seeds must be in 0..4294967295, got -3"),
    (["clean", "--repeats", "100000"], "repeats must be <= 1000, got 100000"),
])
def test_numeric_options_have_upper_limits(capsys, tmp_path, args, message):
    assert message in _refused(capsys, tmp_path, *args)


def test_a_batch_that_cannot_fit_in_memory_is_refused(capsys, tmp_path):
    # ResNet-1202 at width 64 keeps > 8 GiB of activations per image (its 3 stages of 200 blocks of two
    # 3x3 convs of 1024x32x32, 2048x16x16, 4096x8x8 outputs, in fp32): 2176 images need terabytes
    err = _refused(capsys, tmp_path, "mix", "--k", "2048", "--batch-size", "128", "--depth", "1202", "--block", "basic",
                   "--width", "64")
    assert "a training batch of 2176 images (batch size + k) needs about" in err and "GiB free on cpu" in err
    err = _refused(capsys, tmp_path, "clean", "--eval-batch-size", "65536", "--depth", "1202", "--block", "basic",
                   "--width", "64", "--batch-size", "1")
    assert "an evaluation batch of 65536 images needs about" in err
    grid = tmp_path / "grid.toml"  # a sweep, its dry run too, checks the batches of the runs it trains here
    grid.write_text('[train]\ndataset = "mnist"\ndepth = 1202\nwidth = 64\nbatch_size = 4096\n'  # device: auto
                    '[grid]\nnorms = ["bn"]\n[[attack]]\nkind = "clean"\n')
    code, out, err = run_cli(capsys, "sweep", grid, "--dry-run", "--runs-dir", tmp_path / "runs")
    assert (code, out) == (2, "") and err.count("\n") == 1, err
    assert err.startswith(f"noiseattack: error: {grid}: clean-mnist-resnet1202w64") and "a training batch of 4096 images" in err
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- 9. --amp on a CPU without bf16

def test_amp_is_refused_on_a_cpu_without_bf16(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "cpu_supports_bf16", lambda: False)
    err = _refused(capsys, tmp_path, "clean", "--amp")
    assert "--amp needs a GPU or a CPU with native bf16" in err and "drop --amp" in err


def test_amp_is_allowed_on_a_cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(config, "cpu_supports_bf16", lambda: True)
    assert config.resolve_train_config(dataset="mnist", device="cpu", amp=True).amp is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_is_allowed_on_cuda_whatever_the_cpu(monkeypatch):
    monkeypatch.setattr(config, "cpu_supports_bf16", lambda: False)
    assert config.resolve_train_config(dataset="mnist", device="cuda", amp=True).amp is True


def test_the_bf16_probe_answers_for_this_cpu():
    assert config.cpu_supports_bf16() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


# --------------------------------------------------------------------------- 10. checkpoints cannot run code

TINY = ("--dataset", "mnist", "--norm", "bn", "--repeats", "1", "--depth", "8", "--epochs", "1", "--batch-size", "32",
        "--device", "cpu", "--no-compile-norms", "--name", "exp")


class Planted:
    """Unpickling it (weights_only=False) runs code: it creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": "whatever", "model": Planted(marker), "state": {"epoch": 0, "step": 3}}, path)


def test_a_planted_checkpoint_does_not_run_and_the_run_starts_afresh(capsys, tmp_path, fake_mnist):
    control = tmp_path / "control-marker"
    _plant(tmp_path / "control.pt", control)
    torch.load(tmp_path / "control.pt", weights_only=False)  # the plant is live: a full unpickler runs it
    assert control.exists()

    runs, marker = tmp_path / "runs", tmp_path / "marker"
    _plant(runs / "exp" / "ckpt" / "bn-s0.pt", marker)
    code, out, err = run_cli(capsys, "clean", *TINY, "--data-dir", fake_mnist(n_train=64, n_test=32),
                             "--runs-dir", runs, "--no-progress")
    assert code == 0, err
    assert not marker.exists()
    assert "bn-s0.pt: unreadable checkpoint" in err and "starts afresh" in err
    (rec,) = [json.loads(line) for line in (runs / "exp" / "results.jsonl").read_text().splitlines()]
    assert rec["status"] == "finished" and rec["epochs_done"] == 1 and len(rec["history"]) == 1
    assert not (runs / "exp" / "ckpt" / "bn-s0.pt").exists()


# --------------------------------------------------------------------------- 3. data errors that tell the truth

SMALL = ("--norm", "bn", "--repeats", "1", "--depth", "8", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
         "--no-compile-norms", "--no-progress", "--train-subset", "64", "--test-subset", "32")


def _no_network(monkeypatch):
    def no_network(url, *args, **kwargs):  # as on a machine without internet, but at once
        raise URLError("no network")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", no_network)


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))} if root.exists() else {}


def test_every_missing_dataset_is_reported_at_once_before_the_settings(capsys, tmp_path, monkeypatch):
    _no_network(monkeypatch)
    runs, data = tmp_path / "runs", tmp_path / "data"
    code, out, err = run_cli(capsys, "mix", "--dataset", "mnist", "--extra", "fmnist", *SMALL, "--data-dir", data,
                             "--runs-dir", runs)
    assert code == 2 and err.count("\n") == 1, err
    assert f"mnist: data missing in {data.absolute() / 'MNIST' / 'raw'}" in err
    assert f"fmnist: data missing in {data.absolute() / 'FashionMNIST' / 'raw'}" in err
    assert out == ""  # the error comes before the resolved settings are printed
    assert not runs.exists() and not data.exists()


def _extract(raw: Path) -> None:
    for gz in raw.glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))


def test_a_truncated_extracted_file_is_named_and_deleting_it_repairs(capsys, tmp_path, shared_data):
    raw = shared_data / "MNIST" / "raw"
    _extract(raw)
    bad = raw / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[: 16 + 28 * 28 * 1000])  # the header says 60000 images
    runs = tmp_path / "runs"
    args = ("clean", "--dataset", "mnist", *SMALL, "--data-dir", shared_data, "--runs-dir", runs)
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and err.count("\n") == 1, err
    assert f"corrupt extracted file {bad.absolute()}" in err
    assert f"{16 + 28 * 28 * 1000} bytes where its header says {16 + 28 * 28 * 60000}" in err
    assert "delete it and it is re-extracted from train-images-idx3-ubyte.gz" in err
    assert "missing" not in err and "download" not in err and out == "" and not runs.exists()

    bad.unlink()  # as the message says
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert bad.read_bytes() == gzip.decompress((raw / "train-images-idx3-ubyte.gz").read_bytes())


def _run_on_read_only(tmp_path: Path, data: Path, args: list[str]) -> tuple[int, str, str]:
    """The CLI with `data` read-only: a read-only bind mount (root ignores file modes) in a private
    mount namespace, else (not root) the file modes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cli = shlex.join([sys.executable, "-m", "noiseattack", *map(str, args)])
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("root, and no unshare for a read-only mount")
        d = shlex.quote(str(data))
        cmd = ["unshare", "-m", "sh", "-c", f"mount --bind {d} {d} && mount -o remount,bind,ro {d} && exec {cli}"]
    else:
        for p in [data, *data.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        cmd = ["sh", "-c", f"exec {cli}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    finally:
        for p in [data, *data.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
    if os.geteuid() == 0 and "mount" in proc.stderr and "noiseattack" not in proc.stderr:
        pytest.skip(f"no read-only bind mount here: {proc.stderr.strip()}")
    return proc.returncode, proc.stdout, proc.stderr


def test_archives_in_a_read_only_dir_are_not_called_missing(tmp_path, shared_data):
    runs = tmp_path / "runs"
    before = _tree(shared_data)
    code, out, err = _run_on_read_only(tmp_path, shared_data, ["clean", "--dataset", "mnist", *SMALL, "--data-dir",
                                                                shared_data, "--runs-dir", runs])
    assert code == 2 and err.count("\n") == 1, err
    raw = shared_data / "MNIST" / "raw"
    assert f"mnist: {raw} holds train-images-idx3-ubyte.gz" in err
    assert "cannot be extracted there (read-only)" in err
    assert f"copy {shared_data / 'MNIST'} into a writable dir and pass that dir as --data-dir" in err
    assert "missing" not in err and "download" not in err
    assert _tree(shared_data) == before and not runs.exists()


# --------------------------------------------------------------------------- 4. OS errors while preparing a run

@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_runs_dir_that_cannot_exist_is_one_line(capsys, tmp_path, fake_mnist):
    code, out, err = run_cli(capsys, "clean", "--dataset", "mnist", *SMALL, "--data-dir", fake_mnist(),
                             "--runs-dir", "/proc/noiseattack-runs")
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("noiseattack: error: cannot create the experiment dir /proc/noiseattack-runs/")
    assert not Path("/proc/noiseattack-runs").exists()


# --------------------------------------------------------------------------- 6. resume says so

def test_resume_and_nothing_to_do_are_said(capsys, tmp_path, fake_mnist):
    data, runs = fake_mnist(n_train=256, n_test=32), tmp_path / "runs"  # 256 / 32 = 8 steps per epoch
    args = ("clean", "--dataset", "mnist", "--norm", "bn", "--seeds", "0,1", "--depth", "8", "--epochs", "1",
            "--batch-size", "32", "--device", "cpu", "--no-compile-norms", "--name", "exp", "--no-progress",
            "--data-dir", data, "--runs-dir", runs)
    # bn-s0 interrupted after 7 steps, as a Ctrl-C would leave it: the same setting, built as the CLI builds it
    train = config.resolve_train_config(dataset="mnist", depth=8, epochs=1, batch_size=32, device="cpu",
                                        compile_norms=False)
    exp = config.resolve_experiment(train, norms="bn", seeds="0,1", name="exp", runs_dir=runs, data_dir=data)
    prepared, steps = experiment.prepare(exp), []
    with pytest.raises(StopRequested):
        experiment.execute(exp.runs()[0], exp.dir, prepared, on_step=lambda: steps.append(1),
                           should_stop=lambda: len(steps) >= 7)

    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "resuming bn-s0 from epoch 1, step 7" in out
    assert "resuming bn-s1" not in out
    assert len((runs / "exp" / "results.jsonl").read_text().splitlines()) == 2

    code, out, err = run_cli(capsys, *args, "--progress")
    assert code == 0, err
    assert f"all 2 runs are done; nothing to train (report: noiseattack report {runs / 'exp'})" in " ".join(out.split())
    assert "0/0" not in out + err and "starting" not in out + err and "resuming" not in out


# --------------------------------------------------------------------------- 7. an 80-column terminal

def test_progress_line_and_tensorboard_hint_survive_80_columns(capsys, tmp_path, fake_mnist, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    runs = tmp_path / "a-runs-dir-with-a-rather-long-name" / "so-that-paths-pass-80-columns"
    code, out, err = run_cli(capsys, "clean", "--dataset", "mnist", "--norm", "bn,iebn", "--repeats", "1",
                             "--depth", "8", "--epochs", "2", "--batch-size", "32", "--device", "cpu",
                             "--no-compile-norms", "--name", "exp", "--progress", "--data-dir",
                             fake_mnist(n_train=64, n_test=32), "--runs-dir", runs)
    assert code == 0, err
    bars = [line for line in err.splitlines() if "steps" in line]
    assert bars, err
    for line in bars:
        assert len(line) <= 80, line
        # the counts and both times whole; the description may give way, not them
        assert re.search(r"\] (bn|iebn)-s0\b.* \d+/\d+ steps \d+:\d\d:\d\d ETA (\d+:\d\d:\d\d|-:--:--)$", line), line
    lines = out.splitlines()
    assert f"TensorBoard: tensorboard --logdir {runs / 'exp' / 'tb'}" in lines
    assert f"results: {runs / 'exp' / 'results.jsonl'}" in lines


# --------------------------------------------------------------------------- 5. TensorBoard opens on the comparison

def _hparams_events(folder: Path) -> dict[str, list]:
    """{tag: [parsed HParamsPluginData]} of the hparams-plugin events in folder's own event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    out: dict[str, list] = {}
    for f in sorted(folder.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name == "hparams":
                    out.setdefault(v.tag, []).append(
                        plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content))
    return out


def test_tensorboard_hparams_lead_with_norm_seed_and_setting(capsys, tmp_path, fake_mnist):
    from tensorboard.plugins.hparams.backend_context import _sort_and_reduce_to_hparams_limit

    runs = tmp_path / "runs"
    args = ("constant", "--alpha", "2", "--beta", "1", "--dataset", "mnist", "--norm", "bn,in", "--repeats", "1",
            "--depth", "8", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--no-compile-norms",
            "--name", "exp", "--no-progress", "--data-dir", fake_mnist(n_train=64, n_test=32), "--runs-dir", runs)
    assert run_cli(capsys, *args)[0] == 0
    assert run_cli(capsys, *args[:-7], "--seeds", "1", *args[-7:])[0] == 0  # a second invocation: seed 1
    tb = runs / "exp" / "tb"
    assert not _hparams_events(tb)  # nothing in tb/ itself, which TensorBoard would list as a run `.`
    configs = [_hparams_events(tb / f"{n}-mean")["_hparams_/experiment"] for n in ("bn", "in")]
    assert configs[0] == configs[1] and len(configs[0]) == 1  # one config per mean run, replaced, not appended
    experiment_pb = configs[0][0].experiment
    # TensorBoard's own ordering of the columns (the dashboard shows the first five, then the metrics)
    _sort_and_reduce_to_hparams_limit(experiment_pb)
    columns = [h.name for h in experiment_pb.hparam_infos]
    assert columns == ["norm", "seed", "setting"]  # what tells a dir's runs apart: the metrics fit beside them
    domains = {h.name: h for h in experiment_pb.hparam_infos}
    assert sorted(domains["norm"].domain_discrete) == ["bn", "in"]
    assert list(domains["seed"].domain_discrete) == ["0", "1"]  # strings: shown as 0, not 0.0000
    assert list(domains["setting"].domain_discrete) == ["a2_b1"]
    assert [m.name.tag for m in experiment_pb.metric_infos] == ["zz_final/test_acc", "zz_final/best_test_acc"]

    run_dirs = sorted(p.name for p in tb.iterdir() if p.is_dir())
    assert run_dirs == ["bn-mean", "bn-s0", "bn-s1", "in-mean", "in-s0", "in-s1"]  # run names lead with the norm
    for name in run_dirs[1:3] + run_dirs[4:]:
        (start,) = _hparams_events(tb / name)["_hparams_/session_start_info"]
        hp = start.session_start_info.hparams
        norm, seed = name.split("-s")
        assert (hp["norm"].string_value, hp["seed"].string_value, hp["setting"].string_value) == (norm, seed, "a2_b1")
        assert hp["alpha"].number_value == 2 and hp["attack"].string_value == "constant"  # the rest of the setting
        tags = sorted(tb_scalars(tb / name))
        # the curves first, the single-point final metrics last
        assert tags == ["test/acc", "test/log10_loss", "test/loss", "train/acc", "train/log10_loss", "train/loss",
                        "train/lr", "zz_final/best_test_acc", "zz_final/test_acc"]
