"""The constrained problems with known optima (``agents.problems``) and the agents' invariance
to the units of a cost."""

import numpy as np
import pytest
import torch as th

from agents import PPOLagrangian, registry
from agents.problems import PROBLEMS, ConcaveLinear, LogQuadratic, make_problem


def test_a_hand_computed_optimum():
    # two equal items, half the resource: half of each, reward sqrt(0.5)
    env = ConcaveLinear(budget=0.5, weights=(1.0, 1.0), prices=(1.0, 1.0))
    x, reward, cost = env.optimum()
    assert x == pytest.approx([0.5, 0.5], abs=1e-9)
    assert reward == pytest.approx(np.sqrt(0.5), abs=1e-9) and cost == pytest.approx(0.5)
    # item 2 twice the price at the same value: x2 = x1 / 4 (sqrt(x) = w C / (2 nu c W))
    env = ConcaveLinear(budget=0.5, weights=(1.0, 1.0), prices=(1.0, 2.0))
    x, _, cost = env.optimum()
    assert x[1] == pytest.approx(x[0] / 4, rel=1e-6) and cost == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("budget", [0.05, 0.25, 1.0])
def test_no_feasible_allocation_beats_the_optimum(name, budget):
    env = make_problem(name, budget=budget)
    x_opt, reward_opt, cost_opt = env.optimum()
    assert cost_opt <= env.cost_limit * (1 + 1e-9)
    rng = np.random.default_rng(0)
    for _ in range(500):
        x = rng.uniform(0, 1, env.n) ** rng.uniform(0.3, 3)
        # scale the allocation onto the budget (both costs grow with every x_i)
        lo, hi = 0.0, 1.0 / max(x.max(), 1e-12)
        for _ in range(60):
            mid = (lo + hi) / 2
            if env.value(np.minimum(1, mid * x))[1] <= env.cost_limit:
                lo = mid
            else:
                hi = mid
        assert env.value(np.minimum(1, lo * x))[0] <= reward_opt + 1e-9
    # and a step off the optimum along the budget loses reward
    assert env.value(x_opt * 0.99)[0] < reward_opt or budget == 1.0


@pytest.mark.parametrize("cls", [ConcaveLinear, LogQuadratic])
def test_an_episode_sums_to_the_allocations_value_in_every_unit(cls):
    for unit in (1.0, 20.0, 0.05):
        env = cls(budget=0.1, cost_scale=unit)
        x, reward, cost = env.optimum()
        assert cost == pytest.approx(0.1 * unit) and env.cost_limit == pytest.approx(0.1 * unit)
        env.reset(seed=0)
        total_reward = total_cost = 0.0
        for xi in x:
            _, r, terminated, _, info = env.step(np.array([xi], np.float32))
            total_reward, total_cost = total_reward + r, total_cost + info["cost"]
        assert terminated and info["cost_limit"] == env.cost_limit
        assert total_reward == pytest.approx(reward, abs=1e-6)  # float32 actions
        assert total_cost == pytest.approx(cost, rel=1e-5)
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(1))


def test_bad_problem_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="budget must be in"):
        make_problem("concave_linear", budget=0.0)
    with pytest.raises(ValueError, match="cost_scale must be a positive"):
        make_problem("log_quadratic", cost_scale=-1)
    with pytest.raises(ValueError, match="unknown problem 'nope'"):
        make_problem("nope")


def _trained(algo, unit, steps=768):
    env = make_problem("concave_linear", budget=0.25, cost_scale=unit)
    result = registry.run(algo, env, total_timesteps=steps, seed=3, n_steps=128, batch_size=64)
    return result.agent


@pytest.mark.parametrize("algo", ["ppo_lag", "ppo_pid_lag"])
def test_the_same_problem_in_other_cost_units_trains_the_same_policy(algo):
    # A power-of-two unit scales every cost exactly, so the runs must agree bit for bit: the
    # critic, the advantages and the multiplier all work in budgets. (Without the cost
    # normalisation the cost critic's targets, and so the policy, differ.)
    one, sixteen = _trained(algo, 1.0), _trained(algo, 16.0)
    for (name, a), b in zip(one.policy.state_dict().items(), sixteen.policy.state_dict().values(),
                            strict=True):  # fmt: skip
        assert th.equal(a, b), name
    assert th.equal(one.lagrange.relative_value, sixteen.lagrange.relative_value)
    assert one.lambdas / 16 == pytest.approx(sixteen.lambdas, rel=1e-6)  # per unit of cost
    assert one.lagrange.relative_value.item() > 0  # the constraint was active


def test_an_agent_in_units_of_twenty_follows_the_same_path():
    # 20 is not a power of two: rounding differs in the last bits, the policy barely at all
    one, twenty = _trained("ppo_pid_lag", 1.0), _trained("ppo_pid_lag", 20.0)
    obs = np.eye(8, dtype=np.float32)
    a1, _ = one.predict(obs, deterministic=True)
    a20, _ = twenty.predict(obs, deterministic=True)
    assert np.abs(a1 - a20).max() < 1e-3
    assert isinstance(one, PPOLagrangian)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("budget", [0.05, 0.25])
def test_the_optimum_prices_every_partly_kept_item_alike(name, budget):
    # KKT: on the items kept in part (0 < x < 1) the marginal reward per marginal cost is one
    # price; on items kept whole it is at least that price
    env = make_problem(name, budget=budget)
    x, _, _ = env.optimum()
    h = 1e-7  # backward differences: an item kept whole cannot grow
    down = [x - h * np.eye(env.n)[i] for i in range(env.n)]
    reward, cost = env.value(x)
    price = np.array([(reward - env.value(d)[0]) / (cost - env.value(d)[1]) for d in down])
    inside = (x > 1e-4) & (x < 1 - 1e-4)
    assert inside.sum() >= 2
    assert price[inside] == pytest.approx(np.full(inside.sum(), price[inside].mean()), rel=1e-3)
    assert (price[x >= 1 - 1e-4] >= price[inside].mean() * (1 - 1e-3)).all()
