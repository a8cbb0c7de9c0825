"""Studies: plans, dependencies, reports and the page.

Fast tests: the report math on synthetic frames (mean ± std, differences, steps to target, the transfer matrix,
incomplete studies), every template's plan and estimate, the HTML export, the CLI's `--list`, failed
dependents (an engine that launches nothing), and the page under AppTest without torch.

Slow tests: all eight studies in their CI form (`--tiny-for-tests`: a tiny model, a few steps per run, one seed)
through one real engine with two CPU slots and real worker processes (no stand-in trainer), then each report:
complete, conclusions present, every figure drawn, the HTML self-contained; and `study report` from the CLI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ptft_core.client import start_service
from ptft_core.config import CHECKPOINT_FIELD, FinetuneConfig, PretrainConfig, config_to_dict
from ptft_core.studies import report as rp
from ptft_core.studies import stats
from ptft_core.studies.costs import estimate_seconds, run_seconds
from ptft_core.studies.driver import Plan, StudyData, StudyDriver, run_states, study_progress, study_report
from ptft_core.studies.templates import FINETUNE_BUDGET, STUDY_PRESETS, TEMPLATES, PlannedRun, build_runs, ft_config
from tests.conftest import stop_lab

REPO = Path(__file__).resolve().parent.parent
PREPARED = Path(os.environ.get("PTFT_DATA_SOURCE") or REPO / "data")
SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc\s*=", re.IGNORECASE)


# --- synthetic studies ----------------------------------------------------------------------------------------------


def synthetic(template: str, values, failed: set[str] = frozenset(), preset: str = "quick") -> StudyData:
    """A StudyData as load_study builds it: every planned run with a status, and metrics from `values(key, labels)`
    -> list of (split, name, step, value) for completed runs."""
    planned = build_runs(template, preset)
    plan = Plan(template, preset, False, planned,
                meta={"datasets": {d: {"chance": 0.5, "splits": {"train": 8483, "validation": 1061, "test": 1061}}
                                   for d in ("movies", "amazon", "nyt", "tweets", "sources")}},
                env={"python": "3.11"})
    rows, metrics = [], []
    for i, run in enumerate(planned):
        run_id = f"r{i:03d}"
        status = "failed" if run.key in failed else "completed"
        rows.append({"key": run.key, "run_id": run_id, "status": status,
                     "error": "boom" if status == "failed" else None, "kind": run.config.kind,
                     "config": config_to_dict(run.config), "parent_run": None, "device": "cpu", "seconds": 10.0,
                     "step": 10, **run.labels})
        if status == "completed":
            for split, name, step, value in values(run.key, run.labels):
                metrics.append({"run_id": run_id, "split": split, "name": name, "x": float(step), "value": value})
    metrics = pd.DataFrame(metrics, columns=["run_id", "split", "name", "x", "value"])
    empty = metrics.iloc[0:0]
    return StudyData({"id": "st-test", "name": "test", "template": template, "preset": preset, "created_at": None},
                     plan, pd.DataFrame(rows), metrics, empty, empty, {})


def reliability_rows(gap: float) -> list[tuple[str, str, int, float]]:
    """A test split's reliability bins 10-14 (confidence 0.7-1.0), accuracy `gap` under confidence, 20 a bin."""
    rows = []
    for index in range(10, 15):
        confidence = (index + 0.5) / 15
        rows += [("reliability", "confidence", index, confidence), ("reliability", "accuracy", index, confidence - gap),
                 ("reliability", "count", index, 20.0)]
    return rows


def helps_values(key, labels):
    """Pretrained 0.80 / 0.82 (seeds 0 / 1), scratch 0.55 / 0.57, whatever the fraction; validation curves that
    reach 0.8 at step 20 (pretrained) or never (scratch)."""
    seed, pretrained = labels["seed"], labels["arm"] == "pretrained"
    test = (0.80 if pretrained else 0.55) + 0.02 * seed
    curve = [(10, 0.70), (20, 0.80), (30, 0.81)] if pretrained else [(10, 0.52), (20, 0.54), (30, 0.56)]
    out = [("test", "accuracy", 30, test), ("train", "accuracy", 30, curve[-1][1] + 0.05)]
    out += [("validation", "accuracy", s, v) for s, v in curve]
    ece = (0.02 if pretrained else 0.10) + 0.01 * seed  # scratch: overconfident
    return out + [("test", "ece", 30, ece), *reliability_rows(ece)]


