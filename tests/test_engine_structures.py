"""Channel pruning of concat, depthwise, grouped, shuffle, squeeze-excite and other structures.

Each hand-made model is pruned at several random keep counts: the physically pruned network
must equal the masked original (pruned channels zeroed) and its counted parameters and MACs
must equal the engine's analytic ones; the structure itself must be pruned, not kept whole.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from prune_env.engine import ChannelEngine, measure_resources
from tests.conftest import deadline, tiny_swin


def _randomise(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and parameters, so a wrong mapping cannot hide."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1, generator=g)
            m.running_var.uniform_(0.5, 2, generator=g)
            if m.affine:
                m.weight.data.uniform_(0.5, 1.5, generator=g)
                m.bias.data.uniform_(-0.5, 0.5, generator=g)
    for p in model.parameters():
        if p.ndim == 4 and p.shape[0] == 1:  # unwrapped per-channel scales
            p.data.uniform_(0.5, 1.5, generator=g)
    return model.eval()


def conv_bn(cin, cout, k=3, groups=1, affine=True):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, affine=affine),
        nn.ReLU(),
    )


class Head(nn.Module):
    def __init__(self, cin, classes=5):
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class ConcatNet(nn.Module):
    """Two branches concatenated (DenseNet, Inception, SqueezeNet)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = conv_bn(3, 8), conv_bn(3, 6, k=1)
        self.mix = conv_bn(14, 10)
        self.c = conv_bn(10, 4)
        self.head = Head(14)

    def forward(self, x):
        y = self.mix(torch.cat([self.a(x), self.b(x)], 1))
        return self.head(torch.cat([y, self.c(y)], 1))


class DepthwiseNet(nn.Module):
    """Inverted residual with a depthwise conv (MobileNet, EfficientNet, MNASNet)."""

    def __init__(self):
        super().__init__()
        self.c1 = conv_bn(3, 8)
        self.dw = conv_bn(8, 8, groups=8)
        self.pw = nn.Sequential(nn.Conv2d(8, 12, 1, bias=False), nn.BatchNorm2d(12))
        self.head = Head(12)

    def forward(self, x):
        return self.head(self.pw(self.dw(self.c1(x))))


class GroupedNet(nn.Module):
    """A grouped 3x3 conv between 1x1 convs (ResNeXt, RegNet)."""

    def __init__(self):
        super().__init__()
        self.c1 = conv_bn(3, 16, k=1)
        self.g = conv_bn(16, 24, groups=4)
        self.c3 = conv_bn(24, 8, k=1)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.c3(self.g(self.c1(x))))


class ConcatGroupedNet(nn.Module):
    """Two branches concatenated into a grouped conv: each branch fills different groups."""

    def __init__(self):
        super().__init__()
        self.a, self.b = conv_bn(3, 8), conv_bn(3, 8)
        self.g = conv_bn(16, 12, groups=4)
        self.head = Head(12)

    def forward(self, x):
        return self.head(self.g(torch.cat([self.a(x), self.b(x)], 1)))


class ShuffleNet(nn.Module):
    """Split, two branches, concat and channel shuffle (ShuffleNetV2)."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.branch = nn.Sequential(conv_bn(4, 6, k=1), conv_bn(6, 6, groups=6), conv_bn(6, 4, k=1))
        self.inner = nn.Sequential(conv_bn(8, 10, k=1), conv_bn(10, 8, k=1))
        self.head = Head(8)

    def forward(self, x):
        x = self.stem(x)
        left, right = x.chunk(2, dim=1)
        x = torch.cat([left, self.branch(right)], 1)
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        return self.head(self.inner(x))


class SENet(nn.Module):
    """Squeeze-excite gating on a conv block (EfficientNet, RegNetY, MobileNetV3)."""

    def __init__(self):
        super().__init__()
        self.c1 = conv_bn(3, 12)
        self.fc1 = nn.Conv2d(12, 4, 1)
        self.fc2 = nn.Conv2d(4, 12, 1)
        self.c2 = conv_bn(12, 6)
        self.head = Head(6)

    def forward(self, x):
        x = self.c1(x)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.head(self.c2(x * s))


class NonAffineNet(nn.Module):
    """BatchNorm without scale and shift: only running statistics to slice."""

    def __init__(self):
        super().__init__()
        self.c1 = conv_bn(3, 16, affine=False)
        self.c2 = conv_bn(16, 8, affine=False)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.c2(self.c1(x)))


class ParamScaleNet(nn.Module):
    """An nn.Parameter applied directly on the channel dimension (layer scale)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1, 8, 1, 1))
        self.c2 = conv_bn(8, 6)
        self.head = Head(6)

    def forward(self, x):
        return self.head(self.c2(self.c1(x) * self.scale))


