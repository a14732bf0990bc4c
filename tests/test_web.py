"""The status page: every route called through WSGI, the real sources, the server, the executive."""
from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from wsgiref.util import setup_testing_defaults

import pytest
from support import free_endpoint, free_port, wait_for, write_config
from web_house import TOKEN as HOUSE_TOKEN
from web_house import (
    FakeHouse,
    executive,
    kv_answers,
    running_house,  # noqa: F401 (fixture)
)

from raspy.executives.web import Web
from raspy.house.board import Board, LastExit, State
from raspy.house.executive import Settings, load_kind
from raspy.mdp import protocol as p
from raspy.state.kv.client import KvPublisherClient
from raspy.house.health import host_health
from raspy.web.app import Unavailable, make_app, sparkline
from raspy.web.house import House, MmiCache
from raspy.web.readings import DeviceReadings, EventLog
from raspy.web.server import Server

TOKEN = "correct horse"


class Response:
    def __init__(self, status: str, headers: list, body: bytes) -> None:
        self.status = int(status.split()[0])
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self):
        assert self.headers["content-type"].startswith("application/json")
        return json.loads(self.body)


def call(app, path: str, method: str = "GET", form: dict | None = None, headers: dict | None = None) -> Response:
    """One request straight through the WSGI interface."""
    path, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        environ.update({"CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(data)),
                        "wsgi.input": io.BytesIO(data)})
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    started = {}
    body = b"".join(app(environ, lambda status, hdrs, exc=None: started.update(status=status, headers=hdrs)))
    return Response(started["status"], started["headers"], body)


@pytest.fixture
def house() -> FakeHouse:
    return FakeHouse()


@pytest.fixture
def app(house):
    return make_app(house, token=TOKEN)


# -- pages -----------------------------------------------------------------------

def test_page_shows_executives_devices_services_host_and_events(app):
    r = call(app, "/")
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert '<tr class="ex " data-name="broker">' in page and "1234/<span" in page
    assert "killed by SIGKILL, 1m" in page       # last exit with its reason
    assert "24.53&nbsp;°C" in page                         # a device value with its unit
    assert page.count("<svg") == 1                       # a sparkline where there is history
    assert 'class="device stale"' in page                # the old value is marked stale
    assert "pi.fake.devices" in page and "48.3 °C" in page and "pi.core.door: opened" in page
    assert "All 2 executives run." in page
    assert 'src="static/status.js"' in page and "http" not in page.split("<body>")[1]  # nothing from the internet


def test_page_renders_without_a_board(app, house):
    house.board_error = "no board 'raspy-x': is the supervisor running?"
    r = call(app, "/")
    assert r.status == 200
    assert "No board: no board &#039;raspy-x&#039;: is the supervisor running?" in r.text
    assert "24.53" in r.text


def test_page_lists_every_host_and_marks_a_silent_one_with_its_last_seen_time(app, house):
    page = call(app, "/").text
    hosts = page[page.index('<section id="hosts">'):]
    hosts = hosts[:hosts.index("</section>")]
    shed = hosts[hosts.index('data-name="shed"'):]
    seen = time.strftime("%H:%M:%S", time.localtime(house.hosts()[1]["last_seen"]))
    assert 'class="host down"' in hosts and ">silent<" in shed and f"{seen}, 2m00s ago" in shed
    assert "onewire: backoff: exit 1: no w1 bus" in shed and "1/2 running" in shed and "3.1 GB" in shed
    assert 'data-name="pi"' in hosts and ">fresh<" in hosts
    assert [h["name"] for h in call(app, "/api/status").json()["hosts"]] == ["pi", "shed"]


def test_a_house_of_one_host_shows_no_host_list(house):
    house.hosts = lambda: FakeHouse.hosts(house)[:1]
    assert '<section id="hosts">' not in call(make_app(house), "/").text


def test_fragment_is_the_main_part_only(app):
    r = call(app, "/fragment")
    assert r.status == 200 and "<html" not in r.text and 'data-name="broker"' in r.text


def test_static_files_are_served(app):
    js, css = call(app, "/static/status.js"), call(app, "/static/status.css")
    assert js.status == 200 and "fetch(" in js.text
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert call(app, "/static/../app.py").status in (403, 404)


def test_names_are_escaped(app, house):
    house.execs.append(executive("<script>x</script>"))
    assert "<script>x" not in call(app, "/").text