def test_mean_std_and_difference():
    s = stats.mean_std([0.80, 0.82, float("nan")])
    assert s.n == 2 and s.mean == pytest.approx(0.81) and s.std == pytest.approx(math.sqrt(2) * 0.01)
    assert stats.fmt_stat(s) == "81.0 ± 1.4 % (n=2)"
    assert stats.fmt_stat(stats.mean_std([0.5])) == "50.0 % (1 seed)" and math.isnan(stats.mean_std([0.5]).std)
    assert stats.mean_std([]).n == 0 and stats.fmt_stat(stats.mean_std([])) == "n/a"
    d = stats.difference(stats.mean_std([0.80, 0.82]), stats.mean_std([0.55, 0.57]))
    assert d.delta == pytest.approx(0.25) and d.se == pytest.approx(0.01414, abs=1e-4) and d.verdict == "clear"
    assert stats.difference(stats.mean_std([0.80, 0.90]), stats.mean_std([0.79, 0.91])).verdict == "within noise"
    assert stats.difference(stats.mean_std([0.8]), stats.mean_std([0.5, 0.6])).verdict == "one seed"


def test_welch_test_gives_the_textbook_p_value_and_interval():
    # a = 1..5, b = 3..7: difference -2, both variances 2.5, se = 1, t = -2 on 8 degrees of freedom. The t table
    # gives p = 0.0805 (two-sided) and t(0.975, 8) = 2.306, so the 95 % interval is -2 ± 2.306.
    d = stats.difference(stats.mean_std([1, 2, 3, 4, 5]), stats.mean_std([3, 4, 5, 6, 7]), negligible=0)
    assert d.delta == -2 and d.se == pytest.approx(1) and d.df == pytest.approx(8)
    assert d.p == pytest.approx(0.0805, abs=1e-4) and d.verdict == "within noise"
    assert d.ci == pytest.approx((-4.306, 0.306), abs=1e-3) and d.n == (5, 5)
    # Unequal variances: Welch-Satterthwaite df = (4/4 + 1/4)^2 / ((4/4)^2/3 + (1/4)^2/3) = 4.41; t = 4 / 1.118.
    d = stats.difference(stats.Stat(10.0, 2.0, 4), stats.Stat(6.0, 1.0, 4), negligible=0)
    assert d.df == pytest.approx(4.412, abs=1e-3) and d.p == pytest.approx(0.0199, abs=5e-4) and d.verdict == "clear"
    assert "95 % CI" in d.text() and "p = 0.020" in d.text() and "n = 4 vs 4" in d.text()
    assert stats.Difference.from_dict(d.as_dict()) == d
    # No spread on either side: the difference is exact.
    assert stats.difference(stats.mean_std([0.6, 0.6]), stats.mean_std([0.5, 0.5])).p == 0


def test_paired_test_of_a_within_run_drop():
    # Drops of 10, 12, 14 points: mean 12, sd 2, se 2/sqrt(3) = 1.155, t = 10.39 on 2 degrees of freedom: p = 0.0091
    # (t table), 95 % interval 12 ± 4.303 * 1.155.
    d = stats.paired(stats.mean_std([0.10, 0.12, 0.14]))
    assert d.test == "paired t-test" and d.df == 2 and d.verdict == "clear"
    assert d.p == pytest.approx(0.0091, abs=2e-4) and d.ci == pytest.approx((0.0703, 0.1697), abs=1e-3)
    assert "paired t-test p = 0.009, n = 3 (clear)" in d.text()
    assert stats.paired(stats.mean_std([0.2, -0.2])).verdict == "within noise"


def test_forgetting_compares_arms_seed_by_seed():
    """Two arms with one seed share the movies stage, so the mitigation is tested on per-seed differences of the
    drop: here -8, -11, -9 and -12 points (mean -10, sd 1.83, t = -10.95 on 3 df: p = 0.0016 by the t table),
    which Welch's test across arms (spreads of 11-12 points from the movies stage) would leave within noise."""
    from ptft_core.studies.stats import seed_matched

    plain, replay = [0.28, 0.21, 0.04, 0.29], [0.20, 0.10, -0.05, 0.17]
    runs = pd.DataFrame({"arm": ["plain"] * 4 + ["replay"] * 4, "seed": [0, 1, 2, 3] * 2, "drop": plain + replay})
    d = seed_matched(runs, "drop", "replay", "plain")
    assert d.test == "paired t-test" and d.n == (4, 4) and d.delta == pytest.approx(-0.10)
    assert d.p == pytest.approx(0.0016, abs=2e-4) and d.verdict == "clear"
    assert stats.difference(stats.mean_std(replay), stats.mean_std(plain)).verdict == "within noise"
    # A seed missing on one side drops out of the pairs.
    d = seed_matched(runs[~((runs["arm"] == "replay") & (runs["seed"] == 3))], "drop", "replay", "plain")
    assert d.n == (3, 3) and d.delta == pytest.approx(-0.0933, abs=1e-4)


