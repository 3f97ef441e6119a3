"""The env's settings: gym.make's keyword arguments map onto four frozen dataclasses in one
place, which refuses unknown keys and bad values with the argument's name."""

from __future__ import annotations

import dataclasses

import pytest

from prune_env import tasks
from prune_env.settings import ENV_ARGUMENTS, EnvSettings, env_settings


def test_every_argument_lands_in_its_group():
    s = env_settings(model="vgg16", budget=0.3, cost="flops", mode="oneshot", reward_size=77,
                     width_mult=0.5, finetune_steps=4)  # fmt: skip
    assert isinstance(s, EnvSettings)
    assert (s.costs.budget, s.costs.specs[0].name) == (0.3, "flops")
    assert (s.actions.mode, s.reward.reward_size, s.task.width_mult) == ("oneshot", 77, 0.5)
    assert s.reward.finetune_steps == 4 and s.task.model == "vgg16"
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.actions.mode = "layerwise"
    # every argument belongs to exactly one group
    assert set(ENV_ARGUMENTS.values()) == {"task", "actions", "reward", "costs"}


def test_unknown_keys_and_bad_values_are_refused_by_name():
    with pytest.raises(TypeError, match=r"unknown PruneEnv argument\(s\) \['budgett'\]"):
        env_settings(model="vgg16", budgett=0.1)
    with pytest.raises(TypeError, match="needs model="):
        env_settings(budget=0.1)
    for kwargs, message in [
        ({"budget": 1.5}, "budget of params must be a number in"),
        ({"mode": "sideways"}, "unknown mode 'sideways'"),
        ({"reward": "joy"}, "unknown reward 'joy'"),
        ({"eval_batch_size": 0}, "eval_batch_size must be an integer >= 1"),
        ({"bn_recalibrate": "sometimes"}, "bn_recalibrate must be"),
        ({"latency_repeats": 0}, "latency_repeats must be an integer >= 1"),
        ({"model": 3}, "model must be an architecture name or an nn.Module"),
        ({"base_numerics": "fast"}, "base_numerics must be one of"),
    ]:
        with pytest.raises(ValueError, match=message):
            env_settings(**{"model": "vgg16", **kwargs})


def test_bn_recalibrate_spellings_and_the_calibration_split():
    assert env_settings(model="vgg16", bn_recalibrate=True).reward.bn_recalibrate == "calib"
    off = env_settings(model="vgg16", bn_recalibrate=False).reward
    assert (off.bn_recalibrate, off.bn_calib_size) == ("off", 0)  # no pass, no images set aside


def test_a_task_gives_defaults_and_an_argument_wins(monkeypatch):
    quick = tasks.get_task("quick")
    s = env_settings(model="vgg16", task="quick")
    assert (s.task.width_mult, s.task.base_train_epochs, s.reward.reward_size) == (
        quick.width_mult, quick.base_epochs, quick.reward_size,
    )  # fmt: skip
    assert env_settings(model="vgg16", task="quick", reward_size=5).reward.reward_size == 5
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    tasks.register_task(dataclasses.replace(quick, name="r18", model="resnet18", dataset="cifar10"))
    assert env_settings(task="r18").task.model == "resnet18"
    with pytest.raises(ValueError, match="prunes 'resnet18', not this env's model 'vgg16'"):
        env_settings(model="vgg16", task="r18")
    with pytest.raises(ValueError, match="unknown task"):
        env_settings(model="vgg16", task="nope")
