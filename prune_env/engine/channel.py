"""Pruning engine: the one module that talks to torch-pruning.

The dependency graph is traced once per base model. From it we keep only plain data (which
positions of which tensor dimension belong to which coupled channel group, and which
decision each position stands for), so that an episode builds its pruned network by slicing
the base tensors along a precomputed ranking: no re-tracing, no deepcopy of real weights, and
the engine stays picklable (the graph itself holds hooks and closures).

Two granularities share one interface:

- ``ChannelEngine``: structured pruning of coupled channel groups; the result is a physically
  smaller network. Pruned structures: Conv (plain, depthwise, grouped), Linear, BatchNorm
  (affine or not), ``nn.Parameter`` tensors used directly on a channel dimension, residual
  adds, element-wise gates (squeeze-excite), concatenations and splits. A group that touches
  anything else (other norms, transposed convolutions, attention, channel orders
  torch-pruning cannot map such as a channel shuffle) is kept whole, and the engine says
  which and why, once.
- ``WeightEngine``: per-layer unstructured magnitude pruning of every Conv/Linear weight;
  the result has the base shapes with zeros (the paper's coarse-grained setting).

Every channel group the engine accepts is checked numerically at construction: the pruned
network must equal the masked one (pruned channels zeroed) and its counted parameters and
MACs must equal the analytic ones; a group that fails is kept whole.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import group as _tp_group
from torch_pruning.dependency import index_mapping as _tp_index_mapping

IMPORTANCES = ("l1", "l2", "bn_scale", "random")

_CONV = nn.modules.conv._ConvNd
_BN = nn.modules.batchnorm._BatchNorm


@dataclass
class DimSlice:
    """The positions of one tensor dimension that one channel group prunes."""

    module: str  # module name, or the full name of an unwrapped nn.Parameter
    role: str  # "out" (weight dim 0, BN features, a parameter's channel dim) or "in" (dim 1)
    positions: np.ndarray  # indices along that dimension
    roots: np.ndarray  # the decision (channel of the group) each position belongs to
    unit: int = -1  # index of the unit (decision) that owns this slice
    order: np.ndarray = field(init=False)  # positions sorted by the rank of their decision
    kept_count: np.ndarray = field(init=False)  # kept_count[k]: positions kept with top-k


@dataclass
class Unit:
    """One decision of the agent: a channel group (channel mode) or one layer (weight mode)."""

    name: str  # name of the root module
    size: int  # channels (decisions) in the group, or weights in the layer
    layer_type: int  # 0 conv, 1 linear
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    fmap: int  # spatial positions of the root's output (H*W)
    params_share: float  # share of the base parameters that this unit prunes
    flops_share: float  # share of the base MACs that this unit prunes


@dataclass
class LayerShape:
    """What the analytic resource model needs to know about one prunable tensor owner."""

    kind: str  # "conv", "linear", "bn", "param"
    out_size: int  # out channels / BN features / size of a parameter's channel dim
    in_size: int  # in channels (Conv/Linear); elements per channel (param); 0 for BN
    kernel_volume: int  # product of the kernel size (1 for Linear, 0 for BN)
    groups: int
    has_bias: bool  # Conv/Linear bias; BN: affine
    spatial: int  # output positions per sample, 0 for BN
    depthwise: bool = False  # groups == in == out: in and out channels are one dimension
    param_dim: int = 0  # the channel dimension of an unwrapped parameter
    out_slices: list[DimSlice] = field(default_factory=list)
    in_slices: list[DimSlice] = field(default_factory=list)


class _KeptWhole(Exception):
    """A channel group this engine cannot prune safely; the message says why."""


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
    _forward_once(model, example_input[:1], hooks)
    return spatial  # dict insertion order = execution order


def _forward_once(model: nn.Module, sample: torch.Tensor, hooks: list) -> None:
    """Run ``model`` on ``sample`` in eval mode without gradients, then remove ``hooks``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def _layer_shapes(model: nn.Module, spatial: dict[str, int]) -> dict[str, LayerShape]:
    shapes: dict[str, LayerShape] = {}
    for name, m in model.named_modules():
        if isinstance(m, _CONV):
            depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
            shapes[name] = LayerShape(
                "conv",
                m.out_channels,
                m.in_channels,
                math.prod(m.kernel_size),
                m.groups,
                m.bias is not None,
                spatial.get(name, 0),
                depthwise=depthwise,
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
        elif isinstance(m, _BN):
            shapes[name] = LayerShape("bn", m.num_features, 0, 0, 1, m.affine, 0)
    return shapes


def _layer_counts(shape: LayerShape, out_size: int, in_size: int) -> tuple[int, int]:
    """(parameters, MACs) of a Conv/Linear/BN/parameter with the given channel counts."""
    if shape.kind == "bn":
        return (2 * out_size if shape.has_bias else 0), 0
    if shape.kind == "param":
        return out_size * shape.in_size, 0
    # A depthwise conv keeps one input channel per output channel, whatever remains.
    per_output = 1 if shape.depthwise else in_size // shape.groups
    weights = out_size * per_output * shape.kernel_volume
    params = weights + (out_size if shape.has_bias else 0)
    return params, weights * shape.spatial


@contextlib.contextmanager
def _tolerant_reshape_mapping() -> Iterator[None]:
    """Trace through reshapes torch-pruning 1.6 cannot map (a channel shuffle divides by 0).

    Such a reshape is left without an index mapping; the groups that cross it are then
    caught by the numerical check and kept whole, instead of the whole trace failing.
    """
    original = _tp_index_mapping.update_reshape_index_mapping

    def tolerant(graph, node):
        with contextlib.suppress(ZeroDivisionError):
            original(graph, node)

    _tp_index_mapping.update_reshape_index_mapping = tolerant
    try:
        yield
    finally:
        _tp_index_mapping.update_reshape_index_mapping = original


class _IndexMappingDiverged(Exception):
    """torch-pruning's group build left the model's channels or circled (``_IndexBounds``)."""


@dataclass(frozen=True)
class _IndexBounds:
    """What building one pruning group of a model may do (see ``_bounded_index_mapping``)."""

    # Largest dimension of any parameter. A flatten's input is channels C of a tensor whose
    # C * positions features feed a Linear: C is at most that Linear's width, so a larger
    # index entering a flatten has been expanded already.
    channels: int
    elements: int  # elements per sample of the largest tensor any module takes or returns
    # Times one node may join one group. A sound group needed at most 16 over torchvision's
    # classifiers (ShuffleNetV2's shuffle; others 2-6); MaxViT's blocks had passed 200 at 7 s.
    visits: int = 64


def _index_bounds(model: nn.Module, example_input: torch.Tensor) -> _IndexBounds:
    """The bounds of ``model``'s group builds, from its parameters and one traced sample."""
    channels = max((max(p.shape) for p in model.parameters() if p.dim()), default=1)
    sample = example_input[:1]
    elements = sample.numel()

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal elements
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        for t in (*inputs, *outputs):
            if isinstance(t, torch.Tensor):  # one sample: whatever its batch dimension
                elements = max(elements, t.numel())

    _forward_once(model, sample, [m.register_forward_hook(hook) for m in model.modules()])
    return _IndexBounds(channels, elements)


@contextlib.contextmanager
def _bounded_index_mapping(bounds: _IndexBounds) -> Iterator[None]:
    """Stop torch-pruning's group building once its index mapping runs away.

    torch-pruning 1.6 reads a window partition (Swin's and MaxViT's view/permute) as a
    flatten. Around a Swin block it expands the indices by the stride again and again: 768
    channels became 2 million indices and the build grew past 16 GB (torchvision's swin_t).
    Around a MaxViT block it circles with ever new index sets (one node joined one group 200
    times in 7 s; the build passed 10 GB). So a flatten's input must be channels (below
    ``bounds.channels``) and its output must fit in a tensor (below ``bounds.elements``), and
    a node may join a group at most ``bounds.visits`` times. Otherwise
    ``_IndexMappingDiverged`` is raised before more is allocated, and the group is kept whole
    with that reason.
    """
    mapping = _tp_index_mapping._FlattenIndexMapping
    original_call, original_add = mapping.__call__, _tp_group.Group.add_dep

    def bounded_call(self, idxs: list) -> list:
        if not self.reverse and idxs:
            top = max(i.idx for i in idxs) + 1
            if top > bounds.channels:
                raise _IndexMappingDiverged(
                    f"a flatten expands index {top - 1} again, past the widest layer of the "
                    f"model ({bounds.channels} channels)"
                )
            if top * self._stride > bounds.elements:
                raise _IndexMappingDiverged(
                    f"a flatten maps its channels to index {top * self._stride - 1}, past the "
                    f"largest tensor of the model ({bounds.elements} elements per sample)"
                )
        return original_call(self, idxs)

    def bounded_add(self, dep, idxs: list) -> None:
        visits = self.__dict__.setdefault("_prune_env_visits", {})
        visits[dep.target] = visits.get(dep.target, 0) + 1
        if visits[dep.target] > bounds.visits:
            node = dep.target._name or str(dep.target.module)  # op nodes: "_SplitOp_36(...)"
            raise _IndexMappingDiverged(f"its group reaches {node} more than {bounds.visits} times")
        return original_add(self, dep, idxs)

    mapping.__call__, _tp_group.Group.add_dep = bounded_call, bounded_add
    try:
        yield
    finally:
        mapping.__call__, _tp_group.Group.add_dep = original_call, original_add


@contextlib.contextmanager
def _diverged_as_runtime_error(what: str) -> Iterator[None]:
    """A bound hit where no group can be kept whole is the caller's error, said in words."""
    try:
        yield
    except _IndexMappingDiverged as e:
        raise RuntimeError(f"{what} could not build a pruning group: {e}") from e


def trace_dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of ``model``; a trace failure names the argument."""
    with warnings.catch_warnings(), _tolerant_reshape_mapping():
        warnings.simplefilter("ignore")  # "unwrapped parameters detected": handled below
        try:
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input, verbose=False
            )
        except Exception as e:  # any trace failure is a property of the model
            raise ValueError(
                f"torch-pruning could not trace model with example_input of shape "
                f"{tuple(example_input.shape)}: {type(e).__name__}: {e}"
            ) from e


def _pruning_groups(
    graph: tp.DependencyGraph, ignored: set[nn.Module], bounds: _IndexBounds
) -> Iterator[tuple]:
    """(root module, its pruning group or the exception that building it raised).

    ``DependencyGraph.get_all_groups`` with one difference: a group torch-pruning fails to
    build (a split or reshape it maps wrongly, or indices it expands past ``bounds``)
    is reported instead of ending the iteration.
    """
    visited: set[nn.Module] = set()
    ignored = ignored | set(graph.IGNORED_LAYERS_IN_TRACING)
    for module in list(graph.module2node):
        if module in ignored or module in visited:
            continue
        if not isinstance(module, (_CONV, nn.Linear)):
            continue
        pruner = graph.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None:
            continue
        try:
            # Building a group re-runs the index mapping.
            with _tolerant_reshape_mapping(), _bounded_index_mapping(bounds):
                group = graph.get_pruning_group(
                    module,
                    pruner.prune_out_channels,
                    list(range(pruner.get_out_channels(module))),
                )
        except Exception as e:  # reported by the caller as the reason to keep it whole
            yield module, e
            continue
        prunable = True
        for dep, _ in group:
            if graph.is_out_channel_pruning_fn(dep.handler):
                visited.add(dep.target.module)
                prunable &= dep.target.module not in ignored
        if prunable:
            yield module, group


class _EngineBase:
    """Shared state: the base model on its device, its meta skeleton and resource totals."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor) -> None:
        self.base = model.eval()
        self.device = next(model.parameters()).device
        self._skeleton = copy.deepcopy(model).to("meta")
        self._base_modules = dict(model.named_modules())
        self.example_input = example_input[:1].detach().to(self.device)  # one sample, traced
        self._spatial = _module_spatial(model, example_input.to(self.device))
        self.shapes = _layer_shapes(model, self._spatial)
        self.total_params = sum(p.numel() for p in model.parameters())
        self.units: list[Unit] = []
        self._recount()

    def _recount(self) -> None:
        full = {n: _layer_counts(s, s.out_size, s.in_size) for n, s in self.shapes.items()}
        self.total_macs = sum(m for _, m in full.values())
        self._fixed_params = self.total_params - sum(p for p, _ in full.values())

    def _unit_features(self, name: str, size: int, params: int, macs: int) -> Unit:
        module = self.base.get_submodule(name)
        shape = self.shapes[name]
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


@dataclass
class _Candidate:
    root: str
    size: int
    slices: list[DimSlice]
    scores: np.ndarray


class ChannelEngine(_EngineBase):
    """Structured channel pruning over torch-pruning's dependency graph.

    Each unit is one group of coupled channels (torch-pruning's pruning group). With grouped
    convolutions in a group, one decision removes the same position in every convolution
    group (torch-pruning's channel groups), so the unit's size is the channel count divided
    by the groups. Groups that cannot be pruned safely are kept whole and listed in
    ``kept_whole`` (root module -> reason), with one warning.

    Args:
        model: the base network (left unchanged; put it in eval mode on its device first).
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
        example = example_input[:1].to(self.device)
        graph = trace_dependency_graph(model, example)
        self.importance = importance
        self.kept_whole: dict[str, str] = {}
        names = {m: n for n, m in modules.items()}
        param_names = {p: n for n, p in model.named_parameters()}
        param_dims = {p: dim for p, dim in graph.unwrapped_parameters}
        candidates: list[_Candidate] = []
        self.index_bounds = _index_bounds(model, example)  # tp_global_pruning reuses them
        for root, group in _pruning_groups(graph, ignored, self.index_bounds):
            root_name = names[root]
            try:
                if isinstance(group, Exception):
                    raise _KeptWhole(
                        "torch-pruning cannot map its channels "
                        f"({type(group).__name__}: {str(group)[:120]})"
                    )
                slices = self._group_slices(group, graph, names, param_names, param_dims)
                channels = self.shapes[root_name].out_size
                conv_groups = math.lcm(
                    1,
                    *(
                        self.shapes[s.module].groups
                        for s in slices
                        if self.shapes[s.module].kind == "conv"
                        and not self.shapes[s.module].depthwise
                    ),
                )
                if channels % conv_groups:
                    raise _KeptWhole(
                        f"its {channels} channels do not split into {conv_groups} equal "
                        "convolution groups"
                    )
                size = channels // conv_groups
                if size < 2:
                    if channels >= 2:
                        raise _KeptWhole(
                            f"its {channels} channels feed {conv_groups} convolution groups "
                            "with one channel each: no position can go without emptying one"
                        )
                    continue
                for s in slices:
                    s.roots = s.roots % size
                scores = self._score(group, channels, root_name)
                scores = scores.reshape(conv_groups, size).mean(0)
            except _KeptWhole as e:
                self.kept_whole[root_name] = str(e)
                continue
            candidates.append(_Candidate(root_name, size, slices, scores))
        self._recount()  # unwrapped parameters joined the shapes
        # The agent walks the layers in the order the forward pass runs them.
        position = {name: i for i, name in enumerate(self._spatial)}
        candidates.sort(key=lambda c: position.get(c.root, len(position)))
        candidates = self._claim(candidates)
        candidates = self._verify(candidates, example)
        if self.kept_whole:
            listing = "; ".join(f"{k}: {v}" for k, v in self.kept_whole.items())
            warnings.warn(
                f"{len(self.kept_whole)} channel groups are kept whole (root layer: reason): "
                f"{listing}",
                stacklevel=2,
            )
        if not self.units:
            raise ValueError(
                "model has no prunable channel group (Conv/Linear/BatchNorm channels that can "
                "be removed besides the classifier head)"
            )

    # ------------------------------------------------------------------ construction
    def _group_slices(self, group, graph, names, param_names, param_dims) -> list[DimSlice]:
        merged: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        for item in group.items:
            target = item.dep.target.module
            if isinstance(target, nn.Parameter):
                name = param_names.get(target)
                if name is None or target not in param_dims:
                    raise _KeptWhole("it reaches a parameter outside the model")
                dim = int(param_dims[target])
                if name not in self.shapes:
                    channels = target.shape[dim]
                    self.shapes[name] = LayerShape(
                        "param",
                        channels,
                        target.numel() // channels,
                        0,
                        1,
                        False,
                        0,
                        param_dim=dim,
                    )
                role = "out"
            elif isinstance(target, nn.Module):
                if not any(True for _ in target.parameters()) and not any(
                    True for _ in target.buffers()
                ):
                    continue  # parameter-free op (ReLU, add, concat, flatten): nothing to slice
                name = names.get(target)
                if name is None:
                    raise _KeptWhole(f"it reaches a {type(target).__name__} outside the model")
                if isinstance(target, _CONV) and not target.transposed:
                    out = graph.is_out_channel_pruning_fn(item.dep.handler)
                    role = "out" if out or self.shapes[name].depthwise else "in"
                elif isinstance(target, nn.Linear):
                    role = "out" if graph.is_out_channel_pruning_fn(item.dep.handler) else "in"
                elif isinstance(target, _BN):
                    role = "out"
                else:
                    raise _KeptWhole(
                        f"it reaches {name!r} ({type(target).__name__}), whose tensors this "
                        "engine cannot slice"
                    )
            else:
                continue
            positions = np.asarray([int(i) for i in item.idxs], dtype=np.int64)
            roots = np.asarray([int(i) for i in item.root_idxs], dtype=np.int64)
            key = (name, role)
            if key in merged:
                old_pos, old_roots = merged[key]
                if np.array_equal(np.sort(old_pos), np.sort(positions)):
                    continue
                positions = np.concatenate([old_pos, positions])
                roots = np.concatenate([old_roots, roots])
                if len(np.unique(positions)) != len(positions):
                    raise _KeptWhole(f"it claims channels of {name!r} twice")
            merged[key] = (positions, roots)
        return [DimSlice(name, role, pos, roots) for (name, role), (pos, roots) in merged.items()]

    def _reject(self, candidate: _Candidate, reason: str) -> None:
        """Keep ``candidate`` whole, naming every layer it would have pruned."""
        others = sorted({s.module for s in candidate.slices if s.role == "out"} - {candidate.root})
        also = f" (its group also holds {', '.join(others)})" if others else ""
        self.kept_whole[candidate.root] = reason + also

    def _full(self, s: DimSlice) -> int:
        shape = self.shapes[s.module]
        return shape.out_size if s.role == "out" else shape.in_size

    def _claim(self, candidates: list[_Candidate]) -> list[_Candidate]:
        """Drop groups that share a channel with an earlier group or break a grouped conv."""
        while True:
            owner: dict[tuple[str, str], np.ndarray] = {}
            accepted = []
            for c in candidates:
                clash = None
                for s in c.slices:
                    taken = owner.get((s.module, s.role))
                    if taken is not None and np.any(taken[s.positions] >= 0):
                        clash = (s.module, candidates[int(taken[s.positions].max())].root)
                        break
                if clash:
                    self._reject(
                        c,
                        f"its channels in {clash[0]!r} are also pruned by the group of "
                        f"{clash[1]!r}",
                    )
                    continue
                index = candidates.index(c)
                for s in c.slices:
                    key = (s.module, s.role)
                    if key not in owner:
                        owner[key] = np.full(self._full(s), -1, dtype=np.int64)
                    owner[key][s.positions] = index
                accepted.append(c)
            broken = self._nonuniform_grouped(accepted)
            if not broken:
                for c in accepted:  # accepted in this pass: an earlier clash no longer holds
                    self.kept_whole.pop(c.root, None)
                return accepted
            for c in candidates:
                if c.root in broken:
                    self._reject(c, broken[c.root])
            candidates = [c for c in candidates if c.root not in broken]

    def _nonuniform_grouped(self, candidates: list[_Candidate]) -> dict[str, str]:
        """Groups whose decisions would prune a grouped conv differently in its groups."""
        labels: dict[tuple[str, str], np.ndarray] = {}
        claimers: dict[tuple[str, str], list[str]] = {}
        for i, c in enumerate(candidates):
            for s in c.slices:
                shape = self.shapes[s.module]
                if shape.kind != "conv" or shape.groups == 1 or shape.depthwise:
                    continue
                key = (s.module, s.role)
                if key not in labels:
                    labels[key] = np.full((self._full(s), 2), -1, dtype=np.int64)
                labels[key][s.positions, 0] = i
                labels[key][s.positions, 1] = s.roots
                claimers.setdefault(key, []).append(c.root)
        broken = {}
        for (module, role), label in labels.items():
            g = self.shapes[module].groups
            blocks = label.reshape(g, -1, 2)
            if not np.all(blocks == blocks[:1]):
                for root in claimers[(module, role)]:
                    broken[root] = (
                        f"the grouped convolution {module!r} (groups={g}) would lose different "
                        "channels in different groups"
                    )
        return broken

    def _verify(self, candidates: list[_Candidate], example: torch.Tensor) -> list[_Candidate]:
        """Keep the groups whose pruned network equals the masked one, with exact counts."""
        self._install(candidates)
        if not candidates or self._check(example) is None:
            return candidates
        accepted: list[_Candidate] = []
        for c in candidates:
            self._install([*accepted, c])
            failure = self._check(example)
            if failure is None:
                accepted.append(c)
            else:
                self._reject(c, failure)
        self._install(accepted)
        return accepted

    def _check(self, example: torch.Tensor) -> str | None:
        """Why pruning every unit to about half fails its invariants, or None if it holds."""
        counts = [max(1, u.size // 2) for u in self.units]
        generator = torch.Generator().manual_seed(0)
        if example.is_floating_point():
            x = torch.randn(example[:2].shape, generator=generator).to(example)
        else:
            x = example[:2]
        try:
            pruned, masked = self.build(counts), self.build_masked(counts)
            with torch.no_grad():
                out, ref = pruned(x), masked(x)
            if not isinstance(out, torch.Tensor):
                return "the model does not return a tensor"
            if out.shape != ref.shape:
                return f"the pruned output has shape {tuple(out.shape)}, not {tuple(ref.shape)}"
            scale = float(ref.abs().max())
            diff = float((out - ref).abs().max())
            if not diff <= 1e-3 * scale + 1e-12:
                return (
                    "the pruned network does not equal the masked one (channel order changes "
                    f"on the way, e.g. a channel shuffle; max difference {diff:.3g})"
                )
            counted = measure_resources(pruned, x[:1])
            if counted != self.resources(counts):
                return f"counted params/MACs {counted} differ from {self.resources(counts)}"
        except Exception as e:  # any failure means: keep this group whole
            return f"the pruned network fails: {type(e).__name__}: {str(e)[:200]}"
        return None

    def _install(self, candidates: list[_Candidate]) -> None:
        """Make ``candidates`` the units: slices indexed, rankings and shares computed."""
        for shape in self.shapes.values():
            shape.out_slices, shape.in_slices = [], []
        self.slices = [c.slices for c in candidates]
        for u, slices in enumerate(self.slices):
            for s in slices:
                s.unit = u
                shape = self.shapes[s.module]
                (shape.out_slices if s.role == "out" else shape.in_slices).append(s)
        self._untouched = {}
        for name, shape in self.shapes.items():
            for role, slices in (("out", shape.out_slices), ("in", shape.in_slices)):
                if slices:
                    full = shape.out_size if role == "out" else shape.in_size
                    claimed = np.concatenate([s.positions for s in slices])
                    self._untouched[name, role] = np.setdiff1d(np.arange(full), claimed)
        # Per-channel importance, divided by its group's mean so that groups compare (the
        # normalisation torch-pruning uses for global pruning).
        self._scores = [c.scores / max(float(np.mean(np.abs(c.scores))), 1e-12) for c in candidates]
        self.units = [self._unit_features(c.root, c.size, 0, 0) for c in candidates]
        self.set_rankings([np.argsort(-c.scores, kind="stable") for c in candidates])
        full = np.array([u.size for u in self.units], dtype=np.int64)
        total = self.resources(full)
        for u, unit in enumerate(self.units):
            emptied = full.copy()
            emptied[u] = 0  # resources() accepts 0: the unit's share is what it controls
            params, macs = self.resources(emptied)
            unit.params_share = (total[0] - params) / max(self.total_params, 1)
            unit.flops_share = (total[1] - macs) / max(self.total_macs, 1)

    def _score(self, group, size: int, root_name: str) -> np.ndarray:
        if self.importance == "random":
            return -np.arange(size, dtype=np.float64)  # index order until a ranking is drawn
        if self.importance == "bn_scale":
            scorer = tp.importance.BNScaleImportance(normalizer=None)
        else:
            p = 1 if self.importance == "l1" else 2
            scorer = tp.importance.GroupMagnitudeImportance(p=p, normalizer=None)
        try:
            with torch.no_grad():
                imp = scorer(group)
        except Exception as e:
            raise _KeptWhole(f"torch-pruning cannot score it ({type(e).__name__}: {e})") from e
        if imp is None or len(imp) == 0:
            if self.importance == "bn_scale":
                raise ValueError(
                    "importance 'bn_scale' needs a BatchNorm in every channel group; the group "
                    f"of {root_name!r} has none (list it in ignored_layers or use 'l1')"
                )
            raise _KeptWhole("torch-pruning returned no importance for it")
        if len(imp) != size:
            raise _KeptWhole(f"torch-pruning scored {len(imp)} channels, not {size}")
        return imp.detach().double().cpu().numpy()

    # ------------------------------------------------------------------ rankings
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

    # ------------------------------------------------------------------ pruning
    def _dim_size(self, shape: LayerShape, role: str, counts: np.ndarray) -> int:
        if role == "in" and shape.depthwise:
            role = "out"
        slices = shape.out_slices if role == "out" else shape.in_slices
        size = shape.out_size if role == "out" else shape.in_size
        for s in slices:
            size += int(s.kept_count[counts[s.unit]]) - len(s.positions)
        return size

    def resources(self, counts: Sequence[int]) -> tuple[int, int]:
        """Exact (parameters, MACs) of the network pruned to ``counts`` channels per group."""
        counts = np.asarray(counts, dtype=np.int64)
        params, macs = self._fixed_params, 0
        for shape in self.shapes.values():
            out = self._dim_size(shape, "out", counts)
            inp = self._dim_size(shape, "in", counts) if shape.kind in ("conv", "linear") else 0
            p, m = _layer_counts(shape, out, inp)
            params += p
            macs += m
        return params, macs

    def _kept(self, name: str, role: str, slices: list[DimSlice], counts) -> torch.Tensor:
        parts = [s.order[: s.kept_count[counts[s.unit]]] for s in slices]
        idx = np.sort(np.concatenate([*parts, self._untouched[name, role]]))
        return torch.from_numpy(idx).to(self.device)

    def _dim_indices(self, counts: np.ndarray) -> dict[str, dict[str, torch.Tensor]]:
        dims: dict[str, dict[str, torch.Tensor]] = {}
        for name, shape in self.shapes.items():
            if shape.out_slices:
                dims.setdefault(name, {})["out"] = self._kept(name, "out", shape.out_slices, counts)
            if shape.in_slices:
                dims.setdefault(name, {})["in"] = self._kept(name, "in", shape.in_slices, counts)
        return dims

    def build(self, counts: Sequence[int]) -> nn.Module:
        """The physically pruned network keeping the top ``counts[i]`` channels of group i."""
        counts = self.validate_counts(counts)
        overrides: dict[str, dict[str, torch.Tensor]] = {}
        dims = self._dim_indices(counts)
        with torch.no_grad():
            for name, idx in dims.items():
                shape = self.shapes[name]
                out, inp = idx.get("out"), idx.get("in")
                if shape.kind == "param":
                    owner, _, attr = name.rpartition(".")
                    base_param = self.base.get_parameter(name)
                    overrides.setdefault(owner, {})[attr] = base_param.index_select(
                        shape.param_dim, out
                    )
                    continue
                base = self.base.get_submodule(name)
                tensors = overrides.setdefault(name, {})
                if shape.kind == "bn":
                    for key in ("weight", "bias", "running_mean", "running_var"):
                        t = getattr(base, key)
                        if t is not None:
                            tensors[key] = t.index_select(0, out)
                    continue
                w = base.weight
                if out is not None:
                    w = w.index_select(0, out)
                if inp is not None and not shape.depthwise:
                    if shape.groups > 1:  # the same positions are kept in every group
                        inp = inp[inp < shape.in_size // shape.groups]
                    w = w.index_select(1, inp)
                tensors["weight"] = w if w is not base.weight else w.clone()
                if base.bias is not None and out is not None:
                    tensors["bias"] = base.bias.index_select(0, out)
        net = self._materialise(overrides)
        for name, idx in dims.items():
            if self.shapes[name].kind == "param":
                continue
            module = net.get_submodule(name)
            if isinstance(module, _BN):
                module.num_features = len(idx["out"])
            elif isinstance(module, _CONV):
                module.out_channels = module.weight.shape[0]
                if self.shapes[name].depthwise:
                    module.groups = module.in_channels = module.out_channels
                else:
                    module.in_channels = module.weight.shape[1] * module.groups
            elif isinstance(module, nn.Linear):
                module.out_features, module.in_features = module.weight.shape
        return net

    def build_masked(self, counts: Sequence[int]) -> nn.Module:
        """The base network with the pruned channels zeroed instead of removed.

        Every output-side slice of a pruned channel (Conv/Linear rows and bias, BatchNorm
        scale, shift and running mean, a parameter's channel) is set to zero, so the channel
        carries exactly 0 downstream; this is how the paper's implementation evaluates a
        candidate, and what ``build`` must equal.
        """
        counts = self.validate_counts(counts)
        net = self._materialise({})
        with torch.no_grad():
            for unit, slices in enumerate(self.slices):
                for s in slices:
                    if s.role != "out":
                        continue
                    pruned = torch.from_numpy(s.order[s.kept_count[counts[unit]] :]).to(self.device)
                    shape = self.shapes[s.module]
                    if shape.kind == "param":
                        net.get_parameter(s.module).index_fill_(shape.param_dim, pruned, 0)
                        continue
                    module = net.get_submodule(s.module)
                    for key in ("weight", "bias", "running_mean"):
                        t = getattr(module, key, None)
                        if t is not None:
                            t[pruned] = 0
        return net


class WeightEngine(_EngineBase):
    """Per-layer unstructured magnitude pruning of every Conv/Linear weight tensor.

    Args:
        model: the base network (left unchanged).
        example_input: a batch that the network accepts.
        importance: "l1"/"l2" (both rank weights by magnitude) or "random".
        ignored_layers: names of Conv/Linear modules that keep every weight.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        importance: str = "l1",
        ignored_layers: Sequence[str] = (),
    ) -> None:
        if importance not in ("l1", "l2", "random"):
            raise ValueError(
                f"importance {importance!r} is not defined for granularity='weight'; "
                "expected 'l1', 'l2' or 'random'"
            )
        super().__init__(model, example_input)
        self.importance = importance
        layers = [n for n, s in self.shapes.items() if s.kind in ("conv", "linear")]
        unknown = [n for n in ignored_layers if n not in layers]
        if unknown:
            raise ValueError(
                f"ignored_layers {unknown} are not Conv/Linear modules of the model "
                f"(weight granularity prunes those: {layers[:8]}...)"
            )
        self.layer_names = [n for n in layers if n not in set(ignored_layers)]
        if not self.layer_names:
            raise ValueError("ignored_layers leaves no Conv/Linear layer to prune")
        self.units = [
            self._unit_features(n, w.numel(), w.numel(), w.numel() * self.shapes[n].spatial)
            for n in self.layer_names
            for w in [self.base.get_submodule(n).weight]
        ]
        self._weight_macs = np.array([self.shapes[n].spatial for n in self.layer_names])
        self._ignored_macs = sum(
            self.base.get_submodule(n).weight.numel() * self.shapes[n].spatial
            for n in layers
            if n not in self.layer_names
        )
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
        return params, self._ignored_macs + int((counts * self._weight_macs).sum())

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
        return WeightEngine(model, example_input, importance, ignored_layers)
    raise ValueError(f"unknown granularity {granularity!r}; expected 'channel' or 'weight'")


def tp_prune_reference(
    model: nn.Module, example_input: torch.Tensor, engine: ChannelEngine, counts: Sequence[int]
) -> nn.Module:
    """Prune a deep copy of ``model`` with torch-pruning itself (for cross-checks in tests)."""
    net = copy.deepcopy(model)
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=example_input[:1])
    for unit, ranking, count in zip(engine.units, engine.rankings, counts, strict=True):
        repeats = engine.shapes[unit.name].out_size // unit.size  # convolution groups
        pruned = sorted(int(d) + i * unit.size for d in ranking[count:] for i in range(repeats))
        if not pruned:
            continue
        root = net.get_submodule(unit.name)
        fn = tp.prune_conv_out_channels if isinstance(root, _CONV) else tp.prune_linear_out_channels
        graph.get_pruning_group(root, fn, idxs=pruned).prune()
    return net.eval()


