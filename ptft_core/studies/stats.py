"""Statistics of study reports: per-run values out of the long metric frame, cells (the runs of one arm at one
setting, all seeds) and their mean ± std, differences between cells. Pure pandas and numpy.

- Numbers are means ± sample standard deviations over seeds (n shown). A difference between two cells is
  tested with Welch's t-test (two-sided, unequal variances) and shown with its 95 % confidence interval and n:
  "clear" when p < 0.05, "within noise" otherwise; with one seed on a side it is reported without a verdict.
- Only completed runs count (`attach`, `transfer_matrix`, `mean_curves`); a cell says whether all its planned
  runs did (`complete`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ptft_core.config import EVALUATE_SPLIT

TARGET_SHARE = 0.95  # convergence target: this share of the best arm's mean peak validation accuracy
NEGLIGIBLE = 0.01  # differences under one accuracy point are called negligible whatever the noise


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float
    n: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {"mean": finite_or_none(self.mean), "std": finite_or_none(self.std), "n": self.n}


def finite_or_none(x: float) -> float | None:
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
    """a − b over seeds, Welch's t-test (unequal variances) and the 95 % confidence interval of the difference."""

    delta: float
    se: float
    verdict: str  # "clear", "within noise", "negligible" or "one seed"
    p: float = math.nan  # two-sided Welch t-test
    df: float = math.nan  # Welch–Satterthwaite degrees of freedom
    ci: tuple[float, float] = (math.nan, math.nan)  # 95 % confidence interval of delta
    n: tuple[int, int] = (0, 0)
    test: str = "Welch t-test"

    def text(self) -> str:
        if self.verdict == "one seed":
            return f"{pts(self.delta)} (one seed: no noise estimate)"
        return (f"{pts(self.delta)}, 95 % CI [{self.ci[0] * 100:+.1f}, {self.ci[1] * 100:+.1f}], "
                f"{self.test} p {fmt_p(self.p)}, " + (f"n = {self.n[0]}" if self.test == "paired t-test" else
                                                       f"n = {self.n[0]} vs {self.n[1]}") + f" ({self.verdict})")

    def as_dict(self) -> dict[str, Any]:
        return {"delta": finite_or_none(self.delta), "se": finite_or_none(self.se), "verdict": self.verdict,
                "p": finite_or_none(self.p), "df": finite_or_none(self.df),
                "ci": [finite_or_none(self.ci[0]), finite_or_none(self.ci[1])], "n": list(self.n), "test": self.test}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Difference:
        def num(x: Any) -> float:
            return math.nan if x is None else float(x)
        ci = d.get("ci") or [None, None]
        return cls(num(d["delta"]), num(d.get("se")), d["verdict"], num(d.get("p")), num(d.get("df")),
                   (num(ci[0]), num(ci[1])), tuple(d.get("n") or (0, 0)), d.get("test") or "Welch t-test")


def fmt_p(p: float) -> str:
    """'= 0.020', '< 0.001' or '= n/a': reads after a 'p'."""
    if not math.isfinite(p):
        return "= n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def welch(a: Stat, b: Stat, level: float = 0.95) -> tuple[float, float, float, tuple[float, float]]:
    """(se, df, two-sided p, confidence interval) of a.mean − b.mean from the two cells' mean, std and n.

    Welch's t-test does not assume equal variances (a scratch arm's seeds often spread far more than a
    pretrained arm's). Both stds 0: the difference is exact (p 0 unless the means are equal)."""
    from scipy import stats

    delta = a.mean - b.mean
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    se = math.sqrt(va + vb)
    if se == 0:
        return 0.0, math.inf, (0.0 if delta else 1.0), (delta, delta)
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    p = float(2 * stats.t.sf(abs(delta) / se, df))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return se, df, p, (delta - half, delta + half)


ALPHA = 0.05  # "clear" when Welch's test rejects equal means at this level


def difference(a: Stat, b: Stat, negligible: float = NEGLIGIBLE) -> Difference:
    """a − b with Welch's test: "clear" when p < ALPHA (and "negligible" then if |delta| is under
    `negligible`), "within noise" otherwise; "one seed" when a side has fewer than two values."""
    delta = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return Difference(delta, math.nan, "one seed", n=(a.n, b.n))
    se, df, p, ci = welch(a, b)
    verdict = ("negligible" if abs(delta) < negligible else "clear") if p < ALPHA else "within noise"
    return Difference(delta, se, verdict, p, df, ci, (a.n, b.n))


def paired(drops: Stat, negligible: float = NEGLIGIBLE) -> Difference:
    """A within-run change (e.g. accuracy before − after, one value per seed) against 0: the paired t-test,
    i.e. a one-sample t-test of the per-run differences, with its 95 % interval; verdicts as `difference`."""
    from scipy import stats

    if drops.n < 2:
        return Difference(drops.mean, math.nan, "one seed", n=(drops.n, drops.n))
    se, df = drops.std / math.sqrt(drops.n), drops.n - 1
    if se == 0:
        p, half = (0.0 if drops.mean else 1.0), 0.0
    else:
        p = float(2 * stats.t.sf(abs(drops.mean) / se, df))
        half = float(stats.t.ppf(0.975, df)) * se
    verdict = ("negligible" if abs(drops.mean) < negligible else "clear") if p < ALPHA else "within noise"
    return Difference(drops.mean, se, verdict, p, df, (drops.mean - half, drops.mean + half), (drops.n, drops.n),
                      test="paired t-test")


def seed_matched(runs: pd.DataFrame, column: str, arm: str, base: str, **where: Any) -> Difference:
    """`arm` − `base` in `column`, seed by seed, among the runs matching `where` (column=value): the paired t-test
    over the seeds both have. Arms that share a seed share what came before the comparison (forgetting: the movies
    stage; the image study: the pretraining, the label sample and the data order), so pairing takes that spread
    out of the comparison."""
    for key, value in where.items():
        runs = runs[runs[key] == value]
    a = runs[runs["arm"] == arm].set_index("seed")[column]
    b = runs[runs["arm"] == base].set_index("seed")[column]
    return paired(mean_std((a - b.reindex(a.index)).dropna()))


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
            values = (own if source == target else last_values(metrics, EVALUATE_SPLIT, f"{metric}@{target}"))
            stat = mean_std(values.get(rid, math.nan) for rid in ids)
            mean.loc[source, target], std.loc[source, target], n.loc[source, target] = stat.mean, stat.std, stat.n
    mean.index.name = std.index.name = n.index.name = "trained on"
    return mean, std, n


def mean_curves(metrics: pd.DataFrame, runs: pd.DataFrame, split: str, name: str, by: Sequence[str]) -> pd.DataFrame:
    """Mean and std over seeds at each x of (split, name), per group `by` (completed runs only)."""
    done = runs[runs["status"] == "completed"][["run_id", *by]]
    m = metrics[(metrics["split"] == split) & (metrics["name"] == name)].merge(done, on="run_id")
    if m.empty:
        return pd.DataFrame(columns=[*by, "x", "mean", "std", "n"])
    return (m.groupby([*by, "x"])["value"].agg(mean="mean", std="std", n="count").reset_index())
