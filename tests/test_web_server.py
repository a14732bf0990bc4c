"""The status page's server as a stranger meets it: the web executive alone in its own process, real
sockets; a slow-loris, the connection bound, oversize requests, idle connections, keep-alive, a stop
with a request in flight, one state of the house for a crowd, and options checked at load."""
from __future__ import annotations

import http.client
import json
import logging
import resource
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from support import ProcessProbe, free_endpoint, free_port, wait_for, write_config
from web_house import FakeHouse

from raspy.executives.web import Web
from raspy.house.config import ConfigError, load_config
from raspy.house.executive import Settings
from raspy.web.app import make_app
from raspy.web.server import Server

TOKEN = "correct horse"
#: half-open connections of the slow-loris tests
LORIS = 300
#: what a slow-loris of LORIS connections may leave in the web process's RSS once closed: held,
#: they take about 400 kB (850 kB with a Condition each), which the C heap would keep for good
RSS_KEPT_KB = 256


@dataclass
class WebProcess(ProcessProbe):
    """A ``raspy run web`` process and what /proc says about it."""

    port: int

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def answers(self) -> bool:
        try:
            return self.get("/healthz", timeout=1)[0] == 200
        except OSError:
            return False


def start_web(children, tmp_path: Path, **options) -> WebProcess:
    port = free_port()
    config = write_config(tmp_path / "raspy.toml", {"hostname": "pi", "state_dir": str(tmp_path),
                                                     "broker": free_endpoint()},
                          {"web": {"port": port, "token": TOKEN, **options}})
    web = WebProcess(children.executive(config, "web").pid, port)
    wait_for(web.answers, what="the web executive answering")
    return web


