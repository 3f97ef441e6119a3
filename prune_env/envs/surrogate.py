"""Surrogate pruning envs: the real env's spaces and exact costs, accuracy from a regressor."""

from __future__ import annotations

import os
from collections.abc import Mapping

import gymnasium as gym
import torch

from prune_env.costs import CostContext, build_cost_models, parse_costs
from prune_env.data import DATASETS
from prune_env.envs.pruning import PruneEnv
from prune_env.models import ARCH_INPUT, build_model
from prune_env.settings import ActionSettings
from prune_env.surrogate import (
    SHIPPED_LOGS,
    AccuracySurrogate,
    SurrogateError,
    SurrogateEvaluator,
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

    - v0: initial version. Restructured (behaviour unchanged): a ``PruneEnv`` whose
      evaluator is ``prune_env.surrogate.SurrogateEvaluator``.
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
        surrogate = AccuracySurrogate(seed=surrogate_seed).fit(x, y)
        self.surrogate, self.log_task, self.log_path = surrogate, task, str(log)

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
        if int(cache_size) < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        # the ranking does not change any count; the log fixed it
        actions = ActionSettings(
            mode, task["granularity"], "l1", task["min_keep"], task["channel_round"]
        )
        self.device, self.data = torch.device("cpu"), None
        self._setup_structure(actions, specs, net, torch.zeros(1, channels, size, size))
        if self._sizes.tolist() != task["sizes"]:
            raise SurrogateError(
                f"the rebuilt {arch} has layer sizes {self._sizes.tolist()}, the log "
                f"{task['sizes']}: the log is of another network"
            )
        context = CostContext(self.engine, net, torch.zeros(0))
        costs = build_cost_models(specs, context)
        evaluator = SurrogateEvaluator(self.engine, costs, cache_size, surrogate, task)
        self._attach(evaluator, net, {"source": f"surrogate of {log}", "arch": arch, **task})
