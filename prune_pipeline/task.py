"""The pruning task a job works on: the base model, the data splits and the env over them.

A registered env id (``VGG16Prune-v0``) brings its architecture and data set; the env loads
its base model from ``--checkpoint`` or the cache, or trains it with its recipe. Your own
model (``--model resnet18`` or ``--model path/to/file.py:factory``) comes with an ImageFolder
tree (``--data-dir``): its base model is your ``--checkpoint``, or it is trained here for
``--base-epochs`` as a visible stage of its own, with a held-out tenth of the training images
(at most 5000) kept out of training for the reward, like the package's own base models.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

import prune_env
from prune_env.data import DatasetInfo, Split, dataset_info, load_split, normalise
from prune_env.devices import resolve_device
from prune_env.paths import home_dir
from prune_env.zoo import (
    HELDOUT_RULE,
    Recipe,
    data_tag,
    heldout_from_meta,
    load_checkpoint,
    prepare_base_model,
    train_base_model,
)
from prune_pipeline.config import ConfigError, JobConfig
from prune_pipeline.pruned import load_factory


@dataclass
class Task:
    """What the stages need: the env (the MDP), the full data splits and how to rebuild the
    architecture. Build one with ``make_task``."""

    env: gym.Env
    base_model: nn.Module  # the network being pruned (eval mode)
    train: Split  # the whole training split (fine-tuning)
    test: Split  # the images the job measures on
    info: DatasetInfo
    recipe: str | None  # base recipe name for fine-tuning (None: the generic recipe)
    builder: dict[str, Any] | None  # prune_pipeline.pruned.build_architecture's argument
    env_factory: Callable[[], gym.Env]  # makes another copy of the env (n_envs > 1)
    base_source: str = ""
    augment: bool | None = None  # fine-tuning's crop-and-flip (None: the recipe's)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mdp(self) -> Any:
        """The PruneEnv under gym.make's wrappers (its documented methods: evaluate,
        pruned_network, units)."""
        return self.env.unwrapped

    @property
    def layers(self) -> list[str]:
        return [u.name for u in self.mdp.units]

    @property
    def device(self) -> torch.device:
        """Where the base model, the env's networks and the measurements run."""
        return next(self.base_model.parameters()).device

    def latency_batch(self) -> torch.Tensor:
        return normalise(self.test.images[:64].to(self.device), self.info)


def env_arguments(cfg: JobConfig) -> dict[str, Any]:
    """A registered env's keyword arguments for a resolved configuration: the task's (its
    preset's, with the options that override it), then the job's."""
    task = cfg.task_spec().env_kwargs()
    task.pop("model", None)  # the env id brings its network
    return {
        "budget": cfg.budget,
        "cost": cfg.cost,
        "granularity": cfg.granularity,
        **task,
        "data_dir": cfg.data_dir,
        "checkpoint": cfg.checkpoint,
        "device": cfg.device,
        **({"dataset": cfg.dataset} if cfg.dataset else {}),
        **cfg.env_kwargs,
    }


def _first(split: Split, n: int | None) -> Split:
    return split if n is None else Split(split.images[:n], split.labels[:n], split.classes)


def make_task(cfg: JobConfig) -> Task:
    """The task of a resolved configuration (a registered env id, or ``cfg.model``). The base
    model is prepared here, explicitly (loaded, or trained with its progress bar); the env
    is then built over it and never trains anything itself."""
    if cfg.model is not None:
        return _user_task(cfg)
    arch, default_dataset = prune_env.ZOO_IDS[cfg.env]
    kwargs = env_arguments(cfg)
    dataset = kwargs.pop("dataset", default_dataset)
    device = resolve_device(cfg.device)
    pretrained = bool(kwargs.get("pretrained", True))
    if pretrained and cfg.checkpoint is None:
        print(f"[1/5] base model: {arch} on {dataset} (loaded from the cache or trained here)")
    base = prepare_base_model(
        arch,
        dataset,
        cfg.data_dir,
        cfg.width_mult,
        cfg.base_epochs,
        cfg.checkpoint,
        pretrained,
        device,
        cfg.progress,
        cfg.base_numerics,
    )
    if base.checkpoint is not None:  # the env loads what was just prepared
        kwargs["checkpoint"] = base.checkpoint
    kwargs = {**kwargs, "dataset": dataset}
    env = prune_env.make(cfg.env, **kwargs)
    info = base.info
    return Task(
        env=env,
        base_model=base.model,
        train=base.train,
        test=_first(base.test, cfg.test_size),
        info=info,
        recipe=arch,
        builder={
            "kind": "zoo",
            "name": arch,
            "num_classes": info.num_classes,
            "in_channels": info.channels,
            "width_mult": cfg.width_mult,
        },
        env_factory=partial(prune_env.make, cfg.env, **kwargs),
        base_source=str(base.meta.get("source")),
    )


