"""The ``raspy`` command.

Commands that only talk to services (``call``, ``mmi``, ``kv``) load no part of
the house: the supervisor's modules are imported by the commands that use them,
which keeps ``raspy call`` quick to start on a slow Pi. Commands that talk to a
running house read its configuration for the endpoints and the state directory,
and never import executive code: only ``start``, ``reload`` and ``run`` do.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Callable

import zmq

from raspy import __version__, kvcli
from raspy.errors import RaspyError, RequestTimeout
from raspy.mdp import _fast
from raspy.mdp import protocol as p
from raspy.mdp.broker import DEFAULT_ENDPOINT, Broker
from raspy.mdp.client import MajorDomoClient
from raspy.mdp.limits import BrokerLimits

if TYPE_CHECKING:
    from raspy.house.config import Config

log = logging.getLogger("raspy")


def on_stop_signals(stop: Callable[[], None]) -> None:
    """Call ``stop`` on SIGTERM and SIGINT (what systemd and Ctrl-C send)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop())


def to_json(value: Any) -> str:
    """JSON for printing a decoded msgpack value (bytes shown as text where they are)."""
    return json.dumps(value, default=lambda b: b.decode(errors="replace") if isinstance(b, bytes) else repr(b))


# -- raspy run ----------------------------------------------------------------

def run_broker(args: argparse.Namespace) -> int:
    try:
        limits = BrokerLimits.from_options(vars(args))
    except ValueError as exc:
        return fail(str(exc), 2)
    bindable_or_exit(args.bind)
    try:
        broker = Broker(args.bind, heartbeat=args.heartbeat, liveness=args.liveness, limits=limits)
    except zmq.ZMQError as exc:
        return fail(f"cannot bind {args.bind!r}: {reason(exc)}", 2)
    on_stop_signals(broker.stop)
    broker.run()
    return 0


def run_echo(args: argparse.Namespace) -> int:
    from raspy.mdp.echo import Echo
    from raspy.mdp.worker import MajorDomoWorker

    worker = MajorDomoWorker(args.broker, args.service, Echo(args.delay),
                             heartbeat=args.heartbeat, liveness=args.liveness)
    on_stop_signals(worker.shutdown)
    worker.run()
    return 0


def run_executive(name: str, rest: list[str]) -> int:
    """``raspy run NAME --config FILE``: one executive of the configuration, alone, in the foreground."""
    from raspy.house.executive import load_kind

    parser = argparse.ArgumentParser(prog=f"raspy run {name}")
    config_option(parser)
    options = parser.parse_args(rest)
    config = load_or_exit(options.config, import_kinds=True)
    if name not in config.executives:
        return fail(f"no executive {name!r} in {config.path or 'the default configuration'}; "
                    f"known: {', '.join(config.executives)}", 2)
    kind = load_kind(config.executives[name].kind)
    for endpoint in kind.endpoints(config.settings(name)):
        bindable_or_exit(endpoint)
    executive = kind(config.settings(name))
    on_stop_signals(executive.shutdown)
    executive.run()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """``raspy run broker|echo [options]`` runs that part alone; any other NAME, or ``--config``, an executive."""
    standalone = {"broker": broker_parser, "echo": echo_parser}
    if args.name in standalone and not any(a == "--config" or a.startswith("--config=") for a in args.rest):
        options = standalone[args.name]().parse_args(args.rest)
        return options.func(options)
    return run_executive(args.name, args.rest)


# -- raspy start / status / stop / restart / reload --------------------------------

def fail(message: str, code: int = 1) -> int:
    """Print ``error: MESSAGE`` (one line per line of it) and return ``code``, the exit status."""
    for line in message.splitlines():
        print(f"error: {line}", file=sys.stderr)
    return code


def reason(exc: zmq.ZMQError) -> str:
    """ZeroMQ's reason without the address it appends (the message names it already)."""
    return str(exc.strerror).split(" (addr=")[0]


def load_or_exit(path: str | None, import_kinds: bool = False) -> Config:
    """The configuration; ``import_kinds`` only for commands that start executives (start, reload, run)."""
    from raspy.house.config import ConfigError, load_config

    try:
        return load_config(path, import_kinds=import_kinds)
    except ConfigError as exc:
        raise SystemExit(fail(str(exc), 2)) from None


def bindable_or_exit(endpoint: str) -> None:
    from raspy.house.endpoints import EndpointBusy, check_bindable

    try:
        check_bindable(endpoint)
    except EndpointBusy as exc:
        raise SystemExit(fail(str(exc))) from None


