"""The device model: register from JSON, config, poll rules, log, reset, readings, TV sub-devices,
and the simulated sensors driven by a clock the test controls."""
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raspy.devices import (
    BaseDevice,
    DeviceError,
    DeviceRegister,
    MediaCamera,
    MediaTV,
    SensorDevice,
    SensorTemperature,
    SensorWind,
    lookup,
    standard_register,
)
from raspy.devices.simulated import CyclicSensor, LinearSensor, Switch, simulated


@pytest.fixture
def register():
    return standard_register()


# -- register -------------------------------------------------------------

@pytest.mark.parametrize("oid, cls", [
    ("sensor", SensorDevice), ("sensor.temperature", SensorTemperature), ("sensor.wind", SensorWind),
    ("media.camera", MediaCamera), ("media.tv", MediaTV),
])
def test_register_builds_the_class_of_the_oid(register, oid, cls):
    device = register.new({"oid": oid, "name": "thing"})
    assert type(device) is cls
    assert device.name == "thing"
    assert device.json["oid"] == oid


@pytest.mark.parametrize("json, reason", [
    ({"name": "t"}, "needs an 'oid'"),
    ({"oid": "sensor.humidity", "name": "t"}, "unknown oid 'sensor.humidity'"),
    ({"oid": ["sensor"], "name": "t"}, "oid must be a string"),
    ({"oid": "sensor"}, "needs a 'name'"),
    ({"oid": "sensor", "name": "a.b"}, "bad device name"),
    ({"oid": "sensor", "name": 3}, "bad device name"),
    (["sensor", "t"], "is a dict"),
])
def test_register_refuses_bad_json_with_a_reason(register, json, reason):
    with pytest.raises(DeviceError, match=reason):
        register.new(json)


def test_duplicate_oid_is_refused():
    register = DeviceRegister([SensorTemperature])

    class OtherThermometer(SensorTemperature):
        pass

    with pytest.raises(DeviceError, match="already registered by SensorTemperature"):
        register.register(OtherThermometer)
    assert register.device_class("sensor.temperature") is SensorTemperature


def test_json_round_trips_through_new(register):
    device = register.new({"oid": "sensor.temperature", "name": "kitchen", "unit": "F", "poll": 30, "room": "k"})
    again = register.new(device.json)
    assert again.json == device.json == {"oid": "sensor.temperature", "name": "kitchen", "unit": "F",
                                         "poll": 30, "room": "k"}


def test_fullname_prefixes_host_and_service(register):
    device = register.new({"oid": "sensor", "name": "cellar"})
    assert device.fullname("pi.onewire") == "pi.onewire.cellar"


# -- config ---------------------------------------------------------------

def test_config_get_and_set_keep_extra_keys():
    device = SensorTemperature.new({"name": "t", "location": "attic"})
    assert device.config() == {"name": "t", "poll": 0, "unit": "C", "location": "attic"}
    after = device.config({"name": "t", "unit": "F", "note": "north wall"})
    assert after == {"name": "t", "poll": 0, "unit": "F", "location": "attic", "note": "north wall"}
    assert device.config() == after


@pytest.mark.parametrize("new, reason", [
    ({"unit": "F"}, "must carry the device's name"),
    ({"name": "other", "unit": "F"}, "renaming is not supported"),
    ({"name": "t", "unit": "K"}, "temperature unit must be one of"),
    ({"name": "t", "poll": -1}, "positive number of seconds"),
    ({"name": "t", "oid": "sensor.wind"}, "does not match"),
    ("unit=F", "is a dict"),
])
def test_a_refused_config_set_changes_nothing(new, reason):
    device = SensorTemperature.new({"name": "t"})
    before = device.config()
    with pytest.raises(DeviceError, match=reason):
        device.config(new)
    assert device.config() == before


def test_config_returns_a_copy():
    device = SensorDevice.new({"name": "s", "calibration": {"offset": 1}})
    device.config()["calibration"]["offset"] = 99
    assert device.config()["calibration"] == {"offset": 1}


def test_check_validates_without_building():
    assert SensorTemperature.check({"name": "t", "poll": 5, "unit": "C"}) is None
    with pytest.raises(DeviceError, match="unit"):
        SensorTemperature.check({"name": "t", "poll": 5, "unit": "kelvin"})


# -- poll -----------------------------------------------------------------

def test_a_pollable_device_accepts_zero_or_positive_seconds():
    device = SensorTemperature.new({"name": "t"})
    assert device.poll() == 0
    assert device.poll(10) == 10
    assert device.poll(0) == 0
    assert device.config()["poll"] == 0


