"""Clone-pattern key/value publisher (ZeroMQ Guide ch. 5, 12/CHP).

Device state flows to everyone through one server with three sockets:

- snapshot (ROUTER): a client asks ``ICANHAZ? <subtree>`` and gets every key
  under the subtree (KVSYNC), then ``KTHXBAI`` with the last sequence;
- publisher (PUB): every accepted update, with a strictly increasing sequence,
  and ``HUGZ`` once a second so clients know the server is alive;
- collector (PULL): clients push updates (KVSET). PULL rather than SUB because
  a SUB socket silently drops what arrives before its subscription is active
  and PUSH gives publishers back-pressure instead of loss.

A sequence is ``epoch << 32 | counter``. Each start of the server opens a new,
larger epoch (kept in the state file), so sequences never go backwards across a
restart and a subscriber that sees the epoch change knows the server restarted
and takes a new snapshot. See docs/kv.md for the wire, persistence and resync rules.

Values are bytes. RasPy publishes msgpack-encoded values (``protocol.pack``).
"""
from __future__ import annotations

import heapq
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import msgpack
import zmq

from raspy.droplog import DropLog
from raspy.executive import Counters, Executive, Settings
from raspy.protocol import ProtocolError

log = logging.getLogger(__name__)

#: Default endpoints: broker port P = 5514, then P+1, P+2, P+3.
SNAPSHOT_ENDPOINT = "tcp://127.0.0.1:5515"
PUBLISHER_ENDPOINT = "tcp://127.0.0.1:5516"
COLLECTOR_ENDPOINT = "tcp://127.0.0.1:5517"

ICANHAZ = b"ICANHAZ?"
KTHXBAI = b"KTHXBAI"
HUGZ = b"HUGZ"
#: Keys a publisher may not set: clients read them as commands.
RESERVED_KEYS = frozenset({ICANHAZ, KTHXBAI, HUGZ})

EPOCH_SHIFT = 32
#: Messages queued per peer before ZeroMQ drops (PUB) or refuses (snapshot):
#: large enough that a subscriber busy for a few seconds does not lose updates.
HWM = 100_000
#: Messages handled per socket before the loop looks at timers and other sockets.
BATCH = 1000

Callback = Callable[[str, "bytes | None", "dict[str, str]"], None]


# -- kvmsg ------------------------------------------------------------------

def encode_properties(properties: Mapping[str, str]) -> bytes:
    """``name=value\\n`` lines; names hold no ``=`` and nothing holds a newline."""
    lines = []
    for name, value in properties.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ProtocolError(f"property {name!r}={value!r}: names and values are strings")
        if not name or "=" in name or "\n" in name or "\n" in value:
            raise ProtocolError(f"bad property {name!r}={value!r}")
        lines.append(f"{name}={value}\n")
    return "".join(lines).encode()


def decode_properties(frame: bytes) -> dict[str, str]:
    """The dict of a properties frame; anything but well-formed lines raises."""
    if not frame:
        return {}
    try:
        text = frame.decode()
    except UnicodeDecodeError:
        raise ProtocolError("properties are not UTF-8") from None
    if not text.endswith("\n"):
        raise ProtocolError("properties must end with a newline")
    properties = {}
    for line in text[:-1].split("\n"):
        name, sep, value = line.partition("=")
        if not sep or not name:
            raise ProtocolError(f"bad property line {line[:40]!r}")
        if name in properties:
            raise ProtocolError(f"property {name!r} given twice")
        properties[name] = value
    if "ttl" in properties:
        parse_ttl(properties["ttl"])
    return properties


def parse_ttl(value: str) -> float:
    """Seconds of a ``ttl`` property: a finite number above zero."""
    try:
        seconds = float(value)
    except ValueError:
        raise ProtocolError(f"ttl {value[:20]!r} is not a number") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ProtocolError(f"ttl must be a positive number of seconds, got {value[:20]!r}")
    return seconds