def cmd_start(args: argparse.Namespace) -> int:
    from raspy.house.supervisor import Supervisor

    config = load_or_exit(args.config, import_kinds=True)
    try:
        Supervisor(config).run()
    except RaspyError as exc:  # the state directory is not usable, an endpoint is taken, a board in use
        return fail(str(exc))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from raspy.house.control import status_report

    if args.house:
        return house_status(args)
    lines, code = status_report(load_or_exit(args.config).state_dir)
    print("\n".join(lines))
    return code


def house_status(args: argparse.Namespace) -> int:
    """``raspy status --house``: every host's summary, from the snapshot of ``/host/`` of the hub's kv."""
    from raspy.house.summary import house_report
    from raspy.state.keys import HOST
    from raspy.state.kv.client import fetch_snapshot

    config = client_of(args.config)
    try:
        _, messages = fetch_snapshot(HOST, config.kv_snapshot, timeout=args.timeout)
    except RequestTimeout:
        return fail(f"no answer from the key/value server at {config.kv_snapshot} in {args.timeout:g}s", 3)
    lines, code = house_report({key: msg.body for key, msg in messages.items()})
    print("\n".join(lines))
    return code


def control(args: argparse.Namespace, command: str, import_kinds: bool = False) -> tuple[dict | None, Config]:
    from raspy.house.control import NotRunning, send_command

    config = load_or_exit(args.config, import_kinds)
    try:
        return send_command(config.state_dir, command), config
    except (NotRunning, OSError) as exc:
        fail(str(exc))
        return None, config


def cmd_stop(args: argparse.Namespace) -> int:
    from raspy.house.control import wait_gone

    reply, config = control(args, "stop")
    if reply is None:
        return 3
    if not wait_gone(reply["pid"], config.stop_timeout + 5):
        print(f"error: the supervisor (pid {reply['pid']}) still runs", file=sys.stderr)
        return 1
    print("stopped")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    return print_reply(control(args, f"restart {args.name}")[0])


def cmd_reload(args: argparse.Namespace) -> int:
    return print_reply(control(args, "reload", import_kinds=True)[0])  # checks the file as the supervisor will


def print_reply(reply: dict | None) -> int:
    if reply is None:
        return 3
    print(reply["message"] if reply["ok"] else f"error: {reply['message']}",
          file=sys.stdout if reply["ok"] else sys.stderr)
    return 0 if reply["ok"] else 1


# -- raspy call / mmi -----------------------------------------------------------

def broker_of(args: argparse.Namespace) -> str:
    """The broker to talk to: ``--broker``, else the one of ``--config``, else ``$RASPY_BROKER``,
    else the one of ``$RASPY_CONFIG``, else the default: the command line first, then the environment."""
    if args.broker:
        return args.broker
    if args.config:
        return client_of(args.config).broker
    if os.environ.get("RASPY_BROKER"):
        return os.environ["RASPY_BROKER"]
    if os.environ.get("RASPY_CONFIG"):
        return client_of(os.environ["RASPY_CONFIG"]).broker
    return DEFAULT_ENDPOINT


def client_of(path: str | None) -> Config:
    """The configuration of the house a command talks to; with ``curve = true`` its sockets use this host's keys."""
    from raspy.house.config import ConfigError

    config = load_or_exit(path)
    try:
        config.secure_clients()
    except ConfigError as exc:
        raise SystemExit(fail(str(exc), 2)) from None
    return config


def cmd_call(args: argparse.Namespace) -> int:
    """Exit 0 on 200, 1 on another status, 2 for an argument that is not JSON, a bad endpoint or a
    reply off the convention, 3 when nothing answers, 4 when no worker serves the service (asked of
    8/MMI first, so a typo is told at once rather than after every retry)."""
    try:
        params = json.loads(args.args) if args.args is not None else None
    except json.JSONDecodeError as exc:
        return fail(f"the argument is not JSON ({exc}): {args.args!r}; a string is quoted, e.g. '\"{args.args}\"'", 2)
    broker = broker_of(args)
    with MajorDomoClient(broker, timeout=args.timeout, retries=args.retries) as client:
        try:
            if client.send(b"mmi.service", [args.service.encode()]) != [b"200"]:
                return fail(f"no such service {args.service!r}: no worker serves it ('raspy mmi' lists the live ones)",
                            4)
        except RequestTimeout:
            return fail(f"no reply from the broker at {broker}", 3)
        except zmq.ZMQError as exc:
            return fail(f"bad broker endpoint {broker!r}: {reason(exc)}", 2)
        try:
            status, result = client.call(args.service, args.command, *([] if args.args is None else [params]))
        except RequestTimeout as exc:
            return fail(str(exc), 3)
        except p.ProtocolError as exc:
            return fail(f"the reply does not follow RasPy's convention: {exc}", 2)
    print(status, to_json(result))
    return 0 if status == p.OK else 1


