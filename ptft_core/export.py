"""A fine-tuned text classifier as a Hugging Face model folder for use elsewhere, with its model card.

The folder is the run's final checkpoint (weights, config with the label names, tokenizer) plus a `README.md`
model card written from the lab's own record of the run: its lineage, data, strategy, test metrics, calibration
(ECE and the reliability bins), and how to load it. A classifier the lab reads by the mean of its last hidden
states (`pooling: mean`, every MiniLM fine-tune) carries `ptft_pooling.py` (hf_pooling.py, the lab's own reader)
as remote code named in its config's `auto_map`, so `pipeline(..., trust_remote_code=True)` predicts exactly what
the lab does; a [CLS]-read classifier loads without it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from ptft_core import paths
from ptft_core.config import RELIABILITY_SPLIT, ConfigError
from ptft_core.data import load_split
from ptft_core.lab import COST_TEXTS
from ptft_core.rundir import RunDir

CARD = "README.md"
REMOTE_CODE = "ptft_pooling.py"
NOT_EXPORTED = {"training_state.pt"}  # a resume point's optimizer and RNG: not the model


def export_model(run: dict[str, Any], metrics: pd.DataFrame, out: Path) -> Path:
    """Write completed fine-tune `run`'s final checkpoint to the new folder `out` with its model card; `metrics`:
    the run's latest metrics (split, name, value; the reliability bins with their step). Refused, with the reason,
    for another kind, an unfinished run, a missing checkpoint or an `out` that already holds files."""
    from ptft_core import hf_pooling  # transformers: only where a model is exported

    if run["kind"] != "finetune":
        raise ConfigError(f"export: {run['id']} is a run of kind {run['kind']}; export writes fine-tuned text "
                          "classifiers (an image run's checkpoint is the lab's own format, model.safetensors + "
                          "image_model.json)")
    folder = RunDir(paths.run_dir(run["id"]))
    if run["status"] != "completed":
        raise ConfigError(f"export: {run['id']} is {run['status']}, not completed: only a finished run has its final "
                          "checkpoint")
    if not folder.has_checkpoint("final"):
        raise ConfigError(f"export: {run['id']} has no final checkpoint in {folder.checkpoints}")
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"export: {out} already holds files; give a new or empty folder")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for file in folder.checkpoint("final").iterdir():
        if file.is_file() and file.name not in NOT_EXPORTED:
            shutil.copy2(file, partial / file.name)
    config = json.loads((partial / "config.json").read_text(encoding="utf-8"))
    remote = config.get(hf_pooling.POOLING_ATTR) == "mean"
    if remote:
        reader = hf_pooling.MEAN_POOLED[config["model_type"]].__name__
        shutil.copyfile(hf_pooling.__file__, partial / REMOTE_CODE)
        config["auto_map"] = {"AutoModelForSequenceClassification": f"{Path(REMOTE_CODE).stem}.{reader}"}
        config["architectures"] = [reader]
        (partial / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]  # JSON keys are text
    cost = inference_cost(folder.checkpoint("final"), run["config"])
    (partial / CARD).write_text(model_card(run, metrics, remote, labels, cost), encoding="utf-8")
    if out.exists():
        out.rmdir()
    partial.rename(out)
    return out


def cost_texts(config: dict[str, Any]) -> list[str]:
    """The texts a fine-tune's inference cost is timed on: the first COST_TEXTS of its (last) task's test split."""
    return load_split(config.get("then_dataset") or config["dataset"], "test")["text"].tolist()[:COST_TEXTS]


def disk_megabytes(checkpoint: Path) -> float:
    """A checkpoint's weights on disk, MB."""
    return sum(f.stat().st_size for f in Path(checkpoint).glob("*.safetensors")) / 2**20


def inference_cost(checkpoint: Path, config: dict[str, Any]) -> dict[str, float]:
    """What predicting with the exported model costs on this machine, in float32 on its CPU, as the lab's predictor
    runs it (inspect.inference_cost on cost_texts), and its size on disk."""
    from ptft_core import inspect  # torch: only where a model is exported

    loaded = inspect.load_classifier_at(str(checkpoint), attention_maps=False)
    cost = inspect.inference_cost(loaded, cost_texts(config), int(config["max_length"]), precisions=("float32",))[0]
    return {**cost, "disk_mb": disk_megabytes(checkpoint)}


