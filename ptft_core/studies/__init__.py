"""The studies room: named templates that plan a group of runs (with lineage), queue them through the engine
and turn their metrics into a report with charts and conclusions computed from the data.

- `templates`: the plan types and the registry of the studies; one module per study (`pretraining_helps`,
  `how_much_pretraining`, `further_pretraining`, `finetune_strategy`, `forgetting`, `domain_shift`,
  `pretraining_objective`, `image_transfer`) holds its plan (preset -> planned runs) and its report.
- `costs`: time estimates of a plan (`estimate_seconds`).
- `driver`: `StudyDriver(engine)` launches a plan and, on every `tick()`, submits the runs whose parent
  checkpoint exists and runs cross-domain evaluations; `study_progress`, `list_studies`, `load_study`.
- `report`: pure (DataFrames in, conclusions + plotly figures out) and `report_html` (one self-contained file);
  `stats`: the statistics the reports share.
- `commands`: the `study` CLI sub-command.

Exports resolve lazily: importing this package loads neither torch nor plotly.
"""

from __future__ import annotations

from ptft_core.lazy import lazy_exports

_EXPORTS = {
    "TEMPLATES": "templates",
    "STUDY_PRESETS": "templates",
    "Template": "templates",
    "PlannedRun": "templates",
    "get_template": "templates",
    "list_templates": "templates",
    "build_runs": "templates",
    "estimate_seconds": "costs",
    "StudyDriver": "driver",
    "driver_for": "driver",
    "make_plan": "driver",
    "study_progress": "driver",
    "list_studies": "driver",
    "load_study": "driver",
    "study_report": "driver",
    "build_report": "report",
    "report_html": "report",
    "Report": "report",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
