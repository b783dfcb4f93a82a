"""Datasets as one uint8 tensor each, and augmentation done per batch on the training device.

Every dataset, whatever its source format, becomes `images: uint8 [N, 3, 32, 32]` and
`labels: int64 [N]`. 28x28 grayscale images are zero-padded to 32x32 (2 px each side) and
repeated to 3 channels. Normalization uses the per-channel mean and std of the dataset's
(padded) training split, computed when it is loaded.

The names, and what each dataset and derived foreign source is, come from the registry
(`noiseattack.datasets`: `DATASETS`, `DERIVED`, `EXTRA_SOURCES`); this module loads them: a
dataset through its torchvision class, a derived source by its transform ("invert": every pixel of
the 32x32 padded uint8 image replaced by 255 - x, the border included, the same labels; "noise":
NOISE_IMAGES + NOISE_TEST_IMAGES uniform random uint8 images, 3x32x32, from NOISE_SEED, label -1,
no files). `scripts/source_shift.py` prints how far each lies from a primary.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlsplit

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.datasets as tvd

from . import datasets as registry
from .datasets import DERIVED, EXTRA_SOURCES, NOISE_IMAGES, NOISE_SEED, NOISE_TEST_IMAGES
from .errors import ConfigError


class DataError(ConfigError):
    """Data missing, corrupt or impossible to download. One line, meant for stderr."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    tv_class: type
    num_classes: int
    hflip: bool  # horizontal flips are label-preserving for this dataset
    folder: str  # where torchvision keeps its files under the data dir
    files: tuple[str, ...]  # what a user must put into `folder` when there is no download


def _spec(info: registry.DatasetInfo) -> DatasetSpec:
    """A registry entry with its torchvision class (and, for the MNIST family, that class's file list)."""
    cls = getattr(tvd, info.loader)
    files = info.files or tuple(f for f, _ in getattr(cls, "resources", ()))
    return DatasetSpec(info.name, cls, info.num_classes, info.hflip, info.folder, files)


DATASETS: dict[str, DatasetSpec] = {name: _spec(info) for name, info in registry.DATASETS.items()}


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, 3, 32, 32]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.images.to(device), self.labels.to(device))

    def subset(self, n: int | None, seed: int = 0) -> "Split":
        """A fixed random subset of n items (the same for every run with the same seed)."""
        if n is None or n == len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return Split(self.images[idx], self.labels[idx])


@dataclass
class Dataset:
    spec: DatasetSpec
    train: Split
    test: Split
    mean: tuple[float, float, float]  # per channel, in [0, 1] pixel units
    std: tuple[float, float, float]


def _to_nchw32(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(images)
    if x.ndim == 3:  # N, 28, 28 grayscale
        pad = (32 - x.shape[-1]) // 2
        x = F.pad(x, (pad, pad, pad, pad)).unsqueeze(1).expand(-1, 3, -1, -1)
    elif x.shape[-1] == 3:  # N, 32, 32, 3 (CIFAR's numpy layout)
        x = x.permute(0, 3, 1, 2)
    if tuple(x.shape[1:]) != (3, 32, 32):
        raise DataError(f"unexpected image shape {tuple(x.shape)}: expected N x 3 x 32 x 32 after conversion")
    return x.to(torch.uint8).contiguous()


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (population) of uint8 images, in [0, 1] units, in float64."""
    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    for chunk in images.split(4096):
        c = chunk.to(torch.float64)
        s += c.sum((0, 2, 3))
        s2 += (c * c).sum((0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(0).sqrt()
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


def _md5_problems(spec: DatasetSpec, root: Path) -> list[str]:
    """Files that exist but fail torchvision's own md5 check (looked up at call time)."""
    check = sys.modules[spec.tv_class.__module__].check_integrity
    cls = spec.tv_class
    bad = []
    if hasattr(cls, "resources"):  # MNIST family: the .gz archives carry the md5s
        raw = root / spec.folder
        for fname, md5 in cls.resources:
            f = raw / fname
            if f.exists() and not check(str(f), md5):
                bad.append(str(f))
    else:  # CIFAR family: the extracted pickles and the archive carry md5s
        base = root / cls.base_folder
        for fname, md5 in cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]:
            f = base / fname
            if f.exists() and not check(str(f), md5):
                bad.append(str(f))
        tgz = root / cls.filename
        if tgz.exists() and not check(str(tgz), cls.tgz_md5):
            bad.append(str(tgz))
    return bad


def _archives_and_extracted(spec: DatasetSpec, root: Path) -> tuple[list[Path], list[Path]]:
    """(the downloaded archives, the files torchvision extracts from them and reads) of a dataset."""
    cls = spec.tv_class
    if hasattr(cls, "resources"):  # MNIST family: raw/<name>.gz -> raw/<name>
        raw = root / spec.folder
        return [raw / f for f, _ in cls.resources], [raw / Path(f).stem for f, _ in cls.resources]
    base = root / cls.base_folder  # CIFAR family: <archive>.tar.gz -> <base_folder>/<pickles>
    return [root / cls.filename], [base / f for f, _ in cls.train_list + cls.test_list]