def test_unknown_page_is_404_and_get_routes_refuse_post(app):
    r = call(app, "/nothing/here")
    assert r.status == 404 and r.json()["path"] == "/nothing/here"
    assert call(app, "/api/status", method="POST").status == 405


# -- JSON API ----------------------------------------------------------------------

def test_api_status(app):
    r = call(app, "/api/status")
    assert r.status == 200 and r.headers["cache-control"] == "no-store"
    data = r.json()
    assert data["hostname"] == "pi" and data["ready"] is True and data["board"] == {"ok": True, "error": None}
    assert [ex["name"] for ex in data["executives"]] == ["broker", "fake"]
    assert data["executives"][1]["last_exit"]["reason"] == "killed by SIGKILL"
    assert data["devices"][0]["value"] == 24.53 and data["broker"]["up"] is True
    assert data["host"]["load"] == [0.5, 0.4, 0.3] and data["events"][0]["value"] == "opened"


def test_api_services_and_devices(app):
    services = call(app, "/api/services").json()
    assert services["services"][0] == {"name": "pi.fake.devices", "workers": 1, "idle": 1, "queued": 0}
    devices = call(app, "/api/devices").json()["devices"]
    assert [d["stale"] for d in devices] == [False, True] and devices[0]["history"] == [24.1, 24.3, 24.53]


# -- metrics -------------------------------------------------------------------------

