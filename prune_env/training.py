"""The one SGD loop: the reward's few fine-tune steps (``prune_env.evaluation.finetune``), the
delivered network's fine-tuning (``prune_pipeline.pruned.finetune_pruned``) and base-model
training (``prune_env.base_training``).

Each caller chooses its batches, optimiser and schedule; the loop is one optimiser step per
batch, in the same order for all of them, and the pruned weights set back to zero after each
step where the caller asks (unstructured pruning keeps its zeros).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

Masks = Sequence[tuple[torch.Tensor, torch.Tensor]]  # (weight, 0/1 mask of the same shape)


@torch.no_grad()
def reapply_masks(masks: Masks) -> None:
    """Multiply every weight by its mask, in place: pruned entries go back to zero."""
    for weight, mask in masks:
        weight.mul_(mask)


def masks_hook(masks: Masks) -> Callable[[], None] | None:
    """An ``after_step`` for ``sgd_steps`` that re-applies ``masks``; None if there are none."""
    if not masks:
        return None
    return lambda: reapply_masks(masks)


def sgd_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    after_step: Callable[[], None] | None = None,
) -> Iterator[torch.Tensor]:
    """One optimiser step per ``(inputs, labels)`` batch; yields each step's loss.

    A step: the loss of ``model(inputs)``, gradients (the previous ones dropped), the
    optimiser's step, then the scheduler's, then ``after_step`` (e.g. ``masks_hook``).
    ``batches`` is read lazily, one batch before each step, so a batch drawn from a random
    generator is drawn in the same order as in a hand-written loop. The model's mode is the
    caller's (set ``model.train()`` before).
    """
    for inputs, labels in batches:
        loss = loss_fn(model(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step()
        yield loss
