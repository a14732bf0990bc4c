"""The ``broker`` executive: the Majordomo broker in a thread, its counters on the board."""
from __future__ import annotations

from raspy.house.executive import Counters, Executive, Settings
from raspy.mdp.broker import DEFAULT_ENDPOINT, Broker


class BrokerExecutive(Executive):
    """The broker as an executive: the core in a thread, beats and counters in the main one.

    Options: ``bind`` (endpoint), ``request_expiry`` and ``busy_timeout`` (seconds).
    """

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        options = settings.options
        self.broker = Broker(
            options.get("bind", DEFAULT_ENDPOINT), heartbeat=settings.heartbeat, liveness=settings.liveness,
            request_expiry=options.get("request_expiry", 30.0), busy_timeout=options.get("busy_timeout", 300.0),
        )
        self.add_thread(self.broker.run, self.broker.stop, "broker")
        self._reported = (0, 0)

    @classmethod
    def endpoints(cls, settings: Settings) -> list[str]:
        return [settings.options.get("bind", DEFAULT_ENDPOINT)]

    def tick(self, now: float) -> None:
        core = self.broker.core
        requests, replies = core.requests, core.replies
        self.slot.count(requests=requests - self._reported[0], replies=replies - self._reported[1])
        self._reported = (requests, replies)
