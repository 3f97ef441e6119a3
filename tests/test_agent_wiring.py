"""PPO-Lagrangian's wiring, each test on a problem whose right answer is known in advance.

Costs that do not depend on the actions (``FixedCostEnv``) make lambda's trajectory a hand
computation: with the default SGD multiplier, ``k`` updates at episode cost ``J`` and limit
``d`` give ``lambda = k * lr * min((J - d) / d, 1) / d`` (the violation capped at one budget).
"""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.logger import configure

from agents import PPOLagrangian, registry
from agents.buffers import CostRolloutBuffer
from agents.callbacks import SearchMonitor
from agents.lagrange import MAX_VIOLATION
from tests.toy_envs import (
    ConcaveAllocation,
    ConcaveBandit,
    CyclingCostEnv,
    EndlessCostEnv,
    FixedCostEnv,
    TwoCostChain,
)

LR = 0.05
# plain gradient steps (no extrapolation), so that one update is lambda_lr * violation
SMALL = {"n_steps": 16, "batch_size": 16, "n_epochs": 1, "lambda_lr": LR, "lambda_optimism": 0.0,
         "seed": 0}  # fmt: skip


def _expected(k, cost, limit):
    violation = min((cost - limit) / limit, MAX_VIOLATION)  # capped at one budget's worth
    return k * LR * violation / limit if cost > limit else 0.0


@pytest.mark.parametrize("advertise", [True, False])
@pytest.mark.parametrize("order", ["ab", "ba"])
def test_each_lambda_is_driven_by_its_own_cost_and_limit(advertise, order):
    costs = {"a": 0.6, "b": 0.1}
    limits = {"a": 0.2, "b": 0.4}
    if order == "ba":  # the info lists the costs in another order than the limits
        costs = {"b": 0.1, "a": 0.6}
    env = FixedCostEnv(costs, limits, advertise=advertise)
    model = PPOLagrangian("MlpPolicy", env, n_costs=2, **SMALL)
    model.learn(16 * 3)  # three rollouts of one-step episodes: three updates
    names = model.cost_names
    lam = dict(zip(names, model.lambdas, strict=True))
    assert dict(zip(names, np.atleast_1d(model.cost_limit), strict=True)) == pytest.approx(limits)
    assert model.lagrange.cost_limit.tolist() == pytest.approx([limits[n] for n in names])
    assert lam["a"] == pytest.approx(_expected(3, 0.6, 0.2), rel=1e-5)  # e = 2 -> 1.5
    assert lam["b"] == 0.0  # under its own limit, whatever cost a does


def test_a_limit_given_only_in_info_reaches_the_multiplier():
    env = FixedCostEnv({"c": 0.5}, {"c": 0.25}, advertise=False, info_limit_key="cost_limit")
    model = PPOLagrangian("MlpPolicy", env, **SMALL)
    assert model.cost_limit is None
    model.learn(16 * 2)
    assert model.cost_limit == 0.25 and model.lagrange.cost_limit.tolist() == [0.25]
    assert model.lambdas[0] == pytest.approx(_expected(2, 0.5, 0.25), rel=1e-5)


def test_one_info_limit_is_not_spread_over_several_costs():
    env = FixedCostEnv({"a": 0.5, "b": 0.1}, {"a": 0.2, "b": 0.3}, advertise=False,
                       info_limit_key="cost_limit")  # fmt: skip
    model = PPOLagrangian("MlpPolicy", env, n_costs=2, **SMALL)
    with pytest.raises(ValueError, match="cost_limits"):
        model.learn(16)


def test_no_update_without_newly_finished_episodes():
    # 40-step episodes, 16-step rollouts: episodes end in the rollouts ending at 48 and 80.
    env = FixedCostEnv({"c": 0.6}, {"c": 0.2}, length=40)
    model = PPOLagrangian("MlpPolicy", env, **SMALL)
    monitor = SearchMonitor(96, progress=False)
    model.learn(96, callback=monitor)
    one = _expected(1, 0.6, 0.2)
    history = {step: lam[0] for step, lam in monitor.lambda_history}
    assert history[16] == history[32] == 0.0
    assert history[48] == pytest.approx(one, rel=1e-5)
    assert history[64] == pytest.approx(one, rel=1e-5)  # no episode ended in 49..64
    assert history[80] == pytest.approx(2 * one, rel=1e-5)
    assert history[96] == pytest.approx(2 * one, rel=1e-5)


