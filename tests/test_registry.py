"""The algorithm registry and the baselines, on tiny pruning envs."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import A2C

from agents import registry
from prune_env.wrappers import BudgetClip
from tests.conftest import TINY

ON_POLICY = {"n_steps": 64, "batch_size": 32}


def tiny_env(**kwargs):
    config = {**TINY, "width_mult": 0.125, "budget": 0.3, **kwargs}
    return gym.make("VGG11Prune-v0", **config)


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_algorithm_runs(name):
    kwargs = ON_POLICY if name.startswith(("ppo", "trpo")) else {}
    result = registry.run(name, tiny_env(), total_timesteps=240, seed=0, **kwargs)
    assert result.algo == name and result.episodes
    n_layers = 8
    assert result.env_steps == sum(1 for _ in result.episodes) * n_layers
    for episode in result.episodes:
        assert 0 <= episode.reward <= 1 and len(episode.keep_ratios) == n_layers
        assert episode.feasible == (episode.cost <= 0.3 + 1e-12)
    if name in ("uniform", "magnitude_global", "tp_global", "random_search", "amc"):
        assert all(e.feasible for e in result.episodes)  # feasible by construction
    action, _ = result.agent.predict(np.zeros(13, dtype=np.float32), deterministic=True)
    assert np.asarray(action).shape == (1,)


def test_uniform_is_the_largest_feasible_uniform_ratio():
    env = tiny_env()
    result = registry.run("uniform", env, total_timesteps=1)
    (episode,) = result.episodes
    assert 0.27 <= episode.cost <= 0.3  # tight against the budget
    ratios = np.array(episode.keep_ratios)
    assert ratios.max() - ratios.min() < 0.15  # one ratio, up to channel rounding
    bigger = env.unwrapped.snap(ratios + 1.0 / 16)
    assert env.unwrapped.analytic_costs(bigger)["params"] > 0.3


def test_magnitude_global_keeps_the_largest_weights_everywhere():
    env = tiny_env(granularity="weight", min_keep=0.001)
    result = registry.run("magnitude_global", env, total_timesteps=1)
    (episode,) = result.episodes
    assert 0.29 <= episode.cost <= 0.3
    net = env.unwrapped.prune(episode.keep_ratios)
    base = env.unwrapped.base_model
    kept, dropped = [], []
    for name in env.unwrapped.engine.layer_names:
        w, w0 = net.get_submodule(name).weight, base.get_submodule(name).weight
        kept.append(w0[w != 0].abs().flatten())
        dropped.append(w0[w == 0].abs().flatten())
    kept_min = min(float(k.min()) for k in kept if len(k))
    dropped_max = max(float(d.max()) for d in dropped if len(d))
    assert kept_min >= dropped_max  # one global threshold separates kept from pruned


def test_random_search_uses_the_rl_evaluation_budget():
    result = registry.run("random_search", tiny_env(), total_timesteps=80, seed=3)
    assert len(result.episodes) == 80 // 8
    assert result.best_feasible is not None
    assert result.best_feasible.reward == max(e.reward for e in result.episodes)


def test_budget_clip_makes_every_episode_feasible():
    env = BudgetClip(tiny_env(budget=0.1))
    rng = np.random.default_rng(0)
    for _ in range(5):
        env.reset(seed=0)
        for _ in range(8):
            _, _, terminated, _, info = env.step(rng.uniform(0.05, 1.0, size=1).astype(np.float32))
        assert terminated and info["cost"] <= 0.1
    with pytest.raises(ValueError, match="analytic"):
        BudgetClip(tiny_env(cost="latency"))


def test_registry_rejects_unknown_and_duplicate_names_and_takes_classes():
    with pytest.raises(ValueError, match=r"expected one of.*ppo_lag"):
        registry.get("ppo_lagrange")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("ppo_lag", registry.sb3_builder(A2C))
    registry.register("a2c_penalty", registry.sb3_builder(A2C, penalty=True), "A2C", overwrite=True)
    assert "a2c_penalty" in registry.names()
    result = registry.run(A2C, tiny_env(), total_timesteps=40, penalty_beta=0.5, n_steps=8)
    assert result.algo == "A2C" and len(result.episodes) == 5
    with pytest.raises(ValueError, match="SB3 algorithm class"):
        registry.run(42, tiny_env(), total_timesteps=8)


def test_ppo_lagrangian_reads_the_budget_of_a_pruning_env():
    agent, _ = registry.make_agent(
        "ppo_lag", tiny_env(costs={"params": 0.2, "flops": 0.4}), **ON_POLICY
    )
    assert agent.n_costs == 2 and agent.cost_names == ["params", "flops"]
    assert agent.cost_limit == [0.2, 0.4]


def test_the_registered_lagrangian_agents_carry_their_documented_multipliers():
    from agents.lagrange import GradientLagrange, PIDLagrange

    gradient, _ = registry.make_agent("ppo_lag", tiny_env(), **ON_POLICY)
    pid, _ = registry.make_agent("ppo_pid_lag", tiny_env(), **ON_POLICY)
    assert type(gradient.lagrange) is GradientLagrange and type(pid.lagrange) is PIDLagrange
    # the defaults docs/agents.md states and the convergence tables were measured with
    assert gradient.lagrange.optimism == 5.0
    assert gradient.lagrange.optimizer.param_groups[0]["lr"] == 0.03
    assert (pid.lagrange.kp, pid.lagrange.ki, pid.lagrange.kd) == (0.2, 0.05, 0.0)
    assert gradient.cost_quantile == pid.cost_quantile == 0.9


def test_penalty_beta_puts_any_algorithm_on_the_penalised_reward():
    from prune_env.wrappers import CostPenalty

    def penalty_of(env):
        while not isinstance(env, CostPenalty):
            assert hasattr(env, "env"), "no CostPenalty wrapper"
            env = env.env
        return env

    assert penalty_of(registry.wrapped_env(A2C, tiny_env(), penalty_beta=2.5)).beta == 2.5
    assert penalty_of(registry.wrapped_env("ppo_penalty", tiny_env())).beta == 1.0
    plain = registry.wrapped_env(A2C, tiny_env())
    with pytest.raises(AssertionError, match="no CostPenalty"):
        penalty_of(plain)


def test_random_search_draws_a_new_candidate_every_episode():
    result = registry.run("random_search", tiny_env(budget=1.0), total_timesteps=80, seed=3)
    ratios = [tuple(e.keep_ratios) for e in result.episodes]
    assert len(set(ratios)) == len(ratios) == 10
    again = registry.run("random_search", tiny_env(budget=1.0), total_timesteps=80, seed=3)
    assert [tuple(e.keep_ratios) for e in again.episodes] == ratios  # seeded
