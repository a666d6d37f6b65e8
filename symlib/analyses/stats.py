"""Intervals over seeds: a finding in the book holds over network seeds, so it is reported
as the mean over seeds with a 95% bootstrap interval.

- ``mean_ci``: mean and percentile-bootstrap interval of one set of values (one per seed).
- ``summarise``: the same for every group and value column of a tidy table.
- ``format_ci``: ``"0.961 [0.940, 0.982]"`` for text and tables.

With the handful of seeds the book trains (often 3), any interval is rough: it says how
much the seeds disagree, not where a population of networks would lie.
"""
from __future__ import annotations

import inspect
import math
from typing import Sequence

import numpy as np
import pandas as pd


def _bootstrap():
    """scipy's bootstrap and the name of its random-generator argument (scipy 1.15 renamed
    ``random_state`` to ``rng``; pyproject allows scipy >= 1.10). Imported on first use:
    scipy.stats costs about a second, a third of ``import symlib``."""
    from scipy import stats
    kw = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return stats.bootstrap, kw


def mean_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0) -> dict:
    """Return the mean of ``values`` (n,) and a percentile-bootstrap interval for it.

    Returns ``{"mean", "lo", "hi", "n"}``: floats, and n the number of values used.
    NaNs are dropped first (a seed whose run failed), and n counts the rest.

    The interval is the percentile bootstrap of the mean (``scipy.stats.bootstrap``,
    ``method="percentile"``), deterministic for a given ``seed``. BCa is not used: with 3
    seeds its bias and acceleration estimates rest on 3 jackknife values and are unstable
    (scipy often returns NaN or warns). With so few seeds the percentile interval is
    narrower than the truth; read it as the spread of the seeds, not as a guarantee.

    Edge cases: one value gives ``lo = hi = NaN`` (an interval needs 2+ seeds); values
    that are all equal give ``lo = hi = mean`` (every resample has the same mean, a case
    on which scipy warns and returns NaN). Raises ValueError when no value is given, or
    none is left once NaNs are dropped.
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value (one per seed); got none")
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        raise ValueError("mean_ci: every value is NaN, so there is nothing to average")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "lo": math.nan, "hi": math.nan, "n": n}
    if np.all(x == x[0]):
        # every resample has this mean; scipy would warn and return NaN
        return {"mean": mean, "lo": mean, "hi": mean, "n": n}
    bootstrap, rng_kw = _bootstrap()
    res = bootstrap(
        (x,), np.mean, n_resamples=int(n_resamples), vectorized=True, axis=-1,
        confidence_level=confidence, method="percentile", **{rng_kw: np.random.default_rng(seed)},
    )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    # a resampled mean can differ from the sample mean in its last bit: keep lo <= mean <= hi
    return {"mean": mean, "lo": min(lo, mean), "hi": max(hi, mean), "n": n}


def summarise(df: pd.DataFrame, by: list[str], values: list[str], confidence: float = 0.95) -> pd.DataFrame:
    """Return one row per group of ``by`` with each value column's mean and bootstrap interval.

    df: a tidy table, one row per seed (and condition). For each column ``v`` in ``values``
    the result has ``v`` (mean over the group), ``v_lo`` and ``v_hi`` (the ``mean_ci``
    interval at ``confidence``), and one column ``n``: the number of rows in the group
    (e.g. seeds). NaNs of a value column are dropped for its interval, so it may rest on
    fewer than ``n`` rows; a group where a column is all NaN gets NaN for it.
    """
    by, values = list(by), list(values)
    missing = [c for c in by + values if c not in df.columns]
    if missing:
        raise KeyError(f"summarise: no column(s) {missing} in the table; its columns: {list(df.columns)}")
    rows = []
    # dropna=False: a NaN group key (e.g. a missing condition) is still a group worth reporting
    groups = df.groupby(by, sort=True, dropna=False) if by else [((), df)]
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        for v in values:
            col = pd.to_numeric(group[v], errors="raise").to_numpy(dtype=float)
            if np.isnan(col).all():
                row[v], row[f"{v}_lo"], row[f"{v}_hi"] = math.nan, math.nan, math.nan
                continue
            ci = mean_ci(col, confidence=confidence)
            row[v], row[f"{v}_lo"], row[f"{v}_hi"] = ci["mean"], ci["lo"], ci["hi"]
        row["n"] = int(len(group))
        rows.append(row)
    columns = by + [c for v in values for c in (v, f"{v}_lo", f"{v}_hi")] + ["n"]
    return pd.DataFrame(rows, columns=columns)


def format_ci(mean: float, lo: float, hi: float, digits: int = 3, n: int | None = None) -> str:
    """Return ``"0.961 [0.940, 0.982]"``, or ``"0.961 (1 seed)"`` when the interval is NaN.

    ``n`` (optional) is the number of seeds, so ``format_ci(**mean_ci(x))`` works; it is only
    shown when there is no interval.
    """
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    m = f"{mean:.{digits}f}"
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        k = 1 if n is None else int(n)
        return f"{m} ({k} seed{'' if k == 1 else 's'})"
    return f"{m} [{lo:.{digits}f}, {hi:.{digits}f}]"
