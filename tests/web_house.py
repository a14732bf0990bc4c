"""Houses for the status page's tests and benchmark: :class:`FakeHouse` (fixed data, no
sockets) and the ``running_house`` fixture (``raspy start`` with a broker, an echo executive
and the web executive, plus a kv server process)."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import free_endpoint, free_port, wait_for, write_config

from raspy.house.board import State, house_states
from raspy.state.kv.client import KvPublisherClient, fetch_snapshot
from raspy.web.app import Unavailable

TOKEN = "correct horse battery"
NAMES = ("broker", "one", "web")


def executive(name: str, state: str = "running", **kw) -> dict:
    data = {"name": name, "state": state, "pid": 100, "started": 1.0, "uptime": 90.0, "restarts": 0,
            "last_exit": None, "next_start": None, "heartbeat_age": 0.2, "requests": 7, "replies": 7,
            "errors": 0, "bytes_in": 10, "bytes_out": 20, "ready": state == "running"}
    data.update(kw)
    return data


class FakeHouse:
    """Sources with fixed data; records restarts."""

    hostname = "pi"

    def __init__(self) -> None:
        self.execs = [
            executive("broker", requests=1234, errors=3),
            executive("fake", restarts=2, last_exit={"code": -9, "reason": "killed by SIGKILL", "at": time.time() - 60}),
        ]
        self.board_error: str | None = None
        self.made = time.time()
        self.restarted: list[str] = []
        self.calls: list[tuple] = []
        self.answers: dict[tuple, object] = {}
        self.devices_list = [
            {"name": "pi.fake.aquarium", "value": 24.53, "unit": "°C", "timestamp": time.time() - 2, "age": 2.0,
             "interval": 10.0, "stale": False, "history": [24.1, 24.3, 24.53]},
            {"name": 'pi.fake.odd"name', "value": 3, "unit": "", "timestamp": time.time() - 90, "age": 90.0,
             "interval": 10.0, "stale": True, "history": [3.0]},
        ]

    def executives(self) -> list[dict]:
        if self.board_error:
            raise Unavailable(self.board_error)
        return self.execs

    def services(self) -> dict:
        return {"broker": {"up": True, "age": 1.5, "error": None},
                "services": [{"name": "pi.fake.devices", "workers": 1, "idle": 1, "queued": 0}]}

    def devices(self) -> list[dict]:
        return self.devices_list

    def events(self) -> list[dict]:
        return [{"name": "pi.core.door", "value": "opened", "time": time.time()}]

    def host(self) -> dict:
        return {"cpu_temperature": 48.3, "load": [0.5, 0.4, 0.3]}

    def hosts(self) -> list[dict]:
        """This host's own summary, and a satellite that fell silent two minutes before the house was made."""
        now = self.made
        return [
            {"name": "pi", "silent": False, "last_seen": now - 1, "age": 1.0, "refresh": 30.0, "sequence": 7,
             "started": now - 3600, "executives": [{"name": "broker", "state": "running", "restarts": 0,
                                                     "last_exit": None}], "health": self.host()},
            {"name": "shed", "silent": True, "last_seen": now - 120, "age": 120.0, "refresh": 30.0, "sequence": 3,
             "started": now - 600, "executives": [
                 {"name": "fake", "state": "running", "restarts": 1, "last_exit": None},
                 {"name": "onewire", "state": "backoff", "restarts": 4,
                  "last_exit": {"code": 1, "reason": "exit 1: no w1 bus", "at": now - 130}}],
             "health": {"cpu_temperature": 41.5, "load": [0.1, 0.1, 0.1],
                        "disk": {"free_bytes": 3_100_000_000, "total_bytes": 8_000_000_000}}},
        ]

    def restart(self, name: str) -> str:
        if name not in [ex["name"] for ex in self.execs]:
            raise KeyError(name)
        self.restarted.append(name)
        return "restarting"

    def scenarios(self) -> list[dict]:
        return [{"name": "thermostat", "active": True, "running": True, "params": {"low": 24.5, "high": 25.5}}]

    def call(self, service: str, command: str, args) -> tuple[int, object]:
        """Records the request; answers what ``answers`` holds for (service, command), else 200 and args."""
        self.calls.append((service, command, args))
        answer = self.answers.get((service, command), (200, args))
        if isinstance(answer, Exception):
            raise answer
        return answer


def kv_answers(snapshot_endpoint: str) -> bool:
    """True once the kv server at ``snapshot_endpoint`` serves snapshots (it has bound its sockets)."""
    try:
        fetch_snapshot("/", snapshot_endpoint, timeout=0.5)
    except TimeoutError:
        return False
    return True


@dataclass
class RunningHouse:
    url: str
    state_dir: Path
    publisher: KvPublisherClient

    def states(self) -> dict:
        return house_states(self.state_dir)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def api(self, path: str) -> dict:
        return json.loads(self.get(path)[1])

    def post(self, path: str, token: str) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, method="POST", data=b"",
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)


@pytest.fixture
def running_house(children, tmp_path):
    kv = {"snapshot": free_endpoint(), "publisher": free_endpoint(), "collector": free_endpoint()}
    kv_config = write_config(tmp_path / "kv.toml", {"state_dir": str(tmp_path), "kv_snapshot": kv["snapshot"],
                                                    "kv_publisher": kv["publisher"], "kv_collector": kv["collector"]},
                             {"kv": {}})
    children.executive(kv_config, "kv", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_dir, port = tmp_path / "state", free_port()
    config = tmp_path / "raspy.toml"
    config.write_text(f"""[raspy]
hostname = "pi"
state_dir = "{state_dir}"
broker = "{free_endpoint()}"
kv_snapshot = "{kv['snapshot']}"
kv_publisher = "{kv['publisher']}"
kv_collector = "{kv['collector']}"
heartbeat = 0.5

[executives.broker]

[executives.one]
kind = "echo"

[executives.web]
port = {port}
token = "{TOKEN}"
refresh = 1
mmi_interval = 0.2
""")
    with open(tmp_path / "supervisor.out", "ab") as out:
        supervisor = children.raspy("start", "--config", str(config), stdout=out, stderr=subprocess.STDOUT)
    house = RunningHouse(f"http://127.0.0.1:{port}/", state_dir, KvPublisherClient(kv["collector"]))
    try:
        wait_for(lambda: [s.state for s in house.states().values()] == [State.RUNNING] * 3,
                 what=f"{NAMES} running under the supervisor")
        wait_for(lambda: house.get("healthz")[0] == 200, what="the web executive answering")
        wait_for(lambda: kv_answers(kv["snapshot"]), what="the kv server")
        yield house
    finally:
        house.publisher.close()
        supervisor.terminate()  # a clean stop: the board's shared memory goes with it
        supervisor.wait(timeout=30)
