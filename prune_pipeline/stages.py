"""The job's stages as functions with typed results: search, extraction, fine-tuning and
measurement (the base model is the task's, ``prune_pipeline.task``).

Each stage takes what the previous one returned, so a caller can run them one by one (a
notebook, another search) or all at once (``prune_pipeline.job.run_job``).
"""

from __future__ import annotations

import contextlib
import io
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from torch import nn

from agents import registry
from agents.callbacks import SearchMonitor
from agents.recording import EpisodeRecord, rollout, violation_rate_per_quarter
from prune_env.constraints import final_verdict, is_measured
from prune_env.numerics import state_digest
from prune_env.zoo import split_accuracy
from prune_pipeline.pruned import finetune_pruned, measure
from prune_pipeline.run_folder import RunFolder
from prune_pipeline.task import Task

COST_KEYS = {"params": "params", "flops": "flops", "latency": "latency_ms"}


class SearchInterrupted(Exception):
    """The search stopped early (Ctrl-C or SIGTERM) after writing its checkpoint."""


# ----------------------------------------------------------------------------- base model
def measure_base(task: Task) -> dict[str, Any]:
    """The base model on the test images: accuracy, params, MACs, latency; its reward
    accuracy; and a digest of its weights (``weights_sha1``: runs on one network, whichever
    session trained it, have the same one)."""
    stats = measure(task.base_model, task.test, task.info, task.latency_batch()).to_dict()
    stats["reward_accuracy"] = task.mdp.base_accuracy
    stats["weights_sha1"] = state_digest(task.base_model)
    return stats


# ----------------------------------------------------------------------------- search
@dataclass
class SearchResult:
    agent: Any
    episodes: list[dict[str, Any]]
    summary: dict[str, Any]  # the report's "search" section
    lambda_history: list[Any] = field(default_factory=list)


