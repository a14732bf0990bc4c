"""Latency of ``/api/status`` under concurrent clients: p50/p99 of the threaded server.

    PYTHONPATH=. python bench/web.py [--clients 50] [--rounds 10]

The app is served with fake sources (the figure is the web layer's, not the
board's or the broker's); ``/healthz`` is measured in the same run as the
reference, so the ratio says what building the status costs over a bare answer.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from web_house import FakeHouse  # noqa: E402

from raspy.web.app import make_app  # noqa: E402
from raspy.web.server import serve  # noqa: E402


def measure(url: str, clients: int, rounds: int) -> list[float]:
    """Seconds per request, ``clients`` at a time, ``rounds`` times; every request must succeed."""
    barrier = threading.Barrier(clients)

    def one(_: int) -> list[float]:
        times = []
        for _ in range(rounds):
            barrier.wait()
            start = time.perf_counter()
            with urllib.request.urlopen(url, timeout=30) as r:
                r.read()
                assert r.status == 200
            times.append(time.perf_counter() - start)
        return times

    with ThreadPoolExecutor(clients) as pool:
        return [t for times in pool.map(one, range(clients)) for t in times]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    server = serve(make_app(FakeHouse()), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        p50s = {}
        for path in ("/healthz", "/api/status"):
            times = measure(base + path, args.clients, args.rounds)
            p50s[path], p99 = percentile(times, 50), percentile(times, 99)
            print(f"{path:<12} {len(times)} requests, {args.clients} concurrent: "
                  f"p50 {p50s[path] * 1000:.1f} ms  p99 {p99 * 1000:.1f} ms  max {max(times) * 1000:.1f} ms")
        print(f"/api/status p50 / /healthz p50: {p50s['/api/status'] / p50s['/healthz']:.2f}")
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
