"""Pruning heuristics: one-parameter families of keep ratios, pushed onto the budget.

- ``UniformBaseline``: one keep ratio for every layer, the largest that meets the budget
  (bisection).
- ``MagnitudeGlobalBaseline``: one importance threshold over all layers (weight magnitudes,
  or group-mean-normalised channel importance), the lowest that meets the budget.
- ``TorchPruningGlobal``: Torch-Pruning's own global pruning (``MetaPruner``) at the budget:
  ``magnitude_global``'s threshold, checked against MetaPruner channel for channel.

``SearchBaseline`` is their common machinery, and that of any search that drives a pruning
env through its public API (``agents.baselines.RandomSearch``): episodes through the env
(so an ``EpisodeRecorder`` sees them like an agent's), the bisection onto the budget along a
family (``prune_env.constraints.largest_feasible``), and, afterwards, a fixed policy:
``predict`` returns the best ratios found. With a measured cost (latency, a callable) the
bisection probes with real episodes. The registry runs them by name (``agents.registry``:
"uniform", "magnitude_global", "tp_global").
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from prune_env.constraints import all_within, largest_feasible
from prune_env.engine import tp_global_pruning
from prune_env.wrappers import pruning_env

Family = Callable[[float], np.ndarray]  # t in [0, 1] -> keep ratios, cost increasing in t


class SearchBaseline:
    """Common machinery: episodes through the env, bisection along a 1-D family of ratios.

    Uses the pruning env's public API only (``prune_env.wrappers.PRUNING_ENV_API``).
    """

    name = "search"

    def __init__(self, env: gym.Env, seed: int = 0, bisection_steps: int = 30,
                 probe_episodes: int = 8, verbose: int = 0) -> None:  # fmt: skip
        self.env = env
        self.prune_env = pruning_env(env, self.name)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.bisection_steps = bisection_steps
        self.probe_episodes = probe_episodes
        self.verbose = verbose
        self.best_ratios: np.ndarray | None = None
        self.best_reward = -np.inf
        self.num_timesteps = 0

    # -- episodes
    def run_episode(self, ratios: np.ndarray) -> dict[str, Any]:
        """Step the env through one episode with these keep ratios; returns the last info."""
        self.env.reset(seed=self.seed if self.num_timesteps == 0 else None)
        ratios = np.asarray(ratios, dtype=np.float32)
        if self.prune_env.mode == "oneshot":
            steps = [ratios]
        else:
            steps = [ratios[i : i + 1] for i in range(len(ratios))]
        for action in steps:
            _, reward, terminated, truncated, info = self.env.step(action)
            self.num_timesteps += 1
        assert terminated or truncated
        feasible = info.get("constraint_satisfied", True)
        if feasible and reward > self.best_reward:
            self.best_reward, self.best_ratios = float(reward), ratios.astype(np.float64)
        return info

    def _feasible(self, ratios: np.ndarray) -> bool:
        """Whether ``ratios`` meet every budget: counted if the costs are analytic, else an
        episode's verdict."""
        costs = self.prune_env.analytic_costs(ratios)
        if costs is None:
            return bool(self.run_episode(ratios)["constraint_satisfied"])
        return all_within(costs, self.prune_env.cost_limits)

    def largest_feasible(self, family: Family) -> tuple[np.ndarray, bool]:
        """The member of ``family`` with the largest t that meets every budget (bisection);
        ``self.family_t`` is that t (0 and False when no member does)."""
        analytic = self.prune_env.analytic_costs(family(1.0)) is not None
        steps = self.bisection_steps if analytic else self.probe_episodes
        snapped = lambda t: self.prune_env.snap(family(t))  # noqa: E731
        self.family_t, found = largest_feasible(
            lambda t: self._feasible(snapped(t)), 0.0, 1.0, steps
        )
        return snapped(self.family_t), found

    # -- agent interface
    def learn(self, total_timesteps: int, callback: Any = None, **_: Any) -> SearchBaseline:
        raise NotImplementedError

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, None]:  # fmt: skip
        """The best ratios found: the whole vector (oneshot) or the current layer's (layerwise)."""
        if self.best_ratios is None:
            raise RuntimeError(f"{self.name} has found no feasible candidate; call learn() first")
        if self.prune_env.mode == "oneshot":
            return self.best_ratios.astype(np.float32), None
        n = self.prune_env.n_layers
        layer = round(float(np.asarray(observation).reshape(-1)[0]) * max(n - 1, 1))
        return self.best_ratios[layer : layer + 1].astype(np.float32), None

    def save(self, path: str | os.PathLike) -> None:
        ratios = None if self.best_ratios is None else self.best_ratios.tolist()
        payload = {"algo": self.name, "best_ratios": ratios, "best_reward": self.best_reward}
        Path(path).write_text(json.dumps({**payload, **self._saved_extras()}, indent=2))

    def _saved_extras(self) -> dict[str, Any]:
        """What a baseline found besides its ratios, saved with them."""
        return {}


