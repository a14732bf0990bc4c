"""Scenarios: definitions, triggers, runs in threads, failures, the remote-code rule, storage."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from memstore import MemoryStore
from support import wait_for

from raspy.automation.actions import Actions
from raspy.automation.scenario import (
    ScenarioCollectionService,
    ScenarioManager,
    ScenarioService,
    check_entries,
    state_key,
)
from raspy.automation.store import StoreError
from raspy.mdp import protocol as p
from raspy.scenarios.thermostat import decide

FILES = {
    "hello.py": "def run(ctx):\n    ctx.publish('/test/hello', ctx.entry)\n    return 'hi'\n",
    "boom.py": "def run(ctx):\n    raise RuntimeError('boom')\n",
    "loop.py": "def run(ctx):\n    while not ctx.wait(0.01):\n        pass\n    return 'stopped'\n",
    # ignores its stop event; only the test's teardown lets it go
    "stubborn.py": "import time\ndef run(ctx):\n    while not ctx.get('/test/release'):\n        time.sleep(0.01)\n",
    "gate.py": "def run(ctx):\n    ctx.stop_event.wait(5)\n",
}


class Kv:
    """The house's actions on a dict: publish stores, get reads."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.requests: list[tuple] = []
        self.lock = threading.Lock()

    def api(self) -> Actions:
        return Actions(self.publish, self.request, self.values.get, self.fire)

    def fire(self, name: str, entry: dict) -> bool:
        raise AssertionError("scenarios cannot fire scenarios")

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
    service = ScenarioCollectionService(ScenarioManager(kv.api(), None, folder))
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
    service = ScenarioCollectionService(manager)
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
    ({"name": "hello", "colour": "red"}, "unknown key 'colour'"),
    ({"name": "hello", "timeout": -1}, "timeout"),
    ({"name": "a.b"}, "scenario name"),
])
def test_bad_tables_are_400_and_change_nothing(manager, table, reason):
    service = ScenarioCollectionService(manager)
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


def test_configured_scenarios_carry_no_code(kv, folder, caplog):
    manager = ScenarioManager(kv.api(), None, folder, allow_remote_code=True)
    manager.load_config([{"name": "x", "code": "def run(ctx): pass"}, {"name": "hello"}])
    assert [s.name for s in manager.all()] == ["hello"] and not (folder / "x.py").exists()
    assert "configured scenario x left out: a configured scenario names its file" in caplog.text


def test_a_scenario_file_checks_its_params_at_add_and_before_each_run(manager, folder):
    (folder / "picky.py").write_text("def check(params):\n    if params.get('n', 0) < 1:\n"
                                     "        raise ValueError('n must be at least 1')\n\n"
                                     "def run(ctx):\n    return ctx.params['n']\n")
    service = ScenarioCollectionService(manager)
    assert call(service, "add", {"name": "picky", "params": {"n": 0}}) == (p.BAD_REQUEST, "n must be at least 1")
    assert call(service, "list_keys") == (p.OK, [])
    assert call(service, "add", {"name": "picky", "params": {"n": 2}})[0] == p.OK
    assert call(service, "update", {"name": "picky", "params": {"n": -1}}) == (p.BAD_REQUEST, "n must be at least 1")
    assert manager.get("picky").conf["params"] == {"n": 2}
    # the owner edits the file: the next run is refused by the new check, with its reason
    (folder / "picky.py").write_text("def check(params):\n    raise ValueError('n is never enough')\n\n"
                                     "def run(ctx):\n    return ctx.params['n']\n")
    assert manager.fire("picky") is True
    wait_for(lambda: manager.get("picky").last_result is not None, what="the run")
    assert manager.get("picky").last_result == {"ok": False, "error": "ValueError: n is never enough"}


def test_shipped_examples_are_found(kv, tmp_path):
    manager = ScenarioManager(kv.api(), None, tmp_path / "empty")
    params = {"sensor": "/t", "service": "pi.fake.devices", "switch": "heater", "low": 19, "high": 21}
    assert manager.path_of(manager.add({"name": "thermostat", "params": params})).name == "thermostat.py"


def test_the_service_pair(manager, kv):
    scenarios, scenario = ScenarioCollectionService(manager), ScenarioService(manager)
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


# -- end to end: broker, kv and Core processes, devices served from the test ----------------------

@pytest.fixture
def house(children, tmp_path):
    from corehouse import CoreHouse

    h = CoreHouse(children, tmp_path)
    h.start_broker()
    h.start_kv()
    yield h
    h.stop()


