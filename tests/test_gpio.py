"""GPIO devices and the gpio executive on gpiozero's mock pins, without sockets.

The pins are gpiozero's own MockFactory (MockPWMPin, so dimmers work): the
executive drives and reads them exactly as it would lgpio's.
"""
from __future__ import annotations

import pytest
from gpio_house import kv_server, mock_pins
from support import write_config

from raspy.devices import DeviceError
from raspy.executives.gpio import Gpio, GpioDevices
from raspy.house.config import ConfigError, load_config
from raspy.house.executive import Settings
from raspy.mdp import protocol

PUMP = {"name": "pump", "kind": "relay", "pin": 17, "active_high": False, "initial": False, "on_stop": False}
LAMP = {"name": "lamp", "kind": "dimmer", "pin": 18, "initial": 30, "on_stop": 0}
DOOR = {"name": "door", "kind": "contact", "pin": 27}
HALL = {"name": "hall", "kind": "motion", "pin": 22}


@pytest.fixture
def pins():
    with mock_pins() as factory:
        yield factory


@pytest.fixture
def gpio(pins, tmp_path):
    """A gpio executive, not run: its service is called directly (edges still go to a kv server)."""
    with kv_server() as ends:
        executive = Gpio(Settings("gpio", "pi", state_dir=tmp_path, **ends,
                                  options={"devices": [PUMP, LAMP, DOOR, HALL]}))
        yield executive
        executive.close()


def call(executive, command, *args):
    return protocol.parse_reply(executive.devices(protocol.request(command, *args)))


def test_outputs_start_at_their_initial_level(gpio, pins):
    assert pins.pin(17).function == "output" and pins.pin(17).state == 1  # active low: off is high
    assert pins.pin(18).state == pytest.approx(0.3)
    assert call(gpio, "get", "pump")[1]["value"] is False
    assert call(gpio, "get", "lamp")[1] | {"timestamp": 0} == {"value": 30.0, "unit": "%", "timestamp": 0, "age": 0}


def test_set_drives_the_pin_and_answers_what_the_pin_reads(gpio, pins):
    status, result = call(gpio, "set", ["pump", "on"])
    assert (status, result["value"]) == (200, True)
    assert pins.pin(17).state == 0  # active low
    assert call(gpio, "set", ["lamp", 55.5])[1]["value"] == 55.5
    assert pins.pin(18).state == pytest.approx(0.555)
    assert call(gpio, "set", ["pump", False])[1]["value"] is False and pins.pin(17).state == 1


def test_get_reports_the_pin_not_the_last_request(gpio, pins):
    call(gpio, "set", ["pump", True])
    pins.pin(17).state = 1  # something else drove the pin high: the relay is off
    assert call(gpio, "get", "pump")[1]["value"] is False


def test_inputs_read_their_pin(gpio, pins):
    assert call(gpio, "get", "door")[1]["value"] is False  # pull-up: a high pin is an open contact
    pins.pin(27).drive_low()
    assert call(gpio, "get", "door")[1]["value"] is True
    pins.pin(22).drive_high()  # a PIR pulls its line up when it sees motion
    assert call(gpio, "get", "hall")[1]["value"] is True


@pytest.mark.parametrize("args, status, reason", [
    (["door", True], 400, "only relays, switches and dimmers"),
    (["pump", "half"], 400, "true/false"),
    (["lamp", 101], 400, "0 to 100"),
    (["lamp", True], 400, "0 to 100"),
    (["pump"], 400, "needs [name, value]"),
    (["cellar", True], 404, "no device"),
])
def test_a_refused_set_leaves_the_pin_alone(gpio, pins, args, status, reason):
    before = pins.pin(17).state, pins.pin(18).state
    got_status, got_reason = call(gpio, "set", args)
    assert got_status == status and reason in got_reason
    assert (pins.pin(17).state, pins.pin(18).state) == before


def test_a_stop_leaves_the_outputs_at_their_on_stop_level(pins, tmp_path):
    devices = [PUMP | {"on_stop": True}, LAMP | {"on_stop": 10}, DOOR]
    executive = Gpio(Settings("gpio", "pi", state_dir=tmp_path, options={"devices": devices}))
    call(executive, "set", ["pump", False])
    call(executive, "set", ["lamp", 90])
    executive.close()
    assert pins.pin(17).function == "output" and pins.pin(17).state == 0  # on, active low
    assert pins.pin(18).function == "output" and pins.pin(18).state == pytest.approx(0.1)
    pins.pin(27).drive_low()  # a closed input no longer calls anything
    assert executive.devices.devices["door"].reading is None or not executive.devices.devices["door"].reading.value


