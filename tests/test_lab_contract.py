"""One contract, two implementations: every test here runs against `LocalLab` (the engine, store and drivers in
this process) and against `LabClient` (a real service over HTTP), with the stand-in trainer. The same calls give
the same answers and the same errors on both; the signatures are the protocol's own."""

from __future__ import annotations

import inspect
import io
import json

import numpy as np
import pandas as pd
import pytest

from ptft_core import inspect as model_inspect
from ptft_core import paths
from ptft_core.client import LabClient, connect
from ptft_core.config import ConfigError
from ptft_core.data import DataError
from ptft_core.lab import MAX_PREDICT_RUNS, MAX_RUN_IDS, Lab, Refused, RunReads, UnknownId
from ptft_core.service.local import LocalLab
from ptft_core.store import Store
from tests.test_data_user_images import image_folder, zipped
from tests.test_predictor import real_classifier


@pytest.fixture(params=["in-process", "http"])
def lab(request, fake_lab):
    if request.param == "http":
        request.getfixturevalue("service")
        with connect(fake_lab) as client:
            yield client
        return
    from ptft_core.engine import Engine
    from ptft_core.studies.driver import StudyDriver
    from ptft_core.sweeps.driver import SweepDriver

    with Engine(cpu_slots=1, poll_interval=0.1) as engine:
        engine.start()
        yield LocalLab(engine, StudyDriver(engine), SweepDriver(engine))
        engine.stop(cancel_running=True)


