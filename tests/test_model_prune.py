"""ModelPrune-v0 with a user's module: misuse gets clear errors; reviewed defects stay fixed."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from PIL import Image
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from torch import nn

from prune_env.envs.pruning import split_sizes


def small_net(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.Conv2d(64, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(16, 4),
    )


def data(n: int = 120):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def make(model=None, x=None, y=None, **kwargs):
    if x is None:
        x, y = data()
    config = {
        "model": small_net() if model is None else model,
        "example_input": x[:1],
        "train_data": (x, y),
        "reward_size": 64,
        "bn_calib_size": 16,
        "device": "cpu",
        **kwargs,
    }
    return gym.make("ModelPrune-v0", **config).unwrapped


class PILDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 100

    def __getitem__(self, i):
        return Image.new("RGB", (8, 8)), 0


X, Y = data()
MISUSE = [
    ({"example_input": X[:1].numpy()}, TypeError, "example_input must be a torch.Tensor"),
    ({"example_input": torch.randn(1, 1, 8, 8)}, ValueError, "example_input of shape"),
    ({"train_data": PILDataset()}, TypeError, "holds a Image image"),
    ({"train_data": (X, Y + 4)}, ValueError, r"labels must lie in \[0, 4\)"),
    ({"train_data": (X, Y[:100])}, ValueError, "120 images but 100 labels"),
    ({"train_data": (X[:, :, :4], Y)}, ValueError, "train_data images have shape"),
    ({"eval_batch_size": 0}, ValueError, "eval_batch_size must be an integer >= 1"),
    ({"latency_repeats": 0}, ValueError, "latency_repeats"),
    ({"model": nn.Sequential(nn.Flatten())}, ValueError, "model has no parameters"),
    ({"bn_calib_size": 0}, ValueError, "bn_calib_size must be >= 1 with bn_recalibrate='calib'"),
    ({"render_mode": "human"}, ValueError, "render_mode must be None"),
    ({"granularity": "weight", "ignored_layers": ["nope"]}, ValueError, "ignored_layers"),
    ({"ignored_layers": ["nope"]}, ValueError, "ignored_layers"),
    ({"device": "quantum"}, ValueError, "device must be"),
    ({"heldout": [0, 1]}, ValueError, "heldout= is for a registered architecture"),
    ({"example_input": X[:1].long()}, ValueError, r"model\(example_input\) failed"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), MISUSE)
def test_misuse_is_explained_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        make(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_explained():
    with pytest.raises(ValueError, match="CUDA is not available"):
        make(device="cuda")


def test_render_mode_none_is_accepted():
    assert make(render_mode=None).render_mode is None


def test_user_module_is_left_where_and_as_it_was():
    net = small_net().train()
    weight = net[0].weight
    env = make(net)
    assert net.training and net[0].weight is weight
    env.evaluate(np.full(env.n_layers, 0.5))
    assert all(m.training for m in net.modules())
    assert env.base_model is not net


def test_non_affine_batchnorm_is_sliced():
    net = small_net()
    net[1] = nn.BatchNorm2d(64, affine=False)
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
    env = make(net)
    info = env.evaluate(np.full(env.n_layers, 0.25))
    assert info["kept"][0] == 16
    assert env.prune(np.full(env.n_layers, 0.25))[1].running_mean.shape == (16,)


def test_min_keep_is_never_undercut_by_rounding():
    env = make(min_keep=0.05)  # 64 channels: round(3.2) = 3 would keep 0.047
    kept = env.evaluate(np.zeros(env.n_layers))["kept"]
    assert kept == [4, 1] and kept[0] / 64 >= 0.05
    assert env.snap([0.05, 0.05])[0] >= 0.05
    env = make(min_keep=0.05, channel_round=8)
    assert env.evaluate(np.zeros(env.n_layers))["kept"][0] == 8


@pytest.mark.parametrize("bn_recalibrate", ["calib", "reward"])
def test_dropout_does_not_make_the_reward_random(bn_recalibrate):
    env = make(small_net(dropout=0.5), bn_recalibrate=bn_recalibrate, cache_size=0)
    ratios = np.full(env.n_layers, 0.5)
    rewards = {env.evaluate(ratios)["accuracy"] for _ in range(4)}
    assert len(rewards) == 1


def test_finetuned_reward_is_deterministic_with_dropout():
    env = make(small_net(dropout=0.5), finetune_steps=3, finetune_batch_size=8, cache_size=0)
    ratios = np.full(env.n_layers, 0.5)
    first = env.evaluate(ratios)["accuracy"]
    torch.manual_seed(123)  # the global RNG must not matter
    assert env.evaluate(ratios)["accuracy"] == first
    state = torch.get_rng_state()
    env.evaluate(ratios)
    assert torch.equal(torch.get_rng_state(), state)  # and is left as it was


def test_weight_granularity_finetuning_keeps_the_chosen_zeros():
    env = make(granularity="weight", finetune_steps=5, finetune_batch_size=8, finetune_lr=0.1)
    ratios = np.full(env.n_layers, 0.5)
    info = env.evaluate(ratios)
    net = env.pruned_network(ratios)
    nonzero = sum(int(torch.count_nonzero(p)) for p in net.parameters())
    # every non-weight parameter (biases, BatchNorm) is non-zero here
    assert nonzero == info["params"]
    assert info["cost"] == pytest.approx(nonzero / env.engine.total_params)


def test_reward_and_delivered_network_use_the_same_calibration():
    env = make(bn_recalibrate="calib")
    ratios = np.full(env.n_layers, 0.3)
    net = env.pruned_network(ratios)
    from prune_env.evaluation import accuracy

    assert accuracy(net, env.reward_x, env.reward_y) == env.evaluate(ratios)["accuracy"]


def test_cache_hit_is_a_private_copy():
    env = make()
    ratios = np.full(env.n_layers, 0.5)
    first = env.evaluate(ratios)
    cost = first["costs"]["params"]
    first["costs"]["params"] = 99.0
    first["kept"].append(7)
    hit = env.evaluate(ratios)
    assert hit["cache_hit"] and hit["costs"]["params"] == cost and len(hit["kept"]) == 2
    hit["costs"]["params"] = 98.0
    assert env.evaluate(ratios)["costs"]["params"] == cost


@pytest.mark.parametrize("mode", ["layerwise", "oneshot"])
def test_user_module_passes_both_checkers_in_both_modes(mode):
    env = make(mode=mode, cost="flops")
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    env.reset(seed=0)
    terminated = False
    while not terminated:
        *_, terminated, _, info = env.step(env.action_space.sample())
    # wall times and cache hits vary between identical episodes: not in the step's info
    assert "timing" not in info and "cache_hit" not in info
    assert set(env.last_evaluation) == {"timing", "cache_hit"}


def test_small_data_sets_shrink_the_splits_with_a_warning():
    assert split_sizes(5000, 2000, 128, False) == (2000, 128)
    with pytest.warns(UserWarning, match="reward_size 2000 -> 480, bn_calib_size 128 -> 120"):
        assert split_sizes(600, 2000, 128, False) == (480, 120)
    with pytest.warns(UserWarning):
        assert split_sizes(600, 2000, 128, True) == (360, 120)  # a fifth left to fine-tune
    with pytest.raises(ValueError, match="too few"):
        split_sizes(1, 2000, 128, False)
    x, y = data(600)
    with pytest.warns(UserWarning, match="holds 600 images"):
        env = make(None, x, y, reward_size=2000, bn_calib_size=128)
    assert (len(env.reward_y), len(env.calib_x)) == (480, 120)
    assert env.task()["reward_size"] == 480


def test_observation_shares_cover_the_whole_group():
    env = make()
    shares = env.engine.units[0]
    # unit 0 prunes conv0 (64*27+64), bn (128) and conv3's input side (16*64*9)
    total = env.engine.total_params
    assert shares.params_share == pytest.approx((64 * 27 + 64 + 128 + 16 * 64 * 9) / total)


def test_imagefolder_base_models_are_cached_per_folder(tmp_path):
    from prune_env.zoo import cache_path, data_tag

    a, b = data_tag("imagefolder", tmp_path / "a"), data_tag("imagefolder", tmp_path / "b")
    assert a != b and data_tag("cifar10", tmp_path / "a") is None
    assert cache_path("vgg11", "imagefolder", 1.0, 5, a) != cache_path(
        "vgg11", "imagefolder", 1.0, 5, b
    )


def test_synthetic_fallback_with_default_sizes_builds():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(
            "VGG11Prune-v0", dataset="synthetic", pretrained=False, width_mult=0.125, device="cpu"
        ).unwrapped
    assert len(env.reward_y) == 1920 and len(env.calib_x) == 128  # 2048 synthetic images


def test_infeasible_candidates_can_be_scored_on_fewer_images():
    from prune_env.evaluation import accuracy

    env = make(budget=0.3, infeasible_reward_size=10, cache_size=0)
    infeasible, feasible = np.full(env.n_layers, 1.0), np.full(env.n_layers, 0.2)
    info = env.evaluate(infeasible)
    assert not info["constraint_satisfied"] and info["reward_images"] == 10
    assert not info["early_stopped"]
    net = env.pruned_network(infeasible)
    assert info["accuracy"] == accuracy(net, env.reward_x[:10], env.reward_y[:10])
    info = env.evaluate(feasible)
    assert info["constraint_satisfied"] and info["reward_images"] == 64
    assert make(budget=0.3).evaluate(infeasible)["reward_images"] == 64  # default: all
    with pytest.raises(ValueError, match="infeasible_reward_size"):
        make(infeasible_reward_size=0)


def test_tiny_data_with_batchnorm1d_never_feeds_a_batch_of_one():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)
    )
    x, y = torch.randn(8, 3, 2, 2), torch.arange(8) % 3
    for kwargs in (
        {},
        {"finetune_steps": 2, "finetune_batch_size": 1},
        {"bn_recalibrate": "reward"},
    ):
        with pytest.warns(UserWarning, match="holds 8 images"):
            env = make(net, x, y, **kwargs)
        env.reset(seed=0)
        for _ in range(env.n_layers):
            *_, info = env.step(np.array([0.5]))
        assert 0 <= info["accuracy"] <= 1
    env = make(net, x, y, bn_recalibrate="off", reward_size=8, bn_calib_size=16)
    assert len(env.reward_y) == 8 and len(env.calib_x) == 0  # no images set aside for nothing


def test_integer_token_inputs_keep_their_type():
    torch.manual_seed(0)

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 8)
            self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

        def forward(self, t):
            return self.fc2(torch.relu(self.fc1(self.embed(t).mean(1))))

    tokens, labels = torch.randint(0, 20, (100, 5)), torch.randint(0, 4, (100,))
    env = make(Tokens(), tokens, labels, reward_size=60, bn_calib_size=16)
    assert env.reward_x.dtype == torch.int64
    assert 0 <= env.evaluate(np.full(env.n_layers, 0.5))["accuracy"] <= 1
    with pytest.raises(ValueError, match=r"train_data inputs are torch\.float32"):
        make(
            Tokens(),
            tokens,
            labels,
            reward_size=60,
            bn_calib_size=16,
            train_data=(tokens.float(), labels),
        )
