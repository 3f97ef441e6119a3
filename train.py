"""Prune a network with constrained RL, end to end.

    python train.py --env VGG16Prune-v0                                # CPU demo (--preset quick)
    python train.py --env VGG16Prune-v0 --preset paper --device cuda   # paper scale, GPU

Five stages, each with a progress bar and a one-line summary: (1) the base model (loaded from
the cache or trained), (2) the RL search, (3) extraction of the pruned model (the
deterministic policy's episode or the best feasible episode of the search, whichever is more
accurate on the reward split), (4) fine-tuning, (5) test accuracy and measurements. Everything
lands in ``{out}/{env}__{algo}__{seed}__{time}/`` (see the README); ``--resume RUN_DIR``
continues an interrupted run from its last checkpoint.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

import prune_env
from agents import registry
from agents.callbacks import SearchMonitor
from agents.recording import EpisodeRecord, rollout, violation_rate_per_quarter
from prune_env.costs import BUILTIN_COSTS
from prune_env.data import ALL_DATASETS, Split, normalise
from prune_env.envs.pruning import GRANULARITIES
from prune_env.paths import atomic_torch_save, atomic_write_bytes, atomic_write_json
from prune_env.plots import plot_accuracy_vs_cost, plot_keep_ratios, plot_training
from prune_env.pruned import finetune_pruned, measure, save_pruned
from prune_env.report import pct, render_report
from prune_env.zoo import split_accuracy

PRESETS: dict[str, dict[str, Any]] = {
    # A CPU demo of the whole pipeline: a quarter-width network with a short base recipe, a
    # 1,000-image reward split, a short search and one fine-tuning epoch (under 15 minutes on
    # 2 CPU cores for VGG16Prune-v0, base model training included; see the README).
    "quick": {
        "width_mult": 0.25,
        "base_epochs": 3,
        "reward_size": 1000,
        "total_timesteps": 15_000,
        "finetune_epochs": 1,
        # 59 rollouts of 256 steps: the multiplier settles within the short search (on the
        # quick task's surrogate, 4 seeds: rollouts of 512 left ppo_pid_lag's final policy
        # over the budget in 3 of 4 seeds, 256 met it in 4 of 4; docs/convergence.md).
        "on_policy_kwargs": {"n_steps": 256, "batch_size": 64},
    },
    # Paper scale (GPU): full-width network with the architecture's full base recipe, the
    # paper's 20,000-image reward split, a long search and a long fine-tuning.
    "paper": {
        "width_mult": 1.0,
        "base_epochs": None,
        "reward_size": 20_000,
        "total_timesteps": 100_000,
        "finetune_epochs": 30,
        "on_policy_kwargs": {"n_steps": 2048, "batch_size": 256},
    },
}
STAGES = ("base_model", "search", "extraction", "finetune", "test")


@dataclass
class Config:
    env: str = field(default="VGG16Prune-v0", metadata={"help": "env id to prune"})
    algo: str = field(
        default="ppo_pid_lag",
        metadata={"help": "algorithm (registry name); ppo_pid_lag settles on the budget"},
    )
    preset: str = field(default="quick", metadata={"help": "quick (CPU demo) or paper (GPU)"})
    budget: float = field(default=0.1, metadata={"help": "largest fraction of the cost kept"})
    cost: str = field(default="params", metadata={"help": "constrained resource"})
    granularity: str = field(default="channel", metadata={"help": "channel or weight pruning"})
    total_timesteps: int | None = field(
        default=None, metadata={"help": "env steps of the search (default: preset)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the agent and fine-tuning"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda (env and nets)"})
    data_dir: str | None = field(
        default=None, metadata={"help": "data folder (default: $PRUNE_ENV_DATA)"}
    )
    dataset: str | None = field(default=None, metadata={"help": "data set (default: the env's)"})
    checkpoint: str | None = field(
        default=None, metadata={"help": "base model weights (default: cache or train)"}
    )
    width_mult: float | None = field(
        default=None, metadata={"help": "width of the base network (default: preset)"}
    )
    base_epochs: int | None = field(
        default=None, metadata={"help": "epochs of the base recipe (default: preset)"}
    )
    reward_size: int | None = field(
        default=None, metadata={"help": "training images in the reward split (default: preset)"}
    )
    n_envs: int = field(default=1, metadata={"help": "env copies the RL agent steps at once"})
    vec_env: str = field(
        default="subproc", metadata={"help": "dummy, subproc or ray (for n_envs > 1)"}
    )
    vec_env_kwargs: str = field(
        default="{}", metadata={"help": "JSON for the VecEnv, e.g. '{\"num_gpus\": 0.25}' (ray)"}
    )
    finetune_epochs: int | None = field(
        default=None, metadata={"help": "fine-tuning epochs on the training set (default: preset)"}
    )
    finetune_lr: float = field(default=0.01, metadata={"help": "peak fine-tuning learning rate"})
    test_size: int | None = field(
        default=None, metadata={"help": "test images to measure on (default: all)"}
    )
    algo_kwargs: str = field(
        default="{}", metadata={"help": "JSON of algorithm arguments, e.g. '{\"n_steps\": 256}'"}
    )
    env_kwargs: str = field(
        default="{}", metadata={"help": "JSON of extra env arguments (see help(PruneEnv))"}
    )
    out: str = field(default="runs", metadata={"help": "folder that receives the run folder"})
    resume: str | None = field(
        default=None, metadata={"help": "run folder to continue (its config is used)"}
    )
    checkpoint_every: float = field(
        default=120.0, metadata={"help": "seconds between search checkpoints"}
    )
    progress: bool = field(default=True, metadata={"help": "progress bars"})


def parse_args(argv: list[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)  # fmt: skip
            continue
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        parser.add_argument(flag, type=kind, default=f.default, help=help_text)
    cfg = Config(**vars(parser.parse_args(argv)))
    if cfg.resume is None:
        validate(cfg)
    return cfg


def _choice(name: str, value: Any, valid: Any) -> None:
    if value not in valid:
        raise SystemExit(f"error: unknown --{name} {value!r}; expected one of {list(valid)}")


def validate(cfg: Config) -> None:
    """Unknown values fail with the list of valid ones, before anything slow starts."""
    _choice("env", cfg.env, prune_env.ZOO_IDS)
    _choice("algo", cfg.algo, registry.names())
    _choice("preset", cfg.preset, PRESETS)
    _choice("cost", cfg.cost, BUILTIN_COSTS)
    _choice("granularity", cfg.granularity, GRANULARITIES)
    _choice("device", cfg.device.split(":")[0], ("auto", "cpu", "cuda"))
    _choice("vec-env", cfg.vec_env, registry.VEC_ENVS)
    if cfg.dataset is not None:
        _choice("dataset", cfg.dataset, ALL_DATASETS)
    if not 0 < cfg.budget <= 1:
        raise SystemExit(f"error: --budget must be in (0, 1], got {cfg.budget}")
    for name in ("n_envs", "total_timesteps", "reward_size"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("algo_kwargs", "env_kwargs", "vec_env_kwargs"):
        try:
            value = json.loads(getattr(cfg, name))
        except json.JSONDecodeError as exc:
            raise SystemExit(f"error: --{name.replace('_', '-')} is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise SystemExit(f"error: --{name.replace('_', '-')} must be a JSON object")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but PyTorch sees no CUDA device")


def resolve(cfg: Config) -> Config:
    """Fill what the user left to the preset."""
    preset = PRESETS[cfg.preset]
    for name in ("width_mult", "base_epochs", "reward_size", "total_timesteps", "finetune_epochs"):
        if getattr(cfg, name) is None:
            setattr(cfg, name, preset[name])
    return cfg


def env_arguments(cfg: Config) -> dict[str, Any]:
    """The env's keyword arguments for a resolved configuration (evaluate.py uses them too)."""
    return {
        "budget": cfg.budget,
        "cost": cfg.cost,
        "granularity": cfg.granularity,
        "width_mult": cfg.width_mult,
        "base_train_epochs": cfg.base_epochs,
        "reward_size": cfg.reward_size,
        "data_dir": cfg.data_dir,
        "checkpoint": cfg.checkpoint,
        "device": cfg.device,
        **({"dataset": cfg.dataset} if cfg.dataset else {}),
        **json.loads(cfg.env_kwargs),
    }


