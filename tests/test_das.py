"""Distributed Alignment Search: no-op and full swaps, a hand-built counter, splits, controls, batching, the store, your-own-model wrapper, saving, tables."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

import symlib
from symlib.intervene.das import DASConfig, DASResult
from symlib.intervene.iia import after_swap, evaluate_alignment, scored_logits, site_states
from symlib.game.programs import intervention_positions

from helpers import MULTI, HandCounter, gen, small_model, wrap


@pytest.fixture(scope="module")
def gru():
    return small_model("gru", d_model=16, seed=7)


@pytest.fixture(scope="module")
def pairs():
    return symlib.make_pairs(MULTI, "up_down", "count", n=64, seed=2)


def splits_of(pairs):
    """The same pairs as train, val and test (for tests that only check mechanics)."""
    return {"train": pairs, "val": pairs, "test": pairs}


def _own_predictions_ok(model, tokens, graded):
    """Per pair: does the unintervened network predict every graded token (teacher-forced)?"""
    with torch.no_grad():
        pred = model(tokens).argmax(-1)
    return ((pred[:, :-1] == tokens[:, 1:]) | ~graded[:, 1:]).all(1)


# ---- 1. a zero-size swap is a no-op -----------------------------------------------------

@pytest.mark.parametrize("kind,blocks", [("orthogonal", [0]), ("orthogonal", [4]), ("linear", [4]), ("revnet", [4]), ("boundless", None)])
def test_zero_swap_is_a_no_op(gru, pairs, kind, blocks):
    """With n_units = 0 or swap all zeros, the intervened logits (scored_logits / run_with_state) equal the plain forward."""
    H_t = site_states(gru, pairs.tokens, pairs.pos, "state")
    H_s = site_states(gru, pairs.src_tokens, pairs.src_pos, "state")
    align = symlib.make_alignment(kind, 16, blocks, seed=0)
    swap = torch.zeros(len(pairs), 1, dtype=torch.bool)
    with torch.no_grad():
        logits, tgt, graded, rows = scored_logits(gru, align, pairs.tokens, pairs.task_mask, pairs.pos, H_t, H_s, swap, "state")
        sel = after_swap(pairs.tokens, pairs.pos)
        ref = gru(pairs.tokens)[sel]
    assert torch.allclose(logits, ref, atol=1e-5)
    nxt = torch.nn.functional.pad(pairs.tokens[:, 1:], (0, 1))
    assert torch.equal(tgt, nxt[sel])
    assert torch.equal(rows, sel.nonzero()[:, 0])


def test_zero_units_iia_is_the_networks_own_behaviour(gru, pairs):
    """run_das with n_units=0 trains nothing, and its IIA is the fraction of pairs the network gets right unintervened."""
    res = symlib.run_das(gru, MULTI, n_units=0, pairs=splits_of(pairs), progress=False, max_steps=5, eval_every=5)
    assert res.metrics["steps"] == 0 and res.history == []
    ok = _own_predictions_ok(gru, pairs.tokens, pairs.task_mask)
    assert res.metrics["iia_test"] == pytest.approx(float(ok.float().mean()))
    # on the changed pairs the network left alone can only be wrong (unless it is wrong on its own trials too)
    assert res.metrics["iia_changed_test"] == pytest.approx(float(ok[pairs.changed].float().mean()))
    assert np.array_equal(res.rows["correct"], ok.numpy())


def test_trial_iia_matches_a_direct_count(gru, pairs):
    """evaluate_alignment's trial IIA equals counting, per pair, whether run_with_state's argmax hits every graded
    token; its teacher-forced token IIA equals the fraction of graded tokens it hits."""
    align = symlib.make_alignment("orthogonal", 16, [6], seed=3).eval()
    H_t = site_states(gru, pairs.tokens, pairs.pos, "state")
    H_s = site_states(gru, pairs.src_tokens, pairs.src_pos, "state")
    ev = evaluate_alignment(gru, align, pairs, "state", free_running=False)
    with torch.no_grad():
        h = align.interchange(H_t, H_s, pairs.swap)
        pred = gru.run_with_state(pairs.tokens, "state", pairs.pos, h).argmax(-1)
    ok = ((pred[:, :-1] == pairs.tokens[:, 1:]) | ~pairs.task_mask[:, 1:]).all(1)
    assert torch.equal(ev["correct"], ok)
    assert ev["iia"] == pytest.approx(float(ok.float().mean()))
    assert ev["iia_changed"] == pytest.approx(float(ok[pairs.changed].float().mean()))
    assert ev["n_changed"] == int(pairs.changed.sum()) and 0 < ev["n_changed"] < len(pairs)
    m = pairs.task_mask[:, 1:]
    hits = int(((pred[:, :-1] == pairs.tokens[:, 1:]) & m).sum())
    assert ev["iia_token"] == pytest.approx(hits / int(m.sum()), abs=1e-12)
    assert 0 < hits < int(m.sum())  # neither all right nor all wrong: the count is not trivially met


# ---- 2. swapping every dimension reproduces the source -----------------------------------

def test_full_swap_reproduces_the_source(gru):
    """RNN, orthogonal block = d, swap all: continuing the source's own tokens from the swapped state gives the source's logits."""
    g = gen(40)
    tgt, src = MULTI.sample(32, "all", g), MULTI.sample(32, "all", g)
    i, j = intervention_positions(tgt, g), intervention_positions(src, g)
    rows = []
    for b in range(32):
        rows.append(torch.cat([tgt.tokens[b, : i[b] + 1], src.tokens[b, j[b] + 1: src.lengths[b]]]))
    L = max(len(r) for r in rows)
    combined = torch.stack([torch.nn.functional.pad(r, (0, L - len(r))) for r in rows])
    align = symlib.make_alignment("orthogonal", 16, [16], seed=4)
    ones = torch.ones(32, 1, dtype=torch.bool)
    with torch.no_grad():
        h_t, h_s = gru.state_at(tgt.tokens, "state", i), gru.state_at(src.tokens, "state", j)
        out = gru.run_with_state(combined, "state", i, align.interchange(h_t, h_s, ones))
        ref = gru(src.tokens)
        logits, *_ = scored_logits(gru, align, combined, torch.zeros_like(combined, dtype=torch.bool), i, h_t, h_s, ones, "state")
    sel = after_swap(combined, i)
    k = 0
    for b in range(32):
        n = int(src.lengths[b] - j[b])
        assert torch.allclose(out[b, i[b]: i[b] + n], ref[b, j[b]: j[b] + n], atol=1e-4)
        m = int(sel[b].sum())
        assert m == n - 1  # every position from i whose next token is not padding
        assert torch.allclose(logits[k: k + m], ref[b, j[b]: j[b] + m], atol=1e-4)
        k += m


# ---- 3./4. a hand-built counter, and one without a count ----------------------------------

HAND_DAS = dict(variable="count", n_units=1, n_train=1500, n_val=300, n_test=300, max_steps=400, eval_every=50, progress=False, lr=1e-2)


@pytest.mark.parametrize("uniform_demo,loss_on", [(False, "task_mask"), (True, "all")])
def test_hand_built_counter_is_found(uniform_demo, loss_on):
    """A network whose state holds the count along one axis: it solves the task, and DAS with n_units=1 finds that axis (IIA >= 0.95)."""
    model = wrap(HandCounter(uniform_demo=uniform_demo), "rnn")
    for counts in ("train", "heldout"):
        assert symlib.evaluate(model, MULTI.sample(300, counts, gen(50))).get("trial_acc") == 1.0
    res = symlib.run_das(model, MULTI, loss_on=loss_on, **HAND_DAS)
    assert res.metrics["iia_test"] >= 0.95, res.history
    assert res.metrics["iia_changed_test"] >= 0.95
    q = res.alignment.Q.detach()[:, 0]
    assert abs(float(q[0])) > 0.95, f"the aligned direction should be the count unit, got {q}"


def test_network_without_count_stays_at_control():
    """The same network with no count unit (W_ih[0] = 0) gets IIA near the random-rotation control, far below 1."""
    model = wrap(HandCounter(with_count=False), "rnn")
    kw = {**HAND_DAS, "max_steps": 150, "loss_on": "task_mask"}
    res = symlib.run_das(model, MULTI, **kw)
    control = symlib.run_das(model, MULTI, train_alignment=False, **kw)
    assert control.metrics["steps"] == 0
    assert res.metrics["iia_changed_test"] < 0.3
    assert abs(res.metrics["iia_changed_test"] - control.metrics["iia_changed_test"]) < 0.15



@pytest.mark.parametrize("start", [8.0, 16.0])
def test_boundless_learns_the_planted_size(start):
    """Boundless on a 32-dim state whose count lives in one axis: from a start of 8 or 16 dims it
    shrinks to 1-2 dims, stops because the size converged (not on IIA), and the swap still works."""
    model = wrap(HandCounter(uniform_demo=True, d=32), "rnn")
    kw = {**HAND_DAS, "alignment": "boundless", "boundless_init": start, "max_steps": 1500, "loss_on": "all"}
    res = symlib.run_das(model, MULTI, **kw)
    m = res.metrics
    assert m["learned_n_units"] in (1, 2), res.history
    assert abs(m["boundary"] - m["learned_n_units"]) <= 0.5 and m["boundary"] < start / 2
    assert m["stopped_because"].startswith("boundary converged"), m["stopped_because"]
    assert m["steps"] < kw["max_steps"]
    assert m["iia_changed_test"] >= 0.95

# ---- 5. your own model -----------------------------------------------------------------

class TimeMajorRNN(nn.Module):
    """A user's model: Embedding -> nn.GRU / nn.LSTM with the time axis first -> a read-out."""

    def __init__(self, ref: symlib.SequenceModel):
        super().__init__()
        self.emb = copy.deepcopy(ref.embed)
        H = ref.hidden
        self.rnn = (nn.LSTM if ref.is_lstm else nn.GRU)(H, H)  # batch_first=False
        self.rnn.load_state_dict(ref.rnn.state_dict())
        self.readout = nn.Sequential(copy.deepcopy(ref.readout[0]), nn.GELU(), copy.deepcopy(ref.readout[3]))

    def forward(self, tokens):
        y, _ = self.rnn(self.emb(tokens).transpose(0, 1))
        return self.readout(y).transpose(0, 1)


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_wrapped_model_matches_symlib_semantics(arch):
    """A wrapped time-major GRU/LSTM behaves like symlib's own network: same forward, states after each token ([h; c]), run_with_state."""
    ref = small_model(arch, d_model=16, seed=8)
    model = wrap(TimeMajorRNN(ref), "rnn").eval()
    tr = MULTI.sample(10, "all", gen(60))
    g = gen(61)
    pos = (torch.rand(10, generator=g) * tr.lengths.float()).long()
    with torch.no_grad():
        assert torch.allclose(model(tr.tokens), ref(tr.tokens), atol=1e-5)
        assert model.state_size() == ref.state_size("state") == 16
        assert torch.allclose(model.states(tr.tokens), ref.states(tr.tokens, "state"), atol=1e-5)
        h = model.state_at(tr.tokens, None, pos)
        assert torch.allclose(h, ref.state_at(tr.tokens, "state", pos), atol=1e-5)
        assert torch.allclose(model.run_with_state(tr.tokens, None, pos, h), model(tr.tokens), atol=1e-5)
        h2 = h + torch.randn(h.shape, generator=g)
        assert torch.allclose(model.run_with_state(tr.tokens, None, pos, h2), ref.run_with_state(tr.tokens, "state", pos, h2), atol=1e-5)
        select = torch.arange(tr.tokens.shape[1])[None, :] >= pos[:, None]
        assert torch.allclose(model.run_with_state(tr.tokens, None, pos, h2, select=select),
                              ref.run_with_state(tr.tokens, "state", pos, h2, select=select), atol=1e-5)


