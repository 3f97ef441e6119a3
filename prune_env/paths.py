"""Where the package keeps its files, and how it writes them without ever leaving half a file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

HOME_ENV = "PRUNE_ENV_HOME"


def home_dir() -> Path:
    """``$PRUNE_ENV_HOME``, or ``~/.cache/prune_env``."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "prune_env").expanduser()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
