"""Pruning engine: the one module that talks to torch-pruning.

The dependency graph is traced once per base model. From it we keep only plain data (which
dimension of which module belongs to which coupled channel group, and which root channel
each position stands for), so that an episode builds its pruned network by slicing the base
tensors along a precomputed ranking: no re-tracing, no deepcopy of real weights, and the
engine stays picklable (the graph itself holds hooks and closures).

Two granularities share one interface:

- ``ChannelEngine``: structured pruning of coupled channel groups (residual adds included);
  the result is a physically smaller network.
- ``WeightEngine``: per-layer unstructured magnitude pruning of every Conv/Linear weight;
  the result has the base shapes with zeros (the paper's coarse-grained setting).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

IMPORTANCES = ("l1", "l2", "bn_scale", "random")

_CONV = nn.modules.conv._ConvNd
_BN = nn.modules.batchnorm._BatchNorm


@dataclass
class DimSlice:
    """One dimension of one module that a channel group prunes."""

    module: str
    role: str  # "out" (weight dim 0 / BN features) or "in" (weight dim 1)
    positions: np.ndarray  # indices along that dimension
    roots: np.ndarray  # root channel of the group each position belongs to
    order: np.ndarray = field(init=False)  # positions sorted by the rank of their root
    kept_count: np.ndarray = field(init=False)  # kept_count[k]: positions kept with top-k roots
    untouched: np.ndarray = field(init=False)  # positions of the dimension outside the group


@dataclass
class Unit:
    """One decision of the agent: a channel group (channel mode) or one layer (weight mode)."""

    name: str  # name of the root module
    size: int  # channels in the group, or weights in the layer
    layer_type: int  # 0 conv, 1 linear
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    fmap: int  # spatial positions of the root's output (H*W)
    params_share: float  # share of the base parameters held by the root module
    flops_share: float  # share of the base MACs spent in the root module


@dataclass
class LayerShape:
    """What the analytic resource model needs to know about one Conv/Linear/BN module."""

    kind: str  # "conv", "linear", "bn"
    out_size: int
    in_size: int
    kernel_volume: int  # product of the kernel size (1 for Linear, 0 for BN)
    groups: int
    has_bias: bool
    spatial: int  # output positions per sample, 0 for BN
    out_unit: int | None = None
    out_slice: DimSlice | None = None
    in_unit: int | None = None
    in_slice: DimSlice | None = None


def _module_spatial(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Output positions per sample of every Conv/Linear, and the execution order of layers."""
    spatial: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (_CONV, nn.Linear)):
            channels = module.out_channels if isinstance(module, _CONV) else module.out_features

            def hook(mod, inputs, output, name=name, channels=channels):
                spatial[name] = int(output[:1].numel() // channels)

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return spatial  # dict insertion order = execution order


def _layer_shapes(model: nn.Module, spatial: dict[str, int]) -> dict[str, LayerShape]:
    shapes: dict[str, LayerShape] = {}
    for name, m in model.named_modules():
        if isinstance(m, _CONV):
            shapes[name] = LayerShape(
                "conv",
                m.out_channels,
                m.in_channels,
                math.prod(m.kernel_size),
                m.groups,
                m.bias is not None,
                spatial.get(name, 0),
            )
        elif isinstance(m, nn.Linear):
            shapes[name] = LayerShape(
                "linear",
                m.out_features,
                m.in_features,
                1,
                1,
                m.bias is not None,
                spatial.get(name, 0),
            )
        elif isinstance(m, _BN) and m.affine:
            shapes[name] = LayerShape("bn", m.num_features, 0, 0, 1, True, 0)
    return shapes


def _layer_counts(shape: LayerShape, out_size: int, in_size: int) -> tuple[int, int]:
    """(parameters, MACs) of a Conv/Linear/BN with the given channel counts."""
    if shape.kind == "bn":
        return 2 * out_size, 0
    weights = out_size * (in_size // shape.groups) * shape.kernel_volume
    params = weights + (out_size if shape.has_bias else 0)
    return params, weights * shape.spatial


class _EngineBase:
    """Shared state: the base model on its device, its meta skeleton and resource totals."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor) -> None:
        self.base = model.eval()
        self.device = next(model.parameters()).device
        self._skeleton = copy.deepcopy(model).to("meta")
        self._base_modules = dict(model.named_modules())
        self._spatial = _module_spatial(model, example_input.to(self.device))
        self.shapes = _layer_shapes(model, self._spatial)
        self.total_params = sum(p.numel() for p in model.parameters())
        self.total_macs = sum(
            _layer_counts(s, s.out_size, s.in_size)[1] for s in self.shapes.values()
        )
        self._fixed_params = self.total_params - sum(
            _layer_counts(s, s.out_size, s.in_size)[0] for s in self.shapes.values()
        )
        self.units: list[Unit] = []

    def _unit_features(self, name: str, size: int) -> Unit:
        module = self.base.get_submodule(name)
        shape = self.shapes[name]
        params, macs = _layer_counts(shape, shape.out_size, shape.in_size)
        if isinstance(module, _CONV):
            layer_type, kernel, stride = 0, int(module.kernel_size[0]), int(module.stride[0])
        else:
            layer_type, kernel, stride = 1, 1, 1
        return Unit(
            name=name,
            size=size,
            layer_type=layer_type,
            in_channels=shape.in_size,
            out_channels=shape.out_size,
            kernel=kernel,
            stride=stride,
            fmap=shape.spatial,
            params_share=params / max(self.total_params, 1),
            flops_share=macs / max(self.total_macs, 1),
        )

    def _materialise(self, overrides: dict[str, dict[str, torch.Tensor]]) -> nn.Module:
        """A fresh network: overridden tensors where given, clones of the base elsewhere."""
        net = copy.deepcopy(self._skeleton)
        for name, module in net.named_modules():
            base = self._base_modules[name]
            new = overrides.get(name, {})
            for key, p in base._parameters.items():
                if p is not None:
                    t = new[key] if key in new else p.detach().clone()
                    module._parameters[key] = nn.Parameter(t, requires_grad=p.requires_grad)
            for key, b in base._buffers.items():
                if b is not None:
                    module._buffers[key] = new[key] if key in new else b.clone()
        return net.eval()

    def validate_counts(self, counts: Sequence[int]) -> np.ndarray:
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != (len(self.units),):
            raise ValueError(f"expected {len(self.units)} keep counts, got shape {counts.shape}")
        sizes = np.array([u.size for u in self.units])
        if np.any(counts < 1) or np.any(counts > sizes):
            raise ValueError(f"keep counts must lie in [1, size]; sizes {sizes.tolist()}")
        return counts


class ChannelEngine(_EngineBase):
    """Structured channel pruning over torch-pruning's dependency graph.

    Args:
        model: the base network (left unchanged); its device is used for everything.
        example_input: a batch that the network accepts (traced once).
        importance: channel ranking inside a group: "l1", "l2", "bn_scale" or "random"
            ("random" ranks by index until ``set_rankings`` gives a drawn ranking).
        ignored_layers: names of Conv/Linear modules whose output channels must not be pruned.
            The last-executed Conv/Linear (the classifier head) is always ignored.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        importance: str = "l1",
        ignored_layers: Sequence[str] = (),
    ) -> None:
        if importance not in IMPORTANCES:
            raise ValueError(f"unknown importance {importance!r}; expected one of {IMPORTANCES}")
        super().__init__(model, example_input)
        modules = dict(model.named_modules())
        unknown = [n for n in ignored_layers if n not in modules]
        if unknown:
            raise ValueError(f"ignored_layers {unknown} are not modules of the model")
        head = list(self._spatial)[-1] if self._spatial else None
        ignored = {modules[n] for n in (*ignored_layers, *([head] if head else []))}
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=example_input[:1].to(self.device), verbose=False
        )
        self.importance = importance
        self.slices: list[list[DimSlice]] = []
        scores: list[np.ndarray] = []
        skipped: list[str] = []
        names = {m: n for n, m in model.named_modules()}
        for group in graph.get_all_groups(ignored_layers=list(ignored)):
            root = group[0].dep.target.module
            root_name = names[root]
            slices, supported = [], True
            for item in group.items:
                target = item.dep.target.module
                if not isinstance(target, nn.Module) or not any(True for _ in target.parameters()):
                    continue  # parameter-free op (ReLU, add, flatten): nothing to slice
                if not self._supported(target):
                    supported = False
                    break
                role = "out" if graph.is_out_channel_pruning_fn(item.dep.handler) else "in"
                if isinstance(target, _BN):
                    role = "out"
                slices.append(
                    DimSlice(
                        names[target],
                        role,
                        np.asarray(item.idxs, dtype=np.int64),
                        np.asarray(item.root_idxs, dtype=np.int64),
                    )
                )
            if not supported:
                skipped.append(root_name)
                continue
            size = self.shapes[root_name].out_size
            if size < 2:
                continue
            self.units.append(self._unit_features(root_name, size))
            self.slices.append(slices)
            scores.append(self._score(group, size, root_name))
        if skipped:
            warnings.warn(
                f"channel groups rooted at {skipped} touch layers this engine cannot slice "
                "(grouped/depthwise convolutions, norms other than BatchNorm...); "
                "they are kept whole",
                stacklevel=2,
            )
        if not self.units:
            raise ValueError("the model has no prunable channel group (Conv/Linear/BatchNorm)")
        # The agent walks the layers in the order the forward pass runs them.
        position = {name: i for i, name in enumerate(self._spatial)}
        order = sorted(range(len(self.units)), key=lambda i: position[self.units[i].name])
        self.units = [self.units[i] for i in order]
        self.slices = [self.slices[i] for i in order]
        self._index_shapes()
        # Per-channel importance, divided by its group's mean so that groups compare (the
        # normalisation torch-pruning uses for global pruning).
        self._scores = [scores[i] / max(float(np.mean(np.abs(scores[i]))), 1e-12) for i in order]
        self.set_rankings([np.argsort(-scores[i], kind="stable") for i in order])

    @staticmethod
    def _supported(module: nn.Module) -> bool:
        if isinstance(module, _CONV):
            return module.groups == 1 and not module.transposed
        return isinstance(module, (nn.Linear, _BN))

    def _score(self, group, size: int, root_name: str) -> np.ndarray:
        if self.importance == "random":
            return -np.arange(size, dtype=np.float64)  # index order until a ranking is drawn
        if self.importance == "bn_scale":
            scorer = tp.importance.BNScaleImportance(normalizer=None)
        else:
            p = 1 if self.importance == "l1" else 2
            scorer = tp.importance.GroupMagnitudeImportance(p=p, normalizer=None)
        with torch.no_grad():
            imp = scorer(group)
        if imp is None or len(imp) == 0:
            if self.importance == "bn_scale":
                raise ValueError(
                    "importance 'bn_scale' needs a BatchNorm in every channel group; the group "
                    f"of {root_name!r} has none (list it in ignored_layers or use 'l1')"
                )
            raise ValueError("torch-pruning returned no importance for a group")
        return imp.detach().double().cpu().numpy()

    def _index_shapes(self) -> None:
        seen: set[tuple[str, str]] = set()
        for u, slices in enumerate(self.slices):
            for s in slices:
                key = (s.module, s.role)
                if key in seen:
                    raise ValueError(f"dimension {key} is claimed by two channel groups")
                seen.add(key)
                shape = self.shapes[s.module]
                full = shape.out_size if s.role == "out" else shape.in_size
                s.untouched = np.setdiff1d(np.arange(full), s.positions, assume_unique=True)
                if s.role == "out":
                    shape.out_unit, shape.out_slice = u, s
                else:
                    shape.in_unit, shape.in_slice = u, s

    def set_rankings(self, rankings: Sequence[np.ndarray]) -> None:
        """Set the channel order of every group (most important first)."""
        if len(rankings) != len(self.units):
            raise ValueError(f"expected {len(self.units)} rankings, got {len(rankings)}")
        self.rankings = [np.asarray(r, dtype=np.int64) for r in rankings]
        for unit, ranking, slices in zip(self.units, self.rankings, self.slices, strict=True):
            if sorted(ranking.tolist()) != list(range(unit.size)):
                raise ValueError(f"ranking of {unit.name} is not a permutation of {unit.size}")
            rank_of = np.empty(unit.size, dtype=np.int64)
            rank_of[ranking] = np.arange(unit.size)
            for s in slices:
                ranks = rank_of[s.roots]
                s.order = s.positions[np.argsort(ranks, kind="stable")]
                s.kept_count = np.searchsorted(np.sort(ranks), np.arange(unit.size + 1))

    def draw_random_rankings(self, rng: np.random.Generator) -> None:
        self.set_rankings([rng.permutation(u.size) for u in self.units])

    def global_scores(self) -> list[np.ndarray]:
        """Importance of every channel, comparable across groups (for one global threshold)."""
        if self.importance == "random":
            raise ValueError("importance='random' has no magnitudes to threshold globally")
        return self._scores

    def _dim_size(self, shape: LayerShape, role: str, counts: np.ndarray) -> int:
        unit, s = (
            (shape.out_unit, shape.out_slice) if role == "out" else (shape.in_unit, shape.in_slice)
        )
        full = shape.out_size if role == "out" else shape.in_size
        if unit is None:
            return full
        return full - len(s.positions) + int(s.kept_count[counts[unit]])

    def resources(self, counts: Sequence[int]) -> tuple[int, int]:
        """Exact (parameters, MACs) of the network pruned to ``counts`` channels per group."""
        counts = np.asarray(counts, dtype=np.int64)
        params, macs = self._fixed_params, 0
        for shape in self.shapes.values():
            out = self._dim_size(shape, "out", counts)
            inp = self._dim_size(shape, "in", counts) if shape.kind != "bn" else 0
            p, m = _layer_counts(shape, out, inp)
            params += p
            macs += m
        return params, macs

    def _kept_positions(self, s: DimSlice, count: int) -> torch.Tensor:
        idx = np.sort(np.concatenate([s.order[: s.kept_count[count]], s.untouched]))
        return torch.from_numpy(idx).to(self.device)

    def _dim_indices(self, counts: np.ndarray) -> dict[str, dict[str, torch.Tensor]]:
        dims: dict[str, dict[str, torch.Tensor]] = {}
        for name, shape in self.shapes.items():
            if shape.out_unit is not None:
                dims.setdefault(name, {})["out"] = self._kept_positions(
                    shape.out_slice, counts[shape.out_unit]
                )
            if shape.in_unit is not None:
                dims.setdefault(name, {})["in"] = self._kept_positions(
                    shape.in_slice, counts[shape.in_unit]
                )
        return dims

    def build(self, counts: Sequence[int]) -> nn.Module:
        """The physically pruned network keeping the top ``counts[i]`` channels of group i."""
        counts = self.validate_counts(counts)
        overrides: dict[str, dict[str, torch.Tensor]] = {}
        dims = self._dim_indices(counts)
        with torch.no_grad():
            for name, idx in dims.items():
                base = self.base.get_submodule(name)
                out, inp = idx.get("out"), idx.get("in")
                tensors: dict[str, torch.Tensor] = {}
                if isinstance(base, _BN):
                    for key in ("weight", "bias", "running_mean", "running_var"):
                        t = getattr(base, key)
                        if t is not None:
                            tensors[key] = t.index_select(0, out)
                else:
                    w = base.weight
                    if out is not None:
                        w = w.index_select(0, out)
                    if inp is not None:
                        w = w.index_select(1, inp)
                    tensors["weight"] = w if w is not base.weight else w.clone()
                    if base.bias is not None and out is not None:
                        tensors["bias"] = base.bias.index_select(0, out)
                overrides[name] = tensors
        net = self._materialise(overrides)
        for name, idx in dims.items():
            module = net.get_submodule(name)
            if isinstance(module, _BN):
                module.num_features = len(idx["out"])
            elif isinstance(module, _CONV):
                module.out_channels = module.weight.shape[0]
                module.in_channels = module.weight.shape[1] * module.groups
            elif isinstance(module, nn.Linear):
                module.out_features, module.in_features = module.weight.shape
        return net

    def build_masked(self, counts: Sequence[int]) -> nn.Module:
        """The base network with the pruned channels zeroed instead of removed.

        Every output-side slice of a pruned channel (Conv/Linear rows and bias, BatchNorm
        scale and shift) is set to zero, so the channel carries exactly 0 downstream; this is
        how the paper's implementation evaluates a candidate, and what ``build`` must equal.
        """
        counts = self.validate_counts(counts)
        net = self._materialise({})
        with torch.no_grad():
            for unit, slices in enumerate(self.slices):
                for s in slices:
                    if s.role != "out":
                        continue
                    pruned = torch.from_numpy(s.order[s.kept_count[counts[unit]] :]).to(self.device)
                    module = net.get_submodule(s.module)
                    module.weight[pruned] = 0
                    if module.bias is not None:
                        module.bias[pruned] = 0
        return net


