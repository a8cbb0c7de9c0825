"""Figure builders: pandas in, plotly `Figure` out; pure (no Streamlit, no store, no torch).

Metric figures take the long format of `Store.metric_series` (columns `run_id`, `split`, `name`, `x`, `value`)
with a `label` column joined (how a run is named in legends) and, for grouped views, the grouping column (a
config value per run). One series is one (run_id, split, name). Colours follow runs (or groups), line dashes
follow metrics, so "the same run" and "the same metric" read at a glance. A short series (at most
`MARKER_POINTS` points, e.g. a run with one validation point so far) also gets a marker per point, so a run
that has metrics never shows empty axes; long series stay plain lines.

Smoothing is TensorBoard's debiased exponential moving average (`ema`). Grouped views draw the mean over the
group's runs (typically seeds) with a band of plus/minus one sample standard deviation, computed on a common x
grid onto which each run is interpolated inside its own x range only (a run that stopped early does not pull
the mean after its end).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sequential
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
PALETTE: tuple[str, ...] = tuple(qualitative.Plotly) + tuple(qualitative.D3)
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
X_TITLES = {"step": "step", "epoch": "epoch", "tokens_seen": "tokens seen", "wall_time": "wall time (s)"}
SERIES_KEYS = ["run_id", "split", "name"]
# Metric names for which a lower value is better; every other metric (accuracy, f1, cka_similarity...) is
# better higher.
LOWER_IS_BETTER = frozenset({
    "loss", "eval_loss", "perplexity", "ece", "general_mlm_loss", "general_clm_loss", "prev_task_loss",
})
BAND_GRID_POINTS = 400  # x grid of a grouped (mean +/- std) series when the runs' x values disagree
WEBGL_POINTS = 50_000  # above this many points a figure switches its lines to WebGL (Scattergl)
# A series of at most this many points (as drawn: after downsampling and smoothing) gets a marker on each point:
# a lone point is invisible as a line, a few points read badly. Longer series stay plain lines (performance).
MARKER_POINTS = 30
MARKER_SIZE = 6  # markers of a short series
SINGLE_MARKER_SIZE = 9  # the marker of a one-point series: it is all there is to see
FIGURE_HEIGHT = 440


def higher_is_better(name: str) -> bool:
    return name not in LOWER_IS_BETTER


def metric_key(split: str, name: str) -> str:
    """How the UI names a metric: `validation/accuracy`."""
    return f"{split}/{name}"


def color_map(keys: pd.Series | Iterable[Any]) -> dict[Any, str]:
    """A colour per key, in first-seen order (stable while a selection only grows at the end)."""
    unique = pd.unique(pd.Series(keys)).tolist() if not isinstance(keys, pd.Series) else keys.unique().tolist()
    return {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(unique)}


def translucent(color: str, alpha: float) -> str:
    """`#rrggbb` -> `rgba(r, g, b, alpha)` (band fills)."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def chart_config(filename: str) -> dict[str, Any]:
    """Plotly's client-side config: the modebar camera button downloads a 2x PNG named `filename`.png."""
    return {
        "displaylogo": False,
        "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2},
        "modeBarButtonsToRemove": ["lasso2d", "select2d"],
    }


def figure_html(fig: go.Figure, filename: str) -> str:
    """A standalone HTML page of the figure (plotly.js inlined: opens offline), same modebar as in the app."""
    return fig.to_html(include_plotlyjs=True, full_html=True, config=chart_config(filename))


def _empty(title: str | None, message: str) -> go.Figure:
    fig = go.Figure(layout={"template": TEMPLATE, "height": FIGURE_HEIGHT, "title": title})
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"size": 14, "color": "#888"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _layout(fig: go.Figure, title: str | None, x: str, rows: int, height: int = FIGURE_HEIGHT) -> go.Figure:
    """The look shared by the metric figures; the x title goes under the bottom panel."""
    fig.update_layout(
        template=TEMPLATE, title=title, height=height, hovermode="closest",
        margin={"l": 60, "r": 20, "t": 60 if title else 30, "b": 50},
        legend={"font": {"size": 11}, "groupclick": "toggleitem"},
    )
    fig.update_xaxes(title_text=X_TITLES.get(x, x), **({"row": rows, "col": 1} if rows > 1 else {}))
    return fig


# --- smoothing and aggregation ---------------------------------------------------------------------------------


def ema(values: Sequence[float] | np.ndarray, smoothing: float) -> np.ndarray:
    """Debiased exponential moving average: `s_t = sum_i w^i v_(t-i) / sum_i w^i` with `w = smoothing`.

    The same as TensorBoard's smoothing: 0 returns the values, 0.9 averages over roughly the last ten points,
    and the first point is never pulled toward zero.
    """
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    values = np.asarray(values, dtype=float)
    if smoothing == 0 or len(values) == 0:
        return values.copy()
    return pd.Series(values).ewm(alpha=1 - smoothing, adjust=True).mean().to_numpy()


def smooth(df: pd.DataFrame, smoothing: float) -> pd.DataFrame:
    """A copy of the long frame sorted by series and x, with `value` smoothed per series and the unsmoothed
    values kept in `raw`."""
    out = df.sort_values([*SERIES_KEYS, "x"], kind="stable").reset_index(drop=True)
    out["raw"] = out["value"]
    if smoothing and len(out):
        out["value"] = out.groupby(SERIES_KEYS, sort=False)["value"].transform(lambda s: ema(s.to_numpy(), smoothing))
    return out


