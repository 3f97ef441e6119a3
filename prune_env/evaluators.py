"""Reward evaluation behind one interface: an ``Evaluator`` turns a candidate (the kept count
of every layer) into the last step's info dict.

``Evaluator`` holds what every evaluator shares: the cache (keyed by the kept counts and the
ranking they index), the costs of a candidate (cost-model objects, ``prune_env.costs``), the
info dict's common fields, the best feasible accuracy seen and the evaluation log. A subclass
says how a candidate is scored (``_score``):

- ``RealEvaluator``: builds the pruned network, re-calibrates BatchNorm, fine-tunes a few
  steps and measures the reward variants on the reward split (``PruneEnv``).
- ``prune_env.surrogate.SurrogateEvaluator``: a regressor fitted on logged real evaluations
  (``SurrogatePruneEnv``).
"""

from __future__ import annotations

import copy
import json
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from prune_env.constraints import within_budget
from prune_env.costs import Candidate, CostModel
from prune_env.evaluation import (
    accuracy,
    finetune,
    has_batchnorm,
    recalibrate_batchnorm,
    reward_metrics,
    zero_weight_masks,
)
from prune_env.settings import RewardSettings
from prune_env.task_data import TaskData


@dataclass
class EvaluatorParts:
    """What ``PruneEnv`` hands an evaluator class (``Evaluator.from_parts``): its engine, cost
    models, the task's images and base model, the reward settings, the device and the task
    record (``PruneEnv.task()``)."""

    engine: Any
    costs: list[CostModel]
    data: TaskData
    settings: RewardSettings
    device: torch.device
    task_record: dict[str, Any]


class Evaluator:
    """Scores candidates of one pruning task, with an LRU cache of ``cache_size`` answers.

    ``engine`` is the env's pruning engine (structure, counts, building), ``costs`` its cost
    models (the first is the primary one). Subclasses implement ``_score`` and ``task`` and
    may set ``eval_log`` (a JSON-lines file every fresh evaluation is appended to);
    ``PruneEnv(..., evaluator=Subclass)`` builds one with ``from_parts``.
    """

    reward_kind = "accuracy"

    @classmethod
    def from_parts(cls, parts: EvaluatorParts) -> Evaluator:
        """The evaluator of an env (override when ``__init__`` takes more)."""
        return cls(parts.engine, parts.costs, parts.settings.cache_size)

    def __init__(self, engine: Any, costs: list[CostModel], cache_size: int) -> None:
        self.engine, self.costs, self.cache_size = engine, costs, int(cache_size)
        self._sizes = np.array([u.size for u in engine.units], dtype=np.int64)
        self._cache: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self.cache_hits = self.cache_misses = 0
        # every image a network was run on to score candidates (reward, calibration and
        # fine-tuning images of uncached evaluations): the search's compute, in images
        self.images_evaluated = 0
        self.best_feasible_accuracy = -np.inf
        self.eval_log: Path | None = None
        self.base_accuracy = float("nan")

    # ----------------------------------------------------------------- the interface
    def evaluate(self, counts: np.ndarray, actions: np.ndarray, ranking: int = 0) -> dict:
        """The info dict of the candidate ``counts`` (asked for as ``actions``); ``ranking``
        versions the channel ranking the counts index (a new random ranking is a new task).

        ``timing`` and ``cache_hit`` say how it was answered; a cached answer is a copy.
        """
        start = time.perf_counter()
        key = (ranking, counts.tobytes())
        if self.cache_size and key in self._cache:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            info = copy.deepcopy(self._cache[key])  # callers may edit what they get
            info["actions"] = actions.tolist()
            info["cache_hit"] = True
            info["timing"] = {"total": time.perf_counter() - start}
            return info
        self.cache_misses += 1
        info = self._evaluate_counts(counts, start)
        info["actions"] = actions.tolist()
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

    def _score(self, candidate: Candidate, costs: dict[str, float], start: float) -> dict:
        """The reward part of the info (``accuracy``, ``reward``, ``reward_metrics``,
        ``early_stopped``, ``reward_images``, ``timing``); fills ``costs`` with the measured
        costs (the analytic ones are there already)."""
        raise NotImplementedError

    def task(self) -> dict[str, Any]:
        """What defines these evaluations (a surrogate may only learn from the same task)."""
        raise NotImplementedError

    def pruned_network(self, counts: np.ndarray) -> nn.Module:
        """The network whose score the reward of ``counts`` is."""
        raise NotImplementedError(f"{type(self).__name__} has no trained network to hand on")

    def clear_cache(self) -> None:
        """Forget every cached evaluation and the best feasible accuracy seen."""
        self._cache.clear()
        self.best_feasible_accuracy = -np.inf

    def cache_info(self) -> dict[str, int]:
        return {
            "hits": self.cache_hits,
            "misses": self.cache_misses,
            "size": len(self._cache),
            "images": self.images_evaluated,
        }

    # ----------------------------------------------------------------- shared parts
    @property
    def limits(self) -> dict[str, float]:
        return {c.name: c.budget for c in self.costs}

    def candidate(self, counts: np.ndarray) -> Candidate:
        params, flops = self.engine.resources(counts)
        return Candidate(counts, params, flops)

    def _evaluate_counts(self, counts: np.ndarray, start: float) -> dict[str, Any]:
        candidate = self.candidate(counts)
        # Analytic costs first: a scorer may spend less on a candidate they already rule out.
        costs = {c.name: c.fraction(candidate) for c in self.costs if c.analytic}
        scored = self._score(candidate, costs, start)
        satisfied = all(within_budget(costs[c.name], c.budget) for c in self.costs)
        if satisfied and not scored["early_stopped"]:
            self.best_feasible_accuracy = max(self.best_feasible_accuracy, scored["accuracy"])
        timing = scored.pop("timing")
        return {
            "cost": costs[self.costs[0].name],
            "costs": {c.name: costs[c.name] for c in self.costs},
            "cost_limit": self.costs[0].budget,
            "cost_limits": self.limits,
            "accuracy": scored["accuracy"],
            "reward": scored["reward"],
            "reward_metrics": scored["reward_metrics"],
            "keep_ratios": (counts / self._sizes).tolist(),
            "kept": counts.tolist(),
            "params": int(candidate.params),
            "flops": int(candidate.flops),
            "constraint_satisfied": satisfied,
            "early_stopped": scored["early_stopped"],
            "reward_images": scored["reward_images"],
            "cache_hit": False,
            **scored.get("extra", {}),
            "timing": timing,
        }

    def _log_evaluation(self, info: dict[str, Any]) -> None:
        """Append one evaluation to ``eval_log`` (JSON lines: one whole line per write)."""
        params, flops = self.engine.resources(np.asarray(info["kept"]))
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


