"""Configuration from the hub: a satellite with a minimal file runs what the hub's file gives it.

A hub and a satellite run as two real supervisors on this machine (see test_curve.py); the
hub's file holds ``[hosts.shed.executives.*]``, the satellite's only its name, the hub's
endpoints and key. What a person would check: the satellite's devices on the hub's map, its
executives and their pids on its board, its logs, and the hub refusing other hosts.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import toml_key, toml_value, wait_for, write_config
from test_curve import TIMINGS, Host, call, kv_keys, live, raspy

from raspy.curve import init_keys
from raspy.house.board import Board, State, board_name
from raspy.house.config import ConfigError, load_config
from raspy.house.hubconfig import DamagedCache, cache_path, read_cache, write_cache
from raspy.mdp import protocol as p

TANK = {"devices": [{"name": "tank", "kind": "cyclic", "cycle": 60, "poll": 1}]}


def write_hub(hub: Host, hosts: dict[str, dict[str, dict]], **raspy_extra) -> None:
    """The hub's file: broker, kv and its own fake device, and ``[hosts.HOST.executives.NAME]`` tables."""
    hub.write(**raspy_extra)
    lines = [hub.config.read_text()]
    for host, executives in hosts.items():
        for name, options in executives.items():
            lines += [f"[hosts.{host}.executives.{name}]", *(f"{toml_key(k)} = {toml_value(v)}"
                                                            for k, v in options.items()), ""]
    aside = hub.config.with_name(".hub.tmp")
    aside.write_text("\n".join(lines))
    os.replace(aside, hub.config)  # a reload never reads half a file


def write_minimal(satellite: Host) -> None:
    """The satellite's file: its name, the hub's endpoints and public key, and no executive."""
    write_config(satellite.config, {"hostname": satellite.name, "state_dir": str(satellite.state_dir),
                                    "broker": satellite.broker, **{f"kv_{k}": v for k, v in satellite.kv.items()},
                                    "curve": True, "hub_key": satellite.hub.public, **TIMINGS}, {})


def board(host: Host) -> dict[str, tuple[State, int]]:
    """The host's executives as ``raspy status`` shows them: name -> (state, pid); empty until the
    running supervisor made its board (a killed one leaves its own behind)."""
    with Board.attach(board_name(host.state_dir)) as attached:
        if attached.creator_pid != host.proc.pid:
            return {}
        return {s.name: (s.state, s.pid) for s in attached.snapshot()}


def running(host: Host, *names: str) -> bool:
    try:
        states = board(host)
    except Exception:  # the supervisor has not made its board yet
        return False
    return all(states.get(name, (None,))[0] == State.RUNNING for name in names)


def allow(hub: Host, satellite: Host) -> None:
    """``raspy keys allow`` on the hub (the key may start with '-', a Z85 digit)."""
    allowed = raspy("keys", "allow", "--config", str(hub.config), satellite.name, satellite.public)
    assert allowed.returncode == 0, allowed.stderr


def stop(host: Host) -> None:
    host.proc.terminate()
    host.proc.wait(timeout=15)


@pytest.fixture
def house(children, tmp_path):
    """A hub that gives host ``shed`` a fake device and an echo service, and an allowed satellite ``shed``."""
    hub = Host(children, tmp_path / "hub", "hub")
    shed = Host(children, tmp_path / "shed", "shed", hub)
    write_hub(hub, {"shed": {"fake": TANK, "echo": {}}})
    allow(hub, shed)
    write_minimal(shed)
    hub.start()
    yield hub, shed
    for host in (shed, hub):
        if host.proc is not None and host.proc.poll() is None:
            stop(host)


