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

    Checkpoints are taken where the agent's state is whole: for on-policy agents at the start
    of a rollout (after the previous update), for off-policy agents when an episode ends.
    Beside the bar: episodes finished, the best accuracy of a feasible episode (from the
    pruning envs' last-step info) and lambda.

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
        if self.checkpoint_fn is None or time.monotonic() - self._last_save < self.every_s:
            return
        self.checkpoint_fn(self.model)
        self.checkpoints += 1
        self._last_save = time.monotonic()

    def _on_rollout_start(self) -> None:
        self._record_lambda()
        if isinstance(self.model, OnPolicyAlgorithm) and self.num_timesteps > 0:
            self._maybe_checkpoint()

    def _on_step(self) -> bool:
        dones = np.asarray(self.locals.get("dones", []), dtype=bool)
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
        if not isinstance(self.model, OnPolicyAlgorithm) and dones.any():
            self._maybe_checkpoint()
        return True

    def _on_training_end(self) -> None:
        self._record_lambda()
        if self._bar is not None:
            self._bar.close()
