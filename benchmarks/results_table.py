"""Gather a reproduce sweep (benchmarks/reproduce_cpu.sh) into tables, plots and small files.

    python benchmarks/results_table.py runs/reproduce_cpu \\
        --out benchmarks/results/reproduce_vgg16_cpu --latency
    python benchmarks/results_table.py --out benchmarks/results/reproduce_vgg16_cpu

Reads every finished cell folder of the sweep and every cell committed in ``OUT/cells/``
by an earlier session (the second form rebuilds the tables from those alone). A sweep cell
folder (``<env>_<granularity>_b<budget>_s<seed>/done``) gives the ppo_lag run's report.json,
config.json and episodes.jsonl, and its compare.json and compare_episodes/*.jsonl (the
other methods, same base model, budget, search steps and
fine-tuning). Writes into ``--out``:

- ``rows.csv`` / ``rows.json``: one row per cell and method (every seed);
- ``table.md``: per granularity, cost and budget, each method's mean ± std over seeds, and
  ppo_lag's fine-tuned accuracy against the best other method's, paired by seed, with a 95%
  bootstrap interval and what it establishes (``comparison.json``: the same as data);
- ``curves_<granularity>_b<budget>.png``: reward and cost over env steps per searching method;
- ``keep_ratios_<granularity>_b<budget>.png``: ppo_lag against uniform (and the others), seed 0;
- ``cells/<cell>/``: the small files the numbers come from (report, config, compare, and the
  search curves as ``curves.json.gz``), never checkpoints.

``--latency`` measures every pruned network's CPU latency again in this one process, rounds
interleaved across networks, so that no row's latency is taken while another job loads the
machine (the sweep's own measurements are kept in rows.json as ``latency_ms_sweep``).
Cells built with different base recipes are refused. Cells of one recipe may come from base
models trained in different sessions (with default numerics a base is the machine's own):
every method of a cell is pruned from that cell's base and the comparison is paired by seed,
so a base's own accuracy is a per-seed effect; the tables give each method's drop from its
own base beside its accuracy, and the bases' accuracies.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from prune_env.paths import atomic_write_bytes, atomic_write_json
from prune_pipeline.plots import plot_keep_ratios, plot_learning_curves
from prune_pipeline.report import csv_text, markdown_table
from prune_pipeline.run_folder import RunFolder
from prune_pipeline.statistics import paired_bootstrap, verdict

METHOD_ORDER = (
    "ppo_lag", "ppo_pid_lag", "amc", "random_search", "magnitude_global", "tp_global", "uniform",
)  # fmt: skip
BASE_KEYS = (
    "env", "width_mult", "base_epochs", "dataset", "checkpoint", "reward_size", "base_numerics",
)  # fmt: skip
CANDIDATE = "ppo_lag"  # the method each cell asks about
# The package's Lagrangian agents: "the best baseline" is the best method outside them, the
# pruners a user has without this package (one-shot heuristics, random search, AMC).
LAGRANGIAN = ("ppo_lag", "ppo_pid_lag")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def curve(episodes: list[dict[str, Any]]) -> list[list[float]]:
    """[env_steps, reward, cost] per episode, rounded to keep the committed files small."""
    return [[e["env_steps"], round(e["reward"], 5), round(e["cost"], 5)] for e in episodes]


def load_cell(folder: Path) -> dict[str, Any]:
    runs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "compare.json").exists())
    if len(runs) != 1:
        raise SystemExit(f"error: {folder} should hold one run folder with compare.json")
    folder_run = RunFolder.open(runs[0], complete=True)
    run = folder_run.path
    report = folder_run.report()
    config = folder_run.config_blob
    compare = json.loads(folder_run.file("compare.json").read_text())
    curves = {report["algo"]: curve(folder_run.episodes())}
    for path in sorted((run / "compare_episodes").glob("*.jsonl")):
        episodes = read_jsonl(path)
        if len(episodes) > 1:  # one-shot methods (uniform, magnitude) have no search curve
            curves[path.stem] = curve(episodes)
    return _cell(folder.name, run, report, config, compare, curves)


def load_committed_cell(folder: Path) -> dict[str, Any]:
    """A cell from the small files ``copy_small_files`` committed (``OUT/cells/<cell>/``):
    what an earlier session finished, read back without its run folder."""
    report = json.loads((folder / "report.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    compare = json.loads((folder / "compare.json").read_text())
    curves = json.loads(gzip.decompress((folder / "curves.json.gz").read_bytes()))
    return _cell(folder.name, folder, report, config, compare, curves)


def _cell(
    name: str,
    run: Path,
    report: dict[str, Any],
    config: dict[str, Any],
    compare: list[dict[str, Any]],
    curves: dict[str, list],
) -> dict[str, Any]:
    cfg = config["config"]
    return {
        "name": name,
        "run": run,
        "report": report,
        "config": config,
        "compare": compare,
        "curves": curves,
        "granularity": cfg["granularity"],
        "cost": cfg.get("cost", "params"),
        "budget": cfg["budget"],
        "seed": cfg["seed"],
        # configs written before base_numerics existed trained with the default numerics
        "base_key": tuple(
            cfg.get(k, "default" if k == "base_numerics" else None) for k in BASE_KEYS
        ),
        "base": (report["base"]["test_accuracy"], report["base"].get("weights_sha1")),
        "steps_per_episode": decisions_per_episode(report, cfg, curves),
    }


def decisions_per_episode(
    report: dict[str, Any], cfg: dict[str, Any], curves: dict[str, list]
) -> int | None:
    """Env steps of one layerwise episode: one per decision unit, the count the paper's
    (layerwise) protocol is measured in, also for a run in oneshot mode. Read from the
    pruned network's keep ratios (one per unit). The fallback, for reports without keep
    ratios, is the end of the run's own first logged episode, which counts every env's
    steps: divided by the run's n_envs (the compared methods' curves come from one env
    and are not used)."""
    ratios = report.get("pruned", {}).get("keep_ratios")
    if ratios:
        return len(ratios)
    own = curves.get(report.get("algo", ""))
    if not own:
        return None
    return int(own[0][0]) // max(1, int(cfg.get("n_envs") or 1))


def cell_rows(cell: dict[str, Any]) -> list[dict[str, Any]]:
    report, cfg = cell["report"], cell["config"]["config"]
    rows = []
    for row in cell["compare"]:
        method = row["method"].replace(" (this run)", "")
        if method.startswith("base"):
            continue
        rows.append(
            {
                "cell": cell["name"],
                "granularity": cell["granularity"],
                "cost": cell["cost"],
                "budget": cell["budget"],
                "seed": cell["seed"],
                "method": method,
                "base_test_accuracy": report["base"]["test_accuracy"],
                "base_weights_sha1": report["base"].get("weights_sha1"),
                "base_latency_ms_sweep": report["base"]["latency_ms"],
                "reward_accuracy": row.get("reward_accuracy"),
                "test_accuracy_before_finetune": row.get("test_accuracy_before_finetune"),
                "test_accuracy": row.get("test_accuracy"),
                "params_kept": row.get("params_kept"),
                "flops_kept": row.get("flops_kept"),
                "latency_ms_sweep": row.get("latency_ms"),
                "feasible": row.get("feasible"),
                "search_s": row.get("search_s"),
                "env_steps": row.get("env_steps"),
                "images_evaluated": row.get("images_evaluated"),
                "steps_per_episode": cell["steps_per_episode"],
                "reward_size": cfg.get("reward_size"),
                "finetune_epochs": cfg["finetune_epochs"],
                "keep_ratios": row.get("keep_ratios"),
            }
        )
    return rows


def remeasure_latency(cells: list[dict[str, Any]], rows: list[dict[str, Any]], rounds: int) -> None:
    """Every row's pruned network (and the base) timed again, rounds interleaved."""
    import torch

    from prune_env.costs import measure_latency
    from prune_pipeline.config import JobConfig
    from prune_pipeline.task import make_task

    nets: dict[tuple[str, str], Any] = {}
    for cell in cells:
        cfg = JobConfig.from_saved(cell["config"]["config"])
        cfg.progress = False
        task = make_task(cfg)
        batch = task.latency_batch()
        nets[(cell["name"], "base")] = (task.base_model.eval(), batch)
        for row in rows:
            if row["cell"] == cell["name"] and row["keep_ratios"] is not None:
                nets[(cell["name"], row["method"])] = (
                    task.mdp.pruned_network(row["keep_ratios"]),
                    batch,
                )
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    with torch.inference_mode():
        for _ in range(rounds):
            for key, (net, batch) in nets.items():
                times[key].append(measure_latency(net, batch, repeats=5) * 1000)
    for row in rows:
        base = np.median(times[(row["cell"], "base")])
        row["base_latency_ms"] = float(base)
        key = (row["cell"], row["method"])
        row["latency_ms"] = float(np.median(times[key])) if key in times else None


