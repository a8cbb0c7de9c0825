"""Study reports: DataFrames in, conclusions (computed from the data) and plotly figures out; plus the HTML export.

Pure: no store, no engine, no torch. `build_report(data)` takes what `driver.load_study` gathers (the plan, one
row per planned run with its status and labels, and the runs' metric series) and calls the template's own
report function.

Rules every report follows:
- Numbers are means ± sample standard deviations over seeds (n shown); a difference is "clear" when it exceeds
  twice its standard error (sqrt(sa²/na + sb²/nb)), "within noise" otherwise, and with one seed per side it is
  reported without a verdict.
- A cell (the runs of one arm at one setting, all seeds) is used for a conclusion only when every planned run
  in it completed and logged the metric; otherwise the report names what is missing instead. A study with
  failed, cancelled or blocked runs says "incomplete: k of n runs finished" and lists them.
- Figures draw completed runs only.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
ARM_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
              "#bcbd22")
TRANSFER_SPLIT = "transfer"
TARGET_SHARE = 0.95  # convergence target: this share of the best arm's mean peak validation accuracy
NEGLIGIBLE = 0.01  # differences under one accuracy point are called negligible whatever the noise


# --- statistics --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {"mean": _num(self.mean), "std": _num(self.std), "n": self.n}


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def mean_std(values: Iterable[float]) -> Stat:
    """Mean and sample standard deviation (ddof=1) of the finite values; std is NaN below two values."""
    vals = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(vals) == 0:
        return Stat(math.nan, math.nan, 0)
    return Stat(float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else math.nan, len(vals))


def fmt_stat(stat: Stat, percent: bool = True, digits: int = 1) -> str:
    if stat.n == 0:
        return "n/a"
    scale, unit = (100.0, " %") if percent else (1.0, "")
    if stat.n == 1:
        return f"{stat.mean * scale:.{digits}f}{unit} (1 seed)"
    return f"{stat.mean * scale:.{digits}f} ± {stat.std * scale:.{digits}f}{unit} (n={stat.n})"


def pts(delta: float) -> str:
    """An accuracy difference in percentage points."""
    return f"{delta * 100:+.1f} points"


@dataclass(frozen=True)
class Difference:
    delta: float
    se: float
    verdict: str  # "clear", "within noise", "negligible" or "one seed"

    def text(self) -> str:
        if self.verdict == "one seed":
            return f"{pts(self.delta)} (one seed: no noise estimate)"
        if math.isfinite(self.se):
            return f"{pts(self.delta)} ± {self.se * 100:.1f} ({self.verdict})"
        return f"{pts(self.delta)} ({self.verdict})"

    def as_dict(self) -> dict[str, Any]:
        return {"delta": _num(self.delta), "se": _num(self.se), "verdict": self.verdict}


def difference(a: Stat, b: Stat, negligible: float = NEGLIGIBLE) -> Difference:
    """a - b with its standard error and a verdict (see the module docstring)."""
    delta = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return Difference(delta, math.nan, "one seed")
    se = math.sqrt(a.std ** 2 / a.n + b.std ** 2 / b.n)
    clear = abs(delta) > 2 * se
    return Difference(delta, se, ("negligible" if abs(delta) < negligible else "clear") if clear else "within noise")


def steps_to_target(series: pd.DataFrame, target: float) -> float | None:
    """The first x (step) at which `value` reaches `target`; None if it never does. Columns: x, value."""
    if series.empty:
        return None
    s = series.sort_values("x")
    hit = s[s["value"] >= target]
    return None if hit.empty else float(hit["x"].iloc[0])


def last_values(metrics: pd.DataFrame, split: str, name: str) -> pd.Series:
    """run_id -> the value at the largest x of (split, name)."""
    m = metrics[(metrics["split"] == split) & (metrics["name"] == name)]
    if m.empty:
        return pd.Series(dtype=float)
    return m.sort_values("x").groupby("run_id")["value"].last()


def first_values(metrics: pd.DataFrame, split: str, name: str) -> pd.Series:
    m = metrics[(metrics["split"] == split) & (metrics["name"] == name)]
    if m.empty:
        return pd.Series(dtype=float)
    return m.sort_values("x").groupby("run_id")["value"].first()


def max_values(metrics: pd.DataFrame, split: str, name: str) -> pd.Series:
    m = metrics[(metrics["split"] == split) & (metrics["name"] == name)]
    return m.groupby("run_id")["value"].max() if not m.empty else pd.Series(dtype=float)


def attach(runs: pd.DataFrame, values: pd.Series, column: str) -> pd.DataFrame:
    """`runs` with `column` = values[run_id] for completed runs (NaN for every other run)."""
    out = runs.copy()
    out[column] = [values.get(rid, math.nan) if status == "completed" and isinstance(rid, str) else math.nan
                   for rid, status in zip(out["run_id"], out["status"], strict=True)]
    return out


def cells(runs: pd.DataFrame, by: Sequence[str], column: str) -> pd.DataFrame:
    """Per group of `by`: mean, std, n (finished runs with the value), planned (all runs) and complete."""
    rows = []
    for keys, group in runs.groupby(list(by), sort=True, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        stat = mean_std(group[column])
        rows.append({**dict(zip(by, keys, strict=True)), "mean": stat.mean, "std": stat.std, "n": stat.n,
                     "planned": len(group), "complete": stat.n == len(group), "stat": stat})
    return pd.DataFrame(rows, columns=[*by, "mean", "std", "n", "planned", "complete", "stat"])


def cell(table: pd.DataFrame, **where: Any) -> pd.Series | None:
    mask = pd.Series(True, index=table.index)
    for key, value in where.items():
        mask &= table[key] == value
    found = table[mask]
    return None if found.empty else found.iloc[0]


def transfer_matrix(runs: pd.DataFrame, metrics: pd.DataFrame, domains: Sequence[str],
                    metric: str = "accuracy") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(mean, std, n) matrices: rows = the domain trained on, columns = the domain tested on.

    The diagonal is each run's own test metric (split "test"); off-diagonal cells are its cross-domain scores
    (split "transfer", name "<metric>@<domain>"). Only completed runs count. `runs` needs columns run_id,
    status and domain."""
    done = runs[runs["status"] == "completed"]
    own = last_values(metrics, "test", metric)
    mean = pd.DataFrame(np.nan, index=list(domains), columns=list(domains))
    std, n = mean.copy(), pd.DataFrame(0, index=list(domains), columns=list(domains))
    for source in domains:
        ids = done.loc[done["domain"] == source, "run_id"].tolist()
        for target in domains:
            values = (own if source == target else last_values(metrics, TRANSFER_SPLIT, f"{metric}@{target}"))
            stat = mean_std(values.get(rid, math.nan) for rid in ids)
            mean.loc[source, target], std.loc[source, target], n.loc[source, target] = stat.mean, stat.std, stat.n
    mean.index.name = std.index.name = n.index.name = "trained on"
    return mean, std, n


