"""What every algorithm's run produces: the evaluated episodes and the best feasible one."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym

from prune_env.constraints import within_budget


@dataclass
class EpisodeRecord:
    """One finished episode: its return, costs and (for pruning envs) the keep ratios."""

    index: int  # episode number within the run
    env_steps: int  # env steps taken in the run when it ended
    wall_time: float  # seconds since the run started
    reward: float  # episode return
    cost: float  # summed info["cost"]
    costs: dict[str, float] = field(default_factory=dict)
    feasible: bool = True
    keep_ratios: list[float] | None = None
    accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    """The same result type for RL agents and search baselines."""

    algo: str
    episodes: list[EpisodeRecord]
    env_steps: int
    wall_time: float
    agent: Any = None  # the trained model (RL) or the search object

    @property
    def best_feasible(self) -> EpisodeRecord | None:
        feasible = [e for e in self.episodes if e.feasible]
        return max(feasible, key=lambda e: e.reward) if feasible else None

    @property
    def first_feasible(self) -> EpisodeRecord | None:
        return next((e for e in self.episodes if e.feasible), None)

    def summary(self) -> dict[str, Any]:
        best = self.best_feasible
        return {
            "algo": self.algo,
            "episodes": len(self.episodes),
            "env_steps": self.env_steps,
            "wall_time": round(self.wall_time, 3),
            "best_feasible_reward": None if best is None else best.reward,
            "best_feasible_cost": None if best is None else best.cost,
            "violation_rate": (
                sum(not e.feasible for e in self.episodes) / len(self.episodes)
                if self.episodes
                else None
            ),
        }


class EpisodeRecorder(gym.Wrapper):
    """Records every finished episode's return, summed cost(s) and final pruning info.

    Feasibility compares each summed cost with ``info["cost_limits"]`` (or
    ``info["cost_limit"]``) when the env reports one; otherwise episodes count as feasible.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.records: list[EpisodeRecord] = []
        self.total_steps = 0
        self.start = time.perf_counter()
        self._reward = 0.0
        self._costs: dict[str, float] = {}
        self._cost = 0.0

    def reset(self, **kwargs):
        self._reward, self._cost, self._costs = 0.0, 0.0, {}
        return self.env.reset(**kwargs)

    def get_episode_state(self) -> dict[str, Any] | None:
        """The episode in progress: the sums so far and the env's own state (None when the
        env cannot hand its episode on: a resumed search then starts a new one)."""
        try:
            inner = self.env.get_wrapper_attr("get_episode_state")()
        except AttributeError:
            return None
        return {"reward": self._reward, "cost": self._cost, "costs": self._costs, "env": inner}

    def set_episode_state(self, state: dict[str, Any]) -> None:
        """Continue the episode ``get_episode_state`` gave (after a ``reset``)."""
        self.env.get_wrapper_attr("set_episode_state")(state["env"])
        self._reward, self._cost = float(state["reward"]), float(state["cost"])
        self._costs = dict(state["costs"])

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.total_steps += 1
        self._reward += float(reward)
        self._cost += float(info.get("cost", 0.0))
        for name, value in info.get("costs", {}).items():
            self._costs[name] = self._costs.get(name, 0.0) + float(value)
        if terminated or truncated:
            self.records.append(self._record(info))
        return obs, reward, terminated, truncated, info

    def _record(self, info: dict[str, Any]) -> EpisodeRecord:
        limits = info.get("cost_limits")
        if limits:
            feasible = all(
                within_budget(self._costs.get(k, self._cost), v) for k, v in limits.items()
            )
        elif "cost_limit" in info:
            feasible = within_budget(self._cost, info["cost_limit"])
        else:
            feasible = True
        return EpisodeRecord(
            index=len(self.records),
            env_steps=self.total_steps,
            wall_time=time.perf_counter() - self.start,
            reward=self._reward,
            cost=self._cost,
            costs=dict(self._costs),
            feasible=feasible,
            keep_ratios=info.get("keep_ratios"),
            accuracy=info.get("accuracy"),
        )


def rollout(agent: Any, env: gym.Env, deterministic: bool = True) -> dict[str, Any]:
    """One episode of ``agent`` (anything with SB3's ``predict``) on ``env``; returns the last
    step's info."""
    obs, _ = env.reset()
    done = False
    info: dict[str, Any] = {}
    while not done:
        action, _ = agent.predict(obs, deterministic=deterministic)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    return info


def violation_rate_per_quarter(
    feasible: list[bool], env_steps: list[int], total_steps: int
) -> list[float | None]:
    """Share of infeasible episodes among those that ended in each quarter of the search's env
    steps (None for a quarter in which no episode ended)."""
    if len(feasible) != len(env_steps):
        raise ValueError(f"{len(feasible)} feasibility flags for {len(env_steps)} episodes")
    rates: list[float | None] = []
    for q in range(4):
        lo, hi = q * total_steps / 4, (q + 1) * total_steps / 4
        inside = [not f for f, s in zip(feasible, env_steps, strict=True) if lo < s <= hi]
        rates.append(sum(inside) / len(inside) if inside else None)
    return rates
