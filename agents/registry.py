"""One registry of algorithms: name -> how to wrap the env and build the agent.

Built in:

| name | what |
|---|---|
| ppo_lag | ``PPOLagrangian`` with gradient-ascent multipliers |
| ppo_pid_lag | ``PPOLagrangian`` with the PID multiplier (Stooke et al. 2020) |
| ppo_penalty, sac_penalty, td3_penalty | SB3 PPO / SAC / TD3 on ``CostPenalty(env, beta)`` |
| trpo_penalty | sb3-contrib TRPO on ``CostPenalty(env, beta)`` |
| amc | AMC (He et al. 2018): TD3 on ``prune_env.wrappers.BudgetClip``, reward = accuracy |
| uniform, magnitude_global, tp_global | pruning heuristics (``prune_env.heuristics``) |
| random_search | the best of random episodes (``agents.baselines``) |

Plugging in another algorithm:

```python
from agents import registry
from sb3_contrib import ARS
registry.register("ars_penalty", registry.sb3_builder(ARS, penalty=True), "ARS on CostPenalty")
result = registry.run("ars_penalty", env, total_timesteps=2000)
# or, without registering, pass the class itself:
result = registry.run(A2C, env, total_timesteps=2000, penalty_beta=1.0)
```

Several env copies: ``run(name, make_env, total_timesteps, n_envs=4, vec_env="subproc")``
with a function that makes the env; each copy is recorded and wrapped in its own process.

Every run goes through ``run()``: the env is wrapped in an ``EpisodeRecorder`` (so every
algorithm's evaluated episodes are recorded alike), then in the algorithm's own wrappers, and
Box actions are rescaled to [-1, 1] for the RL agents. The result is a ``RunResult``.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import RescaleAction
from sb3_contrib import TRPO
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from agents.baselines import BASELINES
from agents.policies import BoundedActorCriticPolicy, with_beta_concentration
from agents.ppo_lagrangian import PPOLagrangian
from agents.recording import EpisodeRecord, EpisodeRecorder, RunResult
from prune_env.wrappers import BudgetClip, CostPenalty

# (env, seed, hyperparameters) -> agent with learn() / predict() / save()
Builder = Callable[..., Any]
DEFAULT_PENALTY_BETA = 1.0
VEC_ENVS = ("dummy", "subproc", "ray")


@dataclass(frozen=True)
class AlgoSpec:
    name: str
    builder: Builder
    description: str

    @property
    def agent_class(self) -> type[BaseAlgorithm] | None:
        """The class whose ``load()`` reads a saved agent; None for the search baselines."""
        return getattr(self.builder, "agent_class", None)


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


class SB3Builder:
    """Builds any SB3 / sb3-contrib algorithm on a pruning env, wrapped as the algorithm needs.

    ``wrap(env, penalty_beta=None)`` applies the algorithm's own wrappers (``BudgetClip`` for
    AMC, ``CostPenalty`` for the penalty methods, then actions rescaled to [-1, 1]); calling the
    builder wraps a single env and constructs the agent, or takes a VecEnv whose sub-envs were
    wrapped already (``make_agent(..., n_envs=N)``). Picklable, so sub-processes can wrap.
    """

    wrap_keys = ("penalty_beta",)

    def __init__(
        self,
        algo_cls: type[BaseAlgorithm],
        penalty: bool = False,
        budget_clip: bool = False,
        policy: str | type = "MlpPolicy",
        **defaults: Any,
    ) -> None:
        self.agent_class = algo_cls
        self.penalty, self.budget_clip, self.defaults = penalty, budget_clip, defaults
        self.policy = policy

    def wrap(self, env: gym.Env, penalty_beta: float | None = None) -> gym.Env:
        if self.budget_clip:
            env = BudgetClip(env)
        if self.penalty or penalty_beta is not None:
            env = CostPenalty(env, DEFAULT_PENALTY_BETA if penalty_beta is None else penalty_beta)
        return _rescaled(env)

    def __call__(
        self, env: gym.Env | VecEnv, seed: int = 0, penalty_beta: float | None = None, **kwargs
    ) -> BaseAlgorithm:
        if not isinstance(env, VecEnv):
            env = self.wrap(env, penalty_beta)
        params = {**self.defaults, **kwargs}
        params["policy_kwargs"] = with_beta_concentration(self.policy, params.get("policy_kwargs"))
        for key, value in list(params.items()):
            if callable(value) and key.endswith("_factory"):
                params[key.removesuffix("_factory")] = value(env)
                del params[key]
        return self.agent_class(self.policy, env, seed=seed, **params)


def sb3_builder(algo_cls: type[BaseAlgorithm], penalty: bool = False, **defaults: Any) -> Builder:
    """A builder for any SB3 / sb3-contrib algorithm class (on ``CostPenalty`` if ``penalty``)."""
    return SB3Builder(algo_cls, penalty=penalty, **defaults)


def _td3_noise(env: gym.Env | VecEnv) -> NormalActionNoise:
    n = int(np.prod(env.action_space.shape))
    return NormalActionNoise(np.zeros(n), np.full(n, 0.3))


class BaselineBuilder:
    """Builds one of ``agents.baselines.BASELINES`` (a search on one env: no VecEnv, nothing
    to load)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, env: gym.Env, seed: int = 0, **kwargs: Any):
        return BASELINES[self.name](env, seed=seed, **kwargs)


