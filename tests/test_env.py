"""The Gymnasium envs: API conformance, semantics, determinism, bad input."""

import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from torch import nn

import prune_env
from tests.conftest import TINY, TINY_WIDTH


def make(env_id="VGG11Prune-v0", **kwargs):
    config = {**TINY, "width_mult": TINY_WIDTH.get(env_id, 1.0), **kwargs}
    return gym.make(env_id, **config)


def run_episode(env, actions=None, seed=0):
    env.reset(seed=seed)
    total_cost, step, rewards = 0.0, 0, []
    while True:
        action = env.action_space.sample() if actions is None else actions[step]
        _, reward, terminated, truncated, info = env.step(action)
        total_cost += info["cost"]
        rewards.append(reward)
        step += 1
        if terminated or truncated:
            return rewards, total_cost, info, step


@pytest.mark.parametrize("env_id", list(prune_env.ZOO_IDS))
def test_registered_ids_pass_both_env_checkers(env_id):
    env = make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    env.action_space.seed(0)
    rewards, total_cost, info, steps = run_episode(env)
    assert steps == env.unwrapped.n_layers
    assert all(r == 0 for r in rewards[:-1]) and 0 <= rewards[-1] <= 1
    assert total_cost == info["cost"] == info["costs"]["params"]
    assert info["cost"] == pytest.approx(info["params"] / env.unwrapped.engine.total_params)


@pytest.mark.parametrize("env_id", ["VGG11Prune-v0", "ResNet56Prune-v0", "LeNet5Prune-v0"])
def test_oneshot_mode_passes_both_env_checkers(env_id):
    # the first step ends the episode, so its info must be deterministic (no wall times)
    env = make(env_id, mode="oneshot", granularity="weight" if "LeNet" in env_id else "channel")
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)


def test_model_prune_any_module_passes_checkers():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    x = torch.randn(40, 3, 8, 8)
    y = torch.randint(0, 4, (40,))
    dataset = torch.utils.data.TensorDataset(x, y)
    env = gym.make(
        "ModelPrune-v0",
        model=net,
        example_input=x[:1],
        train_data=dataset,
        budget=0.5,
        cost="flops",
        reward_size=16,
        bn_calib_size=8,
        device="cpu",
    )
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    _, _, info, steps = run_episode(env, [np.array([0.5])] * 2)
    assert steps == 2 and info["kept"] == [4, 4]
    assert info["cost_limit"] == 0.5
    assert info["cost"] == pytest.approx(info["flops"] / env.unwrapped.engine.total_macs)
    # tensor pair instead of a Dataset gives the same carving and the same result
    env2 = gym.make(
        "ModelPrune-v0",
        model=net,
        example_input=x[:1],
        train_data=(x, y),
        budget=0.5,
        cost="flops",
        reward_size=16,
        bn_calib_size=8,
        device="cpu",
    )
    assert run_episode(env2, [np.array([0.5])] * 2)[2]["accuracy"] == info["accuracy"]


def test_same_seed_same_episode_and_pickle_round_trip():
    env = make(importance="random", finetune_steps=2, finetune_batch_size=8)
    actions = [
        np.array([r], dtype=np.float32) for r in np.linspace(0.2, 0.9, env.unwrapped.n_layers)
    ]
    first = run_episode(env, actions, seed=3)[2]
    second = run_episode(env, actions, seed=3)[2]
    assert first["accuracy"] == second["accuracy"] and first["kept"] == second["kept"]
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert run_episode(clone, actions, seed=3)[2]["accuracy"] == first["accuracy"]
    other = make(importance="random", finetune_steps=2, finetune_batch_size=8)
    assert run_episode(other, actions, seed=3)[2]["accuracy"] == first["accuracy"]


def test_random_importance_depends_on_seed():
    env = make(importance="random")
    env.reset(seed=1)
    first = [r.copy() for r in env.unwrapped.engine.rankings]
    env.reset()  # no new seed: the ranking of the task stays
    assert all(
        np.array_equal(a, b) for a, b in zip(first, env.unwrapped.engine.rankings, strict=True)
    )
    env.reset(seed=2)
    assert not all(
        np.array_equal(a, b) for a, b in zip(first, env.unwrapped.engine.rankings, strict=True)
    )


