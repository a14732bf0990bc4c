"""A pipe that wakes a thread asleep in a poll: the stop signal of loops that wait on sockets."""
from __future__ import annotations

import os


class Wakeup:
    """Register it with a ``zmq.Poller`` (or ``select``) beside the sockets; :meth:`set` makes it readable.

    So a loop sleeps until a message, its next timer or a stop, instead of waking
    on a short timeout to look at a flag. :meth:`set` is safe from any thread and
    from signal handlers; the pipe stays readable once set.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self._read

    def set(self) -> None:
        try:
            os.write(self._write, b"x")
        except OSError:  # full: it is readable already
            pass

    def __del__(self) -> None:
        # closed with its owner only: a late set() must not write to a reused descriptor
        for fd in (getattr(self, "_read", -1), getattr(self, "_write", -1)):
            if fd >= 0:
                os.close(fd)
