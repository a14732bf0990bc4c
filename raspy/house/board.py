"""The shared-memory board: one fixed-size slot per executive, readable with no message round-trip.

The supervisor creates the block; executives (forked children) write their
heartbeat and counters into their own slot; ``raspy status``, the web page and
the supervisor's watchdog read it, so status works even when the broker is down.

Each slot holds two records with one writer each, so the writers never clash:

* the *supervisor record* (name, pid, state, start time, restarts, last exit),
  written only by the supervisor;
* the *executive record* (heartbeat, counters), written only by the executive
  that runs in the slot.

Every record starts with a sequence number (a seqlock): the writer makes it
odd, writes the fields, makes it even again; a reader copies the fields and
retries while the number was odd or changed, so it never sees half a write.
Each change of the number must be a single 8-byte store, so the number goes
through the board as a native ``Q`` memoryview, never ``struct.pack_into``
(which zeroes its target before it stores the value, so the number would pass
through 0, an even value: see ``docs/board.md``).
The byte layout is in ``docs/board.md``.
"""
from __future__ import annotations

import enum
import hashlib
import mmap
import os
import signal
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from raspy.errors import RaspyError

__all__ = [
    "Board", "BoardBusy", "BoardError", "LastExit", "Slot", "SlotState", "State", "board_name", "ram_file",
    "NAME_SIZE", "REASON_SIZE",
]

MAGIC = b"RASPYBRD"
VERSION = 1
NAME_SIZE = 32
REASON_SIZE = 120
EXTRA_COUNTERS = 4

#: Header: magic, version, slot count, slot size, creator pid, created (wall time).
_HEADER = struct.Struct("<8sIIIid")
HEADER_SIZE = 64
_SEQ = struct.Struct("<Q")  # layout only: the number is read and stored through _words(), see there
#: Supervisor record after its sequence number: name, pid, state, started, started
#: (monotonic), restarts, exit code, exit time, next start, exit reason, log bytes dropped.
_SUP = struct.Struct(f"<{NAME_SIZE}siIddIidd{REASON_SIZE}sQ")
#: Executive record after its sequence number: heartbeat, heartbeat (monotonic),
#: requests, replies, errors, bytes in, bytes out, extra counters.
_EXEC = struct.Struct(f"<dd5Q{EXTRA_COUNTERS}Q")
#: The hot path packs only what it changed: the beat, or the five counters.
_BEAT_AT, _COUNTS_AT = 8, 24
_pack_beat = struct.Struct("<dd").pack_into
_pack_counts = struct.Struct("<5Q").pack_into
assert _COUNTS_AT == _BEAT_AT + struct.calcsize("<dd")
SUP_OFFSET = 0
EXEC_OFFSET = 256  # its own cache line: the hot writer does not share one with the supervisor
SLOT_SIZE = 384
assert SUP_OFFSET + _SEQ.size + _SUP.size <= EXEC_OFFSET
assert EXEC_OFFSET + _SEQ.size + _EXEC.size <= SLOT_SIZE
assert _HEADER.size <= HEADER_SIZE
assert not (HEADER_SIZE | SLOT_SIZE | SUP_OFFSET | EXEC_OFFSET) % 8  # sequence numbers are aligned words

#: Largest single increment: checked before any store, it keeps the 64-bit counters
#: from ever overflowing (2**32 steps of 2**32 is more than a Pi will see).
MAX_STEP = 2 ** 32
#: How long a reader waits for a writer to finish before giving up.
READ_TIMEOUT = 0.1


class BoardError(RaspyError, RuntimeError):
    """The board cannot be created, found or used as asked."""


class BoardBusy(BoardError):
    """A record stayed half-written (the same odd sequence number) longer than the read timeout.

    Its writer died mid-write, or is stalled there; a writer that keeps writing does not cause it.
    """


class State(enum.IntEnum):
    """What the supervisor says about the executive in a slot."""

    EMPTY = 0     #: free slot, no executive assigned
    STOPPED = 1   #: assigned, not running (before the first start, or after a clean stop)
    STARTING = 2  #: forked, no heartbeat yet
    RUNNING = 3   #: alive and beating
    BACKOFF = 4   #: exited unexpectedly; restarts at ``next_start``
    GAVE_UP = 5   #: exited too often; not restarted until asked (``last_exit`` says why)
    STOPPING = 6  #: asked to stop, not yet exited

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")