def cmd_mmi(args: argparse.Namespace) -> int:
    broker = broker_of(args)
    with MajorDomoClient(broker, timeout=args.timeout, retries=args.retries) as client:
        try:
            if args.regex is None:
                status, names = p.parse_reply(client.send("mmi.services", []))
            else:
                status, names = p.parse_reply(client.send("mmi.discovery", [args.regex.encode()]))
        except RequestTimeout as exc:
            return fail(str(exc), 3)
        except zmq.ZMQError as exc:
            return fail(f"bad broker endpoint {broker!r}: {reason(exc)}", 2)
    if status != p.OK:
        return fail(f"{status} {names}")
    for name in names:
        print(name)
    return 0


# -- raspy keys -------------------------------------------------------------------

def cmd_keys(args: argparse.Namespace) -> int:
    """``raspy keys init|allow|revoke|list``: this host's key pair, and the hub's allow-list."""
    from raspy.curve import ALLOWED_FILE, AllowList, CurveError, init_keys, key_dir
    from raspy.house.trust import Trust

    config = load_or_exit(args.config)
    allowed = AllowList(key_dir(config.state_dir) / ALLOWED_FILE)
    try:
        if args.keys_command == "init":
            keys, made = init_keys(config.state_dir)
            print(keys.public)
            print(f"{'made' if made else 'kept'} the key pair of {config.hostname} in {key_dir(config.state_dir)}",
                  file=sys.stderr)
        elif args.keys_command == "allow":
            if Trust(config.hostname).reserved(args.name):
                return fail(f"{args.name!r} is reserved: a host so called would have the hub's rights")
            allowed.allow(args.name, args.key)
            print(f"allowed {args.name}: a connection with its key is let in from now on")
        elif args.keys_command == "revoke":
            if not allowed.revoke(args.name):
                return fail(f"{args.name} is not on {allowed.path}")
            print(f"revoked {args.name}")
            return restart_secured(args, config)
        else:
            for name, key in allowed.read().items():
                print(f"{name} {key}")
    except CurveError as exc:
        return fail(str(exc))
    return 0


def restart_secured(args: argparse.Namespace, config: Config) -> int:
    """After a revoke: restart the running house's broker and kv, which drops every connection;
    those that come back are checked against the list again, and the revoked key is refused."""
    from raspy.house.control import NotRunning, send_command

    secured = [e.name for e in config.enabled() if e.kind in ("broker", "kv")]
    for name in secured:
        try:
            reply = send_command(config.state_dir, f"restart {name}")
        except (NotRunning, OSError):
            print("no house runs here: the list takes effect when it starts")
            return 0
        print(reply["message"] if reply["ok"] else f"error: {reply['message']}",
              file=sys.stdout if reply["ok"] else sys.stderr)
    return 0


def keys_parser(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="CURVE keys: this host's pair, the hub's allow-list (docs/hosts.md)")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="make this host's key pair (kept if there is one); print the public key")
    allow = actions.add_parser("allow", help="on the hub: let host NAME in with its PUBLIC_KEY")
    allow.add_argument("name", metavar="NAME", help="the host's name ([raspy] hostname on it)")
    allow.add_argument("key", metavar="PUBLIC_KEY", help="what 'raspy keys init' printed on it")
    revoke = actions.add_parser("revoke", help="on the hub: take host NAME off the list (restarts broker and kv)")
    revoke.add_argument("name", metavar="NAME")
    listing = actions.add_parser("list", help="on the hub: the hosts allowed in, and their keys")
    for action in (init, allow, revoke, listing):
        config_option(action)
    keys.set_defaults(func=cmd_keys)


# -- the parser -----------------------------------------------------------------

def client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default=os.environ.get("RASPY_BROKER", DEFAULT_ENDPOINT),
                        help="broker endpoint (default %(default)s, or $RASPY_BROKER)")
    timing_options(parser)


def timing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=2.5, help="seconds to wait per attempt")
    parser.add_argument("--retries", type=int, default=3, help="attempts before giving up")


def house_client_options(parser: argparse.ArgumentParser) -> None:
    """``--broker`` and ``--config`` of a command that talks to a house's broker."""
    parser.add_argument("--broker", help="broker endpoint (default: the configuration's, else $RASPY_BROKER, "
                                         f"else the one of $RASPY_CONFIG, else {DEFAULT_ENDPOINT})")
    parser.add_argument("--config", metavar="FILE", help="take the broker from this configuration")
    timing_options(parser)


