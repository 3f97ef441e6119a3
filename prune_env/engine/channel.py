"""``ChannelEngine``: structured pruning of coupled channel groups.

Composed from the concepts of this package: the model is traced once (``tracing``), its
groups read into plain slices and filtered (``groups``), their channels ranked
(``importance``), every pruned network built by slicing the base tensors (``building``) and
counted analytically (``counting``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from prune_env.engine.base import _EngineBase
from prune_env.engine.building import (
    _dim_indices,
    _index_slices,
    _materialise,
    _resize_modules,
    _sliced_tensors,
    _verify,
    _zero_pruned,
)
from prune_env.engine.counting import _channel_resources, _unit_shares
from prune_env.engine.groups import _Candidate, _claim, _group_candidate, _ModelNames
from prune_env.engine.importance import (
    IMPORTANCES,
    _normalised_scores,
    _order_slices,
    _random_rankings,
    _require_magnitudes,
    _score_ranking,
)
from prune_env.engine.tracing import (
    _index_bounds,
    _KeptWhole,
    _pruning_groups,
    trace_dependency_graph,
)


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

    @staticmethod
    def _check_importance(importance: str) -> None:
        if importance not in IMPORTANCES:
            raise ValueError(f"unknown importance {importance!r}; expected one of {IMPORTANCES}")

    def _setup_units(
        self, model: nn.Module, example_input: torch.Tensor, importance: str, ignored_layers
    ) -> None:
        ignored = self._ignored_modules(model, ignored_layers)
        example = example_input[:1].to(self.device)
        graph = trace_dependency_graph(model, example)
        self.importance = importance
        self.kept_whole: dict[str, str] = {}
        self.index_bounds = _index_bounds(model, example)  # tp_global_pruning reuses them
        candidates = self._candidates(graph, ignored, _ModelNames.of(model, graph))
        self._recount()  # unwrapped parameters joined the shapes
        # The agent walks the layers in the order the forward pass runs them.
        position = {name: i for i, name in enumerate(self._spatial)}
        candidates.sort(key=lambda c: position.get(c.root, len(position)))
        candidates = _claim(candidates, self.shapes, self.kept_whole)
        _verify(self, candidates, example)  # installs the groups that pass as the units
        if self.kept_whole:
            listing = "; ".join(f"{k}: {v}" for k, v in self.kept_whole.items())
            warnings.warn(
                f"{len(self.kept_whole)} channel groups are kept whole (root layer: reason): "
                f"{listing}",
                stacklevel=4,
            )
        if not self.units:
            raise ValueError(
                "model has no prunable channel group (Conv/Linear/BatchNorm channels that can "
                "be removed besides the classifier head)"
            )

    # ------------------------------------------------------------------ construction
    def _ignored_modules(self, model: nn.Module, ignored_layers: Sequence[str]) -> set[nn.Module]:
        """The modules named in ``ignored_layers`` and the classifier head (last executed)."""
        modules = dict(model.named_modules())
        unknown = [n for n in ignored_layers if n not in modules]
        if unknown:
            raise ValueError(f"ignored_layers {unknown} are not modules of the model")
        head = list(self._spatial)[-1] if self._spatial else None
        return {modules[n] for n in (*ignored_layers, *([head] if head else []))}

    def _candidates(self, graph, ignored: set[nn.Module], names: _ModelNames) -> list[_Candidate]:
        """Every group that may become a unit; the others go to ``kept_whole`` with why."""
        candidates: list[_Candidate] = []
        for root, group in _pruning_groups(graph, ignored, self.index_bounds):
            root_name = names.modules[root]
            try:
                c = _group_candidate(root_name, group, graph, self.shapes, names, self.importance)
            except _KeptWhole as e:
                self.kept_whole[root_name] = str(e)
                continue
            if c is not None:
                candidates.append(c)
        return candidates

    def _install(self, candidates: list[_Candidate]) -> None:
        """Make ``candidates`` the units: slices indexed, rankings and shares computed."""
        self.slices = [c.slices for c in candidates]
        self._untouched = _index_slices(self.shapes, self.slices)
        self._scores = [_normalised_scores(c.scores) for c in candidates]
        self.units = [self._unit_features(c.root, c.size, 0, 0) for c in candidates]
        self.set_rankings([_score_ranking(c.scores) for c in candidates])
        _unit_shares(self.units, self.resources, self.total_params, self.total_macs)

    # ------------------------------------------------------------------ rankings
    def set_rankings(self, rankings: Sequence[np.ndarray]) -> None:
        """Set the channel order of every group (most important first)."""
        if len(rankings) != len(self.units):
            raise ValueError(f"expected {len(self.units)} rankings, got {len(rankings)}")
        self.rankings = [np.asarray(r, dtype=np.int64) for r in rankings]
        _order_slices(self.units, self.rankings, self.slices)

    def draw_random_rankings(self, rng: np.random.Generator) -> None:
        self.set_rankings(_random_rankings(self.units, rng))

    def global_scores(self) -> list[np.ndarray]:
        """Importance of every channel, comparable across groups (for one global threshold)."""
        _require_magnitudes(self.importance)
        return self._scores

    # ------------------------------------------------------------------ pruning
    def resources(self, counts: Sequence[int]) -> tuple[int, int]:
        """Exact (parameters, MACs) of the network pruned to ``counts`` channels per group."""
        return _channel_resources(self.shapes, self._fixed_params, counts)

    def build(self, counts: Sequence[int]) -> nn.Module:
        """The physically pruned network keeping the top ``counts[i]`` channels of group i."""
        counts = self.validate_counts(counts)
        dims = _dim_indices(self.shapes, self._untouched, counts, self.device)
        overrides = _sliced_tensors(self.base, self.shapes, dims)
        net = _materialise(self._skeleton, self._base_modules, overrides)
        _resize_modules(net, self.shapes, dims)
        return net

    def build_masked(self, counts: Sequence[int]) -> nn.Module:
        """The base network with the pruned channels zeroed instead of removed.

        Every output-side slice of a pruned channel (Conv/Linear rows and bias, BatchNorm
        scale, shift and running mean, a parameter's channel) is set to zero, so the channel
        carries exactly 0 downstream; this is how the paper's implementation evaluates a
        candidate, and what ``build`` must equal.
        """
        counts = self.validate_counts(counts)
        net = _materialise(self._skeleton, self._base_modules, {})
        _zero_pruned(net, self.slices, self.shapes, counts, self.device)
        return net