def rng_state(agent: Any = None) -> dict[str, Any]:
    """Every random stream a search draws from: torch (CPU and CUDA), NumPy, Python, and the
    agent's action space (off-policy warm-up samples it; ``load`` re-seeds it)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": list(internal),
        "python_version": version,
        "python_gauss_next": gauss_next,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    space = getattr(agent, "action_space", None)
    if space is not None:
        state["action_space"] = space.np_random.bit_generator.state
    return state


def set_rng_state(state: dict[str, Any], agent: Any = None) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(
        (state["python_version"], tuple(state["python"]), state.get("python_gauss_next"))
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "action_space" in state and agent is not None:
        agent.action_space.np_random.bit_generator.state = state["action_space"]


def _shifted(records: list[EpisodeRecord], first: int, steps: int, wall: float) -> list[dict]:
    """Episodes of a resumed search, numbered on from the ones before the interruption."""
    return [
        {
            **r.to_dict(),
            "index": first + i,
            "env_steps": steps + r.env_steps,
            "wall_time": wall + r.wall_time,
        }
        for i, r in enumerate(records)
    ]


def _merged(before: list, since: list) -> list:
    """Lambda history of a resumed search: a resumed monitor records again the step of the
    checkpoint it starts from."""
    last = before[-1][0] if before else -1
    return before + [entry for entry in since if entry[0] > last]


@contextlib.contextmanager
def _stop_at_a_whole_state(monitor: SearchMonitor | None) -> Iterator[None]:
    """While an RL search runs, the first SIGINT or SIGTERM asks ``monitor`` to checkpoint at
    the next whole state (the next rollout start) and stop there; a second one stops at once
    (KeyboardInterrupt), keeping the last checkpoint. Outside the main thread (where signal
    handlers cannot be set) and for the search baselines, nothing changes."""
    if monitor is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if monitor.stop_requested:
            raise KeyboardInterrupt(f"signal {signum} again")
        monitor.request_stop()
        print(
            f"\nsignal {signum}: stopping at the next checkpoint (end of this rollout); "
            "send it again to stop now and keep the last checkpoint",
            flush=True,
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _SearchLog:
    """One search's bookkeeping across interruptions: what its last checkpoint recorded
    (episodes, env steps, wall time, images, lambda history) and what was added since."""

    def __init__(self, task: Task, run: RunFolder, n_envs: int) -> None:
        self.task, self.run = task, run
        self.state = state = run.checkpoint_state()
        self.prior: list[dict] = state.get("episodes", [])
        self.prior_steps = int(state.get("num_timesteps", 0))
        self.prior_wall = float(state.get("wall", 0.0))
        self.prior_lambdas: list = state.get("lambda_history", [])
        self.stages = state.get("stages", {})
        self.resumes = int(state.get("resumes", 0))
        # Images run to score candidates: counted by the env itself, so only with one env copy
        # (other copies, in this process or others, keep their own counts). A resumed search
        # starts with an empty evaluation cache, so it may count more than an uninterrupted one.
        self.images_at_start = task.mdp.cache_info()["images"] if n_envs == 1 else None
        # a checkpoint written before the count existed: the resumed search's total is unknown
        self.prior_images = state.get("images_evaluated", None if state else 0)
        self.t0 = time.perf_counter()
        self.log: Any = None  # the agent's episode log, once the agent exists
        self.monitor: SearchMonitor | None = None

    def images_evaluated(self) -> int | None:
        if self.images_at_start is None or self.prior_images is None:
            return None
        now = self.task.mdp.cache_info()["images"]
        return int(self.prior_images + now - self.images_at_start)

    def wall(self) -> float:
        return self.prior_wall + time.perf_counter() - self.t0

    def episodes(self) -> list[dict]:
        since = _shifted(self.log.records, len(self.prior), self.prior_steps, self.prior_wall)
        return self.prior + since

    def lambda_history(self) -> list:
        return _merged(self.prior_lambdas, self.monitor.lambda_history)

    def checkpoint(self, model: Any) -> None:
        """Save the agent (and its replay buffer), every random stream and this log."""
        step = int(model.num_timesteps)
        buffer = io.BytesIO()
        model.save(buffer)
        files = {"agent": (f"agent-{step}.zip", buffer.getvalue())}
        if isinstance(model, OffPolicyAlgorithm):
            buffer = io.BytesIO()
            model.save_replay_buffer(buffer)
            files["replay"] = (f"replay-{step}.pkl", buffer.getvalue())
        buffer = io.BytesIO()
        torch.save(rng_state(model), buffer)
        files["rng"] = (f"rng-{step}.pt", buffer.getvalue())
        self.run.commit_checkpoint(
            files,
            {
                "num_timesteps": step,
                # the episode each env copy is in the middle of (a rollout ends anywhere)
                "episode_states": model.get_env().env_method("get_episode_state"),
                "wall": self.wall(),
                "images_evaluated": self.images_evaluated(),
                "episodes": self.episodes(),
                "lambda_history": self.lambda_history(),
                "stages": self.stages,
                "resumes": self.resumes,
            },
        )

    def summary(self, env_steps: int) -> dict[str, Any]:
        """The report's "search" section."""
        episodes = self.episodes()
        feasible = [e for e in episodes if e["feasible"]]
        return {
            "episodes": len(episodes),
            "env_steps": int(env_steps),
            "feasible_episodes": len(feasible),
            "violation_rate": 1 - len(feasible) / len(episodes) if episodes else None,
            "violation_rate_per_quarter": violation_rate_per_quarter(
                [e["feasible"] for e in episodes],
                [e["env_steps"] for e in episodes],
                int(env_steps),
            ),
            "first_feasible_step": feasible[0]["env_steps"] if feasible else None,
            "best_feasible_reward": max((e["reward"] for e in feasible), default=None),
            "wall_time": self.wall(),
            # reward, calibration and fine-tuning images of uncached evaluations (None:
            # counted in env copies of other processes)
            "images_evaluated": self.images_evaluated(),
            "resumes": self.resumes,
        }


def _resume(agent: Any, agent_class: type, search_log: _SearchLog, device: str) -> Any:
    """The agent of ``search_log``'s last checkpoint, on ``agent``'s env copies, with every
    random stream and the episodes in progress as they were when it was written."""
    run, state = search_log.run, search_log.state
    files = state["files"]
    venv = agent.get_env()
    episodes_in_progress = state.get("episode_states")
    continues = episodes_in_progress is not None and None not in episodes_in_progress
    # force_reset=False keeps the saved last observation, so learn() continues the
    # episodes in progress instead of starting new ones (their steps already count).
    agent = agent_class.load(
        run.checkpoint_file(files["agent"]), env=venv, device=device, force_reset=not continues
    )
    if continues and agent._last_obs is not None:
        venv.reset()  # the wrappers' order checks want a reset before the first step
        for i, episode in enumerate(episodes_in_progress):
            venv.env_method("set_episode_state", episode, indices=i)
    else:
        agent._last_obs = None  # learn() starts new episodes
    if "replay" in files:
        agent.load_replay_buffer(run.checkpoint_file(files["replay"]))
    set_rng_state(torch.load(run.checkpoint_file(files["rng"]), weights_only=True), agent)
    search_log.resumes += 1
    print(
        f"resumed the search at step {agent.num_timesteps:,} "
        f"({len(search_log.prior)} episodes recorded before)",
        flush=True,
    )
    return agent


