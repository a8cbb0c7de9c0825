"""The lab itself: who the caller is, the devices, the queue."""

from __future__ import annotations

from typing import Any

import pandas as pd
from fastapi import APIRouter

from ptft_core.service.answers import records
from ptft_core.service.deps import Answers, Lab, Role

router = APIRouter(prefix="/api")


@router.get("/whoami")
async def whoami(lab: Lab, role: Role) -> dict[str, str]:
    """The caller's role; the lab's home folder only to an editor (a viewer has no business with server paths)."""
    found = lab.whoami()
    return found | {"role": role} if role == "editor" else {"role": role}


@router.get("/devices")
def devices(lab: Lab) -> list[dict[str, Any]]:
    return lab.devices()


@router.get("/queue")
def queue(lab: Lab, answers: Answers) -> list[dict[str, Any]]:
    return answers.get(("queue",), lambda: records(pd.DataFrame(lab.queue())))