def keep_remeasured_latency(rows: list[dict[str, Any]], previous: Path) -> None:
    """Latencies an earlier ``--latency`` run measured (kept in ``previous`` rows.json) stay
    in the rows of the same cell and method when the tables are rebuilt without it."""
    if not previous.is_file():
        return
    timed = {
        (r["cell"], r["method"]): r
        for r in json.loads(previous.read_text())
        if r.get("latency_ms") is not None
    }
    for row in rows:
        old = timed.get((row["cell"], row["method"]))
        if old is not None and old.get("keep_ratios") == row.get("keep_ratios"):
            row["latency_ms"], row["base_latency_ms"] = old["latency_ms"], old["base_latency_ms"]


def mean_std(values: list[Any], fmt: str, scale: float = 1.0) -> str:
    xs = [v * scale for v in values if v is not None]
    if not xs:
        return "n/a"
    spread = fmt.replace("+", "")  # a signed mean, an unsigned spread
    text = f"{np.mean(xs):{fmt}} ± {np.std(xs):{spread}}" if len(xs) > 1 else f"{xs[0]:{fmt}}"
    return text + (f" ({len(values) - len(xs)} n/a)" if len(xs) < len(values) else "")


def summary(rows: list[dict[str, Any]]) -> str:
    headers = [
        "method",
        "seeds",
        "test acc before FT %",
        "test acc after FT %",
        "drop from base (points)",
        "params kept",
        "FLOPs kept",
        "latency ms (b64, CPU)",
        "feasible",
        "search s",
        "env steps",
        "images evaluated",
    ]
    latency_key = "latency_ms" if any("latency_ms" in r for r in rows) else "latency_ms_sweep"
    out = []
    for (granularity, cost, budget), group in sorted(cell_groups(rows).items()):
        base = group[0]
        out.append(
            f"#### {granularity} granularity, {cost} budget {budget:g}\n\n"
            f"{base_text(group)}, {base_latency_text(group)}; fine-tuning "
            f"{base['finetune_epochs']} epoch(s) for every method.\n"
        )
        table = []
        methods = sorted({r["method"] for r in group}, key=_method_rank)
        for method in methods:
            rs = [r for r in group if r["method"] == method]
            table.append(
                [
                    method,
                    len(rs),
                    mean_std([r["test_accuracy_before_finetune"] for r in rs], ".2f", 100),
                    mean_std([r["test_accuracy"] for r in rs], ".2f", 100),
                    mean_std([_drop(r) for r in rs], "+.2f", 100),
                    mean_std([r["params_kept"] for r in rs], ".4f"),
                    mean_std([r["flops_kept"] for r in rs], ".4f"),
                    mean_std([r.get(latency_key) for r in rs], ".2f"),
                    f"{sum(bool(r['feasible']) for r in rs)}/{len(rs)}",
                    mean_std([r["search_s"] for r in rs], ".0f"),
                    mean_std([r["env_steps"] for r in rs], ".0f"),
                    mean_std([r.get("images_evaluated") for r in rs], ".3g"),
                ]
            )
        out.append(markdown_table(headers, table) + "\n")
        paper = paper_protocol_text(group)
        if paper:
            out.append(paper + "\n")
        for result in cell_comparisons(group):
            verdict_line = comparison_text(result)
            if verdict_line:
                out.append(verdict_line + "\n")
    return "\n".join(out)