def band_stats(df: pd.DataFrame, by: str, grid_points: int = BAND_GRID_POINTS) -> pd.DataFrame:
    """Mean and sample std over the runs of each (`by` value, split, name), on a common x grid.

    The grid is the union of the runs' x values when they have at most `grid_points` of them (seeds of one
    config log at the same steps, so nothing is interpolated), else `grid_points` evenly spaced values. Each
    run is interpolated onto the grid inside its own x range and missing outside it. Returns columns `by`,
    split, name, x, mean, std (0 where one run covers x), n (runs covering x).
    """
    frames = []
    for (group, split, name), part in df.groupby([by, "split", "name"], sort=False):
        runs = [(r["x"].to_numpy(float), r["value"].to_numpy(float))
                for _, r in part.sort_values("x").groupby("run_id", sort=False)]
        grid = np.unique(np.concatenate([xs for xs, _ in runs]))
        if len(grid) > grid_points:
            grid = np.linspace(grid[0], grid[-1], grid_points)
        stacked = np.full((len(runs), len(grid)), np.nan)
        for i, (xs, ys) in enumerate(runs):
            inside = (grid >= xs[0]) & (grid <= xs[-1])
            stacked[i, inside] = np.interp(grid[inside], xs, ys)
        n = np.sum(~np.isnan(stacked), axis=0)
        keep = n > 0
        stacked, grid, n = stacked[:, keep], grid[keep], n[keep]
        mean = np.nanmean(stacked, axis=0)
        centred = np.where(np.isnan(stacked), 0.0, stacked - mean)
        std = np.sqrt(np.sum(centred**2, axis=0) / np.maximum(n - 1, 1))
        frames.append(pd.DataFrame({by: group, "split": split, "name": name, "x": grid, "mean": mean, "std": std,
                                    "n": n}))
    if not frames:
        return pd.DataFrame(columns=[by, "split", "name", "x", "mean", "std", "n"])
    return pd.concat(frames, ignore_index=True)


def first_reach(df: pd.DataFrame, target: float, higher_better: bool) -> pd.DataFrame:
    """Per series, the first x where the value reaches `target` (>= when higher is better, else <=).

    Returns run_id, split, name, reached_at (NaN when the run never reached it), best (its best value).
    """
    rows = []
    for (run_id, split, name), part in df.sort_values("x").groupby(SERIES_KEYS, sort=False):
        values = part["value"].to_numpy(float)
        hit = values >= target if higher_better else values <= target
        rows.append({"run_id": run_id, "split": split, "name": name,
                     "reached_at": float(part["x"].to_numpy(float)[hit.argmax()]) if hit.any() else np.nan,
                     "best": float(values.max() if higher_better else values.min())})
    return pd.DataFrame(rows, columns=["run_id", "split", "name", "reached_at", "best"])


def best_points(df: pd.DataFrame, higher_better: bool) -> pd.DataFrame:
    """Per series, the (first) point with the best value: run_id, split, name, x, value."""
    if df.empty:
        return df[[*SERIES_KEYS, "x", "value"]].copy()
    ordered = df.sort_values([*SERIES_KEYS, "x"], kind="stable").reset_index(drop=True)
    grouped = ordered.groupby(SERIES_KEYS, sort=False)["value"]
    index = grouped.idxmax() if higher_better else grouped.idxmin()
    return ordered.loc[index.to_numpy(), [*SERIES_KEYS, "x", "value"]].reset_index(drop=True)


def generalization_gap(train: pd.DataFrame, validation: pd.DataFrame, higher_better: bool) -> pd.DataFrame:
    """How much worse validation is than train, per run, at the validation x values (train interpolated).

    Positive means overfitting: validation loss above train loss, or train accuracy above validation accuracy.
    Validation points outside a run's train x range are left out. Returns run_id, x, gap.
    """
    frames = []
    for run_id, val in validation.sort_values("x").groupby("run_id", sort=False):
        tr = train[train["run_id"] == run_id].sort_values("x")
        if tr.empty:
            continue
        xs, tx, ty = val["x"].to_numpy(float), tr["x"].to_numpy(float), tr["value"].to_numpy(float)
        inside = (xs >= tx[0]) & (xs <= tx[-1])
        train_at = np.interp(xs[inside], tx, ty)
        val_at = val["value"].to_numpy(float)[inside]
        gap = train_at - val_at if higher_better else val_at - train_at
        frames.append(pd.DataFrame({"run_id": run_id, "x": xs[inside], "gap": gap}))
    if not frames:
        return pd.DataFrame(columns=["run_id", "x", "gap"])
    return pd.concat(frames, ignore_index=True)


# --- metric figures --------------------------------------------------------------------------------------------


def _scatter_type(df: pd.DataFrame) -> str:
    return "scattergl" if len(df) > WEBGL_POINTS else "scatter"


def _labels(df: pd.DataFrame) -> dict[str, str]:
    """run_id -> legend label (the `label` column, else the id)."""
    columns = ["run_id", "label"] if "label" in df else ["run_id"]
    pairs = df[columns].drop_duplicates("run_id")
    return dict(zip(pairs["run_id"], pairs[columns[-1]].astype(str), strict=True))


def _metrics(df: pd.DataFrame) -> list[tuple[str, str]]:
    pairs = df[["split", "name"]].drop_duplicates()
    return list(zip(pairs["split"], pairs["name"], strict=True))


def _mode(points: int) -> str:
    """A trace's mode for a series of `points` points: markers on short series, plain lines on long ones."""
    return "lines+markers" if points <= MARKER_POINTS else "lines"


def _marker(points: int, color: str | None = None, **extra: Any) -> dict[str, Any]:
    """The marker of a short series (`_mode`): bigger when the series is a single point."""
    marker: dict[str, Any] = {"size": SINGLE_MARKER_SIZE if points == 1 else MARKER_SIZE, **extra}
    if color is not None:
        marker["color"] = color
    return marker


def _hover(label: str, metric: str, x: str) -> str:
    return f"<b>{label}</b><br>{X_TITLES.get(x, x)} %{{x:,.4~g}}<br>{metric} %{{y:.4~g}}<extra></extra>"


@dataclass
class _Lines:
    """How series are told apart: a dash per metric (per split when each panel holds one metric name, none when
    each panel holds one metric) and the legend name's suffix (what the panel titles do not already say); each
    legend name is shown once."""

    metrics: list[tuple[str, str]]
    facet: str | None
    shown: set[str] = field(default_factory=set)

    def dash(self, split: str, name: str) -> str:
        if self.facet == "metric":  # the panel title names the metric
            return DASHES[0]
        if self.facet == "name":
            splits = list(dict.fromkeys(s for s, _ in self.metrics))
            return DASHES[splits.index(split) % len(DASHES)]
        return DASHES[self.metrics.index((split, name)) % len(DASHES)]

    def name(self, label: str, split: str, name: str) -> str:
        if self.facet == "metric" or len(self.metrics) == 1:
            return label
        if self.facet == "name":
            return f"{label} · {split}" if len({s for s, _ in self.metrics}) > 1 else label
        return f"{label} · {metric_key(split, name)}"

    def first(self, legend_name: str) -> bool:
        """True the first time a legend name is drawn (later panels repeat it without a legend entry)."""
        new = legend_name not in self.shown
        self.shown.add(legend_name)
        return new


