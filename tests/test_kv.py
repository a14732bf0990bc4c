"""The key/value publisher: wire format, server, clients, restart, bad traffic, CLI."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from supervised_house import HOST, House
from support import ROOT, free_endpoint, wait_for, write_config

from raspy.house.board import State
from raspy.house.executive import Settings
from raspy.mdp import protocol
from raspy.mdp.protocol import ProtocolError
from raspy.state.keys import join_key
from raspy.state.kv.client import KvPublisherClient, KvSubscriberClient, fetch_snapshot
from raspy.state.kv.message import EPOCH_SHIFT, HUGZ, KTHXBAI, KVMsg, check_kvset, parse_icanhaz
from raspy.state.kv.server import KvServer
from raspy.state.kv.statefile import StateFile, Unreadable

SEQ = (1).to_bytes(8, "big")
UUID = bytes(range(16))


# -- wire -------------------------------------------------------------------

def test_kvmsg_travels_over_a_socket_unchanged():
    ctx = zmq.Context.instance()
    endpoint = free_endpoint()
    with ctx.socket(zmq.PULL) as pull, ctx.socket(zmq.PUSH) as push:
        pull.bind(endpoint)
        push.connect(endpoint)
        sent = KVMsg("/device/pi.fake.t", 2**40 + 7, UUID, {"ttl": "1.5", "unit": "°C"}, protocol.pack(21.5))
        sent.send(push)
        assert pull.poll(2000)
        got = KVMsg.recv(pull)
    assert got == sent
    assert got.ttl == 1.5
    assert sent.frames()[1] == (2**40 + 7).to_bytes(8, "big")
    assert sent.frames()[3] == "ttl=1.5\nunit=°C\n".encode()


@pytest.mark.parametrize("frames, reason", [
    ([b"k", SEQ, b"", b""], "5 frames"),
    ([b"k", SEQ, b"", b"", b"v", b"extra"], "5 frames"),
    ([b"k", b"\x01", b"", b"", b"v"], "sequence is 8 bytes"),
    ([b"k", SEQ, b"short", b"", b"v"], "uuid"),
    ([b"", SEQ, b"", b"", b"v"], "empty key"),
    ([b"\xff\xfe", SEQ, b"", b"", b"v"], "not UTF-8"),
    ([b"k", SEQ, b"", b"novalue\n", b"v"], "bad property"),
    ([b"k", SEQ, b"", b"=v\n", b"v"], "bad property"),
    ([b"k", SEQ, b"", b"a=1", b"v"], "newline"),
    ([b"k", SEQ, b"", b"a=1\na=2\n", b"v"], "twice"),
    ([b"k", SEQ, b"", b"\xff=1\n", b"v"], "UTF-8"),
    ([b"k", SEQ, b"", b"ttl=soon\n", b"v"], "ttl"),
    ([b"k", SEQ, b"", b"ttl=-1\n", b"v"], "ttl"),
    ([b"k", SEQ, b"", b"ttl=nan\n", b"v"], "ttl"),
])
def test_malformed_kvmsg_is_rejected_with_a_reason(frames, reason):
    with pytest.raises(ProtocolError, match=reason):
        KVMsg.from_frames(frames)


def test_collector_refuses_reserved_keys_and_snapshot_requests_are_checked():
    for key in (HUGZ, KTHXBAI, b"ICANHAZ?"):
        with pytest.raises(ProtocolError, match="reserved"):
            check_kvset([key, SEQ, b"", b"", b"v"])
    assert check_kvset([b"/k", SEQ, UUID, b"ttl=2\n", b"v"]) == 2.0
    assert parse_icanhaz([b"id", b"ICANHAZ?", b"/device/"]) == (b"id", b"/device/")
    for bad in ([b"id", b"ICANHAZ?"], [b"id", b"ICANHAZ", b"/"], [b"id", b"ICANHAZ?", b"\xff"]):
        with pytest.raises(ProtocolError):
            parse_icanhaz(bad)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=20), min_size=0, max_size=7))
def test_any_frames_give_a_message_or_a_protocol_error(frames):
    try:
        msg = KVMsg.from_frames(frames)
    except ProtocolError:
        return
    assert KVMsg.from_frames(msg.frames()) == msg


def test_join_key_puts_one_slash_between_subtree_and_key():
    assert join_key("/device/", "pi.fake.t") == "/device/pi.fake.t"
    assert join_key("/device", "/pi.fake.t") == "/device/pi.fake.t"
    assert join_key("", "/event/x") == "/event/x"


# -- a server process ---------------------------------------------------------

class Kv:
    """A ``raspy run kv`` child process on free ports; its copy in RAM at the default place (``copy``)."""

    def __init__(self, children, state, flush_interval=0.2, **options):
        self.children, self.state, self.flush_interval, self.options = children, state, flush_interval, options
        self.copy = Settings("kv", "pi", state_dir=state.parent).ram_file("state")
        self.snapshot, self.publisher, self.collector = free_endpoint(), free_endpoint(), free_endpoint()
        self.proc = None

    def start(self, flush_interval=None):
        with open(self.state.with_name("kv.log"), "ab") as log:
            self.proc = self._spawn(flush_interval, log)
        # Start-up writes the new epoch with fsync: slow on a busy disk, hence the headroom.
        wait_for(lambda: self._answers(), 30, what="kv server to answer snapshots (see kv.log)")
        return self

    def _spawn(self, flush_interval, log):
        flush_interval = flush_interval or self.flush_interval
        config = write_config(self.state.with_name("kv.toml"),
                              {"state_dir": str(self.state.parent), "kv_snapshot": self.snapshot,
                               "kv_publisher": self.publisher, "kv_collector": self.collector},
                              {"kv": {"state": str(self.state), "flush_interval": flush_interval,
                                      "hugz_interval": 0.2, **self.options}})
        return self.children.executive(config, "kv", stderr=log)

    def _answers(self):
        try:
            fetch_snapshot("/none/", self.snapshot, timeout=0.5)
            return True
        except TimeoutError:
            assert self.proc.poll() is None, "kv server died"
            return False

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self):
        """SIGTERM, as the supervisor stops it: a clean stop."""
        self.proc.terminate()
        assert self.proc.wait(10) == 0

    def remove_copy(self):
        """A kill -9 leaves the copy (and maybe its temporary file) in /dev/shm."""
        for suffix in ("", ".tmp", ".corrupt"):
            self.copy.with_name(self.copy.name + suffix).unlink(missing_ok=True)

    def log(self):
        return self.state.with_name("kv.log").read_text()

    def subscriber(self, subtree="", **kw):
        return KvSubscriberClient(subtree, self.snapshot, self.publisher, **kw).start()

    def snapshot_of(self, subtree=""):
        _, entries = fetch_snapshot(subtree, self.snapshot)
        return {key: msg.body for key, msg in entries.items()}


@pytest.fixture
def new_kv(children, tmp_path):
    """``new_kv(**options)``: a :class:`Kv` in tmp_path, not started; its copy in RAM is removed at teardown."""
    made = []

    def new(**options):
        made.append(Kv(children, tmp_path / "kv.state", **options))
        return made[-1]
    yield new
    children.kill_all()
    for server in made:
        server.remove_copy()


@pytest.fixture
def kv(new_kv):
    server = new_kv().start()
    yield server
    assert server.proc.poll() is None, "kv server died during the test"


@pytest.fixture
def subscribers():
    started = []
    yield started
    for sub in started:
        sub.stop()


def test_wait_synced_returns_once_the_callback_has_seen_the_snapshot(kv, subscribers):
    with KvPublisherClient(kv.collector) as pub:
        for i in range(200):
            pub.send("/device/", f"early.{i}", protocol.pack(i))
    wait_for(lambda: len(kv.snapshot_of("/device/")) == 200, what="early keys stored")
    seen = []

    def slow_callback(key, body, props):  # a callback that takes its time, as a page's renderer may
        time.sleep(0.001)
        seen.append(key)
    sub = kv.subscriber("/device/", callback=slow_callback)
    subscribers.append(sub)
    assert sub.wait_synced(5)
    assert len(seen) == 200  # no wait: a caller may rely on its callback's state right after the sync


def test_late_subscriber_gets_the_snapshot_then_every_update_in_order(kv, subscribers):
    with KvPublisherClient(kv.collector) as pub:
        for i in range(50):
            pub.send("/device/", f"early.{i}", protocol.pack(i))
    wait_for(lambda: len(kv.snapshot_of("/device/")) == 50, what="early keys stored")

    late = kv.subscriber()
    subscribers.append(late)
    assert late.wait_synced(5)
    assert late.dict() == {f"/device/early.{i}": protocol.pack(i) for i in range(50)}

    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.SUB)
    raw.subscribe(b"")
    raw.connect(kv.publisher)
    wait_for(lambda: raw.poll(100) and raw.recv_multipart()[0] == HUGZ, what="raw subscription live")

    per_publisher = 5000

    def publish(name):
        with KvPublisherClient(kv.collector) as pub:
            for i in range(per_publisher):
                pub.send("/device/", f"{name}.{i % 100}", protocol.pack(i))

    threads = [threading.Thread(target=publish, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    sequences = []
    deadline = time.monotonic() + 30
    while len(sequences) < 2 * per_publisher and time.monotonic() < deadline:
        if raw.poll(100):
            frames = raw.recv_multipart()
            if frames[0] != HUGZ:
                sequences.append(int.from_bytes(frames[1], "big"))
            if len(sequences) == 1000:  # a subscriber joining mid-stream catches up without a resync
                joiner = kv.subscriber()
                subscribers.append(joiner)
    for thread in threads:
        thread.join()
    raw.close()

    assert len(sequences) == 2 * per_publisher
    assert sequences == list(range(sequences[0], sequences[0] + 2 * per_publisher)), "gap or disorder"
    assert sequences[0] > late.sequence - 2 * per_publisher
    expected = {f"/device/early.{i}": protocol.pack(i) for i in range(50)}
    expected.update({f"/device/{n}.{k}": protocol.pack(per_publisher - 100 + k) for n in "ab" for k in range(100)})
    wait_for(lambda: late.dict() == expected, what="subscriber to hold every update")
    assert late.sequence == sequences[-1]
    assert (late.gaps, late.resyncs, late.updates) == (0, 0, 2 * per_publisher)
    wait_for(lambda: joiner.dict() == expected, what="the mid-stream subscriber to catch up")
    assert (joiner.gaps, joiner.resyncs) == (0, 0)
    assert joiner.updates < 2 * per_publisher


def test_a_subtree_subscriber_sees_nothing_of_other_subtrees(kv, subscribers):
    seen = []
    sub = kv.subscriber("/device/", callback=lambda key, value, props: seen.append(key))
    subscribers.append(sub)
    assert sub.wait_synced(5)
    with KvPublisherClient(kv.collector) as pub:
        pub.send("/event/", "door", b"open")
        pub.send("/devices-not/", "x", b"1")
        pub.send("/device/", "pi.fake.t", protocol.pack(20.5))
    wait_for(lambda: sub.get("/device/pi.fake.t"), what="the /device/ update")
    assert seen == ["/device/pi.fake.t"]
    assert sub.dict() == {"/device/pi.fake.t": protocol.pack(20.5)}
    assert set(kv.snapshot_of()) == {"/event/door", "/devices-not/x", "/device/pi.fake.t"}


def test_a_ttl_key_expires_and_subscribers_see_the_deletion(kv, subscribers):
    changes = []
    sub = kv.subscriber("/event/", callback=lambda key, value, props: changes.append((key, value, props)))
    subscribers.append(sub)
    assert sub.wait_synced(5)
    with KvPublisherClient(kv.collector) as pub:
        pub.send("/event/", "doorbell", b"ring", ttl=0.3)
        pub.send("/event/", "stays", b"here")
    wait_for(lambda: sub.get("/event/doorbell") == b"ring", what="the ttl key")
    wait_for(lambda: sub.get("/event/doorbell") is None, timeout=5, what="the ttl key to expire")
    assert ("/event/doorbell", b"ring", {"ttl": "0.3"}) in changes
    assert changes[-1] == ("/event/doorbell", None, {})
    assert kv.snapshot_of("/event/") == {"/event/stays": b"here"}


def test_empty_body_deletes_a_key(kv, subscribers):
    sub = kv.subscriber("/device/")
    subscribers.append(sub)
    assert sub.wait_synced(5)
    with KvPublisherClient(kv.collector) as pub:
        pub.send("/device/", "gone", b"1")
        wait_for(lambda: sub.get("/device/gone"), what="the key")
        pub.send("/device/", "gone", b"")
    wait_for(lambda: sub.get("/device/gone") is None, what="the deletion")
    assert kv.snapshot_of() == {}


# -- persistence: the state file on the card, the copy in RAM ---------------------

def stored(path):
    """Keys and bodies of a state file or copy as saved; ``None`` when there is none."""
    state = StateFile(path).load()
    return None if state is None else {entry[0].decode(): entry[3] for entry in state["entries"]}


def identity(path):
    """What tells a user that a file was rewritten: inode, modification time, size."""
    found = path.stat()
    return found.st_ino, found.st_mtime_ns, found.st_size


def test_readings_and_summaries_alone_go_to_the_copy_in_ram_and_leave_the_state_file_untouched(new_kv):
    kv = new_kv().start()
    on_card = identity(kv.state)
    with KvPublisherClient(kv.collector) as pub:
        for value in range(5):
            expected = {"/device/pi.fake.t": protocol.pack(20 + value), "/host/pi": protocol.pack({"sequence": value})}
            for key, body in expected.items():
                pub.send("", key, body)
            wait_for(lambda: stored(kv.copy) == expected, what="the copy in RAM to follow the readings")
        assert identity(kv.state) == on_card and stored(kv.state) == {}, "readings alone never touch the card"
        assert kv.copy.parent == Path("/dev/shm") and stat.S_IMODE(kv.copy.stat().st_mode) == 0o600

        pub.send("", "/event/door", protocol.pack("open"))  # nobody sends it again: on the card within 0.2 s
        wait_for(lambda: stored(kv.state) == dict(expected, **{"/event/door": protocol.pack("open")}),
                 what="the state file with the event and the readings of the moment")
        pub.send("", "/device/pi.fake.t", protocol.pack(30))  # a clean stop writes it at once
    wait_for(lambda: kv.snapshot_of().get("/device/pi.fake.t") == protocol.pack(30), what="the last reading")
    kv.stop()
    assert stored(kv.state) == dict(expected, **{"/event/door": protocol.pack("open"),
                                                 "/device/pi.fake.t": protocol.pack(30)})
    assert not kv.copy.exists(), "a clean stop leaves everything in the state file and nothing in RAM"


def test_a_kill_9_of_kv_loses_neither_readings_nor_other_keys_older_than_flush_interval(new_kv):
    kv = new_kv().start()
    with KvPublisherClient(kv.collector) as pub:
        pub.send("", "/scenario/thermostat", protocol.pack({"runs": 1}))
        wait_for(lambda: "/scenario/thermostat" in stored(kv.state), what="the key on the card")
        pub.send("", "/device/pi.fake.heater", protocol.pack({"value": True}))  # a switch: nobody polls it
        wait_for(lambda: "/device/pi.fake.heater" in (stored(kv.copy) or {}), what="the reading in RAM")
    kv.kill()
    kv.start()
    assert kv.snapshot_of() == {"/scenario/thermostat": protocol.pack({"runs": 1}),
                                "/device/pi.fake.heater": protocol.pack({"value": True})}
    assert "from its copy in RAM" in kv.log()


def test_after_a_reboot_the_copy_is_gone_and_kv_starts_from_the_state_file(new_kv):
    kv = new_kv().start()
    with KvPublisherClient(kv.collector) as pub:
        pub.send("", "/device/pi.fake.t", protocol.pack({"value": 20.5, "timestamp": 1000.0}))
        pub.send("", "/event/door", protocol.pack("open"))
        wait_for(lambda: len(stored(kv.state)) == 2, what="both keys on the card")
        newer = protocol.pack({"value": 21.0, "timestamp": 1010.0})
        pub.send("", "/device/pi.fake.t", newer)
        wait_for(lambda: (stored(kv.copy) or {}).get("/device/pi.fake.t") == newer, what="the new reading in RAM")
    kv.kill()
    kv.remove_copy()  # what a reboot does to tmpfs
    kv.start()
    assert kv.snapshot_of() == {"/event/door": protocol.pack("open"),  # the stale reading says when it was read
                                "/device/pi.fake.t": protocol.pack({"value": 20.5, "timestamp": 1000.0})}
    assert "from its state file" in kv.log()


def killed_with_an_event_on_the_card_and_a_reading_in_ram(new_kv):
    """A kv that wrote an event to its state file, then a reading to its copy alone, then died by kill -9."""
    kv = new_kv().start()
    with KvPublisherClient(kv.collector) as pub:
        pub.send("", "/event/door", protocol.pack("open"))
        wait_for(lambda: stored(kv.state), what="the key on the card")
        pub.send("", "/device/pi.fake.t", protocol.pack(21.0))
        wait_for(lambda: stored(kv.copy), what="the reading in RAM")
    kv.kill()
    return kv


@pytest.mark.parametrize("damage", [b"", b"\x93not msgpack at all", b"\x81\xa6format\x02"])
def test_a_damaged_copy_is_reported_and_kv_starts_from_the_state_file(new_kv, damage):
    kv = killed_with_an_event_on_the_card_and_a_reading_in_ram(new_kv)
    kv.copy.write_bytes(damage)
    kv.start()
    assert kv.snapshot_of() == {"/event/door": protocol.pack("open")}
    assert f"ERROR kv copy in RAM {kv.copy} is unreadable" in kv.log()
    assert kv.copy.with_name(kv.copy.name + ".corrupt").read_bytes() == damage  # kept to look at, until a reboot


def test_a_damaged_state_file_with_a_good_copy_starts_from_the_copy(new_kv):
    kv = killed_with_an_event_on_the_card_and_a_reading_in_ram(new_kv)
    kv.state.write_bytes(b"\x00" * 100)
    kv.start()
    assert kv.snapshot_of() == {"/event/door": protocol.pack("open"), "/device/pi.fake.t": protocol.pack(21.0)}
    assert f"ERROR kv state file {kv.state} is unreadable" in kv.log()


def test_kill_9_and_restart_subscribers_resync_to_the_servers_state(kv, subscribers):
    pub = KvPublisherClient(kv.collector)
    flushed = {f"/device/d{i}": protocol.pack(i) for i in range(20)}
    for key, body in flushed.items():
        pub.send("", key, body)
    wait_for(lambda: len(stored(kv.copy) or {}) == 20, what="the readings in the copy in RAM")
    sub = kv.subscriber()
    subscribers.append(sub)
    wait_for(lambda: sub.dict() == flushed, what="subscriber to hold the flushed keys")
    before = sub.sequence

    kv.kill()
    kv.start(flush_interval=3600)  # values after this start reach a file only on a clean stop
    assert kv.snapshot_of() == flushed, "flushed values come back from the copy"
    wait_for(lambda: sub.resyncs >= 1 and sub.sequence > before, what="resync after the restart")
    assert sub.sequence >> EPOCH_SHIFT > before >> EPOCH_SHIFT, "sequences never go backwards"

    pub.send("", "/device/unflushed", b"lost")
    wait_for(lambda: sub.get("/device/unflushed"), what="the unflushed value")
    resyncs = sub.resyncs
    kv.kill()
    kv.start()
    wait_for(lambda: sub.resyncs > resyncs and sub.get("/device/unflushed") is None,
             what="subscriber to drop what the server lost")
    assert sub.dict() == flushed

    pub.send("", "/device/d0", b"new")
    pub.send("", "/device/after", b"restart")
    pub.close()
    expected = dict(flushed, **{"/device/d0": b"new", "/device/after": b"restart"})
    wait_for(lambda: sub.dict() == expected, what="updates after the restart")
    assert kv.snapshot_of() == expected
    assert sub.gaps == 0


def test_subscribers_learn_of_a_restart_within_a_second_though_hugz_are_5_s_apart(new_kv, subscribers):
    kv = new_kv(hugz_interval=5.0).start()
    sub = kv.subscriber("/device/")  # hears HUGZ alone: nothing is published under /device/
    subscribers.append(sub)
    assert sub.wait_synced(5)
    kv.kill()
    kv.start()
    restarted = time.monotonic()
    wait_for(lambda: sub.resyncs >= 1, timeout=10, what="resync after the restart")
    assert time.monotonic() - restarted < 2.0


def test_malformed_traffic_is_dropped_and_service_goes_on(kv, subscribers):
    ctx = zmq.Context.instance()
    rng = random.Random(5)

    def junk(valid):
        while True:
            frames = [rng.randbytes(rng.choice((0, 1, 8, 16, 30))) for _ in range(rng.randint(1, 7))]
            try:
                valid(frames)
            except ProtocolError:
                return frames

    by_hand = [[b"/k", SEQ, b"", b"", b"v", b"x"], [b"/k", b"1", b"", b"", b"v"], [b"\xff", SEQ, b"", b"", b"v"],
               [b"/k", SEQ, b"", b"ttl=0\n", b"v"], [b"/k", SEQ, b"", b"a\n", b"v"], [HUGZ, SEQ, b"", b"", b"v"],
               [KTHXBAI, SEQ, b"", b"", b"v"], [b"ICANHAZ?", b"/"], [b""]]
    with ctx.socket(zmq.PUSH) as push, ctx.socket(zmq.DEALER) as dealer:
        push.connect(kv.collector)
        dealer.connect(kv.snapshot)
        for frames in by_hand + [junk(check_kvset) for _ in range(300)]:
            push.send_multipart(frames)
        for frames in by_hand[:-2] + [[b"ICANHAZ"], [b"ICANHAZ?", b"\xff\xfe"], [b"ICANHAZ?", b"/", b"extra"]] + \
                [junk(lambda f: parse_icanhaz([b"id", *f])) for _ in range(300)]:
            dealer.send_multipart(frames)
        assert not dealer.poll(300), "the server answered a malformed snapshot request"
    with socket.create_connection(("127.0.0.1", int(kv.snapshot.rsplit(":", 1)[1]))) as raw:
        raw.sendall(b"\xff" * 64 + b"GET / HTTP/1.0\r\n\r\n")

    sub = kv.subscriber("/device/")
    subscribers.append(sub)
    assert sub.wait_synced(5)
    with KvPublisherClient(kv.collector) as pub:
        pub.send("/device/", "ok", b"1")
    wait_for(lambda: sub.get("/device/ok") == b"1", what="normal service")
    assert kv.snapshot_of() == {"/device/ok": b"1"}, "malformed updates changed nothing"
    assert kv.proc.poll() is None


# -- bounds: keys, values, the map ----------------------------------------------

BAD_KEYS = [b"noslash", b"//", b"/device/../x", b"/device/./x", b"/a/", b"/a\n", b"/a b", b"/k\xc3\xbcche",
            b"/" + b"k" * 1_000_000]


def raw_push(kv, updates: list[tuple[bytes, bytes]]) -> None:
    """Updates as any program could send them, past the client's own checks."""
    with zmq.Context.instance().socket(zmq.PUSH) as push:
        push.setsockopt(zmq.LINGER, 5000)
        push.connect(kv.collector)
        for key, body in updates:
            push.send_multipart([key, SEQ, b"", b"", body])


