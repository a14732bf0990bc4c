"""The shared-memory board: real processes writing and reading one block."""
from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import platform
import signal
import struct
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from raspy.house.board import (
    EXEC_OFFSET,
    HEADER_SIZE,
    NAME_SIZE,
    REASON_SIZE,
    SLOT_SIZE,
    Board,
    BoardBusy,
    BoardError,
    LastExit,
    State,
    board_name,
)

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="needs Linux /dev/shm")


@pytest.fixture
def name():
    """A fresh shared-memory name, removed after the test whatever happened."""
    shm_name = f"raspy-test-{uuid.uuid4().hex[:12]}"
    yield shm_name
    (SHM / shm_name).unlink(missing_ok=True)


@pytest.fixture
def board(name):
    board = Board.create(name, 4, ["broker", "kv"])
    yield board
    board.close()
    board.unlink()


def run_python(children, code: str, *args: str):
    """Run ``code`` in a fresh interpreter; returns the Popen with stdout/stderr pipes."""
    return children.python("-c", textwrap.dedent(code), *args, stdout=-1, stderr=-1, text=True)


def finish(proc, timeout: float = 20) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert err == "", f"the child printed to stderr: {err}"
    return out


def test_created_board_lists_named_slots_stopped_with_zero_counters(board, name):
    assert len(board) == 4
    assert board.names() == ["broker", "kv"]
    states = board.snapshot()
    assert [(s.index, s.name, s.state) for s in states] == [(0, "broker", State.STOPPED), (1, "kv", State.STOPPED)]
    assert all(s.requests == s.bytes_out == s.restarts == s.pid == 0 and s.last_exit is None for s in states)
    assert board.slot("kv").index == 1
    with pytest.raises(KeyError, match="no slot for executive 'web'"):
        board.slot("web")
    assert (SHM / name).stat().st_size == HEADER_SIZE + 4 * SLOT_SIZE


def test_executive_in_another_process_writes_its_slot_and_the_supervisor_reads_it(board, name, children):
    board.slot("kv").set_supervised(pid=4242, state=State.RUNNING, started=time.time(), restarts=2)
    before = time.time()
    proc = run_python(children, """
        import sys
        from raspy.house.board import Board
        board = Board.attach(sys.argv[1])
        slot = board.slot("kv")
        slot.beat()
        for _ in range(1000):
            slot.count(requests=1, replies=1, bytes_in=10, bytes_out=20)
        slot.count(errors=2)
        slot.count_extra(1, 5)
        print(slot.read().pid)
        board.close()
    """, name)
    assert finish(proc).strip() == "4242"  # the executive sees the supervisor's fields
    kv = board.slot("kv").read()
    assert (kv.requests, kv.replies, kv.errors, kv.bytes_in, kv.bytes_out) == (1000, 1000, 2, 10_000, 20_000)
    assert kv.extra == (0, 5, 0, 0)
    assert before <= kv.heartbeat <= time.time()
    assert (kv.pid, kv.state, kv.restarts) == (4242, State.RUNNING, 2)  # the executive did not clobber them
    assert board.slot("broker").read().requests == 0


def test_forked_executive_writes_through_the_inherited_mapping(board):
    slot = board.slot("broker")
    pid = os.fork()
    if pid == 0:  # the executive
        try:
            slot.count(requests=3, bytes_out=30)
            slot.beat()
        finally:
            os._exit(0)
    slot.set_supervised(pid=pid, state=State.RUNNING, started=time.time())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    state = slot.read()
    assert (state.requests, state.bytes_out, state.pid, state.state) == (3, 30, pid, State.RUNNING)
    assert state.heartbeat > 0


def test_counters_carry_on_when_the_executive_is_restarted(board, name, children):
    code = """
        import sys
        from raspy.house.board import Board
        Board.attach(sys.argv[1]).slot("broker").count(requests=5)
    """
    for _ in range(2):
        finish(run_python(children, code, name))
    assert board.slot("broker").read().requests == 10


def set_exec_seq(board: Board, index: int, seq: int) -> None:
    struct.pack_into("<Q", board._buf, HEADER_SIZE + index * SLOT_SIZE + EXEC_OFFSET, seq)


