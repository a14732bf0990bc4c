"""The history of every device: one fixed-size file each, readings batched in memory until a flush.

:meth:`HistoryStore.add` costs no disk I/O: the reading goes to memory (its raw row, and the
current row of each consolidated archive) and, given a spool, is appended to it (a file in
RAM-backed storage, :mod:`raspy.state.history.spool`). :meth:`HistoryStore.flush` writes what
changed with ``pwrite`` and no ``fsync`` (16 bytes per raw reading, plus one 36-byte row per
consolidated archive and slot touched since the last flush), then empties the spool. A query
answers from the files and memory together, and writes nothing.

A ``kill -9`` loses nothing: the page cache keeps what was flushed, the spool the rest, and the
next store on that spool takes its readings back. A power cut loses what came since the last
flush and what the kernel had not yet written back; never a file.

A file that cannot be trusted is moved aside (``<name>.hist.damaged``, one per device) and a new
one started; the store counts it and keeps going.
"""
from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from raspy.droplog import DropLog
from raspy.errors import RaspyError
from raspy.state.history.ring import Archive, DamagedFile, HistoryFile, Row, unit_bytes
from raspy.state.history.spool import SPOOL_BYTES, Spool

log = logging.getLogger(__name__)

#: Raw readings for a day at one per 10 s, 1-minute rows for 7 days, 10-minute rows for a year.
DEFAULT_LAYOUT = (Archive(0, 8640), Archive(60, 7 * 1440), Archive(600, 365 * 144))
SUFFIX = ".hist"
#: Device names that may become file names: the key/value map's, with no path in them.
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}\Z")
#: Seconds a reading may lie ahead of the store's clock (a Pi's clock, set by NTP, may step).
FUTURE = 60.0
#: Readings kept in memory per device before it is flushed early.
MAX_PENDING = 1024
#: The most points a query answers.
MAX_POINTS = 20_000


#: Seconds per unit of a span such as "10s", "24h", "7d", "1y".
SPAN_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_SPAN = re.compile(r"([0-9]+)([smhdwy])\Z")


class HistoryError(RaspyError, ValueError):
    """A query or reading that is refused, with the reason."""


def span(value: Any) -> int:
    """Seconds of a span: a positive integer, or a count and a unit ("10s", "24h", "7d", "1y")."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SPAN.match(value) if isinstance(value, str) else None
    if match is None or int(match.group(1)) == 0:
        raise HistoryError(f"a span is a positive number of seconds or e.g. '10s', '24h', '7d', '1y'; got {value!r}")
    return int(match.group(1)) * SPAN_UNITS[match.group(2)]


@dataclass
class Counts:
    readings: int = 0
    dropped: int = 0
    bytes_written: int = 0
    flushes: int = 0
    damaged: int = 0
    recovered: int = 0       # readings taken back from the spool at start
    spool_torn: int = 0      # spools whose last record was cut short
    spool_damaged: int = 0   # stretches of a spool that were not records, discarded
    early_flushes: int = 0   # flushes of every device because the spool was full or failed


@dataclass
class Device:
    """One device's open file and what is not on it yet."""

    file: HistoryFile
    cursor: int = 0                  # next raw row
    last: float = 0.0                # timestamp of the last reading taken
    filled: bool = False             # the raw ring has wrapped: its oldest row is overwritten next
    pending: list[tuple[float, float]] = field(default_factory=list)
    current: list[Row | None] = field(default_factory=list)
    dirty: list[dict[int, Row]] = field(default_factory=list)

    @classmethod
    def load(cls, file: HistoryFile, now: float) -> "Device":
        """The device of an opened file; a raw row from the future is noise, and would stop every write."""
        raw = [row for row in file.read_raw() if row[1] <= now + FUTURE]
        device = cls(file, current=[None] * len(file.layout), dirty=[{} for _ in file.layout])
        if raw:
            index, device.last, _ = max(raw, key=lambda row: row[1])
            device.cursor = (index + 1) % file.layout[0].rows
            device.filled = len(raw) == file.layout[0].rows
        return device

    @property
    def wrapped(self) -> bool:
        """The raw ring has wrapped, or will with the pending readings."""
        return self.filled or self.cursor + len(self.pending) >= self.file.layout[0].rows

    def raw(self) -> list[tuple[float, float]]:
        """The raw readings as a flush would leave them: those on file but the rows the pending overwrite,
        then the pending."""
        rows = self.file.layout[0].rows
        pending = self.pending[-rows:]
        start = self.cursor + len(self.pending) - len(pending)
        overwritten = {(start + i) % rows for i in range(len(pending))}
        return [(t, v) for index, t, v in self.file.read_raw() if index not in overwritten] + pending

    def rows(self, archive: int, first: int, last: int) -> list[Row]:
        """The rows of slots ``first`` to ``last`` as a flush would leave them: on file, or changed since."""
        rows = {row.slot: row for row in self.file.read_rows(archive, first, last)}
        first = max(first, last - self.file.layout[archive].rows + 1)
        rows.update((slot, replace(row)) for slot, row in self.dirty[archive].items() if first <= slot <= last)
        return [rows[slot] for slot in sorted(rows)]


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.match(name) or ".." in name:
        raise HistoryError(f"bad device name {name!r}: letters, digits, '_', '-' and single dots")
    return name