def stage_boundary(metrics: pd.DataFrame, run_id: str) -> float | None:
    """The first step at which a sequential run logged prev_task_accuracy (its second stage's first eval)."""
    m = metrics[(metrics["run_id"] == run_id) & (metrics["name"] == "prev_task_accuracy")]
    return None if m.empty else float(m["x"].min())


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


PROBLEM_STATES = ("failed", "cancelled", "interrupted", "blocked")


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


REPORTS: dict[str, Callable[[Any, Findings], None]] = {}


def report_for(name: str):
    def register(fn):
        REPORTS[name] = fn
        return fn
    return register


def build_report(data: Any) -> Report:
    """The report of a study; `data` is a `driver.StudyData` (study, plan, runs, metrics, wall, tokens)."""
    from ptft_core.studies.templates import get_template

    plan = data.plan
    template = get_template(plan.template)
    runs = data.runs.copy()
    state = completeness(runs)
    out = Findings()
    REPORTS[plan.template](data, out)
    if plan.tiny:
        out.caveats.insert(0, "CI form (--tiny-for-tests): a tiny random model and a few steps per run; the "
                              "numbers test the machinery and mean nothing about the question.")
    pending = [k for k, v in (data.cross_eval or {}).items() if v in ("pending", "running")]
    failed_evals = [k for k, v in (data.cross_eval or {}).items() if v == "failed"]
    if failed_evals:
        out.caveats.append(f"cross-domain evaluation failed for {len(failed_evals)} run(s): "
                           f"{', '.join(failed_evals)} (see cross_eval.log in their run folders)")
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


# --- figure helpers -----------------------------------------------------------------------------------------------


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 420) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=title, height=height, margin=dict(l=60, r=20, t=60, b=50),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0), hovermode="closest")
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    return fig


def _empty(title: str, message: str = "no finished runs yet") -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=16))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, "", "")


def _color(i: int) -> str:
    return ARM_COLORS[i % len(ARM_COLORS)]


def _chance_line(fig: go.Figure, chance: float | None, **kw: Any) -> None:
    if chance:
        fig.add_hline(y=chance, line_dash="dot", line_color="gray", annotation_text=f"majority class {chance:.1%}",
                      annotation_position="bottom right", **kw)


def _mean_curves(metrics: pd.DataFrame, runs: pd.DataFrame, split: str, name: str, by: Sequence[str]) -> pd.DataFrame:
    """Mean and std over seeds at each x of (split, name), per group `by` (completed runs only)."""
    done = runs[runs["status"] == "completed"][["run_id", *by]]
    m = metrics[(metrics["split"] == split) & (metrics["name"] == name)].merge(done, on="run_id")
    if m.empty:
        return pd.DataFrame(columns=[*by, "x", "mean", "std", "n"])
    return (m.groupby([*by, "x"])["value"].agg(mean="mean", std="std", n="count").reset_index())


def _bars(table: pd.DataFrame, x: str, title: str, y: str, group: str | None = None,
          chance: float | None = None, order: Sequence[Any] | None = None) -> go.Figure:
    done = table[table["n"] > 0]
    if done.empty:
        return _empty(title)
    fig = go.Figure()
    groups = [None] if group is None else list(dict.fromkeys(done[group]))
    for i, g in enumerate(groups):
        part = done if g is None else done[done[group] == g]
        if order is not None:
            part = part.set_index(x).reindex([o for o in order if o in set(part[x])]).reset_index()
        fig.add_trace(go.Bar(
            x=[str(v) for v in part[x]], y=part["mean"], name=str(g) if g is not None else y,
            marker_color=_color(i), error_y=dict(type="data", array=part["std"].fillna(0)),
            text=[f"{m:.1%}" for m in part["mean"]], textposition="outside",
            customdata=part["n"], hovertemplate="%{x}: %{y:.2%} (n=%{customdata})<extra></extra>"))
    _chance_line(fig, chance)
    fig.update_layout(barmode="group")
    lo = max(0.0, float((done["mean"] - done["std"].fillna(0)).min()) - 0.1)
    fig.update_yaxes(range=[min(lo, (chance or 1) - 0.05), 1.0], tickformat=".0%")
    return _layout(fig, title, x.replace("_", " "), y)


def _missing_note(table: pd.DataFrame, label: Callable[[pd.Series], str]) -> str | None:
    partial = table[~table["complete"]]
    if partial.empty:
        return None
    names = [f"{label(r)} ({int(r['n'])} of {int(r['planned'])} runs)" for _, r in partial.iterrows()]
    return "no conclusion for " + "; ".join(names) + ": not every run finished"


def _chance(data: Any, dataset: str) -> float | None:
    return ((data.plan.meta or {}).get("datasets", {}).get(dataset) or {}).get("chance")


def _caps(runs: pd.DataFrame, data: Any, label: Callable[[pd.Series], str]) -> list[str]:
    """Runs whose max_steps cut their epochs short (the quick preset's budget), as caveats."""
    notes = []
    seen = set()
    for _, r in runs.iterrows():
        c = r["config"]
        if c.get("kind") != "finetune" or not c.get("max_steps"):
            continue
        n = ((data.plan.meta or {}).get("datasets", {}).get(c["dataset"]) or {}).get("splits", {}).get("train")
        if not n:
            continue
        examples = max(1, round(c["label_fraction"] * n))
        full = math.ceil(examples / c["batch_size"]) * c["epochs"]
        text = label(r)
        if c["max_steps"] < full and text not in seen:
            seen.add(text)
            notes.append(f"{text}: capped at {c['max_steps']} steps ({c['max_steps'] * c['batch_size'] / examples:.2f} "
                         f"epochs of its {examples} labelled examples), so it saw no more examples than smaller "
                         "label budgets")
    return notes


def _seed_note(runs: pd.DataFrame, out: Findings) -> None:
    seeds = runs["seed"].nunique() if "seed" in runs else 0
    if seeds == 1:
        out.caveats.append("one seed per setting: no spread, so no difference can be called clear or noise")


def _ft_runs(data: Any) -> pd.DataFrame:
    return data.runs[data.runs["kind"] == "finetune"].copy()


# --- 1. pretraining_helps ---------------------------------------------------------------------------------------------


