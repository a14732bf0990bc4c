"""The supervisor: forks one process per executive and keeps each one running.

One thread, one ``selectors`` loop. Signals arrive through ``signal.set_wakeup_fd``
(so a SIGCHLD wakes the loop at once and a killed executive is forked again
within milliseconds); the executives' output arrives through one pipe each and
is written to size-capped log files; ``raspy stop|restart|reload`` arrive on a
Unix socket in the state directory. The only timers are the back-off delays,
the stop timeout, the systemd watchdog, the hang check, which reads each
executive's heartbeat from the shared-memory board when the oldest of them
would pass ``hang_timeout``, and the host summary's next publication
(:mod:`raspy.house.summary`). See docs/supervisor.md.
"""
from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import time
from pathlib import Path

from raspy.errors import RaspyError
from raspy.heap import give_back
from raspy.house import systemd
from raspy.house.board import Board, BoardBusy, LastExit, State, board_name
from raspy.house.config import Config, ConfigError, ExecutiveConfig, load_config
from raspy.house.control import CONTROL_SOCKET, ControlServer
from raspy.house.endpoints import EndpointBusy, check_bindable
from raspy.house.executive import load_kind
from raspy.house.hubconfig import complete
from raspy.house.logs import CappedLog
from raspy.house.process import SIGNALS, AfterExit, ExecutiveProcess, signal_group
from raspy.house.restart import next_restart
from raspy.house.summary import SummaryPublisher

log = logging.getLogger(__name__)

#: Free board slots kept for executives added by a reload.
SPARE_SLOTS = 8


class StartError(RaspyError, RuntimeError):
    """The house cannot start; the message says why, one line per reason."""