def algo_arguments(cfg: Config, algo: str) -> dict[str, Any]:
    """Keyword arguments of ``algo``: the preset's rollout size for on-policy agents, then
    ``--algo-kwargs``; RL agents run on the CPU (small MLPs) unless told otherwise."""
    agent_class = registry.get(algo).agent_class
    if agent_class is None:
        return {}
    kwargs: dict[str, Any] = {"device": "cpu"}
    if issubclass(agent_class, OnPolicyAlgorithm):
        kwargs.update(PRESETS[cfg.preset]["on_policy_kwargs"])
    return {**kwargs, **json.loads(cfg.algo_kwargs)}


def test_split(env: Any, cfg: Config) -> Split:
    """The test split the run measures on (its first ``test_size`` images if set)."""
    test = env.unwrapped.dataset_split("test")
    if cfg.test_size is not None:
        test = Split(test.images[: cfg.test_size], test.labels[: cfg.test_size], test.classes)
    return test


# ----------------------------------------------------------------------------- helpers
def say(stage: int, name: str, text: str, seconds: float) -> None:
    print(f"[{stage}/5] {name}: {text} ({seconds:.1f} s)", flush=True)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate((state["python_version"], tuple(state["python"]), None))


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{torch.get_num_threads()} threads of {cpu}, no GPU, torch {torch.__version__}"


