"""Callbacks of a long search: progress, multiplier history and periodic checkpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from tqdm.auto import tqdm


class SearchMonitor(BaseCallback):
    """Progress bar, Lagrange multiplier history and checkpoints every ``every_s`` seconds.

    Checkpoints are taken only where the agent's state is whole: at the start of a rollout,
    after the previous update, and for off-policy agents only when the last step ended the
    episode of every env copy (SB3 stores a transition in the replay buffer after the step
    callback, so a checkpoint taken at the episode's last step would lose that transition,
    the one that carries the pruning reward). ``request_stop()`` (a signal handler may call
    it) makes the search checkpoint at the next such point and stop there, so an interrupted
    search resumes exactly where it stopped (``stopped`` says it did). Beside the bar:
    episodes finished, the best accuracy of a feasible episode (from the pruning envs'
    last-step info) and lambda.

    :param total_timesteps: env steps the whole search runs (the bar's length).
    :param checkpoint: called with the agent when a checkpoint is due (None: never).
    :param every_s: seconds between checkpoints (0: at every opportunity).
    :param progress: show the bar.
    """

    def __init__(
        self,
        total_timesteps: int,
        checkpoint: Callable[[Any], None] | None = None,
        every_s: float = 120.0,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0, got {every_s}")
        self.total_timesteps = int(total_timesteps)
        self.checkpoint_fn, self.every_s = checkpoint, float(every_s)
        self.progress = progress
        self.lambda_history: list[tuple[int, list[float]]] = []
        self.checkpoints = 0
        self.episodes = 0
        self.best_feasible = float("nan")
        self._last_save = time.monotonic()
        self._bar: tqdm | None = None
        self.stop_requested = False
        self.stopped = False  # a requested stop was carried out (after its checkpoint)
        self._at_boundary = True  # the last step ended every env copy's episode

    def request_stop(self) -> None:
        """Checkpoint at the next point where the agent is whole, then stop ``learn``."""
        self.stop_requested = True

    def _on_training_start(self) -> None:
        self._last_save = time.monotonic()
        self._bar = tqdm(
            total=self.total_timesteps,
            initial=min(self.num_timesteps, self.total_timesteps),
            desc="search",
            unit="step",
            disable=not self.progress,
        )

    def _record_lambda(self) -> None:
        lambdas = getattr(self.model, "lambdas", None)
        if lambdas is not None:
            self.lambda_history.append((self.num_timesteps, np.atleast_1d(lambdas).tolist()))

    def _maybe_checkpoint(self) -> None:
        due = time.monotonic() - self._last_save >= self.every_s or self.stop_requested
        if self.checkpoint_fn is None or not due:
            return
        self.checkpoint_fn(self.model)
        self.checkpoints += 1
        self._last_save = time.monotonic()
        if self.stop_requested:
            self.stopped = True  # _on_step ends learn() before anything else changes

    def _on_rollout_start(self) -> None:
        self._record_lambda()
        whole = isinstance(self.model, OnPolicyAlgorithm) or self._at_boundary
        if self.num_timesteps > 0 and whole:
            self._maybe_checkpoint()

    def _on_step(self) -> bool:
        if self.stopped:
            return False  # the step just taken is redone by the resumed search
        dones = np.asarray(self.locals.get("dones", []), dtype=bool)
        self._at_boundary = bool(dones.size) and bool(dones.all())
        infos = self.locals.get("infos", [])
        for done, info in zip(dones, infos, strict=False):
            if done:
                self.episodes += 1
                if info.get("constraint_satisfied") and "accuracy" in info:
                    self.best_feasible = np.fmax(
                        self.best_feasible, float(info.get("reward", info["accuracy"]))
                    )
        if self._bar is not None:
            self._bar.update(min(self.num_timesteps, self.total_timesteps) - self._bar.n)
            if self.n_calls % 20 == 0:
                status = {"episodes": self.episodes, "best_feasible": f"{self.best_feasible:.4f}"}
                if self.lambda_history:
                    status["lambda"] = f"{self.lambda_history[-1][1][0]:.3f}"
                self._bar.set_postfix(status, refresh=False)
        return True

    def _on_training_end(self) -> None:
        if not self.stopped:  # a stopped search's last value is its checkpoint's
            self._record_lambda()
        if self._bar is not None:
            self._bar.close()
