"""Programs (Up-Down, Up-Up, Ctx-Distr), counterfactual labels, intervention positions, pairs, splits and relabelling."""
import pytest
import torch

import symlib
from symlib.game.counterfactuals import make_pairs, pairs_from_trials
from symlib.game.programs import DEMO, RESPONSE, counterfactual, intervention_positions, make_program, state_at

from helpers import gen

SINGLE = symlib.make_task("singleobject")


def _pad_to(x: torch.Tensor, L: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, L - x.shape[1]))


def _classes(task, tokens: torch.Tensor) -> torch.Tensor:
    """Token classes: every demo word becomes -1 (identities may differ), the rest stay."""
    out = tokens.clone()
    out[torch.isin(tokens, torch.tensor(task.demo_ids))] = -1
    return out


def _valid_variables(program: str, task) -> tuple[str, ...]:
    """The variable names ``program`` accepts: the generic ones and its own variables."""
    return ("count", "phase", "count_phase", "full", "null") + tuple(
        v for v in make_program(program, task).variables if v not in ("count", "phase"))


def _worked_example_target():
    tgt = SINGLE.trials_for_counts(torch.tensor([4]), gen(0))
    assert SINGLE.decode(tgt.tokens[0]) == "B D D D D T R R R R E"
    return tgt


# ---- the worked example of the README (The science in brief) ---------------------------------------------------------

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
    if variable not in _valid_variables(program, task):
        pytest.skip(f"{variable} is not a variable of {program}")
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


# ---- Mod-4: the count is reduced again after an intervention in the response phase ---

MOD4 = symlib.make_task("multiobject_mod4")


def _mod4_target():
    """``B D D T R R E`` (N=2, 2 mod 4 = 2 responses) from multiobject_mod4."""
    tgt = MOD4.trials_for_counts(torch.tensor([2]), gen(40))
    words = MOD4.decode(tgt.tokens[0]).split()
    assert [w[0] for w in words] == ["B", "D", "D", "T", "R", "R", "E"]
    return tgt


def _after(task, tokens, pos: int) -> str:
    """The words of a single counterfactual after position ``pos``."""
    return " ".join(task.decode(tokens[0]).split()[pos + 1:])


def test_mod4_updown_count_swap_in_response_phase_is_reduced():
    """Up-Down, Mod-4: count=5 written after the first R gives 'R E' (5 mod 4 = 1), not five more responses."""
    prog = make_program("up_down", MOD4)
    tokens, mask = counterfactual(prog, _mod4_target(), torch.tensor([4]), {"count": torch.tensor([5])})
    assert _after(MOD4, tokens, 4) == "R E"
    assert mask[0].nonzero()[:, 0].tolist() == [5, 6]


def test_mod4_updown_phase_swap_into_response_phase_is_reduced():
    """Up-Down, Mod-4: phase=response written after 7 demos leaves count 7 -> 3: 'R R R E'."""
    prog = make_program("up_down", MOD4)
    tgt = MOD4.trials_for_counts(torch.tensor([9]), gen(41))
    tokens, _ = counterfactual(prog, tgt, torch.tensor([7]), {"phase": torch.tensor([RESPONSE])})
    assert _after(MOD4, tokens, 7) == "R R R E"


def test_mod4_demo_phase_swap_is_not_reduced():
    """Up-Down, Mod-4: count=6 written in the demo phase (N=7) is not reduced there: one more demo, T, 7 mod 4 = 3 responses."""
    prog = make_program("up_down", MOD4)
    tgt = MOD4.trials_for_counts(torch.tensor([7]), gen(42))
    tokens, _ = counterfactual(prog, tgt, torch.tensor([2]), {"count": torch.tensor([6])})
    assert [w[0] for w in _after(MOD4, tokens, 2).split()] == ["D", "T", "R", "R", "R", "E"]