def test_bad_keys_and_oversized_values_are_refused_and_change_nothing(kv, subscribers):
    sub = kv.subscriber()
    subscribers.append(sub)
    assert sub.wait_synced(5)
    raw_push(kv, [(key, b"1") for key in BAD_KEYS] + [(b"/device/big", b"x" * 70_000), (b"/device/ok", b"1")])
    wait_for(lambda: sub.get("/device/ok"), what="the good update")
    raw_push(kv, [(b"/device/huge", b"x" * 5_000_000), (b"/device/after", b"2")])  # ZeroMQ cuts that connection
    wait_for(lambda: sub.get("/device/after"), what="an update after the huge one")
    assert kv.snapshot_of() == {"/device/ok": b"1", "/device/after": b"2"}
    assert sub.dict() == kv.snapshot_of()  # nothing refused was published either
    log = kv.state.with_name("kv.log").read_text()
    assert log.count("collector refused an update") == 10 and "max_value 65536" in log
    assert "'/device/../x' is not /segment/segment" in log and "key of 1000001 bytes (at most 255)" in log


def test_the_map_holds_at_most_max_keys_and_max_bytes(new_kv, subscribers):
    kv = new_kv(max_keys=5, max_bytes=400).start()
    raw_push(kv, [(b"/k/%d" % i, b"v") for i in range(8)])
    wait_for(lambda: len(kv.snapshot_of()) == 5, what="five keys")
    raw_push(kv, [(b"/k/0", b"changed"), (b"/k/1", b""), (b"/k/new", b"n")])  # an update, a delete, then room
    wait_for(lambda: kv.snapshot_of().get("/k/new") == b"n", what="the new key")
    assert kv.snapshot_of() == {"/k/0": b"changed", "/k/2": b"v", "/k/3": b"v", "/k/4": b"v", "/k/new": b"n"}
    raw_push(kv, [(b"/k/2", b"x" * 390), (b"/k/3", b"y")])  # 390 bytes more would pass max_bytes
    wait_for(lambda: kv.snapshot_of()["/k/3"] == b"y", what="the next update")
    assert kv.snapshot_of()["/k/2"] == b"v"
    assert "max_bytes 400" in kv.state.with_name("kv.log").read_text()