def exchange(port: int, request: bytes) -> tuple[int, bool]:
    """Send ``request`` on a new connection: the answer's status, and whether the server then closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data, closed = b"", False
        while not closed:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                break
            data += chunk
            closed = not chunk
    return int(data.split(b" ", 2)[1]), closed


def test_a_slow_loris_holds_no_thread_and_the_page_still_answers(children, tmp_path):
    web = start_web(children, tmp_path)
    threads, fds = web.threads, web.fds
    loris = []
    try:
        for _ in range(300):
            sock = socket.create_connection(("127.0.0.1", web.port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\n")
            loris.append(sock)
        # ZeroMQ's reconnecting sockets come and go in the count: "all" is within a few
        wait_for(lambda: web.fds >= fds + 295, what="the web process holding the 300 connections")
        assert web.get("/healthz", timeout=1) == (200, b"ok\n")
        assert web.get("/", timeout=1)[0] == 200
        assert web.threads <= threads
    finally:
        for sock in loris:
            sock.close()


def test_a_slow_loris_once_closed_gives_back_its_memory_and_threads(children, tmp_path):
    web = start_web(children, tmp_path)
    for path in ("/", "/api/status", "/fragment", "/metrics"):  # what the page builds once is built before
        web.get(path)
    threads, fds, rss = web.threads, web.fds, web.rss_kb
    loris = []
    for _ in range(LORIS):
        sock = socket.create_connection(("127.0.0.1", web.port), timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\n")
        loris.append(sock)
    wait_for(lambda: web.fds >= fds + LORIS - 5, what=f"the web process holding the {LORIS} connections")
    held = web.rss_kb
    for sock in loris:
        sock.close()
    wait_for(lambda: web.fds <= fds + 5, what="the web process closing the connections")
    # well within the idle timeout (15 s): the memory they took is handed back once they have closed
    wait_for(lambda: web.rss_kb <= rss + RSS_KEPT_KB and web.threads <= threads, timeout=5,
             what=f"RSS back within {RSS_KEPT_KB} kB of {rss} kB (held: {held} kB) and threads back to {threads}")


def test_connections_beyond_the_bound_wait_in_the_backlog_until_one_closes(children, tmp_path):
    web = start_web(children, tmp_path, connections=5)
    held = [socket.create_connection(("127.0.0.1", web.port), timeout=5) for _ in range(5)]
    for sock in held:
        sock.sendall(b"GET / HTTP/1.1\r\n")
    try:
        with socket.create_connection(("127.0.0.1", web.port), timeout=5) as waiting:  # the kernel's backlog
            waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            waiting.settimeout(0.5)
            with pytest.raises(TimeoutError):
                waiting.recv(1024)  # not taken while five are held
            held.pop().close()
            waiting.settimeout(5)
            assert waiting.recv(1024).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()


def test_a_low_open_file_limit_is_raised_to_hold_the_connections(children, tmp_path):
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    port = free_port()
    config = write_config(tmp_path / "raspy.toml", {"hostname": "pi", "state_dir": str(tmp_path),
                                                     "broker": free_endpoint()}, {"web": {"port": port}})
    web = WebProcess(children.executive(config, "web", preexec_fn=low_limit).pid, port)
    wait_for(web.answers, what="the web executive answering")
    limits = Path(f"/proc/{web.pid}/limits").read_text().splitlines()
    soft = int(next(line for line in limits if line.startswith("Max open files")).split()[3])
    assert soft >= 2000


def test_a_request_trickled_forever_is_closed_after_the_idle_timeout(children, tmp_path):
    web = start_web(children, tmp_path, idle_timeout=1)
    with socket.create_connection(("127.0.0.1", web.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        opened, closed = time.monotonic(), None
        sock.settimeout(0.2)
        while closed is None and time.monotonic() - opened < 10:
            try:
                if not sock.recv(1024):
                    closed = time.monotonic()
            except TimeoutError:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")  # a header line every 0.2 s: busy, never complete
                except BrokenPipeError:
                    closed = time.monotonic()
            except ConnectionResetError:
                closed = time.monotonic()
    assert closed is not None, "the trickling connection is still open after 10 s"
    assert closed - opened >= 0.9
    assert web.get("/healthz") == (200, b"ok\n")


def test_oversize_headers_get_431_and_the_connection_closes(children, tmp_path):
    web = start_web(children, tmp_path, max_header_bytes=1024)

    def request(size: int) -> bytes:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
        return head + b"a" * (size - len(head) - 4) + b"\r\n\r\n"  # ``size`` bytes up to the blank line
    assert exchange(web.port, request(1025)) == (431, True)
    assert exchange(web.port, request(1024 + 3000)) == (431, True)
    assert exchange(web.port, request(1024)) == (200, True)


def test_an_oversize_body_gets_413_before_it_is_sent(children, tmp_path):
    web = start_web(children, tmp_path, max_body_bytes=100)

    def post(length: int, body: bytes = b"") -> bytes:
        return (f"POST /api/executives/broker/restart HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Content-Length: {length}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n\r\n").encode() + body
    assert exchange(web.port, post(101)) == (413, True)       # the body is never sent: refused on the headers
    assert exchange(web.port, post(10 ** 9)) == (413, True)
    assert exchange(web.port, post(100, b"token=wrong&" + b"x" * 88)) == (403, True)  # at the bound: the app decides


def test_the_page_keeps_its_connection_alive(children, tmp_path):
    web = start_web(children, tmp_path)
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=5)
    try:
        sockets = []
        for path in ("/", "/fragment", "/static/status.js", "/api/status"):
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            assert response.status == 200 and response.version == 11 and not response.will_close
            sockets.append(connection.sock)
        assert len(set(map(id, sockets))) == 1
    finally:
        connection.close()


def test_a_stop_answers_the_request_in_flight_and_takes_no_new_connection():
    entered, release = threading.Event(), threading.Event()

    def slow(environ: dict, start_response) -> list[bytes]:
        entered.set()
        release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"done\n"]

    server = Server(slow, "127.0.0.1", 0)
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    port = server.address[1]
    with ThreadPoolExecutor(2) as pool:
        answer = pool.submit(exchange, port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert entered.wait(5)
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)  # a keep-alive client between requests
        stopping = pool.submit(server.stop, 5.0)

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except (ConnectionRefusedError, ConnectionResetError):  # reset: caught in the backlog as it closed
                return True
            return False
        wait_for(refused, what="new connections refused once the stop began")
        assert not stopping.done()
        release.set()
        assert answer.result(5) == (200, True)
        stopping.result(5)
    loop.join(5)
    assert not loop.is_alive()
    try:
        assert idle.recv(1) == b""  # closed, not left hanging
    except ConnectionResetError:
        pass  # still in the backlog when the listening socket closed
    idle.close()
    server.close()


@contextmanager
def serving(app) -> Iterator[Server]:
    """A server of ``app`` on a free port, its loop in a thread; stopped and closed on the way out."""
    server = Server(app, "127.0.0.1", 0)
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    try:
        yield server
    finally:
        server.stop()
        loop.join(5)
        server.close()


def fetch(server: Server, path: str, method: str = "GET", headers: dict | None = None) -> tuple[int, bytes]:
    """One request on a connection of its own: status and body."""
    connection = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_the_access_log_is_debug_lines_and_rate_limited(caplog):
    with serving(make_app(FakeHouse())) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=5)
        try:
            with caplog.at_level(logging.DEBUG, logger="raspy.web.access"):
                for _ in range(30):
                    connection.request("GET", "/healthz")
                    connection.getresponse().read()
        finally:
            connection.close()
    lines = [r for r in caplog.records if r.name == "raspy.web.access"]
    assert 1 <= len(lines) <= 10  # 10 per 10 s, the next saying how many were held back
    assert all(r.levelno == logging.DEBUG and r.getMessage() == "127.0.0.1 GET /healthz 200" for r in lines)


def test_an_answer_larger_than_the_socket_and_the_buffers_arrives_whole():
    chunk, chunks = b"x" * 65536, 320  # 20 MiB: beyond the kernel's buffers and waitress's 16 MiB mark

    def big(environ: dict, start_response) -> list[bytes]:
        start_response("200 OK", [("Content-Length", str(len(chunk) * chunks))])
        return [chunk] * chunks

    with serving(big) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.address[1], timeout=10)
        for _ in range(2):  # twice on one connection: the loop sent the rest, the connection is kept
            connection.request("GET", "/")
            assert len(connection.getresponse().read()) == len(chunk) * chunks
        connection.close()


class CountingHouse(FakeHouse):
    """A fake house that counts how often its state is taken."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = 0

    def executives(self) -> list[dict]:
        self.taken += 1
        return super().executives()