def test_run_das_on_a_wrapped_model():
    """run_das runs on a wrapped user model and leaves the model's mode and grads as they were; its test
    numbers are those of its alignment on symlib's own GRU with the same weights (another code path for
    the states, the intervened run and the free run): per pair, and the free-running token IIA."""
    ref = small_model("gru", d_model=16, seed=9)
    model = wrap(TimeMajorRNN(ref), "rnn").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = DASConfig(n_units=2, n_train=128, n_val=64, n_test=64, max_steps=6, eval_every=3, batch_size=32)
    res = symlib.run_das(model, MULTI, cfg, progress=False)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the network stays frozen"
    assert res.metrics["steps"] >= 3 and len(res.history) >= 1
    test = symlib.intervene.das.make_search_pairs(MULTI, cfg)["test"]
    align = res.alignment.eval()
    with torch.no_grad():
        h = align.interchange(site_states(ref, test.tokens, test.pos, "state"),
                              site_states(ref, test.src_tokens, test.src_pos, "state"), test.swap)
        pred = ref.run_with_state(test.tokens, "state", test.pos, h).argmax(-1)
    ok = ((pred[:, :-1] == test.tokens[:, 1:]) | ~test.task_mask[:, 1:]).all(1)
    assert np.array_equal(res.rows["correct"], ok.numpy())
    assert res.metrics["iia_test"] == pytest.approx(float(ok.float().mean()), abs=1e-12)
    own = evaluate_alignment(ref, align, test, "state")  # free running, on the reference network
    assert res.metrics["iia_token_test"] == pytest.approx(own["iia_token"], abs=1e-12)
    assert 0 < res.metrics["iia_token_test"] < 1  # a token rate that is not trivially met