def _drop(row: dict[str, Any]) -> float | None:
    """Fine-tuned test accuracy minus the accuracy of the row's own base model."""
    if row["test_accuracy"] is None:
        return None
    return row["test_accuracy"] - row["base_test_accuracy"]


def base_text(group: list[dict[str, Any]]) -> str:
    """The base model(s) a group of rows was pruned from: one, or one per cell's session."""
    bases = {(r["base_weights_sha1"], r["base_test_accuracy"]) for r in group}
    if len(bases) == 1:
        return f"Base model: test accuracy {100 * group[0]['base_test_accuracy']:.2f}%"
    accs = [100 * a for _, a in sorted(bases, key=repr)]
    return (
        f"Base models: {len(bases)} (same recipe, trained in the sessions that ran the cells; "
        f"every method of a seed is pruned from that seed's base), test accuracy "
        f"{np.mean(accs):.2f} ± {np.std(accs):.2f}% ({min(accs):.2f}-{max(accs):.2f})"
    )


def base_latency_text(group: list[dict[str, Any]]) -> str:
    """The base's latency: each seed's run timed it beside its methods (or ``--latency`` did),
    so it is one value per seed, summarised like the methods' column (before, the header
    showed the first seed's alone)."""
    per_seed = {r["seed"]: r.get("base_latency_ms", r["base_latency_ms_sweep"]) for r in group}
    values = [per_seed[seed] for seed in sorted(per_seed)]
    text = f"latency {mean_std(values, '.2f')} ms"
    return text + (f" (over {len(values)} seeds' timings)" if len(values) > 1 else "")


