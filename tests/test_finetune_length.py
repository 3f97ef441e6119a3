"""benchmarks/finetune_length.py: does a longer fine-tuning change the ranking of methods?"""

import pytest

from benchmarks.finetune_length import summarise, table


def _row(method, epochs, acc, sweep_epochs=1, sweep_acc=None):
    return {
        "cell": "c",
        "method": method,
        "epochs": epochs,
        "test_accuracy": acc,
        "finetune_s": 10.0 * epochs,
        "sweep_epochs": sweep_epochs,
        "sweep_test_accuracy": acc if sweep_acc is None else sweep_acc,
    }


def test_rankings_are_compared_with_the_longest_fine_tuning():
    rows = [
        # one epoch: ppo_lag > uniform > magnitude_global; three: magnitude first
        _row("ppo_lag", 1, 0.70), _row("uniform", 1, 0.65), _row("magnitude_global", 1, 0.60),
        _row("ppo_lag", 3, 0.74), _row("uniform", 3, 0.70), _row("magnitude_global", 3, 0.75),
        _row("tp_global", 1, 0.50),  # measured at one length only: not ranked
    ]  # fmt: skip
    cell = summarise(rows)["c"]
    assert cell["methods"] == ["magnitude_global", "ppo_lag", "uniform"]
    one, three = cell["per_length"]["1"], cell["per_length"]["3"]
    assert one["ranking"] == ["ppo_lag", "uniform", "magnitude_global"]
    assert three["ranking"] == ["magnitude_global", "ppo_lag", "uniform"]
    # pairs (ppo, uni) concordant, (ppo, mag) and (uni, mag) discordant: tau = (1 - 2) / 3
    assert one["kendall_tau_vs_longest"] == pytest.approx(-1 / 3)
    assert three["kendall_tau_vs_longest"] == pytest.approx(1.0)
    assert one["same_best_as_longest"] is False and three["same_best_as_longest"] is True
    assert one["best_other"] == "uniform"
    assert one["candidate_minus_best_other"] == pytest.approx(0.05)
    assert three["candidate_minus_best_other"] == pytest.approx(-0.01)
    assert cell["reproduces_sweep"] is True
    assert "| 1 | -0.333 | ppo_lag | +5.00 (uniform) | 10 |" in table({"c": cell})


def test_a_length_that_does_not_give_back_the_sweeps_accuracy_is_flagged():
    rows = [_row("ppo_lag", 1, 0.70, sweep_acc=0.69), _row("uniform", 1, 0.65)]
    assert summarise(rows)["c"]["reproduces_sweep"] is False


def test_a_cell_with_no_method_at_every_length_is_left_out():
    rows = [_row("ppo_lag", 1, 0.70), _row("uniform", 3, 0.65)]
    assert summarise(rows) == {}


def test_the_sweeps_own_length_taken_from_the_sweep_is_not_called_reproduced():
    rows = [
        {**_row("ppo_lag", 3, 0.74, sweep_epochs=3), "finetune_s": None, "from_sweep": True},
        {**_row("uniform", 3, 0.70, sweep_epochs=3), "finetune_s": None, "from_sweep": True},
        _row("ppo_lag", 1, 0.70, sweep_epochs=3, sweep_acc=0.74),
        _row("uniform", 1, 0.65, sweep_epochs=3, sweep_acc=0.70),
    ]
    cell = summarise(rows)["c"]
    assert cell["reproduces_sweep"] is None
    assert cell["per_length"]["3"]["finetune_s"] is None
    assert cell["per_length"]["1"]["finetune_s"] == 10.0
    text = table({"c": cell})
    assert "| 3 | 1.000 | ppo_lag | +4.00 (uniform) | (sweep) |" in text
    assert "taken from the sweep's compare.json" in text
