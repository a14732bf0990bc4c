"""Give freed memory back to the system.

glibc keeps what a process freed in its arenas (one per thread that
allocated) for reuse, so a process that held a burst of data stays that big
after freeing it. ``malloc_trim`` hands the free pages of every arena back.
On a C library without it (musl) this does nothing.
"""
from __future__ import annotations

import ctypes


def _malloc_trim():
    # the symbols the process already has, libc's among them: ctypes.util.find_library would
    # run ldconfig at every start and import shutil, tempfile, bz2 and lzma for it
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_trim = _malloc_trim()


def give_back() -> None:
    """Return the free pages of the C heap to the system (glibc's ``malloc_trim(0)``)."""
    if _trim is not None:
        _trim(0)