class WeightEngine(_EngineBase):
    """Per-layer unstructured magnitude pruning of every Conv/Linear weight tensor.

    Args:
        model: the base network (left unchanged).
        example_input: a batch that the network accepts.
        importance: "l1"/"l2" (both rank weights by magnitude) or "random".
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, importance: str = "l1"):
        if importance not in ("l1", "l2", "random"):
            raise ValueError(
                f"importance {importance!r} is not defined for granularity='weight'; "
                "expected 'l1', 'l2' or 'random'"
            )
        super().__init__(model, example_input)
        self.importance = importance
        self.layer_names = [n for n, s in self.shapes.items() if s.kind != "bn"]
        self.units = [
            self._unit_features(n, self.base.get_submodule(n).weight.numel())
            for n in self.layer_names
        ]
        self._weight_macs = np.array([self.shapes[n].spatial for n in self.layer_names])
        self._dense_weights = sum(u.size for u in self.units)
        if importance == "random":
            self.rankings = [np.arange(u.size) for u in self.units]
        else:
            self.rankings = [
                torch.argsort(
                    self.base.get_submodule(n).weight.detach().abs().flatten(),
                    descending=True,
                    stable=True,
                )
                .cpu()
                .numpy()
                for n in self.layer_names
            ]

    def draw_random_rankings(self, rng: np.random.Generator) -> None:
        self.rankings = [rng.permutation(u.size) for u in self.units]

    def global_scores(self) -> list[np.ndarray]:
        """Weight magnitudes of every layer (global magnitude pruning compares them raw)."""
        if self.importance == "random":
            raise ValueError("importance='random' has no magnitudes to threshold globally")
        return [
            self.base.get_submodule(n).weight.detach().abs().flatten().float().cpu().numpy()
            for n in self.layer_names
        ]

    def resources(self, counts: Sequence[int]) -> tuple[int, int]:
        """(non-zero parameters, MACs of non-zero weights) when layer i keeps counts[i] weights."""
        counts = np.asarray(counts, dtype=np.int64)
        params = self.total_params - self._dense_weights + int(counts.sum())
        return params, int((counts * self._weight_macs).sum())

    def build(self, counts: Sequence[int]) -> nn.Module:
        counts = self.validate_counts(counts)
        overrides = {}
        with torch.no_grad():
            for name, ranking, count in zip(self.layer_names, self.rankings, counts, strict=True):
                w = self.base.get_submodule(name).weight
                mask = torch.zeros(w.numel(), dtype=w.dtype, device=w.device)
                mask[torch.from_numpy(ranking[:count]).to(w.device)] = 1
                overrides[name] = {"weight": w * mask.view_as(w)}
        return self._materialise(overrides)

    build_masked = build


def make_engine(
    model: nn.Module,
    example_input: torch.Tensor,
    granularity: str = "channel",
    importance: str = "l1",
    ignored_layers: Sequence[str] = (),
) -> ChannelEngine | WeightEngine:
    """Build the engine for ``granularity`` ("channel" or "weight")."""
    if granularity == "channel":
        return ChannelEngine(model, example_input, importance, ignored_layers)
    if granularity == "weight":
        return WeightEngine(model, example_input, importance)
    raise ValueError(f"unknown granularity {granularity!r}; expected 'channel' or 'weight'")


def tp_prune_reference(
    model: nn.Module, example_input: torch.Tensor, engine: ChannelEngine, counts: Sequence[int]
) -> nn.Module:
    """Prune a deep copy of ``model`` with torch-pruning itself (for cross-checks in tests)."""
    net = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=example_input[:1])
    for unit, ranking, count in zip(engine.units, engine.rankings, counts, strict=True):
        pruned = sorted(ranking[count:].tolist())
        if not pruned:
            continue
        root = net.get_submodule(unit.name)
        fn = tp.prune_conv_out_channels if isinstance(root, _CONV) else tp.prune_linear_out_channels
        graph.get_pruning_group(root, fn, idxs=pruned).prune()
    return net.eval()


def measure_resources(
    model: nn.Module, example_input: torch.Tensor, nonzero: bool = False
) -> tuple[int, int]:
    """(parameters, MACs) of any network, counted on the module itself, not from an engine.

    MACs are those of Conv/Linear layers for one sample, as in the env's cost. With
    ``nonzero``, zero weights count neither as parameters nor as multiply-accumulates (what
    weight granularity reports). For a network built by an engine this equals
    ``engine.resources(counts)``: the independent check of a saved pruned model.
    """
    device = next(model.parameters()).device
    spatial = _module_spatial(model, example_input.to(device))
    params, macs = sum(p.numel() for p in model.parameters()), 0
    for name, shape in _layer_shapes(model, spatial).items():
        if shape.kind == "bn":
            continue
        weight = model.get_submodule(name).weight
        weights = int(torch.count_nonzero(weight)) if nonzero else weight.numel()
        params -= weight.numel() - weights  # only Conv/Linear weights are pruned to zero
        macs += weights * shape.spatial
    return params, macs