def test_a_minimal_satellite_runs_what_the_hub_gives_it_and_follows_its_reloads(house):
    hub, shed = house
    shed.start()
    wait_for(lambda: "/device/shed.fake.tank" in kv_keys(hub, "/device/"), timeout=20,
             what="the satellite's device, configured by the hub, on the hub's map")
    assert live(hub, "shed.echo.echo")
    assert cache_path(shed.state_dir).exists()
    wait_for(lambda: running(shed, "config", "fake", "echo"), what="the satellite's executives running")
    before = board(shed)

    changed = {"fake": TANK, "echo": {"delay": 0.01}, "more": {"kind": "echo"}}  # fake unchanged
    write_hub(hub, {"shed": changed})
    reloaded = raspy("reload", "--config", str(hub.config))
    assert reloaded.returncode == 0 and "~config" in reloaded.stdout, reloaded.stdout + reloaded.stderr
    wait_for(lambda: live(hub, "shed.more.echo"), timeout=20, what="the executive the hub added")
    wait_for(lambda: running(shed, "fake", "echo", "more"), what="the satellite's new set running")
    after = board(shed)
    assert after["fake"][1] == before["fake"][1]  # unchanged: not restarted
    assert after["config"][1] == before["config"][1]
    assert after["echo"][1] != before["echo"][1]  # changed: restarted
    assert "reloaded: ~echo +more" in shed.log("config")

    write_hub(hub, {"shed": {"fake": TANK}})
    assert raspy("reload", "--config", str(hub.config)).returncode == 0
    wait_for(lambda: set(board(shed)) == {"config", "fake"}, timeout=20, what="the removed executives gone")
    assert board(shed)["fake"][1] == before["fake"][1]

    write_hub(hub, {"cellar": {"echo": {}}})  # shed taken out of the hub's file: withdrawn, the satellite keeps its own
    assert raspy("reload", "--config", str(hub.config)).returncode == 0
    wait_for(lambda: kv_keys(hub, "/config/") == {"/config/cellar"}, timeout=20, what="shed's announcement withdrawn")
    wait_for(lambda: "the hub withdrew the configuration of shed" in shed.log("config"), what="the satellite noticing")
    assert board(shed)["fake"][1] == before["fake"][1]


def test_a_satellite_starts_from_its_cache_while_the_hub_is_away(house):
    hub, shed = house
    shed.start()
    wait_for(lambda: cache_path(shed.state_dir).exists() and running(shed, "fake", "echo"), timeout=20,
             what="the satellite configured by the hub")
    shed.proc.kill()  # a power cut: kill -9, and the shed boots before the hub
    shed.proc.wait(timeout=10)
    stop(hub)

    shed.start()
    wait_for(lambda: running(shed, "config", "fake", "echo"), timeout=20, what="the cached executives running")
    out = (shed.folder / "supervisor.out").read_text()
    assert "cached configuration is not used" not in out

    write_hub(hub, {"shed": {"fake": TANK, "other": {"kind": "echo"}}})  # the hub comes back, changed
    pid = board(shed)["fake"][1]
    hub.start()
    wait_for(lambda: running(shed, "fake", "other") and "echo" not in board(shed), timeout=30,
             what="the hub's new configuration picked up")
    assert board(shed)["fake"][1] == pid
    wait_for(lambda: live(hub, "shed.other.echo"), timeout=20, what="the new executive through the hub")


def test_a_damaged_cache_is_reported_and_not_used(house):
    hub, shed = house
    stop(hub)
    write_cache(shed.state_dir, "shed", {"fake": {"kind": "fake", **TANK}})
    cache = cache_path(shed.state_dir)
    cache.write_text(cache.read_text().replace('"tank"', '"tonk"'))  # one flipped letter
    shed.start()
    wait_for(lambda: running(shed, "config"), timeout=20, what="the satellite waiting for the hub")
    assert set(board(shed)) == {"config"}
    out = (shed.folder / "supervisor.out").read_text()
    assert f"the cached configuration is not used: {cache}: damaged (its content does not match its SHA-256)" in out

    hub.start()  # the hub's answer replaces it
    wait_for(lambda: running(shed, "fake", "echo"), timeout=30, what="the hub's configuration")
    assert '"tank"' in cache.read_text()


def test_an_answer_the_satellite_cannot_run_is_refused_and_not_cached(children, tmp_path):
    hub = Host(children, tmp_path / "hub", "hub")
    shed = Host(children, tmp_path / "shed", "shed", hub)
    (hub.folder / "kinds").mkdir()  # a kind of the hub's owner, not installed on the satellite
    (hub.folder / "kinds" / "pond.py").write_text("from raspy.house.executive import Executive\n\n\n"
                                                  "class Pond(Executive):\n    pass\n")
    write_hub(hub, {"shed": {"pond": {"kind": "pond:Pond"}}}, path=["kinds"])
    allow(hub, shed)
    write_minimal(shed)
    hub.start()
    shed.start()
    try:
        wait_for(lambda: "is refused, the running one is kept" in shed.log("config"), timeout=20,
                 what="the satellite refusing what it cannot run")
        assert "cannot load 'pond:Pond'" in shed.log("config")
        assert not cache_path(shed.state_dir).exists()
        assert set(board(shed)) == {"config"}
    finally:
        stop(shed)
        stop(hub)