def model_card(run: dict[str, Any], metrics: pd.DataFrame, remote: bool, labels: list[str],
               cost: dict[str, float] | None = None) -> str:
    """The README.md of an exported classifier, from the run's record alone (no model is loaded)."""
    c = run["config"]
    optim = c.get("optim") or {}
    test = metrics[metrics["split"] == "test"].set_index("name")["value"]
    bins = (metrics[metrics["split"] == RELIABILITY_SPLIT].pivot_table(index="step", columns="name", values="value")
            if (metrics["split"] == RELIABILITY_SPLIT).any() else pd.DataFrame())
    dataset = c.get("then_dataset") or c["dataset"]
    front = ["---", "library_name: transformers", "pipeline_tag: text-classification", "tags:", "- ptft",
             "- text-classification", f"datasets:\n- {dataset}"]
    if "/" in c["base"] and not c["base"].startswith(("run:", "/", ".", "~")):
        front.append(f"base_model: {c['base']}")
    front.append("---")
    trust = ", trust_remote_code=True" if remote else ""
    lines = [*front, "", f"# {run.get('name') or run['id']}", "",
             f"A text classifier fine-tuned in ptft (run `{run['id']}`), exported with its final checkpoint: the "
             "weights with the best validation score, which the test split was scored with.", "",
             "## Load it", "", "```python", "from transformers import pipeline", "",
             f'classify = pipeline("text-classification", model="path/to/this/folder"{trust}, top_k=None)',
             'classify("The film was slow at first, but the ending was surprisingly moving.")', "```", ""]
    if remote:
        lines += ["`trust_remote_code=True` loads `ptft_pooling.py` from this folder: the classifier reads the mean of "
                  "the encoder's last hidden states (as sentence-transformers models such as MiniLM were trained to "
                  "be read), which no built-in transformers class does; that file is ptft's own reader, so the "
                  "predictions are the lab's.", ""]
    lines += ["## Lineage", "",
              f"- base: `{c['base']}`" + (" re-initialised (the scratch baseline: the architecture without its "
                                          "pretraining)" if c.get("scratch") else ""),
              f"- parent run: `{run.get('parent_run') or 'none'}`",
              "- pooling: " + ("the mean of the last hidden states" if remote
                               else "the architecture's own ([CLS] or the last token)"),
              "", "## Data", "",
              f"- dataset: `{c['dataset']}`" + (f", then `{c['then_dataset']}` (sequential)" if c.get("then_dataset")
                                                else ""),
              f"- labels: {', '.join(labels)}",
              f"- share of the training labels used: {c.get('label_fraction', 1.0):g}", "",
              "## Training", "",
              f"- strategy: {c.get('strategy', 'full')}; epochs {c.get('epochs')}, max steps "
              f"{c.get('max_steps') or 'all'}, batch {c.get('batch_size')}, max length {c.get('max_length')} tokens",
              f"- optimizer: lr {optim.get('lr')}, weight decay {optim.get('weight_decay')}, schedule "
              f"{optim.get('schedule')}; seed {c.get('seed')}; precision {c.get('precision')}",
              "", f"## Test metrics ({dataset}, the whole test split)", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in test.items() if isinstance(value, float)
              and math.isfinite(value)]
    lines += ["", "## Calibration", ""]
    if bins.empty:
        lines += ["No reliability bins were logged for this run (it finished before the lab logged them)."]
    else:
        lines += [f"Expected calibration error {test.get('ece', math.nan):.4f} (15 equal-width confidence bins). "
                  "Each bin: the predictions whose top probability falls in it, how often they were right.", "",
                  "| confidence bin | examples | mean confidence | accuracy |", "|---|---:|---:|---:|"]
        lines += [f"| ({step / 15:.2f}, {(step + 1) / 15:.2f}] | {int(row['count'])} | {row['confidence']:.3f} | "
                  f"{row['accuracy']:.3f} |" for step, row in bins.iterrows()]
    lines += ["", "## Inference cost", ""]
    if cost:
        lines += [f"Measured at export on the exporting machine's CPU, float32, over {cost['texts']} test texts "
                  f"(max length {c.get('max_length')} tokens): **{cost['p50_ms']:.1f} ms** a text at batch 1 "
                  f"(median), **{cost['texts_per_s']:.0f} texts/s** at batch 32; {cost['disk_mb']:.1f} MB on disk, "
                  f"{cost['memory_mb']:.1f} MB in memory. bf16 and dynamic int8 were about 1.9x and 2.3x faster at "
                  "batch 32 for MiniLM on a 2-core CPU (ptft's `bench.inference_bench`)."]
    else:
        lines += ["Not measured for this export."]
    lines += ["",
              "## The run's config", "", "```json", json.dumps(c, indent=2, sort_keys=True), "```", ""]
    return "\n".join(lines)
