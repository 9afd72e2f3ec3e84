"""Machine-local caches: what gazerm computes once per machine and reuses across jobs (a GGUF backbone
dequantised to safetensors, a frozen backbone's pooled features). They live under ``$GAZERM_CACHE_DIR``
(default ``~/.cache/gazerm``), one folder per kind; deleting a folder clears that cache."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

CACHE_ENV = "GAZERM_CACHE_DIR"


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cache (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "gazerm") / kind


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's contents, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stable_file_sha256(path: str | Path) -> str:
    """``file_sha256``, hashed once per process for a file of unchanged size and modification time (a
    100 MB model file is asked for by every step of a job's set-up)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _hashed(str(resolved), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=32)
def _hashed(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)
