"""A run's folder, one owner: the name and meaning of every file a run keeps, and which checkpoints it holds.

```
runs/<run_id>/  run.json          run id, config, attempt (the engine writes it; the worker reads it)
                config.json       the validated config, as queued
                events.jsonl      the journal: every event, appended by the worker, tailed by the engine
                worker.log        the worker's stdout and stderr
                heartbeat         touched by the worker while it lives
                worker.pid        the warm worker that took the run (pid, start time)
                cancel.request    asks a worker to stop and save (a CLI without the store writes it)
                prune.request     the same, for a sweep's pruner, with its reason
                checkpoints/<name>/   a Hugging Face folder (config.json marks it complete), or an image
                                  model's (image_model.json does); step-<N> ones also hold training_state.pt
                                  (resumable); final, best
```

Nothing here imports torch or the store: the engine, the worker, the launchers and the trainers all read the
layout from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "training_state.pt"  # what makes a `step-<N>` checkpoint resumable
# What a checkpoint folder renamed into place holds: a text model's Hugging Face config, or an image model's record.
IMAGE_MODEL_FILE = "image_model.json"  # what rebuilds an image model (training/checkpoint.py)
MODEL_FILES = ("config.json", IMAGE_MODEL_FILE)


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def run_file(self) -> Path:
        return self.path / "run.json"

    @property
    def config_file(self) -> Path:
        return self.path / "config.json"

    @property
    def journal(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def log(self) -> Path:
        return self.path / "worker.log"

    @property
    def claim(self) -> Path:
        """Written by a forked worker when it takes the run: its pid and start time (`worker.fork_server`)."""
        return self.path / "worker.pid"

    @property
    def heartbeat(self) -> Path:
        return self.path / "heartbeat"

    @property
    def cancel_request(self) -> Path:
        return self.path / "cancel.request"

    @property
    def prune_request(self) -> Path:
        """Left by the engine's `prune`: {"reason": ...}. The worker only knows it was asked to stop and reports
        "cancelled"; this file makes that `pruned` (at ingestion, at recovery, and when the worker died without a
        word), so the row never reads cancelled, even across a restart of the engine in between."""
        return self.path / "prune.request"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def read_run(self) -> dict[str, Any]:
        return json.loads(self.run_file.read_text(encoding="utf-8"))

    def checkpoint(self, name: str) -> Path:
        return self.checkpoints / name

    def has_checkpoint(self, name: str) -> bool:
        """Checkpoints are renamed into place when complete, so a folder with its model file is a whole one."""
        return any((self.checkpoint(name) / file).is_file() for file in MODEL_FILES)

    def saved_checkpoints(self) -> list[str]:
        return sorted(p.name for p in self.checkpoints.glob("*") if self.has_checkpoint(p.name))

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """(step, folder) of every complete, resumable `step-<N>` checkpoint, oldest first."""
        found = [(int(p.name[5:]), p) for p in self.checkpoints.glob("step-*")
                 if p.name[5:].isdigit() and (p / STATE_FILE).is_file()]
        return sorted(found)

    def latest_step(self) -> int | None:
        """The step of the newest resumable checkpoint, if any."""
        found = self.step_checkpoints()
        return found[-1][0] if found else None
