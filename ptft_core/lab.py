"""The lab contract: what a client may read and do, one typed protocol with two implementations.

- `ptft_core.service.local.LocalLab`: in-process, the engine, its store and the study and sweep drivers;
- `ptft_core.client.LabClient`: over HTTP, the service's routes (`ptft_core.service.routes`), which call a
  `LocalLab` and nothing else.

A type checker holds both to `Lab`, and one shared test suite (`tests/test_lab_contract.py`) runs against both, so
the dashboard, the CLI and the demo, written against `Lab`, behave the same on either. `RunReads` is the part the
study and sweep reports need, which the run store (`ptft_core.store.Store`) also has.

Errors are the same on both sides: an unknown id is `UnknownId` (a KeyError; HTTP 404), a bad config or a value out
of bounds `ConfigError` (a ValueError; 422, with the field named), a file that cannot become a dataset `DataError`
(422, naming the line or column), an action the run's state refuses `Refused` (a ValueError; 409), a viewer's
write `PermissionError` (403). The bounds on what one call may ask are here, with why.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, runtime_checkable

from ptft_core.config import ConfigError, RunConfig

if TYPE_CHECKING:  # the types only: importing them would pull the drivers into every client
    import pandas as pd

    from ptft_core.data.info import DatasetInfo
    from ptft_core.studies.driver import StudyProgress
    from ptft_core.sweeps.driver import SweepProgress

# The contract's vocabulary: a run's statuses, which of them resume, the x axes a metric series may take.
TERMINAL = ("completed", "failed", "cancelled", "interrupted", "pruned")
STATUSES = ("queued", "running", *TERMINAL)
RESUMABLE = ("interrupted", "cancelled", "failed", "pruned")  # from their newest checkpoint
X_AXES = ("step", "epoch", "tokens_seen", "wall_time")

# Bounds of one call; each refuses a request that would make the service read, compute or send without limit.
MAX_RUN_IDS = 1_000  # runs named in one query: more than any chart tells apart (a full study has under 100)
MAX_METRIC_NAMES = 200  # metric names (or splits) in one series query: every metric a run here logs, many times over
MAX_POINTS = 100_000  # points per series: a chart's width in pixels, a hundred times over
MAX_LOG_BYTES = 1_000_000  # of a worker's log in one answer: the last megabyte says what went wrong
MAX_GROUP = 50  # configs launched together (one per seed): 50 seeds is past any power a study here needs
MAX_DATASET_ROWS = 5_000  # rows of a dataset in one answer: a preview, or the sample of a length histogram
MAX_UPLOAD_BYTES = 200 * 2**20  # a dataset file: 200 MB is a million texts of 200 characters, past what trains here
MAX_PREDICT_RUNS = 4  # classifiers side by side in one prediction: the arena's 2-4; each is a model in memory
MAX_PREDICT_TEXTS = 2_000  # texts in one prediction: a built-in test split (movies: 1,061) at once
MAX_TEXT_CHARS = 5_000  # characters of one text to classify: a page; a model reads at most 512 tokens of it
COST_TEXTS = 64  # texts a run's inference cost is timed on, each alone then batched: seconds a precision on a CPU


class UnknownId(KeyError):
    """No run, study or sweep of that id in this lab; the message names it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Refused(ValueError):
    """The run's state refuses the action (resume without a checkpoint, delete while running)."""


def run_selection(run_ids: Sequence[str]) -> list[str]:
    """The runs a query names, each once, in order; ConfigError past MAX_RUN_IDS."""
    unique = list(dict.fromkeys(run_ids))
    if len(unique) > MAX_RUN_IDS:
        raise ConfigError(f"run_ids: at most {MAX_RUN_IDS:,} runs in one query (got {len(unique):,})")
    return unique


