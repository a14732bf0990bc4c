"""Durable Titanic requests per second against the raw fsync rate of the same disk.

Starts a broker and Titanic (``raspy run titanic --config FILE``) in their own
processes, with Titanic's SQLite file in a fresh directory, and measures in the
same run:

- raw append + fsync of a small record to a file in that directory (the
  reference: what one durable write per request costs on this disk);
- Titanic's storage alone, in-process (one durable insert at a time);
- an MDP echo round trip (what the broker hop alone costs, no disk);
- acknowledged ``titanic.request`` calls (each one committed and fsynced
  before its ``200``) from 1 client one at a time, from 1 client keeping
  ``--window`` requests in flight (``MajorDomoClient.send_many``), then from
  N concurrent clients, each client in its own process.

The disk and the CPU are shared with other work, so the measurements run in
several rounds, each ratio against the reference taken in the same round,
and the table shows medians.

``--contend N`` starts N background writers (1 MiB write + fsync, in a loop,
in the same directory) for the whole run: the raw fsync rate then drops to a
few hundred a second, as on a Raspberry Pi's SD card, so both regimes (fsync
dominates / messaging dominates) can be measured on one machine.

Run: ``PYTHONPATH=. python bench/titanic.py [--seconds 1.5] [--rounds 3] [--clients 8] [--window 16] [--contend N] [--dir DIR]``
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import write_config  # noqa: E402

from raspy.errors import RequestTimeout  # noqa: E402
from raspy.mdp.client import MajorDomoClient  # noqa: E402
from raspy.state.titanic.journal import Journal  # noqa: E402

PAYLOAD = b"x" * 100


def free_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def raw_fsync_rate(directory: Path, seconds: float) -> float:
    """Appends of one small record, each followed by os.fsync, per second."""
    path = directory / "fsync.reference"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            os.write(fd, PAYLOAD)
            os.fsync(fd)
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()


def contend(path: str) -> None:
    """Write 1 MiB and fsync, in a loop, until killed (a slow-disk neighbour)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = bytes(1 << 20)
    while True:
        for _ in range(64):
            os.write(fd, block)
            os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)


def journal_rate(directory: Path, seconds: float) -> float:
    """Durable inserts per second of Titanic's storage alone, in this process (no MDP)."""
    journal = Journal(directory / "journal-only.sqlite")
    try:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            journal.add_request(b"bench.absent", [PAYLOAD])
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        journal.close()


def loop(endpoint: str, service: bytes, body: list[bytes], seconds: float, ok: bytes | None, window: int = 1) -> int:
    """Requests answered in ``seconds`` by one client keeping ``window`` in flight (each reply checked)."""
    with MajorDomoClient(endpoint, timeout=5, retries=1) as client:
        count, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            if window == 1:
                replies = [client.send(service, body)]
            else:
                replies = client.send_many(service, [body] * (4 * window), window=window)
            if ok is not None and any(reply[:1] != [ok] for reply in replies):
                raise RuntimeError(f"unexpected reply {next(r for r in replies if r[:1] != [ok])[:2]!r}")
            count += len(replies)
        return count


def _titanic_client(args: tuple[str, float, multiprocessing.Barrier]) -> int:
    endpoint, seconds, barrier = args
    barrier.wait()
    return loop(endpoint, b"titanic.request", [b"bench.absent", PAYLOAD], seconds, b"200")


def titanic_rate(endpoint: str, clients: int, seconds: float) -> float:
    """Acknowledged durable requests per second from ``clients`` processes."""
    if clients == 1:
        return loop(endpoint, b"titanic.request", [b"bench.absent", PAYLOAD], seconds, b"200") / seconds
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(clients)
        with ctx.Pool(clients) as pool:
            counts = pool.map(_titanic_client, [(endpoint, seconds, barrier)] * clients)
    return sum(counts) / seconds


def wait_live(endpoint: str, service: bytes, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with MajorDomoClient(endpoint, timeout=0.5, retries=1) as client:
            try:
                if client.send(b"mmi.service", [service]) == [b"200"]:
                    return
            except RequestTimeout:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"{service!r} did not come up")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of measurements (medians are shown)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the last run")
    parser.add_argument("--window", type=int, default=16, help="requests in flight of the pipelined client")
    parser.add_argument("--contend", type=int, default=0, help="background fsync writers slowing the disk")
    parser.add_argument("--dir", type=Path, default=ROOT, help="where the database and the reference file go")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="titanic-bench-", dir=args.dir))
    endpoint = free_endpoint()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([sys.executable, "-m", "raspy", "run", "broker", "--bind", endpoint], **quiet)]
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "raspy", "run", "echo", "--broker", endpoint,
                                       "--service", "bench.echo"], **quiet))
        config = write_config(directory / "raspy.toml",
                              {"hostname": "bench", "state_dir": str(directory), "broker": endpoint},
                              {"titanic": {"db": str(directory / "titanic.sqlite"),
                                           "request_workers": max(8, args.clients, args.window),
                                           # every request waits for an absent service: bounds above them all
                                           "max_pending": 1 << 30, "max_service_pending": 1 << 30}})
        procs.append(subprocess.Popen([sys.executable, "-m", "raspy", "run", "titanic", "--config", str(config)],
                                      **quiet))
        for i in range(args.contend):
            procs.append(subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); "
                                           f"import titanic; titanic.contend({str(directory / f'contend{i}')!r})"], **quiet))
        wait_live(endpoint, b"bench.echo")
        wait_live(endpoint, b"titanic.request")

        load = os.getloadavg()
        rounds = []
        for _ in range(args.rounds):
            fsync = raw_fsync_rate(directory, args.seconds)
            storage = journal_rate(directory, args.seconds)
            echo = loop(endpoint, b"bench.echo", [PAYLOAD], args.seconds, None) / args.seconds
            one = titanic_rate(endpoint, 1, args.seconds)
            window = loop(endpoint, b"titanic.request", [b"bench.absent", PAYLOAD], args.seconds, b"200",
                          args.window) / args.seconds
            many = titanic_rate(endpoint, args.clients, args.seconds)
            fsync = (fsync + raw_fsync_rate(directory, args.seconds)) / 2
            rounds.append((fsync, storage, echo, one, window, many))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)

    names = ["raw append+fsync, same directory (reference)", "Titanic's journal alone, 1 thread (no MDP)",
             "MDP echo round trip, 1 client (no disk)",
             "titanic.request, 1 client (target >= 0.70x)",
             f"titanic.request, 1 client, {args.window} in flight",
             f"titanic.request, {args.clients} clients (target >= 2.00x)"]
    print(f"load average before/after: {load[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"{args.contend} background fsync writers")
    print(f"{'measurement':<48} {'per second':>10} {'x fsync':>8}  rounds (x fsync)")
    for column, name in enumerate(names):
        rates = [r[column] for r in rounds]
        ratios = [r[column] / r[0] for r in rounds]
        each = ", ".join(f"{x:.2f}" for x in ratios)
        print(f"{name:<48} {statistics.median(rates):>10.0f} {statistics.median(ratios):>7.2f}x  {each}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
