"""Rate-bounded logging of what peers make happen.

A peer that sends junk in a loop must not fill the SD card with log lines:
at most ``burst`` lines per ``period`` are written, and the number held back
is reported with the next line that gets through (or by :meth:`DropLog.flush`).
:class:`DropLog` does it for messages we drop and lines peers trigger;
:class:`RateLimit` does it for a logger's own lines (a library's, or an access log).
"""
from __future__ import annotations

import logging
import threading
import time


class _Window:
    """At most ``burst`` admissions per ``period`` seconds; counts the ones held back."""

    def __init__(self, burst: int, period: float) -> None:
        self.burst = burst
        self.period = period
        self._start = 0.0
        self._admitted = 0
        self._held_back = 0
        self._lock = threading.Lock()

    def admit(self) -> int | None:
        """``None`` when held back; otherwise how many were held back since the last admission."""
        now = time.monotonic()
        with self._lock:
            if now - self._start >= self.period:
                self._start, self._admitted = now, 0
            if self._admitted >= self.burst:
                self._held_back += 1
                return None
            self._admitted += 1
            held_back, self._held_back = self._held_back, 0
            return held_back

    def overdue(self) -> int:
        """How many were held back in a window that is over (and no line came to report them); resets."""
        now = time.monotonic()
        with self._lock:
            if not self._held_back or now - self._start < self.period:
                return 0
            held_back, self._held_back = self._held_back, 0
            self._start, self._admitted = now, 1
            return held_back


def _more(held_back: int) -> str:
    return f" ({held_back} more not logged)" if held_back else ""


class _Shape:
    """The first frames of a message, cut short; formatted only when the line is written."""

    __slots__ = ("frames",)

    def __init__(self, frames: list[bytes] | None) -> None:
        self.frames = frames

    def __str__(self) -> str:
        return f" {[f[:16] for f in self.frames[:6]]!r}" if self.frames else ""


class DropLog:
    """Logs lines a peer can trigger, at most ``burst`` times per ``period`` seconds.

    Called as ``drop(reason, frames)`` it counts a dropped message in
    :attr:`dropped`; :meth:`log` takes any other line under the same bound.
    """

    def __init__(self, logger: logging.Logger, burst: int = 10, period: float = 10.0) -> None:
        self.logger = logger
        self.dropped = 0
        self._window = _Window(burst, period)

    def __call__(self, reason: str, frames: list[bytes] | None = None) -> None:
        self.dropped += 1
        self.log(logging.WARNING, "dropped message: %s%s", reason, _Shape(frames))

    def log(self, level: int, msg: str, *args: object) -> None:
        """``logger.log(level, msg, *args)`` while the window has room, else one more held back."""
        if not self.logger.isEnabledFor(level):
            return
        held_back = self._window.admit()
        if held_back is None:
            return
        if held_back:
            self.logger.log(level, msg + " (%d more not logged)", *args, held_back)
        else:
            self.logger.log(level, msg, *args)

    def flush(self) -> None:
        """Report the lines held back once their window is over, if no line came to carry the count."""
        held_back = self._window.overdue()
        if held_back:
            self.logger.warning("%d more lines not logged", held_back)


class RateLimit(logging.Filter):
    """A logger filter: at most ``burst`` records per ``period`` seconds pass, the next says how many did not."""

    def __init__(self, burst: int = 10, period: float = 10.0) -> None:
        super().__init__()
        self._window = _Window(burst, period)

    def filter(self, record: logging.LogRecord) -> bool:
        held_back = self._window.admit()
        if held_back is None:
            return False
        if held_back:
            record.msg, record.args = record.getMessage() + _more(held_back), None
        return True

    @classmethod
    def install(cls, logger: logging.Logger, burst: int = 10, period: float = 10.0) -> None:
        """Rate-limit ``logger``'s own records (once: installing twice changes nothing)."""
        if not any(isinstance(f, cls) for f in logger.filters):
            logger.addFilter(cls(burst, period))
