"""The reward's building blocks: accuracy, BatchNorm re-calibration, the reward variants, a few
fine-tune steps."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prune_env.training import masks_hook, sgd_steps


def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> float:
    """Top-1 accuracy of ``model`` in eval mode on normalised ``images``."""
    return reward_accuracy(model, images, labels, batch_size)[0]


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def zero_weight_masks(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, mask of its non-zero entries) of every Conv/Linear layer that has zeros."""
    pairs = []
    for module in model.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            mask = module.weight.detach() != 0
            if not bool(mask.all()):
                pairs.append((module.weight, mask.to(module.weight.dtype)))
    return pairs


def _near_equal_bounds(n: int, batch_size: int) -> np.ndarray:
    """Batch boundaries over ``n`` items: batches of near-equal size, none above ``batch_size``.

    With batch statistics a tiny last batch would be normalised badly (a lone image fails).
    """
    return np.linspace(0, n, max(1, math.ceil(n / batch_size)) + 1).round().astype(int)


@contextmanager
def _cumulative_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers in train mode with fresh running statistics averaged over every batch.

    Only the BatchNorm layers: Dropout and everything else stay in eval mode, so the pass is
    deterministic (a Dropout mask drawn from the global RNG would make the reward random).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.eval()
    for m in bns:
        m.train()
    try:
        yield
    finally:
        for m, momentum in zip(bns, saved, strict=True):
            m.momentum = momentum
        model.eval()


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> None:
    """Re-estimate every BatchNorm's running statistics on ``images`` (cumulative average).

    Pruning changes the statistics of the channels that remain, so the base model's running
    mean/var no longer fit; a few hundred training images fix most of the damage for free.
    """
    if not has_batchnorm(model):
        return
    n = len(images)
    bounds = _near_equal_bounds(n, batch_size)
    with _cumulative_bn_stats(model):
        for start, end in itertools.pairwise(bounds):
            model(images[start:end])


def finetune(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    batch_size: int = 128,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    masks: list[tuple[torch.Tensor, torch.Tensor]] = (),
) -> int:
    """``steps`` SGD steps on random mini-batches of normalised ``images`` (in place);
    returns the number of images run (the search's compute is counted in images).

    Deterministic given ``generator``: it draws the batches, and its seed also seeds the
    global RNG (restored afterwards) from which Dropout draws its masks. ``masks``: (weight,
    mask) pairs re-applied after every step (unstructured pruning keeps its zeros). The steps
    are ``prune_env.training.sgd_steps``, the loop every fine-tuning runs.
    """
    if steps <= 0:
        return 0
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    size = max(2, min(batch_size, len(labels)))  # BatchNorm needs two per batch

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(steps):
            idx = torch.randint(0, len(labels), (size,), generator=generator).to(images.device)
            yield images[idx], labels[idx]

    cuda = images.device.type == "cuda"
    with torch.random.fork_rng(devices=[images.device] if cuda else []):
        # Only the generators of the devices in use: other GPUs' states stay untouched.
        torch.default_generator.manual_seed(generator.initial_seed())
        if cuda:
            with torch.cuda.device(images.device):
                torch.cuda.manual_seed(generator.initial_seed())
        model.train()
        for _ in sgd_steps(model, opt, batches(), nn.CrossEntropyLoss(), None, masks_hook(masks)):
            pass
    model.eval()
    return steps * size


def wilson_upper(correct: int, seen: int, z: float) -> float:
    """Upper end of the Wilson score interval for a proportion ``correct / seen``."""
    if seen == 0:
        return 1.0
    p = correct / seen
    denom = 1 + z * z / seen
    centre = p + z * z / (2 * seen)
    spread = z * math.sqrt(p * (1 - p) / seen + z * z / (4 * seen * seen))
    return min(1.0, (centre + spread) / denom)


# ----------------------------------------------------------------------------- reward variants
BatchSum = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], float]


@dataclass(frozen=True)
class RewardVariant:
    """A reward: ``batch_sum(logits, log_probs, labels, base_log_probs)`` is its sum over one
    batch (the env divides the total by the images seen); ``needs_base`` when it compares
    with the base network's outputs (``base_log_probs``; then it needs no labels)."""

    batch_sum: BatchSum
    needs_base: bool = False


def _correct(logits, log_probs, labels, base) -> int:
    return int((logits.argmax(1) == labels).sum())