def _idx_problem(path: Path) -> str | None:
    """Why an extracted MNIST-family (idx) file cannot be read, or None when its size matches its header."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                return f"{size} bytes, no idx header"
            magic = int.from_bytes(head, "big")
            ndim, dtype = magic % 256, magic // 256
            if dtype not in _IDX_ITEM_BYTES or not 1 <= ndim <= 4:
                return f"not an idx file (magic number {magic})"
            dims_raw = f.read(4 * ndim)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if len(dims_raw) < 4 * ndim:
        return f"{size} bytes, a truncated idx header"
    expected = 4 + 4 * ndim + _IDX_ITEM_BYTES[dtype] * math.prod(
        int.from_bytes(dims_raw[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
    return None if size == expected else f"truncated or padded: {size} bytes where its header says {expected}"


_IDX_ITEM_BYTES = {8: 1, 9: 1, 11: 2, 12: 4, 13: 4, 14: 8}  # torchvision's SN3 (idx) types


def _check_files(spec: DatasetSpec, root: Path) -> None:
    """Say what is wrong with files that are there (before torchvision reports it as missing data):
    a corrupt extracted file, or archives that cannot be extracted in a read-only dir."""
    archives, extracted = _archives_and_extracted(spec, root)
    if hasattr(spec.tv_class, "resources"):
        for f, gz in zip(extracted, archives):
            why = _idx_problem(f) if f.is_file() else None
            if why:
                again = f"it is re-extracted from {gz.name}" if gz.exists() else f"put {gz.name} beside it"
                raise DataError(f"{spec.name}: corrupt extracted file {f} ({why}): delete it and {again}")
    if all(f.exists() for f in extracted) or not all(a.exists() for a in archives):
        return
    target = extracted[0].parent
    where = next((p for p in (target, *target.parents) if p.exists()), target)
    if not os.access(where, os.W_OK | os.X_OK):
        raise DataError(_read_only_message(spec, root, archives))


def _read_only_message(spec: DatasetSpec, root: Path, archives: list[Path]) -> str:
    top = root / spec.folder.split("/")[0] if spec.folder else archives[0]
    return (f"{spec.name}: {archives[0].parent} holds {', '.join(a.name for a in archives)} but they cannot be "
            f"extracted there (read-only): copy {top} into a writable dir and pass that dir as --data-dir")


def _open_torchvision(spec: DatasetSpec, root: Path, train: bool):
    """torchvision's dataset with download=True; any failure becomes one DataError line."""
    _check_files(spec, root)
    # Directories that torchvision would create: removed again if it fails.
    candidates = [root] + ([root / spec.folder.split("/")[0]] if spec.folder else [])
    created = [p for p in candidates if not p.exists()]
    try:
        return spec.tv_class(str(root), train=train, download=True)
    except Exception as e:  # no network, corrupt archive, wrong format: all end here
        for p in reversed(created):
            shutil.rmtree(p, ignore_errors=True)  # leave nothing half-written
        where = root / spec.folder if spec.folder else root
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        archives, _ = _archives_and_extracted(spec, root)
        if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) \
                and any(a.exists() for a in archives):  # else: nothing to extract, the dir cannot be created
            raise DataError(_read_only_message(spec, root, archives) + f" ({reason})") from e
        if all(a.exists() for a in archives):  # nothing to download: the files there do not load
            raise DataError(f"{spec.name}: the files in {where} do not load ({reason}): delete the extracted "
                            f"files to extract them again from {', '.join(a.name for a in archives)}") from e
        raise DataError(
            f"{spec.name}: data missing in {where}{_absent(root)} and {_no_download(e)}; "
            f"put {', '.join(spec.files)} into {where}"
        ) from e


def _absent(root: Path) -> str:
    """` (no such directory: ROOT)` where the data dir does not exist (a typo?), ` (not a directory:
    ROOT)` where it is a file, else nothing."""
    if not root.exists():
        return f" (no such directory: {root})"
    return "" if root.is_dir() else f" (not a directory: {root})"


_OFFLINE = re.compile(r"name or service not known|name resolution|nodename nor servname|getaddrinfo failed|"
                      r"network is unreachable|no route to host|connection refused|timed out|connection reset",
                      re.IGNORECASE)


def _no_download(e: BaseException) -> str:
    """Why torchvision got no files, in words: `the download failed: no network (HOSTS: REASON)`, or
    `nothing can be written there (...)` where the dir (or a file in it) was refused. torchvision's
    MNIST family raises `Error downloading <file>:` with each mirror's error on the lines below
    (whose first line alone said nothing); CIFAR raises the URLError itself."""
    if isinstance(e, OSError) and not isinstance(e, URLError) and e.filename:  # makedirs, before downloading
        return f"nothing can be written there ({e.strerror or e}: {e.filename})"
    errors = re.findall(r"^Tried (\S+), got:\n(.+)$", str(e), flags=re.M) or [("", str(e))]
    hosts = ", ".join(dict.fromkeys(urlsplit(mirror).hostname or mirror for mirror, _ in errors if mirror))
    reasons = "; ".join(dict.fromkeys(_url_error_text(text) for _, text in errors)) or type(e).__name__
    detail = f"{hosts}: {reasons}" if hosts else reasons
    return f"the download failed: no network ({detail})" if _OFFLINE.search(reasons) else \
        f"the download failed ({detail})"