def test_wrap_model_rejects_bad_sites():
    """A site that is not a submodule raises a ValueError listing the submodules; a non-recurrent site needs time_dim."""
    net = TimeMajorRNN(small_model("gru", d_model=16, seed=10))
    with pytest.raises(ValueError) as e:
        symlib.wrap_model(net, "lstm")
    for name in ("emb", "rnn", "readout"):
        assert name in str(e.value)
    with pytest.raises(ValueError, match="time_dim"):
        symlib.wrap_model(net, "readout.0")
    with pytest.raises(ValueError, match="time axis"):
        symlib.wrap_model(net, "rnn", time_dim=1)  # batch_first=False: the time axis is 0


def test_wrapped_non_recurrent_site():
    """A non-recurrent site with time_dim: its output is the state; run_with_state with the natural state reproduces forward; a change at pos only affects pos."""
    net = TimeMajorRNN(small_model("gru", d_model=16, seed=11))
    model = wrap(net, "readout.0", time_dim=0).eval()
    tr = MULTI.sample(6, "all", gen(62))
    pos = torch.tensor([1, 2, 3, 1, 0, 4])
    with torch.no_grad():
        S = model.states(tr.tokens)
        assert S.shape == (6, tr.tokens.shape[1], 64)
        h = model.state_at(tr.tokens, None, pos)
        assert torch.allclose(h, S[torch.arange(6), pos])
        ref = model(tr.tokens)
        assert torch.allclose(model.run_with_state(tr.tokens, None, pos, h), ref, atol=1e-6)
        out = model.run_with_state(tr.tokens, None, pos, h + 1.0)
    at = torch.arange(tr.tokens.shape[1])[None, :] == pos[:, None]
    assert not torch.allclose(out[at], ref[at], atol=1e-3) and torch.allclose(out[~at], ref[~at], atol=1e-6)


