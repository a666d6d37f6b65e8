"""Controls that can score, compared on the same pairs.

- the wrong-label derangement stays inside the trained range (0..20) and has no fixed point;
- an oracle: every relabelled counterfactual is one the network can produce (a natural state
  with the relabelled program state makes a hand-built counter follow it), which the old
  cycle over 0..40 was not;
- a planted network with an off-manifold switch: the book's linear alignment fits the
  permuted labels, so the wrong-label control is no floor by construction;
- ``iia_changed_main``: each control on the main search's changed pairs, equal to a direct
  computation, also when the control's pairs differ from the main search's;
- the initial control of a warm-started search is the alignment it started from.

Budgets are small and explicit (the default stopping rule may change).
"""
from dataclasses import replace

import pytest
import torch
import torch.nn as nn

import symlib
from symlib.intervene import controls
from symlib.game.counterfactuals import WRONG_LABEL_MAX, intervened_state, make_pairs, wrong_labels
from symlib.intervene.das import DASConfig, make_search_pairs, run_das, run_das_batch
from symlib.intervene.iia import evaluate_alignment
from symlib.intervene.store import ResultsStore

from helpers import MULTI, HandCounter, small_model, wrap

#: Explicit stopping: a step budget, never an early stop (the default rule is changing elsewhere).
STOP = dict(target_iia=2.0, patience=0)
SMALL = dict(n_units=2, n_train=256, n_val=64, n_test=200, max_steps=8, eval_every=4, batch_size=32, **STOP)


# ---- 1. the derangement stays in the trained range ---------------------------------------

def test_wrong_labels_is_a_derangement_of_the_trained_range():
    """The default wrong_labels permutes 0..max(TRAIN_COUNTS) = 0..20 among themselves, with no
    fixed point, the same for the same seed; an explicit range still works."""
    assert WRONG_LABEL_MAX == max(symlib.TRAIN_COUNTS) == 20
    for seed in range(6):
        p = wrong_labels(seed=seed)
        assert p.shape == (21,) and p.dtype == torch.long
        assert torch.equal(p.sort().values, torch.arange(21))
        assert not (p == torch.arange(21)).any()
        assert torch.equal(p, wrong_labels(seed=seed))
    assert not torch.equal(wrong_labels(seed=0), wrong_labels(seed=1))
    assert wrong_labels(40, seed=0).shape == (41,)


@pytest.mark.parametrize("program,variable", [("up_down", "count"), ("up_up", "count"), ("up_up", "resp_count"),
                                              ("ctx_distr", "count"), ("up_down", "count_phase")])
def test_relabelled_values_stay_where_the_variable_lives(program, variable):
    """On training-count pairs the swapped variable's values lie in 0..20 (Up-Down's count takes
    every one of them), and the relabelled value written into the counterfactual stays in 0..20
    (the search's own permutation, ``make_search_pairs``): no label asks for a count the network
    never held."""
    cfg = DASConfig(program=program, variable=variable, seed=3, n_train=1, n_val=1, n_test=2000, relabel=True)
    pairs = make_search_pairs(MULTI, cfg)["test"]
    prog = symlib.make_program(program, MULTI)
    var = pairs.value_variable
    assert int(pairs.source_value.min()) >= 0 and int(pairs.source_value.max()) <= WRONG_LABEL_MAX
    if (program, variable) == ("up_down", "count"):
        assert set(pairs.source_value.tolist()) == set(range(WRONG_LABEL_MAX + 1))
    written = intervened_state(prog, variable, pairs, wrong_labels(seed=cfg.seed))
    swapped = pairs.swap[:, 0]
    v = prog.read(written, var)[swapped]
    assert int(v.min()) >= 0 and int(v.max()) <= WRONG_LABEL_MAX
    # and the counterfactual the pairs hold is the one that state rolls out (relabelled, not the true one)
    truth = intervened_state(prog, variable, pairs)
    assert not torch.equal(prog.read(truth, var)[swapped], v)


# ---- 2a. the oracle: every relabelled counterfactual can be produced -----------------------

