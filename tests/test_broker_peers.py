"""Every 7/MDP peer is served: workers silent while busy, dead busy workers, the whole grammar.

Every test runs against both dispatch cores (``brokerhouse.core_env``).
"""
from __future__ import annotations

import signal
import threading
import time

import pytest
import zmq
from brokerhouse import (HEARTBEAT, GuideWorker, House, bare_core, core_env, house,  # noqa: F401 (fixtures)
                         raw_client, raw_worker, recv_non_heartbeat)
from support import wait_for

from raspy.mdp import protocol as p
from raspy.mdp.worker import MajorDomoWorker

SLOW = 2.0  # seconds: over three times the expiry of 3 x HEARTBEAT


def one_reply(client: zmq.Socket, within: float) -> list[bytes]:
    """The reply to the one request sent on ``client``; fails when none comes or when a second follows."""
    assert client.poll(within * 1000), f"no reply within {within}s"
    reply = client.recv_multipart()
    assert not client.poll(5 * HEARTBEAT * 1000), "a second reply reached the client"
    return reply


def test_a_guide_worker_silent_while_busy_replies_once(house):
    ctx = zmq.Context.instance()
    with GuideWorker(ctx, house.endpoint, b"slow", delay=SLOW) as worker:
        wait_for(lambda: house.idle("slow") == 1, what="guide worker idle")
        client = raw_client(ctx, house.endpoint)
        client.send_multipart([b"MDPC01", b"slow", b"once"])
        assert one_reply(client, SLOW + 3) == [b"MDPC01", b"slow", b"once"]
        assert worker.runs == [[b"once"]] and worker.connects == 1
        client.close()


def test_a_guide_worker_keeps_its_request_while_a_fast_worker_waits(house):
    ctx = zmq.Context.instance()
    with GuideWorker(ctx, house.endpoint, b"job", delay=SLOW) as slow:
        wait_for(lambda: house.idle("job") == 1, what="slow worker idle")
        with GuideWorker(ctx, house.endpoint, b"job", delay=0) as fast:
            wait_for(lambda: house.idle("job") == 2, what="fast worker idle")
            client = raw_client(ctx, house.endpoint)
            client.send_multipart([b"MDPC01", b"job", b"once"])  # to the longest idle: the slow one
            assert one_reply(client, SLOW + 3) == [b"MDPC01", b"job", b"once"]
            assert (slow.runs, fast.runs) == ([[b"once"]], [])
            client.close()


def test_a_killed_busy_raspy_worker_request_is_served_once_by_another(house):
    victim = house.start_echo("job", delay=30)
    wait_for(lambda: house.idle("job") == 1, what="worker to kill idle")
    ctx = zmq.Context.instance()
    client = raw_client(ctx, house.endpoint)
    client.send_multipart([b"MDPC01", b"job", b"important"])
    wait_for(lambda: house.workers()["job"]["idle"] == 0, what="worker busy")
    runs = []
    other = MajorDomoWorker(house.endpoint, "job", lambda frames: runs.append(frames) or frames, heartbeat=HEARTBEAT)
    runner = threading.Thread(target=other.run)
    runner.start()
    try:
        wait_for(lambda: house.idle("job") == 1, what="second worker idle")
        victim.send_signal(signal.SIGKILL)
        assert one_reply(client, 10 * HEARTBEAT) == [b"MDPC01", b"job", b"important"]
        assert runs == [[b"important"]]
    finally:
        other.shutdown()
        runner.join(timeout=5)
        client.close()


