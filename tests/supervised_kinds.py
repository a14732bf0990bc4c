"""Executive kinds for the supervisor's tests, named in test configurations as ``supervised_kinds:Class``."""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from raspy.executives.echo import EchoServer
from raspy.house.executive import Executive
from raspy.house.options import Option


class Crash(Executive):
    """Exits at once with status 3 after saying why, like an executive whose device is missing."""

    def run(self) -> None:
        print("boom: no sensor on the bus", file=sys.stderr)
        raise SystemExit(3)


class Freezer(EchoServer):
    """Stops beating (its main loop blocks) once the file named by option ``freeze`` appears.

    The file is removed when seen, so the restarted executive runs normally.
    """

    options = (*EchoServer.options, Option("freeze", str, None, "the file whose appearance freezes it"))

    def tick(self, now: float) -> None:
        flag = Path(self.option("freeze"))
        if flag.exists():
            flag.unlink()
            while True:
                time.sleep(1)


class Stubborn(EchoServer):
    """Ignores SIGTERM: only the supervisor's SIGKILL after the stop timeout ends it."""

    def run(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        super().run()


class Chatty(EchoServer):
    """Writes a line to its output on every beat, as a verbose executive does."""

    def tick(self, now: float) -> None:
        print(f"chatty at {now:.3f}: " + "." * 1000, flush=True)


class Flaky(EchoServer):
    """Exits at once while the file named by option ``crash_while`` exists, else runs as an echo server."""

    options = (*EchoServer.options, Option("crash_while", str, None, "the file whose presence makes it crash"))

    def run(self) -> None:
        if Path(self.option("crash_while")).exists():
            print("flaky: crashing while the flag exists", file=sys.stderr)
            raise SystemExit(3)
        super().run()
