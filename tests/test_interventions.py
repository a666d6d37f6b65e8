"""Interventions at two positions of one trial: the program's double counterfactual, and the
network's double swap (a planted counter, recurrent and Transformer consistency checks)."""
import dataclasses

import pytest
import torch
import torch.nn as nn

import symlib
from symlib.intervene.alignment import AlignmentFunction
from symlib.game.counterfactuals import pairs_from_trials
from symlib.intervene.interventions import (DoublePairs, double_intervened_logits, double_intervention_iia,
                                  double_pairs_from_trials, intervened_trace, make_double_pairs, second_positions)
from symlib.intervene.iia import site_states
from symlib.networks.models import SequenceModel
from symlib.game.programs import DEMO, RESPONSE, counterfactual, make_program, state_at

from helpers import MULTI, gen, small_model, wrap

SINGLE = symlib.make_task("singleobject")


def _trial(counts):
    return SINGLE.trials_for_counts(torch.tensor(counts), gen(0))


def _classes(task, tokens):
    """Token classes: every demo word becomes -1 (rolled-out demo identities are random)."""
    out = tokens.clone()
    out[torch.isin(tokens, torch.tensor(task.demo_ids))] = -1
    return out


def _same_classes(task, a, b):
    L = max(a.shape[1], b.shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, L - x.shape[1]))
    return torch.equal(_classes(task, pad(a)), _classes(task, pad(b)))


# ---- the program side: worked examples -------------------------------------------------------------------

def test_worked_example_count_twice():
    """Up-Down, N=4 'B D D D D T R R R R E': count 5 written after the 2nd D, then count 1 after
    the 2nd R of that counterfactual (where the program's count is 3)."""
    prog = make_program("up_down", SINGLE)
    tgt, src1, src2 = _trial([4]), _trial([6]), _trial([3])
    p = double_pairs_from_trials(prog, "count", tgt, torch.tensor([2]), src1, torch.tensor([5]),
                                 torch.tensor([5]), src2, torch.tensor([1]))
    # first swap: count 5 >= 4 demos, so T at once, then 5 responses
    assert SINGLE.decode(p.single_tokens[0]) == "B D D T R R R R R E"
    # second swap at position 5 (the 2nd R, count 3 there) writes 1: one more R, then E
    assert SINGLE.decode(p.tokens[0]) == "B D D T R R R E"
    assert p.task_mask[0].nonzero()[:, 0].tolist() == [4, 5, 6, 7]  # every R and E after pos1
    assert (p.target_value.item(), p.source1_value.item(), p.mid_value.item(), p.source2_value.item()) == (2, 5, 3, 1)
    assert (p.target_phase.item(), p.mid_phase.item()) == (DEMO, RESPONSE)
    assert p.changed.item() and p.changed_first.item() and p.changed_second.item()
    # with a full write the state at pos2 does not matter, so re-running the program on the single
    # counterfactual and writing there gives the same answer (count and phase both written)
    naive, _ = counterfactual(prog, _as_trials(p.single_tokens, tgt.counts, SINGLE), torch.tensor([5]),
                              {"count": torch.tensor([1]), "phase": torch.tensor([RESPONSE])})
    assert SINGLE.decode(naive[0]) == "B D D T R R R E"


def _as_trials(tokens, counts, task=MULTI):
    """Trials from token rows of natural trials (their R and E are the task mask), or of counterfactuals
    (``counterfactual`` only reads the tokens and counts)."""
    lengths = (tokens != 0).sum(1)
    mask = (tokens == task.R) | (tokens == task.E)
    return symlib.Trials(tokens, mask, counts, (tokens == task.T).long().argmax(1), lengths)


def test_worked_example_phase_twice_needs_the_intervened_state():
    """Up-Down, N=3 'B D D D T R R R E': phase -> response after the 2nd D ('B D D R R E'), then
    phase -> demo after the first R of that. The program's count there is 1 (the R counted down
    in the response phase), so it needs two more demos: 'B D D R D D T R R R E'. Re-running the
    program on 'B D D R' would not know about the first swap (count 2) and say one demo."""
    prog = make_program("up_down", SINGLE)
    tgt, src1, src2 = _trial([3]), _trial([2]), _trial([2])
    assert SINGLE.decode(src1.tokens[0]) == "B D D T R R E"  # phase at position 4: response
    p = double_pairs_from_trials(prog, "phase", tgt, torch.tensor([2]), src1, torch.tensor([4]),
                                 torch.tensor([3]), src2, torch.tensor([1]))
    assert SINGLE.decode(p.single_tokens[0]) == "B D D R R E"
    assert SINGLE.decode(p.tokens[0]) == "B D D R D D T R R R E"
    assert p.task_mask[0].nonzero()[:, 0].tolist() == [3, 7, 8, 9, 10]
    assert (p.mid_value.item(), p.mid_phase.item(), p.source2_phase.item()) == (1, RESPONSE, DEMO)
    assert p.changed_second.item()
    naive, _ = counterfactual(prog, _as_trials(p.single_tokens, tgt.counts, SINGLE), torch.tensor([3]), {"phase": torch.tensor([DEMO])})
    assert SINGLE.decode(naive[0]) == "B D D R D T R R R E"


