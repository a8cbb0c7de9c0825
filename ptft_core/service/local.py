"""`LocalLab`: the lab contract (`ptft_core.lab.Lab`) in-process, over the engine, its store and the study and
sweep drivers. The service's routes call it and nothing else; a test or a tool in the service's own process
may use it directly.

It is where a call's arguments are checked, the same for every client: ids have an id's shape and exist
(`UnknownId` otherwise, before any path is built), each query names at most MAX_RUN_IDS runs, counts lie within
their bounds (`ConfigError`), and an action the run's state refuses is `Refused`. Nothing here imports torch.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from ptft_core.config import ConfigError, RunConfig, check_run_labels, config_from_dict, config_to_dict
from ptft_core.data.errors import DataError
from ptft_core.data.info import SPLITS, DatasetInfo
from ptft_core.data.registry import check_new_name, known_names, list_datasets, load_split, register_user_dataset
from ptft_core.data.user import UPLOAD_SUFFIXES
from ptft_core.engine import Engine
from ptft_core.export import cost_texts, disk_megabytes
from ptft_core.ids import GROUP, is_id, new_id
from ptft_core.lab import (
    COST_TEXTS,
    MAX_DATASET_ROWS,
    MAX_GROUP,
    MAX_LOG_BYTES,
    MAX_METRIC_NAMES,
    MAX_POINTS,
    MAX_PREDICT_RUNS,
    MAX_PREDICT_TEXTS,
    MAX_TEXT_CHARS,
    MAX_UPLOAD_BYTES,
    X_AXES,
    Refused,
    UnknownId,
    bounded,
    run_selection,
)
from ptft_core.predictor import Predictor
from ptft_core.rundir import RunDir
from ptft_core.studies.driver import StudyDriver, StudyProgress, list_studies, study_progress
from ptft_core.sweeps.driver import SweepDriver, SweepProgress, SweepView


def _named(what: str, text: object) -> str:
    return f"no {what} {str(text)[:80]!r} in this lab"


def _refused(action, *args: Any) -> Any:
    """An engine action; its refusal by the run's state (a ValueError that is no ConfigError) is `Refused`."""
    try:
        return action(*args)
    except ConfigError:
        raise
    except ValueError as exc:
        raise Refused(str(exc)) from None