def test_majority_class_and_convergence_checks():
    assert rp.majority_only(0.505, 0.40, chance=0.5)  # at the label prior
    assert rp.majority_only(0.70, 0.42, chance=0.69)  # tweets: 69 % positive, always "positive"
    assert rp.majority_only(0.60, 0.34, chance=0.5)  # accuracy above chance but macro F1 of a constant guess
    assert not rp.majority_only(0.75, 0.74, chance=0.5)
    assert not rp.majority_only(0.75, 0.74, chance=None)
    assert rp.still_rising([0.5, 0.6, 0.7, 0.8])  # the last two beat the two before by 15 points
    assert not rp.still_rising([0.5, 0.8, 0.81, 0.80, 0.81])  # a plateau
    assert not rp.still_rising([0.5, 0.7, 0.72])  # too few evaluations to tell


def test_steps_to_target():
    series = pd.DataFrame({"x": [30, 10, 20], "value": [0.9, 0.5, 0.85]})
    assert stats.steps_to_target(series, 0.8) == 20  # the first step in step order, not row order
    assert stats.steps_to_target(series, 0.95) is None
    assert stats.steps_to_target(series.iloc[0:0], 0.5) is None


def test_transfer_matrix():
    runs = pd.DataFrame({"run_id": ["a0", "a1", "b0", "b1"],
                         "status": ["completed", "completed", "completed", "failed"],
                         "domain": ["movies", "movies", "tweets", "tweets"]})
    m = pd.DataFrame([
        ("a0", "test", "accuracy", 0.80), ("a1", "test", "accuracy", 0.84),
        ("a0", "transfer", "accuracy@tweets", 0.60), ("a1", "transfer", "accuracy@tweets", 0.64),
        ("b0", "test", "accuracy", 0.90), ("b0", "transfer", "accuracy@movies", 0.70),
        ("b1", "test", "accuracy", 0.10),  # a failed run's numbers never count
    ], columns=["run_id", "split", "name", "value"]).assign(x=5.0)
    mean, std, n = stats.transfer_matrix(runs, m, ["movies", "tweets"])
    assert mean.loc["movies", "movies"] == pytest.approx(0.82) and mean.loc["movies", "tweets"] == pytest.approx(0.62)
    assert mean.loc["tweets", "tweets"] == pytest.approx(0.90) and n.loc["tweets", "tweets"] == 1
    assert std.loc["movies", "tweets"] == pytest.approx(np.std([0.60, 0.64], ddof=1))
    assert mean.index.name == "trained on"


def test_complete_report_computes_its_conclusions_from_the_numbers():
    report = rp.build_report(synthetic("pretraining_helps", helps_values))
    assert report.status == "complete" and report.status_line == "complete: 18 of 18 runs finished"
    numbers = report.conclusions["numbers"]
    for fraction in ("0.01", "0.1", "1"):
        cell = numbers["test_accuracy"][fraction]
        assert cell["pretrained"]["mean"] == pytest.approx(0.82) and cell["scratch"]["n"] == 3
        assert cell["difference"]["delta"] == pytest.approx(0.25) and cell["difference"]["verdict"] == "clear"
        steps = numbers["steps_to_target"][fraction]
        assert steps["pretrained"]["mean_steps"] == 20 and steps["scratch"]["reached"] == 0
    assert "+25.0 points" in report.conclusions["headline"]
    assert any("82.0 ± 2.0 %" in f and "57.0 ± 2.0 %" in f for f in report.conclusions["findings"])
    assert any("Welch t-test p < 0.001, n = 3 vs 3 (clear)" in f for f in report.conclusions["findings"])
    assert all(len(fig.data) for fig in report.figures.values())
    assert report.failed.empty
    ece = numbers["calibration"]["difference"]  # at the largest label fraction, Welch
    assert ece["arms"] == ["pretrained", "scratch"] and ece["delta"] == pytest.approx(-0.08)
    assert any(f.startswith("Calibration, 100% labels: test ECE pretrained 0.030 ± 0.010 (n=3)")
               for f in report.conclusions["findings"])


def test_pretraining_helps_reads_the_gap_trend_only_where_the_scratch_arm_learned():
    """Scratch at the majority class (50.5 %) at every fraction but the largest: the smaller fractions' gaps are
    gains over the label prior, and the headline names the one fraction where both arms learned."""
    fractions = sorted({r.labels["label_fraction"] for r in build_runs("pretraining_helps", "quick")})
    assert len(fractions) >= 3, "the quick curve needs a fraction where the scratch arm can learn"

    def values(key, labels):
        seed, largest = labels["seed"], labels["label_fraction"] == fractions[-1]
        scratch = 0.70 + 0.01 * seed if largest else 0.505  # the label prior, except with the most labels
        test = 0.80 + 0.01 * seed if labels["arm"] == "pretrained" else scratch
        return [("test", "accuracy", 30, test), ("test", "f1", 30, test - 0.05 if test > 0.6 else 0.34),
                ("validation", "accuracy", 30, test)]

    c = rp.build_report(synthetic("pretraining_helps", values)).conclusions
    largest = f"{fractions[-1]:.0%}"
    assert c["numbers"]["scratch_learned_at"] == [fractions[-1]]
    assert f"leaves the majority class only at {largest} labels" in c["headline"]
    assert "+10.0 points" in c["headline"]
    assert any("gain over the prior" in f and "not read as a trend" in f for f in c["findings"])
    assert any("holds in that sense" in f for f in c["findings"])