def test_intervened_trace_follows_the_counterfactual():
    """The trace along a counterfactual is the target's up to pos, the written state at pos, then the program stepping on."""
    prog = make_program("up_down", SINGLE)
    tgt = _trial([4])
    written = prog.write(state_at(prog.trace(tgt), torch.tensor([2])), "count", torch.tensor([5]))
    tokens, _ = counterfactual(prog, tgt, torch.tensor([2]), {"count": torch.tensor([5])})
    tr = intervened_trace(prog, tokens, tgt.counts, torch.tensor([2]), written)
    assert tr["count"][0].tolist() == [0, 1, 5, 5, 4, 3, 2, 1, 0, 0]
    assert tr["phase"][0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]


# ---- the program side: by construction ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def up_down_full():
    return make_double_pairs(MULTI, "up_down", "full", n=200, seed=3)


def test_full_double_is_a_swap_on_the_single_counterfactual(up_down_full):
    """Up-Down with count and phase both written: the double counterfactual is the single-overwrite
    at pos2 applied to the single-overwrite-at-pos1 sequence (the program re-run on it)."""
    p = up_down_full
    prog = make_program("up_down", MULTI)
    src2 = state_at(prog.trace(_as_trials(p.src2_tokens, p.source2_count)), p.src2_pos)
    want, want_mask = counterfactual(prog, _as_trials(p.single_tokens, p.target_count), p.pos2,
                                     {"count": src2["count"], "phase": src2["phase"]}, generator=gen(1))
    assert _same_classes(MULTI, p.tokens, want)
    L = p.tokens.shape[1]
    after2 = torch.arange(L)[None, :] > p.pos2[:, None]
    assert torch.equal(p.task_mask & after2, torch.nn.functional.pad(want_mask, (0, L - want_mask.shape[1]))[:, :L] & after2)


@pytest.mark.parametrize("program,variable", [("up_down", "count"), ("up_down", "phase"), ("up_up", "count_phase"),
                                              ("ctx_distr", "count")])
def test_null_swaps_reduce_to_single_swaps(program, variable):
    """No second write: the double is the single counterfactual. No first write: it is the single
    swap at pos2 of the target itself."""
    base = make_double_pairs(MULTI, program, variable, n=120, seed=5)
    prog = make_program(program, MULTI)
    n, nb = len(base), base.swap1.shape[1]
    tgt = _as_trials(base.target_tokens, base.target_count)
    src1, src2 = _as_trials(base.src1_tokens, base.source1_count), _as_trials(base.src2_tokens, base.source2_count)
    off = torch.zeros(n, nb, dtype=torch.bool)
    p = double_pairs_from_trials(prog, variable, tgt, base.pos1, src1, base.src1_pos, base.pos2, src2, base.src2_pos,
                                 base.swap1, off, gen(2))
    assert _same_classes(MULTI, p.tokens, p.single_tokens)
    assert not p.changed_second.any() and torch.equal(p.changed, p.changed_first)
    # without a first write the single counterfactual is the target's own continuation (rows where pos2 is a valid position of it)
    valid = second_positions(MULTI, base.target_tokens, base.pos1)
    rows = (base.pos2 < valid.shape[1]) & valid.gather(1, base.pos2.clamp(max=valid.shape[1] - 1)[:, None])[:, 0]
    assert int(rows.sum()) > 20
    b = base[rows]
    tgt = _as_trials(b.target_tokens, b.target_count)
    src1, src2 = _as_trials(b.src1_tokens, b.source1_count), _as_trials(b.src2_tokens, b.source2_count)
    p = double_pairs_from_trials(prog, variable, tgt, b.pos1, src1, b.src1_pos, b.pos2, src2, b.src2_pos,
                                 off[rows], b.swap2, gen(3))
    ref = pairs_from_trials(prog, variable, tgt, b.pos2, src2, b.src2_pos, b.swap2, gen(4))
    assert _same_classes(MULTI, p.tokens, ref.tokens)
    assert torch.equal(p.changed_second, ref.changed)


