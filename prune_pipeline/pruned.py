"""The pruned network as a deliverable: fine-tuning, measurement and its saved forms.

A pruned model is saved in a folder as

- ``pruned.safetensors``: its tensors (safetensors: no code runs on load), and
- ``pruned_arch.json``: how to rebuild the architecture (a registered one, a torchvision
  name, or a ``file.py:factory``), the attributes tensors do not carry (conv groups), input
  normalisation and the channels kept per layer.

``load_pruned`` rebuilds the architecture, resizes every layer to the saved tensors and loads
them, so the model loads without this package's pickles (``safetensors.torch.load_file``
reads the weights alone). ``save_pruned`` checks that round trip on an example input and
says in the JSON whether it holds. The whole pickled module, ``pruned_model.pt``, is opt-in
(``pickle=True``, train.py ``--save-pickle``): loading it runs pickled code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_env.data import DatasetInfo, Split
from prune_env.engine import measure_resources
from prune_env.evaluation import zero_weight_masks
from prune_env.models import build_model
from prune_env.paths import atomic_torch_save, atomic_write_bytes, atomic_write_json
from prune_env.training import masks_hook
from prune_env.zoo import RECIPES, Recipe, split_accuracy, train_model

ARCH_FORMAT = "prune_pipeline.pruned/2"
MODEL_FILE, WEIGHTS_FILE, ARCH_FILE = "pruned_model.pt", "pruned.safetensors", "pruned_arch.json"
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
    latency_min_time: float = 0.5,
) -> ModelStats:
    """Test accuracy, parameters and MACs (counted on the module), and measured latency.

    Latency is the median of ``torch.utils.benchmark``'s blocked measurements over at least
    ``latency_min_time`` seconds (warm-up, CUDA synchronisation and the thread count handled
    by it). ``nonzero`` counts only non-zero Conv/Linear weights (weight granularity).
    """
    from torch.utils import benchmark

    model.eval()
    params, flops = measure_resources(model, latency_batch[:1], nonzero=nonzero)
    timer = benchmark.Timer(
        stmt="model(batch)",
        globals={"model": model, "batch": latency_batch},
        num_threads=torch.get_num_threads(),
    )
    with torch.inference_mode():
        seconds = timer.blocked_autorange(min_run_time=latency_min_time).median
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
    augment: bool | None = None,
) -> float:
    """Fine-tune a pruned network on the whole training split; returns seconds spent.

    The recipe is the architecture's base recipe (augmentation, momentum, weight decay, one
    cosine cycle) with ``epochs`` and peak ``lr``. ``keep_zeros``: weights that are zero now
    (unstructured pruning) are set back to zero after every step, so the sparsity the search
    chose is the sparsity delivered. ``augment`` overrides the recipe's crop-and-flip. The
    steps are ``prune_env.training.sgd_steps``, the loop every fine-tuning runs.
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
        augment=base.augment if augment is None else augment,
    )
    masks = zero_weight_masks(model) if keep_zeros else []
    return train_model(
        model,
        train,
        info,
        recipe,
        seed=seed,
        progress=progress,
        description="fine-tuning",
        after_step=masks_hook(masks),
    )


def build_architecture(builder: dict[str, Any]) -> nn.Module:
    """A fresh, full-size instance of the architecture ``builder`` describes.

    ``{"kind": "zoo", "name", "num_classes", "in_channels", "width_mult"}`` (this package's
    registered architectures), ``{"kind": "torchvision", "name", "num_classes"}`` or
    ``{"kind": "factory", "path": "file.py", "name": "factory"}`` (a function of no
    arguments that returns the model).
    """
    kind = builder.get("kind")
    if kind == "zoo":
        return build_model(
            builder["name"], builder["num_classes"], builder["in_channels"], builder["width_mult"]
        )
    if kind == "torchvision":
        import torchvision

        return torchvision.models.get_model(
            builder["name"], weights=None, num_classes=builder["num_classes"]
        )
    if kind == "factory":
        return load_factory(builder["path"], builder["name"])()
    raise ValueError(f"cannot rebuild an architecture from {builder!r}")


