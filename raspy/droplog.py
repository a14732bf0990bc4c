"""Rate-bounded logging of dropped messages.

A peer that sends junk in a loop must not fill the SD card with log lines:
at most ``burst`` lines per ``period`` are written, and the number held back
is reported with the next line that gets through.
"""
from __future__ import annotations

import logging
import time


class DropLog:
    """Logs why a message was dropped, at most ``burst`` times per ``period`` seconds."""

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
        now = time.monotonic()
        if now - self._window_start >= self.period:
            self._window_start, self._logged = now, 0
        if self._logged >= self.burst:
            self._held_back += 1
            return
        self._logged += 1
        extra = f" ({self._held_back} more not logged)" if self._held_back else ""
        self._held_back = 0
        shape = f" {[f[:16] for f in frames[:6]]!r}" if frames else ""
        self.logger.warning("dropped message: %s%s%s", reason, shape, extra)