# ---- the program side: sampling ----------------------------------------------------------------------------

def test_seeded_and_positions_valid():
    """Same seed, same pairs; positions follow the documented rule; prefixes are the target's and the single counterfactual's."""
    a = make_double_pairs(MULTI, "up_down", "count_phase", n=150, seed=11)
    b = make_double_pairs(MULTI, "up_down", "count_phase", n=150, seed=11)
    c = make_double_pairs(MULTI, "up_down", "count_phase", n=150, seed=12)
    for f in dataclasses.fields(DoublePairs):
        if f.name != "value_variable":
            assert torch.equal(getattr(a, f.name), getattr(b, f.name)), f.name
    assert not torch.equal(a.pos1, c.pos1)
    assert len(a) == 150 and a.swap1.shape == (150, 2)
    # pos1 at a demo or response token of the target
    idx = torch.arange(a.target_tokens.shape[1])[None, :]
    tpos = (a.target_tokens == MULTI.T).long().argmax(1)
    end = (a.target_tokens == MULTI.E).long().argmax(1)
    assert bool(((a.pos1 >= 1) & (a.pos1 != tpos) & (a.pos1 < end)).all())
    # pos2 after pos1, before the single counterfactual's E, on a demo or response word
    assert bool((a.pos2 > a.pos1).all())
    ok = second_positions(MULTI, a.single_tokens, a.pos1)
    assert bool(ok.gather(1, a.pos2[:, None]).all())
    rows = torch.arange(len(a))
    tok2 = a.single_tokens[rows, a.pos2]
    assert bool(torch.isin(tok2, torch.tensor(MULTI.demo_ids + (MULTI.R,))).all())
    for r in range(len(a)):
        i1, i2 = int(a.pos1[r]), int(a.pos2[r])
        assert torch.equal(a.tokens[r, : i1 + 1], a.target_tokens[r, : i1 + 1])
        assert torch.equal(a.tokens[r, : i2 + 1], a.single_tokens[r, : i2 + 1])
        words = a.tokens[r][a.tokens[r] != 0]
        assert int((words[i1 + 1:] == MULTI.E).sum()) == 1 and int(words[-1]) == MULTI.E
        # the task mask: the responses and E after pos1
        mask = a.task_mask[r].nonzero()[:, 0]
        assert bool((mask > i1).all()) and bool(torch.isin(a.tokens[r, mask], torch.tensor([MULTI.R, MULTI.E])).all())


def _graded(tokens, mask, start):
    """The (position, token) pairs on the task mask after ``start``."""
    return [(int(t), int(tokens[t])) for t in mask.nonzero()[:, 0] if t > start]


@pytest.mark.parametrize("program,variable", [("up_down", "count"), ("up_down", "phase"), ("up_up", "full"), ("ctx_distr", "count_phase")])
def test_changed_flags(program, variable):
    """changed / changed_first / changed_second agree with a direct comparison of the graded tokens;
    every program and variable rolls out to E."""
    p = make_double_pairs(MULTI, program, variable, n=150, seed=21)
    for r in range(len(p)):
        i1, i2 = int(p.pos1[r]), int(p.pos2[r])
        tgt_mask = torch.zeros_like(p.target_tokens[r], dtype=torch.bool)
        tgt_mask[(p.target_tokens[r] == MULTI.R) | (p.target_tokens[r] == MULTI.E)] = True
        double = _graded(p.tokens[r], p.task_mask[r], i1)
        assert p.changed[r].item() == (double != _graded(p.target_tokens[r], tgt_mask, i1))
        assert p.changed_second[r].item() == (_graded(p.tokens[r], p.task_mask[r], i2)
                                              != _graded(p.single_tokens[r], p.single_task_mask[r], i2))
        assert p.changed_first[r].item() == (_graded(p.single_tokens[r], p.single_task_mask[r], i1)
                                             != _graded(p.target_tokens[r], tgt_mask, i1))
    # mixed, not degenerate
    assert 0 < int(p.changed_second.sum()) < len(p)


def test_null_variable_changes_nothing():
    p = make_double_pairs(MULTI, "up_up", "null", n=50, seed=1)
    assert not p.changed.any() and not p.changed_second.any()


