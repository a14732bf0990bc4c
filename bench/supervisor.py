"""Supervisor figures: kill -9 to answering again, start-up of the default house, memory (PSS).

    PYTHONPATH=. python bench/supervisor.py [--kills 20]

Each figure comes with a reference measured in the same run: the same
executive started as a fresh interpreter (``raspy run NAME``), which is what a
supervisor that execs instead of forking from a warm parent would pay.
Prints a Markdown table (bench/README.md holds a copy).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import free_endpoint, free_port  # noqa: E402
from support import write_config as write_toml  # noqa: E402

from raspy.house.board import State, house_states  # noqa: E402
from raspy.house.config import default_document  # noqa: E402
from raspy.mdp.client import MajorDomoClient  # noqa: E402

HOST = "bench"
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def wait(predicate, timeout: float = 20.0, interval: float = 0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise TimeoutError("benchmark condition not reached")


def write_config(path: Path, state_dir: Path, endpoint: str, executives: dict[str, dict], **raspy) -> None:
    write_toml(path, {"hostname": HOST, "state_dir": str(state_dir), "broker": endpoint, **raspy}, executives)


class Supervised:
    def __init__(self, config: Path, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.proc = subprocess.Popen([sys.executable, "-m", "raspy", "start", "--config", str(config)],
                                     env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def states(self) -> dict:
        return house_states(self.state_dir)

    def all_running(self) -> bool:
        states = self.states()
        return bool(states) and all(s.state == State.RUNNING for s in states.values())

    def pids(self) -> list[int]:
        return [self.proc.pid] + [s.pid for s in self.states().values() if s.pid]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)


def answers(endpoint: str, service: str, timeout: float = 0.05, retries: int = 400) -> None:
    """Return once ``service`` answers; a request sent to a dead worker is retried after ``timeout``."""
    with MajorDomoClient(endpoint, timeout=timeout, retries=retries) as client:
        client.call(service, "status")


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def bench_kills(tmp: Path, kills: int) -> dict:
    endpoint = free_endpoint()
    config, state_dir = tmp / "kills.toml", tmp / "kills"
    write_config(config, state_dir, endpoint, {"broker": {}, "one": {"kind": "echo"}}, backoff_reset=0.2)
    house = Supervised(config, state_dir)
    try:
        wait(house.all_running)
        answers(endpoint, f"{HOST}.one.mmi")
        forked, answered = [], []
        for _ in range(kills):
            old = house.states()["one"].pid
            killed = time.monotonic()
            os.kill(old, signal.SIGKILL)
            wait(lambda: house.states()["one"].pid not in (0, old))
            forked.append(time.monotonic() - killed)
            answers(endpoint, f"{HOST}.one.mmi")
            answered.append(time.monotonic() - killed)
            wait(house.all_running)
            time.sleep(0.3)  # past backoff_reset: each kill is a first failure, restarted at once
    finally:
        house.stop()
    return {"forked": forked, "answered": answered}


def bench_fresh_start(tmp: Path, runs: int) -> list[float]:
    """Reference: the same executive started as a new interpreter, until it answers."""
    endpoint = free_endpoint()
    config = tmp / "fresh.toml"
    write_config(config, tmp / "fresh", endpoint, {"broker": {}, "one": {"kind": "echo"}})
    broker = subprocess.Popen([sys.executable, "-m", "raspy", "run", "broker", "--config", str(config)],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = []
    try:
        for _ in range(runs):
            started = time.monotonic()
            one = subprocess.Popen([sys.executable, "-m", "raspy", "run", "one", "--config", str(config)],
                                   env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            answers(endpoint, f"{HOST}.one.mmi")
            times.append(time.monotonic() - started)
            one.terminate()
            one.wait(timeout=10)
    finally:
        broker.terminate()
        broker.wait(timeout=10)
    return times


def bench_house(tmp: Path, executives: dict[str, dict], label: str) -> dict:
    """Start-up time and memory of a house (on a free port)."""
    endpoint = free_endpoint()
    config, state_dir = tmp / f"{label}.toml", tmp / label
    kv = {f"kv_{name}": free_endpoint() for name in ("snapshot", "publisher", "collector")}  # not port + 1..3
    if "web" in executives and executives["web"].get("kind", "web") == "web":  # not the echo stand-in
        executives = {**executives, "web": {**executives["web"], "port": free_port()}}
    write_config(config, state_dir, endpoint, executives, **kv)
    started = time.monotonic()
    house = Supervised(config, state_dir)
    try:
        wait(lambda: len(house.states()) == len(executives) and house.all_running())
        running = time.monotonic() - started
        answers(endpoint, "mmi.services")  # the broker's own MMI: the house answers
        answering = time.monotonic() - started
        pss = {pid: pss_kib(pid) for pid in house.pids()}
    finally:
        house.stop()
    fresh = subprocess.Popen([sys.executable, "-m", "raspy", "run", "broker", "--config", str(config)],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        answers(endpoint, "mmi.services")
        fresh_pss = pss_kib(fresh.pid)
    finally:
        fresh.terminate()
        fresh.wait(timeout=10)
    return {"executives": list(executives), "running": running, "answering": answering, "pss": pss,
            "fresh_pss": fresh_pss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="raspy-bench-") as tmp:
        kills = bench_kills(Path(tmp), args.kills)
        fresh = bench_fresh_start(Path(tmp), max(5, args.kills // 4))
        house = bench_house(Path(tmp), default_document()["executives"], "default")
        stand_ins = {name: {"kind": "echo"} for name in ("kv", "titanic", "core", "fake", "web", "onewire")}
        seven = bench_house(Path(tmp), {"broker": {}, **stand_ins}, "seven")
    ms = lambda seconds: f"{seconds * 1000:.0f} ms"  # noqa: E731
    p50 = statistics.median
    print("| figure | RasPy | reference (same run) | ratio |")
    print("|---|---|---|---|")
    print(f"| kill -9 to new pid on the board, p50 / p90 ({args.kills} kills) | {ms(p50(kills['forked']))} / "
          f"{ms(percentile(kills['forked'], 0.9))} | | |")
    print(f"| kill -9 to answering again, p50 / p90 | {ms(p50(kills['answered']))} / "
          f"{ms(percentile(kills['answered'], 0.9))} | fresh interpreter to answering: {ms(p50(fresh))} | "
          f"{p50(fresh) / p50(kills['answered']):.1f}x faster |")
    print(f"| start-up of the default house ({', '.join(house['executives'])}): all running / answering | "
          f"{ms(house['running'])} / {ms(house['answering'])} | | |")
    for name, figures in (("default house", house), ("broker + 6 echo stand-ins", seven)):
        total = sum(figures["pss"].values())
        per_process = ", ".join(f"{kib / 1024:.1f}" for kib in figures["pss"].values())
        print(f"| PSS of the {name}, supervisor + {len(figures['pss']) - 1} executives | {total / 1024:.1f} MiB "
              f"({per_process}) | broker as a fresh interpreter: {figures['fresh_pss'] / 1024:.1f} MiB | |")
    print(f"| start-up of broker + 6 echo stand-ins: all running / answering | "
          f"{ms(seven['running'])} / {ms(seven['answering'])} | | |")


if __name__ == "__main__":
    main()
