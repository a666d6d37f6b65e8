"""Programs (Up-Down, Up-Up, Ctx-Distr), counterfactual labels, intervention positions and pairs."""
import pytest
import torch

import symlib
from symlib.counterfactuals import make_pairs, pairs_from_trials
from symlib.programs import DEMO, RESPONSE, counterfactual, intervention_positions, make_program, state_at

from helpers import gen

SINGLE = symlib.make_task("singleobject")


def _pad_to(x: torch.Tensor, L: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, L - x.shape[1]))


def _classes(task, tokens: torch.Tensor) -> torch.Tensor:
    """Token classes: every demo word becomes -1 (identities may differ), the rest stay."""
    out = tokens.clone()
    out[torch.isin(tokens, torch.tensor(task.demo_ids))] = -1
    return out


def _worked_example_target():
    tgt = SINGLE.trials_for_counts(torch.tensor([4]), gen(0))
    assert SINGLE.decode(tgt.tokens[0]) == "B D D D D T R R R R E"
    return tgt


# ---- the SPEC worked example ---------------------------------------------------------

def test_spec_worked_example_swap_count_and_phase():
    """Up-Down, N=4 target at its first R, source count=2 in the demo phase: 'B D D D D T R' + 'D D T R R R R E'."""
    prog = make_program("up_down", SINGLE)
    tgt = _worked_example_target()
    pos = torch.tensor([6])
    tokens, graded = counterfactual(prog, tgt, pos, {"count": torch.tensor([2]), "phase": torch.tensor([DEMO])})
    assert SINGLE.decode(tokens[0]) == "B D D D D T R D D T R R R R E"
    # graded: only the responses and E after the intervention
    assert graded[0].nonzero()[:, 0].tolist() == [10, 11, 12, 13, 14]


def test_spec_worked_example_swap_count_only():
    """Swapping only count=2 into the response phase gives 'B D D D D T R' + 'R R E'."""
    prog = make_program("up_down", SINGLE)
    tokens, graded = counterfactual(prog, _worked_example_target(), torch.tensor([6]), {"count": torch.tensor([2])})
    assert SINGLE.decode(tokens[0]) == "B D D D D T R R R E"
    assert graded[0].nonzero()[:, 0].tolist() == [7, 8, 9]


def test_spec_worked_example_through_pairs():
    """The worked example again, the source state read from a real trial (after its 2nd demo token)."""
    prog = make_program("up_down", SINGLE)
    tgt = _worked_example_target()
    src = SINGLE.trials_for_counts(torch.tensor([5]), gen(1))
    full = pairs_from_trials(prog, "full", tgt, torch.tensor([6]), src, torch.tensor([2]))
    assert SINGLE.decode(full.tokens[0]) == "B D D D D T R D D T R R R R E"
    assert full.source_value.tolist() == [2] and full.source_phase.tolist() == [DEMO]
    assert full.target_value.tolist() == [3] and full.target_phase.tolist() == [RESPONSE]
    count = pairs_from_trials(prog, "count", tgt, torch.tensor([6]), src, torch.tensor([2]))
    assert SINGLE.decode(count.tokens[0]) == "B D D D D T R R R E"
    assert bool(count.changed[0]) and bool(full.changed[0])


def test_worked_example_multiobject_token_classes():
    """With MultiObject the same example holds up to the identity of the demo tokens."""
    task = symlib.make_task("multiobject")
    prog = make_program("up_down", task)
    tgt = task.trials_for_counts(torch.tensor([4]), gen(3))
    tokens, _ = counterfactual(prog, tgt, torch.tensor([6]), {"count": torch.tensor([2]), "phase": torch.tensor([DEMO])})
    words = task.decode(tokens[0]).replace("D0", "D").replace("D1", "D").replace("D2", "D")
    assert words == "B D D D D T R D D T R R R R E"
    assert torch.equal(tokens[0, :7], tgt.tokens[0, :7])


# ---- programs against the generator ------------------------------------------------