def test_a_key_stored_before_the_grammar_can_still_be_deleted(new_kv):
    kv = new_kv()
    kv.state.write_bytes(msgpack.packb({"format": 1, "epoch": 1, "entries": [  # as written before the copy in RAM
        [b"noslash", 7, b"", b"old", None], [b"/device/x", 8, b"", b"1", None]]}))
    kv.start()
    assert kv.snapshot_of() == {"noslash": b"old", "/device/x": b"1"}
    with KvPublisherClient(kv.collector) as pub:
        pub.send("", "noslash", b"")
    wait_for(lambda: kv.snapshot_of() == {"/device/x": b"1"}, what="the old key deleted")


def test_the_publisher_refuses_what_the_server_would(kv):
    with KvPublisherClient(kv.collector) as pub:
        for key in BAD_KEYS[:-2] + [b"/" + b"k" * 300]:
            with pytest.raises(ValueError, match="not /segment|at most 255"):
                pub.send("", key.decode(), b"1")
        with pytest.raises(ValueError, match="at most 65536"):
            pub.send("/device/", "big", b"x" * 70_000)
        pub.send("/device/", "fits", b"x" * 60_000)
    wait_for(lambda: "/device/fits" in kv.snapshot_of(), what="a value within the bound")


@pytest.mark.parametrize("option", [{"max_keys": 0}, {"max_value": "big"}, {"max_bytes": -1}, {"max_keys": 1.5},
                                    {"hugz_interval": 6.0}, {"hugz_interval": 0}])
