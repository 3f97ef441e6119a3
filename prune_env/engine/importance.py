"""Importance: how the channels of a group, or the weights of a layer, are ranked.

A channel group is scored with torch-pruning's own importance ("l1"/"l2": group magnitude,
"bn_scale": BatchNorm scales, Network Slimming), a layer's weights by their magnitude;
"random" ranks by index until a drawn ranking replaces it. A ranking (most important
first) decides which positions every pruned tensor keeps: ``_order_slices`` turns it into
each slice's keep order. Scores divided by their group's mean compare across groups, for one
global threshold.
"""

from __future__ import annotations

import numpy as np
import torch
import torch_pruning as tp

from prune_env.engine.counting import DimSlice, Unit
from prune_env.engine.tracing import _KeptWhole

IMPORTANCES = ("l1", "l2", "bn_scale", "random")


def _score(importance: str, group, size: int, root_name: str) -> np.ndarray:
    """Importance of each of the ``size`` channels of ``group`` (rooted at ``root_name``).

    Raises ``_KeptWhole`` where torch-pruning cannot score the group, and ``ValueError``
    where "bn_scale" finds no BatchNorm to read (the caller's choice, not the group's fault).
    """
    if importance == "random":
        return -np.arange(size, dtype=np.float64)  # index order until a ranking is drawn
    if importance == "bn_scale":
        scorer = tp.importance.BNScaleImportance(normalizer=None)
    else:
        p = 1 if importance == "l1" else 2
        scorer = tp.importance.GroupMagnitudeImportance(p=p, normalizer=None)
    try:
        with torch.no_grad():
            imp = scorer(group)
    except Exception as e:
        raise _KeptWhole(f"torch-pruning cannot score it ({type(e).__name__}: {e})") from e
    if imp is None or len(imp) == 0:
        if importance == "bn_scale":
            raise ValueError(
                "importance 'bn_scale' needs a BatchNorm in every channel group; the group "
                f"of {root_name!r} has none (list it in ignored_layers or use 'l1')"
            )
        raise _KeptWhole("torch-pruning returned no importance for it")
    if len(imp) != size:
        raise _KeptWhole(f"torch-pruning scored {len(imp)} channels, not {size}")
    return imp.detach().double().cpu().numpy()


def _normalised_scores(scores: np.ndarray) -> np.ndarray:
    """Per-channel importance divided by its group's mean, so that groups compare.

    The normalisation torch-pruning uses for global pruning.
    """
    return scores / max(float(np.mean(np.abs(scores))), 1e-12)


def _score_ranking(scores: np.ndarray) -> np.ndarray:
    """Channels from the highest score down; ties keep their index order."""
    return np.argsort(-scores, kind="stable")


def _order_slices(
    units: list[Unit], rankings: list[np.ndarray], slices: list[list[DimSlice]]
) -> None:
    """Check ``rankings`` (one permutation per unit) and set every slice's keep order.

    A slice's ``order`` lists its positions by the rank of their decision, and
    ``kept_count[k]`` how many of them the top ``k`` decisions keep.
    """
    for unit, ranking, unit_slices in zip(units, rankings, slices, strict=True):
        if sorted(ranking.tolist()) != list(range(unit.size)):
            raise ValueError(f"ranking of {unit.name} is not a permutation of {unit.size}")
        rank_of = np.empty(unit.size, dtype=np.int64)
        rank_of[ranking] = np.arange(unit.size)
        for s in unit_slices:
            ranks = rank_of[s.roots]
            s.order = s.positions[np.argsort(ranks, kind="stable")]
            s.kept_count = np.searchsorted(np.sort(ranks), np.arange(unit.size + 1))


def _random_rankings(units: list[Unit], rng: np.random.Generator) -> list[np.ndarray]:
    """One uniformly drawn ranking per unit, drawn from ``rng`` in unit order."""
    return [rng.permutation(u.size) for u in units]


def _magnitude_rankings(weights: list[torch.Tensor]) -> list[np.ndarray]:
    """Every weight of each tensor, flattened, from the largest magnitude down."""
    return [
        torch.argsort(w.detach().abs().flatten(), descending=True, stable=True).cpu().numpy()
        for w in weights
    ]


def _magnitudes(weights: list[torch.Tensor]) -> list[np.ndarray]:
    """The flattened weight magnitudes of each tensor, as float32 arrays."""
    return [w.detach().abs().flatten().float().cpu().numpy() for w in weights]


def _require_magnitudes(importance: str) -> None:
    """A global threshold compares magnitudes; "random" has none."""
    if importance == "random":
        raise ValueError("importance='random' has no magnitudes to threshold globally")
