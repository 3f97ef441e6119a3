"""The pruned model as a deliverable: counted resources, saved forms, fine-tuning with masks."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from agents import registry
from prune_env.data import dataset_info, synthetic_split
from prune_env.engine import make_engine, measure_resources
from prune_env.evaluation import zero_weight_masks
from prune_env.models import build_model
from prune_env.zoo import RECIPES
from prune_pipeline.pruned import (
    ARCH_FILE,
    MODEL_FILE,
    WEIGHTS_FILE,
    finetune_pruned,
    load_pruned,
    resize_to_state_dict,
    save_pruned,
)
from tests.conftest import TINY

CASES = [("vgg11", 0.25, 3, 32), ("resnet56", 0.25, 3, 32), ("lenet5", 1.0, 1, 28)]


def _random_counts(engine, seed):
    rng = np.random.default_rng(seed)
    return [int(rng.integers(1, u.size + 1)) for u in engine.units]


@pytest.mark.parametrize(("arch", "width", "channels", "size"), CASES)
@pytest.mark.parametrize("granularity", ["channel", "weight"])
def test_counted_resources_equal_the_engines_analytic_ones(
    arch, width, channels, size, granularity
):
    torch.manual_seed(0)
    model = build_model(arch, in_channels=channels, width_mult=width).eval()
    x = torch.randn(2, channels, size, size)
    engine = make_engine(model, x, granularity)
    assert measure_resources(model, x) == (engine.total_params, engine.total_macs)
    for seed in range(3):
        counts = _random_counts(engine, seed)
        net = engine.build(counts)
        counted = measure_resources(net, x, nonzero=granularity == "weight")
        assert counted == engine.resources(counts)


def test_macs_of_a_tiny_net_by_hand():
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(48, 5))
    # conv: 3*2*9 weights at 4*4 positions = 864 MACs; linear: 48*5 = 240 MACs
    params, macs = measure_resources(net, torch.zeros(1, 2, 4, 4))
    assert (params, macs) == (54 + 240 + 5, 864 + 240)
    with torch.no_grad():
        net[0].weight[0] = 0  # 18 weights of the first filter
    assert measure_resources(net, torch.zeros(1, 2, 4, 4), nonzero=True) == (
        54 - 18 + 245,
        (54 - 18) * 16 + 240,
    )


def _zoo(arch, channels, width):
    return {"builder": {"kind": "zoo", "name": arch, "num_classes": 10, "in_channels": channels,
                        "width_mult": width}}  # fmt: skip


@pytest.mark.parametrize(("arch", "width", "channels", "size"), CASES)
def test_safe_form_round_trip_rebuilds_the_same_network(tmp_path, arch, width, channels, size):
    torch.manual_seed(0)
    model = build_model(arch, in_channels=channels, width_mult=width).eval()
    x = torch.randn(3, channels, size, size)
    engine = make_engine(model, x)
    net = engine.build(_random_counts(engine, 7))
    save_pruned(net, tmp_path, _zoo(arch, channels, width), example_input=x)
    # weights only: no pickle unless asked, and the safetensors file holds the state_dict
    assert not (tmp_path / MODEL_FILE).exists()
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    assert set(tensors) == set(net.state_dict())
    assert json.loads((tmp_path / ARCH_FILE).read_text())["weights_only_verified"] is True
    loaded = load_pruned(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))
    for (name, a), (_, b) in zip(loaded.named_modules(), net.named_modules(), strict=True):
        if isinstance(a, nn.Conv2d):
            assert (a.in_channels, a.out_channels) == (b.in_channels, b.out_channels), name
        if isinstance(a, nn.BatchNorm2d):
            assert a.num_features == b.num_features, name
    save_pruned(net, tmp_path, _zoo(arch, channels, width), example_input=x, pickle=True)
    whole = load_pruned(tmp_path, trust_pickle=True)
    with torch.no_grad():
        assert torch.equal(whole(x), net(x))


def test_depthwise_groups_survive_the_weights_only_form(tmp_path):
    """A pruned depthwise conv has fewer groups: the tensors do not say so, the JSON must."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    engine = make_engine(model, x)
    net = engine.build(_random_counts(engine, 3)).eval()
    builder = {"kind": "torchvision", "name": "mobilenet_v2", "num_classes": 10}
    save_pruned(net, tmp_path, {"builder": builder}, example_input=x)
    arch = json.loads((tmp_path / ARCH_FILE).read_text())
    assert arch["weights_only_verified"] is True and arch["module_attrs"]
    with torch.no_grad():
        assert torch.allclose(load_pruned(tmp_path)(x), net(x), atol=1e-5)


