"""RayVecEnv: two local Ray actors give exactly what the in-process VecEnv gives."""

import json
from functools import partial

import gymnasium as gym
import numpy as np
import pytest

import prune_env
from agents import registry
from tests.conftest import TINY

ray = pytest.importorskip("ray")  # the optional extra; scripts/setup.sh installs it

# prune_env.make, not gym.make: unpickling it in an actor imports prune_env (registering ids).
MAKE = partial(prune_env.make, "VGG11Prune-v0", **{**TINY, "width_mult": 0.125, "budget": 0.3})


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _episodes(vec_env, **extra):
    result = registry.run("ppo_lag", MAKE, total_timesteps=128, seed=3, n_envs=2, vec_env=vec_env,
                          n_steps=32, batch_size=32, **extra)  # fmt: skip
    result.agent.get_env().close()
    return result


def test_ray_actors_match_the_in_process_vec_env(local_ray):
    ours = _episodes("ray", vec_env_kwargs={"num_cpus": 1})
    reference = _episodes("dummy")
    assert ours.env_steps == reference.env_steps == 128
    key = lambda e: (e.env_steps, e.keep_ratios)  # noqa: E731  (order within a step may differ)
    a, b = sorted(ours.episodes, key=key), sorted(reference.episodes, key=key)
    assert len(a) == len(b) == 16
    for x, y in zip(a, b, strict=True):
        assert x.keep_ratios == y.keep_ratios
        assert x.reward == y.reward and x.cost == y.cost and x.feasible == y.feasible
    np.testing.assert_array_equal(ours.agent.lambdas, reference.agent.lambdas)


def test_ray_vec_env_forwards_attributes_and_methods(local_ray):
    from agents.ray_vec_env import RayVecEnv

    venv = RayVecEnv([MAKE, MAKE], num_cpus=0.5)
    try:
        assert venv.get_attr("n_layers") == [8, 8]
        assert venv.env_method("analytic_costs", [1.0] * 8, indices=[1]) == [{"params": 1.0}]
        assert venv.env_is_wrapped(gym.wrappers.PassiveEnvChecker) == [True, True]
        venv.seed(0)
        obs = venv.reset()
        assert obs.shape == (2, 13)
        obs, rewards, dones, infos = venv.step(np.full((2, 1), 0.5, dtype=np.float32))
        assert rewards.shape == (2,) and not dones.any() and infos[0]["cost"] == 0.0
    finally:
        venv.close()
    with pytest.raises(ValueError, match="at least one"):
        RayVecEnv([])


def test_the_rllib_example_trains_and_rolls_its_policy_out(local_ray, capsys):
    pytest.importorskip("ray.rllib")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "rllib_ppo.py"
    spec = importlib.util.spec_from_file_location("rllib_ppo", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    env_kwargs = {**TINY, "width_mult": 0.125}
    assert example.main(["--env", "VGG11Prune-v0", "--env-kwargs", json.dumps(env_kwargs),
                         "--iterations", "1", "--batch", "64", "--budget", "0.3"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "iteration 1: penalised return" in out and "mean policy: accuracy" in out