# The paper's search protocol (Malik et al. 2022): 40,000 env steps, every episode's candidate
# scored on 20,000 reward images after 0, 32 or 128 fine-tuning steps.
PAPER_STEPS, PAPER_REWARD_IMAGES, PAPER_FINETUNE_STEPS = 40_000, 20_000, (0, 32, 128)
PAPER_FINETUNE_BATCH = 128  # not stated in the paper: this package's fine-tuning batch


def paper_protocol(steps_per_episode: int) -> dict[int, int]:
    """Images the paper's search protocol runs on a network of ``steps_per_episode`` decision
    units, per number of fine-tuning steps (every episode evaluated, no cache)."""
    episodes = PAPER_STEPS // steps_per_episode
    return {
        k: episodes * (PAPER_REWARD_IMAGES + k * PAPER_FINETUNE_BATCH) for k in PAPER_FINETUNE_STEPS
    }


def paper_protocol_text(group: list[dict[str, Any]], candidate: str = CANDIDATE) -> str:
    mine = [r for r in group if r["method"] == candidate and r.get("images_evaluated")]
    if not mine or not mine[0].get("steps_per_episode"):
        return ""
    images = float(np.mean([r["images_evaluated"] for r in mine]))
    per_image = float(np.mean([r["search_s"] / r["images_evaluated"] for r in mine]))
    paper = paper_protocol(int(mine[0]["steps_per_episode"]))
    parts = [
        f"{k} fine-tuning steps {n:.3g} images ({n / images:.0f}x; ~{n * per_image / 3600:.1f} h "
        f"here at {candidate}'s seconds per image)"
        for k, n in paper.items()
    ]
    return (
        f"Search compute: {candidate} ran {images:.3g} images in "
        f"{np.mean([r['search_s'] for r in mine]):.0f} s on average; the paper's protocol "
        f"({PAPER_STEPS:,} steps, {PAPER_REWARD_IMAGES:,} reward images per episode) on this "
        f"network: " + "; ".join(parts) + " (hours extrapolated from this search's seconds "
        "per image, agent updates included; fine-tuning images counted like forward ones)."
    )


def cell_groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str, float], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["granularity"], row.get("cost", "params"), row["budget"])].append(row)
    return groups


