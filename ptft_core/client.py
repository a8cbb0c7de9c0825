"""The lab client: the one way the dashboard, the demo and the CLI reach the lab service (`ptft_core.service`).

    lab = connect()                        # the service of PTFT_HOME (started if none runs and start=True)
    run_id = lab.submit(config)
    lab.metric_series([run_id], names=["loss"])

`LabClient` is the lab contract (`ptft_core.lab.Lab`) over HTTP; `ptft_core.service.local.LocalLab` is the same
contract in the service's process, and one shared test suite holds the two equal. Its reads return what the
store's do (DataFrames from Arrow IPC, row dicts with aware datetimes), so the studies' progress and report code
runs on either. Errors come back as the contract's: an unknown id is `UnknownId` (a KeyError), a bad config or
value `ConfigError`, a refusal by the run's state `Refused` (both ValueErrors), a viewer's write
`PermissionError`, no service `ServiceUnavailable`.

Discovery: a service announces itself in `PTFT_HOME/service.json` (url, pid) and keeps its tokens in
`PTFT_HOME/service-tokens.json` (0600); clients on the machine read both. When the service restarts (on
another port), the client finds it again on its next call. Nothing here imports torch or the engine.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pandas as pd
import pyarrow as pa

from ptft_core import paths
from ptft_core.config import ConfigError, RunConfig, config_to_dict
from ptft_core.data.errors import DataError
from ptft_core.data.info import DatasetInfo
from ptft_core.data.registry import check_new_name
from ptft_core.ids import is_id
from ptft_core.lab import TERMINAL, Refused, UnknownId
from ptft_core.predictor import TIMEOUT_S as PREDICTOR_TIMEOUT_S
from ptft_core.service.tokens import TOKENS_NAME
from ptft_core.store.store import check_export_path, write_export
from ptft_core.studies.driver import StudyProgress
from ptft_core.sweeps.driver import SweepProgress

TOKEN_ENV = "PTFT_TOKEN"  # a token given to a client (a demo server started with a viewer link)
READ_ONLY_ENV = "PTFT_READ_ONLY"  # set by `demo`: the dashboard shows the lab and offers no action
DEMO_TOKEN_ENV = "PTFT_DEMO_TOKEN_REQUIRED"  # set by `demo` when it serves beyond loopback: visitors bring a token
TIME_KEYS = ("created_at", "started_at", "finished_at", "heartbeat", "queued_at")
START_TIMEOUT = 120.0  # seconds for a service to announce itself: imports on a busy 2-core machine
# A prediction's answer: the predictor's own limit (its start and a model's load included), and the way back.
ANSWER_TIMEOUT = PREDICTOR_TIMEOUT_S + 30.0


class ServiceUnavailable(ConnectionError):
    """No lab service answers for this home."""


# --- finding, starting and stopping the service -------------------------------------------------------------------


def _serving(pid: int) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "serve" in proc.cmdline()
    except (psutil.Error, OSError):
        return False


def find_service(home: Path | None = None) -> dict[str, Any] | None:
    """The announcement of the service that runs for `home` ({url, pid, started}), or None."""
    try:
        info = json.loads(paths.service_file(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if _serving(int(info.get("pid") or 0)) else None


def start_service(home: Path | None = None, args: Sequence[str] = (),
                  timeout: float = START_TIMEOUT) -> tuple[dict[str, Any], subprocess.Popen]:
    """Start `python -m ptft_core serve --port 0` for `home` and wait until it announces itself.

    It runs in a session of its own: the dashboard's service survives a `kill -9` of Streamlit, and a Ctrl-C in
    a terminal does not stop the service a CLI command started (the command cancels its runs through it, then
    stops it). Its output goes to `PTFT_HOME/service.log`. If another service wins the store first (two starts
    at once), that one is returned.
    """
    home = Path(home or paths.home())
    env = {**os.environ, "PTFT_HOME": str(home), "PYTHONPATH": paths.child_pythonpath(os.environ)}
    with paths.service_log(home).open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ptft_core", "serve", "--port", "0", *args],
                                cwd=paths.REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = find_service(home)
        if info is not None:
            return info, proc
        if proc.poll() is not None:  # exited: refused (store locked by a service still starting) or failed
            info = find_service(home)
            if info is not None:
                return info, proc
            tail = paths.service_log(home).read_text(encoding="utf-8", errors="replace")[-1500:]
            raise ServiceUnavailable(f"the lab service did not start (exit {proc.returncode}):\n{tail}")
        time.sleep(0.1)  # waiting for the announcement file: the event itself, bounded by the timeout
    proc.kill()
    raise ServiceUnavailable(f"the lab service did not announce itself within {timeout:.0f} s "
                             f"(see {paths.service_log(home)})")


def stop_service(home: Path | None = None, timeout: float = 60.0) -> bool:
    """SIGTERM the service of `home` and wait for it to exit (it removes its announcement). False if none ran."""
    info = find_service(home)
    if info is None:
        return False
    pid = int(info["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    import psutil

    with contextlib.suppress(psutil.Error):
        psutil.Process(pid).wait(timeout=timeout)
    return True


def read_token(home: Path | None = None, role: str = "editor") -> str:

    path = (home or paths.home()) / TOKENS_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))[role]
    except (OSError, ValueError, KeyError):
        raise ServiceUnavailable(f"no {role} token in {path}: start the service once (`python -m ptft_core serve`)"
                                 ) from None


def connect(home: Path | None = None, role: str = "editor", start: bool = False,
            token: str | None = None) -> LabClient:
    """A client of the service of `home`; with `start=True` a detached service is started when none runs."""
    home = Path(home or paths.home())
    client = LabClient(home, role=role, token=token, autostart=start)
    client.locate()
    return client


# --- the client --------------------------------------------------------------------------------------------------


def _frame(response: httpx.Response) -> pd.DataFrame:
    with pa.ipc.open_stream(io.BytesIO(response.content)) as reader:
        return reader.read_all().to_pandas()


def _row(data: dict[str, Any]) -> dict[str, Any]:
    """A run or study row as the store gives it: aware datetimes, None for missing values."""
    for key in TIME_KEYS:
        if data.get(key) is not None:
            data[key] = pd.Timestamp(data[key]).to_pydatetime()
    return data


_COLLECTION = {"run": "runs", "study": "studies", "sweep": "sweeps"}


def _at(what: str, found_id: str, rest: str = "") -> str:
    """The route of one run, study or sweep; a text without an id's shape is unknown here, never a URL part."""
    if not is_id(found_id):
        raise UnknownId(f"no {what} {str(found_id)[:80]!r} in this lab")
    return f"/api/{_COLLECTION[what]}/{found_id}{rest}"


