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


def _row(i: int, one: float, long: float | None, score: float, epochs: int = 5) -> dict:
    row = {
        "name": f"c{i}",
        "finetuned_test_accuracy": one,
        "variants": {"today": {"metrics": {"accuracy": score}}},
    }
    if long is not None:
        row["long_finetune"] = {"epochs": epochs, "test_accuracy": long, "seconds": 2.0 * i}
    return row


def test_the_long_fine_tune_ranks_against_its_own_subset():
    from benchmarks.fidelity import summarise_long

    # one-epoch accuracy orders the six like the long one; the reward orders them backwards
    # but for one swapped pair: 14 of 15 pairs discordant, tau = (1 - 14) / 15
    long = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    score = [0.9, 0.8, 0.7, 0.6, 0.4, 0.5]
    one = [a - 0.1 for a in long]
    one[0], one[1] = one[1], one[0]  # the one-epoch ranking swaps the two worst: tau 13/15
    rows = [_row(i, o, a, s) for i, (o, a, s) in enumerate(zip(one, long, score, strict=True))]
    rows.append(_row(9, 0.99, None, 0.0))  # not in the subset: ignored
    s = summarise_long(rows)
    assert s["candidates"] == 6 and s["epochs"] == 5
    assert s["one_epoch_accuracy"]["kendall_tau"] == pytest.approx(13 / 15)
    assert s["one_epoch_accuracy"]["gain_mean"] == pytest.approx(0.1)
    assert s["variants"]["today:accuracy"]["kendall_tau"] == pytest.approx(-13 / 15)
    assert s["seconds_per_finetune"] == pytest.approx(5.0)  # 2 * mean(0..5)
    assert summarise_long(rows[:4]) is None  # too few to rank
    mixed = [*rows[:5], _row(5, 0.1, 0.2, 0.3, epochs=3)]
    assert summarise_long(mixed) is None  # two lengths of fine-tune are not one truth


def test_the_rerank_keeps_the_best_of_the_cheap_top_by_the_costly_variant(tmp_path: Path):
    from benchmarks.fidelity import summarise

    # exactly 20 candidates: every draw of 20 is all of them, so the result is by hand
    cheap = [i / 20 for i in range(20)]  # the top 5 by today's reward: 15..19
    costly = [0.0] * 20
    costly[17], costly[3] = 0.9, 1.0  # 3 is the costly variant's best, but not in the top 5
    truth = [0.1] * 20
    truth[17], truth[3] = 0.7, 0.8
    rows = [
        {
            "finetuned_test_accuracy": truth[i],
            "variants": {
                "today": {"metrics": {"accuracy": cheap[i]}, "seconds": 0.1},
                "finetune128": {"metrics": {"accuracy": costly[i]}, "seconds": 1.0},
            },
        }
        for i in range(20)
    ]
    s = summarise(rows)
    assert s["rerank"]["top"] == 5
    assert s["rerank"]["variants"]["finetune128:accuracy"] == pytest.approx(0.7)  # kept 17
    assert s["variants"]["finetune128:accuracy"]["pick_of_20"] == pytest.approx(0.8)  # kept 3
    assert s["variants"]["today:accuracy"]["pick_of_20"] == pytest.approx(0.1)  # kept 19
