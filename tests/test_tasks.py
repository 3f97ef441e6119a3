"""Tasks (prune_env.tasks): defined once, by name, and read by the job, its presets and prune()."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from torch import nn

import prune_env
from prune_env.tasks import TASKS, TaskSpec, get_task, register_task
from prune_pipeline import api
from prune_pipeline.config import ENV_KEYS_WITH_OPTIONS, ConfigError, JobConfig
from prune_pipeline.presets import agent_arguments
from prune_pipeline.task import env_arguments

# Every value differs from the quick and paper tasks', so each one is seen to travel.
TINY = TaskSpec(
    name="tiny",
    description="a test task",
    width_mult=0.125,
    base_epochs=2,
    reward_size=96,
    total_timesteps=640,
    n_steps=32,
    batch_size=16,
    finetune_epochs=4,
)


@pytest.fixture
def tiny():
    """TINY registered for one test, and the registry as it was afterwards."""
    before = dict(TASKS)
    yield register_task(TINY)
    TASKS.clear()
    TASKS.update(before)


def test_the_shipped_tasks_keep_the_presets_values():
    quick, paper = get_task("quick"), get_task("paper")
    assert quick.env_kwargs() == {"width_mult": 0.25, "base_train_epochs": 3, "reward_size": 1000}
    assert (quick.total_timesteps, quick.finetune_epochs) == (15_000, 1)
    assert quick.on_policy_kwargs() == {"n_steps": 256, "batch_size": 64}
    assert paper.env_kwargs() == {
        "width_mult": 1.0,
        "base_train_epochs": None,  # the architecture's full recipe
        "reward_size": 20_000,
    }
    assert (paper.total_timesteps, paper.finetune_epochs) == (100_000, 30)
    assert paper.on_policy_kwargs() == {"n_steps": 2048, "batch_size": 256}


def test_a_tasks_values_reach_the_jobs_env_and_agent_arguments(tiny):
    cfg = JobConfig(env="VGG16Prune-v0", preset="tiny").validate().resolve()
    env = env_arguments(cfg)
    assert (env["width_mult"], env["base_train_epochs"], env["reward_size"]) == (0.125, 2, 96)
    assert (cfg.total_timesteps, cfg.finetune_epochs) == (640, 4)
    assert agent_arguments("ppo_lag", "tiny") == {"device": "cpu", "n_steps": 32, "batch_size": 16}
    assert agent_arguments("sac_penalty", "tiny") == {"device": "cpu"}  # off-policy: no rollouts
    # an option given on the command line overrides the task
    cfg = JobConfig(env="VGG16Prune-v0", preset="tiny", reward_size=50, base_epochs=1).resolve()
    env = env_arguments(cfg)
    assert (env["width_mult"], env["base_train_epochs"], env["reward_size"]) == (0.125, 1, 50)


def test_prune_shares_the_jobs_defaults_and_reads_its_task(tiny, monkeypatch):
    job = JobConfig()
    defaults = inspect.signature(api.prune).parameters
    for name in ("budget", "cost", "algo", "granularity", "finetune_lr", "seed", "device"):
        assert defaults[name].default == getattr(job, name), name
    assert defaults["preset"].default == job.preset == "quick"
    made, ran = [], []
    monkeypatch.setattr(prune_env, "make", lambda env_id, **kwargs: made.append(kwargs))
    monkeypatch.setattr(api, "run_job", lambda cfg, task: ran.append(cfg))
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    api.prune(model, (torch.randn(8, 4), torch.arange(8) % 2), preset="tiny", device="cpu")
    assert made[0]["reward_size"] == 96 and made[0]["budget"] == job.budget
    assert (ran[0].total_timesteps, ran[0].finetune_epochs, ran[0].preset) == (640, 4, "tiny")


def test_an_unknown_task_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match=r"unknown task 'nope'; expected one of \['quick', 'pap"):
        get_task("nope")
    with pytest.raises(ConfigError, match="unknown --preset 'nope'"):
        JobConfig(preset="nope").validate()
    with pytest.raises(ValueError, match="unknown --preset 'nope'"):
        api.prune(nn.Linear(4, 2), (torch.randn(8, 4), torch.arange(8) % 2), preset="nope")
    with pytest.raises(TypeError, match="task must be a task name or a TaskSpec"):
        get_task(3)  # type: ignore[arg-type]


def test_a_task_is_checked_and_its_name_is_not_taken_twice(tiny):
    with pytest.raises(ValueError, match="width_mult must be a number > 0"):
        dataclasses.replace(TINY, width_mult=0.0)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        dataclasses.replace(TINY, n_steps=0)
    with pytest.raises(ValueError, match="model and dataset are given together"):
        dataclasses.replace(TINY, model="vgg16")
    with pytest.raises(ValueError, match="a task named 'tiny' exists"):
        register_task(TINY)
    with pytest.raises(ConfigError, match="--finetune-epochs: TaskSpec finetune_epochs must"):
        JobConfig(finetune_epochs=-1).validate()  # the job names its option
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY.reward_size = 1  # type: ignore[misc]
    # the task's env arguments have options of their own: --env-kwargs may not set them
    assert ENV_KEYS_WITH_OPTIONS["base_train_epochs"] == "--base-epochs"
    assert ENV_KEYS_WITH_OPTIONS["reward_size"] == "--reward-size"


def test_a_task_that_names_its_network_picks_the_env(tiny):
    register_task(dataclasses.replace(TINY, name="r56", model="resnet56", dataset="cifar10"))
    assert get_task("r56").env_kwargs()["model"] == "resnet56"
    assert JobConfig(preset="r56").validate().resolve().env == "ResNet56Prune-v0"
    with pytest.raises(ConfigError, match="--preset r56 prunes ResNet56Prune-v0, not VGG16"):
        JobConfig(preset="r56", env="VGG16Prune-v0").validate()
    assert "model" not in env_arguments(JobConfig(preset="r56").resolve())  # the id brings it