class RealEvaluator(Evaluator):
    """The real reward: build, re-calibrate BatchNorm, fine-tune, measure (``PruneEnv``'s
    Reward section says what each setting does)."""

    @classmethod
    def from_parts(cls, parts: EvaluatorParts) -> RealEvaluator:
        p = parts
        return cls(p.engine, p.costs, p.data, p.settings, p.device, p.task_record)

    def __init__(
        self,
        engine: Any,
        costs: list[CostModel],
        data: TaskData,
        settings: RewardSettings,
        device: torch.device,
        task_record: dict[str, Any],
    ) -> None:
        super().__init__(engine, costs, settings.cache_size)
        self.data, self.settings, self.reward_kind = data, settings, settings.reward
        self.split_seed = int(task_record["split_seed"])
        self.granularity = task_record["granularity"]
        self._task = task_record
        self.eval_log = None if settings.eval_log is None else Path(settings.eval_log)
        reward_x, batch = data.reward_x, settings.eval_batch_size
        base = data.base
        self.base_accuracy = accuracy(base, reward_x, data.reward_y, batch)
        # The base model's outputs on the reward images: what "agreement" and "neg_kl" compare
        # a pruned network with (no labels needed).
        with torch.no_grad():
            self._base_log_probs = torch.cat(
                [
                    torch.log_softmax(base(reward_x[i : i + batch]).float(), 1)
                    for i in range(0, len(reward_x), batch)
                ]
            )
        # Measured (benchmarks/env_speed.py): NHWC halves convolution time on CPU; not
        # measured on CUDA, so "auto" keeps NCHW there. Images only.
        wanted = settings.channels_last
        self.channels_last = (device.type == "cpu" if wanted == "auto" else wanted) and (
            reward_x.ndim == 4
        )
        # Only the eval-mode pass runs in NHWC: train-mode BatchNorm (re-calibration, batch
        # statistics, fine-tuning) is several times slower in NHWC on CPU (measured).
        self._reward_x_eval = (
            reward_x.contiguous(memory_format=torch.channels_last)
            if self.channels_last
            else reward_x
        )

    def task(self) -> dict[str, Any]:
        return dict(self._task)

    def pruned_network(self, counts: np.ndarray) -> nn.Module:
        net = self.engine.build(counts)
        mode = self.settings.bn_recalibrate
        if mode != "off" and has_batchnorm(net):
            recalibrate_batchnorm(net, self.data.calib_x if mode == "calib" else self.data.reward_x)
        self._finetune(net, counts)
        return net.eval()

    def _finetune(self, net: nn.Module, counts: np.ndarray) -> int:
        """The reward's fine-tuning steps on ``net``; returns the images they ran."""
        steps = self.settings.finetune_steps
        if not steps:
            return 0
        # Seeded by the candidate itself: the reward is a function of the kept channels, so a
        # cached evaluation is exactly what a fresh one would give.
        seed = zlib.crc32(counts.tobytes()) ^ (self.split_seed & 0xFFFFFFFF)
        generator = torch.Generator().manual_seed(seed)
        # Weight granularity: the zeros the candidate chose stay zero, so the rewarded net
        # has the sparsity its cost reports.
        masks = zero_weight_masks(net) if self.granularity == "weight" else []
        s = self.settings
        return finetune(
            net,
            self.data.pool_x,
            self.data.pool_y,
            steps,
            generator,
            s.finetune_batch_size,
            s.finetune_lr,
            masks=masks,
        )

    def _score(self, candidate: Candidate, costs: dict[str, float], start: float) -> dict:
        timing: dict[str, float] = {}
        net = candidate.net = self.engine.build(candidate.counts)
        timing["build"] = time.perf_counter() - start
        feasible_so_far = all(
            within_budget(costs[c.name], c.budget) for c in self.costs if c.analytic
        )
        has_bn = has_batchnorm(net)
        t = time.perf_counter()
        if self.settings.bn_recalibrate == "calib" and has_bn:
            recalibrate_batchnorm(net, self.data.calib_x)
            self.images_evaluated += len(self.data.calib_x)
        timing["bn_recalibration"] = time.perf_counter() - t
        t = time.perf_counter()
        self.images_evaluated += self._finetune(net, candidate.counts)
        timing["finetune"] = time.perf_counter() - t
        t = time.perf_counter()
        # Measured costs see the network as a user would deploy it (NCHW, after fine-tuning).
        for c in self.costs:
            if c.name not in costs:
                costs[c.name] = c.fraction(candidate)
        timing["cost"] = time.perf_counter() - t
        t = time.perf_counter()
        metrics, seen, n = self._reward(net, has_bn, feasible_so_far)
        self.images_evaluated += int(seen)
        timing["evaluation"] = time.perf_counter() - t
        timing["total"] = time.perf_counter() - start
        return {
            "accuracy": metrics["accuracy"],
            "reward": metrics[self.reward_kind],
            "reward_metrics": metrics,
            "early_stopped": seen < n,
            "reward_images": seen,
            "timing": timing,
        }

    def _reward(
        self, net: nn.Module, has_bn: bool, feasible_so_far: bool
    ) -> tuple[dict[str, float], int, int]:
        """Every reward variant of ``net`` on the reward split: (metrics, images seen, images
        it could have seen)."""
        s = self.settings
        stop_below = None
        if s.early_stop and feasible_so_far and np.isfinite(self.best_feasible_accuracy):
            stop_below = self.best_feasible_accuracy
        batch_stats = s.bn_recalibrate == "reward" and has_bn
        images, labels = self.data.reward_x, self.data.reward_y
        if self.channels_last and not batch_stats:
            net = net.to(memory_format=torch.channels_last)
            images = self._reward_x_eval
        # A candidate its analytic costs already rule out may be scored on fewer images.
        n = len(labels)
        if not feasible_so_far and s.infeasible_reward_size is not None:
            n = min(n, s.infeasible_reward_size)
        metrics, seen = reward_metrics(
            net,
            images[:n],
            labels[:n],
            s.eval_batch_size,
            batch_stats,
            stop_below,
            s.early_stop_z,
            self._base_log_probs[:n],
        )
        return metrics, seen, n
