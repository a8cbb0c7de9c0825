"""Study reports: DataFrames in, conclusions (computed from the data) and plotly figures out; plus the HTML export.

Pure: no store, no engine, no torch. `build_report(data)` takes what `driver.load_study` gathers (the plan, one
row per planned run with its status and labels, and the runs' metric series) and calls the template's own
report function (in the study's module, beside its plan); stats.py holds the statistics they share.

Rules every report follows:
- Numbers are means ± sample standard deviations over seeds, and differences carry a verdict (stats.py).
- A cell (the runs of one arm at one setting, all seeds) is used for a conclusion only when every planned run
  in it completed and logged the metric; otherwise the report names what is missing instead (`missing_note`).
  A study with failed, cancelled or blocked runs says "incomplete: k of n runs finished" and lists them.
- Figures draw completed runs only.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ptft_core.config import RELIABILITY_SPLIT
from ptft_core.plots import REFERENCE_SPLIT, reliability_figure, seed_band
from ptft_core.studies.stats import difference, fmt_p, fmt_stat, last_values, mean_std, welch
from ptft_core.studies.templates import get_template

if TYPE_CHECKING:
    from ptft_core.studies.driver import StudyData


# --- the report ----------------------------------------------------------------------------------------------------


@dataclass
class Completeness:
    total: int
    completed: int
    counts: dict[str, int]
    problems: pd.DataFrame  # key, run_id, status, error of failed / cancelled / interrupted / blocked runs
    finished: bool  # nothing left to run

    @property
    def complete(self) -> bool:
        return self.completed == self.total

    def line(self) -> str:
        if self.complete:
            return f"complete: {self.completed} of {self.total} runs finished"
        word = "incomplete" if self.finished else "in progress"
        extra = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items()) if k != "completed" and v)
        return f"{word}: {self.completed} of {self.total} runs finished" + (f" ({extra})" if extra else "")


PROBLEM_STATES = ("failed", "cancelled", "interrupted", "pruned", "blocked")


def completeness(runs: pd.DataFrame) -> Completeness:
    counts = runs["status"].value_counts().to_dict() if len(runs) else {}
    problems = runs[runs["status"].isin(PROBLEM_STATES)][["key", "run_id", "status", "error"]].reset_index(drop=True)
    live = sum(counts.get(s, 0) for s in ("queued", "running", "waiting", "ready"))
    return Completeness(len(runs), int(counts.get("completed", 0)), {k: int(v) for k, v in counts.items()},
                        problems, finished=live == 0)


@dataclass
class Report:
    study: dict[str, Any]
    title: str
    question: str
    description: str
    expectation: str
    status: str  # complete | incomplete | in progress
    status_line: str
    conclusions: dict[str, Any]  # headline, findings (list), caveats (list), numbers (nested dict)
    figures: dict[str, go.Figure]
    tables: dict[str, pd.DataFrame]
    failed: pd.DataFrame
    runs: pd.DataFrame  # key, run_id, status, labels, config
    env: dict[str, Any]
    cross_eval: dict[str, str] = field(default_factory=dict)


@dataclass
class Findings:
    """What a template's report function fills: findings and caveats as sentences with numbers, plus the
    numbers themselves, figures and tables."""

    findings: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, go.Figure] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    headline: str | None = None


def build_report(data: StudyData) -> Report:
    """The report of a study; `data` is a `driver.StudyData` (study, plan, runs, metrics, wall, tokens)."""
    plan = data.plan
    template = get_template(plan.template)
    data = dataclasses.replace(data, runs=with_checks(data))
    runs = data.runs.copy()
    state = completeness(runs)
    out = Findings()
    template.report(data, out)
    out.caveats.extend(check_caveats(runs))
    if plan.tiny:
        out.caveats.insert(0, "CI form (--tiny-for-tests): a tiny random model and a few steps per run; the "
                              "numbers test the machinery and mean nothing about the question.")
    pending = [k for k, v in (data.cross_eval or {}).items() if v in ("pending", "running")]
    failed_evals = [k for k, v in (data.cross_eval or {}).items() if v == "failed"]
    if failed_evals:
        out.caveats.append(f"cross-domain evaluation failed for {len(failed_evals)} run(s): "
                           f"{', '.join(failed_evals)} (their evaluate runs' errors are on the Runs page)")
    if pending:
        out.caveats.append(f"{len(pending)} cross-domain evaluation(s) still to run")
    if not state.complete:
        missing = state.total - state.completed
        out.caveats.insert(0, f"{missing} of {state.total} planned runs did not finish; conclusions use only "
                              "settings whose runs all finished, and name the ones left out.")
    status = "complete" if state.complete and not failed_evals and not pending else (
        "incomplete" if state.finished and not pending else "in progress")
    status_line = state.line()
    if state.complete and (failed_evals or pending):
        status_line = f"{'incomplete' if failed_evals else 'in progress'}: {state.completed} of {state.total} runs " \
                      f"finished, cross-domain evaluation {'failed for some' if failed_evals else 'pending'}"
    headline = out.headline or (out.findings[0] if out.findings else "No conclusion yet: no setting has all its "
                                                                      "runs finished.")
    if status != "complete":
        headline = f"{status_line[0].upper()}{status_line[1:]}. {headline}"
    conclusions = {"headline": headline, "findings": out.findings, "caveats": out.caveats, "numbers": out.numbers,
                   "expectation": template.expectation}
    env = dict(plan.env)
    devices = sorted({d for d in runs.get("device", pd.Series(dtype=object)).dropna().tolist() if d})
    env["run devices"] = ", ".join(devices) or "none yet"
    return Report(data.study, template.title, template.question, template.description, template.expectation,
                  status, status_line, conclusions, out.figures, out.tables, state.problems, runs, env,
                  dict(data.cross_eval or {}))


# --- checks every fine-tuning run gets before it is interpreted ------------------------------------------------------

MAJORITY_MARGIN = 0.01  # test accuracy within one point of the majority-class rate: learned only the label prior
RISING_EVALS = 2  # convergence: the mean of the last RISING_EVALS validation accuracies against the RISING_EVALS
RISING_TOL = 0.015  # before them; a gain above 1.5 points means the run was still learning when it stopped


def majority_only(accuracy: float, f1: float, chance: float | None, classes: int = 2) -> bool:
    """True when a classifier's test scores are those of always predicting the majority class: accuracy at most
    MAJORITY_MARGIN above its share, or macro F1 at most 0.02 above a constant prediction's (2p/(1+p))/k."""
    if chance is None or not math.isfinite(accuracy):
        return False
    constant_f1 = 2 * chance / (1 + chance) / classes
    return accuracy <= chance + MAJORITY_MARGIN or (math.isfinite(f1) and f1 <= constant_f1 + 0.02)


