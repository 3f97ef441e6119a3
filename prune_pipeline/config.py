"""Configuration of the job: one dataclass per entry point and one converter to argparse.

Each field carries its help text in ``metadata["help"]`` (CleanRL's one config dataclass);
``add_arguments`` turns any such dataclass into command-line options and ``parse_value``
reads a value given as text (command line) or as YAML/JSON (files), so train, evaluate and
benchmark share one mechanism.
"""

from __future__ import annotations

import argparse
import json
import typing
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

import torch

import prune_env
from agents import registry
from prune_env.constraints import check_budget
from prune_env.costs import BUILTIN_COSTS
from prune_env.data import ALL_DATASETS
from prune_env.envs.pruning import GRANULARITIES
from prune_env.numerics import NUMERICS
from prune_env.tasks import ENV_ARGUMENT, TASKS, TaskSpec, get_task


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the option and the valid values."""


def _flag(name: str) -> str:
    """The command-line option of field ``name``."""
    return "--" + name.replace("_", "-")


def _kind(cls: type, name: str) -> str:
    """The field's type, without ``| None`` ("int", "float", "str", "bool", "dict", "list")."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and typing.get_origin(hint) in (
        typing.Union,
        __import__("types").UnionType,
    ):
        hint = args[0]
    origin = typing.get_origin(hint) or hint
    return {int: "int", float: "float", str: "str", bool: "bool", dict: "dict", list: "list"}[
        origin
    ]


def parse_value(cls: type, name: str, value: Any) -> Any:
    """``value`` (text from a command line, or already typed from YAML/JSON) as field ``name``
    of ``cls`` expects it; a ConfigError names the option when it cannot be read."""
    option = _flag(name)
    if value is None or not isinstance(value, str):
        return value
    kind = _kind(cls, name)
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return {"true": True, "false": False}[value.lower()]
        if kind == "list":
            return [v.strip() for v in value.split(",") if v.strip()]
        if kind == "dict":
            parsed = json.loads(value)
            if not isinstance(parsed, dict):
                raise ConfigError(f"{option} must be a JSON object, got {value!r}")
            return parsed
    except (ValueError, KeyError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{option} expects a {kind}, got {value!r}") from None
    return value


def add_arguments(parser: argparse.ArgumentParser, cls: type, defaults: bool = True) -> None:
    """One option per field of dataclass ``cls`` (help from its metadata). With
    ``defaults=False`` every option defaults to None, so that a configuration file can fill
    what the command line leaves out."""
    for f in fields(cls):
        flag = _flag(f.name)
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        if defaults:
            help_text += f" (default: {default})"
        if _kind(cls, f.name) == "bool":
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=default if defaults else None,
                help=help_text,
            )
        else:
            parser.add_argument(flag, default=default if defaults else None, help=help_text)


