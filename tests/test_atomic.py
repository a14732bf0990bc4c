"""Files RasPy replaces at run time survive a power cut: the data and the rename are both synced.

A rename is durable only once the directory that holds it is fsynced; without
that, a power cut can bring back the old file (or none) after the new one was
acknowledged. Each writer is checked by recording what ``os.fsync`` was given.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from raspy.automation.cron import Marks
from raspy.automation.scenario import ScenarioCollectionService, ScenarioManager
from raspy.mdp import protocol as p
from raspy.state.kv.statefile import StateFile


@pytest.fixture
def synced(monkeypatch) -> list[tuple[str, Path]]:
    """Every fsync as ``(kind, path)``, in order: ``("file", p)`` or ``("dir", p)``."""
    calls: list[tuple[str, Path]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        calls.append((kind, Path(os.readlink(f"/proc/self/fd/{fd}"))))
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def assert_durable(calls: list[tuple[str, Path]], target: Path) -> None:
    """The new content was synced before the rename, and the directory after it."""
    kinds = [kind for kind, _ in calls]
    assert "file" in kinds and "dir" in kinds, f"fsyncs seen: {calls}"
    assert kinds.index("file") < len(kinds) - 1 - kinds[::-1].index("dir")
    assert ("dir", target.parent.resolve()) in calls
    assert not list(target.parent.glob("*.tmp")), "a temporary file was left behind"


def test_kv_state_file(tmp_path, synced):
    target = tmp_path / "kv.state"
    StateFile(target).save(b"content")
    assert target.read_bytes() == b"content"
    assert_durable(synced, target)


def test_cron_marks(tmp_path, synced):
    target = tmp_path / "cron.marks"
    marks = Marks(target)
    marks.set("feed", 1234.5)
    marks.flush()
    assert Marks(target).get("feed", 0.0) == 1234.5
    assert_durable(synced, target)


def test_scenario_code_written_at_run_time(tmp_path, synced):
    folder = tmp_path / "scenarios"
    manager = ScenarioManager(None, None, folder, allow_remote_code=True)
    status, _ = p.parse_reply(ScenarioCollectionService(manager)(
        p.request("add", {"name": "new", "code": "def run(ctx):\n    return 1\n"})))
    assert status == p.OK
    assert (folder / "new.py").read_text().startswith("def run")
    assert_durable(synced, folder / "new.py")
