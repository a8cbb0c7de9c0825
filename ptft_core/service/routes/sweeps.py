"""Sweeps: the table, one sweep's row, progress, trials and effects, launch and cancel."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel

from ptft_core.service.answers import arrow, record
from ptft_core.service.deps import Lab

router = APIRouter(prefix="/api/sweeps")


class SweepLaunch(BaseModel):
    """A sweep spec (ptft_core.sweeps.spec: base config, space, objective, sampler, pruner, trials) to launch."""

    spec: dict[str, Any]
    name: str | None = None


@router.get("")
def sweep_table(lab: Lab) -> Response:
    return arrow(lab.sweep_table())


@router.get("/{sweep_id}")
def get_sweep(sweep_id: str, lab: Lab) -> dict[str, Any]:
    return record(lab.get_sweep(sweep_id))


@router.get("/{sweep_id}/progress")
def sweep_progress(sweep_id: str, lab: Lab) -> dict[str, Any]:
    return record(asdict(lab.sweep_progress(sweep_id)))


@router.get("/{sweep_id}/trials")
def sweep_trials(sweep_id: str, lab: Lab) -> Response:
    return arrow(lab.sweep_trials(sweep_id))


@router.get("/{sweep_id}/effects")
def sweep_effects(sweep_id: str, lab: Lab) -> Response:
    return arrow(lab.sweep_effects(sweep_id))


@router.post("", status_code=201)
def launch_sweep(body: SweepLaunch, lab: Lab) -> dict[str, str]:
    return {"id": lab.launch_sweep(body.spec, name=body.name)}


@router.post("/{sweep_id}/cancel")
def cancel_sweep(sweep_id: str, lab: Lab) -> dict[str, list[str]]:
    return {"cancelled": lab.cancel_sweep(sweep_id)}
