"""Training without augmentation (`augment`, `--no-augment`): the batches and the mix attack's foreign
images as they are, normalized; the run keys and names of augmented runs unchanged; the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex

import pytest
import torch

from conftest import run_cli
from noiseattack.attacks import ExtraImages
from noiseattack.config import (PERFORMANCE_FIELDS, RunConfig, default_name, resolve_experiment, resolve_train_config,
                                to_jsonable, train_config_from_dict)
from noiseattack.data import Normalizer, Split, random_crop_flip
from noiseattack.experiment import cli_command
from noiseattack.train import CROP_PAD, TrainData, training_batch

MEAN, STD = (0.2, 0.4, 0.6), (0.25, 0.3, 0.35)


# Fields added after the runs those keys belong to (the random attack's parameters, at their neutral values
# in every other attack's setting): identity() leaves them out there, as the rule of that time had none.
RANDOM_FIELDS = ("scale_low", "scale_high", "bias_low", "bias_high", "noise_in_eval")


def by_hand(images: torch.Tensor) -> torch.Tensor:
    """uint8 images normalized per channel, computed here: (x / 255 - mean) / std."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images.double() / 255 - mean.double()) / std.double()


def tiny_data(n: int = 64, flip: bool = True) -> TrainData:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    split = Split(images, torch.randint(0, 10, (n,), generator=g))
    return TrainData(train=split, test=split, extra=None, num_classes=10, flip=flip,
                     normalize=Normalizer(MEAN, STD, "cpu", channels_last=True))


# --------------------------------------------------------------------------- the batches


@pytest.mark.parametrize("flip", [True, False])
def test_without_augment_the_batch_is_the_normalized_images(flip):
    data = tiny_data(flip=flip)
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    for _ in range(3):
        idx = torch.randperm(64)[:16]
        x = training_batch(data, idx, g, augment=False)
        torch.testing.assert_close(x.double(), by_hand(data.train.images[idx]), rtol=0, atol=1e-5)
    assert torch.equal(g.get_state(), before)  # nothing drawn: no crop, no flip


@pytest.mark.parametrize("flip", [True, False])
def test_with_augment_the_batch_is_cropped_and_flipped_as_before(flip):
    data = tiny_data(flip=flip)
    g, twin = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    idx = torch.arange(64)
    x = training_batch(data, idx, g, augment=True)
    # what the training step computed before the option existed, with the same generator state
    old = data.normalize(random_crop_flip(data.train.images[idx], pad=CROP_PAD, flip=flip, generator=twin))
    assert torch.equal(x, old) and torch.equal(g.get_state(), twin.get_state())
    plain = by_hand(data.train.images)
    moved = [not torch.allclose(a.double(), b, atol=1e-5) for a, b in zip(x, plain)]
    assert sum(moved) > 48  # 80 of 81 crop offsets (and half the flips) change the image


def test_mix_foreign_images_without_augment_are_the_drawn_images_normalized():
    foreign = tiny_data(n=40).train.images
    normalize = Normalizer(MEAN, STD, "cpu", channels_last=True)
    extras = ExtraImages(foreign, 12, flip=True, normalize=normalize, augment=False)
    g, twin = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(3):
        x = extras.draw(g)
        idx = torch.randint(0, 40, (12,), generator=twin)  # the draw itself, and nothing else
        torch.testing.assert_close(x.double(), by_hand(foreign[idx]), rtol=0, atol=1e-5)
        assert torch.equal(g.get_state(), twin.get_state())


def test_mix_foreign_images_with_augment_are_cropped_and_flipped_as_before():
    foreign = tiny_data(n=40).train.images
    normalize = Normalizer(MEAN, STD, "cpu", channels_last=True)
    g, twin = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    x = ExtraImages(foreign, 32, flip=True, normalize=normalize).draw(g)  # augment is the default
    idx = torch.randint(0, 40, (32,), generator=twin)
    old = normalize(random_crop_flip(foreign[idx], pad=4, flip=True, generator=twin))
    assert torch.equal(x, old) and torch.equal(g.get_state(), twin.get_state())
    moved = [not torch.allclose(a.double(), b, atol=1e-5) for a, b in zip(x, by_hand(foreign[idx]))]
    assert sum(moved) > 24


# --------------------------------------------------------------------------- keys, names, records