@pytest.mark.parametrize("gain, flagged", [(0.0, True), (0.08, False)])
def test_how_much_pretraining_flags_a_last_checkpoint_no_better_than_the_untrained_model(gain, flagged):
    def values(key, labels):
        if labels["arm"] == "pretrain":
            return [("validation", "loss", 10, 5.0)]
        last = labels["pretrain_step"] == max(r.labels.get("pretrain_step", 0)
                                              for r in build_runs("how_much_pretraining", "quick"))
        return [("test", "accuracy", 30, 0.70 + 0.01 * labels["seed"] + (gain if last else 0.0))]

    c = rp.build_report(synthetic("how_much_pretraining", values)).conclusions
    assert any("not clearly better than the untrained model" in x for x in c["caveats"]) is flagged


def test_incomplete_study_says_so_and_draws_no_conclusion_from_missing_runs():
    data = synthetic("pretraining_helps", helps_values, failed={"scratch/frac0.1/s1"})
    report = rp.build_report(data)
    assert report.status == "incomplete"
    assert report.status_line.startswith("incomplete: 17 of 18 runs finished")
    assert report.conclusions["headline"].startswith("Incomplete: 17 of 18 runs finished")
    assert report.failed["key"].tolist() == ["scratch/frac0.1/s1"] and report.failed["error"].tolist() == ["boom"]
    assert set(report.conclusions["numbers"]["test_accuracy"]) == {"0.01", "1"}  # the 10 % cell lost a seed
    assert any("scratch at 10% labels (2 of 3 runs)" in c for c in report.conclusions["caveats"])
    assert not any("10% of the labels" in f for f in report.conclusions["findings"])


def test_a_study_with_nothing_finished_renders_without_conclusions():
    data = synthetic("forgetting", lambda key, labels: [], failed={r.key for r in build_runs("forgetting", "quick")})
    report = rp.build_report(data)
    assert report.status == "incomplete" and report.status_line.startswith("incomplete: 0 of")
    assert report.conclusions["findings"] == [] and "No conclusion yet" in report.conclusions["headline"]
    assert SCRIPT_SRC.search(rp.report_html(report)) is None


@pytest.mark.parametrize("last_loss, stuck", [(6.95, True), (5.9, False)])
def test_pretraining_reports_say_where_the_loss_stands_against_the_unigram_line(last_loss, stuck):
    """A pretraining run whose validation loss stays at the unigram line is flagged as having learned word
    frequencies only, and the unigram and bigram lines are drawn on its loss panel."""
    def values(key, labels):
        if key == "pretrain":
            return [("reference", "unigram_loss", 0, 7.0), ("reference", "bigram_loss", 0, 5.8),
                    ("validation", "loss", 0, 9.0), ("validation", "loss", 1000, last_loss)]
        return [("test", "accuracy", 100, 0.6 + 0.01 * labels["seed"])]

    conclusions = rp.build_report(synthetic("how_much_pretraining", values)).conclusions
    assert conclusions["numbers"]["pretrain_nats_below_unigram"] == pytest.approx(7.0 - last_loss)
    assert any(f"{7.0 - last_loss:.2f} nats below the unigram line 7.00" in f for f in conclusions["findings"])
    assert any("did not learn past word frequencies" in c for c in conclusions["caveats"]) == stuck
    fig = rp.build_report(synthetic("how_much_pretraining", values)).figures["accuracy_vs_tokens"]
    assert sorted(s.y0 for s in fig.layout.shapes if s.y0 == s.y1 and s.yref == "y2") == [5.8, 7.0]


