"""The onewire executive over real sockets: a broker process, a key/value server, a fake sysfs tree."""
from __future__ import annotations

import threading

import pytest
from fake_w1 import FakeW1Tree, w1_slave
from support import free_endpoint, wait_for

from raspy.errors import RequestTimeout
from raspy.executives.onewire import OneWire
from raspy.house.executive import Settings
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.state.kv.client import KvSubscriberClient
from raspy.state.kv.server import KvServer

SENSOR = "28-000005e2fdc3"


@pytest.fixture
def bus(children, tmp_path):
    """A running onewire executive reading ``tmp_path/w1``; yields (tree, client, subscriber, executive)."""
    broker = free_endpoint()
    children.raspy("run", "broker", "--bind", broker, "--heartbeat", "0.2")
    kv_ends = {"kv_snapshot": free_endpoint(), "kv_publisher": free_endpoint(), "kv_collector": free_endpoint()}
    kv = KvServer(kv_ends["kv_snapshot"], kv_ends["kv_publisher"], kv_ends["kv_collector"])
    threading.Thread(target=kv.run, daemon=True).start()
    tree = FakeW1Tree(tmp_path / "w1")
    tree.plug(SENSOR, 23125)
    settings = Settings("onewire", "pi", broker=broker, state_dir=tmp_path, heartbeat=0.2, **kv_ends,
                        options={"devices_dir": str(tree.root), "poll": 1, "pause": 0})
    executive = OneWire(settings)
    runner = threading.Thread(target=executive.run, daemon=True)
    runner.start()
    client = MajorDomoClient(broker, timeout=1.0, retries=3)
    subscriber = KvSubscriberClient("/device/", kv_ends["kv_snapshot"], kv_ends["kv_publisher"]).start()
    wait_for(lambda: client.call("pi.onewire.mmi", "status")[0] == 200, what="every worker connected")
    yield tree, client, subscriber, executive
    subscriber.stop()
    client.close()
    executive.shutdown()
    runner.join(timeout=5)
    kv.stop()
    assert not runner.is_alive(), "the executive did not stop"


def published(subscriber, sensor: str = SENSOR):
    body = subscriber.get(f"/device/pi.onewire.{sensor}")
    return p.unpack(body) if body else None


def test_good_readings_are_published_and_bad_ones_never(bus):
    tree, client, subscriber, executive = bus
    reading = wait_for(lambda: published(subscriber), what="a published reading")
    assert reading["value"] == 23.125 and reading["unit"] == "C" and reading["poll"] == 1
    tree.write(SENSOR, w1_slave(85000, crc=False))  # a bad CRC, then 85 °C: never a value
    wait_for(lambda: client.call("pi.onewire.statistics", "get", "pi.onewire.snmp.sensor_errors")[1]["value"] >= 1,
             what="the bad reading counted as an error")
    assert published(subscriber)["value"] == 23.125
    tree.write(SENSOR, w1_slave(19500))
    wait_for(lambda: published(subscriber)["value"] == 19.5, what="the next good reading")
    assert client.call("pi.onewire.devices", "counters")[1][SENSOR]["errors"] >= 1


def test_sensors_plugged_and_unplugged_at_run_time_are_noticed(bus):
    tree, client, subscriber, executive = bus
    assert client.call("pi.onewire.devices", "list_keys") == (200, [SENSOR])
    tree.plug("10-000802b4c0ce", 21000)
    wait_for(lambda: published(subscriber, "10-000802b4c0ce"), what="the new sensor's reading")
    tree.unplug(SENSOR)
    assert client.call("pi.onewire.devices", "list_keys") == (200, ["10-000802b4c0ce"])
    assert client.call("pi.onewire.devices", "get", SENSOR)[0] == 404


def test_a_missing_bus_is_500_and_the_server_keeps_answering(bus):
    tree, client, subscriber, executive = bus
    tree.unplug(SENSOR)
    (tree.root / "w1_bus_master1").rmdir()
    tree.root.rmdir()
    status, reason = client.call("pi.onewire.devices", "list_keys")
    assert status == 500 and str(tree.root) in reason
    try:
        assert client.call("pi.onewire.mmi", "status")[0] == 200
    except RequestTimeout:
        pytest.fail("the server stopped answering after a missing bus")