def _log_likelihood(logits, log_probs, labels, base) -> float:
    return float(log_probs.gather(1, labels[:, None]).sum())


def _agreement(logits, log_probs, labels, base) -> int:
    return int((logits.argmax(1) == base.argmax(1)).sum())


def _neg_kl(logits, log_probs, labels, base) -> float:
    return -float((base.exp() * (base - log_probs)).sum())


REWARD_VARIANTS: dict[str, RewardVariant] = {
    "accuracy": RewardVariant(_correct),  # top-1 accuracy
    "neg_ce": RewardVariant(_log_likelihood),  # minus the mean cross-entropy
    "agreement": RewardVariant(_agreement, needs_base=True),  # top-1 class = the base's
    "neg_kl": RewardVariant(_neg_kl, needs_base=True),  # minus KL(base || pruned)
}
REWARDS = tuple(REWARD_VARIANTS)  # the built-in ones


def register_reward(name: str, batch_sum: BatchSum, needs_base: bool = False) -> None:
    """Make ``reward=name`` score candidates with ``batch_sum`` (see ``RewardVariant``); it is
    computed in the same forward pass as the others and reported in ``reward_metrics``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a reward name must be a non-empty string, got {name!r}")
    if name in REWARD_VARIANTS:
        raise ValueError(f"reward {name!r} is already registered")
    if not callable(batch_sum):
        raise TypeError(f"batch_sum must be callable, got {type(batch_sum).__name__}")
    REWARD_VARIANTS[name] = RewardVariant(batch_sum, needs_base)


@torch.no_grad()
def reward_metrics(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1000,
    batch_stats: bool = False,
    stop_below: float | None = None,
    z: float = 3.0,
    base_log_probs: torch.Tensor | None = None,
) -> tuple[dict[str, float], int]:
    """Every reward variant (``REWARD_VARIANTS``) from one pass over ``images``; returns
    (metrics, images seen).

    - ``accuracy``: top-1 accuracy;
    - ``neg_ce``: minus the mean cross-entropy with ``labels``;
    - ``agreement``: share of images whose top-1 class is the base model's (needs
      ``base_log_probs``, the base model's log-softmax outputs on the same images; no labels);
    - ``neg_kl``: minus the mean KL divergence from the base model's output distribution to
      the pruned one's (needs ``base_log_probs``; no labels).

    Variants that need the base model's outputs are left out without ``base_log_probs``.
    ``batch_stats``: BatchNorm layers normalise with the statistics of each batch and keep the
    cumulative average as their running statistics, so re-calibration and evaluation share one
    forward pass. ``stop_below``: stop as soon as the Wilson upper bound (``z`` standard
    deviations) of the accuracy over all images falls below this value; the metrics of the
    images seen so far are returned.
    """
    n = len(labels)
    bounds = _near_equal_bounds(n, batch_size)
    variants = {
        name: v
        for name, v in REWARD_VARIANTS.items()
        if base_log_probs is not None or not v.needs_base
    }
    totals = dict.fromkeys(variants, 0)
    seen = 0
    use_batch_stats = batch_stats and has_batchnorm(model)
    mode = _cumulative_bn_stats(model) if use_batch_stats else nullcontext(model.eval())
    with mode:
        for start, end in itertools.pairwise(bounds):
            logits = model(images[start:end]).float()
            y = labels[start:end]
            log_probs = torch.log_softmax(logits, dim=1)
            base = None
            if base_log_probs is not None:
                base = base_log_probs[start:end].to(log_probs.device)
            for name, variant in variants.items():
                totals[name] += variant.batch_sum(logits, log_probs, y, base)
            seen = int(end)
            if stop_below is not None and seen < n:
                correct = totals["accuracy"]
                upper_rest = wilson_upper(correct, seen, z)
                if (correct + upper_rest * (n - seen)) / n < stop_below:
                    break
    count = max(seen, 1)
    return {name: total / count for name, total in totals.items()}, seen


def reward_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *args: Any, **kwargs: Any
) -> tuple[float, int]:
    """Accuracy on ``images``; returns (accuracy, images seen). The further arguments are
    ``reward_metrics``' (``batch_size``, ``batch_stats``, ``stop_below``, ``z``)."""
    metrics, seen = reward_metrics(model, images, labels, *args, **kwargs)
    return metrics["accuracy"], seen
