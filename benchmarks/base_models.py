"""Train (or load from the cache) a sweep's base model and commit its record: recipe, test
accuracy after every epoch, seconds, machine, digests; never the weights.

    PRUNE_ENV_DATA=~/data python benchmarks/base_models.py --arch vgg16 --width 0.25 \\
        --epochs 30 --out benchmarks/results/bases

Writes ``OUT/<arch>-w<width>-<dataset>-e<epochs>-<numerics>-<cpu>.json`` (the checkpoint's
record without its state dict) and a ``.png`` of train loss and test accuracy per epoch, so
the doc can say whether the schedule converged. Base training is resumable by epoch
(``prune_env.zoo.train_base_model``): a run stopped mid-way goes on from its last epoch when
the cache folder survives.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from prune_env.numerics import NUMERICS
from prune_env.paths import atomic_write_json
from prune_env.tasks import get_task


def record_name(arch: str, width: float, dataset: str, epochs: int, meta: dict[str, Any]) -> str:
    cpu = re.sub(r"[^a-z0-9]+", "-", str(meta.get("numerics", {}).get("cpu", "cpu")).lower())
    numerics = meta.get("numerics", {}).get("mode", "default")
    return f"{arch}-w{width:g}-{dataset}-e{epochs}-{numerics}-{cpu.strip('-')}"


def plot_history(history: list[dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] for e in history]
    fig, loss_ax = plt.subplots(figsize=(6, 3.5))
    loss_ax.plot(epochs, [e["train_loss"] for e in history], color="tab:blue", label="train loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("train loss", color="tab:blue")
    if all("test_accuracy" in e for e in history):
        acc_ax = loss_ax.twinx()
        acc_ax.plot(epochs, [100 * e["test_accuracy"] for e in history], color="tab:red")
        acc_ax.set_ylabel("test accuracy %", color="tab:red")
    loss_ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, help="a registered architecture (vgg16, ...)")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument(
        "--width",
        type=float,
        default=get_task("quick").width_mult,
        help="width multiplier (default: the quick task's)",
    )
    parser.add_argument("--epochs", type=int, required=True, help="length of the base recipe")
    parser.add_argument("--numerics", default="default", choices=NUMERICS)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bases"))
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if not 0 < args.width <= 1:
        parser.error(f"--width must be in (0, 1], got {args.width}")
    from prune_env.zoo import prepare_base_model

    base = prepare_base_model(
        args.arch,
        args.dataset,
        args.data_dir,
        width_mult=args.width,
        train_epochs=args.epochs,
        numerics=args.numerics,
    )
    meta = {k: v for k, v in base.meta.items() if k != "source"}
    meta["params"] = sum(p.numel() for p in base.model.parameters())
    name = record_name(args.arch, args.width, args.dataset, args.epochs, meta)
    atomic_write_json(meta, args.out / f"{name}.json")
    if meta.get("history"):
        title = f"{args.arch} width {args.width:g}, {args.epochs} epochs"
        plot_history(meta["history"], title, args.out / f"{name}.png")
    print(
        f"{name}: test accuracy {100 * meta['test_accuracy']:.2f}%, "
        f"{meta['train_seconds']:.0f} s of training -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
