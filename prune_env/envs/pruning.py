"""The pruning environment family: how much of each layer to keep, under a resource budget."""

from __future__ import annotations

import copy
import json
import os
import time
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.utils.data import Dataset

from prune_env.constraints import check_budget, within_budget
from prune_env.costs import CostSpec, measure_latency, parse_costs
from prune_env.data import (
    ALL_DATASETS,
    DatasetInfo,
    Split,
    dataset_info,
    normalise,
)
from prune_env.devices import resolve_device
from prune_env.engine import IMPORTANCES, make_engine
from prune_env.evaluation import (
    REWARDS,
    accuracy,
    finetune,
    has_batchnorm,
    recalibrate_batchnorm,
    reward_metrics,
    zero_weight_masks,
)
from prune_env.models import MODELS
from prune_env.numerics import check_numerics
from prune_env.zoo import arch_split, data_tag, get_base_model, heldout_from_meta

MODES = ("layerwise", "oneshot")
GRANULARITIES = ("channel", "weight")
_STATIC_FEATURES = 9  # index, type, in, out, kernel, stride, fmap, params share, flops share
N_FEATURES = (
    _STATIC_FEATURES + 4
)  # + resource if rest kept, if rest minimal, previous action, budget


def _bn_mode(value: bool | str) -> str:
    modes = {True: "calib", False: "off", "calib": "calib", "reward": "reward", "off": "off"}
    if not isinstance(value, (bool, str)) or value not in modes:
        raise ValueError(
            f"bn_recalibrate must be True/'calib', 'reward' or False/'off', got {value!r}"
        )
    return modes[value]


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