def still_rising(values: Sequence[float], k: int = RISING_EVALS, tol: float = RISING_TOL) -> bool:
    """True when the last k values (validation accuracy, in step order) beat the k before them by more than
    tol: the run had not reached a plateau when its budget ended."""
    if len(values) < 2 * k:
        return False
    return float(np.mean(values[-k:]) - np.mean(values[-2 * k:-k])) > tol


FINETUNE_KINDS = ("finetune", "image_finetune")  # the kinds that classify: what the checks below read


def with_checks(data: StudyData) -> pd.DataFrame:
    """data.runs with `majority_only` and `still_rising` for completed fine-tuning runs (False elsewhere). The
    majority-class rate is the run's own where it logged one (an image run: split "reference", its classes'
    test split), else its dataset's."""
    runs = data.runs.copy()
    runs["majority_only"], runs["still_rising"] = False, False
    m = data.metrics
    if m.empty or runs.empty:
        return runs
    accuracy, f1 = last_values(m, "test", "accuracy"), last_values(m, "test", "f1")
    own_rate = last_values(m, REFERENCE_SPLIT, "accuracy")
    val = m[(m["split"] == "validation") & (m["name"] == "accuracy")].sort_values("x")
    curves = {rid: g["value"].tolist() for rid, g in val.groupby("run_id")}
    for i, r in runs.iterrows():
        c = r["config"] or {}
        if r["status"] != "completed" or c.get("kind") not in FINETUNE_KINDS:
            continue
        dataset = c.get("then_dataset") or c.get("dataset")
        meta = ((data.plan.meta or {}).get("datasets", {}).get(dataset) or {})
        chance = own_rate.get(r["run_id"], meta.get("chance"))
        classes = len(c.get("classes") or ()) or int(meta.get("classes") or 2)
        runs.at[i, "majority_only"] = majority_only(accuracy.get(r["run_id"], math.nan), f1.get(r["run_id"], math.nan),
                                                    chance, classes)
        runs.at[i, "still_rising"] = still_rising(curves.get(r["run_id"], []))
    return runs