def test_a_record_left_half_written_is_reported_then_recovered(board):
    slot = board.slot("broker")
    slot.count(requests=7)
    set_exec_seq(board, 0, 3)  # as if the executive died between the two sequence writes
    started = time.monotonic()
    with pytest.raises(BoardBusy, match="half-written"):
        slot.read(timeout=0.05)
    assert time.monotonic() - started < 1
    assert board.slot("kv").read().name == "kv"  # other slots unaffected
    slot.recover()  # the supervisor, after reaping the dead executive
    assert slot.read().requests == 7


def test_a_new_writer_after_a_dead_one_leaves_the_record_readable(board, name, children):
    board.slot("broker").count(requests=7)
    set_exec_seq(board, 0, 5)
    finish(run_python(children, """
        import sys
        from raspy.house.board import Board
        Board.attach(sys.argv[1]).slot("broker").count(requests=1)
    """, name))
    assert board.slot("broker").read(timeout=0.05).requests == 8


def test_a_reader_waits_for_a_slow_writer_and_gets_its_values(board):
    slot = board.slot("broker")
    set_exec_seq(board, 0, 1)  # a writer is mid-write...

    def finish_write():
        time.sleep(0.05)  # ...and takes a while: the reader must wait for it, not return stale data
        struct.pack_into("<Q", board._buf, HEADER_SIZE + EXEC_OFFSET + 24, 99)
        set_exec_seq(board, 0, 2)

    writer = threading.Thread(target=finish_write)
    writer.start()
    assert slot.read(timeout=5).requests == 99
    writer.join()


class StoreCounter:
    """Counts this thread's stores to 8 bytes of memory, with a hardware watchpoint (Linux perf_event).

    A seqlock needs every change of a sequence number to be one store: a number
    that passes through another value on its way (say 0, which is even) can be
    read by a reader before and after a write, which then accepts a torn copy.
    Nothing in Python can see a store inside one C call; the CPU's debug
    registers can, so this makes that race a deterministic test.
    """

    _SYSCALL = {"x86_64": 298, "aarch64": 241, "armv7l": 364, "armv6l": 364}  # perf_event_open

    def __init__(self, buf, offset: int) -> None:
        number = self._SYSCALL.get(platform.machine())
        if number is None:
            pytest.skip(f"no perf_event_open number for {platform.machine()}")
        address = ctypes.addressof(ctypes.c_char.from_buffer(buf)) + offset  # the export ends at once
        attr = bytearray(112)  # struct perf_event_attr, PERF_ATTR_SIZE_VER5
        struct.pack_into("=IIQ", attr, 0, 5, len(attr), 0)  # PERF_TYPE_BREAKPOINT
        struct.pack_into("=Q", attr, 40, 1 | 1 << 5 | 1 << 6)  # disabled, exclude_kernel, exclude_hv
        struct.pack_into("=IQQ", attr, 52, 2, address, 8)  # HW_BREAKPOINT_W, bp_addr, HW_BREAKPOINT_LEN_8
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        self.fd = libc.syscall(ctypes.c_long(number), (ctypes.c_char * len(attr)).from_buffer(attr),
                               0, -1, -1, 8)  # this thread, any CPU, no group, PERF_FLAG_FD_CLOEXEC
        if self.fd < 0:
            code = ctypes.get_errno()
            if code in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENODEV, errno.EOPNOTSUPP, errno.ENOSYS,
                        errno.EINVAL, errno.ENOSPC):
                pytest.skip(f"no hardware watchpoint here: {os.strerror(code)}")
            raise OSError(code, os.strerror(code))

    def count(self, action) -> int:
        """How many stores ``action()`` makes to the watched bytes."""
        fcntl.ioctl(self.fd, 0x2403)  # PERF_EVENT_IOC_RESET
        fcntl.ioctl(self.fd, 0x2400)  # PERF_EVENT_IOC_ENABLE
        try:
            action()
        finally:
            fcntl.ioctl(self.fd, 0x2401)  # PERF_EVENT_IOC_DISABLE
        return struct.unpack("=Q", os.read(self.fd, 8))[0]

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def store_counter():
    """``store_counter(buf, offset)``: a :class:`StoreCounter`, closed after the test."""
    counters = []

    def make(buf, offset: int) -> StoreCounter:
        counters.append(StoreCounter(buf, offset))
        return counters[-1]

    yield make
    for counter in counters:
        counter.close()


