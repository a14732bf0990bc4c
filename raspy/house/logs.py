"""Executives' log files: size-capped, rotated, with the last lines kept for the exit reason."""
from __future__ import annotations

import logging
import os
import time
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)

#: Lines of an executive's output kept in memory for the reason of its exit.
TAIL_LINES = 20


class CappedLog:
    """An executive's output file, rotated to ``NAME.log.1`` when it reaches ``max_bytes``.

    The last lines stay in memory: they are the reason shown when the executive dies.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = b""
        self._file = open(path, "ab", buffering=0)
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        data = data[-self.max_bytes:]
        if self._size + len(data) > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._size += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        self._partial = self._partial[-4096:]
        self.tail.extend(line.decode("utf-8", "replace").rstrip() for line in lines if line.strip())

    def note(self, text: str) -> None:
        """A line from the supervisor, marking starts and exits in the executive's log."""
        self.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} raspy.supervisor: {text}\n".encode())

    def last_line(self) -> str:
        return self.tail[-1] if self.tail else ""

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = open(self.path, "wb", buffering=0)
        self._size = 0

    def close(self) -> None:
        self._file.close()
