"""Evaluation logs and the surrogate envs learned from them."""

import gzip
import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import prune_env
from prune_env.surrogate import SHIPPED_LOGS, SurrogateError, fidelity, load_log
from prune_pipeline import bench as benchmark
from tests.conftest import TINY

REAL = {**TINY, "pretrained": True, "base_train_epochs": 1, "train_base": True, "width_mult": 0.125}


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory):
    """80 real evaluations of a tiny trained VGG-11 on synthetic data."""
    path = tmp_path_factory.mktemp("log") / "vgg11.jsonl"
    env = gym.make("VGG11Prune-v0", **REAL, budget=1.0, cache_size=0, eval_log=path).unwrapped
    rng = np.random.default_rng(0)
    for _ in range(80):
        ratios = rng.uniform(0.05, 1.0, env.n_layers) ** rng.uniform(0.5, 3)
        env.evaluate(ratios)
    return path, env


def test_the_env_logs_every_fresh_evaluation(tiny_log):
    path, env = tiny_log
    records = load_log(path)
    assert len(records) == 80
    first = records[0]
    assert first["task"]["arch"] == "vgg11" and first["task"]["width_mult"] == 0.125
    assert first["task"]["sizes"] == env._sizes.tolist()
    params, _ = env.engine.resources(np.asarray(first["kept"]))
    assert first["params_fraction"] == pytest.approx(params / env.engine.total_params)
    assert 0 <= first["accuracy"] <= 1 and first["costs"]["params"] == first["params_fraction"]


def test_surrogate_has_the_real_spaces_and_exact_costs(tiny_log):
    path, real = tiny_log
    env = gym.make("VGG11PruneSurrogate-v0", log=path, min_tau=-1.0, budget=0.3)
    sur = env.unwrapped
    assert env.observation_space == gym.make("VGG11Prune-v0", **REAL).observation_space
    assert env.action_space == real.action_space
    assert set(sur.fidelity) == {"kendall_tau", "mae", "n_train", "n_test"}
    assert sur.fidelity["n_test"] == 16 and 0 <= sur.fidelity["mae"] <= 1
    # the network's structure only: no reward, calibration or fine-tuning images at all
    assert not any(hasattr(sur, a) for a in ("reward_x", "calib_x", "pool_x", "_latency_batch"))
    assert sur.task() == real.task()
    rng = np.random.default_rng(3)
    for _ in range(5):
        ratios = rng.uniform(0.05, 1, real.n_layers)
        env.reset(seed=0)
        for r in ratios:
            _, reward, terminated, _, info = env.step(np.array([r], dtype=np.float32))
        assert terminated and info["surrogate"] and 0 <= reward <= 1
        assert info["cost"] == pytest.approx(real.analytic_costs(ratios)["params"])
        assert info["kept"] == real._counts(np.clip(ratios, 0.05, 1)).tolist()
    check_env(gym.make("VGG11PruneSurrogate-v0", log=path, min_tau=-1.0).unwrapped)


def test_surrogate_predicts_the_logged_ranking_better_than_chance(tiny_log):
    path, _ = tiny_log
    result = fidelity(load_log(path), holdout=0.25, seed=1)
    assert result["kendall_tau"] > 0.3  # trained tiny net: accuracy follows the kept size


def test_surrogate_refuses_what_it_cannot_stand_in_for(tiny_log, tmp_path):
    path, _ = tiny_log
    with pytest.raises(SurrogateError, match=r"min_tau=1\.01"):
        gym.make("VGG11PruneSurrogate-v0", log=path, min_tau=1.01)
    with pytest.raises(ValueError, match="params' and 'flops' costs only"):
        gym.make("VGG11PruneSurrogate-v0", log=path, min_tau=-1.0, cost="latency")
    lines = path.read_text().splitlines()
    other = json.loads(lines[0])
    other["task"]["sizes"][0] += 1
    mixed = tmp_path / "mixed.jsonl.gz"
    with gzip.open(mixed, "wt") as f:
        f.write("\n".join([*lines, json.dumps(other)]) + "\n")
    with pytest.raises(SurrogateError, match="mixes 2 different tasks"):
        load_log(mixed)
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text("\n".join(json.dumps({**json.loads(x), "task": other["task"]}) for x in lines))
    with pytest.raises(SurrogateError, match="log is of another network"):
        gym.make("VGG11PruneSurrogate-v0", log=wrong, min_tau=-1.0)
    with pytest.raises(SurrogateError, match="no shipped evaluation log"):
        gym.make("ResNet18PruneSurrogate-v0")


@pytest.mark.skipif(not (SHIPPED_LOGS / "VGG16Prune-v0.jsonl.gz").is_file(), reason="no log")
def test_the_shipped_vgg16_surrogate_is_faithful():
    env = prune_env.make("VGG16PruneSurrogate-v0").unwrapped
    assert env.fidelity["kendall_tau"] >= 0.6 and env.fidelity["n_test"] >= 100
    assert env.log_task["width_mult"] == 0.25 and env.n_layers == 13


def test_benchmark_harness_on_a_surrogate_env(tiny_log, tmp_path):
    path, _ = tiny_log
    out = tmp_path / "bench"
    args = [
        "--envs", "VGG11PruneSurrogate-v0", "--algos", "ppo_lag,random_search", "--seeds", "2",
        "--total-timesteps", "256", "--eval-episodes", "3", "--budget", "0.3",
        "--per-env", json.dumps({"VGG11PruneSurrogate-v0": {"log": str(path), "min_tau": -1}}),
        "--algo-kwargs", json.dumps({"ppo_lag": {"n_steps": 64, "batch_size": 32}}),
        "--n-envs", "2", "--vec-env", "dummy", "--out", str(out),
    ]  # fmt: skip
    assert benchmark.main(args) == 0
    rows = json.loads((out / "runs.json").read_text())
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    assert all(r["env_steps"] == 256 for r in rows)
    assert (
        "| VGG11PruneSurrogate-v0 | random_search | 2/2 | 0.3 |" in (out / "table.md").read_text()
    )


def test_flat_forest_predicts_exactly_what_scikit_learn_predicts():
    from prune_env.surrogate import AccuracySurrogate

    rng = np.random.default_rng(0)
    x = rng.random((400, 6))
    y = x[:, 0] * 0.5 + x[:, 1] ** 2 * 0.3 + rng.normal(0, 0.02, 400)
    surrogate = AccuracySurrogate(n_estimators=30).fit(x, y)
    probes = rng.random((100, 6))
    # Samples sitting exactly on split thresholds, where float32/float64 handling matters.
    tree = surrogate.model.estimators_[0].tree_
    for i, (f, t) in enumerate(zip(tree.feature[:20], tree.threshold[:20], strict=True)):
        if f >= 0:
            probes[i, f] = t
    one_by_one = np.array([surrogate.predict(p)[0] for p in probes])
    expected = np.clip(surrogate.model.predict(probes), 0, 1)
    assert np.allclose(one_by_one, expected, rtol=0, atol=1e-12)
