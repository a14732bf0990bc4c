"""The ``broker`` executive: the Majordomo broker in a thread, its counters on the board."""
from __future__ import annotations

from raspy.curve import Authenticator
from raspy.house.executive import Counters, Executive, Settings
from raspy.house.options import ENDPOINT, POSITIVE, Option
from raspy.house.trust import Trust
from raspy.mdp.broker import DEFAULT_ENDPOINT, Broker


class BrokerExecutive(Executive):
    """The broker as an executive: the core in a thread, beats and counters in the main one.

    In a CURVE house it binds as a CURVE server behind this process's authenticator, and a host
    may register workers only under its own name (:class:`~raspy.house.trust.Trust`); refused
    handshakes and READYs count as errors on the board.
    """

    secured = True

    options = (
        Option("bind", str, None, "the endpoint the broker binds; default `[raspy] broker`", ENDPOINT),
        Option("request_expiry", float, 30.0, "seconds a request waits for a worker before it is dropped", POSITIVE),
        Option("busy_timeout", float, 300.0, "seconds a worker may spend on one request before it is dropped",
               POSITIVE),
    )

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        curve = settings.curve
        self.authenticator = Authenticator(curve).start() if curve else None
        self.broker = Broker(
            self.option("bind") or DEFAULT_ENDPOINT, heartbeat=settings.heartbeat, liveness=settings.liveness,
            request_expiry=self.option("request_expiry"), busy_timeout=self.option("busy_timeout"),
            curve=curve, authorize=Trust(settings.hostname).may_serve if curve else None,
        )
        self.add_thread(self.broker.run, self.broker.stop, "broker")
        self._reported = (0, 0, 0)

    @classmethod
    def endpoints(cls, settings: Settings) -> list[str]:
        return [settings.options.get("bind", DEFAULT_ENDPOINT)]

    def tick(self, now: float) -> None:
        core = self.broker.core
        refused = core.refused + (self.authenticator.refused if self.authenticator else 0)
        requests, replies = core.requests, core.replies
        self.slot.count(requests=requests - self._reported[0], replies=replies - self._reported[1],
                        errors=refused - self._reported[2])
        self._reported = (requests, replies, refused)

    def close(self) -> None:
        super().close()
        if self.authenticator is not None:
            self.authenticator.stop()
