"""The pruned network as a deliverable: fine-tuning, measurement and its saved forms.

A pruned model is saved twice in a folder:

- ``pruned_model.pt``: the whole module (``torch.load(path, weights_only=False)``); loading
  it runs pickled code, so only load files you trust;
- ``pruned_state.pt`` (a weights-only state_dict) with ``pruned_arch.json`` (architecture,
  input normalisation, channels kept per layer): ``load_pruned`` rebuilds the registered
  architecture, resizes every layer to the saved tensors and loads them without unpickling
  any code. This is the form ``evaluate.py`` reads by default.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_env.costs import measure_latency
from prune_env.data import DatasetInfo, Split
from prune_env.engine import measure_resources
from prune_env.evaluation import zero_weight_masks
from prune_env.models import build_model
from prune_env.paths import atomic_torch_save, atomic_write_json
from prune_env.zoo import RECIPES, Recipe, split_accuracy, train_model

ARCH_FORMAT = "prune_env.pruned/1"
MODEL_FILE, STATE_FILE, ARCH_FILE = "pruned_model.pt", "pruned_state.pt", "pruned_arch.json"
_PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass
class ModelStats:
    """What a user deploys against: test accuracy, size, work and measured speed."""

    test_accuracy: float
    params: int
    flops: int  # multiply-accumulates of Conv/Linear layers for one sample
    latency_ms: float  # median forward pass over ``latency_batch`` images
    latency_batch: int
    latency_device: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    model: nn.Module,
    test: Split,
    info: DatasetInfo,
    latency_batch: torch.Tensor,
    nonzero: bool = False,
    latency_repeats: int = 20,
) -> ModelStats:
    """Test accuracy, parameters and MACs (counted on the module), and measured latency.

    ``nonzero`` counts only non-zero Conv/Linear weights (weight granularity).
    """
    model.eval()
    params, flops = measure_resources(model, latency_batch[:1], nonzero=nonzero)
    seconds = measure_latency(model, latency_batch, repeats=latency_repeats)
    return ModelStats(
        test_accuracy=split_accuracy(model, test, info),
        params=params,
        flops=flops,
        latency_ms=seconds * 1000,
        latency_batch=len(latency_batch),
        latency_device=str(latency_batch.device),
    )


def finetune_pruned(
    model: nn.Module,
    train: Split,
    info: DatasetInfo,
    arch: str,
    epochs: int,
    lr: float = 0.01,
    keep_zeros: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> float:
    """Fine-tune a pruned network on the whole training split; returns seconds spent.

    The recipe is the architecture's base recipe (augmentation, momentum, weight decay, one
    cosine cycle) with ``epochs`` and peak ``lr``. ``keep_zeros``: weights that are zero now
    (unstructured pruning) are set back to zero after every step, so the sparsity the search
    chose is the sparsity delivered.
    """
    if epochs <= 0:
        return 0.0
    base = RECIPES.get(arch, Recipe(epochs=epochs))
    recipe = Recipe(
        epochs=epochs,
        batch_size=base.batch_size,
        lr=lr,
        momentum=base.momentum,
        weight_decay=base.weight_decay,
        augment=base.augment,
    )
    masks = zero_weight_masks(model) if keep_zeros else []

    @torch.no_grad()
    def reapply_masks() -> None:
        for weight, mask in masks:
            weight.mul_(mask)

    return train_model(
        model,
        train,
        info,
        recipe,
        seed=seed,
        progress=progress,
        description="fine-tuning",
        after_step=reapply_masks if masks else None,
    )


def save_pruned(
    model: nn.Module, folder: str | os.PathLike, arch: dict[str, Any]
) -> dict[str, Path]:
    """Write both forms of ``model`` into ``folder`` (atomically); returns their paths.

    ``arch`` must name the registered architecture (``name``, ``num_classes``,
    ``in_channels``, ``width_mult``); anything else in it (normalisation, kept channels) is
    stored for the user.
    """
    missing = {"name", "num_classes", "in_channels", "width_mult"} - set(arch)
    if missing:
        raise ValueError(f"arch lacks {sorted(missing)}")
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    paths = {
        "model": atomic_torch_save(model, folder / MODEL_FILE),
        "state": atomic_torch_save(state, folder / STATE_FILE),
        "arch": atomic_write_json({"format": ARCH_FORMAT, **arch}, folder / ARCH_FILE),
    }
    return paths


def resize_to_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Give every parameter and buffer of ``model`` the shape it has in ``state`` (in place).

    Conv/Linear/BatchNorm size attributes follow, so the module describes itself correctly.
    Values are left uninitialised: load ``state`` afterwards.
    """
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        for table in (module._parameters, module._buffers):
            for key, tensor in table.items():
                full = prefix + key
                if tensor is None or full not in state or state[full].shape == tensor.shape:
                    continue
                fresh = torch.empty(state[full].shape, dtype=tensor.dtype, device=tensor.device)
                if isinstance(tensor, nn.Parameter):
                    fresh = nn.Parameter(fresh, requires_grad=tensor.requires_grad)
                table[key] = fresh
        if isinstance(module, nn.modules.conv._ConvNd):
            module.out_channels = module.weight.shape[0]
            module.in_channels = module.weight.shape[1] * module.groups
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = module.weight.shape
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            module.num_features = module.weight.shape[0]
    return model


def load_pruned(
    folder: str | os.PathLike, device: str | torch.device = "cpu", trust_pickle: bool = False
) -> nn.Module:
    """Load a pruned model saved by ``save_pruned``, in eval mode on ``device``.

    By default from the weights-only form (no code is unpickled); ``trust_pickle=True`` loads
    the whole pickled module instead.
    """
    folder = Path(folder)
    if trust_pickle:
        return torch.load(folder / MODEL_FILE, map_location=device, weights_only=False).eval()
    for file in (STATE_FILE, ARCH_FILE):
        if not (folder / file).is_file():
            raise FileNotFoundError(f"{folder / file} does not exist: not a pruned-model folder")
    arch = json.loads((folder / ARCH_FILE).read_text())
    if arch.get("format") != ARCH_FORMAT:
        raise ValueError(f"{folder / ARCH_FILE} is not a {ARCH_FORMAT} file")
    model = build_model(arch["name"], arch["num_classes"], arch["in_channels"], arch["width_mult"])
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    resize_to_state_dict(model, state)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
