"""results_table's per-cell question: is ppo_lag's pruned model better than the best other?"""

import pytest

from benchmarks.results_table import compare_candidate, comparison_text


def _rows(method, accs, feasible=True):
    return [
        {"method": method, "seed": s, "test_accuracy": a, "feasible": feasible}
        for s, a in enumerate(accs)
    ]


def test_the_best_feasible_other_method_is_compared_paired_by_seed():
    group = [
        *_rows("ppo_lag", [0.71, 0.72, 0.73]),
        *_rows("uniform", [0.60, 0.61, 0.62]),
        *_rows("magnitude_global", [0.70, 0.70, 0.70]),
        *_rows("random_search", [0.90, 0.90, 0.90], feasible=False),  # over budget: excluded
    ]
    result = compare_candidate(group)
    assert result["best_other"] == "magnitude_global"
    d = result["difference"]
    # differences 0.01, 0.02, 0.03: with 3 seeds the interval spans them (test_statistics)
    assert d["mean"] == pytest.approx(0.02)
    assert d["low"] == pytest.approx(0.01)
    assert d["high"] == pytest.approx(0.03)
    assert result["verdict"] == "better" and result["candidate_feasible"] == "3/3"
    text = comparison_text(result)
    assert "+2.00 points" in text and "[+1.00, +3.00]" in text and "**better**" in text


def test_overlapping_results_are_not_called_a_difference():
    group = [*_rows("ppo_lag", [0.70, 0.66, 0.71]), *_rows("uniform", [0.69, 0.69, 0.69])]
    result = compare_candidate(group)
    assert result["difference"]["low"] < 0 < result["difference"]["high"]
    assert result["verdict"] == "not distinguishable"


def test_seeds_only_one_method_has_are_left_out_and_said():
    group = [*_rows("ppo_lag", [0.71, 0.72, 0.73]), *_rows("uniform", [0.60, 0.61])]
    result = compare_candidate(group)
    assert result["seeds"] == [0, 1] and result["seeds_left_out"] == [2]
    assert result["difference"]["n"] == 2
    assert "seeds left out: [2]" in comparison_text(result)


def test_no_feasible_other_method_means_no_comparison():
    group = [*_rows("ppo_lag", [0.71]), *_rows("uniform", [0.60], feasible=False)]
    assert compare_candidate(group)["best_other"] is None
    assert compare_candidate(_rows("uniform", [0.6])) == {}


def test_an_over_budget_candidate_gets_no_verdict():
    group = [
        *_rows("ppo_lag", [0.71, 0.72]),
        *_rows("ppo_lag", [0.80], feasible=False),
        *_rows("uniform", [0.60, 0.61, 0.62]),
    ]
    group[2]["seed"] = 2
    result = compare_candidate(group)
    assert result["candidate_feasible"] == "2/3"
    assert result["verdict"] == "over budget on 1 seed(s)"


def test_the_best_other_method_covers_the_candidates_seeds():
    group = [
        *_rows("ppo_lag", [0.71, 0.72, 0.73]),
        *_rows("uniform", [0.60, 0.61, 0.62]),
        *_rows("random_search", [0.95]),  # one seed only: not the comparison of three seeds
    ]
    result = compare_candidate(group)
    assert result["best_other"] == "uniform" and result["seeds"] == [0, 1, 2]


def test_the_papers_search_protocol_in_images_for_a_network():
    from benchmarks.results_table import paper_protocol

    # VGG16 has 13 decision units: 40,000 // 13 = 3076 episodes of 20,000 reward images,
    # plus 32 or 128 fine-tuning steps of 128 images each
    assert paper_protocol(13) == {
        0: 3076 * 20_000,
        32: 3076 * (20_000 + 32 * 128),
        128: 3076 * (20_000 + 128 * 128),
    }


def test_an_episode_has_one_step_per_decision_unit_whatever_the_number_of_envs():
    from benchmarks.results_table import decisions_per_episode

    # 2 vectorised envs: the first logged episode ends at env step 2 x 12, not 12
    curves = {"ppo_lag": [[24, 0.5, 0.3], [48, 0.6, 0.2]]}
    report = {"pruned": {"keep_ratios": [0.5] * 12}}
    assert decisions_per_episode(report, {"n_envs": 2}, curves) == 12
    # a report without keep ratios falls back on its own run's first episode over n_envs
    bare = {"algo": "ppo_lag", "pruned": {}}
    assert decisions_per_episode(bare, {"n_envs": 2}, curves) == 12
    assert decisions_per_episode(bare, {"n_envs": 1}, {"ppo_lag": [[13, 0, 0]]}) == 13
    # never on a compared method's curve (one env, another run)
    assert decisions_per_episode(bare, {"n_envs": 2}, {"ppo_lag": [], "amc": [[12, 0, 0]]}) is None
    assert decisions_per_episode(bare, {}, {}) is None