@pytest.mark.parametrize("seconds, reason", [
    (-1, "0 \\(not polled\\) or a positive"), (-5, "0 \\(not polled\\) or a positive"),
    (1.5, "integer"), ("10", "integer"), (True, "integer"),
])
def test_a_pollable_device_refuses_bad_intervals(seconds, reason):
    device = SensorTemperature.new({"name": "t", "poll": 7})
    with pytest.raises(DeviceError, match=reason):
        device.poll(seconds)
    assert device.poll() == 7


def test_a_device_that_cannot_be_polled_stays_at_minus_one():
    camera = MediaCamera.new({"name": "door"})
    assert camera.poll() == -1
    for seconds in (0, 10):
        with pytest.raises(DeviceError, match="cannot be polled"):
            camera.poll(seconds)
    with pytest.raises(DeviceError, match="cannot be polled"):
        MediaCamera.new({"name": "door", "poll": 5})
    assert camera.poll(-1) == -1


# -- log, reset, state ----------------------------------------------------

def test_log_records_changes_and_is_bounded():
    device = SensorTemperature.new({"name": "t"})
    device.poll(5)
    device.config({"name": "t", "unit": "F"})
    lines = device.log()
    assert lines[0].endswith("created")
    assert lines[-2].endswith("poll set to 5")
    assert lines[-1].endswith("config set: unit")
    assert device.log(1) == lines[-1:]
    for i in range(device.log_size + 20):
        device.poll(i + 1)
    assert len(device.log()) == device.log_size
    assert device.log()[-1].endswith(f"poll set to {device.log_size + 20}")


def test_reset_goes_back_to_the_template_keeping_the_name():
    device = SensorTemperature.new({"name": "t", "unit": "F", "poll": 60, "room": "hall"})
    assert device.reset() == {"name": "t", "poll": 0, "unit": "C"}
    assert device.log()[-1].endswith("reset to template")


def test_two_instances_share_no_state():
    a = SensorDevice.new({"name": "a", "calibration": {"offset": 1}})
    b = SensorDevice.new({"name": "b"})
    a.poll(30)
    a.config({"name": "a", "unit": "lux"})
    a.record(3.0, 100.0)
    a.note("only a")
    assert b.config() == {"name": "b", "poll": 0, "unit": None}
    assert b.reading is None
    assert not any("only a" in line for line in b.log())
    assert dict(SensorDevice.template) == {"poll": 0, "unit": None}
    with pytest.raises(TypeError):
        SensorDevice.template["poll"] = 5  # the template is read-only


def test_reading_carries_value_unit_and_timestamp():
    device = SensorTemperature.new({"name": "t", "unit": "F"})
    assert device.reading is None
    reading = device.record(74.5, 1_700_000_000.0)
    assert device.reading == reading
    assert reading.as_dict() == {"value": 74.5, "unit": "F", "timestamp": 1_700_000_000.0}
    for bad in ("hot", None, math.nan, True):
        with pytest.raises(DeviceError):
            device.record(bad, 1.0)
    assert device.reading == reading


@pytest.mark.parametrize("value, ok", [
    ({"speed": 3.5, "direction": 0}, True), ({"speed": 0, "direction": 360}, True),
    ({"speed": 3, "direction": 361}, False), ({"speed": 3, "direction": -1}, False),
    ({"speed": -1, "direction": 90}, False), ({"speed": 3}, False), (3, False),
])
def test_wind_readings(value, ok):
    gauge = SensorWind.new({"name": "roof"})
    if ok:
        assert gauge.record(value, 1.0).value == value
    else:
        with pytest.raises(DeviceError):
            gauge.record(value, 1.0)


def test_tv_controls_are_sub_devices():
    tv = MediaTV.new({"name": "tv", "volume": 30})
    devices = {"tv": tv}
    volume = lookup(devices, "tv.volume")
    assert volume.config()["value"] == 30
    volume.set(42)
    assert tv.config()["volume"] == 42
    assert volume.config({"name": "volume", "value": 7})["value"] == 7
    assert tv.config()["volume"] == 7
    with pytest.raises(DeviceError, match="from 0 to 100"):
        volume.set(101)
    with pytest.raises(DeviceError, match="from 1 to 999"):
        tv.config({"name": "tv", "channel": 0})
    assert lookup(devices, "tv.power").set(1) == 1
    assert tv.reset()["power"] == 0 and lookup(devices, "tv.power").config()["value"] == 0
    with pytest.raises(KeyError, match="no sub-device 'colour'"):
        lookup(devices, "tv.colour")
    with pytest.raises(KeyError, match="no device 'radio'"):
        lookup(devices, "radio.volume")


