"""Where does a trained agent's Beta policy sit on a problem with a known optimum?

    python benchmarks/policy_spread.py ppo_lag concave_linear 0.05 --steps 60000 --seed 0
    python benchmarks/policy_spread.py ppo_lag concave_linear 0.05 \\
        --algo-kwargs '{"learning_rate": 0.001}'                          # a variant

Trains the agent on ``agents.problems`` with the registry's defaults (and ``--algo-kwargs``),
then prints, per step, the Beta's concentration ``a + b``, its mean against the optimal
allocation and its spread (std / mean); the deterministic policy's reward share and cost
ratio; and the distribution of sampled episode costs (mean, the quantile the multipliers hold
at the limit, ``cost_quantile``, violation rate) against the limit: the gap between that
quantile and the mean is what the policy's spread costs the deterministic policy.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch as th


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("algo", help="a registry name with a Beta policy (ppo_lag, ppo_pid_lag)")
    parser.add_argument("problem", help="a name of agents.problems.PROBLEMS")
    parser.add_argument("budget", type=float)
    parser.add_argument("--unit", type=float, default=1.0, help="cost unit (cost_scale)")
    parser.add_argument("--steps", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algo-kwargs", default="{}", help="JSON of the agent's arguments")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    from agents import registry
    from agents.problems import make_problem

    env = make_problem(args.problem, budget=args.budget, cost_scale=args.unit)
    x_opt, reward_opt, _ = env.optimum()
    start = time.perf_counter()
    result = registry.run(args.algo, env, total_timesteps=args.steps, seed=args.seed,
                          device="cpu", **json.loads(args.algo_kwargs))  # fmt: skip
    with th.no_grad():
        dist = result.agent.policy.get_distribution(th.eye(env.n)).distribution
    if not isinstance(dist, th.distributions.Beta):
        parser.error(f"{args.algo}'s policy is not a Beta ({type(dist).__name__})")
    a, b = dist.concentration1.squeeze(-1).numpy(), dist.concentration0.squeeze(-1).numpy()
    mean = a / (a + b)
    std = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    np.set_printoptions(precision=3, suppress=True)
    print("a + b      ", np.round(a + b, 1))
    print("mean       ", mean)
    print("optimum    ", x_opt)
    print("std / mean ", std / mean)
    reward, cost = env.value(mean)
    print(f"deterministic policy: {reward / reward_opt:.3f} of the optimum at "
          f"{cost / env.cost_limit:.3f}x the limit")  # fmt: skip
    samples = np.random.default_rng(args.seed).beta(a, b, size=(4000, env.n))
    costs = np.array([env.value(s)[1] for s in samples]) / env.cost_limit
    q = result.agent.cost_quantile or 0.5  # the statistic the multipliers held
    print(f"sampled episode cost / limit: mean {costs.mean():.3f}, {q:g}-quantile "
          f"{np.quantile(costs, q):.3f}, violations {np.mean(costs > 1):.3f}; lambda "
          f"{result.agent.lambdas}; {time.perf_counter() - start:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
