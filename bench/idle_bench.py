"""An idle lab's cost: the CPU the service process draws with no run, no study, no sweep and no page open.

Starts `python -m ptft_core serve` on a throw-away home that links the prepared data, lets it settle (its warm
fork server's imports, the drivers' first ticks), then reads the process's CPU time (user + system) over
`--seconds` of wall time, and its children's (the fork server, which waits on a pipe). Target (issue 27): well
under 1 % of a core.

    python -m bench.idle_bench [--seconds 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import psutil

from bench import save_result, throwaway_home
from ptft_core import paths

SETTLE_S = 20.0


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    args = parser.parse_args(argv)
    with throwaway_home() as home:
        service = subprocess.Popen([sys.executable, "-m", "ptft_core", "serve", "--port", "0"],
                                   env={**os.environ, "PTFT_HOME": str(home)}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            while not paths.service_file(home).exists():
                if service.poll() is not None:
                    raise RuntimeError(f"the service exited with {service.returncode} before it served")
                time.sleep(0.2)
            time.sleep(SETTLE_S)
            process = psutil.Process(service.pid)
            start, wall = cpu_seconds(process), time.monotonic()
            children = sum(map(cpu_seconds, process.children(True)))
            time.sleep(args.seconds)
            used = cpu_seconds(process) - start
            children = sum(map(cpu_seconds, process.children(True))) - children
            wall = time.monotonic() - wall
        finally:
            service.terminate()
            service.wait(timeout=60)
    result = {"seconds": round(wall, 1), "service_cpu_pct_of_a_core": round(100 * used / wall, 3),
              "children_cpu_pct_of_a_core": round(100 * children / wall, 3)}
    print(json.dumps(result))
    save_result("idle", {"args": vars(args), **result})
    return result


if __name__ == "__main__":
    main()
