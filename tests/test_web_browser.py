"""The status page in a real browser: headless Chromium opens the page of a running house."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest

from raspy import protocol as p
from raspy.board import Board, State
from raspy.executive import Settings
from raspy.kv import KvPublisherClient
from raspy.web.server import Web
from support import free_endpoint, free_port, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is missing: install it with `apt-get install chromium` (Debian) "
           "or run `make tests` as root, which installs it",
)


def chromium(profile, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium with no network of its own beyond the page."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def api(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


@pytest.fixture
def house(children, tmp_path):
    """A broker and a kv process, a board with their slots, and the web executive serving them."""
    broker = free_endpoint()
    kv = {"snapshot": free_endpoint(), "publisher": free_endpoint(), "collector": free_endpoint()}
    procs = {
        "broker": children.raspy("run", "broker", "--bind", broker),
        "kv": children.python("-m", "raspy.kv", "--snapshot", kv["snapshot"], "--publisher", kv["publisher"],
                              "--collector", kv["collector"]),
    }
    children.raspy("run", "echo", "--broker", broker, "--service", "pi.echo.devices")
    board = Board.create(f"raspy-test-webui-{os.getpid()}-{free_port()}", 4, ["broker", "kv", "web"])
    for name, proc in procs.items():
        board.slot(name).set_supervised(pid=proc.pid, state=State.RUNNING, started=time.time())
    board.slot("web").set_supervised(pid=os.getpid(), state=State.RUNNING, started=time.time())
    board.slot("broker").count(requests=42, replies=42)
    port = free_port()
    web = Web(Settings("web", "pi", broker=broker, state_dir=tmp_path, options={
        "port": port, "board": board.name, "kv_snapshot": kv["snapshot"], "kv_publisher": kv["publisher"],
        "refresh": 1, "mmi_interval": 0.2}))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    stop_beating = threading.Event()

    def beat() -> None:  # what the executives do themselves under the supervisor
        while not stop_beating.wait(0.2):
            for name in ("broker", "kv", "web"):
                board.slot(name).beat()

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    publisher = KvPublisherClient(kv["collector"])
    try:
        yield f"http://127.0.0.1:{port}/", publisher
    finally:
        publisher.close()
        stop_beating.set()
        web.shutdown()
        thread.join(5)
        beater.join(2)
        board.unlink()
        board.close()


@pytest.mark.slow  # two Chromium starts: a few seconds each on a small machine
def test_a_person_sees_executives_a_device_value_and_a_sparkline(house, tmp_path):
    url, publisher = house

    def send(device: str, value: float, age: float = 0.0) -> None:
        publisher.send("/device/", device, p.pack({"value": value, "unit": "°C", "timestamp": time.time() - age,
                                                  "interval": 10}))

    def histories() -> list[int]:
        return [len(d["history"]) for d in api(url + "api/devices")["devices"]]

    send("pi.fake.terrarium", 31.2, age=600)
    wait_for(lambda: histories() == [1], what="the page's kv subscriber to be in sync")
    for value in [24.8, 25.1, 25.0, 25.4, 25.3, 25.9]:
        send("pi.fake.aquarium", value)
    publisher.send("/event/", "pi.core.lights", p.pack("on"))
    wait_for(lambda: histories() == [6, 1], what="the aquarium's history on the page")
    wait_for(lambda: api(url + "api/services")["services"], what="the echo worker in the broker's MMI answer")

    dom = chromium(tmp_path / "profile-dom", "--virtual-time-budget=3000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for name in ("broker", "kv", "web"):
        assert f'data-name="{name}"' in html                         # the executives table
    assert 'class="state running">running' in html and "42/<span" in html
    assert "25.9&nbsp;°C" in html                                   # the latest device value
    assert '<svg class="spark"' in html and "<polyline" in html     # its sparkline
    assert 'class="device stale"' in html                           # the old terrarium value
    assert "All 3 executives run." in html and "pi.core.lights: on" in html
    assert "<td>pi.echo.devices</td><td>1</td>" in html
    assert 'class="muted live"' in html                              # the refresh script ran and updated the page

    shot = tmp_path / "page.png"
    result = chromium(tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=412,915",
                      "--hide-scrollbars", url)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 5000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
