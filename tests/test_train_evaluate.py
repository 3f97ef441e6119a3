"""train.py and evaluate.py end to end, as subprocesses, on a tiny synthetic configuration."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from prune_pipeline.pruned import load_pruned

ROOT = Path(__file__).resolve().parents[1]
TINY_RUN = [
    "--env", "VGG11Prune-v0", "--dataset", "synthetic", "--width-mult", "0.125",
    "--base-epochs", "1", "--reward-size", "64", "--finetune-epochs", "1", "--test-size", "256",
    "--device", "cpu", "--no-progress",
]  # fmt: skip
REPORT_FIELDS = {"test_accuracy", "params", "flops", "latency_ms"}


def _run(script, *args, home, check=True, timeout=300):
    env = {**os.environ, "PRUNE_ENV_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _train(tmp_path, home, *extra):
    out = tmp_path / "runs"
    _run("train.py", *TINY_RUN, "--out", out, *extra, home=home)
    (run_dir,) = out.iterdir()
    return run_dir


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    home = tmp / "home"
    algo_kwargs = json.dumps({"n_steps": 32, "batch_size": 16})
    # ppo_lag explicitly: the reproduction sweep (results_table.py) runs it
    run_dir = _train(tmp, home, "--algo", "ppo_lag", "--total-timesteps", "96", "--algo-kwargs",
                     algo_kwargs, "--save-pickle")  # fmt: skip
    return run_dir, home


def test_train_writes_every_artifact(finished_run):
    run_dir, _ = finished_run
    assert run_dir.name.startswith("VGG11Prune-v0__ppo_lag__0__")
    for name in (
        "config.json", "agent.zip", "pruned_model.pt", "pruned.safetensors", "pruned_arch.json",
        "report.json", "report.md", "episodes.jsonl", "training.png", "keep_ratios.png",
        "accuracy_vs_cost.png",
    ):  # fmt: skip
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").rglob("events.out.tfevents.*"))
    assert not (run_dir / "checkpoint").exists()  # removed once the run is complete
    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["base"]) >= REPORT_FIELDS and set(report["pruned"]) >= REPORT_FIELDS
    pruned, base = report["pruned"], report["base"]
    assert set(report["stages"]) == {"base_model", "search", "extraction", "finetune", "test"}
    assert len(pruned["keep_ratios"]) == len(pruned["layers"]) == 8
    assert pruned["constraint_satisfied"] == (pruned["params"] / base["params"] <= 0.1 + 1e-12)
    assert report["search"]["env_steps"] == 96
    episodes = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == report["search"]["episodes"] == 96 // 8
    assert report["selection"]["chosen"] in [c["source"] for c in report["selection"]["candidates"]]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["total_timesteps"] == 96 and config["width_mult"] == 0.125
    assert "| test accuracy |" in (run_dir / "report.md").read_text()
    # the learned policy's own episode, and the violation rate quarter by quarter
    final = report["search"]["final_policy"]
    (candidate,) = [c for c in report["selection"]["candidates"] if "deterministic" in c["source"]]
    assert final["cost"] == candidate["cost"] and final["feasible"] == candidate["feasible"]
    assert final["budget_use"] == pytest.approx(final["cost"] / 0.1)
    quarters = report["search"]["violation_rate_per_quarter"]
    by_quarter = [[not e["feasible"] for e in episodes if q * 24 < e["env_steps"] <= (q + 1) * 24]
                  for q in range(4)]  # fmt: skip
    assert quarters == pytest.approx([sum(b) / len(b) for b in by_quarter])
    md = (run_dir / "report.md").read_text()
    assert "Final policy (its deterministic episode)" in md and "per quarter" in md


def test_pruned_model_loads_in_both_forms_and_is_smaller(finished_run):
    run_dir, _ = finished_run
    report = json.loads((run_dir / "report.json").read_text())
    safe = load_pruned(run_dir)
    whole = torch.load(run_dir / "pruned_model.pt", weights_only=False)
    n_params = sum(p.numel() for p in safe.parameters())
    assert n_params == report["pruned"]["params"] < report["base"]["params"]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(safe(x), whole.eval()(x))
    arch = json.loads((run_dir / "pruned_arch.json").read_text())
    convs = [m for m in safe.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == arch["kept"]


def test_evaluate_remeasures_what_the_report_says(finished_run):
    run_dir, home = finished_run
    out = _run("evaluate.py", run_dir, "--no-progress", home=home).stdout
    assert "matches the report" in out
    result = json.loads((run_dir / "evaluation.json").read_text())
    report = json.loads((run_dir / "report.json").read_text())
    assert result["matches_report"] is True
    assert result["pruned"]["test_accuracy"] == report["pruned"]["test_accuracy"]
    assert result["pruned"]["params"] == report["pruned"]["params"]
    assert result["pruned"]["flops"] == report["pruned"]["flops"]
    # the job's verdict (prune_env.constraints.final_verdict on the same record)
    assert result["pruned"]["constraint_satisfied"] == report["pruned"]["constraint_satisfied"]


def test_evaluate_reads_the_searchs_verdict_from_the_run(finished_run, tmp_path):
    run_dir, home = finished_run
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    report = json.loads((copy / "report.json").read_text())
    selection = report["selection"]
    # the search judged the chosen network infeasible: a recount within the budget (every
    # network meets a budget of 1) does not overturn that
    for candidate in selection["candidates"]:
        candidate["feasible"] = candidate["source"] != selection["chosen"]
    (copy / "report.json").write_text(json.dumps(report))
    config = json.loads((copy / "config.json").read_text())
    config["config"]["budget"] = 1.0
    (copy / "config.json").write_text(json.dumps(config))
    out = _run("evaluate.py", copy, "--no-progress", home=home).stdout
    assert "NOT satisfied" in out
    result = json.loads((copy / "evaluation.json").read_text())
    assert result["pruned"]["constraint_satisfied"] is False and result["pruned"]["cost"] < 1
    (copy / "report.json").unlink()  # no record of the search's verdict: a clear refusal
    proc = _run("evaluate.py", copy, "--no-progress", home=home, check=False)
    assert proc.returncode != 0 and "the run did not finish" in proc.stderr


def test_evaluate_compares_methods_and_rolls_the_agent_out(finished_run):
    run_dir, home = finished_run
    _run("evaluate.py", run_dir, "--compare", "uniform,magnitude_global,tp_global",
         "--no-progress", home=home)  # fmt: skip
    rows = json.loads((run_dir / "compare.json").read_text())
    assert [r["method"] for r in rows] == [
        "ppo_lag (this run)", "uniform", "magnitude_global", "tp_global", "base (unpruned)",
    ]  # fmt: skip
    for row in rows[1:4]:
        assert row["feasible"] and row["params_kept"] <= 0.1 + 1e-12
        assert 0 <= row["test_accuracy"] <= 1
    # torch-pruning's global pruner keeps the channels of the env's global threshold
    assert rows[3]["params_kept"] == rows[2]["params_kept"]
    assert (run_dir / "compare.csv").read_text().count("\n") == len(rows) + 1
    assert (run_dir / "compare.png").is_file() and (run_dir / "keep_ratios_compare.png").is_file()

    _run("evaluate.py", run_dir, "--agent", run_dir / "agent.zip", "--episodes", "4",
         "--no-progress", home=home)  # fmt: skip
    result = json.loads((run_dir / "agent_eval.json").read_text())
    assert result["episodes"] == 4 and 0 <= result["violation_rate"] <= 1
    assert result["cost_limit"] == 0.1 and 0 < result["cost_mean"] <= 1


def test_bad_options_fail_with_the_valid_values(tmp_path):
    proc = _run("train.py", "--algo", "ppo_lagrange", home=tmp_path, check=False)
    assert proc.returncode != 0 and "expected one of" in proc.stderr and "ppo_lag" in proc.stderr
    proc = _run("train.py", "--env", "VGG17Prune-v0", home=tmp_path, check=False)
    assert proc.returncode != 0 and "VGG16Prune-v0" in proc.stderr
    proc = _run("evaluate.py", tmp_path, home=tmp_path, check=False)
    assert proc.returncode != 0 and "not a run folder" in proc.stderr


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path):
    home, out = tmp_path / "home", tmp_path / "runs"
    env = {**os.environ, "PRUNE_ENV_HOME": str(home), "PYTHONPATH": str(ROOT)}
    total = 640
    args = [
        *TINY_RUN, "--out", str(out), "--total-timesteps", str(total), "--checkpoint-every", "0",
        "--algo-kwargs", json.dumps({"n_steps": 32, "batch_size": 16}),
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    state_file = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(out.glob("*/checkpoint/state.json"))
        if found and json.loads(found[0].read_text())["num_timesteps"] >= 160:
            state_file = found[0]
            break
        time.sleep(0.05)
    assert state_file is not None, f"no checkpoint before the run ended: {proc.stderr.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = state_file.parents[1]
    assert not (run_dir / "report.json").exists()
    killed_at = json.loads(state_file.read_text())["num_timesteps"]
    assert 160 <= killed_at < total

    resumed = _run("train.py", "--resume", run_dir, "--no-progress", home=home)
    assert f"resumed the search at step {killed_at:,}" in resumed.stdout
    report = json.loads((run_dir / "report.json").read_text())
    assert report["search"]["resumes"] == 1
    assert report["search"]["env_steps"] == total
    episodes = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    steps = [e["env_steps"] for e in episodes]
    assert steps == sorted(steps) and [e["index"] for e in episodes] == list(range(len(episodes)))
    # The episodes before the kill are kept; the unfinished one after the checkpoint is redone.
    assert sum(s <= killed_at for s in steps) == killed_at // 8
    assert len(episodes) == total // 8
    assert load_pruned(run_dir) is not None
    again = _run("train.py", "--resume", run_dir, "--no-progress", home=home)
    assert "is complete" in again.stdout


def test_train_with_two_env_copies_records_both(tmp_path):
    # sub-process copies (the default vec env): the job must also exit once it is done (a
    # worker ignoring SIGTERM made multiprocessing's exit hang; _run's timeout catches that)
    algo_kwargs = json.dumps({"n_steps": 32, "batch_size": 16})
    run_dir = _train(tmp_path, tmp_path / "home", "--total-timesteps", "128", "--n-envs", "2",
                     "--vec-env", "subproc", "--algo-kwargs", algo_kwargs)  # fmt: skip
    report = json.loads((run_dir / "report.json").read_text())
    assert report["search"]["env_steps"] == 128 and report["search"]["episodes"] == 16
    sources = [c["source"] for c in report["selection"]["candidates"]]
    assert sources[0] == "the deterministic policy's episode" and len(sources) == 2
    assert report["pruned"]["constraint_satisfied"] == any(
        c["feasible"] for c in report["selection"]["candidates"]
    )


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_results_table_reads_sweeps_and_committed_cells_and_refuses_mixed_recipes(
    finished_run, tmp_path
):
    run_dir, home = finished_run
    sweep = tmp_path / "sweep"
    cell = sweep / "VGG11Prune-v0_channel_b0.1_s0"
    shutil.copytree(run_dir, cell / run_dir.name)
    run = cell / run_dir.name
    _run("evaluate.py", run, "--compare", "random_search,uniform", "--no-progress", home=home)
    searched = [json.loads(x) for x in (run / "compare_episodes/random_search.jsonl").open()]
    assert searched[-1]["env_steps"] == 96 and len(searched) == 96 // 8
    (cell / "done").touch()
    # The same cell again as seed 1: two seeds of identical numbers have std 0.
    twin = sweep / "VGG11Prune-v0_channel_b0.1_s1"
    shutil.copytree(cell, twin)
    _edit_json(twin / run_dir.name / "config.json", lambda c: c["config"].update(seed=1))

    out = tmp_path / "table"
    script = "benchmarks/results_table.py"
    _run(script, sweep, "--out", out, "--latency", "--rounds", "2", home=home)
    rows = json.loads((out / "rows.json").read_text())
    compare = {r["method"]: r for r in json.loads((run / "compare.json").read_text())}
    assert [r["method"] for r in rows] == ["ppo_lag", "random_search", "uniform"] * 2
    assert [r["seed"] for r in rows] == [0, 0, 0, 1, 1, 1]
    for row in rows:
        source = compare["ppo_lag (this run)" if row["method"] == "ppo_lag" else row["method"]]
        assert row["test_accuracy"] == source["test_accuracy"]
        assert row["params_kept"] == source["params_kept"]
        assert row["latency_ms"] > 0 and row["base_latency_ms"] > 0
    table = (out / "table.md").read_text()
    assert "### channel granularity, params budget 0.1" in table
    uniform = next(line for line in table.splitlines() if line.startswith("| uniform |"))
    acc = 100 * compare["uniform"]["test_accuracy"]
    assert "| 2 | " in uniform and f"{acc:.2f} ± 0.00" in uniform
    packed = (out / "cells" / cell.name / "curves.json.gz").read_bytes()
    curves = json.loads(gzip.decompress(packed))
    assert set(curves) == {"ppo_lag", "random_search"}  # uniform searches nothing
    assert curves["random_search"][-1][0] == 96
    assert (out / "curves_channel_b0.1.png").is_file()
    assert (out / "keep_ratios_channel_b0.1.png").is_file()
    # ppo_lag against the best feasible other method, paired by seed: the twin seeds agree,
    # so the interval is a point
    (comparison,) = json.loads((out / "comparison.json").read_text())
    assert comparison["cost"] == "params" and comparison["seeds"] == [0, 1]
    d = comparison["difference"]
    assert d["low"] == pytest.approx(d["high"]) and d["n"] == 2
    assert f"against the best other method ({comparison['best_other']})" in table

    searched_row = next(r for r in rows if r["method"] == "random_search")
    assert searched_row["images_evaluated"] > 0 and searched_row["steps_per_episode"] == 8

    # A later session reads the committed cells back: the same rows without the run folders
    again = tmp_path / "again"
    shutil.copytree(out, again)
    (again / "rows.json").unlink()
    _run(script, "--out", again, home=home)
    assert json.loads((again / "rows.json").read_text()) == [
        {k: v for k, v in r.items() if k not in ("latency_ms", "base_latency_ms")} for r in rows
    ]
    # rebuilt over its own earlier rows, the latencies --latency measured are kept
    _run(script, "--out", out, home=home)
    assert json.loads((out / "rows.json").read_text()) == rows
    refused = _run(script, "--out", again, "--latency", home=home, check=False)
    assert refused.returncode != 0 and "read back from committed files" in refused.stderr

    # Another session's base (same recipe): allowed, each seed paired on its own base
    _edit_json(twin / run_dir.name / "report.json", lambda r: r["base"].update(test_accuracy=0.5))
    _run(script, sweep, "--out", tmp_path / "two_bases", home=home)
    assert "Base models: 2" in (tmp_path / "two_bases" / "table.md").read_text()
    # Another recipe (a longer base training): refused
    _edit_json(twin / run_dir.name / "config.json", lambda c: c["config"].update(base_epochs=9))
    proc = _run(script, sweep, "--out", tmp_path / "mixed", home=home, check=False)
    assert proc.returncode != 0 and "different base recipes" in proc.stderr