def check_caveats(runs: pd.DataFrame) -> list[str]:
    """One caveat per check that some runs failed, naming their arms: those numbers are not interpreted."""
    finetunes = runs[runs["kind"].isin(FINETUNE_KINDS)] if "kind" in runs else runs
    label_of = finetunes["arm"] if "arm" in finetunes else finetunes["key"]

    def arms(column: str) -> str:
        flagged = label_of[finetunes[column].astype(bool)].astype(str)
        return "; ".join(f"{arm} ({n} of {int((label_of.astype(str) == arm).sum())} fine-tuning runs)"
                         for arm, n in flagged.value_counts().items())

    out = []
    if finetunes["majority_only"].any():
        out.append("learned only the majority class (test accuracy at the majority-class rate): "
                   f"{arms('majority_only')}. Their accuracy measures the label prior, not what the arm can learn.")
    if finetunes["still_rising"].any():
        out.append(f"not converged (validation accuracy still rising over the last evaluations): {arms('still_rising')}"
                   ". A longer budget could change their numbers.")
    return out


# --- shared by the study reports ------------------------------------------------------------------------------------


def missing_note(table: pd.DataFrame, label: Callable[[pd.Series], str]) -> str | None:
    partial = table[~table["complete"]]
    if partial.empty:
        return None
    names = [f"{label(r)} ({int(r['n'])} of {int(r['planned'])} runs)" for _, r in partial.iterrows()]
    return "no conclusion for " + "; ".join(names) + ": not every run finished"


def chance_rate(data: StudyData, dataset: str) -> float | None:
    return ((data.plan.meta or {}).get("datasets", {}).get(dataset) or {}).get("chance")


def seed_note(runs: pd.DataFrame, out: Findings) -> None:
    seeds = runs["seed"].nunique() if "seed" in runs else 0
    if seeds == 1:
        out.caveats.append("one seed per setting: no spread, so no difference can be called clear or noise")


def accuracy_by_tokens(fig: go.Figure, done: pd.DataFrame, name: str, color: str, **where: Any) -> None:
    """Mean test accuracy over seeds (band: +/- std, n in the legend) against pretraining tokens, from
    `stats.cells` rows with pretrain_tokens, n, mean and std."""
    seed_band(fig, done.rename(columns={"pretrain_tokens": "x"}), name, color, **where)


def pooled_reliability(m: pd.DataFrame, runs: pd.DataFrame, label: Callable[[pd.Series], str]) -> pd.DataFrame:
    """The test reliability bins (split "reliability") of the completed `runs`, pooled per `label(run row)` (an
    arm, over its seeds): each bin's examples summed, its confidence and accuracy weighted by their counts; long
    rows (label, x, name, value) as plots.reliability_figure reads them."""
    done = runs[runs["status"] == "completed"]
    labels = {r["run_id"]: label(r) for _, r in done.iterrows()}
    rows = m[(m["split"] == RELIABILITY_SPLIT) & m["run_id"].isin(list(labels))]
    if rows.empty:
        return pd.DataFrame(columns=["label", "x", "name", "value"])
    wide = rows.pivot_table(index=["run_id", "x"], columns="name", values="value").reset_index()
    wide = wide.assign(label=wide["run_id"].map(labels), hits=wide["accuracy"] * wide["count"],
                       sure=wide["confidence"] * wide["count"])
    pooled = wide.groupby(["label", "x"], sort=False)[["count", "hits", "sure"]].sum().reset_index()
    pooled = pooled.assign(accuracy=pooled["hits"] / pooled["count"], confidence=pooled["sure"] / pooled["count"])
    return pooled.melt(id_vars=["label", "x"], value_vars=["confidence", "accuracy", "count"], var_name="name",
                       value_name="value")


def calibration(data: StudyData, runs: pd.DataFrame, label: Callable[[pd.Series], str], out: Findings,
                what: str, key: str = "calibration") -> None:
    """A study's calibration check of the arms in `runs` (one setting, every seed): the reliability diagram
    pooled per arm (figure `key`) and each arm's test ECE (numbers[key]), the first two arms compared by Welch's
    test: "more confident" is tested, not repeated."""
    ece = last_values(data.metrics, "test", "ece")
    runs = runs.assign(arm_label=[label(r) for _, r in runs.iterrows()],
                       test_ece=[ece.get(r, math.nan) if s == "completed" else math.nan
                                 for r, s in zip(runs["run_id"], runs["status"], strict=True)])
    stats = {arm: mean_std(group["test_ece"]) for arm, group in runs.groupby("arm_label", sort=False)}
    out.figures[key] = reliability_figure(
        pooled_reliability(data.metrics, runs, label), {arm: s.mean for arm, s in stats.items() if s.n},
        title=f"Reliability on the test split, {what} (bins pooled over seeds)")
    ready = [arm for arm, s in stats.items() if s.n == int((runs["arm_label"] == arm).sum()) and s.n]
    numbers = out.numbers.setdefault(key, {"test_ece": {arm: stats[arm].as_dict() for arm in ready}})
    if len(ready) >= 2:
        first, second = ready[:2]
        diff = difference(stats[first], stats[second])
        numbers["difference"] = {"arms": [first, second], **diff.as_dict()}
        out.findings.append(f"Calibration, {what}: test ECE " + ", ".join(
            f"{arm} {fmt_stat(stats[arm], percent=False, digits=3)}" for arm in ready)
            + f"; {first} − {second}: {diff.text().replace('points', 'ECE points')} (lower is better calibrated).")


