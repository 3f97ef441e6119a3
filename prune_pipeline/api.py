"""One call from a trained model and its data to a pruned, fine-tuned model: ``prune``."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

import prune_env
from prune_env.data import DatasetInfo, Split, dataset_info
from prune_env.devices import resolve_device
from prune_pipeline.config import ConfigError, JobConfig
from prune_pipeline.job import JobResult, run_job
from prune_pipeline.task import NormalisedImages, Task, build_user_model

Data = Dataset | tuple[torch.Tensor, torch.Tensor]


def as_split(data: Data, name: str) -> Split:
    """``data`` (an (inputs, labels) pair or a Dataset of (input, int label)) as a Split:
    uint8 images [N,C,H,W] are normalised by the job, float inputs are used as given."""
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
    elif isinstance(data, Dataset):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"{name} must have a length") from None
        pairs = [data[i] for i in range(n)]
        if not pairs or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs[:1]):
            raise TypeError(f"{name}[i] must be an (input tensor, int label) pair")
        x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        y = torch.as_tensor([int(p[1]) for p in pairs])
    else:
        raise TypeError(
            f"{name} must be an (inputs, labels) tensor pair or a torch Dataset, got "
            f"{type(data).__name__}"
        )
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must hold tensors, got {type(x).__name__}, {type(y).__name__}")
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"{name} has {len(x)} inputs and {len(y)} labels (need equal, >= 2)")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise TypeError(f"{name} inputs must be uint8 images or float tensors, got {x.dtype}")
    try:
        classes = [str(c) for c in range(int(y.max()) + 1)]
        return Split(x, y.long(), classes)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def prune(
    model: nn.Module,
    train_data: Data,
    budget: float = 0.3,
    cost: str = "flops",
    algo: str = "ppo_pid_lag",
    test_data: Data | None = None,
    reward_data: Data | None = None,
    granularity: str = "channel",
    total_timesteps: int = 15_000,
    reward_size: int = 1000,
    finetune_epochs: int = 1,
    finetune_lr: float = 0.01,
    augment: bool = False,
    architecture: str | None = None,
    seed: int = 0,
    device: str = "auto",
    out: str | os.PathLike = "runs",
    progress: bool = True,
    algo_kwargs: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> JobResult:
    """Prune ``model`` to ``budget`` of its ``cost`` with constrained RL, fine-tune it and
    measure it; everything is also written to a run folder under ``out``.

    :param model: a trained classifier (``model(x)`` gives logits [batch, classes]); it is
        copied, never changed.
    :param train_data: (inputs, labels) or a Dataset of (input, label): uint8 images
        [N,C,H,W] (scaled and standardised with their own statistics) or float inputs
        prepared the way the model takes them. Fine-tuning uses all of it.
    :param budget: the largest fraction of the cost the pruned model may keep.
    :param cost: "params", "flops" or "latency".
    :param algo: a registry name (``agents.registry.names()``).
    :param test_data: what the report measures accuracy on (default: ``train_data``).
    :param reward_data: images the model did not train on, for the search's reward (default:
        ``train_data``; the reward then also measures memorisation).
    :param architecture: how to rebuild the architecture for the weights-only file: a
        torchvision name or ``path/to/file.py:factory``. Without it the pruned model is also
        saved as a pickle (``pruned_model.pt``).
    :param augment: crop-and-flip while fine-tuning (images only).
    The rest are train.py's options of the same names (``--help``).
    :returns: ``JobResult`` with ``model`` (pruned, fine-tuned, CPU), ``report``, ``run_dir``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    train = as_split(train_data, "train_data")
    test = train if test_data is None else as_split(test_data, "test_data")
    reward = train if reward_data is None else as_split(reward_data, "reward_data")
    if train.images.dtype == torch.uint8:
        info = dataset_info("imagefolder", train)
    else:
        shape = tuple(train.images.shape[1:])
        channels = shape[0] if len(shape) == 3 else 1
        info = DatasetInfo(
            "user", len(train.classes), channels, shape[-1], (0.0,) * channels, (1.0,) * channels
        )
    builder = None
    if architecture is not None:
        try:
            _, builder = build_user_model(architecture, info.num_classes)
        except ConfigError as exc:
            raise ValueError(f"architecture: {exc}") from None
    cfg = JobConfig(
        env="ModelPrune-v0",
        model=architecture or type(model).__name__,
        algo=algo,
        budget=budget,
        cost=cost,
        granularity=granularity,
        total_timesteps=total_timesteps,
        seed=seed,
        device=device,
        reward_size=reward_size,
        finetune_epochs=finetune_epochs,
        finetune_lr=finetune_lr,
        algo_kwargs=dict(algo_kwargs or {}),
        env_kwargs=dict(env_kwargs or {}),
        out=str(out),
        progress=progress,
        save_pickle=builder is None,
        base_epochs=0,
        width_mult=1.0,
    )
    try:
        cfg.validate()
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    example = NormalisedImages(train, info)[0][0][None]
    kwargs = {
        "model": model,
        "example_input": example,
        "train_data": NormalisedImages(reward, info),
        "budget": budget,
        "cost": cost,
        "granularity": granularity,
        "reward_size": reward_size,
        "device": device,
        **(env_kwargs or {}),
    }
    env = prune_env.make("ModelPrune-v0", **kwargs)
    factory: Callable[[], Any] = partial(prune_env.make, "ModelPrune-v0", **kwargs)
    task = Task(
        env=env,
        base_model=copy.deepcopy(model).to(resolve_device(device)).eval(),
        train=train,
        test=test,
        info=info,
        recipe=None,
        builder=builder,
        env_factory=factory,
        base_source=f"your {type(model).__name__}",
        augment=augment,
    )
    return run_job(cfg, task=task)
