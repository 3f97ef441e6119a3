"""Job presets: one place for the settings that train.py, evaluate.py and benchmark.py share.

Like RL Baselines3 Zoo's ``hyperparams/*.yml``, a preset names a scale of the job; the
on-policy rollout sizes are the ones measured for that scale (docs/convergence.md).
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from agents import registry

PRESETS: dict[str, dict[str, Any]] = {
    # A CPU demo of the whole pipeline: a quarter-width network with a short base recipe, a
    # 1,000-image reward split, a short search and one fine-tuning epoch (under 15 minutes on
    # 2 CPU cores for VGG16Prune-v0, base model training included; see docs/job.md).
    "quick": {
        "width_mult": 0.25,
        "base_epochs": 3,
        "reward_size": 1000,
        "total_timesteps": 15_000,
        "finetune_epochs": 1,
        # 59 rollouts of 256 steps: the multiplier settles within the short search (on the
        # quick task's surrogate, 4 seeds: rollouts of 512 left ppo_pid_lag's final policy
        # over the budget in 3 of 4 seeds, 256 met it in 4 of 4; docs/convergence.md).
        "on_policy_kwargs": {"n_steps": 256, "batch_size": 64},
    },
    # Paper scale (GPU): full-width network with the architecture's full base recipe, the
    # paper's 20,000-image reward split, a long search and a long fine-tuning.
    "paper": {
        "width_mult": 1.0,
        "base_epochs": None,
        "reward_size": 20_000,
        "total_timesteps": 100_000,
        "finetune_epochs": 30,
        "on_policy_kwargs": {"n_steps": 2048, "batch_size": 256},
    },
}
# The benchmark harness's searches are as short as the quick preset's: same rollout sizes.
BENCHMARK_PRESET = "quick"


def agent_arguments(algo: str, preset: str, overrides: dict[str, Any] | None = None) -> dict:
    """Keyword arguments of ``algo`` under ``preset``: the preset's rollout size for on-policy
    agents, then ``overrides``; RL agents run on the CPU (small MLPs) unless told otherwise.
    Search baselines take none."""
    agent_class = registry.get(algo).agent_class
    if agent_class is None:
        return dict(overrides or {})
    kwargs: dict[str, Any] = {"device": "cpu"}
    if issubclass(agent_class, OnPolicyAlgorithm):
        kwargs.update(PRESETS[preset]["on_policy_kwargs"])
    return {**kwargs, **(overrides or {})}
