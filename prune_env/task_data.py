"""The images a pruning env scores with: the base model, and the reward, calibration and
fine-tuning splits carved from the training data (a registered architecture's data set, or
the user's module and data), checked at the boundary."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from prune_env.data import DatasetInfo, Split, dataset_info, normalise
from prune_env.settings import RewardSettings, TaskSettings
from prune_env.zoo import arch_split, data_tag, get_base_model, heldout_from_meta


def _train_data_length(data: Any) -> int:
    """Number of samples of the user's ``train_data``, checking its form."""
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(
                f"train_data as a tuple must be (images, labels), got {len(data)} items"
            )
        images, labels = data
        for what, t in (("images", images), ("labels", labels)):
            if not isinstance(t, (torch.Tensor, np.ndarray)):
                raise TypeError(
                    f"train_data {what} must be a tensor or numpy array, got {type(t).__name__}"
                )
        if len(images) != len(labels):
            raise ValueError(f"train_data holds {len(images)} images but {len(labels)} labels")
        return len(labels)
    if not isinstance(data, Dataset) and not hasattr(data, "__getitem__"):
        raise TypeError(
            "train_data must be a torch Dataset of (image tensor, label) or an (images, labels) "
            f"tensor pair, got {type(data).__name__}"
        )
    return len(data)


