"""Tables of a pruning run: report.md, and the tables evaluate.py prints."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def csv_text(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return out.getvalue()


def pct(x: float | None, digits: int = 2) -> str:
    return (
        "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"
    )


def count(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def comparison_rows(base: Mapping[str, Any], pruned: Mapping[str, Any]) -> list[list[str]]:
    """Rows "what | base | pruned | pruned/base" for test accuracy, size, work, latency."""

    def ratio(key: str) -> str:
        return f"{pruned[key] / base[key]:.3f}" if base.get(key) else "n/a"

    return [
        ["test accuracy", pct(base["test_accuracy"]), pct(pruned["test_accuracy"]),
         f"{100 * (pruned['test_accuracy'] - base['test_accuracy']):+.2f} pts"],
        ["parameters", count(base["params"]), count(pruned["params"]), ratio("params")],
        ["FLOPs (MACs)", count(base["flops"]), count(pruned["flops"]), ratio("flops")],
        [f"latency, batch {base['latency_batch']} on {base['latency_device']}",
         f"{base['latency_ms']:.2f} ms", f"{pruned['latency_ms']:.2f} ms", ratio("latency_ms")],
    ]  # fmt: skip


def render_report(report: Mapping[str, Any]) -> str:
    """report.md from report.json."""
    base, pruned, search = report["base"], report["pruned"], report["search"]
    sel = report["selection"]
    lines = [
        f"# {report['run']}",
        "",
        f"{report['env']} pruned by `{report['algo']}` to a {report['cost']} budget of "
        f"{report['budget']:g} ({report['granularity']} granularity), seed {report['seed']}, "
        f"on {report['hardware']}.",
        "",
        markdown_table(
            ["", "base", "pruned", "pruned / base"], comparison_rows(base, pruned)
        ),
        "",
        f"- Constraint ({report['cost']} kept <= {report['budget']:g}): "
        f"**{'satisfied' if pruned['constraint_satisfied'] else 'NOT satisfied'}** "
        f"(cost {pruned['cost']:.4f}; {pct(1 - pruned['cost'])} of the {report['cost']} removed).",
        f"- Test accuracy before fine-tuning: {pct(pruned['test_accuracy_before_finetune'])}; "
        f"after {report['finetune_epochs']} fine-tuning epoch(s): {pct(pruned['test_accuracy'])}.",
        f"- Reward-split accuracy (the search's reward images): base "
        f"{pct(base['reward_accuracy'])}, pruned {pct(pruned['reward_accuracy'])}.",
        f"- Chosen: {sel['chosen']}.",
        "",
        "## Search",
        "",
        markdown_table(
            ["episodes", "env steps", "feasible episodes", "violation rate",
             "first feasible at step", "best feasible reward", "wall time"],
            [[search["episodes"], search["env_steps"], search["feasible_episodes"],
              pct(search["violation_rate"], 1), search["first_feasible_step"],
              pct(search["best_feasible_reward"]), seconds(search["wall_time"])]],
        ),
        "",
        *final_policy_lines(report),
        "Candidates for the pruned model (accuracy on the reward split):",
        "",
        markdown_table(
            ["candidate", "reward accuracy", "cost", "feasible"],
            [[c["source"], pct(c["reward_accuracy"]), f"{c['cost']:.4f}", c["feasible"]]
             for c in sel["candidates"]],
        ),
        "",
        "## Keep ratio per layer",
        "",
        markdown_table(
            ["layer", "kept", "keep ratio"],
            [[name, kept, f"{ratio:.3f}"] for name, kept, ratio in zip(
                pruned["layers"], pruned["kept"], pruned["keep_ratios"], strict=True)],
        ),
        "",
        "## Time per stage",
        "",
        markdown_table(
            ["stage", "time"], [[k, seconds(v)] for k, v in report["stages"].items()]
        ),
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def final_policy_lines(report: Mapping[str, Any]) -> list[str]:
    """What the search's learned policy does on its own, and how often the search broke the
    budget, quarter by quarter (a settled agent's last quarter is mostly feasible)."""
    search, lines = report["search"], []
    final = search.get("final_policy")
    if final is not None:
        met = "met the budget" if final["feasible"] else "did NOT meet the budget"
        lines.append(
            f"- Final policy (its deterministic episode): {met}: cost {final['cost']:.4f} "
            f"({final['budget_use']:.2f} x the budget {report['budget']:g}), reward accuracy "
            f"{pct(final['reward_accuracy'])}."
        )
    quarters = search.get("violation_rate_per_quarter")
    if quarters:
        lines.append(
            "- Violation rate per quarter of the search: "
            + " / ".join(pct(q, 1) for q in quarters)
            + "."
        )
    return [*lines, ""] if lines else []