_STATES = {state.value: state for state in State}


@dataclass(frozen=True)
class LastExit:
    """How an executive's last process ended.

    ``code`` follows :mod:`subprocess`: the exit status, or ``-N`` when killed by signal N.
    """

    code: int
    reason: str
    at: float  # wall time

    @classmethod
    def from_wait_status(cls, status: int, detail: str = "", at: float | None = None) -> "LastExit":
        """From an ``os.waitpid`` status, with an optional detail such as the last log line."""
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            try:
                what = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                what = f"killed by signal {-code}"
        else:
            what = f"exit {code}"
        return cls(code, f"{what}: {detail}" if detail else what, time.time() if at is None else at)


@dataclass(slots=True)
class SlotState:
    """A consistent snapshot of one slot."""

    index: int
    name: str
    pid: int
    state: State
    started: float        # wall time, 0 if never started
    started_mono: float   # time.monotonic() of the start, for age computations
    restarts: int
    last_exit: LastExit | None
    next_start: float     # wall time when a back-off ends, 0 if none
    heartbeat: float      # wall time of the last beat, 0 if none
    heartbeat_mono: float
    requests: int
    replies: int
    errors: int
    bytes_in: int
    bytes_out: int
    extra: tuple[int, ...]
    log_dropped: int = 0  # bytes of the executive's output its log file did not take (disk full?)

    def heartbeat_age(self, now: float | None = None) -> float:
        """Seconds since the last sign of life (the last beat, or the start if later).

        ``now`` is ``time.monotonic()``: a Raspberry Pi has no clock battery and
        its wall clock jumps when NTP syncs, which must not look like a hang.
        """
        now = time.monotonic() if now is None else now
        return now - max(self.heartbeat_mono, self.started_mono)

    def is_stale(self, now: float | None, max_age: float) -> bool:
        """True when a live executive has not beaten for more than ``max_age`` seconds."""
        if self.state not in (State.STARTING, State.RUNNING) or self.pid <= 0:
            return False
        return self.heartbeat_age(now) > max_age

    def to_dict(self) -> dict:
        """Plain values for JSON (the web page) and msgpack."""
        data = asdict(self)
        data["state"] = str(self.state)
        data["extra"] = list(self.extra)
        return data


def board_name(state_dir: str | os.PathLike) -> str:
    """Shared-memory name of the board of a state directory, for this user.

    The supervisor and ``raspy status`` both derive it, so nothing has to be
    stored to find the board; two installations of one user do not collide.
    """
    digest = hashlib.sha1(os.fsencode(os.path.realpath(state_dir))).hexdigest()[:12]
    return f"raspy-{os.getuid()}-{digest}"


def ram_file(state_dir: str | os.PathLike, suffix: str) -> Path:
    """A file in RAM-backed storage (``/dev/shm``, where the board lives) of a state directory's house.

    Named like the board, then ``.suffix``: two houses never share one. It outlives a crash of
    the process that writes it, not a reboot, and writing it costs the SD card nothing.
    """
    return Path(SHM_DIR, f"{board_name(state_dir)}.{suffix}")


def _encode(text: str, size: int) -> bytes:
    """UTF-8, cut to ``size`` bytes without splitting a character."""
    return text.encode("utf-8")[:size].decode("utf-8", "ignore").encode("utf-8")


def _decode(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, IndexError):
        return False