def _tensors_from(
    data: Dataset | Split | tuple, indices: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialise the samples at ``indices`` of a user data set as (inputs, labels)."""
    if isinstance(data, tuple):
        x, y = (torch.as_tensor(t) for t in data)
        idx = torch.from_numpy(indices)
        if y.ndim != 1 or y.is_floating_point() or y.is_complex():
            raise ValueError(
                f"train_data labels must be a 1-d integer tensor, got {y.dtype} {tuple(y.shape)}"
            )
        return x[idx], y[idx].long()
    xs, ys = [], []
    for i in indices.tolist():
        sample = data[i]
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise TypeError(f"train_data[{i}] must be an (image, label) pair, got {type(sample)}")
        x, y = sample
        if not isinstance(x, (torch.Tensor, np.ndarray)):
            raise TypeError(
                f"train_data[{i}] holds a {type(x).__name__} image; the env needs tensors already "
                "transformed as the model expects (e.g. add transforms.ToTensor() and Normalize)"
            )
        if isinstance(y, torch.Tensor):
            y = y.item() if y.numel() == 1 else y
        if not isinstance(y, (int, np.integer)) or isinstance(y, bool):
            raise TypeError(f"train_data[{i}] has label {y!r}; expected an integer class index")
        xs.append(torch.as_tensor(x))
        ys.append(int(y))
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"train_data images have different shapes: {sorted(shapes)[:3]}")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def split_sizes(
    n: int,
    reward_size: int,
    bn_calib_size: int,
    finetune: bool,
    source: str = "the training set",
) -> tuple[int, int]:
    """The (reward, calibration) image counts carved from ``n`` images of ``source``.

    The asked sizes when they fit (with at least two images left for fine-tuning when it is
    on: a BatchNorm batch needs two). Otherwise they shrink: calibration to at most a fifth
    of the images (at least two when asked), the fine-tuning pool keeps at least a fifth
    (at least two), and the reward split takes the rest, capped at ``reward_size``. A warning
    names the new sizes.
    """
    pool = 2 if finetune else 0
    if n >= reward_size + bn_calib_size + pool:
        return reward_size, bn_calib_size
    calib = min(bn_calib_size, max(2, n // 5)) if bn_calib_size > 0 else 0
    pool = max(2, n // 5) if finetune else 0
    reward = min(reward_size, n - calib - pool)
    if reward < 2:
        raise ValueError(
            f"{source} holds {n} images: too few for a reward split ({calib} calibration and "
            f"{pool} fine-tuning images are set aside); give at least {calib + pool + 2}"
        )
    warnings.warn(
        f"{source} holds {n} images, fewer than reward_size + bn_calib_size"
        f"{' + 2 fine-tuning images' if finetune else ''}: reward_size {reward_size} -> "
        f"{reward}, bn_calib_size {bn_calib_size} -> {calib}",
        stacklevel=3,
    )
    return reward, calib


@dataclass
class TaskData:
    """The base model and the carved images, on the env's device.

    ``images``/``labels`` hold the reward split, then the calibration split, then the
    fine-tuning pool, in that order (the latency batch is their first images).
    """

    base: nn.Module
    example: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    reward_size: int
    bn_calib_size: int
    base_info: dict[str, Any]
    heldout_size: int | None = None
    data_info: DatasetInfo | None = None  # known for registered architectures only
    source: tuple[str, str | os.PathLike | None, str] | None = field(default=None, repr=False)

    @property
    def reward_x(self) -> torch.Tensor:
        return self.images[: self.reward_size]

    @property
    def reward_y(self) -> torch.Tensor:
        return self.labels[: self.reward_size]

    @property
    def calib_x(self) -> torch.Tensor:
        return self.images[self.reward_size : self.reward_size + self.bn_calib_size]

    @property
    def pool_x(self) -> torch.Tensor:
        return self.images[self.reward_size + self.bn_calib_size :]

    @property
    def pool_y(self) -> torch.Tensor:
        return self.labels[self.reward_size + self.bn_calib_size :]

    def dataset_split(self, split: str) -> Split:
        """The whole ``split`` ("train" or "test") of a registered architecture's data set."""
        if self.source is None:
            raise ValueError("dataset_split needs a registered architecture, not a user module")
        dataset, data_dir, arch = self.source
        return arch_split(arch, dataset, split, data_dir)


def load_task_data(task: TaskSettings, reward: RewardSettings, device: torch.device) -> TaskData:
    """The base model and the splits of ``task``, sized by ``reward`` (shrunk with a warning
    when the data holds too few images, ``split_sizes``)."""
    finetune = reward.finetune_steps > 0
    sizes = (reward.reward_size, reward.bn_calib_size, reward.finetune_pool_size)
    data = (
        _zoo_data(task, sizes, finetune, device)
        if isinstance(task.model, str)
        else _user_data(task, sizes, finetune, device)
    )
    if finetune and len(data.pool_y) == 0:
        raise ValueError("finetune_steps > 0 but no training images are left for fine-tuning")
    return data


def _carve(n: int, seed: int, reward: int, calib: int, pool: int, finetune: bool) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    want = reward + calib + (pool if finetune else 0)
    return order[: min(n, want)]


def _zoo_data(
    task: TaskSettings, sizes: tuple[int, int, int], finetune: bool, device: torch.device
) -> TaskData:
    arch, dataset, data_dir = task.model, task.dataset, task.data_dir
    train = arch_split(arch, dataset, "train", data_dir)
    info: DatasetInfo = dataset_info(dataset, train)
    needs_training = task.train_base and task.pretrained and task.checkpoint is None
    test = (
        arch_split(arch, dataset, "test", data_dir)
        if needs_training or dataset == "synthetic"
        else None
    )
    base, meta = get_base_model(
        arch,
        dataset,
        info,
        train,
        test,
        task.width_mult,
        task.checkpoint,
        task.pretrained,
        task.base_train_epochs,
        device,
        progress=task.progress,
        tag=data_tag(dataset, data_dir),
        train_if_missing=task.train_base,
        numerics=task.base_numerics,
    )
    trained = task.pretrained or task.checkpoint is not None
    held = _heldout(task.heldout, meta, len(train), trained)
    reward_size, calib_size, pool_size = sizes
    if held is None:
        reward_size, calib_size = split_sizes(len(train), reward_size, calib_size, finetune)
        idx = _carve(len(train), task.split_seed, reward_size, calib_size, pool_size, finetune)
    else:
        # Reward and calibration images from the held-out part, fine-tuning from the rest.
        reward_size, calib_size = split_sizes(
            len(held), reward_size, calib_size, False, "the held-out split"
        )
        order = np.random.default_rng(task.split_seed).permutation(held)
        rest = np.setdiff1d(np.arange(len(train)), held)
        rest = np.random.default_rng(task.split_seed).permutation(rest)
        pool = rest[: pool_size if finetune else 0]
        idx = np.concatenate([order[: reward_size + calib_size], pool])
    x = normalise(train.images[torch.from_numpy(idx)].to(device), info)
    y = train.labels[torch.from_numpy(idx)].to(device)
    return TaskData(
        base=base,
        example=x[:1].clone(),
        images=x,
        labels=y,
        reward_size=reward_size,
        bn_calib_size=calib_size,
        base_info={**meta, "dataset": dataset, "arch": arch},
        heldout_size=None if held is None else len(held),
        data_info=info,
        source=(dataset, data_dir, arch),
    )


def _heldout(
    heldout: Sequence[int] | None, meta: dict[str, Any], n: int, trained: bool
) -> np.ndarray | None:
    """The training-split indices the base model never saw, or None if unknown."""
    if heldout is not None:
        held = np.asarray(heldout)
        if held.ndim != 1 or held.dtype.kind not in "iu" or len(held) == 0:
            raise ValueError("heldout must be a non-empty sequence of integer indices")
        if held.min() < 0 or held.max() >= n or len(np.unique(held)) != len(held):
            raise ValueError(f"heldout must hold distinct indices in [0, {n})")
        return np.sort(held.astype(np.int64))
    held = heldout_from_meta(meta, n)
    if held is None and trained:
        warnings.warn(
            "the base model records no held-out split and heldout= was not given: the "
            "reward images come from the whole training split, which it may have trained "
            "on (the reward then measures how much memorisation survives pruning)",
            stacklevel=6,
        )
    return held


def _checked_module(
    task: TaskSettings, device: torch.device
) -> tuple[nn.Module, torch.Tensor, int]:
    """A copy of the user's module on ``device`` (theirs stays as it is), its example batch,
    and the number of classes its logits give."""
    model, example_input = task.model, task.example_input
    if example_input is None or task.train_data is None:
        raise ValueError("an nn.Module needs example_input= and train_data=")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(
            "example_input must be a torch.Tensor batch the model accepts, got "
            f"{type(example_input).__name__}"
        )
    if not any(True for _ in model.parameters()):
        raise ValueError("model has no parameters: there is nothing to prune")
    base = copy.deepcopy(model).to(device).eval()
    example = example_input.to(device)
    try:
        with torch.no_grad():
            logits = base(example[:2])
    except Exception as e:
        raise ValueError(
            f"model(example_input) failed for example_input of shape "
            f"{tuple(example_input.shape)}: {type(e).__name__}: {str(e)[:200]}"
        ) from e
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError(
            "model must return logits of shape [batch, classes] for example_input, got "
            f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)}"
        )
    return base, example, logits.shape[1]