def test_mod4_upup_demo_count_swap_in_response_phase_is_reduced():
    """Up-Up, Mod-4: demo_count=5 after the first R becomes 1, which equals resp_count: E at once."""
    prog = make_program("up_up", MOD4)
    tokens, _ = counterfactual(prog, _mod4_target(), torch.tensor([4]), {"demo_count": torch.tensor([5])})
    assert _after(MOD4, tokens, 4) == "E"
    # 6 -> 2: one more response
    tokens, _ = counterfactual(prog, _mod4_target(), torch.tensor([4]), {"demo_count": torch.tensor([6])})
    assert _after(MOD4, tokens, 4) == "R E"


def test_mod4_ctx_distr_count_override_in_response_phase_is_reduced():
    """Ctx-Distr, Mod-4: a count override of 4 after the first R becomes 0: E at once."""
    prog = make_program("ctx_distr", MOD4)
    tokens, _ = counterfactual(prog, _mod4_target(), torch.tensor([4]), {"count": torch.tensor([4])})
    assert _after(MOD4, tokens, 4) == "E"


def test_round3_has_no_reduction_after_intervention():
    """Up-Down, Round-3: the transform is applied at T only; count=5 after the first R gives five more responses."""
    task = symlib.make_task("multiobject_round3")
    prog = make_program("up_down", task)
    tgt = task.trials_for_counts(torch.tensor([2]), gen(43))  # rounds to 3 responses
    tokens, _ = counterfactual(prog, tgt, torch.tensor([4]), {"count": torch.tensor([5])})
    assert _after(task, tokens, 4) == "R R R R R E"


# ---- any program variable can be aligned on its own ---------------------------------

def test_variable_names_cover_every_program_variable():
    """VARIABLE_NAMES holds the generic names and every program's variables."""
    names = symlib.VARIABLE_NAMES
    assert isinstance(names, tuple)
    for v in ("count", "phase", "count_phase", "full", "null", "demo_count", "resp_count"):
        assert v in names
    for p in symlib.PROGRAM_NAMES:
        assert set(make_program(p, SINGLE).variables) <= set(names)


def test_unknown_variable_for_program_lists_its_names():
    """resp_count on Up-Down raises a ValueError naming the variables Up-Down does have."""
    from symlib.game.counterfactuals import variable_blocks
    with pytest.raises(ValueError, match="count_phase") as e:
        variable_blocks(make_program("up_down", SINGLE), "resp_count")
    assert "up_down" in str(e.value) and "resp_count" in str(e.value).split("valid")[0]
    assert "demo_count" not in str(e.value)
    with pytest.raises(ValueError, match="demo_count"):
        make_pairs(SINGLE, "up_up", "nonsense", n=10, seed=0)


@pytest.mark.parametrize("variable", ["resp_count", "demo_count", "count"])
def test_upup_each_count_aligned_on_its_own(variable):
    """Up-Up: resp_count and demo_count are each swapped alone; the values are those of the swapped variable."""
    task = symlib.make_task("multiobject")
    prog = make_program("up_up", task)
    from symlib.game.counterfactuals import variable_blocks
    var = "demo_count" if variable == "count" else variable
    assert variable_blocks(prog, variable) == [[var]]
    g = gen(44)
    tgt, src = task.sample(300, "train", g), task.sample(300, "train", g)
    pos, spos = intervention_positions(tgt, g), intervention_positions(src, g)
    p = pairs_from_trials(prog, variable, tgt, pos, src, spos, generator=g)
    assert p.value_variable == var
    assert torch.equal(p.source_value, state_at(prog.trace(src), spos)[var])
    assert torch.equal(p.target_value, state_at(prog.trace(tgt), pos)[var])
    want, _ = counterfactual(prog, tgt, pos, {var: p.source_value}, generator=gen(0))
    assert torch.equal(_classes(task, p.tokens), _classes(task, want))
    assert p[torch.arange(5)].value_variable == var
    assert p.shuffled_sources(gen(1)).value_variable == var


