"""The history executive as a real process: readings from the key/value map, queries over MDP, kill -9,
its spool on tmpfs."""
from __future__ import annotations

import os
import signal
import time

import pytest
from gpio_house import kv_server
from support import free_endpoint, wait_for, write_config

from raspy.house.config import ConfigError, load_config
from raspy.house.executive import Settings
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.state.history.ring import HistoryFile
from raspy.state.history.spool import HEADER, parse, record
from raspy.state.kv.client import KvPublisherClient

DEVICE = "pi.fake.aquarium"


@pytest.fixture
def house(children, tmp_path):
    """A broker process, a kv server, and ``start(**options)`` for the history executive as a process
    (its log in ``tmp_path / "history.log"``)."""
    broker = free_endpoint()
    children.raspy("run", "broker", "--bind", broker, "--heartbeat", "0.2")
    with kv_server() as ends, open(tmp_path / "history.log", "ab") as log:
        client = MajorDomoClient(broker, timeout=2.0, retries=3)
        publisher = KvPublisherClient(ends["kv_collector"])

        def start(**options):
            config = write_config(tmp_path / "house.toml",
                                  {"hostname": "pi", "broker": broker, "state_dir": tmp_path, **ends},
                                  {"history": {"flush_interval": 3600, **options}})
            proc = children.executive(config, "history", stderr=log)
            wait_for(lambda: client.call("pi.history.mmi", "status")[0] == 200, what="the history executive")
            return proc

        yield start, client, publisher, tmp_path
        publisher.close()
        client.close()
    spool_of(tmp_path).unlink(missing_ok=True)  # a test that ends with a kill -9 leaves it in /dev/shm


def spool_of(state_dir):
    return Settings("history", "pi", state_dir=state_dir).ram_file("spool")


def statistic(client, name: str) -> int:
    return client.call("pi.history.statistics", "get", f"pi.history.snmp.{name}")[1]["value"]


def on_file(state_dir, name: str = DEVICE) -> list[list[float]]:
    file = HistoryFile.open(state_dir / "history" / f"{name}.hist")
    try:
        return sorted([t, v] for _, t, v in file.read_raw())
    finally:
        file.close()


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

    os.kill(proc.pid, signal.SIGKILL)  # what it answered is in the spool
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
    ({"flush": 60}, "history.flush: unknown key; known: kind, enabled, folder, raw, archives, flush_interval, spool, "
                    "spool_bytes, max_devices"),
    ({"raw": {"keep": "1d"}}, "history.raw: a table of keep and every"),
    ({"archives": [{"step": "7m", "keep": "1d"}]}, "history.archives[0]: keep must be a multiple of step"),
    ({"archives": [{"step": "10m", "keep": "1d"}, {"step": "1m", "keep": "7d"}]}, "history.archives[1]: keep must be a multiple of step, and steps must grow"),
    ({"raw": {"keep": "1y", "every": "1s"}}, "history.raw: 31536000 rows: an archive has from 1 to 1000000 rows"),
    ({"flush_interval": 0}, "history.flush_interval: 0 is not an integer from 1 to 86400"),
    ({"spool_bytes": 1024}, "history.spool_bytes: 1024 is not an integer from 4096 to 268435456"),
])
def test_a_bad_history_configuration_stops_start_up(tmp_path, options, reason):
    path = write_config(tmp_path / "house.toml", {}, {"history": options})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert reason in str(info.value)


def send(client, publisher, sent, name: str = DEVICE) -> None:
    """Publish readings; return once the executive has taken them all (asking its statistics, not a query)."""
    before = statistic(client, "readings")
    publish(publisher, name, *sent[0])  # once one is in, the executive follows the map
    wait_for(lambda: statistic(client, "readings") == before + 1, what="the first reading taken")
    for t, v in sent[1:]:
        publish(publisher, name, t, v)
    wait_for(lambda: statistic(client, "readings") == before + len(sent), what=f"{len(sent)} readings taken")


def test_readings_not_yet_on_file_survive_kill_9_through_the_spool(house):
    start, client, publisher, tmp_path = house
    proc = start()
    sent = [(time.time() - 300 + 10 * i, 20 + i / 4) for i in range(20)]
    send(client, publisher, sent)
    assert statistic(client, "bytes_written") == 0  # nothing flushed: a flush is an hour away
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    start()
    assert points(client, DEVICE, range="1h") == [[t, v] for t, v in sent]
    assert statistic(client, "recovered") == 20
    assert on_file(tmp_path) == [[t, v] for t, v in sent]  # written at start
    assert os.path.getsize(spool_of(tmp_path)) == HEADER.size  # then emptied


def _garbage(path):
    with open(path, "ab") as f:
        f.write(b"\x00 not a record \xff" * 8)


def _torn(path):
    os.truncate(path, os.path.getsize(path) - 7)


def _wrong_magic(path):
    with open(path, "r+b") as f:
        f.write(b"RASPYXXX")


@pytest.mark.parametrize("damage, kept, counter, logged", [
    (_garbage, 10, "spool_damaged", True),
    (_torn, 9, "spool_torn", False),
    (_wrong_magic, 0, "spool_damaged", True),
])
def test_a_damaged_spool_is_reported_and_its_good_records_kept(house, damage, kept, counter, logged):
    start, client, publisher, tmp_path = house
    proc = start()
    sent = [(time.time() - 300 + 10 * i, float(i)) for i in range(10)]
    send(client, publisher, sent)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    damage(spool_of(tmp_path))
    start()
    assert statistic(client, counter) == 1 and statistic(client, "recovered") == kept
    assert points(client, DEVICE, range="1h")[:kept] == [[t, v] for t, v in sent[:kept]]
    log = (tmp_path / "history.log").read_text()
    assert ("ERROR" in log and "is damaged, discarded" in log) == logged
    send(client, publisher, [(time.time(), 1.0)])  # and it goes on
    assert os.path.getsize(spool_of(tmp_path)) > HEADER.size


def test_a_full_spool_makes_history_write_its_files_early(house):
    start, client, publisher, tmp_path = house
    start(spool_bytes=4096)
    per_flush = -(-(4096 - HEADER.size) // len(record(DEVICE, 0.0, 0.0, "C")))  # records that fill it
    sent = [(time.time() - 3000 + 10 * i, float(i)) for i in range(per_flush + 5)]
    send(client, publisher, sent)
    assert statistic(client, "early_flushes") == 1 and statistic(client, "bytes_written") > 0
    assert on_file(tmp_path) == [[t, v] for t, v in sent[:per_flush]]
    assert [r[1:3] for r in parse(spool_of(tmp_path).read_bytes()).readings] == sent[per_flush:]


def test_a_clean_stop_writes_the_files_and_leaves_no_spool(house):
    start, client, publisher, tmp_path = house
    proc = start()
    sent = [(time.time() - 300 + 10 * i, float(i)) for i in range(10)]
    send(client, publisher, sent)
    assert len(parse(spool_of(tmp_path).read_bytes()).readings) == 10
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert on_file(tmp_path) == [[t, v] for t, v in sent]
    assert not spool_of(tmp_path).exists()
