"""Training a network from scratch: the recipe, the SGD loop, its per-epoch log, and the
training-state file that lets an interrupted run go on from its last finished epoch.

``prune_env.zoo`` uses this loop to make the base models it caches (and re-exports every
name here); fine-tuning a pruned network uses ``train_model`` with ``after_step``.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from prune_env.data import DatasetInfo, Split, augment, normalise
from prune_env.evaluation import accuracy
from prune_env.paths import atomic_torch_save
from prune_env.training import sgd_steps

TRAINING_STATE_FORMAT = "prune_env.training_state/1"


@dataclass(frozen=True)
class Recipe:
    """SGD with Nesterov momentum, cosine learning-rate decay, optional crop+flip augmentation."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True


# Short schedules, chosen so that a CPU can produce every base model; the accuracy each
# reaches and how long it takes: docs/environments.md#base-models.
RECIPES: dict[str, Recipe] = {
    "lenet5": Recipe(epochs=8, lr=0.05, weight_decay=5e-4, augment=False),
    "vgg11": Recipe(epochs=30),
    "vgg16": Recipe(epochs=30),
    "vgg19": Recipe(epochs=30),
    "resnet18": Recipe(epochs=30),
    "resnet56": Recipe(epochs=30, lr=0.1),
}


def split_accuracy(model: nn.Module, test: Split, info: DatasetInfo) -> float:
    """Top-1 accuracy of ``model`` on every image of ``test``, normalised as ``info`` says."""
    device = next(model.parameters()).device
    return accuracy(model, normalise(test.images.to(device), info), test.labels.to(device))


def train_model(model: nn.Module, train: Split, info: DatasetInfo, recipe: Recipe,
                *args: Any, **kwargs: Any) -> float:  # fmt: skip
    """Train ``model`` in place on its device with ``recipe``; returns seconds spent.

    The further arguments are ``train_model_logged``'s (``seed``, ``progress``,
    ``description``, ``after_step``): the same loop, whose per-epoch log and resuming this
    leaves out. ``after_step`` runs after every optimiser step (fine-tuning uses it to keep
    pruned weights at zero).
    """
    seconds, _ = train_model_logged(model, train, info, recipe, *args, **kwargs)
    return seconds


@dataclass
class _LoopState:
    """What the loop changes from step to step, all of which a training-state file keeps."""

    model: nn.Module
    opt: torch.optim.SGD
    sched: torch.optim.lr_scheduler.OneCycleLR
    generator: torch.Generator  # shuffling and augmentation
    device: torch.device

    @classmethod
    def start(
        cls, model: nn.Module, recipe: Recipe, generator: torch.Generator, total_steps: int
    ) -> _LoopState:
        """The recipe's optimiser and one-cycle schedule over ``total_steps`` steps."""
        opt = torch.optim.SGD(
            model.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            nesterov=True,
        )
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe.lr, total_steps=total_steps, pct_start=0.15, anneal_strategy="cos"
        )
        return cls(model, opt, sched, generator, next(model.parameters()).device)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a training-state file's weights, optimiser, schedule and RNGs."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    def snapshot(self) -> dict[str, Any]:
        """The entries of a training-state file that ``restore`` reads back."""
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.opt.state_dict(),
            # torch < 2.4 keeps a bound method there, which weights_only refuses
            "scheduler": {k: v for k, v in self.sched.state_dict().items() if k != "anneal_func"},
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            **(
                {"cuda_rng": torch.cuda.get_rng_state(self.device)}
                if self.device.type == "cuda"
                else {}
            ),
        }


def _fingerprint(
    run: _LoopState,
    recipe: Recipe,
    seed: int,
    images: int,
    evaluated: bool,
    identity: dict[str, Any] | None,
) -> dict[str, Any]:
    """What a training-state file must match to be resumed by this run."""
    shapes = [(name, tuple(v.shape)) for name, v in run.model.state_dict().items()]
    return {
        "recipe": asdict(recipe),
        "seed": seed,
        "images": images,
        "evaluated": evaluated,  # a log without test accuracies cannot go on with
        "architecture": hashlib.sha1(repr(shapes).encode()).hexdigest(),
        "device": run.device.type,
        "identity": identity or {},
    }


def _train_epoch(
    run: _LoopState,
    images: torch.Tensor,
    labels: torch.Tensor,
    info: DatasetInfo,
    recipe: Recipe,
    steps: int,
    after_step: Callable[[], None] | None,
    bar: tqdm,
) -> torch.Tensor:
    """One pass over a fresh shuffle of the images; returns the sum of the step losses."""
    order = torch.randperm(len(labels), generator=run.generator).to(run.device)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for step in range(steps):
            idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            batch = images[idx]
            if recipe.augment:  # drawn lazily, step by step: the generator's order is kept
                batch = augment(batch, run.generator)
            yield normalise(batch, info), labels[idx]

    loss_sum = torch.zeros((), device=run.device)
    losses = sgd_steps(run.model, run.opt, batches(), nn.CrossEntropyLoss(), run.sched, after_step)
    for step, loss in enumerate(losses):
        loss_sum += loss.detach()
        bar.update()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return loss_sum


