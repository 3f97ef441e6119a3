"""Base training resumes after an interruption: the same weights, bit for bit, as a run that
was never stopped; the per-epoch log survives; a state from another run is not used."""

import pytest
import torch

from prune_env.data import dataset_info, synthetic_split
from prune_env.models import build_model
from prune_env.numerics import state_digest
from prune_env.zoo import (
    Recipe,
    cache_path,
    get_base_model,
    split_accuracy,
    train_model,
    train_model_logged,
    training_state_path,
)

RECIPE = Recipe(epochs=3, batch_size=32, lr=0.05)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def data():
    train = synthetic_split("train", 10, 3, 32, n=192)
    return train, synthetic_split("test", 10, 3, 32, n=64), dataset_info("synthetic", train)


def _fresh():
    torch.manual_seed(0)
    return build_model("vgg11", 10, 3, 0.125)


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(data, tmp_path):
    train, test, info = data
    straight = _fresh()
    _, straight_log = train_model_logged(
        straight, train, info, RECIPE, seed=3, progress=False,
        evaluate=lambda m: split_accuracy(m, test, info),
    )  # fmt: skip

    state = tmp_path / "run.partial.pt"
    calls = []

    def stop_in_epoch_two(model):
        calls.append(1)
        if len(calls) == 2:  # epoch 2's evaluation: epoch 1's state is on disk, epoch 2's not
            raise Stop
        return split_accuracy(model, test, info)

    first = _fresh()
    with pytest.raises(Stop):
        train_model_logged(
            first, train, info, RECIPE, seed=3, progress=False, state_file=state,
            evaluate=stop_in_epoch_two,
        )  # fmt: skip
    assert torch.load(state, weights_only=True)["epoch"] == 1

    torch.manual_seed(999)  # the resumed process's RNG and initial weights must not matter
    resumed = build_model("vgg11", 10, 3, 0.125)
    _, log = train_model_logged(
        resumed, train, info, RECIPE, seed=3, progress=False, state_file=state,
        evaluate=lambda m: split_accuracy(m, test, info),
    )  # fmt: skip
    assert state_digest(resumed) == state_digest(straight)
    assert [e["epoch"] for e in log] == [1, 2, 3]
    for got, want in zip(log, straight_log, strict=True):
        assert got["train_loss"] == want["train_loss"]
        assert got["test_accuracy"] == want["test_accuracy"]
    assert log[-1]["seconds"] >= log[0]["seconds"]
    # the plain loop is the same loop: same weights without a state file or a log
    plain = _fresh()
    train_model(plain, train, info, RECIPE, seed=3, progress=False)
    assert state_digest(plain) == state_digest(straight)


def test_a_state_of_another_run_is_not_resumed(data, tmp_path):
    train, _, info = data
    state = tmp_path / "run.partial.pt"
    one_epoch = Recipe(epochs=1, batch_size=32, lr=0.05)
    train_model_logged(_fresh(), train, info, one_epoch, seed=1, progress=False, state_file=state)
    # another seed: the saved epoch must be ignored (a warning), and the run starts over
    other = _fresh()
    with pytest.warns(UserWarning, match="another run"):
        _, log = train_model_logged(
            other, train, info, RECIPE, seed=2, progress=False, state_file=state
        )
    reference = _fresh()
    train_model(reference, train, info, RECIPE, seed=2, progress=False)
    assert [e["epoch"] for e in log] == [1, 2, 3]
    assert state_digest(other) == state_digest(reference)
    state.write_bytes(b"torn")
    with pytest.warns(UserWarning, match="unreadable"):
        train_model_logged(
            _fresh(), train, info, one_epoch, seed=1, progress=False, state_file=state
        )


def test_base_training_records_each_epoch_and_cleans_up_its_state(data, home, monkeypatch):
    train, test, info = data
    import prune_env.zoo as zoo

    monkeypatch.setitem(zoo.RECIPES, "vgg11", Recipe(epochs=2, batch_size=32))
    path = cache_path("vgg11", "synthetic", 0.125, 2)
    model, meta = get_base_model("vgg11", "synthetic", info, train, test, 0.125, progress=False)
    assert [e["epoch"] for e in meta["history"]] == [1, 2]
    assert meta["test_accuracy"] == meta["history"][-1]["test_accuracy"]
    assert meta["test_accuracy"] == split_accuracy(model, test, info)
    assert path.is_file() and not training_state_path(path).exists()
    # the record survives the round trip through the checkpoint
    _, again = get_base_model("vgg11", "synthetic", info, train, test, 0.125, progress=False)
    assert again["history"] == meta["history"]


def test_base_models_script_commits_the_record_and_not_the_weights(home, tmp_path):
    import json

    from benchmarks.base_models import main

    out = tmp_path / "bases"
    assert main(["--arch", "lenet5", "--dataset", "synthetic", "--width", "1", "--epochs", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    (record,) = out.glob("*.json")
    meta = json.loads(record.read_text())
    assert record.name.startswith("lenet5-w1-synthetic-e1-default-")
    assert "state_dict" not in meta and meta["params"] > 0
    assert [e["epoch"] for e in meta["history"]] == [1]
    assert meta["test_accuracy"] == meta["history"][0]["test_accuracy"]
    assert (out / record.name.replace(".json", ".png")).is_file()


def test_an_interrupted_base_training_goes_on_from_its_last_epoch(data, tmp_path, monkeypatch):
    import prune_env.zoo as zoo

    train, test, info = data
    monkeypatch.setitem(zoo.RECIPES, "vgg11", Recipe(epochs=3, batch_size=32))

    def base():
        return get_base_model("vgg11", "synthetic", info, train, test, 0.125, progress=False)

    monkeypatch.setenv("PRUNE_ENV_HOME", str(tmp_path / "reference"))
    _, reference = base()

    monkeypatch.setenv("PRUNE_ENV_HOME", str(tmp_path / "interrupted"))
    real, calls = zoo.split_accuracy, []

    def stopped_in_epoch_two(*args):
        calls.append(1)
        if len(calls) == 2:
            raise Stop
        return real(*args)

    monkeypatch.setattr(zoo, "split_accuracy", stopped_in_epoch_two)
    with pytest.raises(Stop):
        base()
    path = cache_path("vgg11", "synthetic", 0.125, 3)
    assert not path.exists()
    assert torch.load(training_state_path(path), weights_only=True)["epoch"] == 1
    monkeypatch.setattr(zoo, "split_accuracy", real)
    _, resumed = base()  # the same call again: epochs 2 and 3 only
    assert resumed["weights_sha1"] == reference["weights_sha1"]
    assert [e["test_accuracy"] for e in resumed["history"]] == [
        e["test_accuracy"] for e in reference["history"]
    ]
    assert not training_state_path(path).exists()


def test_a_state_of_another_network_is_not_resumed(data, tmp_path):
    train, _, info = data
    state = tmp_path / "run.partial.pt"
    one_epoch = Recipe(epochs=1, batch_size=32, lr=0.05)
    train_model_logged(_fresh(), train, info, one_epoch, seed=1, progress=False, state_file=state)
    wider = build_model("vgg11", 10, 3, 0.25)
    with pytest.warns(UserWarning, match="another run"):
        # same recipe, seed and data: only the network differs
        train_model_logged(wider, train, info, one_epoch, seed=1, progress=False, state_file=state)
