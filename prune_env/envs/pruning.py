"""The pruning environment family: how much of each layer to keep, under a resource budget.

``PruneEnv`` is the MDP (spaces, observation, steps, episode end, info). What it is built
from lives beside it: its settings (``prune_env.settings``), the task's images and base model
(``prune_env.task_data``), the pruning engine (``prune_env.engine``), the cost models
(``prune_env.costs``) and the evaluator that scores a finished episode
(``prune_env.evaluators``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from torch import Tensor, nn

from prune_env.costs import CostContext, CostSpec, build_cost_models
from prune_env.devices import resolve_device
from prune_env.engine import make_engine
from prune_env.evaluators import Evaluator, EvaluatorParts, RealEvaluator
from prune_env.settings import (
    GRANULARITIES,
    MODES,
    ActionSettings,
    EnvSettings,
    env_settings,
)
from prune_env.task_data import TaskData, load_task_data, split_sizes

__all__ = ["GRANULARITIES", "MODES", "N_FEATURES", "PruneEnv", "split_sizes"]

_STATIC_FEATURES = 9  # index, type, in, out, kernel, stride, fmap, params share, flops share
_UNIT_FEATURES = (
    "layer_type", "in_channels", "out_channels", "kernel", "stride", "fmap", "params_share",
    "flops_share",
)  # fmt: skip
# + resource if rest kept, if rest minimal, previous action, budget
N_FEATURES = _STATIC_FEATURES + 4


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
    - ``evaluator``: the ``prune_env.evaluators.Evaluator`` subclass that scores a finished
      episode (default ``RealEvaluator``, the reward described above).
    - ``task``: a named task (``prune_env.tasks``, e.g. "quick"): its width, base recipe and
      reward split become the defaults of the arguments above.
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
      for torchvision's swin_t or maxvit_t used to exhaust memory. Restructured (behaviour
      unchanged): the env is the MDP over an ``Evaluator`` (``prune_env.evaluators``) and
      cost-model objects (``prune_env.costs``); its keyword arguments map onto frozen
      settings (``prune_env.settings``), which refuse unknown keys; ``task=`` names a task
      of ``prune_env.tasks`` whose env arguments become the defaults.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        model: str | nn.Module,
        *,
        render_mode: str | None = None,
        evaluator: type[Evaluator] = RealEvaluator,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        _check_render_mode(render_mode)
        self.settings: EnvSettings = env_settings(model=model, **kwargs)
        self.device = resolve_device(self.settings.task.device)
        setup_start = time.perf_counter()
        data = load_task_data(self.settings.task, self.settings.reward, self.device)
        self.data: TaskData | None = data
        self._setup_structure(
            self.settings.actions, self.settings.costs.specs, data.base, data.example
        )
        costs = self.settings.costs
        latency_batch = data.images[: min(costs.latency_batch_size, len(data.images))]
        context = CostContext(self.engine, data.base, latency_batch, costs.latency_repeats)
        if not (isinstance(evaluator, type) and issubclass(evaluator, Evaluator)):
            raise TypeError(f"evaluator must be an Evaluator subclass, got {evaluator!r}")
        parts = EvaluatorParts(
            self.engine,
            build_cost_models(costs.specs, context),
            data,
            self.settings.reward,
            self.device,
            self._task_record(data),
        )
        self._attach(evaluator.from_parts(parts), data.base, data.base_info)
        self.setup_seconds = time.perf_counter() - setup_start

    # ----------------------------------------------------------------- set-up
    def _setup_structure(
        self, actions: ActionSettings, specs: list[CostSpec], base: nn.Module, example: Tensor
    ) -> None:
        """What the MDP needs of the network, and nothing of the data: the pruning engine and
        its decision units, the smallest counts, the static features, the spaces and the
        episode state. ``example`` is only traced."""
        self.render_mode = None
        self.actions, self.specs = actions, specs
        self.budget = specs[0].budget
        self.engine = make_engine(
            base, example, actions.granularity, actions.importance, actions.ignored_layers
        )
        self.units = self.engine.units
        self.n_layers = n = len(self.units)
        self._sizes = np.array([u.size for u in self.units], dtype=np.int64)
        # The fewest channels (weights) an action can keep: min_keep of the layer rounded up to
        # the channel step, never below it (rounding must not undercut min_keep), at most all.
        step = actions.step
        lowest = np.ceil(actions.min_keep * self._sizes / step - 1e-9).astype(np.int64) * step
        self._min_counts = np.clip(lowest, 1, self._sizes)
        self._static = self._static_features()
        if actions.mode == "layerwise":
            self.action_space = spaces.Box(actions.min_keep, 1.0, shape=(1,), dtype=np.float32)
            self.observation_space = spaces.Box(0.0, 1.0, shape=(N_FEATURES,), dtype=np.float32)
        else:
            self.action_space = spaces.Box(actions.min_keep, 1.0, shape=(n,), dtype=np.float32)
            self.observation_space = spaces.Box(
                0.0, 1.0, shape=(_STATIC_FEATURES * n + 1,), dtype=np.float32
            )
        self._step = -1  # -1: reset() not called yet or the episode is over
        self._actions = np.ones(n)
        self._rankings_drawn = False
        self._ranking_version = 0
        self.last_evaluation: dict[str, Any] | None = None  # timing and cache hit of the last step

    def _attach(self, evaluator: Evaluator, base: nn.Module, base_info: dict[str, Any]) -> None:
        self.evaluator, self.base_model, self.base_info = evaluator, base, base_info

    def _task_record(self, data: TaskData) -> dict[str, Any]:
        """What defines the evaluations of this env: a surrogate may only learn from a log of
        the same task (same network, data, reward and decision units)."""
        task, reward, actions = self.settings.task, self.settings.reward, self.actions
        return {
            "arch": data.base_info.get("arch"),
            "dataset": data.base_info.get("dataset"),
            "width_mult": task.width_mult,
            "base": Path(str(data.base_info.get("source"))).name,
            "granularity": actions.granularity,
            "importance": actions.importance,
            "min_keep": actions.min_keep,
            "channel_round": actions.channel_round,
            "reward": reward.reward,
            "reward_size": len(data.reward_y),
            "bn_recalibrate": reward.bn_recalibrate,
            "bn_calib_size": len(data.calib_x),
            "finetune_steps": reward.finetune_steps,
            "infeasible_reward_size": reward.infeasible_reward_size,
            "split_seed": task.split_seed,
            "heldout": data.heldout_size,
            "sizes": self._sizes.tolist(),
        }

    def _static_features(self) -> np.ndarray:
        cols = np.array(
            [[i, *(getattr(x, name) for name in _UNIT_FEATURES)] for i, x in enumerate(self.units)],
            dtype=np.float64,
        )
        peak = cols.max(axis=0)
        peak[peak == 0] = 1
        return (cols / peak).astype(np.float32)

    # ----------------------------------------------------------------- settings, read back
    mode = property(lambda self: self.actions.mode)
    granularity = property(lambda self: self.actions.granularity)
    importance = property(lambda self: self.actions.importance)
    min_keep = property(lambda self: self.actions.min_keep)
    channel_round = property(lambda self: self.actions.channel_round)
    reward_kind = property(lambda self: self.evaluator.reward_kind)
    base_accuracy = property(lambda self: self.evaluator.base_accuracy)
    best_feasible_accuracy = property(lambda self: self.evaluator.best_feasible_accuracy)
    images_evaluated = property(lambda self: self.evaluator.images_evaluated)
    eval_log = property(lambda self: self.evaluator.eval_log)
    # the task's images (a surrogate env has none)
    reward_x = property(lambda self: self.data.reward_x)
    reward_y = property(lambda self: self.data.reward_y)
    calib_x = property(lambda self: self.data.calib_x)
    pool_x = property(lambda self: self.data.pool_x)
    pool_y = property(lambda self: self.data.pool_y)
    data_info = property(lambda self: None if self.data is None else self.data.data_info)
    heldout_size = property(lambda self: None if self.data is None else self.data.heldout_size)
    channels_last = property(lambda self: getattr(self.evaluator, "channels_last", False))

    def dataset_split(self, split: str):
        """The whole ``split`` ("train" or "test") of a registered architecture's data set.

        For the stages after the search (fine-tuning on the full training set, test accuracy);
        the env itself only keeps the images it carved for the reward.
        """
        if self.data is None:
            raise ValueError("dataset_split needs a registered architecture, not a user module")
        return self.data.dataset_split(split)

    # ----------------------------------------------------------------- MDP
    def counts(self, ratios: Sequence[float]) -> np.ndarray:
        """The channels (weights) the env keeps per layer for keep ``ratios`` (clipped to
        ``[min_keep, 1]``, rounded to ``channel_round``)."""
        return self._counts(np.clip(np.asarray(ratios, dtype=np.float64), self.min_keep, 1.0))

    def _counts(self, ratios: np.ndarray) -> np.ndarray:
        step = self.actions.step
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
        return self.counts(ratios) / self._sizes

    def analytic_costs(self, ratios: Sequence[float]) -> dict[str, float] | None:
        """Every cost of ``ratios`` without building a network, or None if one is measured."""
        costs = self.evaluator.costs
        if not all(c.analytic for c in costs):
            return None
        candidate = self.evaluator.candidate(self.counts(ratios))
        return {c.name: c.fraction(candidate) for c in costs}

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
    def evaluate(self, ratios: Sequence[float]) -> dict[str, Any]:
        """Prune to ``ratios``, re-calibrate, fine-tune, measure: the last step's info dict.

        Results are cached by the kept count of every layer (plus the ranking they index), so
        an action that rounds to a candidate already evaluated costs a dictionary look-up.
        """
        ratios = np.clip(np.asarray(ratios, dtype=np.float64), self.min_keep, 1.0)
        return self.evaluator.evaluate(self._counts(ratios), ratios, self._ranking_version)

    def prune(self, ratios: Sequence[float]) -> nn.Module:
        """The pruned network for keep ``ratios`` (before re-calibration and fine-tuning)."""
        return self.engine.build(self.counts(ratios))

    def pruned_network(self, ratios: Sequence[float]) -> nn.Module:
        """The pruned network whose accuracy the reward of ``ratios`` measured.

        Built, BatchNorm re-calibrated (on the calibration images; with
        ``bn_recalibrate="reward"``, on the reward images, which that mode normalises with)
        and fine-tuned for ``finetune_steps`` like the evaluation; NCHW, eval mode. This is the
        network a search hands on to fine-tuning and deployment.
        """
        return self.evaluator.pruned_network(self.counts(ratios))

    def clear_cache(self) -> None:
        """Forget every cached evaluation and the best feasible accuracy seen (early
        stopping's bar), so that the next search pays for its own evaluations: methods
        compared on one env then each report their own compute."""
        self.evaluator.clear_cache()

    def cache_info(self) -> dict[str, int]:
        """Hits, misses and size of the evaluation cache (keyed by kept channels per layer),
        and ``images``: every image a network has been run on to score candidates so far
        (reward, BatchNorm calibration and fine-tuning images of uncached evaluations)."""
        return self.evaluator.cache_info()

    def task(self) -> dict[str, Any]:
        """What defines the evaluations of this env: a surrogate may only learn from a log of
        the same task (same network, data, reward and decision units)."""
        return self.evaluator.task()


def _check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None:
        raise ValueError(
            f"render_mode must be None (this env does not render), got {render_mode!r}"
        )
