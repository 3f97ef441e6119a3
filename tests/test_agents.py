"""PPO-Lagrangian: cost GAE, multipliers, constraint satisfaction, save/load."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer

from agents import PPOLagrangian
from agents.buffers import CostRolloutBuffer
from agents.ppo_lagrangian import COST_QUANTILE
from tests.toy_envs import ConcaveBandit, TwoCostChain


def _filled_buffer(episode_starts, costs, cost_values, cost_gamma=None, cls=CostRolloutBuffer):
    obs, act = spaces.Box(-1, 1, (1,)), spaces.Box(-1, 1, (1,))
    kwargs = {"n_costs": 1, "cost_gamma": cost_gamma} if cls is CostRolloutBuffer else {}
    buf = cls(3, obs, act, "cpu", gae_lambda=0.8, gamma=0.99, n_envs=1, **kwargs)
    rewards, values = [0.5, -1.0, 2.0], [0.1, 0.2, 0.3]
    for t in range(3):
        extra = {}
        if cls is CostRolloutBuffer:
            extra = {"cost": np.array([[costs[t]]]), "cost_value": th.tensor([[cost_values[t]]])}
        buf.add(
            np.zeros((1, 1)),
            np.zeros((1, 1)),
            np.array([rewards[t]]),
            np.array([episode_starts[t]]),
            th.tensor([values[t]]),
            th.zeros(1),
            **extra,
        )
    last = {"last_cost_values": th.tensor([[0.2]])} if cls is CostRolloutBuffer else {}
    buf.compute_returns_and_advantage(th.tensor([0.4]), np.array([False]), **last)
    return buf


def test_cost_gae_matches_hand_computation():
    # gamma_c = 0.9, lambda = 0.8; costs [1, 0, 2], V_c [0.5, 0.4, 0.3], V_c(s_3) = 0.2
    buf = _filled_buffer([1, 0, 0], [1, 0, 2], [0.5, 0.4, 0.3], cost_gamma=0.9)
    d2 = 2 + 0.9 * 0.2 - 0.3  # 1.88
    d1 = 0 + 0.9 * 0.3 - 0.4  # -0.13
    d0 = 1 + 0.9 * 0.4 - 0.5  # 0.86
    a2 = d2
    a1 = d1 + 0.9 * 0.8 * a2  # 1.2236
    a0 = d0 + 0.9 * 0.8 * a1  # 1.740992
    assert buf.cost_advantages[:, 0, 0] == pytest.approx([a0, a1, a2], abs=1e-6)
    assert buf.cost_returns[:, 0, 0] == pytest.approx([a0 + 0.5, a1 + 0.4, a2 + 0.3], abs=1e-6)
    # reward advantages are exactly those of SB3's plain buffer (gamma 0.99, not the cost's)
    plain = _filled_buffer([1, 0, 0], None, None, cls=RolloutBuffer)
    assert np.array_equal(buf.advantages, plain.advantages)
    assert np.array_equal(buf.returns, plain.returns)


def test_cost_gae_stops_at_episode_boundaries():
    buf = _filled_buffer([1, 0, 1], [1, 0, 2], [0.5, 0.4, 0.3], cost_gamma=0.9)
    a1 = 0 - 0.4  # the episode ends after step 1: no bootstrap
    a0 = (1 + 0.9 * 0.4 - 0.5) + 0.9 * 0.8 * a1
    assert buf.cost_advantages[:2, 0, 0] == pytest.approx([a0, a1], abs=1e-6)


def test_buffer_samples_carry_costs():
    buf = _filled_buffer([1, 0, 0], [1, 0, 2], [0.5, 0.4, 0.3])
    (batch,) = list(buf.get(batch_size=3))
    order = batch.old_values.argsort()  # values 0.1, 0.2, 0.3 identify the steps
    assert batch.old_cost_values[order, 0].tolist() == pytest.approx([0.5, 0.4, 0.3])
    assert batch.cost_advantages.shape == (3, 1) and batch.cost_returns.shape == (3, 1)


def test_agent_argument_validation():
    with pytest.raises(ValueError, match="unknown lagrangian"):
        PPOLagrangian("MlpPolicy", ConcaveBandit(), lagrangian="newton")
    with pytest.raises(ValueError, match="cost_limit"):
        PPOLagrangian("MlpPolicy", ConcaveBandit(), cost_limit=float("nan"))
    with pytest.raises(ValueError, match="lambda_lr"):
        PPOLagrangian("MlpPolicy", ConcaveBandit(), lambda_lr=0.0)


def _sampled_costs(model, n=2000):
    env = ConcaveBandit()
    actions, _ = model.predict(np.zeros((n, 1), np.float32), deterministic=False)
    return np.array([env.step(a)[4]["cost"] for a in actions])


def _mean_cost(model, n=2000):
    return float(_sampled_costs(model, n).mean())


@pytest.mark.parametrize("lagrangian", ["gradient", "pid"])
def test_lagrangian_meets_the_limit_with_its_defaults(lagrangian):
    # ConcaveBandit: constrained optimum x = 0.3, lambda* = 1.4. Only the rollout size is
    # set (for the suite's time); every multiplier setting is the default, so the
    # COST_QUANTILE-quantile of the sampled costs is held at the limit.
    model = PPOLagrangian(
        "MlpPolicy", ConcaveBandit(0.3), lagrangian=lagrangian, n_steps=256, batch_size=64, seed=0
    )
    assert model.cost_limit == 0.3  # read from the env's attribute
    model.learn(20_000)
    costs = _sampled_costs(model)
    assert 0.85 * 0.3 <= np.quantile(costs, COST_QUANTILE) <= 0.3 * 1.1
    assert 0.7 * 0.3 <= costs.mean() <= 0.3
    x = (model.predict(np.zeros(1, np.float32), deterministic=True)[0][0] + 1) / 2
    assert 0.75 * 0.3 <= x <= 0.3 * 1.05  # the deterministic policy too
    assert 0.7 < model.lambdas[0] < 2.5  # near lambda* = 1.4


def test_plain_ppo_violates_the_limit():
    ppo = PPO("MlpPolicy", ConcaveBandit(0.3), n_steps=256, batch_size=64, seed=0).learn(6_000)
    assert _mean_cost(ppo) > 0.8  # reward-greedy: x -> 1


def test_cost_limit_from_info_and_two_costs():
    model = PPOLagrangian(
        "MlpPolicy", ConcaveBandit(0.25, advertise=False), n_steps=32, batch_size=32
    )
    assert model.cost_limit is None
    model.learn(64)
    assert model.cost_limit == 0.25
    two = PPOLagrangian("MlpPolicy", TwoCostChain(), n_steps=48, batch_size=16)
    assert two.n_costs == 2 and two.cost_names == ["heat", "noise"]
    assert two.cost_limit == [0.5, 1.0]
    two.learn(96)
    assert two.lambdas.shape == (2,)
    assert two.rollout_buffer.costs.shape[-1] == 2


def test_save_load_round_trip(tmp_path):
    model = PPOLagrangian(
        "MlpPolicy",
        TwoCostChain(),
        n_steps=48,
        batch_size=16,
        seed=1,
        lambda_lr=0.5,
        lambda_optimizer="Adam",  # an optimizer with a state to round-trip
    )
    model.learn(480)
    assert model.lambdas[0] > 0  # a random policy violates the heat limit (0.5), never noise (1.0)
    model.save(tmp_path / "agent.zip")
    loaded = PPOLagrangian.load(tmp_path / "agent.zip", env=TwoCostChain())
    assert np.array_equal(loaded.lambdas, model.lambdas)
    assert loaded.cost_names == ["heat", "noise"] and loaded.cost_limit == [0.5, 1.0]
    for a, b in zip(
        model.policy.cost_net.parameters(), loaded.policy.cost_net.parameters(), strict=True
    ):
        assert th.equal(a, b)
    opt_a = model.lagrange.optimizer.state_dict()["state"][0]
    opt_b = loaded.lagrange.optimizer.state_dict()["state"][0]
    assert all(th.equal(opt_a[k], opt_b[k]) for k in opt_a)
    obs = np.array([[0.0], [1 / 3], [2 / 3]], dtype=np.float32)
    assert np.array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )
    with th.no_grad():
        t = th.as_tensor(obs)
        assert th.equal(model.policy.predict_cost_values(t), loaded.policy.predict_cost_values(t))
    loaded.learn(96)  # and it keeps training


def test_pid_state_survives_save_load(tmp_path):
    model = PPOLagrangian(
        "MlpPolicy", ConcaveBandit(0.1), lagrangian="pid", n_steps=64, batch_size=32, pid_ki=0.5
    )
    model.learn(256)
    model.save(tmp_path / "pid.zip")
    loaded = PPOLagrangian.load(tmp_path / "pid.zip")
    assert loaded.lagrangian == "pid"
    for key, value in model.lagrange.state_dict().items():
        assert th.equal(value, loaded.lagrange.state_dict()[key])
    assert loaded.lambdas[0] > 0


def test_missing_cost_is_an_error():
    class NoCost(ConcaveBandit):
        def step(self, action):
            obs, r, term, trunc, _ = super().step(action)
            return obs, r, term, trunc, {}

    with pytest.raises(KeyError, match=r"info\['cost'\]"):
        PPOLagrangian("MlpPolicy", NoCost(), n_steps=16, batch_size=16).learn(16)


def test_logger_records_lambda_and_costs(tmp_path):
    from stable_baselines3.common.logger import configure

    model = PPOLagrangian("MlpPolicy", ConcaveBandit(0.3), n_steps=64, batch_size=32)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(256)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in ("rollout/ep_cost_mean", "train/lambda", "train/cost_value_loss"):
        assert key in header


@pytest.mark.parametrize("critic", ["separate", "shared"])
def test_cost_critic_is_trained_and_round_trips(tmp_path, critic):
    model = PPOLagrangian(
        "MlpPolicy",
        ConcaveBandit(0.3),
        n_steps=64,
        batch_size=32,
        policy_kwargs={"cost_critic": critic},
    )
    head = model.policy.cost_net if critic == "shared" else model.policy.cost_net[-1]
    assert isinstance(head, th.nn.Linear) and head.out_features == 1
    optimised = {id(p) for g in model.policy.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in optimised for p in model.policy.cost_net.parameters())
    before = head.weight.clone()
    model.learn(128)
    assert not th.equal(before, head.weight)  # trained by the optimizer
    model.save(tmp_path / "agent.zip")
    loaded = PPOLagrangian.load(tmp_path / "agent.zip")
    assert loaded.policy.cost_critic == critic
    for a, b in zip(
        model.policy.cost_net.parameters(), loaded.policy.cost_net.parameters(), strict=True
    ):
        assert th.equal(a, b)
    with pytest.raises(ValueError, match="cost_critic"):
        PPOLagrangian("MlpPolicy", ConcaveBandit(), policy_kwargs={"cost_critic": "both"})


def test_search_monitor_checkpoints_where_the_agent_is_whole():
    from stable_baselines3 import TD3

    from agents.callbacks import SearchMonitor

    saved_at = []
    monitor = SearchMonitor(32, lambda m: saved_at.append(m.num_timesteps), 0.0, progress=False)
    agent = PPOLagrangian("MlpPolicy", ConcaveBandit(), n_steps=8, batch_size=8, seed=0)
    agent.learn(32, callback=monitor)
    assert saved_at == [8, 16, 24]  # each rollout start after an update, never mid-rollout
    assert [step for step, _ in monitor.lambda_history] == [0, 8, 16, 24, 32]
    assert monitor.lambda_history[-1][1] == pytest.approx(agent.lambdas.tolist())
    assert monitor.episodes == 32  # one-step episodes

    saved_at.clear()
    monitor = SearchMonitor(6, lambda m: saved_at.append(m.num_timesteps), 0.0, progress=False)
    TD3("MlpPolicy", ConcaveBandit(), learning_starts=2, seed=0).learn(6, callback=monitor)
    assert saved_at == [1, 2, 3, 4, 5]  # off-policy: at each rollout start after an episode end
    never = SearchMonitor(32, lambda m: saved_at.append(-1), 3600.0, progress=False)
    agent.learn(16, callback=never)
    assert -1 not in saved_at
    with pytest.raises(ValueError, match="every_s"):
        SearchMonitor(1, None, -1.0)