def test_bad_input_names_valid_choices():
    prog = make_program("up_down", SINGLE)
    tgt, src = _trial([4]), _trial([6])
    with pytest.raises(ValueError, match="valid choices: count, phase, count_phase, full, null"):
        make_double_pairs(MULTI, "up_down", "colour", n=10)
    with pytest.raises(ValueError, match="valid choices: .*demo_count"):
        make_double_pairs(MULTI, "up_up", "colour", n=10)
    with pytest.raises(ValueError, match="valid choices: up_down, up_up, ctx_distr"):
        make_double_pairs(MULTI, "count_up", "count", n=10)
    with pytest.raises(ValueError, match="n must be positive"):
        make_double_pairs(MULTI, "up_down", "count", n=0)
    # pos2 <= pos1: impossible; the message lists the valid second positions
    for pos2 in (2, 1):
        with pytest.raises(ValueError, match=r"valid pos2: \[4, 5, 6, 7, 8\]"):
            double_pairs_from_trials(prog, "count", tgt, torch.tensor([2]), src, torch.tensor([5]),
                                     torch.tensor([pos2]), src, torch.tensor([1]))
    # past the first counterfactual's E, and on T
    for pos2 in (9, 12, 3):
        with pytest.raises(ValueError, match="pos2 must be after pos1"):
            double_pairs_from_trials(prog, "count", tgt, torch.tensor([2]), src, torch.tensor([5]),
                                     torch.tensor([pos2]), src, torch.tensor([1]))


# ---- the network side: a planted counter -------------------------------------------------------------------

class PlantedCounter(nn.Module):
    """A relu RNN with hand-set weights that solves MultiObject exactly.

    Unit 0 counts (+1 per demo word, -1 per R), unit 1 is the phase (+1 at T), units 2..7
    a decaying memory of the demo words (irrelevant). Read-out: in the demo phase D0 wins
    (demo words are not graded); in the response phase R while the count is >= 1, else E.
    """

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(9, 9)
        self.rnn = nn.RNN(9, 8, nonlinearity="relu", batch_first=True)
        self.feat = nn.Linear(8, 3)
        self.out = nn.Linear(3, 9)
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
            self.emb.weight.copy_(torch.eye(9))
            W_ih, W_hh = self.rnn.weight_ih_l0, self.rnn.weight_hh_l0
            W_hh[0, 0], W_ih[0, 3:6], W_ih[0, 6] = 1.0, 1.0, -1.0
            W_hh[1, 1], W_ih[1, 7] = 1.0, 1.0
            for k in range(2, 8):
                W_ih[k, 3 + k % 3], W_hh[k, k] = 0.5, 0.5
            # features: relu(count), relu(count - 1), relu(1 - phase)
            self.feat.weight[0, 0] = 1.0
            self.feat.weight[1, 0], self.feat.bias[1] = 1.0, -1.0
            self.feat.weight[2, 1], self.feat.bias[2] = -1.0, 1.0
            self.out.weight[6, 0], self.out.weight[6, 1] = 10.0, -10.0  # R: 10 * min(count, 1)
            self.out.bias[2] = 5.0  # E
            self.out.weight[3, 2] = 20.0  # D0 in the demo phase

    def forward(self, tokens):
        return self.out(torch.relu(self.feat(self.rnn(self.emb(tokens))[0])))


class AxisAlignment(AlignmentFunction):
    """Aligns chosen state axes as they are: a permutation putting ``axes`` first (one block)."""

    kind = "axis"

    def __init__(self, d, axes):
        super().__init__(d, [len(axes)])
        rest = [i for i in range(d) if i not in axes]
        self.register_buffer("perm", torch.tensor(list(axes) + rest, dtype=torch.long))

    def forward(self, h):
        return h.float()[:, self.perm]

    def inverse(self, z):
        return z[:, torch.argsort(self.perm)]


@pytest.fixture(scope="module")
def planted():
    model = wrap(PlantedCounter(), "rnn")
    assert symlib.evaluate(model, MULTI.sample(300, "all", gen(50)))["trial_acc"] == 1.0
    return model


@pytest.fixture(scope="module")
def count_pairs():
    return make_double_pairs(MULTI, "up_down", "count", n=300, seed=7)