register(
    "ppo_lag",
    SB3Builder(PPOLagrangian, lagrangian="gradient"),
    "PPO-Lagrangian, gradient-ascent lambda",
)
register("ppo_pid_lag", SB3Builder(PPOLagrangian, lagrangian="pid"), "PPO-Lagrangian, PID lambda")
# The on-policy penalty methods draw their keep ratios from the same bounded (Beta) policy as
# PPO-Lagrangian, so that the comparison is of the constraint handling, not the distribution.
register(
    "ppo_penalty",
    SB3Builder(PPO, penalty=True, policy=BoundedActorCriticPolicy),
    "PPO on reward - beta * cost",
)
register(
    "sac_penalty",
    SB3Builder(SAC, penalty=True, learning_starts=100),
    "SAC on reward - beta * cost",
)
register(
    "td3_penalty",
    SB3Builder(TD3, penalty=True, learning_starts=100, action_noise_factory=_td3_noise),
    "TD3 on reward - beta * cost",
)
register(
    "trpo_penalty",
    SB3Builder(TRPO, penalty=True, policy=BoundedActorCriticPolicy),
    "TRPO (sb3-contrib) on reward - beta * cost",
)
register(
    "amc",
    SB3Builder(TD3, budget_clip=True, learning_starts=100, action_noise_factory=_td3_noise),
    "AMC: TD3 with budget-clipped actions, reward = accuracy",
)
for _name, _cls in BASELINES.items():
    register(_name, BaselineBuilder(_name), (_cls.__doc__ or "").strip().splitlines()[0])


class VecEpisodeLog:
    """The episodes of every sub-env's ``EpisodeRecorder``, merged in the order they ended."""

    def __init__(self, venv: VecEnv) -> None:
        self.venv = venv

    @property
    def records(self) -> list[EpisodeRecord]:
        """Every finished episode; ``env_steps`` counts the steps of all copies (they step in
        lockstep, so a copy's own count times the number of copies)."""
        n = self.venv.num_envs
        merged = sorted(
            (r for rs in self.venv.get_attr("records") for r in rs), key=lambda r: r.wall_time
        )
        return [replace(r, index=i, env_steps=r.env_steps * n) for i, r in enumerate(merged)]

    @property
    def total_steps(self) -> int:
        return int(sum(self.venv.get_attr("total_steps")))


