"""The lab service under load while a real run trains: latency and errors of 20 polling clients, and what the
load costs the training.

One real tiny masked-LM pretraining run (tiny BERT, the built-in wiki corpus, one CPU slot) trains through the
service for the whole bench, in three phases of PHASE_S seconds: idle, loaded, idle again (A-B-A, so a drift of
the machine shows as a difference between the two idle phases, not as a load effect). In the loaded phase
CLIENTS clients (threads of this process, each its own `LabClient`) poll every POLL_S seconds what the Runs page
polls: the run list, the training run's row, its loss series. That is about twice the rate of a dashboard's live
parts (Streamlit fragments every 2 s), per client. Latency is measured per request, from the client's side.
Training speed per phase: steps per wall second from the run's own logged steps (step and wall time of its
train-loss rows inside the phase). CPU use per phase (cores' worth) of the service, of the clients (this
process) and of the training worker says where the machine's time went.

Targets (issue 12): 0 errors, p95 < 200 ms, training speed under load within 10 % of idle.

`python -m bench service` (harness) or `python -m bench.service_bench`; about four minutes.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from bench import row
from ptft_core import paths
from ptft_core.client import connect, find_service, start_service, stop_service

NAME = "service"
CLIENTS = 20
POLL_S = 1.0
PHASE_S = 60.0
WARMUP_S = 20.0  # the run's start (imports, tokenisation, step 0 evaluation) before phase one


def link_prepared(home: Path) -> None:
    source = paths.REPO_ROOT / "data"
    for sub in ("datasets", "models"):
        (home / sub).mkdir(parents=True)
        for entry in (source / sub).glob("*"):
            (home / sub / entry.name).symlink_to(entry.resolve())


def poll(home: Path, run_id: str, stop: threading.Event, latencies: list[float], errors: list[str]) -> None:
    with connect(home) as lab:
        while not stop.is_set():
            began = time.perf_counter()
            for call in (lambda: lab.list_runs(), lambda: lab.get_run(run_id),
                         lambda: lab.metric_series([run_id], names=["loss"], splits=["train"])):
                start = time.perf_counter()
                try:
                    call()
                    latencies.append(time.perf_counter() - start)
                except Exception as exc:  # an error is a result here: counted and reported, never raised
                    errors.append(f"{type(exc).__name__}: {exc}")
            stop.wait(max(0.0, POLL_S - (time.perf_counter() - began)))


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of a process and its threads (children excluded: none here)."""
    times = process.cpu_times()
    return times.user + times.system


def steps_per_s(lab, run_id: str, t0: float, t1: float) -> float:
    rows = lab.metric_rows([run_id])
    rows = rows[(rows["split"] == "train") & (rows["name"] == "loss") & rows["wall_time"].between(t0, t1)]
    if len(rows) < 2:
        return float("nan")
    return float((rows["step"].max() - rows["step"].min()) / (rows["wall_time"].max() - rows["wall_time"].min()))


def run() -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="ptft-service-bench-") as tmp:
        home = Path(tmp)
        link_prepared(home)
        os.environ.pop("PTFT_TRAINER", None)
        start_service(home, args=["--cpu-slots", "1"])
        try:
            lab = connect(home)
            run_id = lab.submit({"kind": "pretrain", "name": "service-bench", "model": "tiny", "corpus": ["wiki"],
                                 "max_steps": 100_000, "log_every": 5})
            while lab.get_run(run_id)["status"] != "running" or lab.get_run(run_id)["step"] < 5:
                time.sleep(0.5)
            time.sleep(WARMUP_S)
            phases: dict[str, tuple[float, float]] = {}
            latencies: list[float] = []
            errors: list[str] = []
            processes = {"service": psutil.Process(find_service(home)["pid"]), "clients (this process)":
                         psutil.Process(), "training worker": psutil.Process(lab.get_run(run_id)["pid"])}
            cpu: dict[str, dict[str, float]] = {}
            for phase in ("idle", "loaded", "idle again"):
                start = time.time()
                before = {name: cpu_seconds(p) for name, p in processes.items()}
                stop = threading.Event()
                threads = [threading.Thread(target=poll, args=(home, run_id, stop, latencies, errors))
                           for _ in range(CLIENTS if phase == "loaded" else 0)]
                for t in threads:
                    t.start()
                time.sleep(PHASE_S)
                stop.set()
                for t in threads:
                    t.join()
                phases[phase] = (start, time.time())
                cpu[phase] = {name: (cpu_seconds(p) - before[name]) / (time.time() - start)
                              for name, p in processes.items()}
            speed = {p: steps_per_s(lab, run_id, *window) for p, window in phases.items()}
            lab.cancel(run_id)
            lab.wait([run_id], timeout=60)
            lab.close()
        finally:
            stop_service(home)
    ms = np.array(latencies) * 1000
    idle = statistics.mean([speed["idle"], speed["idle again"]])
    return [
        row(NAME, f"requests in {PHASE_S:.0f} s by {CLIENTS} clients (every {POLL_S:.0f} s: runs, run, series)",
            len(latencies) + len(errors), "requests", None, digits=0),
        row(NAME, "errors", len(errors), "requests", "< 1", digits=0),
        row(NAME, "latency p50", float(np.percentile(ms, 50)), "ms", None),
        row(NAME, "latency p95", float(np.percentile(ms, 95)), "ms", "< 200"),
        row(NAME, "latency max", float(ms.max()), "ms", None),
        row(NAME, "training speed, idle (mean of the idle phases before and after)", idle, "steps/s", None, 2),
        row(NAME, "training speed, idle before / idle after", speed["idle"] / speed["idle again"], "x", None, 3),
        row(NAME, "training speed under load / idle", speed["loaded"] / idle, "x", ">= 0.9", 3),
    ] + [row(NAME, f"CPU use, {phase}: {name}", share, "cores", None, 2)
         for phase in ("idle", "loaded") for name, share in cpu[phase].items()
         ] + ([row(NAME, f"first error: {errors[0][:120]}", 0, "", None)] if errors else [])


if __name__ == "__main__":
    print(pd.DataFrame(run()).to_string(index=False))
