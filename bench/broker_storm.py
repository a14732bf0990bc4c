"""A storm of strangers against the broker: its resident memory during the storm and after it.

The storm: requests with 10 MB bodies for services that do not exist, requests
of 900 KB (under the default message bound) for thousands of junk names, and
tens of thousands of small requests for as many junk names, sent from four
processes. An echo worker is served by the same broker all along: the report
gives its slowest round trip during the storm and how many went unanswered.
RSS is ``VmRSS`` of ``/proc/<pid>/status``, sampled every 0.1 s; after the
storm it is read until the junk has expired (``request_expiry``, 30 s by
default) plus ``--after`` seconds.

    python -m bench.broker_storm [--root CHECKOUT] [--pure] [--executive] [--after 60]

``--root`` runs the broker of another checkout (say, before a change) with the
same storm; ``--executive`` runs it as the supervisor does (the ``broker``
executive: the core in a thread of its own) rather than ``raspy run broker``.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from bench.throughput import ROOT, free_endpoint

sys.path.insert(0, str(ROOT / "tests"))
from support import proc_status, write_config  # noqa: E402

MB = 1 << 20
#: (service names, body bytes, requests) of each stormer process, in two waves: the fat bodies
#: first (so that they find room), then the junk names
WAVES = [[("fat", 10 * MB, 40), ("big", 900 * 1024, 400)], [("junk", 512, 40_000), ("junk2", 512, 40_000)]]


def rss_mb(pid: int) -> float:
    try:
        return proc_status(pid, "VmRSS") / 1024
    except KeyError:  # a zombie has no memory left to count
        return 0.0


def storm(endpoint: str, prefix: str, size: int, count: int) -> None:
    """``count`` requests of ``size`` bytes, each for a name of its own; replies (refusals) read and dropped."""
    sock = zmq.Context().socket(zmq.DEALER)
    sock.sndhwm = 10
    sock.connect(endpoint)
    body = os.urandom(size)
    deadline = time.monotonic() + 60
    for i in range(count):
        while not sock.poll(10, zmq.POLLOUT):  # a peer the broker disconnected is reconnected by libzmq
            if time.monotonic() > deadline:
                return
        sock.send_multipart([b"", b"MDPC01", f"{prefix}.{i}".encode(), body], copy=False)
        while sock.poll(0):
            sock.recv_multipart()
    sock.close(linger=10_000)  # what is queued is sent, not thrown away


def echo_round_trip(endpoint: str) -> float | None:
    """Seconds of one echo request, or None when no reply came within 2 s."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    started = time.monotonic()
    sock.send_multipart([b"", b"MDPC01", b"echo", b"ping"])
    answered = sock.poll(2000)
    sock.close()
    return time.monotonic() - started if answered else None


class Watch:
    """The broker's peak RSS, and echo round trips every half second, while a storm blows."""

    def __init__(self, endpoint: str, pid: int) -> None:
        self.endpoint, self.pid = endpoint, pid
        self.peak = rss_mb(pid)
        self.slowest, self.unanswered, self.trips, self._next_trip = 0.0, 0, 0, 0.0

    def sample(self) -> None:
        self.peak = max(self.peak, rss_mb(self.pid))
        if time.monotonic() >= self._next_trip:
            trip = echo_round_trip(self.endpoint)
            self.trips += 1
            self.unanswered += trip is None
            self.slowest = max(self.slowest, trip or 0.0)
            self._next_trip = time.monotonic() + 0.5

    def during(self, processes: list) -> None:
        """Start ``processes`` and sample until they are done."""
        for proc in processes:
            proc.start()
        while any(proc.is_alive() for proc in processes):
            self.sample()
            time.sleep(0.1)  # the sampling period


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose broker runs (default this one)")
    parser.add_argument("--pure", action="store_true", help="the pure-Python core (RASPY_PURE=1)")
    parser.add_argument("--executive", action="store_true", help="the broker executive, not raspy run broker")
    parser.add_argument("--after", type=float, default=60.0, help="seconds to watch after the junk expired")
    args = parser.parse_args()
    endpoint = free_endpoint()
    env = dict(os.environ, PYTHONPATH=str(args.root))
    env.pop("RASPY_PURE", None)
    if args.pure:
        env["RASPY_PURE"] = "1"
    command = ["--bind", endpoint]
    if args.executive:
        state = Path(tempfile.mkdtemp(prefix="storm-"))
        command = ["--config", str(write_config(state / "raspy.toml", {"broker": endpoint, "state_dir": str(state)},
                                                {"broker": {}}))]
    broker = subprocess.Popen([sys.executable, "-m", "raspy", "run", "broker", *command],
                              env=env, stderr=subprocess.PIPE, text=True)
    worker = subprocess.Popen([sys.executable, "-m", "raspy", "run", "echo", "--broker", endpoint],
                              env=env, stderr=subprocess.DEVNULL)
    try:
        while echo_round_trip(endpoint) is None:
            pass
        idle = rss_mb(broker.pid)
        watch = Watch(endpoint, broker.pid)
        ctx = mp.get_context("spawn")
        started = time.monotonic()
        for wave in WAVES:
            watch.during([ctx.Process(target=storm, args=(endpoint, *s)) for s in wave])
        ended = time.monotonic()
        print(f"storm: {ended - started:.1f} s; broker RSS idle {idle:.1f} MB, peak {watch.peak:.1f} MB; "
              f"echo during the storm: slowest {watch.slowest * 1000:.0f} ms, "
              f"{watch.unanswered} of {watch.trips} unanswered")
        for mark in (10, 30, 45, 60, 30 + args.after):
            while time.monotonic() - ended < mark:
                watch.peak = max(watch.peak, rss_mb(broker.pid))
                time.sleep(0.1)
            print(f"  {mark:>4.0f} s after: RSS {rss_mb(broker.pid):.1f} MB")
        print(f"echo after: {echo_round_trip(endpoint) is not None}")
    finally:
        for proc in (worker, broker):
            proc.kill()
        lines = broker.communicate()[1].splitlines()
    print(f"broker log: {len(lines)} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