def shifted(records: list[EpisodeRecord], first: int, steps: int, wall: float) -> list[dict]:
    """Episodes of a resumed search, numbered on from the ones before the interruption."""
    return [
        {**r.to_dict(), "index": first + i, "env_steps": steps + r.env_steps,
         "wall_time": wall + r.wall_time}
        for i, r in enumerate(records)
    ]  # fmt: skip


class Interrupted(Exception):
    """SIGTERM, turned into an exception so that the run checkpoints before it stops."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


# ----------------------------------------------------------------------------- the job
def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupted)

    # Run folder and configuration: a new run, or the one being resumed.
    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        if not (run_dir / "config.json").is_file():
            raise SystemExit(f"error: {run_dir} has no config.json: not a run folder")
        saved = json.loads((run_dir / "config.json").read_text())["config"]
        cfg = Config(**{**saved, "resume": str(run_dir), "progress": cfg.progress})
    else:
        cfg = resolve(cfg)
        name = f"{cfg.env}__{cfg.algo}__{cfg.seed}__{int(time.time())}"
        run_dir = Path(cfg.out) / name
        run_dir.mkdir(parents=True, exist_ok=False)
        config_blob = {
            "config": asdict(cfg),
            "command": " ".join([sys.executable, *sys.argv]),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "prune_env": prune_env.__version__},
        }  # fmt: skip
        atomic_write_json(config_blob, run_dir / "config.json")
    ckpt_dir = run_dir / "checkpoint"
    state: dict[str, Any] = {}
    if (ckpt_dir / "state.json").is_file():
        state = json.loads((ckpt_dir / "state.json").read_text())
    if (run_dir / "report.json").is_file():
        print(f"{run_dir} is complete (report.json exists); nothing to do")
        return 0
    print(f"run folder: {run_dir}" + (" (resumed)" if state else ""), flush=True)
    spec = registry.get(cfg.algo)
    env_kwargs = env_arguments(cfg)
    stages: dict[str, float] = dict(state.get("stages", {}))
    torch.manual_seed(cfg.seed)

    # 1. Base model: the env loads it from the cache (or --checkpoint) or trains it.
    t0 = time.perf_counter()
    env = prune_env.make(cfg.env, progress=cfg.progress, **env_kwargs)
    penv = env.unwrapped
    device, info = penv.device, penv.data_info
    test = test_split(env, cfg)
    latency_batch = normalise(test.images[:64].to(device), info)
    base_stats = measure(penv.base_model, test, info, latency_batch).to_dict()
    base_stats["reward_accuracy"] = penv.base_accuracy
    stages["base_model"] = time.perf_counter() - t0
    say(1, "base model", f"{penv.base_info.get('source')}: test accuracy "
        f"{pct(base_stats['test_accuracy'])}, {base_stats['params']:,} params, "
        f"{base_stats['flops']:,} MACs, {penv.n_layers} prunable layers",
        stages["base_model"])  # fmt: skip

    # 2. Search, checkpointed every --checkpoint-every seconds; --resume continues it.
    is_rl = spec.agent_class is not None
    algo_kwargs = algo_arguments(cfg, cfg.algo)
    if is_rl:
        algo_kwargs["tensorboard_log"] = str(run_dir / "tb")
    prior: list[dict] = state.get("episodes", [])
    prior_steps, prior_wall = int(state.get("num_timesteps", 0)), float(state.get("wall", 0.0))
    lambda_history: list = state.get("lambda_history", [])
    t0 = time.perf_counter()
    n_envs = cfg.n_envs if is_rl else 1
    # Extra copies are made in their own processes from the same arguments; the base model is
    # in the cache by now, so none of them trains it again.
    env_fn = env if n_envs == 1 else partial(prune_env.make, cfg.env, **env_kwargs)
    agent, log = registry.make_agent(
        cfg.algo, env_fn, seed=cfg.seed, n_envs=n_envs, vec_env=cfg.vec_env,
        vec_env_kwargs=json.loads(cfg.vec_env_kwargs), **algo_kwargs,
    )  # fmt: skip

    def all_episodes() -> list[dict]:
        return prior + shifted(log.records, len(prior), prior_steps, prior_wall)

    def checkpoint(model: Any) -> None:
        step = int(model.num_timesteps)
        files = {"agent": f"agent-{step}.zip", "rng": f"rng-{step}.pt"}
        buffer = io.BytesIO()
        model.save(buffer)
        atomic_write_bytes(buffer.getvalue(), ckpt_dir / files["agent"])
        if isinstance(model, OffPolicyAlgorithm):
            files["replay"] = f"replay-{step}.pkl"
            buffer = io.BytesIO()
            model.save_replay_buffer(buffer)
            atomic_write_bytes(buffer.getvalue(), ckpt_dir / files["replay"])
        atomic_torch_save(rng_state(), ckpt_dir / files["rng"])
        blob = {
            "num_timesteps": step,
            "wall": prior_wall + time.perf_counter() - t0,
            "episodes": all_episodes(),
            "lambda_history": lambda_history + monitor.lambda_history,
            "files": files,
            "stages": stages,
            "resumes": int(state.get("resumes", 0)),
        }
        atomic_write_json(blob, ckpt_dir / "state.json")  # the commit point
        for old in ckpt_dir.iterdir():
            if old.name not in (*files.values(), "state.json"):
                old.unlink(missing_ok=True)

    if is_rl and state:
        files = state["files"]
        agent = spec.agent_class.load(ckpt_dir / files["agent"], env=agent.get_env(),
                                      device=algo_kwargs["device"])  # fmt: skip
        if "replay" in files:
            agent.load_replay_buffer(ckpt_dir / files["replay"])
        set_rng_state(torch.load(ckpt_dir / files["rng"], weights_only=True))
        state["resumes"] = int(state.get("resumes", 0)) + 1
        print(f"resumed the search at step {agent.num_timesteps:,} "
              f"({len(prior)} episodes recorded before)", flush=True)  # fmt: skip
    # The search baselines write no checkpoint (a resumed one starts over).
    monitor = SearchMonitor(cfg.total_timesteps, checkpoint if is_rl else None,
                            cfg.checkpoint_every, cfg.progress)  # fmt: skip
    remaining = cfg.total_timesteps - (agent.num_timesteps if is_rl else 0)
    try:
        if is_rl and remaining > 0:
            agent.learn(total_timesteps=remaining, callback=monitor, reset_num_timesteps=False,
                        tb_log_name="search")  # fmt: skip
        elif not is_rl:
            agent.learn(total_timesteps=cfg.total_timesteps)
    except (KeyboardInterrupt, Interrupted) as exc:
        if is_rl:
            checkpoint(agent)
        print(f"\ninterrupted ({exc or 'Ctrl-C'}); continue with: python train.py --resume "
              f"{run_dir}", flush=True)  # fmt: skip
        return 130
    if is_rl:
        checkpoint(agent)  # the finished search, so that a resume skips straight to stage 3
        buffer = io.BytesIO()
        agent.save(buffer)
        atomic_write_bytes(buffer.getvalue(), run_dir / "agent.zip")
    else:
        agent.save(run_dir / "agent.json")
    episodes = all_episodes()
    lambda_history = lambda_history + monitor.lambda_history
    with open(run_dir / "episodes.jsonl.tmp", "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in episodes)
    Path(run_dir / "episodes.jsonl.tmp").replace(run_dir / "episodes.jsonl")
    feasible = [e for e in episodes if e["feasible"]]
    env_steps = prior_steps + log.total_steps if is_rl else log.total_steps
    search = {
        "episodes": len(episodes),
        "env_steps": int(env_steps),
        "feasible_episodes": len(feasible),
        "violation_rate": 1 - len(feasible) / len(episodes) if episodes else None,
        "violation_rate_per_quarter": violation_rate_per_quarter(
            [e["feasible"] for e in episodes], [e["env_steps"] for e in episodes], int(env_steps)
        ),
        "first_feasible_step": feasible[0]["env_steps"] if feasible else None,
        "best_feasible_reward": max((e["reward"] for e in feasible), default=None),
        "wall_time": prior_wall + time.perf_counter() - t0,
        "resumes": int(state.get("resumes", 0)),
    }
    stages["search"] = search["wall_time"]
    write_tensorboard(run_dir / "tb" / "episodes", episodes)
    say(2, "search", f"{search['episodes']} episodes, {search['env_steps']:,} env steps, "
        f"{search['feasible_episodes']} feasible, best feasible reward "
        f"{pct(search['best_feasible_reward'])}", stages["search"])  # fmt: skip

    # 3. Extraction: the deterministic policy's episode or the best feasible one seen.
    t0 = time.perf_counter()
    candidates = []
    rollout_env = registry.wrapped_env(cfg.algo, env, **algo_kwargs)
    try:
        final = rollout(agent, rollout_env)
        candidates.append(("the deterministic policy's episode", final))
        # The learned policy is the deliverable of an RL search: did it meet the budget?
        search["final_policy"] = {
            "cost": float(final["cost"]), "reward_accuracy": float(final["accuracy"]),
            "feasible": bool(final["constraint_satisfied"]),
            "budget_use": float(final["cost"]) / cfg.budget,
        }  # fmt: skip
    except RuntimeError as exc:  # a search baseline that found nothing feasible has no policy
        print(f"no deterministic policy episode: {exc}")
    if feasible:
        best = max(feasible, key=lambda e: e["reward"])
        candidates.append(("the best feasible episode of the search",
                           penv.evaluate(best["keep_ratios"])))  # fmt: skip
    elif episodes:  # nothing feasible: the search's closest miss competes too
        least = min(episodes, key=lambda e: e["cost"])
        candidates.append(("the least costly episode of the search",
                           penv.evaluate(least["keep_ratios"])))  # fmt: skip
    # Ranked by the reward the search climbed (info["reward"], the env's reward= variant).
    ranked = sorted(candidates, key=lambda c: (c[1]["constraint_satisfied"], c[1]["reward"]),
                    reverse=True)  # fmt: skip
    if not ranked[0][1]["constraint_satisfied"]:  # nothing feasible: the least costly one
        ranked = sorted(candidates, key=lambda c: c[1]["cost"])
    chosen_source, chosen = ranked[0]
    selection = {
        "chosen": chosen_source,
        "candidates": [
            {"source": s, "reward_accuracy": i["accuracy"], "cost": i["cost"],
             "feasible": bool(i["constraint_satisfied"])} for s, i in candidates
        ],
    }  # fmt: skip
    net = penv.pruned_network(chosen["keep_ratios"])
    stages["extraction"] = time.perf_counter() - t0
    say(3, "extraction", f"{chosen_source}: reward accuracy {pct(chosen['accuracy'])}, cost "
        f"{chosen['cost']:.4f} (budget {cfg.budget:g})", stages["extraction"])  # fmt: skip

    # 4. Fine-tuning on the whole training set (pruned weights stay zero under weight pruning).
    t0 = time.perf_counter()
    before = split_accuracy(net, test, info)
    arch = penv.base_info["arch"]
    finetune_pruned(net, penv.dataset_split("train"), info, arch, cfg.finetune_epochs,
                    cfg.finetune_lr, keep_zeros=cfg.granularity == "weight", seed=cfg.seed,
                    progress=cfg.progress)  # fmt: skip
    stages["finetune"] = time.perf_counter() - t0
    say(4, "fine-tuning", f"{cfg.finetune_epochs} epoch(s), test accuracy {pct(before)} before",
        stages["finetune"])  # fmt: skip

    # 5. Test accuracy and measurements, artifacts, report and plots.
    t0 = time.perf_counter()
    pruned_stats = measure(net, test, info, latency_batch,
                           nonzero=cfg.granularity == "weight").to_dict()  # fmt: skip
    layers = [u.name for u in penv.units]
    arch_meta = {
        "name": arch, "num_classes": info.num_classes, "in_channels": info.channels,
        "width_mult": cfg.width_mult, "dataset": info.name, "input_size": info.size,
        "mean": list(info.mean), "std": list(info.std), "granularity": cfg.granularity,
        "layers": layers, "kept": chosen["kept"], "keep_ratios": chosen["keep_ratios"],
    }  # fmt: skip
    save_pruned(net.cpu(), run_dir, arch_meta)
    net.to(device)
    cost_key = {"params": "params", "flops": "flops", "latency": "latency_ms"}[cfg.cost]
    measured_cost = pruned_stats[cost_key] / base_stats[cost_key]
    pruned_stats.update({
        "test_accuracy_before_finetune": before,
        "reward_accuracy": chosen["accuracy"],
        "cost": float(chosen["cost"]),
        "measured_cost": measured_cost,
        # Latency is noisy: the search's measurement decides; params/FLOPs are exact.
        "constraint_satisfied": bool(chosen["constraint_satisfied"]) and (
            cfg.cost == "latency" or measured_cost <= cfg.budget + 1e-12),
        "layers": layers, "kept": chosen["kept"], "keep_ratios": chosen["keep_ratios"],
    })  # fmt: skip
    stages["test"] = time.perf_counter() - t0
    report = {
        "run": run_dir.name, "env": cfg.env, "algo": cfg.algo, "seed": cfg.seed,
        "budget": cfg.budget, "cost": cfg.cost, "granularity": cfg.granularity,
        "preset": cfg.preset, "finetune_epochs": cfg.finetune_epochs,
        "device": str(device), "hardware": hardware(device),
        "base": base_stats, "pruned": pruned_stats, "selection": selection, "search": search,
        "stages": stages, "lambda_history": lambda_history,
    }  # fmt: skip
    title = f"{cfg.env} / {cfg.algo} / seed {cfg.seed}"
    plot_training(episodes, lambda_history, cfg.budget, run_dir / "training.png", title)
    plot_keep_ratios({cfg.algo: chosen["keep_ratios"]}, layers, run_dir / "keep_ratios.png",
                     title)  # fmt: skip
    plot_accuracy_vs_cost(episodes, cfg.budget, run_dir / "accuracy_vs_cost.png",
                          (chosen["cost"], chosen["accuracy"]), title)  # fmt: skip
    atomic_write_bytes(render_report(report).encode(), run_dir / "report.md")
    atomic_write_json(report, run_dir / "report.json")  # last: its presence marks a complete run
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    say(5, "test", f"accuracy {pct(before)} -> {pct(pruned_stats['test_accuracy'])} after "
        f"fine-tuning (base {pct(base_stats['test_accuracy'])}), params kept "
        f"{pruned_stats['params'] / base_stats['params']:.4f}, constraint "
        f"{'satisfied' if pruned_stats['constraint_satisfied'] else 'NOT satisfied'}",
        stages["test"])  # fmt: skip
    print(f"report: {run_dir / 'report.md'}")
    return 0


def write_tensorboard(folder: Path, episodes: list[dict]) -> None:
    """Every evaluated episode's reward and cost, for every algorithm (RL or not)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for e in episodes:
        writer.add_scalar("episode/reward", e["reward"], e["env_steps"])
        writer.add_scalar("episode/cost", e["cost"], e["env_steps"])
        writer.add_scalar("episode/feasible", float(e["feasible"]), e["env_steps"])
    writer.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (KeyboardInterrupt, Interrupted):
        print("\ninterrupted; what was checkpointed is kept (python train.py --resume RUN_DIR)")
        sys.exit(130)
