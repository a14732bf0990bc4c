"""What a history costs per reading, against the cheapest write of the same bytes, in the same run.

- reference: the raw rows alone, 16 bytes per reading appended with one ``pwrite`` per flush
  (what any batched history must at least write);
- history: ``HistoryStore.add`` for every reading and ``flush`` every ``--per-flush`` readings
  (6: a device polled every 10 s and flushed every 60 s), with its 1-minute and 10-minute rows.

Both write to a fresh directory on the same disk. The table gives readings per second, bytes
written per reading and the ratio of the history's rate to the reference's, medians of rounds.

Run: ``PYTHONPATH=. python bench/history.py [--readings 60480] [--per-flush 6] [--rounds 3]``

:func:`flush_cost` measures what the executive's flushes write to a disk (``bench/idle.py`` adds it
to the idle house, whose measured minute seldom holds a flush).
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from raspy.executives.history import History, archives, raw_archive
from raspy.house.board import SHM_DIR
from raspy.house.options import with_defaults
from raspy.state.history.store import HistoryStore

T0 = 1_700_000_400
RAW = struct.Struct("<dd")


def reference(folder: Path, readings: int, per_flush: int) -> tuple[float, float]:
    """Readings per second and bytes per reading of the raw rows written in batches."""
    fd = os.open(folder / "raw", os.O_RDWR | os.O_CREAT, 0o644)
    written, batch, start = 0, [], time.perf_counter()
    for i in range(readings):
        batch.append(RAW.pack(T0 + i * 10, float(i % 97)))
        if len(batch) == per_flush:
            written += os.pwrite(fd, b"".join(batch), (i - per_flush + 1) * RAW.size)
            batch.clear()
    elapsed = time.perf_counter() - start
    os.close(fd)
    return readings / elapsed, written / readings


def history(folder: Path, readings: int, per_flush: int) -> tuple[float, float]:
    store = HistoryStore(folder, clock=lambda: T0 + readings * 10)
    start = time.perf_counter()
    for i in range(readings):
        store.add("pi.bench.sensor", T0 + i * 10, float(i % 97), "C")
        if i % per_flush == per_flush - 1:
            store.flush()
    store.flush()
    elapsed = time.perf_counter() - start
    written = store.counts.bytes_written
    store.close()
    return readings / elapsed, written / readings


#: Seconds a dirty page waits in the page cache before the kernel writes it back (``dirty_expire_centisecs``).
WRITEBACK = 30


@dataclass
class FlushCost:
    """What the history executive writes to disk per flush interval, measured with ``write_bytes``."""

    interval: int                  # flush_interval, seconds
    readings: int                  # readings per interval
    flushes: list[int]             # bytes written, one per interval measured
    spooled: int                   # bytes appended to the spool in the last interval (on tmpfs)
    spool_writes: int | None       # write_bytes of those appends; None when a flush came among them
    filesystem: str                # of the history files

    @property
    def per_flush(self) -> float:
        return statistics.mean(self.flushes)

    @property
    def kib_per_hour(self) -> float:
        return self.per_flush / 1024 * 3600 / self.interval


def write_bytes() -> int:
    """Bytes this process made the kernel write to a disk: each page it dirtied (clean before), once."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def filesystem(path: Path) -> str:
    """The type of the file system holding ``path`` (``ext4``, ``tmpfs``...)."""
    best, kind = "", "?"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        mount, fstype = fields[4], fields[fields.index("-") + 1]
        if str(path).startswith(mount.rstrip("/") + "/") and len(mount) >= len(best):
            best, kind = mount, fstype
    return kind


def flush_cost(folder: Path, devices: list[tuple[str, float]], options: Mapping[str, Any], intervals: int = 3) -> FlushCost:
    """Feed a store set up as the executive sets it up (``options``, its spool on tmpfs) with the readings
    of ``devices`` (name, poll seconds) at synthetic times, ``intervals`` flush intervals in a row, and
    measure the bytes each interval makes the kernel write: from clean pages (``os.sync`` before) to
    the flush that ends it. A flush that comes sooner (a full spool, a device with 1024 readings
    waiting) is written back ``WRITEBACK`` seconds later, as the kernel would, and counted again."""
    options = with_defaults(History.options, options)
    interval = options["flush_interval"]
    now = [math.floor(time.time()) - (intervals + 1) * interval]
    spool = Path(SHM_DIR, f"raspy-bench-{os.getpid()}.history.spool")
    store = HistoryStore(folder, (raw_archive(options["raw"]), *archives(options["archives"])), options["max_devices"],
                         clock=lambda: now[0], spool=spool, spool_bytes=options["spool_bytes"])
    try:
        for name, _ in devices:  # the files exist before: their creation is not a flush
            store.add(name, now[0], 0.0)
        store.flush()
        cost = FlushCost(interval, 0, [], 0, None, filesystem(folder.resolve()))
        for _ in range(intervals):
            start = now[0]
            times = sorted((start + poll * (k + 1) - index % poll, index, name) for index, (name, poll) in enumerate(devices)
                           for k in range(int(interval // poll)))
            os.sync()
            before, flushes, synced = write_bytes(), store.counts.flushes, start
            for t, index, name in times:
                if t - synced >= WRITEBACK:
                    if store.counts.flushes != flushes:
                        os.sync()
                    synced = t
                now[0] = t
                store.add(name, t, float(index % 7 + t % 60))
            now[0] = start + interval
            cost.spooled = os.path.getsize(spool) if spool.exists() else 0
            cost.spool_writes = write_bytes() - before if store.counts.flushes == flushes else None
            store.flush()
            cost.flushes.append(write_bytes() - before)
            cost.readings = len(times)
        return cost
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=7 * 8640, help="readings per round (a week at one per 10 s)")
    parser.add_argument("--per-flush", type=int, default=6, help="readings between two flushes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows: dict[str, list[tuple[float, float]]] = {"reference": [], "history": []}
    ratios = []
    for _ in range(args.rounds):
        folder = Path(tempfile.mkdtemp(prefix="raspy-history-bench-"))
        try:
            ref = reference(folder, args.readings, args.per_flush)
            got = history(folder, args.readings, args.per_flush)
        finally:
            shutil.rmtree(folder)
        rows["reference"].append(ref)
        rows["history"].append(got)
        ratios.append(got[0] / ref[0])
    print(f"{args.readings} readings of one device, a flush every {args.per_flush}, median of {args.rounds} rounds")
    print("| writer | readings/s | bytes written per reading | rate vs reference |")
    print("|---|--:|--:|--:|")
    for name, results in rows.items():
        rate = statistics.median(r[0] for r in results)
        per = statistics.median(r[1] for r in results)
        ratio = 1.0 if name == "reference" else statistics.median(ratios)
        print(f"| {name} | {rate:.0f} | {per:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
