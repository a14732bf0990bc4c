"""A hub's broker killed, a satellite revoked, a satellite allowed late: who reconnects, who is cut, who is kept.

Real supervisors on this machine (a hub and satellites over CURVE, as in ``test_curve``), checked
with what a person would look at: services answering through the hub, kv keys, executives' pids.
"""
from __future__ import annotations

import os
import signal

import pytest
import zmq
from support import wait_for
from test_curve import Host, call, context_of, hub, kv_keys, live, raspy, satellite  # noqa: F401 (fixtures)
from test_partition import executives_of

from raspy.mdp import protocol as p
from raspy.errors import RequestTimeout
from raspy.state.kv.client import KvPublisherClient, KvSubscriberClient
from raspy.state.kv.message import icanhaz


def test_satellites_answer_again_after_the_hubs_broker_is_killed(hub, satellite):
    hub.keys("allow", "shed", satellite.public)
    satellite.start()
    wait_for(lambda: live(hub, "shed.fake.devices"), timeout=15, what="the satellite's device server")
    before = executives_of(satellite)
    broker = executives_of(hub)["broker"][0]
    os.kill(broker, signal.SIGKILL)
    wait_for(lambda: executives_of(hub)["broker"][0] not in (0, broker), timeout=10, what="a new broker")
    wait_for(lambda: live(hub, "shed.fake.devices") and live(hub, "hub.fake.devices"), timeout=15,
             what="the satellite's and the hub's workers back on the new broker")
    listed = raspy("call", "--config", str(hub.config), "shed.fake.devices", "list_keys")
    assert listed.returncode == 0 and listed.stdout.startswith("200") and "tank" in listed.stdout, listed
    assert executives_of(satellite) == before  # the satellite restarted nothing


@pytest.mark.parametrize("hub", ["compiled", "pure"], indirect=True)
def test_a_revoke_cuts_the_revoked_host_alone(children, tmp_path, hub, satellite):
    barn = Host(children, tmp_path / "barn", "barn", hub)
    for host in (satellite, barn):
        hub.keys("allow", host.name, host.public)
        host.start()
    wait_for(lambda: live(hub, "shed.fake.devices") and live(hub, "barn.fake.devices"), timeout=15,
             what="both satellites' device servers")
    shed = satellite.curve()
    context = context_of(shed)
    try:
        asking = context.socket(zmq.DEALER)  # connections open before the revoke: snapshots, updates
        asking.connect(hub.kv["snapshot"])
        asking.send_multipart(icanhaz("/device/shed."))
        assert asking.poll(5000) and asking.recv_multipart()
        with KvPublisherClient(hub.kv["collector"], context=context) as held:
            held.send("/device/", "shed.fake.probe", b"\x01")
            wait_for(lambda: "/device/shed.fake.probe" in kv_keys(hub, "/device/"), what="the probe in kv")
            before = {"hub": executives_of(hub), "barn": executives_of(barn)}

            revoked = hub.keys("revoke", "shed")
            assert revoked.returncode == 0, revoked.stderr
            wait_for(lambda: not live(hub, "shed.fake.devices"), timeout=10, what="the revoked service gone")
            wait_for(lambda: "revoked" in hub.log("kv"), timeout=10, what="kv cutting the revoked host")
            held.send("/device/", "shed.fake.probe2", b"\x01")
            wait_for(lambda: "shed.fake.probe2" in hub.log("kv"), timeout=10, what="the refusal in kv's log")
        assert "/device/shed.fake.probe2" not in kv_keys(hub, "/device/")
        while asking.poll(0):  # what came before the revoke
            asking.recv_multipart()
        asking.send_multipart(icanhaz("/device/shed."))
        wait_for(lambda: "snapshot: host shed was revoked" in hub.log("kv"), what="the snapshot request refused")
        assert not asking.poll(0)
    finally:
        context.destroy(linger=0)
    assert call(hub, "shed.fake.devices", "list_keys", curve=shed) is None  # a new connection: refused
    for service in ("barn.fake.devices", "hub.fake.devices"):
        status, keys = call(hub, service, "list_keys")
        assert status == p.OK and "tank" in keys
    assert {"hub": executives_of(hub), "barn": executives_of(barn)} == before  # nothing restarted
    for host in (hub, barn):  # and their workers kept their connections
        assert "reconnecting" not in host.log("fake"), host.log("fake")


def sent(publisher: KvPublisherClient, name: str) -> bool:
    try:
        publisher.send("/device/", name, b"\x01")
    except RequestTimeout:
        return False
    return True


def test_kv_clients_started_before_their_key_is_allowed_connect_once_it_is(hub, satellite):
    context = context_of(satellite.curve())
    subscriber = KvSubscriberClient("/device/", hub.kv["snapshot"], hub.kv["publisher"], context=context,
                                    snapshot_timeout=0.5, server_timeout=0.5).start()
    try:
        with KvPublisherClient(hub.kv["collector"], timeout=0.5, context=context) as publisher:
            with pytest.raises(RequestTimeout):
                publisher.send("/device/", "shed.fake.probe", b"\x01")
            wait_for(lambda: "is not on" in hub.log("kv"), what="kv refusing the key")
            assert not subscriber.wait_synced(0.5)

            assert hub.keys("allow", "shed", satellite.public).returncode == 0
            assert subscriber.wait_synced(15), "the subscriber never connected"
            wait_for(lambda: subscriber.get("/device/hub.fake.tank"), what="the hub's device in the subscriber's copy")
            # the connection opened after the refused send was refused too: the next fresh one gets in
            wait_for(lambda: sent(publisher, "shed.fake.probe"), timeout=5, what="a send taken by kv")
            wait_for(lambda: subscriber.get("/device/shed.fake.probe") == b"\x01", what="the publisher's update")
    finally:
        subscriber.stop()
        context.destroy(linger=0)


def test_a_satellite_runs_core_for_its_own_jobs_under_its_own_name(hub, satellite):
    hub.keys("allow", "shed", satellite.public)
    satellite.write()
    (satellite.state_dir / "scenarios").mkdir()
    (satellite.state_dir / "scenarios" / "cold.py").write_text("def run(ctx):\n    return 'checked'\n")
    text = satellite.config.read_text()
    satellite.config.write_text(text + '\n[executives.core]\nstore_wait = 0.5\n'
                                       'jobs = [{id = "feed", interval = 1, action = "event", data = "fish"}]\n'
                                       '[[executives.core.scenarios]]\nname = "cold"\nstartup = true\n'
                                       'entries = { "/device/shed.fake.tank" = { op = "<", value = -100 } }\n')
    satellite.start()
    wait_for(lambda: "/event/shed.cron/feed" in kv_keys(hub, "/event/"), timeout=15,
             what="the satellite's cron event on the hub")
    wait_for(lambda: "/scenario/shed.cold" in kv_keys(hub, "/scenario/"), what="its scenario's state on the hub")
    assert "may not set" not in hub.log("kv")
    status, jobs = call(hub, "shed.core.cron", "list")
    assert status == p.OK and "feed" in str(jobs)

