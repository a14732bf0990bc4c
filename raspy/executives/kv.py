"""The ``kv`` executive: a key/value server on the house's endpoints."""
from __future__ import annotations

from pathlib import Path

from raspy.curve import Authenticator
from raspy.house.executive import Counters, Executive, Settings
from raspy.house.options import POSITIVE, Option, Rule, at_least
from raspy.house.trust import Trust
from raspy.state.kv.message import HUGZ_INTERVAL, MAX_BYTES, MAX_KEYS, MAX_VALUE, SERVER_TIMEOUT
from raspy.state.kv.server import KvServer

#: Subscribers wait SERVER_TIMEOUT for a sign of life: a longer interval would make them resynchronise.
HUGZ_BOUND = Rule(lambda v: 0 < v <= HUGZ_INTERVAL, f"a number > 0 and <= {HUGZ_INTERVAL:g}")


class KvExecutive(Executive):
    """The ``kv`` executive: a :class:`KvServer` on the house's key/value endpoints.

    Updates and snapshots count as requests on the board. In a CURVE house the sockets are CURVE
    servers behind this process's authenticator, and a host may set only its own devices and
    events (:class:`~raspy.house.trust.Trust`); refused handshakes and updates count as errors.
    A host taken off the allow-list is cut at the next beat: what comes on its open connections
    is refused. State files or copies found unreadable at start and failed writes of the copy
    count as errors too.
    """

    secured = True

    options = (
        Option("state", str, None, "the state file; default `<state_dir>/kv.state`"),
        Option("ram_copy", str, None, "the copy of the map on tmpfs, written when only device readings "
               "(`/device/`) or host summaries (`/host/`) changed; default "
               "`/dev/shm/raspy-<uid>-<hash of state_dir>.<name>.state`"),
        Option("flush_interval", float, 5.0, "seconds from a change to its write in the state file, or in the "
               "copy on tmpfs for readings and summaries alone (at most)", POSITIVE),
        Option("hugz_interval", float, HUGZ_INTERVAL, "seconds between two HUGZ to subscribers (subscribers "
               f"resynchronise after {SERVER_TIMEOUT:g} s of silence)", HUGZ_BOUND),
        Option("max_value", int, MAX_VALUE, "bytes of one key's properties and body (docs/limits.md)", at_least(1)),
        Option("max_keys", int, MAX_KEYS, "keys in the map", at_least(1)),
        Option("max_bytes", int, MAX_BYTES, "bytes of the whole map: keys, properties and bodies", at_least(1)),
    )

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        curve = settings.curve
        self.authenticator = Authenticator(curve).start() if curve else None
        self.server = KvServer(settings.kv_snapshot, settings.kv_publisher, settings.kv_collector,
                               state_path=self.option("state") or Path(settings.state_dir) / "kv.state",
                               flush_interval=self.option("flush_interval"),
                               hugz_interval=self.option("hugz_interval"),
                               copy_path=self.option("ram_copy") or settings.ram_file("state"),
                               curve=curve, authorize=Trust(settings.hostname).may_publish if curve else None,
                               max_value=self.option("max_value"), max_keys=self.option("max_keys"),
                               max_bytes=self.option("max_bytes"))
        self.add_thread(self.server.run, self.server.stop, "kv")
        self._reported = (0, 0)

    @classmethod
    def endpoints(cls, settings: Settings) -> list[str]:
        return [settings.kv_snapshot, settings.kv_publisher, settings.kv_collector]

    def tick(self, now: float) -> None:
        if self.authenticator is not None:  # a revoke takes effect within a beat
            self.server.cut(self.authenticator.revoked())
        stats = self.server.stats
        served = stats["updates"] + stats["snapshots"]
        errors = (stats["refused"] + stats["damaged"] + stats["copy_failures"]
                  + (self.authenticator.refused if self.authenticator else 0))
        self.slot.count(requests=served - self._reported[0], errors=errors - self._reported[1])
        self._reported = (served, errors)

    def close(self) -> None:
        super().close()
        if self.authenticator is not None:
            self.authenticator.stop()