@pytest.mark.parametrize("second_accuracy, invalid", [(0.50, True), (0.75, False)])
def test_forgetting_report_flags_a_second_stage_that_only_learned_the_majority_class(second_accuracy, invalid):
    def values(key, labels):
        if labels["arm"] == "mlm-head":
            return []
        seed = labels["seed"]
        drop = (0.15 if labels["arm"] == "dissimilar (sources)" else 0.03) + 0.01 * seed
        return [("validation", "accuracy", 10, 0.80 + 0.01 * seed),
                ("forgetting", "prev_task_accuracy", 10, 0.80 + 0.01 * seed),  # the second stage's start
                ("forgetting", "prev_task_accuracy", 20, 0.80 + 0.01 * seed - drop),
                ("test", "accuracy", 20, second_accuracy), ("test", "f1", 20, second_accuracy)]

    report = rp.build_report(synthetic("forgetting", values))  # every chance rate is 0.5 in the synthetic plan
    conclusions = report.conclusions
    arms = ["dissimilar (sources)", "sources + replay 30%"]
    assert conclusions["numbers"]["second_stage_at_majority_rate"] == (arms if invalid else [])
    flagged = [c for c in conclusions["caveats"] if "ended at the majority-class rate" in c]
    assert len(flagged) == (2 if invalid else 0)
    if invalid:  # nothing is concluded from arms whose second stage learned only the label prior
        assert "drop_vs_dissimilar" not in conclusions["numbers"]
    else:
        assert "a drop of +16.5 points" in conclusions["headline"] and "paired t-test" in conclusions["headline"]
        vs = conclusions["numbers"]["drop_vs_dissimilar"]
        replay = vs["sources + replay 30%"]
        assert replay["delta"] == pytest.approx(-0.12) and replay["verdict"] == "clear"


@pytest.mark.parametrize("scratch_few", [0.60, 0.205])
def test_image_transfer_report_tests_each_question_on_the_weights_each_run_kept(scratch_few):
    """Full fine-tuning 0.90 + 0.01 x seed; the top stage 2.5-3 points under it seed by seed, the probe 20; scratch
    `scratch_few` (+0.02 x seed) at 2 % labels. Every fine-tune's best validation accuracy is at step 20, so the
    source task is read there (a drop of 0.40 + 0.01 x seed for full fine-tuning, 0.05 + 0.01 x seed with replay,
    none for a probe), not at the last evaluation (0.10 lower still)."""
    def values(key, labels):
        seed, arm = labels["seed"], labels["arm"]
        rate = 0.2 if labels["transfer"] == "new classes" else 0.1  # the run's own majority-class rate
        if arm == "pretraining":
            return [("reference", "accuracy", 0, rate), ("test", "accuracy", 100, 0.98), ("test", "f1", 100, 0.98)]
        full = 0.90 + 0.01 * seed
        test = {"top stage": full - 0.03 + 0.005 * (seed % 2), "linear probe": full - 0.20,
                "scratch": (scratch_few + 0.02 * seed) if labels["label_fraction"] < 1 else 0.85 + 0.01 * seed
                }.get(arm, full)
        drop = {"full": 0.40, "full + replay 30%": 0.05, "top stage": 0.30}.get(arm, 0.0) + 0.01 * seed
        drop = 0.0 if "probe" in arm else drop
        out = [("reference", "accuracy", 0, rate), ("test", "accuracy", 30, test), ("test", "f1", 30, test),
               ("test", "ece", 30, 0.1 if arm == "scratch" else 0.03), *reliability_rows(0.03),
               ("validation", "accuracy", 0, 0.1), ("validation", "accuracy", 10, 0.5),
               ("validation", "accuracy", 20, 0.9), ("validation", "accuracy", 30, 0.85)]
        if arm != "scratch":
            out += [("forgetting", "prev_task_accuracy", step, value)
                    for step, value in ((0, 0.98), (20, 0.98 - drop), (30, 0.88 - drop))]
        return out

    report = rp.build_report(synthetic("image_transfer", values))
    c = report.conclusions
    assert report.status == "complete", report.status_line
    few = c["numbers"]["test_accuracy"]["new classes"]["0.02"]
    assert few["examples"] == 40 and few["full"]["n"] == 4
    gain = few["pretrained_vs_scratch"]
    assert gain["delta"] == pytest.approx(0.915 - (scratch_few + 0.03)) and gain["verdict"] == "clear"
    top = few["vs_full"]["top stage"]
    assert top["test"] == "paired t-test" and top["delta"] == pytest.approx(-0.0275) and top["verdict"] == "clear"
    drops = c["numbers"]["source_drop"]["new domain"]
    assert drops["full"]["drop"]["delta"] == pytest.approx(0.415)  # at the kept step 20, not the last one
    assert drops["full + replay 30%"]["vs_full"]["delta"] == pytest.approx(-0.35)
    assert drops["linear probe"]["drop"]["delta"] == 0
    assert c["headline"].startswith(f"mnist 0-4 → mnist 5-9: pretraining {gain['delta'] * 100:+.1f} points at 2% "
                                    "labels (clear)")
    flagged = [x for x in c["caveats"] if x.startswith("learned only the majority class")]
    assert bool(flagged) == (scratch_few < 0.21) and all("scratch (2 of " in x for x in flagged)
    assert all(len(fig.data) for fig in report.figures.values())