def test_only_workers_heard_while_busy_expire_while_busy(bare_core):
    """The busy rule on the core itself, with the clock moved on by hand."""
    BrokerCore, router, endpoint = bare_core
    ctx = zmq.Context.instance()
    core = BrokerCore(router, heartbeat=0.001)  # any real delay is over one heartbeat
    worker = raw_worker(ctx, endpoint, b"svc")
    client = raw_client(ctx, endpoint, zmq.DEALER)
    client.send_multipart(p.client_request(b"svc", [b"job"]))
    wait_for(lambda: core.drain() == 0 and core.requests == 1 and core.workers, what="request dispatched")
    assert recv_non_heartbeat(worker)[5:] == [b"job"]
    core.tick(time.monotonic() + 1)  # silent while busy for 1000 heartbeats, as the Guide's worker is: kept
    assert len(core.workers) == 1 and not core.services[b"svc"].requests
    worker.send_multipart([b"", b"MDPW01", b"\x04"])  # heard while busy: this one beats while busy
    wait_for(lambda: core.drain() == 0 and all(w.beats_busy for w in core.workers.values()), what="heartbeat read")
    core.tick(time.monotonic() + 1)
    assert core.workers == {} and len(core.services[b"svc"].requests) == 1  # expired, its request requeued
    for sock in (worker, client):
        sock.close(linger=0)


def test_a_cut_host_s_requeued_request_waits_for_another_host_s_worker(bare_core):
    """A revoke cuts a host with a busy and an idle worker of one service: the busy one's request is
    requeued, never handed to the idle one that is being cut too (which would drop it)."""
    BrokerCore, router, endpoint = bare_core
    ctx = zmq.Context.instance()
    core = BrokerCore(router)
    busy = raw_worker(ctx, endpoint, b"svc")
    wait_for(lambda: core.drain() == 0 and len(core.workers) == 1, what="the first worker")
    client = raw_client(ctx, endpoint, zmq.DEALER)
    client.send_multipart(p.client_request(b"svc", [b"job"]))
    wait_for(lambda: core.drain() == 0 and core.requests == 1, what="request dispatched")
    idle = raw_worker(ctx, endpoint, b"svc")
    wait_for(lambda: core.drain() == 0 and len(core.workers) == 2, what="the second worker")
    for worker in core.workers.values():
        worker.host = "shed"  # as CURVE's User-Id would say
    core.cut(frozenset({"shed"}))
    assert core.workers == {} and len(core.services[b"svc"].requests) == 1
    for sock in (busy, idle, client):
        sock.close(linger=0)


# -- the 7/MDP grammar: what it forbids is dropped, counted, and the service keeps serving --

@pytest.fixture
def patient_house(children, core_env):
    """A broker with the default heartbeat: the raw worker of these tests sends no heartbeats."""
    h = House(children, core_env)
    h.start_broker(heartbeat=2.5)
    return h


FORBIDDEN_FROM_CLIENTS = {
    "REQUEST without a body": [b"", b"MDPC01", b"svc"],
    "no service": [b"", b"MDPC01"],
    "empty service name": [b"", b"MDPC01", b"", b"body"],
    "service name not printable": [b"", b"MDPC01", b"s\x00vc", b"body"],
    "service name over 255 bytes": [b"", b"MDPC01", b"s" * 256, b"body"],
    "no empty delimiter": [b"MDPC01", b"svc", b"body"],
    "delimiter not empty": [b"x", b"MDPC01", b"svc", b"body"],
    "unknown header": [b"", b"MDPC02", b"svc", b"body"],
}

FORBIDDEN_FROM_WORKERS = {
    "READY without a service": [b"", b"MDPW01", b"\x01"],
    "READY with an empty service": [b"", b"MDPW01", b"\x01", b""],
    "READY with two frames": [b"", b"MDPW01", b"\x01", b"svc", b"more"],
    "REQUEST from a worker": [b"", b"MDPW01", b"\x02", b"someone", b"", b"body"],
    "REPLY without an envelope": [b"", b"MDPW01", b"\x03", b"body"],
    "REPLY without a body": [b"", b"MDPW01", b"\x03", b"CLIENT", b""],
    "REPLY with a delimiter that is not empty": [b"", b"MDPW01", b"\x03", b"CLIENT", b"x", b"body"],
    "HEARTBEAT with a frame": [b"", b"MDPW01", b"\x04", b"more"],
    "DISCONNECT with a frame": [b"", b"MDPW01", b"\x05", b"more"],
    "unknown command": [b"", b"MDPW01", b"\x06"],
    "command of two bytes": [b"", b"MDPW01", b"\x04\x04"],
    "no command": [b"", b"MDPW01"],
    "no empty delimiter": [b"MDPW01", b"\x04"],
}