def _protocol_methods(protocol) -> list[str]:
    return [name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")]


@pytest.mark.parametrize("implementation", [LocalLab, LabClient])
def test_each_implementation_has_the_protocols_signatures(implementation):
    for protocol in (RunReads, Lab):
        for name in _protocol_methods(protocol):
            wanted = inspect.signature(getattr(protocol, name))
            found = inspect.signature(getattr(implementation, name))
            assert list(found.parameters) == list(wanted.parameters), (implementation.__name__, name, found)
            for param in wanted.parameters.values():
                assert found.parameters[param.name].default == param.default, (implementation.__name__, name, param)
    assert set(_protocol_methods(RunReads)) <= set(dir(Store))  # the store answers the reads as well


def test_a_run_reads_back_the_same_way(lab):
    assert isinstance(lab, Lab) and lab.whoami()["role"] == "editor"
    assert [d["kind"] for d in lab.devices()] == ["cpu"]
    run_id = lab.submit({"kind": "pretrain", "name": "contract", "max_steps": 6, "eval_every": 2},
                        tags=["contract"], priority=3)
    assert lab.has_run(run_id) and not lab.has_run("pt-nope") and not lab.has_run("../x")
    assert lab.wait([run_id], timeout=120) == {run_id: "completed"}
    row = lab.get_run(run_id)
    assert (row["status"], row["step"], row["priority"], row["tags"]) == ("completed", 6, 3, ["contract"])
    runs = lab.list_runs(tag="contract")
    assert list(runs["id"]) == [run_id] and isinstance(runs, pd.DataFrame)
    series = lab.metric_series([run_id], names=["loss"], splits=["train"])
    assert list(series.columns) == ["run_id", "split", "name", "x", "value"] and list(series["x"]) == [1, 2, 3, 4, 5, 6]
    assert {"loss"} <= set(lab.metric_names([run_id])["name"])
    diff = lab.config_diff([run_id, run_id])  # one run, named twice: no key differs
    assert list(diff.columns) == [run_id] and diff.index.name == "key" and diff.empty
    assert set(lab.seconds_per_step([run_id])) <= {run_id}
    assert len(lab.metric_rows([run_id])) >= 6 and not lab.last_metrics(run_id).empty
    assert "kind" in lab.artifacts(run_id).columns
    assert isinstance(lab.log_tail(run_id, max_bytes=100), str) and len(lab.log_tail(run_id, 100).encode()) <= 100

    lab.set_tags(run_id, ["a", "b"])
    lab.set_notes(run_id, "read back")
    assert (lab.get_run(run_id)["tags"], lab.get_run(run_id)["notes"]) == (["a", "b"], "read back")
    with pytest.raises(Refused, match="only .* runs can resume"):
        lab.resume(run_id)
    again = lab.retry(run_id)
    assert again != run_id and lab.get_run(again)["config"] == row["config"]
    assert lab.cancel(again) in ("cancelled", "running")
    lab.wait([again], timeout=120)
    lab.delete(again)
    assert not lab.has_run(again)


def test_the_same_errors_on_both_sides(lab):
    with pytest.raises(UnknownId, match="no run 'pt-nope'"):
        lab.get_run("pt-nope")
    with pytest.raises(KeyError):  # UnknownId is a KeyError: callers written against the store still work
        lab.last_metrics("../../etc")
    with pytest.raises(UnknownId, match="no study 'st-nope'"):
        lab.get_study("st-nope")
    with pytest.raises(UnknownId, match="no sweep 'sw-nope'"):
        lab.sweep_progress("sw-nope")
    with pytest.raises(ConfigError, match=r"optim.lrr: unknown field; did you mean 'lr'\?"):
        lab.submit({"kind": "pretrain", "optim": {"lrr": 1e-4}})
    with pytest.raises(ConfigError, match="dataset: no dataset 'nope'"):
        lab.submit({"kind": "finetune", "dataset": "nope"})
    with pytest.raises(ConfigError, match="priority"):
        lab.submit({"kind": "pretrain"}, priority=10**6)
    with pytest.raises(ConfigError, match="run_ids: at most"):
        lab.metric_names([f"pt-{i}" for i in range(MAX_RUN_IDS + 1)])
    with pytest.raises(ConfigError, match="x: must be one of"):
        lab.metric_series([], x="bogus")
    with pytest.raises(ConfigError, match="max_bytes"):
        lab.log_tail(lab.submit({"kind": "pretrain", "max_steps": 2}), max_bytes=-1)
    with pytest.raises(ConfigError, match="nope"):
        lab.launch_study("nope")
    assert lab.list_runs(status="failed").empty  # nothing refused was queued and failed


def test_a_group_of_seeds_becomes_a_study_without_a_plan(lab):
    ids = lab.submit_group([{"kind": "pretrain", "max_steps": 2, "seed": s, "name": "seeds"} for s in (0, 1)])
    study = lab.get_run(ids[0])["study"]
    assert lab.get_run(ids[1])["study"] == study and lab.get_study(study)["name"] == "seeds"
    with pytest.raises(Refused, match="has no plan"):
        lab.study_progress(study)
    assert sorted(lab.cancel_study(study)) <= sorted(ids)
    assert list(lab.study_table().columns)[:3] == ["id", "name", "template"]
    assert "best" in lab.sweep_table().columns


def test_a_zip_of_class_folders_uploads_as_an_image_set_and_a_bad_one_names_its_member(lab, fake_lab, tmp_path):
    folder = image_folder(tmp_path / "pets", {"dog": 6, "cat": 6})
    with open(zipped(folder, tmp_path / "pets.zip"), "rb") as fh:
        info = lab.add_dataset("pets", "pets.zip", fh)
    assert (info.modality, info.total_rows, info.label_names) == ("image", 12, ["cat", "dog"])
    rows = lab.dataset_rows("pets", "train", 5)
    assert list(rows.columns) == ["image", "label"] and rows["image"].map(type).eq(bytes).all()
    with pytest.raises(ConfigError, match="dataset 'pets' holds image data"):
        lab.submit({"kind": "finetune", "dataset": "pets", "max_steps": 1})
    (folder / "cat" / "bad.png").write_text("hello")
    with open(zipped(folder, tmp_path / "bad.zip"), "rb") as fh, pytest.raises(DataError) as refused:
        lab.add_dataset("bad", "bad.zip", fh)
    assert str(refused.value).startswith("bad.zip:cat/bad.png: not an image")
    assert str(fake_lab) not in str(refused.value)  # never a path of the service's machine


def test_a_file_uploads_registers_and_reads_back_as_a_dataset(lab, fake_lab):
    rows = "".join(json.dumps({"text": f"text number {i}", "label": ["no", "yes"][i % 2]}) + "\n" for i in range(40))
    info = lab.add_dataset("mine", "mine.jsonl", io.BytesIO(rows.encode()), "text", "label")
    assert (info.name, info.total_rows, info.label_names) == ("mine", 40, ["no", "yes"])
    assert "mine" in [d.name for d in lab.datasets()]
    assert list(lab.dataset_rows("mine", "train", 5).columns[:2]) == ["text", "label"]
    assert len(lab.dataset_rows("mine", "train", 5)) == 5
    queued = lab.submit({"kind": "finetune", "dataset": "mine", "max_steps": 1})  # a name the lab now knows
    lab.cancel(queued)

    broken = rows + '{"text": "no closing brace", "label": "yes"\n'
    with pytest.raises(DataError, match=r"^mine2\.jsonl: line 41 is not valid JSON") as refused:
        lab.add_dataset("mine2", "mine2.jsonl", io.BytesIO(broken.encode()), "text", "label")
    assert str(fake_lab) not in str(refused.value)  # never a path of the service's machine
    assert "mine2" not in [d.name for d in lab.datasets()] and not list((fake_lab / "uploads").glob("mine2-*"))
    with pytest.raises(DataError, match="exists already"):
        lab.add_dataset("mine", "mine.jsonl", io.BytesIO(rows.encode()), "text", "label")
    assert len(lab.dataset_rows("mine", "test", 100)) == info.splits["test"]  # the first upload is intact
    with pytest.raises(DataError, match="dataset name '../x'"):
        lab.add_dataset("../x", "x.jsonl", io.BytesIO(rows.encode()))
    with pytest.raises(UnknownId, match="no dataset 'nope'"):
        lab.dataset_rows("nope", "train")
    with pytest.raises(ConfigError, match="limit"):
        lab.dataset_rows("mine", "train", 10**6)


# --- predictions (the predictor process: tests/test_predictor.py) ---------------------------------------------------


PREDICT_TEXTS = ["a fine film, moving and funny", "bad", "the plot never comes together", "I would watch it again"]


def finished_fine_tune(lab) -> str:
    """A fine-tune finished by the stand-in trainer, its final checkpoint replaced by a real classifier."""
    run_id = lab.submit({"kind": "finetune", "max_steps": 2, "eval_every": 1, "max_length": 32})
    assert lab.wait([run_id], timeout=120) == {run_id: "completed"}
    final = paths.run_dir(run_id) / "checkpoints" / "final"
    for file in final.iterdir():
        file.unlink()
    real_classifier(final)
    return run_id


@pytest.mark.slow  # the predictor imports torch
def test_a_prediction_through_the_contract_is_the_model_s_own(lab):
    run_id = finished_fine_tune(lab)
    answer = lab.predict([run_id], PREDICT_TEXTS)
    assert list(answer.columns) == ["run_id", "row", "label", "probability", "ms_per_text", "model_mb"]
    assert (answer["ms_per_text"] > 0).all() and answer["model_mb"].nunique() == 1  # one model's size
    assert answer["row"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert answer["label"].tolist()[:2] == ["negative", "positive"]
    final = str(paths.run_dir(run_id) / "checkpoints" / "final")
    expected = model_inspect.predict(model_inspect.load_classifier_at(final), PREDICT_TEXTS, 32)
    assert np.allclose(answer["probability"].to_numpy().reshape(len(PREDICT_TEXTS), 2), expected, atol=1e-6)
    cost = lab.inference_cost(run_id, PREDICT_TEXTS)  # timed in the predictor, each text alone then batched
    assert cost["precision"].tolist() == ["float32", "bf16", "int8"] and (cost["texts"] == 4).all()
    assert (cost[["p50_ms", "p95_ms", "texts_per_s", "memory_mb", "disk_mb"]] > 0).all().all()
    assert (cost["p95_ms"] >= cost["p50_ms"]).all()
    twice = lab.predict([run_id, run_id], PREDICT_TEXTS[:1], max_length=8)  # the same run once; another length
    assert twice["run_id"].tolist() == [run_id, run_id]


def test_what_cannot_be_predicted_is_refused_before_the_predictor_is_asked(lab):
    run_id = finished_fine_tune(lab)
    pretraining = lab.submit({"kind": "pretrain", "max_steps": 2, "eval_every": 1})
    lab.wait([pretraining], timeout=120)
    with pytest.raises(UnknownId, match="no run 'ft-nope'"):
        lab.predict(["ft-nope"], PREDICT_TEXTS)
    with pytest.raises(Refused, match=f"{pretraining} is a run of kind pretrain"):
        lab.predict([pretraining], PREDICT_TEXTS)
    with pytest.raises(ConfigError, match="texts: 1 to 2,000 texts"):
        lab.predict([run_id], [])
    with pytest.raises(ConfigError, match=r"texts\[1\]: a text of at most 5,000 characters"):
        lab.predict([run_id], ["fine", "x" * 5_001])
    gone = finished_fine_tune(lab)
    for file in (paths.run_dir(gone) / "checkpoints" / "final").iterdir():
        file.unlink()
    with pytest.raises(Refused, match=f"{gone} is completed: it has no final checkpoint to predict with"):
        lab.predict([gone], PREDICT_TEXTS)
    with pytest.raises(ConfigError, match="texts: 1 to 64 texts"):
        lab.inference_cost(run_id, ["a text"] * 65)
    with pytest.raises(ConfigError, match=f"run_ids: 1 to {MAX_PREDICT_RUNS} classifiers"):
        lab.predict([run_id, *[lab.submit({"kind": "pretrain", "max_steps": 1}) for _ in range(4)]], PREDICT_TEXTS)