# model class, modules that must be pruned (appear in an accepted unit's slices)
STRUCTURES = [
    (ConcatNet, {"a.0", "b.0", "mix.0", "mix.1"}),
    (DepthwiseNet, {"dw.0", "dw.1", "pw.0"}),
    (GroupedNet, {"g.0", "c1.0", "c3.0"}),
    (ShuffleNet, {"branch.0.0", "branch.1.0"}),
    (ConcatGroupedNet, {"g.0", "g.1"}),
    (SENet, {"fc1", "fc2", "c1.0"}),
    (NonAffineNet, {"c1.1", "c2.1"}),
    (ParamScaleNet, {"scale", "c1"}),
]


def _engine(model_cls):
    torch.manual_seed(0)
    model = _randomise(model_cls())
    x = torch.randn(4, 3, 8, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = ChannelEngine(model, x)
    return model, x, engine, caught


@pytest.mark.parametrize(("model_cls", "pruned_modules"), STRUCTURES)
def test_structure_pruned_equals_masked_with_exact_costs(model_cls, pruned_modules):
    model, x, engine, _ = _engine(model_cls)
    sliced = {s.module for slices in engine.slices for s in slices}
    assert pruned_modules <= sliced, (sliced, engine.kept_whole)
    rng = np.random.default_rng(0)
    sizes = [u.size for u in engine.units]
    with torch.no_grad():
        base = model(x)
    for draw in range(4):
        counts = [1] * len(sizes) if draw == 0 else [int(rng.integers(1, s)) for s in sizes]
        pruned, masked = engine.build(counts), engine.build_masked(counts)
        with torch.no_grad():
            out, ref = pruned(x), masked(x)
        assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4), (out - ref).abs().max()
        assert not torch.allclose(ref, base, atol=1e-3)  # something was really pruned
        assert measure_resources(pruned, x[:1]) == engine.resources(counts)
    full = engine.build(sizes)
    with torch.no_grad():
        assert torch.allclose(full(x), base, atol=1e-6)
    assert engine.resources(sizes) == (engine.total_params, engine.total_macs)


def test_depthwise_counts_by_hand():
    class Plain(DepthwiseNet):
        def __init__(self):
            super().__init__()
            self.head = Head(12)

    _, _, engine, _ = _engine(Plain)
    # torch-pruning roots the first group at the depthwise conv; it holds c1 as well
    assert [u.name for u in engine.units] == ["dw.0", "pw.0"]
    assert {"c1.0", "c1.1", "dw.0", "dw.1", "pw.0"} == {s.module for s in engine.slices[0]}
    assert [u.size for u in engine.units] == [8, 12]
    # kept: 3 channels through c1/dw, 5 out of pw; 8x8 maps, no conv bias, fc 5 outputs
    # c1 3*3*9=81, bn 6, dw 3*9=27, bn 6, pw 3*5=15, bn 10, fc 5*5+5=30
    params = 81 + 6 + 27 + 6 + 15 + 10 + 30
    macs = (81 + 27 + 15) * 64 + 25
    assert engine.resources([3, 5]) == (params, macs)
    net = engine.build([3, 5])
    assert net.dw[0].groups == net.dw[0].in_channels == net.dw[0].out_channels == 3
    # the unit's share is everything it prunes: c1, bn1, dw, bn2 and pw's input side
    total = 216 + 16 + 72 + 16 + 96 + 24 + 65
    assert engine.total_params == total
    assert engine.units[0].params_share == pytest.approx((216 + 16 + 72 + 16 + 96) / total)