def _url_error_text(text: str) -> str:
    """`<urlopen error [Errno -2] Name or service not known>` -> `Name or service not known`."""
    text = " ".join(text.split())
    m = re.fullmatch(r"<urlopen error (?:\[Errno -?\d+\] )?(.*)>", text)
    return m.group(1) if m else text


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, root: str) -> Dataset:
    spec = DATASETS[name]
    root_p = Path(root)
    bad = _md5_problems(spec, root_p)
    if bad:
        raise DataError(f"{spec.name}: md5 mismatch (corrupt or wrong file): {', '.join(bad)}")
    splits = []
    for train in (True, False):
        ds = _open_torchvision(spec, root_p, train)
        splits.append(Split(_to_nchw32(ds.data), torch.as_tensor(ds.targets, dtype=torch.int64)))
    mean, std = channel_stats(splits[0].images)
    return Dataset(spec, splits[0], splits[1], mean, std)


def invert(split: Split) -> Split:
    """The same images with every pixel 255 - x (uint8 stays uint8), the same labels."""
    return Split(255 - split.images, split.labels)


_TRANSFORMS = {"invert": invert}  # registry.TRANSFORMS computed from a base dataset


@functools.lru_cache(maxsize=1)
def noise_dataset() -> Dataset:
    """`noise`: uniform random uint8 images from NOISE_SEED (the same on every call and machine
    with the same torch), label -1; its own mean and std (about 0.5 and 0.29 per channel)."""
    g = torch.Generator().manual_seed(NOISE_SEED)
    images = torch.randint(0, 256, (NOISE_IMAGES + NOISE_TEST_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.full((len(images),), -1, dtype=torch.int64)
    train = Split(images[:NOISE_IMAGES], labels[:NOISE_IMAGES])
    test = Split(images[NOISE_IMAGES:], labels[NOISE_IMAGES:])
    spec = DatasetSpec("noise", object, 0, True, "", ())
    return Dataset(spec, train, test, *channel_stats(train.images))


@functools.lru_cache(maxsize=2)
def _derived_cached(name: str, root: str) -> Dataset:
    src = DERIVED[name]
    if src.transform == "noise":
        return noise_dataset()
    base = _load_cached(src.base, root)
    transform = _TRANSFORMS[src.transform]
    train, test = transform(base.train), transform(base.test)
    spec = DatasetSpec(name, base.spec.tv_class, base.spec.num_classes, base.spec.hflip, base.spec.folder,
                       base.spec.files)
    return Dataset(spec, train, test, *channel_stats(train.images))


def load_dataset(name: str, root: str | Path) -> Dataset:
    """Load (downloading when possible) a dataset from the registry, or a derived source, on the CPU."""
    if name not in EXTRA_SOURCES:
        raise DataError(f"unknown dataset '{name}': choose from {', '.join(EXTRA_SOURCES)}")
    try:
        if name in DERIVED:
            try:
                return _derived_cached(name, str(Path(root).absolute()))
            except DataError as e:
                raise DataError(f"{name} is computed from {DERIVED[name].base}: {e}") from e
        return _load_cached(name, str(Path(root).absolute()))
    except OSError as e:  # reading a file that is there (permissions, I/O error): one line
        raise DataError(f"{name}: cannot read {e.filename or root} ({e.strerror or e})") from e


def load_datasets(names: list[str], root: str | Path) -> dict[str, Dataset]:
    """Load several datasets; when some fail, one DataError that names every one of them."""
    loaded, errors = {}, []
    for name in dict.fromkeys(names):
        try:
            loaded[name] = load_dataset(name, root)
        except DataError as e:
            errors.append(str(e))
    if errors:
        raise DataError("; ".join(errors))
    return loaded


# --------------------------------------------------------------------------- augmentation


def random_crop_flip(
    images: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator
) -> torch.Tensor:
    """A random 32-crop of the zero-padded image (as torchvision's RandomCrop(32, padding=pad))
    and, when `flip`, a horizontal flip with probability 1/2. uint8 in, uint8 out, on any device."""
    n, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # n,1,h,1
    cols = dx[:, None] + torch.arange(w, device=dev)  # n,w
    if flip:
        do_flip = torch.rand(n, device=dev, generator=generator) < 0.5
        cols = torch.where(do_flip[:, None], cols.flip(1), cols)
    cols = cols[:, None, None, :]  # n,1,1,w
    return padded[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None], rows, cols]


class Normalizer:
    """uint8 images -> float32, normalized per channel, optionally channels_last."""

    def __init__(self, mean, std, device, channels_last: bool):
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).view(1, 3, 1, 1)
        self.shift = (-torch.tensor(mean, device=device) / torch.tensor(std, device=device)).view(1, 3, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(memory_format=self.memory_format).float()
        return torch.addcmul(self.shift, x, self.scale)
