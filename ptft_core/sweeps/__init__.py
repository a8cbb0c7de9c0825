"""Sweeps: a search over a run config's fields, with early stopping of bad trials, on the lab's engine.

- `spec`: the typed sweep spec (`SweepSpec`: base config, search space, objective, sampler, pruner, trials), loaded
  from YAML like a run config, every searched name checked against the base's fields (`ConfigError` names it).
- `driver`: `SweepDriver(engine)` (the service's thread) asks Optuna for trials, submits them as ordinary runs,
  reports their validation values, prunes (`Engine.prune`: the run ends `pruned`) and tells Optuna how each
  ended; the study lives in an Optuna journal under `PTFT_HOME/sweeps/<id>/`, so it survives a restart.
  `SweepView` / `list_sweeps`: trials, progress and which settings matter (the page, the CLI, the API).
- `effects`: which settings matter: each searched field's R² on the objective, with a permutation test.
- `commands`: the `sweep` CLI sub-command.

Exports resolve lazily: importing this package loads neither Optuna nor torch.
"""

from __future__ import annotations

from ptft_core.lazy import lazy_exports

_EXPORTS = {
    "SweepSpec": "spec",
    "load_spec": "spec",
    "spec_from_dict": "spec",
    "SweepDriver": "driver",
    "SweepView": "driver",
    "SweepProgress": "driver",
    "sweep_driver_for": "driver",
    "list_sweeps": "driver",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
