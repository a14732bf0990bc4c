"""The ``echo`` executive: a service that answers with the request, for tests and benchmarks."""
from __future__ import annotations

from raspy.house.executive import Counters, Server, Settings
from raspy.house.options import NOT_NEGATIVE, Option
from raspy.mdp.echo import Echo


class EchoServer(Server):
    """``<host>.<name>.echo`` answers with the request (tests, benchmarks)."""

    options = (Option("delay", float, 0.0, "seconds each answer waits", NOT_NEGATIVE),)

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        self.add_service("echo", Echo(float(self.option("delay"))))