def test_each_change_of_a_sequence_number_is_one_store(board, store_counter):
    """Odd then even, each in a single store: a reader never sees the number pass through another value."""
    slot = board.slot("broker")
    exec_seq = store_counter(board._buf, HEADER_SIZE + EXEC_OFFSET)
    sup_seq = store_counter(board._buf, HEADER_SIZE)
    slot.count(requests=1)  # loads the writer's cache
    assert exec_seq.count(lambda: slot.count(requests=1, bytes_out=3)) == 2
    assert exec_seq.count(slot.beat) == 2
    assert exec_seq.count(lambda: slot.count_extra(2, 5)) == 2
    assert sup_seq.count(lambda: slot.set_supervised(pid=7, restarts=1)) == 2
    assert exec_seq.count(slot.clear) == 2
    set_exec_seq(board, 0, 7)  # a writer died mid-write
    assert exec_seq.count(slot.recover) == 1
    assert (sup_seq.count(lambda: slot.read()), exec_seq.count(lambda: slot.read())) == (0, 0)
    state = slot.read()
    assert (state.pid, state.restarts, state.requests, state.extra) == (7, 1, 0, (0, 0, 0, 0))


class BusyWriterClock:
    """Stands in for ``raspy.house.board.time``: whenever the reader sleeps, a live writer moves on.

    The writer keeps the record mid-write (odd) but starts a new write, a later
    odd number, at every reader sleep of 50 ms, and completes one (even, with
    ``requests`` set) after ``writes`` of them: the reader always catches it
    mid-write, for far longer than the read timeout, though it never stalls.
    """

    def __init__(self, board: Board, writes: int) -> None:
        self.board, self.left, self.now = board, writes, 1000.0
        self.seq = 1
        set_exec_seq(board, 0, self.seq)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += 0.05
        self.left -= 1
        self.seq += 1 if self.left == 0 else 2
        if self.left == 0:
            struct.pack_into("<Q", self.board._buf, HEADER_SIZE + EXEC_OFFSET + 24, 99)
        set_exec_seq(self.board, 0, self.seq)


def test_a_reader_waits_as_long_as_the_writer_makes_progress(board, monkeypatch):
    """``BoardBusy`` means a write stalled (the same odd number for the timeout), not a busy writer."""
    import raspy.house.board
    clock = BusyWriterClock(board, writes=20)  # 1 s of writes in a row, against a 0.1 s timeout
    monkeypatch.setattr(raspy.house.board, "time", clock)
    assert board.slot("broker").read(timeout=0.1).requests == 99
    assert clock.left == 0  # the reader saw all 20 writes (1 s) through, never timing out


def test_readers_never_see_a_torn_slot_while_both_writers_hammer_it(board, name, children):
    """Executive and supervisor write one slot flat out; a third process checks every snapshot.

    The reader stops once it has seen both writers make progress many times (so
    the test adapts to a loaded machine); the executive stops when the
    supervisor sets ``stopping``, as it would in real life.
    """
    writer = run_python(children, """
        import sys, time
        from raspy.house.board import Board, State
        slot = Board.attach(sys.argv[1]).slot("broker")
        end = time.monotonic() + 30
        while time.monotonic() < end and slot.read().state != State.STOPPING:
            for _ in range(100):
                slot.count(requests=1, replies=1, errors=1, bytes_in=1, bytes_out=1)
            slot.beat()
    """, name)
    reader = run_python(children, """
        import json, sys, time
        from raspy.house.board import Board
        slot = Board.attach(sys.argv[1]).slot("broker")
        reads = bad = 0
        requests, pids = set(), set()
        torn = []  # the first bad snapshots, to say which record tore and how
        end = time.monotonic() + 30
        while time.monotonic() < end and (reads < 20000 or len(requests) < 100 or len(pids) < 100):
            s = slot.read()
            reads += 1
            counts = [s.requests, s.replies, s.errors, s.bytes_in, s.bytes_out]
            supervised = [s.pid, s.restarts, s.next_start]
            if len(set(counts)) != 1:
                bad += 1
                torn.append({"read": reads, "counts": counts})
            if not (s.pid == s.restarts == int(s.next_start)):
                bad += 1
                torn.append({"read": reads, "supervised": supervised})
            requests.add(s.requests)
            pids.add(s.pid)
        print(json.dumps({"reads": reads, "bad": bad, "requests": len(requests), "pids": len(pids),
                          "torn": torn[:5]}))
    """, name)
    slot = board.slot("broker")
    k = 0
    while reader.poll() is None:
        k += 1
        slot.set_supervised(pid=k, restarts=k, next_start=float(k))
    slot.set_supervised(state=State.STOPPING)
    result = json.loads(finish(reader))
    finish(writer)
    assert result["requests"] >= 100 and result["pids"] >= 100, f"too little overlap: {result}"
    assert result["bad"] == 0, result


