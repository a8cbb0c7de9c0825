"""Every dashboard page under `streamlit.testing.v1.AppTest`: renders without an exception on an empty lab and on
one with runs, forms refuse bad input with a message and submit nothing, read-only mode hides every control
that changes something, and no page imports torch.

Runs with history are made the way the engine makes them: journal events (the worker's format) ingested into a
real `Store` through `Store.ingest_events`. Launches go through the real engine with the stand-in trainer
(`PTFT_TRAINER=tests.fake_trainer:run`), so nothing here trains a model except the slow Inspect test.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from ptft_core import client, ui
from ptft_core.client import connect, start_service
from ptft_core.config import (
    EvaluateConfig,
    FinetuneConfig,
    ImageFinetuneConfig,
    ImagePretrainConfig,
    OptimConfig,
    PretrainConfig,
    config_class,
    config_from_dict,
    config_to_dict,
)
from ptft_core.data import load_split
from ptft_core.journal import MemoryLogger
from ptft_core.store import Store
from tests.conftest import linked_home, stop_lab
from tests.test_predictor import real_classifier

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")
PAGES = ["home", "data", "pretrain", "finetune", "runs", "compare", "inspect", "arena", "studies", "sweeps"]
TIMEOUT = 60  # seconds per script run: the first one imports pandas, plotly and the engine on 2 busy cores
T0 = 1_700_000_000.0


# --- labs ---------------------------------------------------------------------------------------------------------


def stand_in_lab(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service launches the stand-in trainer, fast, on CPU only; the dashboard is the lab's own (not a demo)."""
    monkeypatch.setenv("PTFT_TRAINER", "tests.fake_trainer:run")
    monkeypatch.setenv("PTFT_FAKE_STEP_S", "0.01")
    monkeypatch.setenv("PTFT_GPUS", "none")
    monkeypatch.delenv(client.READ_ONLY_ENV, raising=False)


@pytest.fixture
def lab(home, monkeypatch):
    """A lab home whose service (started by the first page a test opens, as the dashboard does) launches the
    stand-in trainer on CPU only; its runs are cancelled and the service stopped afterwards."""
    stand_in_lab(monkeypatch)
    yield home
    ui.release_labs()
    stop_lab(home)


def metric(run_id: str, seq: int, step: int, split: str, name: str, value: float, epoch: float,
           tokens: int | None = None) -> dict:
    return {"type": "metric", "run_id": run_id, "seq": seq, "step": step, "epoch": epoch, "split": split,
            "name": name, "value": value, "wall_time": T0 + 2.0 * step, "tokens_seen": tokens}


def journal_events(run_id: str, kind: str, steps: int, skill: float, status: str) -> list[dict]:
    """The events a worker would write: status, progress, metrics (train, validation, forgetting, test)."""
    events: list[dict] = [{"type": "status", "run_id": run_id, "seq": 1, "status": "running", "pid": 1,
                           "device": "cpu", "attempt": 1, "wall_time": T0}]

    def add(step, split, name, value, tokens=None):
        events.append(metric(run_id, len(events) + 1, step, split, name, value, step / 20, tokens))

    done = steps if status == "completed" else steps // 2
    for step in range(1, done + 1):
        tokens = step * 32 * 128
        add(step, "train", "loss", 2.0 * math.exp(-skill * step / 15) + 0.3 + 0.05 * math.sin(step), tokens)
        add(step, "train", "lr", 1e-3 * (1 - step / steps), tokens)
        if step % 5 == 0:
            if kind == "pretrain":
                loss = 6.0 * math.exp(-skill * step / 30) + 2.0
                add(step, "validation", "loss", loss, tokens)
                add(step, "validation", "perplexity", math.exp(loss), tokens)
            else:
                accuracy = 0.5 + 0.4 * (1 - math.exp(-skill * step / 10))
                add(step, "validation", "accuracy", accuracy)
                add(step, "validation", "loss", 0.7 - 0.4 * (accuracy - 0.5) + 0.002 * step)
                add(step, "train", "accuracy", min(1.0, accuracy + 0.004 * step))
                add(step, "train", "eval_loss", 0.7 - 0.5 * (accuracy - 0.5))
                add(step, "forgetting", "general_mlm_loss", 3.0 + 0.02 * step)
                add(step, "forgetting", "cka_similarity", 1.0 - 0.01 * step)
        events.append({"type": "progress", "run_id": run_id, "seq": len(events) + 1, "step": step,
                       "total_steps": steps, "wall_time": T0 + 2.0 * step})
    if status == "completed" and kind == "finetune":
        add(steps, "test", "accuracy", 0.5 + 0.4 * skill / 2)
        add(steps, "test", "ece", 0.05 / skill)
        for index in (8, 10, 12, 14):  # the test split's reliability bins (confidence 0.53-1.0): overconfident
            confidence = (index + 0.5) / 15
            add(index, "reliability", "confidence", confidence)
            add(index, "reliability", "accuracy", confidence - 0.1 / skill)
            add(index, "reliability", "count", 20 * (index - 7))
    if status != "running":
        events.append({"type": "status", "run_id": run_id, "seq": len(events) + 1, "status": status,
                       "error": "RuntimeError: injected" if status == "failed" else None,
                       "wall_time": T0 + 2.0 * done + 1})
    return events


