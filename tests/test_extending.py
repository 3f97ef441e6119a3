"""Extending the package: a cost, a reward variant, an evaluator, a task and an algorithm,
each added in a few lines where docs/architecture.md says, and used through gym.make / the
registry. Each check compares with a value computed here by hand."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import prune_env  # noqa: F401  (registers the ids)
from agents import registry
from prune_env import costs, evaluation, tasks
from prune_env.costs import CostModel
from prune_env.evaluators import Evaluator


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


DROP = object()  # make(argument=DROP): leave the argument to its default


def make(**kwargs) -> gym.Env:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(200, 3, 8, 8, generator=generator)
    labels = torch.randint(0, 10, (200,), generator=generator)
    defaults = dict(
        model=tiny_cnn(),
        example_input=images[:2],
        train_data=(images, labels),
        reward_size=100,
        bn_calib_size=32,
        mode="oneshot",
        device="cpu",
    )
    merged = {**defaults, **kwargs}
    return gym.make("ModelPrune-v0", **{k: v for k, v in merged.items() if v is not DROP})


def one_episode(env: gym.Env, ratio: float) -> dict:
    env.reset(seed=0)
    return env.step(np.full(env.action_space.shape, ratio, dtype=np.float32))[4]


# --- a cost: the mean keep ratio over the layers, from the kept counts alone
class MeanKeep(CostModel):
    analytic = True

    def __init__(self, spec, context):
        super().__init__(spec, context)
        self.sizes = np.array([u.size for u in context.engine.units])

    def fraction(self, candidate):
        return float(np.mean(candidate.counts / self.sizes))


def test_a_new_cost(monkeypatch):
    monkeypatch.setattr(costs, "COST_MODELS", dict(costs.COST_MODELS))
    costs.register_cost("mean_keep", MeanKeep)
    env = make(cost="mean_keep", budget=0.5)
    info = one_episode(env, 0.3)
    # two groups of 8 and 16 channels: round(2.4) = 2 and round(4.8) = 5 kept
    assert info["kept"] == [2, 5]
    assert info["cost"] == pytest.approx((2 / 8 + 5 / 16) / 2)
    assert info["constraint_satisfied"]
    assert env.unwrapped.analytic_costs([0.3, 0.3]) == {"mean_keep": info["cost"]}
    with pytest.raises(ValueError, match="already registered"):
        costs.register_cost("mean_keep", MeanKeep)


# --- a reward variant: top-2 accuracy
def top2(logits, log_probs, labels, base):
    return int((logits.topk(2, dim=1).indices == labels[:, None]).any(1).sum())


def test_a_new_reward_variant(monkeypatch):
    monkeypatch.setattr(evaluation, "REWARD_VARIANTS", dict(evaluation.REWARD_VARIANTS))
    evaluation.register_reward("top2", top2)
    env = make(reward="top2", channels_last=False)
    info = one_episode(env, 0.5)
    net = env.unwrapped.pruned_network([0.5, 0.5])
    with torch.no_grad():
        logits = net(env.unwrapped.reward_x)
    expected = top2(logits, None, env.unwrapped.reward_y, None) / 100
    assert info["reward"] == info["reward_metrics"]["top2"] == pytest.approx(expected)
    assert info["reward_metrics"]["accuracy"] <= info["reward"]


# --- an evaluator: the reward is the share of parameters removed (a toy with a known answer)
class ParamsRemoved(Evaluator):
    def _score(self, candidate, costs, start):
        removed = 1 - candidate.params / self.engine.total_params
        return {"accuracy": removed, "reward": removed, "reward_metrics": {"removed": removed},
                "early_stopped": False, "reward_images": 0, "timing": {}}  # fmt: skip

    def task(self):
        return {"evaluator": "params removed"}


def test_a_new_evaluator():
    env = make(evaluator=ParamsRemoved)
    info = one_episode(env, 0.5)
    engine = env.unwrapped.engine
    assert info["reward"] == pytest.approx(1 - info["params"] / engine.total_params)
    assert 0 < info["reward"] < 1 and env.unwrapped.task() == {"evaluator": "params removed"}
    assert env.unwrapped.cache_info()["misses"] == 1
    one_episode(env, 0.5)
    assert env.unwrapped.cache_info()["hits"] == 1  # the shared cache answers the second
    with pytest.raises(TypeError, match="Evaluator subclass"):
        make(evaluator=object)


# --- a task: a named scale that gym.make and the job read
def test_a_new_task(monkeypatch):
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    spec = dataclasses.replace(tasks.get_task("quick"), name="tiny", reward_size=60)
    tasks.register_task(spec)
    env = make(task="tiny", reward_size=DROP)
    assert len(env.unwrapped.reward_y) == 60  # the task's reward split
    assert env.unwrapped.task()["width_mult"] == spec.width_mult
    assert len(make(task="tiny", reward_size=80).unwrapped.reward_y) == 80  # an argument wins
    with pytest.raises(ValueError, match="unknown task"):
        make(task="no-such-task")


# --- an algorithm: any stable-baselines3 class, by name
def test_a_new_algorithm(monkeypatch):
    from stable_baselines3 import A2C

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("a2c_penalty", registry.sb3_builder(A2C, penalty=True), "A2C on a penalty")
    result = registry.run("a2c_penalty", make(), total_timesteps=10, n_steps=5, device="cpu")
    assert result.algo == "a2c_penalty" and result.env_steps == 10
    assert len(result.episodes) == 10  # oneshot: one step per episode
    with pytest.raises(ValueError, match="unknown algorithm"):
        registry.get("a2c_penalty_typo")
