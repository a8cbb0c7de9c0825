"""The lab's HTTP API (FastAPI): the lab contract (`ptft_core.lab.Lab`) over HTTP, served from a `LocalLab`.

The door (`door.Door`) checks every request's token, role and body size before the body is read; the routes
(`routes/`, one router per concern) are one call of the lab each; the errors of the contract map to statuses
here, one handler per type: `UnknownId` 404, `ConfigError` 422 (the field named), `DataError` 422 (the file's line
or column), `Refused` 409 (the run's state),
`PermissionError` 403, and a body that does not parse 422 with one line per problem, quoting at most a short
prefix of the bad value. Tables travel as Arrow IPC streams, rows as JSON (`answers`). Nothing here imports torch.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ptft_core.config import ConfigError, shown
from ptft_core.data.errors import DataError
from ptft_core.lab import Refused, UnknownId
from ptft_core.service.answers import AnswerCache
from ptft_core.service.door import Door
from ptft_core.service.local import LocalLab
from ptft_core.service.routes import ROUTERS
from ptft_core.service.tokens import Tokens


def _status(code: int):
    """A handler answering `code` with the error's message and its type (the client raises the same type)."""
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=code)
    return handler


async def _unparsable(request: Request, exc: RequestValidationError) -> JSONResponse:
    """`body.config: Input should be a valid dictionary (got "...")`, one line per problem, short quotes."""
    lines = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        got = f" (got {shown(error['input'])})" if "input" in error else ""
        lines.append(f"{where}: {error.get('msg', 'invalid')}{got}")
    return JSONResponse({"detail": "; ".join(lines)}, status_code=422)


def create_app(lab: LocalLab, tokens: Tokens) -> FastAPI:
    app = FastAPI(title="ptft lab service", docs_url=None, redoc_url=None)
    app.state.lab = lab
    app.state.answers = AnswerCache(lab.store)
    app.add_middleware(Door, tokens=tokens)
    for error, code in ((UnknownId, 404), (ConfigError, 422), (DataError, 422), (Refused, 409),
                        (PermissionError, 403)):
        app.add_exception_handler(error, _status(code))
    app.add_exception_handler(RequestValidationError, _unparsable)
    for router in ROUTERS:
        app.include_router(router)
    return app
