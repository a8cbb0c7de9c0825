"""The service's access tokens, as Jupyter keeps its token: random, created at first start, stored in
`PTFT_HOME/service-tokens.json` with mode 0600 so that only the user's own processes (the dashboard, the CLI)
read them. Two roles: `editor` (everything) and `viewer` (read only: what a demo link carries).
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

TOKENS_NAME = "service-tokens.json"
ROLES = ("editor", "viewer")


@dataclass(frozen=True)
class Tokens:
    editor: str
    viewer: str

    def role_of(self, token: str | None) -> str | None:
        """The role a presented token grants, or None; constant-time comparisons (no timing oracle)."""
        if not token:
            return None
        found = None
        for role in ROLES:
            if hmac.compare_digest(token.encode(), getattr(self, role).encode()):
                found = role
        return found


def load_or_create(home: Path) -> Tokens:
    """The lab's tokens; created (0600, never overwritten) on first use."""
    path = Path(home) / TOKENS_NAME
    if not path.exists():
        fresh = Tokens(editor=secrets.token_urlsafe(32), viewer=secrets.token_urlsafe(32))
        # Written whole under a private name, then linked into place: a reader never sees a half-written file,
        # and of two first starts at once, one set of tokens wins.
        tmp = path.with_name(f".{TOKENS_NAME}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(asdict(fresh), out)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    data = json.loads(path.read_text(encoding="utf-8"))
    return Tokens(editor=data["editor"], viewer=data["viewer"])