@pytest.mark.parametrize("name", symlib.TASK_NAMES)
@pytest.mark.parametrize("unk_p", [0.0, 0.25])
def test_updown_predicts_every_graded_token(name, unk_p):
    """At every position i whose next token is graded, Up-Down's next token is tokens[i+1] and is graded; elsewhere it is ungraded."""
    task = symlib.make_task(name, unk_p=unk_p)
    prog = make_program("up_down", task)
    tr = task.sample(300, "all", gen(11))
    trace = prog.trace(tr)
    B, L = tr.tokens.shape
    for i in range(L - 1):
        s = state_at(trace, torch.full((B,), i))
        tok, graded = prog.next_token(s, gen(i))
        nxt_graded = tr.task_mask[:, i + 1]
        inside = i < tr.lengths - 1
        assert torch.equal(tok[nxt_graded], tr.tokens[nxt_graded, i + 1])
        assert torch.equal(graded[inside], nxt_graded[inside])


@pytest.mark.parametrize("program", symlib.PROGRAM_NAMES)
@pytest.mark.parametrize("name", symlib.TASK_NAMES)
def test_rollout_from_start_reproduces_trials(program, name):
    """Rolling a program out from the state after B (with the trial's N) gives the trial's token classes and task mask."""
    task = symlib.make_task(name)
    prog = make_program(program, task)
    tr = task.sample(200, "all", gen(12))
    toks, graded = prog.rollout(prog.init(tr.counts), max_steps=3 * 20 + 10, generator=gen(13))
    L = tr.tokens.shape[1] - 1
    assert toks.shape[1] == L
    assert torch.equal(_classes(task, toks), _classes(task, tr.tokens[:, 1:]))
    assert torch.equal(graded, tr.task_mask[:, 1:])


@pytest.mark.parametrize("program", symlib.PROGRAM_NAMES)
@pytest.mark.parametrize("name", symlib.TASK_NAMES)
def test_null_counterfactual_is_the_target(program, name):
    """With no value written, the counterfactual equals the target's own continuation on the graded tokens."""
    task = symlib.make_task(name)
    prog = make_program(program, task)
    tr = task.sample(200, "train", gen(14))
    pos = intervention_positions(tr, gen(15))
    tokens, graded = counterfactual(prog, tr, pos, {}, generator=gen(16))
    L = max(tokens.shape[1], tr.tokens.shape[1])
    tokens, graded, tt = _pad_to(tokens, L), _pad_to(graded, L), _pad_to(tr.tokens, L)
    after = torch.arange(L)[None, :] > pos[:, None]
    assert torch.equal(graded, _pad_to(tr.task_mask, L) & after)
    assert torch.equal(tokens[graded], tt[graded])
    assert torch.equal(_classes(task, tokens), _classes(task, tt))
    prefix = torch.arange(L)[None, :] <= pos[:, None]
    assert torch.equal(tokens[prefix], tt[prefix])
    # the pairs machinery agrees: a 'null' swap never changes anything
    pairs = make_pairs(task, program, "null", n=100, seed=1)
    assert not pairs.changed.any()


# ---- Up-Up and Up-Down under count swaps --------------------------------------------

def _response_phase_setup(n_rows=200, seed=20):
    task = symlib.make_task("multiobject")
    g = gen(seed)
    tr = task.sample(n_rows, "train", g)
    k = (torch.rand(n_rows, generator=g) * tr.counts.float()).long()  # responses already given: 0..N-1
    pos = tr.trigger_pos + k  # k = 0 is the T itself
    v = torch.randint(0, 25, (n_rows,), generator=g)
    return task, tr, k, pos, v


def test_upup_demo_count_swap_in_response_phase():
    """Up-Up: writing demo_count=v after k responses gives max(v, k) responses in all."""
    task, tr, k, pos, v = _response_phase_setup()
    prog = make_program("up_up", task)
    tokens, _ = counterfactual(prog, tr, pos, {"demo_count": v})
    after_t = torch.arange(tokens.shape[1])[None, :] > tr.trigger_pos[:, None]
    n_resp = ((tokens == task.R) & after_t).sum(1)
    assert torch.equal(n_resp, torch.maximum(v, k))


