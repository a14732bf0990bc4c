"""The examples the guides are built on (examples/), used the way the guides say.

docs/write-a-device.md and docs/write-an-executive.md show examples/light.py
and examples/feeder.py and tell how to run them; these tests do what they tell,
with real processes where the guides use ``raspy start`` and ``raspy run``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from support import ROOT, Children, free_endpoint, live, wait_for, write_config

from raspy.devices import DeviceError
from raspy.errors import InvalidValue
from raspy.house.config import ConfigError, load_config
from raspy.house.executive import Settings
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.state.kv.client import KvSubscriberClient

EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))  # as PYTHONPATH=examples does for the raspy command

import feeder  # noqa: E402
import light  # noqa: E402

#: What the guides say to set so that ``kind = "feeder:Feeder"`` imports.
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLES)])}
HOST = "pi"
TANKS = {"reef": 2.0, "guppies": 0.5}


def call(service, command, *args):
    """A request straight to a service object, as a worker would hand it over: no socket."""
    return p.parse_reply(service(p.request(command, *args)))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the device, in process ------------------------------------------------------

def test_a_light_fills_in_its_template_and_refuses_what_it_cannot_do():
    kitchen = light.DimmableLight({"name": "kitchen", "pin": 18})
    assert kitchen.config() == {"name": "kitchen", "poll": 0, "unit": "%", "level": 0, "pin": 18}
    assert kitchen.json["oid"] == "light.dimmer"
    for bad, reason in [({"level": 101}, "from 0 to 100"), ({"level": True}, "from 0 to 100"),
                        ({"pin": 40}, "GPIO"), ({"poll": -1}, "positive")]:
        with pytest.raises(DeviceError, match=reason):
            kitchen.config({"name": "kitchen", **bad})
    assert kitchen.config()["level"] == 0 and kitchen.config()["pin"] == 18  # a refused change changes nothing
    with pytest.raises(DeviceError, match="unknown oid"):
        light.Lights([{"name": "hall", "oid": "light.rgb"}])
    with pytest.raises(DeviceError, match="two lights"):
        light.Lights([{"name": "hall"}, {"name": "hall"}])


def test_lights_answer_requests_and_say_what_is_due():
    clock = Clock(1_700_000_000.0)
    lights = light.Lights([{"name": "kitchen", "poll": 60}, {"name": "porch"}], clock=clock)
    assert call(lights, "list_keys") == (200, ["kitchen", "porch"])
    status, reading = call(lights, "set", ["porch", 40])
    assert status == 200 and reading == {"value": 40, "unit": "%", "timestamp": clock.now, "age": 0.0}
    assert call(lights, "get", "porch")[1]["value"] == 40
    assert call(lights, "config", ["porch"])[1]["level"] == 40
    assert call(lights, "set", ["porch", 150]) == (400, "level must be an integer from 0 to 100, got 150")
    assert call(lights, "set", ["porch"])[0] == 400
    assert call(lights, "set", ["attic", 10])[0] == 404
    assert call(lights, "dim", "porch")[0] == 501
    # the porch is never polled, but was just set; the kitchen is due by its poll interval
    assert [name for name, _ in lights.due(clock.now)] == ["kitchen", "porch"]
    assert lights.due(clock.now + 30) == []
    assert [name for name, _ in lights.due(clock.now + 60)] == ["kitchen"]


# -- the executive, in process ---------------------------------------------------------

@pytest.mark.parametrize("options, key, reason", [
    ({}, "tanks", "missing: a table"),
    ({"tanks": {}}, "tanks", "name at least one tank: tank name = grams per portion"),
    ({"tanks": {"reef": 0}}, "tanks.reef", "0 is not a number above 0"),
    ({"tanks": {"reef tank": 1}}, 'tanks."reef tank"', "bad tank name 'reef tank': letters, digits, '_' and '-' only"),
    ({"tanks": TANKS, "daily_limt": 5}, "daily_limt", "unknown key; known: kind, enabled, tanks, daily_limit"),
    ({"tanks": TANKS, "daily_limit": "lots"}, "daily_limit", "'lots' is not a number > 0"),
])
def test_bad_feeder_options_are_refused_with_the_key_and_the_reason(tmp_path, options, key, reason):
    config = write_config(tmp_path / "house.toml", {"state_dir": tmp_path},
                          {"feeder": {"kind": "feeder:Feeder", **options}})
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert refused.value.key == f"executives.feeder.{key}" and refused.value.reason == reason
    with pytest.raises(InvalidValue) as built:  # built without a configuration file: the same check
        feeder.Feeder(Settings("feeder", HOST, state_dir=tmp_path, options=options))
    assert built.value.where[0] == key.split(".")[0]


def test_the_feeder_keeps_to_its_daily_limit_across_restarts_and_starts_again_each_day(tmp_path):
    clock = Clock(1_700_000_000.0)
    tanks = feeder.Tanks(TANKS, 6.0, tmp_path / "feeder.json", clock=clock)
    assert [call(tanks, "feed", "reef")[1] for _ in range(3)] == [{"fed_today": 2.0}, {"fed_today": 4.0},
                                                                   {"fed_today": 6.0}]
    status, reason = call(tanks, "feed", "reef")
    assert status == 403 and "limit of 6 g" in reason
    assert call(tanks, "feed", "shark")[0] == 404
    assert call(tanks, "feed", 3)[0] == 400
    assert tanks.changes() == {"guppies": 0.0, "reef": 6.0} and tanks.changes() == {}
    again = feeder.Tanks(TANKS, 6.0, tmp_path / "feeder.json", clock=clock)  # what a restart does
    assert call(again, "get", "reef")[1]["fed_today"] == 6.0
    clock.now += 24 * 3600
    assert call(again, "feed", "reef") == (200, {"fed_today": 2.0})


# -- real processes: raspy start and raspy run ----------------------------------------------

@pytest.fixture(scope="module")
def house(tmp_path_factory):
    """A house of broker, kv and the feeder under ``raspy start``, on ports chosen now."""
    tmp = tmp_path_factory.mktemp("house")
    broker = free_endpoint()
    raspy_table = {"hostname": HOST, "state_dir": tmp / "state", "broker": broker, "heartbeat": 0.5,
                   "kv_snapshot": free_endpoint(), "kv_publisher": free_endpoint(), "kv_collector": free_endpoint()}
    config = write_config(tmp / "house.toml", raspy_table, {
        "broker": {},
        "kv": {},
        "feeder": {"kind": "feeder:Feeder", "tanks": TANKS, "daily_limit": 6.0},
    })
    kids = Children()
    with open(tmp / "house.log", "ab") as log:
        kids.raspy("start", "--config", str(config), env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: live(broker, f"{HOST}.feeder.tanks"), timeout=30, what="the feeder's service")
        yield {"config": config, "raspy": raspy_table, "broker": broker}
    finally:
        subprocess.run([sys.executable, "-m", "raspy", "stop", "--config", str(config)], env=dict(os.environ, **ENV),
                       capture_output=True, timeout=30)
        kids.kill_all()


@pytest.fixture
def devices(house):
    """A live copy of ``/device/`` from the house's key/value server."""
    table = house["raspy"]
    with KvSubscriberClient("/device/", table["kv_snapshot"], table["kv_publisher"]) as subscriber:
        yield subscriber


