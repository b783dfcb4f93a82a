"""TensorBoard opens on a per-norm comparison (#25, item 8), read back from the event files by
TensorBoard's own loaders and HParams backend: per-norm mean runs (`<norm>-mean`) beside the seeds,
no stray `.` run, run names that the comparison URL's colour regex groups by norm, log10 loss curves
on which an exploding run does not flatten the others, and an HParams table whose columns are norm,
seed (shown as an integer: a string) and setting, followed by the metrics."""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import run_cli
from noiseattack import train as train_mod
from noiseattack.fileio import read_jsonl
from noiseattack.tbhparams import comparison_url

TINY = ("--dataset", "mnist", "--depth", "8", "--epochs", "2", "--batch-size", "32", "--device", "cpu",
        "--no-compile-norms", "--no-compile", "--no-progress", "--name", "exp")


def _multiplexer(tb: Path):
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tb))
    mux.Reload()
    return mux


def _scalars(mux, run: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of a run's scalars, as TensorBoard's multiplexer serves them."""
    from tensorboard.util import tensor_util

    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in mux.Tensors(run, tag)]
            for tag in mux.GetAccumulator(run).Tags()["tensors"]
            if mux.SummaryMetadata(run, tag).plugin_data.plugin_name == "scalars"}


def _hparams_backend(tb: Path):
    """TensorBoard's HParams backend on tb/: (the experiment it serves, its session groups)."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    mux = _multiplexer(tb)
    ctx = backend_context.Context(base_plugin.TBContext(
        logdir=str(tb), data_provider=data_provider.MultiplexerDataProvider(mux, str(tb)), multiplexer=mux))
    req_ctx = context.RequestContext()
    meta = ctx.hparams_metadata(req_ctx, "")
    experiment = ctx.experiment_from_metadata(req_ctx, "", True, meta, ctx.hparams_from_data_provider(req_ctx, "", 0))
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100, include_metrics=True, allowed_statuses=[
        api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING])
    for h in experiment.hparam_infos:
        request.col_params.add(hparam=h.name)
    for m in experiment.metric_infos:
        request.col_params.add(metric=m.name)
    groups = list_session_groups.Handler(req_ctx, ctx, "", request).run().session_groups
    return experiment, groups


@pytest.fixture
def exploding_bn_s1(monkeypatch):
    """bn seed 1: logits x 1e4 in evaluation (a test loss in the 10^4s, as a run on its way out) and
    NaN activations from its 3rd training step of epoch 2: it diverges after one epoch."""
    real_build = train_mod.build_model

    def build(run, num_classes):
        model = real_build(run, num_classes)
        if (run.norm, run.seed) == ("bn", 1):
            steps = [0]

            def hook(module, inputs, output):
                if not module.training:
                    return output * 1e4
                steps[0] += 1
                return output * math.nan if steps[0] > 2 else output  # 2 steps per epoch

            model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(train_mod, "build_model", build)


