"""A learned stand-in for the reward: accuracy predicted from the keep ratios.

A real env logs its evaluations (``PruneEnv(eval_log=...)``); ``AccuracySurrogate`` is fitted
on such a log and predicts the accuracy of a candidate from its keep ratios and its parameter
and FLOP fractions. ``fidelity`` measures it on evaluations it was not fitted on: Kendall tau
(does it rank candidates as the real reward does? what a search needs) and the mean absolute
error. The regressor is scikit-learn's extremely randomised trees: no scaling to tune, robust
on a few thousand points, and it never predicts outside the accuracies it has seen.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau
from sklearn.ensemble import ExtraTreesRegressor

from prune_env.costs import Candidate, CostModel
from prune_env.evaluators import Evaluator

SHIPPED_LOGS = Path(__file__).resolve().parent / "surrogate_data"


class SurrogateError(ValueError):
    """The log cannot make a faithful surrogate (too small, mixed tasks, or low fidelity)."""


def load_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The evaluations of a log (JSON lines, gzipped or not); all must share one task."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation log {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records:
        raise SurrogateError(f"evaluation log {path} is empty")
    tasks = {json.dumps(r["task"], sort_keys=True) for r in records}
    if len(tasks) > 1:
        raise SurrogateError(f"evaluation log {path} mixes {len(tasks)} different tasks")
    # Early-stopped scores, and scores of infeasible candidates on fewer images, are partial.
    return [
        r
        for r in records
        if not r.get("early_stopped")
        and r.get("reward_images", 0) >= r["task"].get("reward_size", 0)
    ]


def features(ratios: np.ndarray, params_fraction: np.ndarray, flops_fraction: np.ndarray):
    """Keep ratio per layer, then the parameter and FLOP fractions kept (one row each)."""
    ratios = np.atleast_2d(np.asarray(ratios, dtype=np.float64))
    return np.column_stack([ratios, params_fraction, flops_fraction])


def log_arrays(records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    x = features(
        np.array([r["keep_ratios"] for r in records]),
        np.array([r["params_fraction"] for r in records]),
        np.array([r["flops_fraction"] for r in records]),
    )
    return x, np.array([r["accuracy"] for r in records], dtype=np.float64)


class FlatForest:
    """A fitted tree ensemble as padded arrays, walked by all trees at once.

    Same predictions as scikit-learn's ``predict`` (the mean of the trees' leaf values), but
    one sample costs about one numpy operation per tree level instead of a Python call per
    tree: the surrogate env predicts once per episode, so this is its hot path.
    """

    def __init__(self, estimators: Sequence[Any]) -> None:
        trees = [e.tree_ for e in estimators]
        width = max(t.node_count for t in trees)
        shape = (len(trees), width)
        self.left = np.zeros(shape, dtype=np.int64)
        self.right = np.zeros(shape, dtype=np.int64)
        self.feature = np.zeros(shape, dtype=np.int64)
        self.threshold = np.zeros(shape, dtype=np.float64)
        self.value = np.zeros(shape, dtype=np.float64)
        for i, t in enumerate(trees):
            n = t.node_count
            leaf = t.children_left[:n] < 0
            # A leaf points to itself, so walking past it changes nothing.
            self.left[i, :n] = np.where(leaf, np.arange(n), t.children_left[:n])
            self.right[i, :n] = np.where(leaf, np.arange(n), t.children_right[:n])
            self.feature[i, :n] = np.where(leaf, 0, t.feature[:n])
            self.threshold[i, :n] = t.threshold[:n]
            self.value[i, :n] = t.value[:n, 0, 0]
        self.depth = max(t.max_depth for t in trees)
        # Flat indices (tree * width + node): 1-D takes are the cheapest numpy indexing.
        offsets = (np.arange(len(trees)) * width)[:, None]
        self.left, self.right = (self.left + offsets).ravel(), (self.right + offsets).ravel()
        self.feature, self.threshold = self.feature.ravel(), self.threshold.ravel()
        self.value, self._roots = self.value.ravel(), offsets.ravel()

    def predict_one(self, x: np.ndarray) -> float:
        # scikit-learn compares float32 features with float64 thresholds: so do we.
        x = np.asarray(x, dtype=np.float32).astype(np.float64)
        node = self._roots
        for _ in range(self.depth):
            go_left = x.take(self.feature.take(node)) <= self.threshold.take(node)
            node = np.where(go_left, self.left.take(node), self.right.take(node))
        return float(self.value.take(node).mean())


class AccuracySurrogate:
    """Predicts a candidate's reward-split accuracy (see the module docstring).

    :param n_estimators: trees of the ensemble.
    :param seed: seed of the trees.
    """

    def __init__(self, n_estimators: int = 200, seed: int = 0) -> None:
        self.model = ExtraTreesRegressor(
            n_estimators=n_estimators, min_samples_leaf=2, random_state=seed, n_jobs=1
        )
        self.n_features: int | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> AccuracySurrogate:
        if len(y) < 10:
            raise SurrogateError(f"a surrogate needs at least 10 evaluations, got {len(y)}")
        self.model.fit(x, y)
        self.n_features = x.shape[1]
        self.flat = FlatForest(self.model.estimators_)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.n_features is None:
            raise RuntimeError("fit the surrogate first")
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if len(x) == 1:
            return np.clip([self.flat.predict_one(x[0])], 0.0, 1.0)
        return np.clip(self.model.predict(x), 0.0, 1.0)


def fidelity(
    records: Sequence[dict[str, Any]], holdout: float = 0.2, seed: int = 0, **kwargs: Any
) -> dict[str, float]:
    """Kendall tau and mean absolute error on a held-out share of the log's evaluations."""
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    x, y = log_arrays(records)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = max(2, round(holdout * len(y)))
    test, train = order[:n_test], order[n_test:]
    surrogate = AccuracySurrogate(seed=seed, **kwargs).fit(x[train], y[train])
    predicted = surrogate.predict(x[test])
    return {
        "kendall_tau": float(kendalltau(predicted, y[test]).statistic),  # tau-b
        "mae": float(np.mean(np.abs(predicted - y[test]))),
        "n_train": len(train),
        "n_test": len(test),
    }


