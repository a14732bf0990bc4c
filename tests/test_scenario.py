"""Scenarios: definitions, triggers, runs in threads, failures, the remote-code rule, storage."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from memstore import MemoryStore
from raspy import protocol as p
from raspy.scenario import Api, ScenarioManager, ScenarioService, ScenariosService, check_entries, state_key
from raspy.scenarios.thermostat import decide
from raspy.store import StoreError
from support import wait_for

FILES = {
    "hello.py": "def run(ctx):\n    ctx.publish('/test/hello', ctx.entry)\n    return 'hi'\n",
    "boom.py": "def run(ctx):\n    raise RuntimeError('boom')\n",
    "loop.py": "def run(ctx):\n    while not ctx.wait(0.01):\n        pass\n    return 'stopped'\n",
    # ignores its stop event; only the test's teardown lets it go
    "stubborn.py": "import time\ndef run(ctx):\n    while not ctx.get('/test/release'):\n        time.sleep(0.01)\n",
    "gate.py": "def run(ctx):\n    ctx.stop_event.wait(5)\n",
}


class Kv:
    """The Api on a dict: publish stores, get reads."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.requests: list[tuple] = []
        self.lock = threading.Lock()

    def api(self) -> Api:
        return Api(self.publish, self.request, self.values.get)

    def publish(self, key: str, value: object) -> None:
        with self.lock:
            self.values[key] = value

    def request(self, service: str, command: str, args: object) -> tuple[int, object]:
        self.requests.append((service, command, args))
        return p.OK, None

    def state(self, name: str) -> dict:
        return self.values.get(state_key(name)) or {}


@pytest.fixture
def folder(tmp_path) -> Path:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for name, code in FILES.items():
        (folder / name).write_text(code)
    return folder


@pytest.fixture
def kv():
    return Kv()


@pytest.fixture
def manager(kv, folder):
    m = ScenarioManager(kv.api(), MemoryStore(), folder, stop_grace=0.2)
    m.load_store()
    yield m
    kv.values["/test/release"] = True
    m.stop(1.0)


def call(service, command, args=None):
    return p.parse_reply(service(p.request(command, args)))


def test_a_scenario_runs_with_its_context(manager, kv):
    manager.add({"name": "hello"})
    assert manager.fire("hello", {"key": "/k", "value": 1}) is True
    wait_for(lambda: kv.state("hello").get("runs") == 1 and not kv.state("hello")["running"], what="one run")
    assert kv.values["/test/hello"] == {"key": "/k", "value": 1}
    assert kv.state("hello")["last_result"] == {"ok": True, "value": "hi"}


def test_fire_says_whether_it_must_run(manager, kv):
    manager.add({"name": "gate", "entries": {"/t": {"op": "<", "value": 18}}})
    assert manager.fire("gate") is False  # no temperature yet: the entry does not hold
    kv.values["/t"] = {"value": 17.5}
    assert manager.fire("gate") is True
    assert manager.fire("gate") is False  # running: not started twice
    assert manager.get("gate").runs == 1
    manager.set_active("gate", False)  # disabling stops it
    wait_for(lambda: not manager.get("gate").running, what="the run to stop")
    assert manager.fire("gate") is False


def test_entries_fire_when_their_condition_becomes_true(manager, kv):
    manager.add({"name": "hello", "entries": {"/t": {"op": ">", "value": 25}}})
    runs = lambda: manager.get("hello").runs  # noqa: E731
    for value, expected in [(20, 0), (26, 1), (27, 1), (24, 1), (30, 2)]:
        kv.values["/t"] = value
        manager.on_update("/t", value)
        wait_for(lambda: not manager.get("hello").running)
        assert runs() == expected, value


@pytest.mark.parametrize("op, updates, expected", [
    ("change", [1, 1, 2, 2, 3], 2),
    ("event", [1, 1, 2], 3),
])
def test_change_and_event_entries(manager, op, updates, expected):
    manager.add({"name": "hello", "entries": {"/e": {"op": op}}})
    for value in updates:
        manager.on_update("/e", value)
        wait_for(lambda: not manager.get("hello").running)
    assert manager.get("hello").runs == expected


def test_values_there_at_start_do_not_trigger(manager):
    manager.add({"name": "hello", "entries": {"/e": {"op": "change"}}})
    manager.prime([("/e", 1)])
    assert manager.on_update("/e", 1) == []
    assert manager.on_update("/e", 2) == ["hello"]


def test_a_failing_scenario_is_counted(manager, kv):
    manager.add({"name": "boom"})
    manager.fire("boom")
    wait_for(lambda: kv.state("boom").get("failures") == 1 and not kv.state("boom")["running"])
    assert kv.state("boom")["last_result"] == {"ok": False, "error": "RuntimeError: boom"}
    manager.add({"name": "hello"})
    assert manager.fire("hello") is True  # the others still run


def test_a_timed_out_scenario_is_stopped_then_abandoned(manager, kv):
    manager.add({"name": "loop", "timeout": 5})
    manager.add({"name": "stubborn", "timeout": 5})
    manager.fire("loop")
    manager.fire("stubborn")
    later = time.monotonic() + 10
    assert sorted(manager.check_timeouts(later)) == ["loop", "stubborn"]
    wait_for(lambda: not manager.get("loop").running, what="loop to honour its stop event")
    assert kv.state("loop")["timeouts"] == 1 and kv.state("loop")["last_result"]["value"] == "stopped"
    assert manager.check_timeouts(later + 1) == ["stubborn"]
    assert manager.get("stubborn").abandoned and manager.abandoned == ["stubborn"]
    assert manager.fire("stubborn") is False  # still running: never started twice