def _run_traces(df: pd.DataFrame, x: str, smoothing: float, colors: dict[str, str],
                lines: _Lines) -> list[dict[str, Any]]:
    """One line per series of the smoothed frame; under smoothing, the raw series as a faint line beneath it.
    Short series (`MARKER_POINTS`) also get a marker on each point, so a single evaluation still shows.

    Traces are plain dicts that the figure validates once as it adds them: a `go.Scatter` built here would be
    validated twice (add_traces rebuilds it), which was half of the figure's time at 100-200 traces."""
    kind = _scatter_type(df)

    def scatter(**props: Any) -> dict[str, Any]:
        return {"type": kind, **props}

    labels = _labels(df)
    traces: list[dict[str, Any]] = []
    for (run_id, split, name), part in df.groupby(SERIES_KEYS, sort=False):
        dash, label, color = lines.dash(split, name), labels[run_id], colors[run_id]
        shown_name = lines.name(label, split, name)
        points, mode = len(part), _mode(len(part))
        markers = {"marker": _marker(points, color)} if mode != "lines" else {}
        if smoothing:
            raw_markers = {"marker": {"size": 4, "color": color}} if mode != "lines" else {}
            traces.append(scatter(x=part["x"].to_numpy(), y=part["raw"].to_numpy(), mode=mode,
                                  line={"color": color, "width": 1, "dash": dash}, opacity=0.25,
                                  legendgroup=run_id, showlegend=False, hoverinfo="skip", **raw_markers))
        traces.append(scatter(x=part["x"].to_numpy(), y=part["value"].to_numpy(), mode=mode, name=shown_name,
                              legendgroup=run_id, showlegend=lines.first(shown_name),
                              line={"color": color, "width": 2, "dash": dash},
                              hovertemplate=_hover(label, metric_key(split, name), x), **markers))
    return traces


