"""Does what an agent finds on a surrogate env hold on the real env?

Held-out fidelity (Kendall tau, MAE on random candidates) says nothing about the corners an
optimiser drives into, where a regressor has no data and may be optimistic. This script
trains an algorithm on the surrogate, then evaluates its final policy's candidate and its best
feasible candidate on the real env of the same task, for several seeds:

    python benchmarks/surrogate_transfer.py --algo ppo_lag --seeds 3

Output: a table of surrogate against real accuracy per candidate, and
benchmarks/results/surrogate_transfer_<env>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import prune_env
from agents import registry
from agents.recording import rollout
from prune_env.paths import atomic_write_json
from prune_env.tasks import get_task
from prune_pipeline.report import markdown_table

QUICK = get_task("quick")  # the task the shipped logs were made on (surrogate_logs.py)
# PPO's arguments as train.py --preset quick gives them (other algorithms: their defaults)
PPO = {**QUICK.on_policy_kwargs(), "device": "cpu"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="VGG16Prune-v0", help="the real env id")
    parser.add_argument("--algo", default="ppo_lag", help="algorithm trained on the surrogate")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument(
        "--total-timesteps", type=int, default=QUICK.total_timesteps, help="steps per seed"
    )
    parser.add_argument("--budget", type=float, default=0.1, help="params budget")
    args = parser.parse_args()
    surrogate_id = f"{args.env.removesuffix('-v0')}Surrogate-v0"
    kwargs = PPO if args.algo.startswith("ppo") else {}
    real = prune_env.make(
        args.env, **QUICK.env_kwargs(), train_base=True, budget=args.budget
    ).unwrapped
    rows, results = [], []
    for seed in range(args.seeds):
        surrogate = prune_env.make(surrogate_id, budget=args.budget)
        result = registry.run(args.algo, surrogate, args.total_timesteps, seed=seed, **kwargs)
        wrapped = registry.wrapped_env(args.algo, surrogate, **kwargs)
        wrapped.reset(seed=seed)
        final = rollout(result.agent, wrapped)
        candidates = {"final policy": (final["keep_ratios"], final["accuracy"])}
        if result.best_feasible is not None:
            best = result.best_feasible
            candidates["best feasible"] = (best.keep_ratios, best.reward)
        for name, (ratios, predicted) in candidates.items():
            measured = real.evaluate(ratios)
            results.append({"seed": seed, "candidate": name, "surrogate": predicted,
                            "real": measured["accuracy"], "cost": measured["cost"],
                            "keep_ratios": ratios})  # fmt: skip
            rows.append([seed, name, f"{predicted:.3f}", f"{measured['accuracy']:.3f}",
                         f"{measured['cost']:.4f}"])  # fmt: skip
    print(markdown_table(["seed", "candidate", "surrogate acc", "real acc", "cost"], rows))
    out = Path(__file__).resolve().parent / "results" / f"surrogate_transfer_{args.env}.json"
    atomic_write_json({"args": vars(args), "fidelity": surrogate.unwrapped.fidelity,
                       "results": results}, out)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
