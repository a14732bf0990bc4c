import os
from pathlib import Path

import pytest
from support import Children

from raspy.house.board import SHM_DIR, board_name


@pytest.fixture
def children():
    kids = Children()
    yield kids
    kids.kill_all()


@pytest.fixture(autouse=True)
def ram_files(request):
    """After a test, remove what houses under its tmp_path left in /dev/shm (a board, a spool, kv's copy).

    A house stopped cleanly removes them itself; one ended with kill -9 leaves them, and a real
    house would reuse them at its next start, but a test's state directory never starts again.
    """
    if "tmp_path" not in request.fixturenames:
        yield
        return
    root = request.getfixturevalue("tmp_path")
    yield
    for folder, dirs, _ in os.walk(root):
        if len(Path(folder).relative_to(root).parts) >= 3:
            dirs.clear()
        for path in Path(SHM_DIR).glob(board_name(folder) + "*"):
            path.unlink(missing_ok=True)