def test_a_cache_of_another_host_or_not_json_is_not_used(tmp_path):
    write_cache(tmp_path, "cellar", {"echo": {"kind": "echo"}})
    with pytest.raises(DamagedCache, match="configuration of host 'cellar', this host is 'shed'"):
        read_cache(tmp_path, "shed")
    cache_path(tmp_path).write_bytes(b"{\"host\": \"shed\", \"execu")  # cut short
    with pytest.raises(DamagedCache, match="damaged"):
        read_cache(tmp_path, "shed")
    assert read_cache(tmp_path / "none", "shed") is None


@pytest.mark.parametrize("core", ["compiled", "pure"])
def test_a_host_fetches_its_own_configuration_only(children, tmp_path, core):
    hub = Host(children, tmp_path / "hub", "hub")
    shed = Host(children, tmp_path / "shed", "shed", hub)
    write_hub(hub, {"shed": {"echo": {}}, "cellar": {"secret": {"kind": "echo", "delay": 0.5}}})
    allow(hub, shed)
    hub.start({"RASPY_PURE": "1"} if core == "pure" else None)
    try:
        wait_for(lambda: live(hub, "hub.config.cellar"), timeout=20, what="the hub's configuration service")
        status, reason = call(hub, "hub.config.cellar", "get", curve=shed.curve())
        assert status == p.FORBIDDEN and reason == "host shed may not call hub.config.cellar"
        status, result = call(hub, "hub.config.shed", "get", curve=shed.curve())
        assert status == p.OK and set(result["executives"]) == {"echo"}
        assert call(hub, "hub.config.cellar", "get")[0] == p.OK  # the hub itself may
        wait_for(lambda: "host shed may not call hub.config.cellar" in hub.log("broker"),
                 what="the refusal in the broker's log")
    finally:
        stop(hub)


def hub_file(tmp_path: Path, hosts: str, curve: bool = True) -> Path:
    """A hub's file with ``hosts`` from line 6 on, and the hub's keys in its state directory."""
    init_keys(tmp_path / "state")
    path = tmp_path / "hub.toml"
    path.write_text(f'[raspy]\nhostname = "hub"\ncurve = {str(curve).lower()}\nstate_dir = "state"\n\n{hosts}')
    return path


@pytest.mark.parametrize("hosts, where, reason", [
    ('[hosts.shed.executives.fake]\nkind = "nope"\n', "line 7: hosts.shed.executives.fake.kind",
     "unknown executive kind 'nope'"),
    ('[hosts.shed.executives.echo]\ndelay = "soon"\n', "line 7: hosts.shed.executives.echo.delay",
     "'soon' is not a number >= 0"),
    ('[hosts.shed.executives.fake]\ndevices = [{name = "t", kind = "cyclic", cycle = -1}]\n',
     "line 7: hosts.shed.executives.fake.devices[0].cycle", ""),
    ('[hosts.shed.executives.echo]\ncolour = "red"\n', "line 7: hosts.shed.executives.echo.colour", "unknown key"),
    ('[hosts.shed.executives.config]\n', "line 6: hosts.shed.executives.config", "the host's own"),
    ('[hosts.hub.executives.echo]\n', "line 6: hosts.hub", "the hub's own executives go in [executives.*]"),
    (f'[hosts.{"x" * 65}.executives.echo]\n', f'line 6: hosts.{"x" * 65}', "a host name is 1-64 letters"),
    ('[hosts.shed]\nrole = "barn"\n', "line 6: hosts.shed", "holds only [hosts.HOST.executives.NAME] tables"),
    ('[hosts.shed.executives.echo]\nwhen = 07:30:00\n', "line 7: hosts.shed.executives.echo.when",
     "a date or time is not sent to a host"),
])
def test_a_bad_hosts_table_stops_the_hub_naming_file_line_and_reason(tmp_path, hosts, where, reason):
    path = hub_file(tmp_path, hosts)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert f"{path}, {where}: " in str(refused.value) and reason in str(refused.value)


def test_hosts_need_curve_and_the_hub_refuses_to_start_without(tmp_path):
    path = hub_file(tmp_path, "[hosts.shed.executives.echo]\n", curve=False)
    started = raspy("start", "--config", str(path))
    assert started.returncode == 2
    assert f"error: {path}, line 6: hosts: needs curve = true" in started.stderr
