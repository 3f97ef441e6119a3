"""The PNG plots of a pruning run (matplotlib, no display needed).

Figures are made with matplotlib's object-oriented API (``matplotlib.figure.Figure``), not
pyplot: importing this module never switches the user's matplotlib backend.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) == 0:
        return values
    window = max(1, min(window, len(values)))
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty(len(values))
    for i in range(len(values)):
        lo = max(0, i + 1 - window)
        out[i] = (cumulative[i + 1] - cumulative[lo]) / (i + 1 - lo)
    return out


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _finish(fig: Figure, ax: Any, title: str, path: str | os.PathLike) -> Path:
    """The legend and the title of a one-panel figure, then ``_save``."""
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_training(
    episodes: Sequence[Mapping[str, Any]],
    lambda_history: Sequence[tuple[int, Sequence[float]]],
    budget: float,
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Episode reward, episode cost (with the budget line) and lambda against env steps."""
    steps = np.array([e["env_steps"] for e in episodes], dtype=float)
    rewards = np.array([e["reward"] for e in episodes], dtype=float)
    costs = np.array([e["cost"] for e in episodes], dtype=float)
    panels = 3 if lambda_history else 2
    fig = Figure(figsize=(7, 2.4 * panels))
    axes = fig.subplots(panels, 1, sharex=True)
    window = max(1, len(episodes) // 20)
    axes[0].scatter(steps, rewards, s=4, alpha=0.3, label="episode")
    axes[0].plot(steps, _running_mean(rewards, window), color="C1", label=f"mean of {window}")
    axes[0].set_ylabel("reward (accuracy)")
    axes[0].legend(loc="lower right", fontsize=8)
    axes[1].scatter(steps, costs, s=4, alpha=0.3)
    axes[1].plot(steps, _running_mean(costs, window), color="C1")
    axes[1].axhline(budget, color="red", linestyle="--", label=f"budget {budget:g}")
    axes[1].set_ylabel("cost (fraction kept)")
    axes[1].legend(loc="upper right", fontsize=8)
    if lambda_history:
        at = [s for s, _ in lambda_history]
        values = np.array([v for _, v in lambda_history], dtype=float)
        for i in range(values.shape[1]):
            axes[2].plot(at, values[:, i], label=f"lambda {i}" if values.shape[1] > 1 else None)
        axes[2].set_ylabel("lambda")
    axes[-1].set_xlabel("env steps")
    if title:
        axes[0].set_title(title)
    return _save(fig, path)


def plot_keep_ratios(
    series: Mapping[str, Sequence[float]],
    layers: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Keep ratio per layer, one bar group per layer and one bar per series (method)."""
    fig = Figure(figsize=(max(6.0, 0.45 * len(layers) + 2), 3.4))
    ax = fig.subplots()
    x = np.arange(len(layers))
    width = 0.8 / max(1, len(series))
    for i, (label, ratios) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, ratios, width, label=label)
    ax.set_xticks(x, layers, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("keep ratio")
    return _finish(fig, ax, title, path)


def plot_accuracy_vs_cost(
    episodes: Sequence[Mapping[str, Any]],
    budget: float,
    path: str | os.PathLike,
    chosen: tuple[float, float] | None = None,
    title: str = "",
) -> Path:
    """Reward accuracy against cost of every evaluated episode, with the budget line."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    costs = np.array([e["cost"] for e in episodes], dtype=float)
    rewards = np.array([e["reward"] for e in episodes], dtype=float)
    order = np.arange(len(episodes))
    points = ax.scatter(costs, rewards, c=order, s=6, cmap="viridis", alpha=0.6)
    fig.colorbar(points, ax=ax, label="episode")
    ax.axvline(budget, color="red", linestyle="--", label=f"budget {budget:g}")
    if chosen is not None:
        ax.scatter([chosen[0]], [chosen[1]], marker="*", s=160, color="red", label="chosen")
    ax.set_xlabel("cost (fraction of the resource kept)")
    ax.set_ylabel("reward (accuracy on the reward split)")
    return _finish(fig, ax, title, path)


def plot_comparison(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = ""
) -> Path:
    """Test accuracy (after fine-tuning) and parameters kept of each method, as bars."""
    names = [str(r["method"]) for r in rows]
    fig = Figure(figsize=(max(7.0, 1.2 * len(rows) + 3), 3.4))
    axes = fig.subplots(1, 2)
    acc = [100 * float(r["test_accuracy"]) for r in rows]
    kept = [100 * float(r["params_kept"]) for r in rows]
    axes[0].bar(names, acc, color="C0")
    axes[0].set_ylabel("test accuracy %")
    axes[0].set_ylim(max(0.0, min(acc) - 10), min(100.0, max(acc) + 5))
    axes[1].bar(names, kept, color="C2")
    axes[1].set_ylabel("parameters kept %")
    for ax in axes:
        ax.tick_params(axis="x", rotation=40, labelsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _curve_on_grid(curve: Sequence[Sequence[float]], grid: np.ndarray, column: int) -> np.ndarray:
    """A running mean (a twentieth of the episodes) of one column, read off at ``grid`` steps."""
    data = np.asarray(curve, dtype=float)
    if len(data) == 0:
        return np.full(len(grid), np.nan)
    smooth = _running_mean(data[:, column], max(1, len(data) // 20))
    values = np.interp(grid, data[:, 0], smooth)
    values[grid < data[0, 0]] = np.nan  # nothing is known before the first episode ends
    return values


def plot_learning_curves(
    curves: Mapping[str, Sequence[Sequence[Sequence[float]]]],
    budget: float,
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Reward and cost over env steps per algorithm: mean over seeds, shaded +- one std.

    ``curves[algo]`` holds one curve per seed, each a list of ``[env_steps, reward, cost]``
    per episode.
    """
    fig = Figure(figsize=(7, 5.5))
    axes = fig.subplots(2, 1, sharex=True)
    last = max((c[-1][0] for runs in curves.values() for c in runs if len(c)), default=1.0)
    grid = np.linspace(0, last, 100)
    for i, (algo, runs) in enumerate(curves.items()):
        runs = [c for c in runs if len(c)]
        if not runs:
            continue
        for ax, column in ((axes[0], 1), (axes[1], 2)):
            values = np.array([_curve_on_grid(c, grid, column) for c in runs])
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # columns before any episode
                mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
            ax.plot(grid, mean, color=f"C{i}", label=f"{algo} ({len(runs)} seeds)")
            ax.fill_between(grid, mean - std, mean + std, color=f"C{i}", alpha=0.2)
    axes[1].axhline(budget, color="red", linestyle="--", label=f"budget {budget:g}")
    axes[0].set_ylabel("episode reward")
    axes[1].set_ylabel("episode cost")
    axes[1].set_xlabel("env steps")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        axes[0].set_title(title)
    return _save(fig, path)
