"""Which settings matter: for each searched field, the share of the trials' objective its value explains, with a
permutation test, so a dozen trials give an answer that says how sure it is.

A field's effect is the R² of the objective on the field alone: a quadratic in its value (in log10 for a log
range; a learning rate's best lies inside the range, so a line would miss it), or the group means of its choices
(one-way ANOVA's eta²). Its p-value is the share of 999 permutations of the field's values (seeded) whose R² is
at least the observed one: no distributional assumption, valid at any n; Holm-adjusted over the fields of one view.
The effect is marginal: where the sampler drew two fields together (TPE narrows on good regions jointly), each
shares the other's effect, so a field whose values correlate with another's (|Spearman rho| >= 0.5) says so.

Why not Optuna's importance estimators: fANOVA and mean-decrease-impurity need scikit-learn, and PED-ANOVA
(quantile-based) ranked the deciding field first in 56-58 % of simulated 10-trial sweeps, where this ranked it
first in 96-100 % (`python -m bench.importance_bench`, docs/benchmarks.md section 9). Pure numpy and pandas: no
Optuna, no torch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

PERMUTATIONS = 999
MIN_TRIALS = 4  # below this a quadratic (3 coefficients) fits any points: no effect is estimated
CORRELATED = 0.5  # |Spearman rho| between two fields' sampled values from which their effects are not told apart
EFFECT_COLUMNS = ["view", "field", "n", "r2", "p", "p_holm", "correlated_with"]


def _quadratic_r2(x: np.ndarray, y: np.ndarray) -> float:
    design = np.vander(x, 3)
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ beta
    return float(1.0 - residual.var() / y.var())


def _group_r2(codes: np.ndarray, y: np.ndarray) -> float:
    means = (np.bincount(codes, weights=y) / np.bincount(codes))[codes]
    return float(1.0 - ((y - means) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def field_effect(values: pd.Series, objective: pd.Series, param: Any, seed: int = 0,
                 permutations: int = PERMUTATIONS) -> tuple[float | None, float | None]:
    """(R², permutation p) of `objective` on one field's `values`; (None, None) when there is nothing to fit: too
    few trials, or the field or the objective constant over them."""
    keep = values.notna() & objective.notna()
    y = objective[keep].to_numpy(dtype=float)
    if len(y) < MIN_TRIALS or np.ptp(y) == 0:
        return None, None
    if param.is_choice:
        x = pd.factorize(values[keep].astype(str))[0]
        fit = _group_r2
        if len(set(x)) < 2:
            return None, None
    else:
        x = values[keep].to_numpy(dtype=float)
        x = np.log10(x) if param.log else x
        x = (x - x.mean()) / (x.std() or 1.0)  # a well-conditioned design
        fit = _quadratic_r2
        if np.ptp(x) == 0:
            return None, None
    observed = fit(x, y)
    rng = np.random.default_rng(seed)
    at_least = sum(fit(rng.permutation(x), y) >= observed - 1e-12 for _ in range(permutations))
    return observed, (at_least + 1) / (permutations + 1)


def holm(p: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values that are not None."""
    present = sorted((v, i) for i, v in enumerate(p) if v is not None)
    out: list[float | None] = [None] * len(p)
    running = 0.0
    for rank, (value, index) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * value))
        out[index] = running
    return out


def effects(points: pd.DataFrame, space: dict[str, Any], view: str, seed: int = 0,
            permutations: int = PERMUTATIONS) -> pd.DataFrame:
    """EFFECT_COLUMNS, one row per searched field, for trials given as `points` (one row per trial: the searched
    fields' values and `value`, the objective)."""
    rows = []
    for name, param in space.items():
        column = points[name] if name in points else pd.Series([None] * len(points), dtype=object)
        r2, p = field_effect(column, points["value"], param, seed, permutations)
        n = int((column.notna() & points["value"].notna()).sum())
        rows.append({"view": view, "field": name, "n": n, "r2": r2, "p": p})
    for row, adjusted in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p_holm"] = adjusted
        row["correlated_with"] = correlated_fields(points, space, row["field"])
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS).astype({"r2": "float64", "p": "float64", "p_holm": "float64"})


def correlated_fields(points: pd.DataFrame, space: dict[str, Any], name: str) -> str:
    """The other numeric searched fields whose values correlate with `name`'s over these trials, with rho."""
    if space[name].is_choice or name not in points:
        return ""
    found = []
    for other, param in space.items():
        if other == name or param.is_choice or other not in points:
            continue
        pair = points[[name, other]].dropna().astype(float)
        if len(pair) >= MIN_TRIALS and pair[name].nunique() > 1 and pair[other].nunique() > 1:
            rho = pair[name].corr(pair[other], method="spearman")
            if abs(rho) >= CORRELATED:
                found.append(f"{other} (rho {rho:+.2f})")
    return ", ".join(found)


def verdict(row: dict[str, Any], alpha: float = 0.05) -> str:
    """One line for a field's effect: its R², its adjusted p and n, and whether it is distinguishable from none."""
    if row.get("r2") is None or (isinstance(row["r2"], float) and math.isnan(row["r2"])):
        return f"{row['field']}: not estimated (n={row['n']}, needs {MIN_TRIALS} trials that differ)"
    sure = "matters" if row["p_holm"] < alpha else "not distinguishable from no effect"
    shared = f"; drawn together with {row['correlated_with']}" if row.get("correlated_with") else ""
    return f"{row['field']}: R² {row['r2']:.2f}, p {row['p_holm']:.3g} (Holm), n={row['n']}: {sure}{shared}"