def test_domain_shift_report_builds_the_matrix_and_the_drop():
    def values(key, labels):
        pre = labels["arm"] == "pretrained"
        out = [("test", "accuracy", 10, 0.85 if pre else 0.60)]
        out += [("transfer", f"accuracy@{d}", 10, 0.75 if pre else 0.52)
                for d in ("movies", "amazon", "nyt", "tweets") if d != labels["domain"]]
        return out

    report = rp.build_report(synthetic("domain_shift", values))
    t = report.conclusions["numbers"]["transfer"]
    assert t["pretrained"]["drop"] == pytest.approx(0.10) and t["scratch"]["drop"] == pytest.approx(0.08)
    assert t["pretrained"]["matrix"]["movies"]["tweets"] == pytest.approx(0.75)
    assert "75.0%" in report.conclusions["headline"] and "52.0%" in report.conclusions["headline"]
    assert len(report.figures["transfer_matrix"].data) == 2


def test_html_export_is_one_self_contained_file():
    report = rp.build_report(synthetic("pretraining_helps", helps_values, failed={"pretrained/frac0.1/s0"}))
    text = rp.report_html(report)
    assert SCRIPT_SRC.search(text) is None, "a <script src=...> needs the network"
    assert "Plotly" in text and len(text) > 1_000_000  # plotly.js itself is inline
    assert report.conclusions["headline"].split(":")[0] in text
    assert "pretrained/frac0.1/s0" in text and "Environment" in text and "label_fraction" in text


# --- plans ------------------------------------------------------------------------------------------------------------


# The 15-minute check reads this project's CPU (2 cores with AVX512-BF16, the machine COSTS was measured on), whatever
# CPU runs the test: `precision: auto` computes in bf16 there. Quick presets over 15 minutes at make run's one slot
# go in OVER_15_MINUTES, each with what it measured: an expected failure of the time check only (the plan's checks
# still run), and a failure once the plan fits again, so the entry goes then.
REFERENCE_CPU_BF16 = True
OVER_15_MINUTES: dict[str, str] = {}


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_every_plan_is_valid_linked_and_quick_fits_15_minutes(name):
    for preset in STUDY_PRESETS:
        for tiny in (False, True):
            runs = build_runs(name, preset, tiny)
            keys = [r.key for r in runs]
            assert len(keys) == len(set(keys))
            by_key = {r.key: r for r in runs}
            for run in runs:
                assert run.labels.get("arm") is not None
                if run.base_from and run.base_from.checkpoint:
                    parent = by_key[run.base_from.key].config
                    assert isinstance(parent, PretrainConfig)
                    assert int(run.base_from.checkpoint[5:]) in parent.checkpoint_steps
                if tiny and isinstance(run.config, FinetuneConfig):
                    assert run.config.max_steps <= 5 and run.config.max_length == 32 and run.config.base != "minilm-l6"
                if tiny and isinstance(run.config, PretrainConfig):
                    assert run.config.max_steps <= 5 and run.config.model != "minilm-l6"
            if tiny:
                assert {r.labels.get("seed", 0) for r in runs} == {0}
    quick = estimate_seconds(build_runs(name, "quick"), slots=1, native_bf16=REFERENCE_CPU_BF16)  # make run's slots
    assert estimate_seconds(build_runs(name, "full"), native_bf16=REFERENCE_CPU_BF16) > quick > 60
    if name in OVER_15_MINUTES:
        assert quick > 15 * 60, f"{name} quick fits 15 minutes again ({quick / 60:.1f} min): drop its entry"
        pytest.xfail(OVER_15_MINUTES[name])
    assert quick <= 15 * 60, f"{name} quick: {quick / 60:.1f} min"


def test_the_estimate_speeds_up_bf16_only_where_the_cpu_computes_it():
    def seconds(precision: str, native_bf16: bool) -> float:
        run = PlannedRun("r", ft_config("quick", FINETUNE_BUDGET["quick"], precision=precision), {"arm": "a"})
        return run_seconds([run], native_bf16=native_bf16)["r"]

    assert seconds("auto", True) == seconds("bf16", True) < seconds("auto", False)
    assert seconds("auto", False) == seconds("float32", True) == seconds("bf16", False)  # emulated: no faster


def study_cli(argv: list[str]) -> int:
    from ptft_core.cli import user_errors
    from ptft_core.cli.studies import add_study_commands

    parser = argparse.ArgumentParser()
    add_study_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except user_errors() as exc:
        print(f"error: {exc}")
        return 2


def test_cli_lists_templates_with_estimates(capsys):
    assert study_cli(["study", "--list", "--cpu-slots", "1"]) == 0
    out = capsys.readouterr().out
    for name in TEMPLATES:
        assert f"{name}: " in out
    assert out.count("--preset quick: ") == len(TEMPLATES) and "min on this CPU" in out
    assert study_cli(["study", "no_such_study"]) == 2
    assert "is not a template" in capsys.readouterr().out


