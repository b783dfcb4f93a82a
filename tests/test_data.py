"""Datasets through the real torchvision code paths, and the per-batch augmentation."""

import gzip

import numpy as np
import pytest
import torch
import torchvision

from conftest import write_fake_cifar100
from noiseattack.data import DataError, channel_stats, load_dataset, random_crop_flip


def test_cifar100_loads_through_the_real_path(tmp_path, monkeypatch):
    # torchvision verifies the official md5s; our files are not the official ones.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    root = write_fake_cifar100(tmp_path / "data", n_train=200, n_test=100)
    ds = load_dataset("cifar100", root)
    assert ds.train.images.shape == (200, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.test.images.shape == (100, 3, 32, 32)
    assert ds.spec.num_classes == 100
    import pickle

    doc = pickle.load(open(root / "cifar-100-python" / "train", "rb"))
    assert ds.train.labels.tolist() == doc["fine_labels"]
    # row i of `data` is 1024 red, 1024 green, 1024 blue values, row-major
    assert torch.equal(ds.train.images[7], torch.from_numpy(doc["data"][7].reshape(3, 32, 32)))


def test_cifar100_md5_mismatch_names_the_file(tmp_path):
    root = write_fake_cifar100(tmp_path / "data")
    with pytest.raises(DataError, match=r"md5 mismatch.*cifar-100-python/train"):
        load_dataset("cifar100", root)


@pytest.mark.parametrize("name,folder,first", [("mnist", "MNIST", [5, 0, 4, 1, 9]), ("fmnist", "FashionMNIST", [9, 0, 0, 3, 0])])
def test_real_mnist_and_fmnist(shared_data, name, folder, first):
    ds = load_dataset(name, shared_data)
    assert ds.train.images.shape == (60000, 3, 32, 32) and ds.test.images.shape == (10000, 3, 32, 32)
    assert ds.train.labels[:5].tolist() == first
    with gzip.open(shared_data / folder / "raw" / "train-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read()[16:16 + 784], np.uint8).reshape(28, 28)
    img = ds.train.images[0]
    assert torch.equal(img[0, 2:30, 2:30], torch.from_numpy(raw.copy()))  # zero-padded 2 px each side
    assert img[:, :2].sum() == 0 and img[:, 30:].sum() == 0 and img[:, :, :2].sum() == 0
    assert torch.equal(img[0], img[1]) and torch.equal(img[0], img[2])  # gray repeated to 3 channels
    assert ds.spec.hflip == (name == "fmnist")


def test_corrupt_gz_is_named(shared_data):
    f = shared_data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    f.write_bytes(f.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(DataError, match="md5 mismatch.*t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", shared_data)


def test_channel_stats_against_numpy():
    x = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    mean, std = channel_stats(x)
    a = x.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(mean, a.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(std, a.std(axis=(0, 2, 3)), rtol=1e-8)


def test_subset_is_fixed_and_independent_of_the_run(fake_mnist):
    ds = load_dataset("mnist", fake_mnist(n_train=100))
    a, b = ds.train.subset(30), ds.train.subset(30)
    assert torch.equal(a.images, b.images) and len(a) == 30


def all_crops(img, pad, flip):
    padded = torch.nn.functional.pad(img, (pad,) * 4)
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            c = padded[:, dy:dy + 32, dx:dx + 32]
            out.append(c)
            if flip:
                out.append(c.flip(-1))
    return out


@pytest.mark.parametrize("flip", [True, False])
def test_random_crop_flip_is_a_padded_crop(flip):
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(imgs, pad=4, flip=flip, generator=g)
    assert out.shape == imgs.shape and out.dtype == torch.uint8
    flipped = shifted = 0
    for img, o in zip(imgs, out):
        matches = [i for i, c in enumerate(all_crops(img, 4, flip)) if torch.equal(c, o)]
        assert matches, "output is not a crop of the zero-padded image"
        flipped += flip and matches[0] % 2 == 1
        shifted += not torch.equal(o, img)
    assert shifted > 40  # 80 of 81 offsets move the image
    assert (10 < flipped < 54) if flip else flipped == 0


def test_missing_data_says_what_to_put_where(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tvm

    def no_network(*a, **k):
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(tvm, "download_and_extract_archive", no_network)
    root = tmp_path / "nodata"
    with pytest.raises(DataError, match=r"data missing in .*MNIST/raw.*put train-images-idx3-ubyte.gz"):
        load_dataset("mnist", root)
    assert not root.exists()  # nothing half-written
