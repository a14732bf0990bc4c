"""Cron: job tables, the manager on a real APScheduler, the service through frames."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from memstore import MemoryStore
from support import wait_for

from raspy.automation.actions import Actions
from raspy.automation.cron import CronManager, CronService, build_trigger, check_spec, event_key
from raspy.errors import InvalidValue
from raspy.mdp import protocol as p


class Recorder:
    """Actions that record what jobs did."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict]] = []
        self.requests: list[tuple[str, str, object]] = []
        self.fired: list[tuple[str, dict]] = []
        self.status = p.OK
        self.lock = threading.Lock()

    def actions(self) -> Actions:
        return Actions(self.publish, self.request, self.get, self.fire)

    def get(self, key: str) -> object:
        return None

    def publish(self, key: str, value: object) -> None:
        with self.lock:
            self.published.append((key, value))

    def request(self, service: str, command: str, args: object) -> tuple[int, object]:
        self.requests.append((service, command, args))
        return self.status, "reason"

    def fire(self, name: str, entry: dict) -> bool:
        self.fired.append((name, entry))
        return True

    def events(self, job_id: str) -> list[dict]:
        with self.lock:
            return [value for key, value in self.published if key == event_key(job_id)]


@pytest.fixture
def rec():
    return Recorder()


@pytest.fixture
def manager(rec, tmp_path):
    m = CronManager(rec.actions(), MemoryStore(), marks_path=tmp_path / "marks.json")
    m.start()
    yield m
    m.shutdown()


def call(service, command, args=None):
    return p.parse_reply(service(p.request(command, args) if args is not None else p.request(command)))


# -- tables and triggers -----------------------------------------------------------

@pytest.mark.parametrize("spec, reason", [
    ({"id": "a", "cron": "61 * * * *", "action": "event"}, "bad cron trigger"),
    ({"id": "a", "cron": "* * *", "action": "event"}, "5 fields"),
    ({"id": "a", "interval": -1, "action": "event"}, "positive"),
    ({"id": "a", "interval": {"fortnights": 1}, "action": "event"}, "interval is seconds"),
    ({"id": "a", "date": "tomorrow", "action": "event"}, "bad date trigger"),
    ({"id": "a", "action": "event"}, "exactly one trigger"),
    ({"id": "a", "interval": 1, "cron": "* * * * *", "action": "event"}, "exactly one trigger"),
    ({"id": "a", "interval": 1, "action": "shout"}, "unknown action 'shout'"),
    ({"id": "a b", "interval": 1, "action": "event"}, "job id"),
    ({"id": "a", "interval": 1, "action": "request", "service": "pi.x"}, "'service' and 'command'"),
    ({"id": "a", "interval": 1, "action": "scenario"}, "'scenario' name"),
    ({"id": "a", "interval": 1, "action": "event", "missed": "maybe"}, "missed must be"),
    ({"id": "a", "interval": 1, "action": "event", "every": 2}, "unknown key 'every'; known: id, cron,"),
    ({"id": "a", "interval": 1, "action": "event", "paused": "no"}, "'no' is not true or false"),
])
def test_bad_tables_say_why(spec, reason):
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        check_spec(spec)


def test_trigger_forms():
    now = datetime(2024, 1, 1, 6, 0, tzinfo=timezone.utc)
    crontab = build_trigger({"cron": "30 6 * * *"}).get_next_fire_time(None, now)
    assert (crontab.hour, crontab.minute) == (6, 30)
    with_seconds = build_trigger({"cron": "*/10 * * * * *"}).get_next_fire_time(None, now)
    assert with_seconds.second % 10 == 0
    assert build_trigger({"cron": {"hour": 7}}).get_next_fire_time(None, now).hour == 7
    assert build_trigger({"interval": {"minutes": 5}}).interval == timedelta(minutes=5)
    assert build_trigger({"date": now.timestamp()}).run_date == now
    assert check_spec({"id": "x", "interval": 1, "action": "event"})["missed"] == "run_once"


# -- the manager ---------------------------------------------------------------------

