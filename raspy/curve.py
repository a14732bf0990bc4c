"""CURVE for a house of several hosts: key pairs, the hub's allow-list, the ZAP authenticator.

Each host has one key pair in ``<state_dir>/curve/`` (the secret file mode 0600). The hub keeps an
allow-list ``<state_dir>/curve/allowed`` of ``NAME PUBLIC_KEY`` lines; its authenticator (a ZAP
handler in each process that binds with CURVE) lets in the keys on that list and the hub's own,
and names the connection after the key's host: ``zmq.Frame.get("User-Id")`` of every message is
that host name, which is what the broker and the key/value server authorise by. The list is read
again whenever the file changes, so a key allowed now works at the next connection.
"""
from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from raspy.atomic import atomic_write
from raspy.droplog import DropLog
from raspy.errors import RaspyError

log = logging.getLogger(__name__)

KEY_DIR = "curve"
PUBLIC_FILE = "host.key"
SECRET_FILE = "host.key_secret"
ALLOWED_FILE = "allowed"
#: A host name on the allow-list: what ``[raspy] hostname`` accepts.
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


class CurveError(RaspyError):
    """A key or allow-list that cannot be used; the message says which file and why."""


def check_key(text: str) -> str:
    """``text`` if it is a CURVE public key in Z85 (40 characters), else :class:`CurveError`."""
    text = text.strip()
    try:
        if len(text) == 40 and len(z85.decode(text)) == 32:
            return text
    except (ValueError, KeyError, TypeError):
        pass
    raise CurveError(f"{text!r} is not a CURVE public key (40 characters of Z85, as 'raspy keys init' prints)")


@dataclass(frozen=True)
class KeyPair:
    """A host's CURVE keys, Z85 text."""

    public: str
    secret: str


def key_dir(state_dir: Path) -> Path:
    return Path(state_dir) / KEY_DIR


