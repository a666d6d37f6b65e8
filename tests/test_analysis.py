"""Number line: natural states of a network, and a held-out read-out checked against random subspaces."""
import numpy as np
import pytest
import torch

import symlib
from symlib.analyses.analysis import natural_states, number_line, split_trials

from helpers import MULTI, gen, small_model

D = 16


def _planted(n_trials=60, d=D, seed=0, axis_noise=0.05, other_noise=5.0):
    """Synthetic states: the count lies along one unit axis (d,), other directions are loud noise.

    Returns (states dict like natural_states', axis).
    """
    rng = np.random.default_rng(seed)
    axis = rng.standard_normal(d)
    axis /= np.linalg.norm(axis)
    value, trial, phase = [], [], []
    for t in range(n_trials):
        n = int(rng.integers(1, 21))
        v = np.r_[np.arange(1, n + 1), np.arange(n - 1, -1, -1)]
        value.append(v)
        trial.append(np.full(len(v), t))
        phase.append(np.r_[np.zeros(n), np.ones(n)])
    value, trial, phase = (np.concatenate(a).astype(np.int64) for a in (value, trial, phase))
    noise = other_noise * rng.standard_normal((len(value), d))
    noise -= np.outer(noise @ axis, axis)  # the loud noise stays off the count axis
    H = np.outer(value, axis) + noise + axis_noise * np.outer(rng.standard_normal(len(value)), axis)
    return {"H": H.astype(np.float32), "value": value, "phase": phase, "trial": trial}, axis


def _aligned_to(axis: np.ndarray) -> symlib.AlignmentFunction:
    """An orthogonal alignment with one 1-dim block whose column is ``axis``."""
    a = symlib.make_alignment("orthogonal", len(axis), [1], seed=0)
    with torch.no_grad():
        a.lin.weight = torch.tensor(axis, dtype=torch.float32)[:, None]
    assert torch.allclose(a.Q[:, 0], torch.tensor(axis, dtype=torch.float32), atol=1e-5)
    return a


def test_planted_axis_is_found_and_random_subspaces_are_not():
    states, axis = _planted()
    out = number_line(_aligned_to(axis), states, n_random=20, seed=0)
    assert out["n_units"] == 1
    assert out["r_own_coordinate"] > 0.99
    assert out["r_test"] > 0.99 and out["r2_test"] > 0.98
    assert out["r_test_random_p95"] < 0.8 and out["r_test_random_mean"] < 0.6
    assert out["r_test_random_p05"] <= out["r_test_random_mean"] <= out["r_test_random_p95"]
    assert out["r_test_random"].shape == (20,)
    n_test = len(out["value_test"])
    assert out["coord_test"].shape == out["phase_test"].shape == (n_test,)
    assert np.corrcoef(out["coord_test"], out["value_test"])[0, 1] == pytest.approx(out["r_test"])
    # the raw coordinate keeps its sign; the fitted read-out does not care
    flipped = number_line(_aligned_to(-axis), states, n_random=0)
    assert flipped["r_own_coordinate"] < -0.99 and flipped["r_test"] > 0.99
    assert np.isnan(flipped["r_test_random_mean"])


def test_split_is_by_trial():
    states, axis = _planted(n_trials=41)
    out = number_line(_aligned_to(axis), states, n_random=2, test_fraction=0.5, seed=3)
    fit_ids, test_ids = set(out["trials_fit"].tolist()), set(out["trials_test"].tolist())
    assert not fit_ids & test_ids
    assert fit_ids | test_ids == set(range(41))
    assert abs(len(test_ids) - 20.5) <= 1
    # every test state comes from a test trial, all of its states
    assert len(out["value_test"]) == int(np.isin(states["trial"], list(test_ids)).sum())
    fit, test = split_trials(states["trial"], 0.25, seed=0)
    assert not (fit & test).any() and (fit | test).all()
    assert not set(states["trial"][fit]) & set(states["trial"][test])
    assert len(set(states["trial"][test])) == 10
    # deterministic for a seed, different for another
    assert (split_trials(states["trial"], 0.5, 1)[1] == split_trials(states["trial"], 0.5, 1)[1]).all()
    assert (split_trials(states["trial"], 0.5, 1)[1] != split_trials(states["trial"], 0.5, 2)[1]).any()
    with pytest.raises(ValueError, match="test_fraction"):
        split_trials(states["trial"], 1.0)
    with pytest.raises(ValueError, match="2 trials"):
        split_trials(np.zeros(5), 0.5)


def test_fitted_in_sample_beats_held_out():
    """A wide block on a weak, noisy count overfits the fit trials: r_fit >= r_test."""
    states, _ = _planted(n_trials=12, d=32, axis_noise=8.0, other_noise=3.0, seed=4)
    a = symlib.make_alignment("orthogonal", 32, [16], seed=1)
    out = number_line(a, states, n_random=3, seed=0)
    assert out["n_units"] == 16 and out["r_own_coordinate"] is None
    assert out["r_fit"] >= out["r_test"]
    assert out["r2_test"] <= out["r_test"] ** 2 + 1e-9  # out of sample, R^2 is at most r^2