class UniformBaseline(SearchBaseline):
    """One keep ratio for all layers, the largest that meets the budget."""

    name = "uniform"

    def learn(self, total_timesteps: int = 0, callback: Any = None, **_: Any) -> UniformBaseline:
        low = self.prune_env.min_keep
        n = self.prune_env.n_layers
        ratios, _ = self.largest_feasible(lambda t: np.full(n, low + t * (1 - low)))
        self.run_episode(ratios)
        return self


class MagnitudeGlobalBaseline(SearchBaseline):
    """One global importance threshold, the lowest whose kept weights/channels meet the budget."""

    name = "magnitude_global"

    def learn(self, total_timesteps: int = 0, callback: Any = None, **_: Any):
        env = self.prune_env
        scores = env.engine.global_scores()
        per_unit = [np.sort(s)[::-1] for s in scores]
        thresholds = np.sort(np.concatenate(scores))[::-1]  # descending
        sizes = np.array([len(s) for s in scores])
        low = np.maximum(1, np.ceil(env.min_keep * sizes - 1e-9)).astype(np.int64)

        def threshold_at(t: float) -> float:
            return float(thresholds[min(int(t * (len(thresholds) - 1)), len(thresholds) - 1)])

        def family(t: float) -> np.ndarray:
            threshold = threshold_at(t)
            kept = np.array([np.searchsorted(-s, -threshold, side="right") for s in per_unit])
            return np.maximum(kept, low) / sizes

        ratios, _ = self.largest_feasible(family)
        self.threshold = threshold_at(self.family_t)  # channels scoring at least this are kept
        self.run_episode(ratios)
        return self


class TorchPruningGlobal(MagnitudeGlobalBaseline):
    """Torch-Pruning's own global channel pruning at the budget: what a Torch-Pruning user
    runs, ``tp.pruner.MetaPruner(global_pruning=True)`` in one step (its default), with the
    pruning ratio found by bisection on the budget.

    Torch-Pruning ranks the channels of all groups together by their importance divided by
    the group's mean, and the env's engine scores channels with the same torch-pruning
    importance (``importance="l2"``: ``GroupMagnitudeImportance(p=2)``, torch-pruning's
    default; "l1": ``p=1``; "bn_scale": ``BNScaleImportance``, Network Slimming) and the same
    normalisation. So this runs ``magnitude_global`` on the env (any cost, analytic or
    measured), then asks MetaPruner itself which channels it removes at the same number of
    pruned channels (``prune_env.engine.tp_global_pruning``). ``tp_check`` records the answer:
    the ratio, the channels pruned, and every unit where the two differ with both counts.
    They differ only where the env's ``min_keep`` floor or ``channel_round`` keeps channels
    that MetaPruner's single step removes (one step has no floor per group); the network is
    the env's. Needs ``granularity="channel"`` and an importance other than "random".
    """

    name = "tp_global"

    def learn(self, total_timesteps: int = 0, callback: Any = None, **_: Any):
        env = self.prune_env
        if env.granularity != "channel" or env.importance == "random":
            raise ValueError(
                "tp_global is torch-pruning's global channel pruning: it needs an env with "
                "granularity='channel' and importance 'l1', 'l2' or 'bn_scale', got "
                f"granularity={env.granularity!r} and importance={env.importance!r}"
            )
        super().learn(total_timesteps, callback)
        # nothing feasible: no pruning ratio to compare
        self.tp_check = None if self.best_ratios is None else self._compare_with_torch_pruning()
        return self

    def _saved_extras(self) -> dict[str, Any]:
        return {"tp_check": getattr(self, "tp_check", None)}

    def _compare_with_torch_pruning(self) -> dict[str, Any]:
        env, engine = self.prune_env, self.prune_env.engine
        counts = env.counts(self.best_ratios)
        scores = engine.global_scores()
        # the channels under the global threshold: what MetaPruner removes at this ratio
        n_pruned = int(sum(int(np.sum(s < self.threshold)) for s in scores))
        total = int(sum(len(s) for s in scores))
        # MetaPruner removes total - int(total * (1 - ratio)): aim between two integers
        ratio = (n_pruned - 0.5) / total if n_pruned else 0.0
        pruned = tp_global_pruning(engine, ratio) if n_pruned else {}
        differing = {}
        for unit, ranking, count in zip(engine.units, engine.rankings, counts, strict=True):
            theirs = pruned.get(unit.name, np.zeros(0, dtype=np.int64))
            if set(theirs.tolist()) != set(ranking[count:].tolist()):
                differing[unit.name] = {"kept": int(count), "tp_kept": unit.size - len(theirs)}
        return {"pruning_ratio": ratio, "channels_pruned": n_pruned, "units_differing": differing}


HEURISTICS: dict[str, type[SearchBaseline]] = {
    cls.name: cls for cls in (UniformBaseline, MagnitudeGlobalBaseline, TorchPruningGlobal)
}