def _user_data(
    task: TaskSettings, sizes: tuple[int, int, int], finetune: bool, device: torch.device
) -> TaskData:
    """Check the user's module, example and data; a copy of the module is pruned."""
    base, example, classes = _checked_module(task, device)
    data = task.train_data
    n = _train_data_length(data)
    reward_size, calib, pool = sizes
    reward_size, calib = split_sizes(n, reward_size, calib, finetune)
    x, y = _tensors_from(data, _carve(n, task.split_seed, reward_size, calib, pool, finetune))
    if example.is_floating_point() or not x.is_floating_point():
        x = x.to(example.dtype)  # images in the model's float type; token ids stay integer
    else:
        raise ValueError(
            f"train_data inputs are {x.dtype} but example_input is {example.dtype}: give "
            "both in the type the model takes"
        )
    if tuple(x.shape[1:]) != tuple(example.shape[1:]):
        raise ValueError(
            f"train_data images have shape {tuple(x.shape[1:])} but example_input samples "
            f"{tuple(example.shape[1:])}"
        )
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise ValueError(
            f"train_data labels must lie in [0, {classes}) (the model's {classes} outputs), "
            f"got labels from {int(y.min())} to {int(y.max())}"
        )
    return TaskData(
        base=base,
        example=example,
        images=x.to(device),
        labels=y.to(device),
        reward_size=reward_size,
        bn_calib_size=calib,
        base_info={"source": "user module"},
    )