def test_wrap_model_works_as_returned():
    """wrap_model's result works without help: check_site, state_size and states run on the object as returned."""
    model = symlib.wrap_model(TimeMajorRNN(small_model("gru", d_model=16, seed=12)), "rnn")
    assert model.check_site(None) == "rnn"
    assert model.state_size() == 16
    with pytest.raises(ValueError, match="rnn"):
        model.check_site("nope")


def test_run_das_boundless_reports_its_size(gru):
    """run_das with a boundless alignment reports the size it swaps: n_units = round(boundary). The boundary
    is held for the first hold_steps (300) steps, so after 4 it is still its start (5 dims), and the
    alignment in eval mode swaps exactly the first 5 rotated coordinates."""
    assert symlib.intervene.alignment.BoundlessAlignment.hold_steps > 4
    res = symlib.run_das(gru, MULTI, alignment="boundless", boundless_init=5.0, n_train=64, n_val=32, max_steps=4,
                         eval_every=2, batch_size=32, progress=False)
    n = res.metrics["n_units"]
    assert res.metrics["boundary"] == pytest.approx(5.0) and isinstance(n, int) and n == 5
    assert res.metrics["learned_n_units"] == n == res.alignment.n_units
    assert all(isinstance(r["n_units"], int) for r in res.history)
    align = res.alignment.eval()
    h_t, h_s = torch.randn(20, 16, generator=gen(73)), torch.randn(20, 16, generator=gen(74))
    with torch.no_grad():
        out = align.aligned(align.interchange(h_t, h_s, torch.ones(20, 1, dtype=torch.bool)))
        a_t, a_s = align.aligned(h_t), align.aligned(h_s)
    assert torch.allclose(out[:, :n], a_s[:, :n], atol=1e-5) and torch.allclose(out[:, n:], a_t[:, n:], atol=1e-5)


