"""The MQTT bridge's parts without a broker: options, discovery, import rules, the outbox.

What a real Mosquitto and Home Assistant see is in test_mqtt_bridge.py.
"""
from __future__ import annotations

import json

import pytest
from support import wait_for, write_config

from raspy.executives.mqtt import Mqtt
from raspy.house.config import ConfigError, load_config
from raspy.mqtt.discovery import Kind, classify, command_value, config_payload, oid_of, state_payload
from raspy.mqtt.imports import ImportRule
from raspy.mqtt.outbox import Outbox
from raspy.mqtt.topics import Topics

# -- options -------------------------------------------------------------------


def load(tmp_path, **options):
    """The ``mqtt`` executive's options as the bridge reads them from a configuration file."""
    path = write_config(tmp_path / "house.toml", {"hostname": "h", "state_dir": str(tmp_path)}, {"mqtt": options})
    return Mqtt.read_options(load_config(path).settings("mqtt"))


def test_defaults(tmp_path):
    options = load(tmp_path)
    assert (options.url, options.discovery_prefix, options.base) == ("mqtt://127.0.0.1:1883", "homeassistant", "raspy")
    assert (options.host, options.port, options.tls, options.protocol) == ("127.0.0.1", 1883, False, "auto")
    assert load(tmp_path, url="mqtts://broker.lan").port == 8883


@pytest.mark.parametrize("options, reason", [
    ({"uri": "mqtt://x"}, "executives.mqtt.uri: unknown key; known: kind, enabled, url, username"),
    ({"url": "http://x:1883"}, "executives.mqtt.url: 'http://x:1883' is not mqtt://HOST"),
    ({"url": "mqtt://x:99999"}, "executives.mqtt.url: 'mqtt://x:99999' has a bad port"),
    ({"url": "mqtt://me:pw@x"}, "the login goes in username and password"),
    ({"password": "pw"}, "executives.mqtt.password: a password needs a username"),
    ({"username": "me", "password": "pw", "password_file": "pw.txt"}, "password_file: give password or password_file"),
    ({"username": "me", "password_file": "/no/such/file"}, "password_file: '/no/such/file' is not a readable file"),
    ({"url": "mqtts://x", "cert": "pw.txt"}, "executives.mqtt.key: give cert and key both, or neither"),
    ({"ca": "pw.txt"}, "executives.mqtt.ca: only for an mqtts:// url"),
    ({"protocol": "4"}, "executives.mqtt.protocol: '4' is not one of 'auto', '5', '3.1.1'"),
    ({"base": "raspy/+"}, "executives.mqtt.base: 'raspy/+' is not a topic prefix"),
    ({"base": "a//b"}, "no empty levels"),
    ({"base": "homeassistant"}, "executives.mqtt.base: must differ from discovery_prefix"),
    ({"commands": "switches"}, "executives.mqtt.commands: 'switches' is not a list"),
    ({"commands": ["pi.*", ""]}, "executives.mqtt.commands[1]: '' is not a device name pattern"),
    ({"max_payload": 0}, "executives.mqtt.max_payload: 0 is not an integer from 256"),
    ({"max_topics": True}, "executives.mqtt.max_topics: True is not an integer >= 16"),
    ({"import": {"topic": "x"}}, "executives.mqtt.import: {'topic': 'x'} is not a list"),
    ({"import": [{"topic": "a/#"}]}, "executives.mqtt.import[0].topic: 'a/#' is not a topic filter"),
    ({"import": [{"topic": "a/+"}, {"topic": "a/b+"}]}, "import[1].topic: 'a/b+': '+' must be a whole level"),
    ({"import": [{"topic": "a/+", "name": "{1}"}]}, "import[0].name: '{1}' may only use {0} .. {0}"),
    ({"import": [{"topic": "a/+", "name": "{x}"}]}, "import[0].name: '{x}' may only use {0} .. {0}"),
    ({"import": [{"topic": "a", "name": "{0}"}]}, "import[0].name: '{0}' may only use no {} field"),
    ({"import": [{"topic": "a/+", "command_topic": "a/+/set"}]}, "import[0].command_topic: 'a/+/set' may not hold"),
    ({"import": [{"topic": "a/+", "jsn": True}]}, "executives.mqtt.import[0].jsn: unknown key; known: topic"),
    ({"import": [{"topic": "a/+", "units": {"t": "C"}}]}, "import[0].units: fields and units are for json = true"),
    ({"import": [{"topic": "a/+", "json": "yes"}]}, "executives.mqtt.import[0].json: 'yes' is not true or false"),
])
def test_bad_options_stop_start_up_naming_the_key_and_the_reason(tmp_path, options, reason):
    (tmp_path / "pw.txt").write_text("pw\n")
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, **options)
    assert reason in str(refused.value) and str(tmp_path / "house.toml") in str(refused.value)


