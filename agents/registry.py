"""One registry of algorithms: name -> how to wrap the env and build the agent.

Built in:

| name | what |
|---|---|
| ppo_lag | ``PPOLagrangian`` with gradient-ascent multipliers |
| ppo_pid_lag | ``PPOLagrangian`` with the PID multiplier (Stooke et al. 2020) |
| ppo_penalty, sac_penalty, td3_penalty | SB3 PPO / SAC / TD3 on ``CostPenalty(env, beta)`` |
| trpo_penalty | sb3-contrib TRPO on ``CostPenalty(env, beta)`` |
| amc | AMC (He et al. 2018): TD3 with budget-clipped actions, reward = accuracy |
| uniform, magnitude_global, random_search | non-RL baselines (``agents.baselines``) |

Plugging in another algorithm:

```python
from agents import registry
from sb3_contrib import ARS
registry.register("ars_penalty", registry.sb3_builder(ARS, penalty=True), "ARS on CostPenalty")
result = registry.run("ars_penalty", env, total_timesteps=2000)
# or, without registering, pass the class itself:
result = registry.run(A2C, env, total_timesteps=2000, penalty_beta=1.0)
```

Every run goes through ``run()``: the env is wrapped in an ``EpisodeRecorder`` (so every
algorithm's evaluated episodes are recorded alike), then in the algorithm's own wrappers, and
Box actions are rescaled to [-1, 1] for the RL agents. The result is a ``RunResult``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import RescaleAction
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise

from agents.amc import BudgetClip
from agents.baselines import BASELINES
from agents.ppo_lagrangian import PPOLagrangian
from agents.recording import EpisodeRecorder, RunResult
from prune_env.wrappers import CostPenalty

# (env, seed, hyperparameters) -> agent with learn() / predict() / save()
Builder = Callable[..., Any]
DEFAULT_PENALTY_BETA = 1.0


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    builder: Builder
    description: str


_REGISTRY: dict[str, AlgoSpec] = {}


def register(name: str, builder: Builder, description: str = "", overwrite: bool = False) -> None:
    """Add an algorithm; a name already taken is refused unless ``overwrite``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"an algorithm name must be a non-empty string, got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"algorithm {name!r} is already registered")
    _REGISTRY[name] = AlgoSpec(name, builder, description)


def get(name: str) -> AlgoSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {names()}")
    return _REGISTRY[name]


def names() -> list[str]:
    return list(_REGISTRY)


def _rescaled(env: gym.Env) -> gym.Env:
    space = env.action_space
    if isinstance(space, gym.spaces.Box) and not (
        np.all(space.low == -1) and np.all(space.high == 1)
    ):
        ones = np.ones(space.shape, dtype=np.float32)
        return RescaleAction(env, -ones, ones)
    return env


def sb3_builder(algo_cls: type[BaseAlgorithm], penalty: bool = False, **defaults: Any) -> Builder:
    """A builder for any SB3 / sb3-contrib algorithm class (on ``CostPenalty`` if ``penalty``)."""

    def build(env: gym.Env, seed: int = 0, penalty_beta: float | None = None, **kwargs: Any):
        if penalty or penalty_beta is not None:
            beta = DEFAULT_PENALTY_BETA if penalty_beta is None else penalty_beta
            env = CostPenalty(env, beta)
        params = {**defaults, **kwargs}
        for key, value in list(params.items()):
            if callable(value) and key.endswith("_factory"):
                params[key.removesuffix("_factory")] = value(env)
                del params[key]
        return algo_cls("MlpPolicy", _rescaled(env), seed=seed, **params)

    return build


def _lagrangian_builder(kind: str) -> Builder:
    def build(env: gym.Env, seed: int = 0, **kwargs: Any) -> PPOLagrangian:
        return PPOLagrangian("MlpPolicy", _rescaled(env), lagrangian=kind, seed=seed, **kwargs)

    return build


def _td3_noise(env: gym.Env) -> NormalActionNoise:
    n = int(np.prod(env.action_space.shape))
    return NormalActionNoise(np.zeros(n), np.full(n, 0.3))


def _amc_builder(env: gym.Env, seed: int = 0, **kwargs: Any) -> TD3:
    clipped = _rescaled(BudgetClip(env))
    params = {"learning_starts": 100, "action_noise": _td3_noise(clipped), **kwargs}
    return TD3("MlpPolicy", clipped, seed=seed, **params)


def _baseline_builder(name: str) -> Builder:
    def build(env: gym.Env, seed: int = 0, **kwargs: Any):
        return BASELINES[name](env, seed=seed, **kwargs)

    return build


def _trpo_builder(env: gym.Env, seed: int = 0, **kwargs: Any):
    from sb3_contrib import TRPO

    return sb3_builder(TRPO, penalty=True)(env, seed=seed, **kwargs)


register("ppo_lag", _lagrangian_builder("gradient"), "PPO-Lagrangian, gradient-ascent lambda")
register("ppo_pid_lag", _lagrangian_builder("pid"), "PPO-Lagrangian, PID lambda")
register("ppo_penalty", sb3_builder(PPO, penalty=True), "PPO on reward - beta * cost")
register(
    "sac_penalty",
    sb3_builder(SAC, penalty=True, learning_starts=100),
    "SAC on reward - beta * cost",
)
register(
    "td3_penalty",
    sb3_builder(TD3, penalty=True, learning_starts=100, action_noise_factory=_td3_noise),
    "TD3 on reward - beta * cost",
)
register("trpo_penalty", _trpo_builder, "TRPO (sb3-contrib) on reward - beta * cost")
register("amc", _amc_builder, "AMC: TD3 with budget-clipped actions, reward = accuracy")
for _name, _cls in BASELINES.items():
    register(_name, _baseline_builder(_name), (_cls.__doc__ or "").strip().splitlines()[0])


def make_agent(
    algo: str | type[BaseAlgorithm], env: gym.Env, seed: int = 0, **kwargs: Any
) -> tuple[Any, EpisodeRecorder]:
    """Wrap ``env`` in an ``EpisodeRecorder`` and build the agent; returns both."""
    recorder = EpisodeRecorder(env)
    if isinstance(algo, str):
        agent = get(algo).builder(recorder, seed=seed, **kwargs)
    elif isinstance(algo, type) and issubclass(algo, BaseAlgorithm):
        agent = sb3_builder(algo)(recorder, seed=seed, **kwargs)
    else:
        raise ValueError(f"algo must be a registered name or an SB3 algorithm class, got {algo!r}")
    return agent, recorder


def run(
    algo: str | type[BaseAlgorithm],
    env: gym.Env,
    total_timesteps: int,
    seed: int = 0,
    learn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> RunResult:
    """Build ``algo`` on ``env``, let it learn for ``total_timesteps`` env steps, record it all."""
    if int(total_timesteps) < 1:
        raise ValueError(f"total_timesteps must be >= 1, got {total_timesteps}")
    start = time.perf_counter()
    agent, recorder = make_agent(algo, env, seed=seed, **kwargs)
    agent.learn(total_timesteps=int(total_timesteps), **(learn_kwargs or {}))
    name = algo if isinstance(algo, str) else algo.__name__
    return RunResult(
        algo=name,
        episodes=recorder.records,
        env_steps=recorder.total_steps,
        wall_time=time.perf_counter() - start,
        agent=agent,
    )
