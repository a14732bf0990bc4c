"""The ``broker`` executive: the Majordomo broker in a thread, its counters on the board."""
from __future__ import annotations

from dataclasses import fields

from raspy.curve import Authenticator
from raspy.house.executive import Counters, Executive, Settings
from raspy.house.options import ENDPOINT, POSITIVE, Option, at_least
from raspy.house.trust import Trust
from raspy.mdp.broker import DEFAULT_ENDPOINT, Broker
from raspy.mdp.limits import BrokerLimits


class BrokerExecutive(Executive):
    """The broker as an executive: the core in a thread, beats and counters in the main one.

    In a CURVE house it binds as a CURVE server behind this process's authenticator, and a host
    may register workers only under its own name and call the hub's ``<hub>.config.<host>`` for
    itself only (:class:`~raspy.house.trust.Trust`); refused handshakes, READYs and calls count as
    errors on the board.
    """

    secured = True

    options = (
        Option("bind", str, None, "the endpoint the broker binds; default `[raspy] broker`", ENDPOINT),
        # every bound of raspy.mdp.limits (docs/limits.md), as `raspy run broker` has them too
        *(Option(f.name, type(f.default), f.default, f.metadata["help"],
                 at_least(1) if type(f.default) is int else POSITIVE) for f in fields(BrokerLimits)),
    )

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        limits = BrokerLimits(**{f.name: self.option(f.name) for f in fields(BrokerLimits)})
        curve = settings.curve
        self.authenticator = Authenticator(curve).start() if curve else None
        trust = Trust(settings.hostname) if curve else None
        self.broker = Broker(self.option("bind") or DEFAULT_ENDPOINT, heartbeat=settings.heartbeat,
                             liveness=settings.liveness, limits=limits, curve=curve,
                             authorize=trust.may_serve if trust else None,
                             may_call=trust.may_call if trust else None, private=trust.private if trust else b"")
        self.add_thread(self.broker.run, self.broker.stop, "broker")
        self._reported = (0, 0, 0)

    @classmethod
    def endpoints(cls, settings: Settings) -> list[str]:
        return [settings.options.get("bind", DEFAULT_ENDPOINT)]

    def tick(self, now: float) -> None:
        core = self.broker.core
        refused = self.authenticator.refused if self.authenticator else 0  # handshakes refused
        counts = (core.requests, core.replies, core.drop.dropped + core.refused + refused)
        requests, replies, errors = (new - old for new, old in zip(counts, self._reported))
        self.slot.count(requests=requests, replies=replies, errors=errors)
        self._reported = counts

    def close(self) -> None:
        super().close()
        if self.authenticator is not None:
            self.authenticator.stop()
