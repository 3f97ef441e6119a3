"""Channel pruning over torchvision's classification zoo: what the engine can prune.

For every architecture (random weights, ``--classes`` outputs, ``--size`` x ``--size``
inputs): the number of decision units, the groups kept whole (and why), the lowest FLOPs
fraction reachable at ``--min-keep``, and three checks at random keep counts: the pruned
network runs, equals the masked one, and its counted params/MACs equal the analytic ones.

    python benchmarks/zoo_check.py                      # the default list
    python benchmarks/zoo_check.py --arch resnet18 regnet_x_400mf --json out.json

Exit status 1 if any architecture fails a check.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings

import numpy as np
import torch
import torchvision

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
)


# Architectures whose pooling needs larger inputs than --size.
MIN_SIZE = {"alexnet": 64}


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
    return {
        "arch": arch,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=list(DEFAULT_ARCHS))
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--min-keep", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows, failed = [], False
    header = "| arch | units | kept whole | lowest FLOPs | forward | pruned==masked | costs exact | s |"
    print(header)
    print("|" + "---|" * 8)
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
        good = row["forward"] and row["pruned_equals_masked"] and row["costs_exact"]
        failed |= not good
        print(
            f"| {arch} | {row['units']} | {row['kept_whole']} | "
            f"{row['lowest_flops_fraction']:.4f} | {row['forward']} | "
            f"{row['pruned_equals_masked']} | {row['costs_exact']} | "
            f"{row['engine_seconds']:.1f} |",
            flush=True,
        )
    for row in rows:
        for root, reason in row.get("kept_whole_reasons", {}).items():
            print(f"{row['arch']}: kept whole {root}: {reason}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
