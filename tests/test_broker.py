"""The broker end to end: broker, workers and clients in separate processes.

Every test runs against both dispatch cores (``brokerhouse.core_env``).
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
import zmq
from brokerhouse import (House, bare_core, core_env, house, raw_client, raw_worker,  # noqa: F401 (fixtures)
                         recv_non_heartbeat)
from support import broker_up, free_endpoint, wait_for

from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.mdp.worker import MajorDomoWorker


def test_echo_round_trip(house):
    house.start_echo()
    wait_for(lambda: house.live("echo"), what="echo worker")
    with house.client() as client:
        assert client.send("echo", [b"hello", b"world"]) == [b"hello", b"world"]
        bodies = [[b"%d" % i, os.urandom(64)] for i in range(300)]
        assert client.send_many("echo", bodies, window=16) == bodies


def test_mmi_answers(house):
    house.start_echo("pi.fake.devices")
    house.start_echo("pi.core.cron")
    wait_for(lambda: house.live("pi.fake.devices") and house.live("pi.core.cron"), what="workers")
    assert house.ask(b"mmi.service", b"pi.fake.devices") == [b"200"]
    assert house.ask(b"mmi.service", b"pi.nothing") == [b"404"]
    assert p.parse_reply(house.ask(b"mmi.discovery", rb"\.fake\.")) == (200, ["pi.fake.devices"])
    assert p.parse_reply(house.ask(b"mmi.discovery", b"^pi\\.")) == (200, ["pi.core.cron", "pi.fake.devices"])
    assert p.parse_reply(house.ask(b"mmi.discovery", b"(unclosed"))[0] == 400
    assert p.parse_reply(house.ask(b"mmi.services")) == (200, ["pi.core.cron", "pi.fake.devices"])
    assert house.ask(b"mmi.nosuch") == [b"501"]


def test_request_queued_before_worker_is_served_when_it_comes(house):
    result = {}

    def ask():
        with house.client(timeout=10.0, retries=1) as client:
            result["reply"] = client.send("late", [b"waited"])

    asker = threading.Thread(target=ask)
    asker.start()
    wait_for(lambda: house.workers().get("late", {}).get("queued") == 1, what="request queued")
    house.start_echo("late")
    asker.join(timeout=15)
    assert result["reply"] == [b"waited"]


def test_killed_idle_worker_is_forgotten_after_expiry(house):
    worker = house.start_echo()
    wait_for(lambda: house.live("echo"), what="echo worker")
    worker.send_signal(signal.SIGKILL)
    # liveness 3 x 0.2 s: gone within a second or two, not at once
    wait_for(lambda: not house.live("echo"), timeout=5, what="mmi.service says 404")


def test_killed_busy_worker_request_is_served_by_another(house):
    slow = house.start_echo("job", delay=30)
    wait_for(lambda: house.live("job"), what="slow worker")
    result = {}

    def ask():
        with house.client(timeout=15.0, retries=1) as client:  # one attempt: the broker must requeue
            result["reply"] = client.send("job", [b"important"])

    asker = threading.Thread(target=ask)
    asker.start()
    wait_for(lambda: house.workers()["job"]["idle"] == 0, what="slow worker busy")
    house.start_echo("job")
    wait_for(lambda: house.workers()["job"]["idle"] == 1, what="second worker idle")
    slow.send_signal(signal.SIGKILL)
    asker.join(timeout=20)
    assert result["reply"] == [b"important"]


def test_request_skips_a_killed_idle_worker_at_once(children, core_env):
    """With heartbeats of 2 s the dead worker would be listed for 6 s; the broker must not wait for that."""
    house = House(children, core_env)
    house.broker = house.children.raspy("run", "broker", "--bind", house.endpoint, "--heartbeat", "2", env=core_env)
    wait_for(lambda: broker_up(house.endpoint), what="broker up")
    first = house.children.raspy("run", "echo", "--broker", house.endpoint, "--heartbeat", "2", env=core_env)
    wait_for(lambda: house.workers().get("echo", {}).get("idle") == 1, what="first worker")
    house.children.raspy("run", "echo", "--broker", house.endpoint, "--heartbeat", "2", env=core_env)
    wait_for(lambda: house.workers()["echo"]["idle"] == 2, what="second worker")
    first.send_signal(signal.SIGKILL)  # the longest idle: it would get the next request
    first.wait(timeout=5)
    with house.client(timeout=1.5, retries=1) as client:
        assert client.send("echo", [b"to the live one"]) == [b"to the live one"]
    assert house.workers()["echo"]["workers"] == 1


def test_workers_reconnect_and_clients_retry_after_broker_restart(house):
    house.start_echo()
    wait_for(lambda: house.live("echo"), what="echo worker")
    house.broker.send_signal(signal.SIGKILL)
    house.broker.wait(timeout=5)
    house.start_broker()
    with house.client(timeout=1.0, retries=10) as client:
        assert client.send("echo", [b"again"]) == [b"again"]


@pytest.mark.slow
def test_long_handler_under_short_heartbeats_is_served_once(children, core_env):
    house = House(children, core_env)
    house.children.raspy("run", "broker", "--bind", house.endpoint, "--heartbeat", "1", env=core_env)
    calls = []

    def slow(frames):
        calls.append(frames)
        time.sleep(5)
        return frames

    worker = MajorDomoWorker(house.endpoint, "slow", slow, heartbeat=1.0)
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        with MajorDomoClient(house.endpoint, timeout=10, retries=1) as client:
            assert client.send("slow", [b"once"]) == [b"once"]
        assert calls == [[b"once"]]
        assert worker.reconnects == 0
    finally:
        worker.shutdown()
        runner.join(timeout=5)
    assert not runner.is_alive()


def test_a_new_worker_knows_it_is_connected_without_waiting_a_heartbeat(children, core_env):
    """``<svc>.mmi status`` reads ``connected``: it must not say 500 for a heartbeat after start."""
    house = House(children, core_env)
    house.children.raspy("run", "broker", "--bind", house.endpoint, "--heartbeat", "5", env=core_env)
    wait_for(lambda: broker_up(house.endpoint), what="broker up")
    worker = MajorDomoWorker(house.endpoint, "fresh", lambda frames: frames, heartbeat=5.0)
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        assert worker.connected.wait(1.0), "not connected 1 s after READY (heartbeats are 5 s apart)"
    finally:
        worker.shutdown()
        runner.join(timeout=5)


def test_expired_requests_are_dropped_and_junk_services_forgotten(children, core_env):
    house = House(children, core_env)
    house.start_broker("--request-expiry", "0.5")
    ctx = zmq.Context.instance()
    junk = ctx.socket(zmq.DEALER)
    junk.connect(house.endpoint)
    for i in range(1000):  # as many names as the broker holds by default
        junk.send_multipart(p.client_request(b"junk.%d" % i, [b"x"]))
    wait_for(lambda: len(house.workers()) >= 1000, what="junk queued")
    wait_for(lambda: house.workers() == {}, timeout=5, what="junk forgotten")
    house.start_echo("junk.1")
    wait_for(lambda: house.live("junk.1"), what="worker for a junk name")
    assert not junk.poll(300), "an expired request was still delivered"
    junk.close(linger=0)


def test_sigterm_stops_broker_within_a_second(house):
    started = time.monotonic()
    house.broker.send_signal(signal.SIGTERM)
    assert house.broker.wait(timeout=2) == 0
    assert time.monotonic() - started < 1.0


# -- wire conformance, with sockets written from the RFC (not RasPy's classes) --

def test_raw_req_client_and_raw_dealer_worker(house):
    ctx = zmq.Context.instance()
    worker = raw_worker(ctx, house.endpoint, b"raw")
    wait_for(lambda: house.live("raw"), what="raw worker")
    client = raw_client(ctx, house.endpoint)
    client.send_multipart([b"MDPC01", b"raw", b"ping", b"42"])
    request = recv_non_heartbeat(worker)
    assert request[:3] == [b"", b"MDPW01", b"\x02"] and request[4:] == [b"", b"ping", b"42"]
    address = request[3]
    worker.send_multipart([b"", b"MDPW01", b"\x03", address, b"", b"pong", b"42"])
    assert client.poll(3000)
    assert client.recv_multipart() == [b"MDPC01", b"raw", b"pong", b"42"]
    # heartbeats come from the broker, and a worker's heartbeat is accepted silently
    worker.send_multipart([b"", b"MDPW01", b"\x04"])
    assert worker.poll(3000) and worker.recv_multipart() == [b"", b"MDPW01", b"\x04"]
    worker.close()
    client.close()


@pytest.mark.parametrize("first, second", [
    ([b"", b"MDPW01", b"\x01", b"svc"], [b"", b"MDPW01", b"\x01", b"svc"]),  # second READY
    ([b"", b"MDPW01", b"\x01", b"mmi.service"], None),                       # READY for mmi.*
    ([b"", b"MDPW01", b"\x04"], None),                                       # HEARTBEAT, unknown worker
    ([b"", b"MDPW01", b"\x03", b"someone", b"", b"spoof"], None),            # REPLY, unknown worker
])
def test_broker_disconnects_misbehaving_workers(house, first, second):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(house.endpoint)
    sock.send_multipart(first)
    if second:
        sock.send_multipart(second)
    assert recv_non_heartbeat(sock) == [b"", b"MDPW01", b"\x05"]
    sock.close()


def test_reply_for_a_client_the_worker_does_not_serve_is_dropped(house):
    ctx = zmq.Context.instance()
    worker = raw_worker(ctx, house.endpoint, b"victim")
    wait_for(lambda: house.live("victim"), what="raw worker")
    client = raw_client(ctx, house.endpoint)
    client.send_multipart([b"MDPC01", b"victim", b"q"])
    address = recv_non_heartbeat(worker)[3]
    worker.send_multipart([b"", b"MDPW01", b"\x03", b"\x00forged", b"", b"spoof"])
    worker.send_multipart([b"", b"MDPW01", b"\x03", address, b"", b"real"])
    assert client.poll(3000)
    assert client.recv_multipart() == [b"MDPC01", b"victim", b"real"]
    worker.close()
    client.close()


def test_malformed_traffic_never_stops_the_broker(house):
    house.start_echo()
    wait_for(lambda: house.live("echo"), what="echo worker")
    ctx = zmq.Context.instance()
    rng = random.Random(7)
    handmade = [
        [b""], [b"", b""], [b"MDPC01"], [b"", b"MDPC01"], [b"", b"MDPC01", b""], [b"", b"MDPW01"],
        [b"", b"MDPW01", b""], [b"", b"MDPW01", b"\x00"], [b"", b"MDPW01", b"\x02", b"x", b"", b"y"],
        [b"", b"MDPW01", b"\x01"], [b"", b"MDPW01", b"\x01", b"a", b"b"], [b"", b"MDPW01", b"\xff" * 100],
        [b"", b"MDPW01", b"\x03"], [b"", b"MDPW01", b"\x05", b"extra"], [b"", b"MDPX99", b"svc"],
        [b"\x00" * 1000], [b"", b"MDPC01", b"mmi.service"], [b"", b"MDPC01", b"mmi.discovery", b"\xff\xfe"],
    ]
    socks = [ctx.socket(zmq.DEALER) for _ in range(8)]
    for sock in socks:
        sock.linger = 0
        sock.connect(house.endpoint)
    for i in range(600):
        if i % 3 == 0:
            frames = rng.choice(handmade)
        else:
            frames = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 12))) for _ in range(rng.randrange(1, 7))]
            if rng.random() < 0.5:
                frames[:1] = [b"", rng.choice([b"MDPC01", b"MDPW01"])]
        rng.choice(socks).send_multipart(frames)
    for sock in socks:
        sock.close()
    with house.client(timeout=2.0) as client:
        assert client.send("echo", [b"still here"]) == [b"still here"]
    assert house.broker.poll() is None


def test_cli_call_and_mmi(house, children):
    import subprocess
    import sys

    from support import ROOT
    house.start_echo("pi.echo.devices")
    wait_for(lambda: house.live("pi.echo.devices"), what="echo worker")
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def raspy(*args):
        return subprocess.run([sys.executable, "-m", "raspy", *args, "--broker", house.endpoint, "--timeout", "1"],
                              capture_output=True, text=True, env=env, timeout=30)

    listed = raspy("mmi")
    assert listed.returncode == 0 and "pi.echo.devices" in listed.stdout.split()
    # the echo worker sends the request back, which is not a RasPy reply: non-zero exit
    assert raspy("call", "pi.echo.devices", "get", '["x"]').returncode != 0
    bad = raspy("call", "pi.echo.devices", "get", "{bad json")
    assert bad.returncode == 2 and "the argument is not JSON" in bad.stderr and bad.stdout == ""
    missing = raspy("call", "pi.none.devices", "get", '"x"', "--retries", "3")  # told at once: no retry waits
    assert missing.returncode == 4 and "no such service 'pi.none.devices'" in missing.stderr
    alone = subprocess.run([sys.executable, "-m", "raspy", "call", "pi.echo.devices", "get", "--broker",
                            free_endpoint(), "--timeout", "0.3", "--retries", "1"],
                           capture_output=True, text=True, env=env, timeout=30)
    assert alone.returncode == 3 and "no reply from the broker" in alone.stderr


def test_purge_survives_workers_dropped_while_it_runs(bare_core):
    """An expired busy worker's request is requeued during the purge and dispatched to a worker
    that is gone too: the purge must not then remove that worker a second time."""
    BrokerCore, router, endpoint = bare_core
    ctx = zmq.Context.instance()
    core = BrokerCore(router, heartbeat=0.05)
    peers = []
    for _ in range(3):
        worker = raw_worker(ctx, endpoint, b"svc")
        peers.append(worker)
    client = ctx.socket(zmq.DEALER)
    client.connect(endpoint)
    client.send_multipart(p.client_request(b"svc", [b"job"]))
    wait_for(lambda: core.drain() == 0 and len(core.workers) == 3 and core.requests == 1, what="3 workers, 1 request")
    for worker in peers:
        worker.close(linger=0)
    wait_for(lambda: not router.poll(0) and all(
        not core_send_ok(router, identity) for identity in list(core.workers)), what="the workers' connections closed")
    core.tick(time.monotonic() + 10)  # every worker expired: the busy one's request is requeued mid-purge
    assert core.workers == {}
    client.close(linger=0)


def core_send_ok(router: zmq.Socket, identity: bytes) -> bool:
    """Whether ROUTER can still route to ``identity`` (a heartbeat is harmless to a live worker)."""
    try:
        router.send_multipart([identity, b"", b"MDPW01", b"\x04"], zmq.NOBLOCK)
    except zmq.ZMQError:
        return False
    return True
