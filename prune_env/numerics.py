"""Portable CPU numerics: base models that come out bit for bit the same on another machine.

Base models are trained per session and never committed, so a study that spans sessions (the
fidelity study, the results sweep) needs the same seed and recipe to give the same network on
whichever CPU the next session gets. With torch's defaults it does not: the kernels PyTorch,
MKL and oneDNN pick depend on the CPU and on the thread count, and floating-point sums in
another order give other weights (the quarter-width ResNet-56 quick base reached 61.22%, 60.73%
and 58.15% test accuracy on three sessions' machines).

``benchmarks/reproducibility.py`` measured, on the same workload (40 SGD steps of ResNet-56 at
width 0.25, with augmentation; benchmarks/results/reproducibility.json): torch's defaults and
one thread give different weights on an Intel Xeon and an AMD EPYC (both AVX-512); one
thread with oneDNN off (convolutions through ATen's im2col and MKL's GEMM) and MKL's
conditional numerical reproducibility (``MKL_CBWR=COMPATIBLE``) gave the same weights on
both, at 2.3x (AMD) and 2.9x (Intel) the seconds of the default on two threads. That is the
``"portable"`` mode. Not measured: CPUs without AVX-512 (ATen's own kernels are vectorised
per instruction set; the probe's ``portable`` setting, which also forces ATen's scalar
kernels, agreed as well and costs ~10% more), other torch versions. The record of each
checkpoint names the CPU and ATen's capability, so a mismatch can be traced.

``MKL_CBWR`` is read when MKL initialises, which may already have happened in a process that
has run torch, so portable training runs in a fresh Python process with the variable set
(``train_in_child``), unless this process was started with it.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

NUMERICS = ("default", "portable")
PORTABLE_ENV = {"MKL_CBWR": "COMPATIBLE"}
# set in the child process's environment, so that it can tell it is the portable worker
_CHILD_FLAG = "PRUNE_ENV_PORTABLE_WORKER"
_CHILD_CODE = "import sys; from prune_env.numerics import _child_main; _child_main(sys.argv[1])"


def check_numerics(numerics: str, name: str = "base_numerics") -> str:
    if numerics not in NUMERICS:
        raise ValueError(f"{name} must be one of {NUMERICS}, got {numerics!r}")
    return numerics


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def state_digest(model: nn.Module) -> str:
    """sha1 of a network's parameters and buffers, by name (40 hex digits)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha1 of one tensor's bytes (e.g. the decoded training images: 40 hex digits)."""
    return hashlib.sha1(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def portable_process() -> bool:
    """Whether this process's MKL runs in the portable mode (set before Python started)."""
    return all(os.environ.get(k) == v for k, v in PORTABLE_ENV.items())


@contextmanager
def numerics_mode(numerics: str) -> Iterator[dict[str, Any]]:
    """Run the block under ``numerics``; yields the record a checkpoint keeps of it.

    ``"portable"`` needs a portable process (``portable_process``): one thread, oneDNN off,
    both restored afterwards. ``"default"`` changes nothing.
    """
    check_numerics(numerics)
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    if numerics == "portable":
        if not portable_process():
            raise RuntimeError(
                f"portable numerics need {PORTABLE_ENV} in the environment before Python "
                f"starts (prune_env.numerics.train_in_child does that)"
            )
        torch.set_num_threads(1)
        torch.backends.mkldnn.enabled = False
    try:
        yield {
            "mode": numerics,
            "threads": torch.get_num_threads(),
            "onednn": bool(torch.backends.mkldnn.enabled),
            "mkl_cbwr": os.environ.get("MKL_CBWR"),
            "cpu": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": str(torch.__version__),
        }
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn


def train_in_child(job: dict[str, Any]) -> dict[str, Any]:
    """Run ``prune_env.zoo.train_base_model(**job)`` in a fresh Python process under portable
    numerics and return its record (the checkpoint is written by the child to ``job["path"]``).

    ``job`` holds tensors and plain values only (it travels through a temporary torch file in
    the system's temporary folder, deleted afterwards, never beside the checkpoints):
    ``build`` (``build_model``'s arguments; the child builds the network after
    ``torch.manual_seed(seed)``, so that its initial weights depend on the seed alone),
    ``train`` and ``test`` (a Split's images, labels, classes; test may be None), ``info``
    (a DatasetInfo as a dict), ``recipe`` (a Recipe as a dict), ``path``, ``seed``,
    ``progress``, ``description``, ``record``.
    """
    fd, name = tempfile.mkstemp(prefix="prune-env-portable-job-", suffix=".pt")
    os.close(fd)
    job_file = Path(name)
    try:
        torch.save(job, job_file)
        env = {**os.environ, **PORTABLE_ENV, _CHILD_FLAG: "1"}
        root = Path(__file__).resolve().parents[1]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        done = subprocess.run(
            [sys.executable, "-c", _CHILD_CODE, str(job_file)], env=env, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"portable base training failed in its child process (exit {done.returncode}); "
                f"its output is above"
            )
        return torch.load(job_file.with_suffix(".record.pt"), weights_only=True)
    finally:
        job_file.unlink(missing_ok=True)
        job_file.with_suffix(".record.pt").unlink(missing_ok=True)


def _child_main(job_file: str | Path) -> None:
    if os.environ.get(_CHILD_FLAG) != "1" or not portable_process():
        raise SystemExit("prune_env.numerics._child_main is run by train_in_child, not by hand")
    job_file = Path(job_file)
    from prune_env.data import DatasetInfo, Split
    from prune_env.models import build_model
    from prune_env.zoo import Recipe, train_base_model

    job = torch.load(job_file, weights_only=True)
    torch.manual_seed(job["seed"])
    model = build_model(**job["build"])
    fields = job["info"]
    info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    train = Split(*job["train"])
    test = None if job["test"] is None else Split(*job["test"])
    record = train_base_model(
        model,
        train,
        test,
        info,
        Recipe(**job["recipe"]),
        Path(job["path"]),
        seed=job["seed"],
        progress=job["progress"],
        description=job["description"],
        record=job["record"],
        numerics="portable",
    )
    torch.save(record, job_file.with_suffix(".record.pt"))