@dataclass(slots=True)
class KVMsg:
    """One clone-pattern message: key, sequence, uuid, properties, body.

    An empty body means "delete the key".
    """

    key: str
    sequence: int = 0
    uuid: bytes = b""
    properties: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def __post_init__(self) -> None:
        if not self.key:
            raise ProtocolError("empty key")
        if not 0 <= self.sequence < 1 << 64:
            raise ProtocolError(f"sequence {self.sequence} does not fit 8 bytes")
        if len(self.uuid) not in (0, 16):
            raise ProtocolError(f"uuid is 16 bytes or empty, got {len(self.uuid)}")

    @property
    def ttl(self) -> float | None:
        """Seconds this key lives, or ``None`` for ever."""
        value = self.properties.get("ttl")
        return None if value is None else parse_ttl(value)

    def frames(self) -> list[bytes]:
        return [self.key.encode(), self.sequence.to_bytes(8, "big"), self.uuid,
                encode_properties(self.properties), self.body]

    @classmethod
    def from_frames(cls, frames: Sequence[bytes]) -> KVMsg:
        """The message of five frames; anything malformed raises :class:`ProtocolError`."""
        frames = [bytes(frame) for frame in frames]
        key, properties = check_frames(frames)
        return cls(key, int.from_bytes(frames[1], "big"), frames[2], properties, frames[4])

    def send(self, socket: zmq.Socket, flags: int = 0) -> None:
        socket.send_multipart(self.frames(), flags)

    @classmethod
    def recv(cls, socket: zmq.Socket, flags: int = 0) -> KVMsg:
        return cls.from_frames(socket.recv_multipart(flags))


def check_frames(frames: Sequence[bytes]) -> tuple[str, dict[str, str]]:
    """Key and properties of a well-formed kvmsg; anything else raises :class:`ProtocolError`.

    Checks without building a :class:`KVMsg`: the server runs it per update.
    """
    if len(frames) != 5:
        raise ProtocolError(f"kvmsg has 5 frames, got {len(frames)}")
    if len(frames[1]) != 8:
        raise ProtocolError(f"sequence is 8 bytes, got {len(frames[1])}")
    if len(frames[2]) not in (0, 16):
        raise ProtocolError(f"uuid is 16 bytes or empty, got {len(frames[2])}")
    try:
        key = frames[0].decode()
    except UnicodeDecodeError:
        raise ProtocolError("key is not UTF-8") from None
    if not key:
        raise ProtocolError("empty key")
    return key, decode_properties(frames[3])


def icanhaz(subtree: str) -> list[bytes]:
    """Snapshot request for every key that starts with ``subtree``."""
    return [ICANHAZ, subtree.encode()]


def parse_icanhaz(frames: Sequence[bytes]) -> tuple[bytes, bytes]:
    """``(identity, subtree)`` of a request the snapshot ROUTER received."""
    if len(frames) != 3 or frames[1] != ICANHAZ:
        raise ProtocolError("snapshot request must be ICANHAZ?, subtree")
    try:
        frames[2].decode()
    except UnicodeDecodeError:
        raise ProtocolError("subtree is not UTF-8") from None
    return frames[0], frames[2]


def check_kvset(frames: Sequence[bytes]) -> float | None:
    """Validate a collector message; its ttl in seconds, or ``None``."""
    key, properties = check_frames(frames)
    if frames[0] in RESERVED_KEYS:
        raise ProtocolError(f"key {key!r} is reserved")
    return parse_ttl(properties["ttl"]) if "ttl" in properties else None


def join_key(subtree: str, key: str) -> str:
    """``subtree`` and ``key`` with exactly one ``/`` between them.

    ``join_key("/device/", "pi.fake.t")`` and ``join_key("/device", "/pi.fake.t")``
    are both ``/device/pi.fake.t``; an empty subtree leaves the key as it is.
    """
    if not subtree:
        return key
    return subtree.rstrip("/") + "/" + key.lstrip("/")


def epoch_of(sequence: int) -> int:
    return sequence >> EPOCH_SHIFT



# -- persistence ------------------------------------------------------------