# ---- 6. controls ------------------------------------------------------------------

SMALL = dict(n_units=2, n_train=96, n_val=48, n_test=64, max_steps=4, eval_every=2, batch_size=32)


def test_controls_on_the_same_test_pairs():
    """run_das_with_controls on the hand-built counter (it solves the task; its count is unit 0): no swap is
    the network's own behaviour on the main search's test pairs, right on every unchanged pair and on no
    changed one; the search finds the count and every control that can score on changed pairs stays far
    below it; the learnable controls are searches of their own."""
    model = wrap(HandCounter(uniform_demo=True), "rnn")
    cfg = DASConfig(variable="count", n_units=1, n_train=1000, n_val=200, n_test=200, max_steps=200, eval_every=50,
                    lr=1e-2, target_iia=2.0, patience=0, plateau_steps=0)
    res = symlib.run_das_with_controls(model, MULTI, cfg, progress=False)
    ctl = res.metrics["controls"]
    assert set(ctl) == set(symlib.CONTROL_NAMES)
    test = symlib.intervene.das.make_search_pairs(MULTI, cfg)["test"]
    ok = _own_predictions_ok(model, test.tokens, test.task_mask)
    assert torch.equal(ok, ~test.changed.bool())  # a network that solves the task does what the target would
    assert ctl["no_swap"]["iia_test"] == pytest.approx(float(ok.float().mean()), abs=1e-6)
    assert ctl["no_swap"]["iia_test"] == pytest.approx(1 - res.metrics["n_changed_test"] / 200, abs=1e-6)
    assert ctl["no_swap"]["iia_changed_test"] == 0.0
    assert res.metrics["iia_changed_test"] >= 0.95
    for name in symlib.intervene.controls.CHANGED_CONTROLS:
        assert ctl[name]["iia_changed_test"] < 0.5, (name, ctl[name])
    assert ctl["wrong_labels"]["config"]["relabel"] and ctl["wrong_program"]["config"]["program"] == "up_up"
    assert res.metrics["control_max_changed_test"] == max(ctl[c]["iia_changed_test"] for c in ("initial", "wrong_labels", "wrong_program"))