class SurrogateEvaluator(Evaluator):
    """The reward predicted by a fitted ``AccuracySurrogate`` instead of measured: no network
    is built and no image is run; the costs are the env's exact analytic ones."""

    def __init__(
        self,
        engine: Any,
        costs: list[CostModel],
        cache_size: int,
        surrogate: AccuracySurrogate,
        log_task: dict[str, Any],
    ) -> None:
        super().__init__(engine, costs, cache_size)
        self.surrogate, self.log_task = surrogate, log_task
        self.reward_kind = log_task.get("reward", "accuracy")
        full = np.ones(len(self._sizes))
        self.base_accuracy = self.predict(full, 1.0, 1.0)

    def predict(self, ratios: np.ndarray, params_fraction: float, flops_fraction: float):
        return float(self.surrogate.predict(features(ratios, params_fraction, flops_fraction))[0])

    def task(self) -> dict[str, Any]:
        """The task of the log this surrogate learned from."""
        return dict(self.log_task)

    def _score(self, candidate: Candidate, costs: dict[str, float], start: float) -> dict:
        accuracy = self.predict(
            candidate.counts / self._sizes,
            candidate.params / self.engine.total_params,
            candidate.flops / max(self.engine.total_macs, 1),
        )
        return {
            "accuracy": accuracy,
            "reward": accuracy,
            "reward_metrics": {"accuracy": accuracy},
            "early_stopped": False,
            "reward_images": 0,
            "extra": {"surrogate": True},
            "timing": {"total": time.perf_counter() - start},
        }
