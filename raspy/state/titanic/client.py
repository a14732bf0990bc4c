"""The Titanic client: durable requests and the store's commands."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable

from raspy.errors import RaspyError, RequestTimeout
from raspy.mdp import protocol as p
from raspy.mdp.client import MajorDomoClient
from raspy.mdp.protocol import Frames

log = logging.getLogger(__name__)

#: The 9/TSP services Titanic serves, and its store.
REQUEST_SERVICE = "titanic.request"
REPLY_SERVICE = "titanic.reply"
CLOSE_SERVICE = "titanic.close"
STORE_SERVICE = "titanic.store"


class TitanicError(RaspyError):
    """Titanic answered with a status that is not what the call needs."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status


Callback = Callable[[str, Frames], None]


class TitanicClient:
    """Durable requests through Titanic, and the store's commands.

    ``request`` returns once Titanic has the request on disk. Replies come
    either by asking (:meth:`reply`, :meth:`wait`) or, for requests given a
    callback, from :meth:`run`, which polls, calls back and closes. Each
    thread gets its own MDP client (ZeroMQ sockets are not thread safe).
    """

    def __init__(self, broker: str, timeout: float = 2.5, retries: int = 3,
                 poll: tuple[float, float] = (0.05, 1.0)) -> None:
        self.broker = broker
        self.timeout = timeout
        self.retries = retries
        self.poll_min, self.poll_max = poll
        self._local = threading.local()
        self._clients: list[MajorDomoClient] = []
        self._lock = threading.Lock()
        self._callbacks: dict[str, Callback] = {}
        self._stop = threading.Event()

    def _client(self) -> MajorDomoClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = MajorDomoClient(self.broker, self.timeout, self.retries)
            with self._lock:
                self._clients.append(client)
        return client

    # -- 9/TSP ----------------------------------------------------------------------

    def request(self, service: str | bytes, body: bytes | Iterable[bytes], callback: Callback | None = None) -> str:
        """Hand a request to Titanic; its uuid. ``callback(uuid, reply)`` is called by :meth:`run`."""
        service = service.encode() if isinstance(service, str) else service
        frames = [body] if isinstance(body, bytes) else list(body)
        reply = self._client().send(REQUEST_SERVICE, [service, *frames])
        if len(reply) != 2 or reply[0] != p.status_frame(p.OK):
            status = int(reply[0]) if reply and reply[0].isdigit() else 500
            why = "it never passes as it is: a bad service name, or too large" if status == p.BAD_REQUEST \
                else "Titanic is full (docs/limits.md) or failing: try later"
            raise TitanicError(status, f"request refused: {why}")
        key = reply[1].decode("ascii")
        if callback is not None:
            with self._lock:
                self._callbacks[key] = callback
        return key

    def reply(self, key: str) -> tuple[int, Frames]:
        """``(status, reply frames)``: 200 with the reply, 300 pending, 400 unknown."""
        frames = self._client().send(REPLY_SERVICE, [key.encode("ascii")])
        return p.parse_status(frames[0]) if frames else 500, frames[1:]

    def status(self, key: str) -> int:
        return self.reply(key)[0]

    def close_request(self, key: str) -> None:
        """Tell Titanic the reply of ``key`` is no longer needed (9/TSP's close)."""
        frames = self._client().send(CLOSE_SERVICE, [key.encode("ascii")])
        if frames[:1] != [p.status_frame(p.OK)]:
            raise TitanicError(p.parse_status(frames[0]) if frames else 500, f"close of {key} refused")

    def wait(self, key: str, timeout: float = 30.0) -> Frames:
        """Poll until the reply of ``key`` is there (back-off to ``poll_max``); its frames."""
        deadline = time.monotonic() + timeout
        delay = self.poll_min
        while True:
            status, frames = self.reply(key)
            if status == 200:
                return frames
            if status != 300:
                raise TitanicError(status, f"no reply for {key}")
            if time.monotonic() + delay > deadline:
                raise RequestTimeout(f"no reply for {key} after {timeout}s")
            time.sleep(delay)
            delay = min(delay * 2, self.poll_max)

    def poll_once(self) -> int:
        """Fetch every reply that is ready, call its callback, close it; how many."""
        with self._lock:
            waiting = list(self._callbacks.items())
        done = 0
        for key, callback in waiting:
            status, frames = self.reply(key)
            if status == 300:
                continue
            if status == 200:
                try:
                    callback(key, frames)
                except Exception:
                    log.exception("callback for %s failed", key)
                self.close_request(key)
            else:
                log.warning("request %s is unknown to Titanic (%d); dropping its callback", key, status)
            with self._lock:
                self._callbacks.pop(key, None)
            done += 1
        return done

    def run(self) -> None:
        """Call back as replies arrive until :meth:`stop`; polls faster while replies come."""
        delay = self.poll_min
        while not self._stop.is_set():
            try:
                got = self.poll_once()
            except (RequestTimeout, TitanicError, p.ProtocolError) as exc:
                log.warning("titanic not answering as it should: %s", exc)
                got = 0
            delay = self.poll_min if got else min(delay * 2, self.poll_max)
            self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()

    @property
    def waiting(self) -> int:
        """Requests whose callback has not been called yet."""
        with self._lock:
            return len(self._callbacks)

    # -- the store ------------------------------------------------------------------

    def _store(self, command: str, args: Any) -> Any:
        status, result = self._client().call(STORE_SERVICE, command, args)
        if status == 404:
            raise KeyError(result)
        if status != 200:
            raise TitanicError(status, str(result))
        return result

    def store_set(self, service: str, section: str, key: str, value: Any) -> None:
        self._store("set", {"service": service, "section": section, "key": key, "value": value})

    def store_get(self, service: str, section: str, key: str) -> Any:
        """The value; ``KeyError`` when there is none."""
        return self._store("get", {"service": service, "section": section, "key": key})

    def store_section(self, service: str, section: str) -> dict[str, Any]:
        return self._store("get", {"service": service, "section": section})

    def store_delete(self, service: str, section: str | None = None, key: str | None = None) -> int:
        args = {"service": service, **({"section": section} if section else {}), **({"key": key} if key else {})}
        return self._store("delete", args)

    def store_list(self, service: str, section: str | None = None) -> list[str]:
        return self._store("list", {"service": service, **({"section": section} if section else {})})

    def close(self) -> None:
        """Stop :meth:`run` and close the sockets of every thread."""
        self.stop()
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def __enter__(self) -> TitanicClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