def test_grouped_conv_prunes_the_same_positions_in_every_group():
    _, _, engine, _ = _engine(GroupedNet)
    by_root = {u.name: u for u in engine.units}
    # 16 channels feeding 4 groups: 4 decisions of 4 channels each; 24 out: 6 decisions
    assert by_root["c1.0"].size == 4 and by_root["g.0"].size == 6
    counts = [by_root[u.name].size for u in engine.units]
    counts[[u.name for u in engine.units].index("c1.0")] = 3
    net = engine.build(counts)
    assert net.g[0].in_channels == 12 and net.g[0].groups == 4 and net.g[0].weight.shape[1] == 3


def test_shuffle_builds_and_names_what_it_keeps_whole():
    _, _, engine, caught = _engine(ShuffleNet)
    assert engine.kept_whole  # the groups whose channels cross the shuffle
    messages = [str(w.message) for w in caught if "kept whole" in str(w.message)]
    assert len(messages) == 1  # said once
    for root, reason in engine.kept_whole.items():
        assert root in messages[0] and reason in messages[0]
    # the stem's channels are split, concatenated and shuffled: kept whole, and named
    assert "stem.0" in messages[0] and "stem.0" not in {u.name for u in engine.units}


def test_unsliceable_norm_is_kept_whole_with_the_reason():
    class LayerNormNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.norm = nn.GroupNorm(2, 8)
            self.c2 = conv_bn(8, 6)
            self.head = Head(6)

        def forward(self, x):
            return self.head(self.c2(self.norm(self.c1(x))))

    _, _, engine, caught = _engine(LayerNormNet)
    assert "GroupNorm" in engine.kept_whole["c1"]
    assert [u.name for u in engine.units] == ["c2.0"]
    assert any("kept whole" in str(w.message) for w in caught)


def test_branches_that_fill_different_groups_of_a_grouped_conv_are_kept_whole():
    _, _, engine, _ = _engine(ConcatGroupedNet)
    # pruning branch a alone would leave the grouped conv with unequal groups
    assert "grouped convolution 'g.0'" in engine.kept_whole["a.0"]
    assert "grouped convolution 'g.0'" in engine.kept_whole["b.0"]
    assert [u.name for u in engine.units] == ["g.0"]


def test_one_channel_per_conv_group_is_kept_whole_and_said():
    class Multiplier(nn.Module):  # depthwise with a channel multiplier: 8 groups of 1 input
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)
            self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)
            self.head = Head(16)

        def forward(self, x):
            return self.head(torch.relu(self.dw(torch.relu(self.c1(x)))))

    _, _, engine, _ = _engine(Multiplier)
    assert "one channel each" in engine.kept_whole["c1"]


def test_a_group_rejected_for_a_clash_is_cleared_when_accepted_later():
    from prune_env.engine import DimSlice
    from prune_env.engine.groups import _Candidate, _claim

    _, _, engine, _ = _engine(GroupedNet)
    engine.kept_whole.clear()
    r = np.arange(8)
    # A prunes c1's first 8 channels and thereby only two of g's four input groups (uneven);
    # B shares two of those channels, so it clashes with A until A is dropped.
    a = _Candidate("A", 8, [DimSlice("c1.0", "out", r, r), DimSlice("g.0", "in", r, r)], np.ones(8))
    b = _Candidate("B", 2, [DimSlice("c1.0", "out", r[:2], r[:2])], np.ones(2))
    assert _claim([a, b], engine.shapes, engine.kept_whole) == [b]
    assert "grouped convolution" in engine.kept_whole["A"] and "B" not in engine.kept_whole


