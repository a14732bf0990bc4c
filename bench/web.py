"""The status page under a crowd and a slow-loris, against a bare "hello" app on waitress.

    python bench/web.py [--clients 200] [--duration 5] [--rounds 3] [--half-open 1000]

Two server processes in one run: the reference, a bare WSGI "hello" on waitress with the web
executive's default worker threads and connection limit (``--threads``, ``--connections``;
waitress's own default of 100 connections would keep half of 200 keep-alive clients in the
listen backlog for the whole run), and the ``web`` executive itself, started alone over a board
of eight running executives and three devices with a minute of history, as the page shows them.
Clients are asyncio coroutines in this process.

1. The crowd: ``--clients`` clients ask ``/api/status`` and ``/`` for ``--duration`` seconds,
   with a new connection per request (``Connection: close``) and with keep-alive; the reference
   answers the same requests with "hello". Every answer must be a 200. The scenarios run
   ``--rounds`` times, interleaved, and the table holds the medians (the machine is shared);
   the server's CPU time per request comes from /proc.
2. The slow-loris: ``--half-open`` connections each send ``GET / HTTP/1.1\\r\\n`` and nothing
   more; once the web process holds them all: its threads, RSS, and how long a fresh
   ``GET /healthz`` and ``GET /`` take. Then they close, and the bench waits (at most the idle
   timeout) for the web process's threads and RSS to come back. A second wave shows whether
   what the first left in the allocator is used again.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import ProcessProbe, free_port  # noqa: E402

from raspy.web.server import Limits  # noqa: E402

#: the bench's reading of "back to where they were": RSS within this of the figure before
#: (Python's object allocator keeps what it grew to in arenas of 1 MiB; without giving memory
#: back, 1,000 half-open connections kept 2-3 MB)
RSS_SLACK_KB = 1024


# -- the two servers (each in a process of its own) -----------------------------------------

def hello(environ: dict, start_response) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return [b"hello\n"]


def serve_hello(port: int, threads: int, connections: int) -> None:
    """The reference: waitress as it comes, with the web executive's threads and connections."""
    import logging

    import waitress
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # a warning per queued request otherwise
    waitress.serve(hello, host="127.0.0.1", port=port, threads=threads, connection_limit=connections, _quiet=True)


def serve_raspy(port: int) -> None:
    """The web executive alone, over a board and readings as a small house has them."""
    from raspy.executives.web import Web
    from raspy.house.board import Board, State
    from raspy.house.executive import Settings
    from raspy.mdp import protocol as p

    names = ["broker", "kv", "titanic", "core", "fake", "onewire", "echo", "web"]
    board = Board.create(f"raspy-bench-web-{os.getpid()}", len(names), names)
    now = time.time()
    for i, name in enumerate(names):
        board.slot(name).set_supervised(pid=os.getpid(), state=State.RUNNING, started=now - 3600, restarts=i % 3)
        board.slot(name).count(requests=1000 * i, replies=1000 * i, errors=i)
        board.slot(name).beat()
    with tempfile.TemporaryDirectory() as state_dir:
        web = Web(Settings("web", "pi", broker=f"ipc://{state_dir}/no-broker", state_dir=Path(state_dir),
                           kv_snapshot=f"ipc://{state_dir}/no-kv", kv_publisher=f"ipc://{state_dir}/no-kv-pub",
                           options={"port": port, "board": board.name}))
        for device, base in (("aquarium", 25.0), ("outside", 8.0), ("terrarium", 30.0)):
            for i in range(60):
                web.house.readings.update(f"/device/pi.fake.{device}", p.pack(
                    {"value": base + (i % 7) / 10, "unit": "°C", "timestamp": time.time(), "poll": 10}))
        for i in range(20):
            web.house.event_log.update(f"/event/pi.core.lights{i}", p.pack("on"))
        signal.signal(signal.SIGTERM, lambda *_: web.shutdown())
        try:
            web.run()
        finally:
            board.unlink()
            board.close()


@dataclass
class Process(ProcessProbe):
    """A server process of this bench and what /proc says about it."""

    port: int
    popen: subprocess.Popen

    @property
    def cpu(self) -> float:
        """Seconds of CPU used so far, user and system, all threads."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def start(kind: str, *options: str) -> Process:
    port = free_port()
    popen = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port), *options],
                             stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                r.read()
            return Process(popen.pid, port, popen)
        except OSError:
            if popen.poll() is not None or time.monotonic() > deadline:
                popen.kill()
                raise SystemExit(f"the {kind} server did not start")
            time.sleep(0.1)


# -- the crowd -----------------------------------------------------------------------------

@dataclass
class Run:
    """What the clients saw in one scenario, and the server's CPU time meanwhile."""

    times: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.times) / self.elapsed

    @property
    def p50(self) -> float:
        return statistics.median(self.times)

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.times, n=100, method="inclusive")[98]

    @property
    def max(self) -> float:
        return max(self.times)

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / len(self.times)


