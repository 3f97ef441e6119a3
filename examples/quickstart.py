"""Quick start: prune LeNet-5 on Fashion-MNIST by hand, before any agent is involved.

Runs on a CPU in about a minute the first time (the base model trains for 8 epochs and is
cached), seconds afterwards. Prints accuracy against parameter cost for uniform keep ratios and
for a few random episodes, with the 10% budget of the paper.

    .venv/bin/python examples/quickstart.py
"""

import gymnasium as gym
import numpy as np

import prune_env  # noqa: F401  (registers the envs)


def run(env: gym.Env, ratios: np.ndarray, seed: int = 0) -> dict:
    env.reset(seed=seed)
    for ratio in ratios:
        _, _, terminated, _, info = env.step(np.array([ratio], dtype=np.float32))
    assert terminated
    return info


def main() -> None:
    # train_base=True: the first run trains the LeNet-5 base model (about a minute), later
    # runs load it from the cache; without it, gym.make refuses to train anything.
    env = gym.make("LeNet5Prune-v0", budget=0.1, cost="params", train_base=True, progress=True)
    base = env.unwrapped
    print(f"base model: {base.base_info['source']}")
    print(
        f"test accuracy {base.base_info.get('test_accuracy', float('nan')):.4f}, "
        f"reward-split accuracy {base.base_accuracy:.4f}, {base.n_layers} prunable layers"
    )
    print(f"{'episode':<18} {'accuracy':>8} {'params kept':>11} {'feasible':>8}  keep ratios")
    for ratio in (1.0, 0.5, 0.3, 0.2, 0.1):
        info = run(env, np.full(base.n_layers, ratio))
        print(
            f"uniform {ratio:<10} {info['accuracy']:8.4f} {info['cost']:11.4f} "
            f"{info['constraint_satisfied']!s:>8}  {np.round(info['keep_ratios'], 2).tolist()}"
        )
    rng = np.random.default_rng(0)
    for i in range(5):
        info = run(env, rng.uniform(0.05, 0.6, size=base.n_layers), seed=i)
        print(
            f"random #{i:<9} {info['accuracy']:8.4f} {info['cost']:11.4f} "
            f"{info['constraint_satisfied']!s:>8}  {np.round(info['keep_ratios'], 2).tolist()}"
        )
    print(f"one episode's timing (s): { {k: round(v, 4) for k, v in info['timing'].items()} }")


if __name__ == "__main__":
    main()
