"""Key/value clients: publish updates, and keep a live copy of a subtree."""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable

import zmq

from raspy.errors import RequestTimeout
from raspy.mdp.protocol import ProtocolError
from raspy.state.keys import check_key, join_key
from raspy.state.kv.message import (
    BATCH,
    COLLECTOR_ENDPOINT,
    EPOCH_SHIFT,
    HUGZ,
    HWM,
    KTHXBAI,
    MAX_VALUE,
    PUBLISHER_ENDPOINT,
    RESERVED_KEYS,
    SERVER_TIMEOUT,
    SNAPSHOT_ENDPOINT,
    Callback,
    KVMsg,
    check_frames,
    decode_properties,
    epoch_of,
    icanhaz,
    parse_ttl,
)
from raspy.wakeup import Wakeup

log = logging.getLogger(__name__)

#: Longest wait (seconds) of a silent subscriber before it reconnects; the wait doubles from
#: ``server_timeout`` while the server stays silent (away, or refusing this host's key).
RECONNECT_MAX = 30.0


class KvPublisherClient:
    """Pushes updates to the server's collector.

    ``send`` waits at most ``timeout`` seconds for the collector to take the
    update (ZMQ_IMMEDIATE: nothing is queued for a server that is not there)
    and raises :class:`~raspy.errors.RequestTimeout` otherwise. Safe to share between threads.

    The collector answers nothing, so what the server would refuse is refused
    here first, with the reason: a key off the grammar of ``raspy.state.keys``,
    a value above ``max_value`` bytes (the server's default bound).
    """

    def __init__(self, collector_endpoint: str = COLLECTOR_ENDPOINT, timeout: float = 2.5,
                 context: zmq.Context | None = None, max_value: int = MAX_VALUE) -> None:
        self.collector_endpoint = collector_endpoint
        self.timeout = timeout
        self.max_value = max_value
        self._context = context or zmq.Context.instance()
        self._socket = self._open()
        self._lock = threading.Lock()
        # Unique per update without a syscall each: a random prefix and a counter.
        self._uuid_prefix = os.urandom(8)
        self._counter = 0

    def send(self, subtree: str, key: str, body: bytes | str, ttl: float | None = None) -> None:
        """Set ``join_key(subtree, key)`` to ``body`` (str is sent as UTF-8); empty body deletes.

        A bad key or a value too large raises ``ValueError`` and sends nothing.
        Any key may be deleted (one stored before keys had a grammar too).
        """
        full = join_key(subtree, key)
        if full.encode() in RESERVED_KEYS:
            raise ValueError(f"key {full!r} is reserved")
        properties = {}
        if ttl is not None:
            properties["ttl"] = repr(float(ttl))
            parse_ttl(properties["ttl"])
        if isinstance(body, str):
            body = body.encode()
        if body:
            check_key(full)
        with self._lock:
            self._counter += 1
            frames = KVMsg(full, 0, self._uuid_prefix + self._counter.to_bytes(8, "big"), properties, body).frames()
            if len(frames[3]) + len(body) > self.max_value:
                raise ValueError(f"a value of {len(frames[3]) + len(body)} bytes for {full[:60]!r}: "
                                 f"at most {self.max_value}")
            try:
                self._socket.send_multipart(frames)
            except zmq.Again:
                # A fresh connection, made in the background for the next send: ZeroMQ does not
                # retry a handshake the server refused (a key allowed only later).
                self._socket.close(linger=0)
                self._socket = self._open()
                raise RequestTimeout(f"kv collector {self.collector_endpoint} took nothing for {self.timeout}s") from None

    def _open(self) -> zmq.Socket:
        sock = self._context.socket(zmq.PUSH)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDTIMEO, int(self.timeout * 1000))
        sock.setsockopt(zmq.LINGER, int(self.timeout * 1000))
        sock.connect(self.collector_endpoint)
        return sock

    def close(self) -> None:
        """Close the socket; queued updates get up to ``timeout`` to leave."""
        self._socket.close()

    def __enter__(self) -> KvPublisherClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Resync(Exception):
    """The local map can no longer be trusted; take a new snapshot."""


