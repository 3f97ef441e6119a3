import gymnasium as gym
import numpy as np
import pytest

from agents.baselines import RandomSearch
from prune_env.constraints import all_within
from prune_env.heuristics import UniformBaseline
from prune_env.wrappers import BudgetClip, CostInfo, CostPenalty, CostTuple
from tests.conftest import TINY


class CostlyEnv(gym.Env):
    """One-step env: reward = action, cost = 2 * action, plus a second cost named "heat"."""

    observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
    action_space = gym.spaces.Box(0, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        a = float(action[0])
        info = {"cost": 2 * a, "costs": {"cost": 2 * a, "heat": 10 * a}}
        return np.zeros(1, np.float32), a, True, False, info


def test_cost_tuple_and_back():
    six = CostTuple(CostlyEnv())
    six.reset(seed=0)
    _, reward, cost, terminated, truncated, info = six.step(np.array([0.25]))
    assert (reward, cost, terminated, truncated) == (0.25, 0.5, True, False)
    five = CostInfo(six)
    five.reset(seed=0)
    _, reward, terminated, truncated, info = five.step(np.array([0.25]))
    assert reward == 0.25 and info["cost"] == 0.5 and terminated


def test_cost_penalty():
    env = CostPenalty(CostlyEnv(), beta=0.5)
    env.reset()
    _, reward, _, _, info = env.step(np.array([0.5]))
    assert reward == pytest.approx(0.5 - 0.5 * 1.0) and info["reward_raw"] == 0.5
    per_cost = CostPenalty(CostlyEnv(), beta={"heat": 0.1})
    per_cost.reset()
    _, reward, _, _, info = per_cost.step(np.array([0.5]))
    assert reward == pytest.approx(0.5 - 0.1 * 5.0) and info["penalty"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="beta"):
        CostPenalty(CostlyEnv(), beta=-1)
    with pytest.raises(KeyError, match="energy"):
        bad = CostPenalty(CostlyEnv(), beta={"energy": 1.0})
        bad.reset()
        bad.step(np.array([0.5]))


def test_penalty_on_a_pruning_env():
    env = CostPenalty(gym.make("LeNet5Prune-v0", **TINY), beta=2.0)
    env.reset(seed=0)
    for _ in range(env.unwrapped.n_layers):
        _, reward, terminated, _, info = env.step(np.array([0.5], dtype=np.float32))
    assert terminated and reward == pytest.approx(info["accuracy"] - 2.0 * info["cost"])


def _brute_force_max_ratio(env) -> float:
    """The largest keep ratio the env can apply to its current layer (every count tried)
    that leaves the budget reachable with every later layer at ``min_keep``."""
    t, ratios = env.current_layer, env.decided_ratios
    ratios[t + 1 :] = env.min_keep
    best = None
    for ratio in sorted(set(env.snap(np.full(env.n_layers, r))[t] for r in np.linspace(0, 1, 500))):
        ratios[t] = ratio
        if all_within(env.analytic_costs(ratios), env.cost_limits):
            best = ratio
    return env.snap(np.full(env.n_layers, env.min_keep))[t] if best is None else best


@pytest.mark.parametrize("budget", [0.05, 0.2, 0.3])
def test_budget_clip_allows_the_largest_ratio_that_keeps_the_budget_reachable(budget):
    clip = BudgetClip(gym.make("LeNet5Prune-v0", **{**TINY, "budget": budget}))
    env = clip.unwrapped
    clip.reset(seed=0)
    for action in (0.9, 0.3, 1.0, 0.5, 0.7)[: env.n_layers]:
        assert clip.max_ratio() == pytest.approx(_brute_force_max_ratio(env), abs=1e-12)
        _, _, terminated, _, info = clip.step(np.array([action], dtype=np.float32))
    assert terminated and info["constraint_satisfied"]


def test_searches_and_the_clip_refuse_an_env_without_the_pruning_api():
    for user in (BudgetClip, UniformBaseline, RandomSearch):
        with pytest.raises(ValueError, match="needs a prune_env pruning env, got CostlyEnv"):
            user(CostlyEnv())
