"""How long must the sweep fine-tune before the ranking of methods stops changing?

    python benchmarks/finetune_length.py runs/reproduce_cpu/VGG16Prune-v0_channel_b0.1_s0 \\
        --epochs 1 3 8 --out benchmarks/results/finetune_length_vgg16_channel_b0.1

Takes finished sweep cells (``benchmarks/reproduce_cpu.sh``: a ppo_lag run folder with its
``compare.json``), rebuilds each cell's task from its saved configuration (same base model,
budget, data and seed) and fine-tunes every method's pruned network (the keep ratios the
sweep chose, so no search is run again) for each of ``--epochs``, with the job's recipe and
seed, then measures the test accuracy. Each (cell, method, epochs) result is one line of
``OUT/results.jsonl``, written as soon as it is known, so a re-run skips what is done.

``OUT/summary.json`` and ``OUT/table.md`` then give, per cell and fine-tuning length: each
method's test accuracy and rank, the Kendall tau of that ranking against the longest
length's, whether the best method is the same, and ppo_lag's difference to the best other
method. A length is long enough when its ranking agrees with the longest one measured; a
cell's own sweep length is read from compare.json, or, with ``--recompute-sweep-length``,
fine-tuned again as a check (the same recipe and seed must give back the same accuracy).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

CANDIDATE = "ppo_lag"


def cell_run(cell: Path) -> Path:
    """The one run folder of a sweep cell that holds compare.json."""
    runs = sorted(p for p in cell.iterdir() if p.is_dir() and (p / "compare.json").is_file())
    if len(runs) != 1:
        raise SystemExit(f"error: {cell} should hold one run folder with compare.json")
    return runs[0]


def methods_of(run: Path) -> dict[str, dict[str, Any]]:
    """Each method's compare.json row with keep ratios (feasible ones), by method name."""
    rows = json.loads((run / "compare.json").read_text())
    out = {}
    for row in rows:
        method = row["method"].replace(" (this run)", "")
        if row.get("keep_ratios") is not None and row.get("feasible"):
            out[method] = row
    return out


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def measure_cell(cell: Path, epochs: list[int], out: Path, recompute: bool = False) -> None:
    """Fine-tune every method of ``cell`` for each length in ``epochs``; results appended.

    The sweep's own length is taken from compare.json (``from_sweep``), unless ``recompute``
    (which fine-tunes it again and so checks that the same recipe and seed give it back)."""
    from prune_env.numerics import state_digest
    from prune_env.zoo import split_accuracy
    from prune_pipeline.config import JobConfig
    from prune_pipeline.run_folder import RunFolder
    from prune_pipeline.stages import finetune
    from prune_pipeline.task import make_task

    run = cell_run(cell)
    results_file = out / "results.jsonl"
    done = {(r["cell"], r["method"], r["epochs"]) for r in read_results(results_file)}
    methods = methods_of(run)
    folder = RunFolder.open(run, complete=True)
    sweep_epochs = int(folder.config_blob["config"]["finetune_epochs"])
    out.mkdir(parents=True, exist_ok=True)
    if sweep_epochs in epochs and not recompute:
        for method, row in methods.items():
            if (cell.name, method, sweep_epochs) in done:
                continue
            line = {
                "cell": cell.name,
                "method": method,
                "epochs": sweep_epochs,
                "test_accuracy": row["test_accuracy"],
                "finetune_s": None,  # timed inside the sweep, not apart
                "sweep_epochs": sweep_epochs,
                "sweep_test_accuracy": row["test_accuracy"],
                "base_weights_sha1": folder.report()["base"].get("weights_sha1"),
                "from_sweep": True,
            }
            with open(results_file, "a") as f:
                f.write(json.dumps(line) + "\n")
            done.add((cell.name, method, sweep_epochs))
    todo = [(m, e) for e in epochs for m in methods if (cell.name, m, e) not in done]
    if not todo:
        print(f"{cell.name}: every length done")
        return
    cfg = JobConfig.from_saved(folder.config_blob["config"])
    cfg.progress = False
    task = make_task(cfg)
    weight = cfg.granularity == "weight"
    base_sha1 = folder.report()["base"].get("weights_sha1")
    here = state_digest(task.base_model)
    if base_sha1 is not None and here != base_sha1:
        # with default numerics another machine trains another base: the sweep's keep ratios
        # would be fine-tuned from a network they were not chosen for
        raise SystemExit(
            f"error: {cell.name} was pruned from base {base_sha1[:12]}, but this machine's base "
            f"is {here[:12]}: run this where the sweep ran (or with its cached base)"
        )
    for method, n in todo:
        net = task.mdp.pruned_network(methods[method]["keep_ratios"])
        start = time.perf_counter()
        finetune(task, net, n, cfg.finetune_lr, weight, cfg.seed, progress=False)
        seconds = time.perf_counter() - start
        accuracy = split_accuracy(net, task.test, task.info)
        line = {
            "cell": cell.name,
            "method": method,
            "epochs": n,
            "test_accuracy": accuracy,
            "finetune_s": round(seconds, 1),
            "sweep_epochs": cfg.finetune_epochs,
            "sweep_test_accuracy": methods[method]["test_accuracy"],
            "base_weights_sha1": base_sha1,
        }
        with open(results_file, "a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"{cell.name} {method} {n} epoch(s): {100 * accuracy:.2f}% ({seconds:.0f} s)")


def _mean_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per cell: accuracy and rank per method and length, and agreement with the longest."""
    from scipy.stats import kendalltau

    cells: dict[str, Any] = {}
    for name in sorted({r["cell"] for r in rows}):
        mine = [r for r in rows if r["cell"] == name]
        lengths = sorted({r["epochs"] for r in mine})
        # only methods measured at every length are ranked, so rankings compare like with like
        methods = sorted(
            m for m in {r["method"] for r in mine}
            if all(any(r["method"] == m and r["epochs"] == n for r in mine) for n in lengths)
        )  # fmt: skip
        if not methods:
            continue  # an interrupted measurement: no method at every length yet
        acc = {
            n: {m: next(r["test_accuracy"] for r in mine if r["method"] == m and r["epochs"] == n)
                for m in methods}
            for n in lengths
        }  # fmt: skip
        longest = lengths[-1]
        per_length = {}
        for n in lengths:
            order = sorted(methods, key=lambda m, n=n: -acc[n][m])
            others = [m for m in methods if m != CANDIDATE]
            best_other = max(others, key=lambda m, n=n: acc[n][m]) if others else None
            entry: dict[str, Any] = {
                "accuracy": acc[n],
                "ranking": order,
                "best": order[0],
                "same_best_as_longest": order[0] == max(methods, key=lambda m: acc[longest][m]),
                "finetune_s": _mean_or_none([r["finetune_s"] for r in mine if r["epochs"] == n]),
            }
            if len(methods) > 1:
                entry["kendall_tau_vs_longest"] = float(
                    kendalltau(
                        [acc[n][m] for m in methods], [acc[longest][m] for m in methods]
                    ).statistic
                )
            if CANDIDATE in methods and best_other is not None:
                entry["candidate_minus_best_other"] = acc[n][CANDIDATE] - acc[n][best_other]
                entry["best_other"] = best_other
            per_length[str(n)] = entry
        sweep = [r for r in mine if r["epochs"] == r["sweep_epochs"] and not r.get("from_sweep")]
        cells[name] = {
            "methods": methods,
            "lengths": lengths,
            "per_length": per_length,
            # the sweep's own length must give back the sweep's accuracy (same recipe and seed)
            # the sweep's own length, fine-tuned again, must give back the sweep's accuracy
            # (same recipe and seed); None: taken from the sweep, not fine-tuned again
            "reproduces_sweep": (
                all(abs(r["test_accuracy"] - r["sweep_test_accuracy"]) < 1e-9 for r in sweep)
                if sweep
                else None
            ),
        }
    return cells


def table(summary: dict[str, Any]) -> str:
    lines = []
    for name, cell in summary.items():
        lengths = cell["lengths"]
        lines += [
            f"### {name}",
            "",
            "| method | " + " | ".join(f"{n} epoch(s) % (rank)" for n in lengths) + " |",
            "|---|" + "---|" * len(lengths),
        ]
        for m in sorted(cell["methods"], key=lambda m: -cell["per_length"][str(lengths[-1])]
                        ["accuracy"][m]):  # fmt: skip
            cells = []
            for n in lengths:
                entry = cell["per_length"][str(n)]
                cells.append(f"{100 * entry['accuracy'][m]:.2f} ({entry['ranking'].index(m) + 1})")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines += ["", "| length | Kendall tau vs longest | best method | ppo_lag - best other "
                  "(points) | fine-tune s per method |", "|---|---|---|---|---|"]  # fmt: skip
        for n in lengths:
            e = cell["per_length"][str(n)]
            diff = e.get("candidate_minus_best_other")
            lines.append(
                f"| {n} | {e.get('kendall_tau_vs_longest', float('nan')):.3f} | {e['best']} | "
                + (f"{100 * diff:+.2f} ({e['best_other']})" if diff is not None else "n/a")
                + (f" | {e['finetune_s']:.0f} |" if e["finetune_s"] is not None else " | (sweep) |")
            )
        check = {
            True: "fine-tuned again, it gave back the sweep's accuracies exactly",
            False: "fine-tuned again, it did NOT give back the sweep's accuracies",
            None: "taken from the sweep's compare.json",
        }[cell["reproduces_sweep"]]
        lines += ["", f"The sweep's own length: {check}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cells", type=Path, nargs="+", help="finished sweep cell folders")
    parser.add_argument("--epochs", type=int, nargs="+", required=True, help="lengths to try")
    parser.add_argument("--out", type=Path, required=True, help="results folder")
    parser.add_argument(
        "--recompute-sweep-length",
        action="store_true",
        help="fine-tune the sweep's own length again too (a check that it is reproduced)",
    )
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.epochs):
        parser.error(f"--epochs must all be >= 1, got {args.epochs}")
    for cell in args.cells:
        if not (cell / "done").is_file():
            parser.error(f"{cell} is not a finished sweep cell (no 'done' file)")
    for cell in args.cells:
        measure_cell(cell, sorted(set(args.epochs)), args.out, args.recompute_sweep_length)
    from prune_env.paths import atomic_write_bytes, atomic_write_json

    summary = summarise(read_results(args.out / "results.jsonl"))
    atomic_write_json(summary, args.out / "summary.json")
    text = table(summary)
    atomic_write_bytes(text.encode(), args.out / "table.md")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