def _band_traces(stats: pd.DataFrame, by: str, by_title: str, colors: dict[Any, str], lines: _Lines,
                 x: str) -> list[go.BaseTraceType]:
    traces: list[go.BaseTraceType] = []
    for (group, split, name), part in stats.groupby([by, "split", "name"], sort=False):
        metric = metric_key(split, name)
        color = colors[group]
        label = f"{by_title}={group} (n={int(part['n'].max())})"
        shown_name = lines.name(label, split, name)
        xs, mean, std = part["x"].to_numpy(), part["mean"].to_numpy(), part["std"].to_numpy()
        points, mode = len(xs), _mode(len(xs))
        extra: dict[str, Any] = {"marker": _marker(points, color)} if mode != "lines" else {}
        if points > 1:
            traces.append(go.Scatter(
                x=np.concatenate([xs, xs[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
                fill="toself", fillcolor=translucent(color, 0.18), line={"width": 0}, hoverinfo="skip",
                legendgroup=str(group), showlegend=False,
            ))
        else:  # one x: the band would be a zero-width polygon, so the spread is an error bar on the mean
            extra["error_y"] = {"type": "data", "array": std, "visible": True, "color": color, "thickness": 1.5,
                                "width": 6}
        traces.append(go.Scatter(
            x=xs, y=mean, mode=mode, name=shown_name, legendgroup=str(group), showlegend=lines.first(shown_name),
            line={"color": color, "width": 2, "dash": lines.dash(split, name)}, **extra,
            customdata=np.stack([std, part["n"].to_numpy()], axis=1),
            hovertemplate=(f"<b>{label}</b><br>{X_TITLES.get(x, x)} %{{x:,.4~g}}<br>{metric} %{{y:.4~g}}"
                           " ± %{customdata[0]:.3~g} (%{customdata[1]} runs)<extra></extra>"),
        ))
    return traces


# Floors a run is read against (split "reference"): what word frequencies alone score on a pretraining run's
# validation targets (training/reference.py), drawn on loss panels: a loss on the unigram line means the model
# learned word frequencies only; and an image run's majority-class accuracy, drawn on accuracy panels: a curve on
# that line learned the label prior only. name -> (title, dash, the metric of the panels it is drawn on).
REFERENCE_SPLIT = "reference"
REFERENCE_LINES = {"unigram_loss": ("unigram", "dot", "loss"), "bigram_loss": ("bigram", "dashdot", "loss"),
                   "accuracy": ("majority class", "dot", "accuracy")}


def reference_lines(fig: go.Figure, references: pd.DataFrame | None, metric: str = "loss", **where: Any) -> None:
    """Horizontal lines at each distinct reference value of `references` (rows of split "reference": run_id,
    name, value and, optionally, label) that belongs on a `metric` panel; a line names its run when the runs'
    corpora, tokenizers or label balance differ. `where`: add_hline's row/col."""
    if references is None or references.empty:
        return
    for name, (title, dash, panel) in REFERENCE_LINES.items():
        if panel != metric:
            continue
        rows = references[references["name"] == name]
        values = rows.assign(rounded=rows["value"].round(3)).drop_duplicates("rounded")
        for _, r in values.iterrows():
            owner = f" ({r['label']})" if len(values) > 1 and "label" in r and pd.notna(r["label"]) else ""
            fig.add_hline(y=float(r["value"]), line={"color": "#777", "width": 1, "dash": dash},
                          annotation_text=f"{title} {r['value']:.2f}{owner}", annotation_position="bottom left",
                          annotation_font={"size": 10, "color": "#555"}, exclude_empty_subplots=False, **where)


def _panel_metric(panel: str | None, metrics: list[tuple[str, str]]) -> str | None:
    """The metric a panel of metric_figure shows (`split/name` or `name`; one plot: loss if it shows a loss, else
    its one metric), which decides the reference lines drawn on it."""
    if panel is None:
        names = {name for _, name in metrics}
        return "loss" if "loss" in names else (next(iter(names)) if len(names) == 1 else None)
    return panel.rsplit("/", 1)[-1]


def metric_figure(df: pd.DataFrame, *, x: str = "step", smoothing: float = 0.0, log_y: bool = False,
                  group: str | None = None, group_title: str | None = None, facet: str | None = None,
                  target: float | None = None, title: str | None = None,
                  references: pd.DataFrame | None = None) -> go.Figure:
    """Curves of every series in the long frame `df`.

    `group`: a column of `df` (a config value per run): one mean line per group value with a +/- std band
    over its runs instead of one line per run. `facet`: panels sharing the x axis instead of one plot:
    "metric", one per split/name (scales that differ); "name", one per metric name with its splits overlaid
    (train vs validation loss in one panel). `target`: a horizontal reference line (convergence targets).
    `references`: rows of split "reference" (pretraining runs' unigram / bigram cross-entropy, image runs'
    majority-class accuracy), each drawn on the panels of its metric (reference_lines).
    """
    if facet not in (None, "metric", "name"):
        raise ValueError(f"facet must be None, 'metric' or 'name', got {facet!r}")
    if df.empty:
        return _empty(title, "No data for this selection yet")
    metrics = _metrics(df)
    smoothed = smooth(df, smoothing)
    if facet == "metric":
        panels = [(metric_key(*m), (smoothed["split"] == m[0]) & (smoothed["name"] == m[1])) for m in metrics]
    elif facet == "name":
        # What the run learned first, the machine's measures (split "device": MFU, CPU) below it.
        names = dict.fromkeys(n for _, n in sorted(metrics, key=lambda m: m[0] == "device"))
        panels = [(n, smoothed["name"] == n) for n in names]
    else:
        panels = [(None, None)]
    # One panel is a plain figure: make_subplots costs tens of milliseconds the Compare page would pay each time.
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=[t for t, _ in panels]) if facet else go.Figure()
    colors = color_map(df[group or "run_id"])  # in the caller's order of runs (or groups)
    lines = _Lines(metrics, facet)
    for row, (_, mask) in enumerate(panels, start=1):
        part = smoothed if mask is None else smoothed[mask]
        if group is not None:
            traces = _band_traces(band_stats(part, group), group, group_title or group, colors, lines, x)
        else:
            traces = _run_traces(part, x, smoothing, colors, lines)
        fig.add_traces(traces, **({"rows": [row] * len(traces), "cols": [1] * len(traces)} if facet else {}))
        metric = _panel_metric(panels[row - 1][0], metrics)
        if metric is not None:
            reference_lines(fig, references, metric, **({"row": row, "col": 1} if facet else {}))
    if log_y:
        fig.update_yaxes(type="log")
    if not facet and len(metrics) == 1:
        fig.update_yaxes(title_text=metric_key(*metrics[0]))
    if target is not None:
        fig.add_hline(y=target, line={"color": "#444", "width": 1, "dash": "dot"},
                      annotation_text=f"target {target:g}", annotation_position="top left")
    return _layout(fig, title, x, len(panels), max(FIGURE_HEIGHT, 260 * len(panels)) if facet else FIGURE_HEIGHT)


def overfitting_figure(train: pd.DataFrame, validation: pd.DataFrame, *, metric: str, higher_better: bool,
                       x: str = "step", log_y: bool = False, title: str | None = None) -> go.Figure:
    """Top: train (dashed) and validation (solid) curves per run, a star on each run's best validation point.
    Bottom: the generalization gap over time (positive: validation worse than train)."""
    if validation.empty:
        return _empty(title, "No validation data for this selection yet")
    colors = color_map(pd.concat([validation["run_id"], train["run_id"]]))
    labels = _labels(pd.concat([validation, train]))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.07,
                        subplot_titles=[f"{metric}: train vs validation", "generalization gap"])
    for split, frame, dash in (("train", train, "dash"), ("validation", validation, "solid")):
        for run_id, part in frame.sort_values("x").groupby("run_id", sort=False):
            points, mode = len(part), _mode(len(part))
            markers = {"marker": _marker(points, colors[run_id])} if mode != "lines" else {}
            fig.add_trace(go.Scatter(
                x=part["x"].to_numpy(), y=part["value"].to_numpy(), mode=mode,
                name=f"{labels[run_id]} · {split}", legendgroup=run_id, **markers,
                line={"color": colors[run_id], "dash": dash, "width": 2 if split == "validation" else 1.5},
                hovertemplate=_hover(labels[run_id], f"{split} {metric}", x),
            ), row=1, col=1)
    best = best_points(validation, higher_better)
    fig.add_trace(go.Scatter(
        x=best["x"], y=best["value"], mode="markers", name="best validation",
        marker={"symbol": "star", "size": 13, "color": [colors[r] for r in best["run_id"]],
                "line": {"color": "#222", "width": 1}},
        text=[labels[r] for r in best["run_id"]],
        hovertemplate=f"<b>%{{text}}</b><br>best validation {metric} %{{y:.4~g}}"
                      f"<br>at {X_TITLES.get(x, x)} %{{x:,.4~g}}<extra></extra>",
    ), row=1, col=1)
    gap = generalization_gap(train, validation, higher_better)
    for run_id, part in gap.groupby("run_id", sort=False):
        fig.add_trace(go.Scatter(
            x=part["x"].to_numpy(), y=part["gap"].to_numpy(), mode="lines+markers", legendgroup=run_id,
            showlegend=False, line={"color": colors[run_id], "width": 2}, marker={"size": 5},
            hovertemplate=_hover(labels[run_id], "gap", x),
        ), row=2, col=1)
    fig.add_hline(y=0, line={"color": "#999", "width": 1}, row=2, col=1)
    if log_y:
        fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(title_text=metric, row=1, col=1)
    fig.update_yaxes(title_text="gap", row=2, col=1)
    return _layout(fig, title, x, 2, 560)


# --- single-run and data figures -------------------------------------------------------------------------------


def confusion_figure(matrix: np.ndarray, labels: Sequence[str], title: str | None = None) -> go.Figure:
    """A confusion matrix (rows: true label, columns: predicted), coloured by the share of each true label."""
    matrix = np.asarray(matrix)
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    text = [[f"{matrix[i, j]:,}<br>{share[i, j]:.0%}" for j in range(matrix.shape[1])] for i in range(matrix.shape[0])]
    fig = go.Figure(go.Heatmap(
        z=share, x=list(labels), y=list(labels), text=text, texttemplate="%{text}", colorscale="Blues",
        zmin=0, zmax=1, colorbar={"title": "share", "tickformat": ".0%"},
        hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
    ))
    fig.update_xaxes(title_text="predicted", side="bottom")
    fig.update_yaxes(title_text="true", autorange="reversed")
    fig.update_layout(template=TEMPLATE, title=title, height=380, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return fig


def predictions_figure(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """One text's class probabilities, a bar per run for each class (the arena). `df`: rows of run (its label),
    label (the class), probability."""
    if df.empty:
        return _empty(title, "no prediction")
    fig = go.Figure()
    colors = color_map(df["run"].unique())
    for run, part in df.groupby("run", sort=False):
        fig.add_trace(go.Bar(x=part["label"].astype(str), y=part["probability"], name=str(run),
                             marker_color=colors[run], text=[f"{p:.0%}" for p in part["probability"]],
                             textposition="outside",
                             hovertemplate=f"<b>{run}</b><br>%{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(template=TEMPLATE, title=title, barmode="group", height=360,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), margin=dict(l=60, r=20, t=60, b=40))
    fig.update_yaxes(range=[0, 1.1], tickformat=".0%", title_text="probability")
    return fig


def reliability_figure(df: pd.DataFrame, ece: dict[str, float] | None = None,
                       title: str = "Reliability on the test split") -> go.Figure:
    """Reliability diagrams of several runs on one chart: each confidence bin's accuracy against its mean
    confidence (a run per colour; the diagonal is perfect calibration: below it, overconfident), and below, how
    many test examples each bin holds. `df`: the long rows of split "reliability" (label, name in confidence /
    accuracy / count, x = the bin, value), as `ui.load_series` gives them; `ece`: label -> the run's test ECE,
    shown in its legend name."""
    if df.empty:
        return _empty(title, "no run here has a reliability diagram (a finished classifier logs one)")
    wide = df.pivot_table(index=["label", "x"], columns="name", values="value", sort=False).reset_index()
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.06)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"color": "gray", "dash": "dot"},
                             name="calibrated", hoverinfo="skip"), row=1, col=1)
    colors = color_map(wide["label"].unique())
    for label, run in wide.groupby("label", sort=False):
        run = run.sort_values("confidence")
        name = f"{label} (ECE {ece[label]:.3f})" if ece and label in ece else str(label)
        total = run["count"].sum()
        fig.add_trace(go.Scatter(
            x=run["confidence"], y=run["accuracy"], mode="lines+markers", name=name, legendgroup=name,
            line={"color": colors[label]},
            marker={"color": colors[label], "size": 6 + 18 * np.sqrt(run["count"] / total)},
            customdata=np.stack([run["count"]], axis=1),
            hovertemplate=f"<b>{label}</b><br>confidence %{{x:.3f}}: accuracy %{{y:.3f}} "
                          "(%{customdata[0]:,.0f} examples)<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Bar(x=run["confidence"], y=run["count"], name=name, legendgroup=name, showlegend=False,
                             marker_color=translucent(colors[label], 0.6), width=1 / 15 / max(1, len(colors)),
                             hovertemplate=f"<b>{label}</b><br>confidence %{{x:.3f}}: %{{y:,.0f}} examples"
                                           "<extra></extra>"), row=2, col=1)
    fig.update_layout(template=TEMPLATE, title=title, height=560, barmode="group",
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), margin=dict(l=60, r=20, t=90, b=50))
    fig.update_yaxes(title_text="accuracy", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="examples", row=2, col=1)
    fig.update_xaxes(range=[0, 1.02], row=1, col=1)
    fig.update_xaxes(title_text="confidence (the top class's probability)", range=[0, 1.02], row=2, col=1)
    return fig