def test_upup_resp_count_swap_in_response_phase():
    """Up-Up: writing resp_count=v after k responses of an N trial gives max(N - v, 0) more responses."""
    task, tr, k, pos, v = _response_phase_setup(seed=45)
    prog = make_program("up_up", task)
    tokens, _ = counterfactual(prog, tr, pos, {"resp_count": v})
    after = torch.arange(tokens.shape[1])[None, :] > pos[:, None]
    assert torch.equal(((tokens == task.R) & after).sum(1), (tr.counts - v).clamp(min=0))


def test_value_variable_is_the_number_variable_otherwise():
    """For count, phase, count_phase and full the values are the program's number variable."""
    task = symlib.make_task("multiobject")
    for variable in ("phase", "count_phase", "full", "null"):
        p = make_pairs(task, "up_up", variable, n=20, seed=1)
        assert p.value_variable == "demo_count"
    assert make_pairs(task, "up_down", "phase", n=20, seed=1).value_variable == "count"


# ---- Ctx-Distr: demos minus responses in the demo phase too ---------------------------

def test_ctx_distr_demo_phase_quantity_subtracts_responses():
    """Ctx-Distr: phase=response after 3 of 5 demos emits R; then demos - responses must reach 5: 3 more demos, T, 6 - 1 = 5 responses."""
    task = symlib.make_task("multiobject")
    prog = make_program("ctx_distr", task)
    tgt = task.trials_for_counts(torch.tensor([5]), gen(46))
    tokens, _ = counterfactual(prog, tgt, torch.tensor([3]), {"phase": torch.tensor([RESPONSE])}, generator=gen(47))
    words = [w[0] for w in _after(task, tokens, 3).split()]
    assert " ".join(words) == "R D D D T R R R R R E"
    # read directly: an R seen in the demo phase lowers the quantity
    s = state_at(prog.trace(tgt), torch.tensor([3]))
    s = prog.step(s, torch.tensor([task.R]))
    assert prog.read(s, "count").tolist() == [2]


# ---- splits with their own seeds -------------------------------------------------------

def test_split_seed_is_documented_and_distinct():
    """split_seed(seed, name) = (crc32(name) + seed * 0x9E3779B1) mod 2**32, distinct per split and per seed."""
    import zlib

    from symlib.game.counterfactuals import split_seed
    assert split_seed(3, "val") == (zlib.crc32(b"val") + 3 * 0x9E3779B1) % 2**32
    assert split_seed(0, "val") == zlib.crc32(b"val")
    names = ("train", "val", "test", "test_heldout", "alignment", "batches")
    seeds = {split_seed(s, n) for s in (0, 1, 2, 12345) for n in names}
    assert len(seeds) == 4 * len(names)
    assert all(isinstance(x, int) and 0 <= x < 2**32 for x in seeds)


def test_search_seeds_give_different_pairs_and_alignments():
    """A search's seed reaches its pairs and its starting alignment (torch keeps only a seed's
    low 32 bits, so seeds that differ only above them would give identical searches)."""
    from symlib.intervene.das import DASConfig, make_search_pairs, new_alignment
    task = symlib.make_task("multiobject")
    pairs = [make_search_pairs(task, DASConfig(seed=s, n_train=20, n_val=5, n_test=5))["train"] for s in (0, 1)]
    assert not torch.equal(pairs[0].tokens, pairs[1].tokens)
    rots = [new_alignment(DASConfig(seed=s), 16).forward(torch.eye(16)) for s in (0, 1)]
    assert not torch.allclose(rots[0], rots[1])