def inference_speed(data: StudyData, runs: pd.DataFrame, label: Callable[[pd.Series], str], out: Findings,
                    what: str) -> None:
    """The inference cost of arms whose models differ (families, sizes): each completed run scored its whole test
    split once at the end (split "time", `test_s`), so its test texts per second is a prediction throughput measured
    on the same texts for every arm (at the evaluation batch, in the run's precision, on this machine). Per arm
    the mean ± std over runs, the first two arms' ratio and Welch's test of their difference."""
    seconds = last_values(data.metrics, "time", "test_s")
    meta = (data.plan.meta or {}).get("datasets", {})
    speeds: dict[str, list[float]] = {}
    for _, r in runs[runs["status"] == "completed"].iterrows():
        c = r["config"] or {}
        rows = (meta.get(c.get("then_dataset") or c.get("dataset")) or {}).get("splits", {}).get("test", 0)
        s = seconds.get(r["run_id"], math.nan)
        if rows and s > 0:
            speeds.setdefault(label(r), []).append(rows / s)
    stats = {arm: mean_std(v) for arm, v in speeds.items()}
    if not stats:
        return
    out.numbers["inference_speed"] = {arm: s.as_dict() for arm, s in stats.items()}
    text = ", ".join(f"{arm} {fmt_stat(s, percent=False, digits=0)} texts/s" for arm, s in stats.items())
    if len(stats) >= 2:
        (a, sa), (b, sb) = list(stats.items())[:2]
        if sa.n >= 2 and sb.n >= 2:
            _, _, p, ci = welch(sa, sb)
            text += (f"; {a} / {b}: {sa.mean / sb.mean:.2f}x (difference {sa.mean - sb.mean:+.0f} texts/s, 95 % CI "
                     f"[{ci[0]:+.0f}, {ci[1]:+.0f}], Welch p {fmt_p(p)})")
    out.findings.append(f"Inference cost, {what} (each run's whole test split scored once at its end, at the "
                        f"evaluation batch in its precision): {text}.")


def finetune_runs(data: StudyData) -> pd.DataFrame:
    return data.runs[data.runs["kind"].isin(FINETUNE_KINDS)].copy()


# Past the unigram line by less than this: the model has learned word frequencies and little else; a finding
# about what its pretraining buys downstream would be about word frequencies.
UNIGRAM_MARGIN = 0.1


def reference_rows(data: StudyData, run_id: str | None, label: str | None = None) -> pd.DataFrame:
    """A pretraining run's unigram / bigram cross-entropy rows (split "reference"), for plots.reference_lines."""
    m = data.metrics
    rows = m[(m["run_id"] == run_id) & (m["split"] == REFERENCE_SPLIT)] if isinstance(run_id, str) else m.iloc[0:0]
    return rows.assign(label=label)


def unigram_check(data: StudyData, run_id: str | None, what: str, out: Findings) -> float | None:
    """Where a pretraining run's last validation loss stands against what word frequencies score on the same
    targets: a finding with both gaps, and a caveat when it is not past the unigram line by UNIGRAM_MARGIN (its
    checkpoints then carry word frequencies, not language). Returns the nats below the unigram line."""
    refs = reference_rows(data, run_id).set_index("name")["value"]
    m = data.metrics
    val = m[(m["run_id"] == run_id) & (m["split"] == "validation") & (m["name"] == "loss")].sort_values("x")
    if "unigram_loss" not in refs or val.empty:
        return None
    last, unigram = float(val["value"].iloc[-1]), float(refs["unigram_loss"])
    below = unigram - last
    bigram = f", bigram line {refs['bigram_loss']:.2f} ({refs['bigram_loss'] - last:+.2f} nats below it)" \
        if "bigram_loss" in refs else ""
    out.findings.append(f"{what}: validation loss {last:.2f} at step {int(val['x'].iloc[-1])}, {below:.2f} nats below "
                        f"the unigram line {unigram:.2f}{bigram}.")
    if below < UNIGRAM_MARGIN:
        out.caveats.append(f"{what} did not learn past word frequencies (validation loss {last:.2f} against the "
                           f"unigram line {unigram:.2f}): what its checkpoints do downstream says nothing about "
                           "pretraining on language.")
    return below