def test_planted_counter_follows_double_count_swaps(planted, count_pairs):
    """Swapping exactly the counter unit twice: IIA 1.0, also where the second swap matters. Swapping
    nothing: wrong wherever the swaps change the outcome. The first swap alone: wrong wherever the
    second swap changes it (the built-in control)."""
    p = count_pairs
    assert int(p.changed_second.sum()) > 100
    ev = double_intervention_iia(planted, AxisAlignment(8, [0]), p)
    assert ev["iia"] == 1.0 and ev["iia_changed"] == 1.0 and ev["iia_changed_second"] == 1.0
    assert ev["iia_after_second"] == 1.0
    assert ev["n"] == 300 and ev["n_changed_second"] == int(p.changed_second.sum())
    assert ev["iia_single_first_changed_second"] <= 0.05
    assert ev["iia_single_first"] == pytest.approx(1 - p.changed_second.float().mean().item(), abs=0.05)
    none = double_intervention_iia(planted, AxisAlignment(8, []), p)
    assert none["iia_changed"] <= 0.05
    # a wrong axis (the demo-word memory) is no better than nothing
    assert double_intervention_iia(planted, AxisAlignment(8, [2]), p)["iia_changed"] <= 0.05


def test_planted_counter_full_state_of_the_program(planted):
    """variable='full' (count and phase) aligned with units 0 and 1: IIA 1.0; the count unit alone fails on phase changes."""
    p = make_double_pairs(MULTI, "up_down", "full", n=200, seed=8)
    assert double_intervention_iia(planted, AxisAlignment(8, [0, 1]), p)["iia"] == 1.0
    assert double_intervention_iia(planted, AxisAlignment(8, [0]), p)["iia_changed"] < 0.9


# ---- the network side: consistency of the implementations ---------------------------------------------------

def _states(model, p, site):
    return (site_states(model, p.tokens, p.pos1, site), site_states(model, p.src1_tokens, p.src1_pos, site),
            site_states(model, p.src2_tokens, p.src2_pos, site))


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_recurrent_double_swap_mechanics(arch, count_pairs):
    """Random GRU/LSTM: no swap is the plain forward; no second swap is the single swap; swapping every
    dim at both positions continues from source 2's state after pos2; the fused path equals a
    stepwise one (the same network wrapped with wrap_model)."""
    p = count_pairs[:40]
    model = small_model(arch, d_model=16, seed=3)
    h1, s1, s2 = _states(model, p, "state")
    n, L = len(p), p.tokens.shape[1]
    on, off = torch.ones(n, 1, dtype=torch.bool), torch.zeros(n, 1, dtype=torch.bool)
    t = torch.arange(L)[None, :, None]
    after1, after2 = t >= p.pos1[:, None, None], t >= p.pos2[:, None, None]
    align = symlib.make_alignment("orthogonal", 16, [5], seed=1).eval()
    with torch.no_grad():
        plain = model(p.tokens)
        d, _ = double_intervened_logits(model, align, p.tokens, p.pos1, p.pos2, h1, s1, s2, off, off, "state")
        assert torch.allclose(torch.where(after1, d, 0), torch.where(after1, plain, 0), atol=1e-5)
        d, single = double_intervened_logits(model, align, p.tokens, p.pos1, p.pos2, h1, s1, s2, on, off, "state")
        assert torch.allclose(torch.where(after1, d, 0), torch.where(after1, single, 0), atol=1e-5)
        full = symlib.make_alignment("orthogonal", 16, [16], seed=2).eval()
        d, _ = double_intervened_logits(model, full, p.tokens, p.pos1, p.pos2, h1, s1, s2, on, on, "state")
        ref2 = model.run_with_state(p.tokens, "state", p.pos2, s2)
        ref1 = model.run_with_state(p.tokens, "state", p.pos1, s1)
        ref = torch.where(after2, ref2, ref1)
        assert torch.allclose(torch.where(after1, d, 0), torch.where(after1, ref, 0), atol=1e-4)
        d, _ = double_intervened_logits(model, align, p.tokens, p.pos1, p.pos2, h1, s1, s2, on, on, "state")
        stepwise = wrap(model, "rnn")
        d_ref, _ = double_intervened_logits(stepwise, align, p.tokens, p.pos1, p.pos2, h1, s1, s2, on, on, "rnn")
        assert torch.allclose(torch.where(after1, d, 0), torch.where(after1, d_ref, 0), atol=1e-4)
    # the whole measure: the two paths agree pair by pair
    ev, ev_ref = double_intervention_iia(model, align, p), double_intervention_iia(stepwise, align, p)
    assert torch.equal(ev["correct"], ev_ref["correct"]) and torch.equal(ev["correct_single_first"], ev_ref["correct_single_first"])


