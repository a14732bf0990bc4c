"""The default house's executives import nothing after the fork.

An executive is forked from the supervisor, which imported its code: what the
parent imported stays shared with every child, while a module a child imports
after the fork costs that child its own copy (0.5-1 MB each, from importlib's
caches and the module's objects). ``-X importtime`` makes every import print a
line on stderr, which the supervisor writes to the executive's log.
"""
from __future__ import annotations

import urllib.request

from support import free_endpoint, free_port, wait_for, write_config

from raspy.house.config import default_document

HOST = "fork"


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def test_executives_import_nothing_after_the_fork(children, tmp_path):
    port, state_dir = free_port(), tmp_path / "state"
    executives = default_document()["executives"]
    executives["web"] = {"port": port}
    executives["core"] = {**executives.get("core", {}), "store_wait": 0}
    config = write_config(tmp_path / "raspy.toml", {
        "hostname": HOST, "state_dir": str(state_dir), "broker": free_endpoint(),
        **{f"kv_{n}": free_endpoint() for n in ("snapshot", "publisher", "collector")}}, executives)
    children.raspy("start", "--config", str(config), env={"PYTHONPROFILEIMPORTTIME": "1"})
    wait_for(lambda: ready(port), 30, interval=0.1, what="/readyz 200")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
        assert page.status == 200
    logs = {name: state_dir / "logs" / f"{name}.log" for name in executives}
    wait_for(lambda: "startup scenarios" in logs["core"].read_text(), 30, what="core's scheduler started")
    imported = {name: [line.split("|")[-1].strip() for line in log.read_text().splitlines()
                       if line.startswith("import time:") and "|" in line and "package" not in line]
                for name, log in logs.items()}
    assert {name: modules for name, modules in imported.items() if modules} == {}