def load_factory(path: str | os.PathLike, name: str) -> Any:
    """The callable ``name`` defined in the Python file ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"_user_model_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ValueError(f"{path} defines no function {name!r}")
    return factory


def _module_attrs(model: nn.Module) -> dict[str, dict[str, int]]:
    """What the tensors do not say: the groups of every grouped conv (depthwise included)."""
    return {
        name: {"groups": m.groups}
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups != 1
    }


def save_pruned(
    model: nn.Module,
    folder: str | os.PathLike,
    arch: dict[str, Any],
    example_input: torch.Tensor | None = None,
    pickle: bool = False,
) -> dict[str, Path]:
    """Write ``model`` into ``folder`` (atomically); returns the paths written.

    ``arch["builder"]`` says how to rebuild the architecture (see ``build_architecture``);
    anything else in ``arch`` (normalisation, kept channels) is stored for the user. With
    ``example_input`` the weights-only form is loaded back and compared with ``model``; if
    they differ (a module whose shape lives outside its tensors) or the builder is None, the
    pickled module is written too and a warning says why.
    """
    from safetensors.torch import save

    if "builder" not in arch:
        raise ValueError("arch lacks 'builder' (how to rebuild the architecture, or None)")
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    blob = {"format": ARCH_FORMAT, **arch, "module_attrs": _module_attrs(model)}
    paths = {
        "weights": atomic_write_bytes(save(state), folder / WEIGHTS_FILE),
        "arch": atomic_write_json({**blob, "weights_only_verified": None}, folder / ARCH_FILE),
    }
    verified, why = None, "no builder"
    if arch["builder"] is not None and example_input is not None:
        try:
            loaded = load_pruned(folder, example_input.device)
            model_mode = model.training
            model.eval()
            with torch.no_grad():
                verified = bool(
                    torch.allclose(
                        loaded(example_input), model(example_input), rtol=1e-4, atol=1e-5
                    )
                )
            model.train(model_mode)
            why = "its output differs from the model's"
        except Exception as exc:  # rebuilt architecture does not take the tensors
            verified, why = False, f"{type(exc).__name__}: {str(exc)[:200]}"
        paths["arch"] = atomic_write_json(
            {**blob, "weights_only_verified": verified}, folder / ARCH_FILE
        )
    if pickle or not verified:
        if not pickle:
            warnings.warn(
                f"the weights-only form in {folder} could not be checked or does not rebuild "
                f"the model ({why}); the pickled module {MODEL_FILE} is written too",
                stacklevel=2,
            )
        paths["model"] = atomic_torch_save(model, folder / MODEL_FILE)
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
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            ref = module.weight if module.weight is not None else module.running_mean
            if ref is not None:  # affine or not, the statistics say how many channels
                module.num_features = ref.shape[0]
    return model


def load_pruned(
    folder: str | os.PathLike, device: str | torch.device = "cpu", trust_pickle: bool = False
) -> nn.Module:
    """Load a pruned model saved by ``save_pruned``, in eval mode on ``device``.

    By default from the weights-only form (safetensors; no code is unpickled);
    ``trust_pickle=True`` loads the whole pickled module instead.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    if trust_pickle:
        if not (folder / MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"{folder / MODEL_FILE} does not exist (saved only with --save-pickle)"
            )
        return torch.load(folder / MODEL_FILE, map_location=device, weights_only=False).eval()
    for file in (WEIGHTS_FILE, ARCH_FILE):
        if not (folder / file).is_file():
            raise FileNotFoundError(f"{folder / file} does not exist: not a pruned-model folder")
    arch = json.loads((folder / ARCH_FILE).read_text())
    if arch.get("format") != ARCH_FORMAT:
        raise ValueError(f"{folder / ARCH_FILE} is not a {ARCH_FORMAT} file")
    if arch.get("builder") is None:
        raise ValueError(
            f"{folder / ARCH_FILE} names no architecture to rebuild; load {MODEL_FILE} with "
            "trust_pickle=True"
        )
    model = build_architecture(arch["builder"])
    modules = dict(model.named_modules())
    for name, attrs in arch.get("module_attrs", {}).items():
        for key, value in attrs.items():
            setattr(modules[name], key, value)
    state = load_file(str(folder / WEIGHTS_FILE))
    resize_to_state_dict(model, state)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