class StateFile:
    """The map on disk as one msgpack document, replaced atomically.

    A crash leaves either the old file or the new one, never half of one:
    write a temporary file, fsync it, rename it over the old, fsync the directory.
    """

    FORMAT = 1

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict | None:
        """``{"epoch", "entries"}`` as saved, or ``None`` when there is no usable file.

        A corrupt file is moved aside (``.corrupt``) and logged: the server
        starts empty rather than not at all.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            state = msgpack.unpackb(data, raw=False)
            if state["format"] != self.FORMAT or not isinstance(state["epoch"], int):
                raise ValueError("unknown format")
            for key, sequence, properties, body, expires in state["entries"]:
                if not (isinstance(key, bytes) and isinstance(sequence, int) and isinstance(properties, bytes)
                        and isinstance(body, bytes) and (expires is None or isinstance(expires, float))):
                    raise ValueError("bad entry")
            return state
        except Exception as exc:
            aside = self.path.with_name(self.path.name + ".corrupt")
            log.error("state file %s is unreadable (%s); moved to %s, starting empty", self.path, exc, aside)
            os.replace(self.path, aside)
            return None

    def save(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dirfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

    @classmethod
    def dump(cls, epoch: int, entries: list) -> bytes:
        return msgpack.packb({"format": cls.FORMAT, "epoch": epoch, "entries": entries}, use_bin_type=True)


# -- server -----------------------------------------------------------------

class KvServer:
    """The ``kv`` executive: holds the map, numbers updates, serves snapshots.

    ``run()`` binds and loops until ``stop()`` (callable from any thread; the
    loop notices within 100 ms). Signals are the caller's business.
    """

    def __init__(self, snapshot_endpoint: str = SNAPSHOT_ENDPOINT, publisher_endpoint: str = PUBLISHER_ENDPOINT,
                 collector_endpoint: str = COLLECTOR_ENDPOINT, state_path: str | Path | None = None,
                 flush_interval: float = 5.0, hugz_interval: float = 1.0,
                 context: zmq.Context | None = None) -> None:
        self.snapshot_endpoint = snapshot_endpoint
        self.publisher_endpoint = publisher_endpoint
        self.collector_endpoint = collector_endpoint
        self.flush_interval = flush_interval
        self.hugz_interval = hugz_interval
        self.context = context or zmq.Context.instance()
        self.ready = threading.Event()
        self.sequence = 0
        self.stats = {"updates": 0, "snapshots": 0, "expired": 0}
        self.dropped = DropLog(log)
        self._store = StateFile(state_path) if state_path else None
        self._map: dict[bytes, list[bytes]] = {}      # key -> the published frames
        self._deadlines: dict[bytes, float] = {}      # key -> monotonic expiry, for ttl keys
        self._expiry: list[tuple[float, bytes]] = []  # heap of (deadline, key); stale ones skipped
        self._ceiling = 0
        self._dirty = False
        self._writer: threading.Thread | None = None
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

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
            snapshot.bind(self.snapshot_endpoint)
            publisher.bind(self.publisher_endpoint)
            collector.bind(self.collector_endpoint)
            self._loop(snapshot, publisher, collector)
        finally:
            self._flush(wait=True)
            for sock in (snapshot, publisher, collector):
                sock.close()
            log.info("kv stopped at sequence %d", self.sequence)

    def _loop(self, snapshot: zmq.Socket, publisher: zmq.Socket, collector: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(collector, zmq.POLLIN)
        poller.register(snapshot, zmq.POLLIN)
        self.ready.set()
        log.info("kv serving: snapshot %s, publisher %s, collector %s, sequence %d",
                 self.snapshot_endpoint, self.publisher_endpoint, self.collector_endpoint, self.sequence)
        now = time.monotonic()
        next_hugz, next_flush = now, now + self.flush_interval
        while not self._stopping.is_set():
            wake = min(next_hugz, self._expiry[0][0] if self._expiry else math.inf,
                       next_flush if self._dirty else math.inf)
            timeout = min(max(wake - time.monotonic(), 0.0), 0.1)
            events = dict(poller.poll(timeout * 1000))
            if collector in events:
                self._collect(collector, publisher)
            if snapshot in events:
                self._serve_snapshots(snapshot)
            now = time.monotonic()
            if self._expiry and self._expiry[0][0] <= now:
                self._expire(publisher, now)
            if now >= next_hugz:
                publisher.send_multipart([HUGZ, self.sequence.to_bytes(8, "big"), b"", b"", b""])
                next_hugz = now + self.hugz_interval
            if self._dirty and now >= next_flush:
                # A write still busy on a slow SD card: look again shortly, do not spin.
                next_flush = now + (self.flush_interval if self._flush() else 0.1)

    def _collect(self, collector: zmq.Socket, publisher: zmq.Socket) -> None:
        """Number, store and republish up to BATCH updates: the hot path."""
        recv, send, store = collector.recv_multipart, publisher.send_multipart, self._map
        deadlines = self._deadlines
        sequence, ceiling, accepted = self.sequence, self._ceiling, 0
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
                if sequence >= ceiling:
                    self.sequence = sequence
                    self._next_epoch()
                    sequence, ceiling = self.sequence, self._ceiling
                sequence += 1
                frames[1] = sequence.to_bytes(8, "big")
                send(frames)
                key = frames[0]
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
            self._map.pop(key, None)
            self.sequence += 1
            publisher.send_multipart([key, self.sequence.to_bytes(8, "big"), b"", b"", b""])
            self.stats["expired"] += 1
            self._dirty = True

    def _serve_snapshots(self, snapshot: zmq.Socket) -> None:
        for _ in range(BATCH):
            try:
                frames = snapshot.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
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
        state = self._store.load() if self._store else None
        previous = 0
        if state:
            previous = state["epoch"]
            wall, mono = time.time(), time.monotonic()
            for key, sequence, properties, body, expires in state["entries"]:
                if expires is not None and expires <= wall:
                    continue
                self._map[key] = [key, sequence.to_bytes(8, "big"), b"", properties, body]
                if expires is not None:
                    self._set_deadline(key, mono + expires - wall)
            log.info("kv restored %d keys from %s", len(self._map), self._store.path)
        # The wall clock keeps epochs rising even without a state file; the
        # stored epoch keeps them rising when the clock is behind (a Pi has no RTC).
        self._start_epoch(max(previous + 1, int(time.time())))

    def _next_epoch(self) -> None:
        log.info("kv sequence counter of epoch %d exhausted, opening the next", epoch_of(self.sequence))
        self._start_epoch(epoch_of(self.sequence) + 1)

    def _start_epoch(self, epoch: int) -> None:
        self.sequence = epoch << EPOCH_SHIFT
        self._ceiling = self.sequence + (1 << EPOCH_SHIFT) - 1
        self._flush(wait=True)  # the epoch is on disk before any sequence of it is published

    def _entries(self) -> list:
        wall, mono = time.time(), time.monotonic()
        entries = []
        for key, frames in self._map.items():
            deadline = self._deadlines.get(key)
            expires = None if deadline is None else wall + deadline - mono
            entries.append([key, int.from_bytes(frames[1], "big"), frames[3], frames[4], expires])
        return entries

    def _flush(self, wait: bool = False) -> bool:
        """Write the map; in the background unless ``wait``. False if a write is still busy."""
        if self._store is None:
            self._dirty = False
            return True
        if self._writer is not None and self._writer.is_alive():
            if not wait:
                return False
            self._writer.join()
        data = StateFile.dump(epoch_of(self.sequence), self._entries())
        self._dirty = False
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
            self._dirty = True


class KvExecutive(Executive):
    """The ``kv`` executive: a :class:`KvServer` on the house's key/value endpoints.

    Options: ``state`` (file; default ``<state_dir>/kv.state``), ``flush_interval``
    and ``hugz_interval`` (seconds). Updates and snapshots count as requests on the board.
    """

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        options = settings.options
        self.server = KvServer(settings.kv_snapshot, settings.kv_publisher, settings.kv_collector,
                               state_path=options.get("state", Path(settings.state_dir) / "kv.state"),
                               flush_interval=options.get("flush_interval", 5.0),
                               hugz_interval=options.get("hugz_interval", 1.0))
        self.add_thread(self.server.run, self.server.stop, "kv")
        self._reported = 0

    def tick(self, now: float) -> None:
        served = self.server.stats["updates"] + self.server.stats["snapshots"]
        self.slot.count(requests=served - self._reported)
        self._reported = served


# -- clients ----------------------------------------------------------------

class KvPublisherClient:
    """Pushes updates to the server's collector.

    ``send`` waits at most ``timeout`` seconds for the collector to take the
    update (ZMQ_IMMEDIATE: nothing is queued for a server that is not there)
    and raises :class:`TimeoutError` otherwise. Safe to share between threads.
    """

    def __init__(self, collector_endpoint: str = COLLECTOR_ENDPOINT, timeout: float = 2.5,
                 context: zmq.Context | None = None) -> None:
        self.collector_endpoint = collector_endpoint
        self.timeout = timeout
        self._socket = (context or zmq.Context.instance()).socket(zmq.PUSH)
        self._socket.setsockopt(zmq.IMMEDIATE, 1)
        self._socket.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))
        self._socket.setsockopt(zmq.LINGER, int(timeout * 1000))
        self._socket.connect(collector_endpoint)
        self._lock = threading.Lock()
        # Unique per update without a syscall each: a random prefix and a counter.
        self._uuid_prefix = os.urandom(8)
        self._counter = 0

    def send(self, subtree: str, key: str, body: bytes | str, ttl: float | None = None) -> None:
        """Set ``join_key(subtree, key)`` to ``body`` (str is sent as UTF-8); empty body deletes."""
        full = join_key(subtree, key)
        if full.encode() in RESERVED_KEYS:
            raise ValueError(f"key {full!r} is reserved")
        properties = {}
        if ttl is not None:
            properties["ttl"] = repr(float(ttl))
            parse_ttl(properties["ttl"])
        if isinstance(body, str):
            body = body.encode()
        with self._lock:
            self._counter += 1
            frames = KVMsg(full, 0, self._uuid_prefix + self._counter.to_bytes(8, "big"), properties, body).frames()
            try:
                self._socket.send_multipart(frames)
            except zmq.Again:
                raise TimeoutError(f"kv collector {self.collector_endpoint} took nothing for {self.timeout}s") from None

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
    missing by design, so gaps cannot be seen there.

    ``callback(key, body_or_None, properties)`` runs in that thread for each
    change, including changes a resync reveals. Reads (``get``, ``items``,
    ``dict``) are safe from any thread.
    """

    def __init__(self, subtree: str = "", snapshot_endpoint: str = SNAPSHOT_ENDPOINT,
                 publisher_endpoint: str = PUBLISHER_ENDPOINT, callback: Callback | None = None, *,
                 snapshot_timeout: float = 2.0, server_timeout: float = 3.0,
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
        self._prefix = subtree.encode()
        self._strict = not subtree
        self._catching_up = True  # until an update newer than the snapshot arrives
        self._map: dict[bytes, list[bytes]] = {}  # key -> its five frames, as received
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stopping = threading.Event()
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
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> KvSubscriberClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, HWM)
        sub.subscribe(self._prefix)
        if self._prefix:
            sub.subscribe(HUGZ)
        sub.connect(self.publisher_endpoint)
        try:
            while self._sync(sub):
                try:
                    self._follow(sub)
                except _Resync as why:
                    log.info("kv subscriber %r resynchronises: %s", self.subtree, why)
                    self.resyncs += 1
        except Exception:
            log.exception("kv subscriber %r failed", self.subtree)
        finally:
            sub.close()

    def _wait(self, sock: zmq.Socket, seconds: float) -> bool:
        """Poll ``sock`` for up to ``seconds`` in short slices; False if stopping or nothing came."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if sock.poll(min(remaining, 0.1) * 1000):
                return True
        return False

    def _sync(self, sub: zmq.Socket) -> bool:
        """Take a snapshot once the subscription provably works; False when stopping.

        A message on the SUB socket shows the subscription reached the server,
        so nothing published after it can be missed; the snapshot asked after it
        covers everything before. That message must be of the snapshot's epoch.
        """
        while not self._stopping.is_set():
            if not self._wait(sub, self.server_timeout):
                continue
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
        except (TimeoutError, ProtocolError) as exc:
            if not self._stopping.is_set():
                log.info("kv snapshot from %s failed (%s); asking again", self.snapshot_endpoint, exc)
            return None
        return sequence, {frames[0]: frames for frames in entries if frames[4]}

    def _install(self, sequence: int, entries: dict[bytes, list[bytes]]) -> None:
        with self._lock:
            old, self._map = self._map, entries
            self.sequence = sequence
        self._catching_up = True
        self._synced.set()
        if self.callback:
            changes = [(key, None, b"") for key in old if key not in entries]
            changes += [(key, frames[4], frames[3]) for key, frames in entries.items()
                        if key not in old or old[key][3:] != frames[3:]]
            self._notify(changes)

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
    raises :class:`TimeoutError` (a fresh socket per attempt, so a late reply
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
        raise TimeoutError(f"kv snapshot server {endpoint} stopped answering")
    finally:
        dealer.close()


def fetch_snapshot(subtree: str, snapshot_endpoint: str = SNAPSHOT_ENDPOINT, timeout: float = 2.5,
                   context: zmq.Context | None = None) -> tuple[int, dict[str, KVMsg]]:
    """One snapshot of ``subtree`` with no subscription: ``(sequence, {key: KVMsg})``.

    For one-off reads (``raspy kv get``); raises :class:`TimeoutError` when the
    server is silent for ``timeout`` seconds.
    """
    sequence, entries = request_snapshot(context or zmq.Context.instance(), snapshot_endpoint, subtree,
                                         lambda dealer: dealer.poll(timeout * 1000))
    messages = (KVMsg.from_frames(frames) for frames in entries)
    return sequence, {msg.key: msg for msg in messages}
