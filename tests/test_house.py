"""The whole house under the supervisor: every executive of the default house, on ports of its own.

What a person would check after ``raspy start``: the fake sensors' values change
in ``raspy kv watch /device/``, the status page shows them fresh, and the shipped
thermostat scenario switches the fake heater as the temperature crosses its marks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest
from support import ROOT, free_endpoint, free_port, live, wait_for

from raspy.mdp.client import MajorDomoClient

HOST = "pi"


def raspy(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "raspy", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture
def house(children, tmp_path):
    broker, web_port = free_endpoint(), free_port()
    kv = {"snapshot": free_endpoint(), "publisher": free_endpoint(), "collector": free_endpoint()}
    config = tmp_path / "raspy.toml"
    config.write_text(f"""
[raspy]
hostname = "{HOST}"
state_dir = "{tmp_path / 'state'}"
broker = "{broker}"
kv_snapshot = "{kv['snapshot']}"
kv_publisher = "{kv['publisher']}"
kv_collector = "{kv['collector']}"
heartbeat = 0.5

[executives.broker]
[executives.kv]
[executives.titanic]
[executives.fake]
devices = [
  {{name = "tank", kind = "cyclic", cycle = 6, min = 20.0, max = 24.0, unit = "C", poll = 1}},
  {{name = "heater", kind = "switch", poll = 1}},
]
[executives.core]
store_wait = 0
[[executives.core.scenarios]]
name = "thermostat"
file = "thermostat.py"
startup = true
params = {{sensor = "/device/{HOST}.fake.tank", service = "{HOST}.fake.devices", switch = "heater", low = 21.0, high = 23.0, interval = 0.1}}

[executives.web]
port = {web_port}
refresh = 1
mmi_interval = 0.2
""")
    children.raspy("start", "--config", str(config), stdout=open(tmp_path / "house.log", "ab"),
                                stderr=subprocess.STDOUT)
    wait_for(lambda: all(live(broker, s) for s in (f"{HOST}.fake.devices", f"{HOST}.core.scenario", "titanic.store")),
             timeout=30, what="the house's services")
    yield {"config": config, "broker": broker, "kv": kv, "web": f"http://127.0.0.1:{web_port}"}
    raspy("stop", "--config", str(config))


def test_kv_watch_shows_the_fake_sensor_values_changing(house, children):
    watch = children.raspy("kv", "watch", "/device/", "--config", str(house["config"]),
                           stdout=subprocess.PIPE, text=True)
    values = []
    while len(set(values)) < 3:
        line = watch.stdout.readline()
        assert line, "raspy kv watch ended"
        key, _, value = line.partition(" ")
        if key == f"/device/{HOST}.fake.tank":
            values.append(json.loads(value)["value"])
    assert all(20.0 <= v <= 24.0 for v in values)


def test_status_page_shows_the_devices_fresh_and_everyone_ready(house):
    def devices():
        with urllib.request.urlopen(house["web"] + "/api/devices", timeout=5) as reply:
            return {d["name"]: d for d in json.load(reply)["devices"]}

    tank = wait_for(lambda: devices().get(f"{HOST}.fake.tank"), what="the tank on the status page")
    assert tank["unit"] == "C" and tank["interval"] == 1 and not tank["stale"]
    wait_for(lambda: urllib.request.urlopen(house["web"] + "/readyz", timeout=5).status == 200,
             what="every executive ready")
    status = raspy("status", "--config", str(house["config"]))
    assert status.returncode == 0, status.stdout + status.stderr
    assert {line.split()[0] for line in status.stdout.splitlines()[1:]} == {
        "broker", "kv", "titanic", "fake", "core", "web"}


def test_thermostat_switches_the_fake_heater_with_the_temperature(house):
    """On below 21 °C, off above 23 °C: over one 6 s cycle of 20..24 °C the heater goes on, then off."""
    client = MajorDomoClient(house["broker"], timeout=1.0, retries=2)
    changes = []  # (heater, temperature) each time the heater's state changes

    def switched_on_then_off():
        heater = client.call(f"{HOST}.fake.devices", "get", "heater")[1]["value"]
        if not changes or changes[-1][0] != heater:
            changes.append((heater, client.call(f"{HOST}.fake.devices", "get", "tank")[1]["value"]))
        return any(on and not off for (on, _), (off, _) in zip(changes, changes[1:]))

    wait_for(switched_on_then_off, timeout=20, interval=0.05, what="the heater switched on, then off")
    client.close()
    on_at = next(t for (on, t) in changes if on)
    off_at = next(t for (on, t), (before, _) in zip(changes[1:], changes) if before and not on)
    # readings are published once a second, so the switch lags the marks by up to that much
    assert on_at < 23.0 and off_at > 21.0 and off_at > on_at