@report_for("pretraining_helps")
def _pretraining_helps(data: Any, out: Findings) -> None:
    runs = _ft_runs(data)
    m = data.metrics
    chance = _chance(data, "movies")
    runs = attach(runs, last_values(m, "test", "accuracy"), "test_accuracy")
    runs = attach(runs, max_values(m, "validation", "accuracy"), "peak_val")
    gap = last_values(m, "train", "accuracy") - last_values(m, "validation", "accuracy")
    runs = attach(runs, gap.dropna(), "gap")
    acc = cells(runs, ["label_fraction", "arm"], "test_accuracy")
    examples = runs.groupby("label_fraction")["labelled_examples"].first() if "labelled_examples" in runs else {}
    fractions = sorted(runs["label_fraction"].unique())

    # Data efficiency.
    fig = go.Figure()
    for i, arm in enumerate(("pretrained", "scratch")):
        part = acc[(acc["arm"] == arm) & (acc["n"] > 0)]
        xs = [examples.get(f, f) for f in part["label_fraction"]]
        fig.add_trace(go.Scatter(x=xs, y=part["mean"], mode="lines+markers", name=arm, marker_color=_color(i),
                                 error_y=dict(type="data", array=part["std"].fillna(0)), customdata=part["n"],
                                 hovertemplate="%{x} examples: %{y:.2%} (n=%{customdata})<extra>" + arm + "</extra>"))
    _chance_line(fig, chance)
    fig.update_xaxes(type="log")
    fig.update_yaxes(tickformat=".0%")
    out.figures["data_efficiency"] = (_layout(fig, "Test accuracy vs labelled examples (mean ± std over seeds)",
                                              "labelled training examples (log scale)", "movies test accuracy")
                                      if (acc["n"] > 0).any() else _empty("Test accuracy vs labelled examples"))

    table_rows, per_fraction = [], {}
    for f in fractions:
        p, s = cell(acc, label_fraction=f, arm="pretrained"), cell(acc, label_fraction=f, arm="scratch")
        row = {"label fraction": f"{f:.0%}" if f >= 0.01 else f"{f:.1%}",
               "labelled examples": examples.get(f), "pretrained": fmt_stat(p["stat"]) if p is not None else "n/a",
               "scratch": fmt_stat(s["stat"]) if s is not None else "n/a", "difference": "n/a"}
        if p is not None and s is not None and p["complete"] and s["complete"]:
            d = difference(p["stat"], s["stat"])
            row["difference"] = d.text()
            per_fraction[f] = d
            out.numbers.setdefault("test_accuracy", {})[f"{f:g}"] = {
                "pretrained": p["stat"].as_dict(), "scratch": s["stat"].as_dict(), "difference": d.as_dict()}
            out.findings.append(
                f"With {row['label fraction']} of the labels ({row['labelled examples']} examples), pretrained "
                f"MiniLM reaches {fmt_stat(p['stat'])} test accuracy against {fmt_stat(s['stat'])} from scratch: "
                f"{d.text()}.")
        table_rows.append(row)
    out.tables["test_accuracy"] = pd.DataFrame(table_rows)
    note = _missing_note(acc, lambda r: f"{r['arm']} at {r['label_fraction']:.0%} labels")
    if note:
        out.caveats.append(note)
    if len(per_fraction) >= 2:
        lo, hi = min(per_fraction), max(per_fraction)
        dlo, dhi = per_fraction[lo].delta, per_fraction[hi].delta
        trend = ("shrinks" if dhi < dlo else "grows") + " as labels grow"
        helps = "helps" if all(d.delta > 0 for d in per_fraction.values()) else "does not always help"
        out.headline = (f"Pretraining {helps}: {pts(dlo)} at {lo:.0%} labels, {pts(dhi)} at {hi:.0%}; "
                        f"the advantage {trend}.")
        out.findings.insert(0, out.headline)
        wins = [f for f, d in per_fraction.items() if d.delta > 0 and d.verdict in ("clear", "one seed")]
        agree = len(wins) == len(per_fraction) and dhi <= dlo
        out.findings.append(
            "This agrees with the expectation (pretraining wins everywhere, most with few labels)." if agree else
             "This does not fully agree with the expectation (pretraining winning everywhere, most with few labels): "
             + ", ".join(f"{f:.0%}: {d.text()}" for f, d in per_fraction.items()) + ".")

    # Convergence: steps to a target validation accuracy.
    val = _mean_curves(m, runs, "validation", "accuracy", ["label_fraction", "arm"])
    peak = cells(runs, ["label_fraction", "arm"], "peak_val")
    conv_rows = []
    fig = go.Figure()
    for fi, f in enumerate(fractions):
        best = peak[(peak["label_fraction"] == f) & peak["complete"]]["mean"].max()
        if not np.isfinite(best):
            continue
        target = TARGET_SHARE * best
        for ai, arm in enumerate(("pretrained", "scratch")):
            curve = val[(val["label_fraction"] == f) & (val["arm"] == arm)]
            if not curve.empty:
                fig.add_trace(go.Scatter(x=curve["x"], y=curve["mean"], mode="lines+markers",
                                         name=f"{arm}, {f:.0%} labels", marker_color=_color(ai),
                                         line=dict(dash=("solid", "dash", "dot", "dashdot", "longdash")[fi % 5])))
            group = runs[(runs["label_fraction"] == f) & (runs["arm"] == arm)]
            finished = group[group["status"] == "completed"]
            steps = [steps_to_target(m[(m["run_id"] == rid) & (m["split"] == "validation")
                                       & (m["name"] == "accuracy")], target) for rid in finished["run_id"]]
            reached = [s for s in steps if s is not None]
            complete = len(finished) == len(group)
            conv_rows.append({"label fraction": f"{f:.0%}", "arm": arm, "target": f"{target:.1%}",
                              "steps to target": (f"{np.mean(reached):.0f}" if reached else "not reached")
                              + (f" (reached in {len(reached)} of {len(steps)} seeds)" if len(reached) != len(steps)
                                 else ""),
                              "complete": complete})
            out.numbers.setdefault("steps_to_target", {}).setdefault(f"{f:g}", {})[arm] = {
                "target": target, "mean_steps": float(np.mean(reached)) if reached else None,
                "reached": len(reached), "seeds": len(steps)}
    if fig.data:
        out.figures["convergence"] = _layout(fig, f"Validation accuracy during fine-tuning (mean over seeds); "
                                                  f"target = {TARGET_SHARE:.0%} of the best arm's peak",
                                             "step", "movies validation accuracy")
        out.figures["convergence"].update_yaxes(tickformat=".0%")
    else:
        out.figures["convergence"] = _empty("Validation accuracy during fine-tuning")
    conv = pd.DataFrame(conv_rows)
    out.tables["steps_to_target"] = conv
    for f in fractions:
        part = conv[conv["label fraction"] == f"{f:.0%}"] if len(conv) else conv
        if len(part) == 2 and part["complete"].all():
            p, s = part.iloc[0], part.iloc[1]
            out.findings.append(f"To reach {p['target']} validation accuracy at {f:.0%} labels: pretrained "
                                f"{p['steps to target']} steps, scratch {s['steps to target']}.")

    # Overfitting gap.
    gaps = cells(runs, ["label_fraction", "arm"], "gap")
    gaps["label"] = [f"{f:.0%}" for f in gaps["label_fraction"]]
    fig = _bars(gaps, "label", "Train − validation accuracy at the end (mean ± std)", "accuracy gap", group="arm")
    if (gaps["n"] > 0).any():
        fig.update_yaxes(range=None, tickformat=".0%", autorange=True)
        fig.update_xaxes(title_text="label fraction")
    out.figures["overfitting_gap"] = fig
    gap_text = []
    for f in fractions:
        p, s = cell(gaps, label_fraction=f, arm="pretrained"), cell(gaps, label_fraction=f, arm="scratch")
        if p is not None and s is not None and p["complete"] and s["complete"]:
            gap_text.append(f"{f:.0%}: pretrained {fmt_stat(p['stat'])}, scratch {fmt_stat(s['stat'])}")
            out.numbers.setdefault("overfitting_gap", {})[f"{f:g}"] = {"pretrained": p["stat"].as_dict(),
                                                                      "scratch": s["stat"].as_dict()}
    if gap_text:
        out.findings.append("Train − validation accuracy at the end (a train sample scored like validation): "
                            + "; ".join(gap_text) + ".")
    out.caveats += _caps(runs, data, lambda r: f"the {r['label_fraction']:.0%}-label runs")
    _seed_note(runs, out)


