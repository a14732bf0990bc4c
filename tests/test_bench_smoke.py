"""CI's smoke run of the throughput harness: proxy, minimal forwarder and both broker cores, every reply checked."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support import ROOT


def compiled_available() -> bool:
    try:
        import raspy.mdp._fast.core  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
def test_throughput_harness_smoke_run_loses_and_mixes_up_nothing(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("RASPY_PURE", None)
    run = subprocess.run([sys.executable, "-m", "bench.throughput", "--smoke", "--out", str(tmp_path)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "smoke.json").read_text())["summary"]
    expected = {"proxy", "forwarder", "compiled", "curve", "pure"} if compiled_available() else {"proxy", "forwarder", "pure"}
    assert {row["broker"] for row in summary} == expected
    assert {row["mode"] for row in summary} == {"raw", "raspy"}
    for row in summary:
        assert (row["mismatches"], row["lost"], row["rps"] > 0) == (0, 0, True), row
    assert (tmp_path / "smoke.md").read_text().count("| raw |") == 3 * len(expected)