def test_stop_abandons_what_ignores_its_stop_event(manager):
    manager.add({"name": "loop", "startup": True})
    manager.add({"name": "stubborn", "startup": True})
    assert sorted(manager.start_startup()) == ["loop", "stubborn"]
    started = time.monotonic()
    assert manager.stop(0.5) == ["stubborn"]
    assert time.monotonic() - started < 1.0
    assert not manager.get("loop").running and manager.get("stubborn").running


def test_remote_code_is_refused_by_default(kv, folder, tmp_path):
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()\ndef run(ctx):\n    pass\n"
    service = ScenariosService(ScenarioManager(kv.api(), None, folder))
    status, reason = call(service, "add", {"name": "evil", "code": code})
    assert status == p.FORBIDDEN and "allow_remote_code" in reason
    call(service, "add", {"name": "hello"})
    status, _ = call(service, "update", {"name": "hello", "code": code})
    assert status == p.FORBIDDEN
    assert call(service, "list_keys") == (p.OK, ["hello"])
    assert not (folder / "evil.py").exists() and not marker.exists()
    assert (folder / "hello.py").read_text() == FILES["hello.py"]


def test_remote_code_when_the_configuration_allows_it(kv, folder):
    manager = ScenarioManager(kv.api(), None, folder, allow_remote_code=True)
    service = ScenariosService(manager)
    assert call(service, "add", {"name": "new", "code": "def run(ctx):\n    return 42\n"})[0] == p.OK
    assert call(service, "add", {"name": "bad", "code": "def run(:\n"})[0] == p.BAD_REQUEST
    manager.fire("new")
    wait_for(lambda: kv.state("new").get("last_result") == {"ok": True, "value": 42})


@pytest.mark.parametrize("table, reason", [
    ({"name": "nofile"}, "no scenario file nofile.py"),
    ({"name": "hello", "file": "../hello.py"}, "bare file name"),
    ({"name": "hello", "entries": {"t": {"op": "<", "value": 1}}}, "starting with '/'"),
    ({"name": "hello", "entries": {"/t": {"op": "<"}}}, "needs a value"),
    ({"name": "hello", "entries": {"/t": {"op": "~"}}}, "condition is"),
    ({"name": "hello", "colour": "red"}, "unknown conf fields"),
    ({"name": "hello", "timeout": -1}, "timeout"),
    ({"name": "a.b"}, "scenario name"),
])
def test_bad_tables_are_400_and_change_nothing(manager, table, reason):
    service = ScenariosService(manager)
    status, why = call(service, "add", table)
    assert status == p.BAD_REQUEST and reason in why
    assert call(service, "list_keys") == (p.OK, [])
    assert manager.store.data == {}


def test_enabled_state_survives_a_restart(kv, folder):
    store = MemoryStore()
    config = [{"name": "hello", "entries": {"/t": {"op": ">", "value": 1}}}]
    first = ScenarioManager(kv.api(), store, folder)
    first.load_config(config)
    with pytest.raises(StoreError, match="not loaded"):  # the list of names would lose stored ones
        first.add({"name": "boom"})
    first.load_store()
    first.set_active("hello", False)
    first.add({"name": "boom", "timeout": 3})
    assert store.get("scenario.main", "keys") == ["boom", "hello"]
    assert store.get("scenario.hello", "conf")["active"] is False
    assert store.get("scenario.hello", "entries") == {"/t": {"op": ">", "value": 1}}
    second = ScenarioManager(kv.api(), store, folder)
    second.load_config(config)
    assert second.load_store() == 2
    assert second.get("hello").conf["active"] is False
    assert second.get("boom").conf["timeout"] == 3
    second.delete("boom")
    assert store.get("scenario.main", "keys") == ["hello"] and store.get("scenario.boom", "conf") is None


def test_configured_scenarios_carry_no_code(kv, folder):
    with pytest.raises(ValueError, match=r"scenarios\[0\]: .*names its file"):
        ScenarioManager(kv.api(), None, folder).load_config([{"name": "x", "code": "def run(ctx): pass"}])


def test_shipped_examples_are_found(kv, tmp_path):
    manager = ScenarioManager(kv.api(), None, tmp_path / "empty")
    assert manager.path_of(manager.add({"name": "thermostat", "active": False})).name == "thermostat.py"


def test_the_service_pair(manager, kv):
    scenarios, scenario = ScenariosService(manager), ScenarioService(manager)
    call(scenarios, "add", {"name": "hello", "params": {"x": 1}})
    assert call(scenarios, "list")[1][0]["conf"]["params"] == {"x": 1}
    assert call(scenario, "disable", "hello")[1]["active"] is False
    assert call(scenario, "fire", "hello") == (p.OK, False)
    assert call(scenario, "enable", "hello")[1]["active"] is True
    assert call(scenario, "fire", "hello") == (p.OK, True)
    wait_for(lambda: call(scenario, "info", "hello")[1]["state"]["runs"] == 1)
    assert call(scenario, "info", "nope")[0] == p.NOT_FOUND
    assert call(scenarios, "update", {"name": "hello", "entries": {"/x": {"op": "event"}}})[1]["entries"] == {
        "/x": {"op": "event"}}
    assert call(scenarios, "store") == (p.OK, 1)
    manager.store.down = True
    status, reason = call(scenario, "disable", "hello")
    assert status == p.ERROR and manager.get("hello").conf["active"] is True


def test_thermostat_decisions():
    assert [decide(t, None, 19, 21) for t in (18, 20, 22)] == [True, None, False]
    assert decide(20, True, 19, 21) is True and decide(20, False, 19, 21) is False
    assert check_entries({}) == {}
