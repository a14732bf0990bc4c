"""The broker survives strangers: every request costs milliseconds, everything a peer can fill is bounded.

Every test runs against both dispatch cores (``brokerhouse.core_env``).
"""
from __future__ import annotations

import re
import subprocess

import zmq
from brokerhouse import House, core_env, house, raw_client  # noqa: F401 (fixtures)
from support import wait_for, write_config

from raspy.house.config import ConfigError, load_config
from raspy.mdp import protocol as p

LONG_NAME = "pi." + "a" * 36 + ".devices"  # (a+)+$ backtracks 2^36 ways on it in Python's re


def dealer(house: House) -> zmq.Socket:
    return raw_client(zmq.Context.instance(), house.endpoint, zmq.DEALER)


def request(sock: zmq.Socket, service: bytes, *body: bytes) -> None:
    sock.send_multipart([b"", b"MDPC01", service, *body])


def answer(sock: zmq.Socket, timeout: float = 2.0) -> tuple[int, object] | None:
    """The RasPy ``(status, result)`` of the next reply on a DEALER client, None when none comes."""
    if not sock.poll(timeout * 1000):
        return None
    frames = sock.recv_multipart()
    assert frames[:2] == [b"", b"MDPC01"]
    return p.parse_reply(frames[3:])


def test_a_catastrophic_discovery_pattern_is_refused_in_milliseconds(house):
    house.start_echo(LONG_NAME)
    wait_for(lambda: house.live(LONG_NAME), what="worker with a long name")
    assert p.parse_reply(house.ask(b"mmi.discovery", b"(a+)+$", timeout=2.0)) == (200, [])  # seen through
    status, reason = p.parse_reply(house.ask(b"mmi.discovery", rb"(a|aa)+\.$", timeout=2.0))  # not: cut short
    assert status == 400 and "budget" in reason
    # patterns whose compiled form would be huge are refused before they are compiled
    status, reason = p.parse_reply(house.ask(b"mmi.discovery", b"(?:(?:(?:[ab]{10}){10}){10}){10}"))
    assert status == 400 and "repetition" in reason
    assert p.parse_reply(house.ask(b"mmi.discovery", b"^pi\\.a+\\.")) == (200, [LONG_NAME])
    with house.client(timeout=1.0, retries=1) as client:
        assert client.send(LONG_NAME, [b"still serving"]) == [b"still serving"]


def test_oversized_requests_are_refused(children, core_env):
    house = House(children, core_env)
    house.start_broker("--max-message", "65536", "--max-frames", "8")
    sock = dealer(house)
    request(sock, b"nobody", b"x" * 40000, b"y" * 40000)  # each frame fits, the request does not
    status, reason = answer(sock)
    assert status == 400 and "65536 bytes" in reason
    request(sock, b"nobody", *[b"z"] * 9)  # 3 + 9 frames
    status, reason = answer(sock)
    assert status == 400 and "8 frames" in reason
    # a frame over the bound is refused by libzmq before it is read: the peer is disconnected
    request(sock, b"nobody", b"w" * 70000)
    assert answer(sock, timeout=0.5) is None
    assert house.stats()["queued"] == 0
    house.start_echo()
    wait_for(lambda: house.live("echo"), what="echo worker")
    with house.client(timeout=1.0, retries=1) as client:
        assert client.send("echo", [b"v" * 60000]) == [b"v" * 60000]
        status, _ = p.parse_reply(client.send("nobody", [b"u" * 40000, b"t" * 40000]))
        assert status == 400  # RasPy's client reads the refusal
    sock.close()


def test_queued_requests_are_bounded_per_service_and_in_total(children, core_env):
    house = House(children, core_env)
    house.start_broker("--queue-requests", "3", "--total-requests", "5")
    sock = dealer(house)
    for _ in range(4):
        request(sock, b"a", b"job")
    status, reason = answer(sock)
    assert status == 500 and "3 requests" in reason
    for _ in range(3):
        request(sock, b"b", b"job")
    status, reason = answer(sock)
    assert status == 500 and "5 requests" in reason
    assert answer(sock, timeout=0.3) is None  # the others wait for a worker
    workers = house.workers()
    assert (workers["a"]["queued"], workers["b"]["queued"]) == (3, 2)
    assert house.stats()["refused"] == 2
    house.start_echo("a")
    replies = [sock.poll(3000) and sock.recv_multipart() for _ in range(3)]
    assert replies == [[b"", b"MDPC01", b"a", b"job"]] * 3
    sock.close()


