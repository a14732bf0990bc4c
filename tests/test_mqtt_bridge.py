"""The MQTT bridge against a real Mosquitto, with a paho client playing Home Assistant.

One house for the module: a RasPy broker, key/value server, fake devices, the
dimmable light of examples/light.py, Core with a scenario, the ``mqtt``
executive and Mosquitto, all real processes on ports of their own. Tests that kill something start it again
before they end.
"""
from __future__ import annotations

import json
import os
import signal

import pytest
from corehouse import HOST, CoreHouse
from mosquitto import Certificates, HomeAssistant, Mosquitto, needs_mosquitto
from support import Children, wait_for

from raspy.mdp import protocol as p

pytestmark = needs_mosquitto

MAX_PAYLOAD = 4096
COOLING = '''
def run(ctx):
    return ctx.request(ctx.params["service"], "set", ["fan", True])
'''


@pytest.fixture(scope="module")
def house(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mqtt")
    children = Children()
    h = CoreHouse(children, tmp_path)
    h.mosquitto = Mosquitto(tmp_path).start()
    h.executives = {
        "fake": {"devices": [
            {"name": "tank", "kind": "cyclic", "cycle": 60, "min": 20.0, "max": 24.0, "unit": "C", "poll": 1},
            {"name": "heater", "kind": "switch", "poll": 1},
            {"name": "fan", "kind": "switch", "poll": 1},
            {"name": "spare", "kind": "linear", "start": 5, "unit": "%", "poll": 1},
            {"name": "old", "kind": "linear", "start": 1, "poll": 1},
        ]},
        "lights": {"kind": "examples.light:LightServer", "lights": [{"name": "lamp", "poll": 1}]},
        "mqtt": {"url": h.mosquitto.url, "max_payload": MAX_PAYLOAD, "max_imported": 20, "import": [
            {"topic": "zigbee2mqtt/+", "json": True, "units": {"temperature": "C"}},
            {"topic": "esphome/+/switch/+/state", "command_topic": "esphome/{0}/switch/{1}/command"},
        ]},
    }
    (h.scenarios_dir / "cooling.py").write_text(COOLING)
    h.start_broker()
    h.start_kv()
    h.children.executive(h.config(), "fake")
    h.children.executive(h.config(), "lights")
    h.start_bridge = lambda: start_bridge(h)
    h.start_bridge()
    h.start_core(store_wait=0, scenarios=[{
        "name": "cooling", "params": {"service": f"{HOST}.fake.devices"},
        "entries": {f"/device/{HOST}.mqtt.kitchen_temperature": {"op": ">", "value": 30}}}])
    h.ha = HomeAssistant(h.mosquitto, "homeassistant/#", "raspy/#", "esphome/+/switch/+/command")
    h.devices = h.subscribe("/device/")
    yield h
    h.ha.close()
    h.devices.stop()
    h.stop()
    children.kill_all()
    h.mosquitto.kill()


def start_bridge(h: CoreHouse):
    with open(h.tmp_path / "mqtt.log", "a") as log:
        h.bridge = h.children.executive(h.config(), "mqtt", stderr=log)
    wait_for(lambda: h.live(f"{HOST}.mqtt.devices"), what="the bridge's devices service")
    return h.bridge


def statistics(h: CoreHouse) -> dict:
    status, values = h.call(f"{HOST}.mqtt.statistics", "all")
    assert status == p.OK, values
    return {oid.rsplit(".", 1)[-1]: item["value"] for oid, item in values.items()}


def kv_value(h: CoreHouse, name: str):
    body = h.devices.get(f"/device/{name}")
    return None if body is None else p.unpack(body)["value"]


def config(payload: bytes) -> dict:
    return json.loads(payload) if payload else {}


# -- RasPy -> Home Assistant ---------------------------------------------------------


def test_home_assistant_finds_every_device_with_its_fields_retained(house):
    for topic in ("homeassistant/sensor/h_tank/config", "homeassistant/switch/h_heater/config", "raspy/h/status"):
        house.ha.wait(topic)  # announced: from now on the broker holds it
    ha = HomeAssistant(house.mosquitto, "homeassistant/#", "raspy/#")  # comes later: sees only what is retained
    try:
        tank = config(ha.wait("homeassistant/sensor/h_tank/config"))
        heater = config(ha.wait("homeassistant/switch/h_heater/config"))
        spare = config(ha.wait("homeassistant/sensor/h_spare/config"))
        assert ha.wait("raspy/h/status") == b"online"
        state = float(ha.wait("raspy/h/tank/state"))
        attributes = json.loads(ha.wait("raspy/h/tank/attributes"))
        heater_state = ha.wait("raspy/h/heater/state")
        with ha.lock:
            retained = {topic for topic, _, was_retained in ha.messages if was_retained}
    finally:
        ha.close()
    assert {"homeassistant/sensor/h_tank/config", "homeassistant/switch/h_heater/config", "raspy/h/status",
            "raspy/h/tank/state", "raspy/h/heater/state"} <= retained
    assert (tank["device_class"], tank["unit_of_measurement"], tank["state_class"]) == ("temperature", "°C", "measurement")
    assert tank["unique_id"] == "raspy_h_tank" and tank["state_topic"] == "raspy/h/tank/state"
    assert tank["availability_topic"] == "raspy/h/status" and tank["json_attributes_topic"] == "raspy/h/tank/attributes"
    assert tank["device"]["identifiers"] == ["raspy_h"] and tank["device"]["manufacturer"] == "RasPy"
    assert tank["device"]["name"] == "RasPy h" and tank["device"]["sw_version"] and tank["origin"]["name"] == "RasPy"
    assert (heater["command_topic"], heater["payload_on"], heater["payload_off"]) == ("raspy/h/heater/set", "ON", "OFF")
    assert spare["unit_of_measurement"] == "%" and "device_class" not in spare
    assert 20.0 <= state <= 24.0 and attributes["unit"] == "C" and set(attributes) == {"value", "unit", "timestamp"}
    assert heater_state in (b"ON", b"OFF")
    assert not any(topic.startswith("homeassistant/") and "h_kitchen" in topic for topic in retained), \
        "imported devices are not announced again"


def test_on_at_a_switch_set_topic_switches_the_fake_switch(house):
    house.ha.publish("raspy/h/heater/set", "OFF")
    wait_for(lambda: kv_value(house, "h.fake.heater") is False, what="heater off in kv")
    house.ha.publish("raspy/h/heater/set", "ON")
    wait_for(lambda: kv_value(house, "h.fake.heater") is True, what="heater on in kv")
    house.ha.wait("raspy/h/heater/state", lambda payload: payload == b"ON")
    assert house.call(f"{HOST}.fake.devices", "get", "heater")[1]["value"] is True


def test_a_dimmer_is_a_light_with_brightness(house):
    lamp = config(house.ha.wait("homeassistant/light/h_lamp/config"))
    assert lamp["command_topic"] == lamp["brightness_command_topic"] == "raspy/h/lamp/set"
    assert lamp["brightness_state_topic"] == "raspy/h/lamp/state" and lamp["brightness_scale"] == 100
    house.ha.publish("raspy/h/lamp/set", "60")  # what Home Assistant sends for 60 % brightness
    wait_for(lambda: kv_value(house, "h.lights.lamp") == 60, what="the lamp at 60 in kv")
    house.ha.wait("raspy/h/lamp/state", lambda payload: payload == b"60")
    house.ha.publish("raspy/h/lamp/set", "OFF")
    wait_for(lambda: kv_value(house, "h.lights.lamp") == 0, what="the lamp off in kv")


def test_home_assistant_online_brings_every_config_again(house):
    topic = "homeassistant/sensor/h_tank/config"
    house.ha.wait(topic)
    before = house.ha.count(topic)
    house.ha.publish("homeassistant/status", "online")
    wait_for(lambda: house.ha.count(topic) > before, what="the tank announced again")
    wait_for(lambda: house.ha.count("homeassistant/switch/h_heater/config") > 1, what="the heater announced again")


def test_a_device_removed_from_raspy_leaves_no_ghost(house):
    house.ha.wait("homeassistant/sensor/h_spare/config", lambda payload: payload != b"")
    removed = statistics(house)["removed"]
    assert house.call(f"{HOST}.fake.devices", "remove", "spare")[0] == p.OK
    house.ha.wait("homeassistant/sensor/h_spare/config", lambda payload: payload == b"")
    house.ha.wait("raspy/h/spare/state", lambda payload: payload == b"")
    assert statistics(house)["removed"] == removed + 1
    late = HomeAssistant(house.mosquitto, "homeassistant/#", "raspy/#")
    try:
        late.wait("homeassistant/sensor/h_tank/config")
        assert late.last("homeassistant/sensor/h_spare/config") is None  # nothing retained for it
    finally:
        late.close()


# -- MQTT -> RasPy ---------------------------------------------------------------------


def test_a_zigbee2mqtt_temperature_becomes_a_device_and_drives_a_scenario(house):
    wait_for(lambda: kv_value(house, "h.fake.fan") is False, what="the fan off")
    house.ha.publish("zigbee2mqtt/kitchen", json.dumps({"temperature": 21.0, "humidity": 45, "linkquality": 80}))
    wait_for(lambda: kv_value(house, "h.mqtt.kitchen_temperature") == 21.0, what="the imported temperature")
    reading = p.unpack(house.devices.get("/device/h.mqtt.kitchen_temperature"))
    assert reading["unit"] == "C" and kv_value(house, "h.mqtt.kitchen_humidity") == 45
    assert kv_value(house, "h.fake.fan") is False  # 21 degrees: the scenario does not fire
    house.ha.publish("zigbee2mqtt/kitchen", json.dumps({"temperature": 31.5}))
    wait_for(lambda: kv_value(house, "h.fake.fan") is True, what="the scenario switching the fan on")
    status, got = house.call(f"{HOST}.mqtt.devices", "get", "kitchen_temperature")
    assert status == p.OK and got["value"] == 31.5


def test_an_imported_switch_is_set_through_raspy(house):
    house.ha.publish("esphome/node1/switch/pump/state", "OFF")
    wait_for(lambda: kv_value(house, "h.mqtt.node1_pump") is False, what="the imported pump")
    assert "node1_pump" in house.call(f"{HOST}.mqtt.devices", "list_keys")[1]
    status, sent = house.call(f"{HOST}.mqtt.devices", "set", ["node1_pump", True])
    assert status == p.OK and sent == {"topic": "esphome/node1/switch/pump/command", "payload": "ON"}
    house.ha.wait("esphome/node1/switch/pump/command", lambda payload: payload == b"ON")
    status, reason = house.call(f"{HOST}.mqtt.devices", "set", ["kitchen_temperature", 3])
    assert status == p.BAD_REQUEST and "no command_topic" in reason


def test_bad_input_is_logged_counted_and_survived(house):
    house.ha.wait("homeassistant/switch/h_heater/config")
    before = statistics(house)["dropped"]
    bad = [
        ("raspy/h/heater/set", b"\xff\xfe"),                   # not UTF-8
        ("zigbee2mqtt/kitchen", b"\xc3\x28"),                   # not UTF-8
        ("zigbee2mqtt/kitchen", b"[1, 2, 3]"),                  # JSON of the wrong shape
        ("zigbee2mqtt/kitchen", b'{"temperature": {"deep": [1]}}'),  # no usable field
        ("zigbee2mqtt/kitchen", b"{" * 2000),                   # not JSON
        ("zigbee2mqtt/kitchen", b"x" * (MAX_PAYLOAD + 100)),    # beyond max_payload
        ("raspy/h/nothing/set", b"ON"),                         # no such device
        ("raspy/h/tank/set", b"ON"),                            # a sensor takes no commands
    ]
    for topic, payload in bad:
        house.ha.publish(topic, payload)
    with house.kv_publisher() as kv:  # and from the key/value side
        kv.send("/device/", "h.other.big", p.pack({"value": "x" * (MAX_PAYLOAD + 1), "unit": None, "timestamp": 1}))
        kv.send("/device/", "h.other.junk", b"\xc1 not msgpack")
        kv.send("/device/", "no-dots", p.pack({"value": 1}))
    wait_for(lambda: statistics(house)["dropped"] >= before + len(bad) + 4, what="every bad message counted")
    house.ha.publish("zigbee2mqtt/kitchen", b"y" * (4 * 1024 * 1024))  # the broker keeps it from us (MQTT 5)
    house.ha.publish("raspy/h/heater/set", "toggle")  # the switch refuses it: a counted command error
    wait_for(lambda: statistics(house)["command_errors"] >= 1, what="the refused command counted")
    assert house.bridge.poll() is None, "the bridge died"
    house.ha.publish("zigbee2mqtt/kitchen", json.dumps({"temperature": 22.5}))
    wait_for(lambda: kv_value(house, "h.mqtt.kitchen_temperature") == 22.5, what="the bridge still importing")
    log = (house.tmp_path / "mqtt.log").read_text()
    assert "dropped message: command for h.fake.heater: payload is not UTF-8" in log  # later lines may be held back
    assert house.ha.last("raspy/h/big/state") is None, "a state beyond max_payload was published"


# -- failures ------------------------------------------------------------------------


def test_the_last_will_says_offline_after_kill_9_and_a_restart_says_online(house):
    house.ha.wait("raspy/h/status", lambda payload: payload == b"online")
    house.ha.wait("homeassistant/sensor/h_old/config", lambda payload: payload != b"")
    os.kill(house.bridge.pid, signal.SIGKILL)
    house.bridge.wait(5)
    house.ha.wait("raspy/h/status", lambda payload: payload == b"offline")
    assert house.call(f"{HOST}.fake.devices", "remove", "old")[0] == p.OK  # while the bridge is down
    house.start_bridge()
    house.ha.wait("raspy/h/status", lambda payload: payload == b"online")
    house.ha.wait("homeassistant/sensor/h_old/config", lambda payload: payload == b"")  # no ghost from before
    house.ha.publish("raspy/h/heater/set", "OFF")
    wait_for(lambda: kv_value(house, "h.fake.heater") is False, what="commands work after the restart")


def test_mosquitto_killed_and_back_gets_everything_again_and_nothing_piles_up(house):
    wait_for(lambda: statistics(house)["connected"] == 1, what="the bridge connected")
    house.ha.close()
    house.mosquitto.kill()
    wait_for(lambda: statistics(house)["connected"] == 0, what="the bridge seeing the broker gone")
    readings = statistics(house)["readings"]
    wait_for(lambda: statistics(house)["readings"] >= readings + 8, what="readings going on meanwhile")
    wait_for(lambda: statistics(house)["readings"] >= readings + 16, what="more readings meanwhile")
    while_away = statistics(house)
    per_device = 3 * (while_away["devices"] + while_away["imported"]) + 1  # state, attributes, config; status
    assert while_away["topics"] <= per_device and while_away["pending"] <= while_away["topics"], \
        f"the bridge holds one payload per topic: {while_away}"
    assert "since" in while_away["connection"]
    house.mosquitto.start()  # empty: it kept nothing (no persistence)
    wait_for(lambda: statistics(house)["connected"] == 1, timeout=30, what="the bridge reconnected")
    house.ha = HomeAssistant(house.mosquitto, "homeassistant/#", "raspy/#", "esphome/+/switch/+/command")
    house.ha.wait("homeassistant/sensor/h_tank/config")
    house.ha.wait("homeassistant/switch/h_heater/config")
    house.ha.wait("raspy/h/status", lambda payload: payload == b"online")
    house.ha.wait("raspy/h/tank/state")
    assert statistics(house)["topics"] <= per_device


# -- the login and the protocol version ------------------------------------------------


def small_house(children, tmp_path, mosquitto: Mosquitto, **mqtt_options) -> CoreHouse:
    """A RasPy broker, key/value server, one fake switch and the bridge with ``mqtt_options``."""
    house = CoreHouse(children, tmp_path)
    house.executives = {"fake": {"devices": [{"name": "heater", "kind": "switch", "poll": 1}]},
                        "mqtt": {"url": mosquitto.url, **mqtt_options}}
    house.start_broker()
    house.start_kv()
    children.executive(house.config(), "fake")
    start_bridge(house)
    return house


@pytest.mark.parametrize("password, connects", [("s3cret", True), ("wrong", False)])
def test_the_login_from_a_password_file(children, tmp_path, password, connects):
    mosquitto = Mosquitto(tmp_path, logins={"raspy": "s3cret", "ha": "hapass"}).start()
    try:
        (tmp_path / "password").write_text(password + "\n")
        house = small_house(children, tmp_path, mosquitto, username="raspy", password_file=str(tmp_path / "password"))
        if connects:
            ha = HomeAssistant(mosquitto, "raspy/#", username="ha", password="hapass")
            ha.wait("raspy/h/status", lambda payload: payload == b"online")
            ha.close()
            assert statistics(house)["connected"] == 1
        else:
            wait_for(lambda: "not authori" in statistics(house)["connection"].lower(), what="the refusal shown")
            assert statistics(house)["connected"] == 0
    finally:
        mosquitto.kill()


def test_mqtt_3_1_1_when_asked(children, tmp_path):
    mosquitto = Mosquitto(tmp_path).start()
    try:
        house = small_house(children, tmp_path, mosquitto, protocol="3.1.1")
        ha = HomeAssistant(mosquitto, "homeassistant/#", "raspy/#")
        ha.wait("homeassistant/switch/h_heater/config")
        ha.wait("raspy/h/status", lambda payload: payload == b"online")
        ha.publish("raspy/h/heater/set", "ON")
        ha.wait("raspy/h/heater/state", lambda payload: payload == b"ON")
        ha.close()
        assert "MQTT 3.1.1" in statistics(house)["connection"] and statistics(house)["dropped"] == 0
    finally:
        mosquitto.kill()


def test_tls_with_a_client_certificate(children, tmp_path):
    certificates = Certificates(tmp_path / "certificates")
    mosquitto = Mosquitto(tmp_path, tls=certificates).start()
    try:
        house = small_house(children, tmp_path, mosquitto, ca=str(certificates.ca), cert=str(certificates.client_cert),
                            key=str(certificates.client_key))
        ha = HomeAssistant(mosquitto, "raspy/#")
        ha.wait("raspy/h/status", lambda payload: payload == b"online")
        ha.close()
        assert statistics(house)["connection"].startswith("connected to mqtts://127.0.0.1")
    finally:
        mosquitto.kill()