async def answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP response: its status, and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), None)
    if length is None:
        raise ValueError("an answer without Content-Length")
    await reader.readexactly(length)
    version, status = lines[0].split()[:2]
    closes = version == "HTTP/1.0" or any(line.lower() == "connection: close" for line in lines)
    return int(status), not closes


async def client(port: int, path: str, keep_alive: bool, deadline: float, run: Run) -> None:
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               + ("" if keep_alive else "Connection: close\r\n") + "\r\n").encode()
    connection = None
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            if connection is None:
                connection = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
            reader, writer = connection
            writer.write(request)
            status, kept = await asyncio.wait_for(answer(reader), 30)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            run.errors += 1
            status, kept = 0, False
        else:
            run.times.append(time.perf_counter() - started)
            run.errors += status != 200
        if connection is not None and not (keep_alive and kept and status == 200):
            connection[1].close()
            connection = None
    if connection is not None:
        connection[1].close()


def crowd(server: Process, path: str, clients: int, duration: float, keep_alive: bool) -> Run:
    """``clients`` clients asking ``path`` of ``server`` for ``duration`` seconds."""
    async def all_clients() -> None:
        await asyncio.gather(*(client(server.port, path, keep_alive, started + duration, run)
                               for _ in range(clients)))
    run, cpu = Run(), server.cpu
    started = time.perf_counter()
    asyncio.run(all_clients())
    run.elapsed, run.cpu = time.perf_counter() - started, server.cpu - cpu
    return run


@dataclass
class Rounds:
    """A scenario's runs, one per round: medians, and the sum of the errors."""

    runs: list[Run] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(run, name) for run in self.runs)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)


# -- the slow-loris ------------------------------------------------------------------------

