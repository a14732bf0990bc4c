"""Cron: jobs that publish an event, send a request or fire a scenario on a schedule.

APScheduler 3 (``BackgroundScheduler``, imported through :mod:`raspy.automation.scheduler`)
does the timing; one APScheduler job per :class:`CronJob`. Jobs come from the configuration and
from the service ``<host>.core.cron``; those changed at run time are kept in the :class:`Store`.

The Pi has no battery clock, so runs can be missed while Core is down or when
the clock jumps (NTP at boot). The policy is explicit, per job or for all:
``run_once`` (default: missed runs are coalesced into one run, at start-up or
as soon as the jump is seen) or ``skip``. See docs/core.md.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from raspy.atomic import atomic_write
from raspy.automation.actions import Actions
from raspy.automation.scheduler import (EVENT_JOB_MISSED, EVENT_JOB_REMOVED, BackgroundScheduler, BaseTrigger,
                                        CronTrigger, DateTrigger, IntervalTrigger, Job, JobEvent,
                                        JobExecutionEvent)
from raspy.automation.store import Store, stored
from raspy.errors import InvalidValue
from raspy.mdp import protocol as p
from raspy.mdp.service import Service, bad_request, not_found
from raspy.state.keys import EVENT, join_key

log = logging.getLogger(__name__)

MISSED_POLICIES = ("run_once", "skip")
ACTIONS = ("event", "request", "scenario")
SCHEDULES = ("cron", "interval", "date")
#: Seconds a ``skip`` job may be late and still run: a busy Pi is not a missed run.
SKIP_GRACE = 30
#: A wall clock that moves this many seconds more or less than the monotonic clock has jumped.
CLOCK_JUMP = 2.0
#: Store section of jobs added or changed at run time (key: job id).
SECTION = "cron"

_INTERVAL_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
_CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
_KEYS = ("id", *SCHEDULES, "action", "data", "service", "command", "args", "scenario", "missed", "paused")


def event_key(job_id: str, host: str = "") -> str:
    """Key/value key of a job's events: ``/event/cron/<job>``, or ``/event/<host>.cron/<job>`` for
    the Core of a satellite ``host`` (a satellite publishes under its own name only)."""
    return join_key(EVENT, f"{host}.cron/{job_id}" if host else f"cron/{job_id}")


def build_trigger(spec: dict[str, Any]) -> BaseTrigger:
    """The APScheduler trigger of a job table; a bad expression raises InvalidValue naming the trigger."""
    kinds = [k for k in SCHEDULES if k in spec]
    if len(kinds) != 1:
        raise InvalidValue(f"a job needs exactly one trigger of {list(SCHEDULES)}, got {kinds}", *kinds[1:2])
    kind, value = kinds[0], spec[kinds[0]]
    try:
        if kind == "cron":
            return _cron_trigger(value)
        if kind == "interval":
            fields = {"seconds": value} if isinstance(value, (int, float)) and not isinstance(value, bool) else value
            if not isinstance(fields, dict) or not fields or set(fields) - set(_INTERVAL_UNITS):
                raise ValueError(f"interval is seconds or a table of {list(_INTERVAL_UNITS)}")
            if timedelta(**fields).total_seconds() <= 0:
                raise ValueError("interval must be positive")
            return IntervalTrigger(**fields)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return DateTrigger(run_date=datetime.fromtimestamp(value, timezone.utc))
        if not isinstance(value, str):
            raise ValueError("date is an ISO 8601 string or a Unix time")
        return DateTrigger(run_date=datetime.fromisoformat(value))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidValue(f"bad {kind} trigger {value!r}: {exc}", kind) from None


def _cron_trigger(value: Any) -> CronTrigger:
    """Five crontab fields (minute hour day month day_of_week), six with seconds first, or a table."""
    if isinstance(value, dict):
        if set(value) - set(_CRON_FIELDS):
            raise ValueError(f"cron table fields are {list(_CRON_FIELDS)}")
        return CronTrigger(**value)
    if not isinstance(value, str):
        raise ValueError("cron is a crontab string or a table of fields")
    fields = value.split()
    if len(fields) == 5:
        return CronTrigger.from_crontab(value)
    if len(fields) == 6:
        second, minute, hour, day, month, dow = fields
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=dow)
    raise ValueError(f"cron has 5 fields (or 6 with seconds first), got {len(fields)}")


def check_spec(spec: Any, default_missed: str = "run_once") -> dict[str, Any]:
    """A job table checked and completed; anything wrong raises InvalidValue with the reason and the key."""
    if not isinstance(spec, dict):
        raise InvalidValue("a job is a table (JSON object)")
    for key in spec:
        if key not in _KEYS:
            raise InvalidValue(f"unknown key {key!r}; known: {', '.join(_KEYS)}", key)
    job = dict(spec)
    if not isinstance(job.get("id"), str) or not p.NAME.match(job["id"]):
        raise InvalidValue("job id: letters, digits, '_' and '-' only", "id")
    action = job.get("action")
    if action not in ACTIONS:
        raise InvalidValue(f"unknown action {action!r}; known: {', '.join(ACTIONS)}", "action")
    if action == "request":
        for key in ("service", "command"):
            if not isinstance(job.get(key), str):
                raise InvalidValue("a request action needs 'service' and 'command' strings", key)
        try:
            p.request(job["command"])
        except p.ProtocolError as exc:
            raise InvalidValue(str(exc), "command") from None
    if action == "scenario" and not isinstance(job.get("scenario"), str):
        raise InvalidValue("a scenario action needs a 'scenario' name", "scenario")
    job.setdefault("missed", default_missed)
    if job["missed"] not in MISSED_POLICIES:
        raise InvalidValue(f"missed must be one of {', '.join(MISSED_POLICIES)}", "missed")
    job.setdefault("paused", False)
    if not isinstance(job["paused"], bool):
        raise InvalidValue(f"{job['paused']!r} is not true or false", "paused")
    build_trigger(job)
    return job


def check_jobs(specs: Any) -> list[dict[str, Any]]:
    """The jobs of a configuration, each checked (:func:`check_spec`), no id twice; a refusal names the entry."""
    if not isinstance(specs, list):
        raise InvalidValue("jobs is a list of tables")
    jobs: list[dict[str, Any]] = []
    for index, spec in enumerate(specs):
        try:
            job = check_spec(spec)
        except InvalidValue as exc:
            raise exc.inside(index) from None
        first = next((i for i, other in enumerate(jobs) if other["id"] == job["id"]), None)
        if first is not None:
            raise InvalidValue(f"jobs[{first}] has the id {job['id']!r} too", index, "id")
        jobs.append(spec)
    return jobs


@dataclass
class CronJob:
    """One job: its checked table, where it came from, and its APScheduler job."""

    spec: dict[str, Any]
    source: str  # "config" or "runtime"
    aps_job: Job | None = None
    runs: int = 0
    errors: int = 0
    missed: int = 0
    last_run: float | None = None
    last_error: str | None = None

    @property
    def id(self) -> str:
        return self.spec["id"]

    def info(self) -> dict[str, Any]:
        next_run = self.aps_job.next_run_time if self.aps_job is not None else None
        return {**self.spec, "source": self.source, "next_run": next_run.timestamp() if next_run else None,
                "stats": {"runs": self.runs, "errors": self.errors, "missed": self.missed,
                          "last_run": self.last_run, "last_error": self.last_error}}


class Marks:
    """Per job, the time up to which its schedule is accounted for, kept in a small file.

    A mark moves to the run time at each run and starts at the time a job is
    first seen. On start-up, a job whose next fire time after its mark is past
    has missed runs. Flushed periodically (not at every run: SD cards wear), so
    after a crash a ``run_once`` job may run once more than strictly needed.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.marks: dict[str, float] = {}
        self._dirty = False
        if path is not None and path.exists():
            try:
                self.marks = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
            except (ValueError, AttributeError, TypeError) as exc:
                log.warning("ignoring unreadable cron marks %s: %s", path, exc)

    def get(self, job_id: str, now: float) -> float:
        """The mark of a job, set to ``now`` when it has none."""
        if job_id not in self.marks:
            self.set(job_id, now)
        return self.marks[job_id]

    def set(self, job_id: str, when: float) -> None:
        self.marks[job_id] = when
        self._dirty = True

    def forget(self, job_id: str) -> None:
        self._dirty |= self.marks.pop(job_id, None) is not None

    def flush(self) -> None:
        """Write the marks if they changed, atomically."""
        if not self._dirty or self.path is None:
            return
        self._dirty = False
        atomic_write(self.path, json.dumps(self.marks))


