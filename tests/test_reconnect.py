"""A hub's broker killed, a satellite revoked, a satellite allowed late: who reconnects, who is cut, who is kept.

Real supervisors on this machine (a hub and satellites over CURVE, as in ``test_curve``), checked
with what a person would look at: services answering through the hub, kv keys, executives' pids.
"""
from __future__ import annotations

import os
import signal

from support import wait_for
from test_curve import Host, hub, kv_keys, live, raspy, satellite  # noqa: F401 (fixtures)
from test_partition import executives_of


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
