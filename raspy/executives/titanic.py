"""The ``titanic`` executive: 9/TSP services, the store, the dispatcher and retention."""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import fields
from pathlib import Path

from raspy.errors import InvalidValue
from raspy.house.executive import Counters, Server, Settings
from raspy.house.options import POSITIVE, Option, at_least, with_defaults
from raspy.house.statistics import SNMPGauge, oid
from raspy.mdp import protocol as p
from raspy.mdp.protocol import Frames
from raspy.state.titanic.client import CLOSE_SERVICE, REPLY_SERVICE, REQUEST_SERVICE, STORE_SERVICE
from raspy.state.titanic.dispatcher import Dispatcher, DispatchSettings
from raspy.state.titanic.journal import CLOSED_STATE, REPLIED_STATE, Journal, parse_uuid
from raspy.state.titanic.limits import Refusals, TitanicLimits
from raspy.state.titanic.marker import JournalDamaged
from raspy.state.titanic.store import StoreService

log = logging.getLogger(__name__)

#: 9/TSP's status frames.
OK_FRAME, PENDING_FRAME, UNKNOWN_FRAME, ERROR_FRAME = map(p.status_frame, (p.OK, p.PENDING, p.BAD_REQUEST, p.ERROR))


def open_journal(path: Path) -> Journal:
    """The journal, or an exit with the reason when the file lost what was acknowledged.

    The supervisor shows the exit's last line on ``raspy status``, restarts with
    back-off and gives up; each attempt checks again, so Titanic serves nothing
    until the owner has moved the files aside or restored them.
    """
    try:
        return Journal(path)
    except JournalDamaged as exc:
        log.error("%s: %s. Nothing is served until the owner decides: move %s* aside to start empty, or "
                  "restore a copy (docs/titanic.md, 'When Titanic refuses to start')", path, exc, path)
        raise SystemExit(f"titanic refuses to serve: {exc}") from None