def _words(buf: memoryview) -> memoryview:
    """The board's bytes as native unsigned 64-bit words, for the sequence numbers.

    ``words[i] = n`` is one aligned 8-byte store and ``words[i]`` one load (a
    fixed-size memcpy in CPython's memoryview). ``struct.pack_into`` is not: it
    first zeroes the whole target, then converts and stores the value, so a
    sequence number going from 5 to 6 would read 0 for a moment; a reader that
    read that 0 before and after copying a record being written would accept a
    torn copy. Native order is the layout's little-endian on every host RasPy
    runs on (checked by :class:`Board`).
    """
    return buf[:len(buf) // 8 * 8].cast("Q")


#: Where Linux keeps POSIX shared memory: ``shm_open(name)`` is ``/dev/shm/<name>``.
SHM_DIR = "/dev/shm"


class _Block:
    """A named shared-memory block, mapped: its bytes (``buf``), and the same as :func:`_words`.

    What ``multiprocessing.shared_memory.SharedMemory`` does on Linux, with ``os`` and ``mmap``
    alone: that class imports 23 modules of multiprocessing's machinery (1.1 MiB, which every
    process of the house would map) and registers the block with a resource tracker, which in
    3.11/3.12 starts a tracker process in every reader and unlinks the block or warns about a
    "leak" when that reader exits (gh-82300). Here the supervisor alone owns the block's life.

    ``mmap.close()`` refuses to close a mapping still lent to a memoryview, so ``words`` and
    ``buf`` are released before it.
    """

    def __init__(self, name: str, create: bool = False, size: int = 0) -> None:
        self.path = os.path.join(SHM_DIR, name)
        fd = os.open(self.path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            else:
                size = os.fstat(fd).st_size
            self._mmap = mmap.mmap(fd, size)  # the mapping outlives the descriptor
        except OSError:
            if create:
                os.unlink(self.path)
            raise
        finally:
            os.close(fd)
        self.name = name
        self.size = size
        self.buf = memoryview(self._mmap)
        self.words = _words(self.buf)

    def close(self) -> None:
        if not self._mmap.closed:
            self.words.release()
            self.buf.release()
            self._mmap.close()

    def unlink(self) -> None:
        """Remove the block's name; mappings stay valid until closed."""
        os.unlink(self.path)


# -- slots ------------------------------------------------------------------

class Slot:
    """One executive's slot: readers call :meth:`read`; each writer its own methods.

    The executive calls :meth:`beat` and :meth:`count`; the supervisor calls
    :meth:`set_supervised` (and :meth:`recover` after reaping a child). A
    :class:`Board` hands out one ``Slot`` object per slot, so the writer's
    cached values stay the single source within a process; a lock per record
    lets several threads of one process write.
    """

    __slots__ = ("index", "_buf", "_words", "_shm", "_sup", "_exec", "_values", "_seq", "_exec_lock",
                 "_sup_lock")

    def __init__(self, buf: memoryview, words: memoryview, index: int,
                 shm: _Block | None = None) -> None:
        self.index = index
        self._buf = buf
        self._words = words  # the sequence numbers: words[offset // 8]
        self._shm = shm  # keeps the block mapped while the slot is used, even if its Board is dropped
        self._sup = HEADER_SIZE + index * SLOT_SIZE + SUP_OFFSET
        self._exec = HEADER_SIZE + index * SLOT_SIZE + EXEC_OFFSET
        self._values: list | None = None  # executive record as last written by this process
        self._seq = 0
        self._exec_lock = threading.Lock()
        self._sup_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Slot {self.index} {self.name!r}>"

    @property
    def name(self) -> str:
        """The executive's name ('' for a free slot)."""
        return _decode(self._stable(self._sup, _SUP, READ_TIMEOUT)[0])

    # -- reading ------------------------------------------------------------

    def _stable(self, offset: int, body: struct.Struct, timeout: float) -> tuple:
        """The fields of the record at ``offset``, copied between two equal even sequence numbers."""
        buf, words, at = self._buf, self._words, offset >> 3
        seen, since = -1, 0.0
        while True:
            seq = words[at]
            if not seq & 1:
                fields = body.unpack_from(buf, offset + 8)
                if words[at] == seq:
                    return fields
            if seq != seen:
                # The writer moved since the last try: it is alive, try again at once
                # (sleeping after every miss let a busy writer starve a reader for 0.1 s).
                seen, since = seq, 0.0
                continue
            # The same odd number as last try: the writer is stalled mid-write (descheduled,
            # or dead); the timeout counts from here and starts again whenever it moves.
            now = time.monotonic()
            if not since:
                since = now
            elif now - since > timeout:
                raise BoardBusy(f"slot {self.index}: record at offset {offset} stayed half-written "
                                f"for {timeout}s (its writer died mid-write?)")
            time.sleep(0.0002)

    def read(self, timeout: float = READ_TIMEOUT) -> SlotState:
        """A consistent snapshot; :class:`BoardBusy` if a record stays half-written for ``timeout`` s."""
        name, pid, state, started, started_mono, restarts, code, exit_at, next_start, reason, log_dropped = \
            self._stable(self._sup, _SUP, timeout)
        beat, beat_mono, requests, replies, errors, bytes_in, bytes_out, *extra = \
            self._stable(self._exec, _EXEC, timeout)
        return SlotState(  # positional: a snapshot is read often (watchdog, status page)
            self.index, _decode(name), pid, _STATES[state], started, started_mono, restarts,
            LastExit(code, _decode(reason), exit_at) if exit_at else None, next_start,
            beat, beat_mono, requests, replies, errors, bytes_in, bytes_out, tuple(extra), log_dropped,
        )

    # -- the executive writes -----------------------------------------------

    def _load(self) -> list:
        """Start writing from what the slot holds (an earlier run's counters carry on)."""
        seq = self._words[self._exec >> 3]
        self._seq = seq + (seq & 1)  # odd: the last writer died mid-write; start from the next even
        self._values = list(_EXEC.unpack_from(self._buf, self._exec + 8))
        return self._values

    def beat(self) -> None:
        """Record a sign of life now (wall and monotonic time)."""
        with self._exec_lock:
            values = self._values or self._load()
            values[0] = time.time()
            values[1] = time.monotonic()
            seq, words, at = self._seq + 1, self._words, self._exec >> 3
            words[at] = seq
            _pack_beat(self._buf, self._exec + _BEAT_AT, values[0], values[1])
            words[at] = seq + 1
            self._seq = seq + 1

    def count(self, requests: int = 0, replies: int = 0, errors: int = 0,
              bytes_in: int = 0, bytes_out: int = 0) -> None:
        """Add to the counters; cheap enough for every request. Counts are ints in [0, 2**32)."""
        if not 0 <= (requests | replies | errors | bytes_in | bytes_out) < MAX_STEP:
            raise ValueError(f"counts must be ints in [0, {MAX_STEP})")
        with self._exec_lock:
            v = self._values or self._load()
            v[2] += requests
            v[3] += replies
            v[4] += errors
            v[5] += bytes_in
            v[6] += bytes_out
            seq, words, offset = self._seq + 1, self._words, self._exec
            words[offset >> 3] = seq
            _pack_counts(self._buf, offset + _COUNTS_AT, v[2], v[3], v[4], v[5], v[6])
            words[offset >> 3] = seq + 1
            self._seq = seq + 1

    def count_extra(self, index: int, n: int = 1) -> None:
        """Add to one of the spare counters, free for the executive's own use."""
        if not 0 <= index < EXTRA_COUNTERS:
            raise IndexError(f"extra counter {index} out of range 0..{EXTRA_COUNTERS - 1}")
        if not 0 <= n < MAX_STEP:
            raise ValueError(f"counts must be ints in [0, {MAX_STEP})")
        with self._exec_lock:
            values = self._values or self._load()
            values[7 + index] += n
            seq, words, at = self._seq + 1, self._words, self._exec >> 3
            words[at] = seq
            _EXEC.pack_into(self._buf, self._exec + 8, *values)
            words[at] = seq + 1
            self._seq = seq + 1

    # -- the supervisor writes ----------------------------------------------

    def set_supervised(self, *, pid: int | None = None, state: State | None = None,
                       started: float | None = None, restarts: int | None = None,
                       last_exit: LastExit | None = None, next_start: float | None = None,
                       name: str | None = None, log_dropped: int | None = None) -> None:
        """Change the supervisor's fields; those left ``None`` keep their value.

        ``started`` is a wall time (usually ``time.time()`` at fork); its
        monotonic twin is derived now.
        """
        with self._sup_lock:
            (old_name, old_pid, old_state, old_started, started_mono, old_restarts,
             code, exit_at, old_next, reason, old_dropped) = self._stable(self._sup, _SUP, READ_TIMEOUT)
            if started is not None:
                started_mono = time.monotonic() - (time.time() - started) if started else 0.0
            if last_exit is not None:
                code, exit_at, reason = last_exit.code, last_exit.at, _encode(last_exit.reason, REASON_SIZE)
            fields = (
                old_name if name is None else _check_name(name),
                old_pid if pid is None else pid,
                old_state if state is None else State(state),
                old_started if started is None else started,
                started_mono,
                old_restarts if restarts is None else restarts,
                code, exit_at,
                old_next if next_start is None else next_start,
                reason,
                old_dropped if log_dropped is None else log_dropped,
            )
            buf, words, offset = self._buf, self._words, self._sup
            scratch = _SUP.pack(*fields)  # raises on bad values before anything changes
            seq = words[offset >> 3]
            seq += seq & 1
            words[offset >> 3] = seq + 1
            buf[offset + 8:offset + 8 + _SUP.size] = scratch
            words[offset >> 3] = seq + 2

    def recover(self) -> None:
        """Close a write the executive's dead process left open (supervisor, after reaping it)."""
        seq = self._words[self._exec >> 3]
        if seq & 1:
            self._words[self._exec >> 3] = seq + 1

    def clear(self) -> None:
        """Zero the executive record (supervisor, while no process runs in the slot)."""
        words, at = self._words, self._exec >> 3
        seq = words[at]
        seq += seq & 1
        words[at] = seq + 1
        _EXEC.pack_into(self._buf, self._exec + 8, *([0.0, 0.0] + [0] * (5 + EXTRA_COUNTERS)))
        words[at] = seq + 2
        self._values = None

    def _reset(self, name: str, state: State) -> None:
        """Give the slot to a new executive (supervisor): supervisor fields to zero, counters cleared."""
        self.clear()
        self.set_supervised(name=name, pid=0, state=state, started=0.0, restarts=0, next_start=0.0,
                            last_exit=LastExit(0, "", 0.0), log_dropped=0)


def _check_name(name: str) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > NAME_SIZE:
        raise ValueError(f"executive name {name!r} is longer than {NAME_SIZE} bytes")
    return raw


# -- the board ----------------------------------------------------------------

def _host_words(buf: memoryview, shm: _Block | None) -> memoryview:
    """The sequence-number view of a board: the block's own (released on close), or one of ``buf``."""
    if sys.byteorder != "little":
        raise BoardError("the board stores sequence numbers in native order and its layout is little-endian; "
                         "this host is big-endian")
    return shm.words if shm is not None else _words(buf)


class Board:
    """The shared-memory block: a header and ``capacity`` slots.

    Use :meth:`create` (the supervisor), :meth:`attach` (everyone else) or
    :meth:`private` (an executive run alone, and tests: same API, no shared memory).
    """

    def __init__(self, buf: memoryview, shm: _Block | None = None) -> None:
        if len(buf) < HEADER_SIZE:
            raise BoardError("not a RasPy board (too short)")
        magic, version, capacity, slot_size, self.creator_pid, self.created = _HEADER.unpack_from(buf, 0)
        if magic != MAGIC:
            raise BoardError("not a RasPy board (bad magic)")
        if version != VERSION or slot_size != SLOT_SIZE:
            raise BoardError(f"board version {version} slot size {slot_size}: "
                             f"this RasPy reads version {VERSION} slot size {SLOT_SIZE}")
        if len(buf) < HEADER_SIZE + capacity * SLOT_SIZE:
            raise BoardError("board is shorter than its header says")
        self._buf = buf
        self._shm = shm
        words = _host_words(buf, shm)
        self._slots = [Slot(buf, words, i, shm) for i in range(capacity)]

    # -- construction ---------------------------------------------------------

    @staticmethod
    def _format(buf: memoryview, capacity: int, names: Sequence[str],
                shm: _Block | None = None) -> None:
        _HEADER.pack_into(buf, 0, MAGIC, VERSION, capacity, SLOT_SIZE, os.getpid(), time.time())
        words = _host_words(buf, shm)
        for i, name in enumerate(names):
            Slot(buf, words, i)._reset(name, State.STOPPED)

    @staticmethod
    def _check(capacity: int, names: Sequence[str]) -> list[str]:
        names = list(names)
        if capacity < len(names):
            raise ValueError(f"{len(names)} names do not fit in {capacity} slots")
        if capacity < 1:
            raise ValueError("a board needs at least one slot")
        for name in names:
            if not name:
                raise ValueError("an executive name must not be empty")
            _check_name(name)
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate executive names in {names}")
        return names

    @classmethod
    def create(cls, name: str, slots: int, names: Sequence[str] = ()) -> "Board":
        """Create the block (supervisor); the first ``len(names)`` slots get those names.

        A block of the same name left by a supervisor that died is removed
        first; one whose creator still runs is not touched (:class:`BoardError`).
        """
        names = cls._check(slots, names)
        cls._remove_stale(name)
        size = HEADER_SIZE + slots * SLOT_SIZE
        try:
            shm = _Block(name, create=True, size=size)
        except FileExistsError:
            raise BoardError(f"board {name!r} was created by another process just now") from None
        cls._format(shm.buf, slots, names, shm)
        return cls(shm.buf, shm)

    @staticmethod
    def _remove_stale(name: str) -> None:
        try:
            shm = _Block(name)
        except FileNotFoundError:
            return
        try:
            pid = _HEADER.unpack_from(shm.buf, 0)[4] if shm.size >= _HEADER.size else 0
            if pid != os.getpid() and pid_alive(pid):
                raise BoardError(f"board {name!r} is in use by the supervisor with pid {pid}")
            shm.unlink()
        finally:
            shm.close()

    @classmethod
    def attach(cls, name: str) -> "Board":
        """Open an existing block (executives, ``raspy status``, the web page); never unlinks it."""
        try:
            shm = _Block(name)
        except FileNotFoundError:
            raise BoardError(f"no board {name!r}: is the supervisor running?") from None
        try:
            return cls(shm.buf, shm)
        except BoardError:
            shm.close()
            raise

    @classmethod
    def private(cls, slots: int = 1, names: Sequence[str] = ()) -> "Board":
        """A board in this process's own memory, for an executive run without a supervisor."""
        names = cls._check(slots, names)
        buf = memoryview(bytearray(HEADER_SIZE + slots * SLOT_SIZE))
        cls._format(buf, slots, names)
        return cls(buf)

    # -- use ----------------------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The shared-memory name, ``None`` for a private board."""
        return self._shm.name if self._shm else None

    def __len__(self) -> int:
        return len(self._slots)

    def __enter__(self) -> "Board":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def names(self) -> list[str]:
        """Names of the assigned slots, in slot order."""
        return [name for name in (slot.name for slot in self._slots) if name]

    def slot(self, key: int | str) -> Slot:
        """The slot at an index, or the slot of an executive name (``KeyError`` if none)."""
        if isinstance(key, int):
            return self._slots[key]
        for slot in self._slots:
            if slot.name == key:
                return slot
        raise KeyError(f"no slot for executive {key!r}; the board has {self.names()}")

    def snapshot(self) -> list[SlotState]:
        """Snapshots of the assigned slots."""
        return [state for state in (slot.read() for slot in self._slots) if state.state != State.EMPTY]

    def assign(self, name: str) -> Slot:
        """Give a free slot to a new executive (supervisor, e.g. on reload)."""
        _check_name(name)
        if not name or name in self.names():
            raise ValueError(f"executive name {name!r} is empty or already on the board")
        for slot in self._slots:
            if slot.read().state == State.EMPTY:
                slot._reset(name, State.STOPPED)
                return slot
        raise BoardError(f"no free slot for {name!r}: all {len(self)} are assigned")

    def release(self, name: str) -> None:
        """Free the slot of an executive that is gone for good (supervisor, after reaping it)."""
        self.slot(name)._reset("", State.EMPTY)

    def close(self) -> None:
        """Detach from the block; it stays for the other processes."""
        if self._shm is not None:
            self._shm.close()

    def unlink(self) -> None:
        """Remove the block's name (supervisor, on a clean stop); mappings stay valid until closed."""
        if self._shm is not None:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass


def house_states(state_dir: str | os.PathLike) -> dict[str, SlotState]:
    """The slots of the supervisor of ``state_dir`` by executive name; empty when none runs."""
    try:
        with Board.attach(board_name(state_dir)) as board:
            return {state.name: state for state in board.snapshot()}
    except BoardError:
        return {}
