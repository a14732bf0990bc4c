"""The default house on a slow core: a cgroup gives it 10% of one CPU, as a busy Raspberry Pi might.

It must start, answer ``raspy call <host>.fake.devices list_keys`` within 2 s, publish
readings, and run two minutes with no executive killed as hung and no restart.
``RASPY_SLOW_PI_SECONDS`` sets how long it runs (120 by default). Needs root and a cgroup
CPU controller (v1 ``cpu.cfs_quota_us`` or v2 ``cpu.max``); skipped elsewhere.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import ROOT, free_endpoint, free_port, wait_for, write_config

from raspy.house.board import State, house_states
from raspy.house.config import default_document
from raspy.state.kv.client import fetch_snapshot

SECONDS = float(os.environ.get("RASPY_SLOW_PI_SECONDS", "120"))
SHARE = 0.10  # of one core
HOST = "slow"


def cpu_cgroup(name: str) -> tuple[Path, str] | None:
    """A new cgroup limited to SHARE of one core and how to add a process to it, or None."""
    v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
    try:
        if (v1 / "cpu.cfs_quota_us").exists():
            group = v1 / name
            group.mkdir()
            period = int((group / "cpu.cfs_period_us").read_text())
            (group / "cpu.cfs_quota_us").write_text(str(int(period * SHARE)))
            return group, "cgroup.procs"
        if "cpu" in (v2 / "cgroup.controllers").read_text().split():
            group = v2 / name
            group.mkdir()
            (group / "cpu.max").write_text(f"{int(100000 * SHARE)} 100000")
            return group, "cgroup.procs"
    except OSError:
        return None
    return None


@pytest.fixture
def slow_group():
    if os.geteuid() != 0:
        pytest.skip("needs root to make a cgroup with a CPU limit")
    made = cpu_cgroup(f"raspy-slow-{os.getpid()}")
    if made is None:
        pytest.skip("no writable cgroup CPU controller (v1 cpu.cfs_quota_us or v2 cpu.max)")
    group, procs = made
    yield group / procs
    for _ in range(50):  # the house is gone once its processes left the group
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 120)
def test_the_default_house_runs_on_a_tenth_of_a_core(children, tmp_path, slow_group):
    endpoint, kv = free_endpoint(), {f"kv_{n}": free_endpoint() for n in ("snapshot", "publisher", "collector")}
    executives = default_document()["executives"]
    executives["web"] = {"port": free_port()}
    state_dir = tmp_path / "state"
    config = write_config(tmp_path / "raspy.toml", {"hostname": HOST, "state_dir": str(state_dir),
                                                    "broker": endpoint, **kv}, executives)
    with open(tmp_path / "supervisor.out", "ab") as out:
        house = children.raspy("start", "--config", str(config), stdout=out, stderr=out,
                               preexec_fn=lambda: slow_group.write_text(str(os.getpid())))
    running = lambda: (len(s := house_states(state_dir)) == len(executives)  # noqa: E731
                       and all(x.state == State.RUNNING for x in s.values()))
    wait_for(running, 60, interval=0.2, what="every executive running (see supervisor.out)")

    def list_keys() -> list[str]:
        """``raspy call HOST.fake.devices list_keys``, answered within 2 s (the command runs outside the cgroup)."""
        asked = time.monotonic()
        call = subprocess.run([sys.executable, "-m", "raspy", "call", f"{HOST}.fake.devices", "list_keys",
                               "--config", str(config), "--timeout", "2", "--retries", "1"],
                              capture_output=True, text=True, timeout=30, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert call.returncode == 0, call.stdout + call.stderr
        assert time.monotonic() - asked < 2.0
        status, _, keys = call.stdout.partition(" ")  # "200 [...]"
        assert status == "200", call.stdout
        return json.loads(keys)

    names = sorted(d["name"] for d in executives["fake"]["devices"])
    assert list_keys() == names
    readings = lambda: fetch_snapshot("/device/", kv["kv_snapshot"], timeout=2.0)[1]  # noqa: E731
    first = wait_for(readings, 30, interval=0.5, what="readings published")

    time.sleep(SECONDS)  # the point of the test: time passing on a slow core
    states = house_states(state_dir)
    assert house.poll() is None
    assert {name: (s.state, s.restarts, s.last_exit.reason if s.last_exit else "") for name, s in states.items()
            if s.state != State.RUNNING or s.restarts} == {}
    assert list_keys() == names
    published = {key for key, msg in readings().items() if key in first and msg.sequence > first[key].sequence}
    assert published, "no reading published during the run"
