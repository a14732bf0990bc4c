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


# -- acting from the page: Chromium driven over the DevTools protocol on a pipe ------------

class Browser:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (fds 3 and 4): the standard
    library is enough, and Chromium opens no port of its own."""

    def __init__(self, profile) -> None:
        import json
        import os

        self._json = json
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def fds() -> None:  # in the child: its fds 3 and 4 are the pipe's ends, whatever numbers they had
            reading, writing = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, pass_fds=(3, 4))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._id = 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        import os
        import select

        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, self._json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = self._json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise AssertionError(f"{method}: {reply['error']}")
                    return reply["result"]
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"Chromium did not answer {method}"
            if select.select([self._from_chrome], [], [], remaining)[0]:
                chunk = os.read(self._from_chrome, 1 << 20)
                assert chunk, "Chromium closed its pipe"
                self._buffer += chunk

    def page(self, method: str, params: dict | None = None) -> dict:
        return self.send(method, params, self.session)

    def size(self, width: int, height: int, mobile: bool) -> None:
        self.page("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    def js(self, expression: str):
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def screenshot(self, path) -> None:
        import base64

        data = self.page("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        import os

        self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self._to_chrome)
        os.close(self._from_chrome)


@pytest.fixture
def acting_house(children, tmp_path):
    """``raspy start``: broker, kv, titanic, core with a thermostat, fake sensors, a gpio relay on
    mock pins, history and the page with a token."""
    import json
    import urllib.request

    from gpio_house import MOCK_ENV
    from support import free_endpoint, free_port, write_config

    from raspy.house.board import State, house_states
    from raspy.mdp.client import MajorDomoClient

    state_dir, port, broker = tmp_path / "state", free_port(), free_endpoint()
    thermostat = {"name": "thermostat", "file": "thermostat.py", "startup": True,
                  "params": {"sensor": "/device/pi.fake.aquarium", "service": "pi.fake.devices", "switch": "heater",
                             "low": 24.5, "high": 25.5}}
    kv = {key: free_endpoint() for key in ("kv_snapshot", "kv_publisher", "kv_collector")}  # not the broker's port + 1
    config = write_config(tmp_path / "raspy.toml", {"hostname": "pi", "state_dir": state_dir, "broker": broker,
                                                    "heartbeat": 0.5, **kv}, {
        "broker": {}, "kv": {}, "titanic": {},
        "core": {"scenarios": [thermostat], "store_wait": 2.0},
        "fake": {"devices": [{"name": "aquarium", "kind": "cyclic", "cycle": 600, "min": 24.0, "max": 27.0,
                              "unit": "C", "poll": 1},
                             {"name": "heater", "kind": "switch", "poll": 5}]},
        "gpio": {"devices": [{"name": "pump", "kind": "relay", "pin": 17, "active_high": False},
                             {"name": "lamp", "kind": "dimmer", "pin": 18}]},
        "history": {"flush_interval": 5},
        "web": {"port": port, "token": TOKEN, "refresh": 1, "mmi_interval": 0.5},
    })
    with open(tmp_path / "supervisor.out", "ab") as out:
        supervisor = children.raspy("start", "--config", str(config), stdout=out, stderr=subprocess.STDOUT,
                                    env=MOCK_ENV)
    url = f"http://127.0.0.1:{port}/"

    def api(path: str):
        with urllib.request.urlopen(url + path, timeout=5) as reply:
            return json.load(reply)

    client = MajorDomoClient(broker, timeout=2.0, retries=3)
    try:
        wait_for(lambda: len(house_states(state_dir)) == 8
                 and all(s.state == State.RUNNING for s in house_states(state_dir).values()),
                 timeout=60, what="the eight executives running")
        wait_for(lambda: {d["name"] for d in api("api/devices")["devices"]} >= {"pi.gpio.pump", "pi.fake.aquarium"}
                 and api("api/status")["scenarios"], timeout=30, what="devices and the thermostat on the page")
        yield url, api, client
    finally:
        client.close()
        supervisor.terminate()
        supervisor.wait(timeout=30)


TOKEN = "a long secret for the page"


@pytest.mark.slow
def test_a_person_toggles_a_relay_sets_the_thermostat_and_opens_a_plot(acting_house, tmp_path):
    url, api, client = acting_house
    browser = Browser(tmp_path / "profile-act")
    try:
        browser.size(1280, 900, mobile=False)
        browser.page("Page.navigate", {"url": url})
        pump = 'document.querySelector(\'button.toggle[data-device="pi.gpio.pump"]\')'
        wait_for(lambda: browser.js(f"!!{pump}"), what="the relay's toggle on the page")
        # the toggle is in the HTML before the page's script has bound the forms: a click before would submit natively
        wait_for(lambda: browser.js("document.readyState") == "complete", what="the page's script loaded")
        assert browser.js(f"{pump}.getAttribute('aria-pressed')") == "false"
        browser.js("document.getElementById('token').value = " + repr(TOKEN) + ";"
                   "document.querySelector('#token-form button').click()")
        assert browser.js("localStorage.getItem('raspy.token')") == TOKEN and "token" not in browser.js("document.cookie")

        browser.js(f"{pump}.click()")
        wait_for(lambda: browser.js(f"{pump} && {pump}.getAttribute('aria-pressed') === 'true' && !{pump}.disabled"),
                 what="the toggle showing the relay on")
        assert client.call("pi.gpio.devices", "get", "pump")[1]["value"] is True  # the pin reads on
        wait_for(lambda: next(d for d in api("api/devices")["devices"] if d["name"] == "pi.gpio.pump")["value"] is True,
                 what="the relay's confirmed state in the map")
        # the page refreshes every second: the next content, from the map, still shows it on
        wait_for(lambda: browser.js(f"{pump}.getAttribute('aria-pressed')") == "true" and
                 browser.js("document.getElementById('updated').className") == "muted live", what="the refreshed page")

        form = 'document.querySelector(\'form.marks[data-scenario="thermostat"]\')'
        browser.js(f"{form}.elements.low.value = '22'; {form}.elements.high.value = '23'; {form}.requestSubmit()")
        wait_for(lambda: client.call("pi.core.scenario", "info", "thermostat")[1]["conf"]["params"]["low"] == 22,
                 what="Core holding the new low mark")
        wait_for(lambda: browser.js(f"{form} && {form}.elements.low.value") == "22"
                 and browser.js(f"{form}.elements.high.value") == "23", what="the page showing the marks Core holds")
        bad = browser.js(f"{form}.elements.low.value = '30'; {form}.requestSubmit(); 1")
        assert bad == 1
        wait_for(lambda: "must be below" in browser.js("document.getElementById('message').textContent"),
                 what="Core's refusal of low above high on the page")
        assert client.call("pi.core.scenario", "info", "thermostat")[1]["conf"]["params"]["low"] == 22

        wait_for(lambda: len(api("api/history?device=pi.fake.aquarium&range=24h")["points"]) >= 3,
                 what="a few readings of the aquarium in its history")
        browser.js("document.querySelector('button.plot[data-device=\"pi.fake.aquarium\"]').click()")
        wait_for(lambda: browser.js("(document.querySelector('#plot svg.plot polyline') || {}).getAttribute"
                                    " ? document.querySelector('#plot svg.plot polyline').getAttribute('points').split(' ').length : 0")
                 >= 3, what="the plot of the aquarium drawn")
        assert browser.js("document.querySelectorAll('#plot svg.plot text').length") >= 10  # the axes' labels
        assert not browser.js("document.getElementById('plot').hidden")

        browser.screenshot(tmp_path / "desktop.png")
        browser.size(412, 915, mobile=True)
        browser.js("document.querySelector('#plot button[data-range=\"24h\"]').click()")  # redrawn to the phone's width
        wait_for(lambda: browser.js("(document.querySelector('#plot svg.plot') || {viewBox: {baseVal: {width: 999}}})"
                                    ".viewBox.baseVal.width") < 412,
                 what="the plot redrawn for the phone")
        browser.screenshot(tmp_path / "phone.png")
        assert browser.js("document.documentElement.scrollWidth") <= 412  # nothing wider than the phone
        for name in ("desktop.png", "phone.png"):
            shot = (tmp_path / name).read_bytes()
            assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 5000
    finally:
        browser.close()
