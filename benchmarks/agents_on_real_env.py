"""Does the learned policy keep the budget on the real env, with the job's search length?

    python benchmarks/agents_on_real_env.py --out benchmarks/results/agents_on_real_env
    python benchmarks/agents_on_real_env.py --envs VGG16Prune-v0 --budgets params:0.1 \\
        --algos ppo_pid_lag --seeds 1 --out /tmp/probe                       # a probe

Each run is the whole job, ``prune-train --env ENV --algo ALGO --cost COST --budget B --seed S``
(the ``quick`` task unless ``--preset`` says otherwise: its base model, reward split and
search length), with its run folder inside the cell's folder
``OUT/runs/ENV__ALGO__COSTB__sS__PRESET/``. A cell whose run has a ``report.json`` is skipped;
an interrupted one resumes from its search checkpoint (``--resume``; a run stopped before its
first checkpoint starts again in a new run folder). Ctrl-C or ``kill`` of this script is passed
on to the job, which checkpoints before it exits.

The check (per algorithm, over every env, budget and seed): the final policy, the
deterministic episode of the learned policy, is feasible and uses >= 0.85x the budget in at
least 10 of 12 runs (the same share of any other number of runs). ``OUT/table.md`` holds each
run's final-policy line from its report.md, and the verdict; ``OUT/reports/`` a copy of each
run's ``config.json``, ``report.json`` and ``report.md`` (the run folders hold checkpoints and
are not committed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MIN_BUDGET_USE = 0.85  # the final policy uses at least this share of the budget ...
RUNS_SHARE = 10 / 12  # ... and is feasible, in at least this share of an algorithm's runs
ROOT = Path(__file__).resolve().parents[1]


def run_name(env: str, algo: str, cost: str, budget: float, seed: int, preset: str) -> str:
    """The cell's folder name (the job's own run folder is made inside it)."""
    return f"{env}__{algo}__{cost}{budget:g}__s{seed}__{preset}"


def finished_run(cell: Path) -> Path | None:
    """The cell's complete run folder (the job's ``{env}__{algo}__{seed}__{time}``), if any."""
    done = sorted(p.parent for p in cell.glob("*/report.json"))
    return done[-1] if done else None


def run_job(cell: Path, env: str, algo: str, cost: str, budget: float, seed: int,
            preset: str) -> float:  # fmt: skip
    """One job under ``cell`` (the latest interrupted run resumed); its wall seconds."""
    command = [sys.executable, str(ROOT / "train.py"), "--env", env, "--algo", algo,
               "--cost", cost, "--budget", str(budget), "--seed", str(seed),
               "--preset", preset, "--out", str(cell), "--no-progress"]  # fmt: skip
    started = sorted(p.parents[1] for p in cell.glob("*/checkpoint/state.json"))
    if started:
        command = [sys.executable, str(ROOT / "train.py"), "--resume", str(started[-1]),
                   "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    cell.mkdir(parents=True, exist_ok=True)
    with open(cell / "driver.log", "a") as log:
        # its own session: a terminal's Ctrl-C reaches it once, through this driver
        job = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                               start_new_session=True)  # fmt: skip
        # Ctrl-C or kill of this driver reaches the job, which checkpoints and exits; then
        # this driver stops too (a re-run resumes the job).
        forward = lambda signum, _frame: job.send_signal(signum)  # noqa: E731
        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = job.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if code != 0:
        raise SystemExit(f"{cell.name}: the job exited with {code}; a re-run resumes it")
    return time.perf_counter() - start


def final_policy_line(folder: Path) -> str:
    for line in (folder / "report.md").read_text().splitlines():
        if line.startswith("- Final policy"):
            return line[2:]
    return "no final policy in report.md"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| env | algo | budget | seed | final policy (report.md) | ok |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['algo']} | {r['cost']} {r['budget']:g} | {r['seed']} | "
            f"{r['line']} | {'ok' if r['ok'] else 'no'} |"
        )
    lines.append("")
    for algo in sorted({r["algo"] for r in rows}):
        mine = [r for r in rows if r["algo"] == algo]
        ok = sum(r["ok"] for r in mine)
        verdict = "pass" if ok >= RUNS_SHARE * len(mine) - 1e-9 else "FAIL"
        lines.append(
            f"- {algo}: final policy feasible and >= {MIN_BUDGET_USE}x the budget in {ok} of "
            f"{len(mine)} runs ({verdict}: at least {RUNS_SHARE:.0%} needed)."
        )
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", default="VGG16Prune-v0,ResNet18Prune-v0")
    parser.add_argument("--algos", default="ppo_lag,ppo_pid_lag")
    parser.add_argument("--budgets", default="params:0.1,flops:0.3",
                        help="comma-separated COST:BUDGET pairs")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. seeds-1")
    parser.add_argument("--preset", default="quick", help="the job's task (prune_env.tasks)")
    parser.add_argument("--out", default="benchmarks/results/agents_on_real_env")
    args = parser.parse_args(argv)
    budgets = []
    for pair in args.budgets.split(","):
        cost, _, value = pair.partition(":")
        try:
            budgets.append((cost, float(value)))
        except ValueError:
            parser.error(f"--budgets: expected COST:BUDGET pairs, got {pair!r}")
    out = Path(args.out)
    rows = []
    for env in args.envs.split(","):
        for cost, budget in budgets:
            for algo in args.algos.split(","):
                for seed in range(args.seeds):
                    cell = out / "runs" / run_name(env, algo, cost, budget, seed, args.preset)
                    if finished_run(cell) is None:
                        seconds = run_job(cell, env, algo, cost, budget, seed, args.preset)
                        print(f"{cell.name}: {seconds:.0f} s", flush=True)
                    folder = finished_run(cell)
                    if folder is None:
                        raise RuntimeError(f"{cell}: the job ended without a report.json")
                    kept = out / "reports" / cell.name
                    kept.mkdir(parents=True, exist_ok=True)
                    for name in ("config.json", "report.json", "report.md"):
                        shutil.copyfile(folder / name, kept / name)
                    report = json.loads((folder / "report.json").read_text())
                    final = report["search"].get("final_policy") or {}
                    ok = bool(final.get("feasible")) and final["budget_use"] >= MIN_BUDGET_USE
                    rows.append(dict(env=env, algo=algo, cost=cost, budget=budget, seed=seed,
                                     line=final_policy_line(folder), ok=ok))  # fmt: skip
                    print(f"{cell.name}: {rows[-1]['line']}", flush=True)
    (out / "table.md").write_text(table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