def filters_figure(filters: np.ndarray, title: str | None = None, columns: int = 16) -> go.Figure:
    """First-layer convolution filters [K, C, kh, kw] as a grid of small heatmaps (the mean over input channels
    for a colour model), on one symmetric red-blue scale: red a positive weight, blue a negative one."""
    maps = np.asarray(filters, dtype=float).mean(axis=1)
    count, rows = len(maps), -(-len(maps) // columns)
    bound = float(np.abs(maps).max()) or 1.0
    fig = make_subplots(rows=rows, cols=min(columns, count), horizontal_spacing=0.01, vertical_spacing=0.02)
    for k, weights in enumerate(maps):
        fig.add_trace(go.Heatmap(z=weights, zmin=-bound, zmax=bound, colorscale="RdBu_r", showscale=k == 0,
                                 hovertemplate=f"filter {k}<br>%{{z:.3f}}<extra></extra>"),
                      row=k // columns + 1, col=k % columns + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    fig.update_layout(template=TEMPLATE, title=title, height=90 + 60 * rows, margin={"l": 10, "r": 10, "t": 50,
                                                                                      "b": 10})
    return fig


def grad_cam_figure(image: np.ndarray, cam: np.ndarray, title: str | None = None) -> go.Figure:
    """One image (uint8 [C, S, S]) in grey, with its class-activation map (0..1, [S, S]) laid over it."""
    grey = np.asarray(image, dtype=float).mean(axis=0)
    fig = go.Figure([
        go.Heatmap(z=grey, colorscale="gray", showscale=False, hoverinfo="skip"),
        go.Heatmap(z=cam, colorscale="Inferno", zmin=0, zmax=1, opacity=0.5, colorbar={"title": "evidence"},
                   hovertemplate="x %{x}, y %{y}<br>evidence %{z:.2f}<extra></extra>"),
    ])
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    fig.update_layout(template=TEMPLATE, title=title, height=360, margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig


def _token_grid_layout(fig: go.Figure, names: Sequence[str], title: str | None) -> go.Figure:
    """Token × token heatmaps (attention, its difference): first token at the top, labels readable."""
    fig.update_yaxes(autorange="reversed", tickfont={"size": 10})
    fig.update_xaxes(tickangle=-60, tickfont={"size": 10})
    fig.update_layout(template=TEMPLATE, title=title, height=min(260 + 18 * len(names), 720),
                      margin={"l": 90, "r": 20, "t": 50, "b": 90})
    return fig


def attention_figure(weights: np.ndarray, tokens: Sequence[str], title: str | None = None) -> go.Figure:
    """One head's attention (rows: query tokens attending, columns: key tokens attended to)."""
    weights = np.asarray(weights)
    # Repeated tokens would merge on a categorical axis: the position keeps each one apart.
    names = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Heatmap(
        z=weights, x=names, y=names, colorscale="Viridis", zmin=0, zmax=float(max(weights.max(), 1e-9)),
        colorbar={"title": "weight"}, hovertemplate="%{y} → %{x}<br>%{z:.3f}<extra></extra>",
    ))
    return _token_grid_layout(fig, names, title)