def _evaluate_epoch(
    model: nn.Module, evaluate: Callable[[nn.Module], float], entry: dict[str, Any], bar: tqdm
) -> float:
    """Add ``test_accuracy`` and ``eval_s`` to the epoch's log ``entry``; returns the seconds
    spent, which the training time leaves out."""
    t = time.perf_counter()
    model.eval()
    entry["test_accuracy"] = float(evaluate(model))
    model.train()
    entry["eval_s"] = round(time.perf_counter() - t, 2)
    seconds = time.perf_counter() - t
    bar.set_postfix(loss=f"{entry['train_loss']:.3f}", test=f"{entry['test_accuracy']:.4f}")
    return seconds


def train_model_logged(
    model: nn.Module,
    train: Split,
    info: DatasetInfo,
    recipe: Recipe,
    seed: int = 0,
    progress: bool = True,
    description: str = "training",
    after_step: Callable[[], None] | None = None,
    state_file: str | os.PathLike | None = None,
    evaluate: Callable[[nn.Module], float] | None = None,
    identity: dict[str, Any] | None = None,
) -> tuple[float, list[dict[str, Any]]]:
    """``train_model`` that also returns a log of every epoch (``epoch``, mean ``train_loss``,
    ``test_accuracy`` and its ``eval_s`` when ``evaluate`` is given, cumulative training
    ``seconds``, evaluation left out) and can be resumed.

    With ``state_file``, everything the loop needs to go on (weights, optimiser and schedule,
    the shuffling generator, torch's global RNG, the log) is written there atomically after
    every epoch; a later call with the same file, ``recipe``, ``seed``, number of images,
    architecture, device type, evaluation or not, and ``identity`` (what else must match, e.g.
    a digest of the images and the numerics) continues after the last
    finished epoch and ends with the same weights, bit for bit, as an uninterrupted run under
    the same numerics. A state that does not match is not used (a warning says why). The file
    is left in place: the caller deletes it once the result is stored.
    ``evaluate(model)`` runs in eval mode at the end of every epoch (base training passes the
    test accuracy, so the record shows whether the schedule had converged).
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    images, labels = train.images.to(device), train.labels.to(device)
    steps_per_epoch = max(1, len(labels) // recipe.batch_size)
    total = steps_per_epoch * recipe.epochs
    run = _LoopState.start(model, recipe, generator, total)
    fingerprint = _fingerprint(run, recipe, seed, len(labels), evaluate is not None, identity)
    log: list[dict[str, Any]] = []
    done_seconds, first_epoch = 0.0, 0
    if state_file is not None:
        state = _read_training_state(Path(state_file), fingerprint)
        if state is not None:
            run.restore(state)
            log, done_seconds = list(state["log"]), float(state["seconds"])
            first_epoch = int(state["epoch"])
    start, eval_seconds = time.perf_counter(), 0.0
    bar = tqdm(
        total=total,
        initial=first_epoch * steps_per_epoch,
        desc=description,
        disable=not progress,
        unit="step",
    )
    model.train()
    for epoch in range(first_epoch, recipe.epochs):
        loss_sum = _train_epoch(run, images, labels, info, recipe, steps_per_epoch, after_step, bar)
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": round(float(loss_sum) / steps_per_epoch, 5),
        }
        # seconds count training only (as before the log existed): evaluation is apart
        entry["seconds"] = round(done_seconds + time.perf_counter() - start - eval_seconds, 1)
        if evaluate is not None:
            eval_seconds += _evaluate_epoch(model, evaluate, entry, bar)
        log.append(entry)
        if state_file is not None:
            _write_training_state(state_file, fingerprint, epoch + 1, run, entry["seconds"], log)
    bar.close()
    model.eval()
    return done_seconds + time.perf_counter() - start - eval_seconds, log


def _write_training_state(
    path: str | os.PathLike,
    fingerprint: dict[str, Any],
    epoch: int,
    run: _LoopState,
    seconds: float,
    log: list[dict[str, Any]],
) -> None:
    """Keep everything needed to go on after ``epoch`` in ``path``, atomically."""
    atomic_torch_save(
        {
            "format": TRAINING_STATE_FORMAT,
            "fingerprint": fingerprint,
            "epoch": epoch,
            **run.snapshot(),
            "seconds": seconds,
            "log": log,
        },
        path,
    )


def _read_training_state(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The resumable state in ``path`` if it belongs to this training run, else None."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: start over rather than fail
        warnings.warn(
            f"training state {path} is unreadable ({exc}); training from the start", stacklevel=3
        )
        return None
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        warnings.warn(
            f"{path} is not a {TRAINING_STATE_FORMAT} file; training from the start", stacklevel=3
        )
        return None
    if state["fingerprint"] != fingerprint:
        warnings.warn(
            f"training state {path} belongs to another run (recipe, seed, data, network, "
            f"device or numerics differ); training from the start",
            stacklevel=3,
        )
        return None
    return state


def training_state_path(checkpoint: Path) -> Path:
    """Where base training keeps its per-epoch state until ``checkpoint`` is written: an
    interrupted run (a closed session, a killed process) goes on from its last epoch."""
    return checkpoint.with_name(checkpoint.stem + ".partial.pt")
