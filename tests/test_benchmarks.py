"""The benchmark scripts keep working (tiny sizes; the real numbers live in benchmarks/RESULTS.md)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generation_benchmark_prints_its_table():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_generation.py"), "--tiny"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 4
    assert rows[0].startswith("| plain PyTorch") and rows[0].endswith("| 1.0x |")
    assert all(float(r.split("|")[2].replace(",", "")) > 0 for r in rows)
