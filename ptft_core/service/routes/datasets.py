"""Datasets: the lab's list, a split's first rows, and an upload registered as a user dataset. The upload's body
is streamed to a spooled file (the door lets it be up to MAX_UPLOAD_BYTES on this route alone), never read whole
into memory."""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from ptft_core.service.answers import arrow
from ptft_core.service.deps import Lab

router = APIRouter(prefix="/api/datasets")
SPOOL_BYTES = 8 * 2**20  # an upload beyond this waits on disk, not in memory


@router.get("")
def datasets(lab: Lab) -> list[dict[str, Any]]:
    return [asdict(info) for info in lab.datasets()]


@router.get("/rows")
def dataset_rows(lab: Lab, name: str, split: str = "train", limit: int = 200) -> Response:
    return arrow(lab.dataset_rows(name, split, limit))


@router.put("/{name}", status_code=201)
async def add_dataset(name: str, request: Request, lab: Lab, filename: str, text_column: str = "text",
                      label_column: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        info = await run_in_threadpool(lab.add_dataset, name, filename, spool, text_column, label_column, overwrite)
    return asdict(info)