def add_run(store: Store, home: Path, run_id: str, config, *, status: str = "completed", steps: int = 40,
            skill: float = 1.0, study: str | None = None, tags: tuple[str, ...] = ()) -> str:
    run_dir = home / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "worker.log").write_text(f"INFO ptft_core.worker: run {run_id} attempt 1: {status}\n")
    store.insert_run({"id": run_id, "name": config.name, "kind": config.kind, "config": config_to_dict(config),
                      "status": "queued", "study": study, "tags": list(tags), "total_steps": steps, "step": 0})
    events = journal_events(run_id, config.kind, steps, skill, status)
    assert store.ingest_events(events, {run_id: 0}) > 0
    if status == "completed" and config.kind == "finetune":  # a real (tiny, untrained) classifier to predict with
        real_classifier(run_dir / "checkpoints" / "final", seed=int(run_id[-1]))
    return run_id


def add_runs(lab: Path) -> Path:
    """A pretraining run, two seeds of a fine-tune (one study), its scratch baseline and a failed run; then the
    lab's service."""
    store = Store(lab / "ptft.duckdb")
    finetune = FinetuneConfig(name="minilm-movies", base="minilm-l6", dataset="movies", max_steps=40,
                              optim=OptimConfig(lr=5e-5))
    store.create_study("study-seeds", "minilm-movies")
    add_run(store, lab, "pt-0001", PretrainConfig(name="mlm-tiny", max_steps=40), skill=1.0, tags=("demo",))
    add_run(store, lab, "ft-0002", FinetuneConfig(**{**config_to_dict(finetune), "name": "minilm-movies-s0"}),
            skill=2.0, study="study-seeds", tags=("demo",))
    add_run(store, lab, "ft-0003", FinetuneConfig(**{**config_to_dict(finetune), "name": "minilm-movies-s1",
                                                     "seed": 1}), skill=1.8, study="study-seeds")
    add_run(store, lab, "ft-0004", FinetuneConfig(**{**config_to_dict(finetune), "name": "minilm-movies-scratch",
                                                     "scratch": True}), skill=0.6, tags=("demo",))
    add_run(store, lab, "ft-0005", FinetuneConfig(name="broken", dataset="tweets"), status="failed")
    store.close()
    start_service(lab)  # the read-only pages start none: they are viewers of a running lab
    return lab


@pytest.fixture
def lab_with_runs(lab):
    """The runs of `add_runs` in a lab of the test's own: for the tests that change it."""
    return add_runs(lab)


@contextlib.contextmanager
def shared_lab(tmp_path_factory, name: str, with_runs: bool) -> Iterator[Path]:
    """A lab made once for the tests of this module that only read it: each would otherwise pay a service's start
    and stop. A test that writes takes `lab` or `lab_with_runs`."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        home = linked_home(tmp_path_factory.mktemp(name) / "home")
        monkeypatch.setenv("PTFT_HOME", str(home))
        stand_in_lab(monkeypatch)
        try:
            yield add_runs(home) if with_runs else home
        finally:
            ui.release_labs()
            stop_lab(home)


@pytest.fixture(scope="module")
def empty_lab_once(tmp_path_factory):
    with shared_lab(tmp_path_factory, "empty-lab", with_runs=False) as home:
        yield home


@pytest.fixture(scope="module")
def runs_lab_once(tmp_path_factory):
    with shared_lab(tmp_path_factory, "runs-lab", with_runs=True) as home:
        yield home


def reading(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A shared lab as this test's lab home (a test before it may have pointed PTFT_HOME elsewhere)."""
    monkeypatch.setenv("PTFT_HOME", str(home))
    stand_in_lab(monkeypatch)
    return home


@pytest.fixture
def read_empty_lab(empty_lab_once, monkeypatch):
    """An empty lab, shared by the tests that only read it."""
    return reading(empty_lab_once, monkeypatch)


@pytest.fixture
def read_lab(runs_lab_once, monkeypatch):
    """The runs of `add_runs`, shared by the tests that only read them (every page, Compare, read-only mode)."""
    return reading(runs_lab_once, monkeypatch)