def test_rows_from_bases_of_several_sessions_report_each_drop_from_its_own_base():
    from benchmarks.results_table import _drop, base_text

    group = [
        {"base_weights_sha1": "a", "base_test_accuracy": 0.80, "test_accuracy": 0.75},
        {"base_weights_sha1": "b", "base_test_accuracy": 0.84, "test_accuracy": 0.83},
    ]
    assert [_drop(r) for r in group] == pytest.approx([-0.05, -0.01])
    text = base_text(group)
    assert text.startswith("Base models: 2") and "82.00 ± 2.00%" in text
    assert base_text(group[:1]) == "Base model: test accuracy 80.00%"
    assert _drop({"test_accuracy": None, "base_test_accuracy": 0.8}) is None


def test_the_base_latency_is_summarised_over_the_seeds_not_taken_from_the_first_row():
    from benchmarks.results_table import base_latency_text

    group = [  # every method of a seed carries that seed's timing of the base
        {"seed": s, "method": m, "base_latency_ms_sweep": t}
        for s, t in [(0, 14.0), (1, 16.0), (2, 18.0)]
        for m in ("ppo_lag", "uniform")
    ]
    assert base_latency_text(group) == "latency 16.00 ± 1.63 ms (over 3 seeds' timings)"
    assert base_latency_text(group[:2]) == "latency 14.00 ms"
    # a --latency re-timing replaces the sweep's
    retimed = [{**r, "base_latency_ms": 10.0} for r in group]
    assert base_latency_text(retimed) == "latency 10.00 ± 0.00 ms (over 3 seeds' timings)"


def test_cells_of_the_same_budget_but_another_cost_get_their_own_plots(tmp_path, monkeypatch):
    import benchmarks.results_table as rt

    drawn = {}
    monkeypatch.setattr(rt, "plot_learning_curves", lambda c, b, path, title: drawn.update(
        {path.name: (title, {m: len(v) for m, v in c.items()})}))  # fmt: skip
    monkeypatch.setattr(rt, "plot_keep_ratios", lambda s, layers, path, title: drawn.update(
        {path.name: (title, sorted(s))}))  # fmt: skip

    def cell(cost, seed, method):
        return {
            "granularity": "channel", "cost": cost, "budget": 0.3, "seed": seed,
            "report": {"env": "VGG16Prune-v0", "pruned": {"layers": ["a", "b"]}},
            "curves": {method: [[1, 0.5, 0.4]]},
            "compare": [{"method": method, "keep_ratios": [0.5, 0.5]}],
        }  # fmt: skip

    rt.plots(
        [cell("params", 0, "ppo_lag"), cell("flops", 0, "amc"), cell("flops", 1, "amc")], tmp_path
    )
    assert drawn["curves_channel_b0.3.png"] == (
        "VGG16Prune-v0, channel, params budget 0.3",
        {"ppo_lag": 1},
    )
    assert drawn["curves_channel_flops_b0.3.png"] == (
        "VGG16Prune-v0, channel, flops budget 0.3",
        {"amc": 2},
    )  # its two seeds, not the params cell
    assert drawn["keep_ratios_channel_flops_b0.3.png"] == (
        "VGG16Prune-v0, channel, flops budget 0.3, seed 0",
        ["amc"],
    )


def test_the_doc_block_between_the_markers_is_regenerated(tmp_path):
    from benchmarks.results_table import splice_doc

    doc = tmp_path / "results.md"
    doc.write_text(
        "intro\n<!-- results:sweep begin -->\nold table\n<!-- results:sweep end -->\nend\n"
    )
    splice_doc(doc, "sweep", "| new | table |\n")
    splice_doc(doc, "sweep", "| new | table |\n")  # idempotent
    text = doc.read_text()
    assert text.startswith("intro\n<!-- results:sweep begin -->\n") and text.endswith(
        "| new | table |\n\n<!-- results:sweep end -->\nend\n"
    )
    assert "old table" not in text and text.count("| new | table |") == 1
    with pytest.raises(SystemExit, match="needs one"):
        splice_doc(doc, "other", "x")


def test_the_best_baseline_leaves_the_other_lagrangian_agent_out():
    from benchmarks.results_table import cell_comparisons

    group = [
        *_rows("ppo_lag", [0.80, 0.81, 0.82]),
        *_rows("ppo_pid_lag", [0.81, 0.82, 0.83]),  # better than ppo_lag, but not a baseline
        *_rows("random_search", [0.70, 0.72, 0.71]),
        *_rows("uniform", [0.60, 0.61, 0.62]),
    ]
    every, baseline = cell_comparisons(group)
    assert every["best_other"] == "ppo_pid_lag" and every["verdict"] == "worse"
    assert baseline["best_other"] == "random_search" and baseline["verdict"] == "better"
    assert baseline["difference"]["mean"] == pytest.approx(0.1)
    assert "against the best baseline (random_search)" in comparison_text(baseline)
    # without the other Lagrangian agent in the cell, one question is asked
    assert len(cell_comparisons([r for r in group if r["method"] != "ppo_pid_lag"])) == 1
