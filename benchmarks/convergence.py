"""Does the Lagrangian agent settle on the budget? Cost, lambda and the final policy over seeds.

    python benchmarks/convergence.py --out benchmarks/results/convergence_surrogate
    python benchmarks/convergence.py --budgets 0.1 --seeds 2 --steps 30000 \\
        --algo-kwargs '{"ppo_lag": {"lambda_lr": 0.1}}' --out /tmp/sweep     # a tuning probe

Each cell is one (algorithm, budget, seed), run with the registry's defaults (only what
``--algo-kwargs`` says is changed) on ``--env`` (default VGG16PruneSurrogate-v0, the quick
task's surrogate: a millisecond per step, so 60k steps take about a minute). Per cell: the
final deterministic policy's episode (cost, reward, feasible, cost / budget), the violation
rate per quarter of the search, the best feasible reward seen, the multiplier after each
rollout, and binned curves of cost and reward. random_search runs the same number of env
steps, so (episodes of a fixed length) the same number of episodes.

Finished cells are stored in ``OUT/cells/`` and skipped by a re-run; ``--jobs`` runs cells in
parallel processes (one torch thread each). ``OUT/summary.json`` and ``OUT/table.md`` hold
the summary over seeds with the acceptance checks of issue 12, ``OUT/convergence.png`` the
curves (mean and std over seeds, the budget as a dashed line).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BINS = 60  # points per curve
SETTLED_SHARE = 0.85  # "uses the budget": final cost >= 0.85 x budget
LAST_QUARTER_MAX_VIOLATION = 0.25


def cell_name(env_id: str, algo: str, budget: float, seed: int) -> str:
    return f"{env_id}__{algo}__b{budget:g}__s{seed}"


def binned(steps: np.ndarray, values: np.ndarray, total: int) -> list[float | None]:
    edges = np.linspace(0, total, BINS + 1)
    out: list[float | None] = []
    for lo, hi in itertools.pairwise(edges):
        inside = values[(steps > lo) & (steps <= hi)]
        out.append(float(inside.mean()) if len(inside) else None)
    return out


def run_cell(env_id: str, algo: str, budget: float, seed: int, steps: int,
             algo_kwargs: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    import torch

    torch.set_num_threads(1)
    import prune_env
    from agents import registry
    from agents.callbacks import SearchMonitor
    from agents.recording import rollout, violation_rate_per_quarter

    extra = {"train_base": True} if env_id in prune_env.ZOO_IDS else {}  # a real env
    env = prune_env.make(env_id, budget=budget, **extra)
    is_rl = registry.get(algo).agent_class is not None
    kwargs = {"device": "cpu", **algo_kwargs} if is_rl else dict(algo_kwargs)
    monitor = SearchMonitor(steps, None, 0.0, progress=False)
    start = time.perf_counter()
    result = registry.run(
        algo, env, total_timesteps=steps, seed=seed,
        learn_kwargs={"callback": monitor} if is_rl else None, **kwargs,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    episodes = result.episodes
    ep_steps = [e.env_steps for e in episodes]
    feasible = [e.feasible for e in episodes]
    final: dict[str, Any] | None = None
    if is_rl:
        wrapped = registry.wrapped_env(algo, env, **kwargs)
        info = rollout(result.agent, wrapped, deterministic=True)
        final = {"cost": float(info["cost"]), "reward": float(info["accuracy"]),
                 "feasible": bool(info["constraint_satisfied"]),
                 "keep_ratios": info["keep_ratios"]}  # fmt: skip
    best = result.best_feasible
    cost = np.array([e.cost for e in episodes])
    reward = np.array([e.reward for e in episodes])
    return {
        "env": env_id, "algo": algo, "budget": budget, "seed": seed, "steps": steps,
        "algo_kwargs": algo_kwargs, "episodes": len(episodes), "seconds": seconds,
        "final": final,
        "best_feasible_reward": None if best is None else float(best.reward),
        # quarters of the steps actually taken (on-policy agents round up to whole rollouts)
        "violation_rate_per_quarter": violation_rate_per_quarter(
            feasible, ep_steps, max(result.env_steps, steps)
        ),
        "env_steps": result.env_steps,
        "lambda": monitor.lambda_history,
        "curve": {
            "cost": binned(np.array(ep_steps), cost, steps),
            "reward": binned(np.array(ep_steps), reward, steps),
            "steps": np.linspace(0, steps, BINS + 1)[1:].tolist(),
        },
    }  # fmt: skip


def _mean_std(values: list[float]) -> str:
    xs = [v for v in values if v is not None and not np.isnan(v)]
    return f"{np.mean(xs):.3f} ± {np.std(xs):.3f}" if xs else "n/a"


def summarise(cells: list[dict[str, Any]], algos: list[str], budgets: list[float]) -> dict:
    """Per (algo, budget): the final policy and violation rates over seeds, and the checks."""
    rows = []
    for budget in budgets:
        search = [c for c in cells if c["algo"] == "random_search" and c["budget"] == budget]
        rs_best = [c["best_feasible_reward"] or 0.0 for c in search]
        for algo in algos:
            group = [c for c in cells if c["algo"] == algo and c["budget"] == budget]
            if not group:
                continue
            row: dict[str, Any] = {"algo": algo, "budget": budget, "seeds": len(group)}
            quarters = np.array([c["violation_rate_per_quarter"] for c in group], dtype=float)
            row["violation_rate_per_quarter"] = np.nanmean(quarters, axis=0).round(4).tolist()
            row["best_feasible_reward"] = float(np.mean([c["best_feasible_reward"] or 0.0
                                                         for c in group]))  # fmt: skip
            if group[0]["final"] is not None:
                finals = [c["final"] for c in group]
                settled = [f["feasible"] and f["cost"] >= SETTLED_SHARE * budget for f in finals]
                row.update({
                    "final_cost": [f["cost"] for f in finals],
                    "final_reward": [f["reward"] for f in finals],
                    "final_feasible": [f["feasible"] for f in finals],
                    "seeds_settled": int(sum(settled)),
                    "final_reward_mean": float(np.mean([f["reward"] for f in finals])),
                    # an over-budget final policy delivers nothing: the comparison with
                    # random search counts the feasible ones only
                    "final_reward_feasible_mean": float(np.mean(
                        [f["reward"] for f in finals if f["feasible"]] or [0.0])),
                })  # fmt: skip
                if rs_best:
                    row["random_search_best_feasible_mean"] = float(np.mean(rs_best))
                last = np.array([c["violation_rate_per_quarter"][3] for c in group], dtype=float)
                row["checks"] = {
                    f"feasible and >= {SETTLED_SHARE}x budget in >= 4 of 5 seeds": bool(
                        sum(settled) >= 0.8 * len(group)
                    ),
                    f"last-quarter violation rate <= {LAST_QUARTER_MAX_VIOLATION}": bool(
                        np.nanmean(last) <= LAST_QUARTER_MAX_VIOLATION
                    ),
                    "feasible final policies' reward >= random_search best feasible (mean)": bool(
                        rs_best and row["final_reward_feasible_mean"] >= np.mean(rs_best)
                    ),
                }
            rows.append(row)
    return {"rows": rows}


def table(summary: dict, cells: list[dict[str, Any]]) -> str:
    lines = [
        "| algo | budget | seeds | final cost | final reward | feasible & >= 0.85 budget | "
        "violation rate per quarter | best feasible reward seen | s per cell |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        group = [c for c in cells if c["algo"] == r["algo"] and c["budget"] == r["budget"]]
        seconds = np.mean([c["seconds"] for c in group])
        quarters = " / ".join(f"{100 * v:.0f}%" for v in r["violation_rate_per_quarter"])
        if "final_cost" in r:
            final = [_mean_std(r["final_cost"]), _mean_std(r["final_reward"]),
                     f"{r['seeds_settled']}/{r['seeds']}"]  # fmt: skip
        else:
            final = ["", "", ""]
        lines.append(f"| {r['algo']} | {r['budget']:g} | {r['seeds']} | {' | '.join(final)} | "
                     f"{quarters} | {r['best_feasible_reward']:.3f} | {seconds:.0f} |")  # fmt: skip
    checks = [
        f"- {r['algo']} @ {r['budget']:g}: "
        + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r["checks"].items())
        + f" (feasible final policies' reward {r['final_reward_feasible_mean']:.3f}, random_search "
        f"{r.get('random_search_best_feasible_mean', float('nan')):.3f})"
        for r in summary["rows"]
        if "checks" in r
    ]
    return "\n".join([*lines, "", "Checks (issue 12):", "", *checks, ""])


def plot(cells: list[dict[str, Any]], algos: list[str], budgets: list[float], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(budgets), figsize=(5.5 * len(budgets), 9), squeeze=False)
    for j, budget in enumerate(budgets):
        for algo in algos:
            group = [c for c in cells if c["algo"] == algo and c["budget"] == budget]
            if not group:
                continue
            x = np.array(group[0]["curve"]["steps"])
            for i, key in enumerate(("cost", "reward")):
                ys = np.array([[np.nan if v is None else v for v in c["curve"][key]]
                               for c in group])  # fmt: skip
                mean, std = np.nanmean(ys, axis=0), np.nanstd(ys, axis=0)
                axes[i][j].plot(x, mean, label=algo)
                axes[i][j].fill_between(x, mean - std, mean + std, alpha=0.2)
            if group[0]["lambda"]:
                n = min(len(c["lambda"]) for c in group)
                lx = [group[0]["lambda"][k][0] for k in range(n)]
                ly = np.array([[c["lambda"][k][1][0] for k in range(n)] for c in group])
                axes[2][j].plot(lx, ly.mean(0), label=algo)
                axes[2][j].fill_between(lx, ly.mean(0) - ly.std(0), ly.mean(0) + ly.std(0),
                                        alpha=0.2)  # fmt: skip
        axes[0][j].axhline(budget, color="k", ls="--", lw=1, label="budget")
        axes[0][j].set_title(f"budget {budget:g}: episode cost")
        axes[1][j].set_title("episode reward (surrogate accuracy)")
        axes[2][j].set_title("lambda (after each rollout)")
        for i in range(3):
            axes[i][j].set_xlabel("env steps")
            axes[i][j].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="VGG16PruneSurrogate-v0", help="env id")
    parser.add_argument("--algos", default="ppo_lag,ppo_pid_lag,random_search",
                        help="comma-separated registry names")  # fmt: skip
    parser.add_argument("--budgets", default="0.1,0.3", help="comma-separated budgets")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. seeds-1")
    parser.add_argument("--steps", type=int, default=60_000, help="env steps per cell")
    parser.add_argument("--algo-kwargs", default="{}", help="JSON {algo: {argument: value}}")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="cells run at once")  # fmt: skip
    parser.add_argument("--out", default="benchmarks/results/convergence_surrogate")
    args = parser.parse_args(argv)
    algos = [a for a in args.algos.split(",") if a]
    budgets = [float(b) for b in args.budgets.split(",") if b]
    algo_kwargs = json.loads(args.algo_kwargs)
    from agents import registry

    for algo in [*algos, *algo_kwargs]:
        registry.get(algo)  # unknown names fail here, before any run
    out = Path(args.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    todo = []
    for budget in budgets:
        for algo in algos:
            for seed in range(args.seeds):
                path = out / "cells" / f"{cell_name(args.env, algo, budget, seed)}.json"
                if not path.is_file():
                    todo.append((path, (args.env, algo, budget, seed, args.steps,
                                        algo_kwargs.get(algo, {}))))  # fmt: skip
    print(f"{len(todo)} cells to run ({args.jobs} at once)", flush=True)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_cell, *cell): path for path, cell in todo}
        for future, path in futures.items():
            result = future.result()
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(path)  # atomic: an interrupted run leaves no half cell
            final = result["final"] or {}
            quarters = [None if v is None else round(v, 2)
                        for v in result["violation_rate_per_quarter"]]  # fmt: skip
            print(f"{path.stem}: {result['seconds']:.0f} s, final cost "
                  f"{final.get('cost', float('nan')):.3f} reward "
                  f"{final.get('reward', float('nan')):.3f}, violation per quarter "
                  f"{quarters}",
                  flush=True)  # fmt: skip
    cells = [json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))]
    cells = [c for c in cells if c["env"] == args.env and c["steps"] == args.steps]
    summary = summarise(cells, algos, budgets)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    text = table(summary, cells)
    (out / "table.md").write_text(text)
    plot(cells, algos, budgets, out / "convergence.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
