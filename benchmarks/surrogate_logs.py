"""Regenerate the evaluation logs that the surrogate envs learn from.

Each log is a set of real evaluations of one pruning env: random keep-ratio vectors, each
layer's ratio drawn uniformly in [min_keep, 1], or, for ``--extreme-share`` of the vectors,
from a mixture that puts a third of the layers at min_keep and a third at 1, half of those
as two blocks (every layer before a cut alike, every layer after it alike): the corners an
RL search drives into, which uniform vectors almost never visit. Half of all vectors are
then scaled down onto a parameter budget drawn log-uniformly in [0.02, 0.6] (where
constrained searches spend their time). The env writes every evaluation itself
(``eval_log=``); the finished log is gzipped into ``prune_env/surrogate_data/<env id>.jsonl.gz``,
which the ``*PruneSurrogate-v0`` ids read. ``--append`` adds to the existing log.

    python benchmarks/surrogate_logs.py --env VGG16Prune-v0 --n 2000    # CPU: about 8 minutes

The env is the one ``train.py --preset quick`` prunes (the quick task of ``prune_env.tasks``:
width 0.25, a 3-epoch base model, a 1,000-image reward split), so the surrogate answers for
the same task as the CPU demo.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import prune_env
from prune_env.constraints import largest_feasible, within_budget
from prune_env.tasks import get_task

DATA_DIR = Path(__file__).resolve().parents[1] / "prune_env" / "surrogate_data"


def scaled_to(env, ratios: np.ndarray, target: float) -> np.ndarray:
    """``ratios`` moved toward min_keep until the parameter fraction is at most ``target``
    (all the way to min_keep when even that is over it)."""
    low = env.min_keep
    family = lambda t: env.snap(low + t * (ratios - low))  # noqa: E731
    t, _ = largest_feasible(
        lambda t: within_budget(env.analytic_costs(family(t))["params"], target), steps=25
    )
    return family(t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="VGG16Prune-v0", help="env id whose evaluations to log")
    parser.add_argument("--n", type=int, default=2000, help="evaluations to log")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random candidates")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", type=Path, default=None, help="log file (default: shipped one)")
    parser.add_argument("--extreme-share", type=float, default=0.0,
                        help="share of vectors with layers at min_keep or 1")  # fmt: skip
    parser.add_argument("--append", action="store_true", help="add to the existing log")
    args = parser.parse_args()
    out = args.out or DATA_DIR / f"{args.env}.jsonl.gz"
    raw = out.with_name(out.name.removesuffix(".gz") + ".partial")
    raw.unlink(missing_ok=True)
    if args.append and out.is_file():
        with gzip.open(out, "rb") as src, open(raw, "wb") as dst:
            shutil.copyfileobj(src, dst)
    env = prune_env.make(
        args.env, **get_task("quick").env_kwargs(), train_base=True, budget=1.0, cache_size=0,
        device=args.device, eval_log=raw, progress=True,
    ).unwrapped  # fmt: skip
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    for i in tqdm(range(args.n), desc=f"logging {args.env}", unit="eval"):
        ratios = rng.uniform(env.min_keep, 1.0, size=env.n_layers)
        if rng.uniform() < args.extreme_share:
            corner = rng.integers(0, 3, size=env.n_layers)  # 0: min_keep, 1: whole, 2: uniform
            if rng.uniform() < 0.5:  # two blocks: the layers before a cut alike, those after
                cut = rng.integers(1, env.n_layers)
                corner = np.where(np.arange(env.n_layers) < cut, corner[0], corner[-1])
            ratios = np.where(corner == 0, env.min_keep, np.where(corner == 1, 1.0, ratios))
        if i % 2:
            ratios = scaled_to(env, ratios, float(np.exp(rng.uniform(np.log(0.02), np.log(0.6)))))
        env.evaluate(env.snap(ratios))
    with open(raw, "rb") as src, gzip.open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()
    print(f"{args.n} evaluations in {time.perf_counter() - start:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
