"""The run folder: the one owner of its layout (train, resume, evaluate and tables read it).

``{out}/{env}__{algo}__{seed}__{time}/`` (CleanRL's run names) holds

- ``config.json``: the job's configuration, the command and the versions (written first);
- ``checkpoint/``: while the search runs, ``state.json`` (the commit point: episodes so far,
  lambda history, stage times, the names of the files below) with the agent, its replay
  buffer (off-policy) and the RNG state; removed when the run completes;
- ``episodes.jsonl``: every evaluated episode of the search;
- ``agent.zip`` (RL agents) or ``agent.json`` (search baselines);
- ``pruned.safetensors`` + ``pruned_arch.json`` (``prune_pipeline.pruned``);
- ``report.md`` and ``report.json`` (written last: its presence marks a complete run), plots
  and TensorBoard logs (``tb/``); evaluate.py adds ``evaluation.json``, ``compare.*`` and
  ``agent_eval.json``.

Every file is written atomically (temporary file, then rename), so an interrupted run never
leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from prune_env.paths import atomic_write_bytes, atomic_write_json
from prune_pipeline.config import ConfigError

CONFIG, REPORT_JSON, REPORT_MD, EPISODES = (
    "config.json",
    "report.json",
    "report.md",
    "episodes.jsonl",
)
CHECKPOINT, STATE = "checkpoint", "state.json"


class RunFolderError(ConfigError):
    """A folder is not a run folder (or not a complete one where one is needed)."""


def run_name(env: str, algo: str, seed: int, stamp: float | None = None) -> str:
    """``{env}__{algo}__{seed}__{time}``, the run's folder name."""
    return f"{env}__{algo}__{seed}__{int(time.time() if stamp is None else stamp)}"


class RunFolder:
    """One run's folder on disk."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    # ------------------------------------------------------------------ creating and opening
    @classmethod
    def create(cls, out: str | os.PathLike, name: str, config: dict[str, Any]) -> RunFolder:
        """A new, empty run folder ``out/name`` with its ``config.json``."""
        path = Path(out) / name
        path.mkdir(parents=True, exist_ok=False)
        atomic_write_json(config, path / CONFIG)
        return cls(path)

    @classmethod
    def open(cls, path: str | os.PathLike, complete: bool = False) -> RunFolder:
        """An existing run folder; RunFolderError if it is none (or, with ``complete``, if its
        run did not finish)."""
        folder = cls(path)
        if not (folder.path / CONFIG).is_file():
            raise RunFolderError(f"{folder.path} has no {CONFIG}: not a run folder")
        if complete and not folder.is_complete:
            raise RunFolderError(f"{folder.path} has no {REPORT_JSON}: the run did not finish")
        return folder

    # ------------------------------------------------------------------ reading
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_blob(self) -> dict[str, Any]:
        return json.loads((self.path / CONFIG).read_text())

    @property
    def config(self) -> dict[str, Any]:
        """The job's saved configuration (``config.json``'s ``config``)."""
        return self.config_blob["config"]

    @property
    def is_complete(self) -> bool:
        return (self.path / REPORT_JSON).is_file()

    def report(self) -> dict[str, Any]:
        return json.loads((self.path / REPORT_JSON).read_text())

    def episodes(self) -> list[dict[str, Any]]:
        path = self.path / EPISODES
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def file(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ writing
    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(obj, self.path / name)

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_bytes(text.encode(), self.path / name)

    def write_bytes(self, name: str, data: bytes) -> Path:
        return atomic_write_bytes(data, self.path / name)

    def write_episodes(self, episodes: list[dict[str, Any]]) -> Path:
        return self.write_text(EPISODES, "".join(json.dumps(e) + "\n" for e in episodes))

    def write_report(self, report: dict[str, Any], markdown: str) -> None:
        """``report.md``, then ``report.json`` (last: it marks the run complete); the
        checkpoint is no longer needed."""
        self.write_text(REPORT_MD, markdown)
        self.write_json(REPORT_JSON, report)
        shutil.rmtree(self.path / CHECKPOINT, ignore_errors=True)

    # ------------------------------------------------------------------ the search checkpoint
    def checkpoint_state(self) -> dict[str, Any]:
        """The last committed checkpoint's state (empty if none)."""
        path = self.path / CHECKPOINT / STATE
        return json.loads(path.read_text()) if path.is_file() else {}

    def checkpoint_file(self, name: str) -> Path:
        return self.path / CHECKPOINT / name

    def commit_checkpoint(self, files: dict[str, tuple[str, bytes]], state: dict[str, Any]) -> None:
        """Write ``files`` (role -> (file name, bytes); names must change between checkpoints,
        e.g. carry the step) into ``checkpoint/``, then ``state.json`` naming them (the commit
        point: a crash before it leaves the previous checkpoint whole), then drop the files of
        older checkpoints."""
        for name, data in files.values():
            atomic_write_bytes(data, self.checkpoint_file(name))
        names = {role: name for role, (name, _) in files.items()}
        atomic_write_json({**state, "files": names}, self.checkpoint_file(STATE))
        for old in (self.path / CHECKPOINT).iterdir():
            if old.name not in (*names.values(), STATE):
                old.unlink(missing_ok=True)
