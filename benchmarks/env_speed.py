"""How fast is an episode of the pruning env, and how faithful is its fast reward?

For each env (VGG16Prune-v0 and ResNet56Prune-v0 by default), on the machine it runs on:

1. the per-episode time split into building the pruned net, BatchNorm re-calibration, reward
   evaluation and everything else (``bn_recalibrate="calib"`` and ``"reward"``);
2. the ratio of the whole episode's time to one plain forward pass of the same pruned net over
   the same reward images (the physical limit is about 1.0);
3. the same episode done the paper's way (deepcopy of the base net, pruned channels zeroed by
   masks, a DataLoader with augmentation over the reward images), and our speed-up over it;
4. episodes per second with 1, 2 and 4 envs in SubprocVecEnv, and the scaling factor;
5. the evaluation cache's hit rate during a real search (ppo_lag);
6. fidelity: Kendall tau between the fast reward (small split + BN re-calibration) and a slow
   one (a large split, and a short fine-tune) over 50 random feasible candidates.

    python benchmarks/env_speed.py --quick          # CPU: width 0.25 nets, < 10 minutes
    python benchmarks/env_speed.py --device cuda    # full-width nets, paper-sized splits

Figures go to benchmarks/results/env_speed_<tag>.json. With no CIFAR-10 on disk the script
uses the synthetic data set (timings are still valid; fidelity figures are then meaningless
and marked so).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from scipy.stats import kendalltau

from agents import registry
from prune_env.constraints import within_budget
from prune_env.data import DatasetNotFoundError, load_split
from prune_env.tasks import get_task

# The tasks timed, as variants of prune_env.tasks: the paper's full-width network with a
# 30-epoch base and the env's default 2,000-image reward split; with --quick, the quick task
# with a one-epoch base.
FULL = replace(get_task("paper"), base_epochs=30, reward_size=2000)
QUICK = replace(get_task("quick"), base_epochs=1)


@dataclass
class Config:
    envs: str = "VGG16Prune-v0,ResNet56Prune-v0"  # comma-separated env ids
    quick: bool = False  # CPU-sized run: width 0.25, smaller splits, fewer candidates
    device: str = "auto"  # auto, cpu or cuda
    dataset: str = "cifar10"  # falls back to "synthetic" when not on disk
    width_mult: float = FULL.width_mult  # network width (quick: QUICK's)
    base_train_epochs: int = FULL.base_epochs  # base model recipe length (quick: QUICK's)
    reward_size: int = FULL.reward_size  # the fast reward's split (quick: QUICK's)
    slow_reward_size: int = 10_000  # the slow reward's split (quick: 3000)
    slow_finetune_steps: int = 32  # the slow reward's fine-tune steps (paper: 32 / 128)
    slow_finetune_batch_size: int = 128  # its batch size (quick: 64)
    budget: float = 0.3  # params budget of the candidates
    episodes: int = 10  # timed episodes per configuration
    candidates: int = 50  # fidelity candidates
    search_steps: int = 20_000  # ppo_lag steps for the cache hit rate (quick: 600; 0 skips)
    calib_sizes: str = "128"  # BN calibration sizes compared in the fidelity check
    vec_envs: str = "1,2,4"  # SubprocVecEnv sizes
    out: str = "benchmarks/results"  # where the JSON goes
    tag: str = ""  # file name tag (default: quick-cpu / device name)
    seed: int = 0
    extra: dict = field(default_factory=dict)


def parse() -> Config:
    cfg = Config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, value in asdict(cfg).items():
        if name == "extra":
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=type(value), default=value)
    args = vars(parser.parse_args())
    explicit = {k for k in args if f"--{k.replace('_', '-')}" in " ".join(sys.argv)}
    cfg = Config(**args)
    if cfg.quick:  # CPU-sized defaults, unless given explicitly
        for key, value in {
            **QUICK.env_kwargs(),  # width_mult, base_train_epochs, reward_size
            "search_steps": 600,
            "episodes": 4,
            "slow_finetune_steps": 16,
            "slow_finetune_batch_size": 64,
            "slow_reward_size": 3000,
        }.items():
            if key not in explicit:
                setattr(cfg, key, value)
    return cfg


def env_kwargs(cfg: Config, **overrides) -> dict:
    kwargs = {
        "dataset": cfg.dataset,
        "width_mult": cfg.width_mult,
        "base_train_epochs": cfg.base_train_epochs,
        "train_base": True,  # this benchmark prepares its base model when none is cached
        "reward_size": cfg.reward_size,
        "budget": cfg.budget,
        "device": cfg.device,
        "cache_size": 0,
        "progress": True,
    }
    kwargs.update(overrides)
    return kwargs


def timed_episodes(env: gym.Env, ratios_list: list[np.ndarray]) -> list[dict]:
    """Run one full episode per ratio vector; wall time of reset + every step, and the info."""
    out = []
    for i, ratios in enumerate(ratios_list):
        start = time.perf_counter()
        env.reset(seed=i)
        for r in ratios:
            _, _, terminated, _, _ = env.step(np.array([r], dtype=np.float32))
        wall = time.perf_counter() - start
        assert terminated
        out.append({"wall": wall, **env.unwrapped.last_evaluation["timing"]})
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def plain_forward(
    net: torch.nn.Module, images: torch.Tensor, batch: int, repeats: int = 3
) -> float:
    """Seconds of one forward pass over ``images`` (the physical floor of an evaluation).

    The fastest of ``repeats`` warm passes: noise on a shared machine only ever adds time, so
    the minimum is the floor (and makes the reported ratios conservative).
    """
    net.eval()
    net(images[:batch])  # warm-up: allocator, kernels
    best = float("inf")
    for _ in range(repeats):
        sync(images.device)
        start = time.perf_counter()
        for s in range(0, len(images), batch):
            net(images[s : s + batch])
        sync(images.device)
        best = min(best, time.perf_counter() - start)
    return best


def paper_way(u, ratios: np.ndarray) -> float:
    """The paper's episode: deepcopy, masks, DataLoader with augmentation, evaluation."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    augment = v2.Compose(
        [v2.RandomCrop(u.reward_x.shape[-1], padding=4), v2.RandomHorizontalFlip()]
    )

    class Augmented(Dataset):
        def __len__(self):
            return len(u.reward_y)

        def __getitem__(self, i):
            return augment(u.reward_x[i].cpu()), u.reward_y[i].cpu()

    start = time.perf_counter()
    net = copy.deepcopy(u.base_model)
    masked = u.engine.build_masked(u.counts(ratios))  # zeroed channels, full shapes
    net.load_state_dict(masked.state_dict())
    correct = 0
    with torch.no_grad():
        net.eval()
        for x, y in DataLoader(Augmented(), batch_size=128, shuffle=False):
            x, y = x.to(u.device), y.to(u.device)
            correct += int((net(x).argmax(1) == y).sum())
    sync(u.device)
    return time.perf_counter() - start