def tp_global_pruning(engine: ChannelEngine, pruning_ratio: float) -> dict[str, np.ndarray]:
    """The channels Torch-Pruning's own global pruner removes at ``pruning_ratio``.

    Runs ``tp.pruner.MetaPruner(global_pruning=True, pruning_ratio=pruning_ratio)`` with the
    torch-pruning importance of the engine's: ``GroupMagnitudeImportance(p=1)`` for "l1",
    ``(p=2)`` (torch-pruning's default) for "l2", ``BNScaleImportance()`` (Network
    Slimming) for "bn_scale", each with its defaults (mean over the group, groups normalised
    by their mean), on a copy of the engine's base network. Every Conv/Linear whose output
    channels no unit prunes is ignored (the head, the ``ignored_layers``, the groups kept
    whole). The groups are read, not pruned. Returns unit name -> the unit's pruned positions
    (sorted; units it leaves alone are absent). One step, as MetaPruner does by default:
    its ``max_pruning_ratio`` is checked between steps, so one step has no floor per group.
    """
    importances = {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "bn_scale": lambda: tp.importance.BNScaleImportance(),
    }
    if engine.importance not in importances:
        raise ValueError(
            f"torch-pruning has no global pruning for importance {engine.importance!r}; "
            f"expected one of {sorted(importances)}"
        )
    if not 0 <= pruning_ratio < 1:
        raise ValueError(f"pruning_ratio must be in [0, 1), got {pruning_ratio}")
    net = copy.deepcopy(engine.base).eval()
    modules = dict(net.named_modules())
    ignored = [
        modules[name]
        for name, shape in engine.shapes.items()
        if shape.kind in ("conv", "linear") and not shape.out_slices
    ]
    names = {m: n for n, m in modules.items()}
    sizes = {u.name: u.size for u in engine.units}
    pruned: dict[str, np.ndarray] = {}
    # The engine's guards on torch-pruning's index mapping (a channel shuffle, a window
    # partition read as a flatten): the groups they catch are ignored here already.
    with (
        _tolerant_reshape_mapping(),
        _bounded_index_mapping(engine.index_bounds),  # net is a copy of the engine's base
        _diverged_as_runtime_error("torch-pruning's MetaPruner"),
    ):
        pruner = tp.pruner.MetaPruner(
            net,
            engine.example_input,
            importance=importances[engine.importance](),
            global_pruning=True,
            pruning_ratio=pruning_ratio,
            ignored_layers=ignored,
        )
        for group in pruner.step(interactive=True):
            root = names[group[0].dep.target.module]
            if root not in sizes:
                raise RuntimeError(
                    f"torch-pruning pruned the group of {root!r}, which no unit owns"
                )
            idxs = np.asarray([int(i) for i in group[0].idxs], dtype=np.int64)
            if len(idxs):  # MetaPruner also yields the groups it takes nothing from
                pruned[root] = np.unique(idxs % sizes[root])  # repeated per convolution group
    return pruned


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
