"""Tasks: the settings of a pruning problem, each defined once, by name.

A task says what a search works on and for how long: the network and its data (when the task
names them; otherwise the env id brings them), the width of the base network, the length of
its base recipe, the size of the reward split, the search length in env steps, the on-policy
rollout sizes and the fine-tuning length. The job's ``--preset``, ``prune_pipeline.prune`` and
the scripts in benchmarks/ read their settings from here::

    from prune_env.tasks import get_task

    task = get_task("quick")
    env = gym.make("VGG16Prune-v0", **task.env_kwargs())
    longer = dataclasses.replace(task, total_timesteps=30_000)  # a variant, visibly

Two tasks ship: ``quick`` (a CPU demo of the whole pipeline) and ``paper`` (the paper's scale,
for a GPU). To add one, write a ``TaskSpec`` and pass it to ``register_task``; its name then
works as ``train.py --preset NAME``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# TaskSpec field -> the keyword argument of gym.make (PruneEnv) that takes it. The other
# fields (search length, rollout sizes, fine-tuning) belong to the job, not to the env.
ENV_ARGUMENT = {
    "model": "model",
    "dataset": "dataset",
    "width_mult": "width_mult",
    "base_epochs": "base_train_epochs",
    "reward_size": "reward_size",
}


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"TaskSpec {name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class TaskSpec:
    """One pruning task. Build a variant with ``dataclasses.replace(task, field=value)``."""

    name: str
    description: str
    width_mult: float  # channel multiplier of the base network (1.0: as published)
    base_epochs: int | None  # epochs of the base recipe (None: the architecture's full one)
    reward_size: int  # held-out training images the search's reward is measured on
    total_timesteps: int  # search length in env steps
    n_steps: int  # on-policy agents: env steps per rollout
    batch_size: int  # on-policy agents: minibatch size
    finetune_epochs: int  # fine-tuning epochs of the pruned network on the training split
    model: str | None = None  # the architecture (None: the env id's, or the user's model)
    dataset: str | None = None  # its data set, given with ``model``

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"TaskSpec name must be a non-empty string, got {self.name!r}")
        width = self.width_mult
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ValueError(f"TaskSpec width_mult must be a number > 0, got {width!r}")
        if self.base_epochs is not None:
            _positive_int("base_epochs", self.base_epochs, minimum=0)
        for name in ("reward_size", "total_timesteps", "n_steps", "batch_size"):
            _positive_int(name, getattr(self, name))
        _positive_int("finetune_epochs", self.finetune_epochs, minimum=0)
        if (self.model is None) != (self.dataset is None):
            raise ValueError(
                f"TaskSpec {self.name!r}: model and dataset are given together or not at all, "
                f"got model={self.model!r}, dataset={self.dataset!r}"
            )

    def env_kwargs(self) -> dict[str, Any]:
        """The keyword arguments ``gym.make`` takes for this task (the network and data only
        when the task names them)."""
        return {
            argument: getattr(self, name)
            for name, argument in ENV_ARGUMENT.items()
            if name not in ("model", "dataset") or getattr(self, name) is not None
        }

    def on_policy_kwargs(self) -> dict[str, int]:
        """The rollout sizes an on-policy agent (PPO and its variants, TRPO) takes."""
        return {"n_steps": self.n_steps, "batch_size": self.batch_size}


TASKS: dict[str, TaskSpec] = {}


def register_task(task: TaskSpec, replace: bool = False) -> TaskSpec:
    """Add ``task`` to ``TASKS`` under its name; a name already taken is refused unless
    ``replace``."""
    if not isinstance(task, TaskSpec):
        raise TypeError(f"task must be a TaskSpec, got {type(task).__name__}")
    if task.name in TASKS and not replace:
        raise ValueError(f"a task named {task.name!r} exists; pass replace=True to replace it")
    TASKS[task.name] = task
    return task


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The task registered as ``name`` (a TaskSpec is returned as it is); an unknown name
    raises ValueError with the known ones."""
    if isinstance(name, TaskSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"task must be a task name or a TaskSpec, got {type(name).__name__}")
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {list(TASKS)}")
    return TASKS[name]


register_task(
    TaskSpec(
        name="quick",
        description=(
            "A CPU demo of the whole pipeline: a quarter-width network with a short base "
            "recipe, a 1,000-image reward split, a short search and one fine-tuning epoch "
            "(under 15 minutes on 2 CPU cores for VGG16Prune-v0, base model training included)"
        ),
        width_mult=0.25,
        base_epochs=3,
        reward_size=1000,
        total_timesteps=15_000,
        # Rollouts short enough (59 in the search) for the multiplier to settle on the budget
        # within it; longer ones left the final policy over it (docs/convergence.md).
        n_steps=256,
        batch_size=64,
        finetune_epochs=1,
    )
)
register_task(
    TaskSpec(
        name="paper",
        description=(
            "The paper's scale (GPU): the full-width network with the architecture's full base "
            "recipe, the paper's 20,000-image reward split, a long search and a long fine-tuning"
        ),
        width_mult=1.0,
        base_epochs=None,
        reward_size=20_000,
        total_timesteps=100_000,
        n_steps=2048,
        batch_size=256,
        finetune_epochs=30,
    )
)

__all__ = ["ENV_ARGUMENT", "TASKS", "TaskSpec", "get_task", "register_task"]
