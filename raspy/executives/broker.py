"""The ``broker`` executive: the Majordomo broker in a thread, its counters on the board."""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from raspy.house.executive import Counters, Executive, Settings
from raspy.mdp.broker import DEFAULT_ENDPOINT, Broker
from raspy.mdp.limits import BrokerLimits


class BrokerExecutive(Executive):
    """The broker as an executive: the core in a thread, beats and counters in the main one.

    Options: ``bind`` (endpoint) and every bound of :class:`~raspy.mdp.limits.BrokerLimits`
    (``max_message``, ``queue_requests``, ``request_expiry``, ...).
    """

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        known = {"bind", *(f.name for f in fields(BrokerLimits))}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown option {unknown[0]!r}; the broker's are {', '.join(sorted(known))}")
        BrokerLimits.from_options(options)  # a bad bound raises ValueError naming it

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        options = settings.options
        self.broker = Broker(options.get("bind", DEFAULT_ENDPOINT), heartbeat=settings.heartbeat,
                             liveness=settings.liveness, limits=BrokerLimits.from_options(options))
        self.add_thread(self.broker.run, self.broker.stop, "broker")
        self._reported = (0, 0, 0)

    def tick(self, now: float) -> None:
        core = self.broker.core
        counts = (core.requests, core.replies, core.drop.dropped + core.refused)
        requests, replies, errors = (new - old for new, old in zip(counts, self._reported))
        self.slot.count(requests=requests, replies=replies, errors=errors)
        self._reported = counts
