"""One page for the house: every supervisor's summary under ``/host/<hostname>``, silent hosts told apart.

End to end, a hub (broker, kv, fake, web) and two satellites (fake) run as real supervisors over
CURVE on this machine (see test_curve.py); keep-alive intervals are shortened through ``[raspy]
host_interval`` and ``host_refresh``. The publisher's timing is checked alone, on a real socket,
with the supervisor's clock driven by the test.
"""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq
from support import free_endpoint, free_port, wait_for, write_config
from test_curve import TIMINGS, Host, context_of, kv_keys, raspy

from raspy.house.board import Board, LastExit, State, house_states
from raspy.house.config import Config, ConfigError, parse_config
from raspy.house.summary import SILENT_REFRESHES, SummaryPublisher, house_report, read
from raspy.mdp import protocol as p
from raspy.state.kv.client import KvPublisherClient
from raspy.state.kv.message import KVMsg
from raspy.web.hosts import HostSummaries

#: The keep-alive of these tests: a host is silent after SILENT_REFRESHES of them.
REFRESH = 0.5
HOST_TIMINGS = {**TIMINGS, "host_interval": 0.2, "host_refresh": REFRESH}


class HouseHost(Host):
    """A host of test_curve.py with short summary intervals; the hub also runs the page."""

    def __init__(self, children, folder: Path, name: str, hub: "HouseHost | None" = None) -> None:
        self.web_port = free_port() if hub is None else 0
        super().__init__(children, folder, name, hub)

    def write(self, **raspy_extra) -> None:
        super().write(**HOST_TIMINGS, **raspy_extra)
        if self.hub is None:
            text = self.config.read_text()
            self.config.write_text(text + f"\n[executives.web]\nport = {self.web_port}\nrefresh = 1\n")

    def api(self, path: str = "api/status"):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/{path}", timeout=5) as r:
            body = r.read().decode()
        return json.loads(body) if path.startswith("api/") else body

    def hosts(self) -> dict[str, dict]:
        try:
            return {host["name"]: host for host in self.api()["hosts"]}
        except OSError:
            return {}

    def kill_9(self) -> None:
        """SIGKILL the supervisor and every executive it runs (no clean stop, no last word)."""
        executives = [state.pid for state in house_states(self.state_dir).values() if state.pid > 0]
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        for pid in executives:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def fresh(hub: HouseHost, *names: str) -> bool:
    hosts = hub.hosts()
    return all(name in hosts and not hosts[name]["silent"] for name in names)


@pytest.fixture
def house(children, tmp_path):
    """A hub with its page, and two allowed satellites, all running."""
    hub = HouseHost(children, tmp_path / "hub", "hub")
    satellites = [HouseHost(children, tmp_path / name, name, hub) for name in ("shed", "barn")]
    for satellite in satellites:
        assert hub.keys("allow", satellite.name, satellite.public).returncode == 0
    for host in (hub, *satellites):
        host.start()
    wait_for(lambda: fresh(hub, "hub", "shed", "barn"), timeout=30, what="three fresh hosts on the hub's page")
    yield hub, *satellites
    for host in (hub, *satellites):
        if host.proc.poll() is None:
            host.proc.terminate()
            host.proc.wait(timeout=10)


