"""The fidelity study never mixes candidates scored on two base networks."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from benchmarks.fidelity import base_identity, check_same_base, write_base_record, write_outputs


def _env(seed: int) -> SimpleNamespace:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    return SimpleNamespace(base_model=net, base_info={"source": "/c/b.pt", "test_accuracy": 0.6})


def test_base_identity_is_a_digest_of_the_weights():
    a, b = _env(0), _env(0)
    assert base_identity(a) == base_identity(b)  # same weights, same identity
    assert base_identity(a)["checkpoint"] == "b.pt"
    with torch.no_grad():
        b.base_model[0].weight[0, 0] += 1e-6  # one weight moved: another network
    assert base_identity(a)["sha1"] != base_identity(b)["sha1"]
    with torch.no_grad():
        b.base_model[0].weight[0, 0] -= 1e-6
        b.base_model[1].running_mean += 1.0  # buffers count too
    assert base_identity(a)["sha1"] != base_identity(b)["sha1"]


def test_a_run_refuses_candidates_of_another_or_an_unrecorded_base(tmp_path: Path):
    base, other = base_identity(_env(0)), base_identity(_env(1))
    check_same_base([], base, tmp_path)  # an empty OUT takes any base
    check_same_base([{"name": "a", "base": base}], base, tmp_path)
    with pytest.raises(SystemExit, match="another base network"):
        check_same_base([{"name": "a", "base": base}, {"name": "b", "base": other}], base, tmp_path)
    with pytest.raises(SystemExit, match="unrecorded"):
        check_same_base([{"name": "old"}], base, tmp_path)  # scored before bases were recorded


def test_the_summary_refuses_two_bases(tmp_path: Path):
    base, other = base_identity(_env(0)), base_identity(_env(1))
    rows = [{"name": f"c{i}", "budget": 0.1, "base": b} for i, b in enumerate([base, other])]
    with pytest.raises(SystemExit, match="2 base networks"):
        write_outputs(tmp_path, rows, [0.1])
    assert not (tmp_path / "summary.json").exists()
    json.dumps(base)  # the record goes into each candidate's JSON


def test_the_base_record_is_written_once_without_local_paths(tmp_path: Path):
    env = _env(0)
    env.base_info.update(weights_sha1="abc", numerics={"mode": "portable", "cpu": "X"})
    write_base_record(env, base_identity(env), tmp_path)
    first = json.loads((tmp_path / "base.json").read_text())
    assert first["identity"] == base_identity(env)
    assert first["record"]["numerics"]["mode"] == "portable" and "source" not in first["record"]
    write_base_record(_env(1), base_identity(_env(1)), tmp_path)  # a resumed run keeps it
    assert json.loads((tmp_path / "base.json").read_text()) == first
