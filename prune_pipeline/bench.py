"""Compare constrained RL algorithms on the pruning envs: every env x algo x seed, one table.

    python benchmark.py --envs VGG16Prune-v0,ResNet56Prune-v0 \\
        --algos ppo_lag,ppo_pid_lag,ppo_penalty,amc,random_search --seeds 3 --budget 0.1
    python benchmark.py --config bench.yaml        # the same, from YAML (per-env overrides)

For each cell: the final policy's return and cost (``--eval-episodes`` sampled episodes, the
deterministic one too), its violation rate, the best feasible return seen, the cumulative
constraint violation during training (sum over episodes of max(0, cost - budget)), env steps
and wall time to the first feasible episode, and the total wall time. A cell that fails is
reported with its error, not dropped. Each finished cell is stored in ``OUT/cells/``, so a
re-run skips it. Output in ``OUT``: ``runs.csv`` / ``runs.json`` (every cell), ``table.md``
(mean ± std over seeds against the cost limit) and ``curves_<env>.png`` (reward and cost over
training with the budget line, mean and std over seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import prune_env
from agents import registry
from agents.recording import rollout
from prune_env.constraints import check_budget, within_budget
from prune_env.paths import atomic_write_bytes, atomic_write_json
from prune_pipeline.config import ConfigError, add_arguments, from_mapping
from prune_pipeline.plots import plot_learning_curves
from prune_pipeline.presets import BENCHMARK_PRESET, agent_arguments
from prune_pipeline.report import csv_text, markdown_table


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class BenchConfig:
    """The constrained-RL benchmark (``benchmark.py`` / ``prune-benchmark``)."""

    envs: list[str] = field(
        default_factory=lambda: ["VGG16Prune-v0"], metadata=_help("comma-separated env ids")
    )
    algos: list[str] = field(
        default_factory=lambda: ["ppo_lag", "random_search"],
        metadata=_help("comma-separated algorithm names (agents.registry)"),
    )
    seeds: int = field(default=3, metadata=_help("number of seeds (0 .. N-1)"))
    budget: float = field(default=0.1, metadata=_help("cost limit of every env"))
    total_timesteps: int = field(default=10_000, metadata=_help("env steps per cell"))
    eval_episodes: int = field(default=10, metadata=_help("sampled episodes of the final policy"))
    env_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata=_help("JSON of arguments for every env")
    )
    algo_kwargs: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata=_help('JSON {algo: {argument: value}}, e.g. \'{"ppo_lag": {"n_steps": 128}}\''),
    )
    per_env: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata=_help("JSON {env id: {argument: value}} (budget, total_timesteps or env args)"),
    )
    n_envs: int = field(default=1, metadata=_help("env copies each RL agent steps at once"))
    vec_env: str = field(
        default="dummy", metadata=_help("dummy, subproc or ray: where the copies run (n_envs > 1)")
    )
    vec_env_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help('JSON for the VecEnv, e.g. \'{"num_cpus": 1, "num_gpus": 0.25}\' (ray)'),
    )
    out: str = field(default="benchmarks/results/bench", metadata=_help("output folder"))


PER_ENV_KEYS = {"budget", "total_timesteps"}  # anything else in per_env is an env argument


def load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"error: {path} must hold a mapping of options")
    return data


def build_config(raw: dict[str, Any]) -> BenchConfig:
    """A validated configuration; unknown keys, algorithms and env ids are refused."""
    try:
        cfg = from_mapping(BenchConfig, raw)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    valid_envs = [*prune_env.ZOO_IDS, *prune_env.SURROGATE_IDS]
    bad_envs = [e for e in cfg.envs if e not in valid_envs]
    if bad_envs or not cfg.envs:
        raise SystemExit(f"error: unknown envs {bad_envs}; expected some of {valid_envs}")
    bad_algos = [a for a in cfg.algos if a not in registry.names()]
    if bad_algos or not cfg.algos:
        raise SystemExit(f"error: unknown algos {bad_algos}; expected some of {registry.names()}")
    stray = sorted(set(cfg.per_env) - set(cfg.envs))
    if stray:
        raise SystemExit(f"error: per_env names envs that are not benchmarked: {stray}")
    stray = sorted(set(cfg.algo_kwargs) - set(cfg.algos))
    if stray:
        raise SystemExit(f"error: algo_kwargs names algos that are not benchmarked: {stray}")
    if min(cfg.seeds, cfg.total_timesteps, cfg.eval_episodes, cfg.n_envs) < 1:
        raise SystemExit("error: seeds, total_timesteps, eval_episodes and n_envs must be >= 1")
    if cfg.vec_env not in registry.VEC_ENVS:
        raise SystemExit(
            f"error: unknown vec_env {cfg.vec_env!r}; expected one of {registry.VEC_ENVS}"
        )
    try:
        check_budget(cfg.budget, "budget")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    return cfg


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=None, help="YAML file of these options")
    add_arguments(parser, BenchConfig, defaults=False)
    args = vars(parser.parse_args(argv))
    raw = load_yaml(args.pop("config")) if args.get("config") else {}
    raw.update({k: v for k, v in args.items() if v is not None})
    return build_config(raw)


def cell_settings(cfg: BenchConfig, env_id: str) -> tuple[float, int, dict[str, Any]]:
    """(budget, total_timesteps, env arguments) of one env, per-env overrides applied."""
    override = dict(cfg.per_env.get(env_id, {}))
    budget = float(override.pop("budget", cfg.budget))
    steps = int(override.pop("total_timesteps", cfg.total_timesteps))
    return budget, steps, {**cfg.env_kwargs, **override, "budget": budget}


def run_cell(cfg: BenchConfig, env_id: str, algo: str, seed: int) -> dict[str, Any]:
    """One env x algo x seed: train, then evaluate the final policy."""
    budget, steps, env_kwargs = cell_settings(cfg, env_id)
    if env_id in prune_env.ZOO_IDS:  # the harness trains a missing base model (once: cached)
        env_kwargs.setdefault("train_base", True)
    kwargs = agent_arguments(algo, BENCHMARK_PRESET, cfg.algo_kwargs.get(algo))
    agent_class = registry.get(algo).agent_class
    env = prune_env.make(env_id, **env_kwargs)
    source: Any = env
    if agent_class is not None and cfg.n_envs > 1:
        source = partial(prune_env.make, env_id, **env_kwargs)
        kwargs.update(n_envs=cfg.n_envs, vec_env=cfg.vec_env, vec_env_kwargs=cfg.vec_env_kwargs)
    start = time.perf_counter()
    result = registry.run(algo, source, total_timesteps=steps, seed=seed, **kwargs)
    train_s = time.perf_counter() - start
    episodes = result.episodes
    first = result.first_feasible
    best = result.best_feasible
    if source is not env:
        result.agent.get_env().close()  # the copies' work is done; evaluate on the local env
    wrapped = registry.wrapped_env(algo, env, **kwargs)
    wrapped.reset(seed=seed)
    final = rollout(result.agent, wrapped, deterministic=True)
    sampled = [
        rollout(result.agent, wrapped, deterministic=False) for _ in range(cfg.eval_episodes)
    ]
    sampled_costs = np.array([i["cost"] for i in sampled])
    return {
        "env": env_id,
        "algo": algo,
        "seed": seed,
        "status": "ok",
        "budget": budget,
        "total_timesteps": steps,
        "env_steps": result.env_steps,
        "episodes": len(episodes),
        "final_reward": float(final["accuracy"]),
        "final_cost": float(final["cost"]),
        "final_feasible": bool(final["constraint_satisfied"]),
        "eval_reward_mean": float(np.mean([i["accuracy"] for i in sampled])),
        "eval_cost_mean": float(sampled_costs.mean()),
        "eval_violation_rate": float(
            np.mean([not within_budget(c, budget) for c in sampled_costs])
        ),
        "best_feasible_reward": None if best is None else float(best.reward),
        "train_violation_rate": float(np.mean([not e.feasible for e in episodes])),
        "cumulative_violation": float(sum(max(0.0, e.cost - budget) for e in episodes)),
        "steps_to_first_feasible": None if first is None else first.env_steps,
        "seconds_to_first_feasible": None if first is None else first.wall_time,
        "train_seconds": train_s,
        "wall_seconds": time.perf_counter() - start,
        "curve": [[e.env_steps, e.reward, e.cost] for e in episodes],
    }


def mean_std(values: list[float | None], fmt: str = ".3f") -> str:
    xs = [v for v in values if v is not None]
    if not xs:
        return "n/a"
    missing = f" ({len(values) - len(xs)} n/a)" if len(xs) < len(values) else ""
    return f"{np.mean(xs):{fmt}} ± {np.std(xs):{fmt}}{missing}"


def summary_table(rows: list[dict[str, Any]], cfg: BenchConfig) -> str:
    headers = [
        "env",
        "algo",
        "seeds ok",
        "cost limit",
        "final reward",
        "final cost",
        "eval cost",
        "violation rate",
        "best feasible reward",
        "cum. violation",
        "steps to 1st feasible",
        "wall s",
    ]
    table = []
    for env_id in cfg.envs:
        for algo in cfg.algos:
            cell = [r for r in rows if r["env"] == env_id and r["algo"] == algo]
            ok = [r for r in cell if r["status"] == "ok"]
            if not ok:
                table.append([env_id, algo, f"0/{len(cell)}", "", *["failed"] * 8])
                continue
            table.append(
                [
                    env_id,
                    algo,
                    f"{len(ok)}/{len(cell)}",
                    f"{ok[0]['budget']:g}",
                    mean_std([r["final_reward"] for r in ok]),
                    mean_std([r["final_cost"] for r in ok]),
                    mean_std([r["eval_cost_mean"] for r in ok]),
                    mean_std([r["eval_violation_rate"] for r in ok], ".2f"),
                    mean_std([r["best_feasible_reward"] for r in ok]),
                    mean_std([r["cumulative_violation"] for r in ok], ".2f"),
                    mean_std([r["steps_to_first_feasible"] for r in ok], ".0f"),
                    mean_std([r["wall_seconds"] for r in ok], ".1f"),
                ]
            )
    failures = [r for r in rows if r["status"] != "ok"]
    text = markdown_table(headers, table)
    if failures:
        text += "\n\nFailed cells:\n\n" + "\n".join(
            f"- {r['env']} / {r['algo']} / seed {r['seed']}: {r['error']}" for r in failures
        )
    return text + "\n"


CSV_COLUMNS = [
    "env",
    "algo",
    "seed",
    "status",
    "budget",
    "total_timesteps",
    "env_steps",
    "episodes",
    "final_reward",
    "final_cost",
    "final_feasible",
    "eval_reward_mean",
    "eval_cost_mean",
    "eval_violation_rate",
    "best_feasible_reward",
    "train_violation_rate",
    "cumulative_violation",
    "steps_to_first_feasible",
    "seconds_to_first_feasible",
    "train_seconds",
    "wall_seconds",
    "error",
]


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    out = Path(cfg.out)
    cells_dir = out / "cells"
    atomic_write_json(asdict(cfg), out / "config.json")
    rows = []
    cells = [(e, a, s) for e in cfg.envs for a in cfg.algos for s in range(cfg.seeds)]
    for i, (env_id, algo, seed) in enumerate(cells, 1):
        path = cells_dir / f"{env_id}__{algo}__{seed}.json"
        if path.is_file():
            row = json.loads(path.read_text())
            if row["status"] == "ok":
                print(f"[{i}/{len(cells)}] {env_id} / {algo} / seed {seed}: done before, skipped")
                rows.append(row)
                continue
        print(f"[{i}/{len(cells)}] {env_id} / {algo} / seed {seed} ...", flush=True)
        try:
            row = run_cell(cfg, env_id, algo, seed)
        except Exception as exc:  # reported, not dropped; a re-run tries it again
            row = {
                "env": env_id,
                "algo": algo,
                "seed": seed,
                "status": "failed",
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
            print(f"    failed: {row['error']}", flush=True)
        else:
            print(
                f"    final reward {row['final_reward']:.4f}, cost {row['final_cost']:.4f} "
                f"(limit {row['budget']:g}), {row['wall_seconds']:.1f} s"
            )
        atomic_write_json(row, path)
        rows.append(row)
    table = summary_table(rows, cfg)
    print(table)
    atomic_write_bytes(table.encode(), out / "table.md")
    atomic_write_json(
        [{k: v for k, v in r.items() if k != "curve"} for r in rows], out / "runs.json"
    )
    csv_rows = [[r.get(c) for c in CSV_COLUMNS] for r in rows]
    atomic_write_bytes(csv_text(CSV_COLUMNS, csv_rows).encode(), out / "runs.csv")
    for env_id in cfg.envs:
        curves = {
            algo: [
                r["curve"]
                for r in rows
                if r["env"] == env_id and r["algo"] == algo and r["status"] == "ok"
            ]
            for algo in cfg.algos
        }
        budget = cell_settings(cfg, env_id)[0]
        plot_learning_curves(curves, budget, out / f"curves_{env_id}.png", env_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