def _learn(agent: Any, monitor: SearchMonitor, is_rl: bool, total_timesteps: int) -> None:
    """Run the search to ``total_timesteps``; any stop before the end (a signal, a search
    baseline interrupted) raises SearchInterrupted."""
    try:
        with _stop_at_a_whole_state(monitor if is_rl else None):
            if is_rl:
                remaining = total_timesteps - agent.num_timesteps
                if remaining > 0:
                    agent.learn(
                        total_timesteps=remaining,
                        callback=monitor,
                        reset_num_timesteps=False,
                        tb_log_name="search",
                    )
            else:
                agent.learn(total_timesteps=total_timesteps)
    except (KeyboardInterrupt, SearchInterrupted) as exc:
        # Stopped at once (a second signal, or a search baseline): the state now is not whole
        # (a rollout or an episode half done), so the last checkpoint stands.
        raise SearchInterrupted(str(exc) or "Ctrl-C") from None
    except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
        if not monitor.stop_requested:
            raise
        # A SIGTERM sent to the whole process group ended the sub-process env copies too.
        raise SearchInterrupted(
            f"the env workers were ended by the same signal ({type(exc).__name__}); the last "
            "checkpoint stands (send SIGTERM to the main process alone to stop at the next one)"
        ) from None
    if monitor.stopped:
        raise SearchInterrupted(f"stopped at step {agent.num_timesteps:,}, after its checkpoint")


def search(
    task: Task,
    algo: str,
    agent_kwargs: dict[str, Any],
    total_timesteps: int,
    seed: int,
    run: RunFolder,
    n_envs: int = 1,
    vec_env: str = "subproc",
    vec_env_kwargs: dict[str, Any] | None = None,
    checkpoint_every: float = 120.0,
    progress: bool = True,
) -> SearchResult:
    """Run ``algo`` for ``total_timesteps`` env steps, checkpointing into ``run`` every
    ``checkpoint_every`` seconds (RL agents) and continuing from its last checkpoint if there
    is one. On Ctrl-C or SIGTERM an RL search checkpoints at the next rollout start and raises
    SearchInterrupted (a second signal raises it at once, keeping the last checkpoint); a
    resumed search then continues exactly as the uninterrupted one would have."""
    spec = registry.get(algo)
    is_rl = spec.agent_class is not None
    n_envs = n_envs if is_rl else 1
    search_log = _SearchLog(task, run, n_envs)
    kwargs = dict(agent_kwargs)
    if is_rl:
        kwargs["tensorboard_log"] = str(run.file("tb"))
    agent, search_log.log = registry.make_agent(
        algo,
        task.env if n_envs == 1 else task.env_factory,
        seed=seed,
        n_envs=n_envs,
        vec_env=vec_env,
        vec_env_kwargs=vec_env_kwargs or {},
        **kwargs,
    )
    if is_rl and search_log.state:
        agent = _resume(agent, spec.agent_class, search_log, kwargs.get("device", "cpu"))
    # The search baselines write no checkpoint (a resumed one starts over).
    monitor = search_log.monitor = SearchMonitor(
        total_timesteps, search_log.checkpoint if is_rl else None, checkpoint_every, progress
    )
    _learn(agent, monitor, is_rl, total_timesteps)
    if is_rl:
        search_log.checkpoint(agent)  # the finished search: a resume skips to extraction
    if monitor.stop_requested:
        raise SearchInterrupted("stopped after the last step, after its checkpoint")
    log = search_log.log
    env_steps = search_log.prior_steps + log.total_steps if is_rl else log.total_steps
    return SearchResult(
        agent, search_log.episodes(), search_log.summary(env_steps), search_log.lambda_history()
    )


# ----------------------------------------------------------------------------- extraction
@dataclass
class Extraction:
    net: nn.Module  # the pruned network, not yet fine-tuned
    chosen: dict[str, Any]  # the env's evaluation of the chosen keep ratios
    source: str
    selection: dict[str, Any]  # the report's "selection" section
    final_policy: dict[str, Any] | None  # the learned policy's own episode (RL agents)


def chosen_feasible(selection: dict[str, Any]) -> bool:
    """The search's verdict on the network it delivered, read from the report's "selection"
    section (``Extraction.selection``: the env's evaluation of every candidate)."""
    chosen = [c for c in selection["candidates"] if c["source"] == selection["chosen"]]
    if len(chosen) != 1:
        raise ValueError(f"the selection names no single chosen candidate: {selection!r}")
    return bool(chosen[0]["feasible"])


