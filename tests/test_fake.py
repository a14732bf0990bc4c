"""FakeDevices through request and reply frames, with a clock the test drives."""
import math

import pytest

from raspy.devices import DeviceError
from raspy.executives.fake import FakeDevices
from raspy.mdp import protocol

AQUARIUM = {"name": "aquarium", "kind": "cyclic", "cycle": 86400, "min": 24, "max": 27, "unit": "C", "poll": 10}
PUMP = {"name": "pump", "kind": "switch"}


class Clock:
    def __init__(self, now: float = 86400.0 * 19000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def fake(clock):
    return FakeDevices([AQUARIUM, PUMP], clock=clock)


def call(service, command, *args):
    return protocol.parse_reply(service(protocol.request(command, *args)))


def test_list_keys(fake):
    assert call(fake, "list_keys") == (200, ["aquarium", "pump"])


def test_get_follows_the_clock(fake, clock):
    assert call(fake, "get", "aquarium") == (200, {"value": 24, "unit": "C", "timestamp": clock.now, "age": 0})
    clock.now += 43200
    status, result = call(fake, "get", "aquarium")
    assert (status, result["value"]) == (200, 27)


def test_add_then_get_then_remove(fake):
    linear = {"name": "tank", "kind": "linear", "start": 10, "slope": 1, "unit": "cm"}
    assert call(fake, "add", linear) == (200, "tank")
    assert call(fake, "get", "tank")[1]["value"] == 10
    assert call(fake, "config", ["tank"])[1]["slope"] == 1
    assert call(fake, "remove", "tank") == (200, None)
    assert call(fake, "get", "tank")[0] == 404
    assert call(fake, "list_keys") == (200, ["aquarium", "pump"])


@pytest.mark.parametrize("args, reason", [
    ({"name": "x", "kind": "sine"}, "needs 'kind'"),
    ({"kind": "switch"}, "needs a 'name'"),
    ({**AQUARIUM, "cycle": -5}, "cycle must be a positive"),
    (AQUARIUM, "'aquarium' exists"),
    ("aquarium", "is a table"),
])
def test_bad_add_is_400_with_the_reason_and_changes_nothing(fake, args, reason):
    before = call(fake, "config", ["aquarium"])
    status, result = call(fake, "add", args)
    assert status == 400 and reason in result
    assert call(fake, "list_keys") == (200, ["aquarium", "pump"])
    assert call(fake, "config", ["aquarium"]) == before


def test_set_a_switch(fake):
    status, result = call(fake, "set", ["pump", "on"])
    assert (status, result["value"]) == (200, True)
    assert call(fake, "get", "pump")[1]["value"] is True
    status, reason = call(fake, "set", ["pump", "half"])
    assert status == 400 and "true/false" in reason
    assert call(fake, "get", "pump")[1]["value"] is True
    status, reason = call(fake, "set", ["aquarium", 25])
    assert status == 400 and "only switches" in reason


def test_config_poll_log_reset_through_frames(fake):
    assert call(fake, "config", ["aquarium", {"name": "aquarium", "max": 28}])[0] == 200
    config = call(fake, "config", ["aquarium"])[1]
    assert config["max"] == 28 and config["min"] == 24
    status, reason = call(fake, "config", ["aquarium", {"name": "aquarium", "cyle": 60}])  # a typo is no extra key
    assert status == 400 and reason.startswith("unknown key 'cyle'; known: name, kind, poll, unit, cycle,")
    assert "cyle" not in call(fake, "config", ["aquarium"])[1]
    status, reason = call(fake, "config", ["aquarium", {"max": 29}])
    assert status == 400 and "name" in reason
    assert call(fake, "poll", ["aquarium"]) == (200, 10)
    assert call(fake, "poll", ["aquarium", 60]) == (200, 60)
    status, reason = call(fake, "poll", ["aquarium", -1])
    assert status == 400 and "positive" in reason
    status, lines = call(fake, "log", "aquarium")
    assert status == 200 and lines[-1].endswith("poll set to 60")
    status, config = call(fake, "reset", "aquarium")
    assert status == 200 and config["max"] == 1 and config["name"] == "aquarium"


@pytest.mark.parametrize("command, args, status", [
    ("get", "nothing", 404),
    ("remove", "nothing", 404),
    ("config", ["nothing"], 404),
    ("poll", ["nothing", 5], 404),
    ("log", "nothing", 404),
    ("get", 42, 400),
    ("get", None, 400),
    ("config", "aquarium", 400),
    ("config", ["aquarium", {"name": "aquarium"}, "extra"], 400),
    ("set", "pump", 400),
    ("fly", "pump", 501),
])
def test_statuses(fake, command, args, status):
    assert call(fake, command, args)[0] == status


def test_a_malformed_request_is_400_and_the_service_still_answers(fake):
    status, _ = protocol.parse_reply(fake([b"get", b"\xc1"]))
    assert status == 400
    assert call(fake, "list_keys")[0] == 200


def test_due_honours_each_poll_interval(clock):
    fake = FakeDevices([AQUARIUM, {**PUMP, "poll": 30}, {"name": "quiet", "kind": "linear", "poll": 0}], clock=clock)
    t = clock.now
    assert [name for name, _ in fake.due(t)] == ["aquarium", "pump", "quiet"]  # each once, polled or not
    assert fake.due(t + 5) == []
    due = fake.due(t + 10)
    assert [name for name, _ in due] == ["aquarium"]
    assert due[0][1].timestamp == t + 10 and due[0][1].unit == "C"
    assert [name for name, _ in fake.due(t + 30)] == ["aquarium", "pump"]
    call(fake, "poll", ["aquarium", 0])
    assert fake.due(t + 1000) == [("pump", fake.devices["pump"].reading)]


def test_a_command_that_changes_a_switch_makes_it_due_at_once(fake, clock):
    t = clock.now
    assert [name for name, _ in fake.due(t)] == ["aquarium", "pump"]  # the pump is not polled: once at first
    assert fake.due(t + 0.5) == []
    call(fake, "set", ["pump", True])
    assert [(name, reading.value) for name, reading in fake.due(t + 1)] == [("pump", True)]
    assert fake.due(t + 2) == []
    call(fake, "reset", "pump")
    call(fake, "config", ["pump"])  # reading the configuration changes nothing
    assert [(name, reading.value) for name, reading in fake.due(t + 3)] == [("pump", False)]
    call(fake, "config", ["pump", {"name": "pump", "state": True}])
    assert [(name, reading.value) for name, reading in fake.due(t + 4)] == [("pump", True)]


def test_bad_start_up_config_is_refused():
    with pytest.raises(DeviceError, match="'pump' exists"):
        FakeDevices([PUMP, PUMP])


# -- the fake executive, with a broker and the key/value server -------------------------------

def test_a_switch_set_through_the_service_reaches_the_map_at_once(children, tmp_path):
    """The switch is polled every 30 s; a change made by ``set`` is published when it is made."""
    from support import broker_up, free_endpoint, live, wait_for, write_config

    from raspy.mdp.client import MajorDomoClient
    from raspy.state.kv.client import KvSubscriberClient

    broker, snapshot, publisher, collector = (free_endpoint() for _ in range(4))
    config = write_config(tmp_path / "raspy.toml",
                          {"hostname": "t", "state_dir": str(tmp_path), "broker": broker, "kv_snapshot": snapshot,
                           "kv_publisher": publisher, "kv_collector": collector, "heartbeat": 0.2},
                          {"kv": {}, "fake": {"devices": [{**PUMP, "poll": 30}]}})
    children.raspy("run", "broker", "--bind", broker, "--heartbeat", "0.2")
    wait_for(lambda: broker_up(broker), what="broker up")
    children.executive(config, "kv")
    children.executive(config, "fake")
    wait_for(lambda: live(broker, "t.fake.devices"), what="the fake devices")
    with KvSubscriberClient("/device/", snapshot, publisher) as sub, MajorDomoClient(broker, timeout=2) as client:
        value = lambda: sub.get("/device/t.fake.pump") and protocol.unpack(sub.get("/device/t.fake.pump"))["value"]  # noqa: E731
        wait_for(lambda: value() is False, what="the first reading")
        for state in (True, False, True):
            assert client.call("t.fake.devices", "set", ["pump", state])[0] == 200
            wait_for(lambda: value() is state, timeout=2, interval=0.01, what=f"the pump {state} in the map")


def test_next_due_is_the_next_poll_or_now_for_a_change(clock):
    fake = FakeDevices([{**AQUARIUM, "poll": 10}, {**PUMP, "poll": 0}], clock=clock)
    t = clock.now
    assert fake.next_due(t) == t  # never published
    fake.due(t)
    assert fake.next_due(t + 1) == t + 10
    call(fake, "set", ["pump", True])
    assert fake.next_due(t + 1) == t + 1
    fake.due(t + 1)
    call(fake, "poll", ["aquarium", 0])
    assert fake.next_due(t + 2) == math.inf  # nothing polled: the publisher waits for a command
