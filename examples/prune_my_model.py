"""Prune your own network end to end with one call: prune_pipeline.prune.

    .venv/bin/python examples/prune_my_model.py   # 7 min on 2 CPU cores (search 348 s)

A small CNN defined here is trained for two epochs on Fashion-MNIST (Debian's
dataset-fashion-mnist; synthetic images when it is absent), then pruned to 40% of its FLOPs by
ppo_pid_lag with the quick task's reward split and fine-tuning (one epoch) and a shorter
search, and measured. The run folder holds the report, the plots and
the pruned model as pruned.safetensors + pruned_arch.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from prune_env.data import DatasetNotFoundError, Split, dataset_info, load_split, synthetic_split
from prune_env.zoo import Recipe, split_accuracy, train_model
from prune_pipeline import load_pruned, prune


def make() -> nn.Module:
    """The architecture; ``architecture=f"{__file__}:make"`` lets the weights-only file
    rebuild it."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def data() -> tuple[Split, Split]:
    try:
        train, test = load_split("fashion_mnist", "train"), load_split("fashion_mnist", "test")
    except DatasetNotFoundError:
        print("Fashion-MNIST not found: synthetic images instead")
        train = synthetic_split("train", channels=1, size=28, n=12_000)
        test = synthetic_split("test", channels=1, size=28, n=2000)
    # a slice keeps the example short; take everything for a real model
    return (Split(train.images[:12_000], train.labels[:12_000], train.classes),
            Split(test.images[:2000], test.labels[:2000], test.classes))  # fmt: skip


def main() -> None:
    torch.manual_seed(0)
    train, test = data()
    # Your trained model: here trained on the first 10,000 images, the last 2,000 held out
    # for the search's reward (images it never saw).
    model = make()
    fit = Split(train.images[:10_000], train.labels[:10_000], train.classes)
    heldout = (train.images[10_000:], train.labels[10_000:])
    # prune() standardises uint8 images with the statistics of all of train_data: train alike
    info = dataset_info("imagefolder", train)
    train_model(model, fit, info, Recipe(epochs=2, augment=False), progress=False)
    print(f"base model: {split_accuracy(model, test, info):.2%} test accuracy")

    result = prune(
        model,
        (train.images, train.labels),  # uint8 images: normalised with their own statistics
        budget=0.4,
        cost="flops",
        algo="ppo_pid_lag",
        test_data=(test.images, test.labels),
        reward_data=heldout,
        # the quick task (prune_env.tasks) gives the reward split, the fine-tuning length and
        # the rollout sizes; its search is shortened here to keep the example short
        total_timesteps=3000,
        architecture=f"{Path(__file__).resolve()}:make",
        out="runs/examples",
        progress=False,
    )
    base, pruned = result.report["base"], result.report["pruned"]
    print(
        f"pruned: {pruned['test_accuracy']:.2%} test accuracy (base {base['test_accuracy']:.2%}), "
        f"FLOPs kept {pruned['flops'] / base['flops']:.3f}, params kept "
        f"{pruned['params'] / base['params']:.3f}; report: {result.run_dir / 'report.md'}"
    )
    reloaded = load_pruned(result.run_dir)  # weights only: no pickled code runs
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(reloaded(x), result.model(x), atol=1e-6)


if __name__ == "__main__":
    main()
