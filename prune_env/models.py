"""Base architectures of the registered pruning environments.

CIFAR-style networks (3x3 stem, no ImageNet max-pool) as used in the pruning literature:
VGG-11/16/19 with BatchNorm and a single Linear head, ResNet-18 (BasicBlock, 1x1 projection
shortcuts), ResNet-56 (3 stages of 9 BasicBlocks, 1x1 projection shortcuts where the shape
changes, so that torch-pruning can trace every dependency), and LeNet-5 for 28x28 grey images.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

_VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [
        64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
    ],
    "vgg19": [
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ],
}  # fmt: skip


def _scaled(channels: int, width_mult: float) -> int:
    return max(1, round(channels * width_mult))


class VGG(nn.Module):
    """CIFAR VGG: conv-BN-ReLU stacks with max-pooling, global pooling and one Linear head."""

    def __init__(
        self,
        config: list[int | str],
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out = _scaled(int(item), width_mult)
                layers += [
                    nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (projection when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem, stages of BasicBlocks, global pooling, Linear head."""

    def __init__(
        self,
        blocks_per_stage: list[int],
        stage_widths: list[int],
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        widths = [_scaled(w, width_mult) for w in stage_widths]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for index, (n_blocks, width) in enumerate(zip(blocks_per_stage, widths, strict=True)):
            blocks: list[nn.Module] = []
            for b in range(n_blocks):
                stride = 2 if (index > 0 and b == 0) else 1
                blocks.append(BasicBlock(in_planes, width, stride))
                in_planes = width
            stages.append(nn.Sequential(*blocks))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(self.relu(self.bn1(self.conv1(x))))
        return self.fc(self.pool(out).flatten(1))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, for 28x28 inputs."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0
    ) -> None:
        super().__init__()
        c1, c2 = _scaled(6, width_mult), _scaled(16, width_mult)
        f1, f2 = _scaled(120, width_mult), _scaled(84, width_mult)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 5 * 5, f1),
            nn.ReLU(inplace=True),
            nn.Linear(f1, f2),
            nn.ReLU(inplace=True),
            nn.Linear(f2, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


ModelFactory = Callable[..., nn.Module]

# Input shape (channels, size) of the architectures that do not take 3x32x32 images.
ARCH_INPUT: dict[str, tuple[int, int]] = {"lenet5": (1, 28)}

MODELS: dict[str, ModelFactory] = {
    "vgg11": lambda **kw: VGG(_VGG_CONFIGS["vgg11"], **kw),
    "vgg16": lambda **kw: VGG(_VGG_CONFIGS["vgg16"], **kw),
    "vgg19": lambda **kw: VGG(_VGG_CONFIGS["vgg19"], **kw),
    "resnet18": lambda **kw: CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], **kw),
    "resnet56": lambda **kw: CifarResNet([9, 9, 9], [16, 32, 64], **kw),
    "lenet5": lambda **kw: LeNet5(**kw),
}


def build_model(
    name: str, num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0
) -> nn.Module:
    """Instantiate a registered architecture by name (see ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    if not width_mult > 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, width_mult=width_mult)