def test_wrong_label_control_stops_on_its_own_labels(gru):
    """The wrong-label search is validated (stopped, best-chosen) on relabelled pairs, not on the real labels."""
    cfg = DASConfig(**{**SMALL, "relabel": True})
    splits = symlib.intervene.das.make_search_pairs(MULTI, cfg)
    real = symlib.intervene.das.make_search_pairs(MULTI, DASConfig(**SMALL))
    assert torch.equal(splits["val"].pos, real["val"].pos)  # the same pairs ...
    assert not torch.equal(splits["val"].changed, real["val"].changed)  # ... with other labels
    res = symlib.run_das(gru, MULTI, cfg, progress=False)
    ev = evaluate_alignment(gru, res.alignment, splits["val"], free_running=False)
    assert res.metrics["iia_val"] == pytest.approx(ev["iia"])


def test_boundless_initial_control_uses_the_learned_size(gru):
    """For boundless, the initial-alignment control swaps as many dims as the search learned."""
    from symlib.intervene.controls import fixed_controls
    cfg = DASConfig(**{**SMALL, "alignment": "boundless", "boundless_init": 3})
    res = symlib.run_das(gru, MULTI, cfg, progress=False)
    seen = {}
    orig = symlib.intervene.iia.evaluate_alignment

    def spy(model, align, *a, **k):
        seen["n_units"] = align.n_units
        return orig(model, align, *a, **k)

    import symlib.intervene.controls as C
    C.evaluate_alignment = spy
    try:
        fixed_controls(gru, MULTI, res)
    finally:
        C.evaluate_alignment = orig
    assert seen["n_units"] == res.metrics["n_units"]


# ---- 6b. splits, best alignment, batching, the store --------------------------------------

def test_test_split_is_its_own(gru):
    """Reported numbers come from test pairs with their own seed, not the validation pairs."""
    splits = symlib.intervene.das.make_search_pairs(MULTI, DASConfig(**SMALL, n_test_heldout=40))
    assert not torch.equal(splits["val"].tokens[:, :5], splits["test"].tokens[:48, :5])
    assert set(splits["test_heldout"].target_count.tolist()) <= set(symlib.HELDOUT_COUNTS)
    res = symlib.run_das(gru, MULTI, DASConfig(**SMALL, n_test_heldout=40), progress=False)
    ev = evaluate_alignment(gru, res.alignment, splits["test"], free_running=False)
    assert res.metrics["iia_test"] == pytest.approx(ev["iia"])
    assert res.metrics["n_test"] == 64 and res.metrics["n_test_heldout"] == 40
    assert res.rows["correct"].shape == (64,)


def test_returns_the_best_alignment_not_the_last(gru):
    """The alignment returned is the one with the best validation IIA over the search."""
    res = symlib.run_das(gru, MULTI, DASConfig(**{**SMALL, "max_steps": 12, "eval_every": 2, "lr": 0.3, "patience": 0}), progress=False)
    best = max(res.history, key=lambda r: (r["val_iia"], -r["val_loss"]))
    assert res.metrics["best_step"] == best["step"]
    assert res.metrics["iia_val"] == pytest.approx(best["val_iia"])


def test_batched_search_equals_separate_searches(gru):
    """Three alignments searched in one batched pass end where three separate searches do (float error)."""
    cfgs = [DASConfig(**{**SMALL, "n_units": k, "max_steps": 6, "patience": 0, "target_iia": 2.0}) for k in (1, 2, 4)]
    cfgs.append(DASConfig(**{**SMALL, "variable": "phase", "n_units": 2, "max_steps": 4}))
    together = symlib.run_das_batch(gru, MULTI, cfgs, progress=False)
    for cfg, r in zip(cfgs, together):
        alone = symlib.run_das(gru, MULTI, cfg, progress=False)
        assert torch.allclose(r.alignment.Q, alone.alignment.Q, atol=1e-4), cfg
        assert r.metrics["steps"] == alone.metrics["steps"]
        assert r.metrics["iia_test"] == pytest.approx(alone.metrics["iia_test"], abs=2 / 64)