def heartbeat_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heartbeat", type=float, default=2.5, help="heartbeat interval in seconds")
    parser.add_argument("--liveness", type=int, default=3, help="silent intervals before a peer is dead")


def config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=os.environ.get("RASPY_CONFIG"), metavar="FILE",
                        help="TOML configuration (default $RASPY_CONFIG, else the embedded default house)")


def broker_parser() -> argparse.ArgumentParser:
    broker = argparse.ArgumentParser(prog="raspy run broker", description="the Majordomo broker alone")
    broker.add_argument("--bind", default=DEFAULT_ENDPOINT, help="endpoint to bind (default %(default)s)")
    heartbeat_options(broker)
    for flag, kind, default, help in BrokerLimits.flags():
        broker.add_argument(flag, type=kind, default=default, help=f"{help} (default %(default)s)")
    broker.set_defaults(func=run_broker)
    return broker


def echo_parser() -> argparse.ArgumentParser:
    echo = argparse.ArgumentParser(prog="raspy run echo", description="an echo worker (tests and benchmarks)")
    client_options(echo)
    heartbeat_options(echo)
    echo.add_argument("--service", default="echo", help="service name (default %(default)s)")
    echo.add_argument("--delay", type=float, default=0.0, help="seconds each request takes")
    echo.set_defaults(func=run_echo)
    return echo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raspy", description="Run a house from a Raspberry Pi.")
    parser.add_argument("--version", action="version",
                        version=f"raspy {__version__} (broker core: {_fast.IMPLEMENTATION})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = commands.add_parser("start", help="run the supervisor and the house in the foreground")
    config_option(start)
    start.set_defaults(func=cmd_start)

    status = commands.add_parser("status", help="one line per executive, from the board (no broker needed)")
    config_option(status)
    status.add_argument("--house", action="store_true",
                        help="every host of the house instead, from the summaries in the hub's kv (docs/hosts.md)")
    status.add_argument("--timeout", type=float, default=2.5, help="with --house: seconds to wait for kv")
    status.set_defaults(func=cmd_status)

    stop = commands.add_parser("stop", help="stop the running supervisor and its executives")
    config_option(stop)
    stop.set_defaults(func=cmd_stop)

    restart = commands.add_parser("restart", help="restart one executive of the running supervisor")
    restart.add_argument("name", help="executive name")
    config_option(restart)
    restart.set_defaults(func=cmd_restart)

    reload = commands.add_parser("reload", help="re-read the configuration (restarts only what changed)")
    config_option(reload)
    reload.set_defaults(func=cmd_reload)

    run = commands.add_parser(
        "run", help="run one executive in the foreground (debugging)",
        description="raspy run NAME [--config FILE] runs the executive NAME of the configuration alone; "
                    "'raspy run broker [--bind ...]' and 'raspy run echo [...]' run those pieces alone "
                    "(see 'raspy run broker -h').")
    run.add_argument("name", metavar="NAME", help="an executive of the configuration, or broker or echo")
    run.add_argument("rest", nargs=argparse.REMAINDER, help="--config FILE, or the piece's own options")
    run.set_defaults(func=cmd_run)

    call = commands.add_parser("call", help="send one request to a service and print the reply")
    house_client_options(call)
    call.add_argument("service", help="service name, e.g. pi.fake.devices")
    call.add_argument("command", help="command word, e.g. list_keys")
    call.add_argument("args", nargs="?", help="arguments as JSON (sent as msgpack)")
    call.set_defaults(func=cmd_call)

    mmi = commands.add_parser("mmi", help="list live services (8/MMI)")
    house_client_options(mmi)
    mmi.add_argument("regex", nargs="?", help="only names matching this regular expression")
    mmi.set_defaults(func=cmd_mmi)

    kvcli.add_parser(commands)
    keys_parser(commands)
    return parser


def dashed_keys_last(argv: list[str]) -> list[str]:
    """``argv`` with any CURVE public key that starts with '-' moved behind ``--``.

    One Z85 key in 85 starts with '-', which argparse takes for an option; ``raspy keys allow
    shed KEY`` must work with the key as ``raspy keys init`` printed it.
    """
    if "keys" not in argv or "--" in argv:
        return argv
    from raspy.curve import CurveError, check_key

    def dashed_key(word: str) -> bool:
        try:
            return word.startswith("-") and check_key(word) == word
        except CurveError:
            return False

    keys = [word for word in argv if dashed_key(word)]
    return [word for word in argv if word not in keys] + ["--", *keys] if keys else argv


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(dashed_keys_last(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args.func(args)
