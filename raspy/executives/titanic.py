"""The ``titanic`` executive: 9/TSP services, the store, the dispatcher and retention."""
from __future__ import annotations

import logging
import sqlite3
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
from raspy.state.titanic.store import StoreService

log = logging.getLogger(__name__)

#: 9/TSP's status frames.
OK_FRAME, PENDING_FRAME, UNKNOWN_FRAME, ERROR_FRAME = map(p.status_frame, (p.OK, p.PENDING, p.BAD_REQUEST, p.ERROR))


class Titanic(Server):
    """The Titanic executive: 9/TSP services, the store, the dispatcher, retention."""

    options = (
        Option("db", str, None, "the database file; default `<state_dir>/titanic.sqlite`"),
        Option("retention", float, 7 * 24 * 3600, "seconds a reply or a closed request is kept", POSITIVE),
        Option("clean_interval", float, 60.0, "seconds between clean-ups", POSITIVE),
        Option("request_workers", int, 8, "connections serving `titanic.request` from one thread "
               "(the most requests one commit takes)", at_least(1)),
        Option("dispatch_timeout", float, 10.0, "seconds one dispatched request may take", POSITIVE),
        Option("probe_timeout", float, 1.0, "seconds for one `mmi.service` question", POSITIVE),
        Option("retry_min", float, 0.5, "first delay before a request to an absent or failing service is "
               "tried again", POSITIVE),
        Option("retry_max", float, 30.0, "longest such delay (it doubles from `retry_min`)", POSITIVE),
        Option("lanes", int, 4, "services dispatched to at once", at_least(1)),
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
        self.journal = Journal(self.option("db") or Path(settings.state_dir) / "titanic.sqlite")
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
        self.add_worker(STORE_SERVICE, StoreService(self.journal))

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

    # -- 9/TSP --------------------------------------------------------------------

    def on_requests(self, requests: list[Frames]) -> list[Frames]:
        """``titanic.request``: service, body... -> 200, uuid (after the commit), for a batch in one commit.

        ``mmi.*`` is refused: the broker answers it itself, so it is never "there" to dispatch to.
        """
        valid = [i for i, frames in enumerate(requests)
                 if frames and frames[0] and not frames[0].startswith(p.MMI_PREFIX)]
        replies = [[UNKNOWN_FRAME] for _ in requests]
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
            removed = self.journal.clean(now - self.retention)
            if removed:
                log.info("removed %d replies and closed requests older than %.0fs", removed, self.retention)

    def run(self) -> None:
        log.info("titanic on %s: %s", self.journal.path, self.journal.counts())
        self.dispatcher.start()
        super().run()

    def close(self) -> None:
        super().close()
        self.dispatcher.stop()
        self.journal.close()
