"""Time to first step, per run kind, cold and warm: the engine's local launcher starts a real worker, and the clock
runs from its `launch` call to the run's first logged training step, with where the time went (the journal's time
split: `startup_s` = interpreter and imports, or a warm worker's hand-over to its trainer; `load_s` = model and
tokenizer; `data_s` = tokenisation; `probes_s`; the rest is mostly the step-0 evaluation every run does before it
trains). Cold: `python -m ptft_core.worker RUN_DIR`, as before warm workers. Warm: the run's worker is forked from
the fork server, which imported before the run came (the engine starts it with itself). Each kind
runs `--repeats` times, cold and warm interleaved, on a throw-away home that links the prepared data; the median is
reported.

    python -m bench.startup_bench [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from bench import save_result, throwaway_home
from ptft_core.config import config_from_dict, config_to_dict
from ptft_core.engine.launcher import LocalSubprocessLauncher

KINDS = {  # what a user launches first: the built-in configs, cut to a few steps
    "finetune (MiniLM, movies)": "configs/finetune_full.yaml",
    "pretrain from scratch (tiny)": "configs/pretrain_tiny.yaml",
    "further pretraining (MiniLM)": "configs/further_pretrain_minilm.yaml",
}
PHASES = ("startup_s", "load_s", "data_s", "probes_s")


def _config(path: str) -> dict:
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    data.update(max_steps=4, log_every=1)  # the first step is logged the moment it ends
    if data["kind"] == "pretrain":
        data["checkpoint_steps"] = []
    return config_to_dict(config_from_dict(data))


def wait_until_idle(launcher: LocalSubprocessLauncher) -> None:
    """Until the fork server has done its imports: a cold run measured while the server imports beside it would be
    slowed by it, which is not what a cold start costs."""
    server = launcher._server  # the bench may look inside: nothing else needs to know when the server is ready
    if server is not None and not server.ready.wait(300):
        raise RuntimeError("the fork server did not finish its imports in 300 s")


def one_start(launcher: LocalSubprocessLauncher, home: Path, name: str, config: dict, index: int) -> dict:
    run_dir = home / "runs" / f"startup-{index}"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_dir.name, "config": config, "attempt": 1}))
    threads = str(os.cpu_count() or 1)  # one CPU slot: the engine's default
    started = time.time()
    worker = launcher.launch(run_dir, {"PTFT_THREADS": threads, "PTFT_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": ""},
                             resume=False)
    if worker.wait() != 0:
        raise RuntimeError(f"{name}: the worker failed; see {run_dir / 'worker.log'}")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    metrics = [e for e in events if e.get("type") == "metric"]
    first = next(e for e in metrics if e["split"] == "train" and e["name"] == "loss" and e["step"] >= 1)
    phases = {e["name"]: e["value"] for e in metrics if e["split"] == "time"}
    return {"kind": name, "warm": launcher.warm, "first_step_s": first["wall_time"] - started,
            **{p: phases.get(p, 0.0) for p in PHASES}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    configs = {name: _config(path) for name, path in KINDS.items()}
    rows = []
    with throwaway_home() as home:
        os.environ["PTFT_HOME"] = str(home)
        cold, warm = LocalSubprocessLauncher(warm=False), LocalSubprocessLauncher(warm=True)
        try:
            for _ in range(args.repeats):
                for name, config in configs.items():
                    for launcher in (cold, warm):
                        warm.prepare()  # the fork server, started once (again only if it died)
                        wait_until_idle(warm)
                        rows.append(one_start(launcher, home, name, config, len(rows)))
                        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in rows[-1].items()}))
        finally:
            warm.close()
    summary = {}
    for name in KINDS:
        for mode in (False, True):
            mine = [r for r in rows if r["kind"] == name and r["warm"] == mode]
            summary[f"{name}, {'warm' if mode else 'cold'}"] = {
                key: statistics.median(r[key] for r in mine) for key in ("first_step_s", *PHASES)}
    print(f"{'run kind':38s} {'first step':>10s} " + " ".join(f"{p:>9s}" for p in PHASES) + "  (medians, s)")
    for name, s in summary.items():
        print(f"{name:38s} {s['first_step_s']:10.2f} " + " ".join(f"{s[p]:9.2f}" for p in PHASES))
    save_result("startup", {"args": vars(args), "rows": rows, "summary": summary})
    return summary


if __name__ == "__main__":
    main()
