"""The ``echo`` executive: a service that answers with the request, for tests and benchmarks."""
from __future__ import annotations

from raspy.house.executive import Counters, Server, Settings
from raspy.mdp.echo import Echo


class EchoServer(Server):
    """``<host>.<name>.echo`` answers with the request (tests, benchmarks); option ``delay`` (s)."""

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        self.add_service("echo", Echo(float(settings.options.get("delay", 0.0))))
