"""The lab's ids, one owner: sortable, readable and unique, `pt-20250102-153045-1a2b3c`.

The prefix says what the id names: pt/ft/ev a pretraining, fine-tuning or evaluation run, ip/if an image
pretraining or fine-tune, st a study, sw a sweep, gr a group of seeds launched together. Ids are looked up in the
store, never joined into a path unchecked; a text that does not have an id's shape is refused before any lookup
(`is_id`).
"""

from __future__ import annotations

import re
import time
import uuid

RUN_PREFIX = {"pretrain": "pt", "finetune": "ft", "evaluate": "ev", "image_pretrain": "ip", "image_finetune": "if"}
STUDY, SWEEP, GROUP = "st", "sw", "gr"
# Ids minted by earlier versions had other shapes (`study-...` groups, test ids): any short word of letters,
# digits, '-', '_' and '.' that is not a path step passes; the store decides whether it exists.
_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def new_id(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def new_run_id(kind: str) -> str:
    return new_id(RUN_PREFIX.get(kind, kind[:2]))


def is_id(text: object) -> bool:
    """Whether `text` has the shape of an id (at most 100 characters, no '/', not '..')."""
    return isinstance(text, str) and _SHAPE.fullmatch(text) is not None and ".." not in text
