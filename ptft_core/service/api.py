"""The lab's HTTP API (FastAPI): the engine's operations, the study and sweep drivers and the store's reads,
behind tokens.

Every request carries a token (`Authorization: Bearer <token>`, or `?token=` in a demo link): none or a wrong
one is 401, a viewer token on a write is 403, an unknown run, study or sweep id is 404 (ids are looked up in the
store, never joined into a path), an action the run's state refuses (resume without a checkpoint, delete while
running) is 409. Tables travel as Arrow IPC streams (typed: timestamps, lists), not row-by-row JSON; single
rows and small answers as JSON. Reads that name many runs are POSTs under /api/query/ (a viewer may make
them: they change nothing). Answers that come from the store alone are kept until the store's next write
(`AnswerCache`), so many clients polling the same view cost one query per change. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import pyarrow as pa
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from ptft_core.config import ConfigError, config_from_dict
from ptft_core.engine import Engine
from ptft_core.service.tokens import Tokens
from ptft_core.studies.driver import StudyDriver, list_studies, study_progress
from ptft_core.sweeps.driver import SweepDriver

ARROW_STREAM = "application/vnd.apache.arrow.stream"
Repeated = Annotated[list[str] | None, Query()]  # ?status=queued&status=running


class Submission(BaseModel):
    """A run to queue: its config (a run kind's fields, validated by ptft_core.config) and where it goes."""

    config: dict[str, Any]
    priority: int = 0
    parent: str | None = None
    study: str | None = None
    tags: list[str] = Field(default_factory=list)
    name: str | None = None


class Group(BaseModel):
    """Several configs launched together (one per seed): with more than one they become a study of their own,
    named after the first, so Compare picks them together."""

    configs: list[dict[str, Any]]
    parent: str | None = None


class StudyLaunch(BaseModel):
    template: str
    preset: str = "quick"
    tiny: bool = False
    name: str | None = None


class SweepLaunch(BaseModel):
    """A sweep spec (ptft_core.sweeps.spec: base config, space, objective, sampler, pruner, trials) to launch."""

    spec: dict[str, Any]
    name: str | None = None


class RunSelection(BaseModel):
    run_ids: list[str]


class SeriesQuery(RunSelection):
    names: list[str] | None = None
    splits: list[str] | None = None
    x: str = "step"
    max_points: int = 2000


class Tags(BaseModel):
    tags: list[str]


class Notes(BaseModel):
    notes: str


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows: timestamps as ISO text, NaN and NaT as null."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def record(row: dict[str, Any]) -> dict[str, Any]:
    """One row (a run, a study, a progress) as JSON-safe values, the same way as `records`."""
    return records(pd.DataFrame([row]))[0]


def arrow_bytes(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


class AnswerCache:
    """Answers of store reads, kept until the store's next write (`Store.revision`): twenty clients polling the
    same run list cost one query per change of the store, not twenty. A write during a computation labels the
    answer with the revision seen before it, so the next request recomputes; nothing stale outlives a change."""

    def __init__(self, store, size: int = 512):
        self.store = store
        self.size = size
        self._answers: OrderedDict[tuple, tuple[int, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        revision = self.store.revision
        with self._lock:
            hit = self._answers.get(key)
            if hit is not None and hit[0] == revision:
                self._answers.move_to_end(key)
                return hit[1]
        answer = compute()
        with self._lock:
            self._answers[key] = (revision, answer)
            self._answers.move_to_end(key)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)
        return answer


def create_app(engine: Engine, tokens: Tokens, driver: StudyDriver, sweeps: SweepDriver | None = None) -> FastAPI:
    app = FastAPI(title="ptft lab service", docs_url=None, redoc_url=None)
    store = engine.store
    cache = AnswerCache(store)

    def arrow(key: tuple, frame: Callable[[], pd.DataFrame]) -> Response:
        return Response(cache.get(key, lambda: arrow_bytes(frame())), media_type=ARROW_STREAM)

    # The token checks are `async`: run on the event loop, not handed to the thread pool (one hop less per request).
    async def role(request: Request) -> str:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("token")
        found = tokens.role_of(token)
        if found is None:
            raise HTTPException(401, "a valid token is required", headers={"WWW-Authenticate": "Bearer"})
        return found

    async def editor(found: str = Depends(role)) -> str:
        if found != "editor":
            raise HTTPException(403, "this token may only read")
        return found

    def known(run_id: str) -> str:
        if not cache.get(("known", run_id), lambda: store.has_run(run_id)):
            raise HTTPException(404, f"no run {run_id!r}")
        return run_id

    def known_runs(run_ids: list[str]) -> list[str]:
        return [known(r) for r in run_ids]

    def refused(action, *args) -> Any:
        """An engine action; a refusal by the run's state (ValueError) is 409, with the engine's reason."""
        try:
            return action(*args)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None

    read = [Depends(role)]
    write = [Depends(editor)]

    # -- the lab ------------------------------------------------------------------------------------------------
    @app.get("/api/whoami")
    async def whoami(found: str = Depends(role)) -> dict[str, str]:
        return {"role": found, "home": str(engine.home)}

    @app.get("/api/devices", dependencies=read)
    def devices() -> list[dict[str, Any]]:
        return engine.devices()

    @app.get("/api/queue", dependencies=read)
    def queue() -> list[dict[str, Any]]:
        return cache.get(("queue",), lambda: records(pd.DataFrame(engine.queue())))

    # -- runs ------------------------------------------------------------------------------------------------------
    @app.get("/api/runs", dependencies=read)
    def list_runs(status: Repeated = None, kind: str | None = None, tag: str | None = None,
                  study: str | None = None) -> Response:
        key = ("runs", tuple(status or ()), kind, tag, study)
        return arrow(key, lambda: store.list_runs(status=status, kind=kind, tag=tag, study=study))

    @app.get("/api/runs/{run_id}", dependencies=read)
    def get_run(run_id: str) -> dict[str, Any]:
        return cache.get(("run", known(run_id)), lambda: record(store.get_run(run_id)))

    @app.get("/api/runs/{run_id}/last-metrics", dependencies=read)
    def last_metrics(run_id: str) -> Response:
        return arrow(("last", known(run_id)), lambda: store.last_metrics(run_id))

    @app.get("/api/runs/{run_id}/artifacts", dependencies=read)
    def artifacts(run_id: str) -> Response:
        return arrow(("artifacts", known(run_id)), lambda: store.artifacts(run_id))

    @app.get("/api/runs/{run_id}/log", dependencies=read, response_class=PlainTextResponse)
    def log_tail(run_id: str, max_bytes: int = 20_000) -> str:
        path = engine.run_dir(known(run_id)) / "worker.log"
        if not path.is_file():
            return ""
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - max(0, max_bytes)))
            return f.read().decode("utf-8", errors="replace")

    @app.post("/api/runs", status_code=201, dependencies=write)
    def submit(body: Submission) -> dict[str, str]:
        if body.parent is not None:
            known(body.parent)
        try:
            run_id = engine.submit(body.config, priority=body.priority, parent=body.parent, study=body.study,
                                   tags=body.tags, name=body.name)
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"id": run_id}

    @app.post("/api/run-groups", status_code=201, dependencies=write)
    def submit_group(body: Group) -> dict[str, list[str]]:
        if body.parent is not None:
            known(body.parent)
        try:
            configs = [config_from_dict(c) for c in body.configs]  # all checked before any is queued
            study = None
            if len(configs) > 1:
                study = f"study-{datetime.now(UTC):%Y%m%d-%H%M%S}-{os.urandom(2).hex()}"
                store.create_study(study, configs[0].name or configs[0].kind)
            ids = [engine.submit(c, parent=body.parent, study=study) for c in configs]
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"ids": ids}

    @app.post("/api/runs/{run_id}/cancel", dependencies=write)
    def cancel(run_id: str) -> dict[str, str]:
        return {"status": engine.cancel(known(run_id))}

    @app.post("/api/runs/{run_id}/resume", dependencies=write)
    def resume(run_id: str) -> dict[str, Any]:
        refused(engine.resume, known(run_id))
        return {"id": run_id, "attempt": store.get_run(run_id)["attempt"]}

    @app.post("/api/runs/{run_id}/retry", status_code=201, dependencies=write)
    def retry(run_id: str) -> dict[str, str]:
        return {"id": engine.retry(known(run_id))}

    @app.delete("/api/runs/{run_id}", dependencies=write)
    def delete(run_id: str) -> dict[str, str]:
        refused(engine.delete, known(run_id))
        return {"deleted": run_id}

    @app.put("/api/runs/{run_id}/tags", dependencies=write)
    def set_tags(run_id: str, body: Tags) -> dict[str, list[str]]:
        store.set_tags(known(run_id), body.tags)
        return {"tags": store.get_run(run_id)["tags"]}

    @app.put("/api/runs/{run_id}/notes", dependencies=write)
    def set_notes(run_id: str, body: Notes) -> dict[str, str]:
        store.set_notes(known(run_id), body.notes)
        return {"notes": body.notes}

    # -- queries over many runs (reads, so viewers may make them) --------------------------------------------------
    @app.post("/api/query/series", dependencies=read)
    def metric_series(body: SeriesQuery) -> Response:
        ids = known_runs(body.run_ids)
        key = ("series", tuple(ids), tuple(body.names or ()), body.names is None, tuple(body.splits or ()),
               body.splits is None, body.x, body.max_points)
        try:
            return arrow(key, lambda: store.metric_series(ids, body.names, body.splits, x=body.x,
                                                          max_points=body.max_points))
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.post("/api/query/metric-names", dependencies=read)
    def metric_names(body: RunSelection) -> Response:
        ids = known_runs(body.run_ids)
        return arrow(("names", tuple(ids)), lambda: store.metric_names(ids))

    @app.post("/api/query/config-diff", dependencies=read)
    def config_diff(body: RunSelection) -> Response:
        ids = known_runs(body.run_ids)
        return arrow(("diff", tuple(ids)), lambda: store.config_diff(ids).reset_index())

    @app.post("/api/query/seconds-per-step", dependencies=read)
    def seconds_per_step(body: RunSelection) -> dict[str, float]:
        ids = known_runs(body.run_ids)
        return cache.get(("pace", tuple(ids)), lambda: store.seconds_per_step(ids))

    @app.post("/api/query/metric-rows", dependencies=read)
    def metric_rows(body: RunSelection) -> Response:
        return Response(arrow_bytes(store.metric_rows(known_runs(body.run_ids))), media_type=ARROW_STREAM)

    # -- studies ---------------------------------------------------------------------------------------------------
    def known_study(study_id: str) -> dict[str, Any]:
        try:
            return store.get_study(study_id)
        except KeyError:
            raise HTTPException(404, f"no study {study_id!r}") from None

    @app.get("/api/studies", dependencies=read)
    def studies() -> Response:
        return Response(arrow_bytes(list_studies(store)),
                        media_type=ARROW_STREAM)

    @app.get("/api/studies/{study_id}", dependencies=read)
    def get_study(study_id: str) -> dict[str, Any]:
        return record(known_study(study_id))

    @app.get("/api/studies/{study_id}/progress", dependencies=read)
    def progress(study_id: str) -> dict[str, Any]:
        known_study(study_id)
        try:
            found = study_progress(store, study_id)
        except KeyError as exc:  # a study row without a plan
            raise HTTPException(409, str(exc.args[0])) from None
        return record(asdict(found))

    @app.post("/api/studies", status_code=201, dependencies=write)
    def launch_study(body: StudyLaunch) -> dict[str, str]:
        try:
            study_id = driver.launch(body.template, body.preset, tiny=body.tiny, name=body.name)
        except (KeyError, ValueError, ConfigError) as exc:
            raise HTTPException(422, str(exc.args[0] if isinstance(exc, KeyError) else exc)) from None
        return {"id": study_id}

    @app.post("/api/studies/{study_id}/cancel", dependencies=write)
    def cancel_study(study_id: str) -> dict[str, list[str]]:
        known_study(study_id)
        ids = list(store.list_runs(study=study_id, status=["queued", "running"])["id"])
        for run_id in ids:
            engine.cancel(run_id)
        return {"cancelled": ids}

    # -- sweeps ----------------------------------------------------------------------------------------------------
    sweeps = sweeps or SweepDriver(engine)

    def sweep_view(sweep_id: str):
        try:
            return sweeps.view(sweep_id)
        except KeyError:
            raise HTTPException(404, f"no sweep {sweep_id!r}") from None

    @app.get("/api/sweeps", dependencies=read)
    def list_sweeps() -> Response:
        return Response(arrow_bytes(sweeps.table()), media_type=ARROW_STREAM)

    @app.get("/api/sweeps/{sweep_id}", dependencies=read)
    def get_sweep(sweep_id: str) -> dict[str, Any]:
        return record(sweep_view(sweep_id).row)

    @app.get("/api/sweeps/{sweep_id}/progress", dependencies=read)
    def sweep_progress(sweep_id: str) -> dict[str, Any]:
        return record(asdict(sweep_view(sweep_id).progress()))

    @app.get("/api/sweeps/{sweep_id}/trials", dependencies=read)
    def sweep_trials(sweep_id: str) -> Response:
        return Response(arrow_bytes(sweep_view(sweep_id).trials()), media_type=ARROW_STREAM)

    @app.get("/api/sweeps/{sweep_id}/effects", dependencies=read)
    def sweep_effects(sweep_id: str) -> Response:
        return Response(arrow_bytes(sweep_view(sweep_id).effects()), media_type=ARROW_STREAM)

    @app.post("/api/sweeps", status_code=201, dependencies=write)
    def launch_sweep(body: SweepLaunch) -> dict[str, str]:
        try:
            return {"id": sweeps.launch(body.spec, name=body.name)}
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None

    @app.post("/api/sweeps/{sweep_id}/cancel", dependencies=write)
    def cancel_sweep(sweep_id: str) -> dict[str, list[str]]:
        sweep_view(sweep_id)
        return {"cancelled": sweeps.cancel(sweep_id)}

    app.state.home = Path(engine.home)
    return app
