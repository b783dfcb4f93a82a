"""PreciseBN (noiseattack.precise): the population statistics recomputed after training, as fvcore's
update_bn_stats does, checked against the statistics written out by hand."""

import math

import pytest
import torch
import torch.nn as nn

import copy

from noiseattack.attacks import AttackRun
from noiseattack.config import RunConfig, resolve_train_config
from noiseattack.iebn import IEBN
from noiseattack.layers.batch import GhostBatchNorm
from noiseattack.norms import BatchNorm
from noiseattack.precise import running_stat_layers, update_bn_stats
from noiseattack.models import cifar_resnet
from noiseattack.train import evaluate_model, precise_accuracies, prepare_data, train_run


def _batches(seed=0, n=5, shift=3.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 4, 5, 5, generator=g) * (1 + i) + shift * i for i in range(n)]


@pytest.mark.parametrize("layer", [nn.BatchNorm2d(4), BatchNorm(4), IEBN(4, impl="eager")], ids=["torch", "bn", "iebn"])
def test_statistics_are_those_of_all_batches_combined(layer):
    batches = _batches()
    layer.running_mean.fill_(7.0)  # trained statistics, to be replaced
    layer.eval()
    used = update_bn_stats(layer, batches)
    assert used == len(batches)
    values = torch.cat([b.transpose(0, 1).reshape(4, -1) for b in batches], 1)  # every value, per channel
    want_mean, want_var = values.mean(1), values.var(1, unbiased=False)
    torch.testing.assert_close(layer.running_mean, want_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.running_var, want_var, rtol=1e-5, atol=1e-5)
    assert layer.momentum == 0.1 and not layer.training  # restored


def test_ghost_bn_pools_its_own_per_step_statistics():
    """Ghost BN's per-step update (its mean, the count-weighted ghost variances) is what gets pooled."""
    layer = GhostBatchNorm(4, virtual_batch=4)
    batches = _batches(n=3)
    means, squares = [], []
    for b in batches:
        probe = GhostBatchNorm(4, virtual_batch=4)
        probe.momentum = 1.0
        probe.train()
        probe(b)
        m = b.numel() // 4
        means.append(probe.running_mean.clone())
        squares.append(probe.running_mean.square() + probe.running_var * (m - 1) / m)
    update_bn_stats(layer, batches)
    mean = torch.stack(means).mean(0)  # equal batch sizes: equal weights
    torch.testing.assert_close(layer.running_mean, mean)
    torch.testing.assert_close(layer.running_var, torch.stack(squares).mean(0) - mean.square())


def test_a_model_without_running_statistics_is_left_alone():
    model = nn.Sequential(nn.GroupNorm(2, 4), nn.Conv2d(4, 4, 1))
    assert running_stat_layers(model) == [] and update_bn_stats(model, _batches()) == 0


def test_only_the_statistics_change():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 4, 3), BatchNorm(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    update_bn_stats(model, _batches())
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"1.running_mean", "1.running_var", "1.num_batches_tracked", "4.running_mean", "4.running_var",
                       "4.num_batches_tracked"}


def test_runs_record_accuracy_with_precise_statistics(fake_mnist):
    data_dir = fake_mnist(n_train=128, n_test=64)
    mix = resolve_train_config(dataset="mnist", depth=8, width=0.5, epochs=1, batch_size=32, device="cpu",
                               attack="mix", extra="mnist-inverted", k=32, compile=False)
    data = prepare_data(mix, data_dir)
    bn = train_run(RunConfig(mix, "bn", 0), data)
    assert math.isfinite(bn.precise_acc) and 0 <= bn.precise_acc <= 100
    assert math.isfinite(bn.precise_mixed_acc) and 0 <= bn.precise_mixed_acc <= 100
    gn = train_run(RunConfig(mix, "gn", 0), data)
    assert gn.precise_acc is None and gn.precise_mixed_acc is None  # no BN-type layer: nothing to recompute
    plain = resolve_train_config(dataset="mnist", depth=8, width=0.5, epochs=1, batch_size=32, device="cpu",
                                 compile=False)
    clean = train_run(RunConfig(plain, "bn", 0), data)
    assert math.isfinite(clean.precise_acc) and clean.precise_mixed_acc is None  # no extra images in its batches


class FixedExtras(AttackRun):
    """An attack run that joins the same known images to every batch."""

    def __init__(self, images):
        self.images = images
        self.extra_images = len(images)

    def batch_extras(self, generator, *, augment=True):
        return self.images