def test_blocks_and_boundless():
    states, _ = _planted(n_trials=10)
    two = symlib.make_alignment("orthogonal", D, [2, 3], seed=0)
    assert number_line(two, states, block=1, n_random=1)["n_units"] == 3
    with pytest.raises(ValueError, match="block 2"):
        number_line(two, states, block=2, n_random=0)
    boundless = symlib.make_alignment("boundless", D, [4], seed=0, init_units=3.0).train()
    assert number_line(boundless, states, n_random=1)["n_units"] == 3


def test_random_subspaces_use_no_global_rng():
    states, axis = _planted(n_trials=10)
    align = _aligned_to(axis)  # make_alignment seeds torch's global RNG itself
    torch.manual_seed(0)
    np.random.seed(0)
    before = (torch.rand(1), np.random.rand())
    torch.manual_seed(0)
    np.random.seed(0)
    a = number_line(align, states, n_random=4, seed=5)
    after = (torch.rand(1), np.random.rand())
    assert before[0].item() == after[0].item() and before[1] == after[1]
    b = number_line(align, states, n_random=4, seed=5)
    assert np.array_equal(a["r_test_random"], b["r_test_random"])


@pytest.mark.parametrize("training", [False, True])
def test_natural_states_of_a_tiny_gru(training):
    model = small_model("gru").train(training)
    st = natural_states(model, MULTI, "up_down", n_trials=24, seed=0, counts=[1, 2, 3, 5, 8])
    assert model.training is training
    n_states = len(st["value"])
    assert st["H"].shape == (n_states, D) and st["H"].dtype == np.float32
    for key in ("value", "phase", "trial", "pos", "n"):
        assert st[key].shape == (n_states,)
    # Multi-Object, Up-Down: N demos and N responses per trial, nothing else
    trials = MULTI.sample(24, [1, 2, 3, 5, 8], gen(0), unk_p=0.0)
    assert n_states == int(2 * trials.counts.sum())
    assert set(np.unique(st["trial"])) == set(range(24))
    demo, resp = st["phase"] == 0, st["phase"] == 1
    assert demo.any() and resp.any() and (demo | resp).all()
    assert (st["value"][demo] >= 1).all() and (st["value"][demo] <= st["n"][demo]).all()
    assert (st["value"][resp] >= 0).all() and (st["value"][resp] <= st["n"][resp] - 1).all()
    assert (st["value"][demo] == st["pos"][demo]).all()  # the count after demo token i is i
    for t in range(24):  # each trial counts 1..N up, then N-1..0 down
        v, n = st["value"][st["trial"] == t], int(trials.counts[t])
        assert v.tolist() == list(range(1, n + 1)) + list(range(n - 1, -1, -1))
    # the states are the network's own (eval mode: no dropout)
    with torch.no_grad():
        S = model.eval().states(trials.tokens)
    row = st["trial"] == 3
    assert np.allclose(st["H"][row], S[3, st["pos"][row]].numpy(), atol=1e-6)
    # a Program object works as a name does, and the same seed gives the same states
    again = natural_states(model, MULTI, symlib.make_program("up_down", MULTI), n_trials=24, seed=0, counts=[1, 2, 3, 5, 8])
    assert all(np.array_equal(st[k], again[k]) for k in st)


def test_number_line_on_natural_states():
    """On a tiny GRU's Up-Up states (the value stays at N through the responses) number_line's read-out
    numbers equal a least-squares read-out recomputed here from the alignment's block and the trial split."""
    model = small_model("gru")
    st = natural_states(model, MULTI, "up_up", n_trials=16, seed=1, counts=[2, 3, 6])
    # Up-Up's number variable is the demo count: it stays at N through the responses
    resp = st["phase"] == 1
    assert (st["value"][resp] == st["n"][resp]).all()
    align = symlib.make_alignment("orthogonal", D, [4], seed=0)
    out = number_line(align, st, n_random=3)
    assert out["n_units"] == 4
    # the read-out recomputed: least squares with an intercept on the block's 4 coordinates (H Q), fitted on the
    # fit trials, scored on the test trials
    fit, test = split_trials(st["trial"], 0.5, 0)
    Z = st["H"].astype(np.float64) @ align.Q.detach().double().numpy()
    X = np.c_[Z, np.ones(len(Z))]
    w, *_ = np.linalg.lstsq(X[fit], st["value"][fit].astype(np.float64), rcond=None)
    pred, v = X @ w, st["value"].astype(np.float64)
    assert out["r_test"] == pytest.approx(np.corrcoef(pred[test], v[test])[0, 1], abs=1e-5)
    assert out["r_fit"] == pytest.approx(np.corrcoef(pred[fit], v[fit])[0, 1], abs=1e-5)
    r2 = 1 - ((v[test] - pred[test]) ** 2).sum() / ((v[test] - v[test].mean()) ** 2).sum()
    assert out["r2_test"] == pytest.approx(r2, abs=1e-5)
    assert np.allclose(out["coord_test"], pred[test], atol=1e-4) and np.array_equal(out["value_test"], v[test])
    assert out["r_test_random"].shape == (3,) and out["r_test_random_mean"] == pytest.approx(out["r_test_random"].mean())
