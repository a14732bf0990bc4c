"""The ``broker`` executive: the Majordomo broker in a thread, its counters on the board."""
from __future__ import annotations

from dataclasses import fields

from raspy.house.executive import Counters, Executive, Settings
from raspy.house.options import ENDPOINT, POSITIVE, Option, at_least
from raspy.mdp.broker import DEFAULT_ENDPOINT, Broker
from raspy.mdp.limits import BrokerLimits


class BrokerExecutive(Executive):
    """The broker as an executive: the core in a thread, beats and counters in the main one."""

    options = (
        Option("bind", str, None, "the endpoint the broker binds; default `[raspy] broker`", ENDPOINT),
        # every bound of raspy.mdp.limits (docs/limits.md), as `raspy run broker` has them too
        *(Option(f.name, type(f.default), f.default, f.metadata["help"],
                 at_least(1) if type(f.default) is int else POSITIVE) for f in fields(BrokerLimits)),
    )

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        limits = BrokerLimits(**{f.name: self.option(f.name) for f in fields(BrokerLimits)})
        self.broker = Broker(self.option("bind") or DEFAULT_ENDPOINT, heartbeat=settings.heartbeat,
                             liveness=settings.liveness, limits=limits)
        self.add_thread(self.broker.run, self.broker.stop, "broker")
        self._reported = (0, 0, 0)

    @classmethod
    def endpoints(cls, settings: Settings) -> list[str]:
        return [settings.options.get("bind", DEFAULT_ENDPOINT)]

    def tick(self, now: float) -> None:
        core = self.broker.core
        counts = (core.requests, core.replies, core.drop.dropped + core.refused)
        requests, replies, errors = (new - old for new, old in zip(counts, self._reported))
        self.slot.count(requests=requests, replies=replies, errors=errors)
        self._reported = counts