# --- 2. how_much_pretraining ---------------------------------------------------------------------------------------


@report_for("how_much_pretraining")
def _how_much_pretraining(data: Any, out: Findings) -> None:
    runs = data.runs
    m = data.metrics
    pt = runs[runs["key"] == "pretrain"].iloc[0]
    ft = attach(_ft_runs(data), last_values(m, "test", "accuracy"), "test_accuracy")
    acc = cells(ft, ["pretrain_step", "pretrain_tokens"], "test_accuracy").sort_values("pretrain_tokens")
    chance = _chance(data, "movies")

    fig = make_subplots(rows=1, cols=2, subplot_titles=("movies test accuracy after fine-tuning",
                                                        "pretraining masked-LM loss"))
    done = acc[acc["n"] > 0]
    fig.add_trace(go.Scatter(x=done["pretrain_tokens"], y=done["mean"], mode="lines+markers", name="fine-tuned",
                             error_y=dict(type="data", array=done["std"].fillna(0)), marker_color=_color(0),
                             customdata=np.stack([done["pretrain_step"], done["n"]], axis=-1) if len(done) else None,
                             hovertemplate="%{x:.3s} tokens (step %{customdata[0]}): %{y:.2%} "
                                           "(n=%{customdata[1]})<extra></extra>"), row=1, col=1)
    if chance:
        fig.add_hline(y=chance, line_dash="dot", line_color="gray", row=1, col=1,
                      annotation_text=f"majority class {chance:.1%}")
    tok = data.tokens[data.tokens["run_id"] == pt["run_id"]] if isinstance(pt["run_id"], str) else data.tokens.iloc[0:0]
    for i, split in enumerate(("train", "validation")):
        s = tok[tok["split"] == split]
        if not s.empty:
            fig.add_trace(go.Scatter(x=s["x"], y=s["value"], mode="lines" if split == "train" else "lines+markers",
                                     name=f"{split} MLM loss", marker_color=_color(i + 1)), row=1, col=2)
    for step in sorted(set(ft["pretrain_tokens"])):
        fig.add_vline(x=step, line_dash="dot", line_color="lightgray", row=1, col=2)
    fig.update_xaxes(title_text="pretraining tokens", row=1, col=1)
    fig.update_xaxes(title_text="pretraining tokens (dotted: the fine-tuned checkpoints)", row=1, col=2)
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="loss", row=1, col=2)
    fig.update_layout(template=TEMPLATE, height=440, title="Downstream accuracy vs pretraining tokens, beside the "
                      "pretraining loss", legend=dict(orientation="h", y=-0.2))
    out.figures["accuracy_vs_tokens"] = fig

    out.tables["accuracy_by_checkpoint"] = pd.DataFrame([{
        "pretraining step": int(r["pretrain_step"]), "pretraining tokens": int(r["pretrain_tokens"]),
        "movies test accuracy": fmt_stat(r["stat"]), "complete": bool(r["complete"])} for _, r in acc.iterrows()])
    note = _missing_note(acc, lambda r: f"the step-{int(r['pretrain_step'])} checkpoint")
    if note:
        out.caveats.append(note)
    full = acc[acc["complete"]].reset_index(drop=True)
    for _, r in full.iterrows():
        out.numbers.setdefault("test_accuracy", {})[str(int(r["pretrain_step"]))] = {
            "tokens": int(r["pretrain_tokens"]), **r["stat"].as_dict()}
    if len(full) >= 2:
        first, last = full.iloc[0], full.iloc[-1]
        best = full.loc[full["mean"].idxmax()]
        d = difference(last["stat"], first["stat"])
        out.headline = (f"{_tokens(last['pretrain_tokens'])} tokens of pretraining change movies accuracy by "
                        f"{d.text()} against {_tokens(first['pretrain_tokens'])} ({fmt_stat(last['stat'])} vs "
                        f"{fmt_stat(first['stat'])}); the best checkpoint is step {int(best['pretrain_step'])} "
                        f"({fmt_stat(best['stat'])}).")
        out.findings.append(out.headline)
        if len(full) >= 3:
            prev = full.iloc[-2]
            d_last = difference(last["stat"], prev["stat"])
            d_first = difference(full.iloc[1]["stat"], first["stat"])
            ratio = last["pretrain_tokens"] / max(prev["pretrain_tokens"], 1)
            out.findings.append(
                f"The first checkpoint ({_tokens(full.iloc[1]['pretrain_tokens'])} tokens) moved accuracy by "
                f"{d_first.text()}; the last {ratio:.1f}x more tokens ({_tokens(prev['pretrain_tokens'])} → "
                f"{_tokens(last['pretrain_tokens'])}) by {d_last.text()}"
                + (": diminishing returns." if abs(d_last.delta) < abs(d_first.delta) else "."))
    # Pretraining loss.
    val = tok[tok["split"] == "validation"].sort_values("x")
    if len(val) >= 2:
        out.findings.append(f"The pretraining validation MLM loss went from {val['value'].iloc[0]:.2f} at "
                            f"{_tokens(val['x'].iloc[0])} tokens to {val['value'].iloc[-1]:.2f} at "
                            f"{_tokens(val['x'].iloc[-1])}.")
        out.numbers["pretrain_val_loss"] = {"first": float(val["value"].iloc[0]), "last": float(val["value"].iloc[-1])}

    # Compute: seconds to reach each checkpoint vs seconds of one fine-tune.
    steps_wall = (_step_wall(data, pt["run_id"]) if isinstance(pt["run_id"], str)
                  else pd.DataFrame(columns=["step", "seconds"]))
    ft_seconds = cells(ft.assign(sec=[s if st == "completed" else math.nan for s, st in
                                      zip(ft["seconds"], ft["status"], strict=True)]),
                       ["pretrain_step", "pretrain_tokens"], "sec").sort_values("pretrain_tokens")
    rows = []
    for _, r in ft_seconds.iterrows():
        step = int(r["pretrain_step"])
        pt_s = 0.0 if step == 0 else _seconds_at(steps_wall, step)
        rows.append({"checkpoint": f"step {step}", "pretraining s": pt_s, "fine-tuning s": r["mean"],
                     "pretraining tokens": int(r["pretrain_tokens"])})
    comp = pd.DataFrame(rows)
    out.tables["compute"] = comp
    if len(comp) and comp["pretraining s"].notna().any():
        fig = go.Figure()
        fig.add_trace(go.Bar(x=comp["checkpoint"], y=comp["pretraining s"], name="pretraining to this checkpoint",
                             marker_color=_color(1)))
        fig.add_trace(go.Bar(x=comp["checkpoint"], y=comp["fine-tuning s"], name="one fine-tune (mean over seeds)",
                             marker_color=_color(0)))
        fig.update_layout(barmode="group")
        out.figures["compute"] = _layout(fig, "Compute: wall-clock seconds of pretraining vs fine-tuning "
                                              "(setup and evaluations included)", "checkpoint", "seconds")
        last = comp.dropna().iloc[-1] if len(comp.dropna()) else None
        if last is not None and last["fine-tuning s"] > 0:
            out.findings.append(f"Pretraining to {last['checkpoint']} took {last['pretraining s']:.0f} s of wall "
                                f"clock, {last['pretraining s'] / last['fine-tuning s']:.1f}x one fine-tune "
                                f"({last['fine-tuning s']:.0f} s).")
            out.numbers["compute_seconds"] = {"pretraining": float(last["pretraining s"]),
                                              "finetuning": float(last["fine-tuning s"])}
    else:
        out.figures["compute"] = _empty("Compute: pretraining vs fine-tuning")
    _seed_note(ft, out)


