"""The gpio executive over real sockets: a broker process, a key/value server, gpiozero's mock pins.

Edges are measured with the executive in this process, in a thread: gpiozero's
mock pins live in the process that made them, so only here can the test drive
an input pin. Everything between the pin and the map is the production path
(gpiozero's callback, the executive, its kv socket, the kv server, a
subscriber); a test-only command that drives pins from outside would be a
door into the house that production code would have to carry. The last tests
start ``raspy run gpio`` as a real process on mock pins for what can be seen
from outside: ``set``, the published state, and a bad configuration.
"""
from __future__ import annotations

import queue
import threading
import time

import pytest
from gpio_house import MOCK_ENV, kv_server, mock_pins
from support import free_endpoint, wait_for, write_config

from raspy.executives.gpio import Gpio
from raspy.house.executive import Settings
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.state.kv.client import KvSubscriberClient

PUMP = {"name": "pump", "kind": "relay", "pin": 17, "active_high": False, "on_stop": False}
LAMP = {"name": "lamp", "kind": "dimmer", "pin": 18}
DOOR = {"name": "door", "kind": "contact", "pin": 27, "debounce": 0}
EDGE_DEADLINE = 0.050


class Updates:
    """A subscriber's updates of one key, each with the time it arrived."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.queue: queue.Queue = queue.Queue()

    def __call__(self, key: str, body: bytes | None, properties: dict) -> None:
        if key == self.key and body:
            self.queue.put((time.monotonic(), p.unpack(body)))

    def next(self, timeout: float) -> tuple[float, dict]:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no update of {self.key} within {timeout * 1000:.0f} ms") from None

    def until(self, value, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            _, body = self.next(max(0.0, deadline - time.monotonic()))
            if body["value"] == value:
                return body


@pytest.fixture
def house(children, tmp_path):
    """A broker process, a kv server and a gpio executive running in a thread on mock pins."""
    broker = free_endpoint()
    children.raspy("run", "broker", "--bind", broker, "--heartbeat", "0.2")
    with mock_pins() as pins, kv_server() as ends:
        settings = Settings("gpio", "pi", broker=broker, state_dir=tmp_path, heartbeat=0.2, **ends,
                            options={"devices": [PUMP, LAMP, DOOR]})
        executive = Gpio(settings)
        executive.publish_interval = 3600  # nothing by the poll loop: an update here is an edge or a set
        runner = threading.Thread(target=executive.run, daemon=True)
        runner.start()
        client = MajorDomoClient(broker, timeout=1.0, retries=3)
        wait_for(lambda: client.call("pi.gpio.mmi", "status")[0] == 200, what="every worker connected")
        yield pins, client, ends, executive
        client.close()
        executive.shutdown()
        runner.join(timeout=5)
        assert not runner.is_alive(), "the executive did not stop"


def subscribe(ends: dict, key: str) -> tuple[KvSubscriberClient, Updates]:
    updates = Updates(key)
    subscriber = KvSubscriberClient("/device/", ends["kv_snapshot"], ends["kv_publisher"], callback=updates).start()
    assert subscriber.wait_synced(5), "no snapshot from the kv server"
    return subscriber, updates


def test_an_input_edge_is_in_the_map_within_50_ms(house):
    pins, client, ends, executive = house
    subscriber, updates = subscribe(ends, "/device/pi.gpio.door")
    updates.queue = queue.Queue()  # the snapshot was called back before the sync: only edges count from here
    try:
        latencies = []
        for round_ in range(10):
            closed = round_ % 2 == 0
            driven = time.monotonic()
            pins.pin(27).drive_low() if closed else pins.pin(27).drive_high()  # pull-up: low is closed
            arrived, body = updates.next(timeout=2.0)
            assert body["value"] is closed and body["unit"] is None and body["poll"] == 0
            latencies.append(arrived - driven)
        assert max(latencies) < EDGE_DEADLINE, f"edge to map: {[f'{t * 1000:.1f} ms' for t in latencies]}"
    finally:
        subscriber.stop()


def test_set_drives_the_pin_and_the_confirmed_state_is_published_at_once(house):
    pins, client, ends, executive = house
    subscriber, updates = subscribe(ends, "/device/pi.gpio.pump")
    try:
        status, result = client.call("pi.gpio.devices", "set", ["pump", "on"])
        assert (status, result["value"]) == (200, True)
        assert pins.pin(17).state == 0  # active low
        assert updates.until(True)["value"] is True  # published by the set itself: the poll loop sleeps an hour
        assert client.call("pi.gpio.devices", "set", ["lamp", 40])[1]["value"] == 40
        assert pins.pin(18).state == pytest.approx(0.4)
        status, reason = client.call("pi.gpio.devices", "set", ["door", True])
        assert status == 400 and "only relays" in reason
    finally:
        subscriber.stop()


def test_a_stop_leaves_the_outputs_at_their_on_stop_level(house):
    pins, client, ends, executive = house
    client.call("pi.gpio.devices", "set", ["pump", True])
    client.call("pi.gpio.devices", "set", ["lamp", 80])
    executive.shutdown()
    wait_for(lambda: pins.pin(17).state == 1 and pins.pin(18).state == 0, what="the outputs at their on_stop level")
    assert pins.pin(17).function == "output"  # still driven, not a floating input


def test_a_real_process_on_mock_pins_sets_and_publishes(children, tmp_path):
    broker = free_endpoint()
    children.raspy("run", "broker", "--bind", broker, "--heartbeat", "0.2")
    with kv_server() as ends:
        config = write_config(tmp_path / "house.toml", {"hostname": "pi", "broker": broker, "state_dir": tmp_path, **ends},
                              {"gpio": {"devices": [PUMP, LAMP, DOOR]}})
        children.executive(config, "gpio", env=MOCK_ENV)
        subscriber, updates = subscribe(ends, "/device/pi.gpio.pump")
        try:
            assert updates.until(False)["value"] is False  # every device is published once at start
            with MajorDomoClient(broker, timeout=2.0, retries=3) as client:
                assert client.call("pi.gpio.devices", "list_keys") == (200, ["door", "lamp", "pump"])
                status, result = client.call("pi.gpio.devices", "set", ["pump", 1])
                assert (status, result["value"]) == (200, True)
                assert updates.until(True)["value"] is True
                assert client.call("pi.gpio.devices", "get", "door")[1]["value"] is False
        finally:
            subscriber.stop()


def test_a_bad_configuration_stops_raspy_run_with_the_reason(children, tmp_path):
    config = write_config(tmp_path / "house.toml", {"hostname": "pi"},
                          {"gpio": {"devices": [PUMP, DOOR | {"pin": 17}]}})
    proc = children.executive(config, "gpio", env=MOCK_ENV, stderr=-1, text=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.endswith("house.toml, line 5: executives.gpio.devices[1].pin: GPIO17 is used twice: by 'pump' and 'door'\n")
