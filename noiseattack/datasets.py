"""The dataset registry: every dataset and every derived foreign source, by name, in one place.

A dataset is one entry of `DATASETS`: its name (the `--dataset` value), its display name (plots and
report titles), its image format, how it loads (a torchvision dataset class and the folder it keeps
its files in under the data dir), its number of classes, and whether horizontal flips keep its
labels. A derived source (`DERIVED`, the mix attack's `--extra` only) is computed from a dataset
(`base`) by a named transform, or generated (`base` None). `noiseattack.data` loads them; the config,
the CLI and the report read this module, which does not import torch (a CLI's help, a report from
CSVs and a grid's dry run need no torch for the names).

Adding a dataset is one entry here. The image formats `noiseattack.data` converts:
  "rgb32"   N x 32 x 32 x 3 uint8 (CIFAR's numpy layout), used as it is;
  "gray28"  N x 28 x 28 uint8, zero-padded to 32 x 32 (2 px each side) and repeated to 3 channels.
The transforms of derived sources: "invert" (every pixel 255 - x of the padded uint8 image, the
border included; the same labels) and "noise" (NOISE_IMAGES + NOISE_TEST_IMAGES uniform random uint8
images, 3 x 32 x 32, from NOISE_SEED; label -1; no files).
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_FORMATS = ("rgb32", "gray28")
TRANSFORMS = ("invert", "noise")


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: what `--dataset NAME` trains on (and `--extra NAME` mixes in)."""

    name: str
    display: str  # "CIFAR-100": titles of plots and reports
    loader: str  # the torchvision.datasets class that reads (and downloads) it
    num_classes: int
    image_format: str  # one of IMAGE_FORMATS
    hflip: bool  # horizontal flips are label-preserving for this dataset
    folder: str  # where torchvision keeps its files under the data dir ("" for the dir itself)
    # What a user must put into `folder` when there is no download; () for the loader's own list of
    # files (the MNIST family's `resources`).
    files: tuple[str, ...] = ()
    # The full test split: its images and those of its most frequent class (the chance level of a run
    # record that predates its own measurement: noiseattack.chance); 0 where unknown.
    test_images: int = 0
    test_largest_class: int = 0
    # The full training split's images: what a dry run scales a run's cost by when it prices a grid by
    # another dataset's runs (`sweep --cost-from`); 0 where unknown.
    train_images: int = 0
    # The mix attack's foreign source when `--extra` is not given: never the dataset itself.
    foreign: str = "fmnist"


@dataclass(frozen=True)
class DerivedSource:
    """A foreign source computed from a dataset (`base`) by `transform`, or generated (base None)."""

    name: str
    base: str | None
    transform: str  # one of TRANSFORMS
    description: str
    display: str


NOISE_IMAGES = 60_000  # as many as MNIST's training split
NOISE_TEST_IMAGES = 10_000
NOISE_SEED = 0

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("cifar100", "CIFAR-100", "CIFAR100", 100, "rgb32", True, "",
                ("cifar-100-python.tar.gz (or its extracted cifar-100-python/)",), 10_000, 100, 50_000),
    DatasetInfo("cifar10", "CIFAR-10", "CIFAR10", 10, "rgb32", True, "",
                ("cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/)",), 10_000, 1000, 50_000),
    DatasetInfo("fmnist", "FashionMNIST", "FashionMNIST", 10, "gray28", True, "FashionMNIST/raw", (), 10_000, 1000,
                60_000, foreign="mnist"),
    DatasetInfo("mnist", "MNIST", "MNIST", 10, "gray28", False, "MNIST/raw", (), 10_000, 1135, 60_000),
)}

DERIVED: dict[str, DerivedSource] = {d.name: d for d in (
    DerivedSource("mnist-inverted", "mnist", "invert", "MNIST, every pixel 255 - x (the padded border white)",
                  "inverted MNIST"),
    DerivedSource("fmnist-inverted", "fmnist", "invert", "FashionMNIST, every pixel 255 - x (the padded border white)",
                  "inverted FashionMNIST"),
    DerivedSource("noise", None, "noise", f"{NOISE_IMAGES} uniform random uint8 images, 3x32x32, seed {NOISE_SEED}",
                  "uniform noise"),
)}

EXTRA_SOURCES: tuple[str, ...] = tuple(DATASETS) + tuple(DERIVED)  # what the mix attack's --extra accepts


def display_name(name: str) -> str:
    """A dataset's or source's display name (`fmnist` -> `FashionMNIST`); an unknown name as it is."""
    entry = DATASETS.get(name) or DERIVED.get(name)
    return entry.display if entry is not None else name


def _check() -> None:
    for d in DATASETS.values():
        assert d.image_format in IMAGE_FORMATS, d
    for s in DERIVED.values():
        assert s.transform in TRANSFORMS and (s.base is None) == (s.transform == "noise"), s
        assert s.base is None or s.base in DATASETS, s
    assert not set(DATASETS) & set(DERIVED)


_check()
