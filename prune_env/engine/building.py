"""Building: the pruned network for given keep counts, and the check that it is right.

A network is built from plain data: the base tensors are sliced along every slice's keep
order and set into a fresh copy of the base's meta skeleton (no re-tracing, no copy of
the real weights first). ``_zero_pruned`` gives the masked counterpart (pruned channels
zeroed, shapes unchanged). A channel group is accepted only if the pruned network equals
the masked one and its counted resources equal the analytic ones (``_verify``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from prune_env.engine.counting import DimSlice, LayerShape, measure_resources
from prune_env.engine.groups import _Candidate, _reject
from prune_env.engine.tracing import _BN, _CONV

if TYPE_CHECKING:
    from prune_env.engine.channel import ChannelEngine

Tensors = dict[str, dict[str, torch.Tensor]]  # module name -> tensor name -> tensor


def _materialise(
    skeleton: nn.Module, base_modules: dict[str, nn.Module], overrides: Tensors
) -> nn.Module:
    """A fresh network: overridden tensors where given, clones of the base elsewhere."""
    net = copy.deepcopy(skeleton)
    for name, module in net.named_modules():
        base = base_modules[name]
        new = overrides.get(name, {})
        for key, p in base._parameters.items():
            if p is not None:
                t = new[key] if key in new else p.detach().clone()
                module._parameters[key] = nn.Parameter(t, requires_grad=p.requires_grad)
        for key, b in base._buffers.items():
            if b is not None:
                module._buffers[key] = new[key] if key in new else b.clone()
    return net.eval()


def _index_slices(
    shapes: dict[str, LayerShape], slices: list[list[DimSlice]]
) -> dict[tuple[str, str], np.ndarray]:
    """Attach every unit's slices to their shapes; return the positions no unit claims.

    The unclaimed positions of each sliced (owner, role) are always kept.
    """
    for shape in shapes.values():
        shape.out_slices, shape.in_slices = [], []
    for u, unit_slices in enumerate(slices):
        for s in unit_slices:
            s.unit = u
            shape = shapes[s.module]
            (shape.out_slices if s.role == "out" else shape.in_slices).append(s)
    untouched = {}
    for name, shape in shapes.items():
        for role, role_slices in (("out", shape.out_slices), ("in", shape.in_slices)):
            if role_slices:
                full = shape.out_size if role == "out" else shape.in_size
                claimed = np.concatenate([s.positions for s in role_slices])
                untouched[name, role] = np.setdiff1d(np.arange(full), claimed)
    return untouched


def _dim_indices(
    shapes: dict[str, LayerShape],
    untouched: dict[tuple[str, str], np.ndarray],
    counts: np.ndarray,
    device: torch.device,
) -> Tensors:
    """The kept positions (sorted) of every sliced dimension: name -> "out"/"in" -> indices."""

    def kept(name: str, role: str, slices: list[DimSlice]) -> torch.Tensor:
        parts = [s.order[: s.kept_count[counts[s.unit]]] for s in slices]
        idx = np.sort(np.concatenate([*parts, untouched[name, role]]))
        return torch.from_numpy(idx).to(device)

    dims: Tensors = {}
    for name, shape in shapes.items():
        if shape.out_slices:
            dims.setdefault(name, {})["out"] = kept(name, "out", shape.out_slices)
        if shape.in_slices:
            dims.setdefault(name, {})["in"] = kept(name, "in", shape.in_slices)
    return dims


def _sliced_layer(
    module: nn.Module, shape: LayerShape, out: torch.Tensor | None, inp: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The tensors of a Conv/Linear/BatchNorm cut to the kept ``out`` and ``inp`` positions."""
    tensors = {}
    if shape.kind == "bn":
        for key in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(module, key)
            if t is not None:
                tensors[key] = t.index_select(0, out)
        return tensors
    w = module.weight
    if out is not None:
        w = w.index_select(0, out)
    if inp is not None and not shape.depthwise:
        if shape.groups > 1:  # the same positions are kept in every group
            inp = inp[inp < shape.in_size // shape.groups]
        w = w.index_select(1, inp)
    tensors["weight"] = w if w is not module.weight else w.clone()
    if module.bias is not None and out is not None:
        tensors["bias"] = module.bias.index_select(0, out)
    return tensors


def _sliced_tensors(base: nn.Module, shapes: dict[str, LayerShape], dims: Tensors) -> Tensors:
    """The base tensors cut to the kept positions of ``dims``, by owning module."""
    overrides: Tensors = {}
    with torch.no_grad():
        for name, idx in dims.items():
            shape = shapes[name]
            out, inp = idx.get("out"), idx.get("in")
            if shape.kind == "param":
                owner, _, attr = name.rpartition(".")
                base_param = base.get_parameter(name)
                overrides.setdefault(owner, {})[attr] = base_param.index_select(
                    shape.param_dim, out
                )
                continue
            tensors = overrides.setdefault(name, {})
            tensors.update(_sliced_layer(base.get_submodule(name), shape, out, inp))
    return overrides


def _resize_modules(net: nn.Module, shapes: dict[str, LayerShape], dims: Tensors) -> None:
    """Set the channel attributes of every sliced module of ``net`` to its new tensors."""
    for name, idx in dims.items():
        if shapes[name].kind == "param":
            continue
        module = net.get_submodule(name)
        if isinstance(module, _BN):
            module.num_features = len(idx["out"])
        elif isinstance(module, _CONV):
            module.out_channels = module.weight.shape[0]
            if shapes[name].depthwise:
                module.groups = module.in_channels = module.out_channels
            else:
                module.in_channels = module.weight.shape[1] * module.groups
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape


def _zero_pruned(
    net: nn.Module,
    slices: list[list[DimSlice]],
    shapes: dict[str, LayerShape],
    counts: np.ndarray,
    device: torch.device,
) -> None:
    """Zero every output-side slice of the channels ``counts`` prunes, in place."""
    with torch.no_grad():
        for unit, unit_slices in enumerate(slices):
            for s in unit_slices:
                if s.role != "out":
                    continue
                pruned = torch.from_numpy(s.order[s.kept_count[counts[unit]] :]).to(device)
                shape = shapes[s.module]
                if shape.kind == "param":
                    net.get_parameter(s.module).index_fill_(shape.param_dim, pruned, 0)
                    continue
                module = net.get_submodule(s.module)
                for key in ("weight", "bias", "running_mean"):
                    t = getattr(module, key, None)
                    if t is not None:
                        t[pruned] = 0


def _verify(
    engine: ChannelEngine, candidates: list[_Candidate], example: torch.Tensor
) -> list[_Candidate]:
    """Install the groups whose pruned network equals the masked one, with exact counts.

    All candidates are tried at once first; if that fails, one by one on top of the
    accepted ones, and each failing group is kept whole with the reason.
    """
    engine._install(candidates)
    if not candidates or _check(engine, example) is None:
        return candidates
    accepted: list[_Candidate] = []
    for c in candidates:
        engine._install([*accepted, c])
        failure = _check(engine, example)
        if failure is None:
            accepted.append(c)
        else:
            _reject(engine.kept_whole, c, failure)
    engine._install(accepted)
    return accepted


def _check(engine: ChannelEngine, example: torch.Tensor) -> str | None:
    """Why pruning every unit to about half fails its invariants, or None if it holds."""
    counts = [max(1, u.size // 2) for u in engine.units]
    generator = torch.Generator().manual_seed(0)
    if example.is_floating_point():
        x = torch.randn(example[:2].shape, generator=generator).to(example)
    else:
        x = example[:2]
    try:
        pruned, masked = engine.build(counts), engine.build_masked(counts)
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
        if counted != engine.resources(counts):
            return f"counted params/MACs {counted} differ from {engine.resources(counts)}"
    except Exception as e:  # any failure means: keep this group whole
        return f"the pruned network fails: {type(e).__name__}: {str(e)[:200]}"
    return None