def from_mapping(cls: type, raw: dict[str, Any]) -> Any:
    """An instance of ``cls`` from a mapping of field values (text or typed); unknown keys are
    refused with the list of known ones."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown options {unknown}; expected some of {known}")
    return cls(**{k: parse_value(cls, k, v) for k, v in raw.items()})


DEFAULT_ENV = "VGG16Prune-v0"
# Options that override the preset's task: JobConfig fields named as TaskSpec's.
TASK_OPTIONS = ("width_mult", "base_epochs", "reward_size", "total_timesteps", "finetune_epochs")
# Env arguments the job sets from options of its own (refused in --env-kwargs).
ENV_KEYS_WITH_OPTIONS = {
    **{ENV_ARGUMENT[name]: _flag(name) for name in TASK_OPTIONS if name in ENV_ARGUMENT},
    "budget": "--budget",
    "cost": "--cost",
    "granularity": "--granularity",
    "base_numerics": "--base-numerics",
    "train_base": "--base-epochs (the job trains a missing base model itself)",
    "data_dir": "--data-dir",
    "dataset": "--dataset",
    "checkpoint": "--checkpoint",
    "device": "--device",
    "progress": "--progress/--no-progress",
}


def _choice(name: str, value: Any, valid: Any) -> None:
    if value not in valid:
        raise ConfigError(f"unknown --{name} {value!r}; expected one of {list(valid)}")


def task_env(task: TaskSpec) -> str | None:
    """The registered env id of a task that names its network and data; None for a task that
    runs on any env id (the quick and paper tasks)."""
    if task.model is None:
        return None
    for env_id, network in prune_env.ZOO_IDS.items():
        if network == (task.model, task.dataset):
            return env_id
    raise ConfigError(
        f"--preset {task.name}: no registered env prunes {task.model} on {task.dataset}; "
        f"expected one of {list(prune_env.ZOO_IDS.values())}"
    )


@dataclass
class JobConfig:
    """The pruning job (``train.py`` / ``prune-train``)."""

    env: str | None = field(
        default=None,
        metadata={
            "help": "env id to prune (default: VGG16Prune-v0, or ModelPrune-v0 with --model)"
        },
    )
    model: str | None = field(
        default=None,
        metadata={
            "help": "your own model: a torchvision name (resnet18) or path/to/file.py:factory"
        },
    )
    algo: str = field(
        default="ppo_pid_lag",
        metadata={"help": "algorithm (registry name); ppo_pid_lag settles on the budget"},
    )
    preset: str = field(
        default="quick",
        metadata={"help": "the task (prune_env.tasks): quick (CPU demo) or paper (GPU)"},
    )
    budget: float = field(default=0.1, metadata={"help": "largest fraction of the cost kept"})
    cost: str = field(default="params", metadata={"help": "constrained resource"})
    granularity: str = field(default="channel", metadata={"help": "channel or weight pruning"})
    total_timesteps: int | None = field(
        default=None, metadata={"help": "env steps of the search (default: preset)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the agent and fine-tuning"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda (env and nets)"})
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "data folder (default: $PRUNE_ENV_DATA); with --model an ImageFolder "
            "tree DATA_DIR/{train,test}/<class>/<image>"
        },
    )
    dataset: str | None = field(default=None, metadata={"help": "data set (default: the env's)"})
    image_size: int | None = field(
        default=None, metadata={"help": "with --model: resize images to this square size"}
    )
    checkpoint: str | None = field(
        default=None, metadata={"help": "base model weights (default: cache or train)"}
    )
    width_mult: float | None = field(
        default=None, metadata={"help": "width of the base network (default: preset)"}
    )
    base_epochs: int | None = field(
        default=None, metadata={"help": "epochs of the base recipe (default: preset)"}
    )
    base_numerics: str = field(
        default="default",
        metadata={
            "help": "how a missing base is trained on the CPU: default, or portable (the same "
            "weights on the two CPU models measured, 2.3-2.9x the seconds; prune_env.numerics)"
        },
    )
    reward_size: int | None = field(
        default=None, metadata={"help": "training images in the reward split (default: preset)"}
    )
    n_envs: int = field(default=1, metadata={"help": "env copies the RL agent steps at once"})
    vec_env: str = field(
        default="subproc", metadata={"help": "dummy, subproc or ray (for n_envs > 1)"}
    )
    vec_env_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "JSON for the VecEnv, e.g. '{\"num_gpus\": 0.25}' (ray)"},
    )
    finetune_epochs: int | None = field(
        default=None, metadata={"help": "fine-tuning epochs on the training set (default: preset)"}
    )
    finetune_lr: float = field(default=0.01, metadata={"help": "peak fine-tuning learning rate"})
    test_size: int | None = field(
        default=None, metadata={"help": "test images to measure on (default: all)"}
    )
    algo_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "JSON of algorithm arguments, e.g. '{\"n_steps\": 256}'"},
    )
    env_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "JSON of extra env arguments (help(PruneEnv))"}
    )
    out: str = field(default="runs", metadata={"help": "folder that receives the run folder"})
    resume: str | None = field(
        default=None, metadata={"help": "run folder to continue (its config is used)"}
    )
    checkpoint_every: float = field(
        default=120.0, metadata={"help": "seconds between search checkpoints"}
    )
    save_pickle: bool = field(
        default=False,
        metadata={"help": "also save the whole pickled module (pruned_model.pt)"},
    )
    progress: bool = field(default=True, metadata={"help": "progress bars"})

    def validate(self) -> JobConfig:
        """Unknown values fail with the list of valid ones, before anything slow starts."""
        if self.model is not None:
            if self.env not in (None, "ModelPrune-v0"):
                raise ConfigError(
                    f"--model prunes your model with ModelPrune-v0, not --env {self.env}"
                )
            if self.dataset not in (None, "imagefolder", "synthetic"):
                raise ConfigError(
                    f"--model reads an ImageFolder tree (--data-dir) or synthetic data, not "
                    f"--dataset {self.dataset}"
                )
            if self.base_numerics != "default":
                raise ConfigError(
                    "--base-numerics applies to the base models the package trains (--env); "
                    "with --model the base is yours"
                )
        else:
            _choice("env", self.env or DEFAULT_ENV, prune_env.ZOO_IDS)
        _choice("algo", self.algo, registry.names())
        _choice("preset", self.preset, TASKS)
        implied = task_env(get_task(self.preset))
        if implied is not None and (self.model is not None or self.env not in (None, implied)):
            raise ConfigError(
                f"--preset {self.preset} prunes {implied}, not {self.model or self.env}"
            )
        _choice("cost", self.cost, BUILTIN_COSTS)
        _choice("granularity", self.granularity, GRANULARITIES)
        _choice("device", self.device.split(":")[0], ("auto", "cpu", "cuda"))
        _choice("vec-env", self.vec_env, registry.VEC_ENVS)
        _choice("base-numerics", self.base_numerics, NUMERICS)
        if self.dataset is not None:
            _choice("dataset", self.dataset, ALL_DATASETS)
        try:
            check_budget(self.budget, "--budget")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for name in ("n_envs", "total_timesteps", "reward_size", "image_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{_flag(name)} must be >= 1, got {value}")
        for name in ("algo_kwargs", "env_kwargs", "vec_env_kwargs"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{_flag(name)} must be a JSON object")
        # The task (base model, data, budget) is set by options of its own: an env_kwargs key
        # would make the env and the job disagree about it.
        for key, option in ENV_KEYS_WITH_OPTIONS.items():
            if key in self.env_kwargs:
                raise ConfigError(f"--env-kwargs {key!r}: use {option} instead")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("--device cuda but PyTorch sees no CUDA device")
        self.task_spec()  # the task with the options that override it must be a valid one
        return self

    def resolve(self) -> JobConfig:
        """Fill what the user left to the preset's task (and the env id)."""
        task = get_task(self.preset)
        if self.env is None:
            self.env = "ModelPrune-v0" if self.model is not None else task_env(task) or DEFAULT_ENV
        for name in TASK_OPTIONS:
            if getattr(self, name) is None:
                setattr(self, name, getattr(task, name))
        return self

    def task_spec(self) -> TaskSpec:
        """The preset's task with what this configuration sets of ``TASK_OPTIONS``."""
        given = {name: getattr(self, name) for name in TASK_OPTIONS}
        try:
            return replace(
                get_task(self.preset), **{k: v for k, v in given.items() if v is not None}
            )
        except ValueError as exc:
            named = [_flag(k) for k, v in given.items() if v is not None and f" {k} " in str(exc)]
            raise ConfigError(f"{(named or [f'--preset {self.preset}'])[0]}: {exc}") from None

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> JobConfig:
        """A run folder's configuration (older folders stored the JSON options as text)."""
        known = {f.name for f in fields(cls)}
        return from_mapping(cls, {k: v for k, v in saved.items() if k in known})