def test_the_dependents_of_a_cancelled_parent_fail_with_the_reason_and_are_reported(home, monkeypatch):
    """No process runs: the engine launches nothing; the pretraining run is cancelled while queued."""
    from ptft_core.engine import Engine

    monkeypatch.setenv("PTFT_GPUS", "none")
    with Engine(home=home, cpu_slots=1, launch_queued=False) as engine:
        driver = StudyDriver(engine)
        study = driver.launch("how_much_pretraining", "quick", tiny=True)
        runs = engine.store.list_runs(study=study)
        assert len(runs) == 4  # the whole plan at once; the engine holds the fine-tunes
        pt = runs[runs["kind"] == "pretrain"]["id"].iloc[0]
        waits = {q["id"]: q["waits_for"] for q in engine.queue()}
        assert waits.pop(pt) is None and all(w.endswith(f"of {pt}") for w in waits.values()), waits
        progress = study_progress(engine.store, study)
        assert progress.counts == {"queued": 4} and not progress.finished
        engine.cancel(pt)
        engine.step()
        assert driver.tick() == []
        progress = study_progress(engine.store, study)
        assert progress.counts == {"cancelled": 1, "failed": 3} and progress.finished
        assert all(f"run {pt} cancelled without checkpoint" in f["error"] for f in progress.failed
                   if f["status"] == "failed"), progress.failed
        report = study_report(engine.store, study)
        assert report.status == "incomplete" and report.status_line.startswith("incomplete: 0 of 4 runs finished")
        assert sorted(report.failed["status"]) == ["cancelled", "failed", "failed", "failed"]
        assert report.conclusions["findings"] == []


def test_a_checkpoint_on_disk_releases_its_dependents(home, monkeypatch):
    from ptft_core.engine import Engine

    monkeypatch.setenv("PTFT_GPUS", "none")
    with Engine(home=home, cpu_slots=1, launch_queued=False) as engine:
        driver = StudyDriver(engine)
        study = driver.launch("how_much_pretraining", "quick", tiny=True)
        runs = engine.store.list_runs(study=study)
        pt = runs[runs["kind"] == "pretrain"]["id"].iloc[0]
        folder = engine.run_dir(pt) / "checkpoints" / "step-1"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        waiting = [q for q in engine.queue() if q["waits_for"]]
        # Step 0 (re-initialised) and step 1 start from step-1, now on disk; only the final one still waits.
        assert [q["waits_for"] for q in waiting] == [f"checkpoint final of {pt}"]
        for run_id in runs["id"]:
            row = engine.store.get_run(run_id)
            if run_id != pt:
                assert row["parent_run"] == pt and row["config"]["base"].startswith(f"run:{pt}")
        assert driver.tick() == []  # no double submit


# --- nothing of this imports torch ----------------------------------------------------------------------------------


def test_the_room_and_its_page_never_import_torch(home):
    script = textwrap.dedent(f"""
        import sys
        import ptft_core.studies.templates, ptft_core.studies.driver, ptft_core.studies.report
        import ptft_core.cli.studies
        ptft_core.studies.templates.load_studies()  # every study module, plans and reports
        assert "torch" not in sys.modules, "the studies modules imported torch"
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file({str(REPO / "app.py")!r}, default_timeout=120).run()
        at.switch_page("pages/studies.py")
        at = at.run()
        assert not at.exception, at.exception
        assert at.title and not at.error, [e.value for e in at.error]  # rendered from the service, not stopped
        labels = [b.label for b in at.button]
        assert sys.argv[1] != "1" or "Launch" not in labels, labels
        assert sys.argv[1] == "1" or labels.count("Launch") == int(sys.argv[2]), labels
        print("TORCH" if "torch" in sys.modules else "NO-TORCH")
    """)
    start_service(home)  # the read-only page is a viewer of a running service; the editor's finds the same one
    for read_only in ("1", "0"):
        env = {**os.environ, "PTFT_HOME": str(home), "PTFT_GPUS": "none", "PTFT_READ_ONLY": read_only}
        out = subprocess.run([sys.executable, "-c", script, read_only, str(len(TEMPLATES))], capture_output=True,
                             text=True, cwd=REPO,
                             timeout=240, env=env)
        assert out.returncode == 0, out.stdout + out.stderr[-3000:]
        assert "NO-TORCH" in out.stdout, out.stdout + out.stderr[-2000:]
    stop_lab(home)