class AttentionChange(NamedTuple):
    """How much one head's attention moved between two maps of the same tokens."""

    mean_abs: float  # mean |after - before| over all (query, key) cells
    max_abs: float  # largest |after - before|


def _attention_pair(before: np.ndarray, after: np.ndarray, tokens: Sequence[str] | None = None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The two maps as float arrays, refused (ValueError) unless both are the same square [tokens, tokens]."""
    before, after = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if before.shape != after.shape:
        raise ValueError(f"attention maps differ in shape: before {before.shape}, after {after.shape}; the two "
                         "models must see the same tokens to be compared cell by cell")
    if before.ndim != 2 or before.shape[0] != before.shape[1]:
        raise ValueError(f"an attention map must be square [tokens, tokens], got shape {before.shape}")
    if tokens is not None and len(tokens) != before.shape[0]:
        raise ValueError(f"{len(tokens)} tokens for attention maps of {before.shape[0]} tokens")
    return before, after


def attention_change(before: np.ndarray, after: np.ndarray) -> AttentionChange:
    """The mean and largest absolute change between two attention maps of one head (same tokens)."""
    before, after = _attention_pair(before, after)
    delta = np.abs(after - before)
    return AttentionChange(float(delta.mean()) if delta.size else 0.0, float(delta.max()) if delta.size else 0.0)


def attention_difference_figure(before: np.ndarray, after: np.ndarray, tokens: Sequence[str],
                                title: str | None = None) -> go.Figure:
    """One head's attention after minus before (rows: query tokens, columns: key tokens) on a diverging scale
    centred at 0: red where the second model attends more, blue where less. The range is symmetric (the largest
    absolute change), so equal colours mean equal changes either way; hover shows before, after and the change.
    Raises ValueError when the maps differ in shape or do not match `tokens`."""
    before, after = _attention_pair(before, after, tokens)
    delta = after - before
    bound = float(max(np.abs(delta).max() if delta.size else 0.0, 1e-9))
    names = [f"{i}:{t}" for i, t in enumerate(tokens)]
    fig = go.Figure(go.Heatmap(
        z=delta, x=names, y=names, colorscale="RdBu_r", zmid=0, zmin=-bound, zmax=bound,
        customdata=np.stack([before, after], axis=-1), colorbar={"title": "Δ weight"},
        hovertemplate=("%{y} → %{x}<br>before %{customdata[0]:.3f}<br>after %{customdata[1]:.3f}"
                       "<br>Δ %{z:+.3f}<extra></extra>"),
    ))
    return _token_grid_layout(fig, names, title)


def probability_figure(probabilities: dict[str, float], title: str | None = None) -> go.Figure:
    """Class probabilities as horizontal bars, the predicted class highlighted."""
    names, values = list(probabilities), np.asarray(list(probabilities.values()), dtype=float)
    top = int(values.argmax()) if len(values) else -1
    fig = go.Figure(go.Bar(
        x=values, y=names, orientation="h", text=[f"{v:.1%}" for v in values], textposition="auto",
        marker={"color": [PALETTE[0] if i == top else "#c7cbd6" for i in range(len(values))]},
        hovertemplate="%{y}: %{x:.2%}<extra></extra>",
    ))
    fig.update_xaxes(range=[0, 1], tickformat=".0%")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(template=TEMPLATE, title=title, height=120 + 34 * len(names),
                      margin={"l": 90, "r": 20, "t": 40 if title else 10, "b": 30})
    return fig


def length_histogram(lengths: pd.DataFrame, title: str | None = None, max_length: int | None = None) -> go.Figure:
    """Overlaid histograms of text lengths in tokens per split (`lengths`: columns split, tokens); a dotted
    line at `max_length` shows where texts are truncated."""
    if lengths.empty:
        return _empty(title, "No texts")
    fig = go.Figure()
    colors = color_map(lengths["split"])
    for split, part in lengths.groupby("split", sort=False):
        fig.add_trace(go.Histogram(x=part["tokens"], name=f"{split} ({len(part):,})", opacity=0.6,
                                   marker={"color": colors[split]}, nbinsx=50))
    if max_length is not None:
        fig.add_vline(x=max_length, line={"color": "#444", "dash": "dot"}, annotation_text=f"max_length {max_length}")
    fig.update_layout(template=TEMPLATE, title=title, barmode="overlay", height=340,
                      margin={"l": 60, "r": 20, "t": 50 if title else 20, "b": 50},
                      xaxis_title="tokens (minilm-l6 tokenizer)", yaxis_title="texts")
    return fig


def label_balance_figure(balance: dict[str, dict[str, int]], title: str | None = None) -> go.Figure:
    """Label counts per split (`balance`: split -> label name -> count) as grouped bars with shares."""
    if not balance:
        return _empty(title, "Unlabelled dataset")
    fig = go.Figure()
    colors = color_map(label for counts in balance.values() for label in counts)
    for label, color in colors.items():
        counts = [balance[split].get(label, 0) for split in balance]
        totals = [max(sum(balance[split].values()), 1) for split in balance]
        fig.add_trace(go.Bar(x=list(balance), y=counts, name=label, marker={"color": color},
                             text=[f"{c / t:.0%}" for c, t in zip(counts, totals, strict=True)], textposition="auto",
                             hovertemplate=f"{label}<br>%{{x}}: %{{y:,}}<extra></extra>"))
    fig.update_layout(template=TEMPLATE, title=title, barmode="group", height=340,
                      margin={"l": 60, "r": 20, "t": 50 if title else 20, "b": 40}, yaxis_title="rows")
    return fig


# --- study report figures --------------------------------------------------------------------------------------
# For ptft_core.studies' reports: a title, both axis titles and the legend above the plot; arms take PALETTE's
# colours in order.


def study_layout(fig: go.Figure, title: str, x: str, y: str, height: int = 420) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=title, height=height, margin=dict(l=60, r=20, t=60, b=50),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0), hovermode="closest")
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    return fig


def empty_figure(title: str, message: str = "no finished runs yet") -> go.Figure:
    return study_layout(_empty(title, message), title, "", "")


def arm_color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def chance_line(fig: go.Figure, chance: float | None, **kw: Any) -> None:
    """A dotted line at the majority-class rate `chance` (none when it is unknown)."""
    if chance:
        fig.add_hline(y=chance, line_dash="dot", line_color="gray", annotation_text=f"majority class {chance:.1%}",
                      annotation_position="bottom right", **kw)


def seed_band(fig: go.Figure, curve: pd.DataFrame, name: str, color: str, *, mode: str = "lines+markers",
              dash: str = "solid", showlegend: bool = True, **where: Any) -> None:
    """A study curve averaged over seeds, as Compare's grouping draws one: the mean line with a +/- one sample
    std band, and the run count in its legend name. `curve`: rows of x, mean, std, n (`stats.mean_curves`);
    `where`: the subplot (row=, col=). One seed has no spread: its line is drawn without a band."""
    if curve.empty:
        return
    curve = curve.sort_values("x")
    xs, mean = curve["x"].to_numpy(dtype=float), curve["mean"].to_numpy(dtype=float)
    std, n = curve["std"].fillna(0).to_numpy(dtype=float), curve["n"].to_numpy()
    label = f"{name} (n={int(n.max())})"
    if len(xs) > 1 and std.any():
        fig.add_trace(go.Scatter(x=np.concatenate([xs, xs[::-1]]), y=np.concatenate([mean + std, (mean - std)[::-1]]),
                                 fill="toself", fillcolor=translucent(color, 0.18), line={"width": 0},
                                 hoverinfo="skip", legendgroup=label, showlegend=False), **where)
    fig.add_trace(go.Scatter(x=xs, y=mean, mode=mode, name=label, legendgroup=label, showlegend=showlegend,
                             line={"color": color, "dash": dash}, marker_color=color,
                             customdata=np.stack([std, n], axis=1),
                             hovertemplate=f"<b>{name}</b><br>%{{x:,.4~g}}: %{{y:.4~g}} ± %{{customdata[0]:.3~g}} "
                                           "(n=%{customdata[1]})<extra></extra>"), **where)


def bar_figure(table: pd.DataFrame, x: str, title: str, y: str, group: str | None = None,
               chance: float | None = None, order: Sequence[Any] | None = None) -> go.Figure:
    """Bars of mean ± std per `x` (a colour per `group`) from a table of cells (columns mean, std, n)."""
    done = table[table["n"] > 0]
    if done.empty:
        return empty_figure(title)
    fig = go.Figure()
    groups = [None] if group is None else list(dict.fromkeys(done[group]))
    for i, g in enumerate(groups):
        part = done if g is None else done[done[group] == g]
        if order is not None:
            part = part.set_index(x).reindex([o for o in order if o in set(part[x])]).reset_index()
        fig.add_trace(go.Bar(
            x=[str(v) for v in part[x]], y=part["mean"], name=str(g) if g is not None else y,
            marker_color=arm_color(i), error_y=dict(type="data", array=part["std"].fillna(0)),
            text=[f"{m:.1%}" for m in part["mean"]], textposition="outside",
            customdata=part["n"], hovertemplate="%{x}: %{y:.2%} (n=%{customdata})<extra></extra>"))
    chance_line(fig, chance)
    fig.update_layout(barmode="group")
    lo = max(0.0, float((done["mean"] - done["std"].fillna(0)).min()) - 0.1)
    fig.update_yaxes(range=[min(lo, (chance or 1) - 0.05), 1.0], tickformat=".0%")
    return study_layout(fig, title, x.replace("_", " "), y)


# --- sweep figures -----------------------------------------------------------------------------------------------
# For ptft_core.sweeps: the trials table of `SweepView.trials()` (columns trial, state, run_id, value, step, then
# one per searched field) and the spec's search space as stored ({field: {"low", "high", "log", "values"}}).

PRUNED_COLOR = "#d62728"


def _best_so_far(values: pd.Series, maximize: bool) -> pd.Series:
    return values.cummax() if maximize else values.cummin()


def sweep_history_figure(trials: pd.DataFrame, metric: str, maximize: bool, title: str | None = None) -> go.Figure:
    """The objective per trial number: completed trials as dots, pruned ones as crosses at their last validation
    value (where the pruner stopped them, not comparable with a finished value), running ones hollow, and the
    best so far over the completed trials as a step line."""
    title = title or f"validation {metric} per trial ({'higher' if maximize else 'lower'} is better)"
    shown = trials[trials["value"].notna()].sort_values("trial")
    if shown.empty:
        return study_layout(_empty(title, "no trial has a validation value yet"), title, "trial", metric)
    fig = go.Figure()
    styles = {"completed": dict(symbol="circle", color=PALETTE[0], size=9),
              "pruned": dict(symbol="x", color=PRUNED_COLOR, size=9),
              "running": dict(symbol="circle-open", color=PALETTE[0], size=9),
              "queued": dict(symbol="circle-open", color="#888", size=9)}
    for state, marker in styles.items():
        part = shown[shown["state"] == state]
        if part.empty:
            continue
        steps = [f"step {int(s)}" if s == s and s is not None else "" for s in part["step"]]
        fig.add_trace(go.Scatter(
            x=part["trial"], y=part["value"], mode="markers", name=state, marker=marker,
            customdata=list(zip(part["run_id"].fillna(""), steps, strict=True)),
            hovertemplate=f"trial %{{x}} ({state}, %{{customdata[1]}})<br>{metric} %{{y:.4g}}<br>"
                          "%{customdata[0]}<extra></extra>"))
    done = shown[shown["state"] == "completed"]
    if not done.empty:
        fig.add_trace(go.Scatter(x=done["trial"], y=_best_so_far(done["value"], maximize), mode="lines",
                                 line=dict(shape="hv", color=PALETTE[2], width=2), name="best so far",
                                 hovertemplate="best after trial %{x}: %{y:.4g}<extra></extra>"))
    fig.update_xaxes(dtick=1 if shown["trial"].max() < 30 else None)
    return study_layout(fig, title, "trial", f"validation {metric}")


def _axis(values: pd.Series, name: str, space: dict[str, Any]) -> dict[str, Any]:
    """One parallel-coordinates axis: a log range as log10 with 10^k ticks, choices as codes with their labels."""
    choices = space.get("values")
    if choices is not None:
        labels = [str(c) for c in choices]
        codes = values.map({label: i for i, label in enumerate(labels)})
        return dict(label=name, values=codes, tickvals=list(range(len(labels))), ticktext=labels,
                    range=[-0.25, len(labels) - 0.75] if len(labels) > 1 else [-1, 1])
    numbers = values.astype(float)
    if space.get("log"):
        logs = np.log10(numbers)
        lo, hi = int(np.floor(logs.min())), int(np.ceil(logs.max()))
        ticks = list(range(lo, hi + 1))
        return dict(label=f"{name} (log)", values=logs, tickvals=ticks, ticktext=[f"1e{t}" for t in ticks])
    return dict(label=name, values=numbers)


UNFINISHED_COLOR = "#c8c8c8"  # pruned and running trials in the parallel coordinates
_GREY_BAND = 0.06  # the bottom of that plot's colour scale: not a value, "not finished"


def parallel_coordinates_figure(trials: pd.DataFrame, space: dict[str, dict[str, Any]], metric: str,
                                maximize: bool, title: str | None = None) -> go.Figure:
    """One line per trial with a validation value through each searched field, the steps it trained and its
    objective: completed trials coloured by the objective (brighter is better), pruned and running ones grey at
    their last value (an earlier step's value: the steps axis says which)."""
    title = title or (f"every trial: completed ones coloured by validation {metric} (brighter is better), "
                      "pruned and running ones grey")
    shown = trials[trials["value"].notna()].sort_values("trial")
    if shown.empty:
        return study_layout(_empty(title, "no trial has a validation value yet"), title, "", "")
    done = (shown["state"] == "completed").to_numpy()
    dims = [_axis(shown[name], name, spec) for name, spec in space.items() if name in shown]
    if shown["step"].nunique() > 1:  # where trials stopped at different steps: which value is which
        dims.append(dict(label="steps trained", values=shown["step"].astype(float)))
    dims.append(dict(label=f"validation {metric}", values=shown["value"]))
    values = shown["value"].to_numpy(dtype=float)
    lo, hi = (values[done].min(), values[done].max()) if done.any() else (0.0, 1.0)
    span = (hi - lo) or 1.0
    quality = (values - lo) / span if maximize else (hi - values) / span
    grey = _GREY_BAND if not done.all() else 0.0  # the grey band only where some trial is unfinished
    color = np.where(done, grey + (1 - grey) * np.clip(quality, 0, 1), 0.0)
    viridis = sequential.Viridis
    scale = ([[0.0, UNFINISHED_COLOR], [grey, UNFINISHED_COLOR]] if grey else []) + [
        [grey + (1 - grey) * i / (len(viridis) - 1), c] for i, c in enumerate(viridis)]
    ticks = [grey + (1 - grey) * k / 4 for k in range(5)]
    labels = [f"{(lo + span * k / 4) if maximize else (hi - span * k / 4):.3g}" for k in range(5)]
    if grey:
        ticks, labels = [grey / 2, *ticks], ["not finished", *labels]
    fig = go.Figure(go.Parcoords(
        dimensions=dims,
        line=dict(color=color, colorscale=scale, cmin=0, cmax=1, showscale=bool(done.any()),
                  colorbar=dict(title=dict(text=metric, side="right"), tickvals=ticks, ticktext=labels))))
    fig.update_layout(template=TEMPLATE, title=title, height=FIGURE_HEIGHT, margin=dict(l=70, r=60, t=90, b=30))
    return fig


def effects_figure(effects: pd.DataFrame, title: str = "which settings matter: the share of the objective each "
                   "field explains (R², quadratic fit; permutation test)") -> go.Figure:
    """Horizontal bars of each searched field's R², one colour per view (the completed trials at the end; all
    trials at the step the pruner judged them), labelled with the Holm-adjusted p, n and the fields it was drawn
    together with; a field not estimated (too few trials) says so."""
    if effects.empty or effects["r2"].isna().all():
        return study_layout(_empty(title, "needs 4 trials that finished or were pruned"), title, "", "")
    fig = go.Figure()
    for i, (view, rows) in enumerate(effects.groupby("view", sort=False)):
        text = [f"not estimated (n={n})" if r2 != r2 else
                f"R² {r2:.2f} · p {p:.2g}{'' if p < 0.05 else ' (n.s.)'} · n={n}"
                + (f" · drawn with {shared}" if shared else "")
                for r2, p, n, shared in zip(rows["r2"], rows["p_holm"], rows["n"], rows["correlated_with"],
                                            strict=True)]
        fig.add_trace(go.Bar(x=rows["r2"].fillna(0.0), y=rows["field"], orientation="h", name=view, text=text,
                             textposition="outside", marker_color=PALETTE[i], cliponaxis=False,
                             hovertemplate="%{y}: %{text}<extra>" + view + "</extra>"))
    fig.update_layout(barmode="group")
    fig.update_xaxes(range=[0, 1.35], tickvals=[0, 0.25, 0.5, 0.75, 1.0], tickformat=".2f")
    fields = effects["field"].nunique()
    return study_layout(fig, title, "R² of the objective on the field alone", "",
                        height=140 + 40 * fields * effects["view"].nunique())
