"""benchmark.py: cells, failures reported, re-runs skip finished cells, YAML validation."""

import csv
import json

import pytest

from prune_pipeline import bench as benchmark
from tests.conftest import TINY

ENV_KWARGS = json.dumps({**TINY, "width_mult": 0.125})


def _args(out, *extra):
    return [
        "--envs", "VGG11Prune-v0", "--algos", "uniform,ppo_lag", "--seeds", "2",
        "--total-timesteps", "64", "--eval-episodes", "2", "--env-kwargs", ENV_KWARGS,
        "--algo-kwargs", json.dumps({"ppo_lag": {"n_steps": 32, "batch_size": 16}}),
        "--budget", "0.3", "--out", str(out), *extra,
    ]  # fmt: skip


def test_every_cell_is_run_tabled_and_skipped_on_a_rerun(tmp_path, capsys):
    out = tmp_path / "bench"
    assert benchmark.main(_args(out)) == 0
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [(r["algo"], r["seed"]) for r in rows] == [
        ("uniform", "0"), ("uniform", "1"), ("ppo_lag", "0"), ("ppo_lag", "1"),
    ]  # fmt: skip
    for r in rows:
        assert r["status"] == "ok" and 0 <= float(r["eval_violation_rate"]) <= 1
        assert int(r["env_steps"]) == (64 if r["algo"] == "ppo_lag" else int(r["episodes"]) * 8)
    cells = {p.name: json.loads(p.read_text()) for p in (out / "cells").iterdir()}
    assert len(cells) == 4
    uniform = cells["VGG11Prune-v0__uniform__0.json"]
    assert uniform["final_feasible"] and uniform["final_cost"] <= 0.3  # feasible by design
    assert uniform["cumulative_violation"] == 0.0 and uniform["eval_violation_rate"] == 0.0
    ppo = cells["VGG11Prune-v0__ppo_lag__0.json"]
    manual = sum(max(0.0, c - 0.3) for _, _, c in ppo["curve"])
    assert ppo["cumulative_violation"] == pytest.approx(manual)
    assert ppo["episodes"] == len(ppo["curve"]) == 64 // 8
    table = (out / "table.md").read_text()
    assert "| VGG11Prune-v0 | ppo_lag | 2/2 | 0.3 |" in table
    assert (out / "curves_VGG11Prune-v0.png").is_file()

    capsys.readouterr()
    assert benchmark.main(_args(out)) == 0
    assert capsys.readouterr().out.count("done before, skipped") == 4
    assert json.loads((out / "cells" / "VGG11Prune-v0__ppo_lag__0.json").read_text()) == ppo


def test_a_failing_cell_is_reported_not_dropped(tmp_path):
    out = tmp_path / "bench"
    bad = json.dumps({"ppo_lag": {"n_steps": 32, "batch_size": 16, "lambda_lr": -1.0}})
    args = _args(out, "--algo-kwargs", bad, "--seeds", "1")
    assert benchmark.main(args) == 0
    rows = json.loads((out / "runs.json").read_text())
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["algo"] for r in failed] == ["ppo_lag"] and "lambda_lr" in failed[0]["error"]
    table = (out / "table.md").read_text()
    assert "| VGG11Prune-v0 | ppo_lag | 0/1 |" in table and "Failed cells" in table


def test_yaml_config_with_per_env_overrides_and_bad_keys(tmp_path):
    config = tmp_path / "bench.yaml"
    config.write_text(
        "envs: [VGG11Prune-v0]\nalgos: [uniform]\nseeds: 1\nbudget: 0.5\n"
        f"env_kwargs: {ENV_KWARGS}\n"
        "per_env:\n  VGG11Prune-v0: {budget: 0.2, total_timesteps: 8}\n"
        f"out: {tmp_path / 'bench'}\n"
    )
    assert benchmark.main(["--config", str(config)]) == 0
    (row,) = json.loads((tmp_path / "bench" / "runs.json").read_text())
    assert row["budget"] == 0.2 and row["total_timesteps"] == 8 and row["final_cost"] <= 0.2

    config.write_text("envs: [VGG11Prune-v0]\nalgo: [uniform]\n")
    with pytest.raises(SystemExit, match=r"unknown options \['algo'\]"):
        benchmark.main(["--config", str(config)])
    with pytest.raises(SystemExit, match="unknown algos"):
        benchmark.main(["--algos", "ppo_lagrange"])
    with pytest.raises(SystemExit, match="per_env names envs"):
        benchmark.main(["--per-env", '{"VGG19Prune-v0": {"budget": 0.2}}', "--out", str(tmp_path)])
