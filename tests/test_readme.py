"""What the README and the docs show in Python runs: every import line of their code blocks."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```python\n(.*?)```", re.S)


def import_lines(page: Path) -> list[str]:
    lines = []
    for block in FENCE.findall(page.read_text()):
        lines += [line for line in block.splitlines() if re.match(r"(from raspy[\w.]* import |import raspy)", line)]
    return lines


@pytest.mark.parametrize("page", [p for p in PAGES if import_lines(p)], ids=lambda p: p.name)
def test_every_import_a_page_shows_works(page):
    code = "\n".join(import_lines(page))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
