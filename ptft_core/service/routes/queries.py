"""Reads that name many runs: POSTs (the list of ids travels in the body), which a viewer may make."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from ptft_core.service.answers import arrow
from ptft_core.service.deps import Answers, Lab

router = APIRouter(prefix="/api/query")


class RunSelection(BaseModel):
    run_ids: list[str]


class SeriesQuery(RunSelection):
    names: list[str] | None = None
    splits: list[str] | None = None
    x: str = "step"
    max_points: int = 2000


@router.post("/series")
def metric_series(body: SeriesQuery, lab: Lab, answers: Answers) -> Response:
    key = ("series", tuple(body.run_ids), None if body.names is None else tuple(body.names),
           None if body.splits is None else tuple(body.splits), body.x, body.max_points)
    return answers.arrow(key, lambda: lab.metric_series(body.run_ids, body.names, body.splits, x=body.x,
                                                        max_points=body.max_points))


@router.post("/metric-names")
def metric_names(body: RunSelection, lab: Lab, answers: Answers) -> Response:
    return answers.arrow(("names", tuple(body.run_ids)), lambda: lab.metric_names(body.run_ids))


@router.post("/config-diff")
def config_diff(body: RunSelection, lab: Lab, answers: Answers) -> Response:
    return answers.arrow(("diff", tuple(body.run_ids)), lambda: lab.config_diff(body.run_ids).reset_index())


@router.post("/seconds-per-step")
def seconds_per_step(body: RunSelection, lab: Lab, answers: Answers) -> dict[str, float]:
    return answers.get(("pace", tuple(body.run_ids)), lambda: lab.seconds_per_step(body.run_ids))


class PredictQuery(RunSelection):
    texts: list[str]
    max_length: int = 0


@router.post("/predict")
def predict(body: PredictQuery, lab: Lab) -> Response:
    return arrow(lab.predict(body.run_ids, body.texts, body.max_length))


class CostQuery(BaseModel):
    run_id: str
    texts: list[str] | None = None


@router.post("/inference-cost")
def inference_cost(body: CostQuery, lab: Lab) -> Response:
    return arrow(lab.inference_cost(body.run_id, body.texts))


@router.post("/metric-rows")
def metric_rows(body: RunSelection, lab: Lab) -> Response:
    return arrow(lab.metric_rows(body.run_ids))
