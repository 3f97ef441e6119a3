"""Does the search reward predict the fine-tuned network? An EagleEye-style fidelity study.

    python benchmarks/fidelity.py --out benchmarks/results/fidelity_vgg16_quick
    python benchmarks/fidelity.py --env ResNet56Prune-v0 --out benchmarks/results/fidelity_r56

On the quick task of ``--env`` (``prune_env.tasks``: width 0.25, 3-epoch base with its
held-out split, as ``train.py --preset quick``), ``--candidates`` feasible candidates per
budget: random keep
ratios pushed onto the budget (as random_search draws them), plus, with ``--search-logs``,
feasible episodes of committed searches. Each candidate is

- scored by every reward variant, timed per evaluation: the env's reward as configured
  today (1000 reward images, BatchNorm re-calibration) with its four metrics from one pass
  (accuracy, neg_ce, agreement, neg_kl), the same after k in ``--finetune-steps`` SGD steps
  (the paper's 32 and 128), and accuracy on every held-out image (``--large-reward-size``);
- fine-tuned the way train.py fine-tunes (``--finetune-epochs`` over the whole training
  split, same recipe and seed) and measured on the test split: the ground truth;
- with ``--long-finetune-epochs E``, the first ``--long-subset`` candidates of each budget
  are also fine-tuned E epochs from the pruned network (the job's recipe with E epochs): a
  second ground truth, against which the one-epoch accuracy and every variant are ranked
  too (does one epoch already tell which candidate a longer fine-tune makes best?).

Per variant: Kendall tau and Spearman correlation with the fine-tuned accuracy (scipy),
top-5 overlap, and seconds per evaluation. Each candidate is one JSON in ``OUT/candidates/``
(a re-run skips finished ones); ``OUT/summary.json``, ``OUT/table.md`` and
``OUT/fidelity_b<budget>.png`` (one scatter per variant) are rewritten at the end.

Every candidate records the base network it was scored on (``base``: a digest of its weights
and its test accuracy). A base trained again on another machine is another network (the same
seed and recipe gave 61.22% and 60.73% test accuracy for the ResNet-56 quick base on two
build machines; ``--base-numerics portable`` trains one that does not depend on the machine, see
prune_env/numerics.py), so a run refuses to add candidates to an ``OUT`` whose candidates were
scored on another base, or on an unrecorded one: its correlations would mix two networks.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from prune_env.constraints import largest_feasible, within_budget
from prune_env.numerics import NUMERICS, state_digest
from prune_env.tasks import get_task

# The quick task's env, on the CPU (the workers score candidates in parallel processes).
QUICK = {**get_task("quick").env_kwargs(), "device": "cpu"}
METRICS = ("accuracy", "neg_ce", "agreement", "neg_kl")
PICK_OF, PICK_DRAWS = 20, 2000
RERANK_TOP = 5


def make_env(env_id: str, **overrides: Any):
    import gymnasium as gym

    import prune_env  # noqa: F401  (registers the ids)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gym.make(
            env_id, **{**QUICK, "train_base": True, "cache_size": 0, **overrides}
        ).unwrapped


def base_identity(env) -> dict[str, Any]:
    """The base network the scores depend on: a digest of its weights, its test accuracy."""
    return {
        "sha1": state_digest(env.base_model),
        "test_accuracy": env.base_info.get("test_accuracy"),
        "checkpoint": Path(str(env.base_info.get("source", ""))).name,
    }


def write_base_record(env, identity: dict[str, Any], out: Path) -> None:
    """``OUT/base.json``: the base's identity and its checkpoint record (recipe, numerics,
    machine, digests of its weights and training images), written once, so that a session
    that resumes the study on another machine can see why its base differs, if it does."""
    path = out / "base.json"
    if path.is_file():
        return
    record = {
        k: v for k, v in env.base_info.items()
        if k != "source" and isinstance(v, (str, int, float, bool, dict, list, type(None)))
    }  # fmt: skip
    path.write_text(json.dumps({"identity": identity, "record": record}, indent=1) + "\n")


def check_same_base(rows: list[dict[str, Any]], base: dict[str, Any], out: Path) -> None:
    """Refuse to score into ``out`` when its candidates were scored on another base."""
    other = [r["name"] for r in rows if r.get("base", {}).get("sha1") != base["sha1"]]
    if other:
        recorded = {r.get("base", {}).get("test_accuracy", "unrecorded") for r in rows}
        raise SystemExit(
            f"--out {out}: {len(other)} candidate(s) (e.g. {other[0]}) were scored on another "
            f"base network (test accuracy {sorted(map(str, recorded))}) than this one "
            f"({base['checkpoint']}, test accuracy {base['test_accuracy']}, sha1 "
            f"{base['sha1'][:12]}); score into a new --out, or --summary-only to summarise it"
        )


# ----------------------------------------------------------------------------- candidates
def random_candidates(env, budget: float, n: int, seed: int) -> list[list[float]]:
    """Uniform keep ratios shrunk toward min_keep until they fit the budget (random_search)."""
    rng = np.random.default_rng(seed)
    low, out = env.min_keep, []
    while len(out) < n:
        r = rng.uniform(low, 1.0, size=env.n_layers)

        def fits(t: float, r: np.ndarray = r) -> bool:
            return within_budget(env.analytic_costs(low + t * (r - low))[env.specs[0].name], budget)

        # the largest t in [0, 1] whose candidate fits (t = 0 when none does: the snapped
        # candidate is then checked like any other)
        t, _ = largest_feasible(fits, steps=30)
        ratios = env.snap(low + t * (r - low))
        if within_budget(env.analytic_costs(ratios)[env.specs[0].name], budget):
            out.append(ratios.tolist())
    return out


def logged_candidates(paths: list[str], env, budget: float, n: int) -> list[list[float]]:
    """Feasible, distinct episodes of committed searches (their keep ratios)."""
    seen, out = set(), []
    for path in paths:
        with gzip.open(path, "rt") as f:
            episodes = [json.loads(line) for line in f]
        for ep in episodes:
            ratios = ep.get("keep_ratios")
            if ratios is None or len(ratios) != env.n_layers:
                continue
            cost = env.analytic_costs(ratios)[env.specs[0].name]
            key = tuple(np.round(ratios, 6))
            if within_budget(cost, budget) and key not in seen:
                seen.add(key)
                out.append(list(ratios))
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(out))[:n]
    return [out[i] for i in sorted(idx)]


# ----------------------------------------------------------------------------- one candidate
_ENVS: dict[str, Any] = {}


def _init_worker(env_id: str, variants: dict[str, dict[str, Any]], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    for name, overrides in variants.items():
        _ENVS[name] = make_env(env_id, **overrides)


def score_candidate(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from prune_env.zoo import split_accuracy
    from prune_pipeline.pruned import finetune_pruned

    ratios = np.asarray(job["ratios"])
    row: dict[str, Any] = job.pop("existing", None) or {**job, "variants": {}}
    for name, env in _ENVS.items():
        if name in row["variants"]:
            continue
        start = time.perf_counter()
        info = env.evaluate(ratios)
        seconds = time.perf_counter() - start
        row["variants"][name] = {"metrics": info["reward_metrics"], "seconds": seconds}
        row["cost"], row["kept"] = info["cost"], info["kept"]
    env = _ENVS["today"]
    train, test = env.dataset_split("train"), env.dataset_split("test")

    def finetuned(epochs: int) -> tuple[float, float]:
        # a fresh fine-tune from the pruned network, exactly as train.py's with `epochs`
        net = env.pruned_network(ratios)
        start = time.perf_counter()
        arch = env.base_info["arch"]
        finetune_pruned(net, train, env.data_info, arch, epochs, 0.01, seed=0, progress=False)
        return time.perf_counter() - start, split_accuracy(net, test, env.data_info)

    if "finetuned_test_accuracy" not in row:
        row["finetune_seconds"], row["finetuned_test_accuracy"] = finetuned(job["finetune_epochs"])
        row["threads"] = torch.get_num_threads()
    long_epochs = job.get("long_finetune_epochs", 0)
    if long_epochs and row.get("long_finetune", {}).get("epochs") != long_epochs:
        seconds, accuracy = finetuned(long_epochs)
        row["long_finetune"] = {"epochs": long_epochs, "test_accuracy": accuracy,
                                "seconds": seconds}  # fmt: skip
    row.pop("long_finetune_epochs", None)
    return row


# ----------------------------------------------------------------------------- summary
def rank_agreement(score: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Kendall tau and Spearman correlation of a score with a ground truth (scipy)."""
    from scipy.stats import kendalltau, spearmanr

    return {
        "kendall_tau": float(kendalltau(score, truth).statistic),
        "spearman": float(spearmanr(score, truth).statistic),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    truth = np.array([r["finetuned_test_accuracy"] for r in rows])
    top_truth = set(np.argsort(-truth, kind="stable")[:5].tolist())
    # What a search keeps: the best-scored of 20 candidates, averaged over random draws of 20.
    draws = np.random.default_rng(0).random((PICK_DRAWS, len(rows))).argsort(1)[:, :PICK_OF]
    out: dict[str, Any] = {
        "candidates": len(rows),
        "finetuned_accuracy": {"min": truth.min(), "max": truth.max(), "mean": truth.mean()},
        "variants": {},
        "pick_of_20_oracle": float(truth[draws].max(1).mean()),
    }
    for variant in rows[0]["variants"]:
        for metric in rows[0]["variants"][variant]["metrics"]:
            score = np.array([r["variants"][variant]["metrics"][metric] for r in rows])
            top = set(np.argsort(-score, kind="stable")[:5].tolist())
            seconds = np.mean([r["variants"][variant]["seconds"] for r in rows])
            out["variants"][f"{variant}:{metric}"] = {
                **rank_agreement(score, truth),
                "top5_overlap": len(top & top_truth),
                "seconds_per_evaluation": float(seconds),
                # the candidate this reward would keep, and what it reached after fine-tuning
                "chosen_finetuned_accuracy": float(truth[int(np.argmax(score))]),
                "pick_of_20": float(
                    truth[draws[np.arange(PICK_DRAWS), score[draws].argmax(1)]].mean()
                ),
            }
    # Compute where it matters: the search keeps its RERANK_TOP best of 20 by the default
    # reward, and only those are re-scored by a costlier variant, which picks the one kept.
    cheap = np.array([r["variants"]["today"]["metrics"]["accuracy"] for r in rows])
    top = np.take_along_axis(draws, np.argsort(-cheap[draws], axis=1, kind="stable"), 1)
    top = top[:, :RERANK_TOP]
    # (with PICK_OF candidates or fewer every draw is all of them: the rerank is one choice)
    out["rerank"] = {"top": RERANK_TOP, "of": min(PICK_OF, len(rows)), "variants": {}}
    for variant in rows[0]["variants"]:
        if variant == "today":
            continue
        score = np.array([r["variants"][variant]["metrics"]["accuracy"] for r in rows])
        kept = top[np.arange(PICK_DRAWS), score[top].argmax(1)]
        out["rerank"]["variants"][f"{variant}:accuracy"] = float(truth[kept].mean())
    return out


def summarise_long(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The candidates that were also fine-tuned longer: how each variant, and the one-epoch
    accuracy itself, rank them against the longer fine-tune (a second ground truth)."""
    subset = [r for r in rows if "long_finetune" in r]
    epochs = {r["long_finetune"]["epochs"] for r in subset}
    if len(subset) < 5 or len(epochs) != 1:
        return None
    truth = np.array([r["long_finetune"]["test_accuracy"] for r in subset])
    one_epoch = np.array([r["finetuned_test_accuracy"] for r in subset])

    out: dict[str, Any] = {
        "candidates": len(subset),
        "epochs": epochs.pop(),
        "long_accuracy": {"min": truth.min(), "max": truth.max(), "mean": truth.mean()},
        "seconds_per_finetune": float(np.mean([r["long_finetune"]["seconds"] for r in subset])),
        "one_epoch_accuracy": {
            **rank_agreement(one_epoch, truth),
            "gain_mean": float((truth - one_epoch).mean()),
        },
        "variants": {},
    }
    for variant in subset[0]["variants"]:
        for metric in subset[0]["variants"][variant]["metrics"]:
            score = np.array([r["variants"][variant]["metrics"][metric] for r in subset])
            out["variants"][f"{variant}:{metric}"] = rank_agreement(score, truth)
    return out


def long_lines(budget: float, s: dict[str, Any]) -> list[str]:
    lines = [
        f"#### budget {budget:g}, second ground truth: {s['candidates']} of the candidates "
        f"fine-tuned {s['epochs']} epochs (test accuracy {s['long_accuracy']['min']:.3f} to "
        f"{s['long_accuracy']['max']:.3f}, {s['seconds_per_finetune']:.0f} s each)",
        "",
        "| score | Kendall tau | Spearman |",
        "|---|---|---|",
        f"| the one-epoch fine-tuned accuracy | {s['one_epoch_accuracy']['kendall_tau']:.3f} | "
        f"{s['one_epoch_accuracy']['spearman']:.3f} |",
    ]
    ranked = sorted(s["variants"].items(), key=lambda kv: -kv[1]["kendall_tau"])
    lines += [f"| {k} | {v['kendall_tau']:.3f} | {v['spearman']:.3f} |" for k, v in ranked]
    return [*lines, ""]


def write_outputs(out: Path, rows: list[dict[str, Any]], budgets: list[float]) -> None:
    bases = {r.get("base", {}).get("sha1") for r in rows}
    if len(bases) > 1:
        raise SystemExit(f"{out}: candidates scored on {len(bases)} base networks; not summarised")
    summary = {}
    lines = []
    for budget in budgets:
        chosen = [r for r in rows if r["budget"] == budget]
        if len(chosen) < 3:
            continue
        s = summarise(chosen)
        summary[f"{budget:g}"] = s
        lines += [
            f"### budget {budget:g}: {s['candidates']} candidates, fine-tuned test accuracy "
            f"{s['finetuned_accuracy']['min']:.3f} to {s['finetuned_accuracy']['max']:.3f}",
            "",
            f"Best of 20 by the fine-tuned accuracy itself (oracle): {s['pick_of_20_oracle']:.3f}",
            "",
            "| reward variant | Kendall tau | Spearman | top-5 overlap | s / evaluation "
            "| fine-tuned acc. of its best | of its best of 20 |",
            "|---|---|---|---|---|---|---|",
        ]
        ranked = sorted(s["variants"].items(), key=lambda kv: -kv[1]["kendall_tau"])
        for name, v in ranked:
            lines.append(
                f"| {name} | {v['kendall_tau']:.3f} | {v['spearman']:.3f} | "
                f"{v['top5_overlap']}/5 | {v['seconds_per_evaluation']:.2f} | "
                f"{v['chosen_finetuned_accuracy']:.3f} | {v['pick_of_20']:.3f} |"
            )
        lines.append("")
        rerank = s["rerank"]
        lines += [
            f"Top {rerank['top']} of {rerank['of']} by today:accuracy, the one kept chosen by "
            "another variant (fine-tuned accuracy of the kept one, mean over the draws): "
            + ", ".join(f"{k} {v:.3f}" for k, v in rerank["variants"].items()),
            "",
        ]
        long = summarise_long(chosen)
        if long is not None:
            s["long_finetune"] = long
            lines += long_lines(budget, long)
        plot(out / f"fidelity_b{budget:g}.png", chosen, budget)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(path: Path, rows: list[dict[str, Any]], budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [(v, m) for v in rows[0]["variants"] for m in rows[0]["variants"][v]["metrics"]]
    cols = 4
    fig, axes = plt.subplots(
        -(-len(names) // cols), cols, figsize=(4 * cols, 3.2 * -(-len(names) // cols))
    )
    truth = [r["finetuned_test_accuracy"] for r in rows]
    for ax, (variant, metric) in zip(np.ravel(axes), names, strict=False):
        score = [r["variants"][variant]["metrics"][metric] for r in rows]
        ax.scatter(score, truth, s=12)
        ax.set_title(f"{variant}: {metric}", fontsize=9)
        ax.set_ylabel("fine-tuned test acc.", fontsize=8)
    for ax in np.ravel(axes)[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"reward variants vs accuracy after fine-tuning, budget {budget:g}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="VGG16Prune-v0")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--candidates", type=int, default=50, help="random ones per budget")
    parser.add_argument("--search-logs", nargs="*", default=[], help="episodes.jsonl.gz files")
    parser.add_argument("--logged", type=int, default=0, help="logged candidates per budget")
    parser.add_argument("--finetune-steps", type=int, nargs="*", default=[32, 128])
    parser.add_argument("--large-reward-size", type=int, default=4800)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument(
        "--long-finetune-epochs",
        type=int,
        default=0,
        help="also fine-tune the first --long-subset candidates of each budget this many "
        "epochs (a second ground truth); 0: none",
    )
    parser.add_argument("--long-subset", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--extra-variants",
        default="{}",
        help="more variants as JSON {name: env kwargs}; scored on finished candidates too",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--base-numerics",
        default="default",
        choices=list(NUMERICS),
        help="how the base is trained: 'portable' gives the same base on another machine "
        "(prune_env.numerics), so that a study can span sessions",
    )
    parser.add_argument(
        "--summary-only", action="store_true", help="rewrite the summary from OUT/candidates"
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.long_finetune_epochs < 0 or args.long_subset < 0:
        parser.error("--long-finetune-epochs and --long-subset must be >= 0")

    out = Path(args.out)
    (out / "candidates").mkdir(parents=True, exist_ok=True)
    if args.summary_only:
        rows = [json.loads(p.read_text()) for p in sorted((out / "candidates").glob("*.json"))]
        write_outputs(out, rows, sorted({r["budget"] for r in rows}))
        return
    # trains and caches the base model once, before the workers
    base = make_env(args.env, base_numerics=args.base_numerics)
    identity = base_identity(base)
    print(f"base: {base.base_info.get('source')}, held out {base.heldout_size} images, "
          f"test accuracy {identity['test_accuracy']}, sha1 {identity['sha1'][:12]}")  # fmt: skip
    check_same_base(
        [json.loads(p.read_text()) for p in sorted((out / "candidates").glob("*.json"))],
        identity,
        out,
    )
    write_base_record(base, identity, out)
    jobs = []
    for budget in args.budgets:
        cands = [("random", r) for r in random_candidates(base, budget, args.candidates, 0)]
        if args.logged:
            logged = logged_candidates(args.search_logs, base, budget, args.logged)
            cands += [("search", r) for r in logged]
        for i, (source, ratios) in enumerate(cands):
            name = f"b{budget:g}_{source}_{i:03d}"
            # random candidates come first and are exchangeable: the first ones are a sample
            long = args.long_finetune_epochs if source == "random" and i < args.long_subset else 0
            jobs.append(
                {
                    "name": name,
                    "budget": budget,
                    "source": source,
                    "ratios": ratios,
                    "finetune_epochs": args.finetune_epochs,
                    "long_finetune_epochs": long,
                    "base": identity,
                }
            )
    variants: dict[str, dict[str, Any]] = {"today": {}}
    for k in args.finetune_steps:
        variants[f"finetune{k}"] = {"finetune_steps": k}
    if args.large_reward_size:
        variants[f"reward{args.large_reward_size}"] = {
            "reward_size": args.large_reward_size,
            "bn_calib_size": 128,
        }
    variants.update(json.loads(args.extra_variants))
    # every variant scores the same base; an extra variant may still name its own numerics
    variants = {k: {"base_numerics": args.base_numerics, **v} for k, v in variants.items()}
    todo = []
    for job in jobs:
        path = out / "candidates" / f"{job['name']}.json"
        if path.is_file():
            existing = json.loads(path.read_text())
            long = job["long_finetune_epochs"]
            long_done = not long or existing.get("long_finetune", {}).get("epochs") == long
            if set(variants) <= set(existing["variants"]) and long_done:
                continue
            job["existing"] = existing  # only its missing variants are scored
        todo.append(job)
    print(f"{len(jobs)} candidates, {len(todo)} to score, {args.jobs} processes", flush=True)
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    start = time.perf_counter()
    with ProcessPoolExecutor(
        args.jobs, initializer=_init_worker, initargs=(args.env, variants, threads)
    ) as pool:
        for done, row in enumerate(pool.map(score_candidate, todo), 1):
            path = out / "candidates" / f"{row['name']}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(row))
            tmp.replace(path)
            print(
                f"[{done}/{len(todo)}] {row['name']}: cost {row['cost']:.3f}, reward "
                f"{row['variants']['today']['metrics']['accuracy']:.3f}, fine-tuned "
                f"{row['finetuned_test_accuracy']:.3f} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
    # The summary covers every finished candidate in OUT (earlier runs' budgets included).
    rows = [json.loads(p.read_text()) for p in sorted((out / "candidates").glob("*.json"))]
    meta = {"env": args.env, "quick": QUICK, "variants": variants, "args": vars(args)}
    (out / f"config_{'_'.join(f'b{b:g}' for b in args.budgets)}.json").write_text(
        json.dumps(meta, indent=1)
    )
    write_outputs(out, rows, sorted({r["budget"] for r in rows}))


if __name__ == "__main__":
    main()
