"""Core: the executive that runs cron jobs and scenarios.

Services: ``<host>.core.cron``, ``<host>.core.scenarios`` (the collection),
``<host>.core.scenario`` (one scenario by name) and ``<host>.core.mmi``.
Core wires the managers to the world: key/value publishing and watching
(raspy.state.kv), requests through the broker, and Titanic's store for what must
survive a restart. Titanic may start after Core: loading is retried, and
startup scenarios wait for it at most ``store_wait`` seconds.

See docs/core.md.
"""
from __future__ import annotations

# imported here, in the supervisor before it forks, rather than by the child: an import after
# the fork costs the executive ~0.5 MB of its own (APScheduler's thread pool)
import concurrent.futures.thread  # noqa: F401
import logging
import threading
import time
from pathlib import Path
from typing import Any

import tzlocal

from raspy.automation.actions import Actions
from raspy.automation.cron import MISSED_POLICIES, CronManager, CronService, check_jobs
from raspy.automation.scenario import ScenarioCollectionService, ScenarioManager, ScenarioService, check_config
from raspy.automation.store import StoreError, TitanicStore
from raspy.errors import InvalidValue
from raspy.house.executive import Counters, Server, Settings
from raspy.house.options import NOT_NEGATIVE, POSITIVE, Option, one_of
from raspy.house.statistics import SNMPGauge, oid
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.state.kv.client import KvPublisherClient, KvSubscriberClient

log = logging.getLogger(__name__)

# The local time zone, found here once, in the supervisor before it forks (tzlocal keeps it): found
# by the scheduler of each Core it costs that process ~0.8 MB of its own (tzlocal reads /etc with
# the ascii codec and tries zoneinfo keys, looking in the tzdata package for each). So a new time
# zone takes effect when the house restarts, as for every process.
tzlocal.get_localzone()

#: Seconds between attempts to load the store while Titanic does not answer.
LOAD_RETRY = 5.0
#: Seconds between writes of the cron marks file.
MARKS_FLUSH = 30.0


def scenarios_dir(settings: Settings) -> Path:
    """Where the owner's scenario files are: option ``scenarios_dir``, else ``<state_dir>/scenarios``."""
    return Path(settings.options.get("scenarios_dir") or Path(settings.state_dir) / "scenarios")


