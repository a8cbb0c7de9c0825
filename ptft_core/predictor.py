"""Predictions of fine-tuned classifiers, in a process of their own: the service asks, the predictor answers.

Why a process: a prediction loads torch, transformers and a model (seconds, hundreds of MB), which the service,
the dashboard and the demo never import. The service starts the predictor on its first prediction
(`python -m ptft_core.predictor`) and talks to it over its standard input and output, one JSON line a request
({path, texts, max_length}) and one a reply ({labels, probs} or {error}). The predictor keeps the last
`MAX_MODELS` models it loaded (warm: a second prediction of a run costs only the forward passes) and exits when
its input closes, so it never outlives the service.

`Predictor` is the service's side (no torch): one request in the predictor at a time, at most `MAX_WAITING`
more waiting for it (a burst beyond that is refused at once: `Refused`, HTTP 409, never a pile-up), and each
answered within `TIMEOUT_S` or the predictor is killed, the caller told, and the next request starts a fresh one.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ptft_core.lab import Refused

MAX_MODELS = 4  # warm models in the predictor: the arena's side by side (2-4 runs); MiniLM is ~90 MB each
MAX_WAITING = 8  # requests waiting behind the one in the predictor; more are refused at once
TIMEOUT_S = 120.0  # a request's answer, the predictor's start (imports) and a model's load included
THREADS = 2  # torch threads of the predictor: it shares the machine with training runs


class Predictor:
    """The service's handle on the predictor process; see the module docstring."""

    def __init__(self, log: Path | None = None, timeout: float = TIMEOUT_S, max_waiting: int = MAX_WAITING):
        self.log, self.timeout = log, timeout
        self._proc: subprocess.Popen | None = None
        self._busy = threading.Lock()  # the request in the predictor
        self._places = threading.BoundedSemaphore(max_waiting + 1)  # that one and those waiting behind it
        self._buffer = b""

    def predict(self, path: str, texts: list[str], max_length: int) -> dict[str, Any]:
        """The classifier saved at `path` on `texts`: {labels (its label names), probs [texts, labels],
        ms_per_text (this request's forward passes, the model already loaded), model_mb (its weights in memory)}."""
        return self._request({"path": path, "texts": texts, "max_length": max_length})

    def inference_cost(self, path: str, texts: list[str], max_length: int) -> list[dict[str, Any]]:
        """inspect.inference_cost of the classifier saved at `path` on `texts`, measured in the predictor."""
        return self._request({"cost": True, "path": path, "texts": texts, "max_length": max_length})["cost"]

    def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request through the predictor: a place among the waiting ones or `Refused` at once, then its turn."""
        if not self._places.acquire(blocking=False):
            raise Refused("the predictor is busy: too many predictions are waiting; try again in a moment")
        try:
            with self._busy:
                reply = self._ask(request)
        finally:
            self._places.release()
        if "error" in reply:
            raise Refused(f"prediction failed: {reply['error']}")
        return reply

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.stdin.close()  # the predictor's input ends: it exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _ask(self, request: dict[str, Any], retry: bool = True) -> dict[str, Any]:
        proc = self._running()
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
        except OSError:  # it died since (a broken pipe): one fresh start
            self._restart()
            if not retry:
                raise Refused("the predictor could not be started (see predictor.log in the lab home)") from None
            return self._ask(request, retry=False)
        line = self._line(proc, time.monotonic() + self.timeout)
        if line is None:
            self._restart()
            raise Refused(f"the prediction took longer than {self.timeout:.0f} s (or the predictor died); it "
                          "was stopped, the next prediction starts a fresh one")
        return json.loads(line)

    def _running(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            log = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - the child holds it
            self._proc = subprocess.Popen([sys.executable, "-m", "ptft_core.predictor"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=log, env={**os.environ})
            if log is not subprocess.DEVNULL:
                log.close()
            self._buffer = b""
        return self._proc

    def _restart(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def _line(self, proc: subprocess.Popen, deadline: float) -> str | None:
        """The predictor's next line, or None when the deadline passes or it exits first."""
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(timeout=left):
                    return None
                chunk = os.read(proc.stdout.fileno(), 1 << 20)
                if not chunk:  # it exited
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


# --- the predictor process --------------------------------------------------------------------------------------


def serve() -> int:
    """Answer requests from standard input until it closes (see the module docstring)."""
    import torch

    from ptft_core import inspect  # torch: only in the predictor

    torch.set_num_threads(THREADS)
    models: OrderedDict[str, Any] = OrderedDict()  # path -> loaded classifier, least recently used first
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
            path = request["path"]
            if path in models:
                models.move_to_end(path)
            else:
                models[path] = inspect.load_classifier_at(path, attention_maps=False)
                while len(models) > MAX_MODELS:
                    models.popitem(last=False)
            loaded, texts, max_length = models[path], list(request["texts"]), int(request["max_length"])
            if request.get("cost"):
                reply = {"cost": inspect.inference_cost(loaded, texts, max_length)}
            else:
                began = time.perf_counter()
                probs = inspect.predict(loaded, texts, max_length)
                seconds = time.perf_counter() - began
                reply = {"labels": loaded.labels, "probs": probs.tolist(),
                         "ms_per_text": 1000 * seconds / max(1, len(texts)),
                         "model_mb": inspect.model_megabytes(loaded.model)}
        except Exception as exc:  # noqa: BLE001 - every failure is a reply, never the predictor's end
            reply = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]}
        out.write((json.dumps(reply) + "\n").encode())
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(serve())
