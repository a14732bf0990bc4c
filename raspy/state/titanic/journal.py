"""Titanic's journal: requests, replies and the store in one SQLite file, committed in groups."""
from __future__ import annotations

import collections
import logging
import queue
import re
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import msgpack

from raspy.mdp.protocol import Frames
from raspy.state.titanic.marker import CommitMarker, JournalDamaged

log = logging.getLogger(__name__)

T = TypeVar("T")

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
CREATE TABLE IF NOT EXISTS meta (
    commits INTEGER NOT NULL       -- transactions committed since the file was made; the marker checks it
);
INSERT INTO meta SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM meta);
"""
#: How many problems ``PRAGMA quick_check`` lists at most.
CHECK_LINES = 3


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

    Opening checks the file first (``PRAGMA quick_check``, and its commit count
    against the marker beside it, see :mod:`~raspy.state.titanic.marker`) and
    raises :class:`JournalDamaged` rather than serve a file that lost
    acknowledged work.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.marker = CommitMarker(self.path.with_name(self.path.name + ".commits"))
        marked = self.marker.read()
        if marked is not None and not self.path.exists():
            raise JournalDamaged(self._lost(0, marked, "the file is missing"))
        self._db = self._connect()
        try:
            self.last_commit = self._check(marked)  # before the schema: a lost file must not pass for a new one
            self._db.execute("PRAGMA page_size=1024")  # a new file only: smaller pages, fewer bytes per commit
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            self.marker.open(self.last_commit)
        except BaseException:
            self._db.close()
            raise
        self._marker_failing = False
        self._queue: list[_Write] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when no commit is under way
        self._committing = False
        self._readers: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self.commits = 0
        self.writes = 0
        self._tally = threading.Lock()
        self._pending = collections.Counter(dict(self._db.execute(
            "SELECT service, count(*) FROM request WHERE state = 0 GROUP BY service")))
        self._pending_total = sum(self._pending.values())
        self._replied = self._db.execute("SELECT count(*) FROM request WHERE state = 1").fetchone()[0]

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)

    def _check(self, marked: int | None) -> int:
        """The file's commit count, once the file is whole and holds the ``marked`` commits the marker remembers."""
        try:
            problems = [row[0] for row in self._db.execute(f"PRAGMA quick_check({CHECK_LINES})")]
            if problems != ["ok"]:
                raise JournalDamaged(f"{self.path.name} is damaged: {'; '.join(problems)}")
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            commits = self._db.execute("SELECT commits FROM meta").fetchone()[0] if "meta" in tables else 0
        except sqlite3.DatabaseError as exc:
            raise JournalDamaged(f"{self.path.name} cannot be read: {exc}") from None
        if marked is None:
            if tables:
                log.warning("%s has no commit marker (new, restored or from an older RasPy): writing one at "
                            "commit %d", self.path, commits)
            return commits
        if commits < marked:
            raise JournalDamaged(self._lost(commits, marked, "-wal lost or damaged, or an older copy" if tables
                                            else "the file is empty"))
        return commits

    def _lost(self, commits: int, marked: int, cause: str) -> str:
        return f"{self.path.name} holds {commits} of {marked} acknowledged commits ({cause})"

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
            db.execute("UPDATE meta SET commits = ?", (self.last_commit + 1,))
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
            self.last_commit += 1
            self._update_marker()

    def _update_marker(self) -> None:
        """Move the marker on; a failure is logged once (the marker then lags behind, which refuses nothing)."""
        try:
            self.marker.update(self.last_commit)
        except OSError as exc:
            if not self._marker_failing:
                log.error("commit marker %s not updated (logged once until it works again): %s",
                          self.marker.path, exc)
            self._marker_failing = True
        else:
            if self._marker_failing:
                log.info("commit marker %s updated again", self.marker.path)
            self._marker_failing = False

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
            self.marker.close()

    # -- requests -------------------------------------------------------------

    def add_request(self, service: bytes, body: Frames) -> str:
        """Store a new pending request; its uuid."""
        return self.add_requests([(service, body)])[0]

    def add_requests(self, requests: list[tuple[bytes, Frames]]) -> list[str]:
        """Store new pending requests, ``(service, body)`` each, in one write; their uuids."""
        now = time.time()
        rows = [(secrets.randbits(63), service, pack_frames(body), now, now) for service, body in requests]
        with self._tally:  # counted before the commit: the dispatcher may store a reply before we return
            self._pending.update(service for service, _ in requests)
            self._pending_total += len(requests)
        try:
            seqs = self.write(lambda db: [db.execute(
                "INSERT INTO request (nonce, service, body, state, created, changed) VALUES (?, ?, ?, 0, ?, ?)",
                row).lastrowid for row in rows])
        except BaseException:
            with self._tally:
                for service, _ in requests:
                    self._uncount(service)
            raise
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

        def close(db: sqlite3.Connection) -> tuple[int, bytes] | None:
            row = db.execute("SELECT state, service FROM request WHERE seq = ? AND nonce = ? AND state != 2",
                             (seq, nonce)).fetchone()
            if row is not None:
                db.execute("UPDATE request SET state = 2, body = NULL, reply = NULL, changed = ? WHERE seq = ?",
                           (time.time(), seq))
            return row

        closed = self.write(close)
        if closed is not None:
            self._forget(*closed)

    def store_reply(self, key: str, reply: Frames) -> None:
        """Mark a pending request replied; a request closed meanwhile stays closed."""
        nonce, seq = split_uuid(key)
        row = self.write(lambda db: db.execute(
            "UPDATE request SET state = 1, reply = ?, body = NULL, changed = ? "
            "WHERE seq = ? AND nonce = ? AND state = 0 RETURNING service",
            (pack_frames(reply), time.time(), seq, nonce)).fetchone())
        if row is not None:
            with self._tally:
                self._uncount(row[0])
                self._replied += 1

    def _forget(self, state: int, service: bytes) -> None:
        """A request left its ``state`` (pending or replied) for closed."""
        with self._tally:
            if state == PENDING_STATE:
                self._uncount(service)
            else:
                self._replied -= 1

    def _uncount(self, service: bytes) -> None:
        """One pending request of ``service`` fewer (under ``_tally``)."""
        self._pending_total -= 1
        left = self._pending[service] - 1
        if left:
            self._pending[service] = left
        else:
            del self._pending[service]

    def open_counts(self, service: bytes) -> tuple[int, int, int]:
        """``(pending, pending for service, replied)``: what the bounds look at, kept in memory."""
        with self._tally:
            return self._pending_total, self._pending.get(service, 0), self._replied

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

    def clean(self, before: float, chunk: int = 1000) -> tuple[int, int]:
        """Delete replies and closed requests last changed before ``before``; ``(replies, closed)`` deleted.

        The replies deleted were never closed: their clients lose them (docs/titanic.md, "Retention").
        An idle house has nothing to delete: a read says so, and nothing reaches the disk.
        """
        removed = {REPLIED_STATE: 0, CLOSED_STATE: 0}
        old = "SELECT seq FROM request WHERE state > 0 AND changed < ? AND state = ? LIMIT ?"
        for state in removed:
            if not self.read(lambda db: db.execute(old, (before, state, 1)).fetchone()):
                continue
            while True:
                cursor = self.write(lambda db: db.execute(f"DELETE FROM request WHERE seq IN ({old})",
                                                          (before, state, chunk)))
                removed[state] += cursor.rowcount
                if state == REPLIED_STATE:
                    with self._tally:
                        self._replied -= cursor.rowcount
                if cursor.rowcount < chunk:
                    break
        return removed[REPLIED_STATE], removed[CLOSED_STATE]
