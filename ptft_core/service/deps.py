"""What the routes depend on: the lab (`LocalLab`), the caller's role (found by the door), and the answer cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ptft_core.service.answers import AnswerCache
from ptft_core.service.local import LocalLab


async def _lab(request: Request) -> LocalLab:
    return request.app.state.lab


async def _role(request: Request) -> str:
    return request.state.role  # set by the door (door.Door) before any route runs


async def _answers(request: Request) -> AnswerCache:
    return request.app.state.answers


Lab = Annotated[LocalLab, Depends(_lab)]
Role = Annotated[str, Depends(_role)]
Answers = Annotated[AnswerCache, Depends(_answers)]
