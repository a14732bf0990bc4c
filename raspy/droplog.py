"""Rate-bounded logging of what peers make happen.

A peer that sends junk in a loop must not fill the SD card with log lines:
at most ``burst`` lines per ``period`` are written, and the number held back
is reported with the next line that gets through (or by :meth:`DropLog.flush`).
"""
from __future__ import annotations

import logging
import time


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
        self.burst = burst
        self.period = period
        self.dropped = 0
        self._window_start = 0.0
        self._logged = 0
        self._held_back = 0

    def __call__(self, reason: str, frames: list[bytes] | None = None) -> None:
        self.dropped += 1
        self.log(logging.WARNING, "dropped message: %s%s", reason, _Shape(frames))

    def log(self, level: int, msg: str, *args: object) -> None:
        """``logger.log(level, msg, *args)`` while the window has room, else one more held back."""
        if not self.logger.isEnabledFor(level):
            return
        now = time.monotonic()
        if now - self._window_start >= self.period:
            self._window_start, self._logged = now, 0
        if self._logged >= self.burst:
            self._held_back += 1
            return
        self._logged += 1
        held, self._held_back = self._held_back, 0
        if held:
            self.logger.log(level, msg + " (%d more not logged)", *args, held)
        else:
            self.logger.log(level, msg, *args)

    def flush(self) -> None:
        """Report the lines held back once their window is over, if no line came to carry the count."""
        if self._held_back and time.monotonic() - self._window_start >= self.period:
            held, self._held_back = self._held_back, 0
            self._window_start, self._logged = time.monotonic(), 1
            self.logger.warning("%d more lines not logged", held)
