"""The service's door: a pure-ASGI middleware that checks the token, the role and the declared body size before
a single byte of the body is read, so a request without a token costs the service nothing, however large.

- Every path needs a token (the API, `openapi.json`, a path that does not exist): `Authorization: Bearer
  <token>`, or `?token=` on a GET (a demo link); a write never takes its token from the URL, where logs and
  browser histories keep it. None or a wrong one: 401.
- A write (any method but GET and HEAD, except the read-only queries under /api/query/) needs the editor token:
  403 for a viewer.
- A body larger than MAX_BODY is 413: refused at once when its Content-Length says so, or as soon as a body
  without one (chunked) passes the limit. A dataset upload (PUT /api/datasets/<name>) may be up to
  MAX_UPLOAD_BYTES; its route streams it to disk.

A refusal closes the connection (`Connection: close`) when a body was announced, so the client stops sending
it. The role found is left in `scope["state"]["role"]` for the routes (`deps.Role`).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException

from ptft_core.lab import MAX_UPLOAD_BYTES
from ptft_core.service.tokens import Tokens

# Requests carry configs, specs, id lists and notes: a group of 50 configs is about 100 KB, a note at most 20 KB.
MAX_BODY = 2 * 2**20
READS = frozenset({"GET", "HEAD"})
QUERY_PREFIX = "/api/query/"  # POSTs that only read (they name many runs): a viewer may make them
UPLOAD_PREFIX = "/api/datasets/"  # PUT: a dataset file, streamed to disk


class BodyTooLarge(HTTPException):
    """Raised while a body is read past the limit; an HTTPException, so a route reading the body answers 413."""

    def __init__(self, limit: int):
        super().__init__(413, f"the body has more than {limit:,} bytes")


def is_write(method: str, path: str) -> bool:
    return method not in READS and not path.startswith(QUERY_PREFIX)


def _token(scope: dict[str, Any], headers: dict[bytes, bytes]) -> str | None:
    header = headers.get(b"authorization", b"").decode("latin-1")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    if scope["method"] in READS:
        found = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        return found[0] if found else None
    return None


async def _reply(send, status: int, detail: str, close: bool, extra: tuple = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Door:
    def __init__(self, app, tokens: Tokens, max_body: int = MAX_BODY):
        self.app = app
        self.tokens = tokens
        self.max_body = max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {name.lower(): value for name, value in scope["headers"]}
        declared = headers.get(b"content-length")
        body_coming = (declared not in (None, b"0")) or b"transfer-encoding" in headers
        role = self.tokens.role_of(_token(scope, headers))
        if role is None:
            return await _reply(send, 401, "a valid token is required", body_coming,
                                ((b"www-authenticate", b"Bearer"),))
        if is_write(scope["method"], scope["path"]) and role != "editor":
            return await _reply(send, 403, "this token may only read", body_coming)
        limit = MAX_UPLOAD_BYTES if scope["method"] == "PUT" and scope["path"].startswith(UPLOAD_PREFIX) else \
            self.max_body
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await _reply(send, 400, "Content-Length is not a number", True)
            if size > limit:
                return await _reply(send, 413, f"the body has {size:,} bytes; at most {limit:,}", True)
        scope.setdefault("state", {})["role"] = role
        await self._within_limit(scope, receive, send, limit)

    async def _within_limit(self, scope, receive, send, limit: int) -> None:
        """Pass the request on, counting the body as it is read: past the limit it is 413 (when nothing of the
        answer has gone out yet)."""
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:
            if not started:
                await _reply(send, 413, exc.detail, True)
