"""Do the Lagrangian agents settle at any budget and in any cost units? Problems with known optima.

    python benchmarks/agents_on_problems.py --out benchmarks/results/agents_on_problems
    python benchmarks/agents_on_problems.py --problems concave_linear --budgets 0.1 \\
        --units 1,20 --seeds 2 --out /tmp/probe                               # a probe

Each cell is one (problem, budget, cost unit, algorithm, seed), run with the registry's
defaults (only what ``--algo-kwargs`` says is changed) on a problem of ``agents.problems``:
allocations shaped like pruning whose constrained optimum is known exactly. A unit ``u``
multiplies every cost and the limit by ``u`` (the same problem in other units). Per cell: the
deterministic policy's episode (reward as a share of the optimum, cost as a multiple of the
limit), the violation rate per quarter of the run, lambda at the end.

The checks (per problem, budget, unit and algorithm, over the seeds): the deterministic
policy's cost <= 1.02x the limit and its reward >= 95% of the optimum in at least 4 of 5
seeds; the mean last-quarter violation rate <= 25%.

Finished cells are stored in ``OUT/cells/`` and skipped by a re-run; ``--jobs`` runs cells in
parallel processes (one torch thread each). ``OUT/summary.json`` and ``OUT/table.md`` hold
the summary.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

COST_TOLERANCE = 1.02  # the deterministic policy's cost <= 1.02x the limit
REWARD_SHARE = 0.95  # ... and its reward >= 95% of the optimum
SEEDS_SHARE = 0.8  # in at least 4 of 5 seeds
LAST_QUARTER_MAX_VIOLATION = 0.25


def cell_name(problem: str, budget: float, unit: float, algo: str, seed: int,
              algo_kwargs: dict[str, Any] | None = None) -> str:  # fmt: skip
    """The cell's file name; changed arguments of the algorithm get a digest of their own."""
    name = f"{problem}__b{budget:g}__u{unit:g}__{algo}__s{seed}"
    if algo_kwargs:
        digest = hashlib.sha1(json.dumps(algo_kwargs, sort_keys=True).encode()).hexdigest()
        name += f"__k{digest[:8]}"
    return name


