"""Gymnasium environments for pruning neural networks under resource constraints.

Importing the package registers every environment id (one place, versioned, string entry
points), so ``gym.make("VGG16Prune-v0")`` works after ``import prune_env``.
"""

import gymnasium as gym
from gymnasium.envs.registration import register

__version__ = "0.1.0.dev0"

_ENTRY_POINT = "prune_env.envs.pruning:PruneEnv"

# id -> (architecture, default data set)
ZOO_IDS: dict[str, tuple[str, str]] = {
    "VGG11Prune-v0": ("vgg11", "cifar10"),
    "VGG16Prune-v0": ("vgg16", "cifar10"),
    "VGG19Prune-v0": ("vgg19", "cifar10"),
    "ResNet18Prune-v0": ("resnet18", "cifar10"),
    "ResNet56Prune-v0": ("resnet56", "cifar10"),
    "LeNet5Prune-v0": ("lenet5", "fashion_mnist"),
}
# surrogate id -> the real env whose evaluation log it learns from
SURROGATE_IDS: dict[str, str] = {
    f"{_env_id.removesuffix('-v0')}Surrogate-v0": _env_id for _env_id in ZOO_IDS
}
ENV_IDS = (*ZOO_IDS, *SURROGATE_IDS, "ModelPrune-v0")

for _env_id, (_arch, _dataset) in ZOO_IDS.items():
    register(id=_env_id, entry_point=_ENTRY_POINT, kwargs={"model": _arch, "dataset": _dataset})
for _env_id, _real_id in SURROGATE_IDS.items():
    register(
        id=_env_id,
        entry_point="prune_env.envs.surrogate:SurrogatePruneEnv",
        kwargs={"real_id": _real_id},
    )
register(id="ModelPrune-v0", entry_point=_ENTRY_POINT)

from prune_env.envs.pruning import PruneEnv  # noqa: E402


def make(env_id: str, **kwargs) -> gym.Env:
    """``gym.make`` for this package's ids; an unknown id fails with the list of valid ones."""
    if env_id not in ENV_IDS:
        raise ValueError(f"unknown env id {env_id!r}; expected one of {list(ENV_IDS)}")
    return gym.make(env_id, **kwargs)


__all__ = ["ENV_IDS", "SURROGATE_IDS", "ZOO_IDS", "PruneEnv", "__version__", "make"]
