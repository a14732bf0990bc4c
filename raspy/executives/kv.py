"""The ``kv`` executive: a key/value server on the house's endpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from raspy.house.executive import Counters, Executive, Settings
from raspy.state.kv.message import MAX_BYTES, MAX_KEYS, MAX_VALUE
from raspy.state.kv.server import KvServer

#: The map's bounds: option -> default.
BOUNDS = {"max_value": MAX_VALUE, "max_keys": MAX_KEYS, "max_bytes": MAX_BYTES}


def bounds(options: dict[str, Any]) -> dict[str, int]:
    """The options' bounds of the map, checked: each a positive integer."""
    found = {name: options.get(name, default) for name, default in BOUNDS.items()}
    for name, value in found.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return found


class KvExecutive(Executive):
    """The ``kv`` executive: a :class:`KvServer` on the house's key/value endpoints.

    Options: ``state`` (file; default ``<state_dir>/kv.state``), ``flush_interval``
    and ``hugz_interval`` (seconds), and the map's bounds ``max_value``,
    ``max_keys``, ``max_bytes`` (see docs/limits.md). Updates and snapshots count
    as requests on the board.
    """

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        bounds(options)

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        options = settings.options
        self.server = KvServer(settings.kv_snapshot, settings.kv_publisher, settings.kv_collector,
                               state_path=options.get("state", Path(settings.state_dir) / "kv.state"),
                               flush_interval=options.get("flush_interval", 5.0),
                               hugz_interval=options.get("hugz_interval", 1.0), **bounds(options))
        self.add_thread(self.server.run, self.server.stop, "kv")
        self._reported = 0

    def tick(self, now: float) -> None:
        served = self.server.stats["updates"] + self.server.stats["snapshots"]
        self.slot.count(requests=served - self._reported)
        self._reported = served