def run_cell(problem: str, budget: float, unit: float, algo: str, seed: int, steps: int,
             algo_kwargs: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    import torch

    torch.set_num_threads(1)
    from agents import registry
    from agents.problems import make_problem
    from agents.recording import violation_rate_per_quarter

    env = make_problem(problem, budget=budget, cost_scale=unit)
    x_opt, reward_opt, _ = env.optimum()
    kwargs = {"device": "cpu", **algo_kwargs}
    start = time.perf_counter()
    result = registry.run(algo, env, total_timesteps=steps, seed=seed, **kwargs)
    seconds = time.perf_counter() - start
    # the deterministic policy's episode, on the env as the agent sees it
    wrapped = registry.wrapped_env(algo, make_problem(problem, budget=budget, cost_scale=unit))
    obs, _ = wrapped.reset(seed=seed)
    reward = cost = 0.0
    done = False
    while not done:
        action, _ = result.agent.predict(obs, deterministic=True)
        obs, r, terminated, truncated, info = wrapped.step(action)
        reward, cost, done = reward + r, cost + info["cost"], terminated or truncated
    episodes = result.episodes
    lagrange = getattr(result.agent, "lambdas", None)
    return {
        "problem": problem, "budget": budget, "unit": unit, "algo": algo, "seed": seed,
        "steps": steps, "algo_kwargs": algo_kwargs, "seconds": seconds,
        "episodes": len(episodes), "env_steps": result.env_steps,
        "optimum": {"reward": reward_opt, "x": x_opt.tolist()},
        "final": {
            "reward": reward, "reward_share": reward / reward_opt,
            "cost": cost, "cost_ratio": cost / env.cost_limit, "keep": info.get("keep_ratios"),
        },
        "violation_rate_per_quarter": violation_rate_per_quarter(
            [e.feasible for e in episodes], [e.env_steps for e in episodes],
            max(result.env_steps, steps),
        ),
        "lambda": None if lagrange is None else [float(v) for v in lagrange],
        "deciles": _deciles(episodes, max(result.env_steps, steps), env.cost_limit, reward_opt),
    }  # fmt: skip


def _deciles(episodes: list, total: int, limit: float, reward_opt: float) -> dict[str, list]:
    """Per tenth of the run: the sampled episodes' mean cost / limit, mean reward / optimum
    and violation rate (how the run got where it ended)."""
    out: dict[str, list] = {"cost_ratio": [], "reward_share": [], "violation_rate": []}
    for k in range(10):
        inside = [e for e in episodes if k * total / 10 < e.env_steps <= (k + 1) * total / 10]
        if not inside:
            for values in out.values():
                values.append(None)
            continue
        out["cost_ratio"].append(round(float(np.mean([e.cost for e in inside])) / limit, 4))
        out["reward_share"].append(
            round(float(np.mean([e.reward for e in inside])) / reward_opt, 4)
        )
        out["violation_rate"].append(round(float(np.mean([not e.feasible for e in inside])), 4))
    return out


def passes(cell: dict[str, Any]) -> bool:
    final = cell["final"]
    return final["cost_ratio"] <= COST_TOLERANCE and final["reward_share"] >= REWARD_SHARE


def summarise(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (problem, budget, unit, algorithm) over its seeds, with the checks."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["problem"], c["budget"], c["unit"], c["algo"]), []).append(c)
    rows = []
    for (problem, budget, unit, algo), group in sorted(groups.items()):
        last = [c["violation_rate_per_quarter"][3] for c in group]
        last_mean = float(np.nanmean(np.array(last, dtype=float)))
        n_pass = sum(passes(c) for c in group)
        rows.append({
            "problem": problem, "budget": budget, "unit": unit, "algo": algo,
            "seeds": len(group), "seeds_passing": n_pass,
            "reward_share": [round(c["final"]["reward_share"], 4) for c in group],
            "cost_ratio": [round(c["final"]["cost_ratio"], 4) for c in group],
            "last_quarter_violation": last_mean,
            "seconds": float(np.mean([c["seconds"] for c in group])),
            "ok": bool(n_pass >= SEEDS_SHARE * len(group)
                       and last_mean <= LAST_QUARTER_MAX_VIOLATION),
        })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| problem | budget | unit | algo | seeds passing | reward / optimum | cost / limit | "
        "last-quarter violations | s per cell | check |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = f"{min(r['reward_share']):.3f}-{max(r['reward_share']):.3f}"
        ratio = f"{min(r['cost_ratio']):.3f}-{max(r['cost_ratio']):.3f}"
        lines.append(
            f"| {r['problem']} | {r['budget']:g} | {r['unit']:g} | {r['algo']} | "
            f"{r['seeds_passing']}/{r['seeds']} | {share} | {ratio} | "
            f"{100 * r['last_quarter_violation']:.0f}% | {r['seconds']:.0f} | "
            f"{'ok' if r['ok'] else 'FAIL'} |"
        )
    ok = sum(r["ok"] for r in rows)
    lines += [
        "",
        f"{ok} of {len(rows)} rows pass: the deterministic policy's cost <= {COST_TOLERANCE}x "
        f"the limit and its reward >= {REWARD_SHARE:.0%} of the optimum in >= "
        f"{SEEDS_SHARE:.0%} of the seeds, mean last-quarter violation rate <= "
        f"{LAST_QUARTER_MAX_VIOLATION:.0%}.",
        "",
    ]
    return "\n".join(lines)


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", default="concave_linear,log_quadratic",
                        help="comma-separated names of agents.problems.PROBLEMS")  # fmt: skip
    parser.add_argument("--algos", default="ppo_lag,ppo_pid_lag",
                        help="comma-separated registry names")  # fmt: skip
    parser.add_argument("--budgets", default="0.05,0.1,0.25,0.5", help="comma-separated budgets")
    parser.add_argument("--units", default="1,20,0.05",
                        help="comma-separated cost units (cost and limit multiplied)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. seeds-1")
    parser.add_argument("--steps", type=int, default=60_000, help="env steps per cell")
    parser.add_argument("--algo-kwargs", default="{}", help="JSON {algo: {argument: value}}")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="cells run at once")  # fmt: skip
    parser.add_argument("--out", default="benchmarks/results/agents_on_problems")
    args = parser.parse_args(argv)
    from agents import registry
    from agents.problems import PROBLEMS

    problems = [p for p in args.problems.split(",") if p]
    algos = [a for a in args.algos.split(",") if a]
    algo_kwargs = json.loads(args.algo_kwargs)
    for name in problems:
        if name not in PROBLEMS:
            parser.error(f"--problems: unknown {name!r}; expected some of {sorted(PROBLEMS)}")
    for algo in [*algos, *algo_kwargs]:
        registry.get(algo)  # unknown names fail here, before any run
    out = Path(args.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    todo = []
    for problem in problems:
        for budget in _floats(args.budgets):
            for unit in _floats(args.units):
                for algo in algos:
                    for seed in range(args.seeds):
                        name = cell_name(problem, budget, unit, algo, seed,
                                         algo_kwargs.get(algo))  # fmt: skip
                        path = out / "cells" / f"{name}.json"
                        if not path.is_file():
                            cell = (problem, budget, unit, algo, seed, args.steps,
                                    algo_kwargs.get(algo, {}))  # fmt: skip
                            todo.append((path, cell))
    print(f"{len(todo)} cells to run ({args.jobs} at once)", flush=True)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_cell, *cell): path for path, cell in todo}
        for future, path in futures.items():
            result = future.result()
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(path)  # atomic: an interrupted run leaves no half cell
            final = result["final"]
            print(f"{path.stem}: {result['seconds']:.0f} s, reward {final['reward_share']:.3f} "
                  f"of the optimum at {final['cost_ratio']:.3f}x the limit, last-quarter "
                  f"violations {result['violation_rate_per_quarter'][3]}", flush=True)  # fmt: skip
    cells = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    grid = (set(problems), set(_floats(args.budgets)), set(_floats(args.units)), set(algos))
    cells = [c for c in cells if c["steps"] == args.steps and c["seed"] < args.seeds
             and (c["problem"], c["budget"], c["unit"], c["algo"]) in itertools.product(*grid)
             and c["algo_kwargs"] == algo_kwargs.get(c["algo"], {})]  # fmt: skip
    rows = summarise(cells)
    (out / "summary.json").write_text(json.dumps({"rows": rows}, indent=1))
    text = table(rows)
    (out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
