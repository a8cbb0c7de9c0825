"""What the dashboard's pages share (this is not a page): the lab client, read-only mode, URL query params,
form -> config builders, launch estimates, run labels and formatting. Never imports torch.

The dashboard is a client of the lab service (`ptft_core.client`): one `LabClient` per process, home, role and
token (`st.cache_resource`). The service owns the engine and the run store, so every page, every browser
session, the read-only demo and the CLI see the same live lab, and a `kill -9` of Streamlit changes nothing for
the runs. The editor dashboard starts a service (detached) when none runs; the demo only reads, with the viewer
token. Pages read and act through `lab()`; nothing here writes SQL or opens the store.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import streamlit as st

from ptft_core import arena, data, inspect, paths, plots
from ptft_core.client import DEMO_TOKEN_ENV, READ_ONLY_ENV, TOKEN_ENV, LabClient, ServiceUnavailable, connect
from ptft_core.config import (
    BUILTIN_CHECKPOINT,
    EVALUATE_SPLIT,
    IMAGE_KINDS,
    IMAGE_MODELS,
    PRESETS,
    ConfigError,
    FinetuneConfig,
    ImageFinetuneConfig,
    ImagePretrainConfig,
    OptimConfig,
    PretrainConfig,
    RunConfig,
    config_class,
    field_spec,
    flatten,
    task_steps,
    with_seed,
)
from ptft_core.lab import Lab
from ptft_core.specs import parent_run

ACTIVE = ("queued", "running")
STATUS_ICONS = {"queued": ":material/schedule:", "running": ":material/autorenew:",
                "completed": ":material/check_circle:", "failed": ":material/error:",
                "cancelled": ":material/stop_circle:", "interrupted": ":material/warning:",
                "pruned": ":material/content_cut:"}  # Streamlit markdown
# Masked-LM training throughput in tokens/s (batch 32 x block 128, AdamW, ptft's masked-positions-only MLM head,
# float32, 2 threads) measured on this project's 2-core CPU machines with `run_pretrain`; they turn
# steps x batch x block into a time estimate on the Pretrain page. A GPU is one to two orders of magnitude faster.
CPU_TOKENS_PER_S: dict[str, float] = {
    "tiny": 18_000,
    "mini": 4_500,
    "small": 1_500,
    "base": 230,
    BUILTIN_CHECKPOINT: 1_300,
}
POINTS_PER_FIGURE = 100_000  # points a chart may hold in all; each series gets its share (see points_per_series)


# --- the engine and read-only mode --------------------------------------------------------------------------------


def read_only() -> bool:
    """Demo mode (`PTFT_READ_ONLY=1`): every launch, cancel, delete and edit control is hidden."""
    return os.environ.get(READ_ONLY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# A demo viewer's predictions in a minute (per browser session): a person reading answers asks far fewer; a script
# hammering the demo's predictor is held back before the service sees it.
VIEWER_PREDICTIONS_PER_MINUTE = 20


def prediction_allowed() -> bool:
    """Whether this session may ask for a prediction now: always in the lab; in a read-only demo, at most
    VIEWER_PREDICTIONS_PER_MINUTE in the last minute (this call counted when allowed)."""
    if not read_only():
        return True
    now = time.monotonic()
    recent = [t for t in st.session_state.get("predicted-at", []) if now - t < 60]
    allowed = len(recent) < VIEWER_PREDICTIONS_PER_MINUTE
    st.session_state["predicted-at"] = [*recent, now] if allowed else recent
    return allowed


def _close_lab(client: LabClient) -> None:
    client.close()


@st.cache_resource(show_spinner="Connecting to the lab service…", on_release=_close_lab)
def lab_for(home: str, role: str, token: str | None) -> LabClient:
    """The client of a lab home's service, one per process, role and token; the editor's starts the service
    (detached: it outlives this server) when none runs. A token a demo visitor brought is checked once, here:
    a wrong one (PermissionError) is not cached, and the demo takes the viewer token only."""
    client = connect(Path(home), role=role, start=role == "editor", token=token)
    if token is not None and client.whoami()["role"] != role:
        raise PermissionError(f"the {'demo' if role == 'viewer' else 'lab'} takes the {role} token only")
    return client


def _demo_token() -> str | None:
    """The viewer token a demo visitor brings (`?token=` in the link, or typed), when the demo requires one."""
    if not os.environ.get(DEMO_TOKEN_ENV):
        return os.environ.get(TOKEN_ENV)
    if st.query_params.get("token"):  # kept for the session: moving to another page drops the link's params
        st.session_state["demo-token"] = st.query_params["token"]
    if token := st.session_state.get("demo-token"):
        return token
    st.info("This demo needs the viewer token of the lab (in the link you were given, or ask its owner).",
            icon=":material/key:")
    with st.form("demo-token-form"):
        typed = st.text_input("Viewer token", type="password")
        if st.form_submit_button("Open the demo") and typed.strip():
            st.session_state["demo-token"] = typed.strip()
            st.rerun()
    st.stop()
    return None


def lab() -> Lab:
    """The lab (the contract, `ptft_core.lab.Lab`, over HTTP) of the current `PTFT_HOME`. If no service answers
    (or the token is refused), the page says why and stops; the next rerun tries again."""
    role = "viewer" if read_only() else "editor"
    token = _demo_token() if role == "viewer" else None
    try:
        return lab_for(str(paths.home()), role, token)
    except PermissionError:
        st.session_state.pop("demo-token", None)
        st.error("The token was refused: ask the lab's owner for the viewer link.", icon=":material/key_off:")
    except ServiceUnavailable as exc:
        st.error(f"The lab service is not running: {exc}", icon=":material/cloud_off:")
        lab_for.clear()
    st.stop()
    raise AssertionError("st.stop() raises")  # for type checkers: nothing returns here


def release_labs() -> None:
    """Drop every cached client (tests call this between lab homes; the services go on)."""
    lab_for.clear()


# --- the app frame ----------------------------------------------------------------------------------------------

FRAME_KEY = "ptft-frame"
RETURN_KEY = "ptft-return-to"


def enter_frame(pages: Sequence[Any]) -> None:
    """app.py calls this after `st.navigation(pages)`: marks the session as framed and sends a visit that
    `require_frame` routed through app.py back to the page (and query params) it asked for."""
    st.session_state[FRAME_KEY] = True
    target = st.session_state.pop(RETURN_KEY, None)
    if target is not None:
        url_path, params = target
        page = next((p for p in pages if p.url_path == url_path), None)
        if page is not None:
            st.switch_page(page, query_params=params)


def require_frame() -> None:
    """The first line of every page. Until some session has run app.py, Streamlit's legacy discovery of the
    `pages/` folder serves a page opened by its URL (a shared Compare link, right after the server started)
    on its own: no frame, no navigation. Such a visit goes through app.py, which brings it back here."""
    if st.session_state.get(FRAME_KEY):
        return
    url_path = urlparse(st.context.url or "").path.strip("/").rsplit("/", 1)[-1]
    st.session_state[RETURN_KEY] = (url_path, {key: st.query_params.get_all(key) for key in st.query_params})
    st.switch_page("app.py")


# --- URL query params: a view is a shareable link -----------------------------------------------------------------


def param(key: str, default: str = "") -> str:
    return st.query_params.get(key, default)


def param_list(key: str) -> list[str]:
    """A list kept in the URL as one comma-separated value (`?runs=a,b`)."""
    return [v for v in param(key).split(",") if v]


def set_params(**values: Any) -> None:
    """Write values to the URL (lists comma-joined). None, False and empty values remove the key, so a link
    carries only what differs from the page's defaults."""
    for key, value in values.items():
        text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        if value is None or value is False or not text:
            if key in st.query_params:
                del st.query_params[key]
        elif st.query_params.get(key) != text:
            st.query_params[key] = text


