"""The restart policy: what follows an executive's exit, as a pure function of its history.

A run of ``backoff_reset`` seconds or more counts as stable: the next exit is
the first of a new series and is restarted at once. Each quick exit after it
doubles the delay from ``backoff_start`` up to ``backoff_cap``; after
``give_up_after`` quick exits in a row the executive is given up and tried
again every ``gave_up_retry`` seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class RestartSettings(Protocol):
    """The configuration's restart settings (see :class:`raspy.house.config.Config`)."""

    backoff_start: float
    backoff_cap: float
    backoff_reset: float
    give_up_after: int
    gave_up_retry: float


@dataclass(frozen=True)
class Restart:
    """The decision after one exit."""

    failures: int   # quick exits in a row, this one included
    delay: float    # seconds until the next start
    gave_up: bool


def next_restart(failures: int, uptime: float, settings: RestartSettings) -> Restart:
    """The decision after an exit that ended ``uptime`` seconds of running, ``failures`` quick exits before it."""
    failures = 1 if uptime >= settings.backoff_reset else failures + 1
    if failures >= settings.give_up_after:
        return Restart(failures, settings.gave_up_retry, gave_up=True)
    delay = 0.0 if failures == 1 else min(settings.backoff_start * 2 ** (failures - 2), settings.backoff_cap)
    return Restart(failures, delay, gave_up=False)
