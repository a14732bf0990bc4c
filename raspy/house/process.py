"""One executive's process: the fork, its process group, and the child's life until ``os._exit``."""
from __future__ import annotations

import ctypes
import enum
import gc
import os
import signal
import sys
import time
import traceback
from typing import Callable, NoReturn

from raspy.house.board import Slot, State
from raspy.house.config import ExecutiveConfig
from raspy.house.executive import Settings, load_kind
from raspy.house.logs import CappedLog

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
#: The signals the supervisor handles in its loop; a forked child resets them.
SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _prctl(option: int, arg: int | bytes) -> bool:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    return _prctl(_PR_SET_PDEATHSIG, int(sig))


def signal_group(pid: int, sig: int) -> None:
    """Signal an executive's whole process group (it and whatever it spawned); gone is fine."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class AfterExit(enum.Enum):
    """What the supervisor does when an executive exits."""

    SUPERVISE = "supervise"  # the restart policy decides
    RESTART = "restart"      # asked for: start again at once
    REMOVE = "remove"        # gone from the configuration: forget it


class ExecutiveProcess:
    """One executive's process: forked from the supervisor, which has already imported its code.

    The child runs in its own process group, gets SIGKILL when the supervisor
    dies (with a ``getppid`` check in its beat loop as a fallback), writes its
    stdout and stderr to a pipe the supervisor reads, and never returns into
    the supervisor's code: it ends with ``os._exit``.
    """

    def __init__(self, config: ExecutiveConfig, settings: Settings, slot: Slot, output: CappedLog) -> None:
        self.config = config
        self.settings = settings
        self.slot = slot
        self.output = output
        self.pid = 0
        self.pipe: int | None = None
        self.started = 0.0             # monotonic time of the last fork
        self.starts = 0
        self.failures = 0              # quick exits in a row
        self.next_start: float | None = None  # monotonic; None: not scheduled
        self.kill_at: float | None = None     # SIGKILL deadline after a SIGTERM
        self.kill_reason = ""          # why the supervisor killed it (a hang)
        self.then = AfterExit.SUPERVISE
        self.state = State.STOPPED

    @property
    def name(self) -> str:
        return self.config.name

    def set_state(self, state: State, **fields) -> None:
        self.state = state
        self.slot.set_supervised(state=state, **fields)

    def start(self, close_inherited: Callable[[], None]) -> None:
        """Fork the executive; ``close_inherited`` closes the supervisor's descriptors in the child."""
        cls = load_kind(self.config.kind)
        read, write = os.pipe()
        parent = os.getpid()
        # what the supervisor holds moves out of the collector's reach: a child's collections
        # would otherwise write to every object's header and copy the pages it shares
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            self._child(cls, write, parent, close_inherited)
        os.close(write)
        try:
            os.setpgid(pid, pid)  # also done by the child: whichever runs first wins the race
        except (PermissionError, ProcessLookupError):
            pass
        os.set_blocking(read, False)
        self.pid, self.pipe = pid, read
        self.started = time.monotonic()
        self.starts += 1
        self.next_start, self.kill_at, self.kill_reason = None, None, ""
        self.slot.recover()
        self.set_state(State.STARTING, pid=pid, started=time.time(), restarts=self.starts - 1, next_start=0.0)
        self.output.note(f"started {self.config.kind} as pid {pid}")

    def _child(self, cls: type, out: int, parent: int, close_inherited: Callable[[], None]) -> NoReturn:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            os.setpgid(0, 0)
            set_parent_death_signal(signal.SIGKILL)
            _prctl(_PR_SET_NAME, f"raspy-{self.name}".encode()[:15])  # what ps -e and top show
            if os.getppid() != parent:  # the supervisor died before prctl
                os._exit(1)
            close_inherited()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.close(null)
            os.close(out)
            sys.stdout.reconfigure(line_buffering=True)
            executive = cls(self.settings, self.slot)
            executive.parent_pid = parent
            signal.signal(signal.SIGTERM, lambda *_: executive.shutdown())
            executive.run()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)