def test_updown_count_swap_in_response_phase():
    """Up-Down: writing count=v after k responses gives k + v responses in all."""
    task, tr, k, pos, v = _response_phase_setup()
    prog = make_program("up_down", task)
    tokens, graded = counterfactual(prog, tr, pos, {"count": v})
    n_resp = ((tokens == task.R) & (torch.arange(tokens.shape[1])[None, :] > tr.trigger_pos[:, None])).sum(1)
    assert torch.equal(n_resp, k + v)
    assert torch.equal(graded.sum(1), v + 1)  # graded after the swap: v responses and E


def test_upup_demo_count_swap_in_demo_phase():
    """Up-Up: writing demo_count=v after j demos of an N trial: max(N - v, 0) more demos, then max(v, N) responses."""
    task = symlib.make_task("multiobject")
    g = gen(21)
    tr = task.sample(200, "train", g)
    j = 1 + (torch.rand(200, generator=g) * tr.counts.float()).long().clamp(max=tr.counts - 1)  # 1..N
    v = torch.randint(0, 25, (200,), generator=g)
    prog = make_program("up_up", task)
    tokens, _ = counterfactual(prog, tr, j, {"demo_count": v}, generator=g)
    is_demo = torch.isin(tokens, torch.tensor(task.demo_ids))
    assert torch.equal(is_demo.sum(1), j + (tr.counts - v).clamp(min=0))
    assert torch.equal((tokens == task.R).sum(1), torch.maximum(v, tr.counts))


# ---- Ctx-Distr: an override affects only the next decision ------------------------

def test_ctx_distr_zero_override_ends_at_once():
    """Ctx-Distr: count override 0 in the response phase (natural count > 0) makes the next token E."""
    task, tr, k, pos, _ = _response_phase_setup(seed=22)
    prog = make_program("ctx_distr", task)
    tokens, graded = counterfactual(prog, tr, pos, {"count": torch.zeros_like(pos)})
    rows = torch.arange(len(tr))
    assert (tokens[rows, pos + 1] == task.E).all()
    assert torch.equal(graded.sum(1), torch.ones_like(pos))


def test_ctx_distr_nonzero_override_changes_nothing_in_response_phase():
    """Ctx-Distr: a nonzero count override where the natural count is > 0 gives the natural sequence."""
    task, tr, k, pos, v = _response_phase_setup(seed=23)
    v = v.clamp(min=1)
    prog = make_program("ctx_distr", task)
    tokens, graded = counterfactual(prog, tr, pos, {"count": v})
    natural, nat_graded = counterfactual(prog, tr, pos, {})
    assert torch.equal(tokens, natural) and torch.equal(graded, nat_graded)
    assert torch.equal(tokens, tr.tokens[:, : tokens.shape[1]])


def test_ctx_distr_demo_override_is_forgotten_after_one_step():
    """Ctx-Distr: override count=N after j < N demos gives T at once, then j responses recomputed from the tokens (Up-Down would give N)."""
    task = symlib.make_task("multiobject")
    g = gen(24)
    tr = task.sample(200, [5, 8, 12, 20], g)
    j = 1 + (torch.rand(200, generator=g) * (tr.counts - 1).float()).long()  # 1..N-1
    rows = torch.arange(200)
    ctx, ud = make_program("ctx_distr", task), make_program("up_down", task)
    tokens, _ = counterfactual(ctx, tr, j, {"count": tr.counts})
    assert (tokens[rows, j + 1] == task.T).all()
    assert torch.equal((tokens == task.R).sum(1), j)
    tokens_ud, _ = counterfactual(ud, tr, j, {"count": tr.counts})
    assert torch.equal((tokens_ud == task.R).sum(1), tr.counts)
    # the override lives for one step only
    s = ctx.write(state_at(ctx.trace(tr), j), "count", torch.full_like(j, 30))
    assert (ctx.read(s, "count") == 30).all()
    s2 = ctx.step(s, torch.full_like(j, task.demo_ids[0]))
    assert torch.equal(ctx.read(s2, "count"), j + 1)


# ---- counterfactual sequences are finite ------------------------------------------