class KvSubscriberClient:
    """A live copy of one subtree of the map, kept by a background thread.

    The thread subscribes to the subtree and to HUGZ, waits until something
    arrives (so the subscription is in effect), takes a snapshot, then applies
    updates numbered above the snapshot's in order. It takes a new snapshot by
    itself when the server falls silent for ``server_timeout`` seconds, when the
    epoch of the sequence changes (the server restarted) or goes backwards, and,
    for a subscriber of everything (``subtree=""``), when a sequence is skipped
    (a gap). With a narrower subtree, the numbers of other subtrees' updates are
    missing by design, so gaps cannot be seen there. While nothing comes at all
    it opens a fresh connection, waiting twice as long each time up to
    ``RECONNECT_MAX`` seconds: a server away, or one that refused this host's key.

    ``callback(key, body_or_None, properties)`` runs in that thread for each
    change, including changes a resync reveals. Reads (``get``, ``items``,
    ``dict``) are safe from any thread.
    """

    def __init__(self, subtree: str = "", snapshot_endpoint: str = SNAPSHOT_ENDPOINT,
                 publisher_endpoint: str = PUBLISHER_ENDPOINT, callback: Callback | None = None, *,
                 snapshot_timeout: float = 2.0, server_timeout: float = SERVER_TIMEOUT,
                 context: zmq.Context | None = None) -> None:
        self.subtree = subtree
        self.snapshot_endpoint = snapshot_endpoint
        self.publisher_endpoint = publisher_endpoint
        self.callback = callback
        self.snapshot_timeout = snapshot_timeout
        self.server_timeout = server_timeout
        self.context = context or zmq.Context.instance()
        self.sequence = 0
        self.updates = 0
        self.resyncs = 0
        self.gaps = 0
        self.reconnects = 0
        self._prefix = subtree.encode()
        self._strict = not subtree
        self._catching_up = True  # until an update newer than the snapshot arrives
        self._map: dict[bytes, list[bytes]] = {}  # key -> its five frames, as received
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stopping = threading.Event()
        self._wakeup = Wakeup()
        self._thread: threading.Thread | None = None

    # -- reading --

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._map.get(key.encode())
        return None if entry is None else entry[4]

    def items(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(key.decode(), frames[4]) for key, frames in self._map.items()]

    def dict(self) -> dict[str, bytes]:
        return dict(self.items())

    def __len__(self) -> int:
        return len(self._map)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once the first snapshot is in, False after ``timeout`` seconds."""
        return self._synced.wait(timeout)

    # -- thread --

    def start(self) -> KvSubscriberClient:
        if self._thread is not None:
            raise RuntimeError("subscriber already started")
        self._thread = threading.Thread(target=self._run, name=f"kv-sub {self.subtree}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> KvSubscriberClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        sub = self._open()
        silence = self.server_timeout
        try:
            while not self._stopping.is_set():
                if not self._sync(sub, silence):
                    if self._stopping.is_set():
                        break
                    # A fresh connection: ZeroMQ does not retry a handshake the server refused (a key
                    # allowed only now), and one that went quiet may lead nowhere.
                    sub.close()
                    sub = self._open()
                    self.reconnects += 1
                    silence = min(silence * 2, max(RECONNECT_MAX, self.server_timeout))
                    log.info("kv subscriber %r: nothing from %s; reconnected, next look in %.1fs",
                             self.subtree, self.publisher_endpoint, silence)
                    continue
                silence = self.server_timeout
                try:
                    self._follow(sub)
                except _Resync as why:
                    log.info("kv subscriber %r resynchronises: %s", self.subtree, why)
                    self.resyncs += 1
        except Exception:
            log.exception("kv subscriber %r failed", self.subtree)
        finally:
            sub.close()

    def _open(self) -> zmq.Socket:
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, HWM)
        sub.subscribe(self._prefix)
        if self._prefix:
            sub.subscribe(HUGZ)
        sub.connect(self.publisher_endpoint)
        return sub

    def _wait(self, sock: zmq.Socket, seconds: float) -> bool:
        """Wait up to ``seconds`` for ``sock`` (or :meth:`stop`); False if stopping or nothing came."""
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wakeup, zmq.POLLIN)
        ready = dict(poller.poll(seconds * 1000))
        return sock in ready and not self._stopping.is_set()

    def _sync(self, sub: zmq.Socket, silence: float) -> bool:
        """Take a snapshot once the subscription provably works; False when stopping, or when
        nothing came for ``silence`` seconds (the caller reconnects).

        A message on the SUB socket shows the subscription reached the server,
        so nothing published after it can be missed; the snapshot asked after it
        covers everything before. That message must be of the snapshot's epoch.
        """
        while self._wait(sub, silence):
            try:
                live = KVMsg.recv(sub).sequence
            except ProtocolError as exc:
                log.warning("kv subscriber dropped a malformed update: %s", exc)
                continue
            snapshot = self._fetch_snapshot()
            if snapshot is None or epoch_of(snapshot[0]) != epoch_of(live):
                continue
            self._install(*snapshot)
            return True
        return False

    def _fetch_snapshot(self) -> tuple[int, dict[bytes, list[bytes]]] | None:
        """``(sequence, map)`` of one ICANHAZ exchange, or ``None`` when it stalls."""
        try:
            sequence, entries = request_snapshot(self.context, self.snapshot_endpoint, self.subtree,
                                                 lambda dealer: self._wait(dealer, self.snapshot_timeout))
        except (RequestTimeout, ProtocolError) as exc:
            if not self._stopping.is_set():
                log.info("kv snapshot from %s failed (%s); asking again", self.snapshot_endpoint, exc)
            return None
        return sequence, {frames[0]: frames for frames in entries if frames[4]}

    def _install(self, sequence: int, entries: dict[bytes, list[bytes]]) -> None:
        with self._lock:
            old, self._map = self._map, entries
            self.sequence = sequence
        self._catching_up = True
        if self.callback:
            changes = [(key, None, b"") for key in old if key not in entries]
            changes += [(key, frames[4], frames[3]) for key, frames in entries.items()
                        if key not in old or old[key][3:] != frames[3:]]
            self._notify(changes)
        self._synced.set()  # after the callback has seen the snapshot: wait_synced() means both

    def _follow(self, sub: zmq.Socket) -> None:
        """Apply updates until stopping; raises :class:`_Resync` when the copy is in doubt."""
        while not self._stopping.is_set():
            if not self._wait(sub, self.server_timeout):
                if self._stopping.is_set():
                    return
                raise _Resync(f"no HUGZ for {self.server_timeout}s")
            changes: list = []
            try:
                with self._lock:
                    self._apply_batch(sub, changes)
            finally:
                if changes:
                    self._notify(changes)

    def _apply_batch(self, sub: zmq.Socket, changes: list) -> None:
        """Up to BATCH queued updates, under the lock: the subscriber's hot path."""
        recv, store, prefix, strict = sub.recv_multipart, self._map, self._prefix, self._strict
        last, catching_up, callback, applied = self.sequence, self._catching_up, self.callback, 0
        try:
            for _ in range(BATCH):
                try:
                    frames = recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if len(frames) != 5 or len(frames[1]) != 8:
                    log.warning("kv subscriber dropped a malformed update of %d frames", len(frames))
                    continue
                key, sequence = frames[0], int.from_bytes(frames[1], "big")
                hugz = key == HUGZ
                if sequence < last or (sequence == last and not hugz):
                    if catching_up:
                        continue  # already in the snapshot
                    raise _Resync(f"sequence went back from {last} to {sequence}")
                catching_up = False
                if sequence >> EPOCH_SHIFT != last >> EPOCH_SHIFT:
                    raise _Resync("the server restarted (new epoch)")
                if strict and sequence != (last if hugz else last + 1):
                    self.gaps += 1
                    raise _Resync(f"gap: expected {last + 1}, got {sequence}")
                last = sequence
                if hugz or not key.startswith(prefix):
                    continue
                if frames[4]:
                    store[key] = frames
                else:
                    store.pop(key, None)
                applied += 1
                if callback:
                    changes.append((key, frames[4] or None, frames[3]))
        finally:
            self.sequence, self._catching_up = last, catching_up
            self.updates += applied

    def _notify(self, changes: list) -> None:
        for key, body, props in changes:
            try:
                self.callback(key.decode(errors="replace"), body, decode_properties(props))
            except Exception:
                log.exception("kv subscriber callback failed for %r", key)


