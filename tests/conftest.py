import contextlib
import os
import signal
import warnings
from collections.abc import Iterator

import pytest
import torch
from torch import nn

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


class _Overran(BaseException):  # not an Exception: the engine must not catch it as a reason
    pass


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail a check that would otherwise run (and allocate) without end."""

    def overran(signum: int, frame: object) -> None:
        raise _Overran(f"took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, overran)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def tiny_swin() -> nn.Module:
    """A 19k-parameter torchvision Swin: torch-pruning's index mapping runs away on it."""
    from torchvision.models import SwinTransformer

    torch.manual_seed(0)
    return SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[1, 1],
        num_heads=[1, 1],
        window_size=[2, 2],
        num_classes=10,
    ).eval()