def random_feasible(u, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    out = []
    while len(out) < n:
        ratios = u.snap(rng.uniform(u.min_keep, 1.0, u.n_layers))
        scale = 1.0
        while not within_budget(u.analytic_costs(ratios * scale)["params"], u.budget) and (
            scale > 0.05
        ):
            scale *= 0.9
        candidate = u.snap(np.maximum(u.min_keep, ratios * scale))
        if within_budget(u.analytic_costs(candidate)["params"], u.budget):
            out.append(candidate)
    return out


def vec_scaling(env_id: str, cfg: Config, sizes: list[int], kwargs: dict) -> dict:
    from stable_baselines3.common.vec_env import SubprocVecEnv

    cores = os.cpu_count() or 1
    results = {}
    for n in sizes:
        threads = max(1, cores // n)

        def factory(rank: int, threads: int = threads):
            def make():
                torch.set_num_threads(threads)
                return gym.make(env_id, **{**kwargs, "progress": False})

            return make

        vec = SubprocVecEnv([factory(i) for i in range(n)])
        vec.seed(cfg.seed)
        vec.reset()
        n_layers = vec.get_attr("n_layers", indices=[0])[0]
        rng = np.random.default_rng(cfg.seed)
        target = max(cfg.episodes * 2, n)
        done_episodes, steps = 0, 0
        start = time.perf_counter()
        while done_episodes < target:
            actions = rng.uniform(0.05, 1.0, size=(n, 1)).astype(np.float32)
            _, _, dones, _ = vec.step(actions)
            done_episodes += int(dones.sum())
            steps += 1
        wall = time.perf_counter() - start
        vec.close()
        results[n] = {
            "episodes_per_s": done_episodes / wall,
            "threads_per_env": threads,
            "episodes": done_episodes,
            "layers": n_layers,
        }
    base = results[sizes[0]]["episodes_per_s"]
    for n in sizes:
        results[n]["scaling"] = results[n]["episodes_per_s"] / base
    return results


def summarise(episodes: list[dict]) -> dict:
    keys = ("wall", "build", "bn_recalibration", "finetune", "evaluation", "cost")
    med = {k: statistics.median(e[k] for e in episodes) for k in keys}
    med["everything_else"] = med["wall"] - sum(med[k] for k in keys[1:])
    return med


def bench_env(env_id: str, cfg: Config) -> dict:
    print(f"\n=== {env_id} ===", flush=True)
    kwargs = env_kwargs(cfg)
    t = time.perf_counter()
    env = gym.make(env_id, **kwargs)
    u = env.unwrapped
    report: dict = {
        "setup_seconds": round(time.perf_counter() - t, 1),
        "layers": u.n_layers,
        "base_info": {k: v for k, v in u.base_info.items() if k != "recipe"},
        "reward_split_accuracy": u.base_accuracy,
    }
    rng = np.random.default_rng(cfg.seed)
    ratios_list = random_feasible(u, rng, cfg.episodes)

    # 1-2. time split and ratio to one plain forward pass, both BN modes
    modes = {
        "calib_nchw": {"bn_recalibrate": "calib", "channels_last": False},
        "reward_nchw": {"bn_recalibrate": "reward", "channels_last": False},
        "calib_nhwc": {"bn_recalibrate": "calib", "channels_last": True},
        "reward_nhwc": {"bn_recalibrate": "reward", "channels_last": True},
    }
    for mode, over in modes.items():
        menv = gym.make(env_id, **{**kwargs, **over, "progress": False})
        mu = menv.unwrapped
        timed_episodes(menv, ratios_list[:1])  # warm-up
        episodes = timed_episodes(menv, ratios_list)
        # The floor: the faster of NCHW and NHWC plain forward passes of the same pruned net.
        floors = [
            min(
                plain_forward(
                    mu.prune(r), mu.reward_x.contiguous(), mu.settings.reward.eval_batch_size
                ),
                plain_forward(
                    mu.prune(r).to(memory_format=torch.channels_last),
                    mu.reward_x.contiguous(memory_format=torch.channels_last),
                    mu.settings.reward.eval_batch_size,
                ),
            )
            for r in ratios_list
        ]
        ratio = statistics.median(e["wall"] / f for e, f in zip(episodes, floors, strict=True))
        report[f"bn_{mode}"] = {
            "median_seconds": summarise(episodes),
            "median_plain_forward": statistics.median(floors),
            "episode_to_forward_ratio": ratio,
        }
        print(
            f"{mode:22s} episode {report[f'bn_{mode}']['median_seconds']['wall']:.4f}s  "
            f"plain forward {statistics.median(floors):.4f}s  ratio {ratio:.3f}",
            flush=True,
        )
        split = report[f"bn_{mode}"]["median_seconds"]
        print("   split: " + ", ".join(f"{k} {v:.4f}" for k, v in split.items()), flush=True)

    # 3. the paper's way, same ratios, same reward images
    ours = [e["wall"] for e in timed_episodes(env, ratios_list)]
    paper = [paper_way(u, r) for r in ratios_list]
    report["paper_way"] = {
        "median_seconds": statistics.median(paper),
        "ours_median_seconds": statistics.median(ours),
        "speedup": statistics.median(paper) / statistics.median(ours),
    }
    print(
        f"paper's way {statistics.median(paper):.4f}s vs ours {statistics.median(ours):.4f}s: "
        f"speed-up x{report['paper_way']['speedup']:.2f}",
        flush=True,
    )

    # 4. vectorised envs
    sizes = [int(s) for s in cfg.vec_envs.split(",") if s]
    if sizes:
        report["vec_env"] = vec_scaling(env_id, cfg, sizes, kwargs)
        for n, r in report["vec_env"].items():
            print(
                f"SubprocVecEnv x{n}: {r['episodes_per_s']:.2f} episodes/s "
                f"(scaling x{r['scaling']:.2f}, {r['threads_per_env']} threads each)",
                flush=True,
            )

    # 5. cache hit rate during a real search
    if cfg.search_steps > 0:
        senv = gym.make(env_id, **{**kwargs, "cache_size": 4096, "progress": False})
        t = time.perf_counter()
        result = registry.run(
            "ppo_lag",
            senv,
            total_timesteps=cfg.search_steps,
            seed=cfg.seed,
            n_steps=max(64, u.n_layers * 16),
            batch_size=64,
        )
        info = senv.unwrapped.cache_info()
        report["search_cache"] = {
            **info,
            "hit_rate": info["hits"] / max(1, info["hits"] + info["misses"]),
            "steps": cfg.search_steps,
            "seconds": time.perf_counter() - t,
            "best_feasible": result.summary()["best_feasible_reward"],
        }
        search = report["search_cache"]
        print(
            f"ppo_lag {cfg.search_steps} steps: cache hit rate {search['hit_rate']:.3f} ({info}), "
            f"{search['seconds']:.0f}s",
            flush=True,
        )

    # 6. fidelity of the fast reward
    candidates = random_feasible(u, rng, cfg.candidates)
    fidelity = {}
    fast_variants = {
        **{
            f"calib{size}": {"bn_recalibrate": "calib", "bn_calib_size": int(size)}
            for size in cfg.calib_sizes.split(",")
        },
        "reward": {"bn_recalibrate": "reward"},
        "reward_early_stop": {
            "bn_recalibrate": "reward",
            "early_stop": True,
            "eval_batch_size": 250,
        },
    }
    slow_variants = {
        "large_split": {"reward_size": cfg.slow_reward_size},
        "finetune": {
            "finetune_steps": cfg.slow_finetune_steps,
            "finetune_batch_size": cfg.slow_finetune_batch_size,
        },
    }
    scores = {}
    for name, over in {**fast_variants, **slow_variants}.items():
        venv = gym.make(env_id, **{**kwargs, **over, "progress": False}).unwrapped
        t = time.perf_counter()
        scores[name] = [venv.evaluate(c)["accuracy"] for c in candidates]
        scores[name + "_seconds"] = (time.perf_counter() - t) / len(candidates)
    for fast in fast_variants:
        for slow in slow_variants:
            tau = float(kendalltau(scores[fast], scores[slow]).statistic)
            fidelity[f"{fast}_vs_{slow}"] = tau
            print(
                f"Kendall tau fast[{fast}, {cfg.reward_size} images] vs slow[{slow}]: {tau:.3f}",
                flush=True,
            )
    fidelity["seconds_per_candidate"] = {
        k.removesuffix("_seconds"): v for k, v in scores.items() if k.endswith("_seconds")
    }
    fidelity["accuracy_range"] = [min(scores["large_split"]), max(scores["large_split"])]
    fidelity["meaningful"] = cfg.dataset != "synthetic"
    report["fidelity"] = fidelity
    return report


def markdown_summary(results: dict) -> str:
    """The performance table of docs/performance.md, from a results JSON."""
    lines = [
        "| env | BN mode, layout | episode s | build | BN | eval | floor s | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env_id, d in results["envs"].items():
        for key, m in d.items():
            if not key.startswith("bn_"):
                continue
            s = m["median_seconds"]
            lines.append(
                f"| {env_id} | {key[3:]} | {s['wall']:.3f} | {s['build']:.3f} | "
                f"{s['bn_recalibration']:.3f} | {s['evaluation']:.3f} | "
                f"{m['median_plain_forward']:.3f} | {m['episode_to_forward_ratio']:.2f} |"
            )
    lines += [
        "",
        "| env | paper's way s | ours s | speed-up | eps/s x1 / x2 / x4 | "
        "cache hit rate | tau vs large split | tau vs fine-tune |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env_id, d in results["envs"].items():
        p, v, f = d["paper_way"], d.get("vec_env", {}), d["fidelity"]
        eps = " / ".join(f"{v[k]['episodes_per_s']:.2f}" for k in sorted(v, key=int))
        cache = d.get("search_cache", {}).get("hit_rate", float("nan"))
        lines.append(
            f"| {env_id} | {p['median_seconds']:.3f} | {p['ours_median_seconds']:.3f} | "
            f"x{p['speedup']:.2f} | {eps} | {cache:.3f} | "
            + " / ".join(
                f"{k.split('_vs_')[0]} {x:.3f}"
                for k, x in f.items()
                if k.endswith("_vs_large_split")
            )
            + " | "
            + " / ".join(
                f"{k.split('_vs_')[0]} {x:.3f}" for k, x in f.items() if k.endswith("_vs_finetune")
            )
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    cfg = parse()
    if cfg.dataset != "synthetic":
        try:
            load_split(cfg.dataset, "train")
        except DatasetNotFoundError as exc:
            print(f"note: {exc}\n-> using the synthetic data set", flush=True)
            cfg.dataset = "synthetic"
    device = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    cfg.device = str(device)
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
    }
    print(f"machine: {machine}\nconfig: {asdict(cfg)}", flush=True)
    start = time.perf_counter()
    results = {"machine": machine, "config": asdict(cfg), "envs": {}}
    for env_id in cfg.envs.split(","):
        results["envs"][env_id] = bench_env(env_id, cfg)
    results["total_seconds"] = time.perf_counter() - start
    tag = cfg.tag or ("quick-cpu" if cfg.quick and device.type == "cpu" else device.type)
    out = Path(cfg.out) / f"env_speed_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=float))
    tmp.replace(out)
    print(f"\nwrote {out} in {results['total_seconds']:.0f}s\n", flush=True)
    print(markdown_summary(results), flush=True)


if __name__ == "__main__":
    main()