def test_event_job_publishes_until_paused_or_deleted(manager, rec):
    manager.add({"id": "tick", "interval": 0.1, "action": "event", "data": "hello"})
    manager.add({"id": "witness", "interval": 0.1, "action": "event"})  # shows time passing for tick

    def three_witness_periods() -> None:
        seen = len(rec.events("witness"))
        wait_for(lambda: len(rec.events("witness")) >= seen + 3, timeout=3, what="three periods")

    wait_for(lambda: len(rec.events("tick")) >= 2, timeout=3, what="two events")
    assert rec.events("tick")[0]["data"] == "hello"
    manager.set_paused("tick", True)
    paused_at = len(rec.events("tick"))
    assert manager.get("tick").info()["next_run"] is None
    three_witness_periods()
    assert len(rec.events("tick")) <= paused_at + 1  # at most one run already under way
    manager.set_paused("tick", False)
    wait_for(lambda: len(rec.events("tick")) >= paused_at + 2, timeout=3, what="runs after resume")
    manager.delete("tick")
    deleted_at = len(rec.events("tick"))
    three_witness_periods()
    assert len(rec.events("tick")) <= deleted_at + 1
    with pytest.raises(KeyError):
        manager.get("tick")


def test_request_and_scenario_actions(manager, rec):
    rec.status = p.ERROR
    manager.add({"id": "ask", "interval": 0.1, "action": "request", "service": "pi.fake.devices",
                 "command": "set", "args": ["heater", True]})
    manager.add({"id": "go", "interval": 0.1, "action": "scenario", "scenario": "thermostat"})
    wait_for(lambda: rec.requests and rec.fired, timeout=3, what="both actions")
    assert rec.requests[0] == ("pi.fake.devices", "set", ["heater", True])
    assert rec.fired[0][0] == "thermostat" and rec.fired[0][1]["cron"] == "go"
    stats = wait_for(lambda: manager.get("ask").info()["stats"]["errors"] and manager.get("ask").info()["stats"])
    assert "500" in stats["last_error"]


def test_runtime_jobs_come_back_from_the_store(rec, tmp_path):
    store = MemoryStore()
    first = CronManager(rec.actions(), store)
    first.load_config([{"id": "conf", "cron": "0 7 * * *", "action": "event"}])
    first.add({"id": "added", "cron": "0 8 * * *", "action": "event"})
    first.set_paused("conf", True)
    first.add({"id": "gone", "cron": "0 9 * * *", "action": "event"})
    first.delete("gone")
    second = CronManager(rec.actions(), store)
    second.load_config([{"id": "conf", "cron": "0 7 * * *", "action": "event"}])
    assert second.load_store() == 2
    assert sorted(second.jobs) == ["added", "conf"]
    assert second.get("conf").spec["paused"] is True


def test_a_store_failure_changes_nothing(rec):
    store = MemoryStore()
    service = CronService(CronManager(rec.actions(), store))
    store.down = True
    status, reason = call(service, "add", {"id": "x", "interval": 5, "action": "event"})
    assert status == p.ERROR and "not stored" in reason
    assert call(service, "list") == (p.OK, [])


def test_a_bad_configured_job_names_its_entry_and_key(rec):
    with pytest.raises(InvalidValue, match=r"unknown action 'nope'") as caught:
        CronManager(rec.actions()).load_config([{"id": "a", "interval": 1, "action": "event"},
                                                {"id": "b", "interval": 1, "action": "nope"}])
    assert caught.value.where == (1, "action")


# -- missed runs -----------------------------------------------------------------------

def _marks(tmp_path, **marks: float):
    path = tmp_path / "marks.json"
    path.write_text(json.dumps(marks))
    return path