def test_episode_costs_are_per_episode_and_reset_with_the_env():
    env = FixedCostEnv({"c": 0.9}, {"c": 0.5}, length=3)
    model = PPOLagrangian("MlpPolicy", env, **{**SMALL, "n_steps": 4, "batch_size": 4})
    model.learn(4)  # stops one step into the second episode
    assert [c[0] for c in model.ep_cost_buffer] == pytest.approx([0.9])
    model.learn(12)  # a new learn() resets the env: the partial episode's cost is dropped
    assert [c[0] for c in model.ep_cost_buffer] == pytest.approx([0.9] * 4)
    model.learn(8, reset_num_timesteps=False)  # continues the running episode
    assert [c[0] for c in model.ep_cost_buffer] == pytest.approx([0.9] * 6)


def test_rollout_cost_is_logged_with_its_own_rollout(tmp_path):
    env = FixedCostEnv({"c": 0.7}, {"c": 0.5})
    model = PPOLagrangian("MlpPolicy", env, **SMALL)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(32)
    lines = (tmp_path / "progress.csv").read_text().splitlines()
    header, first = lines[0].split(","), lines[1].split(",")
    assert float(first[header.index("rollout/ep_cost_rollout")]) == pytest.approx(0.7)


def test_each_cost_gets_its_own_gae():
    space = spaces.Box(-1, 1, (1,))
    buf = CostRolloutBuffer(3, space, space, "cpu", gae_lambda=0.8, gamma=0.9, n_envs=1,
                            n_costs=2)  # fmt: skip
    costs = [[1.0, 0.0], [0.0, 2.0], [2.0, 0.5]]
    cost_values = [[0.5, 0.1], [0.4, 0.2], [0.3, 0.3]]
    for t in range(3):
        buf.add(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1), np.array([t == 0]),
                th.zeros(1), th.zeros(1), cost=np.array([costs[t]]),
                cost_value=th.tensor([cost_values[t]]))  # fmt: skip
    buf.compute_returns_and_advantage(th.zeros(1), np.array([False]),
                                      last_cost_values=th.tensor([[0.2, 0.4]]))  # fmt: skip
    for i, last in enumerate([0.2, 0.4]):
        c = [row[i] for row in costs]
        v = [row[i] for row in cost_values]
        d2 = c[2] + 0.9 * last - v[2]
        d1 = c[1] + 0.9 * v[2] - v[1]
        d0 = c[0] + 0.9 * v[1] - v[0]
        a2 = d2
        a1 = d1 + 0.72 * a2
        a0 = d0 + 0.72 * a1
        assert buf.cost_advantages[:, 0, i] == pytest.approx([a0, a1, a2], abs=1e-6)
    # the minibatches hand out these advantages, and the returns (advantage + value) apart
    expected_adv, expected_ret = buf.cost_advantages[:, 0].copy(), buf.cost_returns[:, 0].copy()
    assert not np.allclose(expected_adv, expected_ret)
    assert expected_ret == pytest.approx(expected_adv + np.array(cost_values), abs=1e-6)
    (sample,) = list(buf.get(batch_size=3))
    order = np.argsort(sample.old_cost_values[:, 0].numpy())[::-1]  # cost values fall: 0.5 0.4 0.3
    assert sample.cost_advantages.numpy()[order] == pytest.approx(expected_adv, abs=1e-6)
    assert sample.cost_returns.numpy()[order] == pytest.approx(expected_ret, abs=1e-6)


def test_cost_critic_learns_the_remaining_episode_cost():
    # 4-step episodes, cost 0.2 per step, undiscounted: V_c(step t) = 0.2 * (4 - t).
    env = FixedCostEnv({"c": 0.8}, {"c": 1.0}, length=4)
    model = PPOLagrangian("MlpPolicy", env, n_steps=64, batch_size=32, gamma=1.0, seed=0)
    model.learn(3_000)
    obs = th.tensor([[0.0], [0.25], [0.5], [0.75]])
    with th.no_grad():
        predicted = model.policy.predict_cost_values(obs)[:, 0].numpy()
    assert predicted == pytest.approx([0.8, 0.6, 0.4, 0.2], abs=0.08)


def test_truncated_episodes_bootstrap_the_cost_value():
    env = TimeLimit(EndlessCostEnv(), max_episode_steps=5)
    model = PPOLagrangian("MlpPolicy", env, cost_limit=10.0, n_steps=8, batch_size=8,
                          cost_gamma=0.9, seed=0)  # fmt: skip
    _, callback = model._setup_learn(8, None)
    callback.on_training_start(locals(), globals())
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=8)
    with th.no_grad():  # the observation the truncated episode ended in (t = 5)
        terminal = model.policy.predict_cost_values(th.tensor([[0.5]]))[0, 0].item()
    # stored in budgets: a cost of 1 per step against a limit of 10 is 0.1, and the critic's
    # bootstrap (in budgets too) is added as it is
    stored = model.rollout_buffer.costs[:, 0, 0]
    assert stored[4] == pytest.approx(0.1 + 0.9 * terminal, abs=1e-5)
    assert np.delete(stored, 4) == pytest.approx([0.1] * 7)