# ----------------------------------------------------------------------------- your own model
def build_user_model(spec: str, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """``spec``: a torchvision classifier name, or ``path/to/file.py:factory`` (a function of
    no arguments returning the model). Returns the model and its builder record."""
    if ":" in spec and spec.split(":", 1)[0].endswith(".py"):
        path, name = spec.rsplit(":", 1)
        try:
            model = load_factory(path, name)()
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError(f"--model {spec}: {exc}") from None
        builder = {"kind": "factory", "path": str(Path(path).resolve()), "name": name}
    else:
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        if spec not in names:
            raise ConfigError(
                f"--model {spec!r} is neither path/to/file.py:factory nor a torchvision "
                f"classifier; expected one of {names}"
            )
        model = torchvision.models.get_model(spec, weights=None, num_classes=num_classes)
        builder = {"kind": "torchvision", "name": spec, "num_classes": num_classes}
    if not isinstance(model, nn.Module):
        raise ConfigError(f"--model {spec} returned {type(model).__name__}, not an nn.Module")
    return model, builder


class NormalisedImages(Dataset):
    """A Split's images normalised on access (the env carves only what it needs)."""

    def __init__(self, split: Split, info: DatasetInfo, indices: np.ndarray | None = None):
        self.split, self.info = split, info
        self.indices = np.arange(len(split)) if indices is None else np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        return normalise(self.split.images[j : j + 1], self.info)[0], int(self.split.labels[j])


def user_base_path(cfg: JobConfig, builder: dict[str, Any]) -> Path:
    """Where a base model trained for ``--model`` is cached: named by everything that makes
    it differ (the architecture, the factory file's contents, the data, the image size, the
    epochs, the seed, the held-out rule), so a resumed run or evaluate.py loads the very
    network the search pruned instead of training another one."""
    key: dict[str, Any] = {
        "builder": builder,
        "dataset": cfg.dataset or "imagefolder",
        "data": data_tag(cfg.dataset or "imagefolder", cfg.data_dir),
        "image_size": cfg.image_size,
        "epochs": cfg.base_epochs,
        "seed": cfg.seed,
        "heldout": HELDOUT_RULE,
    }
    if builder["kind"] == "factory":
        key["source"] = hashlib.sha1(Path(builder["path"]).read_bytes()).hexdigest()
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return home_dir() / "checkpoints" / f"user-{builder['name']}-{digest}.pt"


def _user_task(cfg: JobConfig) -> Task:
    dataset = cfg.dataset or "imagefolder"
    if dataset == "imagefolder" and cfg.data_dir is None:
        raise ConfigError("--model needs --data-dir, an ImageFolder tree DATA_DIR/{train,test}")
    train = load_split(dataset, "train", cfg.data_dir, cfg.image_size)
    test = load_split(dataset, "test", cfg.data_dir, cfg.image_size)
    info = dataset_info(dataset, train)
    model, builder = build_user_model(cfg.model, info.num_classes)
    example = normalise(train.images[:2], info)
    with torch.no_grad():
        logits = model.eval()(example)
    if logits.ndim != 2 or logits.shape[1] != info.num_classes:
        raise ConfigError(
            f"--model {cfg.model} gives outputs of shape {tuple(logits.shape)} for images of "
            f"shape {tuple(example.shape)}; the data has {info.num_classes} classes"
        )
    if cfg.checkpoint is not None:
        meta = load_checkpoint(model, cfg.checkpoint)
        source = f"{cfg.checkpoint}"
    else:
        if not cfg.base_epochs:
            raise ConfigError("--model without --checkpoint needs --base-epochs >= 1 to train it")
        path = user_base_path(cfg, builder)
        recipe = f"{cfg.base_epochs} epoch(s)"
        if path.is_file():  # trained by an earlier run (or this run before a resume)
            meta = load_checkpoint(model, path)
            source = f"{path} (trained earlier for {recipe})"
        else:
            print(
                f"[1/5] base model: training {cfg.model} for {recipe}, a tenth of the "
                "training images (at most 5000) held out for the reward",
                flush=True,
            )
            meta = train_base_model(
                model.to(resolve_device(cfg.device)),
                train,
                None,
                info,
                Recipe(epochs=cfg.base_epochs),
                path,
                seed=cfg.seed,
                progress=cfg.progress,
                record={"model": cfg.model, "builder": builder},
            )
            model.cpu()
            source = f"trained here for {recipe} ({path})"
    held = heldout_from_meta(meta, len(train))
    if held is None:
        warnings.warn(
            "the checkpoint records no held-out split: the reward images come from the "
            "training images, which it may have trained on",
            stacklevel=2,
        )
    return model_task(
        cfg,
        model,
        example[:1],
        NormalisedImages(train, info, held),
        train=train,
        test=_first(test, cfg.test_size),
        info=info,
        builder=builder,
        base_source=source,
        extra={"heldout": None if held is None else len(held)},
    )


def model_task(
    cfg: JobConfig,
    model: nn.Module,
    example_input: torch.Tensor,
    reward_data: Dataset,
    **task_fields: Any,
) -> Task:
    """The task of a model given as a module (``--model`` or ``prune``): ModelPrune-v0 over a
    copy of ``model``, with the resolved configuration's budget, reward split and
    ``--env-kwargs``; ``task_fields`` are the Task's data fields (train, test, info, ...)."""
    kwargs = {
        "model": model,
        "example_input": example_input,
        "train_data": reward_data,
        "budget": cfg.budget,
        "cost": cfg.cost,
        "granularity": cfg.granularity,
        "reward_size": cfg.reward_size,
        "device": cfg.device,
        **cfg.env_kwargs,
    }
    return Task(
        env=prune_env.make("ModelPrune-v0", **kwargs),
        base_model=copy.deepcopy(model).to(resolve_device(cfg.device)).eval(),
        recipe=None,
        env_factory=partial(prune_env.make, "ModelPrune-v0", **kwargs),
        **task_fields,
    )
