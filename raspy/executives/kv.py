"""The ``kv`` executive: a key/value server on the house's endpoints."""
from __future__ import annotations

from pathlib import Path

from raspy.house.executive import Counters, Executive, Settings
from raspy.state.kv.server import KvServer


class KvExecutive(Executive):
    """The ``kv`` executive: a :class:`KvServer` on the house's key/value endpoints.

    Options: ``state`` (file; default ``<state_dir>/kv.state``), ``flush_interval``
    and ``hugz_interval`` (seconds). Updates and snapshots count as requests on the board.
    """

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        options = settings.options
        self.server = KvServer(settings.kv_snapshot, settings.kv_publisher, settings.kv_collector,
                               state_path=options.get("state", Path(settings.state_dir) / "kv.state"),
                               flush_interval=options.get("flush_interval", 5.0),
                               hugz_interval=options.get("hugz_interval", 1.0))
        self.add_thread(self.server.run, self.server.stop, "kv")
        self._reported = 0

    @classmethod
    def endpoints(cls, settings: Settings) -> list[str]:
        return [settings.kv_snapshot, settings.kv_publisher, settings.kv_collector]

    def tick(self, now: float) -> None:
        served = self.server.stats["updates"] + self.server.stats["snapshots"]
        self.slot.count(requests=served - self._reported)
        self._reported = served