@pytest.mark.parametrize("name", [n for n in registry.names() if n.endswith("_penalty")])
@pytest.mark.parametrize("beta", [None, 2.0])
def test_penalty_algorithms_learn_from_the_penalised_reward(name, beta):
    kwargs = {} if beta is None else {"penalty_beta": beta}
    agent, _ = registry.make_agent(name, ConcaveBandit(0.3), seed=0, **kwargs)
    venv = agent.get_env()
    venv.reset()
    _, rewards, _, infos = venv.step(np.array([[0.2]], dtype=np.float32))  # x = 0.6
    b = registry.DEFAULT_PENALTY_BETA if beta is None else beta
    assert rewards[0] == pytest.approx(1 - 0.4**2 - b * 0.6, abs=1e-6)
    assert infos[0]["cost"] == pytest.approx(0.6)


def test_load_overrides_win_over_the_saved_state(tmp_path):
    env = FixedCostEnv({"c": 0.6}, {"c": 0.2})
    model = PPOLagrangian("MlpPolicy", env, cost_limit=0.2, **SMALL)
    model.learn(16)
    model.save(tmp_path / "a.zip")
    before = model.lagrange.relative_value.item()
    loaded = PPOLagrangian.load(tmp_path / "a.zip", env=env, cost_limit=0.3, lambda_lr=0.5)
    assert loaded.lagrange.cost_limit.tolist() == pytest.approx([0.3])
    assert loaded.lagrange.optimizer.param_groups[0]["lr"] == 0.5
    loaded.learn(16, reset_num_timesteps=False)  # one update with the new limit and lr
    assert loaded.lagrange.relative_value.item() == pytest.approx(before + 0.5 * 1.0, rel=1e-5)
    same = PPOLagrangian.load(tmp_path / "a.zip", env=env)
    assert same.lagrange.cost_limit.tolist() == pytest.approx([0.2])
    assert same.lagrange.optimizer.param_groups[0]["lr"] == LR


def test_optimism_load_override_extrapolates_from_the_saved_violation(tmp_path):
    env = FixedCostEnv({"c": 0.6}, {"c": 0.2})
    # optimism 0 saved; no cap, so that the violations below are as computed
    model = PPOLagrangian("MlpPolicy", env, cost_limit=0.2, max_violation=None, **SMALL)
    model.learn(16)
    model.save(tmp_path / "a.zip")
    before = model.lagrange.relative_value.item()
    loaded = PPOLagrangian.load(tmp_path / "a.zip", env=env, cost_limit=0.3, lambda_optimism=1.0)
    assert loaded.lagrange.optimism == 1.0
    # saved violation (0.6 - 0.2) / 0.2 = 2, new one (0.6 - 0.3) / 0.3 = 1: the optimistic
    # direction 1 + 1 * (1 - 2) = 0 leaves lambda where it was
    loaded.learn(16, reset_num_timesteps=False)
    assert loaded.lagrange.relative_value.item() == pytest.approx(before, rel=1e-5)
    assert PPOLagrangian.load(tmp_path / "a.zip", env=env).lagrange.optimism == 0.0


def test_an_agent_saved_before_optimism_and_the_cap_keeps_its_multiplier(tmp_path):
    import json
    import zipfile

    env = FixedCostEnv({"c": 0.6}, {"c": 0.2})
    PPOLagrangian("MlpPolicy", env, **{**SMALL, "lambda_optimism": 2.0}).save(tmp_path / "new.zip")
    # the same file as an older version wrote it: no lambda_optimism in its data
    with (
        zipfile.ZipFile(tmp_path / "new.zip") as src,
        zipfile.ZipFile(tmp_path / "old.zip", "w") as dst,
    ):
        for item in src.infolist():
            content = src.read(item.filename)
            if item.filename == "data":
                data = json.loads(content)
                assert data.pop("lambda_optimism") == 2.0
                assert data.pop("max_violation") == 1.0
                content = json.dumps(data).encode()
            dst.writestr(item, content)
    assert PPOLagrangian.load(tmp_path / "new.zip", env=env).lagrange.optimism == 2.0
    assert PPOLagrangian.load(tmp_path / "old.zip", env=env).lagrange.optimism == 0.0
    # nor the cap on the violation: it loads without one
    assert PPOLagrangian.load(tmp_path / "new.zip", env=env).lagrange.max_violation == 1.0
    assert PPOLagrangian.load(tmp_path / "old.zip", env=env).lagrange.max_violation is None
    with open(tmp_path / "old.zip", "rb") as handle:  # a file object is read twice
        assert PPOLagrangian.load(handle, env=env).lagrange.optimism == 0.0
    loaded = PPOLagrangian.load(tmp_path / "old.zip", env=env, lambda_optimism=1.0)
    assert loaded.lagrange.optimism == 1.0