def compare_candidate(
    group: list[dict[str, Any]],
    candidate: str = CANDIDATE,
    exclude: tuple[str, ...] = (),
    label: str = "the best other method",
) -> dict[str, Any]:
    """``candidate``'s fine-tuned test accuracy against the best other method of one cell
    (``exclude``: methods not considered, e.g. the package's other Lagrangian agent when the
    question is the best baseline; ``label`` names the comparison in the text).

    The best other method is, among those whose every seed delivered a feasible model, the
    one covering most of the candidate's seeds, then with the highest mean test accuracy on
    them; the difference is paired by seed (same base,
    same fine-tuning seed) and given with its 95% paired bootstrap interval
    (``prune_pipeline.statistics``). Seeds either method lacks are left out, and said so; a
    candidate over the budget on any seed gets no better/worse verdict.
    """
    by_method: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in group:
        by_method[row["method"]][row["seed"]] = row
    if candidate not in by_method:
        return {}
    others = {
        m: seeds for m, seeds in by_method.items()
        if m != candidate and m not in exclude and seeds and all(
            r["feasible"] and r["test_accuracy"] is not None for r in seeds.values()
        )
    }  # fmt: skip
    if not others:
        return {"candidate": candidate, "best_other": None, "against": label}
    mine = {s: r for s, r in by_method[candidate].items() if r["test_accuracy"] is not None}

    def rank(method: str) -> tuple[int, float]:
        # covering more of the candidate's seeds first, then the mean on the shared seeds
        shared = [s for s in mine if s in others[method]] or list(others[method])
        return len(shared), float(np.mean([others[method][s]["test_accuracy"] for s in shared]))

    best = max(others, key=rank)
    seeds = sorted(s for s in mine if s in others[best])
    over = sum(not mine[s]["feasible"] for s in seeds)
    result: dict[str, Any] = {
        "candidate": candidate,
        "against": label,
        "best_other": best,
        "seeds": seeds,
        "seeds_left_out": sorted((set(by_method[candidate]) | set(others[best])) - set(seeds)),
        "candidate_feasible": f"{len(seeds) - over}/{len(seeds)}",
    }
    if seeds:
        diff = paired_bootstrap(
            [mine[s]["test_accuracy"] for s in seeds],
            [others[best][s]["test_accuracy"] for s in seeds],
        )
        result["difference"] = diff.to_dict()
        # an over-budget model is not an answer to the budget, whatever its accuracy
        result["verdict"] = verdict(diff) if not over else f"over budget on {over} seed(s)"
    return result


