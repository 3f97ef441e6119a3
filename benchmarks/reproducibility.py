"""Does CPU training give the same network on another machine? A probe for the base models.

Base models are cached per session and never committed, so a study that spans sessions (the
fidelity study, the results sweep) needs the same base from the same seed on whichever build
machine the next session gets. It does not by default: the quarter-width ResNet-56 trained to
61.22% test accuracy on one machine (AMD EPYC), 60.73% on the next, 58.15% on an Intel Xeon.
Floating-point sums depend on the kernels that PyTorch, MKL and oneDNN pick for the CPU's
instruction set and on the thread count.

This script trains the same small workload (ResNet-56 at the quick task's width, 0.25,
``--steps`` SGD steps of the base recipe on synthetic CIFAR-shaped images, with augmentation)
under several settings, each in a fresh process because the environment variables must be
set before torch loads, and appends the digest of the weights, the digest of one forward pass
and the seconds to ``--out``. Run it on two machines: a setting whose digests agree across
CPUs is one a multi-session study can rely on, at the cost in seconds it shows.

    python benchmarks/reproducibility.py --out benchmarks/results/reproducibility.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from prune_env.numerics import cpu_name
from prune_env.tasks import get_task

WIDTH = get_task("quick").width_mult  # the quick task's base network

# name -> (environment variables, torch threads, oneDNN convolutions on)
SETTINGS: dict[str, tuple[dict[str, str], int, bool]] = {
    # what base training does today: torch's defaults on all cores
    "default": ({}, 0, True),
    "one_thread": ({}, 1, True),
    # oneDNN off (convolutions through ATen's own im2col + BLAS), MKL's conditional numerical
    # reproducibility mode, one thread
    "no_onednn_cbwr": ({"MKL_CBWR": "COMPATIBLE"}, 1, False),
    # the same on all cores (ATen's parallel loops split work by the thread count, so this
    # can only agree between machines with as many cores)
    "no_onednn_cbwr_all_threads": ({"MKL_CBWR": "COMPATIBLE"}, 0, False),
    # the above, and ATen's scalar kernels instead of the AVX2/AVX-512 ones
    "portable": ({"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"}, 1, False),
    # the package's own path: prune_env.zoo.get_base_model(numerics="portable"), which trains
    # in a child process under no_onednn_cbwr, with the held-out split and a seeded init
    "package_portable": ({}, 0, True),
}


def cpu_isa() -> str:
    try:
        flags = next(
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        ).split()
    except (OSError, StopIteration):
        return "unknown"
    return next((isa for isa in ("avx512f", "avx2", "avx", "sse4_2") if isa in flags), "older")


def _digest(tensors) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def package_worker(train, info) -> dict:
    """The package's portable base training on the same images (fewer steps: the held-out
    split is carved out of them first)."""
    import tempfile

    import torch

    import prune_env.zoo as zoo

    with tempfile.TemporaryDirectory() as home:
        os.environ["PRUNE_ENV_HOME"] = home
        zoo.RECIPES["resnet56"] = type(zoo.RECIPES["resnet56"])(
            **{**zoo.RECIPES["resnet56"].__dict__, "epochs": 1}
        )
        start = time.perf_counter()
        _, meta = zoo.get_base_model(
            "resnet56", "synthetic", info, train, None, WIDTH, progress=False,
            numerics="portable",
        )  # fmt: skip
        seconds = time.perf_counter() - start
    return {
        "weights_sha1": meta["weights_sha1"][:12],
        "logits_sha1": None,  # this process runs torch's default kernels: not comparable
        "train_seconds": round(seconds, 2),
        "threads": meta["numerics"]["threads"],
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


def worker(steps: int, threads: int, onednn: bool, package: bool = False) -> dict:
    """Runs inside the child process: train, then digest."""
    import torch

    from prune_env.data import dataset_info, normalise, synthetic_split
    from prune_env.models import build_model
    from prune_env.zoo import RECIPES, train_model

    if threads:
        torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = onednn
    recipe = RECIPES["resnet56"]
    train = synthetic_split("train", 10, 3, 32, n=steps * RECIPES["resnet56"].batch_size)
    info = dataset_info("synthetic", train)
    if package:
        return package_worker(train, info)
    torch.manual_seed(0)
    model = build_model("resnet56", info.num_classes, info.channels, WIDTH)
    recipe = type(recipe)(**{**recipe.__dict__, "epochs": 1})
    seconds = train_model(model, train, info, recipe, seed=0, progress=False)
    model.eval()
    with torch.no_grad():
        logits = model(normalise(train.images[:256], info))
    return {
        "weights_sha1": _digest(model.state_dict().values()),
        "logits_sha1": _digest([logits]),
        "train_seconds": round(seconds, 2),
        "threads": torch.get_num_threads(),
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="SGD steps of batch 128")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--out", default="benchmarks/results/reproducibility.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.worker is not None:
        _, threads, onednn = SETTINGS[args.worker]
        package = args.worker == "package_portable"
        print(json.dumps(worker(args.steps, threads, onednn, package)))
        return

    out = Path(args.out)
    runs = json.loads(out.read_text()) if out.is_file() else []
    root = Path(__file__).resolve().parents[1]
    for name in args.settings:
        extra, _, _ = SETTINGS[name]
        env = {**os.environ, **extra, "PYTHONPATH": str(root)}
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--worker", name, "--steps", str(args.steps)],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"setting {name} failed:\n{done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        import torch  # only for the version; the children are what was measured

        run = {
            "setting": name,
            "cpu": cpu_name(),
            "isa": cpu_isa(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "steps": args.steps,
            **result,
            "process_seconds": round(time.perf_counter() - start, 1),
        }
        print(json.dumps(run))
        runs.append(run)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(runs, indent=1) + "\n")  # after each setting: nothing lost

    by_setting: dict[str, dict[str, set[str]]] = {}
    for run in runs:
        if run["steps"] == args.steps:
            entry = by_setting.setdefault(run["setting"], {})
            entry.setdefault(run["weights_sha1"], set()).add(run["cpu"])
    for name, digests in by_setting.items():
        cpus = sorted({c for cs in digests.values() for c in cs})
        if len(digests) > 1:
            verdict = f"DIFFERENT weights ({len(digests)} digests)"
        elif len(cpus) > 1:
            verdict = "the same weights on every CPU model"
        else:
            verdict = "one CPU model so far (run it on another machine to compare)"
        print(f"{name}: {verdict}; CPU models: {'; '.join(cpus)}")


if __name__ == "__main__":
    main()