def bounded(name: str, value: int, low: int, high: int) -> int:
    """`value` if it lies in [low, high]; ConfigError naming the parameter otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name}: must be a whole number in [{low:,}, {high:,}] (got {str(value)[:40]})")
    return value


@runtime_checkable
class RunReads(Protocol):
    """The reads of runs and their metrics: the store has them, and so does every lab."""

    def list_runs(self, status: str | Iterable[str] | None = None, kind: str | None = None,
                  tag: str | None = None, study: str | None = None) -> pd.DataFrame: ...
    def get_run(self, run_id: str) -> dict[str, Any]: ...
    def has_run(self, run_id: str) -> bool: ...
    def last_metrics(self, run_id: str) -> pd.DataFrame: ...
    def artifacts(self, run_id: str) -> pd.DataFrame: ...
    def metric_series(self, run_ids: Sequence[str], names: Sequence[str] | None = None,
                      splits: Sequence[str] | None = None, x: str = "step",
                      max_points: int = 2000) -> pd.DataFrame: ...
    def metric_names(self, run_ids: Sequence[str]) -> pd.DataFrame: ...
    def config_diff(self, run_ids: Sequence[str]) -> pd.DataFrame: ...
    def seconds_per_step(self, run_ids: Sequence[str]) -> dict[str, float]: ...
    def metric_rows(self, run_ids: Sequence[str]) -> pd.DataFrame: ...
    def get_study(self, study_id: str) -> dict[str, Any]: ...


@runtime_checkable
class Lab(RunReads, Protocol):
    """Everything a client of the lab may read and do."""

    # the lab
    def whoami(self) -> dict[str, str]: ...
    def devices(self) -> list[dict[str, Any]]: ...
    def queue(self) -> list[dict[str, Any]]: ...

    # runs
    def predict(self, run_ids: Sequence[str], texts: Sequence[str], max_length: int = 0) -> pd.DataFrame: ...
    def inference_cost(self, run_id: str, texts: Sequence[str] | None = None) -> pd.DataFrame: ...
    def log_tail(self, run_id: str, max_bytes: int = 20_000) -> str: ...
    def submit(self, config: RunConfig | dict, priority: int = 0, parent: str | None = None,
               study: str | None = None, tags: Iterable[str] = (), name: str | None = None) -> str: ...
    def submit_group(self, configs: Sequence[RunConfig | dict], parent: str | None = None) -> list[str]: ...
    def cancel(self, run_id: str) -> str: ...
    def resume(self, run_id: str) -> str: ...
    def retry(self, run_id: str) -> str: ...
    def delete(self, run_id: str) -> None: ...
    def wait(self, run_ids: Sequence[str], timeout: float | None = None) -> dict[str, str]: ...
    def set_tags(self, run_id: str, tags: Iterable[str]) -> None: ...
    def set_notes(self, run_id: str, notes: str) -> None: ...

    # studies
    def study_table(self) -> pd.DataFrame: ...
    def study_progress(self, study_id: str) -> StudyProgress: ...
    def launch_study(self, template: str, preset: str = "quick", tiny: bool = False,
                     name: str | None = None) -> str: ...
    def cancel_study(self, study_id: str) -> list[str]: ...

    # sweeps
    def sweep_table(self) -> pd.DataFrame: ...
    def get_sweep(self, sweep_id: str) -> dict[str, Any]: ...
    def sweep_progress(self, sweep_id: str) -> SweepProgress: ...
    def sweep_trials(self, sweep_id: str) -> pd.DataFrame: ...
    def sweep_effects(self, sweep_id: str) -> pd.DataFrame: ...
    def launch_sweep(self, spec: dict[str, Any], name: str | None = None) -> str: ...
    def cancel_sweep(self, sweep_id: str) -> list[str]: ...

    # datasets
    def datasets(self) -> list[DatasetInfo]: ...
    def dataset_rows(self, name: str, split: str, limit: int = 200) -> pd.DataFrame: ...
    def add_dataset(self, name: str, filename: str, content: BinaryIO, text_column: str = "text",
                    label_column: str | None = None, overwrite: bool = False) -> DatasetInfo: ...
