"""The ``raspy`` command as a user types it: endpoints from the configuration, executives of
one's own, and one clear line instead of a traceback when something is wrong."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from supervised_house import ECHOES, HOST, House, mount_tmpfs
from support import ROOT, free_endpoint, free_port, wait_for

FEEDER = '''"""A user's own executive, kept beside the house's configuration."""
from raspy.executives.echo import EchoServer


class Feeder(EchoServer):
    """Feeds the fish (here: answers echo requests)."""
'''
#: Only RasPy itself is importable: not the tests' kinds, not the configuration's folder.
BARE = {"PYTHONPATH": str(ROOT)}


@pytest.fixture
def house(children, tmp_path):
    house = House(children, tmp_path)
    yield house
    house.stop()


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The message of a command that failed the way a user should see it: one line, no traceback."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], result.stderr
    return lines[0]


def user_module(folder) -> None:
    package = folder / "myhouse"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "feeder.py").write_text(FEEDER)


# -- executives of one's own ------------------------------------------------------------

def test_a_users_executive_beside_the_configuration_runs_and_never_breaks_the_cli(house):
    user_module(house.tmp)
    house.write(ECHOES + '\n[executives.feeder]\nkind = "myhouse.feeder:Feeder"\n\n[executives.kv]\n')
    house.start(running=("broker", "one", "two", "feeder", "kv"), env=BARE)
    assert house.echo("feeder")
    (house.tmp / "myhouse" / "feeder.py").write_text("def half written(\n")  # being edited
    for command in (["status"], ["kv", "set", "/fish/fed", "1"], ["kv", "get", "/fish/fed"]):
        result = house.raspy(*command, env=BARE)
        assert result.returncode == 0, (command, result.stderr)
    result = house.raspy("reload", env=BARE)  # reload checks the kinds it would start
    assert result.returncode == 2 and "myhouse.feeder:Feeder" in one_line_error(result)
    (house.tmp / "myhouse" / "pump.py").write_text("def half written(\n")
    with house.config.open("a") as config:
        config.write('\n[executives.pump]\nkind = "myhouse.pump:Pump"\n')
    house.proc.send_signal(signal.SIGHUP)  # the supervisor imports the new kind itself: refused, not fatal
    wait_for(lambda: "SyntaxError" in (house.tmp / "supervisor.out").read_text(), what="reload refused")
    assert house.proc.poll() is None and "pump" not in house.states() and house.echo("feeder")
    result = house.raspy("stop", env=BARE)
    assert (result.returncode, result.stdout.strip()) == (0, "stopped"), result.stderr


def test_raspy_path_names_the_folders_of_ones_own_executives(house):
    user_module(house.tmp / "lib")
    house.write(ECHOES + '\n[executives.feeder]\nkind = "myhouse.feeder:Feeder"\n')
    result = house.raspy("start", env=BARE)
    assert result.returncode == 2 and "No module named 'myhouse'" in one_line_error(result)
    house.write(ECHOES + '\n[executives.feeder]\nkind = "myhouse.feeder:Feeder"\n', path='["lib"]')
    house.start(running=("broker", "one", "two", "feeder"), env=BARE)
    assert house.echo("feeder")


# -- endpoints from the configuration --------------------------------------------------

def test_every_command_that_talks_to_a_house_takes_its_endpoints_from_the_configuration(house, tmp_path):
    house.write(ECHOES + "\n[executives.kv]\n")
    house.start(running=("broker", "kv", "one", "two"))
    by_env = {"RASPY_CONFIG": str(house.config)}
    exists = (f"{HOST}.one.mmi", "exists", '"echo"')
    for result in (house.raspy("call", *exists), house.raspy("call", *exists, config=False, env=by_env)):
        assert (result.returncode, result.stdout.strip()) == (0, "200 true"), result.stderr
    result = house.raspy("mmi", rf"^{HOST}\.one\.echo$", config=False, env=by_env)
    assert (result.returncode, result.stdout.strip()) == (0, f"{HOST}.one.echo"), result.stderr
    assert house.raspy("kv", "set", "/cli/x", "5", config=False, env=by_env).returncode == 0
    result = house.raspy("kv", "get", "/cli/x", config=False, env=by_env)
    assert (result.returncode, result.stdout.strip()) == (0, "5"), result.stderr
    assert house.raspy("status", config=False, env=by_env).returncode == 0
    # an explicit --broker wins over the configuration; --config over $RASPY_BROKER
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text(f'[raspy]\nbroker = "{free_endpoint()}"\n')
    result = house.raspy("call", "--config", str(elsewhere), "--broker", house.endpoint, *exists, config=False)
    assert result.returncode == 0, result.stderr
    result = house.raspy("call", *exists, env={"RASPY_BROKER": free_endpoint()})
    assert result.returncode == 0, result.stderr
    result = house.raspy("stop", config=False, env=by_env)
    assert (result.returncode, result.stdout.strip()) == (0, "stopped"), result.stderr


# -- one clear line instead of a traceback ---------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    yield from mount_tmpfs(tmp_path / "disk")


def test_a_read_only_state_directory(house, small_disk):
    house.state_dir = small_disk / "state"
    house.state_dir.mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    house.write(ECHOES)
    result = house.raspy("start")
    assert result.returncode == 1
    assert str(house.state_dir) in one_line_error(result) and "Read-only file system" in result.stderr


def test_a_nonsense_endpoint_on_the_command_line():
    for args in (["call", "--broker", "nonsense", "x.y", "ping"], ["mmi", "--broker", "nonsense"],
                 ["kv", "get", "k", "--snapshot", "nonsense"]):
        result = subprocess.run([sys.executable, "-m", "raspy", *args], env=dict(os.environ, **BARE),
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and "'nonsense'" in one_line_error(result), args


def run_broker(bind: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raspy", "run", "broker", "--bind", bind],
                          env=dict(os.environ, **BARE), capture_output=True, text=True, timeout=30)


def test_a_busy_port_for_raspy_run_broker(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_broker(f"tcp://127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"port {port} is in use by pid {os.getpid()}" in one_line_error(result)
    # ZeroMQ would take over a Unix socket path that another process listens on
    with socket.socket(socket.AF_UNIX) as holder:
        holder.bind(str(tmp_path / "broker.sock"))
        holder.listen()
        result = run_broker(f"ipc://{tmp_path / 'broker.sock'}")
    assert result.returncode == 1
    assert f"something listens on it by pid {os.getpid()}" in one_line_error(result)


def test_a_token_that_is_not_a_string(house):
    house.write(ECHOES + f"\n[executives.web]\nport = {free_port()}\ntoken = 12345\n")
    result = house.raspy("start")
    assert result.returncode == 2
    message = one_line_error(result)
    assert str(house.config) in message and "token" in message and "12345" in message
    assert not house.state_dir.exists()
