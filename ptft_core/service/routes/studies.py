"""Studies: the table, one study's row and progress, launch and cancel."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel

from ptft_core.service.answers import arrow, record
from ptft_core.service.deps import Lab

router = APIRouter(prefix="/api/studies")


class StudyLaunch(BaseModel):
    template: str
    preset: str = "quick"
    tiny: bool = False
    name: str | None = None


@router.get("")
def study_table(lab: Lab) -> Response:
    return arrow(lab.study_table())


@router.get("/{study_id}")
def get_study(study_id: str, lab: Lab) -> dict[str, Any]:
    return record(lab.get_study(study_id))


@router.get("/{study_id}/progress")
def study_progress(study_id: str, lab: Lab) -> dict[str, Any]:
    return record(asdict(lab.study_progress(study_id)))


@router.post("", status_code=201)
def launch_study(body: StudyLaunch, lab: Lab) -> dict[str, str]:
    return {"id": lab.launch_study(body.template, body.preset, tiny=body.tiny, name=body.name)}


@router.post("/{study_id}/cancel")
def cancel_study(study_id: str, lab: Lab) -> dict[str, list[str]]:
    return {"cancelled": lab.cancel_study(study_id)}
