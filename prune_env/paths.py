"""Where the package keeps its files, and how it writes them without ever leaving half a file."""

from __future__ import annotations

import io
import json
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
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(buffer.getvalue(), path)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """``obj`` as indented JSON, written atomically."""
    return atomic_write_bytes((json.dumps(obj, indent=2) + "\n").encode(), path)