def test_mixed_batch_statistics_pool_every_batch_with_its_extras(fake_mnist):
    """The first BN's input is conv1 of the image, in any mode: its mixed-batch population statistics are
    those of conv1 over every training image (64 = 2 batches of 32, all used, in some order) and the
    extras once per batch, pooled; the clean-batch ones leave the extras out."""
    cfg = resolve_train_config(dataset="mnist", depth=8, width=0.5, epochs=1, batch_size=32, device="cpu",
                               compile=False)
    data = prepare_data(cfg, fake_mnist(n_train=64, n_test=32))
    torch.manual_seed(0)
    model = cifar_resnet(8, 10, "bn", width=0.5)
    clean_model = copy.deepcopy(model)
    extras = torch.randn(8, 3, 32, 32) * 2 + 1
    clean, mixed = precise_accuracies(model, data, cfg, 0, FixedExtras(extras))
    clean_again, none = precise_accuracies(clean_model, data, cfg, 0)
    assert none is None and clean_again == clean

    def pooled(x):
        with torch.no_grad():
            v = model.conv1(x).transpose(0, 1).reshape(model.bn1.num_features, -1).double()
        return v.mean(1).float(), v.var(1, unbiased=False).float()

    images = data.normalize(data.train.images)
    for net, x in ((model, torch.cat([images, extras, extras])), (clean_model, images)):
        mean, var = pooled(x)
        torch.testing.assert_close(net.bn1.running_mean, mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(net.bn1.running_var, var, rtol=1e-4, atol=1e-4)
    assert mixed == evaluate_model(model, data.test, data, cfg)[1]


def test_mixed_batches_take_the_real_attacks_foreign_images_unaugmented(fake_mnist):
    """With augmentation on, PreciseBN's batches are drawn without it, the foreign images' too: with
    every foreign image the same, the mixed-batch statistics are those of every primary image and k
    copies of that image per batch (a random crop would shift it)."""
    cfg = resolve_train_config(dataset="mnist", depth=8, width=0.5, epochs=1, batch_size=32, device="cpu",
                               attack="mix", extra="mnist-inverted", k=8, augment=True, compile=False)
    data = prepare_data(cfg, fake_mnist(n_train=64, n_test=32))
    data.extra.images[:] = data.extra.images[3]  # one foreign image, 64 times
    torch.manual_seed(0)
    model = cifar_resnet(8, 10, "bn", width=0.5)
    attack = cfg.attack_spec().start(cfg.attack_params(), model=model, data=data, cfg=cfg, seed=0)
    precise_accuracies(model, data, cfg, 0, attack)
    one = data.normalize(data.extra.images[:1])
    x = torch.cat([data.normalize(data.train.images), one.expand(16, -1, -1, -1)])  # 2 batches x k = 8
    with torch.no_grad():
        v = model.conv1(x).transpose(0, 1).reshape(model.bn1.num_features, -1).double()
    torch.testing.assert_close(model.bn1.running_mean, v.mean(1).float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.bn1.running_var, v.var(1, unbiased=False).float(), rtol=1e-4, atol=1e-4)


def test_both_passes_start_from_the_trained_buffers(fake_mnist):
    """A layer that reads its buffers in its training forward (Batch Renorm: its running statistics
    and step counter) starts the mixed pass from the trained ones too, not from the clean pass's."""
    cfg = resolve_train_config(dataset="mnist", depth=8, width=0.5, epochs=1, batch_size=32, device="cpu",
                               compile=False)
    data = prepare_data(cfg, fake_mnist(n_train=64, n_test=32))
    torch.manual_seed(0)
    model = cifar_resnet(8, 10, "brn", width=0.5)
    first = running_stat_layers(model)[0]
    first.num_batches_tracked.fill_(500)
    first.running_mean.fill_(0.25)
    seen = []
    first.register_forward_pre_hook(lambda m, inp: seen.append((int(m.num_batches_tracked), float(m.running_mean[0])))
                                    if m.training else None)
    precise_accuracies(model, data, cfg, 0, FixedExtras(torch.randn(8, 3, 32, 32)))
    assert [c for c, _ in seen] == [500, 501, 500, 501]  # 2 batches per pass, each pass from the trained counter
    assert seen[0][1] == seen[2][1] == 0.25



def test_precise_statistics_match_fvcore_where_installed(monkeypatch):
    fvcore = pytest.importorskip("fvcore.nn", reason="fvcore is not installed (pip install fvcore to compare)")
    import fvcore.nn.precise_bn as fv

    # fvcore recomputes torch's BatchNorm classes only; ours every BN-type layer (here IEBN too)
    monkeypatch.setattr(fv, "BN_MODULE_TYPES", (nn.modules.batchnorm._BatchNorm,))
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), IEBN(4, impl="eager"))
    theirs = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), IEBN(4, impl="eager"))
    theirs.load_state_dict(ours.state_dict())
    batches = _batches() + [torch.randn(3, 4, 5, 5)]  # a smaller last batch: weighted by its size
    update_bn_stats(ours, batches)
    fvcore.update_bn_stats(theirs, batches, num_iters=len(batches))
    for i in (1, 4):
        torch.testing.assert_close(ours[i].running_mean, theirs[i].running_mean)
        torch.testing.assert_close(ours[i].running_var, theirs[i].running_var)


def test_the_cli_records_both_precise_accuracies_under_mix_and_one_otherwise(fake_mnist, tmp_path, capsys):
    import json

    from conftest import run_cli

    data = fake_mnist(n_train=64, n_test=32)
    common = ["--dataset", "mnist", "--data-dir", data, "--depth", "8", "--width", "0.25", "--epochs", "1",
              "--batch-size", "16", "--device", "cpu", "--no-progress", "--norm", "bn,gn", "--repeats", "1"]
    for command, extra, mixed in (("mix", ["--extra", "mnist-inverted", "--k", "8"], True), ("clean", [], False)):
        runs = tmp_path / command
        code, out, err = run_cli(capsys, command, *extra, *common, "--runs-dir", runs)
        assert code == 0, err
        (exp,) = list(runs.iterdir())
        recs = {r["norm"]: r for r in map(json.loads, (exp / "results.jsonl").read_text().splitlines())}
        assert isinstance(recs["bn"]["precise_acc"], float) and recs["gn"]["precise_acc"] is None
        assert ("precise_mixed_acc" in recs["bn"]) == mixed and "precise_mixed_acc" not in recs["gn"]
        if mixed:
            assert 0 <= recs["bn"]["precise_mixed_acc"] <= 100
