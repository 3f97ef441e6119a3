"""The pruning job, end to end: ``python train.py`` and ``prune-train`` are this module's main.

    python train.py --env VGG16Prune-v0                                # CPU demo (--preset quick)
    python train.py --env VGG16Prune-v0 --preset paper --device cuda   # paper scale, GPU
    python train.py --model resnet18 --data-dir DATA --budget 0.3 --cost flops   # your model

Five stages, each with a progress bar and a one-line summary: (1) the base model (loaded from
the cache or --checkpoint, or trained), (2) the RL search, (3) extraction of the pruned model
(the deterministic policy's episode or the best feasible episode of the search, whichever the
reward prefers), (4) fine-tuning, (5) test accuracy and measurements. Everything lands in
``{out}/{env}__{algo}__{seed}__{time}/`` (docs/job.md); ``--resume RUN_DIR`` continues an
interrupted run from its last checkpoint.
"""

from __future__ import annotations

import argparse
import io
import platform
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import prune_env
from agents import registry
from prune_env.numerics import cpu_name
from prune_pipeline.config import ConfigError, JobConfig, add_arguments, from_mapping
from prune_pipeline.plots import plot_accuracy_vs_cost, plot_keep_ratios, plot_training
from prune_pipeline.presets import agent_arguments
from prune_pipeline.pruned import save_pruned
from prune_pipeline.report import pct, render_report
from prune_pipeline.run_folder import RunFolder, run_name
from prune_pipeline.stages import (
    Extraction,
    SearchInterrupted,
    SearchResult,
    extract,
    finetune,
    measure_base,
    measure_pruned,
    search,
)
from prune_pipeline.task import Task, make_task

STAGES = ("base_model", "search", "extraction", "finetune", "test")


@dataclass
class JobResult:
    """What a finished job delivers."""

    model: nn.Module  # the pruned, fine-tuned network (on the CPU, eval mode)
    report: dict[str, Any]  # report.json
    run_dir: Path


def say(stage: int, name: str, text: str, seconds: float) -> None:
    print(f"[{stage}/5] {name}: {text} ({seconds:.1f} s)", flush=True)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    cpu = cpu_name()
    return f"{torch.get_num_threads()} threads of {cpu}, no GPU, torch {torch.__version__}"


