"""Resume: a search stopped by SIGTERM and resumed is the search that was never stopped.

In-process runs of the job (``prune_pipeline.job.main``) on a tiny synthetic task. The env
sends SIGTERM to its own process in the middle of a rollout, the way a scheduler does; the
job must checkpoint at the next whole state, exit with 130, and ``--resume`` must then give
the same episodes (keep ratios, rewards, costs, step numbers), the same lambda history and
the same agent as one uninterrupted run. A resume that restarts the step count, forgets an
RNG state (the action space's included), loses the replay buffer or the last transition
before the stop, or drops the episode in progress would diverge.
"""

import json
import os
import signal

import gymnasium as gym
import pytest
import torch

import prune_pipeline.job as job
from agents import registry
from agents.callbacks import SearchMonitor
from prune_pipeline.run_folder import RunFolder

TINY = [
    "--env", "VGG11Prune-v0", "--dataset", "synthetic", "--width-mult", "0.125",
    "--base-epochs", "1", "--reward-size", "64", "--finetune-epochs", "1", "--test-size", "64",
    "--device", "cpu", "--no-progress", "--checkpoint-every", "3600",
]  # fmt: skip
# VGG11 has 8 prunable layers: episodes of 8 steps. ppo_lag's rollouts of 28 steps end in the
# middle of an episode, which the resumed search must continue; amc (TD3) samples random
# actions until step 100, so it is stopped inside that warm-up: (algo kwargs, total steps,
# where the stop lands).
CASES = {
    "ppo_lag": ({"n_steps": 28, "batch_size": 14}, 168, 84),
    "amc": ({}, 160, 72),
}


class SigtermAt(gym.Wrapper):
    """Sends SIGTERM to this process at its ``at``-th step (once)."""

    def __init__(self, env: gym.Env, at: int) -> None:
        super().__init__(env)
        self.at, self.steps = at, 0

    def step(self, action):
        self.steps += 1
        if self.steps == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.env.step(action)


def _episodes(run_dir):
    return [{k: v for k, v in e.items() if k != "wall_time"} for e in RunFolder(run_dir).episodes()]


@pytest.mark.parametrize("algo", sorted(CASES))
def test_a_sigterm_stopped_search_resumes_as_if_never_stopped(algo, tmp_path, home, monkeypatch):
    algo_kwargs, total, stop = CASES[algo]
    args = [*TINY, "--algo", algo, "--total-timesteps", str(total)]
    args += ["--algo-kwargs", json.dumps(algo_kwargs)]
    previous = signal.getsignal(signal.SIGTERM)
    assert job.main([*args, "--out", str(tmp_path / "straight")]) == 0
    (straight,) = (tmp_path / "straight").iterdir()

    make_task = job.make_task

    def interrupted_task(cfg):
        task = make_task(cfg)
        task.env = SigtermAt(task.env, at=70)  # mid-rollout, mid-episode
        return task

    monkeypatch.setattr(job, "make_task", interrupted_task)
    assert job.main([*args, "--out", str(tmp_path / "stopped")]) == 130
    assert signal.getsignal(signal.SIGTERM) is previous  # the job restored the handler
    monkeypatch.setattr(job, "make_task", make_task)
    (stopped,) = (tmp_path / "stopped").iterdir()
    run = RunFolder(stopped)
    assert not run.is_complete
    state = run.checkpoint_state()
    # Stopped at the next whole state: the next rollout start (on-policy, step 84, half-way
    # through an episode) or the first episode end after the signal (off-policy, step 72);
    # no later step is kept.
    assert state["num_timesteps"] == stop
    assert state["episodes"][-1]["env_steps"] == stop - stop % 8
    assert [s["env"]["step"] for s in state["episode_states"]] == [stop % 8]

    assert job.main(["--resume", str(stopped), "--no-progress"]) == 0
    a, b = RunFolder(straight).report(), run.report()
    assert b["search"]["resumes"] == 1 and b["search"]["env_steps"] == total
    assert _episodes(stopped) == _episodes(straight)
    assert b["lambda_history"] == a["lambda_history"]
    assert b["pruned"]["keep_ratios"] == a["pruned"]["keep_ratios"]
    # the same agent at the end: every parameter equal
    spec = registry.get(algo)
    agent_a = spec.agent_class.load(straight / "agent.zip", device="cpu")
    agent_b = spec.agent_class.load(stopped / "agent.zip", device="cpu")
    for (name, p), q in zip(
        agent_a.policy.state_dict().items(), agent_b.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name


def test_the_monitor_stops_only_where_the_agent_is_whole():
    """An off-policy checkpoint must not be taken at an episode's last step: SB3 stores that
    transition after the step callback, so the replay buffer would miss it."""
    from stable_baselines3 import TD3

    from tests.toy_envs import FixedCostEnv

    def chain():  # episodes of 3 steps
        return FixedCostEnv({"cost": 0.3}, {"cost": 0.5}, length=3)

    saved = []

    def checkpoint(model):
        saved.append((model.num_timesteps, model.replay_buffer.size()))

    monitor = SearchMonitor(12, checkpoint, 0.0, progress=False)
    TD3("MlpPolicy", chain(), learning_starts=2, seed=0).learn(12, callback=monitor)
    # after each finished episode, with every stored transition in the buffer
    assert saved == [(3, 3), (6, 6), (9, 9)]

    saved.clear()
    monitor = SearchMonitor(60, checkpoint, 3600.0, progress=False)
    monitor.request_stop()
    agent = TD3("MlpPolicy", chain(), learning_starts=2, seed=0)
    agent.learn(60, callback=monitor)
    # the first whole state after the request: the end of the first episode, then stop
    assert monitor.stopped and saved == [(3, 3)] and agent.num_timesteps == 4