def test_make_splits_uses_one_seed_per_split():
    """make_splits: train/val/test on the training counts, test_heldout on held-out counts, each from split_seed."""
    from symlib.game.counterfactuals import make_splits, split_seed
    task = symlib.make_task("multiobject")
    sp = make_splits(task, "up_down", "count", 5, 60, 20, 30, n_test_heldout=25)
    assert set(sp) == {"train", "val", "test", "test_heldout"}
    assert [len(sp[k]) for k in ("train", "val", "test", "test_heldout")] == [60, 20, 30, 25]
    for k in ("train", "val", "test"):
        assert set(sp[k].target_count.tolist()) | set(sp[k].source_count.tolist()) <= set(symlib.TRAIN_COUNTS)
        ref = make_pairs(task, "up_down", "count", n=len(sp[k]), counts="train", seed=split_seed(5, k))
        assert torch.equal(sp[k].tokens, ref.tokens) and torch.equal(sp[k].src_tokens, ref.src_tokens)
    held = sp["test_heldout"]
    assert set(held.target_count.tolist()) <= set(symlib.HELDOUT_COUNTS)
    assert set(held.source_count.tolist()) <= set(symlib.HELDOUT_COUNTS)
    ref = make_pairs(task, "up_down", "count", n=25, counts="heldout", seed=split_seed(5, "test_heldout"))
    assert torch.equal(held.tokens, ref.tokens)
    assert not torch.equal(sp["val"].pos, sp["test"].pos[:20])
    assert set(make_splits(task, "up_down", "count", 5, 10, 10, 10)) == {"train", "val", "test"}


# ---- the same trials whatever the program or relabelling ----------------------------

@pytest.mark.parametrize("variable", ["count", "count_phase", "full", "phase"])
def test_same_pairs_across_programs_and_relabel(variable):
    """make_pairs with one seed draws the same targets, sources, positions and swap choices for every program and relabel."""
    from symlib.game.counterfactuals import wrong_labels
    task = symlib.make_task("multiobject")
    runs = [make_pairs(task, p, variable, n=200, seed=8, relabel=r)
            for p in symlib.PROGRAM_NAMES for r in (None, wrong_labels(seed=2))]
    ref = runs[0]
    idx = torch.arange(ref.tokens.shape[1])[None, :]
    for q in runs[1:]:
        for f in ("pos", "src_tokens", "src_pos", "swap", "target_count", "source_count"):
            assert torch.equal(getattr(q, f), getattr(ref, f)), f
        L = min(q.tokens.shape[1], ref.tokens.shape[1])
        prefix = idx[:, :L] <= ref.pos[:, None]
        assert torch.equal(q.tokens[:, :L][prefix], ref.tokens[:, :L][prefix])
    # the labels do differ somewhere
    assert any(q.tokens.shape != ref.tokens.shape or not torch.equal(q.tokens, ref.tokens) for q in runs[1:])


# ---- wrong-label control ----------------------------------------------------------------

def test_wrong_labels_is_a_seeded_derangement():
    """wrong_labels: a permutation of 0..max_value with no fixed point, the same for the same seed."""
    from symlib.game.counterfactuals import wrong_labels
    for seed in range(5):
        p = wrong_labels(40, seed)
        assert p.dtype == torch.long and p.shape == (41,)
        assert torch.equal(p.sort().values, torch.arange(41))
        assert not (p == torch.arange(41)).any()
        assert torch.equal(p, wrong_labels(40, seed))
    assert not torch.equal(wrong_labels(seed=0), wrong_labels(seed=1))
    assert wrong_labels(1).tolist() == [1, 0]


def _relabel_setup(program, variable, seed=50, task=None):
    from symlib.game.counterfactuals import wrong_labels
    task = task or symlib.make_task("multiobject")
    prog = make_program(program, task)
    g = gen(seed)
    tgt, src = task.sample(300, "train", g), task.sample(300, "train", g)
    pos, spos = intervention_positions(tgt, g), intervention_positions(src, g)
    perm = wrong_labels(seed=seed)
    return task, prog, tgt, pos, src, spos, perm


def _by_hand(perm, v):
    """perm[v], values beyond the permutation kept."""
    return torch.where(v < len(perm), perm[v.clamp(max=len(perm) - 1)], v)