def request_snapshot(context: zmq.Context, endpoint: str, subtree: str,
                     wait: Callable[[zmq.Socket], bool]) -> tuple[int, list[list[bytes]]]:
    """``(sequence, KVSYNC frames)`` of one ICANHAZ exchange on a fresh DEALER.

    ``wait(dealer)`` says whether a reply came in time; when it says no, this
    raises :class:`~raspy.errors.RequestTimeout` (a fresh socket per attempt, so a late reply
    is never taken for the next one). Malformed replies raise :class:`ProtocolError`.
    """
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    entries = []
    try:
        dealer.send_multipart(icanhaz(subtree))
        while wait(dealer):
            frames = dealer.recv_multipart()
            check_frames(frames)
            if frames[0] == KTHXBAI:
                return int.from_bytes(frames[1], "big"), entries
            entries.append(frames)
        raise RequestTimeout(f"kv snapshot server {endpoint} stopped answering")
    finally:
        dealer.close()


def fetch_snapshot(subtree: str, snapshot_endpoint: str = SNAPSHOT_ENDPOINT, timeout: float = 2.5,
                   context: zmq.Context | None = None) -> tuple[int, dict[str, KVMsg]]:
    """One snapshot of ``subtree`` with no subscription: ``(sequence, {key: KVMsg})``.

    For one-off reads (``raspy kv get``); raises :class:`~raspy.errors.RequestTimeout` when the
    server is silent for ``timeout`` seconds.
    """
    sequence, entries = request_snapshot(context or zmq.Context.instance(), snapshot_endpoint, subtree,
                                         lambda dealer: dealer.poll(timeout * 1000))
    messages = (KVMsg.from_frames(frames) for frames in entries)
    return sequence, {msg.key: msg for msg in messages}