class LocalLab:
    """The lab in this process; see the module docstring."""

    def __init__(self, engine: Engine, studies: StudyDriver, sweeps: SweepDriver):
        self.engine = engine
        self.store = engine.store
        self.studies = studies
        self.sweeps = sweeps
        self.predictor = Predictor(engine.home / "predictor.log")  # started on the first prediction

    # -- ids -------------------------------------------------------------------------------------------------------
    def known(self, run_id: str) -> str:
        if not is_id(run_id) or not self.store.has_run(run_id):
            raise UnknownId(_named("run", run_id))
        return run_id

    def known_runs(self, run_ids: Sequence[str]) -> list[str]:
        """The runs a query names, each once and all known (one lookup for all of them)."""
        ids = run_selection(run_ids)
        found = self.store.statuses([r for r in ids if is_id(r)])
        missing = next((r for r in ids if r not in found), None)
        if missing is not None:
            raise UnknownId(_named("run", missing))
        return ids

    # -- the lab ---------------------------------------------------------------------------------------------------
    def whoami(self) -> dict[str, str]:
        return {"role": "editor", "home": str(self.engine.home)}

    def devices(self) -> list[dict[str, Any]]:
        return self.engine.devices()

    def queue(self) -> list[dict[str, Any]]:
        return self.engine.queue()

    # -- runs: reads -----------------------------------------------------------------------------------------------
    def list_runs(self, status: str | Iterable[str] | None = None, kind: str | None = None,
                  tag: str | None = None, study: str | None = None) -> pd.DataFrame:
        return self.store.list_runs(status=status, kind=kind, tag=tag, study=study)

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self.store.get_run(self.known(run_id))

    def has_run(self, run_id: str) -> bool:
        return is_id(run_id) and self.store.has_run(run_id)

    def last_metrics(self, run_id: str) -> pd.DataFrame:
        return self.store.last_metrics(self.known(run_id))

    def artifacts(self, run_id: str) -> pd.DataFrame:
        return self.store.artifacts(self.known(run_id))

    def predict(self, run_ids: Sequence[str], texts: Sequence[str], max_length: int = 0) -> pd.DataFrame:
        """Each run's class probabilities for each text, from the predictor process (predictor.py): long rows of
        run_id, row (the text's index), label, probability, and the run's inference cost on this request
        (ms_per_text: its forward passes, the model warm; model_mb: its weights in memory). A run must be a
        completed text fine-tune; its own max_length reads the texts unless `max_length` says otherwise."""
        ids = self.known_runs(run_ids)
        if not 1 <= len(ids) <= MAX_PREDICT_RUNS:
            raise ConfigError(f"run_ids: 1 to {MAX_PREDICT_RUNS} classifiers side by side (got {len(ids)})")
        texts = list(texts)
        if not 1 <= len(texts) <= MAX_PREDICT_TEXTS:
            raise ConfigError(f"texts: 1 to {MAX_PREDICT_TEXTS:,} texts in one prediction (got {len(texts):,})")
        long = next((i for i, t in enumerate(texts) if not isinstance(t, str) or len(t) > MAX_TEXT_CHARS), None)
        if long is not None:
            raise ConfigError(f"texts[{long}]: a text of at most {MAX_TEXT_CHARS:,} characters")
        bounded("max_length", max_length, 0, 512)
        frames = []
        for run_id in ids:
            row, final = self.classifier(run_id)
            reply = self.predictor.predict(str(final), texts, max_length or int(row["config"]["max_length"]))
            frame = pd.DataFrame(reply["probs"], columns=reply["labels"]).rename_axis("row").reset_index()
            long = frame.melt(id_vars="row", var_name="label", value_name="probability")
            frames.append(long.sort_values("row", kind="stable")  # labels in the model's order
                          .assign(run_id=run_id, ms_per_text=reply["ms_per_text"], model_mb=reply["model_mb"]))
        return pd.concat(frames, ignore_index=True)[["run_id", "row", "label", "probability", "ms_per_text",
                                                     "model_mb"]]

    def classifier(self, run_id: str) -> tuple[dict[str, Any], Path]:
        """(the row, the final checkpoint folder) of a completed text fine-tune; `Refused` for another run."""
        row = self.store.get_run(run_id)
        folder = RunDir(self.engine.run_dir(run_id))
        if row["kind"] != "finetune":
            raise Refused(f"{run_id} is a run of kind {row['kind']}: predictions come from text fine-tunes")
        if row["status"] != "completed" or not folder.has_checkpoint("final"):
            raise Refused(f"{run_id} is {row['status']}: it has no final checkpoint to predict with")
        return row, folder.checkpoint("final")

    def inference_cost(self, run_id: str, texts: Sequence[str] | None = None) -> pd.DataFrame:
        """What predicting with a fine-tune costs on this machine, measured in the predictor on `texts` (at most
        COST_TEXTS; None: the first COST_TEXTS of its test split): per precision (float32, bf16, dynamic int8) the
        latency of one text (p50, p95, ms), texts/s at batch 32, and the model's size in memory and on disk (MB)."""
        row, final = self.classifier(self.known(run_id))
        config = row["config"]
        texts = cost_texts(config) if texts is None else list(texts)
        if not 1 <= len(texts) <= COST_TEXTS or any(not isinstance(t, str) or len(t) > MAX_TEXT_CHARS for t in texts):
            raise ConfigError(f"texts: 1 to {COST_TEXTS} texts (each is timed alone) of at most {MAX_TEXT_CHARS:,} "
                              f"characters (got {len(texts):,})")
        cost = pd.DataFrame(self.predictor.inference_cost(str(final), texts, int(config["max_length"])))
        return cost.assign(disk_mb=disk_megabytes(final))

    def close(self) -> None:
        """Stop what this lab started besides the engine (the predictor)."""
        self.predictor.close()

    def log_tail(self, run_id: str, max_bytes: int = 20_000) -> str:
        path = RunDir(self.engine.run_dir(self.known(run_id))).log
        bounded("max_bytes", max_bytes, 0, MAX_LOG_BYTES)
        if not path.is_file():
            return ""
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - max_bytes))
            return f.read().decode("utf-8", errors="replace")

    def metric_series(self, run_ids: Sequence[str], names: Sequence[str] | None = None,
                      splits: Sequence[str] | None = None, x: str = "step", max_points: int = 2000) -> pd.DataFrame:
        ids = self.known_runs(run_ids)
        for what, given in (("names", names), ("splits", splits)):
            if given is not None and len(given) > MAX_METRIC_NAMES:
                raise ConfigError(f"{what}: at most {MAX_METRIC_NAMES} in one query (got {len(given):,})")
        if x not in X_AXES:
            raise ConfigError(f"x: must be one of {', '.join(X_AXES)} (got {str(x)[:40]!r})")
        bounded("max_points", max_points, 4, MAX_POINTS)
        return self.store.metric_series(ids, names, splits, x=x, max_points=max_points)

    def metric_names(self, run_ids: Sequence[str]) -> pd.DataFrame:
        return self.store.metric_names(self.known_runs(run_ids))

    def config_diff(self, run_ids: Sequence[str]) -> pd.DataFrame:
        return self.store.config_diff(self.known_runs(run_ids))

    def seconds_per_step(self, run_ids: Sequence[str]) -> dict[str, float]:
        return self.store.seconds_per_step(self.known_runs(run_ids))

    def metric_rows(self, run_ids: Sequence[str]) -> pd.DataFrame:
        return self.store.metric_rows(self.known_runs(run_ids))

    # -- runs: control ---------------------------------------------------------------------------------------------
    def submit(self, config: RunConfig | dict, priority: int = 0, parent: str | None = None,
               study: str | None = None, tags: Iterable[str] = (), name: str | None = None) -> str:
        if parent is not None:
            self.known(parent)
        if study is not None and not is_id(study):
            raise ConfigError(f"study: {str(study)[:80]!r} is not a study id")
        return self.engine.submit(config, priority=priority, parent=parent, study=study, tags=list(tags), name=name)

    def submit_group(self, configs: Sequence[RunConfig | dict], parent: str | None = None) -> list[str]:
        """Queue configs together (one per seed); more than one become a study, so Compare picks them together."""
        if len(configs) > MAX_GROUP:
            raise ConfigError(f"configs: at most {MAX_GROUP} in one group (got {len(configs):,})")
        if parent is not None:
            self.known(parent)
        checked = [config_from_dict(c if isinstance(c, dict) else config_to_dict(c)) for c in configs]  # all first
        study = None
        if len(checked) > 1:
            study = self.store.create_study(new_id(GROUP), checked[0].name or checked[0].kind)
        return [self.engine.submit(c, parent=parent, study=study) for c in checked]

    def cancel(self, run_id: str) -> str:
        return self.engine.cancel(self.known(run_id))

    def resume(self, run_id: str) -> str:
        return _refused(self.engine.resume, self.known(run_id))

    def retry(self, run_id: str) -> str:
        return self.engine.retry(self.known(run_id))

    def delete(self, run_id: str) -> None:
        _refused(self.engine.delete, self.known(run_id))

    def wait(self, run_ids: Sequence[str], timeout: float | None = None) -> dict[str, str]:
        """Block until every run is final; run_id -> status. TimeoutError after `timeout` seconds."""
        return self.engine.wait(self.known_runs(run_ids), timeout=timeout)

    def set_tags(self, run_id: str, tags: Iterable[str]) -> None:
        tags = list(tags)
        check_run_labels(tags=tags)
        self.store.set_tags(self.known(run_id), tags)

    def set_notes(self, run_id: str, notes: str) -> None:
        check_run_labels(notes=notes)
        self.store.set_notes(self.known(run_id), notes)

    # -- studies ---------------------------------------------------------------------------------------------------
    def get_study(self, study_id: str) -> dict[str, Any]:
        if not is_id(study_id):
            raise UnknownId(_named("study", study_id))
        try:
            return self.store.get_study(study_id)
        except KeyError:
            raise UnknownId(_named("study", study_id)) from None

    def study_table(self) -> pd.DataFrame:
        return list_studies(self.store)

    def study_progress(self, study_id: str) -> StudyProgress:
        self.get_study(study_id)
        try:
            return study_progress(self.store, study_id)
        except KeyError as exc:  # a study row without a plan: a group of seeds
            raise Refused(str(exc.args[0])) from None

    def launch_study(self, template: str, preset: str = "quick", tiny: bool = False, name: str | None = None) -> str:
        check_run_labels(name=name)
        try:
            return self.studies.launch(template, preset, tiny=tiny, name=name)
        except KeyError as exc:  # an unknown template or preset: the driver's message names the known ones
            raise ConfigError(str(exc.args[0])) from None

    def cancel_study(self, study_id: str) -> list[str]:
        self.get_study(study_id)
        ids = list(self.store.list_runs(study=study_id, status=["queued", "running"])["id"])
        for run_id in ids:
            self.engine.cancel(run_id)
        return ids

    # -- sweeps ----------------------------------------------------------------------------------------------------
    def _sweep(self, sweep_id: str) -> SweepView:
        if not is_id(sweep_id):
            raise UnknownId(_named("sweep", sweep_id))
        try:
            return self.sweeps.view(sweep_id)
        except KeyError:
            raise UnknownId(_named("sweep", sweep_id)) from None

    def sweep_table(self) -> pd.DataFrame:
        return self.sweeps.table()

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        return self._sweep(sweep_id).row

    def sweep_progress(self, sweep_id: str) -> SweepProgress:
        return self._sweep(sweep_id).progress()

    def sweep_trials(self, sweep_id: str) -> pd.DataFrame:
        return self._sweep(sweep_id).trials()

    def sweep_effects(self, sweep_id: str) -> pd.DataFrame:
        return self._sweep(sweep_id).effects()

    def launch_sweep(self, spec: dict[str, Any], name: str | None = None) -> str:
        check_run_labels(name=name)
        return self.sweeps.launch(spec, name=name)

    def cancel_sweep(self, sweep_id: str) -> list[str]:
        self._sweep(sweep_id)
        return self.sweeps.cancel(sweep_id)

    # -- datasets --------------------------------------------------------------------------------------------------
    def datasets(self) -> list[DatasetInfo]:
        return list_datasets()

    def dataset_rows(self, name: str, split: str, limit: int = 200) -> pd.DataFrame:
        """The first `limit` rows of a split (a preview; a sample for the length histogram)."""
        bounded("limit", limit, 0, MAX_DATASET_ROWS)
        if split not in SPLITS:
            raise ConfigError(f"split: must be one of {', '.join(SPLITS)} (got {str(split)[:40]!r})")
        if not name.startswith("hf:") and name not in known_names():
            raise UnknownId(_named("dataset", name))
        return load_split(name, split).head(limit).reset_index(drop=True)

    def add_dataset(self, name: str, filename: str, content: BinaryIO, text_column: str = "text",
                    label_column: str | None = None, overwrite: bool = False) -> DatasetInfo:
        """Keep an uploaded file under `uploads/<name>-<random>/` (at most MAX_UPLOAD_BYTES, copied in chunks,
        never whole in memory) and register it as dataset `name`. Its errors name the file as the user called it
        and the line or column at fault, never a path of this machine; a file that is not registered is not
        kept."""
        shown = Path(str(filename)).name[:200]
        if Path(shown).suffix.lower() not in UPLOAD_SUFFIXES:
            raise DataError(f"{shown}: unsupported file type; use {', '.join(UPLOAD_SUFFIXES)}")
        check_new_name(name)  # before anything is written
        folder = self.engine.home / "uploads" / f"{name}-{uuid.uuid4().hex[:8]}"  # its own: a failure removes it alone
        folder.mkdir(parents=True)
        target = folder / shown
        try:
            _copy_bounded(content, target, MAX_UPLOAD_BYTES)
            return register_user_dataset(name, target, text_column, label_column, overwrite=overwrite)
        except DataError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise DataError(str(exc).replace(str(target), shown).replace(str(folder), "uploads")) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise


def _copy_bounded(source: BinaryIO, target: Path, limit: int, chunk: int = 2**20) -> None:
    written = 0
    with target.open("wb") as out:
        while block := source.read(chunk):
            written += len(block)
            if written > limit:
                raise DataError(f"{target.name}: larger than {limit // 2**20} MB; a dataset file may have at most "
                                f"{limit:,} bytes")
            out.write(block)