def key_without_augment(train, norm, seed):
    """RunConfig.key recomputed here from the setting's fields, leaving out augment (and the fields
    identity() leaves out for other reasons): the key of a run from before the option existed."""
    ident = {k: v for k, v in to_jsonable(dataclasses.asdict(train)).items()
             if k not in PERFORMANCE_FIELDS and k not in ("augment", "shortcut_norm", "attn_placement", "lr_schedule",
                                                             "label_smoothing", "nesterov", *RANDOM_FIELDS)}
    payload = json.dumps({"train": ident, "norm": norm, "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def test_augmented_runs_keep_their_keys_and_unaugmented_ones_get_their_own():
    study = resolve_train_config(dataset="fmnist", width=0.5, train_subset=6000, epochs=15, device="cpu")
    assert study.augment and "augment" not in study.identity()
    assert RunConfig(study, "bn", 3).key == key_without_augment(study, "bn", 3)
    assert RunConfig(resolve_train_config(device="cpu"), "iebn", 0).key == "1f30c07173ac5ef3"  # as in 372452c
    plain = resolve_train_config(dataset="fmnist", width=0.5, train_subset=6000, epochs=15, augment=False,
                                 device="cpu")
    assert plain.identity() == {**study.identity(), "augment": False}
    assert RunConfig(plain, "bn", 3).key != RunConfig(study, "bn", 3).key


def test_names_records_and_old_dicts():
    study = resolve_train_config(dataset="fmnist", width=0.5, train_subset=6000, epochs=15, device="cpu")
    plain = dataclasses.replace(study, augment=False)
    assert default_name(study) == "clean-fmnist-resnet20w0.5-n6000-e15"
    assert default_name(plain) == "clean-fmnist-resnet20w0.5-n6000-e15-noaug"
    mix = resolve_train_config(attack="mix", extra="mnist", k=8, dataset="fmnist", epochs=4, augment=False,
                               device="cpu")
    assert default_name(mix) == "mix-mnist-k8-fmnist-resnet20-e4-noaug"
    # a record's config carries the field, and reads back; one written before the field reads as augmented
    record = json.loads(json.dumps(RunConfig(plain, "bn", 0).to_dict()))
    assert record["augment"] is False and train_config_from_dict(record) == plain
    old = to_jsonable(dataclasses.asdict(study))
    del old["augment"]
    assert train_config_from_dict(old) == study
    assert train_config_from_dict(json.loads(json.dumps(plain.identity()))).augment is False


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("command,head", [("clean", "clean"), ("constant", "constant-a2-b1"),
                                          ("mix", "mix-fmnist-k32")])
def test_no_augment_dry_run_shows_the_noaug_name_and_writes_nothing(command, head, tmp_path, capsys):
    args = [command, "--dataset", "fmnist", "--width", "0.5", "--train-subset", "6000", "--epochs", "15",
            "--norm", "bn", "--repeats", "2", "--runs-dir", tmp_path / "runs", "--device", "cpu", "--dry-run"]
    if command == "mix":
        args[args.index("--dataset") + 1] = "mnist"
    dataset = "mnist" if command == "mix" else "fmnist"
    code, out, err = run_cli(capsys, *args, "--no-augment")
    assert code == 0, err
    name = f"{head}-{dataset}-resnet20w0.5-n6000-e15"
    assert f"{name}-noaug" in out and '"augment": false' in out
    code, plain_out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert f"{name} ->" in plain_out and "noaug" not in plain_out and '"augment": true' in plain_out
    keys = {line.split()[1] for line in out.splitlines() if line.startswith("pending")}
    plain_keys = {line.split()[1] for line in plain_out.splitlines() if line.startswith("pending")}
    assert len(keys) == len(plain_keys) == 2 and not keys & plain_keys
    assert not (tmp_path / "runs").exists()


def test_the_re_run_command_keeps_no_augment(tmp_path, capsys):
    train = resolve_train_config(dataset="mnist", depth=8, epochs=2, augment=False, device="cpu")
    exp = resolve_experiment(train, norms="bn", repeats=2, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    args = shlex.split(cli_command(exp))
    assert "--no-augment" in args
    code, out, err = run_cli(capsys, *args[1:], "--dry-run", "--no-progress")
    assert code == 0, err
    assert all(r.key in out for r in exp.runs())
    augmented = resolve_experiment(dataclasses.replace(train, augment=True), norms="bn", repeats=1,
                                   runs_dir=tmp_path / "runs")
    assert "augment" not in cli_command(augmented)
