"""The derived foreign sources of the mix attack (`mnist-inverted`, `fmnist-inverted`, `noise`):
their pixels against 255 - x and the stated range, shape and seed; where they are accepted
(`--extra`) and refused (`--dataset`); a mix run with `--extra noise` end to end through the CLI."""

import json
import math

import pytest
import torch

from conftest import make_fake_mnist, run_cli
from noiseattack import config, data
from noiseattack.config import resolve_train_config
from noiseattack.train import prepare_data


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fmnist", "FashionMNIST")])
def test_inverted_pixels_are_255_minus_x(tmp_path, name, folder):
    root = make_fake_mnist(tmp_path / "data", n_train=64, n_test=32, seed=3, name=folder)
    base, inv = data.load_dataset(name, root), data.load_dataset(f"{name}-inverted", root)
    for split in ("train", "test"):
        b, i = getattr(base, split), getattr(inv, split)
        assert i.images.dtype == torch.uint8 and i.images.shape == b.images.shape
        assert torch.equal(i.images.int(), 255 - b.images.int())  # in int: no uint8 wrap-around hides
        assert torch.equal(i.labels, b.labels)
    assert (inv.train.images[:, :, :2, :] == 255).all()  # the zero-padded border, inverted: white
    for m, mb, s, sb in zip(inv.mean, base.mean, inv.std, base.std):
        assert m == pytest.approx(1 - mb, abs=1e-12) and s == pytest.approx(sb, abs=1e-9)
    assert inv.spec.num_classes == 10 and inv.spec.name == f"{name}-inverted"


def test_inverted_names_its_missing_base(tmp_path):
    with pytest.raises(data.DataError, match=r"^mnist-inverted is computed from mnist: mnist: data missing"):
        data.load_dataset("mnist-inverted", tmp_path / "nodata")


def test_noise_range_shape_and_determinism(tmp_path):
    ds = data.load_dataset("noise", tmp_path / "anywhere")  # no files needed
    assert not (tmp_path / "anywhere").exists()
    x = ds.train.images
    assert x.dtype == torch.uint8 and x.shape == (data.NOISE_IMAGES, 3, 32, 32) == (60000, 3, 32, 32)
    assert ds.test.images.shape == (data.NOISE_TEST_IMAGES, 3, 32, 32)
    assert int(x.min()) == 0 and int(x.max()) == 255
    assert torch.equal(ds.train.labels, torch.full((60000,), -1)) and ds.spec.num_classes == 0
    # uniform on 0..255: mean 127.5, variance (256^2 - 1) / 12; over 184M pixels within 1e-3 of them
    uniform_std = math.sqrt((256 ** 2 - 1) / 12) / 255
    for m, s in zip(ds.mean, ds.std):
        assert m == pytest.approx(0.5, abs=1e-3) and s == pytest.approx(uniform_std, abs=1e-3)
    counts = torch.bincount(x[:1000].flatten().long(), minlength=256).float()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()  # every value, about evenly
    first = x[:4].clone()
    data.noise_dataset.cache_clear()
    again = data.noise_dataset()
    assert again.train.images is not x and torch.equal(again.train.images[:4], first)  # the same seed
    g = torch.Generator().manual_seed(data.NOISE_SEED)  # the stated recipe, drawn here
    assert torch.equal(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g), first)
    assert not torch.equal(ds.test.images[:4], first)


def test_extra_only(tmp_path, capsys):
    assert config.EXTRA_SOURCES == data.EXTRA_SOURCES
    for extra in ("noise", "mnist-inverted", "fmnist-inverted"):
        assert resolve_train_config(attack="mix", dataset="mnist", extra=extra.upper(), k=8).extra == extra
    with pytest.raises(config.ConfigError, match="unknown extra dataset 'bogus'.*noise"):
        resolve_train_config(attack="mix", dataset="mnist", extra="bogus", k=8)
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "clean", "--dataset", "noise", "--runs-dir", runs, "--data-dir",
                             tmp_path / "nodata", "--device", "cpu", "--no-progress")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("noiseattack: error: unknown dataset 'noise'") and "--extra only" in err
    assert not runs.exists() and not (tmp_path / "nodata").exists()