def test_time_series_compares_norm_means_and_the_url_colours_by_norm(capsys, tmp_path, fake_mnist, exploding_bn_s1):
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "constant", "--alpha", "2", "--beta", "1", "--norm", "bn,in", "--repeats", "2",
                             *TINY, "--data-dir", fake_mnist(n_train=64, n_test=32), "--runs-dir", runs)
    assert code == 0, err
    exp = runs / "exp"
    tb = exp / "tb"
    recs = {(r["norm"], r["seed"]): r for r in read_jsonl(exp / "results.jsonl")}
    assert recs[("bn", 1)]["status"] == "diverged" and recs[("bn", 1)]["history"][0]["test_loss"] > 1e3

    # the runs TensorBoard lists: the seeds and one mean per norm, no `.` (nothing in tb/ itself)
    mux = _multiplexer(tb)
    names = sorted(mux.Runs())
    assert names == ["bn-mean", "bn-s0", "bn-s1", "in-mean", "in-s0", "in-s1"]
    assert not list(tb.glob("events.out.tfevents.*"))

    # the URL the CLI prints: the means only, coloured by norm (TensorBoard's regex colour groups:
    # the capture groups of a JavaScript `name.match(regex)`; its run filter: a case-insensitive search)
    url = comparison_url()
    lines = out.splitlines()
    assert f"  the norms' means, coloured by norm: {url}" in lines
    query = parse_qs(urlsplit(url).query)
    assert urlsplit(url).fragment == "timeseries" and query["smoothing"] == ["0"]
    colour_regex = query["runColorGroup"][0].removeprefix("regex:")
    groups = {name: re.search(colour_regex, name).groups() for name in names}
    assert groups == {n: (n.rsplit("-", 1)[0],) for n in names}  # bn-mean, bn-s0, bn-s1: one colour
    assert [n for n in names if re.search(query["runFilter"][0], n, re.I)] == ["bn-mean", "in-mean"]

    # the means: over the finished runs; the diverged bn-s1 is left out, as in the summaries
    scalars = {n: _scalars(mux, n) for n in names}
    for norm, seeds in (("bn", [0]), ("in", [0, 1])):
        mean = scalars[f"{norm}-mean"]
        for tag, key in (("test/acc", "test_acc"), ("test/loss", "test_loss"), ("train/loss", "train_loss"),
                         ("train/lr", "lr")):
            expected = [sum(recs[(norm, s)]["history"][e][key] for s in seeds) / len(seeds) for e in range(2)]
            assert [v for _, v in mean[tag]] == pytest.approx(expected, rel=1e-5), (norm, tag)
            assert [step for step, _ in mean[tag]] == [1, 2]
        final = sum(recs[(norm, s)]["final_acc"] for s in seeds) / len(seeds)
        assert [v for _, v in mean["zz_final/test_acc"]] == pytest.approx([final], rel=1e-5)
        assert [v for _, v in mean["test/log10_loss"]] == pytest.approx([math.log10(v) for _, v in mean["test/loss"]])

    # the exploding run keeps its exact loss, and its log10 curve is on the others' scale
    s1 = scalars["bn-s1"]
    assert s1["test/loss"][0][1] == pytest.approx(recs[("bn", 1)]["history"][0]["test_loss"], rel=1e-5)
    assert s1["test/log10_loss"][0][1] == pytest.approx(math.log10(s1["test/loss"][0][1]), rel=1e-5)
    assert max(v for n in names for _, v in scalars[n]["test/log10_loss"]) < 10
    assert sorted(scalars["in-s0"]) == ["test/acc", "test/log10_loss", "test/loss", "train/acc", "train/log10_loss",
                                        "train/loss", "train/lr", "zz_final/best_test_acc", "zz_final/test_acc"]


def test_hparams_shows_norm_seed_setting_then_the_metrics(capsys, tmp_path, fake_mnist, monkeypatch):
    runs = tmp_path / "runs"
    args = ("mix", "--extra", "mnist-inverted", "--k", "8", "--norm", "bn,in", "--repeats", "1", *TINY,
            "--data-dir", fake_mnist(n_train=64, n_test=32), "--runs-dir", runs)
    assert run_cli(capsys, *args)[0] == 0
    tb = runs / "exp" / "tb"
    mean_files = {p: p.stat().st_mtime_ns for p in tb.glob("*-mean/events.out.tfevents.*")}
    assert {p.parent.name for p in mean_files} == {"bn-mean", "in-mean"} and len(mean_files) <= 4
    # a directory an older version wrote: its HParams config in tb/ itself (TensorBoard's `.` run)
    (tb / "events.out.tfevents.1.old").write_bytes((next(iter(mean_files))).read_bytes())
    (tb / ".hparams").write_text("{}")
    code, out, err = run_cli(capsys, *args)  # nothing to train
    assert code == 0 and "nothing to train" in out, err
    assert sorted(p.name for p in tb.iterdir()) == ["bn-mean", "bn-s0", "in-mean", "in-s0"]
    assert {p: p.stat().st_mtime_ns for p in tb.glob("*-mean/events.out.tfevents.*")} == mean_files  # unchanged

    # a second invocation adds seed 3 (new HParams domains), and in-s3's layer raises: it fails
    real_build = train_mod.build_model

    def build(run, num_classes):
        if (run.norm, run.seed) == ("in", 3):
            raise RuntimeError("flaky layer")
        return real_build(run, num_classes)

    monkeypatch.setattr(train_mod, "build_model", build)
    more = (*args[:-7], "--seeds", "3", *args[-7:])
    assert run_cli(capsys, *more)[0] == 3
    live = _multiplexer(tb)  # a TensorBoard that is open while the failed run is trained again
    assert sorted(_scalars(live, "in-mean")) == sorted(_scalars(live, "in-s0"))  # the mean of in-s0 alone
    monkeypatch.setattr(train_mod, "build_model", real_build)
    assert run_cli(capsys, *more)[0] == 0
    assert sorted(p.name for p in tb.iterdir()) == ["bn-mean", "bn-s0", "bn-s3", "in-mean", "in-s0", "in-s3"]
    live.Reload()
    recs = {(r["norm"], r["seed"]): r for r in read_jsonl(runs / "exp" / "results.jsonl") if r["status"] != "failed"}
    for mux in (live, _multiplexer(tb)):  # the open one shows the new means (not added to the old), as a new one
        for norm in ("bn", "in"):
            expected = [(e + 1, sum(recs[(norm, s)]["history"][e]["test_acc"] for s in (0, 3)) / 2) for e in range(2)]
            assert _scalars(mux, f"{norm}-mean")["test/acc"] == [(step, pytest.approx(v, rel=1e-5))
                                                                 for step, v in expected]

    experiment, groups = _hparams_backend(tb)
    from tensorboard.plugins.hparams import api_pb2

    # the columns TensorBoard serves, in its order (its table shows the first five, then the metrics)
    assert [h.name for h in experiment.hparam_infos] == ["norm", "seed", "setting"]
    info = {h.name: h for h in experiment.hparam_infos}
    assert info["seed"].type == api_pb2.DATA_TYPE_STRING and list(info["seed"].domain_discrete) == ["0", "3"]
    assert sorted(info["norm"].domain_discrete) == ["bn", "in"]
    assert list(info["setting"].domain_discrete) == ["mnist-inverted_k8"]
    assert [(m.name.tag, m.display_name) for m in experiment.metric_infos] == [
        ("zz_final/test_acc", "final_acc"), ("zz_final/best_test_acc", "best_acc")]
    # one row per run, the mean runs are none; a seed is shown as "3", not "3.0000"
    assert sorted(g.name for g in groups) == ["bn-s0", "bn-s3", "in-s0", "in-s3"]
    for g in groups:
        norm, seed = g.name.split("-s")
        assert (g.hparams["norm"].string_value, g.hparams["seed"].string_value) == (norm, seed)
        assert g.hparams["setting"].string_value == "mnist-inverted_k8" and g.hparams["k"].number_value == 8
        assert {m.name.tag for m in g.metric_values} == {"zz_final/test_acc", "zz_final/best_test_acc"}