# --- the eight studies, end to end (CI form) --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_studies(tmp_path_factory):
    """All eight studies in their CI form through one real engine (2 CPU slots), finished; the engine is closed."""
    from ptft_core.engine import Engine

    home = tmp_path_factory.mktemp("studies") / "home"
    for sub in ("datasets", "models"):
        (home / sub).mkdir(parents=True)
        for entry in (PREPARED / sub).glob("*"):
            (home / sub / entry.name).symlink_to(entry.resolve())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PTFT_HOME", str(home))
        mp.setenv("PTFT_GPUS", "none")
        mp.delenv("PTFT_TRAINER", raising=False)
        engine = Engine(home=home, cpu_slots=2, poll_interval=0.5)
        driver = StudyDriver(engine, interval=1.0)
        try:
            ids = {name: driver.launch(name, "quick", tiny=True) for name in TEMPLATES}
            engine.start()
            start = time.monotonic()
            progress = driver.wait(list(ids.values()), timeout=900, interval=1.0)
            elapsed = time.monotonic() - start
            reports = {name: study_report(engine.store, sid) for name, sid in ids.items()}
            states = {name: run_states(Plan.from_dict(engine.store.get_study(sid)["config"]),
                                       engine.store.list_runs(study=sid)) for name, sid in ids.items()}
        finally:
            engine.close(cancel_running=True)
        yield SimpleNamespace(home=home, ids=ids, progress=progress, reports=reports, states=states, elapsed=elapsed)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_each_study_runs_end_to_end_and_its_report_renders(tiny_studies, name):
    progress = tiny_studies.progress[tiny_studies.ids[name]]
    report = tiny_studies.reports[name]
    assert progress.finished and progress.completed == progress.total, progress.line()
    assert report.status == "complete", (report.status_line, report.failed.to_dict("records"))
    c = report.conclusions
    assert c["headline"] and c["findings"] and c["numbers"], c
    assert any("CI form" in x for x in c["caveats"])
    for key, fig in report.figures.items():
        assert len(fig.data) > 0, f"{name}: figure {key} is empty"
    text = rp.report_html(report)
    assert SCRIPT_SRC.search(text) is None and "Plotly" in text
    # Lineage: every run that starts from another names it as parent and loads its checkpoint.
    for state in tiny_studies.states[name].values():
        if state.planned.base_from is not None:
            row = state.row
            assert row["parent_run"] == state.parent_id
            spec = row["config"][CHECKPOINT_FIELD[row["kind"]]]
            assert spec == state.planned.base_from.spec(state.parent_id)


@pytest.mark.slow
def test_study_specific_numbers(tiny_studies):
    n = {name: r.conclusions["numbers"] for name, r in tiny_studies.reports.items()}
    assert set(n["pretraining_helps"]["test_accuracy"]) == {"0.01", "0.1"}
    assert set(n["how_much_pretraining"]["test_accuracy"]) == {"0", "1", "4"}  # step 0, first checkpoint, final
    assert n["how_much_pretraining"]["compute_seconds"]["pretraining"] > 0
    speed = n["pretraining_objective"]["inference_speed"]  # RoFormer and GPT-2: what each costs to predict
    assert len(speed) == 2 and all(arm["mean"] > 0 and arm["n"] == 3 for arm in speed.values())
    flops = n["how_much_pretraining"]["compute_flops"]  # each run's own estimate, split "device"
    assert flops["pretraining"] > 0 and flops["finetuning"] > 0
    assert set(n["further_pretraining"]["vs_none"]["0.1"]) == {"task (movies)", "unrelated (wiki)"}
    assert set(n["finetune_strategy"]["strategy_accuracy"]) == {"full", "linear_probe", "freeze_bottom",
                                                                "gradual_unfreeze", "discriminative"}
    assert len(n["finetune_strategy"]["lr_accuracy"]) == 2
    assert set(n["forgetting"]["movies_accuracy"]) == {"dissimilar (sources)", "sources + replay 30%"}
    assert set(n["forgetting"]["drift"]) == {"cka_similarity", "general_mlm_loss"}
    matrix = n["domain_shift"]["transfer"]["pretrained"]["matrix"]
    assert all(v is not None for row in matrix.values() for v in row.values())  # cross-domain scores came back
    images = n["image_transfer"]
    assert set(images["test_accuracy"]["new classes"]) == {"0.02", "1"}
    assert set(images["source_drop"]["new classes"]) == {"full", "top stage", "linear probe", "full + replay 30%",
                                                          "linear probe, shared rate"}
    assert images["source_drop"]["new classes"]["linear probe"]["drop"]["delta"] == 0  # its backbone never moved
    print(f"eight tiny studies finished in {tiny_studies.elapsed:.0f} s")


@pytest.mark.slow
def test_cli_exports_a_finished_study(tiny_studies, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PTFT_HOME", str(tiny_studies.home))
    out = tmp_path / "report.html"
    assert study_cli(["study", "report", tiny_studies.ids["domain_shift"], "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert SCRIPT_SRC.search(text) is None and "Transfer matrix" in text
    assert study_cli(["study", "status"]) == 0
    listing = capsys.readouterr().out
    assert all(sid in listing for sid in tiny_studies.ids.values())
    assert json.loads(json.dumps(tiny_studies.reports["forgetting"].conclusions["numbers"]))  # plain data