def test_store_reuses_and_resumes(gru, tmp_path):
    """A search found in the store is loaded, not rerun; a grid with one cached member only runs the other."""
    store = symlib.ResultsStore(tmp_path / "store")
    a, b = DASConfig(**SMALL), DASConfig(**{**SMALL, "n_units": 3})
    first = symlib.run_das(gru, MULTI, a, progress=False, store=store)
    again = symlib.run_das(gru, MULTI, a, progress=False, store=store)
    assert again.metrics.get("cached") and not first.metrics.get("cached")
    assert again.metrics["iia_test"] == first.metrics["iia_test"]
    assert torch.equal(again.alignment.Q, first.alignment.Q)
    both = symlib.run_das_batch(gru, MULTI, [a, b], progress=False, store=store)
    assert both[0].metrics.get("cached") and not both[1].metrics.get("cached")
    # another network (other weights) does not hit the first one's entries
    other = small_model("gru", d_model=16, seed=99)
    assert not symlib.run_das(other, MULTI, a, progress=False, store=store).metrics.get("cached")
    # nothing half-written is left behind
    assert not [p for p in (tmp_path / "store").rglob(".*") if p.is_dir()]


class DropoutGRU(nn.Module):
    """A user's model with dropout before its GRU: in train mode its states are noisy."""

    def __init__(self):
        super().__init__()
        self.emb, self.drop, self.rnn, self.out = nn.Embedding(9, 16), nn.Dropout(0.5), nn.GRU(16, 16, batch_first=True), nn.Linear(16, 9)

    def forward(self, tokens):
        return self.out(self.rnn(self.drop(self.emb(tokens)))[0])


def test_states_are_measured_frozen(pairs):
    """A user's model left in train mode gives the same (dropout-free) states, IIA and rollout every time."""
    torch.manual_seed(0)
    model = wrap(DropoutGRU(), "rnn").train()
    h1 = site_states(model, pairs.tokens, pairs.pos, None)
    h2 = site_states(model, pairs.tokens, pairs.pos, None)
    assert torch.equal(h1, h2) and model.training
    align = symlib.make_alignment("orthogonal", 16, [2], seed=0)
    e1 = evaluate_alignment(model, align, pairs, free_running=False)
    e2 = evaluate_alignment(model, align, pairs, free_running=False)
    assert torch.equal(e1["correct"], e2["correct"]) and e1["loss"] == e2["loss"]
    assert torch.equal(symlib.network_rollout(model, align, pairs, extra=2), symlib.network_rollout(model, align, pairs, extra=2))


def test_network_and_task_must_match():
    """A network trained on one task cannot be searched with another task's pairs."""
    model = small_model("gru", d_model=16)
    model.task_name = "multiobject"
    with pytest.raises(ValueError, match="multiobject"):
        symlib.run_das(model, symlib.make_task("multiobject_mod4"), **SMALL, progress=False)
    with pytest.raises(ValueError, match="token ids"):
        symlib.run_das(small_model("gru", d_model=16), symlib.make_task("singleobject"), **SMALL, progress=False)


def test_subspace_sweep_same_budget(gru):
    """subspace_sweep: one result per size that fits, each run for exactly max_steps."""
    out = symlib.subspace_sweep(gru, MULTI, DASConfig(**{**SMALL, "max_steps": 4}), [1, 2, 32], progress=False)
    assert list(out) == [1, 2]
    assert all(r.metrics["steps"] == 4 and r.config.n_units == k for k, r in out.items())
    # given pairs: every size is searched on them (as run_das on the same pairs would)
    pairs = symlib.make_pairs(MULTI, "up_down", "count", n=64, seed=9)
    given = symlib.subspace_sweep(gru, MULTI, DASConfig(**{**SMALL, "max_steps": 4}), [1, 2], progress=False, pairs=splits_of(pairs))
    one = symlib.run_das(gru, MULTI, DASConfig(**{**SMALL, "max_steps": 4, "n_units": 2}), pairs=splits_of(pairs), progress=False)
    assert given[2].metrics["n_test"] == one.metrics["n_test"] == 64
    assert given[2].metrics["iia_test"] == pytest.approx(one.metrics["iia_test"], abs=1e-6)