def test_bad_bounds_stop_start_up(tmp_path, option):
    from raspy.house.config import ConfigError, load_config

    config = write_config(tmp_path / "raspy.toml", {"state_dir": str(tmp_path)}, {"kv": option})
    with pytest.raises(ConfigError, match=next(iter(option))):
        load_config(config)


def test_a_copy_that_cannot_be_written_is_reported_and_readings_wait_for_the_state_file(new_kv, tmp_path):
    (tmp_path / "not-a-folder").write_text("")
    kv = new_kv(ram_copy=str(tmp_path / "not-a-folder" / "kv.state")).start()
    with KvPublisherClient(kv.collector) as pub:
        for value in range(3):
            pub.send("", "/device/pi.fake.t", protocol.pack(value))
        wait_for(lambda: "could not write its copy in RAM" in kv.log(), what="the failure logged")
        assert stored(kv.state) == {} and kv.proc.poll() is None
        pub.send("", "/event/door", protocol.pack("open"))
        wait_for(lambda: stored(kv.state) == {"/device/pi.fake.t": protocol.pack(2), "/event/door": protocol.pack("open")},
                 what="the reading on the card with the next other key")
    assert kv.log().count("could not write its copy in RAM") == 1, "one line per 10 minutes at most"


SWITCH_HOUSE = """
[executives.broker]
[executives.kv]
flush_interval = 0.2
[executives.fake]
devices = [{name = "heater", kind = "switch"}]
"""


