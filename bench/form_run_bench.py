"""Where a short Fine-tune form run spends its time: issue 27's run (MiniLM on 10 % of `movies`, 1 epoch, max length
64, every other field the form's default: 27 optimizer steps, 10 evaluations and step 0's), with the evaluation
as it was ("whole": the whole validation split, 512 train examples and the probes at every evaluation) and as the
defaults are now ("sampled": a fixed 256-example validation sample at every evaluation, 256 train examples and the
probes at one evaluation in 5 and the last), seeds interleaved (whole, sampled, whole, ...), each run through the
engine's local launcher with a warm worker, as the form launches it.

Per run: wall time from the launch to the worker's exit, the run's own phase split (`time` metrics), the training
steps' share of the wall time, the validation points and the test accuracy (the whole test split, best checkpoint);
then per arm the means, and the test accuracy difference with Welch's t-test.

    python -m bench.form_run_bench [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench import save_result, throwaway_home
from bench.startup_bench import wait_until_idle
from ptft_core.config import FinetuneConfig, config_to_dict
from ptft_core.engine.launcher import LocalSubprocessLauncher
from ptft_core.studies.stats import difference, mean_std

FORM_RUN = dict(base="minilm-l6", dataset="movies", label_fraction=0.1, epochs=1, max_length=64)
ARMS = {
    "whole": dict(eval_val_samples=0, eval_train_samples=512, probe_every=1),  # the evaluation before issue 27
    "sampled": {},  # today's defaults
}
PHASES = ("startup_s", "load_s", "data_s", "train_s", "evaluate_s", "probes_s", "checkpoint_s", "test_s")


def one_run(launcher: LocalSubprocessLauncher, home: Path, arm: str, seed: int, index: int) -> dict:
    config = FinetuneConfig(**FORM_RUN, **ARMS[arm], seed=seed)
    run_dir = home / "runs" / f"form-{index}"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_dir.name, "config": config_to_dict(config),
                                                  "attempt": 1}))
    started = time.time()
    worker = launcher.launch(run_dir, {"PTFT_THREADS": str(os.cpu_count() or 1), "PTFT_DEVICE": "cpu",
                                       "CUDA_VISIBLE_DEVICES": ""}, resume=False)
    if worker.wait() != 0:
        raise RuntimeError(f"{arm} seed {seed}: the worker failed; see {run_dir / 'worker.log'}")
    wall = time.time() - started
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    metrics = [e for e in events if e.get("type") == "metric"]
    phases = {e["name"]: e["value"] for e in metrics if e["split"] == "time"}
    return {"arm": arm, "seed": seed, "wall_s": wall, **{p: phases.get(p, 0.0) for p in PHASES},
            "train_share": phases.get("train_s", 0.0) / wall,
            "validation_points": sum(e["split"] == "validation" and e["name"] == "accuracy" for e in metrics),
            "test_accuracy": next(e["value"] for e in metrics if e["split"] == "test" and e["name"] == "accuracy")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    rows = []
    with throwaway_home() as home:
        os.environ["PTFT_HOME"] = str(home)
        launcher = LocalSubprocessLauncher(warm=True)
        try:
            for seed in range(args.seeds):
                for arm in ARMS:
                    launcher.prepare()  # the fork server (once), done importing before the first run comes
                    wait_until_idle(launcher)
                    rows.append(one_run(launcher, home, arm, seed, len(rows)))
                    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}),
                          flush=True)
        finally:
            launcher.close()
    summary = {arm: {key: mean_std([r[key] for r in rows if r["arm"] == arm]).mean
                     for key in ("wall_s", *PHASES, "train_share", "validation_points", "test_accuracy")}
               for arm in ARMS}
    accuracy = {arm: mean_std([r["test_accuracy"] for r in rows if r["arm"] == arm]) for arm in ARMS}
    d = difference(accuracy["sampled"], accuracy["whole"])
    print(f"{'arm':8s} " + " ".join(f"{k:>10s}" for k in ("wall_s", *PHASES, "train_share", "test_acc")))
    for arm, s in summary.items():
        print(f"{arm:8s} " + " ".join(f"{s[k]:10.2f}" for k in ("wall_s", *PHASES, "train_share"))
              + f" {s['test_accuracy']:10.4f}")
    print(f"test accuracy sampled - whole: {d.text()}; wall time whole / sampled: "
          f"{summary['whole']['wall_s'] / summary['sampled']['wall_s']:.2f}x")
    result = {"args": vars(args), "rows": rows, "summary": summary, "accuracy_sampled_minus_whole": d.as_dict()}
    save_result("form_run", result)
    return result


if __name__ == "__main__":
    main()
