"""Another library's algorithm on a pruning env: RLlib's PPO on LeNet5Prune-v0 (or any id).

RLlib's PPO is unconstrained, so it sees the penalised reward ``accuracy - beta * cost``
(``prune_env.wrappers.CostPenalty``); the env's cost is still reported per episode, and the
trained policy's mean actions are rolled out at the end against the budget.

    pip install 'prune-env[rllib]'
    python examples/rllib_ppo.py --env LeNet5Prune-v0 --iterations 20
    python examples/rllib_ppo.py --env VGG11Prune-v0 --env-kwargs '{"dataset": "synthetic"}'

Set ``RAY_ADDRESS`` to train on a running Ray cluster.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from prune_env.constraints import within_budget


def make_env(config: dict):
    """RLlib's env creator: imported in every env runner, so the ids are registered there."""
    import prune_env
    from prune_env.wrappers import CostPenalty

    config = dict(config)
    beta = config.pop("penalty_beta", 1.0)
    env_id = config.pop("env_id")
    if env_id in prune_env.ZOO_IDS:  # a real env: train its base model if none is cached
        config.setdefault("train_base", True)
    return CostPenalty(prune_env.make(env_id, **config), beta)


def mean_action(module, obs: np.ndarray, space) -> np.ndarray:
    """The policy's mean action (RLlib's Gaussian head outputs the means, then log-stds)."""
    with torch.no_grad():
        out = module.forward_inference({"obs": torch.as_tensor(obs[None], dtype=torch.float32)})
    inputs = out["action_dist_inputs"][0].numpy()
    return np.clip(inputs[: space.shape[0]], space.low, space.high).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="LeNet5Prune-v0", help="pruning env id")
    parser.add_argument("--env-kwargs", default="{}", help="JSON of env arguments")
    parser.add_argument("--budget", type=float, default=0.1, help="params budget")
    parser.add_argument("--penalty-beta", type=float, default=1.0, help="reward - beta * cost")
    parser.add_argument("--iterations", type=int, default=10, help="RLlib training iterations")
    parser.add_argument("--batch", type=int, default=256, help="env steps per iteration")
    parser.add_argument("--eval-episodes", type=int, default=3, help="episodes of the result")
    args = parser.parse_args(argv)

    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    env_config = {"env_id": args.env, "budget": args.budget, "penalty_beta": args.penalty_beta,
                  **json.loads(args.env_kwargs)}  # fmt: skip
    register_env("prune", make_env)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(include_dashboard=False, log_to_driver=False)
    config = (
        PPOConfig()
        .environment("prune", env_config=env_config)
        .env_runners(num_env_runners=0)
        .training(train_batch_size=args.batch, minibatch_size=min(64, args.batch), num_epochs=4)
    )
    algo = config.build_algo()
    for i in range(args.iterations):
        stats = algo.train()["env_runners"]
        ret = stats.get("episode_return_mean", float("nan"))
        print(f"iteration {i + 1}: penalised return {ret:.4f} over "
              f"{stats.get('num_episodes', 0)} episodes", flush=True)  # fmt: skip

    env = make_env(env_config)
    module = algo.get_module()
    costs, accuracies = [], []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=episode)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(
                mean_action(module, obs, env.action_space)
            )
            done = terminated or truncated
        costs.append(info["cost"])
        accuracies.append(info["accuracy"])
    feasible = within_budget(np.mean(costs), args.budget)
    print(f"mean policy: accuracy {np.mean(accuracies):.4f}, cost {np.mean(costs):.4f} "
          f"(budget {args.budget}), feasible {feasible}")  # fmt: skip
    algo.stop()
    if started_ray:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