def test_a_switch_toggled_survives_a_kill_9_of_kv_and_a_damaged_copy_is_counted(children, tmp_path):
    """A switch is not polled: its server publishes it once, then at each change, never again by itself."""
    house = House(children, tmp_path)
    house.write(SWITCH_HOUSE)
    house.start(running=("broker", "kv", "fake"))
    copy, key = Settings("kv", HOST, state_dir=house.state_dir).ram_file("state"), f"/device/{HOST}.fake.heater"

    def heater():
        _, entries = fetch_snapshot("/device/", house.kv["snapshot"], timeout=5)
        return protocol.unpack(entries[key].body)["value"] if key in entries else None

    def restart_kv():
        pid = house.pid("kv")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: house.pid("kv") != pid and house.states("kv")["kv"].state == State.RUNNING,
                 what="kv restarted by the supervisor")
    try:
        wait_for(lambda: heater() is False, what="the switch published once")
        assert house.call("fake.devices", "set", ["heater", True])[0] == 200
        wait_for(lambda: (stored(copy) or {}).get(key) and heater(), what="the switch on, in kv and its copy")
        restart_kv()
        assert heater() is True, "kv came back with the switch as it was"
        assert house.states("kv")["kv"].errors == 0

        assert house.call("fake.devices", "set", ["heater", False])[0] == 200
        wait_for(lambda: protocol.unpack(stored(copy)[key])["value"] is False, what="the switch off in the copy")
        copy.write_bytes(b"junk")
        restart_kv()
        # The state file was last written when kv started: the switch was on then.
        assert heater() is True, "a damaged copy loses the readings since the state file was written"
        wait_for(lambda: house.states("kv")["kv"].errors == 1, what="the damaged copy counted as an error")
        assert f"kv copy in RAM {copy} is unreadable" in (house.state_dir / "logs" / "kv.log").read_text()
        house.stop()
        assert not copy.exists(), "a clean stop leaves everything in the state file and nothing in RAM"
    finally:
        house.stop()
        for suffix in ("", ".tmp", ".corrupt"):
            copy.with_name(copy.name + suffix).unlink(missing_ok=True)


