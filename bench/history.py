"""What a history costs per reading, against the cheapest write of the same bytes, in the same run.

- reference: the raw rows alone, 16 bytes per reading appended with one ``pwrite`` per flush
  (what any batched history must at least write);
- history: ``HistoryStore.add`` for every reading and ``flush`` every ``--per-flush`` readings
  (6: a device polled every 10 s and flushed every 60 s), with its 1-minute and 10-minute rows.

Both write to a fresh directory on the same disk. The table gives readings per second, bytes
written per reading and the ratio of the history's rate to the reference's, medians of rounds.

Run: ``PYTHONPATH=. python bench/history.py [--readings 60480] [--per-flush 6] [--rounds 3]``
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import tempfile
import time
from pathlib import Path

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