def open_page(page: str, query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    at.switch_page(f"pages/{page}.py")
    at.query_params.update(query or {})
    return at.run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def labelled(widgets, label: str):
    """The widget with this label (AppTest finds widgets by key; the labels are what a person sees)."""
    matches = [w for w in widgets if w.label == label]
    assert matches, f"no widget {label!r} among {[w.label for w in widgets]}"
    return matches[0]


def button(at: AppTest, label: str):
    """A button or a form's submit button, by its label."""
    return labelled([*at.button, *at.get("form_submit_button")], label)


def chart_count(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


# --- every page renders -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_an_empty_lab(read_empty_lab, page):
    at = open_page(page)
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert at.title, "every page has a title"


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_runs(read_lab, page):
    at = open_page(page)
    assert not at.exception, at.exception
    if page != "inspect":  # journal-made runs have no checkpoint: Inspect says so (tested below)
        assert not at.error or page == "runs", texts(at.error)


def test_home_lists_devices_recent_runs_and_the_start_path(read_lab):
    at = open_page("home")
    body = texts(at.markdown)
    assert "Start here" in texts(at.subheader) and "Pretrain a tiny model" in body
    runs = at.dataframe[0].value
    assert "mlm-tiny" in set(runs["name"]) and len(runs) == 5
    devices = at.dataframe[1].value
    assert devices["device"].tolist() == ["cpu"]


def test_runs_page_shows_the_selected_run_with_its_error_config_and_log(read_lab):
    at = open_page("runs", {"run": "ft-0005"})
    assert "broken" in texts(at.subheader)
    assert "RuntimeError: injected" in texts(at.error)
    assert "attempt 1: failed" in texts(at.code)
    assert {b.label for b in at.button} >= {"Resume", "Retry", "Delete this run"}
    assert "Cancel" not in {b.label for b in at.button}  # only queued or running runs can be cancelled


def test_runs_page_shows_why_a_pruned_run_stopped_not_an_error(lab):
    store = Store(lab / "ptft.duckdb")
    add_run(store, lab, "pt-0009", PretrainConfig(name="sweep #3", max_steps=40), status="pruned",
            tags=("sweep:sw-1", "sweep-trial:3"))
    store.update_run("pt-0009", error="pruned at step 20: validation loss 6.6, not in the top 1/2 (ASHA)",
                     study="sw-1")
    store.close()
    at = open_page("runs", {"run": "pt-0009"})
    assert not at.exception and not at.error, texts(at.error)
    assert "pruned at step 20" in texts(at.info) and "sweep `sw-1`" in texts(at.caption)
    assert "Resume" in {b.label for b in at.button}  # like a cancelled run


def test_runs_page_shows_a_readopted_run_that_has_no_progress_yet(lab):
    """A fine-tune without max_steps has no total until its first progress event. A dashboard restarted in that
    window re-adopts the live worker and reads step and total as NULL: the Runs page crashed for every visitor
    (st.progress of NaN: StreamlitValueOutOfRangeError). The worker here is a live process whose command line is
    a worker's, so the engine's recovery adopts it as it would a real one."""
    run_dir = lab / "runs" / "ft-live"
    run_dir.mkdir(parents=True)
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "ptft_core.worker",
                               str(run_dir)])
    try:
        store = Store(lab / "ptft.duckdb")
        config = FinetuneConfig(name="live", max_steps=0)
        store.insert_run({"id": "ft-live", "name": "live", "kind": "finetune", "config": config_to_dict(config),
                          "status": "queued", "total_steps": None, "step": None})
        store.ingest_events([{"type": "status", "run_id": "ft-live", "seq": 1, "status": "running",
                              "pid": worker.pid, "device": "cpu", "attempt": 1, "wall_time": time.time()}],
                            {"ft-live": 0})
        add_run(store, lab, "ft-newer", FinetuneConfig(name="newer, cancelled"), status="cancelled")
        store.close()
        at = open_page("runs")
        assert not at.exception, at.exception
        bars = [str(p.proto.text) for p in at.get("progress")]
        assert any("**live** · step 0/? · 0% · ETA unknown" in b for b in bars), bars
        assert "live" in texts(at.subheader)  # the detail opens on what trains now, not on the newest run
        assert connect(lab).get_run("ft-live")["status"] == "running"  # adopted, not failed
    finally:
        worker.kill()
        worker.wait()


