"""symlib.analyses.dynamics: IIA over checkpoints (warm and cold starts, the cache), correlation, lag, breakdowns."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from symlib.analyses import dynamics
from symlib.intervene.das import DASConfig, run_das, run_das_batch
from symlib.intervene.store import ResultsStore
from symlib.networks.training import checkpoint_steps, load_run, train

from helpers import MULTI, small_model

TINY_RUN = dict(arch="gru", d_model=16, eval_every=25, n_eval_trials=32, progress=False, device="cpu")
TINY_SEARCH = dict(n_units=2, n_train=256, n_val=64, n_test=64, max_steps=12, eval_every=4, batch_size=32, patience=0)


@pytest.fixture(scope="module")
def run50(tmp_path_factory):
    """A tiny GRU run of 50 steps: checkpoints at 0, 25 and 50, each with an evaluation record."""
    run_dir = tmp_path_factory.mktemp("runs") / "g50"
    train(max_steps=50, run_dir=run_dir, **TINY_RUN)
    return run_dir


# ---- warm starts in the search itself ----------------------------------------------------------

def test_warm_start_begins_at_the_given_alignment():
    """Untrained, a search started from an alignment measures exactly that alignment; the store
    keeps warm and fresh starts apart."""
    model = small_model("gru")
    cfg = DASConfig(**TINY_SEARCH)
    trained = run_das(model, MULTI, cfg, progress=False)
    start = run_das(model, MULTI, cfg, progress=False, train_alignment=False, init=trained.alignment)
    fresh = run_das(model, MULTI, cfg, progress=False, train_alignment=False)
    assert start.metrics["iia_test"] == trained.metrics["iia_test"]
    assert all(torch.equal(a, b) for a, b in zip(start.alignment.state_dict().values(), trained.alignment.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(fresh.alignment.state_dict().values(), trained.alignment.state_dict().values()))
    store = ResultsStore(None)
    assert store.key(model, MULTI, cfg) != store.key(model, MULTI, cfg, init=trained.alignment.state_dict())
    assert store.key(model, MULTI, cfg, init=trained.alignment.state_dict()) == store.key(
        model, MULTI, cfg, init={k: v.clone() for k, v in trained.alignment.state_dict().items()})


def test_warm_start_that_does_not_fit_is_refused():
    model = small_model("gru")
    other = run_das(model, MULTI, DASConfig(**{**TINY_SEARCH, "n_units": 3}), progress=False, train_alignment=False)
    with pytest.raises(ValueError, match="does not fit this search"):
        run_das(model, MULTI, DASConfig(**TINY_SEARCH), progress=False, init=other.alignment)
    with pytest.raises(ValueError, match="init holds 2 entries for 1 configs"):
        run_das_batch(model, MULTI, [DASConfig(**TINY_SEARCH)], progress=False, init=[None, None])


# ---- IIA over training ---------------------------------------------------------------------------

def test_iia_over_training_rows_cache_and_cold(run50, tmp_path):
    store = ResultsStore(tmp_path / "store")
    d = dynamics.iia_over_training(run50, TINY_SEARCH, warm=True, warm_steps=4, controls=("initial", "wrong_labels"),
                                   store=store, device="cpu", progress=False)
    t = d.table
    assert list(t.step) == [0, 25, 50] == checkpoint_steps(run50)
    assert list(t.start) == ["cold", "warm", "warm"] and list(t.search_steps) == [12, 4, 4]
    hist = {r["step"]: r for r in load_run(run50).history}
    for _, row in t.iterrows():  # the accuracy is what training measured at that step
        assert row.trial_acc_train == hist[row.step]["trial_acc_train"]
        assert row.trial_acc_heldout == hist[row.step]["trial_acc_heldout"]
        assert 0 <= row.iia_changed_test <= 1 and 0 <= row.initial_iia_changed_test <= 1
        assert row.control_max_changed_test == max(row.initial_iia_changed_test, row.wrong_labels_iia_changed_test)
    assert set(d.results) == {0, 25, 50} and len(d.results[25].rows["correct"]) == TINY_SEARCH["n_test"]
    # a rerun finds every search in the store and gives the same numbers
    again = dynamics.iia_over_training(run50, TINY_SEARCH, warm=True, warm_steps=4, controls=("initial", "wrong_labels"),
                                       store=store, device="cpu", progress=False)
    assert again.table.cached.all() and not t.cached.any()
    cols = ["iia_test", "iia_changed_test", "wrong_labels_iia_changed_test", "initial_iia_changed_test"]
    pd.testing.assert_frame_equal(again.table[cols], t[cols])
    # a subset that skips a checkpoint warm-starts from another alignment: not the same search
    skip = dynamics.iia_over_training(run50, TINY_SEARCH, steps=[0, 50], warm_steps=4, controls=(), store=store,
                                      device="cpu", progress=False)
    assert list(skip.table.cached) == [True, False]
    # cold: every checkpoint starts fresh with the full budget
    cold = dynamics.iia_over_training(run50, TINY_SEARCH, warm=False, controls=(), store=None, device="cpu", progress=False)
    assert list(cold.table.start) == ["cold"] * 3 and list(cold.table.search_steps) == [12] * 3
    assert cold.table.iia_test.iloc[0] == pytest.approx(t.iia_test.iloc[0], abs=0.02)  # the same first search (batched alone)


def test_warm_and_fresh_searches_stop_on_the_convergence_rule_and_say_so(run50):
    """With warm_steps None a warm search runs to the same rule as a fresh one (here a plateau rule
    that fires at its first chance, far below the cap); a warm cap below it stops unconverged."""
    rule = {**TINY_SEARCH, "max_steps": 400, "plateau_steps": 8, "plateau_tol": 0.999}
    d = dynamics.iia_over_training(run50, rule, warm=True, warm_steps=None, controls=(), store=None,
                                   device="cpu", progress=False).table
    assert d.converged.all() and (d.search_steps < 400).all() and list(d.start) == ["cold", "warm", "warm"]
    assert d.stopped_because.str.startswith("converged").all()
    capped = dynamics.iia_over_training(run50, rule, warm=True, warm_steps=4, controls=(), store=None,
                                        device="cpu", progress=False).table
    assert list(capped.converged) == [True, False, False] and list(capped.search_steps[1:]) == [4, 4]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"warm_steps={bad!r} is not allowed"):
            dynamics.iia_over_training(run50, rule, warm_steps=bad, controls=(), store=None, device="cpu", progress=False)


def test_warm_initial_control_is_the_alignment_the_search_started_from(run50, monkeypatch):
    """The initial control of a warm-started search is the alignment it started from (the previous
    checkpoint's), measured on this checkpoint's test pairs; a cold search's is a fresh one."""
    from symlib.intervene.das import make_search_pairs
    from symlib.intervene.iia import evaluate_alignment
    from symlib.networks.training import load_checkpoint
    seen = []
    orig = dynamics.fixed_controls

    def spy(model, task, result, states=None, start=None):
        seen.append(start)
        return orig(model, task, result, states, start=start)

    monkeypatch.setattr(dynamics, "fixed_controls", spy)
    d = dynamics.iia_over_training(run50, TINY_SEARCH, warm=True, warm_steps=4, controls=("initial",), store=None,
                                   device="cpu", progress=False)
    steps = list(d.table.step)
    assert len(seen) == 3 and seen[0] is None
    test = make_search_pairs(MULTI, DASConfig(**{**dynamics.DYNAMICS_SEARCH, **TINY_SEARCH}))["test"]
    for i in (1, 2):
        start = d.results[steps[i - 1]].alignment
        assert seen[i] is start
        model, _, _ = load_checkpoint(run50 / "ckpt" / f"step_{steps[i]:06d}.pt", "cpu")
        ev = evaluate_alignment(model, start, test, free_running=False)
        row = d.table.iloc[i]
        assert row.initial_iia_test == ev["iia"] and row.initial_iia_changed_test == ev["iia_changed"]


def test_iia_over_training_bad_input(run50):
    with pytest.raises(ValueError, match=r"no checkpoint at step\(s\) \[30\].*saved steps: \[0, 25, 50\]"):
        dynamics.iia_over_training(run50, TINY_SEARCH, steps=[0, 30], progress=False)
    with pytest.raises(ValueError, match="valid choices: initial, no_swap, wrong_labels"):
        dynamics.iia_over_training(run50, TINY_SEARCH, controls=("untrained",), progress=False)
    with pytest.raises(FileNotFoundError):
        dynamics.iia_over_training(run50.parent / "nothing", TINY_SEARCH, progress=False)


def test_pick_checkpoints(run50):
    assert dynamics.pick_checkpoints(run50) == [0, 25, 50]
    assert dynamics.pick_checkpoints(run50, n=2) == [0, 50]
    assert dynamics.pick_checkpoints(run50, last=30) == [0, 25]
    with pytest.raises(ValueError, match="n must be >= 2"):
        dynamics.pick_checkpoints(run50, n=1)


def test_dynamics_config_and_run_folders():
    cfg = dynamics.dynamics_config("lstm", seed=2, after_solve=1000)
    assert cfg.patience == 40 and cfg.eval_every == 25 and cfg.arch == "lstm" and cfg.seed == 2
    assert dynamics.dynamics_run_dir(cfg).parts[-2:] == ("dynamics", cfg.run_name() + "-after1000")
    book = dynamics.dynamics_config("gru", seed=1, after_solve=200)  # the book's recipe: its run
    assert dynamics.dynamics_run_dir(book).parent.name == "runs" and dynamics.dynamics_run_dir(book).name == "multiobject-gru-d128-s1"
    tf = dynamics.dynamics_config("transformer", after_solve=200)  # the book's Transformer: capped at 1000 steps
    assert dynamics.dynamics_run_dir(tf).name == "multiobject-transformer-d128-s0"
    capped = dynamics.dynamics_config("gru", seed=1, after_solve=200, max_steps=1000)  # another step cap: another recipe
    assert dynamics.dynamics_run_dir(capped).parent.name == "dynamics"
    with pytest.raises(ValueError, match="after_solve"):
        dynamics.dynamics_config(after_solve=-1)


def test_train_runs_trains_missing_seeds_together_once():
    kw = dict(d_model=16, n_eval_trials=32, max_steps=25, device="cpu", progress=False)
    dirs = dynamics.train_runs("gru", [3, 4], after_solve=50, **kw)
    names = [dynamics.dynamics_config("gru", s, after_solve=50, d_model=16, n_eval_trials=32, max_steps=25).run_name() for s in (3, 4)]
    assert [d.name for d in dirs] == [f"{n}-after50" for n in names] and names[0].startswith("multiobject-gru-d16-s3-")
    assert all(checkpoint_steps(d) == [0, 25] for d in dirs)
    stamp = [(d / "latest.pt").stat().st_mtime_ns for d in dirs]
    assert dynamics.train_runs("gru", [3, 4], after_solve=50, **kw) == dirs  # found, not retrained
    assert [(d / "latest.pt").stat().st_mtime_ns for d in dirs] == stamp


# ---- correlation and lag on planted curves ---------------------------------------------------------

def _curves(shift: float, seeds=(0, 1, 2), noise: float = 0.0) -> pd.DataFrame:
    """Accuracy a logistic curve centred at step 400; IIA the same curve centred at 400 + shift."""
    rng = np.random.default_rng(0)
    steps = np.arange(0, 1001, 25)
    rows = []
    for s in seeds:
        acc = 1 / (1 + np.exp(-(steps - 400 - 10 * s) / 60))
        iia = 1 / (1 + np.exp(-(steps - 400 - 10 * s - shift) / 60)) + noise * rng.standard_normal(len(steps))
        rows += [dict(seed=s, step=int(t), trial_acc_train=a, iia_changed_test=i) for t, a, i in zip(steps, acc, iia)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("shift", [-100, 0, 150])
def test_lag_recovers_a_planted_shift(shift):
    out = dynamics.lag(_curves(shift))
    assert out["mean_lag"] == pytest.approx(shift, abs=3)
    assert out["n"] == 3 and len(out["by_group"]) == 9
    assert out["iia_first"] == (1.0 if shift < 0 else 0.0 if shift > 0 else out["iia_first"])


def test_crossing_step_interpolates_and_flat_curves_are_nan():
    assert dynamics.crossing_step([0, 100, 200], [0.0, 0.4, 1.0], 0.5) == pytest.approx(100 + 100 * 0.1 / 0.6)
    assert dynamics.crossing_step([0, 100], [0.2, 0.9], 0.0) == 0
    assert math.isnan(dynamics.crossing_step([0, 100, 200], [0.5, 0.5, 0.3], 0.5))


def test_correlation_planted_and_unrelated():
    same = dynamics.correlation(_curves(0))
    assert list(same.seed) == [0, 1, 2, "pooled"]
    assert (same.r > 0.999).all() and (same.lo > 0.99).all() and (same.lo <= same.r).all() and (same.r <= same.hi).all()
    rng = np.random.default_rng(1)
    x, y = rng.random(200), rng.random(200)
    c = dynamics.correlation_ci(x, y)
    assert c["lo"] < 0 < c["hi"] and c["n"] == 200
    # a perfect negative relation, NaN pairs dropped, constant input undefined
    assert dynamics.correlation_ci([1, 2, 3, np.nan], [3, 2, 1, 5])["r"] == pytest.approx(-1)
    assert math.isnan(dynamics.correlation_ci([1, 1, 1, 1], [1, 2, 3, 4])["r"])
    with pytest.raises(KeyError, match="no column 'iia'"):
        dynamics.correlation(_curves(0), iia="iia")


def test_iia_by_values_counts_changed_pairs():
    class R:  # a DASResult's per-pair rows
        rows = {"source_value": np.array([1, 1, 2, 2, 2]), "target_value": np.array([3, 3, 3, 4, 4]),
                "changed": np.array([1, 1, 1, 1, 0]), "correct": np.array([1, 0, 1, 1, 1])}
    t = dynamics.iia_by_values(R())
    assert t.to_dict("records") == [{"source_value": 1, "target_value": 3, "iia": 0.5, "n": 2},
                                    {"source_value": 2, "target_value": 3, "iia": 1.0, "n": 1},
                                    {"source_value": 2, "target_value": 4, "iia": 1.0, "n": 1}]
    assert dynamics.iia_by_values(R(), changed_only=False).n.sum() == 5
    assert dynamics.iia_by_values(R(), by="target_value", against=None).to_dict("records") == [
        {"target_value": 3, "iia": 2 / 3, "n": 3}, {"target_value": 4, "iia": 1.0, "n": 1}]


def test_accuracy_over_training(run50):
    t = dynamics.accuracy_over_training(run50, [0, 50], counts=(1, 2), n_per_count=8, device="cpu")
    assert list(t.step) == [0, 0, 50, 50] and list(t["count"]) == [1, 2, 1, 2]
    assert t.trial_acc.between(0, 1).all()
