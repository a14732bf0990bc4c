"""The ``history`` executive: every numeric or binary device's history, and the queries on it.

It follows ``/device/`` in the key/value map, so device servers stay simple and a
history outlives their restarts. Readings go to a :class:`HistoryStore` (one
fixed-size file per device) and reach the disk every ``flush_interval`` seconds;
in between they wait in memory and in a spool on tmpfs, which a restart after a
``kill -9`` takes back.

``<host>.history.query`` answers:

- ``list``: none; result: ``[{"device", "unit", "size", "archives": [{"step", "rows"}]}]``.
- ``get``: ``{"device": NAME, "range": "24h"}`` or ``{"device": NAME, "from": T, "to": T}``,
  optionally ``"points": N``; result: ``{"device", "unit", "step", "from", "to", "points"}``
  with ``[t, value]`` points from raw readings (step 0), ``[t, mean, min, max]`` otherwise.
  ``404`` for a device with no history, ``400`` for a bad query.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

from raspy.droplog import DropLog
from raspy.errors import InvalidValue
from raspy.house.executive import Counters, Server, Settings
from raspy.house.options import Option, Rule
from raspy.house.statistics import SNMPGauge, oid
from raspy.mdp import protocol as p
from raspy.mdp.service import Service, bad_request, not_found
from raspy.state import keys
from raspy.state.history.ring import MAX_ARCHIVES, Archive
from raspy.state.history.spool import SPOOL_BYTES
from raspy.state.history.store import MAX_POINTS, HistoryError, HistoryStore, span
from raspy.state.kv.client import KvSubscriberClient

log = logging.getLogger(__name__)

#: The most rows of one archive: 1e6 rows are 36 MB per device.
MAX_ROWS = 1_000_000
RAW = {"keep": "1d", "every": "10s"}
ARCHIVES = [{"step": "1m", "keep": "7d"}, {"step": "10m", "keep": "1y"}]


def _pair(table: Any, wanted: tuple[str, str], *where: str | int) -> tuple[int, int]:
    """The two spans of a table such as ``{keep = "7d", step = "1m"}``, in seconds."""
    if not isinstance(table, Mapping) or set(table) != set(wanted):
        raise InvalidValue(f"a table of {' and '.join(wanted)}, got {table!r}", *where)
    try:
        return span(table[wanted[0]]), span(table[wanted[1]])
    except HistoryError as exc:
        raise InvalidValue(str(exc), *where) from None


def _archive(rows: int, step: int, *where: str | int) -> Archive:
    if not 1 <= rows <= MAX_ROWS:
        raise InvalidValue(f"{rows} rows: an archive has from 1 to {MAX_ROWS} rows", *where)
    return Archive(step, rows)


def raw_archive(table: Any) -> Archive:
    """The raw archive of option ``raw``: ``keep / every`` rows."""
    keep, every = _pair(table, ("keep", "every"))
    return _archive(keep // every, 0)


def archives(tables: list[Any]) -> list[Archive]:
    """The consolidated archives of option ``archives``: ``keep / step`` rows each, steps growing."""
    if len(tables) > MAX_ARCHIVES - 1:
        raise InvalidValue(f"at most {MAX_ARCHIVES - 1} archives")
    out: list[Archive] = []
    for index, table in enumerate(tables):
        step, keep = _pair(table, ("step", "keep"), index)
        if keep % step or (out and step <= out[-1].step):
            raise InvalidValue("keep must be a multiple of step, and steps must grow", index)
        out.append(_archive(keep // step, step, index))
    return out


class HistoryService(Service):
    """``<host>.history.query`` over a :class:`HistoryStore`."""

    QUERY_KEYS = ("device", "range", "from", "to", "points")

    def __init__(self, store: HistoryStore) -> None:
        self.store = store

    def do_list(self, args: Any) -> list[dict[str, Any]]:
        return self.store.describe()

    def do_get(self, args: Any) -> dict[str, Any]:
        if not isinstance(args, dict) or "device" not in args or set(args) - set(self.QUERY_KEYS):
            raise bad_request(f"get takes a map with 'device' and 'range', or 'from' and 'to' "
                              f"(and 'points'); got {args!r}")
        now = self.store.clock()
        try:
            if "range" in args:
                if "from" in args or "to" in args:
                    raise HistoryError("give 'range' or 'from'/'to', not both")
                start, end = now - span(args["range"]), now
            else:
                start, end = args.get("from"), args.get("to", now)
                if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (start, end)):
                    raise HistoryError(f"from and to are Unix times, got {start!r} and {end!r}")
            return self.store.query(args["device"], start, end, args.get("points", MAX_POINTS))
        except HistoryError as exc:
            raise bad_request(str(exc)) from None
        except KeyError as exc:
            raise not_found(exc.args[0]) from None


class History(Server):
    """The ``history`` executive (docs/history.md)."""

    options = (
        Option("folder", str, None, "where the history files go; default `<state_dir>/history`"),
        Option("raw", dict, RAW, "raw readings: the last `keep / every` of them", raw_archive),
        Option("archives", list, ARCHIVES, "consolidated archives, `{step, keep}` each, steps growing", archives),
        Option("flush_interval", int, 3600, "seconds between writes to the files: what a power cut may lose, "
               "with the kernel's writeback delay", Rule(lambda v: 1 <= v <= 86400, "an integer from 1 to 86400")),
        Option("spool", str, None, "the file on tmpfs that keeps unflushed readings through a crash; "
               "default `/dev/shm/raspy-<uid>-<hash of state_dir>.<name>.spool`"),
        Option("spool_bytes", int, SPOOL_BYTES, "bytes of spool that make history flush early and empty it",
               Rule(lambda v: 4096 <= v <= 256 * 1024 * 1024, "an integer from 4096 to 268435456")),
        Option("max_devices", int, 100, "devices with a history; a reading of one more is refused",
               Rule(lambda v: 1 <= v <= 10_000, "an integer from 1 to 10000")),
    )

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        layout = (raw_archive(self.option("raw")), *archives(self.option("archives")))
        folder = Path(self.option("folder") or Path(settings.state_dir) / "history")
        self.store = HistoryStore(folder, layout, self.option("max_devices"),
                                  spool=self.option("spool") or settings.ram_file("spool"),
                                  spool_bytes=self.option("spool_bytes"))
        self.flush_interval = self.option("flush_interval")
        self._flushed = time.monotonic()
        self._dropped = DropLog(log)
        self.add_service("query", HistoryService(self.store))
        for name, doc in (("readings", "readings written to a history"),
                          ("dropped", "readings refused: bad name or time, out of order, history full"),
                          ("bytes_written", "bytes written to history files"),
                          ("damaged", "damaged history files moved aside and started again"),
                          ("recovered", "readings taken back from the spool at start (after a crash)"),
                          ("spool_torn", "spools found with their last record cut short"),
                          ("spool_damaged", "stretches of a spool that were not records, discarded"),
                          ("early_flushes", "flushes before flush_interval: the spool was full or failed")):
            self.statistics.add(SNMPGauge(oid(self.service, name), doc,
                                          lambda name=name: getattr(self.store.counts, name)))
        self.subscriber = KvSubscriberClient(keys.DEVICE, settings.kv_snapshot, settings.kv_publisher,
                                             callback=self._reading)

    def _reading(self, key: str, body: bytes | None, properties: dict[str, str]) -> None:
        if body is None:
            return  # a device gone from the map keeps its history
        reading = p.map_or_drop(body, self._dropped, key)
        if reading is None:
            return
        unit = reading.get("unit")
        self.store.add(keys.name_in(keys.DEVICE, key), reading.get("timestamp"), reading.get("value"),
                       unit if isinstance(unit, str) else None)

    def run(self) -> None:
        self.subscriber.start()
        super().run()

    def tick(self, now: float) -> None:
        if time.monotonic() - self._flushed >= self.flush_interval:
            self._flushed = time.monotonic()
            self.store.flush()

    def close(self) -> None:
        super().close()
        self.subscriber.stop()
        self.store.close()
