"""What both engines share: the base model on its device, its meta skeleton, its shapes."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from prune_env.engine.counting import Unit, _layer_counts, _layer_shapes, _unit
from prune_env.engine.tracing import _module_spatial


class _EngineBase:
    """Shared state: the base model on its device, its meta skeleton and resource totals."""

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        importance: str = "l1",
        ignored_layers: Sequence[str] = (),
    ) -> None:
        self._check_importance(importance)
        self._setup_base(model, example_input)
        self._setup_units(model, example_input, importance, ignored_layers)

    @staticmethod
    def _check_importance(importance: str) -> None:
        raise NotImplementedError

    def _setup_units(
        self, model: nn.Module, example_input: torch.Tensor, importance: str, ignored_layers
    ) -> None:
        """The engine's decision units (and its rankings) for ``importance``."""
        raise NotImplementedError

    def _setup_base(self, model: nn.Module, example_input: torch.Tensor) -> None:
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
        return _unit(
            name,
            size,
            self.base.get_submodule(name),
            self.shapes[name],
            params_share=params / max(self.total_params, 1),
            flops_share=macs / max(self.total_macs, 1),
        )

    def validate_counts(self, counts: Sequence[int]) -> np.ndarray:
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != (len(self.units),):
            raise ValueError(f"expected {len(self.units)} keep counts, got shape {counts.shape}")
        sizes = np.array([u.size for u in self.units])
        if np.any(counts < 1) or np.any(counts > sizes):
            raise ValueError(f"keep counts must lie in [1, size]; sizes {sizes.tolist()}")
        return counts
