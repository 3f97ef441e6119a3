"""Summarise repeated train.py runs: variants x seeds, from their committed report.json files.

    python benchmarks/demo_table.py benchmarks/results/quick_demo_infeasible

DIR holds one folder per run named ``{variant}_s{seed}`` with the run's report.json. Writes
DIR/summary.md (per run and mean per variant: search seconds, episodes, test accuracy after
fine-tuning, final policy cost and feasibility) and prints it.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from prune_pipeline.report import markdown_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    runs: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for path in sorted(args.folder.glob("*_s*/report.json")):
        match = re.fullmatch(r"(.+)_s(\d+)", path.parent.name)
        if match:
            runs[match[1]].append((int(match[2]), json.loads(path.read_text())))
    if not runs:
        raise SystemExit(f"error: no {{variant}}_s{{seed}}/report.json under {args.folder}")
    headers = [
        "variant",
        "seed",
        "search s",
        "episodes",
        "test acc",
        "params kept",
        "final policy cost",
        "final feasible",
    ]
    rows, means = [], []
    for variant, items in runs.items():
        for seed, r in sorted(items):
            final = r["search"].get("final_policy") or {}
            rows.append(
                [
                    variant,
                    seed,
                    f"{r['search']['wall_time']:.0f}",
                    r["search"]["episodes"],
                    f"{r['pruned']['test_accuracy']:.2%}",
                    f"{r['pruned']['cost']:.4f}",
                    f"{final.get('cost', float('nan')):.4f}",
                    final.get("feasible"),
                ]
            )
        search = [r["search"]["wall_time"] for _, r in items]
        acc = [r["pruned"]["test_accuracy"] for _, r in items]
        feasible = sum(
            bool((r["search"].get("final_policy") or {}).get("feasible")) for _, r in items
        )
        means.append(
            [
                variant,
                len(items),
                f"{np.mean(search):.0f} ± {np.std(search):.0f}",
                f"{np.mean(acc):.2%} ± {np.std(acc):.2%}",
                f"{feasible}/{len(items)}",
            ]
        )
    text = (
        markdown_table(headers, rows)
        + "\n\nMean ± std over seeds:\n\n"
        + markdown_table(
            ["variant", "seeds", "search s", "test acc", "final policy feasible"], means
        )
        + "\n"
    )
    (args.folder / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
