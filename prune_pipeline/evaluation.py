"""Re-measure a finished run, compare it with other pruning methods, or roll its agent out.

    python evaluate.py RUN_DIR                       # re-measure the saved pruned model
    python evaluate.py RUN_DIR --compare uniform,magnitude_global,random_search,amc
    python evaluate.py RUN_DIR --agent RUN_DIR/agent.zip --episodes 20

The pruned model is read from its weights-only form (``pruned.safetensors`` with
``pruned_arch.json``), which unpickles no code; ``--trust-pickle`` reads ``pruned_model.pt``
(written by ``train.py --save-pickle``).
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

from agents import registry
from agents.recording import rollout
from prune_env.constraints import final_verdict, is_measured, within_budget
from prune_pipeline.config import ConfigError, JobConfig
from prune_pipeline.plots import plot_comparison, plot_keep_ratios
from prune_pipeline.presets import agent_arguments
from prune_pipeline.pruned import load_pruned, measure
from prune_pipeline.report import comparison_rows, csv_text, markdown_table, pct
from prune_pipeline.run_folder import RunFolder, RunFolderError
from prune_pipeline.stages import COST_KEYS, chosen_feasible, finetune, measure_base
from prune_pipeline.task import Task, make_task


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
    try:
        RunFolder.open(args.run_dir)
    except RunFolderError as exc:
        parser.error(str(exc))
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


def remeasure(run: RunFolder, cfg: JobConfig, task: Task, trust_pickle: bool) -> dict[str, Any]:
    """The saved pruned model and the base model, measured again on the test set.

    The constraint's verdict is the job's (``prune_env.constraints.final_verdict``): the
    search's verdict on the network (from the run's report) and, for params and FLOPs, the
    recount; a measured cost (latency) keeps the search's verdict, its new fraction beside it.
    """
    search_feasible = chosen_feasible(_finished_report(run)["selection"])
    base = measure_base(task)
    net = load_pruned(run.path, task.device, trust_pickle=trust_pickle)
    pruned = measure(
        net, task.test, task.info, task.latency_batch(), nonzero=cfg.granularity == "weight"
    ).to_dict()
    key = COST_KEYS[cfg.cost]
    pruned["cost"] = pruned[key] / base[key]
    pruned["constraint_satisfied"] = final_verdict(
        is_measured(cfg.cost), search_feasible, pruned["cost"], cfg.budget
    )
    return {"base": base, "pruned": pruned}


def _finished_report(run: RunFolder) -> dict[str, Any]:
    """The run's report; a clear error if the run did not finish (it has none)."""
    if not run.is_complete:
        raise SystemExit(f"error: {run.path} has no report.json: the run did not finish")
    return run.report()


def _agent_kwargs(cfg: JobConfig, method: str) -> dict[str, Any]:
    """The run's own --algo-kwargs apply to its own algorithm only."""
    return agent_arguments(method, cfg.preset, cfg.algo_kwargs if method == cfg.algo else None)


def compare(run: RunFolder, cfg: JobConfig, task: Task, methods: list[str], progress: bool) -> list:
    """Each method prunes the same base model to the same budget and is fine-tuned alike."""
    report = _finished_report(run)  # refuses an unfinished run before any work
    base = measure_base(task)
    rows = [_own_row(report, base, cfg)]
    rows += [_method_row(run, cfg, task, method, base, progress) for method in methods]
    rows.append(
        {
            "method": "base (unpruned)",
            "reward_accuracy": base["reward_accuracy"],
            "test_accuracy": base["test_accuracy"],
            "params_kept": 1.0,
            "flops_kept": 1.0,
            "latency_ms": base["latency_ms"],
            "feasible": cfg.budget >= 1,
        }
    )
    return rows


def _own_row(report: dict[str, Any], base: dict[str, Any], cfg: JobConfig) -> dict[str, Any]:
    """The comparison's row for the run's own search, read from its report."""
    own = report["pruned"]
    return {
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
        "images_evaluated": report["search"].get("images_evaluated"),
        "keep_ratios": own["keep_ratios"],
    }


