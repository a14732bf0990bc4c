"""A fake ``/sys/bus/w1/devices`` tree for 1-Wire tests: sensors are plugged, rewritten, unplugged."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

GOOD_SCRATCHPAD = "72 01 4b 46 7f ff 0e 10 57"
ZERO_SCRATCHPAD = "00 00 00 00 00 00 00 00 00"


def w1_slave(millis: int, crc: bool = True, scratchpad: str = GOOD_SCRATCHPAD) -> str:
    """The two lines the kernel's w1_therm driver writes."""
    return f"{scratchpad} : crc={scratchpad[-2:]} {'YES' if crc else 'NO'}\n{scratchpad} t={millis}\n"


class FakeW1Tree:
    """``root`` holds a bus master and the sensors a test plugs in."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "w1_bus_master1").mkdir(parents=True)

    def plug(self, sensor_id: str, millis: int = 23125) -> None:
        (self.root / sensor_id).mkdir()
        self.write(sensor_id, w1_slave(millis))

    def write(self, sensor_id: str, text: str) -> None:
        (self.root / sensor_id / "w1_slave").write_text(text)

    def retry_script(self, sensor_id: str, *texts: str) -> Callable[[float], None]:
        """A ``sleep`` for OneWireBus that writes the next text before each retry (no real pause)."""
        pending = list(texts)

        def sleep(_seconds: float) -> None:
            if pending:
                self.write(sensor_id, pending.pop(0))
        return sleep

    def unplug(self, sensor_id: str) -> None:
        shutil.rmtree(self.root / sensor_id)
