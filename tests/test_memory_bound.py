"""The generator keeps no per-request state: RSS after many requests stays where it was after a few.

The full bound (1,000,000 vs 100,000 requests within 10 MB) is measured by bench/memory.py; this is
the same measurement, smaller, as a correctness check on a real subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "memory.py"


def test_rss_does_not_grow_with_requests():
    done = subprocess.run([sys.executable, str(BENCH), "--first", "20000", "--total", "80000"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["requests_total"] == 80000
    # 60,000 more requests: a per-request list would cost several MB; fixed-size state costs ~nothing.
    assert result["growth_bytes"] < 2 * 2**20, result
