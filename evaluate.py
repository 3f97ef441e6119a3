"""Re-measure a finished run, compare it with other pruning methods, or roll its agent out.

    python evaluate.py RUN_DIR                       # re-measure the saved pruned model
    python evaluate.py RUN_DIR --compare uniform,magnitude_global,random_search,amc
    python evaluate.py RUN_DIR --agent RUN_DIR/agent.zip --episodes 20

The pruned model is read from its weights-only form (``pruned_state.pt`` with
``pruned_arch.json``), which unpickles no code; ``--trust-pickle`` reads ``pruned_model.pt``.
Every table is printed and saved in RUN_DIR (Markdown and JSON or CSV).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import prune_env
from agents import registry
from agents.recording import rollout
from prune_env.data import normalise
from prune_env.paths import atomic_write_bytes, atomic_write_json
from prune_env.plots import plot_comparison, plot_keep_ratios
from prune_env.pruned import finetune_pruned, load_pruned, measure
from prune_env.report import comparison_rows, csv_text, markdown_table, pct
from prune_env.zoo import split_accuracy
from train import Config, algo_arguments, env_arguments, test_split


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="a run folder written by train.py")
    parser.add_argument(
        "--compare",
        default=None,
        help="comma-separated methods to prune the same base model with, to the "
        f"same budget (any of {registry.names()})",
    )
    parser.add_argument("--agent", type=Path, default=None, help="a saved agent to roll out")
    parser.add_argument("--episodes", type=int, default=10, help="episodes for --agent")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="--agent acts deterministically (default: samples its policy)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load pruned_model.pt (runs pickled code) instead of the safe form",
    )
    parser.add_argument("--device", default=None, help="device (default: the run's)")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars"
    )
    args = parser.parse_args(argv)
    if not (args.run_dir / "config.json").is_file():
        parser.error(f"{args.run_dir} has no config.json: not a run folder of train.py")
    if args.compare is not None:
        methods = [m.strip() for m in args.compare.split(",") if m.strip()]
        unknown = [m for m in methods if m not in registry.names()]
        if unknown or not methods:
            parser.error(
                f"unknown --compare methods {unknown}; expected some of {registry.names()}"
            )
        args.compare = methods
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    if args.agent is not None and not args.agent.is_file():
        parser.error(f"--agent {args.agent} does not exist")
    return args


def remeasure(run_dir: Path, cfg: Config, env: Any, trust_pickle: bool) -> dict[str, Any]:
    """The saved pruned model and the base model, measured again on the test set."""
    penv = env.unwrapped
    test, info = test_split(env, cfg), penv.data_info
    batch = normalise(test.images[:64].to(penv.device), info)
    base = measure(penv.base_model, test, info, batch).to_dict()
    net = load_pruned(run_dir, penv.device, trust_pickle=trust_pickle)
    pruned = measure(net, test, info, batch, nonzero=cfg.granularity == "weight").to_dict()
    key = {"params": "params", "flops": "flops", "latency": "latency_ms"}[cfg.cost]
    pruned["cost"] = pruned[key] / base[key]
    pruned["constraint_satisfied"] = bool(pruned["cost"] <= cfg.budget + 1e-12)
    return {"base": base, "pruned": pruned}


def compare(run_dir: Path, cfg: Config, env: Any, methods: list[str], progress: bool) -> list:
    """Each method prunes the same base model to the same budget and is fine-tuned alike."""
    penv = env.unwrapped
    test, info = test_split(env, cfg), penv.data_info
    batch = normalise(test.images[:64].to(penv.device), info)
    base = measure(penv.base_model, test, info, batch).to_dict()
    train = penv.dataset_split("train")
    report = json.loads((run_dir / "report.json").read_text())
    own = report["pruned"]
    rows = [
        {
            "method": f"{cfg.algo} (this run)",
            "reward_accuracy": own["reward_accuracy"],
            "test_accuracy_before_finetune": own["test_accuracy_before_finetune"],
            "test_accuracy": own["test_accuracy"],
            "params_kept": own["params"] / base["params"],
            "flops_kept": own["flops"] / base["flops"],
            "latency_ms": own["latency_ms"],
            "feasible": own["constraint_satisfied"],
            "search_s": report["search"]["wall_time"],
            "env_steps": report["search"]["env_steps"],
            "keep_ratios": own["keep_ratios"],
        }
    ]
    for method in methods:
        start = time.perf_counter()
        result = registry.run(
            method,
            env,
            total_timesteps=cfg.total_timesteps,
            seed=cfg.seed,
            **algo_arguments(cfg, method),
        )
        search_s = time.perf_counter() - start
        # Every method's search, for learning curves beside the run's own episodes.jsonl.
        lines = "".join(json.dumps(e.to_dict()) + "\n" for e in result.episodes)
        atomic_write_bytes(lines.encode(), run_dir / "compare_episodes" / f"{method}.jsonl")
        best = result.best_feasible
        if best is None:
            print(f"{method}: no feasible candidate in {result.env_steps} env steps")
            rows.append(
                {
                    "method": method,
                    "feasible": False,
                    "search_s": search_s,
                    "env_steps": result.env_steps,
                }
            )
            continue
        net = penv.pruned_network(best.keep_ratios)
        before = split_accuracy(net, test, info)
        finetune_pruned(
            net,
            train,
            info,
            penv.base_info["arch"],
            cfg.finetune_epochs,
            cfg.finetune_lr,
            keep_zeros=cfg.granularity == "weight",
            seed=cfg.seed,
            progress=progress,
        )
        stats = measure(net, test, info, batch, nonzero=cfg.granularity == "weight").to_dict()
        rows.append(
            {
                "method": method,
                "reward_accuracy": best.reward,
                "test_accuracy_before_finetune": before,
                "test_accuracy": stats["test_accuracy"],
                "params_kept": stats["params"] / base["params"],
                "flops_kept": stats["flops"] / base["flops"],
                "latency_ms": stats["latency_ms"],
                "feasible": True,
                "search_s": search_s,
                "env_steps": result.env_steps,
                "keep_ratios": best.keep_ratios,
            }
        )
        print(
            f"{method}: test accuracy {pct(before)} -> {pct(stats['test_accuracy'])}, params "
            f"kept {rows[-1]['params_kept']:.4f} ({search_s:.1f} s search)",
            flush=True,
        )
    rows.append(
        {
            "method": "base (unpruned)",
            "reward_accuracy": penv.base_accuracy,
            "test_accuracy": base["test_accuracy"],
            "params_kept": 1.0,
            "flops_kept": 1.0,
            "latency_ms": base["latency_ms"],
            "feasible": cfg.budget >= 1,
        }
    )
    return rows


def compare_table(rows: list[dict], cfg: Config) -> tuple[list[str], list[list[Any]]]:
    headers = [
        "method",
        "reward acc",
        "test acc before FT",
        f"test acc after {cfg.finetune_epochs} ep FT",
        "params kept",
        "FLOPs kept",
        "latency ms",
        "feasible",
        "search s",
        "env steps",
    ]

    def cell(row: dict, key: str, fmt: str) -> str:
        value = row.get(key)
        if value is None:
            return "n/a"
        return pct(value) if fmt == "%" else format(value, fmt)

    table = [
        [
            r["method"],
            cell(r, "reward_accuracy", "%"),
            cell(r, "test_accuracy_before_finetune", "%"),
            cell(r, "test_accuracy", "%"),
            cell(r, "params_kept", ".4f"),
            cell(r, "flops_kept", ".4f"),
            cell(r, "latency_ms", ".2f"),
            r.get("feasible"),
            cell(r, "search_s", ".1f"),
            r.get("env_steps", "n/a"),
        ]
        for r in rows
    ]
    return headers, table


def agent_rollouts(cfg: Config, env: Any, path: Path, episodes: int, deterministic: bool) -> dict:
    spec = registry.get(cfg.algo)
    if spec.agent_class is None:
        raise SystemExit(f"error: {cfg.algo} is a search baseline; it saves no agent to roll out")
    kwargs = algo_arguments(cfg, cfg.algo)
    agent = spec.agent_class.load(path, device=kwargs.get("device", "cpu"))
    wrapped = registry.wrapped_env(cfg.algo, env, **kwargs)
    budget = env.unwrapped.budget
    returns, costs, accuracies = [], [], []
    for i in range(episodes):
        if i == 0:
            wrapped.reset(seed=cfg.seed)
        info = rollout(agent, wrapped, deterministic=deterministic)
        accuracies.append(info["accuracy"])
        costs.append(info["cost"])
        # the pruning envs' return is the last step's reward (the env's reward= variant)
        returns.append(info.get("reward", info["accuracy"]))
    costs_a = np.array(costs)
    return {
        "agent": str(path),
        "episodes": episodes,
        "deterministic": deterministic,
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "cost_mean": float(costs_a.mean()),
        "cost_std": float(costs_a.std()),
        "cost_limit": budget,
        "violation_rate": float(np.mean(costs_a > budget + 1e-12)),
        "best_feasible_accuracy": max(
            (a for a, c in zip(accuracies, costs, strict=True) if c <= budget + 1e-12), default=None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir: Path = args.run_dir
    cfg = Config(**json.loads((run_dir / "config.json").read_text())["config"])
    kwargs = env_arguments(cfg)
    if args.device is not None:
        kwargs["device"] = args.device
    env = prune_env.make(cfg.env, progress=args.progress, **kwargs)

    if args.agent is not None:
        result = agent_rollouts(cfg, env, args.agent, args.episodes, args.deterministic)
        headers = [
            "episodes",
            "policy",
            "return (mean ± std)",
            "cost (mean ± std)",
            "cost limit",
            "violation rate",
        ]
        row = [
            result["episodes"],
            "deterministic" if args.deterministic else "sampled",
            f"{result['return_mean']:.4f} ± {result['return_std']:.4f}",
            f"{result['cost_mean']:.4f} ± {result['cost_std']:.4f}",
            f"{result['cost_limit']:g}",
            pct(result["violation_rate"], 1),
        ]
        print(markdown_table(headers, [row]))
        atomic_write_json(result, run_dir / "agent_eval.json")
        return 0

    if args.compare is not None:
        if not (run_dir / "report.json").is_file():
            raise SystemExit(f"error: {run_dir} has no report.json: the run did not finish")
        rows = compare(run_dir, cfg, env, args.compare, args.progress)
        headers, table = compare_table(rows, cfg)
        title = f"{cfg.env}, {cfg.cost} budget {cfg.budget:g}, {cfg.granularity}, seed {cfg.seed}"
        text = f"# Comparison: {title}\n\n{markdown_table(headers, table)}\n"
        print(text)
        atomic_write_bytes(text.encode(), run_dir / "compare.md")
        atomic_write_bytes(csv_text(headers, table).encode(), run_dir / "compare.csv")
        atomic_write_json(rows, run_dir / "compare.json")
        plot_comparison([r for r in rows if "test_accuracy" in r], run_dir / "compare.png", title)
        layers = [u.name for u in env.unwrapped.units]
        series = {r["method"]: r["keep_ratios"] for r in rows if r.get("keep_ratios")}
        plot_keep_ratios(series, layers, run_dir / "keep_ratios_compare.png", title)
        return 0

    result = remeasure(run_dir, cfg, env, args.trust_pickle)
    base, pruned = result["base"], result["pruned"]
    print(markdown_table(["", "base", "pruned", "pruned / base"], comparison_rows(base, pruned)))
    print(
        f"\nconstraint ({cfg.cost} kept <= {cfg.budget:g}): "
        f"{'satisfied' if pruned['constraint_satisfied'] else 'NOT satisfied'} "
        f"(cost {pruned['cost']:.4f})"
    )
    report_file = run_dir / "report.json"
    if report_file.is_file():
        reported = json.loads(report_file.read_text())["pruned"]["test_accuracy"]
        same = abs(reported - pruned["test_accuracy"]) < 1e-9
        result["matches_report"] = same
        print(
            f"test accuracy {'matches' if same else 'DIFFERS FROM'} the report "
            f"({pct(reported)} reported)"
        )
    atomic_write_json(result, run_dir / "evaluation.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
