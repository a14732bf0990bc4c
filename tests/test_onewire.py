"""1-Wire thermometers against a fake sysfs tree: the reading rules, retries, and the service's statuses."""
import math

import pytest
from fake_w1 import ZERO_SCRATCHPAD, FakeW1Tree, w1_slave

from raspy.executives.onewire import OneWireBus, OneWireDevices, OneWireError, UnknownSensor, parse_w1_slave
from raspy.mdp import protocol

SENSOR = "28-000005e2fdc3"
OTHER = "28-0000061c7a4b"


@pytest.fixture
def tree(tmp_path):
    tree = FakeW1Tree(tmp_path / "devices")
    tree.plug(SENSOR)
    return tree


def bus_for(tree, *retry_texts, sensor=SENSOR, retries=3):
    return OneWireBus(tree.root, retries=retries, pause=0, sleep=tree.retry_script(sensor, *retry_texts))


def call(service, command, *args):
    return protocol.parse_reply(service(protocol.request(command, *args)))


def test_parse_real_output():
    assert parse_w1_slave(w1_slave(23125)) == 23125
    assert parse_w1_slave(w1_slave(-10062)) == -10062


def test_sensors_lists_thermometers_only(tree):
    (tree.root / "3b-0000001a2b3c").mkdir()
    (tree.root / "01-000012345678").mkdir()  # an iButton, not a thermometer
    (tree.root / "28-junk").mkdir()
    bus = OneWireBus(tree.root)
    assert bus.sensors() == ["28-000005e2fdc3", "3b-0000001a2b3c"]


def test_a_good_reading(tree):
    bus = bus_for(tree)
    assert bus.read(SENSOR) == 23.125
    assert vars(bus.counters[SENSOR]) == {"reads": 1, "retries": 0, "errors": 0}


@pytest.mark.parametrize("bad", [
    w1_slave(23125, crc=False),
    "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n",
    "72 01 4b 46 7f ff 0e 10 57 : cr",
    "",
    w1_slave(0, scratchpad=ZERO_SCRATCHPAD),
    w1_slave(85000),
    w1_slave(200000),
    "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=\n",
], ids=["crc", "one-line", "truncated", "empty", "all-zero", "power-on", "out-of-range", "no-value"])
def test_a_bad_read_is_retried_then_the_good_value_returned(tree, bad):
    tree.write(SENSOR, bad)
    bus = bus_for(tree, w1_slave(21500))
    assert bus.read(SENSOR) == 21.5
    assert vars(bus.counters[SENSOR]) == {"reads": 1, "retries": 1, "errors": 0}


def test_a_bad_read_that_persists_is_an_error_never_a_value(tree):
    tree.write(SENSOR, w1_slave(23125, crc=False))
    bus = bus_for(tree, retries=2)
    with pytest.raises(OneWireError, match="no good reading after 3 tries: CRC check failed"):
        bus.read(SENSOR)
    assert vars(bus.counters[SENSOR]) == {"reads": 1, "retries": 2, "errors": 1}


def test_85000_is_refused_on_the_first_read_only(tree):
    tree.write(SENSOR, w1_slave(85000))
    bus = bus_for(tree, retries=1)
    with pytest.raises(OneWireError, match="power-on"):
        bus.read(SENSOR)
    tree.write(SENSOR, w1_slave(84000))
    assert bus.read(SENSOR) == 84.0
    tree.write(SENSOR, w1_slave(85000))
    assert bus.read(SENSOR) == 85.0  # a trusted sensor may really be at 85 C


def test_a_sensor_plugged_in_again_is_distrusted_again(tree):
    bus = bus_for(tree, retries=0)
    assert bus.read(SENSOR) == 23.125
    tree.unplug(SENSOR)
    assert bus.sensors() == []
    tree.plug(SENSOR, millis=85000)
    with pytest.raises(OneWireError, match="power-on"):
        bus.read(SENSOR)


def test_an_unreadable_file_is_retried(tree):
    (tree.root / SENSOR / "w1_slave").unlink()
    bus = bus_for(tree, w1_slave(19000))
    assert bus.read(SENSOR) == 19.0


def test_an_unplugged_sensor_is_unknown(tree):
    bus = bus_for(tree)
    tree.unplug(SENSOR)
    with pytest.raises(UnknownSensor):
        bus.read(SENSOR)


def test_the_pause_is_used_between_tries(tree):
    pauses = []
    tree.write(SENSOR, w1_slave(1, crc=False))
    bus = OneWireBus(tree.root, retries=2, pause=0.25, sleep=pauses.append)
    with pytest.raises(OneWireError):
        bus.read(SENSOR)
    assert pauses == [0.25, 0.25]


def test_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(OneWireError, match="cannot list 1-Wire devices in .*nowhere"):
        OneWireBus(tmp_path / "nowhere").sensors()


