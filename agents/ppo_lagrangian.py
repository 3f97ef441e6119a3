"""PPO-Lagrangian on stable-baselines3: PPO with a cost critic and Lagrange multipliers."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.utils import explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from agents.buffers import CostRolloutBuffer
from agents.cost_info import limits_from_info, read_costs
from agents.lagrange import (
    GRADIENT_DEFAULTS,
    LAGRANGIANS,
    MAX_VIOLATION,
    PID_DEFAULTS,
    GradientLagrange,
    LagrangeMultiplier,
    make_lagrange,
)
from agents.policies import CostActorCriticPolicy, with_beta_concentration

# The statistic of a rollout's episode costs that the multipliers hold at the limit; 0.9, not
# 0.8, measured on agents.problems (docs/agents.md#ppo-lagrangian, CHANGELOG): fewer of the
# last quarter's episodes over the limit once the exp concentration narrows the policy.
COST_QUANTILE = 0.9


class PPOLagrangian(PPO):
    """PPO-Lagrangian: maximise return subject to E[episode cost] <= cost_limit.

    The Lagrangian relaxation of a constrained MDP (Altman 1999) solved with PPO (Schulman et
    al. 2017) as in Ray, Achiam, Amodei 2019 ("Benchmarking Safe Exploration in Deep RL") and
    Malik et al. 2022 ("Neural Network Pruning Through Constrained Reinforcement Learning"),
    with the PID multiplier of Stooke, Achiam, Abbeel 2020 as an option. It runs on any
    Gymnasium env that puts its cost in ``info["cost"]`` (several: ``info["costs"]``, a dict).

    Per rollout: the costs are stored beside the rewards in units of their limit (``c / d``),
    a cost critic estimates their value, SB3's GAE gives cost advantages ``A_c`` (in budgets);
    the multipliers are updated from the episode costs of the episodes that finished in the
    rollout (their ``cost_quantile``, or mean) against ``cost_limit`` before the policy update
    (no update if none finished); the clipped surrogate uses
    ``(A_r - sum_i lambda_rel,i A_c,i) / (1 + sum_i lambda_rel,i)`` with
    ``lambda_rel = lambda * d``, the price of one budget's worth of cost, standardised per
    mini-batch when ``normalize_advantage`` (after combining, so that lambda keeps its
    meaning). Everything the agent learns from a cost is thus in units of its limit: a cost and
    its limit scaled by any factor train the same policy (the exposed lambda, per unit of
    cost, scales inversely). The exceptions: ``lambda_max`` is absolute (per unit of cost),
    and a limit of 0 has no unit, so its cost is taken as it is.

    :param policy: "MlpPolicy" (a ``CostActorCriticPolicy``: on a bounded Box its actions are
        drawn from a Beta distribution on the bounds, see ``agents.policies``) or a subclass.
    :param env: the env (or its id).
    :param policy_kwargs: as PPO; also ``cost_critic`` ("separate", default, or "shared"),
        ``cost_net_arch`` (hidden sizes of a separate cost critic), see ``CostActorCriticPolicy``,
        and ``beta_concentration`` (default ``agents.policies.BETA_CONCENTRATION``, "exp").
    :param cost_limit: the limit of each cost. Default: the env's ``cost_limits`` /
        ``cost_limit`` / ``budget`` attribute, else ``info["cost_limit"]`` of the first step.
    :param n_costs: number of costs (default: from ``cost_limit`` or the env's ``cost_limits``,
        else 1). With more than one, costs are read from ``info["costs"]`` by name (the names
        of the env's ``cost_limits``, else those of the first ``info["costs"]``), and limits
        found only in the info must come as ``info["cost_limits"]``, a dict by name.
    :param lagrangian: "gradient" (projected gradient ascent on lambda) or "pid" (PID
        Lagrangian). Both act on the violation relative to the limit, ``(J_c - d) / d``
        (``agents.lagrange`` says why and where this departs from OmniSafe and Stooke et al.).
    :param lambda_init: initial lambda, in reward per unit of cost (default 0.0).
    :param lambda_lr: step size of lambda for "gradient" (default 0.03).
    :param lambda_optimizer: ``torch.optim`` class name for "gradient" (default "SGD": plain
        projected gradient ascent; OmniSafe's "Adam" keeps a momentum that overshoots).
    :param lambda_optimism: extrapolation of optimistic gradient ascent for "gradient"
        (default 5.0; 0.0: plain gradient ascent, which cycles on pruning; 1.0: the optimistic
        ascent of ReLOAD, Moskovitz et al. 2023; ``agents.lagrange.GradientLagrange``).
    :param lambda_max: upper bound of lambda, or None (default None).
    :param max_violation: the largest relative violation ``(J_c - d) / d`` the multipliers
        respond to (default 1.0: a cost at twice its limit or more counts as twice; None: no
        cap): the anti-windup of tight budgets, see ``agents.lagrange``.
    :param pid_kp: proportional gain for "pid" (default 0.2).
    :param pid_ki: integral gain for "pid" (default 0.05).
    :param pid_kd: derivative gain for "pid" (default 0.0).
    :param pid_d_delay: updates the derivative looks back for "pid" (default 10).
    :param pid_ema_alpha: smoothing of the PID's proportional and derivative inputs (default
        0.5).
    :param cost_vf_coef: weight of the cost critic's loss (default 0.5).
    :param cost_gamma: discount of the cost (default: ``gamma``).
    :param cost_gae_lambda: GAE lambda of the cost (default: ``gae_lambda``).
    :param cost_quantile: which statistic of the rollout's episode costs the multipliers hold
        at the limit: a quantile in (0, 1), or None for the mean (the textbook constraint
        ``E[J_c] <= d``). Default ``COST_QUANTILE`` (0.9): it aims at a tenth of the sampled
        episodes over the limit, so that the mean policy, the deterministic action, sits a
        margin (that shrinks with the policy's spread) under it. With the mean, about half of
        a settled agent's episodes break the limit (49-54% with the PID on
        VGG16PruneSurrogate-v0, docs/convergence.md); the measurement behind 0.9 is at
        ``COST_QUANTILE``.
    :param n_steps: env steps per rollout and multiplier update (default 512, SB3's PPO 2048:
        the multiplier needs many updates to settle, see ``benchmarks/convergence.py``).
    :param kwargs: every other argument of ``stable_baselines3.PPO`` (learning_rate, n_steps,
        batch_size, n_epochs, gamma, gae_lambda, clip_range, ent_coef, vf_coef, ...).

    Logged (SB3 logger, so TensorBoard works): ``rollout/ep_cost_mean`` (over the last 100
    episodes), ``rollout/ep_cost_rollout`` (mean of the rollout's finished episodes, dumped
    with that rollout), ``rollout/ep_cost_constrained`` (the statistic held at the limit),
    ``train/lambda``
    (``train/lambda_<name>`` for several costs), ``train/cost_value_loss``,
    ``train/cost_explained_variance``, ``train/cost_limit``, besides PPO's own.

    Saved with the agent: the multipliers, lambda's optimizer state and the cost critic.
    ``PPOLagrangian.load(path, cost_limit=..., lambda_lr=..., lambda_optimism=..., pid_ki=...,
    ...)`` overrides the saved values (the multipliers' state is kept). An agent saved before
    ``lambda_optimism`` existed loads with optimism 0, the plain ascent it was trained with, and
    one saved before ``max_violation`` without the cap. A new ``cost_limit`` at load changes the
    unit of the cost critic's targets: it relearns them in the new budgets.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": CostActorCriticPolicy}
    rollout_buffer: CostRolloutBuffer
    policy: CostActorCriticPolicy

    def __init__(
        self,
        policy: str | type[CostActorCriticPolicy],
        env: Any,
        cost_limit: float | Sequence[float] | None = None,
        n_costs: int | None = None,
        lagrangian: str = "gradient",
        lambda_init: float = 0.0,
        lambda_lr: float = GRADIENT_DEFAULTS["lr"],
        lambda_optimizer: str = GRADIENT_DEFAULTS["optimizer"],
        lambda_optimism: float = GRADIENT_DEFAULTS["optimism"],
        lambda_max: float | None = None,
        max_violation: float | None = MAX_VIOLATION,
        pid_kp: float = PID_DEFAULTS["kp"],
        pid_ki: float = PID_DEFAULTS["ki"],
        pid_kd: float = PID_DEFAULTS["kd"],
        pid_d_delay: int = PID_DEFAULTS["d_delay"],
        pid_ema_alpha: float = PID_DEFAULTS["ema_alpha"],
        cost_vf_coef: float = 0.5,
        cost_gamma: float | None = None,
        cost_gae_lambda: float | None = None,
        cost_quantile: float | None = COST_QUANTILE,
        n_steps: int = 512,
        _init_setup_model: bool = True,
        **kwargs: Any,
    ) -> None:
        if lagrangian not in LAGRANGIANS:
            raise ValueError(f"unknown lagrangian {lagrangian!r}; expected one of {LAGRANGIANS}")
        if cost_limit is not None:
            limits = np.atleast_1d(np.asarray(cost_limit, dtype=np.float64))
            if limits.ndim != 1 or not np.all(np.isfinite(limits)) or np.any(limits < 0):
                raise ValueError(f"cost_limit must be finite and >= 0, got {cost_limit!r}")
            if n_costs is not None and len(limits) != n_costs:
                raise ValueError(f"{len(limits)} cost limits for n_costs={n_costs}")
        if n_costs is not None and int(n_costs) < 1:
            raise ValueError(f"n_costs must be >= 1, got {n_costs}")
        if not (np.isfinite(lambda_init) and lambda_init >= 0):
            raise ValueError(f"lambda_init must be >= 0, got {lambda_init}")
        if not lambda_lr > 0:
            raise ValueError(f"lambda_lr must be > 0, got {lambda_lr}")
        if not cost_vf_coef >= 0:
            raise ValueError(f"cost_vf_coef must be >= 0, got {cost_vf_coef}")
        for name, value in (("cost_gamma", cost_gamma), ("cost_gae_lambda", cost_gae_lambda)):
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if cost_quantile is not None and not 0 < cost_quantile < 1:
            raise ValueError(f"cost_quantile must be in (0, 1) or None, got {cost_quantile}")
        # Set here, not in _setup_model: load() restores the saved policy_kwargs after
        # __init__, so an agent saved before the option keeps the class default (softplus).
        kwargs["policy_kwargs"] = with_beta_concentration(
            self.policy_aliases.get(policy, policy), kwargs.get("policy_kwargs")
        )
        super().__init__(policy, env, n_steps=n_steps, _init_setup_model=False, **kwargs)
        self.cost_limit = cost_limit
        self.n_costs = n_costs
        self.lagrangian = lagrangian
        self.lambda_init = lambda_init
        self.lambda_lr = lambda_lr
        self.lambda_optimizer = lambda_optimizer
        self.lambda_optimism = lambda_optimism
        self.lambda_max = lambda_max
        self.max_violation = max_violation
        self.pid_kp, self.pid_ki, self.pid_kd = pid_kp, pid_ki, pid_kd
        self.pid_d_delay, self.pid_ema_alpha = pid_d_delay, pid_ema_alpha
        self.cost_vf_coef = cost_vf_coef
        self.cost_gamma = cost_gamma
        self.cost_gae_lambda = cost_gae_lambda
        self.cost_quantile = cost_quantile
        self.cost_names: list[str] | None = None
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------ set-up
    def _env_cost_limits(self) -> tuple[list[str] | None, list[float] | None]:
        """Names and limits the env advertises (our envs: ``cost_limits``), if any."""
        if self.env is None:
            return None, None
        for attr in ("cost_limits", "cost_limit", "budget"):
            try:
                value = self.env.get_attr(attr, indices=[0])[0]
            except AttributeError:
                continue
            if isinstance(value, dict):
                return list(value), [float(v) for v in value.values()]
            if value is not None:
                return None, [float(v) for v in np.atleast_1d(value)]
        return None, None

    def _setup_model(self) -> None:
        if isinstance(self.observation_space, spaces.Dict):
            raise ValueError("PPOLagrangian does not support Dict observation spaces yet")
        names, env_limits = self._env_cost_limits()
        if self.n_costs is not None and env_limits is not None:
            # the user constrains fewer costs than the env reports: the first n_costs of them
            env_limits = env_limits[: self.n_costs]
            names = None if names is None else names[: self.n_costs]
        if self.cost_names is None:
            self.cost_names = names
        if self.cost_limit is None and env_limits is not None:
            self.cost_limit = env_limits if len(env_limits) > 1 else env_limits[0]
        if self.n_costs is None:
            if self.cost_limit is not None:
                self.n_costs = len(np.atleast_1d(self.cost_limit))
            else:
                self.n_costs = 1
        if self.cost_names is not None and len(self.cost_names) != self.n_costs:
            self.cost_names = None
        self.rollout_buffer_class = CostRolloutBuffer
        self.rollout_buffer_kwargs = {
            **(self.rollout_buffer_kwargs or {}),
            "n_costs": self.n_costs,
            "cost_gamma": self.cost_gamma,
            "cost_gae_lambda": self.cost_gae_lambda,
        }
        self.policy_kwargs = {**self.policy_kwargs, "n_costs": self.n_costs}
        super()._setup_model()
        self._build_lagrange(
            self.cost_limit if self.cost_limit is not None else [0.0] * self.n_costs
        )
        self.ep_cost_buffer: deque[np.ndarray] = deque(maxlen=self._stats_window_size)
        self._rollout_ep_costs: list[np.ndarray] = []
        self._current_ep_costs = np.zeros((self.n_envs, self.n_costs))

    def _build_lagrange(self, limits: float | Sequence[float]) -> None:
        if self.lagrangian == "gradient":
            kwargs = {
                "init": self.lambda_init,
                "lr": self.lambda_lr,
                "optimizer": self.lambda_optimizer,
                "optimism": self.lambda_optimism,
                "upper_bound": self.lambda_max,
                "max_violation": self.max_violation,
            }
        else:
            kwargs = {
                "kp": self.pid_kp,
                "ki": self.pid_ki,
                "kd": self.pid_kd,
                "d_delay": self.pid_d_delay,
                "ema_alpha": self.pid_ema_alpha,
                "init": self.lambda_init,
                "upper_bound": self.lambda_max,
                "max_violation": self.max_violation,
            }
        self.lagrange: LagrangeMultiplier = make_lagrange(self.lagrangian, limits, **kwargs)

    @classmethod
    def load(cls, path, env=None, device="auto", custom_objects=None, **kwargs):
        """SB3's ``load``; an agent saved before ``lambda_optimism`` or ``max_violation``
        existed keeps the multiplier it was trained with (optimism 0, no cap) unless the
        argument is given. (Its cost critic, trained on raw costs, relearns them in budgets.)"""
        if "lambda_optimism" not in kwargs or "max_violation" not in kwargs:
            start = path.tell() if hasattr(path, "seek") else None
            data, _, _ = load_from_zip_file(path, device=device, custom_objects=custom_objects,
                                            load_data=True)  # fmt: skip
            if start is not None:
                path.seek(start)
            data = data or {}
            if data.get("lagrangian") == "gradient" and "lambda_optimism" not in data:
                kwargs.setdefault("lambda_optimism", 0.0)
            if data and "max_violation" not in data:
                kwargs.setdefault("max_violation", None)
        return super().load(path, env=env, device=device, custom_objects=custom_objects, **kwargs)

    def set_parameters(self, load_path_or_dict, exact_match: bool = True, device="auto") -> None:
        """SB3's ``set_parameters``, then the arguments given to ``load()`` win over the saved
        state: ``cost_limit`` over the restored limits, ``lambda_lr`` over the restored
        optimizer's lr. A lambda optimizer of another class than the saved one starts fresh."""
        params = load_path_or_dict
        if isinstance(params, dict) and "lagrange.optimizer" in params:
            saved = params["lagrange.optimizer"]["param_groups"][0]
            current = getattr(self.lagrange, "optimizer", None)
            if current is None or set(saved) != set(current.param_groups[0]):
                params = {k: v for k, v in params.items() if k != "lagrange.optimizer"}
                exact_match = False
        super().set_parameters(params, exact_match=exact_match, device=device)
        if self.cost_limit is not None:
            self.lagrange.set_cost_limit(np.atleast_1d(self.cost_limit))
        if isinstance(self.lagrange, GradientLagrange):
            self.lagrange.set_lr(self.lambda_lr)

    def _setup_learn(self, total_timesteps: int, callback=None, reset_num_timesteps: bool = True,
                     tb_log_name: str = "run", progress_bar: bool = False):  # fmt: skip
        if reset_num_timesteps or self._last_obs is None:
            # SB3 resets the env (and its episode statistics): so are the running episode costs.
            self._current_ep_costs = np.zeros((self.n_envs, self.n_costs))
            if reset_num_timesteps:
                self.ep_cost_buffer.clear()
        return super()._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, torch_vars = super()._get_torch_save_params()
        state_dicts = [*state_dicts, "lagrange"]
        if self.lagrangian == "gradient":
            state_dicts.append("lagrange.optimizer")
        return state_dicts, torch_vars

    # ------------------------------------------------------------------ rollouts
    @property
    def lambdas(self) -> np.ndarray:
        """The current Lagrange multipliers, one per cost."""
        return self.lagrange.value

    def _read_costs(self, infos: list[dict[str, Any]]) -> np.ndarray:
        costs, self.cost_names = read_costs(infos, self.n_costs, self.cost_names)
        return costs

    def _capture_limits(self, infos: list[dict[str, Any]]) -> None:
        """Take the limits from the env's info when neither the user nor an attribute gave
        them (``agents.cost_info.limits_from_info``)."""
        if self.cost_limit is not None:
            return
        limits, self.cost_names = limits_from_info(infos[0], self.n_costs, self.cost_names)
        if limits is None:
            return
        self.cost_limit = limits if len(limits) > 1 else limits[0]
        # no update has happened yet: lambda_init keeps its value in reward per unit of cost
        self.lagrange.set_cost_limit(limits, keep="value")

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """SB3's ``collect_rollouts`` that also stores costs and cost values (same structure)."""
        assert self._last_obs is not None, "No previous observation was provided"
        assert isinstance(rollout_buffer, CostRolloutBuffer)
        self.policy.set_training_mode(False)
        n_steps = 0
        rollout_buffer.reset()
        self._rollout_ep_costs = []
        if self.use_sde:
            self.policy.reset_noise(env.num_envs)
        callback.on_rollout_start()

        while n_steps < n_rollout_steps:
            if self.use_sde and self.sde_sample_freq > 0 and n_steps % self.sde_sample_freq == 0:
                self.policy.reset_noise(env.num_envs)
            with th.no_grad():
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                actions, values, log_probs = self.policy(obs_tensor)
                cost_values = self.policy.predict_cost_values(obs_tensor)
            actions = actions.cpu().numpy()
            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                if self.policy.squash_output:
                    clipped_actions = self.policy.unscale_action(clipped_actions)
                else:
                    clipped_actions = np.clip(
                        actions, self.action_space.low, self.action_space.high
                    )

            new_obs, rewards, dones, infos = env.step(clipped_actions)
            costs = self._read_costs(infos)
            self._capture_limits(infos)
            self.num_timesteps += env.num_envs

            callback.update_locals(locals())
            if not callback.on_step():
                return False
            self._update_info_buffer(infos, dones)
            self._track_episode_costs(costs, dones)
            # The cost critic and the cost advantages work in budgets (cost / limit), as the
            # multipliers do: the same problem in other cost units trains the same policy.
            costs = costs / self._cost_scale()
            n_steps += 1

            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.reshape(-1, 1)

            # Bootstrap truncated episodes with the value (and cost value) of the last state.
            for idx, done in enumerate(dones):
                if (
                    done
                    and infos[idx].get("terminal_observation") is not None
                    and infos[idx].get("TimeLimit.truncated", False)
                ):
                    terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    with th.no_grad():
                        terminal_value = self.policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
                        terminal_cost = self.policy.predict_cost_values(terminal_obs)[0]  # type: ignore[arg-type]
                    rewards[idx] += self.gamma * terminal_value
                    costs[idx] += rollout_buffer.cost_gamma * terminal_cost.cpu().numpy()

            rollout_buffer.add(
                self._last_obs,  # type: ignore[arg-type]
                actions,
                rewards,
                self._last_episode_starts,  # type: ignore[arg-type]
                values,
                log_probs,
                cost=costs,
                cost_value=cost_values,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        with th.no_grad():
            obs_tensor = obs_as_tensor(new_obs, self.device)  # type: ignore[arg-type]
            values = self.policy.predict_values(obs_tensor)
            cost_values = self.policy.predict_cost_values(obs_tensor)
        rollout_buffer.compute_returns_and_advantage(
            last_values=values, dones=dones, last_cost_values=cost_values
        )
        if self.ep_cost_buffer:
            self._record_per_cost("rollout/ep_cost_mean", np.mean(self.ep_cost_buffer, axis=0))
        if self._rollout_ep_costs:  # logged with this rollout, not with the next one
            self._record_per_cost(
                "rollout/ep_cost_rollout", np.mean(self._rollout_ep_costs, axis=0)
            )
            self._record_per_cost(
                "rollout/ep_cost_constrained", self._constrained_statistic(self._rollout_ep_costs)
            )
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _track_episode_costs(self, costs: np.ndarray, dones: np.ndarray) -> None:
        self._current_ep_costs += costs
        for idx in np.flatnonzero(dones):
            episode_cost = self._current_ep_costs[idx].copy()
            self.ep_cost_buffer.append(episode_cost)
            self._rollout_ep_costs.append(episode_cost)
            self._current_ep_costs[idx] = 0.0

    def _cost_scale(self) -> np.ndarray:
        """Each cost's unit for the critic and the advantages: its limit (1 where it is 0)."""
        return self.lagrange.scale.detach().cpu().numpy().astype(np.float64)

    def _record_per_cost(self, key: str, values: np.ndarray) -> None:
        values = np.atleast_1d(values)
        if len(values) == 1:
            self.logger.record(key, float(values[0]))
            return
        names = self.cost_names or [str(i) for i in range(len(values))]
        for name, value in zip(names, values, strict=True):
            self.logger.record(f"{key}_{name}", float(value))

    # ------------------------------------------------------------------ update
    def _update_lagrange(self) -> None:
        """One multiplier update from the episodes that finished in this rollout (their mean
        cost, or its ``cost_quantile``); none if no episode finished (the window of older
        episodes was already counted)."""
        if not self._rollout_ep_costs:
            return
        if self.cost_limit is None:
            raise ValueError(
                "no cost_limit: pass cost_limit=, or give the env a cost_limit attribute or "
                "info['cost_limit']"
            )
        self.lagrange.update(self._constrained_statistic(self._rollout_ep_costs))

    def _constrained_statistic(self, episode_costs: list[np.ndarray]) -> np.ndarray:
        if self.cost_quantile is None:
            return np.mean(episode_costs, axis=0)
        return np.quantile(episode_costs, self.cost_quantile, axis=0)

    def train(self) -> None:
        """PPO's update with the Lagrangian advantage and a cost-critic loss."""
        self._update_lagrange()
        # the price of one budget's worth of cost: the cost advantages are in budgets
        lambdas = self.lagrange.relative_value.detach().to(self.device, th.float32)
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        entropy_losses, pg_losses, value_losses, cost_value_losses = [], [], [], []
        clip_fractions = []
        continue_training = True
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            for data in self.rollout_buffer.get(self.batch_size):
                actions = data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = data.actions.long().flatten()
                values, log_prob, entropy = self.policy.evaluate_actions(data.observations, actions)
                values = values.flatten()
                cost_values = self.policy.predict_cost_values(data.observations)

                # Combine first, then standardise: lambda_rel stays the price of one budget's
                # worth of cost in units of reward, whatever the scales of the two advantages.
                advantages = (data.advantages - (data.cost_advantages * lambdas).sum(dim=1)) / (
                    1.0 + lambdas.sum()
                )
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                ratio = th.exp(log_prob - data.old_log_prob)
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()
                pg_losses.append(policy_loss.item())
                clip_fractions.append(th.mean((th.abs(ratio - 1) > clip_range).float()).item())

                if self.clip_range_vf is None:
                    values_pred, cost_values_pred = values, cost_values
                else:
                    values_pred = data.old_values + th.clamp(
                        values - data.old_values, -clip_range_vf, clip_range_vf
                    )
                    cost_values_pred = data.old_cost_values + th.clamp(
                        cost_values - data.old_cost_values, -clip_range_vf, clip_range_vf
                    )
                value_loss = F.mse_loss(data.returns, values_pred)
                cost_value_loss = F.mse_loss(data.cost_returns, cost_values_pred)
                value_losses.append(value_loss.item())
                cost_value_losses.append(cost_value_loss.item())

                entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
                entropy_losses.append(entropy_loss.item())
                loss = (
                    policy_loss
                    + self.ent_coef * entropy_loss
                    + self.vf_coef * value_loss
                    + self.cost_vf_coef * cost_value_loss
                )

                with th.no_grad():
                    log_ratio = log_prob - data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch}: approx kl {approx_kl_div:.2f}")
                    break

                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        buffer = self.rollout_buffer
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/cost_value_loss", np.mean(cost_value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record(
            "train/explained_variance",
            explained_variance(buffer.values.flatten(), buffer.returns.flatten()),
        )
        self.logger.record(
            "train/cost_explained_variance",
            explained_variance(buffer.cost_values.flatten(), buffer.cost_returns.flatten()),
        )
        self._record_per_cost("train/lambda", self.lagrange.value)
        if self.cost_limit is not None:
            self._record_per_cost("train/cost_limit", np.atleast_1d(self.cost_limit))
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