class CronManager:
    """The jobs of one Core, on one APScheduler ``BackgroundScheduler``."""

    def __init__(self, actions: Actions, store: Store | None = None, missed: str = "run_once",
                 marks_path: Path | None = None, clock: Callable[[], float] = time.time, host: str = "") -> None:
        if missed not in MISSED_POLICIES:
            raise ValueError(f"missed must be one of {list(MISSED_POLICIES)}, not {missed!r}")
        self.actions = actions
        self.store = store
        self.missed = missed
        self.clock = clock
        self.marks = Marks(marks_path)
        self.host = host  # a satellite's name for its event keys (event_key); '' on the hub
        self.jobs: dict[str, CronJob] = {}
        self._lock = threading.RLock()
        self._clock_seen = (clock(), time.monotonic())
        self.scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1})
        self.scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        self.scheduler.add_listener(self._on_removed, EVENT_JOB_REMOVED)

    # -- life ---------------------------------------------------------------------

    def start(self) -> None:
        self.scheduler.start()

    def shutdown(self) -> None:
        """Stop the scheduler without waiting for running actions, and keep the marks."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.marks.flush()

    # -- jobs -----------------------------------------------------------------------

    def add(self, spec: Any, source: str = "runtime", persist: bool = True) -> CronJob:
        """Add or replace a job; a bad table raises ValueError and changes nothing."""
        job = check_spec(spec, self.missed)
        trigger = build_trigger(job)
        if source == "runtime" and isinstance(trigger, DateTrigger) and trigger.run_date.timestamp() <= self.clock():
            raise ValueError(f"date {job['date']!r} is in the past")
        with self._lock:
            if persist:
                self._save(job)
            self._unschedule(job["id"])
            cron = CronJob(job, source)
            self._schedule(cron)
            self.jobs[cron.id] = cron
            log.info("cron job %s added (%s)", cron.id, source)
            return cron

    def load_config(self, specs: list[Any]) -> None:
        """Jobs of the configuration file (checked when it was loaded: a bad one stops start-up there)."""
        for spec in check_jobs(specs):
            self.add(spec, source="config", persist=False)

    def load_store(self) -> int:
        """Jobs kept in the store (added or changed at run time); they override the configuration's."""
        if self.store is None:
            return 0
        count = 0
        for job_id in self.store.keys(SECTION):
            spec = self.store.get(SECTION, job_id)
            try:
                self.add(spec, source="runtime", persist=False)
                count += 1
            except ValueError as exc:
                log.error("stored cron job %s ignored: %s", job_id, exc)
        return count

    def all(self) -> list[CronJob]:
        """Every job, by id (a copy: the service thread must not see the dict change)."""
        with self._lock:
            return [cron for _, cron in sorted(self.jobs.items())]

    def get(self, job_id: Any) -> CronJob:
        cron = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if cron is None:
            raise KeyError(f"no cron job {job_id!r}")
        return cron

    def delete(self, job_id: str) -> None:
        with self._lock:
            cron = self.get(job_id)
            if self.store is not None and cron.source == "runtime":
                self.store.delete(SECTION, job_id)
            self._unschedule(job_id)
            del self.jobs[job_id]
            self.marks.forget(job_id)

    def set_paused(self, job_id: str, paused: bool) -> CronJob:
        """Pause or resume a job; the change is stored, so it survives a restart."""
        with self._lock:
            cron = self.get(job_id)
            spec = {**cron.spec, "paused": paused}
            self._save(spec)
            cron.spec, cron.source = spec, "runtime"
            if self.scheduler.get_job(job_id) is not None:
                if paused:
                    self.scheduler.pause_job(job_id)
                else:
                    self.scheduler.resume_job(job_id)
            return cron

    def _save(self, spec: dict[str, Any]) -> None:
        if self.store is not None:
            self.store.set(SECTION, spec["id"], spec)

    # -- APScheduler --------------------------------------------------------------------

    def _schedule(self, cron: CronJob) -> None:
        spec = cron.spec
        trigger = build_trigger(spec)
        now = self.clock()
        mark = self.marks.get(cron.id, now)
        if isinstance(trigger, DateTrigger) and trigger.run_date.timestamp() <= mark:
            log.info("cron job %s: its date has passed and was dealt with; not scheduled", cron.id)
            return
        grace = None if spec["missed"] == "run_once" else SKIP_GRACE
        cron.aps_job = self.scheduler.add_job(self._run, trigger, args=[cron.id], id=cron.id, name=cron.id,
                                              misfire_grace_time=grace, replace_existing=True)
        if spec["paused"]:
            cron.aps_job.pause()
        elif spec["missed"] == "run_once" and not isinstance(trigger, DateTrigger) and _missed_since(trigger, mark, now):
            log.info("cron job %s missed runs since %s: running it once now", cron.id, _iso(mark))
            cron.aps_job.modify(next_run_time=datetime.now(timezone.utc))

    def _unschedule(self, job_id: str) -> None:
        if self.scheduler.get_job(job_id) is not None:
            self.scheduler.remove_job(job_id)

    def run_now(self, job_id: Any) -> CronJob:
        """Run a job once now, in the caller's thread, besides its schedule (counted like any run)."""
        cron = self.get(job_id)
        self._run(cron.id)
        return cron

    def _run(self, job_id: str) -> None:
        """One run of a job, in APScheduler's thread pool; failures are counted, never raised."""
        cron = self.jobs.get(job_id)
        if cron is None:
            return
        now = self.clock()
        cron.runs += 1
        cron.last_run = now
        self.marks.set(job_id, now)
        spec = cron.spec
        try:
            if spec["action"] == "event":
                self.actions.publish(event_key(job_id, self.host), {"id": job_id, "time": now, "data": spec.get("data")})
            elif spec["action"] == "request":
                status, result = self.actions.request(spec["service"], spec["command"], spec.get("args"))
                if status != p.OK:
                    raise RuntimeError(f"{spec['service']} {spec['command']}: {status} {result}")
            else:
                self.actions.fire_scenario(spec["scenario"], {"cron": job_id, "time": now})
        except Exception as exc:
            cron.errors += 1
            cron.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("cron job %s failed: %s", job_id, cron.last_error)

    def _on_missed(self, event: JobExecutionEvent) -> None:
        cron = self.jobs.get(event.job_id)
        if cron is not None:
            cron.missed += 1
            log.info("cron job %s skipped a run due at %s (policy skip)", event.job_id, event.scheduled_run_time)

    def _on_removed(self, event: JobEvent) -> None:
        """A job APScheduler dropped (a date job that ran) has no next run."""
        cron = self.jobs.get(event.job_id)
        if cron is not None:
            cron.aps_job = None

    # -- the clock ------------------------------------------------------------------------

    def check_clock(self) -> float:
        """Notice a jump of the wall clock; returns its size in seconds (0 when none).

        Forward: wake the scheduler, which applies each job's policy to the runs
        now past. Backward: give every repeating job a fresh trigger, or it
        would wait for the old future to come back.
        """
        wall, mono = self.clock(), time.monotonic()
        last_wall, last_mono = self._clock_seen
        self._clock_seen = (wall, mono)
        jump = (wall - last_wall) - (mono - last_mono)
        if abs(jump) < CLOCK_JUMP or not self.scheduler.running:
            return 0.0
        log.warning("wall clock jumped by %+.1f s", jump)
        if jump < 0:
            with self._lock:
                for cron in self.jobs.values():
                    job = cron.aps_job
                    if job is not None and not isinstance(job.trigger, DateTrigger):
                        job.reschedule(build_trigger(cron.spec))
                        if cron.spec["paused"]:
                            job.pause()
        self.scheduler.wakeup()
        return jump


