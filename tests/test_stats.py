"""Intervals over seeds: known cases, determinism, NaNs and single seeds, the group table, formatting."""
import math

import numpy as np
import pandas as pd
import pytest

from symlib.analyses.stats import format_ci, mean_ci, summarise

import helpers  # noqa: F401  (one torch thread, like the other tests)


def test_constant_values_give_a_point_interval():
    """All-equal values: lo = hi = mean, no NaN (scipy's degenerate case)."""
    out = mean_ci([0.5, 0.5, 0.5])
    assert out == {"mean": 0.5, "lo": 0.5, "hi": 0.5, "n": 3}


def test_interval_covers_true_mean_and_shrinks_with_n():
    """A large normal sample's interval holds the true mean; 16x the sample is about 4x narrower."""
    rng = np.random.default_rng(1)
    small = mean_ci(rng.normal(2.0, 1.0, 100), n_resamples=2000)
    large = mean_ci(rng.normal(2.0, 1.0, 1600), n_resamples=2000)
    for ci in (small, large):
        assert ci["lo"] < 2.0 < ci["hi"]
        assert ci["lo"] <= ci["mean"] <= ci["hi"]
    ratio = (small["hi"] - small["lo"]) / (large["hi"] - large["lo"])
    assert 2.5 < ratio < 6.0
    # roughly the normal-theory width 2 * 1.96 / sqrt(n)
    assert (small["hi"] - small["lo"]) == pytest.approx(2 * 1.96 / 10, rel=0.25)


def test_deterministic_for_a_seed():
    x = [0.91, 0.95, 0.97]
    assert mean_ci(x, seed=3) == mean_ci(x, seed=3)
    a, b = mean_ci(np.random.default_rng(0).normal(size=20), seed=0), mean_ci(np.random.default_rng(0).normal(size=20), seed=1)
    assert a["mean"] == b["mean"] and (a["lo"], a["hi"]) != (b["lo"], b["hi"])


def test_three_seeds_give_their_range():
    """Percentile bootstrap of 3 distinct values: the 95% interval is exactly [min, max]. Of the 27
    equally likely resamples one gives the minimum mean and one the maximum, a mass of 1/27 = 3.7%
    > 2.5% at each end. (A normal-theory interval would be [0.808, 0.992], a t interval wider than [0.8, 1].)"""
    out = mean_ci([0.8, 0.9, 1.0], n_resamples=2000)
    assert (out["lo"], out["mean"], out["hi"]) == pytest.approx((0.8, 0.9, 1.0), abs=1e-12)
    # the 80% interval cuts at 10%: above the minimum's 1/27, below it plus the next mean's 3/27
    out80 = mean_ci([0.8, 0.9, 1.0], confidence=0.8, n_resamples=20_000)
    assert (out80["lo"], out80["hi"]) == pytest.approx((0.8 + 0.1 / 3, 1.0 - 0.1 / 3), abs=1e-12)


def test_nans_are_dropped_and_not_counted():
    """Two values left once NaNs are dropped: the resampled means are 1, 2, 3 with mass 1/4, 1/2, 1/4,
    so the 95% interval is exactly [1, 3]."""
    out = mean_ci([1.0, float("nan"), 3.0, np.nan])
    assert out["n"] == 2 and out["mean"] == pytest.approx(2.0)
    assert (out["lo"], out["hi"]) == pytest.approx((1.0, 3.0), abs=1e-12)


def test_one_value_has_no_interval():
    out = mean_ci([0.7])
    assert out["mean"] == 0.7 and out["n"] == 1
    assert math.isnan(out["lo"]) and math.isnan(out["hi"])
    assert mean_ci([0.7, np.nan])["n"] == 1


def test_empty_raises():
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([np.nan, np.nan])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=95)


def test_summarise_small_frame():
    df = pd.DataFrame({
        "arch": ["gru"] * 3 + ["lstm"] * 3 + ["transformer"],
        "seed": [0, 1, 2, 0, 1, 2, 0],
        "iia": [0.9, 0.95, 1.0, 0.8, 0.8, 0.8, 0.5],
        "acc": [1.0, 0.9, np.nan, 0.7, 0.8, 0.9, 0.6],
    })
    out = summarise(df, by=["arch"], values=["iia", "acc"])
    assert list(out.columns) == ["arch", "iia", "iia_lo", "iia_hi", "acc", "acc_lo", "acc_hi", "n"]
    assert list(out["arch"]) == ["gru", "lstm", "transformer"]
    assert list(out["n"]) == [3, 3, 1]
    gru, lstm, tf = (out.iloc[i] for i in range(3))
    assert gru["iia"] == pytest.approx(0.95) and gru["iia_lo"] < 0.95 < gru["iia_hi"]
    assert gru["acc"] == pytest.approx(0.95)  # the NaN seed is left out of the mean
    assert lstm["iia_lo"] == lstm["iia_hi"] == pytest.approx(0.8)
    assert tf["iia"] == 0.5 and math.isnan(tf["iia_lo"]) and math.isnan(tf["iia_hi"])
    # several grouping columns, and a group whose column is all NaN
    df2 = pd.DataFrame({"a": ["x", "x", "y"], "b": [1, 1, 2], "v": [1.0, 2.0, np.nan]})
    out2 = summarise(df2, by=["a", "b"], values=["v"])
    assert out2[["a", "b", "n"]].values.tolist() == [["x", 1, 2], ["y", 2, 1]]
    assert math.isnan(out2["v"].iloc[1])
    with pytest.raises(KeyError, match="nope"):
        summarise(df, by=["nope"], values=["iia"])


def test_format_ci():
    assert format_ci(0.9612, 0.9401, 0.9823) == "0.961 [0.940, 0.982]"
    assert format_ci(0.9612, float("nan"), float("nan")) == "0.961 (1 seed)"
    assert format_ci(0.5, 0.26, 0.74, digits=1) == "0.5 [0.3, 0.7]"
    assert format_ci(**mean_ci([0.7])) == "0.700 (1 seed)"
    assert format_ci(**mean_ci([0.5, 0.5])) == "0.500 [0.500, 0.500]"


def test_findings_tables_summarise_seeds_and_drop_the_zero_control_on_changed_pairs():
    """summarise_findings -> findings_markdown: one row per architecture, 'mean [lo, hi]' cells; the no-swap
    control appears for raw IIA but not on changed pairs (where it is 0 by construction)."""
    from symlib.analyses.findings import findings_markdown, summarise_findings
    rows = [{"arch": a, "seed": s, "measure": m, "iia_test": v, "iia_changed_test": v if m != "no_swap" else 0.0}
            for a in ("gru", "lstm") for s in range(3)
            for m, v in (("das", 0.9 + 0.01 * s), ("no_swap", 0.1), ("initial", 0.05), ("wrong_labels", 0.2))]
    summary = summarise_findings(pd.DataFrame(rows))
    raw, changed = findings_markdown(summary, "iia_test"), findings_markdown(summary, "iia_changed_test")
    assert "no_swap" in raw.splitlines()[0] and "no_swap" not in changed.splitlines()[0]
    assert changed.splitlines()[0].startswith("| architecture | das | initial | wrong_labels |")
    gru = next(line for line in changed.splitlines() if line.startswith("| gru"))
    assert "0.910 [0.900, 0.920]" in gru and gru.endswith("| 3 |")
