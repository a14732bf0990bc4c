"""RasPy service framing (protocol.py) against the msgpack C packer alone.

The difference between each pair is all a compiled framing helper could
save: if it is small next to a socket round trip (tens of microseconds), a
Cython ``request``/``reply`` is not worth its upkeep.

    pytest bench/bench_framing.py --benchmark-only
"""
from __future__ import annotations

import msgpack
import pytest

from raspy.mdp import protocol as p

ARGS = {"device": "kitchen.lamp", "state": True, "level": 70, "tags": ["a", "b"]}
PACKED = p.pack(ARGS)


@pytest.mark.benchmark(group="request")
def test_protocol_request(benchmark):
    assert benchmark(p.request, "set", ARGS) == [b"set", PACKED]


@pytest.mark.benchmark(group="request")
def test_msgpack_alone_for_request(benchmark):
    packer = msgpack.Packer(use_bin_type=True)
    assert benchmark(lambda: [b"set", packer.pack(ARGS)]) == [b"set", PACKED]


@pytest.mark.benchmark(group="reply")
def test_protocol_reply(benchmark):
    assert benchmark(p.reply, p.OK, ARGS) == [b"200", PACKED]


@pytest.mark.benchmark(group="reply")
def test_msgpack_alone_for_reply(benchmark):
    packer = msgpack.Packer(use_bin_type=True)
    assert benchmark(lambda: [b"200", packer.pack(ARGS)]) == [b"200", PACKED]


@pytest.mark.benchmark(group="parse")
def test_protocol_parse_reply(benchmark):
    assert benchmark(p.parse_reply, [b"200", PACKED]) == (200, ARGS)


@pytest.mark.benchmark(group="parse")
def test_msgpack_alone_for_parse_reply(benchmark):
    frames = [b"200", PACKED]
    assert benchmark(lambda: (int(frames[0]), msgpack.unpackb(frames[1]))) == (200, ARGS)