def timed_get(port: int, path: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        r.read()
        assert r.status == 200
    return time.perf_counter() - started


def usage(web: Process) -> dict[str, int]:
    return {"threads": web.threads, "rss": web.rss_kb, "fds": web.fds}


def wave(web: Process, connections: int, idle_timeout: float) -> dict:
    """Hold ``connections`` half-open requests on ``web``; what it costs, and how it comes back after they close."""
    before = usage(web)
    sockets = []
    started = time.perf_counter()
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", web.port), timeout=30)
        sock.sendall(b"GET / HTTP/1.1\r\n")
        sockets.append(sock)
    peak = dict(before)

    def sample() -> None:
        now = usage(web)
        peak.update({key: max(peak[key], now[key]) for key in now})
    deadline = time.monotonic() + 60
    while web.fds < before["fds"] + connections and time.monotonic() < deadline:
        sample()
        time.sleep(0.05)
    held_after = time.perf_counter() - started
    healthz, page = timed_get(web.port, "/healthz"), timed_get(web.port, "/")
    for _ in range(10):  # a second of samples while they are held
        sample()
        time.sleep(0.1)
    for sock in sockets:
        sock.close()
    closed = time.perf_counter()
    threads_back = rss_back = None
    while time.perf_counter() - closed < idle_timeout and (threads_back is None or rss_back is None):
        now = usage(web)
        if threads_back is None and now["threads"] <= before["threads"]:
            threads_back = time.perf_counter() - closed
        if rss_back is None and now["rss"] <= before["rss"] + RSS_SLACK_KB:
            rss_back = time.perf_counter() - closed
        time.sleep(0.05)
    return {"before": before, "peak": peak, "held_after": held_after, "healthz": healthz, "page": page,
            "threads_back": threads_back, "rss_back": rss_back, "after": usage(web)}


def back(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.2f} s"


def slow_loris(web: Process, connections: int, idle_timeout: float) -> list[tuple[str, bool]]:
    """Two waves of half-open connections (the second shows whether memory kept after the first is reused)."""
    checks = []
    for n in (1, 2):
        w = wave(web, connections, idle_timeout)
        before, peak, after = w["before"], w["peak"], w["after"]
        grew = (peak["rss"] - before["rss"]) / 1024
        print(f"wave {n}: {connections} half-open connections held after {w['held_after']:.2f} s; "
              f"threads {before['threads']} -> {peak['threads']}, RSS {before['rss'] / 1024:.1f} -> "
              f"{peak['rss'] / 1024:.1f} MB (+{grew:.1f}); fresh GET /healthz {w['healthz'] * 1000:.0f} ms, "
              f"GET / {w['page'] * 1000:.0f} ms; closed: threads back after {back(w['threads_back'])}, "
              f"RSS back (within {RSS_SLACK_KB} kB) after {back(w['rss_back'])} "
              f"({after['threads']} threads, {after['rss'] / 1024:.1f} MB)", flush=True)
        if n == 1:
            checks += [
                (f"half-open: <= 32 threads in the web process ({peak['threads']})", peak["threads"] <= 32),
                (f"half-open: <= +20 MB RSS (+{grew:.1f})", grew <= 20),
                (f"half-open: fresh GET /healthz within 1 s ({w['healthz'] * 1000:.0f} ms)", w["healthz"] <= 1.0),
                (f"half-open, after they close: threads back within the idle timeout ({before['threads']} -> "
                 f"{after['threads']}, back after {back(w['threads_back'])})", w["threads_back"] is not None),
                (f"half-open, after they close: RSS back within {RSS_SLACK_KB} kB within the idle timeout "
                 f"({before['rss'] / 1024:.1f} -> {after['rss'] / 1024:.1f} MB, "
                 f"{(after['rss'] - before['rss']) / 1024:+.1f}; back after {back(w['rss_back'])})",
                 w["rss_back"] is not None),
            ]
    return checks


# -- the report ----------------------------------------------------------------------------

def row(mode: str, server: str, rounds: Rounds, ref: Rounds) -> str:
    def ratio(name: str) -> float:
        return rounds.median(name) / ref.median(name)
    return (f"| {mode} | {server} | {rounds.median('rate'):.0f} | {rounds.median('p50') * 1000:.1f} | "
            f"{rounds.median('p99') * 1000:.1f} | {rounds.median('max') * 1000:.0f} | {rounds.errors} | "
            f"{rounds.median('cpu_per_request') * 1e6:.0f} | {ratio('rate'):.2f} | {ratio('p99'):.2f} | "
            f"{ratio('max'):.2f} | {ratio('cpu_per_request'):.2f} |")


def raise_file_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(need, hard), hard))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per scenario and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every scenario; the table holds medians")
    parser.add_argument("--half-open", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=Limits.threads,
                        help="the reference's worker threads (default: the web executive's)")
    parser.add_argument("--connections", type=int, default=Limits.connections,
                        help="the reference's connection limit (default: the web executive's)")
    parser.add_argument("--idle-timeout", type=float, default=Limits.idle_timeout,
                        help="the web executive's idle timeout: how long the bench waits for it to come back")
    parser.add_argument("--serve", choices=("hello", "raspy"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_file_limit(args.half_open + 2 * args.clients + 256)
    if args.serve == "hello":
        serve_hello(args.port, args.threads, args.connections)
        return 0
    if args.serve == "raspy":
        serve_raspy(args.port)
        return 0

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
    reference = start("hello", "--threads", str(args.threads), "--connections", str(args.connections))
    web = start("raspy")
    modes = {"new connection": False, "keep-alive": True}
    scenarios = [("hello (reference)", reference, "/api/status"), ("raspy /api/status", web, "/api/status"),
                 ("raspy /", web, "/")]
    try:
        results = {(mode, name): Rounds() for mode in modes for name, _, _ in scenarios}
        for _ in range(args.rounds):  # rounds interleave the servers, so a busy moment of the machine hits both
            for mode, keep_alive in modes.items():
                for name, server, path in scenarios:
                    results[mode, name].runs.append(crowd(server, path, args.clients, args.duration, keep_alive))
        print(f"\n{args.clients} clients, {args.rounds} rounds of {args.duration:g} s, medians; reference: hello on "
              f"waitress, {args.threads} threads, {args.connections} connections\n")
        print("| mode | server | req/s | p50 ms | p99 ms | max ms | errors | server CPU us/req "
              "| req/s vs ref | p99 vs ref | max vs ref | CPU vs ref |")
        print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        checks = []
        for mode in modes:
            ref = results[mode, "hello (reference)"]
            for name, server, path in scenarios:
                rounds = results[mode, name]
                print(row(mode, name, rounds, ref))
                if server is not reference:
                    checks += [
                        (f"{mode} {path}: req/s >= 0.5x the reference", rounds.median("rate") >= 0.5 * ref.median("rate")),
                        (f"{mode} {path}: p99 <= 3x the reference's", rounds.median("p99") <= 3 * ref.median("p99")),
                        (f"{mode} {path}: no errors", rounds.errors == 0 and ref.errors == 0),
                        (f"{mode} {path}: max <= 10x the reference's", rounds.median("max") <= 10 * ref.median("max")),
                    ]
        print()
        checks += slow_loris(web, args.half_open, args.idle_timeout)
        print("\n| target | reached |\n|---|---|")
        for name, ok in checks:
            print(f"| {name} | {'yes' if ok else 'NO'} |")
        print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        web.stop()
        reference.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
