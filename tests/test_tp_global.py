"""tp_global is Torch-Pruning's own global pruner: same channels, same network."""

import copy
import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch_pruning as tp

from agents import registry
from prune_env.engine import ChannelEngine, tp_global_pruning
from prune_env.models import build_model
from tests.conftest import TINY, TINY_WIDTH


def _random_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """BatchNorm scales and shifts away from 1 and 0, so no importance ties."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.weight.shape, generator=g) * 1.3 + 0.2
            m.bias.data = torch.randn(m.bias.shape, generator=g)
    return model.eval()


@pytest.mark.parametrize("arch", ["vgg11", "resnet18"])
@pytest.mark.parametrize("importance", ["l1", "l2", "bn_scale"])
def test_metapruner_prunes_the_channels_under_the_engines_global_threshold(arch, importance):
    torch.manual_seed(0)
    model = _random_bn(build_model(arch, 10, 3, 0.125))
    engine = ChannelEngine(model, torch.randn(2, 3, 32, 32), importance=importance)
    scores = engine.global_scores()
    total = sum(len(s) for s in scores)
    for ratio in (0.3, 0.6):
        n_pruned = total - int(total * (1 - ratio))
        threshold = np.sort(np.concatenate(scores))[n_pruned - 1]
        ours = {
            u.name: np.nonzero(s <= threshold)[0]
            for u, s in zip(engine.units, scores, strict=True)
            if np.any(s <= threshold)
        }
        theirs = tp_global_pruning(engine, ratio)
        assert sorted(theirs) == sorted(ours)
        for name, positions in ours.items():
            np.testing.assert_array_equal(theirs[name], positions)


def _env(env_id: str, **kwargs):
    return gym.make(env_id, **{**TINY, "width_mult": TINY_WIDTH[env_id], **kwargs})


@pytest.mark.parametrize(("env_id", "importance"), [
    ("VGG11Prune-v0", "l1"), ("ResNet18Prune-v0", "l2"),
])  # fmt: skip
def test_tp_global_delivers_torch_prunings_own_network(env_id, importance, tmp_path):
    env = _env(env_id, budget=0.3, importance=importance, min_keep=0.01)
    result = registry.run("tp_global", env, total_timesteps=1)
    (episode,) = result.episodes
    assert episode.feasible and episode.cost >= 0.27  # tight against the budget
    check = result.agent.tp_check
    assert check["channels_pruned"] > 0 and check["units_differing"] == {}
    result.agent.save(tmp_path / "tp_global.json")  # the check is saved with the ratios
    assert json.loads((tmp_path / "tp_global.json").read_text())["tp_check"] == check

    # MetaPruner itself, pruning for real at the ratio tp_global found
    prune_env = env.unwrapped
    net = copy.deepcopy(prune_env.base_model)
    ignored = [net.get_submodule(n) for n, s in prune_env.engine.shapes.items()
               if s.kind in ("conv", "linear") and not s.out_slices]  # fmt: skip
    p = 1 if importance == "l1" else 2
    pruner = tp.pruner.MetaPruner(
        net, prune_env.engine.example_input, global_pruning=True,
        importance=tp.importance.GroupMagnitudeImportance(p=p),
        pruning_ratio=check["pruning_ratio"], ignored_layers=ignored,
    )  # fmt: skip
    pruner.step()
    ours = prune_env.prune(episode.keep_ratios)
    assert sum(q.numel() for q in ours.parameters()) == sum(q.numel() for q in net.parameters())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), net.eval()(x))


def test_tp_global_reports_where_the_min_keep_floor_departs_from_metapruner():
    # at a tight budget MetaPruner's one step takes some groups below a fifth of their
    # channels; the env keeps min_keep and says so, unit by unit
    env = _env("VGG11Prune-v0", budget=0.1, min_keep=0.2)
    result = registry.run("tp_global", env, total_timesteps=1)
    differing = result.agent.tp_check["units_differing"]
    assert differing
    sizes = {u.name: u.size for u in env.unwrapped.engine.units}
    for name, counts in differing.items():
        assert counts["tp_kept"] < counts["kept"] == int(np.ceil(0.2 * sizes[name] - 1e-9))


@pytest.mark.parametrize("kwargs", [{"importance": "random"}, {"granularity": "weight"}])
def test_tp_global_refuses_what_torch_pruning_has_no_global_pruning_for(kwargs):
    with pytest.raises(ValueError, match="tp_global is torch-pruning's global channel pruning"):
        registry.run("tp_global", _env("VGG11Prune-v0", **kwargs), total_timesteps=1)


@pytest.mark.parametrize("structure", ["shuffle", "swin"])
def test_global_pruner_runs_behind_the_engines_index_mapping_guards(structure):
    # torchvision's ShuffleNetV2 made torch-pruning divide by zero while MetaPruner traced it.
    # The Swin case guards against a regression only: MetaPruner skips the roots whose
    # groups run away (the engine keeps them whole, so they are ignored) and passed before.
    import torchvision

    from tests.conftest import deadline, tiny_swin

    torch.manual_seed(0)
    if structure == "shuffle":
        model = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
        x = torch.randn(2, 3, 32, 32)
    else:
        model, x = tiny_swin(), torch.randn(2, 3, 32, 32)
    with deadline(60), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = ChannelEngine(model, x)
        pruned = tp_global_pruning(engine, 0.5)
    sizes = {u.name: u.size for u in engine.units}
    assert pruned and set(pruned) <= set(sizes)
    for name, positions in pruned.items():
        assert 0 < len(positions) < sizes[name] and positions.max() < sizes[name]
