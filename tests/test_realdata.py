"""LeNet5Prune-v0 on the real Fashion-MNIST (Debian's dataset-fashion-mnist, installed by CI)."""

import os

import gymnasium as gym
import numpy as np
import pytest

import prune_env  # noqa: F401
from prune_env.data import DEBIAN_FASHION_MNIST

HAVE_DATA = (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file()
pytestmark = pytest.mark.skipif(
    not HAVE_DATA and not os.environ.get("CI"),
    reason="apt-get install dataset-fashion-mnist (required in CI)",
)


@pytest.mark.realdata
def test_lenet5_on_fashion_mnist(home):
    env = gym.make(
        "LeNet5Prune-v0",
        budget=0.3,
        base_train_epochs=1,
        train_base=True,
        reward_size=2000,
        device="cpu",
    )
    u = env.unwrapped
    assert u.base_info["test_accuracy"] > 0.75  # one epoch of the recipe; 8 epochs reach ~0.91
    assert u.base_accuracy > 0.75
    assert len(u.pool_y) == 0 and len(u.reward_y) == 2000  # no fine-tuning: no pool is loaded
    n = u.n_layers
    assert [x.name for x in u.units] == ["features.0", "features.3", "classifier.1", "classifier.3"]

    def episode(ratio):
        env.reset(seed=0)
        for _ in range(n):
            _, reward, terminated, _, info = env.step(np.array([ratio], dtype=np.float32))
        assert terminated
        return reward, info

    full, full_info = episode(1.0)
    assert full == pytest.approx(u.base_accuracy) and full_info["cost"] == 1.0
    half, half_info = episode(0.5)
    tiny, tiny_info = episode(0.05)
    assert tiny_info["cost"] < half_info["cost"] < 1.0
    assert tiny_info["constraint_satisfied"] and not full_info["constraint_satisfied"]
    assert tiny < half <= full + 0.02  # pruning harder costs accuracy
    assert tiny < 0.5  # a 5% LeNet-5 has lost most of what it knew
