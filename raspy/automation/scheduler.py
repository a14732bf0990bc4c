"""APScheduler 3 as Cron uses it, imported without asyncio and importlib.metadata (see raspy.standin).

* asyncio (31 modules, 1.5 MiB): ``apscheduler.util`` takes its ``iscoroutinefunction``, which
  only APScheduler's asyncio and Tornado executors call; Cron's jobs run on the default thread
  pool. Stand-in: ``inspect.iscoroutinefunction``.
* importlib.metadata (15 modules, 1 MiB, and a read of every installed package's entry points):
  APScheduler reads its own version, and its plugins, which only resolve the triggers,
  executors and job stores named by a string. Cron hands it objects. Stand-in: no version
  (APScheduler then says 3.5.0) and no plugins.
* multiprocessing and concurrent.futures.process (16 modules, 0.5 MiB): for its process pool,
  which Cron does not use. Stand-in: an empty ``multiprocessing``, and a ``BrokenProcessPool``
  that nothing raises.

Importing APScheduler took 34 ms here with both, 25 ms without either one, 15 ms without both.
"""
from __future__ import annotations

import inspect

from raspy.standin import stand_in, standing_in


class _NotInstalled(Exception):
    """The stand-in's ``PackageNotFoundError``: APScheduler falls back to a version of its own."""


def _no_version(name: str) -> str:
    raise _NotInstalled(name)


class _BrokenProcessPool(Exception):
    """The stand-in's ``BrokenProcessPool``: only APScheduler's process pool catches it."""


with standing_in(stand_in("asyncio", iscoroutinefunction=inspect.iscoroutinefunction),
                 stand_in("importlib.metadata", PackageNotFoundError=_NotInstalled, version=_no_version,
                          entry_points=lambda group: ()),
                 stand_in("multiprocessing"),
                 stand_in("concurrent.futures.process", BrokenProcessPool=_BrokenProcessPool)):
    from apscheduler.events import EVENT_JOB_MISSED, EVENT_JOB_REMOVED, JobEvent, JobExecutionEvent
    from apscheduler.job import Job
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.base import BaseTrigger
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.date import DateTrigger
    from apscheduler.triggers.interval import IntervalTrigger

__all__ = ["EVENT_JOB_MISSED", "EVENT_JOB_REMOVED", "BackgroundScheduler", "BaseTrigger", "CronTrigger",
           "DateTrigger", "IntervalTrigger", "Job", "JobEvent", "JobExecutionEvent"]