def test_thermostat_follows_a_temperature_cycle(house):
    """A cyclic sensor from 17 to 23 degrees, marks 18 and 22: on below 18, off above 22, else unchanged."""
    from corehouse import HOST

    from raspy.executives.fake import FakeDevices

    devices = FakeDevices([{"name": "heater", "kind": "switch"},
                           {"name": "temperature", "kind": "cyclic", "min": 17, "max": 23, "cycle": 100}])
    switched: list[bool] = []

    def switch(frames):
        command, args = p.parse_request(frames)
        if command == "set":
            switched.append(args[1])
        return devices(frames)

    house.worker(f"{HOST}.fake.devices", switch)
    key = f"/device/{HOST}.fake.temperature"
    house.start_core(store_wait=0, scenarios=[{"name": "thermostat", "startup": True, "params": {
        "sensor": key, "service": f"{HOST}.fake.devices", "switch": "heater", "low": 18, "high": 22,
        "interval": 0.05}}])
    heater = lambda: devices.device("heater").value(0)  # noqa: E731
    with house.kv_publisher() as publisher:
        for t in range(0, 101, 10):  # one cycle, in steps of a tenth
            reading = devices.device("temperature").read(t)
            publisher.send("", key, p.pack(reading.as_dict()))
            if reading.value < 18:
                wait_for(heater, timeout=3, what=f"heater on at {reading.value:.2f}")
            elif reading.value > 22:
                wait_for(lambda: not heater(), timeout=3, what=f"heater off at {reading.value:.2f}")
            time.sleep(0.3)  # the reading lasts a while, as a real one does: six thermostat checks
            assert heater() is (t < 40 or t > 80), t  # between the marks the heater keeps its state
    assert switched == [True, False, True]  # no chatter between the marks
    assert house.call(f"{HOST}.core.scenario", "info", "thermostat")[1]["state"]["running"] is True


def test_failing_and_looping_scenarios_do_not_stop_core(house):
    from corehouse import HOST

    for name in ("boom", "loop", "stubborn"):
        (house.scenarios_dir / f"{name}.py").write_text(FILES[f"{name}.py"].replace("ctx.get('/test/release')", "False"))
    core = house.start_core(store_wait=0, stop_timeout=1.0, scenarios=[
        {"name": "boom"}, {"name": "loop", "startup": True}, {"name": "stubborn", "startup": True},
        {"name": "hang", "file": "stubborn.py", "timeout": 0.3}])
    scenario = f"{HOST}.core.scenario"
    info = lambda name: house.call(scenario, "info", name)[1]["state"]  # noqa: E731
    wait_for(lambda: info("loop")["running"] and info("stubborn")["running"], what="startup scenarios running")
    assert house.call(scenario, "fire", "boom") == (p.OK, True)
    wait_for(lambda: info("boom")["failures"] == 1, what="the failure counted")
    assert info("boom")["last_result"]["error"] == "RuntimeError: boom"
    assert house.call(scenario, "fire", "hang") == (p.OK, True)
    wait_for(lambda: info("hang")["abandoned"], timeout=5, what="the hung scenario abandoned")
    assert info("hang")["timeouts"] == 1
    assert house.call(f"{HOST}.core.cron", "list") == (p.OK, [])  # Core still serves
    started = time.monotonic()
    core.terminate()
    assert core.wait(5) == 0
    assert time.monotonic() - started < 4.0
    log = house.core_log()
    assert "abandoned at shutdown" in log and "stubborn" in log.split("abandoned at shutdown")[1].splitlines()[0]


def test_code_over_the_network_is_refused_by_default(house, tmp_path):
    from corehouse import HOST

    house.start_core(store_wait=0)
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').close()\ndef run(ctx):\n    open({str(marker)!r}, 'w').close()\n"
    status, reason = house.call(f"{HOST}.core.scenarios", "add", {"name": "evil", "code": code, "startup": True})
    assert status == p.FORBIDDEN and "allow_remote_code" in reason
    assert house.call(f"{HOST}.core.scenarios", "list_keys") == (p.OK, [])
    assert house.call(f"{HOST}.core.scenario", "fire", "evil")[0] == p.NOT_FOUND
    assert list(house.scenarios_dir.iterdir()) == [] and not marker.exists()


def test_enabling_a_startup_scenario_starts_it_once(manager):
    manager.add({"name": "stubborn", "startup": True})
    manager.start_startup()
    manager.set_active("stubborn", False)  # asks it to stop; it does not
    manager.set_active("stubborn", True)
    assert manager.get("stubborn").runs == 1
    manager.add({"name": "loop", "startup": True, "active": False})
    manager.set_active("loop", True)
    wait_for(lambda: manager.get("loop").running, what="enabled startup scenario running")