def test_two_tvs_have_their_own_controls():
    one, two = MediaTV.new({"name": "one"}), MediaTV.new({"name": "two"})
    lookup({"one": one}, "one.channel").set(5)
    assert two.config()["channel"] == 1


# -- simulated devices ----------------------------------------------------

AQUARIUM = {"name": "aquarium", "kind": "cyclic", "cycle": 86400, "min": 24, "max": 27, "unit": "C", "poll": 10}


def test_cyclic_sensor_hits_min_max_min_over_its_cycle():
    sensor = simulated(AQUARIUM)
    assert isinstance(sensor, CyclicSensor)
    day = 86400 * 19000  # a midnight, UTC
    assert sensor.value(day) == 24
    assert sensor.value(day + 43200) == 27
    assert sensor.value(day + 86400) == 24
    assert sensor.value(day + 21600) == pytest.approx(25.5)
    values = [sensor.value(day + t) for t in range(0, 86400, 600)]
    assert min(values) == 24 and max(values) == 27
    assert values == sorted(values[:73]) + sorted(values[73:], reverse=True)  # up, then down


def test_cyclic_sensor_offset_moves_the_start_of_the_cycle():
    sensor = simulated({**AQUARIUM, "offset": 3600})
    assert sensor.value(3600) == 24
    assert sensor.value(3600 + 43200) == 27


def test_linear_sensor_slope_and_bounds():
    sensor = simulated({"name": "tank", "kind": "linear", "start": 10, "slope": 2, "lower": 5, "upper": 13})
    assert isinstance(sensor, LinearSensor)
    t0 = 1_000_000
    assert sensor.value(t0) == 10
    assert sensor.value(t0 + 1800) == pytest.approx(11)
    assert sensor.value(t0 + 3600) == pytest.approx(12)
    assert sensor.value(t0 + 7200) == 13  # clamped
    falling = simulated({"name": "f", "kind": "linear", "start": 10, "slope": -3, "lower": 5})
    falling.value(t0)
    assert falling.value(t0 + 3600) == pytest.approx(7)
    assert falling.value(t0 + 36000) == 5
    falling.reset()
    assert falling.value(t0 + 99999) == 0  # template: start 0, slope 0, from the next reading


def test_switch_accepts_on_off_words_and_refuses_the_rest():
    switch = simulated({"name": "pump", "kind": "switch", "state": "on"})
    assert isinstance(switch, Switch)
    assert switch.value(0) is True
    for value, state in [(False, False), ("ON", True), ("off", False), (1, True), (0, False), (True, True)]:
        assert switch.set(value) is state
        assert switch.read(5.0).value is state
    for bad in ("maybe", 2, 0.0, None, [1]):
        with pytest.raises(DeviceError, match="true/false"):
            switch.set(bad)
    assert switch.value(0) is True


@pytest.mark.parametrize("config, reason", [
    ({"name": "x"}, "needs 'kind'"),
    ({"name": "x", "kind": "sine"}, "needs 'kind'"),
    ({"name": "x", "kind": ["cyclic"]}, "needs 'kind'"),
    ({"kind": "cyclic"}, "needs a 'name'"),
    ({**AQUARIUM, "cycle": 0}, "cycle must be a positive"),
    ({**AQUARIUM, "min": 30}, "min \\(30\\) is above max"),
    ({**AQUARIUM, "max": "hot"}, "max must be a finite number"),
    ({**AQUARIUM, "poll": -1}, "positive number of seconds"),
    ({"name": "x", "kind": "linear", "lower": 3, "upper": 1}, "lower \\(3\\) is above upper"),
    ({"name": "x", "kind": "linear", "slope": None}, "slope"),
    ({"name": "x", "kind": "switch", "state": "dim"}, "true/false"),
    ("aquarium", "is a table"),
])
def test_simulated_configs_are_validated(config, reason):
    with pytest.raises(DeviceError, match=reason):
        simulated(config)


def test_base_device_is_not_pollable():
    assert BaseDevice.new({"name": "x"}).poll() == -1


@given(t=st.floats(-1e10, 1e10), low=st.floats(-100, 100), span=st.floats(0, 100),
       cycle=st.floats(1, 1e6))
def test_cyclic_sensor_stays_between_min_and_max(t, low, span, cycle):
    sensor = simulated({"name": "x", "kind": "cyclic", "cycle": cycle, "min": low, "max": low + span})
    assert low - 1e-9 <= sensor.value(t) <= low + span + 1e-9