def _tokens(n: float) -> str:
    n = float(n)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def _step_wall(data: Any, run_id: str) -> pd.DataFrame:
    """(step, seconds since start) of a run's train-loss rows: the step and wall-time views of the same rows."""
    by_step = data.metrics[(data.metrics["run_id"] == run_id) & (data.metrics["split"] == "train")
                           & (data.metrics["name"] == "loss")].sort_values("x")
    by_wall = data.wall[(data.wall["run_id"] == run_id)].sort_values("x")
    if len(by_step) != len(by_wall) or by_step.empty:
        return pd.DataFrame(columns=["step", "seconds"])
    return pd.DataFrame({"step": by_step["x"].to_numpy(), "seconds": by_wall["x"].to_numpy()})


def _seconds_at(steps_wall: pd.DataFrame, step: int) -> float:
    if steps_wall.empty:
        return math.nan
    return float(np.interp(step, steps_wall["step"].astype(float), steps_wall["seconds"].astype(float)))


# --- 3. further_pretraining -------------------------------------------------------------------------------------------


@report_for("further_pretraining")
def _further_pretraining(data: Any, out: Findings) -> None:
    from ptft_core.studies.templates import FURTHER_ARMS

    m = data.metrics
    ft = attach(_ft_runs(data), last_values(m, "test", "accuracy"), "test_accuracy")
    acc = cells(ft, ["label_fraction", "arm"], "test_accuracy")
    acc["labels"] = [f"{f:.0%} labels" for f in acc["label_fraction"]]
    arms = list(FURTHER_ARMS)
    fig = _bars(acc, "arm", "Movies test accuracy by further pretraining (mean ± std over seeds)",
                "movies test accuracy", group="labels", chance=_chance(data, "movies"), order=arms)
    out.figures["accuracy_by_arm"] = fig
    rows = []
    for f in sorted(acc["label_fraction"].unique()):
        none = cell(acc, label_fraction=f, arm="none")
        for arm in arms:
            c = cell(acc, label_fraction=f, arm=arm)
            if c is None:
                continue
            row = {"labels": f"{f:.0%}", "arm": arm, "test accuracy": fmt_stat(c["stat"]), "vs none": ""}
            if arm != "none" and none is not None and c["complete"] and none["complete"]:
                d = difference(c["stat"], none["stat"])
                row["vs none"] = d.text()
                out.numbers.setdefault("vs_none", {}).setdefault(f"{f:g}", {})[arm] = d.as_dict()
                out.findings.append(f"{arm} at {f:.0%} labels: {fmt_stat(c['stat'])} vs {fmt_stat(none['stat'])} "
                                    f"without further pretraining: {d.text()}.")
            if c["complete"]:
                out.numbers.setdefault("test_accuracy", {}).setdefault(f"{f:g}", {})[arm] = c["stat"].as_dict()
            rows.append(row)
    out.tables["test_accuracy"] = pd.DataFrame(rows)
    note = _missing_note(acc, lambda r: f"{r['arm']} at {r['label_fraction']:.0%} labels")
    if note:
        out.caveats.append(note)
    complete = acc[acc["complete"]]
    if len(complete) >= 2:
        for f in sorted(complete["label_fraction"].unique()):
            part = complete[complete["label_fraction"] == f]
            best = part.loc[part["mean"].idxmax()]
            diffs = out.numbers.get("vs_none", {}).get(f"{f:g}", {})
            clear = [a for a, d in diffs.items() if d["verdict"] == "clear"]
            out.headline = (f"At {f:.0%} labels the best arm is {best['arm']} ({fmt_stat(best['stat'])}); "
                            + (f"clear differences from no further pretraining: {', '.join(clear)}." if clear else
                               "no arm differs clearly from no further pretraining."))
            out.findings.insert(0, out.headline)
            related = [diffs.get(a, {}).get("delta") for a in ("domain (amazon)", "task (movies)")]
            unrelated = diffs.get("unrelated (wiki)", {}).get("delta")
            if None not in related and unrelated is not None:
                agree = max(related) > unrelated
                out.findings.append(
                    f"Related text ({pts(related[0])} domain, {pts(related[1])} task) vs unrelated ({pts(unrelated)}): "
                    + ("related text helps more, as expected." if agree else
                       "related text does not beat unrelated text here, unlike the expectation."))
    # The further pretraining itself.
    pt = data.runs[data.runs["kind"] == "pretrain"]
    fig = go.Figure()
    for i, (_, r) in enumerate(pt.iterrows()):
        s = m[(m["run_id"] == r["run_id"]) & (m["split"] == "validation") & (m["name"] == "loss")].sort_values("x")
        if not s.empty:
            fig.add_trace(go.Scatter(x=s["x"], y=s["value"], mode="lines+markers", name=f"{r['arm']}",
                                     marker_color=_color(i + 1)))
            out.numbers.setdefault("mlm_val_loss", {})[r["arm"]] = {"first": float(s["value"].iloc[0]),
                                                                   "last": float(s["value"].iloc[-1])}
    out.figures["mlm_loss"] = (_layout(fig, "Further pretraining: masked-LM validation loss on each corpus",
                                       "step", "validation MLM loss (each on its own corpus)")
                               if fig.data else _empty("Further pretraining: masked-LM validation loss"))
    losses = out.numbers.get("mlm_val_loss", {})
    if losses:
        out.findings.append("Masked-LM validation loss during further pretraining: " + "; ".join(
            f"{arm} {v['first']:.2f} → {v['last']:.2f}" for arm, v in losses.items()) + ".")
    _seed_note(ft, out)