# --- HTML export ------------------------------------------------------------------------------------------------------


_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} .question{font-size:1.15em;color:#444}
.status{padding:.6em 1em;border-radius:6px;margin:1em 0;font-weight:600}
.status.complete{background:#e7f6ea;border:1px solid #7bc58a}
.status.incomplete,.status.in-progress{background:#fff4e0;border:1px solid #f0b35a}
.headline{font-size:1.1em;background:#f4f6fb;border-left:4px solid #1f77b4;padding:.6em 1em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.92em} th,td{border:1px solid #ddd;padding:.3em .6em;
text-align:left;vertical-align:top} th{background:#f6f6f6} pre{background:#f7f7f7;padding:.6em;overflow-x:auto;
font-size:.85em} .caveat{color:#8a5300} details{margin:.3em 0} .expect{color:#555;font-style:italic}
"""


def _table_html(df: pd.DataFrame) -> str:
    if df is None or df.empty:
        return "<p>none</p>"
    return df.to_html(index=df.index.name is not None, border=0, escape=True, na_rep="n/a")


def report_html(report: Report) -> str:
    """One self-contained HTML file: plotly.js inline (no network needed to open it), conclusions, figures,
    tables, failed runs, every run's config and the environment."""
    import plotly.offline

    e = html.escape
    c = report.conclusions
    status_class = report.status.replace(" ", "-")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(report.title)} — {e(str(report.study.get('name') or report.study.get('id')))}</title>",
        f"<style>{_CSS}</style>",
        f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script></head><body>",
        f"<h1>{e(report.title)}</h1><p class='question'>{e(report.question)}</p>",
        f"<p>Study <b>{e(str(report.study.get('name')))}</b> ({e(str(report.study.get('id')))}), template "
        f"<code>{e(str(report.study.get('template')))}</code>, "
        f"preset <code>{e(str(report.study.get('preset')))}</code>, "
        f"created {e(str(report.study.get('created_at')))}.</p>",
        f"<div class='status {status_class}'>{e(report.status_line)}</div>",
        "<h2>Conclusions</h2>", f"<p class='headline'>{e(c['headline'])}</p>",
        "<ul>" + "".join(f"<li>{e(f)}</li>" for f in c["findings"]) + "</ul>",
    ]
    if c["caveats"]:
        items = "".join(f"<li class='caveat'>{e(x)}</li>" for x in c["caveats"])
        parts.append(f"<h3>Caveats</h3><ul>{items}</ul>")
    parts.append(f"<h3>What the literature leads one to expect</h3><p class='expect'>{e(report.expectation)}</p>")
    parts.append(f"<h3>Design</h3><p>{e(report.description)}</p>")
    parts.append("<h2>Charts</h2>")
    for name, fig in report.figures.items():
        parts.append(f"<div id='fig-{e(name)}'>" + fig.to_html(full_html=False, include_plotlyjs=False) + "</div>")
    parts.append("<h2>Tables</h2>")
    for name, table in report.tables.items():
        parts.append(f"<h3>{e(name.replace('_', ' '))}</h3>" + _table_html(table))
    parts.append("<h2>Runs that did not finish</h2>" + _table_html(report.failed))
    parts.append("<h2>Runs and their configs</h2>")
    for _, r in report.runs.iterrows():
        label = f"{r['key']} — {r['run_id'] or 'not submitted'} — {r['status']}"
        config = e(json.dumps(r["config"], indent=1, sort_keys=True))
        parts.append(f"<details><summary>{e(label)}</summary><pre>{config}</pre></details>")
    env = [{"key": k, "value": ", ".join(map(str, v)) if isinstance(v, list) else str(v)}
           for k, v in report.env.items()]
    parts.append("<h2>Environment</h2>" + _table_html(pd.DataFrame(env)))
    parts.append("<h2>Numbers (machine-readable)</h2><pre>"
                 + e(json.dumps(c["numbers"], indent=1, sort_keys=True, default=str)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
