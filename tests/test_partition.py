"""A satellite cut off from its hub for a while, then joined again: what comes back, and what never went.

The satellite runs in a network namespace of its own, joined to the hub's by a veth pair; the cut
takes the satellite's end of the link down (root only: namespaces and links are the kernel's).
"""
from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import ROOT, free_port, wait_for, write_config
from test_curve import TIMINGS, Host, call, context_of, live, raspy

from raspy.house.board import Board, board_name
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.errors import RequestTimeout
from raspy.state.kv.client import KvPublisherClient, fetch_snapshot

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="needs root and iproute2's 'ip': a network namespace and a veth pair")

#: How long the link stays down.
CUT = 10.0
#: A key the hub sets, which the satellite's Core watches.
PROBE = "/event/hub.probe"


def ip(*args: str, namespace: str = "") -> None:
    command = ["ip", *(("netns", "exec", namespace, "ip") if namespace else ()), *args]
    subprocess.run(command, check=True, capture_output=True, timeout=10)


@dataclass
class Link:
    """A namespace for the satellite and the two ends of its link: the hub's address is ``hub``."""

    namespace: str
    inner: str
    hub: str

    def cut(self) -> None:
        ip("link", "set", self.inner, "down", namespace=self.namespace)

    def restore(self) -> None:
        ip("link", "set", self.inner, "up", namespace=self.namespace)