def test_runs_page_shows_an_evaluate_runs_scores_and_why_a_dependent_run_failed(lab):
    store = Store(lab / "ptft.duckdb")
    add_run(store, lab, "ft-0010", FinetuneConfig(name="movies", dataset="movies", max_steps=40))
    config = EvaluateConfig(name="movies-on-others", model="run:ft-0010", datasets=["amazon", "nyt"])
    store.insert_run({"id": "ev-0011", "name": config.name, "kind": "evaluate", "config": config_to_dict(config),
                      "status": "queued", "total_steps": 2, "step": 0, "parent_run": "ft-0010"})
    scores = [metric("ev-0011", i + 2, i // 2 + 1, "transfer", name, value, 0.0)
              for i, (name, value) in enumerate([("accuracy@amazon", 0.71), ("loss@amazon", 0.55),
                                                 ("accuracy@nyt", 0.64), ("loss@nyt", 0.62)])]
    store.ingest_events([{"type": "status", "run_id": "ev-0011", "seq": 1, "status": "running", "pid": 1,
                          "device": "cpu", "attempt": 1, "wall_time": T0}, *scores,
                         {"type": "status", "run_id": "ev-0011", "seq": 6, "status": "completed", "wall_time": T0}],
                        {"ev-0011": 0})
    child = FinetuneConfig(name="from-a-missing-step", base="run:ft-0010/step-99")
    store.insert_run({"id": "ft-0012", "name": child.name, "kind": "finetune", "config": config_to_dict(child),
                      "status": "queued", "step": 0, "parent_run": "ft-0010"})
    store.close()
    start_service(lab)
    assert connect(lab).wait(["ft-0012"], timeout=60) == {"ft-0012": "failed"}  # the service's first polls

    at = open_page("runs", {"run": "ev-0011"})
    assert not at.exception, at.exception
    tables = [d.value for d in at.dataframe if d.value.index.name == "dataset"]
    assert len(tables) == 1, [d.value.columns for d in at.dataframe]
    table = tables[0]
    assert list(table.index) == ["amazon", "nyt"] and list(table.columns) == ["accuracy", "loss"]
    assert table.loc["nyt", "accuracy"] == pytest.approx(0.64)
    at = open_page("runs", {"run": "ft-0012"})
    assert "run ft-0010 completed without checkpoint 'step-99' (it has final)" in texts(at.error), texts(at.error)


def test_runs_page_retry_queues_a_new_run_and_tags_are_saved(lab_with_runs):
    at = open_page("runs", {"run": "pt-0001"})
    button(at, "Retry").click().run()
    assert not at.exception and not at.error, texts(at.error)
    store = connect(lab_with_runs)
    assert len(store.list_runs(kind="pretrain")) == 2
    at = open_page("runs", {"run": "pt-0001"})
    at.session_state["runs-active"] = ("a-run-that-just-ended",)  # a run ends as the person presses Save
    labelled(at.text_input, "Tags (comma-separated)").set_value("demo, baseline")
    labelled(at.text_area, "Note").set_value("the reference run")
    button(at, "Save tags and note").click().run()
    assert not at.exception
    row = store.get_run("pt-0001")
    assert row["tags"] == ["baseline", "demo"] and row["notes"] == "the reference run"


def test_runs_page_refuses_to_resume_without_a_checkpoint(lab_with_runs):
    at = open_page("runs", {"run": "ft-0005"})
    button(at, "Resume").click().run()
    assert not at.exception
    assert "no checkpoint to resume from" in texts(at.error)


def test_runs_page_deletes_after_confirmation(lab_with_runs):
    at = open_page("runs", {"run": "ft-0005"})
    button(at, "Delete this run").click().run()
    assert not at.exception
    assert not connect(lab_with_runs).has_run("ft-0005")
    assert not (lab_with_runs / "runs" / "ft-0005").exists()


# --- compare ------------------------------------------------------------------------------------------------------


def test_compare_asks_for_a_selection_then_draws_every_view_from_the_url(read_lab):
    assert "Select runs" in texts(open_page("compare").info)
    at = open_page("compare", {"runs": "ft-0002,ft-0003,ft-0004"})
    assert not at.exception and not at.error, texts(at.error)
    assert chart_count(at) == 5  # Explore, Convergence, Overfitting, Forgetting, Calibration
    convergence = at.dataframe[1].value  # the runs table comes first
    assert list(convergence.columns[:3]) == ["run", "best accuracy", "steps to target"]
    assert sorted(convergence["run"]) == ["minilm-movies-s0", "minilm-movies-s1", "minilm-movies-scratch"]
    diff = at.dataframe[-1].value
    assert "scratch" in diff.index and "seed" in diff.index
    assert len(at.get("download_button")) == 10  # HTML and CSV of each chart
    assert "reliability/accuracy" not in at.multiselect(key="metrics").options  # bins are a diagram, not a curve


def test_compare_picks_a_study_and_groups_by_a_config_key(read_lab):
    at = open_page("compare", {"study": "study-seeds", "group": "seed", "x": "epoch", "smooth": "0.5"})
    assert not at.exception and not at.error, texts(at.error)
    assert at.query_params.get("runs") is None  # the study picked the runs, no row was selected
    # seed is not a grouping key (it is what bands average over): the choice falls back to no grouping
    assert at.selectbox(key="group").value == "(none)"
    at.query_params["group"] = "scratch"
    at = open_page("compare", {"runs": "ft-0002,ft-0003,ft-0004", "group": "scratch"})
    assert at.selectbox(key="group").value == "scratch"
    assert not at.exception and not at.error, texts(at.error)


def test_compare_tells_when_runs_have_no_forgetting_probes(read_lab):
    at = open_page("compare", {"runs": "pt-0001"})
    assert not at.exception
    assert "No forgetting probes" in texts(at.info)


# --- forms --------------------------------------------------------------------------------------------------------


def test_pretrain_refuses_lr_zero_and_submits_nothing(lab):
    at = open_page("pretrain")
    at.number_input(key="pretrain-lr").set_value(0.0)
    button(at, "Launch").click().run()
    assert not at.exception
    assert "optim.lr: must be > 0 (got 0.0)" in texts(at.error)
    assert connect(lab).list_runs().empty


def test_pretrain_shows_the_estimate_and_launches_one_run_per_seed(lab):
    at = open_page("pretrain")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Tokens seen"] == ui.format_count(300 * 32 * 128)
    assert metrics["Time on CPU"] == ui.format_duration(300 * 32 * 128 / ui.CPU_TOKENS_PER_S["tiny"])
    at.text_input(key="pretrain-seeds").set_value("0,1")
    button(at, "Launch").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert "Queued 2 runs" in texts(at.success)
    runs = connect(lab).list_runs()
    assert sorted(runs["name"]) == ["mlm-tiny-s0", "mlm-tiny-s1"]
    assert runs["study"].nunique() == 1 and runs["study"].notna().all()


def test_pretrain_offers_an_image_classifier_on_the_image_sets_and_launches_it(lab):
    at = open_page("pretrain")
    at.segmented_control(key="pretrain-what").set_value("Image classifier").run()
    assert not at.exception and not at.error, texts(at.error)
    assert labelled(at.selectbox, "Dataset").options == ["digits", "mnist"]  # image sets only
    labelled(at.selectbox, "Dataset").set_value("digits").run()
    assert "Trains at 8×8 pixels" in texts(at.caption)  # the set's own size (image_size 0)
    assert {m.label: m.value for m in at.metric}["Optimizer steps"] == f"{3 * (1437 // 64):,}"
    labelled(at.selectbox, "Model").set_value("vgg-small")
    button(at, "Launch").click().run()
    assert not at.exception and not at.error, texts(at.error)
    run = connect(lab).list_runs().iloc[0]
    assert run["kind"] == "image_pretrain" and run["name"] == "vgg-small-digits" and run["id"].startswith("ip-")
    config = json.loads(run["config"])
    assert (config["dataset"], config["image_size"], config["model"]) == ("digits", 0, "vgg-small")


def test_finetune_offers_an_image_fine_tune_from_an_image_run_or_a_preset(lab):
    at = open_page("finetune")
    at.segmented_control(key="finetune-what").set_value("Image classifier").run()
    assert not at.exception and not at.error, texts(at.error)
    assert "No completed image run yet" in texts(at.info)  # text runs are not offered as image bases
    assert labelled(at.selectbox, "Dataset").options == ["digits", "mnist"]
    at.radio(key="image-finetune-base-source").set_value("A preset (random init)").run()
    labelled(at.selectbox, "Strategy").set_value("linear_probe")
    classes = labelled(at.multiselect, "Classes (empty: all)")
    assert classes.options == [str(d) for d in range(10)] and classes.value == []
    classes.set_value(["7", "1"]).run()
    train = dict(zip(*np.unique(load_split("digits", "train")["label"], return_counts=True), strict=True))
    assert f"on {train[1] + train[7]:,} training images" in texts(at.caption)  # those classes' only
    button(at, "Launch").click().run()
    assert not at.exception and not at.error, texts(at.error)
    run = connect(lab).list_runs().iloc[0]
    config = json.loads(run["config"])
    assert run["kind"] == "image_finetune" and run["id"].startswith("if-") and run["name"] == "resnet-small-digits"
    assert (config["base"], config["dataset"], config["strategy"]) == ("resnet-small", "digits", "linear_probe")
    assert config["classes"] == ["7", "1"]  # as chosen; the model's head follows the dataset's order


def test_finetune_refuses_a_zero_label_fraction_and_bad_seeds(lab):
    at = open_page("finetune")
    fraction = labelled(at.number_input, "Label fraction")
    fraction.set_value(0.0)
    button(at, "Launch").click().run()
    assert "label_fraction: must be > 0 (got 0.0)" in texts(at.error)
    fraction.set_value(0.5)
    at.text_input(key="finetune-seeds").set_value("one, two")
    button(at, "Launch").click().run()
    assert "seeds: expected comma-separated integers" in texts(at.error)
    assert connect(lab).list_runs().empty


def form_values(at: AppTest, kind: str, fields: dict) -> dict:
    """The values of the form's config widgets (keyed `<kind>-<field>`), by field name."""
    out = {}
    for widget in [*at.number_input, *at.selectbox, *at.checkbox, *at.text_input]:
        name = (widget.key or "").removeprefix(f"{kind}-")
        if widget.key and widget.key.startswith(f"{kind}-") and name in fields:
            value = widget.value
            out[name] = (None if value == "(none)" else ui.parse_tags(value) if name == "tags" else value)
    return out


@pytest.mark.parametrize("kind", ["finetune", "pretrain"])
def test_every_form_default_is_the_config_default(lab, kind):
    """Every config widget of a launch form starts at its field's default (the optimizer's with the kind's own
    defaults), the strategy-specific ones included; launched untouched, the form queues the default config."""
    cls = config_class(kind)
    defaults = config_to_dict(cls())
    flat = {**{k: v for k, v in defaults.items() if k != "optim"}, **defaults["optim"]}
    at = open_page(kind)
    shown = form_values(at, kind, flat)
    if kind == "finetune":
        for strategy in ("freeze_bottom", "gradual_unfreeze", "discriminative"):
            at.selectbox(key="finetune-strategy").set_value(strategy).run()
            shown |= {k: v for k, v in form_values(at, kind, flat).items() if k not in shown}  # what it reveals
        at.selectbox(key="finetune-strategy").set_value("full").run()
        assert {"freeze_layers", "unfreeze_every_steps", "layer_decay", "dataset", "then_dataset"} <= set(shown)
    assert len(shown) >= 15, sorted(shown)
    assert shown == {name: flat[name] for name in shown}
    button(at, "Launch").click().run()
    assert not at.exception and not at.error, texts(at.error)
    launched = json.loads(connect(lab).list_runs().iloc[0]["config"])
    assert {**launched, "name": ""} == defaults


@pytest.mark.slow
def test_finetune_form_defaults_draw_a_readable_accuracy_curve(lab, tmp_path):
    """The form's defaults on movies at 10 % labels and 1 epoch (27 steps) evaluate before the first step and
    about ten times after: at least 8 validation points. Trained for real, with the tiny preset standing in for
    MiniLM (the schedule depends on the step count only)."""
    from ptft_core.training import run_finetune

    at = open_page("finetune")
    labelled(at.number_input, "Label fraction").set_value(0.1)
    labelled(at.number_input, "Epochs").set_value(1)
    # What each evaluation scores, said beside its fields (a field changed on the form changes the sentence).
    labelled(at.number_input, "Probes every (evaluations)").set_value(2).run()
    plan = [str(c.value) for c in at.caption if str(c.value).startswith("Scores ")]
    assert plan == ["Scores a fixed sample of 256 validation examples at step 0 and 10 times spread over each task; "
                    "the train sample and the probes at one evaluation in 2 (step 0's first) and the last; the best "
                    "checkpoint on the whole test split at the end."], plan
    button(at, "Launch").click().run()
    assert not at.exception and not at.error, texts(at.error)
    config = json.loads(connect(lab).list_runs().iloc[0]["config"])
    assert (config["dataset"], config["label_fraction"], config["epochs"]) == ("movies", 0.1, 1)
    assert (config["eval_val_samples"], config["eval_train_samples"], config["probe_every"]) == (256, 256, 2)
    logger = MemoryLogger()
    assert run_finetune(config_from_dict({**config, "base": "tiny"}), tmp_path, logger) == "completed"
    steps = [e["step"] for e in logger.events
             if e["type"] == "metric" and e["split"] == "validation" and e["name"] == "accuracy"]
    assert len(steps) >= 8 and steps[0] == 0 and steps == sorted(set(steps)), steps
    assert steps[-1] == max(e["step"] for e in logger.events if e["type"] == "metric")


def test_finetune_launches_from_an_earlier_run_with_lineage_and_a_second_task(lab_with_runs):
    at = open_page("finetune")
    at.radio(key="finetune-base-source").set_value(ui.SOURCE_RUN).run()
    at.selectbox(key="finetune-base-run").set_value("pt-0001")
    labelled(at.selectbox, "Then fine-tune on").set_value("tweets")
    at.checkbox(key="finetune-scratch").set_value(True)
    button(at, "Launch").click().run()
    assert not at.exception and not at.error, texts(at.error)
    store = connect(lab_with_runs)
    row = store.list_runs().iloc[0]
    config = json.loads(row["config"])
    assert config["base"] == "run:pt-0001" and config["then_dataset"] == "tweets" and config["scratch"]
    assert row["parent_run"] == "pt-0001"
    assert row["name"] == "pt-0001-movies-then-tweets-scratch"


# --- data ---------------------------------------------------------------------------------------------------------


def test_data_page_previews_a_dataset_from_the_url(lab):
    at = open_page("data", {"dataset": "tweets"})
    assert not at.exception and not at.error, texts(at.error)
    assert at.selectbox[0].value == "tweets"
    preview = at.dataframe[1].value
    assert {"text", "label", "label_name"} <= set(preview.columns)
    assert chart_count(at) == 2  # label balance and lengths


def test_data_page_draws_an_image_set_as_a_grid_per_class(read_lab):
    at = open_page("data", {"dataset": "digits"})
    assert not at.exception and not at.error, texts(at.error)
    table = at.dataframe[0].value.set_index("name")
    assert table.loc["digits", "kind"] == "labelled images" and table.loc["digits", "image size"] == "8×8 px"
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert captions == [f"{d}: {d}" for d in range(10)]  # one strip of examples per class, in label order
    assert chart_count(at) == 1  # the label balance; no token lengths for images
    finetune = open_page("finetune")
    assert "digits" not in labelled(finetune.selectbox, "Dataset").options  # a text run's form offers text only


def test_data_page_registers_an_upload_and_reports_bad_ones(lab):
    rows = "\n".join(f"review {i} is {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}" for i in range(30))
    at = open_page("data")
    at.file_uploader[0].upload("reviews.csv", f"text,sentiment\n{rows}\n".encode(), "text/csv").run()
    assert not at.exception, at.exception
    labelled(at.selectbox, "Label column").set_value("sentiment")
    button(at, "Register dataset").click().run()
    assert "Registered **reviews**" in texts(at.success), texts(at.error)
    at.file_uploader[0].upload("empty.csv", b"text,label\n", "text/csv").run()
    button(at, "Register dataset").click().run()
    assert not at.exception
    assert "empty.csv" in texts(at.error)


# --- read-only mode -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["pretrain", "finetune"])
def test_a_read_only_demo_has_no_training_forms(read_lab, monkeypatch, page):
    """The demo's page list is built by role: the forms no visitor could use are not in its navigation, while the
    lab's own dashboard has them."""
    at = open_page(page)
    assert [t.value for t in at.title] == [{"pretrain": "Pretrain", "finetune": "Fine-tune"}[page]]
    monkeypatch.setenv(client.READ_ONLY_ENV, "1")
    with pytest.raises(ValueError, match=r"Could not find a navigation page .*Known pages: \[.*runs.py"):
        open_page(page)
    home = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not home.exception and "What to look at" in texts(home.subheader)


@pytest.mark.parametrize("page", ["runs", "data", "studies", "sweeps"])
def test_read_only_mode_hides_every_control_that_changes_something(read_lab, monkeypatch, page):
    monkeypatch.setenv(client.READ_ONLY_ENV, "1")
    at = open_page(page)
    assert not at.exception
    assert at.title, "the page rendered (from the running service), not stopped"
    labels = {b.label for b in [*at.button, *at.get("form_submit_button")]}
    assert not labels & {"Launch", "Cancel", "Resume", "Retry", "Delete this run", "Save tags and note",
                         "Register dataset"}
    assert not at.file_uploader


def test_a_demo_viewer_may_predict_a_bounded_number_of_times_a_minute(read_lab, monkeypatch):
    monkeypatch.setenv(client.READ_ONLY_ENV, "1")
    at = open_page("arena")
    assert not at.exception and not at.error and chart_count(at) == 1  # a viewer predicts: it changes nothing
    for _ in range(ui.VIEWER_PREDICTIONS_PER_MINUTE - 1):  # the same session asking again (cached answers count)
        at.run()
        assert not at.warning, texts(at.warning)
    at.run()
    assert f"A viewer may ask for {ui.VIEWER_PREDICTIONS_PER_MINUTE} predictions a minute" in texts(at.warning)
    assert chart_count(at) == 0


def test_read_only_mode_says_so_in_the_sidebar(read_empty_lab, monkeypatch):
    monkeypatch.setenv(client.READ_ONLY_ENV, "1")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()  # the sidebar of the app frame, on Home
    assert "Read-only demo" in texts(at.sidebar.warning)


# --- torch stays out of the dashboard process ---------------------------------------------------------------------


def test_no_page_imports_torch(read_lab, tmp_path):
    """Every page, one after another in a fresh interpreter, checked after each: neither the app frame nor any
    page loads torch (Inspect loads it only once it opens a model, so it is checked on a lab without a finished
    fine-tune, in an interpreter of its own). torch once loaded stays loaded, so the first page that loads it is
    the one named."""
    script = textwrap.dedent(f"""
        import sys
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file({APP!r}, default_timeout={TIMEOUT})
        at.run()
        for page in sys.argv[1:]:
            at.switch_page(f"pages/{{page}}.py").run()
            assert not at.exception, (page, at.exception)
            print("TORCH" if "torch" in sys.modules else "NO-TORCH", page, flush=True)
    """)
    empty = tmp_path / "empty-lab"
    (empty / "datasets").mkdir(parents=True)
    for entry in (read_lab / "datasets").iterdir():
        (empty / "datasets" / entry.name).symlink_to(entry.resolve())
    others = [page for page in PAGES if page != "inspect"]
    for lab, pages in ((read_lab, others), (empty, ["inspect"])):
        out = subprocess.run([sys.executable, "-c", script, *pages], capture_output=True, text=True, cwd=REPO,
                             timeout=240, env={**os.environ, "PTFT_HOME": str(lab)})
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == [word for page in pages for word in ("NO-TORCH", page)], (
            out.stdout + out.stderr[-2000:])
    stop_lab(empty)


# --- arena ----------------------------------------------------------------------------------------------------------


def test_the_arena_puts_two_classifiers_side_by_side_on_a_text_and_on_a_test_split(read_lab):
    at = open_page("arena")
    assert not at.exception and not at.error, texts(at.error)
    names = {"ft-0002": "minilm-movies-s0", "ft-0003": "minilm-movies-s1", "ft-0004": "minilm-movies-scratch"}
    picked = at.multiselect(key="arena-runs").value
    assert len(picked) == 2 and set(picked) <= set(names)  # the newest two completed fine-tunes
    assert chart_count(at) == 1 and "The 2 classifiers" in texts(at.caption)
    at.button(key="arena-measure").click().run()  # each classifier's inference cost, measured in the predictor
    assert not at.exception and not at.error, texts(at.error)
    cost = at.dataframe[0].value
    assert cost["precision"].tolist() == ["float32", "bf16", "int8"] * 2 and (cost["texts_per_s"] > 0).all()
    at.radio(key="arena-source").set_value("From a test split").run()
    assert not at.exception and not at.error, texts(at.error)
    assert "True label: **" in texts(at.caption)
    at = open_page("arena", {"arena-tab": "Where they disagree"})
    assert not at.exception and not at.error, texts(at.error)
    table = at.dataframe[0].value
    assert {"text", "true label", "right"} <= set(table.columns) and len(table) > 0  # two random models disagree
    sure = table[[f"{names[run]} confidence" for run in picked]].min(axis=1)
    assert sure.is_monotonic_decreasing  # the surest disagreements first
    assert f"{len(table):,} disagreements below" in texts(at.caption)
    at.selectbox(key="arena-truth").set_value("positive").run()
    assert set(at.dataframe[0].value["true label"]) == {"positive"}


# --- inspect with a real model ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_inspect_opens_a_real_image_fine_tune(lab, monkeypatch):
    """A real image pretraining and its linear probe through the service (seconds), then Inspect's image views."""
    monkeypatch.delenv("PTFT_TRAINER")
    client = connect(lab, start=True)
    parent = client.submit(ImagePretrainConfig(dataset="digits", max_steps=10, eval_count=1))
    child = client.submit(ImageFinetuneConfig(base=f"run:{parent}", dataset="digits", strategy="linear_probe",
                                              max_steps=4, eval_count=1))
    assert client.wait([parent, child], timeout=300) == {parent: "completed", child: "completed"}
    at = open_page("inspect", {"run": child})
    assert not at.exception and not at.error, texts(at.error)
    assert chart_count(at) == 2 and "Grad-CAM" in texts(at.caption)  # before and after
    at = open_page("inspect", {"run": child, "image-tab": "First-layer filters"})
    assert not at.exception and chart_count(at) == 2
    assert "Mean |change| 0.0000" in texts(at.caption)  # a linear probe froze them
    at = open_page("inspect", {"run": child, "image-tab": "Test errors"})
    assert not at.exception and chart_count(at) == 1 and "Test accuracy" in {m.label for m in at.metric}
    assert at.get("image") or "No test image is misclassified." in texts(at.caption)



@pytest.mark.slow
def test_inspect_opens_a_real_fine_tuned_run(lab, monkeypatch):
    """A real tiny fine-tune through the engine (seconds), then the three Inspect views on its checkpoint."""
    monkeypatch.delenv("PTFT_TRAINER")
    engine = connect(lab, start=True)
    run_id = engine.submit(FinetuneConfig(
        name="tiny-amazon", base="tiny", dataset="amazon", label_fraction=0.05, max_length=32, batch_size=16,
        epochs=1, max_steps=4, eval_every=2, log_every=1, eval_train_samples=16, probe_corpus="news",
        probe_size=8, optim=OptimConfig(lr=1e-3, warmup_ratio=0.0)))
    start = time.monotonic()
    assert engine.wait([run_id], timeout=300)[run_id] == "completed", engine.log_tail(run_id)
    at = open_page("inspect")
    assert not at.exception and not at.error, texts(at.error)
    assert chart_count(at) == 3  # base and fine-tuned attention side by side, then their difference
    assert "Mean |Δ|" in texts(at.caption)  # the same tokenizer: the difference map, not the mismatch message
    assert "tokenizers split this sentence differently" not in texts(at.info)
    at = open_page("inspect", {"tab": "Test errors"})
    assert not at.exception and not at.error, texts(at.error)
    assert chart_count(at) == 1 and "Test accuracy" in {m.label for m in at.metric}
    at = open_page("inspect", {"tab": "Try it"})
    assert not at.exception and chart_count(at) == 1
    assert time.monotonic() - start < 600