@pytest.mark.parametrize("site", ["resid.0", "embed"])
def test_transformer_double_swap_matches_a_manual_pass(site, count_pairs):
    """Transformer: the hooked pass equals replacing the residual at pos1 and pos2 by hand and
    running the later layers; with no second swap it is run_with_state at pos1; the measure's per-pair
    answer is that manual pass's, graded after pos1 only (a planted task mask gives the known answer)."""
    p = count_pairs[:30]
    model = small_model("transformer", d_model=16, seed=4)
    h1, s1, s2 = _states(model, p, site)
    n, L = len(p), p.tokens.shape[1]
    on, off = torch.ones(n, 1, dtype=torch.bool), torch.zeros(n, 1, dtype=torch.bool)
    align = symlib.make_alignment("orthogonal", 16, [6], seed=5).eval()
    rows = torch.arange(n)
    with torch.no_grad():
        d, single = double_intervened_logits(model, align, p.tokens, p.pos1, p.pos2, h1, s1, s2, on, on, site)
        x = model.states(p.tokens, site).clone()
        x[rows, p.pos1] = align.interchange(x[rows, p.pos1], s1, on)
        x[rows, p.pos2] = align.interchange(x[rows, p.pos2], s2, on)
        layer = -1 if site == "embed" else 0
        want = model.unembed(model.ln_f(model._blocks(x, None, layer + 1)))
        assert torch.allclose(d, want, atol=1e-5)
        manual = want.argmax(-1)
        d, _ = double_intervened_logits(model, align, p.tokens, p.pos1, p.pos2, h1, s1, s2, on, off, site)
        after1 = (torch.arange(L)[None, :] >= p.pos1[:, None])[:, :, None]
        assert torch.allclose(torch.where(after1, d, 0), torch.where(after1, single, 0), atol=1e-5)
    # the measure scores what the manual pass predicts: a planted mask grades, after pos1, only tokens it
    # gets right (every pair), plus one it gets wrong (odd pairs); and before pos1 one it gets wrong, which
    # must not count. So exactly the even pairs are right.
    hit = (manual[:, :-1] == p.tokens[:, 1:]) & (p.tokens[:, 1:] != 0)
    after = torch.arange(L - 1)[None, :] >= p.pos1[:, None]
    wrong_after, wrong_before = ~hit & after & (p.tokens[:, 1:] != 0), ~hit & ~after
    # (an untrained network: it gets some tokens right after pos1 in about half the pairs, some wrong in all)
    assert wrong_after.any(1).all() and wrong_before.any(1).sum() >= n // 2 and (hit & after).any(1).sum() >= n // 3
    graded = hit & after
    odd = torch.arange(n) % 2 == 1
    first = lambda m: torch.nn.functional.one_hot(m.float().argmax(1), L - 1).bool() & m  # each row's first True
    graded |= first(wrong_before) | (first(wrong_after) & odd[:, None])
    planted = dataclasses.replace(p, task_mask=torch.nn.functional.pad(graded, (1, 0)))
    ev = double_intervention_iia(model, align, planted, site)
    assert ev["n"] == 30 and torch.equal(ev["correct"], ~odd) and ev["iia"] == pytest.approx(0.5)


def test_network_is_left_as_it_was_and_unsupported_models_say_so(count_pairs):
    """The measure runs frozen (no dropout: the same answer twice) and restores train mode;
    a model kind it does not know raises NotImplementedError naming the supported ones."""
    model = small_model("gru", d_model=16, seed=5).train()
    align = symlib.make_alignment("orthogonal", 16, [4], seed=0).train()
    p = count_pairs[:50]
    a, b = double_intervention_iia(model, align, p), double_intervention_iia(model, align, p)
    assert torch.equal(a["correct"], b["correct"])
    assert model.training and align.training
    assert all(q.requires_grad for q in model.parameters())

    class Odd(SequenceModel):
        sites = ("x",)
        default_site = "x"

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

    with pytest.raises(NotImplementedError, match="GRU and LSTM.*Transformers"):
        double_intervention_iia(Odd(), align, p)
    with pytest.raises(ValueError, match="valid choices"):
        double_intervention_iia(model, align, p, site="resid.3")
    with pytest.raises(ValueError, match="2 block"):
        double_intervention_iia(model, symlib.make_alignment("orthogonal", 16, [2, 2], seed=0), p)