def init_keys(state_dir: Path) -> tuple[KeyPair, bool]:
    """This host's key pair, made now if there is none; whether it was made."""
    try:
        return load_keys(state_dir), False
    except CurveError:
        if (key_dir(state_dir) / SECRET_FILE).exists():
            raise  # a damaged pair is the owner's to look at: never overwrite a secret
    public, secret = (k.decode() for k in zmq.curve_keypair())
    folder = key_dir(state_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    fd = os.open(folder / SECRET_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
        out.flush()
        os.fsync(out.fileno())
    atomic_write(folder / PUBLIC_FILE, public + "\n")
    return KeyPair(public, secret), True


def load_keys(state_dir: Path) -> KeyPair:
    """This host's key pair, or :class:`CurveError` naming the file and what to do."""
    folder = key_dir(state_dir)
    try:
        public = (folder / PUBLIC_FILE).read_text().strip()
        secret = (folder / SECRET_FILE).read_text().strip()
    except OSError as exc:
        raise CurveError(f"no CURVE key pair in {folder} ({exc.strerror}): run 'raspy keys init'") from None
    check_key(public)
    try:
        derived = zmq.curve_public(secret.encode()).decode()
    except (ValueError, zmq.ZMQError):
        derived = ""
    if derived != public:
        raise CurveError(f"{folder / SECRET_FILE} does not hold the secret key of {folder / PUBLIC_FILE}")
    return KeyPair(public, secret)


class AllowList:
    """The hub's allow-list: one ``NAME PUBLIC_KEY`` per line; a line starting with ``#`` is a comment
    (only there: ``#`` is a Z85 digit)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> dict[str, str]:
        """Name -> public key; a missing file is an empty list, a bad line a :class:`CurveError`."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CurveError(f"cannot read {self.path}: {exc.strerror}") from None
        names: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if len(words) != 2 or not NAME.match(words[0]):
                raise CurveError(f"{self.path}, line {number}: expected 'NAME PUBLIC_KEY'")
            try:
                names[words[0]] = check_key(words[1])
            except CurveError as exc:
                raise CurveError(f"{self.path}, line {number}: {exc}") from None
        return names

    def allow(self, name: str, public: str) -> None:
        if not NAME.match(name):
            raise CurveError(f"{name!r} is not a host name (letters, digits, '_' or '-')")
        names = self.read()
        names[name] = check_key(public)
        self._write(names)

    def revoke(self, name: str) -> bool:
        """Take ``name`` off the list; False if it was not on it."""
        names = self.read()
        if names.pop(name, None) is None:
            return False
        self._write(names)
        return True

    def _write(self, names: dict[str, str]) -> None:
        atomic_write(self.path, "".join(f"{name} {key}\n" for name, key in sorted(names.items())))


@dataclass(frozen=True)
class Curve:
    """What a process of a CURVE house needs: its host's keys and the hub's public key."""

    hostname: str
    keys: KeyPair
    server_key: str
    allowed: Path

    @classmethod
    def load(cls, state_dir: Path, hostname: str, hub_key: str = "") -> "Curve":
        """The keys in ``state_dir``; without ``hub_key`` this host is the hub."""
        keys = load_keys(state_dir)
        return cls(hostname, keys, check_key(hub_key) if hub_key else keys.public,
                   key_dir(state_dir) / ALLOWED_FILE)

    @property
    def satellite(self) -> bool:
        """Whether this host joins another's hub (its keys and events then carry its name)."""
        return self.server_key != self.keys.public

    def client(self, context: zmq.Context) -> None:
        """Make every socket ``context`` creates from now on a CURVE client of the hub."""
        context.curve_publickey = self.keys.public.encode()
        context.curve_secretkey = self.keys.secret.encode()
        context.curve_serverkey = self.server_key.encode()

    def serve(self, socket: zmq.Socket) -> None:
        """Make ``socket`` a CURVE server (before it binds); an ``Authenticator`` decides who gets in."""
        socket.curve_secretkey = self.keys.secret.encode()
        socket.curve_publickey = self.keys.public.encode()
        socket.curve_server = True


def host_of_frame(frame: zmq.Frame) -> str:
    """The host the sender's connection is allowed as (its User-Id); '' for a frame with none
    (plaintext, inproc, or a ROUTER's identity frame)."""
    try:
        return frame.get("User-Id")
    except zmq.ZMQError:
        return ""


#: Where libzmq asks a process's ZAP handler about each handshake (RFC 27).
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"


class Authenticator:
    """The ZAP handler of one process: the allow-list and the hub's own key, read again on change.

    Without a ZAP handler libzmq lets in any client that knows the server's public key: a
    process that binds with CURVE starts one first (after the fork: it is a thread). It answers
    libzmq's requests (RFC 27 ZAP) on a plain thread: pyzmq's own authenticator runs an asyncio
    loop, and asyncio with ssl is 4 MiB that every process of the house would map.
    """

    def __init__(self, curve: Curve) -> None:
        self.curve = curve
        self.allowed = AllowList(curve.allowed)
        self.refused = 0
        self.drop = DropLog(log)
        self._names: dict[str, str] = {}
        self._listed: set[str] = set()  # every host name on the list since this process started
        self._stamp: tuple | None | bool = False  # never read
        self._lock = threading.Lock()
        self._stopper: zmq.Socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "Authenticator":
        """Bind the ZAP endpoint, so that every handshake from now on is decided here, and serve it."""
        context = zmq.Context.instance()
        zap = context.socket(zmq.REP)
        zap.linger = 0
        zap.bind(ZAP_ENDPOINT)
        wake = f"inproc://raspy.zap.stop.{id(self)}"
        self._stopper = context.socket(zmq.PAIR)
        self._stopper.bind(wake)
        inbox = context.socket(zmq.PAIR)
        inbox.connect(wake)
        self._thread = threading.Thread(target=self._serve, args=(zap, inbox), name="zap", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None or self._stopper is None:
            return
        try:
            self._stopper.send(b"", zmq.NOBLOCK)
        except zmq.Again:  # the thread has ended already (the context was terminated)
            pass
        self._thread.join()
        self._stopper.close(0)
        self._thread = self._stopper = None

    def _serve(self, zap: zmq.Socket, inbox: zmq.Socket) -> None:
        """The thread: answer each ZAP request until :meth:`stop` says a word; then unbind.

        It must outlive any one request: without a ZAP handler bound, libzmq lets everyone in.
        """
        poller = zmq.Poller()
        poller.register(zap, zmq.POLLIN)
        poller.register(inbox, zmq.POLLIN)
        try:
            while inbox not in dict(poller.poll()):
                request = zap.recv_multipart()
                try:
                    reply = self.answer(request)
                except Exception as exc:
                    self.drop(f"ZAP request refused: {type(exc).__name__}: {exc}")
                    reply = [ZAP_VERSION, request[1], b"500", b"internal error", b"", b""]
                zap.send_multipart(reply)
        finally:
            zap.unbind(ZAP_ENDPOINT)  # at once, where a close frees the endpoint later: a new start may bind it
            zap.close()
            inbox.close()

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request: version, request id, status code and text, user id, metadata.

        A CURVE client is let in when its key is on the list, under its host's name (the User-Id
        of its messages); NULL passes as it does without a handler (libzmq asks about it only for
        a socket with a ZAP domain, and RasPy sets none); any other mechanism is refused.
        """
        request_id = request[1] if len(request) > 1 else b""
        if len(request) < 6 or request[0] != ZAP_VERSION:
            return [ZAP_VERSION, request_id, b"400", b"malformed ZAP request", b"", b""]
        mechanism, credentials = request[5], request[6:]
        if mechanism == b"NULL":
            return [ZAP_VERSION, request_id, b"200", b"OK", b"anonymous", b""]
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            return [ZAP_VERSION, request_id, b"400", b"CURVE only", b"", b""]
        key = z85.encode(credentials[0]).decode()
        host = self.keys().get(key)
        if host is None:
            self.refused += 1
            self.drop(f"CURVE key {key} is not on {self.allowed.path}")
            return [ZAP_VERSION, request_id, b"400", b"Unknown key", b"", b""]
        return [ZAP_VERSION, request_id, b"200", b"OK", host.encode(), b""]

    def keys(self) -> dict[str, str]:
        """Public key -> host name: the allow-list as it is now on disk, and the hub's own key."""
        with self._lock:
            try:
                st = os.stat(self.allowed.path)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            except FileNotFoundError:
                stamp = None
            if stamp != self._stamp:
                self._stamp = stamp  # a bad file is reported once, not at every handshake
                try:
                    listed = self.allowed.read()
                except CurveError as exc:
                    log.error("%s; keeping the list read before", exc)
                    listed = {name: key for key, name in self._names.items()}
                if listed.pop(self.curve.hostname, None):  # that name has the hub's rights: its own key only
                    log.error("%s: %r is this hub's own name; that line is not used", self.allowed.path,
                              self.curve.hostname)
                self._names = {key: name for name, key in listed.items()}
                self._names[self.curve.keys.public] = self.curve.hostname
                self._listed.update(listed)
            return self._names

    def revoked(self) -> frozenset[str]:
        """The hosts taken off the list since this process started (the list as it is on disk now).

        Their connections opened before the revoke stay open on ZeroMQ's side: the broker and the
        key/value server refuse what comes on them (``BrokerCore.cut``, ``KvServer.cut``).
        """
        names = set(self.keys().values())
        with self._lock:
            return frozenset(self._listed - names)