def cell_comparisons(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The two questions of a cell: ppo_lag against the best other method of all, and
    against the best baseline (no Lagrangian agent of this package)."""
    results = [compare_candidate(group)]
    if any(r["method"] in LAGRANGIAN and r["method"] != CANDIDATE for r in group):
        results.append(compare_candidate(group, exclude=LAGRANGIAN, label="the best baseline"))
    return [r for r in results if r]


def comparison_text(result: dict[str, Any]) -> str:
    if not result:
        return ""
    if result.get("best_other") is None:
        return (
            f"No method for {result.get('against', 'the best other method')} delivered a "
            f"feasible model on every seed."
        )
    if "difference" not in result:
        return f"{result['candidate']} and {result['best_other']} share no seed."
    d = result["difference"]
    left_out = f"; seeds left out: {result['seeds_left_out']}" if result["seeds_left_out"] else ""
    return (
        f"**{result['candidate']} against {result.get('against', 'the best other method')} "
        f"({result['best_other']})**: "
        f"test accuracy difference {100 * d['mean']:+.2f} points, 95% paired bootstrap "
        f"interval [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] over {d['n']} seed(s) "
        f"({d['method']}): **{result['verdict']}**; {result['candidate']} feasible "
        f"{result['candidate_feasible']}{left_out}."
    )


def _method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def plots(cells: list[dict[str, Any]], out: Path) -> None:
    # one figure per cell: a FLOPs and a params budget of the same size are different cells
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        groups[(cell["granularity"], cell["cost"], cell["budget"])].append(cell)
    for (granularity, cost, budget), group in groups.items():
        # params cells keep their earlier names; other costs are named like the cell folders
        tag = (
            f"{granularity}_b{budget:g}"
            if cost == "params"
            else f"{granularity}_{cost}_b{budget:g}"
        )
        curves: dict[str, list] = defaultdict(list)
        for cell in sorted(group, key=lambda c: c["seed"]):
            for method, c in cell["curves"].items():
                curves[method].append(c)
        ordered = {m: curves[m] for m in sorted(curves, key=_method_rank)}
        title = f"{group[0]['report']['env']}, {granularity}, {cost} budget {budget:g}"
        plot_learning_curves(ordered, budget, out / f"curves_{tag}.png", title)
        first = min(group, key=lambda c: c["seed"])
        series = {
            r["method"].replace(" (this run)", ""): r["keep_ratios"]
            for r in first["compare"]
            if r.get("keep_ratios") is not None
        }
        series = {m: series[m] for m in sorted(series, key=_method_rank)}
        layers = first["report"]["pruned"]["layers"]
        plot_keep_ratios(
            series, layers, out / f"keep_ratios_{tag}.png", f"{title}, seed {first['seed']}"
        )


def copy_small_files(cell: dict[str, Any], out: Path) -> None:
    folder = out / "cells" / cell["name"]
    if Path(cell["run"]).resolve() == folder.resolve():
        return  # read back from the committed files: nothing new to copy
    atomic_write_bytes(
        gzip.compress(json.dumps(cell["curves"]).encode(), mtime=0), folder / "curves.json.gz"
    )
    # compare.json last: its presence marks a committed cell as whole
    for name in ("report.json", "config.json", "compare.md", "compare.json"):
        atomic_write_bytes((cell["run"] / name).read_bytes(), folder / name)


def splice_doc(doc: Path, name: str, text: str) -> None:
    """Replace the block of ``doc`` between the ``results:<name>`` markers with ``text``, so
    that the doc's tables are regenerated from the committed results, never typed in."""
    begin, end = f"<!-- results:{name} begin -->", f"<!-- results:{name} end -->"
    content = doc.read_text()
    if (
        content.count(begin) != 1
        or content.count(end) != 1
        or content.index(begin) > content.index(end)
    ):
        raise SystemExit(f"error: {doc} needs one '{begin}' line, then one '{end}' line")
    head, rest = content.split(begin)
    _, tail = rest.split(end)
    generated = f"{begin}\n<!-- written by benchmarks/results_table.py; do not edit -->\n\n"
    atomic_write_bytes((head + generated + text.strip() + "\n\n" + end + tail).encode(), doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "sweep",
        type=Path,
        nargs="?",
        default=None,
        help="the OUT folder of benchmarks/reproduce_cpu.sh (leave out to rebuild the tables "
        "from the cells already committed in --out)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="where tables and plots go; its cells/ (what earlier sessions committed) are read "
        "too, so that a sweep spread over sessions gives one table",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="a Markdown file whose block between '<!-- results:OUTNAME begin -->' and "
        "'<!-- results:OUTNAME end -->' (OUTNAME: --out's folder name) is replaced by table.md",
    )
    parser.add_argument("--latency", action="store_true", help="time every network again here")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved latency rounds")
    args = parser.parse_args(argv)
    folders = []
    if args.sweep is not None:
        folders = sorted(p for p in args.sweep.iterdir() if (p / "done").exists())
    cells = [load_cell(p) for p in folders]
    fresh = {c["name"] for c in cells}
    committed = args.out / "cells"
    if committed.is_dir():
        cells += [
            load_committed_cell(p)
            for p in sorted(committed.iterdir())
            if p.name not in fresh and (p / "compare.json").is_file()
        ]
    if not cells:
        raise SystemExit(
            f"error: no finished cell (a folder with 'done') in {args.sweep} and none "
            f"committed in {committed}"
        )
    if args.latency and len(cells) > len(folders):
        raise SystemExit(
            "error: --latency times every network again here, but some cells were read back "
            "from committed files (their base models are not on this machine)"
        )
    # Cells may come from base models trained in different sessions (a converged base takes
    # too long to retrain each session under portable numerics), but never from different
    # recipes: each cell pairs its methods on its own base, and the comparison is per seed.
    recipes = {c["base_key"] for c in cells}
    if len(recipes) > 1:
        listed = sorted(recipes, key=repr)  # older configs hold None where newer ones hold text
        raise SystemExit(f"error: cells use {len(recipes)} different base recipes: {listed}")
    rows = [r for c in cells for r in cell_rows(c)]
    if args.latency:
        remeasure_latency(cells, rows, args.rounds)
    else:
        keep_remeasured_latency(rows, args.out / "rows.json")
    args.out.mkdir(parents=True, exist_ok=True)
    for cell in cells:
        copy_small_files(cell, args.out)
    atomic_write_json(rows, args.out / "rows.json")
    columns = [k for k in rows[0] if k != "keep_ratios"]
    table = [[r.get(k) for k in columns] for r in rows]
    atomic_write_bytes(csv_text(columns, table).encode(), args.out / "rows.csv")
    text = summary(rows)
    atomic_write_bytes(text.encode(), args.out / "table.md")
    comparisons = [
        {"granularity": g, "cost": c, "budget": b, **result}
        for (g, c, b), group in sorted(cell_groups(rows).items())
        for result in cell_comparisons(group)
    ]
    atomic_write_json(comparisons, args.out / "comparison.json")
    plots(cells, args.out)
    if args.doc is not None:
        splice_doc(args.doc, args.out.name, text)
    print(text)
    print(f"{len(cells)} cells, {len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