@pytest.mark.parametrize("program,variable", [("up_down", "count"), ("up_up", "count"), ("up_up", "resp_count"),
                                              ("ctx_distr", "count")])
def test_relabel_writes_the_permuted_value(program, variable):
    """With relabel, the counterfactual is the one written by hand with perm[source value]; source_value stays true."""
    task, prog, tgt, pos, src, spos, perm = _relabel_setup(program, variable)
    p = pairs_from_trials(prog, variable, tgt, pos, src, spos, generator=gen(1), relabel=perm)
    var = p.value_variable
    true_v = prog.read(state_at(prog.trace(src), spos), var)
    assert torch.equal(p.source_value, true_v)
    want, want_mask = counterfactual(prog, tgt, pos, {var: _by_hand(perm, true_v)}, generator=gen(1))
    assert torch.equal(p.tokens, want) and torch.equal(p.task_mask, want_mask)
    plain = pairs_from_trials(prog, variable, tgt, pos, src, spos, generator=gen(1))
    assert not torch.equal(plain.changed, p.changed)


def test_relabel_changed_is_against_the_relabelled_counterfactual():
    """Up-Down count: a pair changes exactly when perm[source value] differs from the target's count."""
    task, prog, tgt, pos, src, spos, perm = _relabel_setup("up_down", "count", seed=51)
    p = pairs_from_trials(prog, "count", tgt, pos, src, spos, generator=gen(2), relabel=perm)
    assert torch.equal(p.changed, perm[p.source_value] != p.target_value)
    same = p.source_value == p.target_value
    assert same.any() and p.changed[same].all()


def test_relabel_flips_a_lone_phase_and_keeps_phase_in_count_phase():
    """A phase swapped alone is flipped under relabelling; with count_phase/full only the counts are permuted."""
    task, prog, tgt, pos, src, spos, perm = _relabel_setup("up_down", "phase", seed=52)
    p = pairs_from_trials(prog, "phase", tgt, pos, src, spos, generator=gen(3), relabel=perm)
    want, _ = counterfactual(prog, tgt, pos, {"phase": 1 - p.source_phase}, generator=gen(3))
    assert torch.equal(p.tokens, want)
    swap = torch.stack([torch.arange(300) % 3 != 1, torch.arange(300) % 3 != 0], 1)
    q = pairs_from_trials(prog, "count_phase", tgt, pos, src, spos, swap, generator=gen(4), relabel=perm)
    values = {"count": _by_hand(perm, q.source_value), "phase": q.source_phase}
    want, _ = counterfactual(prog, tgt, pos, values, {"count": swap[:, 0], "phase": swap[:, 1]}, generator=gen(4))
    assert torch.equal(q.tokens, want)
    f = pairs_from_trials(prog, "full", tgt, pos, src, spos, generator=gen(5), relabel=perm)
    want, _ = counterfactual(prog, tgt, pos, {"count": _by_hand(perm, f.source_value), "phase": f.source_phase},
                             generator=gen(5))
    assert torch.equal(f.tokens, want)


def test_relabel_through_make_splits():
    """make_splits passes relabel on: its pairs are make_pairs' with the same relabel."""
    from symlib.game.counterfactuals import make_splits, split_seed, wrong_labels
    task = symlib.make_task("multiobject")
    perm = wrong_labels(seed=0)
    sp = make_splits(task, "up_down", "count", 0, 40, 10, 10, relabel=perm)
    ref = make_pairs(task, "up_down", "count", n=40, seed=split_seed(0, "train"), relabel=perm)
    assert torch.equal(sp["train"].tokens, ref.tokens)
    plain = make_pairs(task, "up_down", "count", n=40, seed=split_seed(0, "train"))
    assert not (plain.tokens.shape == ref.tokens.shape and torch.equal(plain.tokens, ref.tokens))