def test_queued_bytes_are_bounded_per_service_and_in_total(children, core_env):
    house = House(children, core_env)
    house.start_broker("--queue-bytes", "25000", "--total-bytes", "40000")
    sock = dealer(house)
    for _ in range(3):
        request(sock, b"a", b"x" * 10000)
    status, reason = answer(sock)
    assert status == 500 and "25000 bytes" in reason
    for _ in range(2):
        request(sock, b"b", b"x" * 10000)
    status, reason = answer(sock)
    assert status == 500 and "40000 bytes" in reason
    stats = house.stats()
    assert stats["queued"] == 3 and 30000 < stats["queued_bytes"] <= 40000
    sock.close()


def test_services_without_a_worker_are_bounded(children, core_env):
    house = House(children, core_env)
    house.start_broker("--unknown-services", "10", "--request-expiry", "1")
    house.start_echo()
    wait_for(lambda: house.live("echo"), what="echo worker")
    sock = dealer(house)
    for i in range(15):
        request(sock, b"junk.%d" % i, b"job")
    refusals = [answer(sock) for _ in range(5)]
    assert all(status == 500 and "10 services" in reason for status, reason in refusals)
    assert house.stats()["unknown"] == 10
    with house.client(timeout=1.0, retries=1) as client:
        assert client.send("echo", [b"known services are served"]) == [b"known services are served"]
    wait_for(lambda: house.stats()["unknown"] == 0, timeout=5, what="junk expired")
    request(sock, b"junk.new", b"job")
    assert answer(sock, timeout=0.3) is None  # room again: it waits for a worker
    sock.close()


def test_a_storm_stays_within_the_bounds_and_the_broker_keeps_serving(children, core_env):
    """Junk names with fat bodies and frames over the message bound, faster than they expire."""
    house = House(children, core_env)
    house.start_broker("--total-bytes", "1000000", "--unknown-services", "300", "--max-message", "200000",
                       "--request-expiry", "1")
    house.start_echo()
    wait_for(lambda: house.live("echo"), what="echo worker")
    stormers = [dealer(house) for _ in range(4)]
    peak = {"queued_bytes": 0, "unknown": 0}
    with house.client(timeout=1.0, retries=1) as client:
        for i in range(3000):
            sock = stormers[i % 4]
            body = b"x" * (250000 if i % 100 == 0 else 4000)  # one in a hundred over the message bound
            request(sock, b"storm.%d" % i, body)
            while sock.poll(0):
                sock.recv_multipart()
            if i % 500 == 0:
                stats = house.stats()
                for key in peak:
                    peak[key] = max(peak[key], stats[key])
                assert client.send("echo", [b"%d" % i]) == [b"%d" % i]
    assert 0 < peak["queued_bytes"] <= 1000000 and 0 < peak["unknown"] <= 300
    wait_for(lambda: house.stats()["queued_bytes"] == 0 and house.stats()["unknown"] == 0, timeout=5,
             what="the storm expired")
    for sock in stormers:
        sock.close()
    assert house.broker.poll() is None


def test_expired_junk_is_logged_at_a_bounded_rate(children, core_env, tmp_path):
    house = House(children, core_env, log=tmp_path / "broker.log")
    house.start_broker("--request-expiry", "0.3")
    sock = dealer(house)
    for i in range(300):
        request(sock, b"junk.%d" % i, b"job")
    wait_for(lambda: house.stats()["expired"] == 300, timeout=5, what="junk expired")
    lines = (tmp_path / "broker.log").read_text().splitlines()
    assert 1 <= len([line for line in lines if "expired" in line]) <= 10
    sock.close()


def test_bounds_are_options_of_the_broker_executive(children, core_env, tmp_path):
    config = tmp_path / "raspy.toml"
    house = House(children, core_env)
    write_config(config, {"broker": house.endpoint}, {"broker": {"queue_requests": 2}})
    house.broker = children.executive(config, "broker", env=core_env)
    wait_for(lambda: house.ask(b"mmi.broker"), what="broker executive up")  # None until it answers
    sock = dealer(house)
    for _ in range(3):
        request(sock, b"later", b"job")
    status, reason = answer(sock)
    assert status == 500 and "2 requests" in reason
    sock.close()
    write_config(config, {"broker": house.endpoint}, {"broker": {"queue_requests": -1}})
    try:
        load_config(config)
    except ConfigError as exc:
        assert re.search(r", line \d+: executives\.broker\.queue_requests: -1 is not an integer >= 1", str(exc))
        assert str(config) in str(exc)
    else:
        raise AssertionError("a negative bound was accepted")
    flag = children.raspy("run", "broker", "--bind", house.endpoint, "--queue-requests", "0", stderr=subprocess.PIPE)
    assert flag.wait(timeout=30) == 2 and b"queue_requests: 0 is not an integer >= 1" in flag.stderr.read()
