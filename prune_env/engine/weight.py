"""``WeightEngine``: per-layer unstructured magnitude pruning of every Conv/Linear weight."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from prune_env.engine.base import _EngineBase
from prune_env.engine.building import _materialise
from prune_env.engine.importance import (
    _magnitude_rankings,
    _magnitudes,
    _random_rankings,
    _require_magnitudes,
)


class WeightEngine(_EngineBase):
    """Per-layer unstructured magnitude pruning of every Conv/Linear weight tensor.

    Args:
        model: the base network (left unchanged).
        example_input: a batch that the network accepts.
        importance: "l1"/"l2" (both rank weights by magnitude) or "random".
        ignored_layers: names of Conv/Linear modules that keep every weight.
    """

    @staticmethod
    def _check_importance(importance: str) -> None:
        if importance not in ("l1", "l2", "random"):
            raise ValueError(
                f"importance {importance!r} is not defined for granularity='weight'; "
                "expected 'l1', 'l2' or 'random'"
            )

    def _setup_units(
        self, model: nn.Module, example_input: torch.Tensor, importance: str, ignored_layers
    ) -> None:
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
            self.rankings = _magnitude_rankings(self._weights())

    def _weights(self) -> list[torch.Tensor]:
        """The weight tensor of every pruned layer, in unit order."""
        return [self.base.get_submodule(n).weight for n in self.layer_names]

    def draw_random_rankings(self, rng: np.random.Generator) -> None:
        self.rankings = _random_rankings(self.units, rng)

    def global_scores(self) -> list[np.ndarray]:
        """Weight magnitudes of every layer (global magnitude pruning compares them raw)."""
        _require_magnitudes(self.importance)
        return _magnitudes(self._weights())

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
        return _materialise(self._skeleton, self._base_modules, overrides)

    build_masked = build
