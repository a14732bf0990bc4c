"""The board's hot path next to its references, measured in the same run.

Run: ``PYTHONPATH=. python -m pytest bench/bench_board.py --benchmark-only``.
Within a group, pytest-benchmark prints each figure's ratio to the fastest in
parentheses: the ratio is the result, not the absolute time.

* ``update``: ``slot.count(requests=1, bytes_in=64)`` against a plain dict increment.
* ``read``: a full slot snapshot against a ZeroMQ REQ/REP round-trip over ``ipc://``
  to a process that reads the same counter (what an MMI/statistics request costs at best).
"""
from __future__ import annotations

import multiprocessing
import uuid

import pytest
import zmq

from raspy.house.board import Board
from raspy.mdp.protocol import pack, unpack


@pytest.fixture(scope="module")
def board():
    board = Board.create(f"raspy-bench-{uuid.uuid4().hex[:12]}", 8, ["broker", "kv"])
    yield board
    board.close()
    board.unlink()


@pytest.mark.benchmark(group="update")
def test_slot_count(benchmark, board):
    slot = board.slot("broker")
    benchmark(slot.count, requests=1, bytes_in=64)
    assert slot.read().bytes_in == 64 * slot.read().requests


@pytest.mark.benchmark(group="update")
def test_dict_increment_reference(benchmark):
    counters = {"requests": 0, "bytes_in": 0}

    def count() -> None:
        counters["requests"] += 1
        counters["bytes_in"] += 64

    benchmark(count)
    assert counters["bytes_in"] == 64 * counters["requests"]


@pytest.mark.benchmark(group="read")
def test_slot_read(benchmark, board):
    board.slot("kv").count(requests=5)
    state = benchmark(board.slot("kv").read)
    assert state.requests == 5


def _answer_counter(endpoint: str, board_name: str) -> None:
    """A REP server that answers every request with the kv slot's request counter."""
    board = Board.attach(board_name)
    slot = board.slot("kv")
    with zmq.Context() as context, context.socket(zmq.REP) as socket:
        socket.bind(endpoint)
        while socket.recv() != b"stop":
            socket.send(pack(slot.read().requests))
        socket.send(b"")
    board.close()


@pytest.mark.benchmark(group="read")
def test_zmq_round_trip_reference(benchmark, board, tmp_path_factory):
    endpoint = f"ipc://{tmp_path_factory.mktemp('ipc')}/counter.ipc"
    server = multiprocessing.get_context("fork").Process(target=_answer_counter, args=(endpoint, board.name))
    server.start()
    with zmq.Context() as context, context.socket(zmq.REQ) as socket:
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVTIMEO, 5000)
        socket.connect(endpoint)

        def ask() -> int:
            socket.send(b"kv.requests")
            return unpack(socket.recv())

        ask()  # connect before timing
        try:
            assert benchmark(ask) == board.slot("kv").read().requests
        finally:
            socket.send(b"stop")
            socket.recv()
            server.join(timeout=5)
    assert server.exitcode == 0
