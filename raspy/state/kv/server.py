"""The key/value server: snapshot, publisher and collector sockets in one thread."""
from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from pathlib import Path
from typing import Callable

import zmq

from raspy.curve import Curve, host_of_frame
from raspy.droplog import DropLog
from raspy.mdp.protocol import ProtocolError
from raspy.state.keys import key_problem
from raspy.state.kv.message import (
    BATCH,
    COLLECTOR_ENDPOINT,
    EPOCH_SHIFT,
    FIRST_HUGZ,
    HUGZ,
    HUGZ_INTERVAL,
    HWM,
    KTHXBAI,
    MAX_BYTES,
    MAX_FRAME,
    MAX_KEYS,
    MAX_VALUE,
    PUBLISHER_ENDPOINT,
    SNAPSHOT_ENDPOINT,
    check_kvset,
    epoch_of,
    parse_icanhaz,
)
from raspy.state.keys import DEVICE, HOST
from raspy.state.kv.statefile import StateFile, Unreadable
from raspy.wakeup import Wakeup

log = logging.getLogger(__name__)

#: Subtrees whose publishers send them again when they start: a change there alone goes to the copy in RAM.
_REREAD = (DEVICE.encode(), HOST.encode())


class KvServer:
    """The ``kv`` executive: holds the map, numbers updates, serves snapshots.

    ``run()`` binds and loops until ``stop()`` (callable from any thread: it
    wakes the loop, which otherwise sleeps on its sockets until the next HUGZ,
    expiry or flush). Signals are the caller's business.

    The state file (``state_path``, on the SD card) holds what cannot be read again: it is
    rewritten ``flush_interval`` seconds after a change of a key outside ``/device/`` and
    ``/host/``, and at a clean stop. Device readings and host summaries are published again
    by their device servers and supervisors when those start, so a change of them alone goes
    to a copy of the map in RAM-backed storage (``copy_path``, on tmpfs), ``flush_interval``
    seconds later: it costs the card nothing and outlives a crash of this process, not a
    reboot. At start the server takes the newer of the two (by the last sequence number each
    holds). A crash loses at most the updates of the last ``flush_interval``.

    With ``curve`` the three sockets are CURVE servers (the caller runs the
    :class:`~raspy.curve.Authenticator`) and ``authorize(host, key)`` decides each
    update by the host its connection is allowed as.

    The map is bounded: a new key must follow the grammar of
    :mod:`raspy.state.keys`; one key's properties and body hold at most
    ``max_value`` bytes; the map at most ``max_keys`` keys and ``max_bytes``
    bytes. An update beyond a bound is refused: counted in ``stats["refused"]``,
    logged (rate-limited) and not published. Deleting a key always works.
    """

    def __init__(self, snapshot_endpoint: str = SNAPSHOT_ENDPOINT, publisher_endpoint: str = PUBLISHER_ENDPOINT,
                 collector_endpoint: str = COLLECTOR_ENDPOINT, state_path: str | Path | None = None,
                 flush_interval: float = 5.0, hugz_interval: float = HUGZ_INTERVAL,
                 context: zmq.Context | None = None, curve: Curve | None = None,
                 authorize: Callable[[str, bytes], bool] | None = None, *, copy_path: str | Path | None = None,
                 max_value: int = MAX_VALUE, max_keys: int = MAX_KEYS, max_bytes: int = MAX_BYTES) -> None:
        self.snapshot_endpoint = snapshot_endpoint
        self.publisher_endpoint = publisher_endpoint
        self.collector_endpoint = collector_endpoint
        self.flush_interval = flush_interval
        self.hugz_interval = hugz_interval
        self.context = context or zmq.Context.instance()
        self.curve = curve
        self.authorize = authorize
        self.ready = threading.Event()
        #: hosts revoked while the server runs: their updates and snapshot requests are refused (:meth:`cut`)
        self.cut_hosts: frozenset[str] = frozenset()
        self.sequence = 0
        self.max_value, self.max_keys, self.max_bytes = max_value, max_keys, max_bytes
        #: ``damaged``: state files or copies found unreadable at start; ``copy_failures``: writes of the copy that failed
        self.stats = {"updates": 0, "snapshots": 0, "expired": 0, "refused": 0, "damaged": 0, "copy_failures": 0}
        self.dropped = DropLog(log)
        self._refusals = DropLog(log)
        self._copy_errors = DropLog(log, burst=1, period=600.0)
        self._bytes = 0  # keys, properties and bodies in the map
        self._store = StateFile(state_path) if state_path else None
        self._copy = StateFile(copy_path, mode=0o600) if state_path and copy_path else None
        self._map: dict[bytes, list[bytes]] = {}      # key -> the published frames
        self._deadlines: dict[bytes, float] = {}      # key -> monotonic expiry, for ttl keys
        self._expiry: list[tuple[float, bytes]] = []  # heap of (deadline, key); stale ones skipped
        self._ceiling = 0
        self._dirty = False      # a change in neither file yet
        self._urgent = False     # a change of a key that cannot be re-read, not yet in the state file
        self._writer: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wakeup = Wakeup()

    def cut(self, hosts: frozenset[str]) -> None:
        """Refuse what the revoked ``hosts`` send on connections still open (safe from any thread).

        ZeroMQ keeps a connection open after its key left the allow-list; everyone else's stay
        untouched. A revoked host's subscriber keeps what PUB sends it until it reconnects: PUB
        cannot drop one peer.
        """
        for host in sorted(hosts - self.cut_hosts):
            log.warning("host %s revoked: its updates and snapshot requests are refused", host)
        self.cut_hosts = frozenset(hosts)

    def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    # -- loop --

    def run(self) -> None:
        self._open_epoch()
        ctx = self.context
        snapshot, publisher, collector = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB), ctx.socket(zmq.PULL)
        try:
            for sock in (snapshot, publisher, collector):
                sock.setsockopt(zmq.LINGER, 0)
            snapshot.setsockopt(zmq.SNDHWM, HWM)
            snapshot.setsockopt(zmq.ROUTER_MANDATORY, 1)
            publisher.setsockopt(zmq.SNDHWM, HWM)
            collector.setsockopt(zmq.MAXMSGSIZE, max(MAX_FRAME, self.max_value))
            for sock in (snapshot, publisher, collector) if self.curve else ():
                self.curve.serve(sock)
            snapshot.bind(self.snapshot_endpoint)
            publisher.bind(self.publisher_endpoint)
            collector.bind(self.collector_endpoint)
            self._loop(snapshot, publisher, collector)
        finally:
            self._save(wait=True)
            if self._copy is not None:
                self._copy.remove()  # the state file holds everything now
            for sock in (snapshot, publisher, collector):
                sock.close()
            log.info("kv stopped at sequence %d", self.sequence)

    def _loop(self, snapshot: zmq.Socket, publisher: zmq.Socket, collector: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(collector, zmq.POLLIN)
        poller.register(snapshot, zmq.POLLIN)
        poller.register(self._wakeup, zmq.POLLIN)
        self.ready.set()
        log.info("kv serving: snapshot %s, publisher %s, collector %s, sequence %d",
                 self.snapshot_endpoint, self.publisher_endpoint, self.collector_endpoint, self.sequence)
        now = time.monotonic()
        next_hugz, flushed, hugz_step = now, now, FIRST_HUGZ
        while not self._stopping.is_set():
            next_flush = flushed + self._flush_delay()
            wake = min(next_hugz, self._expiry[0][0] if self._expiry else math.inf, next_flush)
            events = dict(poller.poll(max(wake - time.monotonic(), 0.0) * 1000))
            if collector in events:
                self._collect(collector, publisher)
            if snapshot in events:
                self._serve_snapshots(snapshot)
            now = time.monotonic()
            if self._expiry and self._expiry[0][0] <= now:
                self._expire(publisher, now)
            if now >= next_hugz:
                publisher.send_multipart([HUGZ, self.sequence.to_bytes(8, "big"), b"", b"", b""])
                next_hugz, hugz_step = now + min(hugz_step, self.hugz_interval), hugz_step * 2
            if now >= next_flush:
                # A write still busy on a slow SD card: look again shortly, do not spin.
                flushed = now if self._flush() else now - self._flush_delay() + 0.1

    def _flush_delay(self) -> float:
        """Seconds from the last write to the next: ``flush_interval`` when something is due, else never."""
        due = self._urgent or (self._dirty and self._copy is not None)
        return self.flush_interval if due else math.inf

    def _flush(self) -> bool:
        """Write what is due: the state file after a change that cannot be re-read, else the copy in RAM."""
        return self._save() if self._urgent else self._write_copy()

    def _collect(self, collector: zmq.Socket, publisher: zmq.Socket) -> None:
        """Number, store and republish up to BATCH updates: the hot path."""
        recv = collector.recv_multipart if self.authorize is None else self._recv_authorized(collector)
        send, store = publisher.send_multipart, self._map
        deadlines = self._deadlines
        sequence, ceiling, accepted, urgent = self.sequence, self._ceiling, 0, False
        try:
            for _ in range(BATCH):
                try:
                    frames = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    ttl = check_kvset(frames)
                except ProtocolError as exc:
                    self.dropped(f"collector: {exc}")
                    continue
                refusal = self._admit(frames)
                if refusal is not None:
                    self.stats["refused"] += 1
                    self._refusals(f"collector refused an update: {refusal}")
                    continue
                if sequence >= ceiling:
                    self.sequence = sequence
                    self._next_epoch()
                    sequence, ceiling = self.sequence, self._ceiling
                sequence += 1
                frames[1] = sequence.to_bytes(8, "big")
                send(frames)
                key = frames[0]
                urgent = urgent or not key.startswith(_REREAD)
                if frames[4]:
                    store[key] = frames
                else:
                    store.pop(key, None)
                if ttl is None:
                    if deadlines:
                        deadlines.pop(key, None)
                elif frames[4]:
                    self._set_deadline(key, time.monotonic() + ttl)
                accepted += 1
        finally:
            self.sequence = sequence
            if accepted:
                self.stats["updates"] += accepted
                self._dirty = True
                self._urgent = self._urgent or urgent

    def _recv_authorized(self, collector: zmq.Socket) -> Callable[[int], list[bytes]]:
        """``recv_multipart`` that drops (and counts) updates whose key the sender's host may not set."""
        authorize = self.authorize

        def recv(flags: int) -> list[bytes]:
            while True:
                frames = collector.recv_multipart(flags, copy=False)
                host = host_of_frame(frames[0])
                if host in self.cut_hosts:
                    why = "was revoked: update refused"
                elif authorize(host, frames[0].bytes):
                    return [f.bytes for f in frames]
                else:
                    why = "may not set"
                self.stats["refused"] += 1
                self.dropped(f"collector: host {host or '(unnamed)'} {why} {frames[0].bytes[:64]!r}")

        return recv

    def _admit(self, frames: list[bytes]) -> str | None:
        """Why an update cannot enter the map, or ``None`` (and the map's size is counted in)."""
        key, properties, body = frames[0], frames[3], frames[4]
        old = self._map.get(key)
        if not body:
            if old is None:
                return key_problem(key)  # nothing to delete; a well-formed key is still published
            self._bytes -= len(key) + len(old[3]) + len(old[4])
            return None
        size = len(properties) + len(body)
        if size > self.max_value:
            return f"{size} bytes of value for {key[:60]!r} (max_value {self.max_value})"
        if old is None:
            problem = key_problem(key)
            if problem is not None:
                return problem
            if len(self._map) >= self.max_keys:
                return f"new key {key[:60]!r}: the map holds {len(self._map)} keys (max_keys {self.max_keys})"
            grows = len(key) + size
        else:
            grows = size - len(old[3]) - len(old[4])
        if self._bytes + grows > self.max_bytes:
            return f"{key[:60]!r}: the map would hold {self._bytes + grows} bytes (max_bytes {self.max_bytes})"
        self._bytes += grows
        return None

    def _set_deadline(self, key: bytes, deadline: float) -> None:
        self._deadlines[key] = deadline
        heapq.heappush(self._expiry, (deadline, key))

    def _expire(self, publisher: zmq.Socket, now: float) -> None:
        """Delete keys whose ttl ran out, and publish each deletion."""
        while self._expiry and self._expiry[0][0] <= now:
            deadline, key = heapq.heappop(self._expiry)
            if self._deadlines.get(key) != deadline:
                continue  # the key changed since; that deadline is stale
            del self._deadlines[key]
            old = self._map.pop(key, None)
            if old is not None:
                self._bytes -= len(key) + len(old[3]) + len(old[4])
            self.sequence += 1
            publisher.send_multipart([key, self.sequence.to_bytes(8, "big"), b"", b"", b""])
            self.stats["expired"] += 1
            self._dirty = True
            self._urgent = self._urgent or not key.startswith(_REREAD)

    def _serve_snapshots(self, snapshot: zmq.Socket) -> None:
        for _ in range(BATCH):
            try:
                received = snapshot.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            host = host_of_frame(received[-1]) if self.cut_hosts else ""
            frames = [f.bytes for f in received]
            if host in self.cut_hosts:
                self.stats["refused"] += 1
                self.dropped(f"snapshot: host {host} was revoked: request refused")
                continue
            try:
                identity, subtree = parse_icanhaz(frames)
            except ProtocolError as exc:
                self.dropped(f"snapshot: {exc}")
                continue
            self._send_snapshot(snapshot, identity, subtree)

    def _send_snapshot(self, snapshot: zmq.Socket, identity: bytes, subtree: bytes) -> None:
        try:
            for key, frames in self._map.items():
                if key.startswith(subtree):
                    snapshot.send_multipart([identity, key, frames[1], b"", frames[3], frames[4]], zmq.NOBLOCK)
            snapshot.send_multipart([identity, KTHXBAI, self.sequence.to_bytes(8, "big"), b"", b"", subtree],
                                    zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY) or queue full
            log.warning("snapshot for %r abandoned: %s", subtree, exc)
            return
        self.stats["snapshots"] += 1

    # -- sequence and persistence --

    def _open_epoch(self) -> None:
        """Restore the map and start an epoch above any this server used before."""
        state = self._restore()
        previous = 0
        if state:
            previous = state["epoch"]
            wall, mono = time.time(), time.monotonic()
            for key, sequence, properties, body, expires in state["entries"]:
                if expires is not None and expires <= wall:
                    continue
                self._map[key] = [key, sequence.to_bytes(8, "big"), b"", properties, body]
                self._bytes += len(key) + len(properties) + len(body)
                if expires is not None:
                    self._set_deadline(key, mono + expires - wall)
            if len(self._map) > self.max_keys or self._bytes > self.max_bytes:
                log.warning("kv holds more than max_keys %d or max_bytes %d: new keys are refused until keys are "
                            "deleted", self.max_keys, self.max_bytes)
        # The wall clock keeps epochs rising even without a state file; the
        # stored epoch keeps them rising when the clock is behind (a Pi has no RTC).
        self._start_epoch(max(previous + 1, int(time.time())))

    def _restore(self) -> dict | None:
        """The newer of the state file and the copy in RAM: the one that holds the later sequence.

        The state file wins a tie. One that cannot be read (a damaged one is moved aside) is logged at
        error level, counted in ``stats["damaged"]`` and passed over: the server starts from the
        other, or empty.
        """
        best = None
        for store, what in ((self._store, "state file"), (self._copy, "copy in RAM")):
            try:
                state = store.load() if store is not None else None
            except Unreadable as exc:
                self.stats["damaged"] += 1
                log.error("kv %s %s", what, exc)
                continue
            if state is not None and (best is None or state["sequence"] > best[2]["sequence"]):
                best = (what, store, state)
        if best is None:
            return None
        what, store, state = best
        written = "an unknown time" if state["written"] is None else time.ctime(state["written"])
        log.info("kv restores %d keys from its %s %s (written at %s, sequence %d)", len(state["entries"]), what,
                 store.path, written, state["sequence"])
        return state

    def _next_epoch(self) -> None:
        log.info("kv sequence counter of epoch %d exhausted, opening the next", epoch_of(self.sequence))
        self._start_epoch(epoch_of(self.sequence) + 1)

    def _start_epoch(self, epoch: int) -> None:
        self.sequence = epoch << EPOCH_SHIFT
        self._ceiling = self.sequence + (1 << EPOCH_SHIFT) - 1
        self._save(wait=True)  # the epoch is on disk before any sequence of it is published

    def _entries(self) -> list:
        wall, mono = time.time(), time.monotonic()
        entries = []
        for key, frames in self._map.items():
            deadline = self._deadlines.get(key)
            expires = None if deadline is None else wall + deadline - mono
            entries.append([key, int.from_bytes(frames[1], "big"), frames[3], frames[4], expires])
        return entries

    def _save(self, wait: bool = False) -> bool:
        """Write the whole map to the state file; in the background unless ``wait``. False if a write is still busy."""
        if self._store is None:
            self._dirty = self._urgent = False
            return True
        if self._writer is not None and self._writer.is_alive():
            if not wait:
                return False
            self._writer.join()
        data = StateFile.dump(self.sequence, self._entries())
        self._dirty = self._urgent = False
        if wait:
            self._store.save(data)
        else:
            self._writer = threading.Thread(target=self._write, args=(data,), name="kv-state", daemon=True)
            self._writer.start()
        return True

    def _write(self, data: bytes) -> None:
        try:
            self._store.save(data)
        except OSError as exc:
            log.error("kv could not write %s: %s; will retry", self._store.path, exc)
            self._dirty = self._urgent = True

    def _write_copy(self) -> bool:
        """Write the whole map to the copy in RAM, here and now: tmpfs does not wait for a card."""
        data = StateFile.dump(self.sequence, self._entries())
        self._dirty = False
        try:
            self._copy.save(data)
        except OSError as exc:
            self.stats["copy_failures"] += 1
            self._copy_errors.log(logging.ERROR, "kv could not write its copy in RAM %s: %s; its readings and "
                                  "summaries reach the state file with other keys only", self._copy.path, exc)
            self._dirty = True
        return True