def test_mix_with_noise_end_to_end(tmp_path, capsys):
    root = make_fake_mnist(tmp_path / "data", n_train=64, n_test=32)
    cfg = resolve_train_config(attack="mix", dataset="mnist", extra="noise", k=8, batch_size=32, device="cpu")
    assert torch.equal(prepare_data(cfg, root).extra.images, data.noise_dataset().train.images)  # the noise itself
    runs = tmp_path / "runs"
    code, out, err = run_cli(capsys, "mix", "--extra", "noise", "--k", "8", "--dataset", "mnist", "--norm", "bn",
                             "--repeats", "1", "--data-dir", root, "--runs-dir", runs, "--depth", "8", "--epochs", "1",
                             "--batch-size", "32", "--device", "cpu", "--no-progress")
    assert code == 0, err
    exp = runs / "mix-noise-k8-mnist-resnet8-e1"
    (rec,) = [json.loads(line) for line in (exp / "results.jsonl").read_text().splitlines()]
    assert rec["status"] == "finished" and math.isfinite(rec["final_acc"])
    assert rec["config"]["extra"] == "noise" and rec["config"]["k"] == 8


def test_source_shift_against_hand_computed_published_numbers():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "source_shift.py"
    spec = importlib.util.spec_from_file_location("source_shift", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cifar, mnist = mod.PUBLISHED["CIFAR-100"], mod.PUBLISHED["MNIST 28×28"]
    means, stds = mod.shift(cifar, mnist)
    # red channel by hand: (0.1307 - 0.5071) / 0.2673 = -1.40816..., 0.3081 / 0.2673 = 1.15264...
    assert means[0] == pytest.approx(-0.3764 / 0.2673) and means[0] == pytest.approx(-1.40816, abs=1e-5)
    assert stds[0] == pytest.approx(1.15264, abs=1e-5)
    assert mod._fmt(means, True) == "-1.41 / -1.39 / -1.12" and mod._fmt([0.5, 0.5, 0.5], False) == "0.50"


def _source_shift():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import source_shift

    return source_shift


def test_docs_sources_region_is_what_source_shift_makes_of_the_real_data(shared_data, tmp_path):
    """docs/sources.md's source-shift region (table, statistics, reading) regenerates byte for byte."""
    from conftest import assert_region_regenerates

    assert_region_regenerates(tmp_path, "source_shift.py", "docs/sources.md", "--data-dir", str(shared_data))


def test_the_reading_is_computed_from_the_statistics():
    """Grayscale statistics chosen by hand: FashionMNIST mean 0.2, std 0.4; MNIST 0.1 (0.25 σ below,
    spread 0.5), mnist-inverted 0.9 (1.75 σ above), noise 0.5 (0.75 σ above, spread 0.75)."""
    ss = _source_shift()
    g = lambda m, s: ((m,) * 3, (s,) * 3)  # noqa: E731
    text = ss.reading({"fmnist": g(0.2, 0.4), "mnist": g(0.1, 0.2), "mnist-inverted": g(0.9, 0.2),
                       "noise": g(0.5, 0.3)})
    assert "`mnist` lies 0.25 σ below it, with a spread 0.50 times its (nearer than" in text
    assert "`mnist-inverted` lies 1.75 σ above it, with a spread 0.50 times its (" in text
    assert "`noise` lies 0.75 σ above it, with a spread 0.75 times its (" in text
    # CIFAR-100's published means (0.5071, 0.4865, 0.4409), stds (0.2673, 0.2564, 0.2762) against MNIST at 0.1
    # (ours here) and 0.1307 (published): from (0.4409 - 0.1307) / 0.2762 = 1.12 to (0.5071 - 0.1) / 0.2673 = 1.52
    assert "MNIST lies 1.1–1.5 σ below CIFAR-100's mean" in text
