"""The reward's building blocks: accuracy, BatchNorm re-calibration, a few fine-tune steps."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

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


REWARDS = ("accuracy", "neg_ce", "agreement", "neg_kl")


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
    """Every reward variant from one pass over ``images``; returns (metrics, images seen).

    - ``accuracy``: top-1 accuracy;
    - ``neg_ce``: minus the mean cross-entropy with ``labels``;
    - ``agreement``: share of images whose top-1 class is the base model's (needs
      ``base_log_probs``, the base model's log-softmax outputs on the same images; no labels);
    - ``neg_kl``: minus the mean KL divergence from the base model's output distribution to
      the pruned one's (needs ``base_log_probs``; no labels).

    ``batch_stats``: BatchNorm layers normalise with the statistics of each batch and keep the
    cumulative average as their running statistics, so re-calibration and evaluation share one
    forward pass. ``stop_below``: stop as soon as the Wilson upper bound (``z`` standard
    deviations) of the accuracy over all images falls below this value; the metrics of the
    images seen so far are returned.
    """
    n = len(labels)
    bounds = _near_equal_bounds(n, batch_size)
    correct = agree = seen = 0
    ce = kl = 0.0
    use_batch_stats = batch_stats and has_batchnorm(model)
    mode = _cumulative_bn_stats(model) if use_batch_stats else nullcontext(model.eval())
    with mode:
        for start, end in itertools.pairwise(bounds):
            logits = model(images[start:end]).float()
            y = labels[start:end]
            log_probs = torch.log_softmax(logits, dim=1)
            correct += int((logits.argmax(1) == y).sum())
            ce -= float(log_probs.gather(1, y[:, None]).sum())
            if base_log_probs is not None:
                base = base_log_probs[start:end].to(log_probs.device)
                agree += int((logits.argmax(1) == base.argmax(1)).sum())
                kl += float((base.exp() * (base - log_probs)).sum())
            seen = int(end)
            if stop_below is not None and seen < n:
                upper_rest = wilson_upper(correct, seen, z)
                if (correct + upper_rest * (n - seen)) / n < stop_below:
                    break
    count = max(seen, 1)
    metrics = {"accuracy": correct / count, "neg_ce": -ce / count}
    if base_log_probs is not None:
        metrics.update(agreement=agree / count, neg_kl=-kl / count)
    return metrics, seen


def reward_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1000,
    batch_stats: bool = False,
    stop_below: float | None = None,
    z: float = 3.0,
) -> tuple[float, int]:
    """Accuracy on ``images`` (see ``reward_metrics``); returns (accuracy, images seen)."""
    metrics, seen = reward_metrics(model, images, labels, batch_size, batch_stats, stop_below, z)
    return metrics["accuracy"], seen