def number(value: Any) -> float | None:
    """A reading as a float (a sparkline's, a history's): numbers, and booleans as 1/0; else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


class HistoryStore:
    """Histories under ``folder``; at most ``max_devices`` of them. Safe from any thread.

    With a ``spool`` (a path on tmpfs), every reading taken is appended to it until the next flush,
    and the readings a store that died left there are taken back first. A spool of ``spool_bytes``
    or more makes the store flush every device at once, and empty it.
    """

    def __init__(self, folder: str | Path, layout: Sequence[Archive] = DEFAULT_LAYOUT, max_devices: int = 100,
                 clock: Callable[[], float] = time.time, spool: str | Path | None = None,
                 spool_bytes: int = SPOOL_BYTES) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.layout = tuple(layout)
        self.max_devices = max_devices
        self.clock = clock
        self.spool_bytes = spool_bytes
        self.counts = Counts()
        self._devices: dict[str, Device] = {}
        self._lock = threading.Lock()
        self._dropped = DropLog(log)
        self._spool: Spool | None = None
        if spool is not None:
            self._recover(Path(spool))

    def _recover(self, path: Path) -> None:
        """Take back what a store that died left in the spool, write it to the files, empty the spool."""
        try:
            spool, found = Spool.open(path)
        except OSError as exc:
            log.error("history spool %s cannot be used (%s): until each flush, readings are in memory only", path, exc)
            return
        self.counts.spool_torn += found.torn
        if found.damaged:
            self.counts.spool_damaged += len(found.damaged)
            more = f" and {len(found.damaged) - 3} more" if len(found.damaged) > 3 else ""
            log.error("history spool %s is damaged, discarded: %s%s", path, "; ".join(found.damaged[:3]), more)
        for reading in found.readings:
            self.counts.recovered += self._add(*reading)
        self._spool = spool
        self.flush()
        if found.readings:
            log.info("history spool %s: %d of %d readings taken back", path, self.counts.recovered, len(found.readings))

    # -- names and files -----------------------------------------------------

    def path(self, name: str) -> Path:
        return self.folder / (name + SUFFIX)

    def names(self) -> list[str]:
        """Every device with a history file, open or not."""
        on_disk = {path.name[:-len(SUFFIX)] for path in self.folder.glob("*" + SUFFIX)}
        with self._lock:
            return sorted(on_disk | set(self._devices))

    def _device(self, name: str, unit: str | None, create: bool) -> Device | None:
        """The open device, opening (or creating) its file; ``None`` when there is none to open."""
        device = self._devices.get(name)
        if device is not None:
            return device
        path = self.path(name)
        if not path.exists() and not create:
            return None
        if len(self._devices) >= self.max_devices:
            raise HistoryError(f"history is full: {self.max_devices} devices (max_devices)")
        try:
            file = HistoryFile.open(path) if path.exists() else HistoryFile.create(path, self.layout, unit, self.clock())
        except DamagedFile as exc:
            self.counts.damaged += 1
            log.error("history of %s is damaged (%s): kept as %s, a new one started", name, exc, path.name + ".damaged")
            path.replace(path.with_name(path.name + ".damaged"))
            file = HistoryFile.create(path, self.layout, unit, self.clock())
        device = self._devices[name] = Device.load(file, self.clock())
        return device

    # -- writing -------------------------------------------------------------------

    def add(self, name: str, t: float, value: Any, unit: str | None = None) -> bool:
        """Take one reading; False (counted, logged at a bounded rate) when it has no place in a history."""
        taken = self._add(name, t, value, unit)
        self.counts.readings += taken
        return taken

    def _add(self, name: str, t: float, value: Any, unit: str | None) -> bool:
        reading = number(value)
        try:
            check_name(name)
            if reading is None:
                return False  # not a number: no history, and nothing wrong
            if not isinstance(t, (int, float)) or not 0 < t <= self.clock() + FUTURE:
                raise HistoryError(f"timestamp {t!r} is not a time up to {FUTURE:g} s from now")
            unit = None if unit is None else unit_bytes(unit).decode()
            with self._lock:
                device = self._device(name, unit, create=True)
                if t <= device.last:
                    return False  # already taken (a resynchronised snapshot) or out of order
                self._take(device, float(t), reading, unit)
                self._spooled(name, float(t), reading, unit)
                if len(device.pending) >= MAX_PENDING:
                    self._flush(device)
        except (HistoryError, OSError) as exc:
            self.counts.dropped += 1
            self._dropped(f"reading of {name!r}: {exc}")
            return False
        return True

    def _spooled(self, name: str, t: float, value: float, unit: str | None) -> None:
        """Append a reading taken to the spool; when it is full (or cannot be written), flush every device."""
        if self._spool is None:
            return
        try:
            self._spool.append(name, t, value, unit)
            if self._spool.size < self.spool_bytes:
                return
        except OSError as exc:
            self._dropped(f"history spool {self._spool.path}: {exc}; the files are written now")
        self.counts.early_flushes += 1
        self._flush_all()

    def _take(self, device: Device, t: float, value: float, unit: str | None) -> None:
        file = device.file
        if unit is not None and unit != file.unit:
            file.set_unit(unit)
        device.pending.append((t, value))
        device.last = t
        for archive in range(1, len(file.layout)):
            slot = math.floor(t / file.layout[archive].step)
            row = device.current[archive]
            if row is None or row.slot != slot:
                # the first reading since the file was opened may continue a slot already on disk
                row = (file.read_row(archive, slot) if row is None else None) or Row(slot)
                device.current[archive] = row
            row.add(value)
            device.dirty[archive][slot] = row

    def flush(self) -> int:
        """Write every device's pending readings and rows, and empty the spool; the bytes written."""
        with self._lock:
            return self._flush_all()

    def _flush_all(self) -> int:
        written = sum(self._flush(device) for device in self._devices.values())
        if self._spool is not None:
            self._spool.clear()
        return written

    def _flush(self, device: Device) -> int:
        written = 0
        rows = device.file.layout[0].rows
        pending, device.pending = device.pending, []
        while pending:
            run = pending[:rows - device.cursor]  # up to the end of the ring
            written += device.file.write_raw(device.cursor, run)
            device.filled = device.filled or device.cursor + len(run) >= rows
            device.cursor = (device.cursor + len(run)) % rows
            pending = pending[len(run):]
        for archive, dirty in enumerate(device.dirty):
            for row in dirty.values():
                written += device.file.write_row(archive, row)
            dirty.clear()
        if written:
            self.counts.flushes += 1
            self.counts.bytes_written += written
        return written

    def close(self) -> None:
        """Flush and close every file, and remove the spool: nothing is left that only it holds."""
        with self._lock:
            self._flush_all()
            for device in self._devices.values():
                device.file.close()
            self._devices.clear()
            if self._spool is not None:
                self._spool.remove()
                self._spool = None

    # -- reading ----------------------------------------------------------------

    def query(self, name: str, start: float, end: float, max_points: int = MAX_POINTS) -> dict[str, Any]:
        """Points of ``name`` from ``start`` to ``end``, from the finest archive that reaches back to
        ``start``: ``[t, value]`` from raw readings, ``[t, mean, min, max]`` from the others. More than
        ``max_points`` are merged, exactly, into ``[t, mean, min, max]`` of wider steps."""
        check_name(name)
        if not (isinstance(max_points, int) and 1 <= max_points <= MAX_POINTS):
            raise HistoryError(f"points must be an integer from 1 to {MAX_POINTS}, got {max_points!r}")
        if not start < end:
            raise HistoryError(f"from ({start}) must be before to ({end})")
        with self._lock:
            device = self._device(name, None, create=False)
            if device is None:
                raise KeyError(f"no history of {name!r}")
            raw = device.raw()
            archive = self._archive_for(device, raw, start)
            if archive == 0:
                readings = sorted((t, v) for t, v in raw if start <= t <= end)
                step, rows = 0, None
            else:
                step = device.file.layout[archive].step
                newest = math.floor(min(end, device.last) / step)  # no row is newer than the last reading
                rows = device.rows(archive, math.floor(start / step), newest)
            unit = device.file.unit
        if rows is None:
            points = ([[t, v] for t, v in readings] if len(readings) <= max_points
                      else merge([(t, Row(0, 1, v, v, v)) for t, v in readings], start, end, max_points))
        else:
            timed = [(row.slot * step, row) for row in rows]
            points = ([[t, row.mean, row.low, row.high] for t, row in timed] if len(timed) <= max_points
                      else merge(timed, start, end, max_points))
        return {"device": name, "unit": unit or None, "step": step, "from": start, "to": end, "points": points}

    def _archive_for(self, device: Device, raw: list[tuple[float, float]], start: float) -> int:
        """The finest archive that still holds ``start``, else the coarsest."""
        layout, now = device.file.layout, max(self.clock(), device.last)
        for archive, spec in enumerate(layout):
            if archive == 0:
                if not device.wrapped:
                    return 0  # every raw reading since the file began is there
                times = [t for t, _ in raw]
                oldest, spacing = min(times), (max(times) - min(times)) / (len(times) - 1)
                if oldest <= start + spacing:  # it reaches back to start, give or take one reading
                    return 0
            elif now - spec.step * spec.rows <= start:
                return archive
        return len(layout) - 1

    def describe(self) -> list[dict[str, Any]]:
        """Each device with a history: name, unit, archives, file size."""
        out = []
        for name in self.names():
            with self._lock:
                try:
                    device = self._device(name, None, create=False)
                except HistoryError:
                    device = None
                if device is None:
                    continue
                file = device.file
                out.append({"device": name, "unit": file.unit or None, "size": file.size,
                            "archives": [{"step": a.step, "rows": a.rows} for a in file.layout]})
        return out


def merge(timed: list[tuple[float, Row]], start: float, end: float, max_points: int) -> list[list[float]]:
    """Rows merged into at most ``max_points`` equal spans of ``[start, end]``: exact means, min, max."""
    width = (end - start) / max_points
    buckets: dict[int, tuple[float, Row]] = {}
    for t, row in timed:
        index = min(int((t - start) / width), max_points - 1)
        if index not in buckets:
            buckets[index] = (start + index * width, Row(index))
        buckets[index][1].merge(row)
    return [[t, row.mean, row.low, row.high] for t, row in (buckets[i] for i in sorted(buckets))]