@pytest.mark.parametrize("policy, runs", [("run_once", 1), ("skip", 0)])
def test_runs_missed_while_down(rec, tmp_path, policy, runs):
    """Hourly job, Core down for three hours: run once now, or nothing, by policy."""
    path = _marks(tmp_path, hourly=time.time() - 3 * 3600)
    manager = CronManager(rec.actions(), missed=policy, marks_path=path)
    manager.load_config([{"id": "hourly", "cron": "0 * * * *", "action": "event"},
                         {"id": "witness", "interval": 0.05, "action": "event"}])
    manager.start()
    try:
        # a catch-up run is due at start: once a later job has run twice, it has run or never will
        wait_for(lambda: len(rec.events("witness")) >= 2, timeout=3, what="the scheduler running")
        assert len(rec.events("hourly")) == runs
    finally:
        manager.shutdown()
    if runs:  # the catch-up run moved the mark, so a second restart does not run it again
        assert json.loads(path.read_text())["hourly"] > time.time() - 60


def test_nothing_missed_on_first_start(rec, tmp_path):
    manager = CronManager(rec.actions(), marks_path=tmp_path / "marks.json")
    manager.load_config([{"id": "hourly", "cron": "0 * * * *", "action": "event"},
                         {"id": "witness", "interval": 0.05, "action": "event"}])
    manager.start()
    try:
        wait_for(lambda: len(rec.events("witness")) >= 2, timeout=3, what="the scheduler running")
        assert rec.events("hourly") == []
    finally:
        manager.shutdown()
    assert "hourly" in json.loads((tmp_path / "marks.json").read_text())


def test_a_date_job_that_ran_is_not_run_again(rec, tmp_path):
    when = time.time() - 100
    path = _marks(tmp_path, once=when + 1)
    manager = CronManager(rec.actions(), marks_path=path)
    manager.load_config([{"id": "once", "date": when, "action": "event"}])
    assert manager.get("once").info()["next_run"] is None
    with pytest.raises(ValueError, match="in the past"):
        manager.add({"id": "late", "date": when, "action": "event"})


def test_backward_clock_jump_reschedules(rec):
    offset = [0.0]
    manager = CronManager(rec.actions(), clock=lambda: time.time() + offset[0])
    manager.add({"id": "tick", "interval": 0.2, "action": "event"})
    manager.start()
    try:
        far = datetime.now(timezone.utc) + timedelta(hours=1)  # where the old clock left the next run
        manager.scheduler.modify_job("tick", next_run_time=far)
        offset[0] = -3600.0
        assert manager.check_clock() < -3000
        wait_for(lambda: rec.events("tick"), timeout=3, what="a run soon after the jump")
        assert manager.check_clock() == 0.0
    finally:
        manager.shutdown()


# -- the service ----------------------------------------------------------------------

def test_service_commands(manager):
    service = CronService(manager)
    status, job = call(service, "add", json.dumps({"id": "j", "cron": "0 7 * * *", "action": "event"}))
    assert status == p.OK and job["next_run"] > time.time()
    assert call(service, "add", {"id": "k", "cron": "0 99 * * *", "action": "event"})[0] == p.BAD_REQUEST
    assert call(service, "add", "{not json")[0] == p.BAD_REQUEST
    assert [j["id"] for j in call(service, "list")[1]] == ["j"]
    assert call(service, "get", "j")[1]["cron"] == "0 7 * * *"
    assert call(service, "pause", "j")[1]["paused"] is True
    assert call(service, "resume", "j")[1]["next_run"] is not None
    assert call(service, "get", "nope")[0] == p.NOT_FOUND
    assert call(service, "delete", "j") == (p.OK, None)
    assert call(service, "delete", "j")[0] == p.NOT_FOUND


def test_run_now_runs_a_job_once_besides_its_schedule(manager, rec):
    service = CronService(manager)
    call(service, "add", {"id": "feed", "cron": "0 7 * * *", "action": "request", "service": "pi.fake.devices",
                          "command": "set", "args": ["heater", True]})
    status, job = call(service, "run", "feed")
    assert status == p.OK and job["stats"]["runs"] == 1 and job["stats"]["last_error"] is None
    assert rec.requests == [("pi.fake.devices", "set", ["heater", True])]
    assert job["next_run"] > time.time()  # still on its schedule
    rec.status = p.NOT_FOUND
    status, job = call(service, "run", "feed")
    assert job["stats"]["errors"] == 1 and "404" in job["stats"]["last_error"]
    assert call(service, "run", "nope")[0] == p.NOT_FOUND


