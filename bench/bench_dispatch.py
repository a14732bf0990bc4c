"""The dispatch core alone, compiled against the twin: one request through the broker and back.

Client, worker and broker socket live in this thread on ``inproc://``, and the
core is driven with ``drain()``, so the figure is the core's work per request
(receive, classify, look up, forward; both directions) without TCP or
scheduling noise.

    pytest bench/bench_dispatch.py --benchmark-only
"""
from __future__ import annotations

import itertools

import pytest
import zmq

from raspy.mdp import protocol as p
from raspy.mdp._fast import pure

CORES = {"pure": pure.BrokerCore}
try:
    from raspy.mdp._fast import core
    CORES["compiled"] = core.BrokerCore
except ImportError:
    pass

_ids = itertools.count()


class Bench:
    """A core on an inproc ROUTER with one DEALER client and one ready DEALER worker."""

    def __init__(self, core_class: type) -> None:
        self.ctx = zmq.Context()
        endpoint = f"inproc://bench-dispatch-{next(_ids)}"
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.bind(endpoint)
        self.core = core_class(self.router)
        self.drain = self.core.drain
        self.client = self.ctx.socket(zmq.DEALER)
        self.client.connect(endpoint)
        self.worker = self.ctx.socket(zmq.DEALER)
        self.worker.connect(endpoint)
        self.worker.send_multipart(p.worker_message(p.READY, b"echo"))
        while self.core.drain() == 0:
            pass
        assert p.parse_worker(self.worker.recv_multipart())[0] == p.HEARTBEAT  # the broker's welcome

    def round_trip(self, body: list[bytes]) -> list[bytes]:
        self.client.send_multipart(p.client_request(b"echo", body), copy=False)
        self.drain()
        frames = self.worker.recv_multipart(copy=False)
        frames[2] = p.REPLY
        self.worker.send_multipart(frames, copy=False)
        self.drain()
        return self.client.recv_multipart()[3:]

    def close(self) -> None:
        for sock in (self.client, self.worker, self.router):
            sock.close(linger=0)
        self.ctx.term()


@pytest.mark.parametrize("size", [64, 65536], ids=["64B", "64KiB"])
@pytest.mark.parametrize("name", sorted(CORES))
def test_round_trip(benchmark, name, size):
    benchmark.group = f"dispatch {size} B"
    bench = Bench(CORES[name])
    body = [b"seq", b"x" * size]
    try:
        assert benchmark(bench.round_trip, body) == body
    finally:
        bench.close()
