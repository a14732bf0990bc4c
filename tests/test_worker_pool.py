"""MajorDomoWorkerPool: several connections for one service, served from one thread in batches."""
from __future__ import annotations

import signal
import threading
import time

import pytest
from support import ask, broker_up, free_endpoint, wait_for

from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.mdp.worker import MajorDomoWorkerPool

HEARTBEAT = 0.2  # seconds, broker and pool alike


class Broker:
    def __init__(self, children) -> None:
        self.children = children
        self.endpoint = free_endpoint()
        self.proc = None

    def start(self) -> None:
        self.proc = self.children.raspy("run", "broker", "--bind", self.endpoint, "--heartbeat", str(HEARTBEAT))
        wait_for(lambda: broker_up(self.endpoint), what="broker up")

    def workers(self, service: str) -> dict:
        return p.parse_reply(ask(self.endpoint, b"mmi.workers"))[1].get(service, {})


@pytest.fixture
def broker(children):
    b = Broker(children)
    b.start()
    return b


class Serving:
    """A pool running in a thread for the length of a ``with`` block."""

    def __init__(self, pool: MajorDomoWorkerPool) -> None:
        self.pool = pool
        self.thread = threading.Thread(target=pool.run)

    def __enter__(self) -> MajorDomoWorkerPool:
        self.thread.start()
        return self.pool

    def __exit__(self, *exc) -> None:
        self.pool.shutdown()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


def test_requests_that_arrive_together_reach_the_handler_together(broker):
    batches: list[int] = []
    gate = threading.Event()

    def handler(requests):
        batches.append(len(requests))
        gate.wait(10)  # the first batch holds the thread until every connection has a request
        return [[b"%d" % len(requests), *request] for request in requests]

    pool = MajorDomoWorkerPool(broker.endpoint, "batched", handler, size=8, heartbeat=HEARTBEAT)
    with Serving(pool):
        wait_for(lambda: broker.workers("batched").get("workers") == 8, what="8 connections ready")
        bodies = [[b"request %d" % i] for i in range(8)]
        replies = {}

        def send():
            with MajorDomoClient(broker.endpoint, timeout=10, retries=1) as client:
                replies["all"] = client.send_many("batched", bodies, window=8)

        sender = threading.Thread(target=send)
        sender.start()
        wait_for(lambda: broker.workers("batched").get("idle") == 0, what="every connection holding a request")
        gate.set()
        sender.join(timeout=10)
    assert [reply[1:] for reply in replies["all"]] == bodies  # each reply answers its own request
    assert sum(batches) == 8
    assert len(batches) < 8 and max(batches) >= 4


def test_a_failing_batch_answers_500_to_each_and_the_pool_goes_on(broker):
    def handler(requests):
        if [b"boom"] in requests:
            raise RuntimeError("disk on fire")
        return requests

    with Serving(MajorDomoWorkerPool(broker.endpoint, "fragile", handler, size=2, heartbeat=HEARTBEAT)):
        with MajorDomoClient(broker.endpoint, timeout=5, retries=1) as client:
            status, reason = p.parse_reply(client.send("fragile", [b"boom"]))
            assert status == 500 and "disk on fire" in reason
            assert client.send("fragile", [b"fine"]) == [b"fine"]


@pytest.mark.slow
def test_a_batch_slower_than_the_broker_liveness_keeps_its_connections(broker):
    calls = []

    def slow(requests):
        calls.append(requests)
        time.sleep(10 * HEARTBEAT)  # a stalled fsync: three times what the broker waits for a heartbeat
        return requests

    pool = MajorDomoWorkerPool(broker.endpoint, "slow", slow, size=2, heartbeat=HEARTBEAT)
    with Serving(pool):
        with MajorDomoClient(broker.endpoint, timeout=10, retries=1) as client:
            assert client.send("slow", [b"once"]) == [b"once"]
        assert calls == [[[b"once"]]]  # not requeued to the other connection
        assert pool.reconnects == 0


def test_the_pool_comes_back_after_a_broker_restart(broker):
    pool = MajorDomoWorkerPool(broker.endpoint, "steady", lambda requests: requests, size=3, heartbeat=HEARTBEAT)
    with Serving(pool):
        wait_for(lambda: broker.workers("steady").get("workers") == 3, what="3 connections ready")
        broker.proc.send_signal(signal.SIGKILL)
        broker.proc.wait(timeout=5)
        broker.start()
        with MajorDomoClient(broker.endpoint, timeout=1.0, retries=10) as client:
            assert client.send("steady", [b"again"]) == [b"again"]
        wait_for(lambda: broker.workers("steady").get("workers") == 3, what="all 3 connections back")
        assert pool.reconnects >= 1