def extract(
    task: Task,
    algo: str,
    agent: Any,
    agent_kwargs: dict[str, Any],
    episodes: list[dict],
    budget: float,
) -> Extraction:
    """The deterministic policy's episode and the best feasible episode of the search compete
    on the env's reward; the better feasible one is pruned out (the least costly one if none
    is feasible)."""
    candidates = []
    final_policy = None
    try:
        final = rollout(agent, registry.wrapped_env(algo, task.env, **agent_kwargs))
        candidates.append(("the deterministic policy's episode", final))
        # The learned policy is the deliverable of an RL search: did it meet the budget?
        final_policy = {
            "cost": float(final["cost"]),
            "reward_accuracy": float(final["accuracy"]),
            "feasible": bool(final["constraint_satisfied"]),
            "budget_use": float(final["cost"]) / budget,
        }
    except RuntimeError as exc:  # a search baseline that found nothing feasible has no policy
        print(f"no deterministic policy episode: {exc}")
    feasible = [e for e in episodes if e["feasible"]]
    if feasible:
        best = max(feasible, key=lambda e: e["reward"])
        candidates.append(
            ("the best feasible episode of the search", task.mdp.evaluate(best["keep_ratios"]))
        )
    elif episodes:  # nothing feasible: the search's closest miss competes too
        least = min(episodes, key=lambda e: e["cost"])
        candidates.append(
            ("the least costly episode of the search", task.mdp.evaluate(least["keep_ratios"]))
        )
    if not candidates:
        raise RuntimeError(f"{algo} evaluated no episode: nothing to extract")
    # Ranked by the reward the search climbed (info["reward"], the env's reward= variant).
    ranked = sorted(
        candidates, key=lambda c: (c[1]["constraint_satisfied"], c[1]["reward"]), reverse=True
    )
    if not ranked[0][1]["constraint_satisfied"]:  # nothing feasible: the least costly one
        ranked = sorted(candidates, key=lambda c: c[1]["cost"])
    source, chosen = ranked[0]
    selection = {
        "chosen": source,
        "candidates": [
            {
                "source": s,
                "reward_accuracy": i["accuracy"],
                "cost": i["cost"],
                "feasible": bool(i["constraint_satisfied"]),
            }
            for s, i in candidates
        ],
    }
    net = task.mdp.pruned_network(chosen["keep_ratios"])
    return Extraction(net, chosen, source, selection, final_policy)


# ----------------------------------------------------------------------------- fine-tuning
def finetune(
    task: Task,
    net: nn.Module,
    epochs: int,
    lr: float,
    keep_zeros: bool,
    seed: int,
    progress: bool = True,
) -> float:
    """Fine-tune ``net`` in place on the whole training split (pruned weights stay zero with
    ``keep_zeros``); returns its test accuracy before fine-tuning."""
    before = split_accuracy(net, task.test, task.info)
    finetune_pruned(
        net,
        task.train,
        task.info,
        task.recipe,
        epochs,
        lr,
        keep_zeros=keep_zeros,
        seed=seed,
        progress=progress,
        augment=task.augment,
    )
    return before


# ----------------------------------------------------------------------------- measurement
def measure_pruned(
    task: Task,
    net: nn.Module,
    extraction: Extraction,
    base: dict[str, Any],
    cost: str,
    budget: float,
    weight_granularity: bool,
    accuracy_before: float,
) -> dict[str, Any]:
    """The fine-tuned pruned network on the test images, its measured cost against the base,
    and whether the constraint holds (``prune_env.constraints.final_verdict``: latency is
    noisy, so the search's measurement decides it; params and FLOPs are recounted)."""
    stats = measure(
        net, task.test, task.info, task.latency_batch(), nonzero=weight_granularity
    ).to_dict()
    key = COST_KEYS[cost]
    measured_cost = stats[key] / base[key]
    chosen = extraction.chosen
    search_feasible = bool(chosen["constraint_satisfied"])
    stats.update(
        {
            "test_accuracy_before_finetune": accuracy_before,
            "reward_accuracy": chosen["accuracy"],
            "cost": float(chosen["cost"]),
            "measured_cost": measured_cost,
            "constraint_satisfied": final_verdict(
                is_measured(cost), search_feasible, measured_cost, budget
            ),
            "layers": task.layers,
            "kept": chosen["kept"],
            "keep_ratios": chosen["keep_ratios"],
        }
    )
    return stats
