"""``raspy kv get|set|watch``: the key/value map from a shell.

RasPy publishes msgpack-encoded values (``protocol.pack``). ``set`` packs its
VALUE parsed as JSON, or the plain string when it is not JSON (``set k 21.5``
sends the float, ``set k on`` the string ``"on"``). ``get`` and ``watch``
unpack and print JSON; a body that is not msgpack prints as its UTF-8 text, or
as hex when it is not text either.

:func:`add_parser` adds ``kv`` to ``raspy``'s parser (see :mod:`raspy.cli`); it
sets ``func=run``, so ``args.func(args)`` is the exit status.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any, Sequence

import zmq

from raspy.errors import RequestTimeout
from raspy.mdp import protocol
from raspy.mdp.protocol import ProtocolError
from raspy.state.kv.client import KvPublisherClient, KvSubscriberClient, fetch_snapshot
from raspy.state.kv.message import COLLECTOR_ENDPOINT, PUBLISHER_ENDPOINT, SNAPSHOT_ENDPOINT


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``kv`` with its ``get``, ``set`` and ``watch`` commands."""
    kv = subparsers.add_parser("kv", help="read, write and watch the key/value map")
    actions = kv.add_subparsers(dest="kv_command", required=True, metavar="{get,set,watch}")

    get = actions.add_parser("get", help="print the value of KEY as JSON")
    get.add_argument("key")
    get.add_argument("--snapshot", help=f"snapshot endpoint (default: the configuration's, {SNAPSHOT_ENDPOINT})")
    get.add_argument("--timeout", type=float, default=2.5, help="seconds to wait for the server")

    set_ = actions.add_parser("set", help="set KEY to VALUE (JSON, else the string)")
    set_.add_argument("key")
    set_.add_argument("value")
    set_.add_argument("--ttl", type=float, help="seconds after which the server deletes the key")
    set_.add_argument("--collector", help=f"collector endpoint (default: the configuration's, {COLLECTOR_ENDPOINT})")
    set_.add_argument("--timeout", type=float, default=2.5, help="seconds to wait for the server")

    watch = actions.add_parser("watch", help="print every change under SUBTREE until interrupted")
    watch.add_argument("subtree", nargs="?", default="")
    watch.add_argument("--snapshot", help=f"snapshot endpoint (default: the configuration's, {SNAPSHOT_ENDPOINT})")
    watch.add_argument("--publisher", help=f"publisher endpoint (default: the configuration's, {PUBLISHER_ENDPOINT})")
    for action in (get, set_, watch):
        action.add_argument("--config", default=os.environ.get("RASPY_CONFIG"), metavar="FILE",
                            help="take the endpoints from this configuration (default $RASPY_CONFIG)")

    kv.set_defaults(func=run)
    return kv


def endpoints_from_config(args: argparse.Namespace) -> None:
    """Fill the endpoints not given on the command line from the house's configuration."""
    from raspy.house.config import load_config

    config = load_config(args.config, import_kinds=False)  # no executive code for a client
    config.secure_clients()
    for name in ("snapshot", "publisher", "collector"):
        if getattr(args, name, "") is None:
            setattr(args, name, getattr(config, f"kv_{name}"))


def run(args: argparse.Namespace) -> int:
    command = {"get": cmd_get, "set": cmd_set, "watch": cmd_watch}[args.kv_command]
    try:
        endpoints_from_config(args)
        return command(args)
    except (RequestTimeout, ValueError) as exc:
        print(f"raspy kv {args.kv_command}: {exc}", file=sys.stderr)
        return 1
    except zmq.ZMQError as exc:  # an endpoint ZeroMQ cannot use
        print(f"raspy kv {args.kv_command}: bad endpoint: {exc}", file=sys.stderr)
        return 2


def encode_value(text: str) -> bytes:
    """The msgpack body for a command-line VALUE."""
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    return protocol.pack(value)


def render(body: bytes) -> str:
    """A body as one line of JSON."""
    try:
        value = protocol.unpack(body)
    except ProtocolError:
        try:
            value = body.decode()
        except UnicodeDecodeError:
            value = body.hex()
    return json.dumps(value, ensure_ascii=False, default=lambda o: o.hex() if isinstance(o, bytes) else str(o))


def cmd_get(args: argparse.Namespace) -> int:
    _, entries = fetch_snapshot(args.key, args.snapshot, timeout=args.timeout)
    msg = entries.get(args.key)
    if msg is None:
        print(f"raspy kv get: no key {args.key!r}", file=sys.stderr)
        return 1
    print(render(msg.body))
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    with KvPublisherClient(args.collector, timeout=args.timeout) as client:
        client.send("", args.key, encode_value(args.value), ttl=args.ttl)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Print ``KEY JSON`` (or ``KEY deleted``) per change until SIGINT or SIGTERM."""
    def show(key: str, body: bytes | None, _properties: dict) -> None:
        print(f"{key} {render(body) if body is not None else 'deleted'}", flush=True)

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    with KvSubscriberClient(args.subtree, args.snapshot, args.publisher, callback=show):
        while not done.wait(1.0):
            pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m raspy.kvcli get|set|watch ...`` until ``raspy kv`` is wired in."""
    parser = argparse.ArgumentParser(prog="raspy")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["kv", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
