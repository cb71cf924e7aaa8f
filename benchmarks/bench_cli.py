"""Start-up cost: `edgepack --help` wall time (goal ≤ 0.5 s), median of repeated runs, and what it imports."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def main(runs: int = 10) -> None:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "edgepack", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    print(f"edgepack --help: median {statistics.median(times):.3f} s, max {max(times):.3f} s over {runs} runs "
          f"(goal ≤ 0.5 s)")


if __name__ == "__main__":
    main()