def _method_row(
    run: RunFolder,
    cfg: JobConfig,
    task: Task,
    method: str,
    base: dict[str, Any],
    progress: bool,
) -> dict[str, Any]:
    """Run ``method`` with the run's settings, fine-tune its best feasible candidate as the
    run's own was, and measure it; its episodes go to ``compare_episodes/{method}.jsonl``."""
    # each method pays for its own evaluations (no answers cached by an earlier one), so that
    # its seconds and images are its own compute, as the run's own search was
    task.mdp.clear_cache()
    start = time.perf_counter()
    images_before = task.mdp.cache_info()["images"]
    result = registry.run(
        method,
        task.env,
        total_timesteps=cfg.total_timesteps,
        seed=cfg.seed,
        **_agent_kwargs(cfg, method),
    )
    search_s = time.perf_counter() - start
    images = task.mdp.cache_info()["images"] - images_before
    # Every method's search, for learning curves beside the run's own episodes.jsonl.
    lines = "".join(json.dumps(e.to_dict()) + "\n" for e in result.episodes)
    run.write_text(f"compare_episodes/{method}.jsonl", lines)
    search = {"search_s": search_s, "env_steps": result.env_steps, "images_evaluated": images}
    best = result.best_feasible
    if best is None:
        print(f"{method}: no feasible candidate in {result.env_steps} env steps")
        return {"method": method, "feasible": False, **search}
    weight = cfg.granularity == "weight"
    net = task.mdp.pruned_network(best.keep_ratios)
    before = finetune(task, net, cfg.finetune_epochs, cfg.finetune_lr, weight, cfg.seed, progress)
    stats = measure(net, task.test, task.info, task.latency_batch(), nonzero=weight).to_dict()
    row = {
        "method": method,
        "reward_accuracy": best.reward,
        "test_accuracy_before_finetune": before,
        "test_accuracy": stats["test_accuracy"],
        "params_kept": stats["params"] / base["params"],
        "flops_kept": stats["flops"] / base["flops"],
        "latency_ms": stats["latency_ms"],
        "feasible": True,
        **search,
        "keep_ratios": best.keep_ratios,
    }
    print(
        f"{method}: test accuracy {pct(before)} -> {pct(stats['test_accuracy'])}, params "
        f"kept {row['params_kept']:.4f} ({search_s:.1f} s search)",
        flush=True,
    )
    return row


def compare_table(rows: list[dict], cfg: JobConfig) -> tuple[list[str], list[list[Any]]]:
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


def agent_rollouts(
    cfg: JobConfig, task: Task, path: Path, episodes: int, deterministic: bool
) -> dict:
    spec = registry.get(cfg.algo)
    if spec.agent_class is None:
        raise SystemExit(f"error: {cfg.algo} is a search baseline; it saves no agent to roll out")
    kwargs = _agent_kwargs(cfg, cfg.algo)
    agent = spec.agent_class.load(path, device=kwargs.get("device", "cpu"))
    wrapped = registry.wrapped_env(cfg.algo, task.env, **kwargs)
    budget = task.mdp.budget
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
        "violation_rate": float(np.mean([not within_budget(c, budget) for c in costs])),
        "best_feasible_accuracy": max(
            (a for a, c in zip(accuracies, costs, strict=True) if within_budget(c, budget)),
            default=None,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = RunFolder.open(args.run_dir)
    run_dir = run.path
    try:
        cfg = JobConfig.from_saved(run.config)
        if args.device is not None:
            cfg.device = args.device
        cfg.progress = args.progress
        task = make_task(cfg)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None

    if args.agent is not None:
        result = agent_rollouts(cfg, task, args.agent, args.episodes, args.deterministic)
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
        run.write_json("agent_eval.json", result)
        return 0

    if args.compare is not None:
        rows = compare(run, cfg, task, args.compare, args.progress)
        headers, table = compare_table(rows, cfg)
        title = f"{cfg.env}, {cfg.cost} budget {cfg.budget:g}, {cfg.granularity}, seed {cfg.seed}"
        text = f"# Comparison: {title}\n\n{markdown_table(headers, table)}\n"
        print(text)
        run.write_text("compare.md", text)
        run.write_text("compare.csv", csv_text(headers, table))
        run.write_json("compare.json", rows)
        plot_comparison([r for r in rows if "test_accuracy" in r], run_dir / "compare.png", title)
        layers = task.layers
        series = {r["method"]: r["keep_ratios"] for r in rows if r.get("keep_ratios")}
        plot_keep_ratios(series, layers, run_dir / "keep_ratios_compare.png", title)
        return 0

    result = remeasure(run, cfg, task, args.trust_pickle)
    base, pruned = result["base"], result["pruned"]
    print(markdown_table(["", "base", "pruned", "pruned / base"], comparison_rows(base, pruned)))
    # a measured cost is judged by the search's measurement, not by this second one
    judged_by = "; the search's measurement decides" if is_measured(cfg.cost) else ""
    print(
        f"\nconstraint ({cfg.cost} kept <= {cfg.budget:g}): "
        f"{'satisfied' if pruned['constraint_satisfied'] else 'NOT satisfied'} "
        f"(cost {pruned['cost']:.4f}{judged_by})"
    )
    reported = run.report()["pruned"]["test_accuracy"]
    same = abs(reported - pruned["test_accuracy"]) < 1e-9
    result["matches_report"] = same
    print(
        f"test accuracy {'matches' if same else 'DIFFERS FROM'} the report "
        f"({pct(reported)} reported)"
    )
    run.write_json("evaluation.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
