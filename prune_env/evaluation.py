"""The reward's building blocks: accuracy, BatchNorm re-calibration, a few fine-tune steps."""

from __future__ import annotations

import torch
from torch import nn


@torch.inference_mode()
def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> float:
    """Top-1 accuracy of ``model`` in eval mode on normalised ``images``."""
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start : start + batch_size])
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / max(len(labels), 1)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> None:
    """Re-estimate every BatchNorm's running statistics on ``images`` (cumulative average).

    Pruning changes the statistics of the channels that remain, so the base model's running
    mean/var no longer fit; a few hundred training images fix most of the damage for free.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    for start in range(0, len(images), batch_size):
        model(images[start : start + batch_size])
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    model.eval()


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
) -> None:
    """``steps`` SGD steps on random mini-batches of normalised ``images`` (in place)."""
    if steps <= 0:
        return
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(labels), (min(batch_size, len(labels)),), generator=generator)
        idx = idx.to(images.device)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(images[idx]), labels[idx]).backward()
        opt.step()
    model.eval()