@pytest.mark.parametrize("program", symlib.PROGRAM_NAMES)
@pytest.mark.parametrize("variable", symlib.VARIABLE_NAMES)
def test_counterfactuals_are_finite_and_end_with_e(program, variable):
    """Every counterfactual ends with exactly one E after the swap, has no gap of padding, and is at most 4*20+3 = 83 tokens."""
    task = symlib.make_task("multiobject")
    pairs = make_pairs(task, program, variable, n=300, seed=5)
    tok = pairs.tokens
    L = tok.shape[1]
    assert L <= 4 * 20 + 3
    idx = torch.arange(L)[None, :]
    nonpad = tok != task.P
    last = (nonpad.long() * idx).max(1).values
    rows = torch.arange(len(pairs))
    assert (tok[rows, last] == task.E).all()
    assert torch.equal(nonpad, idx <= last[:, None])  # padding only at the end
    assert ((tok == task.E) & (idx > pairs.pos[:, None])).sum(1).eq(1).all()
    assert (pairs.task_mask[rows, last]).all(), "the final E is graded"


# ---- intervention positions -----------------------------------------------------

@pytest.mark.parametrize("name,unk_p", [("multiobject", 0.0), ("multiobject", 0.3), ("multiobject_mod4", 0.0), ("sameobject", 0.0)])
def test_intervention_positions_never_special_tokens(name, unk_p):
    """intervention_positions picks demo or response tokens, never B, T, E or P, and picks both kinds."""
    task = symlib.make_task(name, unk_p=unk_p)
    tr = task.sample(2000, "all", gen(30))
    pos = intervention_positions(tr, gen(31))
    tok = tr.tokens[torch.arange(len(tr)), pos]
    assert not torch.isin(tok, torch.tensor([task.P, task.B, task.T, task.E])).any()
    assert (pos < tr.trigger_pos).any() and (pos > tr.trigger_pos).any()


def test_intervention_positions_are_uniform():
    """For one trial repeated, every demo and response position is drawn, each about equally often."""
    task = symlib.make_task("multiobject")
    one = task.trials_for_counts(torch.tensor([5]), gen(0))
    tr = one[torch.zeros(4000, dtype=torch.long)]
    pos = intervention_positions(tr, gen(32))
    counts = torch.bincount(pos, minlength=13)
    valid = [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]  # the 5 demos and the 5 responses
    assert counts[valid].sum() == 4000
    expected = 4000 / len(valid)
    assert ((counts[valid] - expected).abs() < 0.25 * expected).all()


# ---- counterfactual pairs ---------------------------------------------------------

