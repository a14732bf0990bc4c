"""An echo service: replies with the request's frames. For tests and benchmarks."""
from __future__ import annotations

import time

from raspy.mdp.protocol import Frames


class Echo:
    """Handler that returns the request, after ``delay`` seconds (a slow device, in tests)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def __call__(self, frames: Frames) -> Frames:
        if self.delay:
            time.sleep(self.delay)
        return frames
