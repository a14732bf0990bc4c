"""The supervisor with real processes: ``raspy start`` on a test configuration, then kills,
hangs, crash loops, reloads and stops, checked the way a user would (services, ``raspy status``)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from supervised_house import ECHOES, ENV, HOST, House, fill, mount_tmpfs
from support import live, wait_for

from raspy.house import systemd
from raspy.house.board import State, board_name, pid_alive
from raspy.house.config import ConfigError, load_config
from raspy.house.control import MAX_CONNECTIONS
from raspy.house.logs import CappedLog
from raspy.mdp import protocol as p


@pytest.fixture
def house(children, tmp_path):
    house = House(children, tmp_path)
    yield house
    house.stop()


# -- configuration --------------------------------------------------------------------

BAD_CONFIGS = [
    ("[raspy]\nhostname = \"pi\"\nheartbeat = [\n", 3, "not valid TOML"),
    ("[raspy]\nhostname = = \"pi\"\n[executives.x]\n", 2, "not valid TOML"),
    ("[raspy]\nhostname = \"pi\"\n\nheartbeat = \"fast\"\n", 4, "raspy.heartbeat: 'fast' is not a number > 0"),
    ("[raspy]\nliveness = 0\n", 2, "raspy.liveness: 0 is not an integer >= 1"),
    ("[raspy]\nheartbeet = 1.0\n", 2, "raspy.heartbeet: unknown key"),
    ("[executives.broker]\n\n[executives.x]\nkind = \"nope\"\n", 4, "executives.x.kind: unknown executive kind 'nope'"),
    ("[executives.x]\nkind = \"os:getcwd\"\n", 2, "is not an Executive class"),
    ("[executives.x]\nkind = \"no_such_module:Thing\"\n", 2, "cannot load"),
    ("[executives.x]\nenabled = \"yes\"\n", 2, "executives.x.enabled: 'yes' is not true or false"),
    ("[executives.Big]\n", 1, "executives.Big: an executive name is"),
    ("[exekutives.x]\n", 1, "exekutives: unknown table"),
    ("[raspy]\nbackoff_start = 10\nbackoff_cap = 1\n", 2, "is more than backoff_cap"),
]


@pytest.mark.parametrize("text, line, reason", BAD_CONFIGS)
def test_a_bad_configuration_names_file_line_and_reason(tmp_path, text, line, reason):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}, line {line}: ")
    assert reason in str(caught.value)


def test_a_bad_configuration_stops_start_up(house):
    house.config.write_text('[raspy]\nstate_dir = "%s"\n\n[executives.broker]\nbind = "tcp://127.0.0.1:5514"\n'
                            '[executives.one]\nkind = "echoo"\n' % house.state_dir)
    result = house.raspy("start")
    assert result.returncode == 2
    assert f"{house.config}, line 7: executives.one.kind: unknown executive kind 'echoo'" in result.stderr
    assert not house.state_dir.exists()


def test_the_default_configuration(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    config = load_config(None)
    assert config.state_dir == tmp_path / "raspy"
    assert config.executives["broker"].options == {"bind": "tcp://127.0.0.1:5514"}
    assert "echo" not in config.executives  # a test kind, not part of the house
    assert ("onewire" in config.executives) == Path("/sys/bus/w1/devices").exists()


def test_relative_state_dir_is_beside_the_file_and_options_pass_through(tmp_path):
    path = tmp_path / "raspy.toml"
    path.write_text('[raspy]\nstate_dir = "var"\n[executives.one]\nkind = "echo"\ndelay = 0.5\n'
                    '[executives.off]\nkind = "echo"\nenabled = false\n')
    config = load_config(path)
    assert config.state_dir == tmp_path / "var"
    assert config.settings("one").options == {"delay": 0.5}
    assert [e.name for e in config.enabled()] == ["one"]


# -- pieces ----------------------------------------------------------------------------

def test_capped_log_rotates_and_keeps_the_last_lines(tmp_path):
    log = CappedLog(tmp_path / "x.log", max_bytes=1024)
    for i in range(100):
        log.write(f"line {i:03d} ".encode() + b"." * 20 + b"\n")
    log.close()
    assert (tmp_path / "x.log").stat().st_size <= 1024
    assert (tmp_path / "x.log.1").stat().st_size <= 1024
    assert log.last_line().startswith("line 099")
    assert "line 099" in (tmp_path / "x.log").read_text()


def test_systemd_notify_sends_datagrams(monkeypatch, tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(tmp_path / "notify"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        assert systemd.notify(READY=1, STATUS="3/3 executives running")
        assert server.recv(100) == b"READY=1\nSTATUS=3/3 executives running"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not systemd.notify(READY=1)


def test_status_without_a_supervisor(house):
    house.write(ECHOES)
    result = house.raspy("status")
    assert result.returncode == 3
    assert "no supervisor runs" in result.stdout
    assert house.raspy("stop").returncode == 3


# -- the supervisor, end to end ---------------------------------------------------------

def test_every_executive_answers_and_status_shows_them(house):
    house.start()
    assert house.echo("one") and house.echo("two")
    # 200 once each of its workers has heard from the broker
    status, result = wait_for(lambda: (r := house.call("one.mmi", "status"))[0] == p.OK and r, what="status 200")
    assert result["workers"] == 3 and result["instance"] == f"{HOST}.one@{house.pid('one')}"
    assert house.call("one.mmi", "exists", "echo") == (p.OK, True)
    status, stats = house.call("one.statistics", "get", f"{HOST}.one.snmp.requests")
    assert status == p.OK and stats["value"] >= 3  # the echo, status and exists requests
    result = house.raspy("status")
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [["broker", "running"], ["one", "running"],
                                                        ["two", "running"]]
    assert (house.state_dir / "logs" / "one.log").exists()


def test_kill_9_of_an_executive_is_back_at_once(house):
    house.start()
    assert house.echo("one")
    old = house.pid("one")
    killed = time.monotonic()
    os.kill(old, signal.SIGKILL)
    assert house.echo("one", timeout=0.1, retries=30)
    assert time.monotonic() - killed < 1.5
    assert house.pid("one") != old and not pid_alive(old)
    wait_for(lambda: house.states("one")["one"].state == State.RUNNING, what="one running again")
    line = next(line for line in house.raspy("status").stdout.splitlines() if line.startswith("one "))
    assert line.split()[1] == "running"
    assert line.split()[4] == "1"  # restarts
    assert "killed by SIGKILL" in line


def test_a_crash_loop_ends_in_gave_up_with_the_reason(house):
    house.write(ECHOES + '\n[executives.bad]\nkind = "supervised_kinds:Crash"\n')
    house.start()
    wait_for(lambda: house.states("bad")["bad"].state == State.GAVE_UP, what="bad given up")
    state = house.states("bad")["bad"]
    assert state.restarts == 2 and state.pid == 0
    assert state.last_exit.reason == "exit 3: boom: no sensor on the bus"
    result = house.raspy("status")
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if line.startswith("bad "))
    assert "gave-up" in line and "exit 3: boom: no sensor on the bus" in line and "retry in" in line
    assert house.echo("one")  # the others are not disturbed
    # a manual restart tries again at once
    assert "started bad" in house.raspy("restart", "bad").stdout
    wait_for(lambda: house.states("bad")["bad"].restarts >= 3, what="bad tried again")


def test_a_hung_executive_is_killed_and_restarted(house):
    flag = house.tmp / "freeze"
    house.write(ECHOES + f'\n[executives.frozen]\nkind = "supervised_kinds:Freezer"\nfreeze = "{flag}"\n',
                hang_timeout=1.5)
    house.start(running=("broker", "one", "two", "frozen"))
    old = house.pid("frozen")
    flag.touch()
    wait_for(lambda: house.states("frozen")["frozen"].restarts == 1, timeout=5, what="frozen restarted")
    state = house.states("frozen")["frozen"]
    assert state.pid != old and not pid_alive(old)
    assert state.last_exit.reason.startswith("killed by SIGKILL: hung: no heartbeat for ")
    wait_for(lambda: house.echo("frozen"), what="frozen answers again")


def test_sigterm_stops_everything_and_leaves_nothing(house):
    house.write(ECHOES + '\n[executives.stubborn]\nkind = "supervised_kinds:Stubborn"\n')
    supervisor = house.start(running=("broker", "one", "two", "stubborn"))
    pids = [s.pid for s in house.states().values()]
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=5) == 0
    assert time.monotonic() - started < 1.0 + 1.5  # stop_timeout, then SIGKILL for the stubborn one
    assert not any(pid_alive(pid) for pid in pids)
    assert not Path(f"/dev/shm/{board_name(house.state_dir)}").exists()
    assert not (house.state_dir / "control.sock").exists()
    assert "stubborn (pid" in (house.tmp / "supervisor.out").read_text()  # it needed the SIGKILL


def test_sigkill_of_the_supervisor_leaves_no_orphan_and_the_next_start_cleans_up(house):
    supervisor = house.start()
    pids = [s.pid for s in house.states().values()]
    supervisor.kill()
    supervisor.wait(timeout=5)
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=3, what="executives gone")
    assert house.raspy("status").returncode == 3  # the stale board is reported
    house.start()  # the stale board and control socket are replaced
    assert house.echo("one")


def test_sighup_restarts_only_the_changed_executive(house):
    supervisor = house.start()
    before = {name: s.pid for name, s in house.states().items()}
    house.write(ECHOES.replace('[executives.two]\nkind = "echo"', '[executives.two]\nkind = "echo"\ndelay = 0.01')
                + '\n[executives.three]\nkind = "echo"\n')
    supervisor.send_signal(signal.SIGHUP)
    wait_for(lambda: (s := house.states("three", "two")) and s["three"].state == s["two"].state == State.RUNNING
             and s["two"].pid != before["two"], what="two restarted, three started")
    after = {name: s.pid for name, s in house.states().items()}
    assert after["broker"] == before["broker"] and after["one"] == before["one"]
    assert house.echo("three") and house.echo("two")
    # a removed executive is stopped and leaves the board
    house.write(ECHOES)
    result = house.raspy("reload")
    assert result.returncode == 0 and "-three" in result.stdout
    wait_for(lambda: "three" not in house.states(), what="three removed")
    assert not pid_alive(after["three"])


def test_control_commands(house):
    supervisor = house.start()
    old = house.pid("one")
    assert house.raspy("restart", "one").returncode == 0
    wait_for(lambda: house.states("one")["one"].pid not in (0, old), what="one restarted")
    result = house.raspy("restart", "nobody")
    assert result.returncode == 1 and "no executive 'nobody'" in result.stderr
    good = house.config.read_text()
    house.config.write_text(good + "\n[executives.x]\nkind = 3\n")
    result = house.raspy("reload")  # the command checks the file first
    line = len(good.splitlines()) + 3
    assert result.returncode == 2 and f"{house.config}, line {line}: executives.x.kind" in result.stderr
    supervisor.send_signal(signal.SIGHUP)  # the supervisor checks it too, and keeps running as it was
    wait_for(lambda: "reload refused" in (house.tmp / "supervisor.out").read_text(), what="reload refused")
    typo = good.replace('[executives.two]\nkind = "echo"\n', '[executives.two]\nkind = "echo"\ndelai = 0.1\n')
    house.config.write_text(typo)
    result = house.raspy("reload")  # an option the kind does not declare
    line = typo.splitlines().index("delai = 0.1") + 1
    assert result.returncode == 2
    assert (f"{house.config}, line {line}: executives.two.delai: unknown key; known: kind, enabled, delay"
            in result.stderr)
    assert set(house.states()) == {"broker", "one", "two"} and house.echo("two")
    house.config.write_text(good)
    result = house.raspy("stop")
    assert result.returncode == 0 and result.stdout.strip() == "stopped"
    assert supervisor.wait(timeout=2) == 0


def test_run_one_executive_of_the_configuration(house, children):
    house.write(ECHOES)
    children.raspy("run", "broker", "--config", str(house.config), env=ENV)
    children.raspy("run", "one", "--config", str(house.config), env=ENV)
    assert house.echo("one", timeout=0.5, retries=20)
    result = house.raspy("run", "nobody")
    assert result.returncode == 2 and "no executive 'nobody'" in result.stderr


def test_under_systemd_it_notifies_ready_status_and_watchdog(house, tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(5)
        house.start(env={"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"})
        messages = set()
        wait_for(lambda: messages.update(notify.recv(200).decode().splitlines()) or
                 {"READY=1", "WATCHDOG=1", "STATUS=3/3 executives running"} <= messages, what="notifications")


# -- months alone: a full disk, a second house, forks while a command is answered ---------------

@pytest.fixture
def small_disk(tmp_path):
    yield from mount_tmpfs(tmp_path / "disk")


def test_a_full_disk_drops_log_output_and_the_house_keeps_running(house, small_disk):
    house.state_dir = small_disk / "state"
    house.write(ECHOES + '\n[executives.chatty]\nkind = "supervised_kinds:Chatty"\n')
    fill(small_disk)
    supervisor = house.start(running=("broker", "one", "two", "chatty"))
    wait_for(lambda: house.states("chatty")["chatty"].log_dropped > 2000, what="chatty's output dropped")
    old = house.pid("one")
    os.kill(old, signal.SIGKILL)  # its exit and its restart are noted in its log: dropped too
    assert house.echo("one", timeout=0.1, retries=30)
    wait_for(lambda: house.states("one")["one"].state == State.RUNNING and house.pid("one") != old,
             what="one running again")
    assert supervisor.poll() is None and house.echo("two")
    status = house.raspy("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(r"^    chatty: \d+ bytes of its output were not written to its log", status.stdout, re.M), \
        status.stdout
    # room again: the log is written again
    log = house.state_dir / "logs" / "chatty.log"
    size = log.stat().st_size
    (small_disk / "filler").unlink()
    wait_for(lambda: log.stat().st_size > size, what="chatty's log written again")


def test_a_second_house_on_the_same_ports_refuses_to_start(house, tmp_path):
    house.write(ECHOES + "\n[executives.kv]\n")
    house.start(running=("broker", "kv", "one", "two"))
    second_state = tmp_path / "second"
    second = tmp_path / "second.toml"
    second.write_text(house.config.read_text().replace(str(house.state_dir), str(second_state))
                      .replace(f'hostname = "{HOST}"', 'hostname = "b"'))
    result = subprocess.run([sys.executable, "-m", "raspy", "start", "--config", str(second)],
                            env=dict(os.environ, **ENV), capture_output=True, text=True, timeout=20)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    broker_port, snapshot_port = house.endpoint.rsplit(":", 1)[1], house.kv["snapshot"].rsplit(":", 1)[1]
    assert f"port {broker_port} is in use by pid {house.pid('broker')} (raspy-broker)" in result.stderr
    assert f"port {snapshot_port} is in use by pid {house.pid('kv')} (raspy-kv)" in result.stderr
    assert not list(second_state.glob("logs/*.log"))  # none of its executives ever started
    assert not live(house.endpoint, "b.one.echo")
    assert house.echo("one")


def test_a_busy_web_port_is_named_with_its_holder(house):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        house.write(ECHOES + f"\n[executives.web]\nport = {port}\n")
        result = house.raspy("start", timeout=20)
    assert result.returncode == 1, result.stderr
    assert f"web: cannot bind tcp://127.0.0.1:{port}: port {port} is in use by pid {os.getpid()}" in result.stderr


def test_an_executive_whose_serving_thread_died_exits_and_is_given_up_with_the_reason(house):
    house.write(ECHOES + "\n[executives.kv]\n")
    supervisor = house.start(running=("broker", "kv", "one", "two"))
    house.write(ECHOES + '\n[executives.kv]\n\n[executives.kv2]\nkind = "kv"\n')  # the same endpoints as kv
    supervisor.send_signal(signal.SIGHUP)
    wait_for(lambda: (s := house.states("kv2")) and s["kv2"].state == State.GAVE_UP, what="kv2 given up")
    assert "Address already in use" in house.states("kv2")["kv2"].last_exit.reason
    assert house.states("kv")["kv"].state == State.RUNNING


def test_restart_of_a_given_up_executive_and_a_reload_that_adds_one_answer_at_once(house):
    flag = house.tmp / "crash"
    flag.touch()
    flaky = f'\n[executives.flaky]\nkind = "supervised_kinds:Flaky"\ncrash_while = "{flag}"\n'
    house.write(ECHOES + flaky)
    house.start()
    wait_for(lambda: house.states("flaky")["flaky"].state == State.GAVE_UP, what="flaky given up")
    flag.unlink()
    result = house.raspy("restart", "flaky")  # the fork happens while the supervisor answers
    assert (result.returncode, result.stdout.strip()) == (0, "started flaky"), result.stderr
    wait_for(lambda: house.states("flaky")["flaky"].state == State.RUNNING, what="flaky running")
    house.write(ECHOES + flaky + '\n[executives.three]\nkind = "echo"\n')
    result = house.raspy("reload")
    assert (result.returncode, result.stdout.strip()) == (0, "reloaded: +three"), result.stderr
    assert house.echo("three")


def test_a_reload_adding_more_executives_than_free_slots_is_refused(house):
    house.start()
    many = "".join(f'\n[executives.more{i}]\nkind = "echo"\n' for i in range(9))
    house.write(ECHOES + many)
    result = house.raspy("reload")
    assert result.returncode == 1 and "9 executives to add, the board has 8 free slots" in result.stderr
    assert house.proc.poll() is None and set(house.states()) == {"broker", "one", "two"} and house.echo("one")


def test_idle_control_connections_are_bounded_and_commands_still_answered(house):
    house.start()
    idle = []
    try:
        for _ in range(MAX_CONNECTIONS + 1):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(str(house.state_dir / "control.sock"))
            conn.settimeout(5)
            idle.append(conn)
        assert idle[-1].recv(1) == b""  # one more than the bound is closed at once
        for conn in idle[:4]:
            conn.close()
        result = house.raspy("restart", "one")
        assert result.returncode == 0, result.stderr
    finally:
        for conn in idle:
            conn.close()