def test_the_password_comes_from_its_file_in_the_state_directory(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    assert load(tmp_path, username="me", password_file="pw").login_password() == "s3cret"


# -- discovery -----------------------------------------------------------------

TOPICS = Topics()


@pytest.mark.parametrize("config, value, commands, component, device_class", [
    ({"oid": "sensor.cyclic", "unit": "C"}, 21.5, True, "sensor", None),
    ({"oid": "switch", "kind": "switch"}, False, True, "switch", None),
    ({"oid": "switch"}, False, False, "binary_sensor", None),  # no commands: read-only
    ({"oid": "switch.relay"}, True, True, "switch", None),
    ({"oid": "light.dimmer"}, 40, True, "light", None),
    ({"oid": "sensor.contact"}, True, True, "binary_sensor", "opening"),
    ({"oid": "sensor.motion"}, False, True, "binary_sensor", "motion"),
    ({"oid": "sensor.temperature"}, 20.0, True, "sensor", None),
    ({"oid": "sensor.linear"}, True, True, "binary_sensor", None),
    (None, True, True, "binary_sensor", None),  # its server did not answer: the reading decides
    (None, "text", True, "sensor", None),
])
def test_the_component_follows_the_kind(config, value, commands, component, device_class):
    assert classify(oid_of(config), value, commands) == Kind(component, device_class)


def test_a_temperature_sensor_config():
    config = config_payload(TOPICS, "raspy/pi/status", "pi", "tank", Kind("sensor"), "C", 24.5)
    assert config["unit_of_measurement"] == "°C" and config["device_class"] == "temperature"
    assert config["state_class"] == "measurement" and config["unique_id"] == "raspy_pi_tank"
    assert config["state_topic"] == "raspy/pi/tank/state" and config["availability_topic"] == "raspy/pi/status"
    assert config["device"]["identifiers"] == ["raspy_pi"] and config["device"]["manufacturer"] == "RasPy"
    assert config["origin"]["name"] == "RasPy" and "command_topic" not in config


def test_switch_light_and_binary_sensor_configs():
    switch = config_payload(TOPICS, "raspy/pi/status", "pi", "heater", Kind("switch"), None, False)
    assert (switch["command_topic"], switch["payload_on"], switch["payload_off"]) == ("raspy/pi/heater/set", "ON", "OFF")
    light = config_payload(TOPICS, "raspy/pi/status", "pi", "lamp", Kind("light"), None, 30)
    assert light["brightness_command_topic"] == "raspy/pi/lamp/set" and light["brightness_scale"] == 100
    door = config_payload(TOPICS, "raspy/pi/status", "pi", "door", Kind("binary_sensor", "opening"), None, True)
    assert door["device_class"] == "opening" and "command_topic" not in door


def test_payloads_both_ways():
    assert [state_payload("switch", v) for v in (True, False, 1, "on")] == ["ON", "OFF", "ON", "ON"]
    assert state_payload(None, True) == "ON" and state_payload("sensor", 21.25) == "21.25"
    assert state_payload("sensor", None) == "None" and state_payload("sensor", float("nan")) == "None"
    assert state_payload("sensor", {"speed": 3, "direction": 90}) == '{"speed":3,"direction":90}'
    assert state_payload("light", True) == "100"
    assert [command_value("switch", t) for t in ("ON", "off", "true", "1")] == [True, False, True, 1]
    assert [command_value("light", t) for t in ("ON", "OFF", "55")] == [100, 0, 55]
    assert command_value("switch", "toggle") == "toggle"  # the device refuses it, with the reason


# -- import rules --------------------------------------------------------------


def readings(rule: dict, topic: str, payload: str) -> dict:
    return {r.name: (r.value, r.unit) for r in ImportRule.from_table(rule).readings(topic, payload)}


def test_zigbee2mqtt_fields_become_devices():
    rule = {"topic": "zigbee2mqtt/+", "json": True, "units": {"temperature": "C", "humidity": "%"}}
    payload = json.dumps({"temperature": 21.5, "humidity": 40, "contact": True, "state": "ON", "battery": None,
                          "update": {"state": "idle"}, "list": [1, 2]})
    assert readings(rule, "zigbee2mqtt/living room", payload) == {
        "living_room_temperature": (21.5, "C"), "living_room_humidity": (40, "%"), "living_room_contact": (True, None),
        "living_room_state": (True, None), "living_room_update_state": ("idle", None)}
    assert readings(rule, "zigbee2mqtt/bridge/state", "{}") == {}  # not this rule's topic


def test_tasmota_units_come_from_the_payload():
    payload = json.dumps({"Time": "2026-01-01T00:00:00", "DS18B20": {"Id": "01", "Temperature": 19.9},
                          "BME280": {"Pressure": 1013.2}, "TempUnit": "C", "PressureUnit": "hPa"})
    found = readings({"topic": "tele/+/SENSOR", "json": True, "fields": ["DS18B20_Temperature", "BME280_Pressure"]},
                     "tele/attic/SENSOR", payload)
    assert found == {"attic_DS18B20_Temperature": (19.9, "C"), "attic_BME280_Pressure": (1013.2, "hPa")}


def test_esphome_plain_states():
    rule = {"topic": "esphome/+/sensor/+/state", "unit": "C"}
    assert readings(rule, "esphome/node1/sensor/water/state", "23.40") == {"node1_water": (23.4, "C")}
    switch = {"topic": "esphome/+/switch/+/state", "name": "{0}-{1}"}
    assert readings(switch, "esphome/node1/switch/pump/state", "OFF") == {"node1-pump": (False, None)}


@pytest.mark.parametrize("rule, payload, reason", [
    ({"topic": "z/+", "json": True}, "[1, 2]", "JSON list, not an object"),
    ({"topic": "z/+", "json": True}, "{", "not JSON"),
    ({"topic": "z/+", "json": True}, "[" * 100_000, "not JSON"),
    ({"topic": "z/+", "json": True}, '{"a": [1], "b": null}', "no field"),
    ({"topic": "z/+"}, "  ", "empty payload"),
])
def test_payloads_of_the_wrong_shape_are_refused(rule, payload, reason):
    with pytest.raises(ValueError, match=reason):
        ImportRule.from_table(rule).readings("z/x", payload)


def test_command_payloads():
    z2m = ImportRule.from_table({"topic": "zigbee2mqtt/+", "json": True, "command_topic": "zigbee2mqtt/{0}/set"})
    (found,) = z2m.readings("zigbee2mqtt/plug", '{"state": "OFF"}')
    assert found.command_topic == "zigbee2mqtt/plug/set" and found.field == "state"
    assert z2m.command_payload("state", True) == '{"state":"ON"}'
    esphome = ImportRule.from_table({"topic": "esphome/+/switch/+/state", "command_topic": "esphome/{0}/switch/{1}/command"})
    assert esphome.readings("esphome/n/switch/pump/state", "ON")[0].command_topic == "esphome/n/switch/pump/command"
    assert esphome.command_payload(None, False) == "OFF" and esphome.command_payload(None, 3) == "3"


# -- the outbox ----------------------------------------------------------------


def test_the_outbox_keeps_only_the_latest_payload_per_topic():
    outbox = Outbox(limit=3)
    for value in range(1000):
        assert outbox.put("a", str(value).encode())
    assert outbox.put("b", b"x") and len(outbox) == 2 and outbox.pending == 2
    assert outbox.take(10) == [("a", b"999"), ("b", b"x")] and outbox.pending == 0
    outbox.put("a", b"999")
    assert outbox.pending == 0  # unchanged: nothing to send


def test_the_outbox_refuses_new_topics_beyond_its_limit_but_updates_held_ones():
    outbox = Outbox(limit=2)
    assert outbox.put("a", b"1") and outbox.put("b", b"1")
    assert not outbox.put("c", b"1") and outbox.refused == 1
    assert outbox.put("a", b"2") and len(outbox) == 2


def test_a_clear_is_forgotten_once_sent_and_everything_is_resent_after_a_reconnection():
    outbox = Outbox(limit=10)
    outbox.put("a", b"1")
    outbox.put("b", b"1")
    outbox.take(10)
    outbox.put("b", b"")
    assert outbox.take(10) == [("b", b"")]
    outbox.sent("b", b"")
    assert len(outbox) == 1
    outbox.resend_all()
    batch = outbox.take(1)
    outbox.retry([topic for topic, _ in batch])  # paho was full: still pending
    assert outbox.take(10) == [("a", b"1")]


# -- the bridge and a device server that comes late ------------------------------------


def test_a_device_whose_server_comes_late_is_announced_again_by_its_kind(children, tmp_path, monkeypatch):
    """After a restart of the house the key/value map holds readings before their servers run:
    such a device is shown by its reading first, then by its kind once its server answers."""
    import logging
    import threading

    from corehouse import CoreHouse

    from raspy.droplog import DropLog
    from raspy.executives.fake import FakeDevices
    from raspy.mdp import protocol as p
    from raspy.mqtt import bridge as bridge_module

    house = CoreHouse(children, tmp_path)
    house.start_broker()
    monkeypatch.setattr(bridge_module, "ASK_AGAIN", 0.2)
    outbox = Outbox(100)
    bridge = bridge_module.Bridge(TOPICS, outbox, lambda: None, "h", "mqtt", ["*"], DropLog(logging.getLogger("t")),
                                  house.broker, 65536)
    bridge.requests.timeout = 0.3
    threading.Thread(target=bridge.requests.run, daemon=True).start()
    try:
        reading = p.pack({"value": False, "unit": None, "timestamp": 1.0})
        bridge.reading("/device/h.late.heater", reading)
        wait_for(lambda: outbox.get("homeassistant/binary_sensor/h_heater/config"), what="announced by its reading")
        house.worker("h.late.devices", FakeDevices([{"name": "heater", "kind": "switch"}]))
        wait_for(lambda: bridge.reading("/device/h.late.heater", reading)
                 or outbox.get("homeassistant/switch/h_heater/config"), interval=0.1, what="announced as a switch")
        assert outbox.get("homeassistant/binary_sensor/h_heater/config") == b""  # the first entity goes
    finally:
        bridge.requests.stop()
        house.stop()
