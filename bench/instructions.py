"""Instructions per request of the broker core, counted by callgrind: a figure load on the machine cannot blur.

Runs the in-process round trip of ``bench_dispatch`` N times under
``valgrind --tool=callgrind`` and counts only what happens inside the core's
``drain()`` (libzmq work of the broker's thread included; the I/O thread's
TCP work does not exist on inproc). The reference is the smallest useful
pure-Python ROUTER forwarder: recv_multipart, swap addresses, send_multipart.

    python -m bench.instructions [N]
"""
from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile

import zmq

from raspy.mdp import protocol as p

MARK = "partial_vectorcall"  # drain() is called through functools.partial: collect inside it only


class Forwarder:
    """ROUTER-to-ROUTER with no MDP state: one known worker, addresses swapped."""

    compiled = False

    def __init__(self, socket: zmq.Socket) -> None:
        self.socket = socket
        self.worker = None

    def drain(self) -> int:
        handled = 0
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return handled
            handled += 1
            if frames[2] == p.CLIENT:
                self.socket.send_multipart([self.worker, b"", p.WORKER, p.REQUEST, frames[0], b"", *frames[4:]])
            elif frames[3] == p.READY:
                self.worker = frames[0]
                self.socket.send_multipart([self.worker, *p.worker_message(p.HEARTBEAT)])  # as the broker does
            else:
                self.socket.send_multipart([frames[4], b"", p.CLIENT, b"echo", *frames[6:]])


def count(kind: str, n: int) -> None:
    """Inside valgrind: n round trips, drain() called through the marker."""
    from bench.bench_dispatch import CORES, Bench

    bench = Bench(Forwarder if kind == "forwarder" else CORES[kind])
    bench.drain = functools.partial(type(bench.core).drain, bench.core)
    body = [b"seq", b"x" * 64]
    for _ in range(n):
        assert bench.round_trip(body) == body
    bench.close()


def measure(kind: str, n: int) -> float:
    """Per request, with the fixed costs (set-up, first calls) cancelled: runs of n and 2n round trips."""
    return (instructions(kind, 2 * n) - instructions(kind, n)) / n


def instructions(kind: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        subprocess.run(["valgrind", "--tool=callgrind", "--collect-atstart=no", f"--toggle-collect={MARK}",
                        f"--callgrind-out-file={out}", sys.executable, "-m", "bench.instructions", "--child", kind,
                        str(n)], check=True, capture_output=True)
        text = open(out).read()
    return int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        count(argv[1], int(argv[2]))
        return 0
    from bench.bench_dispatch import CORES

    n = int(argv[0]) if argv else 2000
    figures = {kind: measure(kind, n) for kind in ["forwarder", *sorted(CORES)]}
    print(f"instructions per request in the broker's thread ({n} round trips, 64 B, inproc):")
    for kind, value in figures.items():
        print(f"  {kind:10} {value:10.0f}  ({value / figures['forwarder']:.2f}x the minimal forwarder)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
