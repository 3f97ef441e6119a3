"""Bounded action distributions: exact densities, actions inside the bounds, save/load."""

import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO

from agents import PPOLagrangian
from agents.distributions import BetaDistribution
from agents.policies import BoundedActorCriticPolicy
from tests.toy_envs import ConcaveBandit


def _beta_log_pdf(u, a, b):
    return (
        (a - 1) * math.log(u)
        + (b - 1) * math.log(1 - u)
        + math.lgamma(a + b)
        - math.lgamma(a)
        - math.lgamma(b)
    )


def test_beta_log_prob_and_entropy_by_hand():
    # action dims on [0.05, 1] and [-2, 2]; pre-softplus params chosen so a, b are round-ish
    dist = BetaDistribution(2, low=[0.05, -2.0], high=[1.0, 2.0])
    z = th.tensor([[0.3, -1.0, 2.0, 0.0]])  # a = 1 + softplus(z[:2]), b = 1 + softplus(z[2:])
    dist.proba_distribution(z)
    sp = [math.log1p(math.exp(v)) for v in (0.3, -1.0, 2.0, 0.0)]
    a, b = [1 + sp[0], 1 + sp[1]], [1 + sp[2], 1 + sp[3]]
    actions = th.tensor([[0.4, 1.5]])
    u = [(0.4 - 0.05) / 0.95, (1.5 + 2.0) / 4.0]
    expected = sum(_beta_log_pdf(u[i], a[i], b[i]) for i in range(2)) - math.log(0.95 * 4.0)
    assert dist.log_prob(actions).item() == pytest.approx(expected, rel=1e-5)
    # entropy: -E[log p] by numerical integration of the stretched density
    grid = np.linspace(1e-5, 1 - 1e-5, 200_001)
    entropy = 0.0
    for i, width in enumerate((0.95, 4.0)):
        logp = np.array([_beta_log_pdf(x, a[i], b[i]) for x in grid[::100]])
        p = np.exp(logp)
        entropy += -np.trapezoid(p * logp, grid[::100]) + math.log(width)
    assert dist.entropy().item() == pytest.approx(entropy, abs=2e-3)


def test_beta_actions_stay_inside_the_bounds_and_the_mode_is_the_mean():
    dist = BetaDistribution(1, low=[0.05], high=[1.0])
    for z in ([[-30.0, 30.0]], [[30.0, -30.0]], [[0.0, 0.0]]):  # mass piled at either bound
        dist.proba_distribution(th.tensor(z))
        samples = th.stack([dist.sample() for _ in range(2000)])
        assert (samples > 0.05).all() and (samples < 1.0).all()
        assert th.isfinite(dist.log_prob(samples.reshape(-1, 1))).all()
        a, b = dist.distribution.concentration1, dist.distribution.concentration0
        mode = dist.mode()
        assert mode.item() == pytest.approx((0.05 + 0.95 * a / (a + b)).item())
        assert 0.05 < mode.item() < 1.0
    with pytest.raises(ValueError, match="finite bounds"):
        BetaDistribution(1, low=[0.0], high=[np.inf])


def test_gradient_survives_at_the_bound():
    # A policy piled against the lower bound still gets a gradient from its samples.
    dist = BetaDistribution(1, low=[0.05], high=[1.0])
    z = th.tensor([[-8.0, 8.0]], requires_grad=True)
    dist.proba_distribution(z)
    actions = th.stack([dist.sample().detach() for _ in range(64)]).reshape(-1, 1)
    dist.proba_distribution(z)
    advantages = actions[:, 0] - actions[:, 0].mean()  # larger keep ratios were better
    (-(dist.log_prob(actions) * advantages).mean()).backward()
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("action_dist", ["beta", "squashed_gaussian", "gaussian"])
def test_policies_act_inside_the_bounds_and_round_trip(tmp_path, action_dist):
    model = PPOLagrangian("MlpPolicy", ConcaveBandit(0.3), n_steps=64, batch_size=32, seed=0,
                          policy_kwargs={"action_dist": action_dist})  # fmt: skip
    model.learn(128)
    obs = np.zeros((5, 1), np.float32)
    if action_dist != "gaussian":  # the policy's own actions, before SB3 clips or rescales
        with th.no_grad():
            for deterministic in (True, False):
                raw = model.policy(th.zeros(500, 1), deterministic=deterministic)[0]
                assert ((raw > -1) & (raw < 1)).all()
    model.save(tmp_path / "m.zip")
    loaded = PPOLagrangian.load(tmp_path / "m.zip")
    assert loaded.policy.action_dist_name == model.policy.action_dist_name
    assert np.array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )


def test_beta_is_the_default_on_bounded_boxes_only():
    bounded = PPOLagrangian("MlpPolicy", ConcaveBandit(0.3))
    assert isinstance(bounded.policy.action_dist, BetaDistribution)
    assert not hasattr(bounded.policy, "log_std")
    optimised = {id(p) for g in bounded.policy.optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in bounded.policy.parameters()} == optimised

    obs_space = spaces.Box(-1, 1, (1,), np.float32)
    unbounded = spaces.Box(-np.inf, np.inf, (1,), np.float32)  # SB3's algorithms refuse it
    policy = BoundedActorCriticPolicy(obs_space, unbounded, lambda _: 3e-4)
    assert not isinstance(policy.action_dist, BetaDistribution)
    with pytest.raises(ValueError, match="finite bounds"):
        BoundedActorCriticPolicy(obs_space, unbounded, lambda _: 3e-4, action_dist="beta")
    with pytest.raises(ValueError, match="action_dist"):
        PPOLagrangian("MlpPolicy", ConcaveBandit(0.3), policy_kwargs={"action_dist": "cauchy"})