def test_wiring_is_fixed_at_run_time_and_the_rest_can_change(gpio, pins):
    status, reason = call(gpio, "config", ["pump", {"name": "pump", "pin": 5}])
    assert status == 400 and "pin is fixed" in reason
    status, reason = call(gpio, "config", ["pump", {"name": "pump", "active_high": True}])
    assert status == 400 and "active_high is fixed" in reason
    assert call(gpio, "config", ["pump", {"name": "pump", "on_stop": True, "poll": 60}])[0] == 200
    assert call(gpio, "poll", ["pump"]) == (200, 60)
    status, config = call(gpio, "reset", "pump")
    assert status == 200 and config["pin"] == 17 and config["on_stop"] is False and config["poll"] == 0


def test_due_publishes_each_device_once_then_changes_and_polls(gpio, pins):
    devices = gpio.devices
    assert [name for name, _ in devices.due(1000.0)] == ["door", "hall", "lamp", "pump"]
    assert devices.due(1001.0) == []
    call(gpio, "set", ["pump", True])
    assert [(name, r.value) for name, r in devices.due(1002.0)] == [("pump", True)]
    call(gpio, "poll", ["door", 10])
    assert [name for name, _ in devices.due(1010.0)] == ["door"]


@pytest.mark.parametrize("tables, reason", [
    ([PUMP, PUMP | {"name": "fan"}], "GPIO17 is used twice: by 'pump' and 'fan'"),
    ([PUMP, PUMP | {"pin": 5}], "two devices are called 'pump'"),
    ([PUMP | {"pin": 2}], "GPIO2 is input-only"),
    ([LAMP | {"pin": 3}], "GPIO3 is input-only"),
    ([DOOR | {"pin": 3, "pull": "down"}], "fixed pull-up"),
    ([PUMP | {"active_hihg": True}], "unknown key(s) active_hihg"),
    ([PUMP | {"pin": 28}], "from 0 to 27"),
    ([PUMP | {"pin": "17"}], "from 0 to 27"),
    ([PUMP | {"kind": "pump"}], "needs 'kind'"),
    ([PUMP | {"on_stop": "maybe"}], "on_stop"),
    ([LAMP | {"frequency": 0}], "frequency"),
    ([DOOR | {"pull": "sideways"}], "pull must be one of"),
    ([DOOR | {"pull": "none"}], "active_high (needed"),
    ([DOOR | {"active_high": True}], "only with pull = \"none\""),
    ([DOOR | {"debounce": 5}], "debounce"),
    (["door"], "is a table"),
])
def test_bad_tables_are_refused_with_the_reason(tables, reason):
    with pytest.raises(DeviceError) as info:
        GpioDevices(tables)
    assert reason in str(info.value)


def test_a_bad_configuration_stops_start_up_naming_file_line_and_reason(tmp_path):
    path = write_config(tmp_path / "house.toml", {}, {"gpio": {"devices": [PUMP, PUMP | {"name": "fan"}]}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).endswith("house.toml, line 4: executives.gpio.devices[1].pin: "
                                    "GPIO17 is used twice: by 'pump' and 'fan'")
    write_config(path, {}, {"gpio": {"devices": [PUMP], "device": []}})
    with pytest.raises(ConfigError, match="executives.gpio.device: unknown key; known: kind, enabled, devices"):
        load_config(path)
    write_config(path, {}, {"gpio": {"devices": [PUMP, LAMP, DOOR, HALL]}})
    assert load_config(path).executives["gpio"].kind == "gpio"


def test_a_pin_that_cannot_be_opened_is_a_clear_error(pins, tmp_path):
    from gpiozero import DigitalOutputDevice

    holder = DigitalOutputDevice(17)  # another program's device on the same pin
    with pytest.raises(Exception, match="pump: cannot open GPIO17"):
        Gpio(Settings("gpio", "pi", state_dir=tmp_path, options={"devices": [PUMP]}))
    holder.close()
