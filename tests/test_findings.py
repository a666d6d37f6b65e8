"""The findings tier (``pytest -m slow``, run by CI after the smoke tier): the book's claims at a
reduced but honest size.

Networks are trained as the book trains them (width 128, the original recipe, stopped by the
same rule; the Transformer capped at 500 steps and its best checkpoint used), three seeds
each; searches use fewer steps and pairs than the README's table (300 steps, 4000 training
pairs, 500 test pairs). What is asserted is the claim, not a number:

1. GRU and LSTM hold an Up-Down count: high IIA on changed test pairs, far above every
   control that can score there, on average over seeds.
2. A Transformer's state at one position does not: its count IIA stays at control level.
3. Boundless DAS learns a size on a trained GRU that does not depend much on where it starts.
"""
import pytest

from symlib.das import DASConfig, run_das_batch
from symlib.findings import findings_table, summarise_findings
from symlib.tasks import make_task
from symlib.training import load_or_train

SEEDS = (0, 1, 2)
SEARCH = dict(max_steps=300, n_train=4000, n_val=500, n_test=500, n_test_heldout=0, eval_every=50)
TRAIN = {"gru": {"patience": 4}, "lstm": {"patience": 4}, "transformer": {"max_steps": 500, "patience": 4}}
CONTROLS = ("no_swap", "initial", "wrong_labels")


@pytest.fixture(scope="module")
def table():
    import pandas as pd
    frames = [findings_table([arch], SEEDS, search=SEARCH, train=TRAIN[arch], controls=CONTROLS, store=False, progress=False)
              for arch in ("gru", "lstm", "transformer")]
    return pd.concat(frames, ignore_index=True)


def _mean(df, arch, measure, col="iia_changed_test"):
    return float(df[(df.arch == arch) & (df.measure == measure)][col].mean())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_recurrent_networks_hold_an_up_down_count(table, arch):
    """GRU/LSTM: mean changed-pair IIA >= 0.8 over three seeds, every seed >= 0.6, and >= 0.5 above the best control."""
    rows = table[(table.arch == arch) & (table.measure == "das")]
    assert len(rows) == len(SEEDS) and (rows.trial_acc_train >= 0.99).all(), rows
    das = _mean(table, arch, "das")
    best_control = max(_mean(table, arch, c) for c in ("initial", "wrong_labels"))
    assert das >= 0.8 and (rows.iia_changed_test >= 0.6).all(), rows
    assert das - best_control >= 0.5, (das, best_control)
    # raw IIA is high too, and far above the network left alone
    assert _mean(table, arch, "das", "iia_test") - _mean(table, arch, "no_swap", "iia_test") >= 0.5


@pytest.mark.slow
def test_transformer_count_stays_at_control_level(table):
    """Transformer: it solves the task, yet its Up-Down count IIA on changed pairs is within 0.15 of its best control."""
    rows = table[(table.arch == "transformer") & (table.measure == "das")]
    assert (rows.trial_acc_train >= 0.9).all(), rows
    das = _mean(table, "transformer", "das")
    best_control = max(_mean(table, "transformer", c) for c in ("initial", "wrong_labels"))
    assert das <= best_control + 0.15, (das, best_control)
    assert das < 0.3


@pytest.mark.slow
def test_summary_has_intervals(table):
    """summarise_findings gives a mean and a 95% interval over the three seeds for every architecture and measure."""
    s = summarise_findings(table)
    assert set(s.arch) == {"gru", "lstm", "transformer"} and (s.n == len(SEEDS)).all()
    assert ((s.iia_changed_test_lo <= s.iia_changed_test) & (s.iia_changed_test <= s.iia_changed_test_hi)).all()


@pytest.mark.slow
def test_boundless_size_does_not_depend_on_its_start(table):
    """Boundless on the seed-0 GRU, started at 4 and at 48 dims, for two search seeds: every search
    stops because the size converged, with changed-pair IIA >= 0.7; the sizes found from the two
    starts differ by <= 3 dims on average over the seeds and by <= 5 for each.
    (Measured 2026-11-23 on the development machine: 6.9/8.7 and 7.2/7.5 dims; with b held
    only 100 steps the gap was 3.3 here and 5.1 on CI.)"""
    run = load_or_train("multiobject", "gru", 0, progress=False, **TRAIN["gru"])  # trained by the table fixture
    runs = [(seed, start) for seed in (0, 1) for start in (4.0, 48.0)]
    # the four searches in one batched pass (equal to separate searches up to float error)
    results = run_das_batch(run.model, make_task("multiobject"),
                            [DASConfig(alignment="boundless", boundless_init=start, max_steps=1500, n_train=4000, n_val=500,
                                       n_test=500, seed=seed) for seed, start in runs], progress=False, token_iia=False)
    found = {}
    for (seed, start), res in zip(runs, results):
        m = res.metrics
        assert m["stopped_because"].startswith("boundary converged"), (seed, start, m["stopped_because"])
        assert m["iia_changed_test"] >= 0.7, (seed, start, m)
        found[seed, start] = m["boundary"]
    gaps = [abs(found[seed, 4.0] - found[seed, 48.0]) for seed in (0, 1)]
    assert max(gaps) <= 5, found
    assert sum(gaps) / len(gaps) <= 3, gaps