class Supervisor:
    """Runs the executives of a :class:`Config` until stopped (SIGTERM, SIGINT or ``raspy stop``)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.processes: dict[str, ExecutiveProcess] = {}
        self.board: Board | None = None
        self._selector = selectors.DefaultSelector()
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._control: ControlServer | None = None
        self._stopping = False
        self._stop_deadline = 0.0
        self._watchdog = systemd.watchdog_interval()
        self._next_watchdog = 0.0
        self._next_hang_check = 0.0
        self._host: SummaryPublisher | None = None

    @property
    def control_path(self) -> Path:
        return self.config.state_dir / CONTROL_SOCKET

    # -- life -----------------------------------------------------------------------

    def run(self) -> None:
        """Start every enabled executive, then supervise until stopped; always cleans up.

        :class:`StartError` (or a :class:`BoardError`) when the house cannot start: its state
        directory is not usable, or an endpoint it binds is taken; then nothing was started.
        """
        try:
            self.config = complete(self.config)  # a satellite configured by the hub: its cache
            self._open()
            self._check_endpoints()
            # the free pages of the C heap (~0.8 MB that importing and reading the configuration freed)
            # go back to the system before the first fork, rather than stay resident in every process;
            # once executives run, such a page is theirs too, and giving it back would make it private to them
            give_back()
            for executive in self.config.enabled():
                self._start(self._add(executive))
            systemd.notify(READY=1, STATUS=self._summary())
            log.info("supervisor %d: %s (state %s)", os.getpid(), self._summary(), self.config.state_dir)
            self._loop()
        finally:
            self._close()
        log.info("supervisor %d stopped", os.getpid())

    def _open(self) -> None:
        config = self.config
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            config.log_dir.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StartError(f"cannot use the state directory {config.state_dir}: {exc}") from None
        # signals first: a SIGTERM from now on is handled by the loop, which removes the board
        for sock in (self._wakeup_r, self._wakeup_w):
            sock.setblocking(False)
        self._selector.register(self._wakeup_r, selectors.EVENT_READ, self._on_signals)
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        for sig in SIGNALS:
            signal.signal(sig, lambda *_: None)  # the work is done in the loop, from the wakeup bytes
        names = [e.name for e in config.enabled()]
        self.board = Board.create(board_name(config.state_dir), len(names) + SPARE_SLOTS, names)
        try:
            self._control = ControlServer(self.control_path, self._selector, self._command)
        except OSError as exc:
            raise StartError(f"cannot use the state directory {config.state_dir}: {exc}") from None
        self._host = SummaryPublisher(config, self.board)

    def _check_endpoints(self) -> None:
        """Refuse to start while an endpoint the house binds is taken (another house on the same ports?)."""
        busy = []
        for executive in self.config.enabled():
            for endpoint in load_kind(executive.kind).endpoints(self.config.settings(executive.name)):
                try:
                    check_bindable(endpoint)
                except EndpointBusy as exc:
                    busy.append(f"{executive.name}: {exc}")
        if busy:
            raise StartError("\n".join(busy))

    def _close(self) -> None:
        for proc in self.processes.values():
            if proc.pid:
                signal_group(proc.pid, signal.SIGKILL)
        for proc in self.processes.values():
            if proc.pid:
                os.waitpid(proc.pid, 0)
                proc.pid = 0
            if proc.pipe is not None:
                os.close(proc.pipe)
                proc.pipe = None
            proc.output.close()
        signal.set_wakeup_fd(-1)
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        if self._control is not None:
            self._control.close()
        if self._host is not None:
            self._host.close()
        self._selector.close()
        self._wakeup_r.close()
        self._wakeup_w.close()
        if self.board is not None:
            self.board.unlink()
            self.board.close()

    def _close_inherited(self) -> None:
        """In a forked child: drop the supervisor's descriptors (signals, control, other pipes)."""
        self._selector.close()
        self._wakeup_r.close()
        self._wakeup_w.close()
        if self._control is not None:
            self._control.close(unlink=False)
        for proc in self.processes.values():
            if proc.pipe is not None:
                os.close(proc.pipe)
            proc.output.close()

    # -- the loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            self._on_timers(now)
            if self._stopping and not any(proc.pid for proc in self.processes.values()):
                return
            timeout = max(0.0, self._next_wakeup(now) - time.monotonic())
            for key, _ in self._selector.select(timeout):
                key.data(key.fileobj)

    def _next_wakeup(self, now: float) -> float:
        starting = any(p.state == State.STARTING for p in self.processes.values())
        times = [now + 0.05 if starting else self._next_hang_check]
        for proc in self.processes.values():
            times += [t for t in (proc.next_start, proc.kill_at) if t is not None]
        if self._watchdog:
            times.append(self._next_watchdog)
        if self._host is not None:
            times.append(self._host.due)
        return min(times)

    def _on_timers(self, now: float) -> None:
        # the next look is when the oldest sign of life would pass the timeout (sooner if it is unreadable)
        self._next_hang_check = now + self.config.hang_timeout
        for proc in list(self.processes.values()):
            if not proc.pid:
                if proc.next_start is not None and now >= proc.next_start and not self._stopping:
                    self._start(proc)
                continue
            if proc.kill_at is not None:
                if now >= proc.kill_at:
                    log.warning("%s (pid %d) did not stop in %.1fs: SIGKILL", proc.name, proc.pid,
                                self.config.stop_timeout)
                    signal_group(proc.pid, signal.SIGKILL)
                    proc.kill_at = None
                continue
            if proc.state == State.STOPPING:
                continue
            try:
                state = proc.slot.read()
            except BoardBusy:  # it died mid-write: its SIGCHLD is on the way, the reap recovers the slot
                self._next_hang_check = min(self._next_hang_check, now + 1.0)
                continue
            if not state.is_stale(now, self.config.hang_timeout):
                stale_at = now + self.config.hang_timeout - state.heartbeat_age(now) + 0.01
                self._next_hang_check = min(self._next_hang_check, stale_at)
            if state.is_stale(now, self.config.hang_timeout):
                proc.kill_reason = f"hung: no heartbeat for {state.heartbeat_age(now):.1f}s"
                log.error("%s (pid %d) %s: SIGKILL", proc.name, proc.pid, proc.kill_reason)
                signal_group(proc.pid, signal.SIGKILL)
            elif proc.state == State.STARTING and state.heartbeat_mono > state.started_mono:
                proc.set_state(State.RUNNING)
                systemd.notify(STATUS=self._summary())
        if self._watchdog and now >= self._next_watchdog:
            systemd.notify(WATCHDOG=1)
            self._next_watchdog = now + self._watchdog
        if self._host is not None:
            self._host.tick(now, self.processes)

    def _on_signals(self, sock: socket.socket) -> None:
        try:
            received = sock.recv(4096)
        except BlockingIOError:
            return
        for signum in dict.fromkeys(received):  # each signal once, in order
            if signum == signal.SIGCHLD:
                self._reap()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self.stop(now=self._stopping)  # a second one does not wait
            elif signum == signal.SIGHUP:
                self.reload()

    # -- executives ----------------------------------------------------------------------

    def _add(self, executive: ExecutiveConfig) -> ExecutiveProcess:
        assert self.board is not None
        name = executive.name
        slot = self.board.slot(name) if name in self.board.names() else self.board.assign(name)
        output = CappedLog(self.config.log_dir / f"{name}.log", self.config.log_max_bytes,
                           on_drop=lambda dropped: slot.set_supervised(log_dropped=dropped))
        proc = ExecutiveProcess(executive, self.config.settings(name), slot, output)
        self.processes[name] = proc
        return proc

    def _start(self, proc: ExecutiveProcess) -> None:
        try:
            proc.start(self._close_inherited)
        except (OSError, ValueError) as exc:  # fork failed (memory) or the kind cannot load
            log.error("cannot start %s: %s", proc.name, exc)
            self._exited(proc, LastExit(1, f"cannot start: {exc}", time.time()), uptime=0.0)
            return
        self._selector.register(proc.pipe, selectors.EVENT_READ, lambda _, proc=proc: self._on_output(proc))

    def _on_output(self, proc: ExecutiveProcess) -> None:
        if not self._drain(proc):
            self._close_pipe(proc)

    def _drain(self, proc: ExecutiveProcess) -> bool:
        """Copy what the executive wrote to its log; False at end of file."""
        while proc.pipe is not None:
            try:
                data = os.read(proc.pipe, 65536)
            except BlockingIOError:
                return True
            if not data:
                return False
            proc.output.write(data)
        return False

    def _close_pipe(self, proc: ExecutiveProcess) -> None:
        if proc.pipe is not None:
            self._selector.unregister(proc.pipe)
            os.close(proc.pipe)
            proc.pipe = None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = next((p for p in self.processes.values() if p.pid == pid), None)
            if proc is None:
                continue
            uptime = time.monotonic() - proc.started
            signal_group(pid, signal.SIGKILL)  # whatever it left behind in its group
            self._drain(proc)
            self._close_pipe(proc)
            proc.slot.recover()
            proc.pid = 0
            proc.kill_at = None
            # a crash explains itself in its last line (the exception); a signal needs no detail
            crashed = os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0
            detail = proc.kill_reason or (proc.output.last_line() if crashed else "")
            self._exited(proc, LastExit.from_wait_status(status, detail), uptime)

    def _exited(self, proc: ExecutiveProcess, last: LastExit, uptime: float) -> None:
        """Decide what follows an exit: nothing (stopping), removal, a restart now, back-off, or giving up."""
        proc.output.note(f"exited after {uptime:.1f}s: {last.reason}")
        proc.slot.set_supervised(pid=0, last_exit=last)
        if self._stopping:
            proc.set_state(State.STOPPED)
            return
        if proc.then is AfterExit.REMOVE:
            assert self.board is not None
            self.board.release(proc.name)
            proc.output.close()
            del self.processes[proc.name]
            log.info("%s removed", proc.name)
            return
        if proc.then is AfterExit.RESTART:
            proc.then, proc.failures = AfterExit.SUPERVISE, 0
            self._start(proc)
            return
        decision = next_restart(proc.failures, uptime, self.config)
        proc.failures, delay = decision.failures, decision.delay
        if decision.gave_up:
            state = State.GAVE_UP
            log.error("%s gave up after %d quick exits (%s); retry in %.0fs", proc.name, proc.failures,
                      last.reason, delay)
        else:
            state = State.BACKOFF
            log.warning("%s exited after %.1fs (%s); restart in %.2fs", proc.name, uptime, last.reason, delay)
        proc.set_state(state, next_start=time.time() + delay)
        proc.next_start = time.monotonic() + delay
        if delay == 0:
            self._start(proc)
        systemd.notify(STATUS=self._summary())

    def _terminate(self, proc: ExecutiveProcess, then: AfterExit) -> None:
        """SIGTERM now, SIGKILL after the stop timeout; ``then`` says what follows the exit."""
        proc.then = then
        proc.next_start = None
        if proc.pid:
            signal_group(proc.pid, signal.SIGTERM)
            proc.kill_at = time.monotonic() + self.config.stop_timeout
            proc.set_state(State.STOPPING)

    # -- control --------------------------------------------------------------------------

    def stop(self, now: bool = False) -> None:
        """Stop every executive and then the supervisor; ``now`` skips the SIGTERM grace."""
        if not self._stopping:
            log.info("stopping %d executives", sum(1 for p in self.processes.values() if p.pid))
            systemd.notify(STOPPING=1)
        self._stopping = True
        for proc in self.processes.values():
            if now and proc.pid:
                signal_group(proc.pid, signal.SIGKILL)
            elif proc.state != State.STOPPING:
                self._terminate(proc, AfterExit.SUPERVISE)
                if not proc.pid:
                    proc.set_state(State.STOPPED)

    def restart(self, name: str) -> str:
        """Restart one executive now (also one that was given up)."""
        proc = self.processes.get(name)
        if proc is None:
            raise KeyError(f"no executive {name!r}; running: {', '.join(self.processes)}")
        if proc.pid:
            self._terminate(proc, AfterExit.RESTART)
            return f"restarting {name} (pid {proc.pid})"
        proc.failures = 0
        self._start(proc)
        return f"started {name}"

    def reload(self) -> tuple[bool, str]:
        """Re-read the configuration: restart changed executives, start new ones, stop removed ones."""
        try:
            new = complete(load_config(self.config.path))
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return False, str(exc)
        wanted = {e.name: e for e in new.enabled()}
        reason = self._cannot_reload(new, [name for name in wanted if name not in self.processes])
        if reason:
            log.error("reload refused: %s", reason)
            return False, reason
        self.config = new
        changes: list[str] = []
        for name, proc in list(self.processes.items()):
            if name not in wanted:
                changes.append(f"-{name}")
                if proc.pid:
                    self._terminate(proc, AfterExit.REMOVE)
                else:
                    self._exited_for_good(proc)
            elif new.settings(name) != proc.settings or proc.then is AfterExit.REMOVE:
                changes.append(f"~{name}")
                proc.config, proc.settings = wanted[name], new.settings(name)
                if proc.pid:
                    self._terminate(proc, AfterExit.RESTART)
                else:
                    proc.failures = 0
                    self._start(proc)
        for name, executive in wanted.items():
            if name not in self.processes:
                changes.append(f"+{name}")
                self._start(self._add(executive))
        message = f"reloaded: {' '.join(changes) or 'nothing changed'}"
        log.info(message)
        return True, message

    def _cannot_reload(self, new: Config, added: list[str]) -> str:
        """Why ``new`` cannot replace the running configuration, or ''."""
        if new.state_dir != self.config.state_dir:
            return f"state_dir cannot change on reload ({self.config.state_dir} -> {new.state_dir})"
        assert self.board is not None
        free = len(self.board) - len(self.board.names())
        if len(added) > free:
            return (f"{len(added)} executives to add, the board has {free} free slots "
                    f"({SPARE_SLOTS} spare at start): restart the house to add them")
        return ""

    def _exited_for_good(self, proc: ExecutiveProcess) -> None:
        proc.then = AfterExit.REMOVE
        self._exited(proc, LastExit(0, "removed from the configuration", time.time()), 0.0)

    def _command(self, words: list[str]) -> tuple[bool, str]:
        match words:
            case ["stop"]:
                self.stop()
                return True, "stopping"
            case ["reload"]:
                return self.reload()
            case ["restart", name]:
                try:
                    return True, self.restart(name)
                except KeyError as exc:
                    return False, exc.args[0]
            case _:
                return False, f"unknown command {' '.join(words)!r}; known: stop, reload, restart NAME"

    def _summary(self) -> str:
        running = sum(1 for p in self.processes.values() if p.state == State.RUNNING)
        return f"{running}/{len(self.processes)} executives running"
