"""One call from a trained model and its data to a pruned, fine-tuned model: ``prune``."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from prune_env.data import DatasetInfo, Split, dataset_info
from prune_pipeline.config import ConfigError, JobConfig
from prune_pipeline.job import JobResult, run_job
from prune_pipeline.task import NormalisedImages, build_user_model, model_task

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


def data_info(train: Split) -> DatasetInfo:
    """How the job reads ``train``'s inputs: uint8 images are standardised with their own
    statistics, float inputs are taken as prepared (mean 0, std 1)."""
    if train.images.dtype == torch.uint8:
        return dataset_info("imagefolder", train)
    shape = tuple(train.images.shape[1:])
    channels = shape[0] if len(shape) == 3 else 1
    return DatasetInfo(
        "user", len(train.classes), channels, shape[-1], (0.0,) * channels, (1.0,) * channels
    )


# The defaults are train.py's (JobConfig's fields), and the task's settings come from the same
# preset (prune_env.tasks): prune() and the job never disagree on what a default run is.
def prune(
    model: nn.Module,
    train_data: Data,
    budget: float = JobConfig.budget,
    cost: str = JobConfig.cost,
    algo: str = JobConfig.algo,
    test_data: Data | None = None,
    reward_data: Data | None = None,
    granularity: str = JobConfig.granularity,
    total_timesteps: int | None = None,
    reward_size: int | None = None,
    finetune_epochs: int | None = None,
    finetune_lr: float = JobConfig.finetune_lr,
    augment: bool = False,
    architecture: str | None = None,
    seed: int = JobConfig.seed,
    device: str = JobConfig.device,
    out: str | os.PathLike = JobConfig.out,
    progress: bool = JobConfig.progress,
    algo_kwargs: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    preset: str = JobConfig.preset,
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
    :param preset: the task (``prune_env.tasks``) whose search length, reward split,
        fine-tuning length and rollout sizes apply where ``total_timesteps``,
        ``reward_size`` and ``finetune_epochs`` are not given: "quick" or "paper".
    The rest are train.py's options of the same names, with the same defaults (``--help``).
    :returns: ``JobResult`` with ``model`` (pruned, fine-tuned, CPU), ``report``, ``run_dir``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    train = as_split(train_data, "train_data")
    test = train if test_data is None else as_split(test_data, "test_data")
    reward = train if reward_data is None else as_split(reward_data, "reward_data")
    info = data_info(train)
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
        preset=preset,
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
        cfg.validate().resolve()  # the task fills what is not given
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    example = NormalisedImages(train, info)[0][0][None]
    task = model_task(
        cfg,
        model,
        example,
        NormalisedImages(reward, info),
        train=train,
        test=test,
        info=info,
        builder=builder,
        base_source=f"your {type(model).__name__}",
        augment=augment,
    )
    return run_job(cfg, task=task)
