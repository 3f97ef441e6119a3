"""A small user-defined CNN for the command-line form of "prune your own model".

    prune-train --model examples/my_cnn.py:make --data-dir CIFAR_IMAGEFOLDER \
        --base-epochs 2 --budget 0.3 --cost flops

``make`` is the factory: a function of no arguments returning the untrained network (10
classes, 3x32x32 images). Without ``--checkpoint`` the job trains it first (its stage 1,
with a tenth of the training images held out for the search's reward).
"""

from torch import nn


def make() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip
