"""Base models: load the user's checkpoint, or the cached one, or train it with a recipe.

Cached checkpoints live in ``$PRUNE_ENV_HOME/checkpoints`` (default ``~/.cache/prune_env``),
named after everything that makes them differ (architecture, width, data set, epochs), so
that two different base models are never mistaken for one another. Base training leaves a
held-out part of the training split out (``heldout_indices``) and records it in the checkpoint.

The training loop itself (``Recipe``, ``RECIPES``, ``train_model``, ``train_model_logged``, the
training-state files) lives in ``prune_env.base_training``; its names can be imported from here
as well.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

# base_training's names stay importable from here (``__all__``); train_base_model and
# get_base_model look RECIPES, train_model_logged and split_accuracy up in this module.
from prune_env.base_training import (
    RECIPES,
    TRAINING_STATE_FORMAT,
    Recipe,
    split_accuracy,
    train_model,
    train_model_logged,
    training_state_path,
)
from prune_env.data import (
    DatasetInfo,
    Split,
    data_root,
    dataset_info,
    load_split,
    synthetic_split,
)
from prune_env.models import ARCH_INPUT, build_model
from prune_env.numerics import (
    check_numerics,
    numerics_mode,
    portable_process,
    state_digest,
    tensor_digest,
    train_in_child,
)
from prune_env.paths import atomic_torch_save, home_dir

__all__ = [
    "CHECKPOINT_FORMAT",
    "HELDOUT_FRACTION",
    "HELDOUT_MAX",
    "HELDOUT_RULE",
    "HELDOUT_SEED",
    "RECIPES",
    "TRAINING_STATE_FORMAT",
    "BaseModel",
    "BaseModelMissing",
    "CheckpointError",
    "Recipe",
    "arch_split",
    "cache_path",
    "data_tag",
    "get_base_model",
    "heldout_from_meta",
    "heldout_indices",
    "load_checkpoint",
    "prepare_base_model",
    "split_accuracy",
    "train_base_model",
    "train_model",
    "train_model_logged",
    "training_state_path",
]

CHECKPOINT_FORMAT = "prune_env.checkpoint/1"


class BaseModelMissing(FileNotFoundError):
    """No base model is cached for a task, and training one was not asked for."""


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or does not fit the architecture."""


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load weights into ``model`` from our checkpoint format or a plain state_dict.

    Returns the checkpoint's metadata (empty for a plain state_dict). Raises CheckpointError
    naming the file when it is unreadable or does not match the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file: {exc}") from exc
    if isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT:
        state, meta = blob["state_dict"], {k: v for k, v in blob.items() if k != "state_dict"}
    elif isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values()):
        state, meta = blob, {}
    else:
        raise CheckpointError(
            f"checkpoint {path} holds neither a state_dict nor a {CHECKPOINT_FORMAT} file"
        )
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:5]}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}")
        if wrong:
            details.append(
                "shape mismatch "
                + ", ".join(
                    f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:5]
                )
            )
        raise CheckpointError(
            f"checkpoint {path} does not match {type(model).__name__}: " + "; ".join(details)
        )
    model.load_state_dict(state)
    return meta


def data_tag(dataset: str, data_dir: str | os.PathLike | None) -> str | None:
    """What tells two data sets of one name apart in a cache file name.

    Only "imagefolder" needs it (any folder of images goes by that name): a short hash of the
    resolved folder, so two image folders never share a cached base model.
    """
    if dataset != "imagefolder":
        return None
    folder = str(data_root(data_dir).resolve())
    return hashlib.sha1(folder.encode()).hexdigest()[:10]


# Base models the package trains never see a held-out part of the training split; the env
# draws its reward and calibration images from it. The rule's version is in the cache file
# name, so a checkpoint trained under another rule (or on every image) is never reused.
HELDOUT_RULE = "ho1"
HELDOUT_MAX, HELDOUT_FRACTION, HELDOUT_SEED = 5000, 0.1, 0


def heldout_indices(n: int, size: int | None = None, seed: int = HELDOUT_SEED) -> np.ndarray:
    """Sorted indices of the ``n``-image training split held out of base training.

    ``size`` defaults to the rule: a tenth of the split, at most 5000 images (CIFAR-10: 5000
    of 50000). The same ``n``, ``size`` and ``seed`` always give the same indices.
    """
    if size is None:
        size = min(HELDOUT_MAX, int(n * HELDOUT_FRACTION))
    if not 0 < size < n:
        raise ValueError(f"a held-out split of {size} images does not fit {n} training images")
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


def heldout_from_meta(meta: dict[str, Any], n: int) -> np.ndarray | None:
    """The held-out indices a checkpoint records, checked against the ``n`` images at hand."""
    record = meta.get("heldout")
    if not record:
        return None
    if record["of"] != n:
        raise ValueError(
            f"the base checkpoint held out {record['size']} of {record['of']} training images, "
            f"but this training split has {n}: it was trained on other data"
        )
    held = heldout_indices(n, record["size"], record["seed"])
    if "sha1" in record and _digest(held) != record["sha1"]:
        raise ValueError(
            "the held-out indices rebuilt here differ from those the base checkpoint recorded "
            "(another NumPy random stream?): its reward images could overlap its training set"
        )
    return held


