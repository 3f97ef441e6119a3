"""Data loading, caching, checkpoints and base-model training."""

import gzip
import os
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from prune_env.data import (
    DATA_ENV,
    DatasetNotFoundError,
    augment,
    dataset_info,
    load_split,
    synthetic_split,
)
from prune_env.models import build_model
from prune_env.paths import atomic_torch_save
from prune_env.zoo import (
    CheckpointError,
    Recipe,
    get_base_model,
    load_checkpoint,
    split_accuracy,
    train_model,
)


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_files_are_read_and_cached(tmp_path, home):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28))
    labels = rng.integers(0, 10, size=7)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    split = load_split("mnist", "train", tmp_path)
    assert split.images.shape == (7, 1, 28, 28)
    assert np.array_equal(split.images[:, 0].numpy(), images)
    assert np.array_equal(split.labels.numpy(), labels)
    cached = list((home / "cache").glob("mnist-train-*.pt"))
    assert len(cached) == 1
    for p in tmp_path.glob("*.gz"):
        p.unlink()  # the second load reads the cache only
    assert torch.equal(load_split("mnist", "train", tmp_path).images, split.images)


def test_imagefolder_tree_and_env_variable(tmp_path, home, monkeypatch):
    for split, n in (("train", 3), ("test", 2)):
        for label, cls in enumerate(["cat", "dog"]):
            folder = tmp_path / "cifar10" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (label * 200, i * 50, 7)).save(folder / f"{i}.png")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    train = load_split("cifar10", "train")
    assert train.images.shape == (6, 3, 32, 32) and train.classes == ["cat", "dog"]
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert train.images[4, :, 0, 0].tolist() == [200, 50, 7]  # PNG is lossless
    assert len(load_split("cifar10", "test")) == 4
    generic = load_split("imagefolder", "train", tmp_path / "cifar10")
    assert torch.equal(generic.images, train.images)
    info = dataset_info("imagefolder", generic)
    assert info.num_classes == 2 and info.channels == 3 and info.size == 32


def test_missing_data_names_the_variable_and_layout(tmp_path, home, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nothing"))
    # no network here: torchvision's download fails and the error explains what to do
    monkeypatch.setattr("prune_env.data._torchvision_split", _offline)
    with pytest.raises(DatasetNotFoundError, match=f"{DATA_ENV}.*cifar-10-batches-py"):
        load_split("cifar10", "train")
    with pytest.raises(ValueError, match="expected one of"):
        load_split("imagenet", "train")


def _offline(*args, **kwargs):
    raise OSError("network unreachable")


def test_synthetic_data_is_deterministic_and_learnable():
    a, b = synthetic_split("train", n=256), synthetic_split("train", n=256)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    info = dataset_info("synthetic", a)
    model = build_model("vgg11", width_mult=0.125)
    train_model(model, a, info, Recipe(epochs=3, batch_size=32, lr=0.05), progress=False)
    test = synthetic_split("test", n=256)
    assert split_accuracy(model, test, info) > 0.5  # chance is 0.1


def test_augment_keeps_shape_and_content():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = augment(x, g, pad=0)
    assert out.shape == x.shape
    for i in range(2):  # without padding a crop is the image itself, possibly flipped
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))


def test_checkpoint_errors(tmp_path):
    model = build_model("lenet5", in_channels=1)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(model, corrupt)
    other = tmp_path / "other.pt"
    torch.save(build_model("lenet5", in_channels=1, width_mult=2.0).state_dict(), other)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(model, other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(model, tmp_path / "missing.pt")
    plain = tmp_path / "plain.pt"
    torch.save(model.state_dict(), plain)
    assert load_checkpoint(build_model("lenet5", in_channels=1), plain) == {}


def test_base_model_is_trained_once_then_cached(home):
    train, test = (
        synthetic_split("train", 10, 1, 28, n=128),
        synthetic_split("test", 10, 1, 28, n=64),
    )
    info = dataset_info("synthetic", train)
    model, meta = get_base_model(
        "lenet5", "synthetic", info, train, test, train_epochs=1, progress=False
    )
    path = home / "checkpoints" / "lenet5-synthetic-e1-ho1.pt"
    assert meta["source"] == str(path) and path.is_file()
    assert {k: meta["heldout"][k] for k in ("size", "seed", "of")} == {
        "size": 12,
        "seed": 0,
        "of": 128,
    }
    assert meta["recipe"]["epochs"] == 1 and 0 <= meta["test_accuracy"] <= 1
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    again, meta2 = get_base_model("lenet5", "synthetic", info, None, None, train_epochs=1)
    assert meta2["train_seconds"] == meta["train_seconds"]  # loaded, not retrained
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_atomic_save_leaves_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "x.pt"
    atomic_torch_save({"a": 1}, target)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"a": 2}, target)
    assert torch.load(target) == {"a": 1}
    assert list(tmp_path.iterdir()) == [target]


def test_base_training_never_sees_the_heldout_split(home, monkeypatch):
    from prune_env import zoo

    train = synthetic_split("train", 10, 1, 28, n=200)
    train.images[:, 0, 0, 0] = torch.arange(200, dtype=torch.uint8)  # tag every image
    info = dataset_info("synthetic", train)
    seen = []
    real = zoo.train_model_logged

    def spy(model, split, *args, **kwargs):
        seen.extend(split.images[:, 0, 0, 0].tolist())
        return real(model, split, *args, **kwargs)

    monkeypatch.setattr(zoo, "train_model_logged", spy)
    _, meta = get_base_model("lenet5", "synthetic", info, train, None, train_epochs=1)
    held = zoo.heldout_from_meta(meta, 200)
    assert len(held) == 20 and set(seen).isdisjoint(held.tolist())
    assert sorted(seen + held.tolist()) == list(range(200))
    with pytest.raises(ValueError, match="trained on other data"):
        zoo.heldout_from_meta(meta, 300)
    with pytest.raises(ValueError, match="differ from those the base checkpoint recorded"):
        zoo.heldout_from_meta({"heldout": {**meta["heldout"], "sha1": "0" * 40}}, 200)
