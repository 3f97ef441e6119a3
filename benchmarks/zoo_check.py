"""Channel pruning over torchvision's classification zoo: what the engine can prune.

For every architecture (random weights, ``--classes`` outputs, ``--size`` x ``--size``
inputs): the number of decision units, the groups kept whole (and why), the lowest FLOPs
fraction reachable at ``--min-keep``, and three checks at random keep counts: the pruned
network runs, equals the masked one, and its counted params/MACs equal the analytic ones.
Then one ModelPrune-v0 episode at ``--min-keep`` (random images): its FLOPs cost must be
that lowest fraction.

    python benchmarks/zoo_check.py                      # the default list
    python benchmarks/zoo_check.py --arch resnet18 regnet_x_400mf --json out.json

Exit status 1 if any architecture fails a check.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings

import gymnasium as gym
import numpy as np
import torch
import torchvision

import prune_env  # noqa: F401  (registers the env ids)
from prune_env.engine import ChannelEngine, measure_resources

DEFAULT_ARCHS = (
    "resnet18",
    "resnet50",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mnasnet0_5",
    "efficientnet_b0",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "squeezenet1_1",
    "densenet121",
    "shufflenet_v2_x0_5",
    "googlenet",
    "vgg11_bn",
    "alexnet",
    "convnext_tiny",
    "swin_t",
    "swin_v2_t",
    "maxvit_t",
    "vit_b_16",
)


# Architectures whose pooling (alexnet) or fixed patch grid (maxvit, vit) needs larger
# inputs than --size.
MIN_SIZE = {"alexnet": 64, "maxvit_t": 224, "vit_b_16": 224}


def build(arch: str, classes: int) -> torch.nn.Module:
    kwargs = {"num_classes": classes}
    if arch == "googlenet":
        kwargs.update(aux_logits=False, init_weights=True)
    return torchvision.models.get_model(arch, weights=None, **kwargs).eval()


def check(arch: str, classes: int, size: int, min_keep: float, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build(arch, classes)
    size = max(size, MIN_SIZE.get(arch, 0))
    x = torch.randn(2, 3, size, size)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        engine = ChannelEngine(model, x)
    seconds = time.perf_counter() - start
    sizes = np.array([u.size for u in engine.units])
    lowest = np.maximum(1, np.ceil(min_keep * sizes - 1e-9)).astype(int)
    _, macs = engine.resources(lowest)
    rng = np.random.default_rng(seed)
    ok_forward = ok_equal = ok_costs = True
    worst = 0.0
    for counts in (lowest, [int(rng.integers(1, s + 1)) for s in sizes]):
        pruned, masked = engine.build(counts), engine.build_masked(counts)
        try:
            with torch.no_grad():
                out, ref = pruned(x), masked(x)
        except Exception:  # reported, not raised: the table shows every architecture
            ok_forward = ok_equal = False
            continue
        diff = float((out - ref).abs().max()) / max(float(ref.abs().max()), 1e-12)
        worst = max(worst, diff)
        ok_equal &= diff <= 1e-3
        ok_costs &= measure_resources(pruned, x[:1]) == engine.resources(counts)
    episode_cost = env_episode(model, x, min_keep)
    return {
        "arch": arch,
        "env_episode_cost": episode_cost,
        "env_cost_matches": abs(episode_cost - macs / engine.total_macs) < 1e-9,
        "input_size": size,
        "units": len(engine.units),
        "kept_whole": len(engine.kept_whole),
        "kept_whole_reasons": engine.kept_whole,
        "lowest_flops_fraction": macs / engine.total_macs,
        "forward": ok_forward,
        "pruned_equals_masked": ok_equal,
        "max_relative_difference": worst,
        "costs_exact": ok_costs,
        "engine_seconds": seconds,
    }


def env_episode(model: torch.nn.Module, x: torch.Tensor, min_keep: float) -> float:
    """FLOPs cost of one ModelPrune-v0 episode that asks for ``min_keep`` everywhere."""
    images = torch.randn(48, *x.shape[1:], generator=torch.Generator().manual_seed(0))
    labels = torch.arange(48) % 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(
            "ModelPrune-v0",
            model=model,
            example_input=x[:1],
            train_data=(images, labels),
            cost="flops",
            budget=0.5,
            min_keep=min_keep,
            reward_size=32,
            bn_calib_size=16,
            device="cpu",
        )
    env.reset(seed=0)
    terminated = False
    while not terminated:
        _, _, terminated, _, info = env.step(np.full(env.action_space.shape, min_keep))
    return float(info["cost"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=list(DEFAULT_ARCHS))
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--min-keep", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows, failed = [], False
    columns = ["arch", "px", "units", "kept whole", "lowest FLOPs", "forward", "pruned==masked"]
    columns += ["costs exact", "env episode", "s"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for arch in args.arch:
        try:
            row = check(arch, args.classes, args.size, args.min_keep, args.seed)
        except Exception as e:  # one broken architecture must not hide the others
            row = {"arch": arch, "error": f"{type(e).__name__}: {e}"}
            print(f"| {arch} | error: {row['error'][:120]} |")
            failed = True
            rows.append(row)
            continue
        rows.append(row)
        good = (
            row["forward"]
            and row["pruned_equals_masked"]
            and row["costs_exact"]
            and row["env_cost_matches"]
        )
        failed |= not good
        print(
            f"| {arch} | {row['input_size']} | {row['units']} | {row['kept_whole']} | "
            f"{row['lowest_flops_fraction']:.4f} | {row['forward']} | "
            f"{row['pruned_equals_masked']} | {row['costs_exact']} | "
            f"{row['env_cost_matches']} | {row['engine_seconds']:.1f} |",
            flush=True,
        )
    for row in rows:
        for root, reason in row.get("kept_whole_reasons", {}).items():
            print(f"{row['arch']}: kept whole {root}: {reason}")
    # ru_maxrss is in KiB on Linux: the peak of the whole run, every architecture included.
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"total {time.perf_counter() - start:.0f} s, peak memory {peak_gib:.1f} GiB, "
        f"{torch.get_num_threads()} threads"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