def test_a_window_partition_is_kept_whole_instead_of_expanding_without_end():
    # torch-pruning reads Swin's window partition as a flatten and expands the indices by its
    # stride again and again: without the bound this 19k-parameter model does not finish
    # (swin_t grew past 16 GB). With it: under a second, the MLPs' hidden channels pruned.
    model, x = tiny_swin(), torch.randn(2, 3, 32, 32)
    with deadline(60), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = ChannelEngine(model, x)
    diverged = [r for r in engine.kept_whole.values() if "_IndexMappingDiverged" in r]
    assert len(diverged) == 2, engine.kept_whole
    assert [u.name for u in engine.units] == ["features.1.0.mlp.0", "features.3.0.mlp.0"]
    rng = np.random.default_rng(0)
    for _ in range(3):
        counts = [int(rng.integers(1, u.size)) for u in engine.units]
        pruned, masked = engine.build(counts), engine.build_masked(counts)
        with torch.no_grad():
            assert torch.allclose(pruned(x), masked(x), atol=1e-5, rtol=1e-4)
        assert measure_resources(pruned, x[:1]) == engine.resources(counts)


def test_the_flatten_bound_passes_what_fits_and_stops_what_does_not():
    from torch_pruning import _helpers
    from torch_pruning.dependency.index_mapping import _FlattenIndexMapping

    from prune_env.engine.tracing import (
        _bounded_index_mapping,
        _IndexBounds,
        _IndexMappingDiverged,
    )

    flatten = _FlattenIndexMapping(stride=4)
    idxs = [_helpers._HybridIndex(idx=i, root_idx=i) for i in (0, 2)]
    expected = [i.idx for i in flatten(idxs)]
    # channel 2 of 3 maps to features 8..11 of 12: fits
    with _bounded_index_mapping(_IndexBounds(channels=3, elements=12)):
        assert [i.idx for i in flatten(idxs)] == expected == [0, 1, 2, 3, 8, 9, 10, 11]
    # The bound is left by its exception, as in a group build; the original must come back.
    with (
        pytest.raises(_IndexMappingDiverged, match="index 11, past the largest tensor"),
        _bounded_index_mapping(_IndexBounds(channels=3, elements=11)),
    ):
        flatten(idxs)
    assert [i.idx for i in flatten(idxs)] == expected
    with (  # index 2 is no channel of a model whose widest layer has 2: expanded already
        pytest.raises(_IndexMappingDiverged, match="index 2 again, past the widest layer"),
        _bounded_index_mapping(_IndexBounds(channels=2, elements=100)),
    ):
        flatten(idxs)
    assert [i.idx for i in flatten(idxs)] == expected
    reverse = _FlattenIndexMapping(stride=4, reverse=True)
    flat = flatten(idxs)
    with _bounded_index_mapping(_IndexBounds(channels=1, elements=1)):  # only shrinks
        assert sorted(i.idx for i in reverse(flat)) == [0, 2]


def test_the_visit_bound_counts_each_node_per_group():
    from torch_pruning import _helpers
    from torch_pruning.dependency.dependency import Dependency
    from torch_pruning.dependency.group import Group
    from torch_pruning.dependency.node import Node

    from prune_env.engine.tracing import (
        _bounded_index_mapping,
        _IndexBounds,
        _IndexMappingDiverged,
    )

    fc, other = (Node(nn.Linear(2, 2), None, name=n) for n in ("fc", "other"))
    to_fc, to_other = Dependency(None, None, fc, fc), Dependency(None, None, fc, other)
    idxs = [_helpers._HybridIndex(idx=0, root_idx=0)]
    first, second = Group(), Group()
    with (
        pytest.raises(_IndexMappingDiverged, match="reaches fc more than 2 times"),
        _bounded_index_mapping(_IndexBounds(channels=2, elements=2, visits=2)),
    ):
        for group in (first, second):  # counted per group: both may reach fc twice
            group.add_dep(to_fc, idxs)
            group.add_dep(to_fc, idxs)
            group.add_dep(to_other, idxs)  # and per node
        assert len(first) == len(second) == 3
        second.add_dep(to_fc, idxs)  # the third time in one group
    assert len(second) == 3
    Group().add_dep(to_fc, idxs)  # the original is back: no count, no bound