def test_the_hub_shows_every_host_and_tells_a_killed_satellite_silent_then_fresh_again(house):
    hub, shed, barn = house
    wait_for(lambda: {"/device/shed.fake.tank", "/device/barn.fake.tank"} <= kv_keys(hub, "/device/"),
             what="both satellites' devices in the hub's kv")
    wait_for(lambda: {"shed.fake.tank", "barn.fake.tank", "hub.fake.tank"}
             <= {d["name"] for d in hub.api()["devices"]}, what="every device on the page")
    wait_for(lambda: all(ex["state"] == "running" for host in hub.hosts().values() for ex in host["executives"]),
             what="every executive of every host running")
    hosts = hub.hosts()
    assert [ex["name"] for ex in hosts["shed"]["executives"]] == ["fake"]
    assert [ex["name"] for ex in hosts["hub"]["executives"]] == ["broker", "kv", "fake", "web"]
    assert hosts["shed"]["refresh"] == REFRESH and "disk" in hosts["shed"]["health"] and "load" in hosts["shed"]["health"]
    page = hub.api("")
    assert 'data-name="shed"' in page and 'data-name="barn"' in page
    metrics = hub.api("metrics").splitlines()
    assert 'raspy_executive_up{host="shed",name="fake"} 1' in metrics and 'raspy_host_up{host="barn"} 1' in metrics

    listed = raspy("status", "--house", "--config", str(hub.config))
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert [line.split(":")[0] for line in listed.stdout.splitlines() if not line.startswith(" ")] == \
        ["barn", "hub", "shed"]
    assert "shed: fresh, seen" in listed.stdout and "  fake         running   restarts 0" in listed.stdout
    from_barn = raspy("status", "--house", "--config", str(barn.config))  # from a satellite, with its own keys
    assert from_barn.returncode == 0 and from_barn.stdout.count(": fresh, seen") == 3, from_barn.stderr
    assert raspy("status", "--config", str(hub.config)).stdout.startswith("NAME")  # plain status: the board, as before

    context = context_of(barn.curve())  # barn cannot pose as shed: /host/shed is shed's key's alone
    try:
        with KvPublisherClient(hub.kv["collector"], context=context) as publisher:
            publisher.send("/host/", "shed", p.pack({"forged": True}))
    finally:
        context.destroy(linger=0)
    wait_for(lambda: "may not set b'/host/shed'" in hub.log("kv"), what="the refusal in kv's log")

    shed.kill_9()
    killed = time.monotonic()
    wait_for(lambda: hub.hosts()["shed"]["silent"], timeout=SILENT_REFRESHES * REFRESH + 5,
             what="the killed satellite shown silent within a few keep-alive intervals")
    assert time.monotonic() - killed >= SILENT_REFRESHES * REFRESH - 0.5  # not before its summaries could stop
    silent = hub.hosts()
    assert not silent["barn"]["silent"] and not silent["hub"]["silent"]
    assert abs(silent["shed"]["last_seen"] - (time.time() - silent["shed"]["age"])) < 2
    assert "silent" in hub.api("")
    assert 'raspy_host_up{host="shed"} 0' in hub.api("metrics").splitlines()
    listed = raspy("status", "--house", "--config", str(hub.config))
    assert listed.returncode == 1 and "shed: SILENT since" in listed.stdout and "barn: fresh" in listed.stdout

    shed.start()
    wait_for(lambda: fresh(hub, "shed"), timeout=30, what="the satellite fresh again once it runs")
    assert raspy("status", "--house", "--config", str(hub.config)).returncode in (0, 1)  # its fake may still start
    wait_for(lambda: raspy("status", "--house", "--config", str(hub.config)).returncode == 0,
             what="every host fresh and running in raspy status --house")


# -- the publisher alone --------------------------------------------------------------------------


class Collector:
    """A real PULL socket where a kv collector would be; what arrived, decoded."""

    def __init__(self) -> None:
        self.endpoint = free_endpoint()
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PULL)
        self.socket.bind(self.endpoint)

    def received(self) -> list[dict]:
        bodies = []
        while self.socket.poll(200):
            message = KVMsg.from_frames(self.socket.recv_multipart())
            assert message.key == "/host/pi"
            bodies.append(read(message.body))
        return bodies

    def close(self) -> None:
        self.context.destroy(linger=0)


def test_the_publisher_sends_at_once_on_change_at_most_every_interval_and_otherwise_only_at_refresh(tmp_path):
    collector = Collector()
    board = Board.private(2, ["fake"])
    config = Config(hostname="pi", state_dir=tmp_path, kv_collector=collector.endpoint,
                    host_interval=2.0, host_refresh=30.0)
    processes = {"fake": SimpleNamespace(state=State.RUNNING, starts=1)}
    publisher = SummaryPublisher(config, board)
    clock = [time.monotonic()]  # the supervisor's clock, driven by the test from now on

    def tick(at: float) -> int:
        clock[0] = at
        publisher.tick(at, processes)
        return publisher.sent

    try:
        # the connection is made in the background: the first attempts fail and are retried after the interval
        wait_for(lambda: tick(clock[0] + 2.0) == 1, what="the first summary")
        start = clock[0]
        assert [s["sequence"] for s in collector.received()] == [publisher.sequence]
        assert publisher.due == start + 30.0  # the supervisor's loop sleeps until then
        assert tick(start + 29.9) == 1  # nothing changed: nothing sent before the refresh
        assert tick(start + 30.0) == 2  # the keep-alive
        board.slot("fake").set_supervised(state=State.BACKOFF, restarts=3,
                                          last_exit=LastExit(1, "exit 1: boom", time.time()))
        processes["fake"].state = State.BACKOFF
        assert tick(start + 30.5) == 2 and publisher.due == start + 32.0  # a change, but the last one was 0.5 s ago
        assert tick(start + 32.0) == 3
        processes["fake"].state, processes["fake"].starts = State.RUNNING, 2
        assert tick(start + 40.0) == 4  # a change after a quiet while goes at once
        assert publisher.due == start + 70.0
        summaries = collector.received()
        assert [s["sequence"] for s in summaries] == list(range(publisher.sequence - 2, publisher.sequence + 1))
        changed = summaries[1]
        assert changed["host"] == "pi" and changed["refresh"] == 30.0
        assert changed["executives"] == [{"name": "fake", "state": "backoff", "restarts": 3,
                                          "last_exit": {"code": 1, "reason": "exit 1: boom",
                                                        "at": changed["executives"][0]["last_exit"]["at"]}}]
        assert changed["health"]["disk"]["free_bytes"] > 0  # of the state directory's file system
    finally:
        publisher.close()
        collector.close()
        board.close()


