"""What the default house imports: everything its executives run before the fork, and nothing else.

An executive is forked from the supervisor, which imported its code: what the
parent imported stays shared with every child, while a module a child imports
after the fork costs that child its own copy (0.5-1 MB each, from importlib's
caches and the module's objects). And what the supervisor imports for nothing is
mapped by every process of the house. ``-X importtime`` makes every import print
a line on stderr: the supervisor's own go to its stderr, an executive's to its log.
"""
from __future__ import annotations

import urllib.request
from pathlib import Path

from support import free_endpoint, free_port, wait_for, write_config

from raspy.house.config import default_document

HOST = "fork"
#: Imported by the libraries the house uses for nothing it runs (see raspy.standin), each
#: mapped by every process: asyncio and ssl (pyzmq's ZAP thread, APScheduler, bottle's
#: http.client), importlib.metadata (APScheduler), multiprocessing.shared_memory (the board),
#: ctypes.util (which runs ldconfig to find libc).
UNUSED = {"asyncio", "ssl", "importlib.metadata", "multiprocessing.shared_memory", "ctypes.util"}


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def imported(text: str) -> list[str]:
    """The modules of ``-X importtime`` lines, in import order."""
    return [line.split("|")[-1].strip() for line in text.splitlines()
            if line.startswith("import time:") and "|" in line and "package" not in line]


def start_default_house(children, tmp_path: Path, **popen) -> tuple[int, Path, list[str]]:
    """The default house with ``-X importtime`` (web on a free port): its port, state dir, executives."""
    port, state_dir = free_port(), tmp_path / "state"
    executives = default_document()["executives"]
    executives["web"] = {"port": port}
    executives["core"] = {**executives.get("core", {}), "store_wait": 0}
    config = write_config(tmp_path / "raspy.toml", {
        "hostname": HOST, "state_dir": str(state_dir), "broker": free_endpoint(),
        **{f"kv_{n}": free_endpoint() for n in ("snapshot", "publisher", "collector")}}, executives)
    children.raspy("start", "--config", str(config), env={"PYTHONPROFILEIMPORTTIME": "1"}, **popen)
    wait_for(lambda: ready(port), 30, interval=0.1, what="/readyz 200")
    return port, state_dir, list(executives)


def test_executives_import_nothing_after_the_fork(children, tmp_path):
    port, state_dir, executives = start_default_house(children, tmp_path)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
        assert page.status == 200
    logs = {name: state_dir / "logs" / f"{name}.log" for name in executives}
    wait_for(lambda: "startup scenarios" in logs["core"].read_text(), 30, what="core's scheduler started")
    after_the_fork = {name: imported(log.read_text()) for name, log in logs.items()}
    assert {name: modules for name, modules in after_the_fork.items() if modules} == {}


def test_the_supervisor_imports_nothing_that_no_executive_uses(children, tmp_path):
    with (tmp_path / "supervisor.err").open("w") as err:
        start_default_house(children, tmp_path, stderr=err)
    before_the_fork = set(imported((tmp_path / "supervisor.err").read_text()))
    # importlib.import_module prints no line for a kind's own module: these are their imports
    assert {"raspy.automation.cron", "raspy.web.app", "raspy.state.titanic.journal"} <= before_the_fork
    assert sorted(UNUSED & before_the_fork) == []