def test_full_keep_gives_base_cost_and_accuracy():
    env = make(bn_recalibrate=False)
    ones = [np.ones(1, dtype=np.float32)] * env.unwrapped.n_layers
    _, cost, info, _ = run_episode(env, ones)
    assert cost == 1.0 and info["constraint_satisfied"] is False
    assert info["accuracy"] == env.unwrapped.base_accuracy


def test_observation_tracks_resources():
    env = make()
    obs, _ = env.reset(seed=0)
    assert obs[0] == 0 and obs[9] == 1.0 and obs[11] == 1.0 and obs[12] == pytest.approx(0.1)
    obs, *_ = env.step(np.array([0.25], dtype=np.float32))
    assert obs[0] > 0 and obs[11] == pytest.approx(0.25)
    assert obs[10] < obs[9] < 1.0  # lower bound < upper bound < whole network


def test_oneshot_mode():
    env = make(mode="oneshot")
    n = env.unwrapped.n_layers
    assert env.action_space.shape == (n,)
    # gymnasium's checker would compare the terminal step's info, whose timings vary
    sb3_check_env(env.unwrapped, warn=False)
    obs, _ = env.reset(seed=0)
    obs2, reward, terminated, _, info = env.step(np.full(n, 0.3, dtype=np.float32))
    assert terminated and reward == info["accuracy"] and info["cost"] < 0.3
    assert np.array_equal(obs, obs2)


def test_weight_granularity_counts_non_zeros():
    env = make(granularity="weight")
    units = env.unwrapped.units
    ratios = [np.array([0.3], dtype=np.float32)] * len(units)
    _, _, info, _ = run_episode(env, ratios)
    net = env.unwrapped.prune([0.3] * len(units))
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    nonzero = sum(int((m.weight != 0).sum()) for m in layers)
    others = sum(p.numel() for p in net.parameters()) - sum(m.weight.numel() for m in layers)
    assert info["params"] == nonzero + others
    assert nonzero == sum(round(0.3 * u.size) for u in units)
    assert units[-1].name == "classifier"  # the head is pruned too in weight mode


def test_custom_callable_and_several_costs():
    def conv_weights(model):
        return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))

    env = make(costs={"params": 0.2, conv_weights: 0.3, "latency": 0.9, "flops": 0.5})
    info = run_episode(env, [np.array([0.5])] * env.unwrapped.n_layers)[2]
    assert list(info["costs"]) == ["params", "conv_weights", "latency", "flops"]
    assert info["cost_limits"] == {"params": 0.2, "conv_weights": 0.3, "latency": 0.9, "flops": 0.5}
    assert info["cost"] == info["costs"]["params"] and info["cost_limit"] == 0.2
    net = env.unwrapped.prune([0.5] * env.unwrapped.n_layers)
    assert info["costs"]["conv_weights"] == pytest.approx(
        conv_weights(net) / conv_weights(env.unwrapped.base_model)
    )
    assert info["costs"]["latency"] > 0
    expected = all(info["costs"][k] <= v for k, v in info["cost_limits"].items())
    assert info["constraint_satisfied"] is expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": 0.0}, r"\(0, 1\]"),
        ({"budget": 1.5}, r"\(0, 1\]"),
        ({"budget": float("nan")}, r"\(0, 1\]"),
        ({"cost": "energy"}, "expected one of"),
        ({"mode": "greedy"}, "unknown mode"),
        ({"dataset": "imagenet"}, "unknown dataset"),
        ({"importance": "taylor"}, "unknown importance"),
        ({"min_keep": 0}, "min_keep"),
        ({"costs": {}}, "non-empty"),
    ],
)
def test_bad_arguments_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_unknown_id_and_model_list_the_valid_ones():
    with pytest.raises(gym.error.Error):
        gym.make("VGG13Prune-v0")
    with pytest.raises(ValueError, match=r"VGG16Prune-v0.*ModelPrune-v0"):
        prune_env.make("VGG13Prune-v0")
    with pytest.raises(ValueError, match="expected one of"):
        gym.make("ModelPrune-v0", model="alexnet")


