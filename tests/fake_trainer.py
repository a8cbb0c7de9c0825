"""A stand-in trainer for the engine and worker tests: `PTFT_TRAINER=tests.fake_trainer:run`.

It is a real loop with the real trainer's contract, minus the model: one step every `PTFT_FAKE_STEP_S`
seconds (default 0.05), train `loss` and `lr` logged through the real `JournalWriter` at every step,
`progress {step, total_steps}` events, a validation `loss` and a checkpoint every `eval_every` steps (and at
`checkpoint_steps`, on a stop request and at the end; `final` when it completes), `should_stop()` honoured
after the current step, and
`resume=True` continuing from the newest `checkpoints/step-<N>/training_state.pt` (a pickle of the loop's
state, not a torch file: the tests stay free of torch's import time).

Its loss is a deterministic function of (seed, step), so a resumed run's series is the same as an
uninterrupted one. `PTFT_FAKE_FAIL_AT=<step>` raises at that step (the failure path).
`PTFT_FAKE_IMPORT_GATE=<file>` holds this module's import until that file exists: a fork server that is not ready
yet, for as long as a test needs it.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

STATE_FILE = "training_state.pt"

if _gate := os.environ.get("PTFT_FAKE_IMPORT_GATE"):
    while not Path(_gate).exists():
        time.sleep(0.05)


def loss_at(seed: int, step: int) -> float:
    return 5.0 * math.exp(-step / 20.0) + 0.5 + 0.05 * random.Random(seed * 1_000_003 + step).random()


def save_checkpoint(run_dir: Path, step: int, state: dict, name: str | None = None) -> Path:
    folder = Path(run_dir) / "checkpoints" / (name or f"step-{step}")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / STATE_FILE).write_bytes(pickle.dumps(state))
    (tmp / "config.json").write_text("{}", encoding="utf-8")  # what marks a whole checkpoint (RunDir.has_checkpoint)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = [(int(p.name[5:]), p) for p in (Path(run_dir) / "checkpoints").glob("step-*")
             if p.name[5:].isdigit() and (p / STATE_FILE).is_file()]
    return max(found)[1] if found else None


def load_state(folder: Path) -> dict:
    return pickle.loads((Path(folder) / STATE_FILE).read_bytes())


def run(config, run_dir, logger, *, should_stop: Callable[[], bool] = lambda: False, resume: bool = False,
        device: str | None = None) -> str:
    run_dir = Path(run_dir)
    step_s = float(os.environ.get("PTFT_FAKE_STEP_S", "0.05"))
    fail_at = int(os.environ.get("PTFT_FAKE_FAIL_AT", "0"))
    total = getattr(config, "max_steps", 0) or 20  # an evaluate config has neither: the defaults
    every = max(1, getattr(config, "eval_every", 1))
    extra = set(getattr(config, "checkpoint_steps", []) or [])
    step, tokens = 0, 0
    if resume:
        folder = latest_checkpoint(run_dir)
        if folder is None:
            raise RuntimeError("resume: no checkpoint")
        state = load_state(folder)
        step, tokens = state["step"], state["tokens_seen"]
        logger.event("resume", step=step, path=str(folder))
    logger.event("progress", step=step, total_steps=total)
    # What the worker set up for us, for the worker tests to check.
    logger.event("worker_env", threads=os.environ.get("PTFT_THREADS"), device=device,
                 imported_duckdb="duckdb" in sys.modules, imported_store="ptft_core.store" in sys.modules)

    def checkpoint() -> None:
        path = save_checkpoint(run_dir, step, {"step": step, "tokens_seen": tokens, "seed": config.seed})
        logger.event("checkpoint", step=step, path=str(path))

    while step < total:
        time.sleep(step_s)
        step += 1
        tokens += 1000
        if fail_at and step == fail_at:
            raise RuntimeError(f"injected failure at step {step}")
        logger.metric(step, "loss", loss_at(config.seed, step), "train", epoch=step / total, tokens_seen=tokens)
        logger.metric(step, "lr", 1e-3 * (1 - step / total), "train", epoch=step / total, tokens_seen=tokens)
        logger.event("progress", step=step, total_steps=total)
        if step % every == 0 or step == total:
            logger.metric(step, "loss", loss_at(config.seed, step) + 0.1, "validation", epoch=step / total,
                          tokens_seen=tokens)
        if step % every == 0 or step in extra or step == total:
            checkpoint()
        if should_stop() and step < total:
            if step % every and step not in extra:
                checkpoint()
            return "cancelled"
    save_checkpoint(run_dir, step, {"step": step, "tokens_seen": tokens, "seed": config.seed}, name="final")
    return "completed"