# -- stop paths and timeouts ------------------------------------------------

def test_server_stop_ends_run_promptly_and_saves_the_state(tmp_path):
    endpoints = free_endpoint(), free_endpoint(), free_endpoint()
    server = KvServer(*endpoints, state_path=tmp_path / "kv.state", flush_interval=3600)
    thread = threading.Thread(target=server.run)
    thread.start()
    assert server.ready.wait(5)
    with KvPublisherClient(endpoints[2]) as pub:
        pub.send("/device/", "x", b"1")
    wait_for(lambda: server.stats["updates"] == 1, what="the update")
    started = time.monotonic()
    server.stop()
    thread.join(2)
    assert not thread.is_alive()
    assert time.monotonic() - started < 0.5
    assert [entry[0] for entry in StateFile(tmp_path / "kv.state").load()["entries"]] == [b"/device/x"]


def test_subscriber_without_server_never_syncs_and_still_stops():
    sub = KvSubscriberClient("/device/", free_endpoint(), free_endpoint(), snapshot_timeout=0.2,
                             server_timeout=0.2).start()
    assert not sub.wait_synced(0.5)
    sub.stop()
    assert not sub._thread.is_alive()


def test_a_subscriber_stopped_while_waiting_does_not_reconnect_on_its_way_out():
    sub = KvSubscriberClient("/device/", free_endpoint(), free_endpoint(), server_timeout=30).start()
    sub.stop()
    assert not sub._thread.is_alive()
    assert sub.reconnects == 0