def test_plain_ppo_takes_the_bounded_policy():
    model = PPO(BoundedActorCriticPolicy, ConcaveBandit(0.3), n_steps=64, batch_size=32, seed=0)
    model.learn(128)
    assert isinstance(model.policy.action_dist, BetaDistribution)


@pytest.mark.parametrize("name", ["ppo_lag", "ppo_pid_lag", "ppo_penalty", "trpo_penalty"])
def test_registry_on_policy_agents_draw_from_the_beta(tmp_path, name):
    from agents import registry

    agent, _ = registry.make_agent(name, ConcaveBandit(0.3), seed=0, n_steps=64, batch_size=32)
    assert isinstance(agent.policy.action_dist, BetaDistribution)
    agent.learn(128)
    agent.save(tmp_path / "a.zip")
    loaded = registry.get(name).agent_class.load(tmp_path / "a.zip")
    obs = np.zeros((3, 1), np.float32)
    same = agent.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    assert np.array_equal(*same)


def test_exp_concentration_by_hand_and_capped():
    from agents.distributions import LOG_CONCENTRATION_MAX as M

    def g(z):  # exp of the softly capped output
        return math.exp(M - math.log1p(math.exp(M - z)))

    dist = BetaDistribution(1, low=[0.0], high=[1.0], concentration="exp")
    dist.proba_distribution(th.tensor([[1.5, 3.0]]))  # a = 1 + ~e^1.5, b = 1 + ~e^3
    a, b = 1 + g(1.5), 1 + g(3.0)
    assert a == pytest.approx(1 + math.exp(1.5), rel=1e-3)  # the cap is far away
    assert dist.log_prob(th.tensor([[0.2]])).item() == pytest.approx(
        _beta_log_pdf(0.2, a, b), rel=1e-5
    )
    # Far past the cap: float32 log-probabilities still agree with float64 (PPO's ratio needs
    # them to), and the output keeps a gradient that brings it back.
    z = th.tensor([[40.0, 41.0]], requires_grad=True)
    dist.proba_distribution(z)
    u = th.tensor([[0.45]])
    log_p = dist.log_prob(u)
    exact = BetaDistribution(1, low=[0.0], high=[1.0], concentration="exp")
    exact.proba_distribution(z.detach().double())
    assert abs(log_p.item() - exact.log_prob(u.double()).item()) < 0.05
    log_p.sum().backward()
    assert (z.grad.abs() > 0).all()
    assert th.isfinite(dist.sample()).all()
    with pytest.raises(ValueError, match="concentration"):
        BetaDistribution(1, low=[0.0], high=[1.0], concentration="relu")


def test_exp_concentration_reaches_a_precise_keep_ratio_in_few_adam_steps():
    # The diagnosis behind the "exp" default: Adam moves each weight by about its learning
    # rate per step, so a softplus head cannot reach the concentration (hundreds) of a precise
    # small keep ratio in a few hundred steps; an exp head can (its step changes a factor).
    th.manual_seed(0)
    target = th.distributions.Beta(th.tensor(20.0), th.tensor(1980.0)).sample((64, 1))
    reached = {}
    for concentration in ("softplus", "exp"):
        dist = BetaDistribution(1, low=[0.0], high=[1.0], concentration=concentration)
        head = th.nn.Linear(4, 2)
        optimizer = th.optim.Adam(head.parameters(), lr=1e-2)
        latent = th.full((64, 4), 0.5)
        for _ in range(300):
            dist.proba_distribution(head(latent))
            loss = -dist.log_prob(target).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        a, b = dist.distribution.concentration1[0, 0], dist.distribution.concentration0[0, 0]
        reached[concentration] = ((a + b).item(), (a / (a + b)).item())
    assert reached["exp"][0] > 10 * reached["softplus"][0]
    assert reached["exp"][1] == pytest.approx(0.01, rel=0.2)


@pytest.mark.parametrize("name", ["ppo_lag", "ppo_pid_lag", "ppo_penalty", "trpo_penalty"])
def test_agents_use_the_exp_concentration_and_keep_it_when_loaded(tmp_path, name):
    from agents import registry
    from agents.policies import BETA_CONCENTRATION

    assert BETA_CONCENTRATION == "exp"
    agent, _ = registry.make_agent(name, ConcaveBandit(0.3), seed=0, n_steps=64, batch_size=32)
    assert agent.policy.action_dist.concentration == "exp"
    agent.save(tmp_path / "a.zip")
    loaded = registry.get(name).agent_class.load(tmp_path / "a.zip")
    assert loaded.policy.action_dist.concentration == "exp"
    assert PPOLagrangian("MlpPolicy", ConcaveBandit(0.3)).policy.action_dist.concentration == "exp"


def test_an_agent_saved_before_the_option_loads_with_softplus(tmp_path):
    # Such an agent's saved policy_kwargs lack beta_concentration: it was trained with softplus
    # and must act as it did.
    model = PPOLagrangian("MlpPolicy", ConcaveBandit(0.3), n_steps=64, batch_size=32, seed=0,
                          policy_kwargs={"beta_concentration": "softplus"})  # fmt: skip
    model.learn(128)
    del model.policy_kwargs["beta_concentration"]
    model.save(tmp_path / "old.zip")
    loaded = PPOLagrangian.load(tmp_path / "old.zip")
    assert loaded.policy.action_dist.concentration == "softplus"
    obs = np.linspace(-1, 1, 5, dtype=np.float32).reshape(5, 1)
    assert np.array_equal(
        model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0]
    )