@pytest.mark.parametrize("variable", ["count", "count_phase", "phase"])
def test_relabelled_counterfactuals_are_producible(variable):
    """A hand-built Up-Down counter given, in place of its state at the swap, a natural state whose
    program state is the relabelled one follows every relabelled counterfactual (IIA 1 on changed
    pairs, every pair matched), as it follows the true ones; with the old cycle over 0..40 half the
    counts have no natural state, and the oracle fails there."""
    model = wrap(HandCounter(uniform_demo=True), "rnn")
    for seed in (0, 1):
        true = controls.natural_state_iia(model, MULTI, "up_down", variable, None, n=400, seed=seed, n_pool=300)
        new = controls.natural_state_iia(model, MULTI, "up_down", variable, wrong_labels(seed=seed), n=400, seed=seed,
                                         n_pool=300)
        assert true["matched"] == 1.0 and true["iia_changed"] == 1.0
        assert new["matched"] == 1.0 and new["iia"] == 1.0 and new["iia_changed"] == 1.0, (seed, new)
        assert new["n_changed"] > 100
    old = controls.natural_state_iia(model, MULTI, "up_down", variable, wrong_labels(40, seed=0), n=400, seed=0, n_pool=300)
    if variable == "phase":  # a lone phase is flipped, whatever the count permutation
        assert old["iia_changed"] == 1.0
    else:
        assert old["matched"] < 0.8 and old["iia_changed"] < 0.8, old


# ---- 2b. a planted network: the book's linear alignment fits the permuted labels ----------

class PermutingCounter(symlib.SequenceModel):
    """A hand-built Up-Down counter whose state is (count, phase, switch).

    It holds counts 0..20 only (a trained network's range). The switch unit is 0 on every
    natural trajectory; when it is on (|switch| > 0.5) the network reads its count through
    ``table`` (the wrong-label derangement) and turns the switch off. Natural trials never
    reach such a state: only an off-manifold intervention can, which an oblique (linear)
    alignment can make and an orthogonal one cannot.
    """

    sites = ("state",)
    default_site = "state"

    def __init__(self, table: torch.Tensor, task=MULTI):
        super().__init__()
        self.register_buffer("table", table.clamp(max=WRONG_LABEL_MAX).float())
        self._anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # gives the model a device
        self.demo = torch.tensor(task.demo_ids)
        self.R, self.T, self.E, self.V = task.R, task.T, task.E, task.vocab_size

    def state_size(self, site=None):
        return 3

    def _effective(self, h):
        c = h[:, 0]
        on = h[:, 2].abs() > 0.5
        looked = self.table[c.round().clamp(0, len(self.table) - 1).long()]
        return torch.where(on, looked, c)

    def _run(self, tokens, pos=None, h=None):
        B, L = tokens.shape
        s = torch.zeros(B, 3, device=tokens.device)
        states = []
        for t in range(L):
            if t > 0:
                x = tokens[:, t]
                c = self._effective(s) + torch.isin(x, self.demo.to(x.device)).float() - (x == self.R).float()
                s = torch.stack([c.clamp(0, WRONG_LABEL_MAX), torch.maximum(s[:, 1], (x == self.T).float()),
                                 torch.zeros_like(c)], 1)
            if pos is not None:
                s = torch.where((pos == t)[:, None], h.float(), s)
            states.append(s)
        S = torch.stack(states, 1)
        c = self._effective(S.reshape(-1, 3)).reshape(B, L)
        word = torch.where(S[..., 1] > 0.5, torch.where(c > 0.5, self.R, self.E), int(self.demo[0]))
        return S, 10.0 * nn.functional.one_hot(word, self.V).float()

    def states(self, tokens, site=None):
        return self._run(tokens)[0]

    def forward(self, tokens):
        return self._run(tokens)[1]

    def _replaced_logits(self, tokens, site, pos, h, prefix=True):
        return self._run(tokens, pos, h)[1]


