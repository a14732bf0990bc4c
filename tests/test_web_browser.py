"""The status page in a real browser: headless Chromium opens the page of a running house."""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from support import wait_for
from web_house import running_house  # noqa: F401 (fixture)

from raspy.mdp import protocol as p

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


@pytest.mark.slow  # two Chromium starts: a few seconds each on a small machine
def test_a_person_sees_executives_a_device_value_and_a_sparkline(running_house, tmp_path):
    house = running_house
    url = house.url

    def send(device: str, value: float, age: float = 0.0) -> None:
        reading = {"value": value, "unit": "°C", "timestamp": time.time() - age, "poll": 10}
        house.publisher.send("/device/", device, p.pack(reading))

    def histories() -> list[int]:
        return [len(d["history"]) for d in house.api("api/devices")["devices"]]

    send("pi.fake.terrarium", 31.2, age=600)
    wait_for(lambda: histories() == [1], what="the page's kv subscriber to be in sync")
    for value in [24.8, 25.1, 25.0, 25.4, 25.3, 25.9]:
        send("pi.fake.aquarium", value)
    house.publisher.send("/event/", "pi.core.lights", p.pack("on"))
    wait_for(lambda: histories() == [6, 1], what="the aquarium's history on the page")
    wait_for(lambda: "pi.one.echo" in [s["name"] for s in house.api("api/services")["services"]],
             what="the echo executive's service in MMI")

    dom = chromium(tmp_path / "profile-dom", "--virtual-time-budget=3000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for name in ("broker", "one", "web"):
        assert f'data-name="{name}"' in html                         # the executives table
    assert 'class="state running">running' in html
    assert "25.9&nbsp;°C" in html                                   # the latest device value
    assert '<svg class="spark"' in html and "<polyline" in html     # its sparkline
    assert 'class="device stale"' in html                           # the old terrarium value
    assert "All 3 executives run." in html and "pi.core.lights: on" in html
    assert "<td>pi.one.echo</td><td>1</td>" in html
    assert 'class="muted live"' in html                              # the refresh script ran and updated the page

    shot = tmp_path / "page.png"
    result = chromium(tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=412,915",
                      "--hide-scrollbars", url)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 5000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