def test_a_factory_file_rebuilds_a_user_architecture(tmp_path):
    source = tmp_path / "my_net.py"
    source.write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))\n"
    )
    from prune_pipeline.pruned import load_factory

    torch.manual_seed(0)
    model = load_factory(source, "make")().eval()
    x = torch.randn(2, 3, 16, 16)
    engine = make_engine(model, x)
    net = engine.build([3]).eval()
    folder = tmp_path / "run"
    builder = {"kind": "factory", "path": str(source), "name": "make"}
    save_pruned(net, folder, {"builder": builder}, example_input=x)
    loaded = load_pruned(folder)
    assert loaded[0].out_channels == 3
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_without_a_builder_the_pickle_is_written_and_said(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match="pickled module"):
        paths = save_pruned(net, tmp_path, {"builder": None}, example_input=torch.randn(1, 4))
    assert "model" in paths and (tmp_path / MODEL_FILE).is_file()
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_pruned(tmp_path)


def test_load_pruned_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a pruned-model folder"):
        load_pruned(tmp_path)
    with pytest.raises(FileNotFoundError, match="--save-pickle"):
        load_pruned(tmp_path, trust_pickle=True)
    with pytest.raises(ValueError, match="arch lacks 'builder'"):
        save_pruned(nn.Linear(2, 2), tmp_path, {"name": "vgg11"})
    net = build_model("lenet5", in_channels=1)
    save_pruned(net, tmp_path, _zoo("lenet5", 1, 1.0), example_input=torch.randn(1, 1, 28, 28))
    (tmp_path / ARCH_FILE).write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match=r"is not a prune_pipeline\.pruned/2 file"):
        load_pruned(tmp_path)


def test_resize_follows_the_state_dict():
    small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    big = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 2))
    resize_to_state_dict(big, small.state_dict())
    big.load_state_dict(small.state_dict())
    assert big[0].out_channels == 4 and big[1].num_features == 4 and big[3].in_features == 4


def test_finetuning_keeps_pruned_weights_at_zero():
    torch.manual_seed(0)
    model = build_model("lenet5", in_channels=1, width_mult=0.5)
    engine = make_engine(model, torch.randn(1, 1, 28, 28), "weight")
    net = engine.build([max(1, u.size // 4) for u in engine.units])
    zeros_before = [int((w == 0).sum()) for w, _ in zero_weight_masks(net)]
    train = synthetic_split("train", 10, 1, 28, n=256)
    info = dataset_info("synthetic", train)
    finetune_pruned(net, train, info, "lenet5", epochs=1, lr=0.05, keep_zeros=True,
                    progress=False)  # fmt: skip
    zeros_after = [int((w == 0).sum()) for w, _ in zero_weight_masks(net)]
    assert zeros_after == zeros_before and sum(zeros_before) > 0
    free = engine.build([max(1, u.size // 4) for u in engine.units])
    finetune_pruned(free, train, info, "lenet5", epochs=1, lr=0.05, progress=False)
    assert sum(int((m.weight == 0).sum()) for m in free.modules() if hasattr(m, "weight")) < sum(
        zeros_before
    )
    assert RECIPES["lenet5"].augment is False  # the recipe is the architecture's


def test_pruned_network_is_the_one_the_reward_measured():
    # NCHW evaluation, like the delivered network, so that the two agree to the bit.
    env = gym.make("VGG11Prune-v0", **{**TINY, "width_mult": 0.125, "channels_last": False})
    penv = env.unwrapped
    ratios = np.linspace(0.3, 0.9, penv.n_layers)
    info = penv.evaluate(ratios)
    net = penv.pruned_network(ratios)
    with torch.no_grad():
        acc = float((net(penv.reward_x).argmax(1) == penv.reward_y).float().mean())
    assert acc == pytest.approx(info["accuracy"], abs=1e-9)
    assert sum(p.numel() for p in net.parameters()) == info["params"]


def test_several_env_copies_record_every_episode():
    make = lambda: gym.make("VGG11Prune-v0", **{**TINY, "width_mult": 0.125, "budget": 0.3})  # noqa: E731
    result = registry.run("ppo_lag", make, total_timesteps=128, n_envs=2, vec_env="dummy",
                          n_steps=32, batch_size=32)  # fmt: skip
    assert result.env_steps == 128
    assert len(result.episodes) == 128 // 8
    assert [e.index for e in result.episodes] == list(range(16))
    with pytest.raises(ValueError, match="function that makes the env"):
        registry.make_agent("ppo_lag", make(), n_envs=2)
    with pytest.raises(ValueError, match="one env only"):
        registry.make_agent("uniform", make, n_envs=2)
