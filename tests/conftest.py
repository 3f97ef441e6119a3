import os
import warnings

import pytest
import torch

# Tests never read or write the user's cache.
os.environ.setdefault("PRUNE_ENV_HOME", os.path.join(os.path.dirname(__file__), ".prune_env_home"))
warnings.filterwarnings("ignore", message=".*symmetric and normalized.*")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private PRUNE_ENV_HOME for tests that write checkpoints or caches."""
    monkeypatch.setenv("PRUNE_ENV_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


TINY = {
    "dataset": "synthetic",
    "pretrained": False,
    "reward_size": 64,
    "bn_calib_size": 32,
    "device": "cpu",
    "latency_batch_size": 4,
    "latency_repeats": 1,
}
TINY_WIDTH = {
    "VGG11Prune-v0": 0.125,
    "VGG16Prune-v0": 0.125,
    "VGG19Prune-v0": 0.125,
    "ResNet18Prune-v0": 0.125,
    "ResNet56Prune-v0": 0.25,
    "LeNet5Prune-v0": 1.0,
}
