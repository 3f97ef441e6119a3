"""The pruning env's settings: four frozen dataclasses and the one place that maps
``gym.make``'s keyword arguments onto them.

- ``TaskSettings``: the network, its data and its base model (what is pruned).
- ``ActionSettings``: the decisions (mode, granularity, ranking, smallest keep ratio).
- ``RewardSettings``: how a candidate is scored (splits, BatchNorm, fine-tuning, cache).
- ``CostSettings``: the constraints (costs, budgets, latency measurement).

``env_settings(**kwargs)`` takes exactly the keyword arguments ``PruneEnv`` documents (and
``task=``, a named task of ``prune_env.tasks`` whose values are the defaults), checks each
value, and refuses unknown keys with the list of known ones.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from prune_env import evaluation
from prune_env.constraints import check_budget
from prune_env.costs import CostSpec, parse_costs
from prune_env.data import ALL_DATASETS
from prune_env.engine import IMPORTANCES
from prune_env.models import MODELS
from prune_env.numerics import check_numerics

MODES = ("layerwise", "oneshot")
GRANULARITIES = ("channel", "weight")
BN_MODES = {True: "calib", False: "off", "calib": "calib", "reward": "reward", "off": "off"}


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _choice(name: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(valid)}")


@dataclass(frozen=True, eq=False)
class TaskSettings:
    """What is pruned: a registered architecture and its data set, or the user's module and
    data; the base model's weights; the device. See ``PruneEnv``'s Arguments."""

    model: str | nn.Module
    example_input: torch.Tensor | None = None
    train_data: Dataset | tuple[torch.Tensor, torch.Tensor] | None = None
    dataset: str = "cifar10"
    data_dir: str | os.PathLike | None = None
    checkpoint: str | os.PathLike | None = None
    pretrained: bool = True
    base_train_epochs: int | None = None
    train_base: bool = False
    base_numerics: str = "default"
    width_mult: float = 1.0
    heldout: Sequence[int] | None = None
    split_seed: int = 0
    device: str | torch.device = "auto"
    progress: bool = False

    def __post_init__(self) -> None:
        check_numerics(self.base_numerics)
        if isinstance(self.model, str):
            _choice("model", self.model, sorted(MODELS))
            _choice("dataset", self.dataset, list(ALL_DATASETS))
        elif not isinstance(self.model, nn.Module):
            raise ValueError(
                f"model must be an architecture name or an nn.Module, got {type(self.model)}"
            )
        elif self.heldout is not None:
            raise ValueError(
                "heldout= is for a registered architecture's data set; with an nn.Module, "
                "pass the held-out images themselves as train_data"
            )


@dataclass(frozen=True)
class ActionSettings:
    """The decisions: one step per layer or all at once, what a layer is, how it is ranked,
    the smallest keep ratio and the channel rounding."""

    mode: str = "layerwise"
    granularity: str = "channel"
    importance: str = "l1"
    min_keep: float = 0.05
    channel_round: int = 1
    ignored_layers: Sequence[str] = ()

    def __post_init__(self) -> None:
        _choice("mode", self.mode, MODES)
        _choice("granularity", self.granularity, GRANULARITIES)
        _choice("importance", self.importance, IMPORTANCES)
        object.__setattr__(self, "min_keep", float(check_budget(self.min_keep, "min_keep")))
        if int(self.channel_round) < 1:
            raise ValueError(f"channel_round must be >= 1, got {self.channel_round}")
        object.__setattr__(self, "channel_round", int(self.channel_round))

    @property
    def step(self) -> int:
        """The channel step kept counts are rounded to (1 for weights)."""
        return self.channel_round if self.granularity == "channel" else 1


@dataclass(frozen=True)
class RewardSettings:
    """How a candidate is scored: the reward variant, the image splits, BatchNorm
    re-calibration, fine-tuning steps, the evaluation cache and early stopping."""

    reward: str = "accuracy"
    reward_size: int = 2000
    bn_calib_size: int = 128
    bn_recalibrate: bool | str = True
    finetune_steps: int = 0
    finetune_lr: float = 0.01
    finetune_batch_size: int = 128
    finetune_pool_size: int = 10_000
    eval_batch_size: int = 1000
    cache_size: int = 4096
    early_stop: bool = False
    early_stop_z: float = 3.0
    channels_last: bool | str = "auto"
    infeasible_reward_size: int | None = None
    eval_log: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        _positive_int("eval_batch_size", self.eval_batch_size)
        _positive_int("finetune_batch_size", self.finetune_batch_size)
        _choice("reward", self.reward, list(evaluation.REWARD_VARIANTS))
        if self.early_stop and self.reward != "accuracy":
            raise ValueError("early_stop bounds the accuracy: it needs reward='accuracy'")
        size = self.infeasible_reward_size
        if size is not None and int(size) < 2:
            raise ValueError(f"infeasible_reward_size must be None or >= 2, got {size!r}")
        if not isinstance(self.bn_recalibrate, (bool, str)) or self.bn_recalibrate not in BN_MODES:
            raise ValueError(
                "bn_recalibrate must be True/'calib', 'reward' or False/'off', got "
                f"{self.bn_recalibrate!r}"
            )
        object.__setattr__(self, "bn_recalibrate", BN_MODES[self.bn_recalibrate])
        if self.bn_recalibrate != "calib":
            object.__setattr__(self, "bn_calib_size", 0)  # no pass: no images set aside
        elif int(self.bn_calib_size) < 1:
            raise ValueError(
                "bn_calib_size must be >= 1 with bn_recalibrate='calib' (the default); use "
                "bn_recalibrate='reward' or 'off' to re-estimate on the reward images or not at all"
            )
        if int(self.reward_size) < 1 or int(self.bn_calib_size) < 0 or int(self.finetune_steps) < 0:
            raise ValueError("reward_size must be >= 1; bn_calib_size, finetune_steps >= 0")
        object.__setattr__(self, "finetune_steps", int(self.finetune_steps))
        if int(self.cache_size) < 0 or not self.early_stop_z > 0:
            raise ValueError("cache_size must be >= 0 and early_stop_z > 0")
        if self.channels_last not in (True, False, "auto"):
            raise ValueError(
                f"channels_last must be True, False or 'auto', got {self.channels_last!r}"
            )


@dataclass(frozen=True, eq=False)
class CostSettings:
    """The constraints: one cost and its budget, or several (``costs``), and how latency is
    measured."""

    budget: float = 0.1
    cost: str | Callable[[nn.Module], float] = "params"
    costs: Mapping[str | Callable[[nn.Module], float], float] | None = None
    latency_batch_size: int = 64
    latency_repeats: int = 5
    specs: list[CostSpec] = field(init=False)

    def __post_init__(self) -> None:
        _positive_int("latency_batch_size", self.latency_batch_size)
        _positive_int("latency_repeats", self.latency_repeats)
        object.__setattr__(self, "specs", parse_costs(self.cost, self.budget, self.costs))


@dataclass(frozen=True, eq=False)
class EnvSettings:
    """Everything ``PruneEnv`` is built from."""

    task: TaskSettings
    actions: ActionSettings
    reward: RewardSettings
    costs: CostSettings


_GROUPS: tuple[tuple[str, type], ...] = (
    ("task", TaskSettings),
    ("actions", ActionSettings),
    ("reward", RewardSettings),
    ("costs", CostSettings),
)
ENV_ARGUMENTS: dict[str, str] = {
    f.name: group for group, cls in _GROUPS for f in dataclasses.fields(cls) if f.init
}


def env_settings(task: str | None = None, **kwargs: Any) -> EnvSettings:
    """``PruneEnv``'s keyword arguments as settings; unknown keys are refused.

    ``task`` names a task of ``prune_env.tasks``: its env arguments (width, base recipe,
    reward split) are the defaults, and an argument given here wins.
    """
    if task is not None:
        from prune_env.tasks import get_task  # the task registry sits above the settings

        spec = get_task(task)
        given = kwargs.get("model")
        if spec.model is not None and given is not None and given != spec.model:
            raise ValueError(
                f"task {spec.name!r} prunes {spec.model!r}, not this env's model {given!r}: "
                "use the task with its own env id"
            )
        kwargs = {**spec.env_kwargs(), **kwargs}
    unknown = sorted(set(kwargs) - set(ENV_ARGUMENTS))
    if unknown:
        raise TypeError(
            f"unknown PruneEnv argument(s) {unknown}; expected some of "
            f"{sorted(ENV_ARGUMENTS)} (help(prune_env.PruneEnv))"
        )
    if "model" not in kwargs:
        raise TypeError("PruneEnv needs model= (an architecture name or an nn.Module)")
    groups: dict[str, dict[str, Any]] = {group: {} for group, _ in _GROUPS}
    for key, value in kwargs.items():
        groups[ENV_ARGUMENTS[key]][key] = value
    return EnvSettings(**{group: cls(**groups[group]) for group, cls in _GROUPS})