def test_bad_actions():
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan]))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.array([0.5, 0.5]))
    obs, *_ = env.step(np.array([7.0]))  # clipped to 1
    assert obs[11] == 1.0
    obs, *_ = env.step(-3.0)  # scalar accepted in layerwise mode, clipped to min_keep
    assert obs[11] == pytest.approx(env.unwrapped.min_keep)


def test_step_before_reset_raises():
    env = make()
    with pytest.raises(RuntimeError, match="reset"):
        env.unwrapped.step(np.array([0.5]))


def test_cache_hit_equals_fresh_evaluation():
    kwargs = {"finetune_steps": 3, "finetune_batch_size": 8}
    env = make(**kwargs)
    u = env.unwrapped
    ratios = u.snap(np.linspace(0.3, 0.8, u.n_layers))  # exactly kept / size
    fresh = u.evaluate(ratios)
    # images run: 64 reward + 32 calibration + 3 fine-tuning steps of 8 (TINY's splits)
    assert (len(u.reward_y), len(u.calib_x)) == (64, 32)
    assert fresh["cache_hit"] is False
    assert u.cache_info() == {"hits": 0, "misses": 1, "size": 1, "images": 64 + 32 + 3 * 8}
    nearby = ratios + 0.001  # rounds to the same channel counts
    hit = u.evaluate(nearby)
    assert hit["cache_hit"] is True and u.cache_info()["hits"] == 1
    assert u.cache_info()["images"] == 120  # a cache hit runs no network
    assert hit["actions"] == pytest.approx(nearby.tolist())
    for key in ("accuracy", "cost", "costs", "kept", "params", "flops", "constraint_satisfied"):
        assert hit[key] == fresh[key]
    uncached = make(cache_size=0, **kwargs).unwrapped  # a fresh env, no cache at all
    assert uncached.evaluate(nearby)["accuracy"] == fresh["accuracy"]
    assert uncached.cache_info() == {"hits": 0, "misses": 1, "size": 0, "images": 120}


def test_cache_is_bounded_and_keyed_by_ranking():
    env = make(cache_size=2, importance="random")
    u = env.unwrapped
    env.reset(seed=0)
    for r in (0.3, 0.5, 0.7):
        u.evaluate(np.full(u.n_layers, r))
    assert u.cache_info()["size"] == 2
    u.evaluate(np.full(u.n_layers, 0.7))
    assert u.cache_info()["hits"] == 1
    env.reset(seed=1)  # a new random ranking: the same counts are a different network
    assert u.evaluate(np.full(u.n_layers, 0.7))["cache_hit"] is False


def test_early_stop_only_cuts_candidates_below_the_best():
    config = {"reward_size": 512, "eval_batch_size": 32, "cache_size": 0, "budget": 1.0}
    exact = make(**config).unwrapped
    fast = make(early_stop=True, early_stop_z=2.0, **{**config, "cache_size": 64}).unwrapped
    rng = np.random.default_rng(0)
    candidates = [rng.uniform(0.05, 1, exact.n_layers) for _ in range(12)]
    candidates.insert(0, np.ones(exact.n_layers))  # the best first: later ones may stop early
    stopped = 0
    for ratios in candidates:
        a, b = exact.evaluate(ratios), fast.evaluate(ratios)
        if b["early_stopped"]:
            stopped += 1
            assert b["reward_images"] < 512
            assert a["accuracy"] < exact.best_feasible_accuracy
        else:
            assert b["accuracy"] == a["accuracy"]
    assert stopped > 0
    assert fast.best_feasible_accuracy == exact.best_feasible_accuracy
    assert fast.cache_info()["size"] == len(candidates) - stopped  # partial rewards not cached