def _missed_since(trigger: BaseTrigger, mark: float, now: float) -> bool:
    """Whether ``trigger`` had a fire time after ``mark`` and not after ``now``."""
    since = datetime.fromtimestamp(mark, timezone.utc)
    due = trigger.get_next_fire_time(since, since)
    return due is not None and due.timestamp() <= now


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="seconds")


class CronService(Service):
    """``<host>.core.cron``: ``add``, ``list``, ``get``, ``delete``, ``pause``, ``resume``, ``run``."""

    def __init__(self, manager: CronManager) -> None:
        self.manager = manager

    def _job(self, args: Any) -> CronJob:
        try:
            return self.manager.get(args)
        except KeyError as exc:
            raise not_found(exc.args[0]) from None

    def do_add(self, args: Any) -> dict[str, Any]:
        """args: a job table, or its JSON text."""
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError as exc:
                raise bad_request(f"not JSON: {exc}") from None
        try:
            with stored():
                return self.manager.add(args).info()
        except ValueError as exc:
            raise bad_request(str(exc)) from None

    def do_list(self, args: Any) -> list[dict[str, Any]]:
        return [cron.info() for cron in self.manager.all()]

    def do_get(self, args: Any) -> dict[str, Any]:
        return self._job(args).info()

    def do_delete(self, args: Any) -> None:
        self._job(args)
        with stored():
            self.manager.delete(args)

    def do_pause(self, args: Any) -> dict[str, Any]:
        self._job(args)
        with stored():
            return self.manager.set_paused(args, True).info()

    def do_run(self, args: Any) -> dict[str, Any]:
        """Run the job now; result: its info, whose ``stats`` say whether this run failed."""
        self._job(args)
        return self.manager.run_now(args).info()

    def do_resume(self, args: Any) -> dict[str, Any]:
        self._job(args)
        with stored():
            return self.manager.set_paused(args, False).info()

