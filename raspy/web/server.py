"""Serving the status page: a threaded WSGI server and the ``web`` executive.

wsgiref's server handles one request at a time; with ``ThreadingMixIn`` each
connection gets a thread, so a slow phone on Wi-Fi does not stall the page for
everyone else. No dependency beyond the standard library and Bottle.
"""
from __future__ import annotations

import logging
from socketserver import ThreadingMixIn
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from raspy.house.executive import Counters

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
