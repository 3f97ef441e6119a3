"""Portable base training (prune_env.numerics): recorded, deterministic, cached apart, refused
where it cannot hold. Whether it agrees across CPU models is measured by
benchmarks/reproducibility.py on two machines, not here."""

import pytest
import torch

from prune_env.data import dataset_info, synthetic_split
from prune_env.models import build_model
from prune_env.numerics import numerics_mode, state_digest
from prune_env.zoo import BaseModelMissing, Recipe, cache_path, get_base_model, load_checkpoint

SMALL = Recipe(epochs=1, batch_size=64)


@pytest.fixture(scope="module")
def data():
    train = synthetic_split("train", 10, 3, 32, n=640)
    return train, synthetic_split("test", 10, 3, 32, n=128), dataset_info("synthetic", train)


def _base(data, numerics, seed=0, **kwargs):
    train, test, info = data
    import prune_env.zoo as zoo

    original = zoo.RECIPES["vgg11"]
    zoo.RECIPES["vgg11"] = SMALL
    try:
        return get_base_model(
            "vgg11", "synthetic", info, train, test, 0.125, progress=False, seed=seed,
            numerics=numerics, **kwargs,
        )  # fmt: skip
    finally:
        zoo.RECIPES["vgg11"] = original


def test_portable_base_is_trained_in_portable_numerics_and_recorded(data, home):
    model, meta = _base(data, "portable")
    mode = meta["numerics"]
    assert mode["mode"] == "portable"
    assert mode["mkl_cbwr"] == "COMPATIBLE"  # the child was started with MKL's portable mode
    assert mode["onednn"] is False and mode["threads"] == 1
    path = cache_path("vgg11", "synthetic", 0.125, 1, numerics="portable")
    assert meta["source"] == str(path) and path.name.endswith("-portable.pt")
    # the network handed back is the one the child trained and recorded
    assert state_digest(model) == meta["weights_sha1"]
    fresh = build_model("vgg11", 10, 3, 0.125)
    assert load_checkpoint(fresh, path)["weights_sha1"] == state_digest(fresh)
    assert meta["train_images_sha1"] and meta["test_accuracy"] is not None


def test_portable_base_depends_on_the_seed_alone(data, tmp_path, monkeypatch):
    digests = []
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        monkeypatch.setenv("PRUNE_ENV_HOME", str(tmp_path / run))
        torch.manual_seed(1234 + len(digests))  # the parent's RNG must not matter
        digests.append(_base(data, "portable", seed=seed)[1]["weights_sha1"])
    assert digests[0] == digests[1]
    assert digests[2] != digests[0]


def test_default_base_is_recorded_and_not_served_for_portable(data, home):
    model, meta = _base(data, "default")
    assert meta["numerics"]["mode"] == "default"
    assert meta["weights_sha1"] == state_digest(model)
    with pytest.raises(BaseModelMissing, match="portable"):
        _base(data, "portable", train_if_missing=False)


def test_bad_numerics_is_refused_at_the_boundary(data, home):
    with pytest.raises(ValueError, match="base_numerics must be one of"):
        _base(data, "fast")
    with pytest.raises(ValueError, match="base_numerics must be one of"):
        import gymnasium as gym

        import prune_env  # noqa: F401

        gym.make("VGG11Prune-v0", dataset="synthetic", pretrained=False, base_numerics="x")


def test_a_portable_process_trains_in_process_on_the_cpu_whatever_the_device(
    data, home, monkeypatch
):
    # a process started with MKL_CBWR set trains itself (no child), on the CPU, then moves
    # the model where it was asked
    import prune_env.zoo as zoo

    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")  # (MKL itself started without it here)
    monkeypatch.setattr(zoo, "train_in_child", None)  # calling it would fail
    torch.manual_seed(99)
    model, meta = _base(data, "portable", device="meta")
    assert meta["device"] == "cpu" and meta["numerics"]["mode"] == "portable"
    assert meta["numerics"]["threads"] == 1 and meta["numerics"]["onednn"] is False
    assert next(model.parameters()).device.type == "meta"


def test_numerics_mode_restores_threads_and_onednn(monkeypatch):
    monkeypatch.delenv("MKL_CBWR", raising=False)
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    with pytest.raises(RuntimeError, match="MKL_CBWR"), numerics_mode("portable"):
        pass
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")  # as if this process had started with it
    with numerics_mode("portable") as mode:
        assert torch.get_num_threads() == 1 and not torch.backends.mkldnn.enabled
        assert mode["threads"] == 1 and mode["onednn"] is False
    assert torch.get_num_threads() == threads
    assert torch.backends.mkldnn.enabled == onednn
    with pytest.raises(KeyError), numerics_mode("portable"):  # restored after an error too
        raise KeyError("x")
    assert torch.get_num_threads() == threads
    assert torch.backends.mkldnn.enabled == onednn