class LabClient:
    """The lab contract (`ptft_core.lab.Lab`) over HTTP, for one home; see the module docstring."""

    def __init__(self, home: Path, role: str = "editor", token: str | None = None, autostart: bool = False,
                 timeout: float = 60.0):
        self.home = Path(home)
        self.wanted_role = role
        self.autostart = autostart
        self.timeout = timeout
        self._token = token or os.environ.get(TOKEN_ENV)
        self._http: httpx.Client | None = None
        self.url: str | None = None

    # -- connection ------------------------------------------------------------------------------------------------
    def locate(self) -> LabClient:
        """(Re)read where the service listens, starting one if allowed; ServiceUnavailable otherwise."""
        info = find_service(self.home)
        if info is None and self.autostart:
            info, _ = start_service(self.home)
        if info is None:
            raise ServiceUnavailable(f"no lab service runs for {self.home}: start it with `make run` or "
                                     "`python -m ptft_core serve`")
        if info["url"] != self.url or self._http is None:
            token = self._token or read_token(self.home, self.wanted_role)
            if self._http is not None:
                self._http.close()
            self._http = httpx.Client(base_url=info["url"], headers={"Authorization": f"Bearer {token}"},
                                      timeout=self.timeout)
            self.url = info["url"]
        return self

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> LabClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._http is None:
            self.locate()
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError:
            self.locate()  # restarted elsewhere (or gone: ServiceUnavailable)
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ServiceUnavailable(f"the lab service at {self.url} does not answer: {exc}") from None
        if response.status_code < 400:
            return response
        try:
            body = response.json()
            detail, error = body.get("detail", response.text), body.get("error")
        except ValueError:
            detail, error = response.text, None
        detail = detail if isinstance(detail, str) else json.dumps(detail)
        if response.status_code == 404 and detail == "Not Found":  # the route, not a thing (ours name the thing)
            pid = (find_service(self.home) or {}).get("pid")
            raise ServiceUnavailable(
                f"the lab service at {self.url} has no {method} {path}: it runs older code than this client (it "
                f"was started before an update); stop it (`kill {pid}`: its runs go on) and start it again")
        if response.status_code == 404:
            raise UnknownId(detail)
        if response.status_code in (401, 403):
            raise PermissionError(detail)
        if response.status_code == 422:
            raise DataError(detail) if error == "DataError" else ConfigError(detail)
        if response.status_code == 409:
            raise Refused(detail)
        raise RuntimeError(f"lab service: HTTP {response.status_code}: {detail}")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._call(method, path, **kwargs).json()

    # -- the lab ---------------------------------------------------------------------------------------------------
    def whoami(self) -> dict[str, str]:
        return self._json("GET", "/api/whoami")

    @property
    def role(self) -> str:
        return self.whoami()["role"]

    def devices(self) -> list[dict[str, Any]]:
        return self._json("GET", "/api/devices")

    @property
    def has_gpu(self) -> bool:
        return any(d["kind"] == "cuda" for d in self.devices())

    def queue(self) -> list[dict[str, Any]]:
        return self._json("GET", "/api/queue")

    # -- runs: reads (Store's signatures) ------------------------------------------------------------------------
    def list_runs(self, status: str | Iterable[str] | None = None, kind: str | None = None,
                  tag: str | None = None, study: str | None = None) -> pd.DataFrame:
        statuses = None if status is None else [status] if isinstance(status, str) else list(status)
        params = {k: v for k, v in {"status": statuses, "kind": kind, "tag": tag, "study": study}.items()
                  if v is not None}
        df = _frame(self._call("GET", "/api/runs", params=params))
        df["tags"] = [list(t) if t is not None else [] for t in df["tags"]]
        return df

    def get_run(self, run_id: str) -> dict[str, Any]:
        return _row(self._json("GET", _at("run", run_id)))

    def has_run(self, run_id: str) -> bool:
        try:
            self.get_run(run_id)
        except KeyError:
            return False
        return True

    def last_metrics(self, run_id: str) -> pd.DataFrame:
        return _frame(self._call("GET", _at("run", run_id, "/last-metrics")))

    def artifacts(self, run_id: str) -> pd.DataFrame:
        return _frame(self._call("GET", _at("run", run_id, "/artifacts")))

    def predict(self, run_ids: Sequence[str], texts: Sequence[str], max_length: int = 0) -> pd.DataFrame:
        return _frame(self._call("POST", "/api/query/predict", timeout=ANSWER_TIMEOUT,
                                 json={"run_ids": list(run_ids), "texts": list(texts), "max_length": max_length}))

    def inference_cost(self, run_id: str, texts: Sequence[str] | None = None) -> pd.DataFrame:
        return _frame(self._call("POST", "/api/query/inference-cost", timeout=ANSWER_TIMEOUT,
                                 json={"run_id": run_id, "texts": None if texts is None else list(texts)}))

    def log_tail(self, run_id: str, max_bytes: int = 20_000) -> str:
        return self._call("GET", _at("run", run_id, "/log"), params={"max_bytes": max_bytes}).text

    def metric_series(self, run_ids: Sequence[str], names: Sequence[str] | None = None,
                      splits: Sequence[str] | None = None, x: str = "step", max_points: int = 2000) -> pd.DataFrame:
        body = {"run_ids": list(run_ids), "names": None if names is None else list(names),
                "splits": None if splits is None else list(splits), "x": x, "max_points": max_points}
        return _frame(self._call("POST", "/api/query/series", json=body))

    def metric_names(self, run_ids: Sequence[str]) -> pd.DataFrame:
        return _frame(self._call("POST", "/api/query/metric-names", json={"run_ids": list(run_ids)}))

    def config_diff(self, run_ids: Sequence[str]) -> pd.DataFrame:
        return _frame(self._call("POST", "/api/query/config-diff", json={"run_ids": list(run_ids)})).set_index("key")

    def seconds_per_step(self, run_ids: Sequence[str]) -> dict[str, float]:
        return self._json("POST", "/api/query/seconds-per-step", json={"run_ids": list(run_ids)})

    def metric_rows(self, run_ids: Sequence[str]) -> pd.DataFrame:
        return _frame(self._call("POST", "/api/query/metric-rows", json={"run_ids": list(run_ids)}))

    def export_metrics(self, run_ids: Sequence[str], path: str | Path) -> Path:
        """The store's export (metrics file + `<stem>.runs.json`), written here from the service's answers."""

        check_export_path(path)
        rows = [self.get_run(r) for r in run_ids]  # KeyError on an unknown id, before writing anything
        return write_export(self.metric_rows(run_ids), rows, path)

    # -- runs: control (Engine's signatures) ---------------------------------------------------------------------
    def submit(self, config: RunConfig | dict, priority: int = 0, parent: str | None = None,
               study: str | None = None, tags: Iterable[str] = (), name: str | None = None) -> str:
        data = config if isinstance(config, dict) else config_to_dict(config)
        body = {"config": data, "priority": priority, "parent": parent, "study": study, "tags": list(tags),
                "name": name}
        return self._json("POST", "/api/runs", json=body)["id"]

    def submit_group(self, configs: Sequence[RunConfig | dict], parent: str | None = None) -> list[str]:
        """Queue configs together (one per seed); more than one become a study, so Compare picks them together."""
        body = {"configs": [c if isinstance(c, dict) else config_to_dict(c) for c in configs], "parent": parent}
        return self._json("POST", "/api/run-groups", json=body)["ids"]

    def cancel(self, run_id: str) -> str:
        return self._json("POST", _at("run", run_id, "/cancel"))["status"]

    def resume(self, run_id: str) -> str:
        return self._json("POST", _at("run", run_id, "/resume"))["id"]

    def retry(self, run_id: str) -> str:
        return self._json("POST", _at("run", run_id, "/retry"))["id"]

    def delete(self, run_id: str) -> None:
        self._call("DELETE", _at("run", run_id))

    def set_tags(self, run_id: str, tags: Iterable[str]) -> None:
        self._call("PUT", _at("run", run_id, "/tags"), json={"tags": list(tags)})

    def set_notes(self, run_id: str, notes: str) -> None:
        self._call("PUT", _at("run", run_id, "/notes"), json={"notes": notes})

    def wait(self, run_ids: Sequence[str], timeout: float | None = None) -> dict[str, str]:
        """Poll until every run is final; run_id -> status. TimeoutError after `timeout` seconds."""
        interval = 0.5  # a status read costs one cached answer of the service

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            statuses = {r: self.get_run(r)["status"] for r in run_ids}
            if all(s in TERMINAL for s in statuses.values()):
                return statuses
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"runs not finished after {timeout} s: {statuses}")
            time.sleep(interval)

    # -- studies ---------------------------------------------------------------------------------------------------
    def study_table(self) -> pd.DataFrame:
        """One row per study with its progress: the service's `studies.driver.list_studies`, which knows the
        cross-domain evaluations it runs."""
        return _frame(self._call("GET", "/api/studies"))

    def get_study(self, study_id: str) -> dict[str, Any]:
        data = self._json("GET", _at("study", study_id))
        if isinstance(data.get("config"), str):
            data["config"] = json.loads(data["config"])
        return _row(data)

    def study_progress(self, study_id: str):
        """The study's `StudyProgress`, as the service (which runs its cross-domain evaluations) sees it."""

        return StudyProgress(**_row(self._json("GET", _at("study", study_id, "/progress"))))

    def launch_study(self, template: str, preset: str = "quick", tiny: bool = False, name: str | None = None) -> str:
        body = {"template": template, "preset": preset, "tiny": tiny, "name": name}
        return self._json("POST", "/api/studies", json=body)["id"]

    def cancel_study(self, study_id: str) -> list[str]:
        return self._json("POST", _at("study", study_id, "/cancel"))["cancelled"]

    # -- sweeps ----------------------------------------------------------------------------------------------------
    def sweep_table(self) -> pd.DataFrame:
        """One row per sweep with its progress (`sweeps.driver.list_sweeps`, from the service's Optuna studies)."""
        return _frame(self._call("GET", "/api/sweeps"))

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        data = self._json("GET", _at("sweep", sweep_id))
        if isinstance(data.get("spec"), str):
            data["spec"] = json.loads(data["spec"])
        return _row(data)

    def sweep_progress(self, sweep_id: str):

        return SweepProgress(**_row(self._json("GET", _at("sweep", sweep_id, "/progress"))))

    def sweep_trials(self, sweep_id: str) -> pd.DataFrame:
        """One row per trial (`sweeps.driver.TRIAL_COLUMNS`, then one column per searched field)."""
        return _frame(self._call("GET", _at("sweep", sweep_id, "/trials")))

    def sweep_effects(self, sweep_id: str) -> pd.DataFrame:
        """Which settings matter: `sweeps.effects.EFFECT_COLUMNS` per searched field and view."""
        return _frame(self._call("GET", _at("sweep", sweep_id, "/effects")))

    def launch_sweep(self, spec: dict[str, Any], name: str | None = None) -> str:
        """Launch a sweep (a spec as plain data, its `base` a mapping); ConfigError names the field at fault."""
        return self._json("POST", "/api/sweeps", json={"spec": spec, "name": name})["id"]

    def cancel_sweep(self, sweep_id: str) -> list[str]:
        return self._json("POST", _at("sweep", sweep_id, "/cancel"))["cancelled"]

    # -- datasets --------------------------------------------------------------------------------------------------
    def datasets(self) -> list[DatasetInfo]:
        return [DatasetInfo(**info) for info in self._json("GET", "/api/datasets")]

    def dataset_rows(self, name: str, split: str, limit: int = 200) -> pd.DataFrame:
        return _frame(self._call("GET", "/api/datasets/rows", params={"name": name, "split": split, "limit": limit}))

    def add_dataset(self, name: str, filename: str, content: BinaryIO, text_column: str = "text",
                    label_column: str | None = None, overwrite: bool = False) -> DatasetInfo:
        """Upload a file (streamed in chunks) and register it as dataset `name`; DataError names its line."""
        check_new_name(name)
        params = {"filename": filename, "text_column": text_column, "overwrite": overwrite,
                  **({"label_column": label_column} if label_column is not None else {})}
        chunks = iter(lambda: content.read(2**20), b"")
        return DatasetInfo(**self._json("PUT", f"/api/datasets/{name}", params=params, content=chunks))