def test_a_crowd_shares_one_state_of_the_house_per_tick():
    house = CountingHouse()
    with serving(make_app(house, tick=60)) as server, ThreadPoolExecutor(50) as pool:
        paths = ["/api/status", "/", "/fragment", "/metrics"] * 25
        assert {status for status, _ in pool.map(lambda path: fetch(server, path), paths)} == {200}
    assert house.taken == 1


def test_an_action_takes_the_state_anew_for_the_next_view():
    house = CountingHouse()
    with serving(make_app(house, token=TOKEN, tick=60)) as server:
        def ask(method: str, path: str) -> int:
            return fetch(server, path, method, {"Authorization": f"Bearer {TOKEN}"})[0]
        assert ask("GET", "/fragment") == 200 and ask("GET", "/api/status") == 200 and house.taken == 1
        assert ask("POST", "/api/executives/fake/restart") == 200 and house.restarted == ["fake"]
        assert ask("GET", "/fragment") == 200 and house.taken == 2  # not the state of before the action


def test_the_page_shows_a_change_within_a_tick():
    house = FakeHouse()
    with serving(make_app(house, tick=0.2)) as server:
        def names() -> list[str]:
            return [ex["name"] for ex in json.loads(fetch(server, "/api/status")[1])["executives"]]
        assert names() == ["broker", "fake"]
        house.execs = house.execs[:1]
        wait_for(lambda: names() == ["broker"], timeout=2, what="the change on the page")


def test_unknown_options_are_refused_at_load_naming_the_known_ones(tmp_path):
    config = write_config(tmp_path / "raspy.toml", {"state_dir": str(tmp_path)}, {"web": {"prot": 8080}})
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    message = str(refused.value)
    assert str(config) in message and "executives.web.prot: unknown key; known:" in message
    assert "port, token" in message
    assert "threads, connections, idle_timeout, max_header_bytes, max_body_bytes" in message
    with pytest.raises(ValueError, match="unknown key"):
        Web(Settings("web", "pi", state_dir=tmp_path, options={"prot": 8080}))


@pytest.mark.parametrize("option, value, reason", [
    ("threads", 0, "an integer >= 1"), ("idle_timeout", -1, "a number > 0"), ("connections", True, "an integer"),
    ("max_header_bytes", 100, "an integer >= 256"), ("max_body_bytes", 0, "an integer >= 1"),
])
def test_bad_bounds_are_refused_at_load(tmp_path, option, value, reason):
    config = write_config(tmp_path / "raspy.toml", {"state_dir": str(tmp_path)}, {"web": {option: value}})
    with pytest.raises(ConfigError, match=f"executives.web.{option}: .* is not {reason}"):
        load_config(config)
