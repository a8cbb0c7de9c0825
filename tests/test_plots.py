"""The figure builders of ptft_core.plots, checked on their traces and numbers (no browser, no store)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from ptft_core import plots


def series(run_id: str, values, split: str = "validation", name: str = "loss", x=None, **extra) -> pd.DataFrame:
    values = np.asarray(values, dtype=float)
    x = np.arange(1, len(values) + 1) * 10 if x is None else np.asarray(x)
    return pd.DataFrame({"run_id": run_id, "split": split, "name": name, "x": x, "value": values,
                         "label": extra.pop("label", run_id), **extra})


def lines(fig: go.Figure) -> list:
    """The traces a legend shows (not raw-under-smoothing lines, bands or markers)."""
    return [t for t in fig.data if t.showlegend is not False and t.mode and "lines" in t.mode]


# --- smoothing -------------------------------------------------------------------------------------------------


def test_ema_is_the_debiased_moving_average():
    values = [1.0, 2.0, 4.0, 8.0]
    w = 0.5
    expected = []
    for t in range(len(values)):
        weights = [w**i for i in range(t + 1)]
        expected.append(sum(wi * values[t - i] for i, wi in enumerate(weights)) / sum(weights))
    np.testing.assert_allclose(plots.ema(values, w), expected)
    assert plots.ema(values, w)[0] == 1.0  # no pull toward zero at the start


def test_ema_of_zero_smoothing_is_the_identity_and_bad_smoothing_is_refused():
    np.testing.assert_array_equal(plots.ema([3.0, 1.0, 2.0], 0.0), [3.0, 1.0, 2.0])
    assert len(plots.ema([], 0.9)) == 0
    with pytest.raises(ValueError, match="smoothing"):
        plots.ema([1.0], 1.0)


def test_smooth_works_per_series_in_x_order_and_keeps_the_raw_values():
    a = series("a", [4.0, 0.0], x=[20, 10])  # out of order on purpose
    b = series("b", [10.0, 10.0])
    out = plots.smooth(pd.concat([a, b]), 0.5)
    got_a = out[out.run_id == "a"]
    assert got_a["x"].tolist() == [10, 20]
    np.testing.assert_allclose(got_a["value"], plots.ema([0.0, 4.0], 0.5))
    np.testing.assert_allclose(got_a["raw"], [0.0, 4.0])
    np.testing.assert_allclose(out[out.run_id == "b"]["value"], [10.0, 10.0])  # b is not mixed with a


# --- line figures ----------------------------------------------------------------------------------------------


def test_metric_figure_draws_one_line_per_run_with_its_label_and_the_white_template():
    df = pd.concat([series("a", [3, 2, 1], label="tiny-s0"), series("b", [3, 2.5, 2], label="tiny-s1")])
    fig = plots.metric_figure(df, x="step")
    assert [t.name for t in lines(fig)] == ["tiny-s0", "tiny-s1"]
    assert fig.data[0].line.color != fig.data[1].line.color
    np.testing.assert_allclose(fig.data[0].y, [3, 2, 1])
    assert fig.layout.template.layout.paper_bgcolor == "white"
    assert fig.layout.xaxis.title.text == "step"
    assert fig.layout.yaxis.title.text == "validation/loss"


def test_several_metrics_keep_the_run_colour_and_differ_by_dash():
    df = pd.concat([series("a", [1, 2]), series("a", [0.5, 0.6], name="accuracy")])
    fig = plots.metric_figure(df)
    first, second = lines(fig)
    assert first.line.color == second.line.color
    assert first.line.dash != second.line.dash
    assert {first.name, second.name} == {"a · validation/loss", "a · validation/accuracy"}


def test_smoothing_adds_a_faint_raw_line_under_each_smoothed_line():
    fig = plots.metric_figure(series("a", [1.0, 3.0, 2.0]), smoothing=0.6)
    raw, smoothed = fig.data
    assert raw.opacity == 0.25 and raw.showlegend is False
    np.testing.assert_allclose(raw.y, [1.0, 3.0, 2.0])
    np.testing.assert_allclose(smoothed.y, plots.ema([1.0, 3.0, 2.0], 0.6))


def test_log_scale_and_x_axis_titles():
    fig = plots.metric_figure(series("a", [1, 10, 100]), log_y=True, x="wall_time")
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.xaxis.title.text == "wall time (s)"
    assert plots.metric_figure(series("a", [1, 2]), x="tokens_seen").layout.xaxis.title.text == "tokens seen"


def test_facets_put_each_metric_in_its_own_panel_with_one_legend_entry_per_run():
    df = pd.concat([series("a", [1, 2]), series("a", [0.5, 0.6], split="forgetting", name="cka_similarity"),
                    series("b", [1, 3])])
    fig = plots.metric_figure(df, facet="metric")
    assert {t.yaxis for t in fig.data} == {"y", "y2"}
    assert [a.text for a in fig.layout.annotations] == ["validation/loss", "forgetting/cka_similarity"]
    assert sum(1 for t in fig.data if t.showlegend is not False) == 2  # a and b, in the first panel only
    assert fig.layout.xaxis2.title.text == "step"  # under the bottom panel
    assert {t.line.dash for t in fig.data} == {"solid"}  # the panel titles name the metrics


def test_facets_by_name_overlay_splits_with_one_dash_per_split():
    df = pd.concat([series("a", [2, 1], split="train"), series("a", [2.5, 1.5]),
                    series("a", [0.5, 0.7], split="train", name="accuracy"), series("a", [0.4, 0.6], name="accuracy")])
    fig = plots.metric_figure(df, facet="name")
    assert [a.text for a in fig.layout.annotations] == ["loss", "accuracy"]
    by_panel = {(t.yaxis, t.name): t.line.dash for t in fig.data}
    assert by_panel == {("y", "a · train"): "solid", ("y", "a · validation"): "dash",
                        ("y2", "a · train"): "solid", ("y2", "a · validation"): "dash"}
    assert [t.showlegend for t in fig.data] == [True, True, False, False]  # each legend entry once
    with pytest.raises(ValueError, match="facet"):
        plots.metric_figure(df, facet="split")


def test_facets_by_name_put_what_the_run_learned_above_the_machine_s_measures():
    df = pd.concat([series("a", [0.1, 0.2], split="device", name="mfu"), series("a", [2, 1], split="train"),
                    series("a", [0.4, 0.6], name="accuracy")])  # the store's order: split "device" sorts first
    fig = plots.metric_figure(df, facet="name")
    assert [a.text for a in fig.layout.annotations] == ["loss", "accuracy", "mfu"]


def test_target_line_is_drawn():
    fig = plots.metric_figure(series("a", [0.5, 0.8]), target=0.75)
    assert [s.y0 for s in fig.layout.shapes] == [0.75]


def test_empty_data_gives_a_message_not_an_error():
    fig = plots.metric_figure(series("a", []))
    assert len(fig.data) == 0
    assert "No data" in fig.layout.annotations[0].text


def test_many_points_switch_to_webgl():
    df = pd.concat([series(f"r{i}", np.ones(plots.WEBGL_POINTS // 4 + 1)) for i in range(4)])
    assert isinstance(plots.metric_figure(df).data[0], go.Scattergl)
    assert isinstance(plots.metric_figure(series("a", [1, 2])).data[0], go.Scatter)


def test_a_one_point_series_is_drawn_as_a_visible_marker():
    fig = plots.metric_figure(series("a", [0.7], name="accuracy"))
    (trace,) = fig.data
    assert "markers" in trace.mode
    assert trace.marker.size >= 8  # a lone point is all there is to see
    assert list(trace.y) == [0.7]


def test_short_series_get_markers_and_long_ones_stay_lines():
    short = plots.metric_figure(series("a", np.linspace(1, 0, 10))).data[0]
    assert "markers" in short.mode and "lines" in short.mode
    edge = plots.metric_figure(series("a", np.ones(plots.MARKER_POINTS))).data[0]
    assert "markers" in edge.mode
    long = plots.metric_figure(series("a", np.linspace(1, 0, 5_000))).data[0]
    assert long.mode == "lines"


def test_markers_follow_each_series_length_under_smoothing_facets_and_webgl():
    df = pd.concat([series("a", np.linspace(1, 0, 5_000)), series("b", [2.0])])
    smoothed = plots.metric_figure(df, smoothing=0.6)
    modes = {(t.legendgroup, t.showlegend is False): t.mode for t in smoothed.data}
    assert modes[("a", False)] == "lines" and modes[("a", True)] == "lines"
    assert "markers" in modes[("b", True)]
    faceted = plots.metric_figure(pd.concat([df, series("b", [0.5], name="accuracy")]), facet="metric")
    assert all("markers" in t.mode for t in faceted.data if t.legendgroup == "b")
    big = pd.concat([series(f"r{i}", np.ones(plots.WEBGL_POINTS // 4 + 1)) for i in range(4)] + [series("one", [1.0])])
    webgl = plots.metric_figure(big)
    assert all(isinstance(t, go.Scattergl) for t in webgl.data)
    one = next(t for t in webgl.data if t.legendgroup == "one")
    assert "markers" in one.mode and one.marker.size >= 8
    assert all(t.mode == "lines" for t in webgl.data if t.legendgroup != "one")


# --- grouped bands ---------------------------------------------------------------------------------------------


def test_band_stats_mean_and_sample_std_over_seeds_on_shared_steps():
    df = pd.concat([series("s0", [1.0, 2.0, 3.0], group="lr=1e-3"), series("s1", [3.0, 4.0, 5.0], group="lr=1e-3"),
                    series("s2", [10.0, 10.0, 10.0], group="lr=1e-4")])
    stats = plots.band_stats(df, "group")
    one = stats[stats.group == "lr=1e-3"]
    np.testing.assert_allclose(one["mean"], [2.0, 3.0, 4.0])
    np.testing.assert_allclose(one["std"], np.std([[1, 3], [2, 4], [3, 5]], axis=1, ddof=1))
    assert one["n"].tolist() == [2, 2, 2]
    single = stats[stats.group == "lr=1e-4"]
    assert single["std"].tolist() == [0.0, 0.0, 0.0]  # one run: no spread, not NaN


def test_band_stats_interpolates_inside_each_run_only():
    long = series("a", [0.0, 10.0], x=[0, 10], group="g")
    short = series("b", [2.0], x=[5], group="g")  # covers x=5 only
    stats = plots.band_stats(pd.concat([long, short]), "group")
    by_x = stats.set_index("x")
    assert by_x.loc[0, "n"] == 1 and by_x.loc[10, "n"] == 1
    assert by_x.loc[5, "n"] == 2
    assert by_x.loc[5, "mean"] == pytest.approx((5.0 + 2.0) / 2)  # a interpolated at 5


def test_band_stats_uses_an_even_grid_when_runs_disagree_on_many_x_values():
    a = series("a", np.linspace(0, 1, 300), x=np.arange(300) * 2, group="g")
    b = series("b", np.linspace(0, 1, 300), x=np.arange(300) * 2 + 1, group="g")
    stats = plots.band_stats(pd.concat([a, b]), "group", grid_points=50)
    assert len(stats) == 50
    np.testing.assert_allclose(np.diff(stats["x"]), np.diff(stats["x"])[0])


def test_grouped_figure_draws_a_band_and_a_mean_line_per_group():
    df = pd.concat([series("s0", [1.0, 2.0], group="0.001"), series("s1", [3.0, 4.0], group="0.001")])
    fig = plots.metric_figure(df, group="group", group_title="optim.lr")
    band, mean = fig.data
    assert band.fill == "toself" and band.showlegend is False
    np.testing.assert_allclose(mean.y, [2.0, 3.0])
    std = np.std([1, 3], ddof=1)
    np.testing.assert_allclose(band.y, [2 + std, 3 + std, 3 - std, 2 - std])  # upper edge, then lower reversed
    assert mean.name == "optim.lr=0.001 (n=2)"


def test_grouped_view_with_one_point_per_group_shows_markers_with_error_bars():
    df = pd.concat([series("s0", [1.0], group="0.001"), series("s1", [3.0], group="0.001"),
                    series("s2", [5.0], group="0.01")])
    fig = plots.metric_figure(df, group="group", group_title="optim.lr")
    means = [t for t in fig.data if t.showlegend is not False]
    assert [t.name for t in means] == ["optim.lr=0.001 (n=2)", "optim.lr=0.01 (n=1)"]
    assert all("markers" in t.mode for t in means)
    assert not [t for t in fig.data if t.fill == "toself"]  # a one-x band would be a zero-width polygon
    np.testing.assert_allclose(means[0].y, [2.0])
    assert means[0].error_y.visible is True
    np.testing.assert_allclose(means[0].error_y.array, [np.std([1, 3], ddof=1)])


def test_grouped_view_keeps_markers_on_short_bands_and_drops_them_on_long_ones():
    short = pd.concat([series("s0", [1.0, 2.0, 3.0], group="g"), series("s1", [2.0, 3.0, 4.0], group="g")])
    band, mean = plots.metric_figure(short, group="group").data
    assert band.fill == "toself" and "markers" in mean.mode
    long = pd.concat([series(f"s{i}", np.linspace(1, 0, 200) + i, group="g") for i in range(2)])
    _, mean = plots.metric_figure(long, group="group").data
    assert mean.mode == "lines"


# --- convergence and overfitting -------------------------------------------------------------------------------


def test_seed_band_draws_mean_with_a_std_band_and_the_run_count_in_the_legend():
    from ptft_core.studies.stats import mean_curves
    runs = pd.DataFrame({"run_id": ["a", "b", "c"], "arm": ["x", "x", "x"], "status": "completed"})
    m = pd.concat([series("a", [0.5, 0.6]), series("b", [0.7, 0.8]), series("c", [0.6, 0.7])])
    curve = mean_curves(m, runs, "validation", "loss", ["arm"])
    fig = go.Figure()
    plots.seed_band(fig, curve, "arm x", "#1f77b4")
    band, mean = fig.data
    assert band.fill == "toself" and band.showlegend is False
    assert mean.name == "arm x (n=3)"
    np.testing.assert_allclose(mean.y, [0.6, 0.7])
    std = np.std([0.5, 0.7, 0.6], ddof=1)
    np.testing.assert_allclose(band.y, [0.6 + std, 0.7 + std, 0.7 - std, 0.6 - std])


def test_seed_band_of_one_seed_has_no_band():
    fig = go.Figure()
    plots.seed_band(fig, pd.DataFrame({"x": [1, 2], "mean": [0.5, 0.6], "std": [np.nan, np.nan], "n": [1, 1]}),
                    "one", "#1f77b4")
    assert [t.name for t in fig.data] == ["one (n=1)"]


def test_first_reach_finds_the_first_crossing_in_either_direction():
    df = pd.concat([series("fast", [0.5, 0.8, 0.9], name="accuracy"),
                    series("never", [0.5, 0.6, 0.7], name="accuracy")])
    got = plots.first_reach(df, 0.8, higher_better=True).set_index("run_id")
    assert got.loc["fast", "reached_at"] == 20
    assert np.isnan(got.loc["never", "reached_at"])
    assert got.loc["never", "best"] == pytest.approx(0.7)
    loss = plots.first_reach(series("a", [3.0, 1.0, 0.5]), 1.0, higher_better=False)
    assert loss["reached_at"].tolist() == [20]


def test_best_points_and_the_direction_of_metrics():
    assert plots.higher_is_better("accuracy") and plots.higher_is_better("cka_similarity")
    assert not plots.higher_is_better("loss") and not plots.higher_is_better("general_mlm_loss")
    best = plots.best_points(pd.concat([series("a", [3.0, 1.0, 2.0]), series("b", [5.0, 4.0, 4.0])]), False)
    assert best[["run_id", "x", "value"]].values.tolist() == [["a", 20, 1.0], ["b", 20, 4.0]]  # first of ties


def test_generalization_gap_is_positive_when_validation_is_worse():
    train = series("a", [2.0, 1.0, 0.5, 0.2], split="train", x=[0, 10, 20, 30])
    validation = series("a", [1.2, 1.5], x=[10, 30])
    gap = plots.generalization_gap(train, validation, higher_better=False)
    np.testing.assert_allclose(gap["gap"], [1.2 - 1.0, 1.5 - 0.2])
    acc_gap = plots.generalization_gap(series("a", [0.9, 1.0], split="train", name="accuracy"),
                                       series("a", [0.8, 0.7], name="accuracy"), higher_better=True)
    np.testing.assert_allclose(acc_gap["gap"], [0.1, 0.3])


def test_generalization_gap_leaves_out_validation_points_outside_train():
    train = series("a", [1.0, 1.0], split="train", x=[10, 20])
    gap = plots.generalization_gap(train, series("a", [1.5, 1.5, 1.5], x=[0, 15, 40]), higher_better=False)
    assert gap["x"].tolist() == [15]


def test_overfitting_figure_has_train_validation_best_markers_and_gap_panel():
    train = pd.concat([series("a", [2.0, 1.0, 0.5], split="train"), series("b", [2.0, 1.5, 1.0], split="train")])
    validation = pd.concat([series("a", [1.5, 1.2, 1.4]), series("b", [1.8, 1.6, 1.5])])
    fig = plots.overfitting_figure(train, validation, metric="loss", higher_better=False)
    names = [t.name for t in fig.data if t.name]
    assert {"a · train", "a · validation", "b · train", "b · validation", "best validation"} <= set(names)
    assert next(t for t in fig.data if t.name == "a · train").line.dash == "dash"
    markers = next(t for t in fig.data if t.name == "best validation")
    assert markers.marker.symbol == "star"
    assert list(markers.x) == [20, 30] and list(markers.y) == [1.2, 1.5]
    gaps = [t for t in fig.data if t.yaxis == "y2" and t.mode == "lines+markers"]
    assert len(gaps) == 2
    np.testing.assert_allclose(gaps[0].y, [1.5 - 2.0, 1.2 - 1.0, 1.4 - 0.5])
    assert fig.layout.yaxis2.title.text == "gap"


def test_overfitting_figure_marks_short_series_and_a_single_validation_point():
    train = series("a", np.linspace(2, 1, 500), split="train", x=np.arange(500))
    validation = series("a", [1.4], x=[250])
    fig = plots.overfitting_figure(train, validation, metric="loss", higher_better=False)
    curve = {t.name: t for t in fig.data if t.name}
    assert curve["a · train"].mode == "lines"
    assert "markers" in curve["a · validation"].mode and curve["a · validation"].marker.size >= 8


def test_overfitting_figure_without_validation_shows_a_message():
    fig = plots.overfitting_figure(series("a", [1.0], split="train"), series("a", []), metric="loss",
                                   higher_better=False)
    assert len(fig.data) == 0


# --- single-run and data figures -------------------------------------------------------------------------------


def test_confusion_figure_colours_by_row_share_and_labels_axes():
    fig = plots.confusion_figure(np.array([[8, 2], [1, 9]]), ["neg", "pos"])
    heat = fig.data[0]
    np.testing.assert_allclose(heat.z, [[0.8, 0.2], [0.1, 0.9]])
    assert list(heat.x) == ["neg", "pos"] and heat.text[0][1] == "2<br>20%"
    assert fig.layout.yaxis.title.text == "true" and fig.layout.xaxis.title.text == "predicted"


def test_attention_figure_keeps_repeated_tokens_apart():
    weights = np.full((3, 3), 1 / 3)
    fig = plots.attention_figure(weights, ["[CLS]", "the", "the"])
    assert list(fig.data[0].x) == ["0:[CLS]", "1:the", "2:the"]
    assert fig.layout.yaxis.autorange == "reversed"


def test_attention_difference_figure_is_after_minus_before_centred_at_zero():
    before = np.array([[0.5, 0.5, 0.0], [0.2, 0.6, 0.2], [1 / 3, 1 / 3, 1 / 3]])
    after = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [1 / 3, 1 / 3, 1 / 3]])
    fig = plots.attention_difference_figure(before, after, ["[CLS]", "the", "the"], title="Δ")
    heat = fig.data[0]
    np.testing.assert_allclose(heat.z, after - before)
    assert heat.zmid == 0
    assert heat.zmin == pytest.approx(-0.4) and heat.zmax == pytest.approx(0.4)  # symmetric: the largest |Δ|
    assert heat.colorscale[-1][1] == "rgb(103,0,31)"  # increases are red (RdBu reversed)
    assert list(heat.x) == ["0:[CLS]", "1:the", "2:the"] and fig.layout.yaxis.autorange == "reversed"
    np.testing.assert_allclose(np.asarray(heat.customdata)[0, 1], [0.5, 0.1])  # before, after in the hover
    assert "before" in heat.hovertemplate and "after" in heat.hovertemplate
    change = plots.attention_change(before, after)
    assert change.mean_abs == pytest.approx(np.abs(after - before).mean())
    assert change.max_abs == pytest.approx(0.4)


def test_attention_difference_of_identical_maps_is_zero_and_mismatches_are_refused():
    same = np.full((2, 2), 0.5)
    fig = plots.attention_difference_figure(same, same, ["a", "b"])
    assert np.all(np.asarray(fig.data[0].z) == 0) and fig.data[0].zmax > 0  # a valid (tiny) range, no 0/0
    assert plots.attention_change(same, same).mean_abs == 0
    with pytest.raises(ValueError, match="differ in shape"):
        plots.attention_difference_figure(np.zeros((3, 3)), np.zeros((4, 4)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="3 tokens"):
        plots.attention_difference_figure(np.zeros((2, 2)), np.zeros((2, 2)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="square"):
        plots.attention_change(np.zeros((2, 3)), np.zeros((2, 3)))


def test_probability_figure_highlights_the_predicted_class():
    fig = plots.probability_figure({"negative": 0.2, "positive": 0.8})
    bar = fig.data[0]
    assert list(bar.y) == ["negative", "positive"]
    assert bar.marker.color[1] == plots.PALETTE[0] and bar.marker.color[0] != plots.PALETTE[0]
    assert bar.text[1] == "80.0%"


def test_length_histogram_and_label_balance():
    lengths = pd.DataFrame({"split": ["train"] * 3 + ["test"] * 2, "tokens": [5, 7, 9, 4, 6]})
    fig = plots.length_histogram(lengths, max_length=8)
    assert [t.name for t in fig.data] == ["train (3)", "test (2)"]
    assert fig.layout.shapes[0].x0 == 8
    balance = plots.label_balance_figure({"train": {"neg": 3, "pos": 1}, "test": {"neg": 1, "pos": 1}})
    assert [t.name for t in balance.data] == ["neg", "pos"]
    assert list(balance.data[0].y) == [3, 1] and balance.data[0].text[0] == "75%"
    assert len(plots.label_balance_figure({}).data) == 0


# --- export ----------------------------------------------------------------------------------------------------


def test_html_export_is_standalone_and_png_button_is_configured():
    fig = plots.metric_figure(series("a", [1.0, 2.0]))
    html = plots.figure_html(fig, "ptft-convergence")
    assert html.lower().startswith("<!doctype html>")
    assert len(html) > 1_000_000  # plotly.js is inlined: the file opens offline
    assert '"filename": "ptft-convergence"' in html
    config = plots.chart_config("x")
    assert config["toImageButtonOptions"] == {"format": "png", "filename": "x", "scale": 2}
    assert config["displaylogo"] is False


def test_the_reliability_figure_draws_each_run_against_the_diagonal_with_its_counts():
    rows = []
    for label, gap in (("pretrained", 0.02), ("scratch", 0.2)):
        for index in (7, 11, 14):
            confidence = (index + 0.5) / 15
            rows += [{"label": label, "x": index, "name": "confidence", "value": confidence},
                     {"label": label, "x": index, "name": "accuracy", "value": confidence - gap},
                     {"label": label, "x": index, "name": "count", "value": 10 * index}]
    fig = plots.reliability_figure(pd.DataFrame(rows), ece={"pretrained": 0.02, "scratch": 0.2})
    lines = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert [t.name for t in lines] == ["calibrated", "pretrained (ECE 0.020)", "scratch (ECE 0.200)"]
    assert list(lines[0].x) == [0, 1] and list(lines[0].y) == [0, 1]  # the diagonal
    scratch = lines[2]
    assert np.allclose(np.array(scratch.x) - np.array(scratch.y), 0.2)  # below the diagonal: overconfident
    assert list(scratch.marker.size) == sorted(scratch.marker.size)  # the fuller bin, the larger marker
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert len(bars) == 2 and list(bars[0].y) == [70, 110, 140]
    assert "no run here has a reliability diagram" in str(plots.reliability_figure(pd.DataFrame()).layout)
