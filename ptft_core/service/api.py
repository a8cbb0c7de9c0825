"""The lab's HTTP API (FastAPI): the engine's operations and the store's reads, behind tokens.

Every request carries a token (`Authorization: Bearer <token>`, or `?token=` in a demo link): none or a wrong
one is 401, a viewer token on a write is 403, an unknown run id is 404 (ids are looked up in the store, never
joined into a path). Metric series travel as Arrow IPC streams, not row-by-row JSON. Nothing here imports torch.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import pandas as pd
import pyarrow as pa
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from ptft_core.config import ConfigError
from ptft_core.engine import Engine
from ptft_core.service.tokens import Tokens

ARROW_STREAM = "application/vnd.apache.arrow.stream"
Names = Annotated[list[str] | None, Query()]  # repeatable: ?name=loss&name=accuracy


class Submission(BaseModel):
    """A run to queue: its config (a run kind's fields, validated by ptft_core.config) and where it goes."""

    config: dict[str, Any]
    priority: int = 0
    parent: str | None = None
    tags: list[str] = Field(default_factory=list)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows: timestamps as ISO text, NaN and NaT as null."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def arrow_stream(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def create_app(engine: Engine, tokens: Tokens) -> FastAPI:
    app = FastAPI(title="ptft lab service", docs_url=None, redoc_url=None)
    store = engine.store

    def role(request: Request) -> str:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("token")
        found = tokens.role_of(token)
        if found is None:
            raise HTTPException(401, "a valid token is required", headers={"WWW-Authenticate": "Bearer"})
        return found

    def editor(found: str = Depends(role)) -> str:
        if found != "editor":
            raise HTTPException(403, "this token may only read")
        return found

    def known(run_id: str) -> str:
        if not store.has_run(run_id):
            raise HTTPException(404, f"no run {run_id!r}")
        return run_id

    @app.get("/api/whoami")
    def whoami(found: str = Depends(role)) -> dict[str, str]:
        return {"role": found}

    @app.get("/api/runs", dependencies=[Depends(role)])
    def list_runs(status: str | None = None, kind: str | None = None, tag: str | None = None) -> list[dict]:
        return records(store.list_runs(status=status, kind=kind, tag=tag))

    @app.get("/api/runs/{run_id}", dependencies=[Depends(role)])
    def get_run(run_id: str) -> dict[str, Any]:
        return records(pd.DataFrame([store.get_run(known(run_id))]))[0]

    @app.get("/api/runs/{run_id}/metrics", dependencies=[Depends(role)])
    def metrics(run_id: str, name: Names = None, split: Names = None, x: str = "step",
                max_points: int = 2000) -> Response:
        try:
            frame = store.metric_series([known(run_id)], name, split, x=x, max_points=max_points)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return Response(arrow_stream(frame), media_type=ARROW_STREAM)

    @app.post("/api/runs", status_code=201, dependencies=[Depends(editor)])
    def submit(body: Submission) -> dict[str, str]:
        if body.parent is not None:
            known(body.parent)
        try:
            run_id = engine.submit(body.config, priority=body.priority, parent=body.parent, tags=body.tags)
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"id": run_id}

    @app.post("/api/runs/{run_id}/cancel", dependencies=[Depends(editor)])
    def cancel(run_id: str) -> dict[str, str]:
        return {"status": engine.cancel(known(run_id))}

    return app