# --- 4. finetune_strategy --------------------------------------------------------------------------------------------


@report_for("finetune_strategy")
def _finetune_strategy(data: Any, out: Findings) -> None:
    m = data.metrics
    runs = attach(data.runs, last_values(m, "test", "accuracy"), "test_accuracy")
    runs = attach(runs, max_values(m, "train", "trainable_params"), "trainable")
    chance = _chance(data, "movies")
    strat = runs[runs["group"] == "strategy"]
    acc = cells(strat, ["strategy"], "test_accuracy")
    order = ["full", "linear_probe", "freeze_bottom", "gradual_unfreeze", "discriminative"]
    out.figures["strategies"] = _bars(acc, "strategy", "Test accuracy by fine-tuning strategy (mean ± std)",
                                      "movies test accuracy", chance=chance, order=order)
    trainable = strat.groupby("strategy")["trainable"].max()
    full = cell(acc, strategy="full")
    rows = []
    for s in order:
        c = cell(acc, strategy=s)
        if c is None:
            continue
        row = {"strategy": s, "lr": strat.loc[strat["strategy"] == s, "lr"].iloc[0],
               "trainable params (max)": _int(trainable.get(s)), "test accuracy": fmt_stat(c["stat"]), "vs full": ""}
        if s != "full" and full is not None and c["complete"] and full["complete"]:
            d = difference(c["stat"], full["stat"])
            row["vs full"] = d.text()
            out.numbers.setdefault("vs_full", {})[s] = d.as_dict()
        if c["complete"]:
            out.numbers.setdefault("strategy_accuracy", {})[s] = c["stat"].as_dict()
        rows.append(row)
    out.tables["strategies"] = pd.DataFrame(rows)
    note = _missing_note(acc, lambda r: f"strategy {r['strategy']}")
    if note:
        out.caveats.append(note)
    ranked = acc[acc["complete"]].sort_values("mean", ascending=False)
    if len(ranked) >= 2:
        out.headline = ("Strategies ranked by test accuracy: "
                        + ", ".join(f"{r['strategy']} {fmt_stat(r['stat'])}" for _, r in ranked.iterrows()) + ".")
        out.findings.append(out.headline)
        for s, d in out.numbers.get("vs_full", {}).items():
            diff = Difference(d["delta"], d["se"] or math.nan, d["verdict"])
            out.findings.append(f"{s} vs full fine-tuning: {diff.text()}"
                                f" with {_int(trainable.get(s))} of {_int(trainable.get('full'))} parameters trained"
                                " (at most).")

    # Learning-rate sweep (full fine-tuning): the sweep runs plus the full strategy's run.
    sweep = runs[(runs["strategy"] == "full")]
    lr_acc = cells(sweep, ["lr"], "test_accuracy").sort_values("lr")
    fig = go.Figure()
    done = lr_acc[lr_acc["n"] > 0]
    if len(done):
        fig.add_trace(go.Scatter(x=done["lr"], y=done["mean"], mode="lines+markers", name="full fine-tuning",
                                 error_y=dict(type="data", array=done["std"].fillna(0)), marker_color=_color(0),
                                 customdata=done["n"], hovertemplate="lr %{x}: %{y:.2%} (n=%{customdata})"
                                                                     "<extra></extra>"))
        _chance_line(fig, chance)
        fig.update_xaxes(type="log")
        fig.update_yaxes(tickformat=".0%")
        out.figures["lr_sweep"] = _layout(fig, "Test accuracy vs learning rate, full fine-tuning (mean ± std)",
                                          "peak learning rate (log scale)", "movies test accuracy")
    else:
        out.figures["lr_sweep"] = _empty("Test accuracy vs learning rate")
    out.tables["lr_sweep"] = pd.DataFrame([{"lr": r["lr"], "test accuracy": fmt_stat(r["stat"]),
                                            "complete": bool(r["complete"])} for _, r in lr_acc.iterrows()])
    complete = lr_acc[lr_acc["complete"]]
    for _, r in complete.iterrows():
        out.numbers.setdefault("lr_accuracy", {})[f"{r['lr']:g}"] = r["stat"].as_dict()
    note = _missing_note(lr_acc, lambda r: f"lr {r['lr']:g}")
    if note:
        out.caveats.append(note)
    if len(complete) >= 2:
        best = complete.loc[complete["mean"].idxmax()]
        top = complete.iloc[-1]
        d = difference(top["stat"], best["stat"])
        text = (f"Best learning rate {best['lr']:g} ({fmt_stat(best['stat'])}); the largest, {top['lr']:g}, gives "
                f"{fmt_stat(top['stat'])}: {d.text()}")
        if chance is not None:
            near = top["mean"] <= chance + 0.02
            text += (f", {'at' if near else 'above'} the majority-class rate {chance:.1%}"
                     + (": too large a rate destroyed what pretraining gave." if near else "."))
            out.numbers["largest_lr_at_chance"] = bool(near)
        out.findings.append(text)
    # Training loss per learning rate: divergence shows here first.
    curves = _mean_curves(m, sweep, "train", "loss", ["lr"])
    fig = go.Figure()
    for i, lr in enumerate(sorted(curves["lr"].unique()) if len(curves) else []):
        c = curves[curves["lr"] == lr]
        fig.add_trace(go.Scatter(x=c["x"], y=c["mean"], mode="lines", name=f"lr {lr:g}", marker_color=_color(i)))
    out.figures["lr_train_loss"] = (_layout(fig, "Training loss by learning rate (mean over seeds)", "step",
                                            "training loss") if fig.data else _empty("Training loss by learning rate"))
    _seed_note(runs, out)