class PruneEnv(gym.Env):
    """
    ## Description

    Pruning a trained network as a constrained MDP (Malik, Haider, Iqbal, Taj: "Neural Network
    Pruning Through Constrained Reinforcement Learning", ICPR 2022). The agent decides, for each
    prunable layer in turn, which fraction of it to keep; at the end the pruned network is built,
    its BatchNorm statistics re-estimated, and its accuracy on a reward split carved from the
    training set is the reward. The cost is the fraction of a resource (parameters, FLOPs,
    latency or anything measurable) that the pruned network keeps; the constraint is
    cost <= budget.

    One env class serves every registered id: ``VGG11Prune-v0``, ``VGG16Prune-v0``,
    ``VGG19Prune-v0``, ``ResNet18Prune-v0``, ``ResNet56Prune-v0`` (CIFAR-10 by default),
    ``LeNet5Prune-v0`` (Fashion-MNIST) and ``ModelPrune-v0`` (any ``nn.Module`` and data).

    A "layer" is one decision unit. With ``granularity="channel"`` it is a group of coupled
    channels found by torch-pruning's dependency graph (the convolutions joined by a residual
    add are one group); the classifier head is never pruned. Pruned structures: plain, depthwise
    and grouped convolutions (a grouped conv loses the same positions in every group), Linear,
    BatchNorm (affine or not), residual adds, concatenations and splits (DenseNet, Inception,
    SqueezeNet), squeeze-excite gates and ``nn.Parameter`` tensors used on a channel dimension.
    A group that reaches anything else (LayerNorm/GroupNorm, transposed convolutions, a channel
    shuffle torch-pruning cannot map, a window partition it mistakes for a flatten and maps
    without end, as in Swin and MaxViT) is kept whole: ``env.engine.kept_whole`` names its root
    layer and the reason, and one warning says it at construction. Every group is checked
    there: the pruned network equals the masked one and its counted params/MACs equal the
    analytic ones (``benchmarks/zoo_check.py`` runs this over torchvision's zoo). With
    ``granularity="weight"`` a layer is each Conv/Linear weight tensor, head included.

    ## Action Space

    ``mode="layerwise"``: ``Box(min_keep, 1, shape=(1,), float32)``, the keep ratio of the
    current layer. ``mode="oneshot"``: ``Box(min_keep, 1, shape=(L,), float32)``, the keep
    ratios of all ``L`` layers at once. A ratio keeps ``round(ratio * size)`` channels (rounded
    to a multiple of ``channel_round``, at least one) or weights, the most important ones by
    ``importance``. Values outside the bounds are clipped; NaN, inf or a wrong shape raise
    ``ValueError``.

    ## Observation Space

    ``mode="layerwise"``: ``Box(0, 1, shape=(13,), float32)``, the AMC-style embedding of the
    current layer, each static feature divided by its maximum over layers:

    | Num | Observation                                                             |
    |-----|-------------------------------------------------------------------------|
    | 0   | layer index / (L - 1)                                                   |
    | 1   | layer type (0 convolution, 1 linear)                                    |
    | 2   | input channels (features)                                               |
    | 3   | output channels (features)                                              |
    | 4   | kernel size                                                             |
    | 5   | stride                                                                  |
    | 6   | output feature-map size (positions)                                     |
    | 7   | share of the base parameters the layer's group prunes (all its tensors) |
    | 8   | share of the base FLOPs the layer's group prunes                        |
    | 9   | resource fraction kept if every remaining layer is kept whole           |
    | 10  | resource fraction kept if every remaining layer is pruned to min_keep   |
    | 11  | previous action (1 at the first layer)                                  |
    | 12  | budget of the primary cost                                              |

    Features 9 and 10 use the primary cost when it is "params" or "flops", else the parameters.
    ``mode="oneshot"``: ``Box(0, 1, shape=(9 * L + 1,))``, features 0-8 of every layer, then the
    budget (constant within an env: a contextual bandit).

    ## Reward

    0 at every step but the last; at the last step, a score of the pruned network on
    ``reward_size`` images carved from the training set (never the test set), after BatchNorm
    re-calibration on ``bn_calib_size`` other training images and ``finetune_steps`` SGD steps
    on the rest of the training set. ``reward`` picks the score: "accuracy" (top-1, in [0, 1];
    the default), "neg_ce" (minus the mean cross-entropy), "agreement" (share of images where
    the pruned network's top-1 class is the base network's; needs no labels) or "neg_kl"
    (minus the mean KL divergence from the base network's outputs; no labels). All four come
    from the same forward pass and are reported in ``info["reward_metrics"]``. The base
    network's outputs they compare with are computed once, in eval mode with its own
    BatchNorm statistics (so with ``bn_recalibrate="reward"`` or fine-tuning, even the
    unpruned network scores slightly below agreement 1 and KL 0).

    The reward images should be images the base network did not train on: a network is near
    100% on its own training images, and the reward would then measure how much memorisation
    survives pruning. Base models the package trains hold out a tenth of the training split
    (at most 5000 images, recorded in the checkpoint) and the reward and calibration images are
    drawn from it; for a user checkpoint of a registered architecture, ``heldout=`` names the
    held-out indices (without it, and without a record, the whole split is used and a warning
    says so). With ``ModelPrune-v0``, ``train_data`` is used as given: pass held-out data.

    ## Cost

    ``info["cost"]``: 0 before the last step, then the fraction of the base network's resource
    that the pruned network keeps, so the episode's summed cost is that fraction.
    ``info["cost_limit"]`` is the budget. With ``costs={name: budget, ...}`` several constraints
    are reported in ``info["costs"]`` / ``info["cost_limits"]`` (always present, one entry with a
    single cost) and ``info["cost"]`` is the first. "params" counts parameters (non-zero ones for
    weight granularity), "flops" counts Conv/Linear multiply-accumulates (of non-zero weights for
    weight granularity), "latency" is the median wall time of the pruned net on a fixed batch of
    ``latency_batch_size`` training images relative to the base net, a callable ``f`` gives
    ``f(pruned) / f(base)``.

    The last step's info also holds ``accuracy``, ``keep_ratios`` (kept fraction per layer),
    ``actions`` (the clipped ratios asked for), ``kept`` (channels or weights kept per layer),
    ``params``, ``flops``, ``constraint_satisfied``, ``early_stopped``, ``reward_images``,
    ``reward`` (the step's reward) and ``reward_metrics`` (every variant):
    a deterministic function of the actions on CPU (a cached answer is a private copy; with
    ``early_stop`` the score also depends on the best one seen so far; cuDNN's backward pass
    during fine-tuning is not bit-deterministic on CUDA). The seconds
    per stage and whether the cache answered are in ``env.last_evaluation`` (``timing``,
    ``cache_hit``), and in the dict ``env.evaluate(ratios)`` returns. With ``finetune_steps``,
    the fine-tuning batches and Dropout masks are drawn from a generator seeded by the
    candidate itself (the global RNG is left as it was), so the reward is a deterministic
    function of the kept channels; BatchNorm passes put only BatchNorm in train mode.

    ## Starting State

    The first layer, with the previous action set to 1.

    ## Episode End

    ``terminated=True`` after the last layer (``L`` steps; one step in oneshot mode). Never
    truncated.

    ## Arguments

    ```python
    gym.make("VGG16Prune-v0", budget=0.1, cost="params")
    gym.make("ModelPrune-v0", model=net, example_input=x, train_data=ds, budget=0.5, cost="flops")
    ```

    - ``model``: a registered architecture name (``prune_env.models.MODELS``) or an ``nn.Module``
      returning logits ``[batch, classes]`` (the env prunes a copy; yours is left as it is).
    - ``example_input``: a batch the module accepts (required with an ``nn.Module``).
    - ``train_data``: the user's training data for an ``nn.Module``: a ``Dataset`` of
      ``(tensor, label)`` already transformed as the model expects, or an ``(images, labels)``
      tensor pair. Reward and calibration images are drawn from it.
    - ``dataset``: data set of a registered architecture: "cifar10", "cifar100", "mnist",
      "fashion_mnist", "imagefolder" (``data_dir`` with train/ and test/) or "synthetic"
      (learnable generated images, for tests and speed runs). Default per id.
    - ``data_dir``: where the data set lies (else ``$PRUNE_ENV_DATA``, else
      ``$PRUNE_ENV_HOME/data``); downloaded there by torchvision when online.
    - ``checkpoint``: the user's base weights (our checkpoint format or a state_dict). Without
      it, the cached base model is loaded; if none is cached, the env refuses to be built
      (``prune_env.zoo.BaseModelMissing``) unless ``train_base=True``: training a base model
      takes minutes to hours, so it is an explicit step (``prune_env.zoo.prepare_base_model``,
      or stage 1 of ``prune-train``), never a side effect of ``gym.make``.
    - ``pretrained``: False uses a randomly initialised base network (speed tests only).
    - ``base_train_epochs``: override the training recipe's length (cached separately).
    - ``train_base``: train the base model with its recipe when none is cached (default
      False).
    - ``base_numerics``: how that training runs on the CPU: "default" (torch's kernels on all
      cores; the weights depend on the machine) or "portable" (one thread, oneDNN off, MKL's
      reproducible mode, in a child process: the same weights from the same seed on the two
      CPU models measured, at 2.3-2.9x the seconds; cached under its own name; see
      ``prune_env.numerics``). For studies that span sessions.
    - ``width_mult``: channel width multiplier of a registered architecture (1.0 is the paper's).
    - ``budget``: the largest resource fraction allowed, in (0, 1]. Default 0.1 (the paper's).
    - ``cost``: "params", "flops", "latency" or a callable ``f(model) -> float``.
    - ``costs``: several constraints ``{cost: budget}``; replaces ``cost`` and ``budget``.
    - ``mode``: "layerwise" (one step per layer) or "oneshot" (one step, all ratios).
    - ``granularity``: "channel" (structured, physically smaller) or "weight" (unstructured).
    - ``importance``: ranking inside a layer: "l1", "l2", "bn_scale" (channel only), "random"
      (a ranking drawn from the env's RNG at ``reset(seed=...)``).
    - ``min_keep``: smallest keep ratio an action can ask for, in (0, 1].
    - ``channel_round``: round kept channel counts to a multiple of this (hardware-friendly).
    - ``ignored_layers``: names of modules whose output channels are never pruned.
    - ``reward_size``, ``bn_calib_size``: images in the reward and calibration splits. When the
      training set holds fewer than ``reward_size + bn_calib_size`` images (+1 to fine-tune),
      both shrink with a warning: calibration to at most a fifth of the images, a fifth kept
      for fine-tuning when it is on, the reward split the rest (``split_sizes``).
    - ``bn_recalibrate``: how BatchNorm statistics are re-estimated before the reward: True or
      "calib" (default: a forward pass over the ``bn_calib_size`` calibration images), "reward"
      (no separate pass: each reward batch is normalised with its own statistics, so
      re-calibration and evaluation are one forward pass), False or "off".
    - ``finetune_steps``, ``finetune_lr``, ``finetune_batch_size``, ``finetune_pool_size``: the
      optional fine-tuning before the reward (the paper uses 0, 32 or 128 steps).
    - ``eval_batch_size``: batch size of the reward evaluation.
    - ``cache_size``: evaluations remembered (LRU), keyed by the kept count of every layer; an
      action that rounds to a known candidate is answered from the cache (0 disables).
    - ``early_stop``: stop evaluating a feasible candidate once the Wilson upper bound
      (``early_stop_z`` standard deviations) of its accuracy is below the best feasible
      accuracy this env has seen; its reward is then the accuracy on the images seen
      (``info["early_stopped"]``, ``info["reward_images"]``). Off by default.
    - ``channels_last``: run the reward evaluation (eval-mode pass) in channels-last (NHWC)
      memory format; "auto" (default) uses it on CPU, where pruned nets with odd channel counts
      run 2-3x faster in NHWC (benchmarks/env_speed.py), not on CUDA (not measured yet).
    - ``latency_batch_size``, ``latency_repeats``: the latency measurement.
    - ``split_seed``: seed of the fixed carving of the training set into reward/calibration/
      fine-tune images (a property of the task, not of the episode).
    - ``device``: "auto" (CUDA when available), "cpu", "cuda", ...
    - ``progress``: show a progress bar while a base model trains.
    - ``render_mode``: only None (the env does not render).
    - ``reward``: "accuracy" (default), "neg_ce", "agreement" or "neg_kl" (see Reward).
    - ``infeasible_reward_size``: score a candidate whose analytic costs (params, flops)
      already break a budget on only this many reward images (``info["reward_images"]``
      says how many); None (default) scores every candidate on all of them.
    - ``heldout``: indices of the training split the base model never saw (a user checkpoint
      of a registered architecture); reward and calibration images are drawn from them.
    - ``eval_log``: a file to which every fresh evaluation is appended as one JSON line
      (the task, kept channels, keep ratios, accuracy, resource fractions, costs): the data a
      surrogate env learns from (``prune_env.surrogate``).

    ## Version History

    - v0: initial version. Revised 2026-11: concat/depthwise/grouped/SE structures pruned,
      non-affine BatchNorm and channel parameters sliced, ``min_keep`` never undercut by
      rounding, observation features 7-8 are the group's shares, deterministic step info
      (``timing``/``cache_hit`` moved to ``last_evaluation``), splits adapt to small data.
      Revised 2026-12: a registered id no longer trains a missing base model unless
      ``train_base=True`` (``prune_env.zoo.prepare_base_model`` is the explicit step).
      ``base_numerics`` added (default unchanged). A group whose index mapping torch-pruning
      runs away on (Swin's and MaxViT's window partitions) is kept whole; building the env
      for torchvision's swin_t or maxvit_t used to exhaust memory.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        model: str | nn.Module,
        example_input: torch.Tensor | None = None,
        train_data: Dataset | tuple[torch.Tensor, torch.Tensor] | None = None,
        dataset: str = "cifar10",
        data_dir: str | os.PathLike | None = None,
        checkpoint: str | os.PathLike | None = None,
        pretrained: bool = True,
        base_train_epochs: int | None = None,
        train_base: bool = False,
        base_numerics: str = "default",
        width_mult: float = 1.0,
        budget: float = 0.1,
        cost: str | Callable[[nn.Module], float] = "params",
        costs: Mapping[str | Callable[[nn.Module], float], float] | None = None,
        mode: str = "layerwise",
        granularity: str = "channel",
        importance: str = "l1",
        min_keep: float = 0.05,
        channel_round: int = 1,
        ignored_layers: Sequence[str] = (),
        reward_size: int = 2000,
        bn_calib_size: int = 128,
        bn_recalibrate: bool | str = True,
        finetune_steps: int = 0,
        finetune_lr: float = 0.01,
        finetune_batch_size: int = 128,
        finetune_pool_size: int = 10_000,
        eval_batch_size: int = 1000,
        cache_size: int = 4096,
        early_stop: bool = False,
        early_stop_z: float = 3.0,
        channels_last: bool | str = "auto",
        latency_batch_size: int = 64,
        latency_repeats: int = 5,
        split_seed: int = 0,
        device: str | torch.device = "auto",
        progress: bool = False,
        eval_log: str | os.PathLike | None = None,
        render_mode: str | None = None,
        heldout: Sequence[int] | None = None,
        reward: str = "accuracy",
        infeasible_reward_size: int | None = None,
    ) -> None:
        super().__init__()
        if render_mode is not None:
            raise ValueError(
                f"render_mode must be None (this env does not render), got {render_mode!r}"
            )
        self.render_mode = None
        for name, value in (
            ("eval_batch_size", eval_batch_size),
            ("finetune_batch_size", finetune_batch_size),
            ("latency_batch_size", latency_batch_size),
            ("latency_repeats", latency_repeats),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if reward not in REWARDS:
            raise ValueError(f"unknown reward {reward!r}; expected one of {REWARDS}")
        if early_stop and reward != "accuracy":
            raise ValueError("early_stop bounds the accuracy: it needs reward='accuracy'")
        self.reward_kind = reward
        if infeasible_reward_size is not None and int(infeasible_reward_size) < 2:
            raise ValueError(
                f"infeasible_reward_size must be None or >= 2, got {infeasible_reward_size!r}"
            )
        self.infeasible_reward_size = infeasible_reward_size
        if _bn_mode(bn_recalibrate) != "calib":
            bn_calib_size = 0  # no calibration pass: no images set aside for one
        elif int(bn_calib_size) < 1:
            raise ValueError(
                "bn_calib_size must be >= 1 with bn_recalibrate='calib' (the default); use "
                "bn_recalibrate='reward' or 'off' to re-estimate on the reward images or not at all"
            )
        self._validate_args(
            mode,
            granularity,
            importance,
            min_keep,
            channel_round,
            reward_size,
            bn_calib_size,
            finetune_steps,
            dataset,
            model,
        )
        self.specs: list[CostSpec] = parse_costs(cost, budget, costs)
        self.budget = self.specs[0].budget
        self.mode, self.granularity, self.importance = mode, granularity, importance
        self.min_keep, self.channel_round = float(min_keep), int(channel_round)
        self.bn_recalibrate = _bn_mode(bn_recalibrate)
        self.finetune_steps = int(finetune_steps)
        if int(cache_size) < 0 or not early_stop_z > 0:
            raise ValueError("cache_size must be >= 0 and early_stop_z > 0")
        self.cache_size, self.early_stop, self.early_stop_z = (
            int(cache_size),
            early_stop,
            early_stop_z,
        )
        self.device = resolve_device(device)
        if channels_last not in (True, False, "auto"):
            raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}")
        # Measured (benchmarks/env_speed.py): NHWC halves convolution time on CPU; not yet
        # measured on CUDA, so "auto" keeps NCHW there.
        self.channels_last = self.device.type == "cpu" if channels_last == "auto" else channels_last
        self.split_seed = split_seed
        self.finetune_lr, self.finetune_batch_size = finetune_lr, finetune_batch_size
        self.eval_batch_size, self.latency_repeats = eval_batch_size, latency_repeats

        check_numerics(base_numerics)
        setup_start = time.perf_counter()
        self.data_info: DatasetInfo | None = None  # known for registered architectures only
        self._data_source: tuple[str, str | os.PathLike | None, str] | None = None
        if isinstance(model, str):
            base, example, train_x, train_y, self.base_info, reward_size, bn_calib_size = (
                self._zoo_setup(
                    model,
                    dataset,
                    data_dir,
                    checkpoint,
                    pretrained,
                    base_train_epochs,
                    train_base,
                    width_mult,
                    split_seed,
                    reward_size,
                    bn_calib_size,
                    finetune_pool_size,
                    progress,
                    heldout,
                    base_numerics,
                )
            )
        else:
            if heldout is not None:
                raise ValueError(
                    "heldout= is for a registered architecture's data set; with an nn.Module, "
                    "pass the held-out images themselves as train_data"
                )
            base, example, train_x, train_y, reward_size, bn_calib_size = self._user_setup(
                model,
                example_input,
                train_data,
                split_seed,
                reward_size,
                bn_calib_size,
                finetune_pool_size,
            )
            self.base_info = {"source": "user module"}
            self.heldout_size = None
        self.reward_x, self.reward_y = train_x[:reward_size], train_y[:reward_size]
        calib_end = reward_size + bn_calib_size
        self.calib_x = train_x[reward_size:calib_end]
        self.pool_x, self.pool_y = train_x[calib_end:], train_y[calib_end:]
        if finetune_steps > 0 and len(self.pool_y) == 0:
            raise ValueError("finetune_steps > 0 but no training images are left for fine-tuning")
        self._setup_structure(base, example, ignored_layers)
        self._latency_batch = train_x[: min(latency_batch_size, len(train_x))]
        self._base_cost: dict[str, float] = {}
        for spec in self.specs:
            if spec.name == "latency" and spec.fn is None:
                self._base_cost["latency"] = measure_latency(
                    base, self._latency_batch, self.latency_repeats
                )
            elif spec.fn is not None:
                self._base_cost[spec.name] = float(spec.fn(base))
                if not self._base_cost[spec.name] > 0:
                    raise ValueError(f"cost {spec.name!r} of the base model must be > 0")
        self.base_accuracy = accuracy(base, self.reward_x, self.reward_y, eval_batch_size)
        # The base model's outputs on the reward images: what "agreement" and "neg_kl" compare
        # a pruned network with (no labels needed).
        with torch.no_grad():
            self._base_log_probs = torch.cat(
                [
                    torch.log_softmax(base(self.reward_x[i : i + eval_batch_size]).float(), 1)
                    for i in range(0, len(self.reward_x), eval_batch_size)
                ]
            )
        self.setup_seconds = time.perf_counter() - setup_start
        self.eval_log = None if eval_log is None else Path(eval_log)
        self._width_mult = width_mult
        self.channels_last = self.channels_last and self.reward_x.ndim == 4  # images only
        # Only the eval-mode pass runs in NHWC: train-mode BatchNorm (re-calibration, batch
        # statistics, fine-tuning) is several times slower in NHWC on CPU (measured).
        self._reward_x_eval = (
            self.reward_x.contiguous(memory_format=torch.channels_last)
            if self.channels_last
            else self.reward_x
        )

    # ----------------------------------------------------------------- set-up helpers
    def _setup_structure(
        self, base: nn.Module, example: torch.Tensor, ignored_layers: Sequence[str] = ()
    ) -> None:
        """What the MDP needs of the network, and nothing of the data: the pruning engine and
        its decision units, the smallest counts, the static features, the spaces and the
        episode and cache state. Needs ``mode``, ``granularity``, ``importance``,
        ``min_keep`` and ``channel_round`` set; ``example`` is only traced."""
        self.base_model = base
        self.engine = make_engine(base, example, self.granularity, self.importance, ignored_layers)
        self.units = self.engine.units
        self.n_layers = n = len(self.units)
        self._sizes = np.array([u.size for u in self.units], dtype=np.int64)
        # The fewest channels (weights) an action can keep: min_keep of the layer rounded up to
        # the channel step, never below it (rounding must not undercut min_keep), at most all.
        step = self.channel_round if self.granularity == "channel" else 1
        lowest = np.ceil(self.min_keep * self._sizes / step - 1e-9).astype(np.int64) * step
        self._min_counts = np.clip(lowest, 1, self._sizes)
        self._static = self._static_features()
        if self.mode == "layerwise":
            self.action_space = spaces.Box(self.min_keep, 1.0, shape=(1,), dtype=np.float32)
            self.observation_space = spaces.Box(0.0, 1.0, shape=(N_FEATURES,), dtype=np.float32)
        else:
            self.action_space = spaces.Box(self.min_keep, 1.0, shape=(n,), dtype=np.float32)
            self.observation_space = spaces.Box(
                0.0, 1.0, shape=(_STATIC_FEATURES * n + 1,), dtype=np.float32
            )
        self._step = -1  # -1: reset() not called yet or the episode is over
        self._actions = np.ones(n)
        self._rankings_drawn = False
        self._ranking_version = 0
        self._cache: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self.cache_hits = self.cache_misses = 0
        # every image a network was run on to score candidates (reward, calibration and
        # fine-tuning images of uncached evaluations): the search's compute, in images
        self.images_evaluated = 0
        self.last_evaluation: dict[str, Any] | None = None  # timing and cache hit of the last step
        self.best_feasible_accuracy = -np.inf

    @staticmethod
    def _validate_args(
        mode,
        granularity,
        importance,
        min_keep,
        channel_round,
        reward_size,
        bn_calib_size,
        finetune_steps,
        dataset,
        model,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if granularity not in GRANULARITIES:
            raise ValueError(
                f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}"
            )
        if importance not in IMPORTANCES:
            raise ValueError(f"unknown importance {importance!r}; expected one of {IMPORTANCES}")
        check_budget(min_keep, "min_keep")
        if int(channel_round) < 1:
            raise ValueError(f"channel_round must be >= 1, got {channel_round}")
        if int(reward_size) < 1 or int(bn_calib_size) < 0 or int(finetune_steps) < 0:
            raise ValueError("reward_size must be >= 1; bn_calib_size, finetune_steps >= 0")
        if isinstance(model, str):
            if model not in MODELS:
                raise ValueError(f"unknown model {model!r}; expected one of {sorted(MODELS)}")
            if dataset not in ALL_DATASETS:
                raise ValueError(
                    f"unknown dataset {dataset!r}; expected one of {list(ALL_DATASETS)}"
                )
        elif not isinstance(model, nn.Module):
            raise ValueError(
                f"model must be an architecture name or an nn.Module, got {type(model)}"
            )

    def _zoo_setup(
        self,
        arch,
        dataset,
        data_dir,
        checkpoint,
        pretrained,
        base_train_epochs,
        train_base,
        width_mult,
        split_seed,
        reward_size,
        bn_calib_size,
        pool_size,
        progress,
        heldout,
        base_numerics="default",
    ):
        self._data_source = (dataset, data_dir, arch)
        train = self.dataset_split("train")
        info: DatasetInfo = dataset_info(dataset, train)
        needs_training = train_base and pretrained and checkpoint is None
        test = self.dataset_split("test") if needs_training or dataset == "synthetic" else None
        base, meta = get_base_model(
            arch,
            dataset,
            info,
            train,
            test,
            width_mult,
            checkpoint,
            pretrained,
            base_train_epochs,
            self.device,
            progress=progress,
            tag=data_tag(dataset, data_dir),
            train_if_missing=train_base,
            numerics=base_numerics,
        )
        self.data_info = info
        held = self._heldout(heldout, meta, len(train), pretrained or checkpoint is not None)
        self.heldout_size = None if held is None else len(held)
        if held is None:
            reward_size, bn_calib_size = split_sizes(
                len(train), reward_size, bn_calib_size, self.finetune_steps > 0
            )
            idx = self._carve(len(train), split_seed, reward_size, bn_calib_size, pool_size)
        else:
            # Reward and calibration images from the held-out part, fine-tuning from the rest.
            reward_size, bn_calib_size = split_sizes(
                len(held), reward_size, bn_calib_size, False, "the held-out split"
            )
            order = np.random.default_rng(split_seed).permutation(held)
            rest = np.setdiff1d(np.arange(len(train)), held)
            rest = np.random.default_rng(split_seed).permutation(rest)
            pool = rest[: pool_size if self.finetune_steps > 0 else 0]
            idx = np.concatenate([order[: reward_size + bn_calib_size], pool])
        x = normalise(train.images[torch.from_numpy(idx)].to(self.device), info)
        y = train.labels[torch.from_numpy(idx)].to(self.device)
        example = x[:1].clone()
        meta = {**meta, "dataset": dataset, "arch": arch}
        return base, example, x, y, meta, reward_size, bn_calib_size

    @staticmethod
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
                stacklevel=4,
            )
        return held

    def dataset_split(self, split: str) -> Split:
        """The whole ``split`` ("train" or "test") of a registered architecture's data set.

        For the stages after the search (fine-tuning on the full training set, test accuracy);
        the env itself only keeps the images it carved for the reward.
        """
        if self._data_source is None:
            raise ValueError("dataset_split needs a registered architecture, not a user module")
        dataset, data_dir, arch = self._data_source
        return arch_split(arch, dataset, split, data_dir)

    def _user_setup(self, model, example_input, data, split_seed, reward_size, calib, pool):
        """Check the user's module, example and data; a copy of the module is pruned."""
        if example_input is None or data is None:
            raise ValueError("an nn.Module needs example_input= and train_data=")
        if not isinstance(example_input, torch.Tensor):
            raise TypeError(
                "example_input must be a torch.Tensor batch the model accepts, got "
                f"{type(example_input).__name__}"
            )
        if not any(True for _ in model.parameters()):
            raise ValueError("model has no parameters: there is nothing to prune")
        # The user's module stays where and as it is: the env prunes its own copy.
        base = copy.deepcopy(model).to(self.device).eval()
        example = example_input.to(self.device)
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
        n = _train_data_length(data)
        reward_size, calib = split_sizes(n, reward_size, calib, self.finetune_steps > 0)
        idx = self._carve(n, split_seed, reward_size, calib, pool)
        x, y = _tensors_from(data, idx)
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
        classes = logits.shape[1]
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise ValueError(
                f"train_data labels must lie in [0, {classes}) (the model's {classes} outputs), "
                f"got labels from {int(y.min())} to {int(y.max())}"
            )
        return base, example, x.to(self.device), y.to(self.device), reward_size, calib

    def _carve(self, n: int, seed: int, reward: int, calib: int, pool: int) -> np.ndarray:
        order = np.random.default_rng(seed).permutation(n)
        want = reward + calib + (pool if self.finetune_steps > 0 else 0)
        return order[: min(n, want)]

    def _static_features(self) -> np.ndarray:
        u = self.units
        cols = np.array(
            [
                [
                    i,
                    x.layer_type,
                    x.in_channels,
                    x.out_channels,
                    x.kernel,
                    x.stride,
                    x.fmap,
                    x.params_share,
                    x.flops_share,
                ]
                for i, x in enumerate(u)
            ],
            dtype=np.float64,
        )
        peak = cols.max(axis=0)
        peak[peak == 0] = 1
        return (cols / peak).astype(np.float32)

    # ----------------------------------------------------------------- MDP
    def counts(self, ratios: Sequence[float]) -> np.ndarray:
        """The channels (weights) the env keeps per layer for keep ``ratios`` (clipped to
        ``[min_keep, 1]``, rounded to ``channel_round``)."""
        return self._counts(np.clip(np.asarray(ratios, dtype=np.float64), self.min_keep, 1.0))

    def _counts(self, ratios: np.ndarray) -> np.ndarray:
        step = self.channel_round if self.granularity == "channel" else 1
        counts = np.round(ratios * self._sizes / step).astype(np.int64) * step
        return np.clip(counts, self._min_counts, self._sizes)

    def _resource_fraction(self, counts: np.ndarray) -> float:
        params, flops = self.engine.resources(counts)
        if self.specs[0].name == "flops" and self.specs[0].fn is None:
            return flops / max(self.engine.total_macs, 1)
        return params / self.engine.total_params

    def _observation(self) -> np.ndarray:
        if self.mode == "oneshot":
            return np.append(self._static.ravel(), np.float32(self.budget)).astype(np.float32)
        t = self._step
        decided = self._counts(self._actions)
        upper, lower = decided.copy(), decided.copy()
        upper[t:] = self._sizes[t:]
        lower[t:] = self._counts(np.full(self.n_layers, self.min_keep))[t:]
        prev = self._actions[t - 1] if t > 0 else 1.0
        dynamic = [
            self._resource_fraction(upper),
            self._resource_fraction(lower),
            prev,
            self.budget,
        ]
        obs = np.concatenate([self._static[t], np.asarray(dynamic, dtype=np.float32)])
        return np.clip(obs, 0.0, 1.0).astype(np.float32)

    def _check_action(self, action: Any) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"action must be numeric with shape {self.action_space.shape}"
            ) from None
        if self.mode == "layerwise" and a.shape == ():
            a = a.reshape(1)
        if a.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape} in {self.mode} mode, "
                f"got {a.shape}"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a.tolist()}")
        return np.clip(a, self.min_keep, 1.0)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self.importance == "random" and (seed is not None or not self._rankings_drawn):
            self.engine.draw_random_rankings(self.np_random)
            self._rankings_drawn = True
            self._ranking_version += 1
        self._step = 0
        self._actions = np.ones(self.n_layers)
        info = {"cost_limit": self.budget, "cost_limits": self._limits()}
        return self._observation(), info

    def get_episode_state(self) -> dict[str, Any]:
        """The episode in progress (the layer reached and the actions so far), so that a
        checkpointed search can continue it; ``set_episode_state`` restores it after a
        ``reset``."""
        return {"step": int(self._step), "actions": self._actions.tolist()}

    def set_episode_state(self, state: dict[str, Any]) -> None:
        if len(state["actions"]) != self.n_layers:
            raise ValueError(
                f"episode state of {len(state['actions'])} layers for an env of {self.n_layers}"
            )
        self._step, self._actions = int(state["step"]), np.asarray(state["actions"], float)

    def _limits(self) -> dict[str, float]:
        return {s.name: s.budget for s in self.specs}

    @property
    def cost_limits(self) -> dict[str, float]:
        """The budget of every cost, by name (agents read their cost limits here)."""
        return self._limits()

    @property
    def cost_limit(self) -> float:
        """The budget of the primary cost."""
        return self.budget

    @property
    def current_layer(self) -> int | None:
        """Index of the layer the next step decides (None outside an episode)."""
        return None if self._step < 0 else self._step

    @property
    def decided_ratios(self) -> np.ndarray:
        """Keep ratios chosen so far in this episode (1.0 for the layers not yet decided)."""
        return self._actions.copy()

    def snap(self, ratios: Sequence[float]) -> np.ndarray:
        """The ratios the env really applies (kept / size): they survive float32 actions."""
        counts = self._counts(np.clip(np.asarray(ratios, dtype=np.float64), self.min_keep, 1.0))
        return counts / self._sizes

    def analytic_costs(self, ratios: Sequence[float]) -> dict[str, float] | None:
        """Every cost of ``ratios`` without building a network, or None if one is measured."""
        if not all(spec.analytic for spec in self.specs):
            return None
        counts = self._counts(np.clip(np.asarray(ratios, dtype=np.float64), self.min_keep, 1.0))
        params, flops = self.engine.resources(counts)
        fractions = {
            "params": params / self.engine.total_params,
            "flops": flops / max(self.engine.total_macs, 1),
        }
        return {spec.name: fractions[spec.name] for spec in self.specs}

    def step(self, action):
        if self._step < 0:
            raise RuntimeError("call reset() before step(), and again after the episode ends")
        a = self._check_action(action)
        if self.mode == "oneshot":
            self._actions = a.copy()
            self._step = self.n_layers
        else:
            self._actions[self._step] = a[0]
            self._step += 1
        if self._step < self.n_layers:
            info = {
                "cost": 0.0,
                "costs": {s.name: 0.0 for s in self.specs},
                "cost_limit": self.budget,
                "cost_limits": self._limits(),
            }
            return self._observation(), 0.0, False, False, info
        info = self.evaluate(self._actions)
        # Wall times and cache hits vary between identical episodes: they are kept out of
        # the step's info (a deterministic function of the actions) and offered here.
        self.last_evaluation = {"timing": info.pop("timing"), "cache_hit": info.pop("cache_hit")}
        self._step = -1
        obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        if self.mode == "oneshot":
            obs = self._observation()
        return obs, info["reward"], True, False, info

    # ----------------------------------------------------------------- evaluation
    def prune(self, ratios: Sequence[float]) -> nn.Module:
        """The pruned network for keep ``ratios`` (before re-calibration and fine-tuning)."""
        return self.engine.build(self._counts(np.clip(np.asarray(ratios, float), self.min_keep, 1)))

    def pruned_network(self, ratios: Sequence[float]) -> nn.Module:
        """The pruned network whose accuracy the reward of ``ratios`` measured.

        Built, BatchNorm re-calibrated (on the calibration images; with
        ``bn_recalibrate="reward"``, on the reward images, which that mode normalises with)
        and fine-tuned for ``finetune_steps`` like the evaluation; NCHW, eval mode. This is the
        network a search hands on to fine-tuning and deployment.
        """
        counts = self._counts(np.clip(np.asarray(ratios, dtype=np.float64), self.min_keep, 1))
        net = self.engine.build(counts)
        if self.bn_recalibrate != "off" and has_batchnorm(net):
            use_calib = self.bn_recalibrate == "calib"
            recalibrate_batchnorm(net, self.calib_x if use_calib else self.reward_x)
        self._finetune_steps(net, counts)
        return net.eval()

    def _finetune_steps(self, net: nn.Module, counts: np.ndarray) -> int:
        """The reward's fine-tuning steps on ``net``; returns the images they ran."""
        if not self.finetune_steps:
            return 0
        # Seeded by the candidate itself: the reward is a function of the kept channels, so a
        # cached evaluation is exactly what a fresh one would give.
        seed = zlib.crc32(counts.tobytes()) ^ (self.split_seed & 0xFFFFFFFF)
        generator = torch.Generator().manual_seed(seed)
        # Weight granularity: the zeros the candidate chose stay zero, so the rewarded net
        # has the sparsity its cost reports.
        masks = zero_weight_masks(net) if self.granularity == "weight" else []
        return finetune(
            net,
            self.pool_x,
            self.pool_y,
            self.finetune_steps,
            generator,
            self.finetune_batch_size,
            self.finetune_lr,
            masks=masks,
        )

    def clear_cache(self) -> None:
        """Forget every cached evaluation and the best feasible accuracy seen (early
        stopping's bar), so that the next search pays for its own evaluations: methods
        compared on one env then each report their own compute."""
        self._cache.clear()
        self.best_feasible_accuracy = -np.inf

    def cache_info(self) -> dict[str, int]:
        """Hits, misses and size of the evaluation cache (keyed by kept channels per layer),
        and ``images``: every image a network has been run on to score candidates so far
        (reward, BatchNorm calibration and fine-tuning images of uncached evaluations)."""
        return {
            "hits": self.cache_hits,
            "misses": self.cache_misses,
            "size": len(self._cache),
            "images": self.images_evaluated,
        }

    def evaluate(self, ratios: Sequence[float]) -> dict[str, Any]:
        """Prune to ``ratios``, re-calibrate, fine-tune, measure: the last step's info dict.

        Results are cached by the kept count of every layer (plus the ranking they index), so
        an action that rounds to a candidate already evaluated costs a dictionary look-up.
        """
        start = time.perf_counter()
        ratios = np.clip(np.asarray(ratios, dtype=np.float64), self.min_keep, 1.0)
        counts = self._counts(ratios)
        key = (self._ranking_version, counts.tobytes())
        if self.cache_size and key in self._cache:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            info = copy.deepcopy(self._cache[key])  # callers may edit what they get
            info["actions"] = ratios.tolist()
            info["cache_hit"] = True
            info["timing"] = {"total": time.perf_counter() - start}
            return info
        self.cache_misses += 1
        info = self._evaluate_counts(counts, start)
        info["actions"] = ratios.tolist()
        if self.eval_log is not None:
            self._log_evaluation(info)
        # An early-stopped reward depends on the best seen so far: never served from the cache.
        if self.cache_size and not info["early_stopped"]:
            self._cache[key] = copy.deepcopy(
                {k: v for k, v in info.items() if k not in ("timing", "actions")}
            )
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return info

    def _evaluate_counts(self, counts: np.ndarray, start: float) -> dict[str, Any]:
        timing: dict[str, float] = {}
        net = self.engine.build(counts)
        timing["build"] = time.perf_counter() - start
        params, flops = self.engine.resources(counts)
        # Analytic costs first: an infeasible candidate cannot become the best feasible one.
        costs = {s.name: self._cost(s, None, params, flops) for s in self.specs if s.analytic}
        feasible_so_far = all(
            within_budget(costs[s.name], s.budget) for s in self.specs if s.analytic
        )
        t = time.perf_counter()
        has_bn = has_batchnorm(net)
        if self.bn_recalibrate == "calib" and has_bn:
            recalibrate_batchnorm(net, self.calib_x)
            self.images_evaluated += len(self.calib_x)
        timing["bn_recalibration"] = time.perf_counter() - t
        t = time.perf_counter()
        self.images_evaluated += self._finetune_steps(net, counts)
        timing["finetune"] = time.perf_counter() - t
        t = time.perf_counter()
        # Measured costs see the network as a user would deploy it (NCHW, after fine-tuning).
        for spec in self.specs:
            if spec.name not in costs:
                costs[spec.name] = self._cost(spec, net, params, flops)
        timing["cost"] = time.perf_counter() - t
        t = time.perf_counter()
        stop_below = None
        if self.early_stop and feasible_so_far and np.isfinite(self.best_feasible_accuracy):
            stop_below = self.best_feasible_accuracy
        batch_stats = self.bn_recalibrate == "reward" and has_bn
        images = self.reward_x
        if self.channels_last and not batch_stats:
            net = net.to(memory_format=torch.channels_last)
            images = self._reward_x_eval
        # A candidate its analytic costs already rule out may be scored on fewer images.
        n = len(self.reward_y)
        if not feasible_so_far and self.infeasible_reward_size is not None:
            n = min(n, self.infeasible_reward_size)
        metrics, seen = reward_metrics(
            net,
            images[:n],
            self.reward_y[:n],
            self.eval_batch_size,
            batch_stats,
            stop_below,
            self.early_stop_z,
            self._base_log_probs[:n],
        )
        acc = metrics["accuracy"]
        self.images_evaluated += int(seen)
        timing["evaluation"] = time.perf_counter() - t
        timing["total"] = time.perf_counter() - start
        satisfied = all(within_budget(costs[s.name], s.budget) for s in self.specs)
        early_stopped = seen < n
        if satisfied and not early_stopped:
            self.best_feasible_accuracy = max(self.best_feasible_accuracy, acc)
        first = self.specs[0].name
        return {
            "cost": costs[first],
            "costs": {s.name: costs[s.name] for s in self.specs},
            "cost_limit": self.budget,
            "cost_limits": self._limits(),
            "accuracy": acc,
            "reward": metrics[self.reward_kind],
            "reward_metrics": metrics,
            "keep_ratios": (counts / self._sizes).tolist(),
            "kept": counts.tolist(),
            "params": int(params),
            "flops": int(flops),
            "constraint_satisfied": satisfied,
            "early_stopped": early_stopped,
            "reward_images": seen,
            "cache_hit": False,
            "timing": timing,
        }

    def task(self) -> dict[str, Any]:
        """What defines the evaluations of this env: a surrogate may only learn from a log of
        the same task (same network, data, reward and decision units)."""
        return {
            "arch": self.base_info.get("arch"),
            "dataset": self.base_info.get("dataset"),
            "width_mult": self._width_mult,
            "base": Path(str(self.base_info.get("source"))).name,
            "granularity": self.granularity,
            "importance": self.importance,
            "min_keep": self.min_keep,
            "channel_round": self.channel_round,
            "reward": self.reward_kind,
            "reward_size": len(self.reward_y),
            "bn_recalibrate": self.bn_recalibrate,
            "bn_calib_size": len(self.calib_x),
            "finetune_steps": self.finetune_steps,
            "infeasible_reward_size": self.infeasible_reward_size,
            "split_seed": self.split_seed,
            "heldout": self.heldout_size,
            "sizes": self._sizes.tolist(),
        }

    def _log_evaluation(self, info: dict[str, Any]) -> None:
        """Append one evaluation to ``eval_log`` (JSON lines: one whole line per write)."""
        counts = np.asarray(info["kept"])
        params, flops = self.engine.resources(counts)
        record = {
            "task": self.task(),
            "kept": info["kept"],
            "keep_ratios": info["keep_ratios"],
            "accuracy": info["accuracy"],
            "reward_metrics": info["reward_metrics"],
            "reward_images": info["reward_images"],
            "early_stopped": info["early_stopped"],
            "params_fraction": params / self.engine.total_params,
            "flops_fraction": flops / max(self.engine.total_macs, 1),
            "costs": info["costs"],
            "seconds": info["timing"]["total"],
        }
        self.eval_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.eval_log, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _cost(self, spec: CostSpec, net: nn.Module | None, params: int, flops: int) -> float:
        if spec.fn is not None:
            return float(spec.fn(net)) / self._base_cost[spec.name]
        if spec.name == "params":
            return params / self.engine.total_params
        if spec.name == "flops":
            return flops / max(self.engine.total_macs, 1)
        latency = measure_latency(net, self._latency_batch, self.latency_repeats)
        return latency / self._base_cost["latency"]
