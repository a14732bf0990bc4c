"""Where each executive's private memory lies: pages copied from the supervisor, or new, by region.

    PYTHONPATH=. python bench/cow.py [--at 0,60]    (as root: page frames and their map counts)

Starts the default house as ``bench/idle.py`` does and, at each of ``--at`` seconds after
``/readyz`` answered (0: at once), reads every process's page table (``/proc/PID/pagemap``,
``/proc/kpagecount``). A page that one process alone maps is private to it. A private page of an
executive at an address where the supervisor has a page too is copy-on-write (the executive
wrote to it, or holds the original the supervisor wrote away from); any other is new. Regions:
the C heap (``[heap]``, glibc's main arena), Python's objects (the other anonymous memory that
existed at the fork: pymalloc's arenas), libpython's data, other inherited mappings; new memory
in glibc's thread arenas, thread stacks, and the rest (the C heap grown past the fork, code pages
of a library only that process runs, files it maps). Prints a Markdown table per time.
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.idle import fetch_ready, house_executives, start_house  # noqa: E402
from bench.supervisor import wait  # noqa: E402

PAGE = 4096
#: glibc's thread arenas are mmapped aligned to their largest size (64 MiB on 64-bit systems)
ARENA_ALIGN = 64 << 20
COPIED = ("heap", "objects", "libpython", "inherited, other")
NEW = ("arenas", "stacks", "new, other")


def mappings(pid: int) -> list[tuple[int, int, str, str]]:
    """``(start, end, permissions, path)`` of each mapping of ``pid``."""
    out = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        out.append((start, end, fields[1], fields[5] if len(fields) > 5 else ""))
    return out


def thread_stacks(maps: list[tuple[int, int, str, str]]) -> set[int]:
    """Starts of the anonymous mappings that follow a guard page: the stacks of threads."""
    return {b[0] for a, b in zip(maps, maps[1:]) if a[2] == "---p" and not a[3] and not b[3] and a[1] == b[0]}


def arenas(maps: list[tuple[int, int, str, str]]) -> set[int]:
    """Starts of the anonymous mappings within glibc's thread arenas (each begins at an aligned address)."""
    bases = {start for start, _, _, path in maps if not path and start % ARENA_ALIGN == 0}
    return {start for start, _, _, path in maps if not path and start - start % ARENA_ALIGN in bases}


def frames(pid: int) -> dict[int, tuple[int, tuple[int, int, str, str]]]:
    """Page number -> (frame number, its mapping) of every present page of ``pid``."""
    out = {}
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for mapping in mappings(pid):
            if mapping[3] == "[vsyscall]":
                continue
            pagemap.seek(mapping[0] // PAGE * 8)
            data = pagemap.read((mapping[1] - mapping[0]) // PAGE * 8)
            for i, (entry,) in enumerate(struct.iter_unpack("<Q", data)):
                if entry >> 63:
                    out[mapping[0] // PAGE + i] = (entry & ((1 << 55) - 1), mapping)
    return out


def region(mapping: tuple[int, int, str, str], inherited: bool, stacks: set[int], arena: set[int]) -> str:
    start, _, _, path = mapping
    if inherited:
        if path == "[heap]":
            return "heap"
        if "libpython" in path:
            return "libpython"
        return "objects" if not path else "inherited, other"
    if start in arena:
        return "arenas"
    return "stacks" if path == "[stack]" or start in stacks else "new, other"


def private_by_region(pid: int, supervisor: dict, kpagecount) -> Counter:
    """KiB of ``pid``'s private pages per region; ``supervisor``: the supervisor's pages."""
    maps = mappings(pid)
    stacks, arena = thread_stacks(maps), arenas(maps)
    kib: Counter = Counter()
    for page, (frame, mapping) in frames(pid).items():
        kpagecount.seek(frame * 8)
        if struct.unpack("<Q", kpagecount.read(8))[0] == 1:
            kib[region(mapping, page in supervisor, stacks, arena)] += PAGE // 1024
    return kib


def report(at: float, rows: dict[str, tuple[int, Counter]]) -> None:
    print(f"\n{at:.0f} s after /readyz: private MiB, copy-on-write (the supervisor has a page at that "
          f"address) or new\n")
    print("| process | threads | private | copied | " + " | ".join(COPIED) + " | new | " + " | ".join(NEW) + " |")
    print("|---|--:|--:|--:|" + "--:|" * len(COPIED) + "--:|" + "--:|" * len(NEW))
    for name, (threads, kib) in rows.items():
        copied, new = sum(kib[k] for k in COPIED), sum(kib[k] for k in NEW)
        print(f"| {name} | {threads} | {(copied + new) / 1024:.2f} | {copied / 1024:.2f} | "
              + " | ".join(f"{kib[k] / 1024:.2f}" for k in COPIED) + f" | {new / 1024:.2f} | "
              + " | ".join(f"{kib[k] / 1024:.2f}" for k in NEW) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", default="0,60", help="seconds after /readyz to look, comma-separated")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/cow.py reads page frames and their map counts: run it as root")
    times = sorted(float(t) for t in args.at.split(","))
    with tempfile.TemporaryDirectory(prefix="raspy-cow-") as tmp, open("/proc/kpagecount", "rb") as kpagecount:
        house, port = start_house(Path(tmp), house_executives(0, 1, []))
        try:
            wait(lambda: fetch_ready(port), timeout=30, interval=0.01)
            ready = time.monotonic()
            names = {s.pid: name for name, s in house.states().items() if s.pid}
            for at in times:
                time.sleep(max(0.0, ready + at - time.monotonic()))
                supervisor = frames(house.proc.pid)
                report(at, {name: (len(os.listdir(f"/proc/{pid}/task")), private_by_region(pid, supervisor, kpagecount))
                            for pid, name in names.items()})
        finally:
            house.stop()


if __name__ == "__main__":
    main()