def option_index(options: Sequence[Any], value: Any, default: int = 0) -> int:
    """The index of `value` in `options` (a selectbox's `index=`), `default` when absent."""
    return list(options).index(value) if value in options else default


# --- form -> config builders --------------------------------------------------------------------------------------


def parse_seeds(text: str) -> list[int]:
    """`"0, 1, 2"` -> [0, 1, 2]; ConfigError names what is wrong."""
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise ConfigError(f"seeds: expected comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds:
        raise ConfigError("seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: {text!r} repeats a seed")
    return seeds


def parse_tags(text: str) -> list[str]:
    return sorted({t.strip() for t in text.split(",") if t.strip()})


def short_spec(spec: str) -> str:
    """A model spec as a name part: `run:pt-2025..-1a2b3c/step-100` -> `pt-1a2b3c`, a path -> its last part."""
    run_id = parent_run(spec)
    if run_id:
        return f"{run_id.split('-')[0]}-{run_id.rsplit('-', 1)[-1]}"
    return Path(spec).name or spec


def default_name(config: RunConfig) -> str:
    """A readable run name when the form leaves it empty: `mlm-tiny`, `minilm-l6-movies`, `..-scratch`,
    `resnet-small-mnist`."""
    if isinstance(config, PretrainConfig):
        return f"mlm-{short_spec(config.model)}"
    if isinstance(config, ImagePretrainConfig):
        return f"{config.model}-{config.dataset}"
    if isinstance(config, ImageFinetuneConfig):
        return f"{short_spec(config.base)}-{config.dataset}" + ("-scratch" if config.scratch else "")
    name = f"{short_spec(config.base)}-{config.dataset}"
    if config.then_dataset:
        name += f"-then-{config.then_dataset}"
    return name + ("-scratch" if config.scratch else "")


def build_configs(kind: str, fields: dict[str, Any], optim: dict[str, Any], seeds_text: str = "0") -> list[RunConfig]:
    """The validated configs a launch form describes, one per seed (ConfigError names the field at fault)."""
    cls = config_class(kind)
    seeds = parse_seeds(seeds_text)
    config = cls(**fields, optim=optim)  # a plain mapping: an error names optim.<field>
    if not config.name.strip():
        config = replace(config, name=default_name(config))
    if len(seeds) == 1:
        return [replace(config, seed=seeds[0])]
    return [with_seed(config, seed) for seed in seeds]


def launch(configs: Sequence[RunConfig], parent: str | None = None) -> list[str]:
    """Queue the configs; several seeds of one config become a group (a study), so Compare picks them together."""
    return lab().submit_group(configs, parent=parent)


# --- estimates and formatting -------------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_count(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def pretrain_estimate(config: PretrainConfig, tokens_per_s: float | None) -> tuple[int, float | None]:
    """(tokens the run will see, seconds on CPU at `tokens_per_s`; None when unknown)."""
    tokens = config.max_steps * config.batch_size * config.block_size
    return tokens, tokens / tokens_per_s if tokens_per_s else None


def throughput_for(model: str) -> tuple[float | None, str]:
    """Tokens/s expected for a pretraining `model` spec on CPU, and where the number comes from.

    A preset or the built-in checkpoint: the measured constants above. `run:<id>`: that run's own median
    measured `tokens_per_s`. A folder or hub id: unknown.
    """
    if model in CPU_TOKENS_PER_S:
        return CPU_TOKENS_PER_S[model], f"measured for {model} on 2 CPU cores"
    run_id = parent_run(model)
    if run_id:
        series = lab().metric_series([run_id], names=["tokens_per_s"], splits=["train"])
        if len(series):
            return float(series["value"].median()), f"measured by run {run_id}"
    return None, "no measurement for this checkpoint"


def count(value: Any) -> int | None:
    """A step count from a run row: None for NULL, NaN or NA (a row read through pandas has them before the
    run's first progress event, and a fine-tune without max_steps has no total until then)."""
    if value is None or pd.isna(value):
        return None
    return int(value)


def run_progress(row: dict[str, Any]) -> tuple[int, int | None, float]:
    """(step, total steps or None, share done in [0, 1]) of a run row."""
    step, total = count(row.get("step")) or 0, count(row.get("total_steps"))
    return step, total, min(max(step / total, 0.0), 1.0) if total else 0.0


def eta_seconds(row: dict[str, Any], now: datetime | None = None,
                seconds_per_step: float | None = None) -> float | None:
    """Seconds left for a running run: what the run reports from its own schedule (`eta_s`: its remaining steps,
    evaluations and test at their measured costs); for a run that reports none, its remaining steps at its
    measured pace (`Store.seconds_per_step`) or, before it has logged two training steps, at its rate since it
    started."""
    if (reported := row.get("eta_s")) is not None and not pd.isna(reported):
        return float(reported)
    (step, total, _), started = run_progress(row), row.get("started_at")
    if total and seconds_per_step is not None:
        return max(total - step, 0) * seconds_per_step
    if not step or not total or started is None or pd.isna(started):
        return None
    done = step - (count(row.get("resume_step")) or 0)
    elapsed = ((now or datetime.now(UTC)) - pd.Timestamp(started).to_pydatetime()).total_seconds()
    if done <= 0 or elapsed <= 0:
        return None
    return (total - step) * elapsed / done


def training_pace(row: dict[str, Any]) -> str:
    """The live header's training pace (evaluations apart), " · train 2.70 steps/s", when the run reports it."""
    rate = row.get("train_steps_per_s")
    return "" if rate is None or pd.isna(rate) else f" · train {rate:.2f} steps/s"


STEP_FIELDS = ("batch_size", "epochs", "then_epochs", "max_steps", "replay_fraction", "replay_source")


def finetune_steps(fields: dict[str, Any], examples: int, then_examples: int = 0) -> int:
    """Optimizer steps of the form's fine-tune (both tasks of a sequential one) before any early stop, counted
    as the trainer counts them (`config.task_steps`)."""
    config = FinetuneConfig(**{key: fields[key] for key in STEP_FIELDS if key in fields})
    return task_steps(config, 0, examples)[1] + (task_steps(config, 1, then_examples)[1] if then_examples else 0)


def evaluation_plan(fields: dict) -> str:
    """What a fine-tune scores when, in one line for the form (fields: the form's FinetuneConfig values)."""
    if fields.get("eval_every"):
        when = f"every {fields['eval_every']} steps and at each epoch end"
    else:
        when = f"{fields.get('eval_count', 10)} times spread over each task"
    sample = fields.get("eval_val_samples") or 0
    validation = f"a fixed sample of {sample:,} validation examples" if sample else "the whole validation split"
    every = fields.get("probe_every", 1)
    probes = "each evaluation" if every == 1 else f"one evaluation in {every} (step 0's first) and the last"
    return (f"Scores {validation} at step 0 and {when}; the train sample and the probes at {probes}; the best "
            "checkpoint on the whole test split at the end.")


# --- runs as the pages show them ----------------------------------------------------------------------------------


def run_labels(runs: pd.DataFrame) -> dict[str, str]:
    """run id -> its name, with the id's tail added where names repeat."""
    counts = runs["name"].value_counts()
    return {rid: name if counts[name] == 1 else f"{name} ({rid[-6:]})"
            for rid, name in zip(runs["id"], runs["name"], strict=True)}


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The columns a person scans in a runs table, newest first."""
    table = pd.DataFrame({
        "status": runs["status"],
        "name": runs["name"],
        "kind": runs["kind"],
        "progress": [done if total else None for _, total, done in map(run_progress, runs.to_dict("records"))],
        "device": runs["device"],
        "created": runs["created_at"],
        "tags": [", ".join(t) for t in runs["tags"]],
        "parent": runs["parent_run"].fillna(""),
        "id": runs["id"],
    })
    return table.reset_index(drop=True)


def evaluation_table(last: pd.DataFrame) -> pd.DataFrame:
    """An evaluate run's scores (its `last_metrics`), one row per dataset, one column per metric."""
    scores = last[last["split"] == EVALUATE_SPLIT]
    if scores.empty:
        return pd.DataFrame()
    parts = scores["name"].str.rsplit("@", n=1, expand=True)
    table = scores.assign(metric=parts[0], dataset=parts[1]).pivot(index="dataset", columns="metric", values="value")
    return table[[c for c in EVALUATION_ORDER if c in table] + [c for c in table if c not in EVALUATION_ORDER]]


EVALUATION_ORDER = ("accuracy", "f1", "precision", "recall", "loss", "ece")
EVALUATION_COLUMNS = {name: st.column_config.NumberColumn(name, format="%.4f") for name in EVALUATION_ORDER}


RUNS_COLUMN_CONFIG = {
    "progress": st.column_config.ProgressColumn("progress", format="percent", min_value=0, max_value=1),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
}


def config_value(config: dict[str, Any], key: str) -> str:
    """A flattened config value (`optim.lr`) as text, for grouping and tables."""
    value = flatten(config).get(key)
    return "—" if value is None else str(value)


def points_per_series(n_series: int) -> int:
    """Downsampling target per series so a chart holds about POINTS_PER_FIGURE points (at least 200 each)."""
    return int(min(2000, max(200, POINTS_PER_FIGURE // max(n_series, 1))))


def load_series(source: LabClient, runs: pd.DataFrame, metrics: Sequence[tuple[str, str]], x: str,
                group_key: str | None = None) -> pd.DataFrame:
    """The long metric frame of `runs` (a `list_runs` frame) for exact (split, name) pairs, downsampled in the
    store, with `label` and, when grouping, `group` (the runs' `group_key` config value) joined; runs keep the
    order of `runs` and metrics the order of `metrics`."""
    ids = runs["id"].tolist()
    if not ids or not metrics:
        return pd.DataFrame(columns=["run_id", "split", "name", "x", "value", "label", "group"])
    splits, names = sorted({s for s, _ in metrics}), sorted({n for _, n in metrics})
    df = source.metric_series(ids, names=names, splits=splits, x=x,
                               max_points=points_per_series(len(ids) * len(metrics)))
    # A join on the (split, name) pairs keeps exactly those (the query asked for splits x names) and gives each
    # row its metric's place. Vectorised: per-row tuple maps made the 100-run Compare query 570 ms instead of 330.
    wanted = pd.DataFrame(list(metrics), columns=["split", "name"]).astype(df[["split", "name"]].dtypes.to_dict())
    df = df.merge(wanted.assign(metric_rank=range(len(wanted))), on=["split", "name"])
    df["run_rank"] = df["run_id"].map({rid: i for i, rid in enumerate(ids)})
    df = df.sort_values(["run_rank", "metric_rank", "x"], kind="stable")
    labels = run_labels(runs)
    df["label"] = df["run_id"].map(labels)
    if group_key:
        configs = {rid: config_value(json.loads(c) if isinstance(c, str) else c, group_key)
                   for rid, c in zip(runs["id"], runs["config"], strict=True)}
        df["group"] = df["run_id"].map(configs)
    return df.drop(columns=["run_rank", "metric_rank"]).reset_index(drop=True)


def load_references(source: LabClient, runs: pd.DataFrame) -> pd.DataFrame:
    """The reference rows (split "reference": the unigram / bigram cross-entropy of the pretraining runs, the
    majority-class accuracy of the image runs) among `runs`, with `label`: what
    `plots.metric_figure(references=...)` draws on the loss and accuracy panels."""
    ids = runs.loc[runs["kind"].isin(["pretrain", *IMAGE_KINDS]), "id"].tolist()
    if not ids:
        return pd.DataFrame(columns=["run_id", "split", "name", "x", "value", "label"])
    df = source.metric_series(ids, splits=[plots.REFERENCE_SPLIT], names=list(plots.REFERENCE_LINES))
    return df.assign(label=df["run_id"].map(run_labels(runs)))


# --- data room helpers --------------------------------------------------------------------------------------------

LENGTH_SAMPLE = 2000  # texts per split tokenized for the length histogram; rows per split of an image set's grid
IMAGES_PER_CLASS = 8  # the Data page's grid: a row of this many examples per class


@st.cache_resource(show_spinner=False)
def _wordpiece(path: str):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def token_lengths(texts: Sequence[str]) -> list[int] | None:
    """Lengths in minilm-l6 WordPiece tokens (with [CLS] and [SEP], as a model sees them); None when the
    built-in checkpoint is not prepared. The `tokenizers` package alone: no torch."""
    path = paths.models_dir() / BUILTIN_CHECKPOINT / "tokenizer.json"
    if not path.is_file():
        return None
    return [len(e.ids) for e in _wordpiece(str(path)).encode_batch(list(texts))]


def classifier(run_id: str):
    return inspect.load_classifier(run_id)


@st.cache_resource(show_spinner="Loading the base model…", max_entries=4)
def base_encoder(base: str, scratch: bool, family: str = "bert", dataset: str | None = None):
    return inspect.load_base_encoder(base, scratch, family, dataset)


@st.cache_data(show_spinner="Scoring the test split…", max_entries=8)
def test_probabilities(run_id: str, dataset: str, max_length: int):
    """Class probabilities of a run's final model on the test split of `dataset` (cached per run)."""

    texts = data.load_split(dataset, "test")["text"].tolist()
    return inspect.predict(classifier(run_id), texts, max_length)


@st.cache_resource(show_spinner="Loading the image model…", max_entries=4)
def image_models(run_id: str) -> tuple[inspect.LoadedImages, inspect.LoadedImages]:
    """(what an image run started from, its final model): Inspect's before and after."""
    tuned = inspect.load_image_run(run_id)
    return inspect.load_image_start(lab().get_run(run_id)["config"], tuned), tuned


@st.cache_data(show_spinner="Scoring the test split…", max_entries=8)
def image_test(run_id: str, dataset: str, size: int, channels: int,
               classes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 images [N, C, S, S], labels, class probabilities of the run's final model) of a test split, only
    its rows of `classes` when the run named some (as it trained)."""
    from ptft_core.vision.data import load_images  # torch: only once an image run is inspected

    images = load_images(dataset, "test", size, channels, classes)
    pixels, labels = images.pixels.numpy(), images.labels.numpy()
    return pixels, labels, inspect.predict_images(image_models(run_id)[1], pixels)


# --- charts -------------------------------------------------------------------------------------------------------


def chart(fig, filename: str, data: pd.DataFrame | None = None, key: str | None = None) -> None:
    """A plotly figure in the lab's look (plotly_white, not Streamlit's theme). With `data`: downloads of the
    chart as standalone HTML and of its data as CSV, both generated only when clicked. PNG comes from the
    camera button of the chart's own toolbar (`plots.chart_config`: 2x scale, named `filename`.png)."""
    st.plotly_chart(fig, theme=None, config=plots.chart_config(filename), key=key)
    if data is None:
        return
    row = st.columns([1, 1, 4])
    row[0].download_button("Chart (HTML)", lambda: plots.figure_html(fig, filename), f"{filename}.html",
                           "text/html", on_click="ignore", icon=":material/download:", key=f"{key or filename}-html")
    row[1].download_button("Data (CSV)", lambda: data.to_csv(index=False), f"{filename}.csv", "text/csv",
                           on_click="ignore", icon=":material/download:", key=f"{key or filename}-csv")
    row[2].caption("PNG: the camera button in the chart's toolbar.")


# --- widgets the launch pages share -------------------------------------------------------------------------------

SOURCE_BUILTIN = f"Built-in {BUILTIN_CHECKPOINT}"
SOURCE_RUN = "An earlier run"
SOURCE_PRESET = "A preset (random init)"
SOURCE_HUB = "Hub id or folder"


@st.cache_data(show_spinner="Predicting…", max_entries=16)
def predictions(run_ids: tuple[str, ...], texts: tuple[str, ...]) -> pd.DataFrame:
    """`Lab.predict` of these runs on these texts (the service's predictor, arena.predict_all); cached: a finished
    run's predictions do not change."""
    return arena.predict_all(lab(), run_ids, texts)


def show_error(message: str, exc: BaseException | None = None) -> None:
    """An error as a message (never a traceback): what failed and why."""
    st.error(f"{message}: {exc}" if exc is not None else message, icon=":material/error:")


def datasets_or_stop(modality: str | None = None) -> list[data.DatasetInfo]:
    """The lab's datasets (those of one `modality` when given: "text" or "image"); when the data room cannot be
    read, what failed as a message, and the page stops."""
    try:
        return [d for d in lab().datasets() if modality in (None, d.modality)]
    except data.DataError as exc:
        show_error("The data room could not be read", exc)
        st.stop()


def launch_disabled_note() -> None:
    st.info("Read-only demo mode: launching and editing are switched off (unset PTFT_READ_ONLY to enable them).",
            icon=":material/lock:")


def checkpoint_picker(label: str, key: str, presets: bool = False) -> str | None:
    """A model spec: the built-in checkpoint, `run:<id>` of a completed run, a preset or a hub id / folder.
    None while the choice is incomplete (no completed run yet, an empty id)."""
    sources = [SOURCE_BUILTIN, SOURCE_RUN, *([SOURCE_PRESET] if presets else []), SOURCE_HUB]
    source = st.radio(label, sources, horizontal=True, key=f"{key}-source")
    if source == SOURCE_BUILTIN:
        return BUILTIN_CHECKPOINT
    if source == SOURCE_PRESET:
        return st.selectbox("Preset", PRESETS, key=f"{key}-preset",
                            help="A randomly initialised model of this shape (its family below)")
    if source == SOURCE_HUB:
        spec = st.text_input("Hugging Face hub id or local folder", key=f"{key}-hub",
                             placeholder="prajjwal1/bert-tiny  or  /path/to/model")
        return spec.strip() or None
    runs = lab().list_runs(status="completed")
    runs = runs[~runs["kind"].isin(IMAGE_KINDS)] if not runs.empty else runs  # a text run starts from a text model
    if runs.empty:
        st.info("No completed run yet: its final checkpoint is what a later run starts from.")
        return None
    runs = pd.concat([runs[runs["kind"] == "pretrain"], runs[runs["kind"] != "pretrain"]])
    labels = run_labels(runs)
    run_id = st.selectbox("Run", runs["id"], key=f"{key}-run",
                          format_func=lambda rid: f"{labels[rid]} · {rid}")
    return f"run:{run_id}"


def image_base_picker(label: str, key: str) -> str | None:
    """An image fine-tune's base: `run:<id>` of a completed image run, a model preset (random weights), or a timm
    ResNet's hub id or folder (ImageNet weights). None while the choice is incomplete."""
    source = st.radio(label, [SOURCE_RUN, SOURCE_PRESET, SOURCE_HUB], horizontal=True, key=f"{key}-source")
    if source == SOURCE_PRESET:
        return st.selectbox("Model", IMAGE_MODELS, key=f"{key}-preset", help="Random weights of this architecture")
    if source == SOURCE_HUB:
        spec = st.text_input("timm ResNet: hub id or local folder", key=f"{key}-hub",
                             placeholder="timm/resnet18.a1_in1k  or  /path/to/folder",
                             help="ImageNet weights for resnet18 or resnet34 (a folder holding timm's config.json "
                                  "and model.safetensors works offline)")
        return spec.strip() or None
    runs = lab().list_runs(status="completed")
    runs = runs[runs["kind"].isin(IMAGE_KINDS)] if not runs.empty else runs
    if runs.empty:
        st.info("No completed image run yet: pretrain one on the Pretrain page (Image classifier).")
        return None
    labels = run_labels(runs)
    run_id = st.selectbox("Run", runs["id"], key=f"{key}-run", format_func=lambda rid: f"{labels[rid]} · {rid}")
    return f"run:{run_id}"


def config_input(where: Any, cls: type, name: str, key: str, options: Sequence[Any] | None = None,
                 **widget: Any) -> Any:
    """The widget of config field `name` of `cls` in `where` (st or a column), keyed `<key>-<name>`: its label,
    help, bounds and default come from the field (config.field_spec), so forms never drift from the config.
    `options` replaces a choice's values (e.g. the prepared datasets); `widget` adds or overrides widget
    arguments (step, format, value for a nested config's own default, a tighter max_value...)."""
    spec = field_spec(cls, name)
    value = widget.pop("value", spec.default)
    common = dict(label=widget.pop("label", spec.title), help=widget.pop("help", spec.help), key=f"{key}-{name}")
    if spec.type == "bool":
        return where.checkbox(value=value, **common, **widget)
    if spec.type == "list" and options is not None:  # a subset of `options` (by default, the default's offered)
        choices = list(options)
        return where.multiselect(options=choices, default=[v for v in value or () if v in choices], **common,
                                 **widget)
    if spec.type == "choice" or options is not None:
        choices = list(options if options is not None else spec.choices)
        return where.selectbox(options=choices, index=option_index(choices, value), **common, **widget)
    if spec.type in ("int", "float"):
        cast = int if spec.type == "int" else float
        bounds = {"min_value": spec.minimum, "max_value": spec.maximum}
        bounds |= {k: widget.pop(k) for k in ("min_value", "max_value") if k in widget}
        numbers = {k: cast(v) for k, v in (*bounds.items(), ("step", widget.pop("step", None))) if v is not None}
        return where.number_input(value=cast(value), **numbers, **common, **widget)
    return where.text_input(value=value or "", **common, **widget)


class ConfigForm:
    """A launch form's config widgets: `form(where, name, **widget)` renders field `name` of `cls` (config_input)
    and keeps its value in `form.values`, the fields the config is built from."""

    def __init__(self, cls: type, key: str):
        self.cls, self.key, self.values = cls, key, {}

    def __call__(self, where: Any, name: str, **widget: Any) -> Any:
        self.values[name] = config_input(where, self.cls, name, self.key, **widget)
        return self.values[name]


def optim_inputs(kind: str) -> dict[str, Any]:
    """OptimConfig's fields, with `kind`'s defaults (pretraining starts from a larger learning rate)."""
    key, defaults = kind, config_class(kind)().optim
    row = st.columns(3)
    values = {
        "optimizer": config_input(row[0], OptimConfig, "optimizer", key, value=defaults.optimizer),
        "lr": config_input(row[1], OptimConfig, "lr", key, value=defaults.lr, step=defaults.lr / 10, format="%.1e"),
        "schedule": config_input(row[2], OptimConfig, "schedule", key, value=defaults.schedule),
    }
    row = st.columns(3)
    values["warmup_ratio"] = config_input(row[0], OptimConfig, "warmup_ratio", key, value=defaults.warmup_ratio,
                                          max_value=0.99, step=0.01)
    values["weight_decay"] = config_input(row[1], OptimConfig, "weight_decay", key, value=defaults.weight_decay,
                                          step=0.01)
    values["grad_clip"] = config_input(row[2], OptimConfig, "grad_clip", key, value=defaults.grad_clip, step=0.5)
    return values


def device_usage(last: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(label, value, help) of a run's latest cost metrics (split "device", training/utilisation.py)."""
    value = {r["name"]: r["value"] for r in last[last["split"] == "device"].to_dict("records")}
    out = []
    if "train_flops" in value:
        out.append(("training FLOPs", f"{value['train_flops']:.3g}",
                    "estimated: (6 x non-embedding parameters + attention) per training token so far"))
    if "mfu" in value:
        out.append(("MFU", f"{value['mfu']:.1%}", f"model FLOP/s ({value.get('model_tflops', 0):.3g} TFLOP/s) as a "
                    "share of this device's measured matmul peak in the run's dtype, over the last log interval"))
    if "gpu_memory_mib" in value:
        out.append(("GPU memory", f"{value['gpu_memory_mib']:,.0f} MiB", "peak allocated by torch"))
    if "gpu_util" in value:
        out.append(("GPU busy", f"{value['gpu_util']:.0f} %", "NVML: share of time a kernel ran"))
    if "cpu_percent" in value:
        out.append(("CPU", f"{value['cpu_percent']:.0f} %", "the worker process; 100 % = one core busy"))
    if "rss_mib" in value:
        out.append(("memory", f"{value['rss_mib']:,.0f} MiB", "the worker's resident memory"))
    return out


def run_inputs(kind: str) -> tuple[dict[str, Any], str]:
    """Name, tags, device, data-parallel ranks where the kind has them (config fields) and the seeds text
    (several seeds launch several runs)."""
    cls = config_class(kind)
    parallel = "ranks" in cls.__dataclass_fields__
    row = st.columns([2, 2, 1, 1, 1] if parallel else [2, 2, 1, 1])
    fields = {
        "name": config_input(row[0], cls, "name", kind, placeholder="(a name is made from the choices)"),
        "tags": parse_tags(config_input(row[1], cls, "tags", kind, label="Tags (comma-separated)")),
        "device": config_input(row[3], cls, "device", kind),
    }
    if parallel:
        fields["ranks"] = config_input(row[4], cls, "ranks", kind, label="Ranks (processes)")
    seeds = row[2].text_input("Seeds", value=str(cls().seed), key=f"{kind}-seeds",
                              help="e.g. 0,1,2: one run per seed")
    return fields, seeds


def launch_button(build: Callable[[], list[RunConfig]], parent: str | None) -> list[str]:
    """The Launch button (hidden in read-only mode): builds the configs, queues them, says what happened.
    Returns the queued run ids (none when nothing was launched)."""
    if read_only():
        launch_disabled_note()
        return []
    if not st.button("Launch", type="primary", icon=":material/rocket_launch:", key="launch"):
        return []
    try:
        ids = launch(build(), parent)
    except (ValueError, OSError) as exc:  # ConfigError (a ValueError) names the field; OSError: the run folder
        show_error("Not launched", exc)
        return []
    st.success(f"Queued {len(ids)} run{'s' if len(ids) > 1 else ''}: {', '.join(ids)}", icon=":material/rocket_launch:")
    st.page_link("pages/runs.py", label="Watch it train on Runs", icon=":material/list_alt:",
                 query_params={"run": ids[0]})
    return ids