def _recorded(env_fn: Callable[[], gym.Env], wrap: Callable[..., gym.Env], wrap_kwargs) -> gym.Env:
    if multiprocessing.parent_process() is not None:
        # A SubprocVecEnv worker: Ctrl-C reaches the whole process group, but it is the main
        # process that stops the search (at its next checkpoint) and then closes the workers;
        # a worker that died first would break that. SIGTERM is left alone: multiprocessing
        # ends its workers with it at exit (a worker ignoring it would hang the exit).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return wrap(EpisodeRecorder(env_fn()), **wrap_kwargs)


def _builder_of(algo: str | type[BaseAlgorithm]) -> Builder:
    if isinstance(algo, str):
        return get(algo).builder
    if isinstance(algo, type) and issubclass(algo, BaseAlgorithm):
        return SB3Builder(algo)
    raise ValueError(f"algo must be a registered name or an SB3 algorithm class, got {algo!r}")


def wrapped_env(algo: str | type[BaseAlgorithm], env: gym.Env, **kwargs: Any) -> gym.Env:
    """``env`` wrapped as ``algo``'s agent sees it (to roll a saved agent out).

    ``kwargs`` are the algorithm's arguments; those that change the wrapping (``penalty_beta``)
    are used, the rest ignored.
    """
    builder = _builder_of(algo)
    if not hasattr(builder, "wrap"):
        return env
    keys = getattr(builder, "wrap_keys", ())
    return builder.wrap(env, **{k: v for k, v in kwargs.items() if k in keys})


def make_agent(
    algo: str | type[BaseAlgorithm],
    env: gym.Env | Callable[[], gym.Env],
    seed: int = 0,
    n_envs: int = 1,
    vec_env: str = "dummy",
    vec_env_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[Any, EpisodeRecorder | VecEpisodeLog]:
    """Wrap the env in an ``EpisodeRecorder`` and build the agent; returns both.

    ``env`` is an env, or a function making one. With ``n_envs > 1`` it must be the function:
    each of the ``n_envs`` copies is recorded and wrapped in its own process (``vec_env=
    "subproc"``), in a Ray actor (``"ray"``, see ``agents.ray_vec_env``) or in this process
    (``"dummy"``), and the episode log merges them. ``vec_env_kwargs`` go to the VecEnv
    (``RayVecEnv``: ``num_cpus``, ``num_gpus``, ``address``).
    """
    builder = _builder_of(algo)
    if int(n_envs) < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if n_envs == 1:
        recorder = EpisodeRecorder(env if isinstance(env, gym.Env) else env())
        return builder(recorder, seed=seed, **kwargs), recorder
    if vec_env not in VEC_ENVS:
        raise ValueError(f"unknown vec_env {vec_env!r}; expected one of {VEC_ENVS}")
    if isinstance(env, gym.Env) or not callable(env):
        raise ValueError("n_envs > 1 needs a function that makes the env, not an env")
    if not hasattr(builder, "wrap"):
        raise ValueError(f"{algo!r} runs on one env only (it has no VecEnv support); use n_envs=1")
    wrap_kwargs = {k: kwargs.pop(k) for k in getattr(builder, "wrap_keys", ()) if k in kwargs}
    fns = [partial(_recorded, env, builder.wrap, wrap_kwargs) for _ in range(int(n_envs))]
    if vec_env == "ray":
        from agents.ray_vec_env import RayVecEnv  # Ray is an optional extra

        venv = RayVecEnv(fns, **(vec_env_kwargs or {}))
    elif vec_env == "subproc":
        venv = SubprocVecEnv(fns, **(vec_env_kwargs or {}))
    else:
        venv = DummyVecEnv(fns)
    return builder(venv, seed=seed, **kwargs), VecEpisodeLog(venv)


def run(
    algo: str | type[BaseAlgorithm],
    env: gym.Env | Callable[[], gym.Env],
    total_timesteps: int,
    seed: int = 0,
    learn_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> RunResult:
    """Build ``algo`` on ``env``, let it learn for ``total_timesteps`` env steps, record it all.

    ``kwargs`` go to ``make_agent`` (``n_envs``, ``vec_env``) and on to the algorithm.
    """
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