def write_tensorboard(folder: Path, episodes: list[dict]) -> None:
    """Every evaluated episode's reward and cost, for every algorithm (RL or not)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for e in episodes:
        writer.add_scalar("episode/reward", e["reward"], e["env_steps"])
        writer.add_scalar("episode/cost", e["cost"], e["env_steps"])
        writer.add_scalar("episode/feasible", float(e["feasible"]), e["env_steps"])
    writer.close()


def open_run(cfg: JobConfig) -> tuple[JobConfig, RunFolder]:
    """The run folder: a new one for ``cfg``, or the one ``cfg.resume`` names (its own
    configuration then applies)."""
    if cfg.resume is not None:
        run = RunFolder.open(cfg.resume)
        saved = JobConfig.from_saved(run.config)
        saved.resume, saved.progress = str(run.path), cfg.progress
        return saved, run
    cfg.validate().resolve()
    blob = {
        "config": asdict(cfg),
        "command": " ".join([sys.executable, *sys.argv]),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "prune_env": prune_env.__version__,
        },
    }
    return cfg, RunFolder.create(cfg.out, run_name(cfg.env, cfg.algo, cfg.seed), blob)


def run_job(cfg: JobConfig, task: Task | None = None) -> JobResult:
    """Run (or resume) the whole job for ``cfg``; ``task`` replaces the one ``cfg`` describes
    (the Python API passes the user's model and data this way). Raises SearchInterrupted
    after checkpointing if the search is interrupted."""
    cfg, run = open_run(cfg)
    if run.is_complete:
        print(f"{run.path} is complete (report.json exists); nothing to do")
        from prune_pipeline.pruned import load_pruned

        return JobResult(load_pruned(run.path), run.report(), run.path)
    state = run.checkpoint_state()
    print(f"run folder: {run.path}" + (" (resumed)" if state else ""), flush=True)
    stages: dict[str, float] = dict(state.get("stages", {}))
    torch.manual_seed(cfg.seed)

    # 1. Base model: the task loads it (cache, --checkpoint) or trains it.
    task, base = base_stage(cfg, task, stages)
    # 2. Search, checkpointed every --checkpoint-every seconds; --resume continues it.
    kwargs = agent_arguments(cfg.algo, cfg.preset, cfg.algo_kwargs)
    found = search_stage(cfg, run, task, kwargs, stages)

    # 3. Extraction: the deterministic policy's episode or the best feasible one seen.
    t0 = time.perf_counter()
    ex = extract(task, cfg.algo, found.agent, kwargs, found.episodes, cfg.budget)
    if ex.final_policy is not None:
        found.summary["final_policy"] = ex.final_policy
    stages["extraction"] = time.perf_counter() - t0
    say(
        3,
        "extraction",
        f"{ex.source}: reward accuracy {pct(ex.chosen['accuracy'])}, cost "
        f"{ex.chosen['cost']:.4f} (budget {cfg.budget:g})",
        stages["extraction"],
    )

    # 4. Fine-tuning on the whole training split.
    t0 = time.perf_counter()
    weight = cfg.granularity == "weight"
    before = finetune(
        task, ex.net, cfg.finetune_epochs, cfg.finetune_lr, weight, cfg.seed, cfg.progress
    )
    stages["finetune"] = time.perf_counter() - t0
    say(
        4,
        "fine-tuning",
        f"{cfg.finetune_epochs} epoch(s), test accuracy {pct(before)} before",
        stages["finetune"],
    )

    # 5. Test accuracy and measurements, artifacts, report and plots.
    t0 = time.perf_counter()
    pruned = measure_pruned(task, ex.net, ex, base, cfg.cost, cfg.budget, weight, before)
    save_model(run, cfg, task, ex)
    stages["test"] = time.perf_counter() - t0
    report = job_report(cfg, run, task, base, pruned, found, ex, stages)
    write_plots(cfg, run, task, found, ex)
    run.write_report(report, render_report(report))
    say(
        5,
        "test",
        f"accuracy {pct(before)} -> {pct(pruned['test_accuracy'])} after "
        f"fine-tuning (base {pct(base['test_accuracy'])}), params kept "
        f"{pruned['params'] / base['params']:.4f}, constraint "
        f"{'satisfied' if pruned['constraint_satisfied'] else 'NOT satisfied'}",
        stages["test"],
    )
    print(f"report: {run.file('report.md')}")
    return JobResult(ex.net.cpu().eval(), report, run.path)


def base_stage(
    cfg: JobConfig, task: Task | None, stages: dict[str, float]
) -> tuple[Task, dict[str, Any]]:
    """Stage 1: the task (``cfg``'s unless given) with its base model, and its measurements."""
    t0 = time.perf_counter()
    task = task if task is not None else make_task(cfg)
    base = measure_base(task)
    stages["base_model"] = time.perf_counter() - t0
    say(
        1,
        "base model",
        f"{task.base_source}: test accuracy {pct(base['test_accuracy'])}, "
        f"{base['params']:,} params, {base['flops']:,} MACs, {len(task.layers)} prunable "
        "layers",
        stages["base_model"],
    )
    return task, base


def search_stage(
    cfg: JobConfig, run: RunFolder, task: Task, kwargs: dict[str, Any], stages: dict[str, float]
) -> SearchResult:
    """Stage 2: the search with the agent's arguments ``kwargs``, saved to the run folder."""
    found = search(
        task,
        cfg.algo,
        kwargs,
        cfg.total_timesteps,
        cfg.seed,
        run,
        cfg.n_envs,
        cfg.vec_env,
        cfg.vec_env_kwargs,
        cfg.checkpoint_every,
        cfg.progress,
    )
    save_search(run, cfg.algo, found)
    stages["search"] = found.summary["wall_time"]
    s = found.summary
    say(
        2,
        "search",
        f"{s['episodes']} episodes, {s['env_steps']:,} env steps, "
        f"{s['feasible_episodes']} feasible, best feasible reward "
        f"{pct(s['best_feasible_reward'])}",
        stages["search"],
    )
    return found


def save_search(run: RunFolder, algo: str, found: SearchResult) -> None:
    """The search's agent (agent.zip, or agent.json for a search baseline), its episodes and
    their TensorBoard curves."""
    if registry.get(algo).agent_class is not None:
        buffer = io.BytesIO()
        found.agent.save(buffer)
        run.write_bytes("agent.zip", buffer.getvalue())
    else:
        found.agent.save(run.file("agent.json"))
    run.write_episodes(found.episodes)
    write_tensorboard(run.file("tb") / "episodes", found.episodes)


def save_model(run: RunFolder, cfg: JobConfig, task: Task, ex: Extraction) -> None:
    """The pruned network, with what rebuilds its architecture (pruned_arch.json)."""
    info = task.info
    arch_meta = {
        "builder": task.builder,
        "num_classes": info.num_classes,
        "in_channels": info.channels,
        "dataset": info.name,
        "input_size": info.size,
        "mean": list(info.mean),
        "std": list(info.std),
        "granularity": cfg.granularity,
        "layers": task.layers,
        "kept": ex.chosen["kept"],
        "keep_ratios": ex.chosen["keep_ratios"],
    }
    example = task.latency_batch()[:2]
    save_pruned(ex.net, run.path, arch_meta, example_input=example, pickle=cfg.save_pickle)


# The configuration's entries that report.json repeats, in its order.
REPORTED_OPTIONS = (
    "env", "model", "algo", "seed", "budget", "cost", "granularity", "preset", "finetune_epochs",
)  # fmt: skip


def job_report(
    cfg: JobConfig,
    run: RunFolder,
    task: Task,
    base: dict[str, Any],
    pruned: dict[str, Any],
    found: SearchResult,
    ex: Extraction,
    stages: dict[str, float],
) -> dict[str, Any]:
    """report.json's content."""
    device = task.device
    return {
        "run": run.name,
        **{name: getattr(cfg, name) for name in REPORTED_OPTIONS},
        "device": str(device),
        "hardware": hardware(device),
        "base": base,
        "pruned": pruned,
        "selection": ex.selection,
        "search": found.summary,
        "stages": stages,
        "lambda_history": found.lambda_history,
    }


def write_plots(
    cfg: JobConfig, run: RunFolder, task: Task, found: SearchResult, ex: Extraction
) -> None:
    """training.png, keep_ratios.png and accuracy_vs_cost.png."""
    title = f"{cfg.model or cfg.env} / {cfg.algo} / seed {cfg.seed}"
    plot_training(found.episodes, found.lambda_history, cfg.budget, run.file("training.png"), title)
    plot_keep_ratios(
        {cfg.algo: ex.chosen["keep_ratios"]}, task.layers, run.file("keep_ratios.png"), title
    )
    plot_accuracy_vs_cost(
        found.episodes,
        cfg.budget,
        run.file("accuracy_vs_cost.png"),
        (ex.chosen["cost"], ex.chosen["accuracy"]),
        title,
    )


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise SearchInterrupted(f"signal {signum}")


def parse_args(argv: list[str] | None = None) -> JobConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, JobConfig)
    cfg = from_mapping(JobConfig, vars(parser.parse_args(argv)))
    if cfg.resume is None:
        cfg.validate()
    return cfg


def main(argv: list[str] | None = None) -> int:
    # SIGTERM ends the job like Ctrl-C (the search stops at its next checkpoint first).
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        cfg = parse_args(argv)
        run_job(cfg)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    except (KeyboardInterrupt, SearchInterrupted) as exc:
        print(
            f"\ninterrupted ({exc or 'Ctrl-C'}); what was checkpointed is kept: continue "
            "with --resume RUN_DIR",
            flush=True,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
