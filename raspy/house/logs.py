"""Executives' log files: size-capped, rotated, with the last lines kept for the exit reason.

Writing a log never fails: what the disk does not take (full, read-only, gone) is
dropped and counted, and the supervisor marks the count on the executive's board slot.
"""
from __future__ import annotations

import errno
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO, Callable

from raspy.droplog import DropLog

log = logging.getLogger(__name__)

#: Lines of an executive's output kept in memory for the reason of its exit.
TAIL_LINES = 20
#: Why output was dropped: at most a few lines a minute for all the logs of the supervisor.
_drops = DropLog(log, burst=3, period=60.0)


class CappedLog:
    """An executive's output file, rotated to ``NAME.log.1`` when it reaches ``max_bytes``.

    The last lines stay in memory: they are the reason shown when the executive dies,
    also when the disk took none of them. ``on_drop(total)`` is told the bytes dropped so far.
    """

    def __init__(self, path: Path, max_bytes: int, on_drop: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.dropped = 0
        self._on_drop = on_drop
        self._partial = b""
        self._file: BinaryIO | None = None
        self._size = 0
        try:
            self._open()
        except OSError:
            pass  # the first write tries again, and counts what it cannot write

    def write(self, data: bytes) -> None:
        """Append ``data``; what the disk does not take is counted in :attr:`dropped`, never raised."""
        *lines, self._partial = (self._partial + data).split(b"\n")
        self._partial = self._partial[-4096:]
        self.tail.extend(line.decode("utf-8", "replace").rstrip() for line in lines if line.strip())
        data, written = data[-self.max_bytes:], 0
        try:
            if self._file is None:
                self._open()
            if self._size + len(data) > self.max_bytes:
                self._rotate()
            assert self._file is not None
            while written < len(data):  # a nearly full disk takes part of a write, then refuses
                n = self._file.write(memoryview(data)[written:])
                if not n:
                    raise OSError(errno.ENOSPC, "the file took nothing")
                written += n
                self._size += n
        except OSError as exc:
            self._drop(len(data) - written, exc)

    def note(self, text: str) -> None:
        """A line from the supervisor, marking starts and exits in the executive's log."""
        self.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} raspy.supervisor: {text}\n".encode())

    def last_line(self) -> str:
        return self.tail[-1] if self.tail else ""

    def _drop(self, size: int, exc: OSError) -> None:
        self.dropped += size
        _drops(f"{self.path}: {exc}; {self.dropped} bytes of output not written so far")
        if self._on_drop is not None:
            self._on_drop(self.dropped)

    def _open(self) -> None:
        self._file = open(self.path, "ab", buffering=0)
        self._size = self._file.tell()

    def _rotate(self) -> None:
        self.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = open(self.path, "wb", buffering=0)
        self._size = 0

    def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass
