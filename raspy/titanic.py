"""Titanic (9/TSP): durable requests, and a durable key/value store.

Titanic is an MDP worker for clients (``titanic.request``, ``titanic.reply``,
``titanic.close``, ``titanic.store``) and an MDP client of the real services.
Everything it accepts lives in one SQLite file in WAL mode with
``synchronous=FULL``: a request is committed, and so fsynced, before its
``200`` goes back, so it survives ``kill -9`` and a power cut. Delivery is
at least once: a request whose reply was not yet stored when Titanic died is
sent again after a restart.

Writes use group commit: a writer that finds no commit under way commits
every write queued so far in one transaction (one fsync), and each waiting
thread is woken once, when its own write is committed. ``titanic.request`` is
served on several connections by one thread, which stores the requests that
arrived together in one write, so concurrent clients share fsyncs. See
docs/titanic.md.
"""
from __future__ import annotations

import logging
import queue
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import msgpack

from raspy import protocol as p
from raspy.client import MajorDomoClient, RequestTimeout
from raspy.executive import Counters, Server, Settings
from raspy.protocol import Frames
from raspy.service import Service, bad_request, not_found
from raspy.statistics import SNMPGauge, oid

log = logging.getLogger(__name__)

T = TypeVar("T")

REQUEST = "titanic.request"
REPLY = "titanic.reply"
CLOSE = "titanic.close"
STORE = "titanic.store"

OK, PENDING, UNKNOWN, ERROR = b"200", b"300", b"400", b"500"

PENDING_STATE, REPLIED_STATE, CLOSED_STATE = 0, 1, 2

_UUID = re.compile(rb"[0-9a-fA-F]{32}\Z")

SCHEMA = """
CREATE TABLE IF NOT EXISTS request (
    seq     INTEGER PRIMARY KEY,   -- arrival order
    nonce   INTEGER NOT NULL,      -- random; the uuid is nonce and seq in hex
    service BLOB NOT NULL,
    body    BLOB,                  -- msgpack array of the request frames; NULL once closed
    state   INTEGER NOT NULL,      -- 0 pending, 1 replied, 2 closed
    reply   BLOB,                  -- msgpack array of the reply frames
    created REAL NOT NULL,
    changed REAL NOT NULL          -- when state last changed; retention counts from here
);
CREATE INDEX IF NOT EXISTS request_pending ON request (service, seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS request_done ON request (changed) WHERE state > 0;
CREATE TABLE IF NOT EXISTS store (
    service TEXT NOT NULL,
    section TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   BLOB NOT NULL,         -- msgpack
    changed REAL NOT NULL,
    PRIMARY KEY (service, section, key)
) WITHOUT ROWID;
"""


def pack_frames(frames: Iterable[bytes]) -> bytes:
    return msgpack.packb(list(frames), use_bin_type=True)


def unpack_frames(blob: bytes) -> Frames:
    return list(msgpack.unpackb(blob, raw=False))


def parse_uuid(frames: Frames) -> str | None:
    """The uuid of a ``titanic.reply``/``titanic.close`` body, or ``None`` when malformed."""
    if len(frames) != 1 or not _UUID.match(frames[0]):
        return None
    return frames[0].decode("ascii").lower()


def make_uuid(nonce: int, seq: int) -> str:
    """32 hex characters: 16 of a random nonce, 16 of the row's arrival number.

    The row number is the key, so no separate uuid index is written with
    every request; the nonce makes uuids unguessable and keeps an old uuid
    unknown if a row number is ever reused after a clean-up.
    """
    return f"{nonce:016x}{seq:016x}"


def split_uuid(key: str) -> tuple[int, int]:
    """``(nonce, seq)`` of a uuid; halves no uuid of ours can have become -1 (matches no row)."""
    nonce, seq = int(key[:16], 16), int(key[16:], 16)
    limit = 1 << 63  # SQLite integers are signed 64-bit
    return (nonce if nonce < limit else -1), (seq if seq < limit else -1)


# -- storage --------------------------------------------------------------------

class _Write:
    """One write waiting for a group commit; ``wake`` is released once: its write is done, or it leads next."""

    __slots__ = ("op", "result", "error", "lead", "wake")

    def __init__(self, op: Callable[[sqlite3.Connection], Any]) -> None:
        self.op = op
        self.result: Any = None
        self.error: BaseException | None = None
        self.lead = False  # woken to commit the next batch rather than because this one is done
        self.wake = threading.Lock()
        self.wake.acquire()


class Journal:
    """Titanic's SQLite file: requests, replies and the key/value store.

    ``write(op)`` returns only after ``op``'s transaction is committed (and so
    fsynced). Reads run on a small pool of read-only connections, so they
    never wait behind an fsync.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._connect()
        self._db.execute("PRAGMA page_size=1024")  # a new file only: smaller pages, fewer bytes per commit
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._queue: list[_Write] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when no commit is under way
        self._committing = False
        self._readers: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self.commits = 0
        self.writes = 0

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)

    # -- the two primitives ---------------------------------------------------

    def write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` in a transaction; return its result once committed.

        A writer that finds no commit under way leads: it commits every queued
        write in one transaction, wakes each of their writers once, and hands
        the lead to the first write queued meanwhile. So every writer sleeps
        at most once, however many share a commit.
        """
        entry = _Write(op)
        with self._lock:
            self._queue.append(entry)
            lead = not self._committing
            self._committing = True
        if not lead:
            entry.wake.acquire()
        if lead or entry.lead:
            self._lead(entry)
        if entry.error is not None:
            raise entry.error
        return entry.result

    def _lead(self, entry: _Write) -> None:
        """Commit the queued writes (``entry``'s among them), then wake their writers and the next leader."""
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            self._commit(batch)
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._committing = False
                    self._idle.notify_all()
                else:
                    successor.lead = True
            for done in batch:
                if done is not entry:
                    done.wake.release()
            if successor is not None:
                successor.wake.release()

    def _commit(self, batch: list[_Write]) -> None:
        """One transaction (one fsync) for every write of ``batch``; a failing op undoes only itself."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            for entry in batch:
                db.execute("SAVEPOINT op")
                try:
                    entry.result = entry.op(db)
                except Exception as exc:
                    db.execute("ROLLBACK TO op")
                    entry.error = exc
                db.execute("RELEASE op")
            db.execute("COMMIT")
        except Exception as exc:
            log.error("commit of %d writes failed: %s", len(batch), exc)
            for entry in batch:
                entry.error = entry.error or exc
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")
        else:
            self.commits += 1
            self.writes += len(batch)

    def read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` on a read-only connection (sees every committed write)."""
        try:
            db = self._readers.get_nowait()
        except queue.Empty:
            db = self._connect()
            db.execute("PRAGMA query_only=1")
            self._all_readers.append(db)
        try:
            return op(db)
        finally:
            self._readers.put(db)

    def close(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: not self._committing)
            for db in self._all_readers:
                db.close()
            self._db.close()

    # -- requests -------------------------------------------------------------

    def add_request(self, service: bytes, body: Frames) -> str:
        """Store a new pending request; its uuid."""
        return self.add_requests([(service, body)])[0]

    def add_requests(self, requests: list[tuple[bytes, Frames]]) -> list[str]:
        """Store new pending requests, ``(service, body)`` each, in one write; their uuids."""
        now = time.time()
        rows = [(secrets.randbits(63), service, pack_frames(body), now, now) for service, body in requests]
        seqs = self.write(lambda db: [db.execute(
            "INSERT INTO request (nonce, service, body, state, created, changed) VALUES (?, ?, ?, 0, ?, ?)",
            row).lastrowid for row in rows])
        return [make_uuid(row[0], seq) for row, seq in zip(rows, seqs)]

    def reply_of(self, key: str) -> tuple[int, Frames] | None:
        """``(state, reply frames)`` of a request; ``None`` when unknown."""
        nonce, seq = split_uuid(key)
        row = self.read(lambda db: db.execute(
            "SELECT state, reply FROM request WHERE seq = ? AND nonce = ?", (seq, nonce)).fetchone())
        if row is None:
            return None
        state, reply = row
        return state, (unpack_frames(reply) if state == REPLIED_STATE else [])

    def close_request(self, key: str) -> None:
        """Forget a request's body and reply (a pending one is not sent any more)."""
        nonce, seq = split_uuid(key)
        self.write(lambda db: db.execute(
            "UPDATE request SET state = 2, body = NULL, reply = NULL, changed = ? "
            "WHERE seq = ? AND nonce = ? AND state != 2", (time.time(), seq, nonce)))

    def store_reply(self, key: str, reply: Frames) -> None:
        """Mark a pending request replied; a request closed meanwhile stays closed."""
        nonce, seq = split_uuid(key)
        self.write(lambda db: db.execute(
            "UPDATE request SET state = 1, reply = ?, body = NULL, changed = ? WHERE seq = ? AND nonce = ? AND state = 0",
            (pack_frames(reply), time.time(), seq, nonce)))

    def pending_services(self) -> list[bytes]:
        """Services with pending requests (a skip scan of the pending index)."""
        def scan(db: sqlite3.Connection) -> list[bytes]:
            found: list[bytes] = []
            row = db.execute("SELECT min(service) FROM request WHERE state = 0").fetchone()
            while row[0] is not None:
                found.append(row[0])
                row = db.execute("SELECT min(service) FROM request WHERE state = 0 AND service > ?",
                                 (row[0],)).fetchone()
            return found
        return self.read(scan)

    def pending(self, service: bytes, limit: int = 64) -> list[tuple[str, Frames]]:
        """The oldest pending requests of ``service``, in arrival order."""
        rows = self.read(lambda db: db.execute(
            "SELECT nonce, seq, body FROM request WHERE state = 0 AND service = ? ORDER BY seq LIMIT ?",
            (service, limit)).fetchall())
        return [(make_uuid(nonce, seq), unpack_frames(body)) for nonce, seq, body in rows]

    def counts(self) -> dict[str, int]:
        rows = self.read(lambda db: db.execute("SELECT state, count(*) FROM request GROUP BY state").fetchall())
        names = {PENDING_STATE: "pending", REPLIED_STATE: "replied", CLOSED_STATE: "closed"}
        return {name: dict(rows).get(state, 0) for state, name in names.items()}

    def clean(self, before: float, chunk: int = 1000) -> int:
        """Delete replies and closed requests last changed before ``before``; how many."""
        total = 0
        while True:
            cursor = self.write(lambda db: db.execute(
                "DELETE FROM request WHERE seq IN "
                "(SELECT seq FROM request WHERE state > 0 AND changed < ? LIMIT ?)", (before, chunk)))
            total += cursor.rowcount
            if cursor.rowcount < chunk:
                return total


# -- the dispatcher -------------------------------------------------------------

@dataclass
class DispatchSettings:
    """How pending requests are sent: timeouts and back-off in seconds, lanes in threads."""

    timeout: float = 10.0      # one attempt of a dispatched request
    probe_timeout: float = 1.0  # one mmi.service question
    retry_min: float = 0.5
    retry_max: float = 30.0
    lanes: int = 4             # services served at once


class Dispatcher:
    """Sends pending requests to their services, one lane (thread) per busy service.

    A lane sends its service's requests one at a time in arrival order and
    stores each reply before sending the next. A service that ``mmi.service``
    says is absent, or that times out, is retried with exponential back-off.
    """

    def __init__(self, journal: Journal, broker: str, settings: DispatchSettings | None = None) -> None:
        self.journal = journal
        self.broker = broker
        self.settings = settings or DispatchSettings()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._lanes: dict[bytes, threading.Thread] = {}
        self._retry: dict[bytes, tuple[float, float]] = {}  # service -> (not before, current delay)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="titanic-dispatcher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New requests were stored: look again without waiting for the next round."""
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            lanes = list(self._lanes.values())
        for lane in lanes:
            lane.join(timeout)

    def run(self) -> None:
        """Start lanes for services that are there, until :meth:`stop`."""
        probe = MajorDomoClient(self.broker, timeout=self.settings.probe_timeout, retries=1)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    self._round(probe)
                except Exception:
                    log.exception("dispatch round failed")
                # at most ~20 rounds a second however often new requests wake us
                self._stop.wait(0.05)
                self._wake.wait(self._idle())
        finally:
            probe.close()

    def _idle(self) -> float:
        """Seconds until a backed-off service may be tried again (capped at one)."""
        now = time.monotonic()
        with self._lock:
            waits = [at - now for at, _ in self._retry.values()]
        return max(0.0, min([1.0, *waits]))

    def _round(self, probe: MajorDomoClient) -> None:
        now = time.monotonic()
        services = self.journal.pending_services()
        with self._lock:  # forget the back-off of services whose requests were all closed
            for gone in self._retry.keys() - set(services):
                del self._retry[gone]
        for service in services:
            with self._lock:
                if service in self._lanes or self._retry.get(service, (0.0, 0.0))[0] > now:
                    continue
                if len(self._lanes) >= self.settings.lanes:
                    return
            if not self._present(probe, service):
                self._back_off(service)
                continue
            lane = threading.Thread(target=self._lane, args=(service,), daemon=True,
                                    name=f"titanic-lane-{service.decode(errors='replace')}")
            with self._lock:
                self._lanes[service] = lane
            lane.start()

    def _present(self, probe: MajorDomoClient, service: bytes) -> bool:
        try:
            return probe.send(b"mmi.service", [service])[:1] == [b"200"]
        except (RequestTimeout, p.ProtocolError) as exc:
            log.debug("mmi.service %s: %s", service, exc)
            return False

    def _back_off(self, service: bytes) -> None:
        with self._lock:
            delay = self._retry.get(service, (0.0, self.settings.retry_min / 2))[1] * 2
            delay = min(max(delay, self.settings.retry_min), self.settings.retry_max)
            self._retry[service] = (time.monotonic() + delay, delay)
        # INFO once per outage, not every retry of a service that is away for weeks
        log.log(logging.INFO if delay == self.settings.retry_min else logging.DEBUG,
                "service %s not answering; retrying in %.1fs", service.decode(errors="replace"), delay)

    def _lane(self, service: bytes) -> None:
        """Send ``service``'s pending requests in order until none is left or one fails."""
        client = MajorDomoClient(self.broker, timeout=self.settings.timeout, retries=1)
        try:
            while not self._stop.is_set():
                batch = self.journal.pending(service)
                if not batch:
                    return
                for key, body in batch:
                    if self._stop.is_set():
                        return
                    try:
                        reply = client.send(service, body)
                    except RequestTimeout:
                        self._back_off(service)
                        return
                    self.journal.store_reply(key, reply)
                with self._lock:
                    self._retry.pop(service, None)
        except Exception:
            log.exception("dispatch to %s failed", service.decode(errors="replace"))
            self._back_off(service)
        finally:
            client.close()
            with self._lock:
                self._lanes.pop(service, None)
            self._wake.set()


# -- the key/value store ----------------------------------------------------------

def _name(args: dict, field: str) -> str:
    value = args.get(field)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{field!r} must be a non-empty string")
    return value


def _args(args: Any) -> dict:
    if not isinstance(args, dict):
        raise bad_request("arguments must be a map with 'service' (and 'section', 'key')")
    return args


class Store(Service):
    """``titanic.store``: values kept under (service, section, key), durable before the reply.

    Commands: ``set`` {service, section, key, value} or a list of them (one
    commit); ``get`` {service, section, key} (404 when missing), or without
    key the whole section as a map; ``delete`` {service, section?, key?};
    ``list`` {service} -> sections, {service, section} -> keys.
    """

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def do_set(self, args: Any) -> int:
        items = args if isinstance(args, list) else [args]
        if not items:
            raise bad_request("nothing to set")
        rows = []
        now = time.time()
        for item in map(_args, items):
            if "value" not in item:
                raise bad_request("'value' is missing")
            rows.append((_name(item, "service"), _name(item, "section"), _name(item, "key"), p.pack(item["value"]), now))
        self.journal.write(lambda db: db.executemany(
            "INSERT OR REPLACE INTO store (service, section, key, value, changed) VALUES (?, ?, ?, ?, ?)", rows))
        return len(rows)

    def do_get(self, args: Any) -> Any:
        args = _args(args)
        service, section = _name(args, "service"), _name(args, "section")
        if "key" not in args:
            rows = self.journal.read(lambda db: db.execute(
                "SELECT key, value FROM store WHERE service = ? AND section = ? ORDER BY key",
                (service, section)).fetchall())
            return {key: p.unpack(value) for key, value in rows}
        key = _name(args, "key")
        row = self.journal.read(lambda db: db.execute(
            "SELECT value FROM store WHERE service = ? AND section = ? AND key = ?", (service, section, key)).fetchone())
        if row is None:
            raise not_found(f"no key {key!r} in {service}/{section}")
        return p.unpack(row[0])

    def do_delete(self, args: Any) -> int:
        args = _args(args)
        where, params = ["service = ?"], [_name(args, "service")]
        if "section" in args:
            where.append("section = ?")
            params.append(_name(args, "section"))
        if "key" in args:
            if "section" not in args:
                raise bad_request("deleting a key needs its 'section'")
            where.append("key = ?")
            params.append(_name(args, "key"))
        sql = "DELETE FROM store WHERE " + " AND ".join(where)
        return self.journal.write(lambda db: db.execute(sql, params).rowcount)

    def do_list(self, args: Any) -> list[str]:
        args = _args(args)
        service = _name(args, "service")
        if "section" in args:
            sql, params = "SELECT key FROM store WHERE service = ? AND section = ? ORDER BY key", (service, _name(args, "section"))
        else:
            sql, params = "SELECT DISTINCT section FROM store WHERE service = ? ORDER BY section", (service,)
        return [row[0] for row in self.journal.read(lambda db: db.execute(sql, params).fetchall())]


# -- the executive ----------------------------------------------------------------

class Titanic(Server):
    """The Titanic executive: 9/TSP services, the store, the dispatcher, retention.

    Options: ``db`` (default ``<state_dir>/titanic.sqlite``), ``retention``
    (seconds a reply or a closed request is kept, default a week),
    ``request_workers`` (connections serving ``titanic.request`` from one thread, so the
    requests that arrive together are committed together; default 8),
    ``clean_interval`` (seconds), and the dispatch settings ``dispatch_timeout``,
    ``probe_timeout``, ``retry_min``, ``retry_max``, ``lanes``.
    """

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        options = settings.options
        self.retention = float(options.get("retention", 7 * 24 * 3600))
        self.clean_interval = float(options.get("clean_interval", 60.0))
        workers = int(options.get("request_workers", 8))
        if self.retention <= 0 or self.clean_interval <= 0 or workers < 1:
            raise ValueError("retention and clean_interval must be positive, request_workers at least 1")
        self.journal = Journal(options.get("db") or Path(settings.state_dir) / "titanic.sqlite")
        self.dispatcher = Dispatcher(self.journal, settings.broker, DispatchSettings(
            timeout=float(options.get("dispatch_timeout", 10.0)),
            probe_timeout=float(options.get("probe_timeout", 1.0)),
            retry_min=float(options.get("retry_min", 0.5)),
            retry_max=float(options.get("retry_max", 30.0)),
            lanes=int(options.get("lanes", 4)),
        ))
        self._next_clean = 0.0
        self.add_pool(REQUEST, self.on_requests, workers)
        self._add_gauges()
        self.add_worker(REPLY, self.on_reply)
        self.add_worker(CLOSE, self.on_close)
        self.add_worker(STORE, Store(self.journal))

    def _add_gauges(self) -> None:
        """Queue and commit figures in ``<host>.titanic.statistics``, read from the journal when asked."""
        for state, doc in (("pending", "requests stored and not yet answered by their service"),
                           ("replied", "answered requests whose reply waits for titanic.reply or close"),
                           ("closed", "closed requests kept until the retention ends")):
            self.statistics.add(SNMPGauge(oid(self.service, f"requests_{state}"), doc,
                                          lambda state=state: self.journal.counts()[state]))
        self.statistics.add(SNMPGauge(oid(self.service, "commits"), "transactions committed (one fsync each)",
                                      lambda: self.journal.commits))
        self.statistics.add(SNMPGauge(oid(self.service, "writes"),
                                      "write operations committed (a batch of requests is one)",
                                      lambda: self.journal.writes))

    # -- 9/TSP --------------------------------------------------------------------

    def on_requests(self, requests: list[Frames]) -> list[Frames]:
        """``titanic.request``: service, body... -> 200, uuid (after the commit), for a batch in one commit.

        ``mmi.*`` is refused: the broker answers it itself, so it is never "there" to dispatch to.
        """
        valid = [i for i, frames in enumerate(requests)
                 if frames and frames[0] and not frames[0].startswith(p.MMI_PREFIX)]
        replies = [[UNKNOWN] for _ in requests]
        if not valid:
            return replies
        try:
            keys = self.journal.add_requests([(requests[i][0], requests[i][1:]) for i in valid])
        except sqlite3.Error:
            log.exception("could not store %d requests", len(valid))
            for i in valid:
                replies[i] = [ERROR]
            return replies
        for i, key in zip(valid, keys):
            replies[i] = [OK, key.encode("ascii")]
        self.dispatcher.wake()
        return replies

    def on_reply(self, frames: Frames) -> Frames:
        """``titanic.reply``: uuid -> 200 + reply frames, 300 pending, 400 unknown."""
        key = parse_uuid(frames)
        if key is None:
            return [UNKNOWN]
        try:
            found = self.journal.reply_of(key)
        except sqlite3.Error:
            log.exception("could not read request %s", key)
            return [ERROR]
        if found is None or found[0] == CLOSED_STATE:
            return [UNKNOWN]
        state, reply = found
        return [OK, *reply] if state == REPLIED_STATE else [PENDING]

    def on_close(self, frames: Frames) -> Frames:
        """``titanic.close``: uuid -> 200 (also for an unknown uuid)."""
        key = parse_uuid(frames)
        if key is None:
            return [UNKNOWN]
        try:
            self.journal.close_request(key)
        except sqlite3.Error:
            log.exception("could not close request %s", key)
            return [ERROR]
        return [OK]

    # -- life cycle -----------------------------------------------------------------

    def tick(self, now: float) -> None:
        if now >= self._next_clean:
            self._next_clean = now + self.clean_interval
            removed = self.journal.clean(now - self.retention)
            if removed:
                log.info("removed %d replies and closed requests older than %.0fs", removed, self.retention)

    def run(self) -> None:
        log.info("titanic on %s: %s", self.journal.path, self.journal.counts())
        self.dispatcher.start()
        super().run()

    def close(self) -> None:
        super().close()
        self.dispatcher.stop()
        self.journal.close()


# -- the client -------------------------------------------------------------------

class TitanicError(Exception):
    """Titanic answered with a status that is not what the call needs."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status


Callback = Callable[[str, Frames], None]


class TitanicClient:
    """Durable requests through Titanic, and the store's commands.

    ``request`` returns once Titanic has the request on disk. Replies come
    either by asking (:meth:`reply`, :meth:`wait`) or, for requests given a
    callback, from :meth:`run`, which polls, calls back and closes. Each
    thread gets its own MDP client (ZeroMQ sockets are not thread safe).
    """

    def __init__(self, broker: str, timeout: float = 2.5, retries: int = 3,
                 poll: tuple[float, float] = (0.05, 1.0)) -> None:
        self.broker = broker
        self.timeout = timeout
        self.retries = retries
        self.poll_min, self.poll_max = poll
        self._local = threading.local()
        self._clients: list[MajorDomoClient] = []
        self._lock = threading.Lock()
        self._callbacks: dict[str, Callback] = {}
        self._stop = threading.Event()

    def _client(self) -> MajorDomoClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = MajorDomoClient(self.broker, self.timeout, self.retries)
            with self._lock:
                self._clients.append(client)
        return client

    # -- 9/TSP ----------------------------------------------------------------------

    def request(self, service: str | bytes, body: bytes | Iterable[bytes], callback: Callback | None = None) -> str:
        """Hand a request to Titanic; its uuid. ``callback(uuid, reply)`` is called by :meth:`run`."""
        service = service.encode() if isinstance(service, str) else service
        frames = [body] if isinstance(body, bytes) else list(body)
        reply = self._client().send(REQUEST, [service, *frames])
        if reply[:1] != [OK] or len(reply) != 2:
            raise TitanicError(int(reply[0]) if reply and reply[0].isdigit() else 500, "request refused")
        key = reply[1].decode("ascii")
        if callback is not None:
            with self._lock:
                self._callbacks[key] = callback
        return key

    def reply(self, key: str) -> tuple[int, Frames]:
        """``(status, reply frames)``: 200 with the reply, 300 pending, 400 unknown."""
        frames = self._client().send(REPLY, [key.encode("ascii")])
        return p.parse_status(frames[0]) if frames else 500, frames[1:]

    def status(self, key: str) -> int:
        return self.reply(key)[0]

    def close(self, key: str) -> None:
        """Tell Titanic the reply is no longer needed."""
        frames = self._client().send(CLOSE, [key.encode("ascii")])
        if frames[:1] != [OK]:
            raise TitanicError(p.parse_status(frames[0]) if frames else 500, f"close of {key} refused")

    def wait(self, key: str, timeout: float = 30.0) -> Frames:
        """Poll until the reply of ``key`` is there (back-off to ``poll_max``); its frames."""
        deadline = time.monotonic() + timeout
        delay = self.poll_min
        while True:
            status, frames = self.reply(key)
            if status == 200:
                return frames
            if status != 300:
                raise TitanicError(status, f"no reply for {key}")
            if time.monotonic() + delay > deadline:
                raise TimeoutError(f"no reply for {key} after {timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, self.poll_max)

    def poll_once(self) -> int:
        """Fetch every reply that is ready, call its callback, close it; how many."""
        with self._lock:
            waiting = list(self._callbacks.items())
        done = 0
        for key, callback in waiting:
            status, frames = self.reply(key)
            if status == 300:
                continue
            if status == 200:
                try:
                    callback(key, frames)
                except Exception:
                    log.exception("callback for %s failed", key)
                self.close(key)
            else:
                log.warning("request %s is unknown to Titanic (%d); dropping its callback", key, status)
            with self._lock:
                self._callbacks.pop(key, None)
            done += 1
        return done

    def run(self) -> None:
        """Call back as replies arrive until :meth:`stop`; polls faster while replies come."""
        delay = self.poll_min
        while not self._stop.is_set():
            try:
                got = self.poll_once()
            except (RequestTimeout, TitanicError, p.ProtocolError) as exc:
                log.warning("titanic not answering as it should: %s", exc)
                got = 0
            delay = self.poll_min if got else min(delay * 2, self.poll_max)
            self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()

    @property
    def waiting(self) -> int:
        """Requests whose callback has not been called yet."""
        with self._lock:
            return len(self._callbacks)

    # -- the store ------------------------------------------------------------------

    def _store(self, command: str, args: Any) -> Any:
        status, result = self._client().call(STORE, command, args)
        if status == 404:
            raise KeyError(result)
        if status != 200:
            raise TitanicError(status, str(result))
        return result

    def store_set(self, service: str, section: str, key: str, value: Any) -> None:
        self._store("set", {"service": service, "section": section, "key": key, "value": value})

    def store_get(self, service: str, section: str, key: str) -> Any:
        """The value; ``KeyError`` when there is none."""
        return self._store("get", {"service": service, "section": section, "key": key})

    def store_section(self, service: str, section: str) -> dict[str, Any]:
        return self._store("get", {"service": service, "section": section})

    def store_delete(self, service: str, section: str | None = None, key: str | None = None) -> int:
        args = {"service": service, **({"section": section} if section else {}), **({"key": key} if key else {})}
        return self._store("delete", args)

    def store_list(self, service: str, section: str | None = None) -> list[str]:
        return self._store("list", {"service": service, **({"section": section} if section else {})})

    def shutdown(self) -> None:
        """Stop :meth:`run` and close the sockets of every thread."""
        self.stop()
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
