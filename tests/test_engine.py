"""The pruning engine: physically pruned nets equal masked originals and torch-pruning itself."""

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from prune_env.engine import ChannelEngine, WeightEngine, make_engine, tp_prune_reference
from prune_env.models import build_model


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so a wrong channel mapping cannot hide."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1, generator=g)
            m.running_var.uniform_(0.5, 2, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-0.5, 0.5, generator=g)
    return model.eval()


CASES = [
    ("vgg11", 0.25, 3, 32),
    ("resnet56", 0.25, 3, 32),
    ("resnet18", 0.125, 3, 32),
    ("lenet5", 1.0, 1, 28),
]


@pytest.mark.parametrize(("arch", "width", "channels", "size"), CASES)
def test_pruned_equals_masked_and_torch_pruning(arch, width, channels, size):
    torch.manual_seed(0)
    model = _randomise_bn(build_model(arch, in_channels=channels, width_mult=width))
    x = torch.randn(6, channels, size, size)
    engine = make_engine(model, x)
    rng = np.random.default_rng(1)
    counts = [int(rng.integers(1, u.size + 1)) for u in engine.units]
    pruned, masked = engine.build(counts), engine.build_masked(counts)
    reference = tp_prune_reference(model, x, engine, counts)
    with torch.no_grad():
        out, out_masked, out_ref = pruned(x), masked(x), reference(x)
    assert torch.allclose(out, out_masked, atol=1e-4), (out - out_masked).abs().max()
    assert torch.allclose(out, out_ref, atol=1e-5)
    n_pruned = sum(p.numel() for p in pruned.parameters())
    assert n_pruned == sum(p.numel() for p in reference.parameters())
    assert n_pruned == engine.resources(counts)[0]
    assert n_pruned < engine.total_params
    # the pruned nets own their tensors: changing them leaves the base network untouched
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for net in (pruned, masked):
            for p in net.parameters():
                p.add_(1.0)
            for b in net.buffers():
                b.add_(1)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_residual_channels_form_one_group():
    model = build_model("resnet56", width_mult=0.25).eval()
    engine = ChannelEngine(model, torch.randn(2, 3, 32, 32))
    # 27 blocks each own their inner conv; the stem and each stage's residual stream are 3 groups
    assert len(engine.units) == 30
    first = engine.slices[0]
    outs = {s.module for s in first if s.role == "out"}
    assert {"conv1", "bn1", "layers.0.0.conv2", "layers.0.8.conv2"} <= outs
    assert engine.units[0].name == "conv1"
    # every output channel of the residual stream is pruned together: a full keep is identity
    full = [u.size for u in engine.units]
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        assert torch.allclose(engine.build(full)(x), model(x), atol=1e-6)


class Tiny(nn.Module):
    """conv(3->8, k3, bias) -> BN -> ReLU -> conv(8->4, k1, no bias) -> flatten -> Linear(64->5)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 4, 1, bias=False)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        return self.fc(self.conv2(x).flatten(1))


def test_resource_counts_by_hand():
    model = Tiny().eval()
    engine = ChannelEngine(model, torch.randn(1, 3, 4, 4))
    assert [u.name for u in engine.units] == ["conv1", "conv2"]
    # params: conv1 8*3*9 + 8, bn 2*8, conv2 4*8, fc 64*5 + 5
    assert engine.total_params == 224 + 16 + 32 + 325
    # MACs on a 4x4 map: conv1 216*16, conv2 32*16, fc 320
    assert engine.total_macs == 216 * 16 + 32 * 16 + 320
    # keep 2 of conv1's channels and 3 of conv2's
    params, macs = engine.resources([2, 3])
    assert params == (2 * 27 + 2) + 2 * 2 + 3 * 2 + (3 * 16 * 5 + 5)
    assert macs == 2 * 27 * 16 + 3 * 2 * 16 + 3 * 16 * 5
    net = engine.build([2, 3])
    assert sum(p.numel() for p in net.parameters()) == params
    assert net.fc.in_features == 48 and net.conv2.in_channels == 2 and net.bn.num_features == 2


def test_ranking_keeps_largest_l1_channels():
    model = Tiny().eval()
    with torch.no_grad():
        model.conv1.weight.zero_()
        model.conv1.weight[5] = 1.0  # by far the largest channel
        model.conv1.weight[2] = 0.5
    engine = ChannelEngine(model, torch.randn(1, 3, 4, 4), importance="l1")
    assert engine.rankings[0][:2].tolist() == [5, 2]
    net = engine.build([2, 4])
    assert torch.equal(net.conv1.weight, model.conv1.weight[[2, 5]])


def test_weight_engine_masks_smallest_magnitudes():
    model = Tiny().eval()
    engine = WeightEngine(model, torch.randn(1, 3, 4, 4))
    assert [u.name for u in engine.units] == ["conv1", "conv2", "fc"]
    counts = [10, 32, 100]
    net = engine.build(counts)
    for name, count in zip(["conv1", "conv2", "fc"], counts, strict=True):
        w, base = net.get_submodule(name).weight, model.get_submodule(name).weight
        assert int((w != 0).sum()) == count
        kept = w != 0
        assert base.abs()[kept].min() >= base.abs()[~kept].max() if (~kept).any() else True
    params, macs = engine.resources(counts)
    assert params == engine.total_params - (216 + 32 + 320) + sum(counts)
    assert macs == 10 * 16 + 32 * 16 + 100


def test_engine_rejects_bad_counts_and_pickles():
    engine = ChannelEngine(Tiny().eval(), torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="expected 2 keep counts"):
        engine.build([1])
    with pytest.raises(ValueError, match=r"\[1, size\]"):
        engine.build([0, 4])
    clone = pickle.loads(pickle.dumps(engine))
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(clone.build([3, 2])(x), engine.build([3, 2])(x))


def test_unknown_granularity_and_importance():
    with pytest.raises(ValueError, match="expected 'channel' or 'weight'"):
        make_engine(Tiny(), torch.randn(1, 3, 4, 4), granularity="block")
    with pytest.raises(ValueError, match="unknown importance"):
        make_engine(Tiny(), torch.randn(1, 3, 4, 4), importance="taylor")
    with pytest.raises(ValueError, match="not defined for granularity='weight'"):
        make_engine(Tiny(), torch.randn(1, 3, 4, 4), granularity="weight", importance="bn_scale")


def test_bn_scale_importance():
    model = Tiny().eval()
    with torch.no_grad():
        model.bn.weight.copy_(torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6]))
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="group of 'conv2' has none"):
        ChannelEngine(model, x, importance="bn_scale")
    engine = ChannelEngine(model, x, importance="bn_scale", ignored_layers=["conv2"])
    assert [u.name for u in engine.units] == ["conv1"]
    assert engine.rankings[0][:4].tolist() == [1, 3, 5, 7]
    with pytest.raises(ValueError, match="needs a BatchNorm"):
        ChannelEngine(build_model("lenet5", in_channels=1), torch.randn(1, 1, 28, 28), "bn_scale")