def holding_a_board(children, name: str, slot: str):
    """A process that created board ``name`` (two slots, the first ``slot``) and keeps it until killed."""
    proc = children.python("-c", textwrap.dedent("""
        import sys
        from raspy.house.board import Board
        board = Board.create(sys.argv[1], 2, [sys.argv[2]])
        print("ready", flush=True)
        sys.stdin.read()
    """), name, slot, stdin=-1, stdout=-1, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_create_replaces_a_block_left_by_a_killed_supervisor(name, children):
    old = holding_a_board(children, name, "old")
    old.send_signal(signal.SIGKILL)
    old.wait(timeout=10)
    assert (SHM / name).exists()  # the killed supervisor left it
    board = Board.create(name, 3, ["new"])
    try:
        assert board.names() == ["new"] and len(board) == 3
        assert board.creator_pid == os.getpid()
    finally:
        board.close()
        board.unlink()


def test_create_refuses_to_replace_the_block_of_a_running_supervisor(name, children):
    running = holding_a_board(children, name, "first")
    with pytest.raises(BoardError, match=f"in use by the supervisor with pid {running.pid}"):
        Board.create(name, 2, ["second"])
    with Board.attach(name) as seen:
        assert seen.names() == ["first"]
    running.stdin.close()
    running.wait(timeout=10)


def test_clean_stop_leaves_nothing_in_dev_shm(name):
    board = Board.create(name, 2, ["broker"])
    reader = Board.attach(name)
    reader.close()
    board.close()
    board.unlink()
    assert not (SHM / name).exists()
    with pytest.raises(BoardError, match="is the supervisor running"):
        Board.attach(name)


def test_a_reader_process_exiting_leaves_the_block_and_prints_no_warning(board, name, children):
    for close in ("board.close()", "pass"):  # closing or not, the reader must not unlink
        proc = run_python(children, f"""
            import sys
            from raspy.house.board import Board
            board = Board.attach(sys.argv[1])
            print(board.slot("kv").read().name)
            {close}
        """, name)
        assert finish(proc).strip() == "kv"
        assert (SHM / name).exists()
    assert board.slot("kv").read().name == "kv"


def test_a_live_executive_that_stops_beating_is_stale(board):
    slot = board.slot("broker")
    slot.set_supervised(pid=os.getpid(), state=State.RUNNING, started=time.time())
    slot.beat()
    state = slot.read()
    now = time.monotonic()
    assert 0 <= state.heartbeat_age(now) < 5
    assert not state.is_stale(now, max_age=5)
    assert state.is_stale(now + 6, max_age=5)
    slot.set_supervised(state=State.BACKOFF)
    assert not slot.read().is_stale(now + 6, max_age=5)  # nothing runs: nothing can hang


def test_an_executive_that_never_beat_is_stale_counting_from_its_start(board):
    slot = board.slot("kv")
    slot.set_supervised(pid=os.getpid(), state=State.STARTING, started=time.time())
    state = slot.read()
    assert state.heartbeat == 0
    assert not state.is_stale(None, max_age=5)
    assert state.is_stale(time.monotonic() + 6, max_age=5)


def exit_status(action) -> int:
    pid = os.fork()
    if pid == 0:
        action()
        os._exit(0)
    return os.waitpid(pid, 0)[1]


def test_last_exit_says_how_the_process_ended(board):
    exited = LastExit.from_wait_status(exit_status(lambda: os._exit(3)), "ValueError: bad config")
    assert (exited.code, exited.reason) == (3, "exit 3: ValueError: bad config")
    killed = LastExit.from_wait_status(exit_status(lambda: os.kill(os.getpid(), signal.SIGKILL)))
    assert (killed.code, killed.reason) == (-9, "killed by SIGKILL")
    slot = board.slot("broker")
    slot.set_supervised(last_exit=killed, state=State.BACKOFF, restarts=1)
    state = slot.read()
    assert state.last_exit == killed and state.state == State.BACKOFF and str(state.state) == "backoff"


def test_a_long_exit_reason_is_cut_without_splitting_a_character(board):
    slot = board.slot("broker")
    slot.set_supervised(last_exit=LastExit(1, "é" * 100, time.time()))
    reason = slot.read().last_exit.reason
    assert reason == "é" * (REASON_SIZE // 2)


def test_bad_input_raises_and_changes_nothing(board):
    slot = board.slot("broker")
    slot.count(requests=4)
    slot.set_supervised(pid=10, state=State.RUNNING)
    before = slot.read()
    with pytest.raises(ValueError):
        slot.count(requests=1, errors=-1)
    with pytest.raises(TypeError):
        slot.count(requests=1.5)
    with pytest.raises(ValueError):
        slot.count(bytes_in=2 ** 64)
    with pytest.raises(struct.error):
        slot.set_supervised(pid=2 ** 40, restarts=3)
    with pytest.raises(ValueError):
        slot.set_supervised(state=99)
    with pytest.raises(ValueError, match="longer than"):
        slot.set_supervised(name="x" * (NAME_SIZE + 1))
    with pytest.raises(IndexError):
        slot.count_extra(4)
    assert slot.read() == before


@pytest.mark.parametrize("slots, names, message", [
    (1, ["a", "b"], "do not fit"),
    (2, ["a", "a"], "duplicate"),
    (2, [""], "empty"),
    (2, ["x" * (NAME_SIZE + 1)], "longer than"),
    (0, [], "at least one slot"),
])
def test_create_rejects_bad_layouts_and_creates_nothing(name, slots, names, message):
    with pytest.raises(ValueError, match=message):
        Board.create(name, slots, names)
    assert not (SHM / name).exists()


def test_free_slots_are_assigned_cleared_and_released(board):
    board.slot("broker").count(requests=9)
    board.release("broker")
    assert board.names() == ["kv"]
    web = board.assign("web")
    assert web.index == 0 and board.names() == ["web", "kv"]
    state = web.read()
    assert (state.requests, state.state, state.pid) == (0, State.STOPPED, 0)  # nothing of broker's
    web.count(requests=1)
    assert web.read().requests == 1  # the writer cache starts from the cleared record
    with pytest.raises(ValueError, match="already on the board"):
        board.assign("kv")
    board.assign("titanic")
    board.assign("core")
    with pytest.raises(BoardError, match="no free slot"):
        board.assign("fake")


def test_attach_rejects_memory_that_is_not_a_board():
    with pytest.raises(BoardError, match="not a RasPy board"):
        Board(memoryview(bytearray(HEADER_SIZE + SLOT_SIZE)))


def test_private_board_works_without_shared_memory():
    board = Board.private(2, ["alone"])
    board.slot("alone").count(replies=2)
    assert board.name is None
    assert board.snapshot()[0].replies == 2


def test_board_name_is_per_user_and_state_directory(tmp_path):
    first = board_name(tmp_path)
    assert first == board_name(str(tmp_path) + "/")
    assert first.startswith(f"raspy-{os.getuid()}-")
    assert board_name(tmp_path / "other") != first
    assert len(first) <= 30  # macOS limits POSIX shm names to 31 characters
