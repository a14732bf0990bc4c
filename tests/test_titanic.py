"""Titanic end to end: broker, Titanic and echo workers in their own processes.

The storage tests at the end run the journal in-process, on a real file.
"""
from __future__ import annotations

import collections
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq
from support import ROOT, ask, broker_up, free_endpoint, live, wait_for, write_config

from raspy.errors import RequestTimeout
from raspy.executives.titanic import Titanic
from raspy.house.executive import load_kind
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.mdp.limits import busy_refusal
from raspy.mdp.worker import MajorDomoWorker
from raspy.state.titanic.client import TitanicClient, TitanicError
from raspy.state.titanic.journal import Journal
from raspy.state.titanic.marker import JournalDamaged

HEARTBEAT = 0.2


class House:
    """A broker, a Titanic on a file in tmp_path, and the workers a test adds."""

    def __init__(self, children, tmp_path, *broker_flags: str) -> None:
        self.children = children
        self.endpoint = free_endpoint()
        self.db = tmp_path / "titanic.sqlite"
        self.titanic = None
        self.threads: list[tuple[MajorDomoWorker, threading.Thread]] = []
        children.raspy("run", "broker", "--bind", self.endpoint, "--heartbeat", str(HEARTBEAT), *broker_flags)
        wait_for(lambda: broker_up(self.endpoint), what="broker up")

    def ask(self, service: bytes, *body: bytes, timeout: float = 0.5) -> p.Frames | None:
        return ask(self.endpoint, service, *body, timeout=timeout)

    def live(self, service: str) -> bool:
        return live(self.endpoint, service)

    def config(self, **options) -> Path:
        return write_config(self.db.with_name("raspy.toml"),
                              {"hostname": "test", "state_dir": str(self.db.parent), "broker": self.endpoint,
                               "heartbeat": HEARTBEAT},
                              {"titanic": {"db": str(self.db), "retry_max": 0.5, "dispatch_timeout": 2, **options}})

    def start_titanic(self, **options):
        self.titanic = self.children.executive(self.config(**options), "titanic")
        wait_for(lambda: all(self.live(s) for s in ("titanic.request", "titanic.reply", "titanic.close",
                                                      "titanic.store", "test.titanic.mmi")),
                 what="titanic services")
        return self.titanic

    def run_titanic_until_exit(self) -> subprocess.CompletedProcess:
        """Start Titanic on the files as they are; it must exit (refuse) on its own."""
        proc = self.children.executive(self.config(), "titanic", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
        stdout, stderr = proc.communicate(timeout=20)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def start_echo(self, service: str):
        return self.children.raspy("run", "echo", "--broker", self.endpoint, "--service", service,
                                   "--heartbeat", str(HEARTBEAT))

    def worker(self, service: str, handler) -> MajorDomoWorker:
        """An in-test worker thread, stopped at teardown."""
        worker = MajorDomoWorker(self.endpoint, service, handler, heartbeat=HEARTBEAT)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        self.threads.append((worker, thread))
        wait_for(lambda: self.live(service), what=f"worker {service}")
        return worker

    def client(self, timeout: float = 1.0, retries: int = 5) -> TitanicClient:
        return TitanicClient(self.endpoint, timeout=timeout, retries=retries, poll=(0.02, 0.2))

    def stop(self) -> None:
        for worker, thread in self.threads:
            worker.shutdown()
            thread.join(timeout=5)


@pytest.fixture
def house(children, tmp_path):
    h = House(children, tmp_path)
    h.start_titanic()
    yield h
    h.stop()


@pytest.fixture
def client(house):
    c = house.client()
    yield c
    c.close()


def replies(client: TitanicClient, uuids: list[str]) -> dict[str, tuple[int, p.Frames]]:
    return {u: client.reply(u) for u in uuids}


# -- 9/TSP ---------------------------------------------------------------------------

def test_tsp_statuses_and_idempotence(house, client):
    uuid = client.request("later", [b"hello", b"world"])
    assert len(uuid) == 32 and int(uuid, 16) >= 0
    assert house.ask(b"titanic.reply", uuid.encode()) == [b"300"]
    assert house.ask(b"titanic.reply", uuid.encode()) == [b"300"]
    for bad in ([b"xyz"], [b"g" * 32], [b"0" * 31], [], [uuid.encode(), b"extra"]):
        assert house.ask(b"titanic.reply", *bad) == [b"400"]
        assert house.ask(b"titanic.close", *bad) == [b"400"]
    assert house.ask(b"titanic.request") == [b"400"]       # no service name
    assert house.ask(b"titanic.request", b"") == [b"400"]
    assert house.ask(b"titanic.request", b"mmi.service", b"echo") == [b"400"]  # never dispatchable
    unknown = b"0123456789abcdef" * 2
    assert house.ask(b"titanic.reply", unknown) == [b"400"]
    assert house.ask(b"titanic.close", unknown) == [b"200"]
    assert house.ask(b"titanic.reply", b"f" * 32) == [b"400"]  # beyond any stored number
    assert house.ask(b"titanic.close", b"F" * 32) == [b"200"]

    house.start_echo("later")
    assert client.wait(uuid, timeout=10) == [b"hello", b"world"]
    assert house.ask(b"titanic.reply", uuid.upper().encode()) == [b"200", b"hello", b"world"]  # idempotent
    assert house.ask(b"titanic.close", uuid.encode()) == [b"200"]
    assert house.ask(b"titanic.close", uuid.encode()) == [b"200"]
    assert house.ask(b"titanic.reply", uuid.encode()) == [b"400"]
    assert house.ask(b"test.titanic.mmi", b"status")[0] == b"200"


def test_closing_a_pending_request_cancels_it(house, client):
    seen = []
    cancelled = client.request("counted", b"cancelled")
    client.close_request(cancelled)
    kept = client.request("counted", b"kept")
    house.worker("counted", lambda frames: seen.append(frames[0]) or frames)
    assert client.wait(kept, timeout=10) == [b"kept"]
    assert seen == [b"kept"]
    assert client.status(cancelled) == 400


def test_500_requests_before_the_service_starts_are_all_answered(house, client):
    uuids = [client.request("late", [b"%d" % i, b"payload"]) for i in range(500)]
    assert len(set(uuids)) == 500
    assert all(s == 300 for s, _ in replies(client, uuids[:5]).values())
    house.start_echo("late")
    wait_for(lambda: client.status(uuids[-1]) == 200, timeout=30, interval=0.1, what="last reply")
    got = replies(client, uuids)
    assert [got[u] for u in uuids] == [(200, [b"%d" % i, b"payload"]) for i in range(500)]


def test_requests_are_sent_in_arrival_order_and_a_slow_service_does_not_block_others(house, client):
    order = []
    release = threading.Event()

    def slow(frames):
        release.wait(10)
        return frames

    slow_ids = [client.request("slow", b"s%d" % i) for i in range(3)]
    fast_ids = [client.request("ordered", b"%d" % i) for i in range(50)]
    house.worker("slow", slow)
    house.worker("ordered", lambda frames: order.append(int(frames[0])) or frames)
    wait_for(lambda: client.status(fast_ids[-1]) == 200, timeout=10, what="fast service served")
    assert order == list(range(50))
    assert client.status(slow_ids[0]) == 300
    release.set()
    assert client.wait(slow_ids[-1], timeout=10) == [b"s2"]


def test_a_dispatch_that_times_out_is_retried(house, client):
    release = threading.Event()
    hung = []

    def hanging(frames):
        hung.append(frames)
        release.wait(10)
        return [b"late"]

    try:
        house.worker("flaky", hanging)
        uuid = client.request("flaky", b"job")
        wait_for(lambda: hung, what="first attempt taken")
        house.worker("flaky", lambda frames: [b"good"])
        # Titanic's dispatch timeout is 2 s here: the request is sent again, to the free worker
        assert client.wait(uuid, timeout=10) == [b"good"]
        assert hung == [[b"job"]]
    finally:
        release.set()
    wait_for(lambda: p.parse_reply(house.ask(b"mmi.workers"))[1]["flaky"]["idle"] == 2, what="late reply sent")
    assert client.reply(uuid) == (200, [b"good"])  # the late reply changed nothing


@pytest.mark.parametrize("bound", ["--queue-requests", "--total-requests"])
def test_a_full_broker_is_retried_later_not_taken_as_the_reply(children, tmp_path, bound):
    """The broker refuses Titanic's dispatch with 500 (full): every request still gets its worker's reply."""
    house = House(children, tmp_path, bound, "1")
    house.start_titanic()
    release = threading.Event()

    def held(frames):
        if frames[0] == b"hold":
            release.wait(10)
        return [b"done", frames[0]]

    try:
        house.worker("busy", held)
        direct = zmq.Context.instance().socket(zmq.DEALER)
        direct.linger = 0
        direct.connect(house.endpoint)
        for body in (b"hold", b"fill"):  # the worker is busy with the first, the second fills the one place
            direct.send_multipart([b"", p.CLIENT, b"busy", body])
        with house.client() as client:
            uuids = [client.request("busy", b"t%d" % i) for i in range(5)]
            wait_for(lambda: p.parse_reply(house.ask(b"mmi.broker"))[1]["refused"] >= 1, what="a refusal")
            release.set()
            for i, uuid in enumerate(uuids):
                assert client.wait(uuid, timeout=15) == [b"done", b"t%d" % i]
        direct.close()
    finally:
        release.set()
        house.stop()


def test_the_brokers_refusals_for_want_of_room_are_known_from_a_services_own_500(children, tmp_path):
    house = House(children, tmp_path, "--unknown-services", "1")
    direct = zmq.Context.instance().socket(zmq.DEALER)
    direct.linger = 0
    direct.connect(house.endpoint)
    for service in (b"absent.one", b"absent.two"):  # the second finds the one place for an unknown service taken
        direct.send_multipart([b"", p.CLIENT, service, b"x"])
    assert direct.poll(5000)
    frames = direct.recv_multipart()
    direct.close()
    assert frames[2] == b"absent.two" and busy_refusal(b"absent.two", frames[3:])
    assert not busy_refusal(b"absent.one", frames[3:])
    assert not busy_refusal(b"absent.two", p.reply(500, "the device did not answer"))


def test_kill_9_while_dispatching_loses_nothing(house, client, capsys):
    """300 queued requests, kill -9 mid-dispatch while a client keeps submitting, restart."""
    counts = collections.Counter()
    first_seen = []
    lock = threading.Lock()

    def counting(frames):
        with lock:
            if frames[0] not in counts and frames[0].startswith(b"q"):
                first_seen.append(int(frames[0][1:]))
            counts[frames[0]] += 1
        time.sleep(0.002)
        return [b"done", frames[0]]

    total = 300
    uuids = [client.request("count", b"q%d" % i) for i in range(total)]
    client.store_set("core", "cron", "backup", {"at": "03:00", "enabled": True})
    acked: dict[bytes, str] = {}  # requests a second client got 200 for, around the kill
    stop = threading.Event()

    def submit():
        submitter = house.client(timeout=0.5, retries=20)
        for i in range(10_000):
            if stop.is_set():
                break
            try:
                acked[b"s%d" % i] = submitter.request("count", b"s%d" % i)
            except (RequestTimeout, TitanicError):
                pass
            time.sleep(0.005)
        submitter.close()

    house.worker("count", counting)
    wait_for(lambda: sum(counts[b"q%d" % i] > 0 for i in range(total)) >= 60, timeout=15, what="dispatch under way")
    submitting = threading.Thread(target=submit, daemon=True)
    submitting.start()
    try:
        wait_for(lambda: len(acked) >= 5, what="second client submitting")
        house.titanic.send_signal(signal.SIGKILL)
        house.titanic.wait(timeout=5)
        executed_before_kill = len(first_seen)
        assert executed_before_kill < total, "the kill came too late to test anything"
        acked_before_restart = len(acked)
        house.start_titanic()
        wait_for(lambda: len(acked) >= acked_before_restart + 5, what="submissions after the restart")
    finally:
        stop.set()
        submitting.join(timeout=15)
    expected = {uuid: (200, [b"done", b"q%d" % i]) for i, uuid in enumerate(uuids)}
    expected.update({uuid: (200, [b"done", body]) for body, uuid in acked.items()})
    wait_for(lambda: all(counts[b] for b in acked) and len(first_seen) == total, timeout=30, interval=0.1,
             what="every request executed after the restart")
    wait_for(lambda: replies(client, list(expected)) == expected, timeout=10, interval=0.2, what="every reply")
    assert first_seen == list(range(total))  # arrival order kept across the restart
    duplicates = sum(counts[b"q%d" % i] - 1 for i in range(total))
    resent = sum(counts[b] - 1 for b in acked)  # also the submitter's own retries while Titanic was down
    with capsys.disabled():
        print(f"\nkill -9 after {executed_before_kill}/{total} queued requests executed: 0 lost, "
              f"{duplicates} executed twice; {len(acked)} acknowledged around the kill: 0 lost, "
              f"{resent} extra executions")
    assert duplicates <= 2  # at least once: only what was in flight at the kill may run again
    assert client.store_get("core", "cron", "backup") == {"at": "03:00", "enabled": True}


def test_sigterm_stops_titanic_and_the_queue_survives(house, client):
    uuid = client.request("afterwards", b"still here")
    house.titanic.send_signal(signal.SIGTERM)
    assert house.titanic.wait(timeout=10) == 0
    house.start_titanic()
    assert client.status(uuid) == 300
    house.start_echo("afterwards")
    assert client.wait(uuid, timeout=10) == [b"still here"]


def test_client_run_calls_back_closes_and_stops(house, client):
    got = {}
    uuids = [client.request("cb", b"%d" % i, callback=lambda u, frames: got.__setitem__(u, frames))
             for i in range(5)]
    runner = threading.Thread(target=client.run)
    runner.start()
    house.start_echo("cb")
    wait_for(lambda: client.waiting == 0, timeout=10, what="callbacks")
    assert got == {u: [b"%d" % i] for i, u in enumerate(uuids)}
    assert all(client.status(u) == 400 for u in uuids)  # closed after the callback
    client.stop()
    runner.join(timeout=3)
    assert not runner.is_alive()


# -- bounds: refused with a status the client sees, counted, logged at a bounded rate ------

def statistic(house, key: str) -> int:
    with MajorDomoClient(house.endpoint, timeout=2, retries=1) as mdp:
        status, answer = mdp.call("test.titanic.statistics", "get", f"test.titanic.snmp.{key}")
    assert status == 200, answer
    return answer["value"]


def refused_with(client: TitanicClient, status: int, service: str, body: bytes = b"x") -> None:
    with pytest.raises(TitanicError) as refused:
        client.request(service, body)
    assert refused.value.status == status


def test_pending_requests_and_their_size_are_bounded(children, tmp_path):
    house = House(children, tmp_path)
    log = tmp_path / "titanic.log"
    with open(log, "w") as stderr:
        house.titanic = house.children.executive(
            house.config(max_request=100, max_service_pending=3, max_pending=5), "titanic", stderr=stderr)
    wait_for(lambda: house.live("titanic.request"), what="titanic")
    with house.client() as client:
        refused_with(client, 400, "absent", b"x" * 101)  # never as it is
        accepted = [client.request("absent", [b"x" * 50, b"y" * 50])]
        accepted += [client.request("absent", b"x") for _ in range(2)]
        refused_with(client, 500, "absent")  # full for now: 3 pending for this service
        accepted += [client.request("other", b"x") for _ in range(2)]
        refused_with(client, 500, "third")  # 5 pending in all
        client.close_request(accepted[0])
        accepted.append(client.request("absent", b"x"))  # room again
        for _ in range(12):
            refused_with(client, 500, "third")
        assert statistic(house, "requests_pending") == 5 and statistic(house, "refused") == 15
        wait_for(lambda: statistic(house, "errors") == 15, what="refusals counted as errors on the board")
        house.titanic.send_signal(signal.SIGKILL)
        house.titanic.wait(timeout=10)
        house.start_titanic(max_service_pending=3, max_pending=6)
        refused_with(client, 500, "absent")  # the bounds count what the file holds
        uuid = client.request("other", b"last")
        house.start_echo("other")
        assert client.wait(uuid, timeout=10) == [b"last"]
        assert all(client.status(key) == 300 for key in accepted[1:3] + accepted[5:])
    lines = [line for line in log.read_text().splitlines() if "refused (" in line]
    assert 1 <= len(lines) <= 10, lines  # 15 refusals, at most 10 lines per 10 s
    assert "over max_request 100" in lines[0]


@pytest.fixture
def bare(children, tmp_path):
    """A house whose test starts Titanic itself, with the options it needs."""
    h = House(children, tmp_path)
    yield h
    h.stop()


def test_replies_waiting_to_be_closed_are_bounded(bare):
    house, client = bare, bare.client()
    house.start_titanic(max_replies=2)
    house.start_echo("echoed")
    uuids = [client.request("echoed", b"%d" % i) for i in range(3)]  # the third makes a third reply
    wait_for(lambda: all(client.status(u) == 200 for u in uuids), what="replies")
    refused_with(client, 500, "echoed")
    client.close_request(uuids[0])
    refused_with(client, 500, "echoed")
    client.close_request(uuids[1])
    assert client.wait(client.request("echoed", b"again"), timeout=10) == [b"again"]
    client.close()


def test_an_unclaimed_reply_is_dropped_after_the_retention_counted(bare):
    house, client = bare, bare.client()
    house.start_titanic(retention=0.3, clean_interval=0.1)
    house.start_echo("forgotten")
    uuid = client.request("forgotten", b"x")
    wait_for(lambda: statistic(house, "unclaimed") == 1, what="the reply dropped")
    assert client.status(uuid) == 400
    wait_for(lambda: statistic(house, "errors") == 1, what="counted on the board")
    client.close()


def test_the_store_is_bounded(bare):
    house, client = bare, bare.client()
    house.start_titanic(store_keys=3, store_key=16, store_value=40, store_bytes=100)

    def refused(status: int, *args) -> None:
        with pytest.raises(TitanicError) as error:
            client.store_set(*args)
        assert error.value.status == status

    refused(400, "core", "cron", "a-name-too-long", 1)  # 4 + 4 + 15 bytes of names
    refused(400, "core", "cron", "k", "v" * 40)  # packs to 42 bytes
    client.store_set("core", "cron", "k1", "v" * 30)  # 4 + 4 + 2 + 32: 42 bytes
    client.store_set("core", "cron", "k2", "v" * 30)
    refused(500, "core", "cron", "k3", "v" * 30)  # 126 bytes
    client.store_set("core", "cron", "k1", "v" * 30)  # does not grow the store
    client.store_set("core", "cron", "k3", 1)
    refused(500, "core", "cron", "k4", 1)  # a fourth key
    with pytest.raises(TitanicError):
        client._store("set", [{"service": "core", "section": "cron", "key": "k1", "value": 1},
                              {"service": "core", "section": "cron", "key": "k5", "value": 1}])
    assert client.store_get("core", "cron", "k1") == "v" * 30  # a refused batch sets nothing
    assert client.store_list("core", "cron") == ["k1", "k2", "k3"]
    assert statistic(house, "refused") == 5
    house.titanic.send_signal(signal.SIGKILL)
    house.titanic.wait(timeout=10)
    house.start_titanic(store_keys=3, store_key=16, store_value=40, store_bytes=100)
    refused(500, "core", "cron", "k4", 1)  # counted from the file again
    assert client.store_delete("core", "cron", "k2") == 1
    client.store_set("core", "cron", "k4", 1)
    assert client.store_list("core", "cron") == ["k1", "k3", "k4"]
    client.close()


# -- the store ---------------------------------------------------------------------

def test_store_commands(client):
    client.store_set("core", "cron", "a", 1)
    client.store_set("core", "cron", "b", [1, "two", b"\x00"])
    client.store_set("core", "scenario", "x", {"on": True})
    assert client.store_get("core", "cron", "b") == [1, "two", b"\x00"]
    assert client.store_section("core", "cron") == {"a": 1, "b": [1, "two", b"\x00"]}
    assert client.store_list("core") == ["cron", "scenario"]
    assert client.store_list("core", "cron") == ["a", "b"]
    with pytest.raises(KeyError):
        client.store_get("core", "cron", "missing")
    assert client.store_delete("core", "cron", "a") == 1
    assert client.store_delete("core", "cron", "a") == 0
    assert client.store_list("core", "cron") == ["b"]
    assert client.store_delete("core", "scenario") == 1
    assert client.store_delete("core") == 1
    assert client.store_list("core") == []
    many = [{"service": "web", "section": "s", "key": f"k{i}", "value": i} for i in range(20)]
    assert client._store("set", many) == 20
    assert client.store_section("web", "s") == {f"k{i}": i for i in range(20)}


MALFORMED_STORE_REQUESTS = [
    [b"set"], [b"set", p.pack([])], [b"set", p.pack("text")], [b"set", p.pack({"service": "a"})],
    [b"set", p.pack({"service": "a", "section": "b", "key": "c"})],                   # no value
    [b"set", p.pack({"service": "", "section": "b", "key": "c", "value": 1})],
    [b"set", p.pack([{"service": "a", "section": "b", "key": "c", "value": 1}, 7])],
    [b"get", p.pack({"service": "a", "section": 3, "key": "c"})], [b"get", p.pack(None)],
    [b"delete", p.pack({"service": "a", "key": "c"})], [b"list", p.pack({})], [b"list", b"\xc1junk"],
    [b"set", p.pack({}), b"extra"], [b"not a word"], [b"\xff"],
]


def test_malformed_store_requests_get_400_and_change_nothing(house, client):
    client.store_set("keep", "s", "k", "v")
    with MajorDomoClient(house.endpoint, timeout=2, retries=1) as mdp:
        for frames in MALFORMED_STORE_REQUESTS:
            status, reason = p.parse_reply(mdp.send("titanic.store", frames))
            assert status == 400 and reason, frames
    assert client.store_list("keep", "s") == ["k"] and client.store_get("keep", "s", "k") == "v"
    assert client.store_list("a") == []


def test_store_unknown_command_is_501(house):
    with MajorDomoClient(house.endpoint, timeout=2, retries=1) as mdp:
        assert mdp.call("titanic.store", "drop_everything", {})[0] == 501


# -- the journal, in-process ---------------------------------------------------------

def test_journal_group_commit_batches_concurrent_writers(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    uuids: list[str] = []

    def writer():
        for _ in range(40):
            uuids.append(journal.add_request(b"svc", [b"x"]))

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert journal.writes == 320 and len(set(uuids)) == 320
    assert journal.commits < journal.writes
    assert journal.counts() == {"pending": 320, "replied": 0, "closed": 0}
    journal.close()


def test_journal_counts_a_request_before_its_reply_can_be_stored(tmp_path):
    """The dispatcher may store a reply before ``add_requests`` returns: the bounds never see -1."""
    journal = Journal(tmp_path / "j.sqlite")
    write, seen = journal.write, []

    def write_then_reply(op):
        result = write(op)
        if not seen:  # the dispatcher wins the race for the request just committed
            seen.append("replied")
            (key, _), = journal.pending(b"svc")
            journal.store_reply(key, [b"200", b"done"])
            seen.append(journal.open_counts(b"svc"))
        return result

    journal.write = write_then_reply
    journal.add_request(b"svc", [b"x"])
    assert seen[1] == (0, 0, 1) and journal.open_counts(b"svc") == (0, 0, 1)
    journal.close()


def test_journal_uncounts_requests_whose_write_failed(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.add_request(b"svc", [b"x"])

    def full_disk(op):
        raise sqlite3.OperationalError("database or disk is full")

    journal.write = full_disk
    with pytest.raises(sqlite3.OperationalError):
        journal.add_requests([(b"svc", [b"y"]), (b"other", [b"z"])])
    assert journal.open_counts(b"svc") == (1, 1, 0) and journal.open_counts(b"other") == (1, 0, 0)
    journal.close()


def test_journal_failed_write_undoes_only_itself(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    key = journal.add_request(b"svc", [b"x"])

    def bad(db):
        db.execute("DELETE FROM request")
        raise ValueError("no")

    with pytest.raises(ValueError):
        journal.write(bad)
    assert journal.pending(b"svc") == [(key, [b"x"])]
    journal.close()


def test_journal_retention_removes_old_replies_and_closed_requests_only(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    pending, replied, closed = (journal.add_request(b"svc", [b"%d" % i]) for i in range(3))
    journal.store_reply(replied, [b"r"])
    journal.close_request(closed)
    journal.store_reply(closed, [b"late"])  # a reply after close does not reopen it
    assert journal.reply_of(replied) == (1, [b"r"])
    assert journal.open_counts(b"svc") == (1, 1, 1)  # pending, pending for svc, replied
    commits = journal.commits
    assert journal.clean(before=time.time() - 60) == (0, 0)
    assert journal.commits == commits  # nothing to delete: no commit, no write to the disk
    assert journal.clean(before=time.time() + 1) == (1, 1)  # (unclaimed replies, closed requests)
    assert journal.reply_of(replied) is None and journal.reply_of(closed) is None
    assert journal.pending(b"svc") == [(pending, [b"0"])]
    assert journal.open_counts(b"svc") == (1, 1, 0)
    journal.close_request(pending)
    journal.close_request(pending)
    assert journal.open_counts(b"svc") == (0, 0, 0)
    journal.close()


def test_journal_counts_what_is_open_again_when_reopened(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    keys = [journal.add_request(service, [b"x"]) for service in (b"a", b"a", b"b", b"b", b"b")]
    journal.store_reply(keys[0], [b"r"])
    journal.store_reply(keys[0], [b"again"])  # answered once only
    journal.close_request(keys[2])
    journal.close()
    journal = Journal(tmp_path / "j.sqlite")
    assert journal.open_counts(b"a") == (3, 1, 1) and journal.open_counts(b"b") == (3, 2, 1)
    journal.close()


def test_titanic_is_an_executive_kind():
    assert load_kind("titanic") is Titanic


def test_client_raises_on_refused_request(house):
    client = house.client()
    with pytest.raises(TitanicError):
        client.request("", b"x")
    client.close()


def test_statistics_show_the_queue_and_the_commits(house, client):
    def gauge(key: str) -> int:
        with MajorDomoClient(house.endpoint, timeout=2, retries=1) as mdp:
            status, answer = mdp.call("test.titanic.statistics", "get", f"test.titanic.snmp.{key}")
        assert status == 200 and answer["type"] == "gauge"
        return answer["value"]

    uuids = [client.request("nobody.here", b"%d" % i) for i in range(5)]
    assert gauge("requests_pending") == 5
    commits = gauge("commits")
    assert 1 <= commits <= gauge("writes")
    client.close_request(uuids[0])
    assert (gauge("requests_pending"), gauge("requests_closed")) == (4, 1)
    assert gauge("commits") > commits


# -- damaged files: Titanic refuses to serve rather than start half empty ----------------

def acknowledge(client: TitanicClient, start: int, count: int) -> list[str]:
    """``count`` requests and ``count`` store keys, each acknowledged (so committed)."""
    uuids = [client.request("nobody.here", b"r%d" % i) for i in range(start, start + count)]
    for i in range(start, start + count):
        client.store_set("core", "keys", f"k{i}", i)
    return uuids


def checkpoint(db) -> None:
    """Copy the -wal into the database file (as SQLite does every 1000 pages) while Titanic runs."""
    outside = sqlite3.connect(db)
    try:
        assert outside.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0  # not busy
    finally:
        outside.close()


def corrupt(path, at: float) -> None:
    """Overwrite 64 bytes at a fraction ``at`` of the file's length."""
    with open(path, "r+b") as file:
        file.seek(int(path.stat().st_size * at))
        file.write(b"\xa5" * 64)


DAMAGE = {
    # after kill -9, the commits since the last checkpoint live only in the -wal
    "kill -9, -wal deleted": ("kill", lambda db: db.with_name(db.name + "-wal").unlink(), "the file is empty"),
    "kill -9, -wal damaged": ("kill", lambda db: corrupt(db.with_name(db.name + "-wal"), 0.5), "-wal lost or damaged"),
    # after a clean stop, everything is in the database file
    "stopped, database truncated": ("stop", lambda db: os.truncate(db, db.stat().st_size // 2), "titanic.sqlite"),
    "stopped, database emptied": ("stop", lambda db: os.truncate(db, 0), "the file is empty"),
    "stopped, database deleted": ("stop", lambda db: db.unlink(), "the file is missing"),
    "stopped, database damaged": ("stop", lambda db: corrupt(db, 0.6), "titanic.sqlite"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_titanic_refuses_to_serve_a_damaged_or_lost_database(house, client, damage):
    how, harm, reason = DAMAGE[damage]
    acknowledge(client, 0, 30)
    house.titanic.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
    house.titanic.wait(timeout=10)
    harm(house.db)
    refused = house.run_titanic_until_exit()
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("titanic refuses to serve: ") and reason in last, refused.stderr


def test_titanic_refuses_when_the_database_is_behind_what_it_acknowledged(house, client):
    """Part of the work is in the database file (a checkpoint), the rest was in the -wal that is lost."""
    acknowledge(client, 0, 10)
    checkpoint(house.db)
    acknowledge(client, 10, 10)
    house.titanic.send_signal(signal.SIGKILL)
    house.titanic.wait(timeout=10)
    house.db.with_name(house.db.name + "-wal").unlink()
    refused = house.run_titanic_until_exit()
    assert re.search(r"titanic\.sqlite holds [1-9]\d* of \d+ acknowledged commits \(-wal lost", refused.stderr)


def test_moving_the_files_aside_starts_titanic_empty(house, client):
    """The documented fresh start: every file of the database, marker included, moved aside."""
    uuid = acknowledge(client, 0, 5)[0]
    house.titanic.send_signal(signal.SIGKILL)
    house.titanic.wait(timeout=10)
    house.db.with_name(house.db.name + "-wal").unlink()
    assert house.run_titanic_until_exit().returncode != 0
    aside = house.db.parent / "aside"
    aside.mkdir()
    for path in house.db.parent.glob(house.db.name + "*"):
        path.rename(aside / path.name)
    house.start_titanic()
    assert client.status(uuid) == 400 and client.store_list("core") == []
    assert client.status(acknowledge(client, 100, 1)[0]) == 300


def test_a_kill_9_with_intact_files_restarts_with_everything(house, client):
    uuids = acknowledge(client, 0, 20)
    house.titanic.send_signal(signal.SIGKILL)
    house.titanic.wait(timeout=10)
    house.start_titanic()
    assert all(client.status(uuid) == 300 for uuid in uuids)
    assert client.store_section("core", "keys") == {f"k{i}": i for i in range(20)}


def test_journal_accepts_a_database_ahead_of_its_marker_and_one_without_marker(tmp_path):
    """After a power cut the marker may lag (it is not fsynced); a database from before markers has none."""
    journal = Journal(tmp_path / "j.sqlite")
    journal.add_request(b"svc", [b"0"])
    journal.close()
    journal.marker.open(0)  # an older marker, as a power cut may leave it
    journal.marker.close()
    journal = Journal(tmp_path / "j.sqlite")
    assert journal.counts()["pending"] == 1 and journal.last_commit == journal.marker.read() >= 1
    journal.close()
    journal.marker.path.unlink()
    journal = Journal(tmp_path / "j.sqlite")
    assert journal.counts()["pending"] == 1 and journal.marker.read() == journal.last_commit
    journal.close()


def test_journal_refuses_a_damaged_marker(tmp_path):
    Journal(tmp_path / "j.sqlite").close()
    marker = tmp_path / "j.sqlite.commits"
    marker.write_bytes(marker.read_bytes().replace(b"0", b"9", 1))
    with pytest.raises(JournalDamaged, match="commit marker"):
        Journal(tmp_path / "j.sqlite")


def test_raspy_status_shows_why_titanic_refuses(children, tmp_path):
    """Under the supervisor: Titanic's exit reason is the status line's LAST EXIT, and it is given up."""
    endpoint = free_endpoint()
    config = write_config(tmp_path / "raspy.toml",
                          {"hostname": "test", "state_dir": str(tmp_path / "state"), "broker": endpoint,
                           "heartbeat": HEARTBEAT, "backoff_start": 0.05, "backoff_cap": 0.1, "give_up_after": 3},
                          {"broker": {}, "titanic": {}})

    def raspy(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "raspy", *args, "--config", str(config)], capture_output=True,
                              text=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT)))

    def status() -> str:
        return raspy("status").stdout

    children.raspy("start", "--config", str(config), stderr=subprocess.DEVNULL)
    wait_for(lambda: live(endpoint, "titanic.store"), what="titanic up")
    titanic = TitanicClient(endpoint, timeout=1.0, retries=5)
    titanic.store_set("core", "keys", "k", 1)
    titanic.close()
    assert raspy("stop").returncode == 0
    (tmp_path / "state" / "titanic.sqlite").unlink()
    children.raspy("start", "--config", str(config), stderr=subprocess.DEVNULL)
    line = wait_for(lambda: next((l for l in status().splitlines() if l.startswith("titanic ") and "gave-up" in l), None),
                    what="titanic given up")
    assert "titanic refuses to serve: titanic.sqlite holds 0 of" in line, status()
    assert raspy("stop").returncode == 0
