"""What an idle house costs: CPU, wake-ups, disk writes and memory of the default house, per process.

    PYTHONPATH=. python bench/idle.py [--settle 10] [--measure 60] [--sensors 0 --poll 1] [--without NAME] [--flushes 3]

Starts the default house (its executives and fake devices, on free ports, in a
state directory of its own), times start to ``/readyz`` 200, lets it settle,
then reads ``/proc`` of the supervisor and each executive at both ends of the
measured window: CPU time of all threads (``schedstat``), wake-ups (voluntary
and involuntary context switches of all threads), ``write_bytes`` of
``/proc/PID/io`` (root, or the same user), PSS, private memory (pages no other
process maps: what forking cost each one) and, as root, the house alone (every
page of its processes once: PSS counts other programs' share of libraries). ``--sensors N`` replaces the
fake devices by N sensors polled every ``--poll`` seconds and adds the kv
state file's write bytes per reading; ``--without NAME`` leaves an executive
out (``--without history``: the house the budget was set for).

History writes its files once per ``flush_interval`` (an hour), so the measured
window seldom holds a flush. Once the house has stopped, the bench measures
``--flushes`` of them apart (:func:`bench.history.flush_cost`: the house's devices'
readings at their poll intervals, synthetic times, a store on a file in the
state directory, ``write_bytes`` from clean pages to the end of each flush) and
adds their cost per hour to the house's writes. Prints a Markdown table and the
ratios to the idle budget; bench/README.md holds copies.
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.history import FlushCost, flush_cost  # noqa: E402
from bench.supervisor import Supervised, pss_kib, wait  # noqa: E402
from support import free_endpoint, free_port  # noqa: E402
from support import write_config as write_toml  # noqa: E402

from raspy.house.config import default_document  # noqa: E402

HOST = "bench"
#: The idle budget: whole house, this machine.
BUDGET = {"cpu": 0.2, "wakeups": 60.0, "writes": 100.0, "pss": 50.0, "ready": 0.36}


@dataclass
class Sample:
    cpu_ns: int
    wakeups: int
    write_bytes: int


def sample(pid: int) -> Sample:
    """All threads' CPU time and context switches, and the process's write bytes, now."""
    cpu = wakeups = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            cpu += int((task / "schedstat").read_text().split()[0])
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    wakeups += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
    written = 0
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            written = int(line.split()[1])
    return Sample(cpu, wakeups, written)


def smaps_kib(pid: int, field: str) -> int:
    """One field of ``/proc/PID/smaps_rollup`` (``Private_Dirty``...), in KiB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def house_alone_kib(pids: list[int]) -> int | None:
    """The memory of these processes counted as if nothing else ran: every physical page they map, once.

    PSS divides a page among all its mappers, other programs included: here other Pythons take
    their share of libpython, on a Pi the house pays it all. Reads the page frame numbers in
    ``/proc/PID/pagemap`` (root only; None otherwise).
    """
    frames: set[int] = set()
    for pid in pids:
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
            for line in maps:
                start, end = (int(x, 16) for x in line.split()[0].split("-"))
                if line.rstrip().endswith("[vsyscall]"):
                    continue
                pagemap.seek(start // 4096 * 8)
                data = pagemap.read((end - start) // 4096 * 8)
                for (entry,) in struct.iter_unpack("<Q", data):
                    if entry >> 63:  # present in memory
                        frames.add(entry & ((1 << 55) - 1))
    if frames == {0}:  # not root: the frame numbers read as 0
        return None
    return len(frames) * 4


def fetch_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def house_executives(sensors: int, poll: int, without: list[str]) -> dict[str, dict]:
    executives = {name: table for name, table in default_document()["executives"].items() if name not in without}
    if sensors:
        executives["fake"] = {"devices": [
            {"name": f"s{i}", "kind": "cyclic", "cycle": 600, "min": 0.0, "max": 100.0, "poll": poll}
            for i in range(sensors)]}
    return executives


def start_house(tmp: Path, executives: dict[str, dict]) -> tuple[Supervised, int]:
    """A house of ``executives`` on free ports, its state in ``tmp``; and its status page's port."""
    endpoint, port = free_endpoint(), free_port()
    executives = {**executives, "web": {**executives.get("web", {}), "port": port}}
    kv = {f"kv_{name}": free_endpoint() for name in ("snapshot", "publisher", "collector")}
    config, state_dir = tmp / "idle.toml", tmp / "idle"
    write_toml(config, {"hostname": HOST, "state_dir": str(state_dir), "broker": endpoint, **kv}, executives)
    return Supervised(config, state_dir), port


def measure(tmp: Path, settle: float, window: float, sensors: int, poll: int, without: list[str]) -> dict:
    started = time.monotonic()
    house, port = start_house(tmp, house_executives(sensors, poll, without))
    try:
        wait(lambda: fetch_ready(port), timeout=30, interval=0.01)
        ready = time.monotonic() - started
        time.sleep(settle)
        names = {house.proc.pid: "supervisor"} | {s.pid: name for name, s in house.states().items() if s.pid}
        before = {pid: sample(pid) for pid in names}
        began = time.monotonic()
        time.sleep(window)
        after = {pid: sample(pid) for pid in names}
        elapsed = time.monotonic() - began
        pss = {pid: pss_kib(pid) for pid in names}
        private = {pid: smaps_kib(pid, "Private_Dirty") + smaps_kib(pid, "Private_Clean") for pid in names}
        alone = house_alone_kib(list(names))
        alive = {name: s.pid for name, s in house.states().items()}
    finally:
        house.stop()
    restarted = [name for pid, name in names.items() if name != "supervisor" and alive.get(name) != pid]
    rows = {}
    for pid, name in names.items():
        a, b = before[pid], after[pid]
        rows[name] = {"cpu": (b.cpu_ns - a.cpu_ns) / 1e6 / elapsed, "wakeups": (b.wakeups - a.wakeups) / elapsed,
                      "writes": (b.write_bytes - a.write_bytes) / 1024 * 3600 / elapsed, "pss": pss[pid] / 1024,
                      "private": private[pid] / 1024}
    return {"rows": rows, "ready": ready, "elapsed": elapsed, "restarted": restarted,
            "alone": alone / 1024 if alone is not None else None,
            "readings": sensors * elapsed / poll if sensors else 0}


def history_flushes(tmp: Path, sensors: int, poll: int, without: list[str], flushes: int) -> FlushCost | None:
    """What the house's history writes per flush interval, measured apart (None without history)."""
    executives = house_executives(sensors, poll, without)
    if "history" not in executives:
        return None
    devices = [(f"{HOST}.fake.{device['name']}", device["poll"]) for device in executives["fake"]["devices"]]
    return flush_cost(tmp / "idle" / "history-flushes", devices, executives["history"], flushes)


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(figures: dict, flushes: FlushCost | None, args: argparse.Namespace) -> None:
    rows = figures["rows"]
    total = {key: sum(row[key] for row in rows.values()) for key in ("cpu", "wakeups", "writes", "pss", "private")}
    writes = total["writes"] + (flushes.kib_per_hour if flushes else 0.0)
    print(f"Load average before: {args.load}; after: {loadavg()}; "
          f"settle {args.settle:.0f} s, measured {figures['elapsed']:.0f} s"
          + (f"; fake: {args.sensors} sensors polled every {args.poll} s" if args.sensors else "")
          + (f"; without {', '.join(args.without)}" if args.without else ""))
    print()
    print("| process | CPU ms/s | wake-ups/s | disk writes KiB/h | PSS MiB | private MiB |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, row in rows.items():
        print(f"| {name} | {row['cpu']:.2f} | {row['wakeups']:.1f} | {row['writes']:.0f} | {row['pss']:.1f} | "
              f"{row['private']:.1f} |")
    print(f"| **house** | {total['cpu']:.2f} ({total['cpu'] / 10:.2f}% of a core) | {total['wakeups']:.0f} | "
          f"{total['writes']:.0f} | {total['pss']:.1f} | {total['private']:.1f} |")
    if flushes:
        spool = ("no flush among them" if flushes.spool_writes is None else f"write_bytes {flushes.spool_writes}")
        print(f"\nHistory's flushes, measured apart: {flushes.readings} readings per flush_interval of "
              f"{flushes.interval} s, then a flush, {len(flushes.flushes)} times, files on {flushes.filesystem}: "
              f"{', '.join(str(b) for b in flushes.flushes)} bytes written "
              f"({flushes.per_flush / flushes.readings:.1f} per reading) = **{flushes.kib_per_hour:.1f} KiB/h**. "
              f"The spool took {flushes.spooled} bytes on tmpfs in the last interval ({spool}). "
              f"The house with them: **{writes:.0f} KiB/h**.")
    if figures["alone"] is not None:
        print(f"\nThe house alone (every page its processes map, once, as on a Pi running nothing else): "
              f"{figures['alone']:.1f} MiB")
    print()
    print("| budget | measured | target | ratio |")
    print("|---|--:|--:|--:|")
    for label, value, key in (("CPU, % of one core", total["cpu"] / 10, "cpu"),
                              ("wake-ups/s, whole house", total["wakeups"], "wakeups"),
                              ("disk writes KiB/h" + (", with history's flushes" if flushes else ""), writes, "writes"),
                              ("PSS MiB, all processes", total["pss"], "pss"),
                              ("start to /readyz 200, s", figures["ready"], "ready")):
        print(f"| {label} | {value:.2f} | {BUDGET[key]} | {value / BUDGET[key]:.2f} |")
    if figures["readings"]:
        kv = rows.get("kv", {}).get("writes", 0.0) * 1024 * figures["elapsed"] / 3600
        print(f"\nkv state file: {kv / figures['readings']:.1f} bytes written per reading "
              f"({figures['readings']:.0f} readings)")
    if figures["restarted"]:
        print(f"\nrestarted during the run: {', '.join(figures['restarted'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after /readyz before measuring")
    parser.add_argument("--measure", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--sensors", type=int, default=0, help="fake sensors instead of the default devices")
    parser.add_argument("--poll", type=int, default=1, help="their poll interval, seconds")
    parser.add_argument("--without", action="append", default=[], metavar="NAME",
                        help="leave this executive of the default house out (repeatable)")
    parser.add_argument("--flushes", type=int, default=3, help="history flush intervals measured apart")
    args = parser.parse_args()
    args.load = loadavg()
    with tempfile.TemporaryDirectory(prefix="raspy-idle-") as tmp:
        figures = measure(Path(tmp), args.settle, args.measure, args.sensors, args.poll, args.without)
        flushes = history_flushes(Path(tmp), args.sensors, args.poll, args.without, args.flushes)
    report(figures, flushes, args)


if __name__ == "__main__":
    main()