# -- end to end: broker, kv, Titanic and Core processes -------------------------------------

@pytest.fixture
def house(children, tmp_path):
    from corehouse import CoreHouse

    h = CoreHouse(children, tmp_path)
    h.start_broker()
    h.start_kv()
    h.start_titanic()
    yield h
    h.stop()


class Events:
    """What a subscriber of ``/event/cron/`` sees, per job."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    def __call__(self, key: str, body: bytes | None, props: dict) -> None:
        if body is not None:
            self.seen.append((key, p.unpack(body)))

    def count(self, job_id: str) -> int:
        return sum(1 for key, _ in self.seen if key == event_key(job_id))


def test_every_second_events_reach_a_subscriber(house):
    from corehouse import HOST

    house.start_core()
    events = Events()
    sub = house.subscribe("/event/cron/", events)
    cron = f"{HOST}.core.cron"
    try:
        assert house.call(cron, "add", {"id": "sec", "cron": "* * * * * *", "action": "event"})[0] == p.OK
        wait_for(lambda: events.count("sec") >= 2, timeout=4, what="two events a second apart")
        times = [v["time"] for k, v in events.seen if k == event_key("sec")]
        assert 0.5 < times[1] - times[0] < 1.5
        status, reason = house.call(cron, "add", {"id": "bad", "cron": "* * * * 9", "action": "event"})
        assert status == p.BAD_REQUEST and "higher than the maximum" in reason
        assert [job["id"] for job in house.call(cron, "list")[1]] == ["sec"]
    finally:
        sub.stop()


def test_pause_and_delete_stop_the_events(house):
    from corehouse import HOST

    house.start_core()
    events = Events()
    sub = house.subscribe("/event/cron/", events)
    cron = f"{HOST}.core.cron"

    def three_witness_periods() -> None:
        """A job that keeps running shows time passing for the one that must not."""
        seen = events.count("witness")
        wait_for(lambda: events.count("witness") >= seen + 3, timeout=4, what="three periods")

    try:
        assert house.call(cron, "add", {"id": "fast", "interval": 0.25, "action": "event"})[0] == p.OK
        assert house.call(cron, "add", {"id": "witness", "interval": 0.25, "action": "event"})[0] == p.OK
        wait_for(lambda: events.count("fast") >= 2, timeout=4, what="events")
        assert house.call(cron, "pause", "fast")[0] == p.OK
        paused = events.count("fast")
        three_witness_periods()
        assert events.count("fast") <= paused + 1  # one may have been under way
        assert house.call(cron, "resume", "fast")[0] == p.OK
        wait_for(lambda: events.count("fast") >= paused + 3, timeout=4, what="events after resume")
        assert house.call(cron, "delete", "fast") == (p.OK, None)
        deleted = events.count("fast")
        three_witness_periods()
        assert events.count("fast") <= deleted + 1
        assert house.call(cron, "get", "fast")[0] == p.NOT_FOUND
    finally:
        sub.stop()


def test_a_runtime_job_is_back_after_kill_9(house):
    from corehouse import HOST

    core = house.start_core()
    events = Events()
    sub = house.subscribe("/event/cron/", events)
    cron = f"{HOST}.core.cron"
    try:
        job = {"id": "keep", "interval": 0.3, "action": "event", "data": "kept"}
        assert house.call(cron, "add", job)[0] == p.OK
        wait_for(lambda: events.count("keep") >= 1, timeout=4, what="an event before the kill")
        core.kill()
        core.wait(5)
        before = events.count("keep")
        house.start_core()
        wait_for(lambda: house.call(cron, "get", "keep")[0] == p.OK, timeout=5, what="the job loaded from Titanic")
        wait_for(lambda: events.count("keep") > before + 1, timeout=4, what="events after the restart")
        assert [v["data"] for k, v in events.seen if k == event_key("keep")][-1] == "kept"
    finally:
        sub.stop()