def test_bn_reward_mode_is_one_pass_and_close_to_calibration():
    calib = make(bn_calib_size=256, reward_size=256).unwrapped
    single = make(bn_recalibrate="reward", bn_calib_size=256, reward_size=256).unwrapped
    ratios = np.full(calib.n_layers, 0.6)
    a, b = calib.evaluate(ratios), single.evaluate(ratios)
    assert b["timing"]["bn_recalibration"] < 1e-3  # no separate pass
    assert abs(a["accuracy"] - b["accuracy"]) < 0.2
    with pytest.raises(ValueError, match="bn_recalibrate"):
        make(bn_recalibrate="sometimes")


def test_channels_last_gives_the_same_reward():
    ratios = np.full(8, 0.5)
    plain = make(channels_last=False).unwrapped.evaluate(ratios)
    last = make(channels_last=True).unwrapped.evaluate(ratios)
    assert make().unwrapped.channels_last is True  # "auto" on CPU
    assert abs(plain["accuracy"] - last["accuracy"]) <= 1 / 64


def test_reward_batches_are_near_equal():
    from prune_env.evaluation import reward_accuracy

    sizes = []

    class Spy(nn.Module):
        def forward(self, x):
            sizes.append(len(x))
            return torch.zeros(len(x), 3)

    acc, seen = reward_accuracy(
        Spy(), torch.zeros(2001, 2), torch.zeros(2001, dtype=torch.long), batch_size=1000
    )
    assert sizes == [667, 667, 667] and seen == 2001 and acc == 1.0


def test_reward_images_come_from_the_split_base_training_held_out(home):
    from prune_env.data import normalise
    from prune_env.zoo import heldout_indices

    env = gym.make(
        "LeNet5Prune-v0",
        dataset="synthetic",
        base_train_epochs=1,
        train_base=True,
        reward_size=64,
        bn_calib_size=32,
        device="cpu",
    ).unwrapped
    train = env.dataset_split("train")
    held = heldout_indices(len(train))
    assert env.task()["heldout"] == len(held) == 204
    pool = normalise(train.images, env.data_info).flatten(1)
    used = torch.cat([env.reward_x, env.calib_x]).flatten(1)
    matches = (used[:, None, :] == pool[None, :, :]).all(-1)
    # every reward/calibration image is a held-out image (synthetic images are all distinct)
    assert set(matches.float().argmax(1).tolist()) <= set(held.tolist())
    assert matches.any(1).all()
    with pytest.warns(UserWarning, match="records no held-out split"):
        plain = home / "plain.pt"
        torch.save(env.base_model.state_dict(), plain)
        gym.make("LeNet5Prune-v0", dataset="synthetic", checkpoint=plain, **TINY_NO_DATA)
    explicit = gym.make(
        "LeNet5Prune-v0", dataset="synthetic", checkpoint=plain, heldout=held, **TINY_NO_DATA
    ).unwrapped
    assert explicit.task()["heldout"] == 204
    with pytest.raises(ValueError, match="heldout must hold distinct indices"):
        gym.make(
            "LeNet5Prune-v0", dataset="synthetic", checkpoint=plain, heldout=[0, 0], **TINY_NO_DATA
        )


TINY_NO_DATA = {"reward_size": 64, "bn_calib_size": 32, "device": "cpu"}


def test_building_an_env_never_trains_a_base_model(home):
    from prune_env.zoo import BaseModelMissing, prepare_base_model

    task = {"dataset": "synthetic", "base_train_epochs": 1, **TINY_NO_DATA}
    with pytest.raises(BaseModelMissing, match="train_base=True"):
        gym.make("LeNet5Prune-v0", **task)
    assert not list(home.glob("checkpoints/*.pt"))  # nothing was trained
    base = prepare_base_model("lenet5", "synthetic", train_epochs=1, progress=False)
    assert base.checkpoint is not None and base.meta["heldout"]["size"] == 204
    assert len(base.train) == 2048 and base.meta["test_accuracy"] > 0.2  # chance: 0.1
    env = gym.make("LeNet5Prune-v0", **task).unwrapped  # the cache now has it
    assert env.base_info["source"] == base.checkpoint
    for a, b in zip(env.base_model.parameters(), base.model.parameters(), strict=True):
        assert torch.equal(a, b)
