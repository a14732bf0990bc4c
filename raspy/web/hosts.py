"""Every host's summary under ``/host/``, for the page for the house; a silent host is told apart.

Fed by a :class:`raspy.state.kv.client.KvSubscriberClient` callback and read by web requests from
other threads. A host was last seen when this page received its summary, by this host's clock, so
a satellite whose clock is off looks neither fresher nor older than it is; only a summary found
in the map when the page started has no such moment, and counts from its own time (never later
than then): a host that died before the page started looks silent as soon as that is old enough.
An update of the same run of a supervisor with a sequence no newer than the one held (the map's
state file replayed after a restart of kv) is not news.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from raspy.droplog import DropLog
from raspy.house import summary as host_summary
from raspy.mdp import protocol as p
from raspy.state import keys

log = logging.getLogger(__name__)


class HostSummaries:
    """The latest summary of each host, at most ``max_hosts`` of them."""

    def __init__(self, max_hosts: int = 100) -> None:
        self.max_hosts = max_hosts
        self._hosts: dict[str, tuple[dict[str, Any], float]] = {}  # name -> (summary, last seen: wall time)
        self._lock = threading.Lock()
        self._dropped = DropLog(log)

    def update(self, key: str, body: bytes | None, live: bool = True) -> None:
        """Record ``/host/<name>`` (``None``: deleted); ``live`` when it arrived after the first snapshot."""
        name = keys.name_in(keys.HOST, key)
        if body is None:
            with self._lock:
                self._hosts.pop(name, None)
            return
        try:
            summary = host_summary.read(body)
        except p.ProtocolError as exc:
            self._dropped(f"host summary {key}: {exc}")
            return
        with self._lock:
            held = self._hosts.get(name)
            if held is not None and held[0]["started"] == summary["started"] \
                    and held[0]["sequence"] >= summary["sequence"]:
                return
            if held is None and len(self._hosts) >= self.max_hosts:
                self._dropped(f"host summary {key}: more than {self.max_hosts} hosts")
                return
            now = time.time()
            self._hosts[name] = (summary, now if live else min(summary["time"], now))

    def hosts(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every host, sorted by name: its summary with ``last_seen``, ``age`` and ``silent``."""
        now = time.time() if now is None else now
        with self._lock:
            held = sorted(self._hosts.items())
        result = []
        for name, (summary, seen) in held:
            age = max(0.0, now - seen)
            result.append({"name": name, "silent": host_summary.is_silent(age, summary["refresh"]),
                           "last_seen": seen, "age": round(age, 3), "refresh": summary["refresh"],
                           "sequence": summary["sequence"], "started": summary["started"],
                           "executives": summary["executives"], "health": summary["health"]})
        return result
