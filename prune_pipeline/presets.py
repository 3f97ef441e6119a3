"""Job presets: the job's ``--preset`` names a task of ``prune_env.tasks`` (``quick``, ``paper``,
or one you register), and this module turns the task into an agent's arguments.

Like RL Baselines3 Zoo's ``hyperparams/*.yml``, a preset names a scale of the job; the
on-policy rollout sizes are the ones measured for that scale (docs/convergence.md). The task's
other settings (width, base recipe, reward split, search length, fine-tuning) reach the job
through ``JobConfig.resolve``.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from agents import registry
from prune_env.tasks import get_task

# The benchmark harness's searches are as short as the quick task's: same rollout sizes.
BENCHMARK_PRESET = "quick"


def agent_arguments(algo: str, preset: str, overrides: dict[str, Any] | None = None) -> dict:
    """Keyword arguments of ``algo`` under the task ``preset``: the task's rollout sizes for
    on-policy agents, then ``overrides``; RL agents run on the CPU (small MLPs) unless told
    otherwise. Search baselines take none."""
    agent_class = registry.get(algo).agent_class
    if agent_class is None:
        return dict(overrides or {})
    kwargs: dict[str, Any] = {"device": "cpu"}
    if issubclass(agent_class, OnPolicyAlgorithm):
        kwargs.update(get_task(preset).on_policy_kwargs())
    return {**kwargs, **(overrides or {})}