class Titanic(Server):
    """The Titanic executive: 9/TSP services, the store, the dispatcher, retention."""

    options = (
        Option("db", str, None, "the database file; default `<state_dir>/titanic.sqlite`"),
        Option("retention", float, 7 * 24 * 3600, "seconds a reply or a closed request is kept (a reply not "
               "closed by then is dropped, counted and logged)", POSITIVE),
        Option("clean_interval", float, 60.0, "seconds between clean-ups", POSITIVE),
        Option("request_workers", int, 8, "connections serving `titanic.request` from one thread "
               "(the most requests one commit takes)", at_least(1)),
        Option("dispatch_timeout", float, 10.0, "seconds one dispatched request may take", POSITIVE),
        Option("probe_timeout", float, 1.0, "seconds for one `mmi.service` question", POSITIVE),
        Option("retry_min", float, 0.5, "first delay before a request to an absent or failing service is "
               "tried again", POSITIVE),
        Option("retry_max", float, 30.0, "longest such delay (it doubles from `retry_min`)", POSITIVE),
        Option("lanes", int, 4, "services dispatched to at once", at_least(1)),
        # every bound of raspy.state.titanic.limits (docs/limits.md)
        *(Option(f.name, int, f.default, f.metadata["help"], at_least(1)) for f in fields(TitanicLimits)),
    )

    @classmethod
    def check_options(cls, settings: Settings) -> None:
        values = with_defaults(cls.options, settings.options)
        if values["retry_min"] > values["retry_max"]:
            raise InvalidValue(f"{values['retry_min']} is more than retry_max {values['retry_max']}", "retry_min")

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        self.retention = float(self.option("retention"))
        self.clean_interval = float(self.option("clean_interval"))
        self.journal = open_journal(Path(self.option("db") or Path(settings.state_dir) / "titanic.sqlite"))
        self.limits = TitanicLimits(**{f.name: self.option(f.name) for f in fields(TitanicLimits)})
        self.refused = Refusals(log)
        self.unclaimed = 0  # replies dropped by the retention before their client closed them
        self._reported = 0  # refusals and unclaimed replies counted on the board so far
        self.dispatcher = Dispatcher(self.journal, settings.broker, DispatchSettings(
            timeout=float(self.option("dispatch_timeout")),
            probe_timeout=float(self.option("probe_timeout")),
            retry_min=float(self.option("retry_min")),
            retry_max=float(self.option("retry_max")),
            lanes=self.option("lanes"),
        ))
        self._next_clean = 0.0
        self.add_pool(REQUEST_SERVICE, self.on_requests, self.option("request_workers"))
        self._add_gauges()
        self.add_worker(REPLY_SERVICE, self.on_reply)
        self.add_worker(CLOSE_SERVICE, self.on_close)
        self.add_worker(STORE_SERVICE, StoreService(self.journal, self.limits, self.refused))

    def _add_gauges(self) -> None:
        """Queue and commit figures in ``<host>.titanic.statistics``, read from the journal when asked."""
        for state, doc in (("pending", "requests stored and not yet answered by their service"),
                           ("replied", "answered requests whose reply waits for titanic.reply or close"),
                           ("closed", "closed requests kept until the retention ends")):
            self.statistics.add(SNMPGauge(oid(self.service, f"requests_{state}"), doc,
                                          lambda state=state: self.journal.counts()[state]))
        self.statistics.add(SNMPGauge(oid(self.service, "commits"), "transactions committed (one fsync each)",
                                      lambda: self.journal.commits))
        self.statistics.add(SNMPGauge(oid(self.service, "writes"),
                                      "write operations committed (a batch of requests is one)",
                                      lambda: self.journal.writes))
        for name, doc, read in (
                ("refused", "requests and store writes refused beyond a bound", lambda: self.refused.total),
                ("unclaimed", "replies dropped by the retention before their client closed them",
                 lambda: self.unclaimed),
                ("broker_busy", "dispatches the broker refused as full, sent again later",
                 lambda: self.dispatcher.busy)):
            self.statistics.add(SNMPGauge(oid(self.service, name), doc, read))

    # -- 9/TSP --------------------------------------------------------------------

    def on_requests(self, requests: list[Frames]) -> list[Frames]:
        """``titanic.request``: service, body... -> 200, uuid (after the commit), for a batch in one commit.

        ``mmi.*`` is refused: the broker answers it itself, so it is never "there" to dispatch to; so
        is a name the broker would drop (not 1-255 printable ASCII characters). A request beyond a
        bound is refused (:meth:`_admit`) and stores nothing.
        """
        replies = [[UNKNOWN_FRAME] for _ in requests]
        admitted: dict[bytes, int] = {}  # service -> requests of this batch admitted so far
        valid = []
        for i, frames in enumerate(requests):
            if frames and p.SERVICE_NAME.match(frames[0]) and not frames[0].startswith(p.MMI_PREFIX):
                status = self._admit(frames, admitted, len(valid))
                if status == p.OK:
                    valid.append(i)
                else:
                    replies[i] = [p.status_frame(status)]
        if not valid:
            return replies
        try:
            keys = self.journal.add_requests([(requests[i][0], requests[i][1:]) for i in valid])
        except sqlite3.Error:
            log.exception("could not store %d requests", len(valid))
            for i in valid:
                replies[i] = [ERROR_FRAME]
            return replies
        for i, key in zip(valid, keys):
            replies[i] = [OK_FRAME, key.encode("ascii")]
        self.dispatcher.wake()
        return replies

    def _admit(self, frames: Frames, admitted: dict[bytes, int], batch: int) -> int:
        """``200`` when the request fits every bound beside the ``batch`` admitted before it; else the refusal.

        A body over ``max_request`` can never pass (``400``); the others are ``500``: full now, try later.
        The counts are the journal's (kept in memory); one thread admits, so they do not move under it
        but down (a reply, a close).
        """
        service, limits = frames[0], self.limits
        size = sum(map(len, frames[1:]))
        if size > limits.max_request:
            return self._refuse(p.BAD_REQUEST, service, f"{size} bytes, over max_request {limits.max_request}")
        pending, of_service, replied = self.journal.open_counts(service)
        of_service += admitted.get(service, 0)
        if pending + batch >= limits.max_pending:
            return self._refuse(p.ERROR, service, f"{limits.max_pending} requests pending already (max_pending)")
        if of_service >= limits.max_service_pending:
            return self._refuse(p.ERROR, service, f"{of_service} requests for it pending already "
                                                  f"(max_service_pending)")
        if replied >= limits.max_replies:
            return self._refuse(p.ERROR, service, f"{replied} replies wait to be closed (max_replies)")
        admitted[service] = admitted.get(service, 0) + 1
        return p.OK

    def _refuse(self, status: int, service: bytes, why: str) -> int:
        """Count and log a refused request (its name is printable ASCII: checked before); ``status``."""
        return self.refused(status, f"request for {service.decode('ascii')}: {why}")

    def on_reply(self, frames: Frames) -> Frames:
        """``titanic.reply``: uuid -> 200 + reply frames, 300 pending, 400 unknown."""
        key = parse_uuid(frames)
        if key is None:
            return [UNKNOWN_FRAME]
        try:
            found = self.journal.reply_of(key)
        except sqlite3.Error:
            log.exception("could not read request %s", key)
            return [ERROR_FRAME]
        if found is None or found[0] == CLOSED_STATE:
            return [UNKNOWN_FRAME]
        state, reply = found
        return [OK_FRAME, *reply] if state == REPLIED_STATE else [PENDING_FRAME]

    def on_close(self, frames: Frames) -> Frames:
        """``titanic.close``: uuid -> 200 (also for an unknown uuid)."""
        key = parse_uuid(frames)
        if key is None:
            return [UNKNOWN_FRAME]
        try:
            self.journal.close_request(key)
        except sqlite3.Error:
            log.exception("could not close request %s", key)
            return [ERROR_FRAME]
        return [OK_FRAME]

    # -- life cycle -----------------------------------------------------------------

    def tick(self, now: float) -> None:
        if now >= self._next_clean:
            self._next_clean = now + self.clean_interval
            unclaimed, closed = self.journal.clean(now - self.retention)
            if closed:
                log.info("removed %d closed requests older than %.0fs", closed, self.retention)
            if unclaimed:
                self.unclaimed += unclaimed
                self.refused.lines.log(logging.WARNING, "dropped %d replies nobody closed within %.0fs (retention)",
                                       unclaimed, self.retention)
        errors = self.refused.client_errors + self.unclaimed  # a refused 5xx is counted by the handler's wrapper
        if errors > self._reported:
            self.slot.count(errors=errors - self._reported)
            self._reported = errors

    def run(self) -> None:
        log.info("titanic on %s: %s", self.journal.path, self.journal.counts())
        self.dispatcher.start()
        super().run()

    def close(self) -> None:
        super().close()
        self.dispatcher.stop()
        self.journal.close()
