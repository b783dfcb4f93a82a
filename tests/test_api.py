"""The Python API: register a layer, run it against bn under the constant attack, load the results."""

from __future__ import annotations

import math

import pytest
import torch.nn as nn

import noiseattack as na
from noiseattack import zoo


class ScaledBN(nn.BatchNorm2d):
    """BatchNorm2d whose output is halved: a stand-in for a researcher's layer."""

    def forward(self, x):
        return super().forward(x) * 0.5


@pytest.fixture
def registered():
    na.register_norm("halfbn", ScaledBN, "BN, halved")
    yield "halfbn"
    zoo._NORMS.pop("halfbn")
    zoo.resolve.cache_clear()


def test_register_run_and_load_results(registered, fake_mnist, tmp_path):
    data = fake_mnist(n_train=64, n_test=32)
    result = na.run("constant", norms=f"bn,{registered}", alpha=2, beta=1, dataset="mnist", depth=8, epochs=1,
                    batch_size=32, repeats=2, device="cpu", runs_dir=tmp_path / "runs", data_dir=data, log=None)
    assert sorted((r["norm"], r["seed"]) for r in result.records) == [("bn", 0), ("bn", 1), ("halfbn", 0),
                                                                       ("halfbn", 1)]
    rows = na.load_results(tmp_path / "runs")
    assert len(rows) == 4
    by = {(r["norm"], r["seed"]): r for r in rows}
    for rec in result.records:
        row = by[(rec["norm"], rec["seed"])]
        assert row["final_acc"] == rec["final_acc"] and row["alpha"] == 2.0 and row["setting"] == "a2_b1"
        assert row["precise_acc"] == rec["precise_acc"] and row["cpu_time_s"] == rec["cpu_time_s"] > 0
        assert row["precise_mixed_acc"] is None  # constant adds no images to a batch
        assert row["origin"] == ("user" if rec["norm"] == "halfbn" else "noiseattack")
        assert math.isfinite(row["final_acc"])
    assert [s["norm"] for s in result.summary] == ["bn", "halfbn"]
    assert na.load_results(tmp_path / "runs" / result.dir.name / "results.jsonl") == rows


@pytest.mark.parametrize("options, message", [
    ({"norms": "nope"}, "unknown norm 'nope'"),
    ({"epocs": 3}, "unknown option 'epocs': did you mean 'epochs'?"),  # and a TypeError, as for any function
    ({"k": 5}, r"k is not a parameter of the constant attack \(its parameters: alpha, beta\)"),  # the CLI has no --k
    ({"extra": "mnist"}, "extra is not a parameter of the constant attack"),
    ({"seeds": "0,x"}, "--seeds must be comma-separated integers"),
    ({"milestones": "5,x"}, "milestones"),
    ({"depth": 1202, "width": 64, "batch_size": 4096}, "a training batch of 4096 images needs about"),  # memory
])
def test_bad_input_raises_config_error_before_writing(tmp_path, options, message):
    with pytest.raises(na.ConfigError, match=message):
        na.run("constant", **{"dataset": "mnist", "runs_dir": tmp_path / "runs", "data_dir": tmp_path, **options})
    assert not (tmp_path / "runs").exists()
    if "epocs" in options:
        with pytest.raises(TypeError):
            na.run("constant", epocs=3)


def test_options_are_written_as_on_the_command_line_too(fake_mnist, tmp_path):
    """`seeds` and `milestones` as the command line writes them resolve as the lists do; another attack's
    parameter at its neutral value (what a record holds for it) is no error."""
    from noiseattack.config import resolve_train_config

    text = resolve_train_config(attack="clean", lr_schedule="step", epochs=30, milestones="15,22")
    assert text == resolve_train_config(attack="clean", lr_schedule="step", epochs=30, milestones=(15, 22))
    assert text.milestones == (15, 22)
    result = na.run("clean", norms="bn", seeds="7,3", dataset="mnist", depth=8, epochs=1, batch_size=32, device="cpu",
                    runs_dir=tmp_path / "runs", data_dir=fake_mnist(n_train=64, n_test=32), log=None)
    assert sorted(r["seed"] for r in result.records) == [3, 7]
    assert resolve_train_config(attack="constant", alpha=2, beta=1, k=0, extra=None).attack_params() == \
        resolve_train_config(attack="constant", alpha=2, beta=1).attack_params()
