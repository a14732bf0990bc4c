"""Serving the status page: a threaded WSGI server and the ``web`` executive.

wsgiref's server handles one request at a time; with ``ThreadingMixIn`` each
connection gets a thread, so a slow phone on Wi-Fi does not stall the page for
everyone else. No dependency beyond the standard library and Bottle.
"""
from __future__ import annotations

import logging
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from raspy.board import board_name
from raspy.executive import Counters, Executive, Settings
from raspy.web.app import make_app
from raspy.web.house import House, supervisor_restarter

log = logging.getLogger(__name__)

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 8080


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per connection; threads never keep the process alive."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog: a burst of clients waits instead of being refused


class QuietHandler(WSGIRequestHandler):
    """Access lines go to the debug log, not to stderr; idle clients are dropped."""

    timeout = 30  # seconds a client may take to send its request

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def serve(app: Callable, host: str = DEFAULT_BIND, port: int = DEFAULT_PORT) -> ThreadingWSGIServer:
    """A bound server for ``app``; run it with ``serve_forever()`` and stop it with ``shutdown()``."""
    return make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler)


def counted(app: Callable, slot: Counters) -> Callable:
    """``app`` counting each HTTP request on the board slot (5xx answers as errors)."""
    def wsgi(environ: dict, start_response: Callable) -> Any:
        def start(status: str, headers: list, exc_info: Any = None) -> Callable:
            slot.count(requests=1, replies=1, errors=int(status[:1] == "5"))
            return start_response(status, headers, exc_info)
        return app(environ, start)
    return wsgi


class Web(Executive):
    """The ``web`` executive: the status page on ``bind``:``port`` (127.0.0.1:8080).

    Options: ``bind``, ``port``, ``token`` (enables the restart action), ``board``
    (shared-memory name, derived from the state directory by default), ``refresh`` (seconds between
    page updates), ``mmi_interval`` (seconds between broker queries),
    ``stale_after`` (seconds without a beat before an executive counts as hung;
    15, as the supervisor's default hang timeout).
    """

    def __init__(self, settings: Settings, slot: Counters | None = None) -> None:
        super().__init__(settings, slot)
        options = settings.options
        self.house = House(
            settings.hostname, options.get("board") or board_name(settings.state_dir), settings.broker,
            state_dir=settings.state_dir, restarter=supervisor_restarter(Path(settings.state_dir)),
            stale_after=float(options.get("stale_after", 15.0)),
            mmi_interval=float(options.get("mmi_interval", 5.0)),
            kv_snapshot=settings.kv_snapshot, kv_publisher=settings.kv_publisher,
        )
        self.app = make_app(self.house, token=options.get("token") or None,
                            refresh=float(options.get("refresh", 5.0)))
        self.server = serve(counted(self.app, self.slot), options.get("bind", DEFAULT_BIND),
                            int(options.get("port", DEFAULT_PORT)))
        self.add_thread(lambda: self.server.serve_forever(0.2), self.server.shutdown, "web-server")

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def run(self) -> None:
        self.house.start()
        log.info("status page on %s", self.url)
        super().run()

    def close(self) -> None:
        super().close()
        self.server.server_close()
        self.house.close()