def test_metrics(app):
    r = call(app, "/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = r.text.splitlines()
    assert 'raspy_executive_up{host="pi",name="broker"} 1' in lines
    assert 'raspy_executive_requests_total{host="pi",name="broker"} 1234' in lines
    assert 'raspy_executive_restarts_total{host="pi",name="fake"} 2' in lines
    assert 'raspy_executive_heartbeat_age_seconds{host="pi",name="fake"} 0.2' in lines
    assert 'raspy_device_value{device="pi.fake.aquarium",unit="°C"} 24.53' in lines
    assert 'raspy_device_value{device="pi.fake.odd\\"name",unit=""} 3' in lines
    assert 'raspy_device_stale{device="pi.fake.odd\\"name"} 1' in lines
    assert 'raspy_host_cpu_temperature_celsius{host="pi"} 48.3' in lines
    assert "# TYPE raspy_executive_restarts_total counter" in lines
    # other hosts, from their summaries: a silent host's executives are not up; this host's own come from its board
    assert 'raspy_host_up{host="pi"} 1' in lines and 'raspy_host_up{host="shed"} 0' in lines
    assert 'raspy_host_seen_age_seconds{host="shed"} 120' in lines
    assert 'raspy_executive_up{host="shed",name="fake"} 0' in lines
    assert 'raspy_executive_restarts_total{host="shed",name="onewire"} 4' in lines
    assert 'raspy_host_disk_free_bytes{host="shed"} 3100000000' in lines
    assert sum(line.startswith('raspy_executive_up{host="pi"') for line in lines) == 2  # not repeated from its summary
    samples = [line for line in lines if not line.startswith("#")]
    assert all(len(line.rsplit(" ", 1)) == 2 for line in samples)


# -- health -----------------------------------------------------------------------------

def test_healthz(app):
    r = call(app, "/healthz")
    assert (r.status, r.text) == (200, "ok\n")


def test_readyz_when_all_run(app):
    r = call(app, "/readyz")
    assert r.status == 200 and r.json() == {"ready": True, "not_running": []}


def test_readyz_503_with_one_executive_down(app, house):
    house.execs[1] = executive("fake", state="backoff", pid=None)
    r = call(app, "/readyz")
    assert r.status == 503
    assert r.json()["not_running"] == [{"name": "fake", "state": "backoff"}]
    assert "Not running: fake" in call(app, "/").text


def test_readyz_503_without_board(app, house):
    house.board_error = "no board"
    r = call(app, "/readyz")
    assert r.status == 503 and r.json()["error"] == "no board"


# -- actions --------------------------------------------------------------------------

def test_no_token_configured_means_no_actions(house):
    app = make_app(house, token=None)
    for path in ("/api/executives/broker/restart", "/restart"):
        r = call(app, path, method="POST", form={"name": "broker", "token": ""})
        assert r.status == 404
    assert house.restarted == []
    assert "<form" not in call(app, "/").text


def test_restart_needs_the_token(app, house):
    path = "/api/executives/broker/restart"
    assert call(app, path, method="POST").status == 403
    assert call(app, path, method="POST", headers={"Authorization": "Bearer wrong"}).status == 403
    assert call(app, path, method="POST", form={"token": TOKEN[:-1]}).status == 403
    assert house.restarted == []
    r = call(app, path, method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200 and r.json() == {"restarted": "broker", "detail": "restarting"}
    assert house.restarted == ["broker"]


def test_restart_from_the_page_form_redirects_back(app, house):
    r = call(app, "/restart", method="POST", form={"name": "fake", "token": TOKEN})
    assert r.status == 303 and house.restarted == ["fake"]
    assert call(app, "/restart", method="POST", form={"name": "fake", "token": "x"}).status == 403
    assert house.restarted == ["fake"]


def test_restart_of_unknown_executive_is_404(app, house):
    r = call(app, "/api/executives/nope/restart", method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 404 and house.restarted == []


def test_restart_is_a_post_only(app, house):
    assert call(app, "/api/executives/broker/restart").status == 405
    assert house.restarted == []


# -- pieces ---------------------------------------------------------------------------

def test_sparkline():
    assert sparkline([1.0]) == ""
    svg = sparkline([1.0, 3.0, 2.0], width=10, height=10)
    assert svg.startswith("<svg") and 'points="0.0,8.0 5.0,2.0 10.0,5.0"' in svg


def test_device_readings_keep_a_bounded_history_and_mark_stale_values():
    readings = DeviceReadings(history=3)
    now = time.time()
    for i in range(5):
        readings.update("/device/pi.fake.t", p.pack({"value": 20.0 + i, "unit": "°C", "timestamp": now, "poll": 10}))
    readings.update("/device/pi.fake.old", p.pack({"value": 1, "timestamp": now - 16, "poll": 10}))
    readings.update("/device/pi.fake.plain", p.pack(True))
    readings.update("/device/pi.fake.junk", b"\xc1")  # not msgpack: dropped
    devices = {d["name"]: d for d in readings.devices(now=now + 1)}
    assert set(devices) == {"pi.fake.t", "pi.fake.old", "pi.fake.plain"}
    assert devices["pi.fake.t"]["history"] == [22.0, 23.0, 24.0] and devices["pi.fake.t"]["unit"] == "°C"
    assert devices["pi.fake.t"]["stale"] is False and devices["pi.fake.old"]["stale"] is True
    assert devices["pi.fake.plain"]["value"] is True and devices["pi.fake.plain"]["interval"] is None
    readings.update("/device/pi.fake.t", None)
    assert "pi.fake.t" not in {d["name"] for d in readings.devices()}


def test_device_readings_bound_the_number_of_devices():
    readings = DeviceReadings(max_devices=2)
    for name in "abc":
        readings.update(f"/device/{name}", p.pack(1))
    assert [d["name"] for d in readings.devices()] == ["b", "c"]


def test_event_log_is_newest_first_and_bounded():
    events = EventLog(size=2)
    for value in ("a", "b", "c"):
        events.update("/event/door", p.pack(value))
    assert [e["value"] for e in events.events()] == ["c", "b"]


def test_host_health_reads_a_pi_and_omits_what_is_missing(tmp_path):
    zone = tmp_path / "sys/class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("51234\n")
    firmware = tmp_path / "sys/devices/platform/soc/soc:firmware"
    firmware.mkdir(parents=True)
    (firmware / "get_throttled").write_text("50005\n")
    health = host_health(root=tmp_path, disk_path=tmp_path)
    assert health["cpu_temperature"] == 51.234
    assert health["throttled"]["raw"] == "0x50005"
    assert health["throttled"]["under_voltage"] and health["throttled"]["throttled"]
    assert health["throttled"]["under_voltage_occurred"] and not health["throttled"]["frequency_capped"]
    assert health["disk"]["free_bytes"] > 0
    bare = host_health(root=tmp_path / "nothing", disk_path=tmp_path / "nothing")
    assert "cpu_temperature" not in bare and "throttled" not in bare and "disk" not in bare


# -- the real sources -------------------------------------------------------------------

@pytest.fixture
def board():
    board = Board.create(f"raspy-test-web-{os.getpid()}-{free_port()}", 4, ["broker", "kv", "fake"])
    yield board
    board.unlink()
    board.close()


def start(board: Board, name: str, pid: int) -> None:
    board.slot(name).set_supervised(pid=pid, state=State.RUNNING, started=time.time())
    board.slot(name).beat()


def test_house_reads_the_board(board):
    start(board, "broker", os.getpid())
    start(board, "kv", os.getpid())
    board.slot("broker").count(requests=5, replies=5, errors=1)
    board.slot("fake").set_supervised(state=State.BACKOFF, restarts=3,
                                      last_exit=LastExit(1, "exit 1: ValueError: bad", time.time()),
                                      log_dropped=4096)
    house = House("pi", board.name, free_endpoint())
    try:
        app = make_app(house)
        data = call(app, "/api/status").json()
        by_name = {ex["name"]: ex for ex in data["executives"]}
        assert by_name["broker"]["requests"] == 5 and by_name["broker"]["errors"] == 1
        assert by_name["broker"]["ready"] and by_name["broker"]["pid"] == os.getpid()
        assert by_name["fake"]["state"] == "backoff" and by_name["fake"]["restarts"] == 3
        assert by_name["fake"]["last_exit"]["reason"] == "exit 1: ValueError: bad"
        assert by_name["fake"]["log_dropped"] == 4096 and by_name["broker"]["log_dropped"] == 0
        assert by_name["fake"]["pid"] is None and by_name["fake"]["heartbeat_age"] is None
        r = call(app, "/readyz")
        assert r.status == 503 and r.json()["not_running"] == [{"name": "fake", "state": "backoff"}]
        start(board, "fake", os.getpid())
        assert call(app, "/readyz").status == 200
    finally:
        house.close()


def test_house_counts_a_silent_executive_as_not_ready(board):
    for name in ("broker", "kv", "fake"):
        start(board, name, os.getpid())
    house = House("pi", board.name, free_endpoint(), stale_after=0.05)
    try:
        wait_for(lambda: call(make_app(house), "/readyz").status == 503, timeout=2, what="a stale heartbeat")
    finally:
        house.close()


def test_house_without_board_or_restarter(board):
    house = House("pi", "raspy-test-web-no-such-board", free_endpoint())
    with pytest.raises(Unavailable, match="no board"):
        house.executives()
    house = House("pi", board.name, free_endpoint())
    with pytest.raises(KeyError):
        house.restart("nope")
    with pytest.raises(Unavailable, match="supervisor"):
        house.restart("broker")


def test_mmi_cache_lists_live_services_and_survives_a_dead_broker(children):
    endpoint = free_endpoint()
    cache = MmiCache(endpoint, interval=0.05, timeout=0.2).start()
    try:
        wait_for(lambda: cache.services()["broker"]["error"] != "not asked yet", what="a first attempt")
        assert cache.services()["broker"]["up"] is False
        children.raspy("run", "broker", "--bind", endpoint)
        children.raspy("run", "echo", "--broker", endpoint, "--service", "pi.echo.devices")
        wait_for(lambda: [s["name"] for s in cache.services()["services"]] == ["pi.echo.devices"],
                 what="the echo service in mmi.workers")
        started = time.monotonic()
        services = cache.services()
        assert time.monotonic() - started < 0.05  # a reader never waits for the broker
        assert services["broker"]["up"] and services["services"][0]["workers"] == 1
    finally:
        cache.stop()
    assert not cache._thread.is_alive()


def test_mmi_cache_asks_the_broker_only_while_someone_reads(children):
    endpoint = free_endpoint()
    children.raspy("run", "broker", "--bind", endpoint)
    cache = MmiCache(endpoint, interval=0.05, timeout=0.5).start()
    try:
        wait_for(lambda: cache.services()["broker"]["up"], what="a first answer")
        time.sleep(2.0)  # forty intervals with no page open
        # the answer of before (at most one refresh after the last read): nobody asked meanwhile
        assert cache.services()["broker"]["age"] >= 1.0
        wait_for(lambda: cache.services()["broker"]["age"] < 0.2, what="a fresh answer once read")
    finally:
        cache.stop()
    assert not cache._thread.is_alive()


# -- the server and the executive ---------------------------------------------------------

def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def server(house):
    srv = Server(make_app(house), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.address[1]}"
    srv.stop()
    thread.join(2)
    srv.close()


def test_a_slow_client_does_not_block_the_page(server):
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as slow:
        slow.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")  # never finishes its request
        status, body = get(server + "/healthz", timeout=2)
        assert (status, body) == (200, b"ok\n")


def test_fifty_concurrent_clients_are_all_answered(server):
    barrier = threading.Barrier(50)

    def one(_: int) -> int:
        barrier.wait()
        status, body = get(server + "/api/status", timeout=10)
        assert json.loads(body)["hostname"] == "pi"
        return status

    with ThreadPoolExecutor(50) as pool:
        assert list(pool.map(one, range(50))) == [200] * 50


def test_web_executive_serves_the_house_and_stops(board, children, tmp_path):
    broker = free_endpoint()
    kv = {"snapshot": free_endpoint(), "publisher": free_endpoint(), "collector": free_endpoint()}
    children.raspy("run", "broker", "--bind", broker)
    children.executive(write_config(tmp_path / "kv.toml", {"state_dir": str(tmp_path), "kv_snapshot": kv["snapshot"],
                                                          "kv_publisher": kv["publisher"], "kv_collector": kv["collector"]},
                                    {"kv": {}}), "kv")
    start(board, "broker", os.getpid())
    wait_for(lambda: kv_answers(kv["snapshot"]), what="the kv server")
    port = free_port()
    settings = Settings("web", "pi", broker=broker, state_dir=tmp_path,
                        kv_snapshot=kv["snapshot"], kv_publisher=kv["publisher"],
                        options={"port": port, "board": board.name, "mmi_interval": 0.1})
    assert load_kind("web") is Web
    web = Web(settings)
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        assert get(url + "/healthz") == (200, b"ok\n")
        with KvPublisherClient(kv["collector"]) as pub:
            pub.send("/device/", "pi.fake.tank", p.pack({"value": 25.5, "unit": "°C", "timestamp": time.time(),
                                                        "poll": 5}))
            pub.send("/event/", "pi.core.feed", p.pack("fed"))

            def devices():
                return json.loads(get(url + "/api/devices")[1])["devices"]
            wait_for(lambda: [d["value"] for d in devices()] == [25.5], what="the device on the page")
        wait_for(lambda: json.loads(get(url + "/api/status")[1])["events"], what="the event on the page")
        # one subscriber follows the four subtrees the page shows: a thread and two sockets, not four and eight
        assert [t.name for t in threading.enumerate() if t.name.startswith("kv-sub")] == ["kv-sub "]
        wait_for(lambda: json.loads(get(url + "/api/services")[1])["broker"]["up"], what="the broker answering")
        assert json.loads(get(url + "/api/status")[1])["executives"][0]["name"] == "broker"
    finally:
        web.shutdown()
        thread.join(5)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/healthz", timeout=1)


def test_restart_through_the_page_under_a_real_supervisor(running_house):
    house = running_house
    before = house.states()["one"]
    assert house.post("api/executives/one/restart", "wrong")[0] == 403
    assert house.post("api/executives/nobody/restart", HOUSE_TOKEN)[0] == 404
    status, reply = house.post("api/executives/one/restart", HOUSE_TOKEN)
    assert status == 200 and reply["restarted"] == "one" and "restarting one" in reply["detail"]
    wait_for(lambda: (s := house.states()["one"]).state == State.RUNNING and s.pid != before.pid,
             what="'one' running again with a new pid")
    ex = {e["name"]: e for e in house.api("api/status")["executives"]}
    assert ex["one"]["restarts"] == before.restarts + 1 and ex["one"]["last_exit"] is not None
    assert ex["web"]["requests"] > 0  # the web executive counts its HTTP requests on its slot
    assert house.get("readyz")[0] == 200


def test_the_errors_metric_counts_what_its_help_says(running_house):
    """A 4xx is the caller's mistake: the errors counter, and its help, are about 5xx answers."""
    house = running_house
    for _ in range(3):
        assert house.get("no/such/page")[0] == 404
    wait_for(lambda: house.states()["web"].requests >= 3, what="the requests counted")
    lines = house.get("metrics")[1].decode().splitlines()
    assert "# HELP raspy_executive_errors_total requests answered with a 5xx status, and handshakes and key/value " \
           "updates refused (a 4xx answer is the caller's mistake and is not counted)" in lines
    assert 'raspy_executive_errors_total{host="pi",name="web"} 0' in lines


def test_restart_without_a_supervisor_is_503(tmp_path, board):
    port = free_port()
    web = Web(Settings("web", "pi", broker=free_endpoint(), state_dir=tmp_path,
                       options={"port": port, "board": board.name, "token": TOKEN}))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/executives/broker/restart", method="POST",
                                         data=b"", headers={"Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(request, timeout=5)
        assert failed.value.code == 503 and "no supervisor" in json.load(failed.value)["error"]
    finally:
        web.shutdown()
        thread.join(5)