# ---- 7. saving ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", symlib.ALIGNMENT_NAMES)
def test_save_and_load_alignment(tmp_path, kind):
    """save_alignment / load_alignment round trip: the same interchange output, config and metrics."""
    align = symlib.make_alignment(kind, 16, None if kind == "boundless" else [3], seed=5)
    with torch.no_grad():
        for name, p in align.named_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen(70)))
    align.eval()
    cfg = DASConfig(alignment=kind, n_units=3)
    path = tmp_path / f"{kind}.pt"
    symlib.save_alignment(path, DASResult(align, cfg, {"iia_test": 0.5, "steps": 3}))
    loaded, cfg2, metrics = symlib.load_alignment(path)
    assert cfg2 == cfg and metrics == {"iia_test": 0.5, "steps": 3}
    assert not loaded.training
    h_t, h_s = torch.randn(20, 16, generator=gen(71)), torch.randn(20, 16, generator=gen(72))
    swap = torch.ones(20, 1, dtype=torch.bool)
    assert torch.equal(loaded.interchange(h_t, h_s, swap), align.interchange(h_t, h_s, swap))
    assert torch.load(path, weights_only=True)["format"] == symlib.intervene.das.ALIGNMENT_FORMAT


# ---- 8. tables ---------------------------------------------------------------------

def test_iia_table_is_consistent_with_the_rows(gru):
    """iia_table: each cell is the IIA of its pairs; the count-weighted mean of the cells is the overall IIA."""
    res = symlib.run_das(gru, MULTI, n_units=4, n_train=64, n_val=64, n_test=300, max_steps=2, eval_every=2, batch_size=32, progress=False)
    rows = dict(res.rows)
    rng = np.random.default_rng(0)
    for correct in (rows["correct"], rng.random(len(rows["correct"])) < 0.6):
        rows["correct"] = correct
        va, vb, M = symlib.iia_table(rows, by="source_value", against="target_count")
        a, b = rows["source_value"], rows["target_count"]
        N = np.array([[np.sum((a == x) & (b == y)) for y in vb] for x in va])
        assert np.array_equal(np.isnan(M), N == 0)
        assert N.sum() == len(a)
        assert np.nansum(M * N) / N.sum() == pytest.approx(correct.mean())
        va, vb, M = symlib.iia_table(rows, max_value=10)
        keep = (a <= 10) & (b <= 10)
        N = np.array([[np.sum((a == x) & (b == y)) for y in vb] for x in va])
        assert va.max() <= 10 and vb.max() <= 10
        assert np.nansum(M * N) / N.sum() == pytest.approx(correct[keep].mean())


def test_network_rollout_without_intervention(gru, pairs):
    """network_rollout with a zero-size alignment is the network's own greedy answer on the counterfactual inputs."""
    align = symlib.make_alignment("orthogonal", 16, [0])
    out = symlib.network_rollout(gru, align, pairs, "state", extra=4)
    ref = symlib.greedy_rollout(gru, pairs.tokens, pairs.task_mask, extra=4)
    assert torch.equal(out, ref)


def test_das_config_checks():
    """DASConfig rejects unknown names and an n_units x blocks wider than the state."""
    with pytest.raises(ValueError, match="up_down"):
        DASConfig(program="down_up")
    with pytest.raises(ValueError):
        DASConfig(alignment="boundless", variable="count_phase")
    with pytest.raises(ValueError, match="17"):
        symlib.run_das(small_model("gru", d_model=16), MULTI, n_units=17, n_train=8, n_val=8, n_test=8, progress=False)
