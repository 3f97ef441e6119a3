"""Data sets as decoded tensors: found on disk (or downloaded when online), decoded once, cached.

Every split is held as ``uint8`` images ``[N, C, H, W]`` plus ``int64`` labels. The first load
decodes the source (torchvision's files, the original IDX files, or an ImageFolder tree of image
files) and writes the tensors atomically to the cache under ``PRUNE_ENV_HOME``; later loads read
that file only.

Where the files are looked for, in order: the ``data_dir`` argument, the ``PRUNE_ENV_DATA``
environment variable, ``$PRUNE_ENV_HOME/data`` (default ``~/.cache/prune_env/data``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prune_env.paths import atomic_torch_save, home_dir

DATA_ENV = "PRUNE_ENV_DATA"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,)),
}
# Shapes and statistics of these two come from the data itself.
OTHER_DATASETS = ("imagefolder", "synthetic")
ALL_DATASETS = (*DATASETS, *OTHER_DATASETS)


class DatasetNotFoundError(FileNotFoundError):
    """The data set is neither on disk nor downloadable."""


@dataclass
class Split:
    """One split of a data set as tensors.

    ``images`` are decoded images, uint8 [N, C, H, W], which ``normalise`` scales and
    standardises; or inputs a user already prepared, float [N, ...], which it leaves as they
    are.
    """

    images: torch.Tensor  # uint8 [N, C, H, W], or float [N, ...] (prepared)
    labels: torch.Tensor  # int64 [N]
    classes: list[str]

    def __post_init__(self) -> None:
        decoded = self.images.dtype == torch.uint8 and self.images.ndim == 4
        if not (decoded or (self.images.is_floating_point() and self.images.ndim >= 2)):
            raise ValueError(
                f"images must be uint8 [N,C,H,W] or float [N, ...], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return home_dir() / "data"


def _layout_help(name: str, root: Path) -> str:
    layouts = {
        "cifar10": "an ImageFolder tree ROOT[/cifar10]/{train,test}/<class>/*.jpg, or "
        "torchvision's ROOT/cifar-10-batches-py/",
        "cifar100": "an ImageFolder tree ROOT[/cifar100]/{train,test}/<class>/*.png, or "
        "torchvision's ROOT/cifar-100-python/",
        "mnist": "the four original files (train-images-idx3-ubyte[.gz], ...) in ROOT, "
        "ROOT/mnist or ROOT/MNIST/raw",
        "fashion_mnist": "the four original files (train-images-idx3-ubyte[.gz], ...) in ROOT, "
        "ROOT/fashion-mnist or ROOT/FashionMNIST/raw, or Debian's dataset-fashion-mnist "
        f"package ({DEBIAN_FASHION_MNIST})",
        "imagefolder": "ROOT/train/<class>/<image> and ROOT/test/<class>/<image>",
    }
    return (
        f"data set {name!r} not found under {root} (set it with data_dir= or the {DATA_ENV} "
        f"environment variable); expected {layouts[name]}"
    )


def _find_imagefolder(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def _decode_imagefolder(folder: Path, size: int | None) -> Split:
    from PIL import Image

    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"{folder} has no class folders")
    images, labels = [], []
    first_shape = None
    for label, cls in enumerate(classes):
        files = sorted(p for p in (folder / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files:
            with Image.open(path) as pil:
                pil = pil.convert("RGB")
                if size is not None and pil.size != (size, size):
                    pil = pil.resize((size, size), Image.Resampling.BILINEAR)
                img = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
            if first_shape is None:
                first_shape = img.shape
            elif img.shape != first_shape:
                raise ValueError(
                    f"{path} is {tuple(img.shape)}, earlier images {tuple(first_shape)}; "
                    "pass image_size= to resize all images to one size"
                )
            images.append(img)
            labels.append(label)
    if not images:
        raise DatasetNotFoundError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return Split(torch.stack(images), torch.tensor(labels, dtype=torch.int64), classes)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {data.size} bytes for shape {dims}")
    return data.reshape(dims)


def _find_idx(root: Path, name: str, split: str) -> tuple[Path, Path] | None:
    prefix = "train" if split == "train" else "t10k"
    folders = [root, root / name.replace("_", "-"), root / name]
    folders.append(root / ("FashionMNIST" if name == "fashion_mnist" else "MNIST") / "raw")
    if name == "fashion_mnist":
        folders.append(DEBIAN_FASHION_MNIST)
    for folder in folders:
        for suffix in ("", ".gz"):
            images = folder / f"{prefix}-images-idx3-ubyte{suffix}"
            labels = folder / f"{prefix}-labels-idx1-ubyte{suffix}"
            if images.is_file() and labels.is_file():
                return images, labels
    return None


def _torchvision_split(name: str, root: Path, split: str, download: bool) -> Split:
    import torchvision

    cls = {
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
        "mnist": torchvision.datasets.MNIST,
        "fashion_mnist": torchvision.datasets.FashionMNIST,
    }[name]
    ds = cls(str(root), train=split == "train", download=download)
    data = torch.as_tensor(np.asarray(ds.data))
    images = data.permute(0, 3, 1, 2) if data.ndim == 4 else data.unsqueeze(1)
    return Split(images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64), ds.classes)


def _decode(name: str, root: Path, split: str, image_size: int | None) -> tuple[Split, str]:
    """Decode one split from the first source found; returns it and a description of the source."""
    if name == "imagefolder":
        folder = _find_imagefolder(root, "")
        if folder is None:
            raise DatasetNotFoundError(_layout_help(name, root))
        return _decode_imagefolder(folder / split, image_size), str(folder / split)
    if name in ("mnist", "fashion_mnist"):
        found = _find_idx(root, name, split)
        if found is not None:
            images, labels = (_read_idx(p) for p in found)
            classes = [str(i) for i in range(10)]
            split_ = Split(
                torch.from_numpy(images.copy()).unsqueeze(1),
                torch.from_numpy(labels.astype(np.int64)),
                classes,
            )
            return split_, str(found[0])
    else:
        folder = _find_imagefolder(root, name)
        if folder is not None:
            return _decode_imagefolder(folder / split, image_size), str(folder / split)
        tv_folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
        if (root / tv_folder).is_dir():
            return _torchvision_split(name, root, split, download=False), str(root / tv_folder)
    # Not on disk: torchvision downloads when online; offline, say where we looked.
    try:
        root.mkdir(parents=True, exist_ok=True)
        return _torchvision_split(name, root, split, download=True), f"download into {root}"
    except Exception as exc:
        raise DatasetNotFoundError(
            f"{_layout_help(name, root)}; downloading failed: {type(exc).__name__}: {exc}"
        ) from exc


def synthetic_split(
    split: str,
    num_classes: int = 10,
    channels: int = 3,
    size: int = 32,
    n: int | None = None,
) -> Split:
    """A learnable synthetic data set: each class is a fixed smooth pattern plus pixel noise.

    Deterministic (fixed seeds); the train and test splits share the class patterns. Meant for
    tests, speed benchmarks and examples that must run without any real data.
    """
    n = n if n is not None else (2048 if split == "train" else 512)
    patterns_rng = np.random.default_rng(1234)
    coarse = patterns_rng.uniform(0, 255, size=(num_classes, channels, 4, 4)).astype(np.float32)
    patterns = torch.nn.functional.interpolate(
        torch.from_numpy(coarse), size=(size, size), mode="bilinear", align_corners=False
    )
    rng = np.random.default_rng(0 if split == "train" else 1)
    labels = torch.from_numpy(rng.integers(0, num_classes, size=n))
    noise = torch.from_numpy(rng.normal(0, 60, size=(n, channels, size, size)).astype(np.float32))
    images = (patterns[labels] + noise).clamp(0, 255).to(torch.uint8)
    return Split(images, labels, [str(c) for c in range(num_classes)])


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    image_size: int | None = None,
    cache: bool = True,
) -> Split:
    """Load ``split`` ("train" or "test") of a data set as tensors, decoding only once.

    Args:
        name: one of ``ALL_DATASETS`` ("synthetic" takes the CIFAR shape; use
            ``synthetic_split`` for other shapes).
        split: "train" or "test".
        data_dir: where the files are (see the module docstring for the search order).
        image_size: resize ImageFolder images to this square size.
        cache: read/write the decoded tensors under ``$PRUNE_ENV_HOME/cache``.
    """
    if name not in ALL_DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(ALL_DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "synthetic":
        return synthetic_split(split)
    root = data_root(data_dir).resolve()
    key = hashlib.sha1(f"{name}|{root}|{image_size}".encode()).hexdigest()[:12]
    cache_file = home_dir() / "cache" / f"{name}-{split}-{key}.pt"
    if cache and cache_file.is_file():
        try:
            blob = torch.load(cache_file, weights_only=True)
            return Split(blob["images"], blob["labels"], list(blob["classes"]))
        except Exception:
            cache_file.unlink(missing_ok=True)  # a corrupt cache is rebuilt, never trusted
    result, source = _decode(name, root, split, image_size)
    if cache:
        blob = {"images": result.images, "labels": result.labels, "classes": result.classes}
        atomic_torch_save({**blob, "source": source}, cache_file)
    return result


def dataset_info(name: str, train: Split | None = None) -> DatasetInfo:
    """Static facts of a named data set; for imagefolder/synthetic, computed from ``train``."""
    if name in DATASETS:
        return DATASETS[name]
    if train is None:
        raise ValueError(f"dataset {name!r} needs its training split to compute its statistics")
    x = train.images[: min(len(train), 10_000)].double() / 255
    mean = tuple(x.mean(dim=(0, 2, 3)).tolist())
    std = tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    return DatasetInfo(
        name,
        int(train.labels.max()) + 1,
        train.images.shape[1],
        train.images.shape[2],
        mean,
        std,
    )


def normalise(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 [N,C,H,W] -> float32, scaled to [0,1] and standardised per channel; float inputs
    (already prepared by the user) are returned as they are."""
    if images.is_floating_point():
        return images
    mean = torch.tensor(info.mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=images.device).view(1, -1, 1, 1)
    return (images.float().div_(255) - mean) / std


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip on a uint8 or float batch."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(images.device)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(images.device)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    chans = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    out = padded[batch, chans, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
    flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
    out[flip] = out[flip].flip(-1)
    return out