def _int(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{int(x):,}"


# --- 5. forgetting ---------------------------------------------------------------------------------------------------


@report_for("forgetting")
def _forgetting(data: Any, out: Findings) -> None:
    m = data.metrics
    runs = _ft_runs(data)
    before, after, bounds = {}, {}, {}
    for rid in runs.loc[runs["status"] == "completed", "run_id"]:
        b = stage_boundary(m, rid)
        if b is None:
            continue
        bounds[rid] = b
        v1 = m[(m["run_id"] == rid) & (m["split"] == "validation") & (m["name"] == "accuracy") & (m["x"] < b)]
        prev = m[(m["run_id"] == rid) & (m["name"] == "prev_task_accuracy")].sort_values("x")
        if not v1.empty and not prev.empty:
            before[rid], after[rid] = float(v1["value"].max()), float(prev["value"].iloc[-1])
    runs = attach(runs, pd.Series(before, dtype=float), "before")
    runs = attach(runs, pd.Series(after, dtype=float), "after")
    runs["drop"] = runs["before"] - runs["after"]
    runs = attach(runs, last_values(m, "test", "accuracy"), "tweets")
    order = ["replay 0%", "replay 10%", "replay 30%", "L2-SP"]
    b_cells, a_cells = cells(runs, ["arm"], "before"), cells(runs, ["arm"], "after")
    d_cells, t_cells = cells(runs, ["arm"], "drop"), cells(runs, ["arm"], "tweets")
    rows = []
    for arm in order:
        b, a, d, t = (cell(x, arm=arm) for x in (b_cells, a_cells, d_cells, t_cells))
        if b is None:
            continue
        rows.append({"arm": arm, "movies before tweets": fmt_stat(b["stat"]),
                     "movies after tweets": fmt_stat(a["stat"]),
                     "movies drop": fmt_stat(d["stat"]), "tweets test accuracy": fmt_stat(t["stat"])})
        if d["complete"] and t["complete"]:
            out.numbers.setdefault("movies_accuracy", {})[arm] = {"before": b["stat"].as_dict(),
                                                                  "after": a["stat"].as_dict(),
                                                                  "drop": d["stat"].as_dict(),
                                                                  "tweets_test": t["stat"].as_dict()}
    out.tables["forgetting"] = pd.DataFrame(rows)
    note = _missing_note(d_cells, lambda r: f"{r['arm']}")
    if note:
        out.caveats.append(note)
    base = cell(d_cells, arm="replay 0%")
    if base is not None and base["complete"]:
        b0, a0 = cell(b_cells, arm="replay 0%"), cell(a_cells, arm="replay 0%")
        forgot = difference(b0["stat"], a0["stat"])
        out.headline = (f"Without replay, movies validation accuracy went from {fmt_stat(b0['stat'])} after the movies "
                        f"stage to {fmt_stat(a0['stat'])} after the tweets stage: a drop of {forgot.text()}.")
        out.findings.append(out.headline)
        # A second stage that only learned the label prior (always the majority class) had little reason to change
        # the encoder: then "little forgetting" says nothing about forgetting, and the report must say why.
        chance, t0 = _chance(data, "tweets"), cell(t_cells, arm="replay 0%")
        prior_only = bool(chance and t0 is not None and t0["complete"] and t0["stat"].mean <= chance + 0.01)
        out.numbers["tweets_stage_at_majority_rate"] = prior_only
        if prior_only:
            out.caveats.append(f"without replay the tweets stage reached {fmt_stat(t0['stat'])} tweets test "
                               f"accuracy, the majority-class rate ({chance:.1%}): in this budget it learned the label "
                               "prior rather than tweets, so there was little to forget; the full preset trains the "
                               "second stage longer.")
        if forgot.delta < NEGLIGIBLE or forgot.verdict == "within noise":
            out.findings.append("Little forgetting: " + (
                "the tweets stage barely trained (see the caveats)." if prior_only else
                "both tasks are binary sentiment, so what the shared encoder learns on tweets still serves the "
                "movies head; the mitigations have little to fix."))
        for arm in order[1:]:
            d = cell(d_cells, arm=arm)
            if d is None or not d["complete"]:
                continue
            diff = difference(d["stat"], base["stat"])
            out.numbers.setdefault("drop_vs_no_replay", {})[arm] = diff.as_dict()
            t, t0 = cell(t_cells, arm=arm), cell(t_cells, arm="replay 0%")
            out.findings.append(f"{arm}: movies drop {fmt_stat(d['stat'])} vs {fmt_stat(base['stat'])} without "
                                f"replay ({diff.text()}); tweets test accuracy {fmt_stat(t['stat'])} vs "
                                f"{fmt_stat(t0['stat'])}.")
    # Movies accuracy along the tweets stage.
    done = runs[runs["status"] == "completed"]
    prev = _mean_curves(m, done, "forgetting", "prev_task_accuracy", ["arm"])
    val1 = m[(m["split"] == "validation") & (m["name"] == "accuracy")].merge(done[["run_id", "arm"]], on="run_id")
    val1 = val1[np.array([x < bounds.get(r, math.inf) for r, x in zip(val1["run_id"], val1["x"], strict=True)],
                         dtype=bool)]
    stage1 = val1.groupby(["arm", "x"])["value"].mean().reset_index()
    fig = go.Figure()
    for i, arm in enumerate(order):
        c, s1 = prev[prev["arm"] == arm], stage1[stage1["arm"] == arm]
        xs, ys = list(s1["x"]) + list(c["x"]), list(s1["value"]) + list(c["mean"])
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=arm, marker_color=_color(i)))
    if bounds:
        fig.add_vline(x=min(bounds.values()) - 0.5, line_dash="dot", line_color="gray",
                      annotation_text="tweets stage starts")
    fig.update_yaxes(tickformat=".0%")
    out.figures["movies_accuracy"] = (_layout(fig, "Movies validation accuracy: movies stage, then along the tweets "
                                                   "stage (mean over seeds)", "step", "movies validation accuracy")
                                      if fig.data else _empty("Movies accuracy along the tweets stage"))
    # Drift probes.
    fig = make_subplots(rows=1, cols=2, subplot_titles=("CKA similarity to the starting encoder",
                                                        "general-text masked-LM loss (wiki)"))
    for col, name in ((1, "cka_similarity"), (2, "general_mlm_loss")):
        curves = _mean_curves(m, done, "forgetting", name, ["arm"])
        for i, arm in enumerate(order):
            c = curves[curves["arm"] == arm]
            if not c.empty:
                fig.add_trace(go.Scatter(x=c["x"], y=c["mean"], mode="lines+markers", name=arm,
                                         marker_color=_color(i), showlegend=col == 1), row=1, col=col)
        if bounds:
            fig.add_vline(x=min(bounds.values()) - 0.5, line_dash="dot", line_color="gray", row=1, col=col)
    fig.update_layout(template=TEMPLATE, height=420, title="Representation drift during fine-tuning (dotted: the "
                      "tweets stage starts)", legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(title_text="step")
    out.figures["drift"] = fig
    plain = done[done["arm"] == "replay 0%"]
    for name, label in (("cka_similarity", "CKA similarity to the starting encoder"),
                        ("general_mlm_loss", "general-text MLM loss")):
        series = m[(m["name"] == name) & m["run_id"].isin(plain["run_id"])]
        if series.empty:
            continue
        stage1_end = [series[(series["run_id"] == r) & (series["x"] < bounds.get(r, math.inf))]
                      .sort_values("x")["value"] for r in plain["run_id"]]
        start = mean_std(first_values(series, "forgetting", name))
        end1 = mean_std(s.iloc[-1] for s in stage1_end if len(s))
        end = mean_std(last_values(series, "forgetting", name))
        out.numbers.setdefault("drift", {})[name] = {"first_eval": start.as_dict(), "end_of_movies": end1.as_dict(),
                                                      "end_of_tweets": end.as_dict()}
        out.findings.append(f"{label} (no replay): {fmt_stat(start, percent=False, digits=3)} at the first "
                            f"evaluation, {fmt_stat(end1, percent=False, digits=3)} at the end of the movies stage, "
                            f"{fmt_stat(end, percent=False, digits=3)} after tweets.")
    _seed_note(runs, out)


# --- 6. domain_shift -------------------------------------------------------------------------------------------------


@report_for("domain_shift")
def _domain_shift(data: Any, out: Findings) -> None:
    from ptft_core.studies.templates import SENTIMENT_DOMAINS

    m = data.metrics
    runs = _ft_runs(data)
    domains = [d for d in SENTIMENT_DOMAINS if d in set(runs["domain"])]
    arms = [a for a in ("pretrained", "scratch") if a in set(runs["arm"])]
    fig = make_subplots(rows=1, cols=len(arms), subplot_titles=[f"{a}" for a in arms], horizontal_spacing=0.12)
    summary = {}
    for col, arm in enumerate(arms, start=1):
        part = runs[runs["arm"] == arm]
        mean, std, n = transfer_matrix(part, m, domains)
        planned = part.groupby("domain").size()
        out.tables[f"transfer_{arm}"] = mean.map(lambda v: f"{v:.1%}" if np.isfinite(v) else "n/a")
        text = [[(f"{mean.iloc[i, j]:.1%}" if np.isfinite(mean.iloc[i, j]) else "n/a")
                 + (f"<br>±{std.iloc[i, j]:.1%}" if np.isfinite(std.iloc[i, j]) else "")
                 for j in range(len(domains))] for i in range(len(domains))]
        fig.add_trace(go.Heatmap(z=mean.to_numpy(), x=domains, y=domains, text=text, texttemplate="%{text}",
                                 zmin=0.4, zmax=1.0, colorscale="Viridis", showscale=col == len(arms),
                                 hovertemplate="trained on %{y}, tested on %{x}: %{z:.2%}<extra>" + arm + "</extra>"),
                      row=1, col=col)
        # Complete cells only: every planned run of the source domain finished and was scored on the target.
        complete = n.apply(lambda row, planned=planned: row == planned.get(row.name, -1), axis=1)
        diag = [mean.loc[d, d] for d in domains if complete.loc[d, d]]
        off = [mean.loc[s, t] for s in domains for t in domains if s != t and complete.loc[s, t]]
        full_rows = [d for d in domains if complete.loc[d].all()]
        if len(full_rows) < len(domains):
            missing = [d for d in domains if d not in full_rows]
            out.caveats.append(f"{arm}: no complete transfer row for {', '.join(missing)} (runs or cross-domain "
                               "evaluations missing); the averages below leave those cells out")
        if diag and off:
            summary[arm] = {"in_domain": float(np.mean(diag)), "out_of_domain": float(np.mean(off)),
                            "drop": float(np.mean(diag) - np.mean(off)), "cells": len(diag) + len(off)}
            out.numbers.setdefault("transfer", {})[arm] = {
                **summary[arm], "matrix": {s: {t: _num(mean.loc[s, t]) for t in domains} for s in domains}}
            worst = min(((s, t) for s in domains for t in domains if s != t and complete.loc[s, t]),
                        key=lambda st: mean.loc[st])
            out.findings.append(
                f"{arm}: mean in-domain accuracy {summary[arm]['in_domain']:.1%}, out of domain "
                f"{summary[arm]['out_of_domain']:.1%} (drop {pts(summary[arm]['drop'])}); the hardest transfer is "
                f"{worst[0]} → {worst[1]} ({mean.loc[worst]:.1%}, majority class "
                f"{(_chance(data, worst[1]) or math.nan):.1%}).")
    fig.update_layout(template=TEMPLATE, height=440, title="Transfer matrix: test accuracy, trained on (rows) × "
                      "tested on (columns), mean over seeds")
    fig.update_xaxes(title_text="tested on")
    fig.update_yaxes(title_text="trained on", col=1)
    out.figures["transfer_matrix"] = fig
    # In-domain vs out-of-domain per training domain.
    fig = go.Figure()
    for i, arm in enumerate(arms):
        part = runs[runs["arm"] == arm]
        mean, _, _ = transfer_matrix(part, m, domains)
        ins = [mean.loc[d, d] for d in domains]
        outs = [np.nanmean([mean.loc[d, t] for t in domains if t != d]) if
                np.isfinite([mean.loc[d, t] for t in domains if t != d]).any() else np.nan for d in domains]
        fig.add_trace(go.Bar(x=domains, y=ins, name=f"{arm}: in domain", marker_color=_color(2 * i)))
        fig.add_trace(go.Bar(x=domains, y=outs, name=f"{arm}: other domains (mean)", marker_color=_color(2 * i + 1)))
    fig.update_layout(barmode="group")
    fig.update_yaxes(tickformat=".0%")
    out.figures["in_vs_out"] = _layout(fig, "In-domain vs out-of-domain accuracy by training domain", "trained on",
                                       "test accuracy")
    if len(summary) == 2:
        p, s = summary["pretrained"], summary["scratch"]
        out.headline = (f"Out of domain, pretrained MiniLM keeps {p['out_of_domain']:.1%} accuracy (drop "
                        f"{pts(p['drop'])} from in-domain) against {s['out_of_domain']:.1%} from scratch (drop "
                        f"{pts(s['drop'])}).")
        out.findings.insert(0, out.headline)
        out.findings.append("Pretraining " + ("narrows" if p["drop"] < s["drop"] else "does not narrow")
                            + f" the in- vs out-of-domain gap here ({pts(p['drop'])} vs {pts(s['drop'])}), and "
                            + ("raises" if p["out_of_domain"] > s["out_of_domain"] else "does not raise")
                            + " out-of-domain accuracy.")
    _seed_note(runs, out)


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
