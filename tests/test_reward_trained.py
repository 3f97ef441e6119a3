"""Accuracy-dependent behaviour of the reward, on a small *trained* network.

On an untrained network near chance, a reward that scores misaligned images and labels, or
skips BatchNorm re-calibration, looks the same as a correct one; here the base network is
well above chance, so those mistakes show.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from prune_env.data import DatasetInfo, normalise, synthetic_split
from prune_env.evaluation import accuracy, recalibrate_batchnorm


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained to high accuracy on the synthetic 16x16 data (a few seconds)."""
    split = synthetic_split("train", num_classes=10, channels=3, size=16, n=1536)
    info = DatasetInfo("synthetic", 10, 3, 16, (0.5,) * 3, (0.25,) * 3)
    x = normalise(split.images, info)
    y = split.labels
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(3):
        for idx in torch.randperm(len(y), generator=g).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    return net.eval(), x, y


def make(trained, **kwargs):
    net, x, y = trained
    config = {
        "model": net,
        "example_input": x[:1],
        "train_data": (x, y),
        "reward_size": 512,
        "bn_calib_size": 256,
        "device": "cpu",
        **kwargs,
    }
    return gym.make("ModelPrune-v0", **config).unwrapped


def test_the_base_network_is_well_above_chance(trained):
    env = make(trained)
    assert env.base_accuracy > 0.8


def test_channels_last_scores_the_same_images_with_their_labels(trained):
    plain, last = make(trained, channels_last=False), make(trained, channels_last=True)
    assert last.channels_last and not plain.channels_last
    for keep in (1.0, 0.7, 0.5):
        ratios = np.full(plain.n_layers, keep)
        a, b = plain.evaluate(ratios)["accuracy"], last.evaluate(ratios)["accuracy"]
        assert abs(a - b) <= 1 / 512
        if keep == 1.0:
            assert a == pytest.approx(plain.base_accuracy) and a > 0.8


def test_reward_is_the_recalibrated_pruned_network_by_hand(trained):
    env = make(trained, bn_recalibrate="calib", cache_size=0)
    off = make(trained, bn_recalibrate="off", cache_size=0)
    ratios = np.full(env.n_layers, 0.4)
    counts = env.evaluate(ratios)["kept"]
    net = env.engine.build(counts)
    expected_off = accuracy(net, env.reward_x, env.reward_y)
    recalibrate_batchnorm(net, env.calib_x)
    expected = accuracy(net, env.reward_x, env.reward_y)
    assert env.evaluate(ratios)["accuracy"] == expected
    assert off.evaluate(ratios)["accuracy"] == expected_off
    assert expected != expected_off  # re-calibration matters for this pruned network


def test_cache_hit_equals_a_fresh_evaluation(trained):
    cached, fresh = make(trained), make(trained, cache_size=0)
    for keep in (0.6, 0.35, 0.6):
        ratios = np.full(cached.n_layers, keep)
        hit, new = cached.evaluate(ratios), fresh.evaluate(ratios)
        assert hit["accuracy"] == new["accuracy"] and hit["kept"] == new["kept"]
    assert cached.cache_info()["hits"] == 1


def test_every_reward_variant_equals_a_hand_computation(trained):
    import torch.nn.functional as F

    # A fifth of the labels flipped: the base is then not always right, so agreeing with it
    # and being right differ.
    _, x, y = trained
    noisy = torch.where(torch.arange(len(y)) % 5 == 0, (y + 1) % 10, y)
    env = make(trained, cache_size=0, train_data=(x, noisy))
    ratios = np.full(env.n_layers, 0.3)
    info = env.evaluate(ratios)
    net = env.engine.build(info["kept"])
    recalibrate_batchnorm(net, env.calib_x)
    with torch.no_grad():
        logits = net(env.reward_x)
        base = env.base_model(env.reward_x)
    log_p, log_q = F.log_softmax(base, 1), F.log_softmax(logits, 1)
    by_hand = {
        "accuracy": (logits.argmax(1) == env.reward_y).float().mean().item(),
        "neg_ce": -F.cross_entropy(logits, env.reward_y).item(),
        "agreement": (logits.argmax(1) == base.argmax(1)).float().mean().item(),
        "neg_kl": -F.kl_div(log_q, log_p, log_target=True, reduction="batchmean").item(),
    }
    # a candidate where agreeing with the base differs from being right: the two cannot mix
    assert by_hand["agreement"] != by_hand["accuracy"]
    for name, value in by_hand.items():
        assert info["reward_metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert info["reward"] == info["accuracy"]
    for name in by_hand:
        variant = make(trained, reward=name, cache_size=0, train_data=(x, noisy))
        variant.reset(seed=0)
        terminated = False
        while not terminated:
            _, reward, terminated, _, step_info = variant.step(np.array([0.3]))
        assert (
            reward
            == step_info["reward_metrics"][name]
            == pytest.approx(by_hand[name], rel=1e-4, abs=1e-6)
        )
        assert variant.task()["reward"] == name
    # a cached reward equals a fresh one for every variant
    cached = make(trained, reward="neg_kl")
    first, hit = cached.evaluate(ratios), cached.evaluate(ratios)
    assert hit["cache_hit"] and hit["reward_metrics"] == first["reward_metrics"]
    with pytest.raises(ValueError, match="unknown reward"):
        make(trained, reward="loss")
    with pytest.raises(ValueError, match="early_stop"):
        make(trained, reward="agreement", early_stop=True)
