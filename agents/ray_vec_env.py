"""Env copies as Ray actors behind stable-baselines3's VecEnv interface.

``RayVecEnv`` does what SB3's ``SubprocVecEnv`` does (same auto-reset, same
``terminal_observation`` and ``TimeLimit.truncated`` in the info, same seeding), but each copy
is a Ray actor, so the copies can live anywhere on a Ray cluster and claim GPU fractions:
PPOLagrangian and every SB3 algorithm use a cluster unchanged. Ray is an optional extra
(``pip install prune-env[ray]``); it connects to ``address`` or ``$RAY_ADDRESS`` (a cluster
started with ``ray start``), else starts a local instance.

```python
venv = RayVecEnv([make_env] * 8, num_cpus=1, num_gpus=0.25)
agent = PPOLagrangian("MlpPolicy", venv)
```
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    CloudpickleWrapper,
    VecEnv,
    VecEnvIndices,
    VecEnvStepReturn,
)


class _EnvActor:
    """One env copy; the body of SB3's sub-process worker, as methods of an actor."""

    def __init__(self, env_fn: CloudpickleWrapper) -> None:
        self.env: gym.Env = env_fn.var()
        self.reset_info: dict[str, Any] = {}

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.env.observation_space, self.env.action_space

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        if done:
            info["terminal_observation"] = obs
            obs, self.reset_info = self.env.reset()
        return obs, reward, done, info, self.reset_info

    def reset(self, seed: int | None, options: dict | None):
        obs, self.reset_info = self.env.reset(
            seed=seed, **({"options": options} if options else {})
        )
        return obs, self.reset_info

    def render(self) -> Any:
        return self.env.render()

    def get_attr(self, name: str) -> Any:
        return self.env.get_wrapper_attr(name)

    def set_attr(self, name: str, value: Any) -> None:
        setattr(self.env, name, value)

    def env_method(self, name: str, args: tuple, kwargs: dict) -> Any:
        return self.env.get_wrapper_attr(name)(*args, **kwargs)

    def is_wrapped(self, wrapper_class: type) -> bool:
        env = self.env
        while isinstance(env, gym.Wrapper):
            if isinstance(env, wrapper_class):
                return True
            env = env.env
        return False

    def close(self) -> None:
        self.env.close()


class RayVecEnv(VecEnv):
    """SB3 VecEnv whose env copies are Ray actors.

    :param env_fns: functions that make the env copies (pickled to the actors).
    :param num_cpus: CPUs each actor claims (default 1).
    :param num_gpus: GPUs (or a fraction) each actor claims (default 0).
    :param address: the Ray cluster (default ``$RAY_ADDRESS``; neither: a local instance).
    :param init_kwargs: more arguments of ``ray.init`` when this call starts Ray.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        address: str | None = None,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ImportError("RayVecEnv needs Ray: pip install 'prune-env[ray]'") from exc
        if not env_fns:
            raise ValueError("RayVecEnv needs at least one env function")
        if num_cpus < 0 or num_gpus < 0:
            raise ValueError(f"num_cpus and num_gpus must be >= 0, got {num_cpus}, {num_gpus}")
        self._ray = ray
        if not ray.is_initialized():
            ray.init(
                address=address or os.environ.get("RAY_ADDRESS"),
                include_dashboard=False,
                log_to_driver=False,
                **(init_kwargs or {}),
            )
        actor = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(_EnvActor)
        self.actors = [actor.remote(CloudpickleWrapper(fn)) for fn in env_fns]
        observation_space, action_space = ray.get(self.actors[0].spaces.remote())
        super().__init__(len(env_fns), observation_space, action_space)
        self._futures: list[Any] = []
        self.closed = False

    def step_async(self, actions: np.ndarray) -> None:
        self._futures = [a.step.remote(act) for a, act in zip(self.actors, actions, strict=True)]

    def step_wait(self) -> VecEnvStepReturn:
        results = self._ray.get(self._futures)
        obs, rewards, dones, infos, self.reset_infos = zip(*results, strict=True)
        return (
            _stack(obs, self.observation_space),
            np.asarray(rewards, dtype=np.float32),
            np.asarray(dones, dtype=bool),
            list(infos),
        )

    def reset(self):
        futures = [
            a.reset.remote(self._seeds[i], self._options[i]) for i, a in enumerate(self.actors)
        ]
        obs, self.reset_infos = zip(*self._ray.get(futures), strict=True)
        self.reset_infos = list(self.reset_infos)
        self._reset_seeds()
        self._reset_options()
        return _stack(obs, self.observation_space)

    def close(self) -> None:
        if self.closed:
            return
        self._ray.get([a.close.remote() for a in self.actors])
        for a in self.actors:
            self._ray.kill(a)
        self.closed = True

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self._ray.get([a.render.remote() for a in self.actors])

    def _targets(self, indices: VecEnvIndices) -> list[Any]:
        return [self.actors[i] for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._ray.get([a.get_attr.remote(attr_name) for a in self._targets(indices)])

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._ray.get([a.set_attr.remote(attr_name, value) for a in self._targets(indices)])

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None,
                   **method_kwargs) -> list[Any]:  # fmt: skip
        return self._ray.get(
            [a.env_method.remote(method_name, method_args, method_kwargs)
             for a in self._targets(indices)]
        )  # fmt: skip

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return self._ray.get([a.is_wrapped.remote(wrapper_class) for a in self._targets(indices)])


def _stack(obs: Sequence[Any], space: gym.Space) -> Any:
    if isinstance(space, gym.spaces.Dict):
        return {k: np.stack([o[k] for o in obs]) for k in space.spaces}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(np.stack([o[i] for o in obs]) for i in range(len(space.spaces)))
    return np.stack(obs)
