"""Surrogate pruning envs: the real env's spaces and exact costs, accuracy from a regressor."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from prune_env.constraints import within_budget
from prune_env.costs import parse_costs
from prune_env.data import DATASETS
from prune_env.envs.pruning import MODES, PruneEnv
from prune_env.models import ARCH_INPUT, build_model
from prune_env.surrogate import (
    SHIPPED_LOGS,
    AccuracySurrogate,
    SurrogateError,
    features,
    fidelity,
    load_log,
    log_arrays,
)

DEFAULT_MIN_TAU = 0.6


class SurrogatePruneEnv(PruneEnv):
    """
    ## Description

    A pruning env whose reward is predicted instead of measured, for comparing constrained RL
    algorithms over many seeds on a laptop. A regressor (``prune_env.surrogate``) is fitted on
    a log of real evaluations of one pruning task (``PruneEnv(eval_log=...)``;
    ``benchmarks/surrogate_logs.py`` regenerates the shipped logs); the env rebuilds that
    task's network structure (no weights, no data), so its action and observation spaces,
    decision units and costs are those of the real env, the costs computed exactly, and only
    the accuracy is predicted. ``VGG16PruneSurrogate-v0`` answers for the task of
    ``train.py --preset quick`` on ``VGG16Prune-v0`` (width 0.25, 3-epoch base model,
    1,000-image reward split).

    ## Action Space, Observation Space, Episode End

    As ``PruneEnv`` (``help(prune_env.PruneEnv)``), for the logged network.

    ## Reward

    At the last step, the regressor's accuracy for the kept channels: the mean of extremely
    randomised trees over the keep ratios and the parameter and FLOP fractions, clipped to
    [0, 1]. ``info["surrogate"]`` is True.

    ## Cost

    Exactly as the real env: "params" or "flops" (measured costs such as latency cannot be
    computed without the network and are refused).

    ## Arguments

    - ``real_id``: the real env whose shipped log is used (set by the registered ids).
    - ``log``: an evaluation log to learn from instead of the shipped one.
    - ``min_tau``: the lowest Kendall tau on held-out evaluations accepted (default 0.6);
      below it the env refuses to be built (``SurrogateError``).
    - ``holdout``: share of the log held out to measure fidelity (default 0.2); the regressor
      is then refitted on the whole log.
    - ``budget``, ``cost``, ``costs``, ``mode``, ``cache_size``: as ``PruneEnv``.
    - ``surrogate_seed``: seed of the regressor and of the held-out split.

    ``env.unwrapped.fidelity`` holds the held-out Kendall tau, mean absolute error and sizes.

    ## Version History

    - v0: initial version.
    """

    def __init__(
        self,
        real_id: str | None = None,
        log: str | os.PathLike | None = None,
        min_tau: float = DEFAULT_MIN_TAU,
        holdout: float = 0.2,
        budget: float = 0.1,
        cost: str = "params",
        costs: Mapping[str, float] | None = None,
        mode: str = "layerwise",
        cache_size: int = 4096,
        surrogate_seed: int = 0,
    ) -> None:
        if log is None:
            if real_id is None:
                raise ValueError("give log= (an evaluation log) or real_id= (a shipped one)")
            log = SHIPPED_LOGS / f"{real_id}.jsonl.gz"
            if not log.is_file():
                shipped = sorted(
                    p.name.removesuffix(".jsonl.gz") for p in SHIPPED_LOGS.glob("*.gz")
                )
                raise SurrogateError(
                    f"no shipped evaluation log for {real_id} (shipped: {shipped}); make one "
                    f"with benchmarks/surrogate_logs.py --env {real_id} and pass log="
                )
        specs = parse_costs(cost, budget, costs)
        if not all(s.analytic for s in specs):
            raise ValueError("a surrogate env computes 'params' and 'flops' costs only")
        records = load_log(log)
        task = records[0]["task"]
        self.fidelity = fidelity(records, holdout, surrogate_seed)
        if not self.fidelity["kendall_tau"] >= min_tau:
            raise SurrogateError(
                f"the surrogate of {log} ranks held-out evaluations with Kendall tau "
                f"{self.fidelity['kendall_tau']:.3f} < min_tau={min_tau}: too unfaithful to "
                "stand in for the real env (log more evaluations)"
            )
        x, y = log_arrays(records)
        self.surrogate = AccuracySurrogate(seed=surrogate_seed).fit(x, y)
        self.log_task, self.log_path = task, str(log)

        arch = task["arch"]
        if task["dataset"] in DATASETS:
            info = DATASETS[task["dataset"]]
            num_classes, channels, size = info.num_classes, info.channels, info.size
        else:  # synthetic (10 classes) or an image folder of the usual shape
            num_classes, (channels, size) = 10, ARCH_INPUT.get(arch, (3, 32))
        net = build_model(arch, num_classes, channels, task["width_mult"]).eval()
        # Only the network's structure: no weights are trained, no data set is loaded, no
        # reward or calibration images exist (the regressor answers for them).
        gym.Env.__init__(self)
        self.render_mode = None
        self.specs = specs
        self.budget = specs[0].budget
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if int(cache_size) < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.mode, self.granularity = mode, task["granularity"]
        self.importance = "l1"  # the ranking does not change any count; the log fixed it
        self.min_keep, self.channel_round = float(task["min_keep"]), int(task["channel_round"])
        self.cache_size, self.device = int(cache_size), torch.device("cpu")
        self.reward_kind = task.get("reward", "accuracy")
        self.finetune_steps, self.eval_log = 0, None
        self.data_info, self._data_source = None, None
        self._setup_structure(net, torch.zeros(1, channels, size, size))
        if self._sizes.tolist() != task["sizes"]:
            raise SurrogateError(
                f"the rebuilt {arch} has layer sizes {self._sizes.tolist()}, the log "
                f"{task['sizes']}: the log is of another network"
            )
        self.base_info = {"source": f"surrogate of {log}", "arch": arch, **task}
        self.base_accuracy = self._predict(np.ones(self.n_layers), 1.0, 1.0)

    def task(self) -> dict[str, Any]:
        """The task of the log this surrogate learned from."""
        return dict(self.log_task)

    def _predict(self, ratios: np.ndarray, params_fraction: float, flops_fraction: float):
        return float(self.surrogate.predict(features(ratios, params_fraction, flops_fraction))[0])

    def _evaluate_counts(self, counts: np.ndarray, start: float) -> dict[str, Any]:
        params, flops = self.engine.resources(counts)
        costs = {s.name: self._cost(s, None, params, flops) for s in self.specs}
        accuracy = self._predict(
            counts / self._sizes,
            params / self.engine.total_params,
            flops / max(self.engine.total_macs, 1),
        )
        satisfied = all(within_budget(costs[s.name], s.budget) for s in self.specs)
        if satisfied:
            self.best_feasible_accuracy = max(self.best_feasible_accuracy, accuracy)
        return {
            "cost": costs[self.specs[0].name],
            "costs": costs,
            "cost_limit": self.budget,
            "cost_limits": self._limits(),
            "accuracy": accuracy,
            "reward": accuracy,
            "reward_metrics": {"accuracy": accuracy},
            "keep_ratios": (counts / self._sizes).tolist(),
            "kept": counts.tolist(),
            "params": int(params),
            "flops": int(flops),
            "constraint_satisfied": satisfied,
            "early_stopped": False,
            "reward_images": 0,
            "cache_hit": False,
            "surrogate": True,
            "timing": {"total": time.perf_counter() - start},
        }

    def pruned_network(self, ratios):
        raise NotImplementedError("a surrogate env has no trained network to hand on")