def test_the_publisher_without_a_hub_backs_off_to_the_refresh_and_never_waits(tmp_path):
    board = Board.private(1, ["fake"])
    config = Config(hostname="pi", state_dir=tmp_path, kv_collector=free_endpoint(), host_interval=2.0,
                    host_refresh=30.0)
    publisher = SummaryPublisher(config, board)
    try:
        now = time.monotonic()
        publisher.tick(now, {})
        assert publisher.due == pytest.approx(now + 2.0, abs=0.5)  # the first try waits an interval after the start
        dues, now = [], publisher.due
        for _ in range(6):
            publisher.tick(now, {})
            dues.append(publisher.due - now)
            now = publisher.due
        assert dues == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0] and publisher.sent == 0
    finally:
        publisher.close()
        board.close()


def test_a_summary_off_its_shape_is_refused_and_the_report_marks_silent_hosts():
    with pytest.raises(p.ProtocolError):
        read(p.pack({"host": "x", "time": "yesterday"}))
    with pytest.raises(p.ProtocolError):
        read(p.pack([1, 2]))
    now = time.time()
    body = {"host": "shed", "time": now - 100, "started": now - 500, "sequence": 9, "refresh": 30.0,
            "executives": [{"name": "fake", "state": "running", "restarts": 0, "last_exit": None}],
            "health": {"cpu_temperature": float("nan"), "load": [0.25, 0.2, 0.1], "disk": {"free_bytes": -1}}}
    assert read(p.pack(body))["health"] == {"load": [0.25, 0.2, 0.1]}  # what is off its shape is left out
    lines, code = house_report({"/host/shed": p.pack(body), "/host/hub": p.pack(dict(body, time=now))}, now)
    assert code == 1
    assert lines[0] == "hub: fresh, seen 0s ago; load 0.25"
    assert lines[2].startswith("shed: SILENT since ") and lines[2].endswith("(1m40s ago); load 0.25")
    assert house_report({}, now) == (["no host has published a summary under /host/ yet"], 1)


def test_the_page_counts_a_host_from_when_it_received_its_summary_whatever_the_hosts_clock():
    now = time.time()

    def body(when: float, sequence: int, started: float = 1.0) -> bytes:
        return p.pack({"host": "x", "time": when, "started": started, "sequence": sequence, "refresh": 10.0,
                       "executives": [], "health": {}})

    hosts = HostSummaries()
    hosts.update("/host/old", body(now - 100, 5), live=False)    # in the map when the page started: its own time
    hosts.update("/host/ahead", body(now + 3600, 5), live=False)  # a clock an hour ahead: not fresher than now
    hosts.update("/host/behind", body(now - 3600, 5), live=True)  # a lagging clock, heard just now: fresh
    seen = {h["name"]: h for h in hosts.hosts(now + 1)}
    assert seen["old"]["silent"] and seen["old"]["age"] == pytest.approx(101, abs=0.5)
    assert not seen["ahead"]["silent"] and not seen["behind"]["silent"]
    assert [h["silent"] for h in hosts.hosts(now + 31)] == [True, True, True]  # 3 refreshes of silence
    hosts.update("/host/old", body(now - 200, 4), live=True)  # a replay of the same run's older summary: not news
    hosts.update("/host/old", b"junk", live=True)             # dropped, the last good one stays
    assert {h["name"]: h["sequence"] for h in hosts.hosts()}["old"] == 5
    hosts.update("/host/old", body(now - 3600, 1, started=2.0), live=True)  # a new run: news, counted from now
    assert not {h["name"]: h for h in hosts.hosts()}["old"]["silent"]
    hosts.update("/host/old", None)
    assert [h["name"] for h in hosts.hosts()] == ["ahead", "behind"]


def test_status_house_without_an_answering_kv_says_so_and_exits_3(tmp_path):
    config = write_config(tmp_path / "raspy.toml", {"state_dir": str(tmp_path / "state"), "broker": free_endpoint()},
                          {"kv": {}})
    listed = raspy("status", "--house", "--timeout", "0.3", "--config", str(config))
    assert listed.returncode == 3 and "no answer from the key/value server at tcp://127.0.0.1:" in listed.stderr


def test_host_intervals_are_checked_options():
    with pytest.raises(ConfigError, match="host_interval: 60 is more than host_refresh 30"):
        parse_config({"raspy": {"host_interval": 60}}, None, "", import_kinds=False)
    with pytest.raises(ConfigError, match="host_refresh: 0 is not a number > 0"):
        parse_config({"raspy": {"host_refresh": 0}}, None, "", import_kinds=False)
