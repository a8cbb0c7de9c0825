"""Runs: the list, one run's row, metrics, artifacts and log, and their control (submit, cancel, resume, retry,
delete, tags, notes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from ptft_core.service.answers import record
from ptft_core.service.deps import Answers, Lab

router = APIRouter(prefix="/api")
Repeated = Annotated[list[str] | None, Query(max_length=20)]  # ?status=queued&status=running


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


class Tags(BaseModel):
    tags: list[str]


class Notes(BaseModel):
    notes: str


@router.get("/runs")
def list_runs(lab: Lab, answers: Answers, status: Repeated = None, kind: str | None = None, tag: str | None = None,
              study: str | None = None) -> Response:
    key = ("runs", tuple(status or ()), kind, tag, study)
    return answers.arrow(key, lambda: lab.list_runs(status=status, kind=kind, tag=tag, study=study))


@router.get("/runs/{run_id}")
def get_run(run_id: str, lab: Lab, answers: Answers) -> dict[str, Any]:
    return answers.get(("run", run_id), lambda: record(lab.get_run(run_id)))


@router.get("/runs/{run_id}/last-metrics")
def last_metrics(run_id: str, lab: Lab, answers: Answers) -> Response:
    return answers.arrow(("last", run_id), lambda: lab.last_metrics(run_id))


@router.get("/runs/{run_id}/artifacts")
def artifacts(run_id: str, lab: Lab, answers: Answers) -> Response:
    return answers.arrow(("artifacts", run_id), lambda: lab.artifacts(run_id))


@router.get("/runs/{run_id}/log", response_class=PlainTextResponse)
def log_tail(run_id: str, lab: Lab, max_bytes: int = 20_000) -> str:
    return lab.log_tail(run_id, max_bytes)


@router.post("/runs", status_code=201)
def submit(body: Submission, lab: Lab) -> dict[str, str]:
    return {"id": lab.submit(body.config, priority=body.priority, parent=body.parent, study=body.study,
                             tags=body.tags, name=body.name)}


@router.post("/run-groups", status_code=201)
def submit_group(body: Group, lab: Lab) -> dict[str, list[str]]:
    return {"ids": lab.submit_group(body.configs, parent=body.parent)}


@router.post("/runs/{run_id}/cancel")
def cancel(run_id: str, lab: Lab) -> dict[str, str]:
    return {"status": lab.cancel(run_id)}


@router.post("/runs/{run_id}/resume")
def resume(run_id: str, lab: Lab) -> dict[str, str]:
    return {"id": lab.resume(run_id)}


@router.post("/runs/{run_id}/retry", status_code=201)
def retry(run_id: str, lab: Lab) -> dict[str, str]:
    return {"id": lab.retry(run_id)}


@router.delete("/runs/{run_id}")
def delete(run_id: str, lab: Lab) -> dict[str, str]:
    lab.delete(run_id)
    return {"deleted": run_id}


@router.put("/runs/{run_id}/tags")
def set_tags(run_id: str, body: Tags, lab: Lab) -> dict[str, list[str]]:
    lab.set_tags(run_id, body.tags)
    return {"tags": lab.get_run(run_id)["tags"]}


@router.put("/runs/{run_id}/notes")
def set_notes(run_id: str, body: Notes, lab: Lab) -> dict[str, str]:
    lab.set_notes(run_id, body.notes)
    return {"notes": body.notes}