def test_pid_load_overrides(tmp_path):
    env = FixedCostEnv({"c": 0.6}, {"c": 0.2})
    model = PPOLagrangian("MlpPolicy", env, lagrangian="pid", max_violation=None, **SMALL)
    model.learn(48)
    model.save(tmp_path / "p.zip")
    loaded = PPOLagrangian.load(tmp_path / "p.zip", env=env, pid_d_delay=3, pid_ki=0.5)
    assert loaded.lagrange.d_delay == 3 and loaded.lagrange.ki == 0.5
    integral = loaded.lagrange.integral.item()
    loaded.learn(16, reset_num_timesteps=False)
    assert loaded.lagrange.integral.item() == pytest.approx(integral + 0.5 * 2.0, rel=1e-5)
    switched = PPOLagrangian.load(tmp_path / "p.zip", env=env)  # and without overrides
    assert switched.lagrange.d_delay == model.lagrange.d_delay


def test_gradient_agent_loads_with_another_optimizer(tmp_path):
    env = FixedCostEnv({"c": 0.6}, {"c": 0.2})
    model = PPOLagrangian("MlpPolicy", env, **SMALL)
    model.learn(16)
    model.save(tmp_path / "g.zip")
    loaded = PPOLagrangian.load(tmp_path / "g.zip", env=env, lambda_optimizer="Adam")
    assert isinstance(loaded.lagrange.optimizer, th.optim.Adam)
    assert np.array_equal(loaded.lambdas, model.lambdas)
    loaded.learn(16, reset_num_timesteps=False)


@pytest.mark.parametrize("lagrangian", ["gradient", "pid"])
def test_multi_step_allocation_reaches_its_known_optimum(lagrangian):
    # Five decisions, reward and cost at the end only (like pruning), default multipliers.
    env = ConcaveAllocation(cost_limit=0.3)
    _, r_opt, _ = env.optimum()
    model = PPOLagrangian("MlpPolicy", env, lagrangian=lagrangian, n_steps=500, batch_size=100,
                          seed=0)  # fmt: skip
    model.learn(40_000)
    obs, _ = env.reset()
    xs = []
    for _ in range(env.n):
        action, _ = model.predict(obs, deterministic=True)
        xs.append(float(action[0]))
        obs, *_ = env.step(action)
    r, c = env.value(xs)
    assert 0.85 * 0.3 <= c <= 0.3 * 1.05
    assert r >= 0.95 * r_opt


@pytest.mark.parametrize(("quantile", "statistic"), [(0.8, 0.82), (None, 0.55)])
def test_the_multiplier_holds_the_chosen_statistic_at_the_limit(quantile, statistic):
    # ten one-step episodes per rollout costing 0.1, 0.2, ..., 1.0: 0.8-quantile 0.82, mean 0.55
    env = CyclingCostEnv([round(0.1 * i, 1) for i in range(1, 11)], limit=0.5)
    model = PPOLagrangian("MlpPolicy", env, cost_quantile=quantile,
                          **{**SMALL, "n_steps": 10, "batch_size": 10})  # fmt: skip
    model.learn(10)
    assert model.lambdas[0] == pytest.approx(_expected(1, statistic, 0.5), rel=1e-5)


def test_lambda_init_keeps_its_value_when_the_limit_comes_from_info():
    env = FixedCostEnv({"c": 0.1}, {"c": 0.25}, advertise=False, info_limit_key="cost_limit")
    model = PPOLagrangian("MlpPolicy", env, lambda_init=1.0, **SMALL)
    model.learn(16)  # one update at e = (0.1 - 0.25) / 0.25 = -0.6
    assert model.lambdas[0] == pytest.approx((1.0 * 0.25 - LR * 0.6) / 0.25, rel=1e-5)


def test_costs_are_in_budgets_when_the_limit_comes_from_info_only():
    # cost 0.1 per episode of two steps (0.05 a step), limit 0.25 from info: the critic and the
    # advantages see 0.05 / 0.25 = 0.2 from the very first step, before any update
    env = FixedCostEnv({"c": 0.1}, {"c": 0.25}, length=2, advertise=False,
                       info_limit_key="cost_limit")  # fmt: skip
    model = PPOLagrangian("MlpPolicy", env, **SMALL)
    model.learn(16)
    assert model.cost_limit == 0.25
    assert np.allclose(model.rollout_buffer.costs, 0.2)


def test_fewer_costs_than_the_env_reports():
    model = PPOLagrangian("MlpPolicy", TwoCostChain(), n_costs=1, n_steps=48, batch_size=16)
    assert model.cost_limit == 0.5 and model.lagrange.n_constraints == 1
    model.learn(96)  # the first cost only ("heat", limit 0.5)
    assert model.lambdas.shape == (1,)