def test_make_pairs_is_deterministic():
    """make_pairs with the same seed gives identical pairs; another seed gives others."""
    a = make_pairs(symlib.make_task("multiobject"), "up_down", "count_phase", n=200, seed=3)
    b = make_pairs(symlib.make_task("multiobject"), "up_down", "count_phase", n=200, seed=3)
    c = make_pairs(symlib.make_task("multiobject"), "up_down", "count_phase", n=200, seed=4)
    for f in ("tokens", "task_mask", "pos", "src_tokens", "src_pos", "swap", "source_value", "changed"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert not (a.tokens.shape == c.tokens.shape and torch.equal(a.tokens, c.tokens))


def test_count_phase_swaps_at_least_one_block():
    """count_phase pairs have two swap columns; each row swaps count, phase or both, and all three occur."""
    p = make_pairs(symlib.make_task("multiobject"), "up_down", "count_phase", n=300, seed=6)
    assert p.swap.shape == (300, 2) and p.swap.dtype == torch.bool
    assert p.swap.any(1).all()
    kinds = {tuple(r) for r in p.swap.tolist()}
    assert kinds == {(True, False), (False, True), (True, True)}
    single = make_pairs(symlib.make_task("multiobject"), "up_down", "count", n=50, seed=6)
    assert single.swap.shape == (50, 1) and single.swap.all()


@pytest.mark.parametrize("variable", ["count", "count_phase", "full"])
def test_pair_prefix_and_grading(variable):
    """A pair's tokens[:pos+1] is the start of a trial (B, demos, maybe T and responses); graded positions all lie after pos."""
    task = symlib.make_task("multiobject")
    p = make_pairs(task, "up_down", variable, n=300, seed=7)
    L = p.tokens.shape[1]
    idx = torch.arange(L)[None, :]
    assert (p.tokens[:, 0] == task.B).all()
    prefix = idx <= p.pos[:, None]
    assert not torch.isin(p.tokens[prefix], torch.tensor([task.P, task.E])).any()
    assert not (p.task_mask & (idx <= p.pos[:, None])).any()
    assert p.task_mask.any(1).all()
    # prefix demo count: all N demos when T is in the prefix, at most N otherwise
    n_demo = (torch.isin(p.tokens, torch.tensor(task.demo_ids)) & prefix & ((p.tokens == task.T) & prefix).cumsum(1).eq(0)).sum(1)
    has_t = ((p.tokens == task.T) & prefix).any(1)
    assert torch.equal(n_demo[has_t], p.target_count[has_t])
    assert (n_demo[~has_t] <= p.target_count[~has_t]).all()


def test_pairs_from_trials_keeps_the_target_prefix_and_values():
    """pairs_from_trials: tokens[:pos+1] equals the target trial; the stored values are the program's at each position."""
    task = symlib.make_task("multiobject")
    prog = make_program("up_down", task)
    g = gen(8)
    tgt, src = task.sample(200, "train", g), task.sample(200, "train", g)
    pos, spos = intervention_positions(tgt, g), intervention_positions(src, g)
    p = pairs_from_trials(prog, "count", tgt, pos, src, spos, generator=g)
    L = min(p.tokens.shape[1], tgt.tokens.shape[1])
    prefix = torch.arange(L)[None, :] <= pos[:, None]
    assert torch.equal(p.tokens[:, :L][prefix], tgt.tokens[:, :L][prefix])
    assert torch.equal(p.target_value, state_at(prog.trace(tgt), pos)["count"])
    assert torch.equal(p.source_value, state_at(prog.trace(src), spos)["count"])
    # a count swap where the source holds the target's own value changes nothing
    same = (p.source_value == p.target_value)
    assert same.any() and not p.changed[same].any()
    assert p.changed[~same].any()


def test_shuffled_sources_permutes_only_the_sources():
    """shuffled_sources keeps tokens, labels and targets, and permutes the source fields together."""
    task = symlib.make_task("multiobject")
    p = make_pairs(task, "up_down", "count", n=300, seed=9)
    s = p.shuffled_sources(gen(10))
    for f in ("tokens", "task_mask", "pos", "swap", "target_count", "target_value", "target_phase", "changed"):
        assert torch.equal(getattr(s, f), getattr(p, f)), f
    assert not torch.equal(s.src_pos, p.src_pos) or not torch.equal(s.src_tokens, p.src_tokens)
    # the same multiset of source rows
    key = lambda q: sorted(zip(map(tuple, q.src_tokens.tolist()), q.src_pos.tolist(), q.source_value.tolist()))
    assert key(s) == key(p)
    # fields were permuted together: the count and value still belong to the source trial and position
    demos = torch.isin(s.src_tokens, torch.tensor(task.demo_ids)).sum(1)
    assert torch.equal(demos, s.source_count)
    prog = make_program("up_down", task)
    src_trials = symlib.Trials(s.src_tokens, torch.zeros_like(s.src_tokens, dtype=torch.bool), s.source_count,
                               s.source_count + 1, (s.src_tokens != 0).sum(1))
    assert torch.equal(state_at(prog.trace(src_trials), s.src_pos)["count"], s.source_value)


def test_pairs_index_and_trim():
    """Indexing pairs keeps rows consistent and trims all-padding columns."""
    p = make_pairs(symlib.make_task("multiobject"), "up_down", "count", n=100, seed=11)
    q = p[torch.arange(10)]
    assert len(q) == 10
    assert (q.tokens[:, -1] != 0).any() and (q.src_tokens[:, -1] != 0).any()
    assert torch.equal(q.tokens, p.tokens[:10, : q.tokens.shape[1]])
    assert (p.tokens[:10, q.tokens.shape[1]:] == 0).all()
