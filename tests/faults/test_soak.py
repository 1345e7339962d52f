"""A short soak at every landing: ``ops/soak.py`` for 2 minutes — a steady load while
workers are SIGKILLed and SIGTERMed and Redis is killed and restarted at random — and the
zero-loss invariant must hold (every request answered once, by a result that answers it,
never changed after it was first read)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SOAK = Path(__file__).resolve().parents[2] / "ops" / "soak.py"
MINUTES = 2


@pytest.mark.timeout(MINUTES * 60 + 240)
def test_two_minutes_of_random_faults_lose_nothing(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", str(MINUTES), "--seed", "20261201",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=MINUTES * 60 + 220,
    )
    report = done.stdout + done.stderr[-3000:]
    assert done.returncode == 0, report
    assert "invariant:             holds" in done.stdout, report
    assert "\nlost:                  0\n" in done.stdout, report
    sent = int(done.stdout.split("requests sent:")[1].split()[0])
    assert sent >= MINUTES * 60 * 40, f"the load ran short: {sent} requests\n{report}"