def serve_one(house: House, worker: zmq.Socket, client: zmq.Socket, body: bytes) -> list[bytes]:
    """A request from ``client`` answered by the raw ``worker``; the REQUEST it got."""
    client.send_multipart([b"MDPC01", b"svc", body])
    got = recv_non_heartbeat(worker)
    worker.send_multipart([b"", b"MDPW01", b"\x03", got[3], b"", b"re: " + body])
    assert one_reply(client, 3) == [b"MDPC01", b"svc", b"re: " + body]
    return got


@pytest.mark.parametrize("frames", FORBIDDEN_FROM_CLIENTS.values(), ids=FORBIDDEN_FROM_CLIENTS.keys())
def test_a_message_7mdp_forbids_from_a_client_is_dropped(patient_house, frames):
    house = patient_house
    ctx = zmq.Context.instance()
    worker = raw_worker(ctx, house.endpoint, b"svc")
    wait_for(lambda: house.idle("svc") == 1, what="raw worker idle")
    dropped = house.stats()["dropped"]
    stranger = raw_client(ctx, house.endpoint, zmq.DEALER)
    stranger.send_multipart(frames)
    wait_for(lambda: house.stats()["dropped"] == dropped + 1, what="message dropped and counted")
    assert house.idle("svc") == 1 and not stranger.poll(0)
    client = raw_client(ctx, house.endpoint)
    assert serve_one(house, worker, client, b"next")[5:] == [b"next"]
    for sock in (worker, stranger, client):
        sock.close()


@pytest.mark.parametrize("frames", FORBIDDEN_FROM_WORKERS.values(), ids=FORBIDDEN_FROM_WORKERS.keys())
def test_a_message_7mdp_forbids_from_a_worker_is_dropped(patient_house, frames):
    house = patient_house
    ctx = zmq.Context.instance()
    worker = raw_worker(ctx, house.endpoint, b"svc")
    wait_for(lambda: house.idle("svc") == 1, what="raw worker idle")
    client = raw_client(ctx, house.endpoint)
    client.send_multipart([b"MDPC01", b"svc", b"job"])
    request = recv_non_heartbeat(worker)
    dropped = house.stats()["dropped"]
    worker.send_multipart([frame.replace(b"CLIENT", request[3]) for frame in frames])  # while busy
    wait_for(lambda: house.stats()["dropped"] == dropped + 1, what="message dropped and counted")
    assert house.workers()["svc"] == {"workers": 1, "idle": 0, "queued": 0}
    worker.send_multipart([b"", b"MDPW01", b"\x03", request[3], b"", b"done"])
    assert one_reply(client, 3) == [b"MDPC01", b"svc", b"done"]
    wait_for(lambda: house.idle("svc") == 1, what="worker idle again")
    stranger = raw_client(ctx, house.endpoint, zmq.DEALER)  # and from a peer the broker does not know
    stranger.send_multipart(frames)
    wait_for(lambda: house.stats()["dropped"] == dropped + 2, what="message dropped and counted")
    assert serve_one(house, worker, client, b"next")[5:] == [b"next"]
    for sock in (worker, stranger, client):
        sock.close()


def test_log_lines_name_services_plainly(children, core_env, tmp_path):
    house = House(children, core_env, log=tmp_path / "broker.log")
    house.start_broker("--request-expiry", "0.3")
    busy = house.start_echo("job", delay=30)
    wait_for(lambda: house.idle("job") == 1, what="worker idle")
    client = raw_client(zmq.Context.instance(), house.endpoint)
    client.send_multipart([b"MDPC01", b"job", b"work"])
    wait_for(lambda: house.idle("job") == 0, what="worker busy")
    busy.send_signal(signal.SIGKILL)
    ask = house.ask(b"junk.name", b"nobody serves this")
    assert ask is None
    wait_for(lambda: house.stats()["expired"] == 2, timeout=5, what="requests expired")
    log = (tmp_path / "broker.log").read_text()
    assert "ready for job" in log and "for job" in log.split("ready for job", 1)[1]
    assert "junk.name" in log
    assert "b'" not in log
    client.close()