def test_logs_rebuilt_from_the_records_are_the_logs_training_wrote(capsys, tmp_path, fake_mnist):
    """`noiseattack tensorboard`: committed runs carry results.jsonl, not tb/. Rebuilt from the records,
    TensorBoard serves the same runs, the same scalars at the same steps and the same HParams sessions
    as the logs the training itself wrote; a run that has logs keeps them; no records: one line, exit 2."""
    import shutil

    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "constant", "--alpha", "2", "--beta", "1", "--norm", "bn,in", "--repeats", "2",
                             *TINY, "--data-dir", fake_mnist(n_train=64, n_test=32), "--runs-dir", runs)
    assert code == 0, err
    tb = runs / "exp" / "tb"

    def served(tb: Path):
        mux = _multiplexer(tb)
        scalars = {n: _scalars(mux, n) for n in sorted(mux.Runs())}
        experiment, groups = _hparams_backend(tb)
        sessions = sorted((g.name, sorted((k, str(v)) for k, v in g.hparams.items()),
                           sorted((m.name.tag, round(m.value, 4)) for m in g.metric_values)) for g in groups)
        return scalars, [h.name for h in experiment.hparam_infos], sessions

    trained = served(tb)
    shutil.rmtree(tb)
    code, out, err = run_cli(capsys, "tensorboard", str(runs))
    assert code == 0, err
    assert out.splitlines()[0] == ("noiseattack: wrote the logs of 4 run(s) (0 had theirs, left as they are) and "
                                   "each norm's mean in 1 experiment dir(s)")
    rebuilt = served(tb)
    assert rebuilt[0].keys() == trained[0].keys() == {"bn-mean", "bn-s0", "bn-s1", "in-mean", "in-s0", "in-s1"}
    for run in trained[0]:
        for tag, points in trained[0][run].items():
            assert [s for s, _ in rebuilt[0][run][tag]] == [s for s, _ in points], (run, tag)
            assert [v for _, v in rebuilt[0][run][tag]] == pytest.approx([v for _, v in points], rel=1e-6), (run, tag)
        assert rebuilt[0][run].keys() == trained[0][run].keys(), run
    assert rebuilt[1:] == trained[1:] and len(trained[2]) == 4

    before = {p: p.stat().st_mtime_ns for p in tb.glob("*-s*/*")}
    code, out, err = run_cli(capsys, "tensorboard", str(runs))
    assert code == 0 and "wrote the logs of 0 run(s) (4 had theirs" in out
    assert {p: p.stat().st_mtime_ns for p in tb.glob("*-s*/*")} == before
    code, out, err = run_cli(capsys, "tensorboard", str(tmp_path / "nothing"))
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err and not (tmp_path / "nothing").exists()
