"""Replacing a file so that a crash or a power cut leaves the old content or the new, never half.

Write a temporary file beside the target, fsync it, rename it over the target,
then fsync the directory: the rename itself is only durable once the directory
entry is on disk.
"""
from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: bytes | str, mode: int = 0o666) -> None:
    """Replace ``path`` with ``data`` atomically and durably; creates missing parent folders.

    A new file gets ``mode`` less the umask (``0o600``: for its owner alone).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode), "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