def _oblique_alignment() -> symlib.AlignmentFunction:
    """The book's linear alignment (1 aligned coordinate of 3) set to W = I - e_switch e_count^T: its
    aligned coordinate is the count, and writing it back moves the switch by the same amount, so an
    interchange sets count = source count and switch = source count - target count."""
    W = torch.eye(3)
    W[2, 0] = -1.0
    U, S, Vh = torch.linalg.svd(W)
    a = symlib.make_alignment("linear", 3, [1], seed=0)
    with torch.no_grad():
        a.U.weight = U
        a.V.weight = Vh.T
        a.p.copy_(torch.atanh(torch.log(S) / a.log_s_max))
    assert torch.allclose(a.W, W, atol=1e-5)
    return a.eval()


def test_planted_network_lets_an_alignment_fit_the_wrong_labels():
    """On the planted network the wrong-label control scores: a linear alignment from the book gets
    the relabelled counterfactual right on every pair whose main counterfactual changed (where the
    swap moves the switch) and on most of its own changed pairs, while the planted network solves the
    task and follows the true labels with no switch. With labels beyond 0..20 it could not."""
    seed = 0
    perm = wrong_labels(seed=seed)
    model = PermutingCounter(perm)
    assert symlib.evaluate(model, MULTI.sample(200, "train", torch.Generator().manual_seed(1)))["trial_acc"] == 1.0
    cfg = DASConfig(variable="count", alignment="linear", n_units=1, seed=seed, n_train=1, n_val=1, n_test=600)
    main = make_search_pairs(MULTI, cfg)["test"]
    relabelled = make_search_pairs(MULTI, replace(cfg, relabel=True))["test"]
    align = _oblique_alignment()
    ev = evaluate_alignment(model, align, relabelled, free_running=False)
    on_main = float(ev["correct"][main.changed].float().mean())
    assert on_main == 1.0 and ev["iia_changed"] > 0.85, (on_main, ev["iia_changed"])
    # the same network and alignment on the true labels: the switch applies the permutation, so they fail
    assert evaluate_alignment(model, align, main, free_running=False)["iia_changed"] < 0.2
    # an orthogonal map along the count (no switch) gives the true labels, not the permuted ones
    orth = symlib.make_alignment("orthogonal", 3, [1], seed=0)
    with torch.no_grad():
        orth.lin.weight = torch.eye(3)[:, :1]
    assert evaluate_alignment(model, orth, main, free_running=False)["iia_changed"] == 1.0
    assert evaluate_alignment(model, orth, relabelled, free_running=False)["iia_changed"] < 0.2
    # with the old cycle over 0..40, a network that holds counts up to 20 cannot give half the labels
    old = PermutingCounter(wrong_labels(40, seed=seed))
    old_pairs = make_pairs(MULTI, "up_down", "count", n=600, seed=symlib.game.counterfactuals.split_seed(seed, "test"),
                           relabel=wrong_labels(40, seed=seed))
    assert evaluate_alignment(old, align, old_pairs, free_running=False)["iia_changed"] < 0.8


# ---- 3. every control on the main search's changed pairs ----------------------------------

