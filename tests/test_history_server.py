"""The history executive as a real process: readings from the key/value map, queries over MDP, kill -9."""
from __future__ import annotations

import os
import signal
import time

import pytest
from gpio_house import kv_server
from support import free_endpoint, wait_for, write_config

from raspy.house.config import ConfigError, load_config
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.state.kv.client import KvPublisherClient

DEVICE = "pi.fake.aquarium"


@pytest.fixture
def house(children, tmp_path):
    """A broker process, a kv server, and ``start()`` for the history executive as a process."""
    broker = free_endpoint()
    children.raspy("run", "broker", "--bind", broker, "--heartbeat", "0.2")
    with kv_server() as ends:
        config = write_config(tmp_path / "house.toml",
                              {"hostname": "pi", "broker": broker, "state_dir": tmp_path, **ends},
                              {"history": {"flush_interval": 3600}})
        client = MajorDomoClient(broker, timeout=2.0, retries=3)
        publisher = KvPublisherClient(ends["kv_collector"])

        def start():
            proc = children.executive(config, "history")
            wait_for(lambda: client.call("pi.history.mmi", "status")[0] == 200, what="the history executive")
            return proc

        yield start, client, publisher, tmp_path
        publisher.close()
        client.close()


def publish(publisher, name: str, t: float, value, unit="C") -> None:
    publisher.send("/device/", name, p.pack({"value": value, "unit": unit, "timestamp": t, "poll": 10}))


def points(client, name: str, **query):
    status, result = client.call("pi.history.query", "get", {"device": name, **query})
    return result["points"] if status == 200 else []


def test_readings_in_the_map_become_history_and_survive_kill_9(house):
    start, client, publisher, tmp_path = house
    proc = start()
    now = time.time()
    sent = [(now - 300 + 10 * i, 20 + i / 4) for i in range(30)]
    publish(publisher, DEVICE, *sent[0])  # once it is in, the executive follows the map
    wait_for(lambda: points(client, DEVICE, range="1h"), what="the first reading in the history")
    for t, v in sent[1:]:
        publish(publisher, DEVICE, t, v)
    publish(publisher, "pi.gpio.door", now - 5, True, None)
    publish(publisher, "pi.fake.wind", now - 5, {"speed": 3, "direction": 90}, "m/s")  # no history: not a number
    wait_for(lambda: len(points(client, DEVICE, range="1h")) == 30, what="30 readings in the history")
    answer = client.call("pi.history.query", "get", {"device": DEVICE, "range": "1h"})[1]
    assert answer["unit"] == "C" and answer["step"] == 0 and answer["points"] == [[t, v] for t, v in sent]
    assert points(client, "pi.gpio.door", range="1h") == [[now - 5, 1.0]]
    assert client.call("pi.history.query", "get", {"device": "pi.fake.wind", "range": "1h"})[0] == 404
    listed = {entry["device"]: entry for entry in client.call("pi.history.query", "list")[1]}
    assert sorted(listed) == [DEVICE, "pi.gpio.door"]
    size = listed[DEVICE]["size"]

    os.kill(proc.pid, signal.SIGKILL)  # the query flushed: what it answered is on file
    proc.wait(timeout=10)
    start()
    assert points(client, DEVICE, range="1h") == [[t, v] for t, v in sent]
    publish(publisher, DEVICE, now, 30.0)
    wait_for(lambda: len(points(client, DEVICE, range="1h")) == 31, what="a reading after the restart")
    assert os.path.getsize(tmp_path / "history" / f"{DEVICE}.hist") == size
    damaged = client.call("pi.history.statistics", "get", "pi.history.snmp.damaged")[1]["value"]
    assert damaged == 0


def test_bad_queries_are_refused_with_the_reason(house):
    start, client, publisher, _ = house
    start()
    publish(publisher, DEVICE, time.time(), 21.0)
    wait_for(lambda: points(client, DEVICE, range="1h"), what="a reading")
    for args, status, reason in [
        ({"device": DEVICE, "range": "soon"}, 400, "a span is"),
        ({"device": DEVICE, "range": "1h", "from": 0}, 400, "not both"),
        ({"device": DEVICE, "from": "monday", "to": 5}, 400, "Unix times"),
        ({"device": DEVICE, "range": "1h", "points": 0}, 400, "points must be"),
        ({"device": "../etc", "range": "1h"}, 400, "bad device name"),
        ({"device": "pi.fake.nothing", "range": "1h"}, 404, "no history"),
        ({"range": "1h"}, 400, "'device'"),
        ({"device": DEVICE, "rnage": "1h"}, 400, "'device'"),
    ]:
        got_status, got_reason = client.call("pi.history.query", "get", args)
        assert got_status == status and reason in got_reason, args
    assert len(points(client, DEVICE, range="1h")) == 1


@pytest.mark.parametrize("options, reason", [
    ({"flush": 60}, "history.flush: unknown key; known: kind, enabled, folder, raw, archives, flush_interval, max_devices"),
    ({"raw": {"keep": "1d"}}, "history.raw: a table of keep and every"),
    ({"archives": [{"step": "7m", "keep": "1d"}]}, "history.archives[0]: keep must be a multiple of step"),
    ({"archives": [{"step": "10m", "keep": "1d"}, {"step": "1m", "keep": "7d"}]}, "history.archives[1]: keep must be a multiple of step, and steps must grow"),
    ({"raw": {"keep": "1y", "every": "1s"}}, "history.raw: 31536000 rows: an archive has from 1 to 1000000 rows"),
    ({"flush_interval": 0}, "history.flush_interval: 0 is not an integer from 1 to 3600"),
])
def test_a_bad_history_configuration_stops_start_up(tmp_path, options, reason):
    path = write_config(tmp_path / "house.toml", {}, {"history": options})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert reason in str(info.value)