# -- the service -----------------------------------------------------------

class Clock:
    now = 1_700_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(tree, clock):
    return OneWireDevices(OneWireBus(tree.root, retries=1, pause=0), clock=clock)


def test_list_keys_notices_sensors_coming_and_going(tree, service):
    assert call(service, "list_keys") == (200, [SENSOR])
    tree.plug(OTHER, millis=18000)
    assert call(service, "list_keys") == (200, [SENSOR, OTHER])
    assert call(service, "get", OTHER)[1]["value"] == 18.0
    tree.unplug(SENSOR)
    tree.unplug(OTHER)
    assert call(service, "list_keys") == (200, [])
    assert call(service, "get", SENSOR)[0] == 404


def test_get_reads_an_unpolled_sensor_now(tree, service, clock):
    assert call(service, "get", SENSOR) == (200, {"value": 23.125, "unit": "C", "timestamp": clock.now, "age": 0})
    tree.write(SENSOR, w1_slave(24000))
    clock.now += 5
    assert call(service, "get", SENSOR)[1]["value"] == 24.0


def test_get_of_a_polled_sensor_answers_the_last_reading_and_its_age(tree, service, clock):
    assert call(service, "poll", [SENSOR, 60]) == (200, 60)
    assert [(name, r.value) for name, r in service.due(clock.now)] == [(SENSOR, 23.125)]
    tree.write(SENSOR, w1_slave(30000))
    clock.now += 20
    assert service.due(clock.now) == []
    status, result = call(service, "get", SENSOR)
    assert (status, result["value"], result["age"]) == (200, 23.125, 20)
    clock.now += 40
    assert [(name, r.value) for name, r in service.due(clock.now)] == [(SENSOR, 30.0)]


def test_a_failed_poll_keeps_the_last_good_value_ageing(tree, service, clock):
    call(service, "poll", [SENSOR, 10])
    service.due(clock.now)
    tree.write(SENSOR, w1_slave(0, scratchpad=ZERO_SCRATCHPAD))
    clock.now += 10
    assert service.due(clock.now) == []
    status, result = call(service, "get", SENSOR)
    assert (result["value"], result["age"]) == (23.125, 10)
    assert "all-zero scratchpad" in call(service, "log", SENSOR)[1][-1]
    assert call(service, "counters")[1][SENSOR] == {"reads": 2, "retries": 1, "errors": 1}


def test_a_sensor_giving_only_bad_reads_answers_500_with_the_reason(tree, service):
    tree.write(SENSOR, w1_slave(23125, crc=False))
    status, reason = call(service, "get", SENSOR)
    assert status == 500 and "CRC check failed" in reason
    tree.write(SENSOR, w1_slave(22000))
    assert call(service, "get", SENSOR)[1]["value"] == 22.0


def test_fahrenheit(service):
    assert call(service, "config", [SENSOR, {"name": SENSOR, "unit": "F"}])[0] == 200
    status, result = call(service, "get", SENSOR)
    assert (result["value"], result["unit"]) == (pytest.approx(73.625), "F")


def test_config_and_poll_rules(service):
    assert call(service, "config", [SENSOR]) == (200, {"oid": "sensor.temperature", "name": SENSOR, "poll": 0, "unit": "C"})
    status, reason = call(service, "config", [SENSOR, {"name": SENSOR, "unit": "K"}])
    assert status == 400 and "unit" in reason
    assert call(service, "poll", [SENSOR, "often"])[0] == 400
    assert call(service, "config", ["28-000000000000"])[0] == 404
    assert call(service, "get", "../../etc")[0] == 404
    assert call(service, "add", {"name": "x"})[0] == 501


def test_missing_directory_is_500_and_the_service_keeps_answering(tmp_path, clock):
    root = tmp_path / "devices"
    service = OneWireDevices(OneWireBus(root, retries=0, pause=0), clock=clock)
    status, reason = call(service, "list_keys")
    assert status == 500 and "cannot list 1-Wire devices" in reason
    assert call(service, "get", SENSOR)[0] == 500
    assert service.due(clock.now) == []
    FakeW1Tree(root).plug(SENSOR)
    assert call(service, "list_keys") == (200, [SENSOR])
    assert call(service, "get", SENSOR)[1]["value"] == 23.125


def test_the_publisher_sleeps_until_the_next_poll_even_when_a_sensor_is_unplugged(tree, service, clock):
    assert service.next_due(clock.now) == math.inf  # nothing polled: nothing to wake up for
    call(service, "poll", [SENSOR, 60])
    assert service.next_due(clock.now) == clock.now  # never read yet
    service.due(clock.now)
    assert service.next_due(clock.now) == clock.now + 60
    tree.unplug(SENSOR)
    clock.now += 60
    assert service.due(clock.now) == []
    assert service.next_due(clock.now) == clock.now + 60  # not due again at once: no busy loop