@pytest.fixture
def link():
    """A fresh namespace and veth pair with names and a /30 of this run's own; gone afterwards, whatever happened."""
    tag = f"{os.getpid() % 10000}{secrets.token_hex(2)}"
    namespace, outer, inner = f"rpn{tag}", f"rph{tag}", f"rps{tag}"
    base = f"10.{random.randint(240, 254)}.{random.randint(0, 255)}.{random.randrange(0, 256, 4)}"
    prefix = base.rsplit(".", 1)[0]
    hub, satellite = f"{prefix}.{int(base.rsplit('.', 1)[1]) + 1}", f"{prefix}.{int(base.rsplit('.', 1)[1]) + 2}"
    try:
        ip("netns", "add", namespace)
        ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", namespace)
        ip("addr", "add", f"{hub}/30", "dev", outer)
        ip("link", "set", outer, "up")
        ip("addr", "add", f"{satellite}/30", "dev", inner, namespace=namespace)
        ip("link", "set", inner, "up", namespace=namespace)
        ip("link", "set", "lo", "up", namespace=namespace)
        yield Link(namespace, inner, hub)
    finally:
        subprocess.run(["ip", "link", "del", outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def executives_of(host: Host) -> dict[str, tuple[int, int]]:
    """Name -> (pid, restarts) of each executive on ``host``'s board."""
    with Board.attach(board_name(host.state_dir)) as board:
        return {state.name: (state.pid, state.restarts) for state in board.snapshot()}


def reading_time(hub: Host, key: str, field: str = "timestamp") -> float:
    """The time of a device's reading (or of a host's summary, ``field="time"``) as the hub's kv
    holds it (0 when absent)."""
    context = context_of(hub.curve())
    try:
        found = fetch_snapshot(key, hub.kv["snapshot"], timeout=1.0, context=context)[1].get(key)
    except RequestTimeout:
        return 0.0
    finally:
        context.destroy(linger=0)
    return 0.0 if found is None else float(p.unpack(found.body)[field])


def set_probe(hub: Host, value: str) -> None:
    context = context_of(hub.curve())
    try:
        with KvPublisherClient(hub.kv["collector"], context=context) as publisher:
            publisher.send("", PROBE, p.pack(value))
    finally:
        context.destroy(linger=0)


def mirrored(hub: Host) -> object:
    """What the satellite's Core last saw of the probe, as its scenario's state on the hub says."""
    context = context_of(hub.curve())
    try:
        found = fetch_snapshot("/scenario/shed.mirror", hub.kv["snapshot"], timeout=1.0, context=context)[1]
    except RequestTimeout:
        return None
    finally:
        context.destroy(linger=0)
    entry = found.get("/scenario/shed.mirror")
    result = entry and p.unpack(entry.body)["last_result"]
    return result and result.get("value")


def titanic(hub: Host, service: str, *body: bytes) -> list[bytes] | None:
    """One 9/TSP exchange through the hub's broker with the hub's key; None if unanswered."""
    context = context_of(hub.curve())
    try:
        with MajorDomoClient(hub.broker, timeout=1.0, retries=2, context=context) as client:
            return client.send(service, list(body))
    except RequestTimeout:
        return None
    finally:
        context.destroy(linger=0)


def answer(hub: Host, uuid: str) -> tuple[int, object] | None:
    """``(status, result)`` of a durable request's reply once Titanic has it, else None."""
    reply = titanic(hub, "titanic.reply", uuid.encode())
    return p.parse_reply(reply[1:]) if reply and reply[0] == b"200" else None


def submit(hub: Host) -> str:
    """A durable request for the satellite's device list; its uuid once Titanic acknowledged it."""
    reply = titanic(hub, "titanic.request", b"shed.fake.devices", *p.request("list_keys"))
    assert reply is not None and reply[0] == b"200", reply
    return reply[1].decode()


@pytest.fixture
def house(children, tmp_path, link):
    """A hub on the link's address (broker, kv, Titanic, a fake device) and a satellite in the namespace."""
    hub = Host(children, tmp_path / "hub", "hub")
    hub.broker = f"tcp://{link.hub}:{free_port()}"
    hub.kv = {k: f"tcp://{link.hub}:{free_port()}" for k in ("snapshot", "publisher", "collector")}
    satellite = Host(children, tmp_path / "shed", "shed", hub)
    common = {"curve": True, **TIMINGS, "host_interval": 0.5, "host_refresh": 1.0}
    fake = {"devices": [{"name": "tank", "kind": "cyclic", "cycle": 60, "poll": 1}]}
    write_config(hub.config, {"hostname": "hub", "state_dir": str(hub.state_dir), "broker": hub.broker,
                              **{f"kv_{k}": v for k, v in hub.kv.items()}, **common},
                 {"broker": {}, "kv": {}, "fake": fake,
                  "titanic": {"retry_min": 0.2, "retry_max": 1.0, "dispatch_timeout": 2.0}})
    # The satellite's Core mirrors a key the hub sets: what its own kv copy holds shows on the hub
    (satellite.state_dir / "scenarios").mkdir(parents=True)
    (satellite.state_dir / "scenarios" / "mirror.py").write_text(f"def run(ctx):\n    return ctx.get({PROBE!r})\n")
    mirror = {"name": "mirror", "entries": {PROBE: {"op": "event"}}}
    write_config(satellite.config, {"hostname": "shed", "state_dir": str(satellite.state_dir),
                                    "broker": hub.broker, **{f"kv_{k}": v for k, v in hub.kv.items()},
                                    "hub_key": hub.public, **common},
                 {"fake": fake, "core": {"store_wait": 0.5, "scenarios": [mirror]}})
    assert hub.keys("allow", "shed", satellite.public).returncode == 0
    hub.start()
    output = open(satellite.folder / "supervisor.out", "ab")
    satellite.proc = subprocess.Popen(
        ["ip", "netns", "exec", link.namespace, sys.executable, "-m", "raspy", "start", "--config",
         str(satellite.config)], env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
        stdout=output, stderr=subprocess.STDOUT)
    output.close()
    children.procs.append(satellite.proc)
    wait_for(lambda: live(hub, "shed.fake.devices") and live(hub, "titanic.request"), timeout=30,
             what="the satellite's device server and Titanic on the hub")
    yield hub, satellite
    for host in (satellite, hub):
        host.proc.terminate()
    for host in (satellite, hub):
        host.proc.wait(timeout=15)


def test_a_satellite_cut_off_for_ten_seconds_comes_back_without_a_restart(house, link):
    hub, satellite = house
    before = {"hub": executives_of(hub), "shed": executives_of(satellite)}
    first = submit(hub)
    assert wait_for(lambda: answer(hub, first), timeout=10, what="a durable request answered")[0] == p.OK
    # set again until seen: the satellite's Core watches keys once its first snapshot is in
    wait_for(lambda: set_probe(hub, "before") or mirrored(hub) == "before", interval=0.5,
             what="the satellite's Core mirroring the hub's probe")

    link.cut()
    cut_at = time.time()
    pending = [submit(hub)]  # acknowledged as the link goes: dispatched into it, perhaps
    time.sleep(CUT / 2)  # the cut itself is the only fixed wait
    pending.append(submit(hub))  # acknowledged while the satellite is away
    set_probe(hub, "during")  # the satellite's kv copy is behind now
    time.sleep(max(0.0, CUT - (time.time() - cut_at)))
    link.restore()
    restored_at = time.time()

    wait_for(lambda: live(hub, "shed.fake.devices"), timeout=30, what="the satellite's worker back on the hub")
    listed = raspy("call", "--config", str(hub.config), "shed.fake.devices", "list_keys")
    assert listed.returncode == 0 and listed.stdout.startswith("200") and "tank" in listed.stdout, listed
    wait_for(lambda: reading_time(hub, "/device/shed.fake.tank") >= restored_at, timeout=20,
             what="a reading taken after the cut on the hub's kv")
    wait_for(lambda: mirrored(hub) == "during", timeout=40, what="the satellite's kv copy caught up")
    wait_for(lambda: reading_time(hub, "/host/shed", "time") >= restored_at, timeout=20,
             what="the satellite's summary on the hub's page again")
    for uuid in pending:  # acknowledged during the cut: answered after it
        status, keys = wait_for(lambda: answer(hub, uuid), timeout=30, what=f"the reply of request {uuid}")
        assert status == p.OK and "tank" in keys
    after = {"hub": executives_of(hub), "shed": executives_of(satellite)}
    assert after == before  # same pids, no restart on either side
    assert satellite.proc.poll() is None