def test_publisher_times_out_when_no_collector_listens():
    with KvPublisherClient(free_endpoint(), timeout=0.2) as pub:
        with pytest.raises(TimeoutError):
            pub.send("/device/", "x", b"1")
        with pytest.raises(ValueError, match="reserved"):
            pub.send("", "HUGZ", b"1")
        with pytest.raises(ProtocolError, match="ttl"):
            pub.send("/device/", "x", b"1", ttl=0)


def test_a_corrupt_state_file_is_set_aside(tmp_path):
    path = tmp_path / "kv.state"
    path.write_bytes(b"\x93not msgpack at all")
    with pytest.raises(Unreadable, match="kv.state is unreadable"):
        StateFile(path).load()
    assert not path.exists() and (tmp_path / "kv.state.corrupt").exists()
    assert StateFile(path).load() is None


# -- command line -----------------------------------------------------------

def test_cli_set_get_and_watch(kv, children):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "raspy.kvcli", *args], capture_output=True, text=True,
                              timeout=20, env=dict(os.environ, PYTHONPATH=str(ROOT)))

    watch = children.python("-m", "raspy.kvcli", "watch", "/device/", "--snapshot", kv.snapshot,
                            "--publisher", kv.publisher, stdout=subprocess.PIPE, text=True)
    assert cli("set", "/device/t", '{"celsius": 21.5}', "--collector", kv.collector).returncode == 0
    assert cli("set", "/device/mode", "eco", "--collector", kv.collector, "--ttl", "60").returncode == 0
    wait_for(lambda: set(kv.snapshot_of()) == {"/device/t", "/device/mode"}, what="both keys")
    got = cli("get", "/device/t", "--snapshot", kv.snapshot)
    assert (got.returncode, json.loads(got.stdout)) == (0, {"celsius": 21.5})
    assert json.loads(cli("get", "/device/mode", "--snapshot", kv.snapshot).stdout) == "eco"
    missing = cli("get", "/device/none", "--snapshot", kv.snapshot)
    assert missing.returncode == 1 and "no key" in missing.stderr

    assert cli("delete", "/device/t", "--snapshot", kv.snapshot, "--collector", kv.collector).returncode == 0
    wait_for(lambda: "/device/t" not in kv.snapshot_of(), what="the deletion")
    gone = cli("delete", "/device/t", "--snapshot", kv.snapshot, "--collector", kv.collector)
    assert gone.returncode == 1 and "no key '/device/t'" in gone.stderr
    bad = cli("set", "/device/../t", "1", "--collector", kv.collector)
    assert bad.returncode == 1 and "is not /segment/segment" in bad.stderr
    lines = []
    wait_for(lambda: lines.append(watch.stdout.readline().strip()) or "/device/t deleted" in lines,
             what="watch to print the deletion")
    assert '/device/t {"celsius": 21.5}' in lines and '/device/mode "eco"' in lines
    watch.send_signal(signal.SIGTERM)
    assert watch.wait(5) == 0
    watch.stdout.close()