def published(subscriber, key: str):
    body = subscriber.get(key)
    return p.unpack(body) if body else None


def raspy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raspy", *args], env=dict(os.environ, **ENV),
                          capture_output=True, text=True, timeout=30)


def test_the_feeder_under_raspy_start_feeds_refuses_publishes_and_remembers(house, devices):
    with MajorDomoClient(house["broker"], timeout=2.0, retries=3) as client:
        assert client.call(f"{HOST}.feeder.tanks", "list_keys") == (200, ["guppies", "reef"])
        assert client.call(f"{HOST}.feeder.tanks", "feed", "reef") == (200, {"fed_today": 2.0})
        assert client.call(f"{HOST}.feeder.tanks", "feed", "shark")[0] == 404
        assert client.call(f"{HOST}.feeder.tanks", "feed", ["reef"])[0] == 400
        wait_for(lambda: (published(devices, f"/device/{HOST}.feeder.reef") or {}).get("value") == 2.0,
                 what="the reef's grams published")
        assert published(devices, f"/device/{HOST}.feeder.reef")["unit"] == "g"
        status, instance = client.call(f"{HOST}.feeder.mmi", "status")
        assert status == 200
        assert re.search(r"^feeder +running ", raspy("status", "--config", str(house["config"])).stdout, re.M)

        restarted = raspy("restart", "feeder", "--config", str(house["config"]))
        assert restarted.returncode == 0, restarted.stderr
        wait_for(lambda: client.call(f"{HOST}.feeder.mmi", "status") not in [(status, instance)],
                 timeout=20, what="a new feeder process")
        assert client.call(f"{HOST}.feeder.tanks", "get", "reef")[1]["fed_today"] == 2.0


def test_a_bad_option_stops_raspy_run_with_the_line_and_the_reason(tmp_path):
    config = write_config(tmp_path / "bad.toml", {"state_dir": tmp_path},
                          {"feeder": {"kind": "feeder:Feeder", "tanks": {"reef": -1}}})
    refused = raspy("run", "feeder", "--config", str(config))
    assert refused.returncode == 2
    assert "line 6: executives.feeder.tanks.reef: -1 is not a number above 0" in refused.stderr


def test_the_lights_under_raspy_run_answer_and_publish(house, devices, children, tmp_path):
    config = write_config(tmp_path / "lights.toml", house["raspy"], {
        "lights": {"kind": "light:LightServer", "lights": [{"name": "kitchen", "pin": 18, "poll": 60},
                                                           {"name": "porch"}]},
    })
    children.raspy("run", "lights", "--config", str(config), env=ENV)
    wait_for(lambda: live(house["broker"], f"{HOST}.lights.devices"), what="the lights' service")
    service = f"{HOST}.lights.devices"
    with MajorDomoClient(house["broker"], timeout=2.0, retries=3) as client:
        assert client.call(service, "list_keys") == (200, ["kitchen", "porch"])
        wait_for(lambda: published(devices, f"/device/{HOST}.lights.kitchen"), what="the kitchen's first reading")
        status, reading = client.call(service, "set", ["porch", 40])
        assert status == 200 and reading["value"] == 40
        wait_for(lambda: (published(devices, f"/device/{HOST}.lights.porch") or {}).get("value") == 40,
                 what="the porch's new level published")
        assert published(devices, f"/device/{HOST}.lights.porch")["poll"] == 0
        assert client.call(service, "set", ["porch", 101])[0] == 400
        assert client.call(service, "get", "attic")[0] == 404
        assert client.call(service, "config", ["kitchen"])[1] == {"oid": "light.dimmer", "name": "kitchen", "poll": 60,
                                                                  "unit": "%", "level": 0, "pin": 18}