def _digest(indices: np.ndarray) -> str:
    return hashlib.sha1(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()


def cache_path(
    arch: str,
    dataset: str,
    width_mult: float,
    epochs: int,
    tag: str | None = None,
    numerics: str = "default",
) -> Path:
    width = "" if width_mult == 1.0 else f"-w{width_mult:g}"
    data = dataset if tag is None else f"{dataset}-{tag}"
    mode = "" if check_numerics(numerics) == "default" else f"-{numerics}"
    name = f"{arch}{width}-{data}-e{epochs}-{HELDOUT_RULE}{mode}.pt"
    return home_dir() / "checkpoints" / name


def get_base_model(
    arch: str,
    dataset: str,
    info: DatasetInfo,
    train: Split | None,
    test: Split | None,
    width_mult: float = 1.0,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = True,
    train_epochs: int | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
    tag: str | None = None,
    train_if_missing: bool = True,
    numerics: str = "default",
) -> tuple[nn.Module, dict[str, Any]]:
    """The base network of a registered architecture, in eval mode on ``device``.

    Order: ``checkpoint`` if given; else (when ``pretrained``) the cache file; else train with
    ``RECIPES[arch]`` (``train_epochs`` overrides its length) and cache the result atomically,
    or, with ``train_if_missing=False``, raise BaseModelMissing.
    ``pretrained=False`` returns the randomly initialised network (for speed tests).
    ``tag`` (``data_tag``) tells data sets of one name apart in the cache file name.

    Training leaves out ``heldout_indices(len(train))`` and records it in the checkpoint's
    ``heldout`` entry (``heldout_from_meta`` gives the indices back).

    ``numerics="portable"`` trains on the CPU (whatever ``device``; the model is moved there
    afterwards) with the numerics of ``prune_env.numerics``, which gave the same weights from
    the same seed on the two CPU models measured, at 2.3-2.9x the seconds, in a child process;
    it is cached under its own name. The checkpoint records the
    mode, a digest of its weights (``weights_sha1``) and of the training images it saw.
    """
    check_numerics(numerics)
    model = build_model(arch, info.num_classes, info.channels, width_mult)
    if checkpoint is not None:
        meta = load_checkpoint(model, checkpoint)
        return model.to(device).eval(), {"source": str(checkpoint), **meta}
    if not pretrained:
        torch.manual_seed(seed)
        model = build_model(arch, info.num_classes, info.channels, width_mult)
        return model.to(device).eval(), {"source": "random initialisation"}
    recipe = RECIPES[arch]
    if train_epochs is not None:
        recipe = replace(recipe, epochs=int(train_epochs))
    path = cache_path(arch, dataset, width_mult, recipe.epochs, tag, numerics)
    if path.is_file():
        meta = load_checkpoint(model, path)
        return model.to(device).eval(), {"source": str(path), **meta}
    if not train_if_missing:
        raise _missing_base_model(path, arch, dataset, width_mult, recipe)
    if train is None:
        raise ValueError(f"no cached {path.name} and no training data to train it")
    record = {"arch": arch, "dataset": dataset, "width_mult": width_mult}
    if numerics == "portable" and not portable_process():
        # portable numerics are CPU numerics: the child trains on the CPU whatever ``device``
        meta = _train_portable_in_child(record, info, train, test, recipe, path, seed, progress)
        load_checkpoint(model, path)
        return model.to(device).eval(), meta
    train_device = device
    if numerics == "portable":  # this process is portable: seed the initial weights too
        torch.manual_seed(seed)
        model = build_model(arch, info.num_classes, info.channels, width_mult)
        train_device = "cpu"
    meta = train_base_model(
        model.to(train_device),
        train,
        test,
        info,
        recipe,
        path,
        seed=seed,
        progress=progress,
        description=f"training {arch} on {dataset}",
        record=record,
        numerics=numerics,
    )
    return model.to(device).eval(), meta


def _missing_base_model(
    path: Path, arch: str, dataset: str, width_mult: float, recipe: Recipe
) -> BaseModelMissing:
    """The error for a base model that is not cached and may not be trained here."""
    return BaseModelMissing(
        f"no cached base model {path} ({arch} on {dataset}, width {width_mult:g}, "
        f"{recipe.epochs} epochs): building an env does not train one (minutes to hours). "
        f"Train it first, a visible step: prune_env.zoo.prepare_base_model(...) or "
        f"`prune-train` (its stage 1); or pass checkpoint= (your weights) or "
        f"train_base=True"
    )


def _train_portable_in_child(
    record: dict[str, Any],
    info: DatasetInfo,
    train: Split,
    test: Split | None,
    recipe: Recipe,
    path: Path,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """``train_base_model`` in a child process under portable numerics (``train_in_child``),
    which writes the checkpoint ``path``; returns its record. ``record`` names the network
    (``arch``, ``dataset``, ``width_mult``); the child builds it from the seed."""
    arch, dataset = record["arch"], record["dataset"]
    return train_in_child(
        {
            "build": {
                "name": arch,
                "num_classes": info.num_classes,
                "in_channels": info.channels,
                "width_mult": record["width_mult"],
            },
            "train": (train.images, train.labels, list(train.classes)),
            "test": None if test is None else (test.images, test.labels, list(test.classes)),
            "info": asdict(info),
            "recipe": asdict(recipe),
            "path": str(path),
            "seed": seed,
            "progress": progress,
            "description": f"training {arch} on {dataset} (portable numerics)",
            "record": record,
        },
    )


def train_base_model(
    model: nn.Module,
    train: Split,
    test: Split | None,
    info: DatasetInfo,
    recipe: Recipe,
    path: Path,
    *,
    seed: int = 0,
    progress: bool = True,
    description: str = "base model",
    record: dict[str, Any] | None = None,
    numerics: str = "default",
) -> dict[str, Any]:
    """Train ``model`` (in place, on its device) on ``train`` less the held-out images
    (``heldout_indices``), under ``numerics`` (``prune_env.numerics.numerics_mode``), then
    write it with its record to the checkpoint ``path`` atomically; returns the record
    (``source`` is ``path``, ``heldout`` the held-out rule, ``numerics`` the mode and machine,
    ``weights_sha1`` and ``train_images_sha1`` digests of the result and of its input,
    ``history`` the per-epoch log of ``train_model_logged`` with the test accuracy after
    every epoch when ``test`` is given).

    Resumable: the state after each epoch is kept in ``training_state_path(path)`` until the
    checkpoint is written, so a run stopped mid-way goes on from its last finished epoch.
    """
    heldout = heldout_indices(len(train))
    seen = torch.from_numpy(np.setdiff1d(np.arange(len(train)), heldout))
    subset = Split(train.images[seen], train.labels[seen], train.classes)
    images_sha1 = tensor_digest(subset.images)
    state_file = training_state_path(path)
    with numerics_mode(numerics) as mode:
        seconds, log = train_model_logged(
            model,
            subset,
            info,
            recipe,
            seed,
            progress,
            description=description,
            state_file=state_file,
            evaluate=None if test is None else (lambda m: split_accuracy(m, test, info)),
            # with default numerics the result depends on the machine: a state written on
            # another CPU, thread count or torch is not resumed here
            identity={"train_images_sha1": images_sha1, "numerics": mode},
        )
    meta = {
        "format": CHECKPOINT_FORMAT,
        **(record or {}),
        "recipe": asdict(recipe),
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "device": str(next(model.parameters()).device),
        "heldout": {
            "size": len(heldout),
            "seed": HELDOUT_SEED,
            "of": len(train),
            "sha1": _digest(heldout),
        },
        "numerics": mode,
        "weights_sha1": state_digest(model),
        "train_images_sha1": images_sha1,
        "history": log,
    }
    if test is not None:
        meta["test_accuracy"] = log[-1]["test_accuracy"]
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({**meta, "state_dict": state}, path)
    state_file.unlink(missing_ok=True)  # the checkpoint now holds everything it had
    return {"source": str(path), **meta}


def arch_split(
    arch: str, dataset: str, split: str, data_dir: str | os.PathLike | None = None
) -> Split:
    """The whole ``split`` ("train" or "test") of ``dataset`` as architecture ``arch`` takes
    it (the synthetic data set takes the architecture's input shape)."""
    if dataset == "synthetic":
        channels, size = ARCH_INPUT.get(arch, (3, 32))
        return synthetic_split(split, 10, channels, size)
    return load_split(dataset, split, data_dir)


@dataclass
class BaseModel:
    """A registered task's base model with the data it was measured on."""

    model: nn.Module  # eval mode
    meta: dict[str, Any]  # checkpoint record: source (its file), recipe, heldout, accuracy
    train: Split
    test: Split
    info: DatasetInfo

    @property
    def checkpoint(self) -> str | None:
        """The file the model was loaded from or saved to (None for a random network)."""
        source = Path(str(self.meta.get("source")))
        return str(source) if source.is_file() else None


def prepare_base_model(
    arch: str,
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    width_mult: float = 1.0,
    train_epochs: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    pretrained: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
    numerics: str = "default",
) -> BaseModel:
    """The explicit base-model step of a registered task: load ``checkpoint``, else the cached
    model, else train it here with its recipe (a progress bar; cached for every later env of
    the task). Envs of registered ids then load it from the cache (``checkpoint=`` the
    returned ``BaseModel.checkpoint``), so that building one never trains anything."""
    train = arch_split(arch, dataset, "train", data_dir)
    test = arch_split(arch, dataset, "test", data_dir)
    info = dataset_info(dataset, train)
    model, meta = get_base_model(
        arch,
        dataset,
        info,
        train,
        test,
        width_mult,
        checkpoint,
        pretrained,
        train_epochs,
        device,
        progress=progress,
        tag=data_tag(dataset, data_dir),
        numerics=numerics,
    )
    return BaseModel(model, meta, train, test, info)