class Core(Server):
    """Cron and scenarios in one executive."""

    options = (
        Option("jobs", list, [], "cron jobs, one table each ([keys](core.md#cron-jobs))", check_jobs),
        Option("scenarios", list, [], "scenarios, one table each ([keys](core.md#scenarios))"),
        Option("scenarios_dir", str, None, "the owner's scenario files; default `<state_dir>/scenarios`"),
        Option("allow_remote_code", bool, False, "accept scenario code over the network"),
        Option("missed", str, "run_once", "missed-run policy of the jobs that set none", one_of(*MISSED_POLICIES)),
        Option("scenario_timeout", float, 60.0, "seconds a triggered scenario may run when its conf sets no "
               "`timeout`", POSITIVE),
        Option("stop_timeout", float, 5.0, "seconds Core's shutdown waits, in all, for running scenarios", POSITIVE),
        Option("store_wait", float, 10.0, "seconds startup scenarios wait for Titanic's store before starting "
               "anyway", NOT_NEGATIVE),
        Option("request_timeout", float, 2.5, "seconds per attempt of a request sent by a job or a scenario",
               POSITIVE),
    )

    @classmethod
    def check_options(cls, settings: Settings) -> None:
        """Scenarios as Core will add them: their files are found and accept their params."""
        try:
            check_config(settings.options.get("scenarios", []), scenarios_dir(settings))
        except InvalidValue as exc:
            raise exc.inside("scenarios") from None

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        self.request_timeout = float(self.option("request_timeout"))
        self.stop_timeout = float(self.option("stop_timeout"))
        self.store_wait = float(self.option("store_wait"))
        self.publisher = KvPublisherClient(settings.kv_collector)
        self.subscriber = KvSubscriberClient("", settings.kv_snapshot, settings.kv_publisher)
        store = TitanicStore(lambda: MajorDomoClient(settings.broker, timeout=1.0, retries=2), self.service)
        state_dir = Path(settings.state_dir)
        actions = Actions(self.publish, self.request, self.get, self.fire_scenario)
        own = settings.hostname if settings.curve is not None and settings.curve.satellite else ""
        self.cron = CronManager(actions, store, missed=self.option("missed"), marks_path=state_dir / "cron-marks.json",
                                host=own)
        self.scenarios = ScenarioManager(actions, store, scenarios_dir(settings),
                                         allow_remote_code=self.option("allow_remote_code") is True,
                                         default_timeout=float(self.option("scenario_timeout")), host=own)
        self.cron.load_config(self.option("jobs"))
        self.scenarios.load_config(self.option("scenarios"))
        self.add_service("cron", CronService(self.cron))
        self.add_service("scenarios", ScenarioCollectionService(self.scenarios))
        self.add_service("scenario", ScenarioService(self.scenarios))
        self.statistics.add(SNMPGauge(oid(self.service, "scenarios_ignored"),
                                      "stored scenario entries skipped at loading (the log and /scenario/ say why)",
                                      lambda: len(self.scenarios.ignored)))
        self.loaded = False
        self._started_at = 0.0
        self._next_flush = 0.0
        self._startup_done = False
        self._watching = False

    # -- what jobs and scenarios can do -------------------------------------------------

    def publish(self, key: str, value: Any) -> None:
        """Set a key/value key to a msgpack value."""
        self.publisher.send("", key, p.pack(value))

    def request(self, service: str, command: str, args: Any = None) -> tuple[int, Any]:
        """One RasPy request through the broker (a socket per call: callers are many threads)."""
        with MajorDomoClient(self.settings.broker, timeout=self.request_timeout) as client:
            return client.call(service, command) if args is None else client.call(service, command, args)

    def get(self, key: str) -> Any:
        """The current value of a key/value key, or None."""
        body = self.subscriber.get(key)
        if body is None:
            return None
        try:
            return p.unpack(body)
        except p.ProtocolError:
            return body

    def fire_scenario(self, name: str, entry: dict[str, Any]) -> bool:
        return self.scenarios.fire(name, entry)

    def _on_kv(self, key: str, body: bytes | None, properties: dict[str, str]) -> None:
        if body is not None:
            try:
                value = p.unpack(body)
            except p.ProtocolError:
                value = body
            self.scenarios.on_update(key, value)

    # -- life ---------------------------------------------------------------------------

    def run(self) -> None:
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per run is too much on an SD card
        self._started_at = time.time()
        self.subscriber.start()
        self.cron.start()
        threading.Thread(target=self._load_store, name="core-store-load", daemon=True).start()
        super().run()

    def tick(self, now: float) -> None:
        self.cron.check_clock()
        self.scenarios.check_timeouts()
        if not self._watching and (self.subscriber.wait_synced(0) or now >= self._started_at + self.store_wait):
            self._watch()
        if not self._startup_done and (self.loaded or now >= self._started_at + self.store_wait):
            self._startup_done = True
            log.info("startup scenarios: %s", self.scenarios.start_startup())
        if now >= self._next_flush:
            self._next_flush = now + MARKS_FLUSH
            self.cron.marks.flush()

    def _watch(self) -> None:
        """Values already in key/value are primed; later updates fire scenarios."""
        self._watching = True
        self.scenarios.prime([(key, self.get(key)) for key, _ in self.subscriber.items()])
        self.subscriber.callback = self._on_kv

    def _load_store(self) -> None:
        """Load what Titanic keeps, retrying while it does not answer (a thread: the beat goes on)."""
        while True:
            try:
                jobs = self.cron.load_store()
                names = self.scenarios.load_store()
            except StoreError as exc:
                log.warning("store not loaded, retrying in %.0fs: %s", LOAD_RETRY, exc)
                if self._stop.wait(LOAD_RETRY):
                    return
                continue
            self.loaded = True
            log.info("loaded from the store: %d cron jobs, %d scenarios", jobs, names)
            return

    def close(self) -> None:
        self.cron.shutdown()
        abandoned = self.scenarios.stop(self.stop_timeout)
        if abandoned:
            log.error("scenarios abandoned at shutdown (they ignore their stop event): %s", abandoned)
        self.subscriber.stop()
        self.publisher.close()
        super().close()