def test_iia_changed_main_is_the_control_on_the_main_changed_pairs(tmp_path):
    """Each control's ``iia_changed_main`` is its IIA, against its own labels, on the test pairs whose
    main-search counterfactual changed; ``iia_changed_test`` stays the rate on its own changed pairs.
    The best control on changed pairs is taken over initial, wrong labels and wrong program."""
    model = small_model("gru", d_model=16, seed=3)
    store = ResultsStore(tmp_path / "store")
    cfg = DASConfig(**SMALL, lr=1e-2)
    res = controls.run_das_with_controls(model, MULTI, cfg, progress=False, store=store)
    ctl = res.metrics["controls"]
    main_changed = make_search_pairs(MULTI, cfg)["test"].changed
    # the learnable controls, found again in the store: their alignments, measured directly
    learn = controls.control_configs(cfg, MULTI)
    found = run_das_batch(model, MULTI, list(learn.values()), progress=False, store=store, token_iia=False)
    assert all(r.metrics.get("cached") for r in found)
    for name, r in zip(learn, found):
        own = make_search_pairs(MULTI, r.config)["test"]
        ev = evaluate_alignment(model, r.alignment, own, free_running=False)
        assert ctl[name]["iia_changed_main"] == pytest.approx(float(ev["correct"][main_changed].float().mean()), abs=1e-12)
        assert ctl[name]["iia_changed_test"] == pytest.approx(ev["iia_changed"], abs=1e-12)
    # wrong labels change other pairs than the true ones: the two rates are over different subsets
    wl = make_search_pairs(MULTI, learn["wrong_labels"])["test"]
    assert not torch.equal(wl.changed, main_changed)
    for name in ("no_swap", "initial"):
        assert ctl[name]["iia_changed_main"] == ctl[name]["iia_changed_test"]
    for key in ("test", "main"):
        assert res.metrics[f"control_max_changed_{key}"] == max(ctl[c][f"iia_changed_{key}"]
                                                              for c in ("initial", "wrong_labels", "wrong_program"))
    assert res.metrics["iia_token_test"] is not None
    # an illustration without the free-running token IIA: the same search and controls, found in the store
    lean = controls.run_das_with_controls(model, MULTI, cfg, progress=False, store=store, token_iia=False, full_controls=())
    assert lean.metrics["iia_changed_test"] == res.metrics["iia_changed_test"]
    assert lean.metrics["controls"]["wrong_program"]["iia_changed_test"] == ctl["wrong_program"]["iia_changed_test"]


def test_iia_changed_main_on_other_pairs_measures_on_the_main_trials():
    """A control searched on other pairs (another seed and size) is measured on the main search's test
    trials with its own labels, restricted to the main search's changed pairs."""
    model = small_model("gru", d_model=16, seed=3)
    cfg = DASConfig(**SMALL)
    main = run_das(model, MULTI, cfg, progress=False, train_alignment=False)
    other = run_das(model, MULTI, DASConfig(**{**SMALL, "seed": 5, "n_test": 90, "relabel": True}), progress=False)
    got = controls.iia_changed_main(model, MULTI, main, other)
    # the main search's test trials, relabelled by the control's own permutation
    pairs = make_pairs(MULTI, "up_down", "count", n=cfg.n_test, seed=symlib.game.counterfactuals.split_seed(cfg.seed, "test"),
                       relabel=wrong_labels(seed=5))
    ev = evaluate_alignment(model, other.alignment, pairs, free_running=False)
    changed = make_search_pairs(MULTI, cfg)["test"].changed
    assert got == pytest.approx(float(ev["correct"][changed].float().mean()), abs=1e-12)


# ---- 5. a warm-started search's initial control ----------------------------------------------

def test_initial_control_is_the_alignment_the_search_started_from():
    """fixed_controls(start=...) measures the given start alignment on the main search's test pairs;
    without it, the fresh alignment a search of that config starts from."""
    model = wrap(HandCounter(uniform_demo=True), "rnn")
    cfg = DASConfig(variable="count", n_units=1, n_train=1000, n_val=200, n_test=300, max_steps=200, eval_every=50,
                    lr=1e-2, **STOP)
    trained = run_das(model, MULTI, cfg, progress=False)
    assert trained.metrics["iia_changed_test"] > 0.9
    test = make_search_pairs(MULTI, cfg)["test"]
    warm = controls.fixed_controls(model, MULTI, trained, start=trained.alignment)
    ev = evaluate_alignment(model, trained.alignment, test, free_running=False)
    assert warm["initial"]["iia_test"] == ev["iia"] and warm["initial"]["iia_changed_test"] == ev["iia_changed"]
    cold = controls.fixed_controls(model, MULTI, trained)
    fresh = symlib.intervene.das.new_alignment(cfg, 8)
    assert cold["initial"]["iia_changed_test"] == evaluate_alignment(model, fresh, test, free_running=False)["iia_changed"]
    assert cold["initial"]["iia_changed_test"] < 0.5 < warm["initial"]["iia_changed_test"]
    assert warm["no_swap"] == cold["no_swap"]
