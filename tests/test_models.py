"""Networks: fast paths against slow references, states, run_with_state (interventions), free running, configs."""
import pytest
import torch

import symlib
from symlib.networks.models import ModelConfig, cut_at_end

from helpers import MULTI, gen, random_positions, small_model

ARCHS = symlib.ARCH_NAMES


@pytest.fixture(scope="module")
def trials():
    """A padded batch of MultiObject trials with mixed lengths."""
    return MULTI.sample(12, "all", gen(100))


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    d = 16
    return small_model(request.param, d_model=d, seed=1)


def test_forward_equals_stepwise(model, trials):
    """The fast forward pass equals the one-token-at-a-time reference (atol 1e-5)."""
    with torch.no_grad():
        assert torch.allclose(model(trials.tokens), model.forward_stepwise(trials.tokens), atol=1e-5)


def test_states_and_state_at_agree(model, trials):
    """states(tokens, site)[b, pos[b]] equals state_at(tokens, site, pos) for every site, per-row positions."""
    pos = random_positions(trials.lengths, gen(101))
    rows = torch.arange(len(trials))
    with torch.no_grad():
        for site in model.sites:
            S = model.states(trials.tokens, site)
            assert S.shape == (len(trials), trials.tokens.shape[1], model.state_size(site))
            assert torch.allclose(S[rows, pos], model.state_at(trials.tokens, site, pos), atol=1e-5), site


def test_recurrent_state_is_what_the_readout_reads():
    """For RNNs, the state's top h after token t is what forward reads to predict token t+1 ([h; c] for the LSTM)."""
    tr = MULTI.sample(6, "all", gen(102))
    for arch in ("gru", "lstm"):
        m = small_model(arch, d_model=16, seed=2)
        with torch.no_grad():
            S = m.states(tr.tokens, "state")
            h = S[..., : m.hidden]
            assert torch.allclose(m.readout(h), m(tr.tokens), atol=1e-5)
            assert torch.allclose(m.states(tr.tokens, "embed"), m.embed(tr.tokens))


def test_run_with_state_natural_state_reproduces_forward(model, trials):
    """run_with_state(tokens, site, pos, natural state) gives the plain forward logits, with a different pos per row."""
    with torch.no_grad():
        ref = model(trials.tokens)
        L = trials.tokens.shape[1]
        for seed, site in enumerate(model.sites):
            pos = random_positions(trials.lengths, gen(103 + seed))
            assert pos.unique().numel() > 1
            h = model.state_at(trials.tokens, site, pos)
            out = model.run_with_state(trials.tokens, site, pos, h)
            assert torch.allclose(out, ref, atol=1e-5), site
            out = model.run_with_state(trials.tokens, site, pos, h, prefix=False)
            after = (torch.arange(L)[None, :] >= pos[:, None])
            assert torch.allclose(out[after], ref[after], atol=1e-5), site


def test_run_with_state_select_equals_full(model, trials):
    """run_with_state(..., select=select) equals run_with_state(prefix=False)[select] for any selection at or after pos."""
    g = gen(104)
    L = trials.tokens.shape[1]
    with torch.no_grad():
        for site in model.sites:
            pos = random_positions(trials.lengths, g)
            h = model.state_at(trials.tokens, site, pos) + 0.5 * torch.randn(len(trials), model.state_size(site), generator=g)
            t = torch.arange(L)[None, :]
            select = (t >= pos[:, None]) & (torch.rand(len(trials), L, generator=g) < 0.6)
            select[0] = False  # a row with nothing selected
            select[1, pos[1]:] = True  # a row with everything selected, to the last column
            full = model.run_with_state(trials.tokens, site, pos, h, prefix=False)
            assert torch.allclose(model.run_with_state(trials.tokens, site, pos, h, select=select), full[select], atol=1e-5), site


def _reference_free_run(model, tokens, feed):
    """Feed the network's argmax at the fed positions, one token at a time, recomputing the forward each step."""
    inp = tokens.clone()
    for i in range(1, tokens.shape[1]):
        with torch.no_grad():
            pred = model(inp[:, :i])[:, -1].argmax(-1)
        inp[:, i] = torch.where(feed[:, i], pred, inp[:, i])
    return inp


def test_free_run_tokens_equals_reference(model, trials):
    """free_run_tokens equals a step-by-step free run (argmax fed back at the task-mask positions)."""
    ref = _reference_free_run(model, trials.tokens, trials.task_mask)
    out = model.free_run_tokens(trials.tokens, trials.task_mask)
    assert torch.equal(out, ref)
    assert torch.equal(out[~trials.task_mask], trials.tokens[~trials.task_mask])
    # the random network does not answer like the data, so feeding really changed inputs somewhere
    assert not torch.equal(out, trials.tokens)


def test_free_run_tokens_with_scattered_feed():
    """free_run_tokens equals the reference when the fed positions are scattered and start at different places."""
    g = gen(105)
    tr = MULTI.sample(8, "all", g)
    feed = (torch.rand(tr.tokens.shape, generator=g) < 0.3) & (tr.tokens != 0)
    feed[0] = False
    for arch in ("gru", "lstm", "transformer"):
        m = small_model(arch, d_model=16, seed=3)
        assert torch.equal(m.free_run_tokens(tr.tokens, feed), _reference_free_run(m, tr.tokens, feed)), arch


def test_nonpad_logits_matches_masked_forward(model, trials):
    """nonpad_logits returns the same (logit row, target) pairs as masking the full forward (order may differ)."""
    tokens = trials.tokens
    with torch.no_grad():
        logits, tgt = model.nonpad_logits(tokens, tokens)
        keep = tokens[:, 1:] != 0
        ref_logits, ref_tgt = model(tokens)[:, :-1][keep], tokens[:, 1:][keep]
    assert logits.shape == ref_logits.shape and tgt.shape == ref_tgt.shape
    a = torch.cat([logits, 100.0 * tgt[:, None].float()], 1)
    b = torch.cat([ref_logits, 100.0 * ref_tgt[:, None].float()], 1)
    D = torch.cdist(a.double(), b.double())
    assert (D.min(1).values < 1e-4).all() and (D.min(0).values < 1e-4).all()  # every row has a twin, both ways
    # and as multisets: the same targets as often, the same logit totals
    assert torch.equal(torch.bincount(tgt, minlength=9), torch.bincount(ref_tgt, minlength=9))
    assert torch.allclose(logits.sum(0), ref_logits.sum(0), atol=1e-3)


def test_changing_the_state_changes_only_later_logits(model, trials):
    """Replacing the state at pos changes logits at pos and (through recurrence or later layers) after it, never before pos."""
    g = gen(106)
    L = trials.tokens.shape[1]
    t = torch.arange(L)[None, :]
    with torch.no_grad():
        ref = model(trials.tokens)
        for site in model.sites:
            pos = random_positions(trials.lengths - 1, g, low=1)
            h = model.state_at(trials.tokens, site, pos)
            h = h + 3.0 * torch.randn(h.shape, generator=g)
            out = model.run_with_state(trials.tokens, site, pos, h)
            before = t < pos[:, None]
            assert torch.allclose(out[before], ref[before], atol=1e-6), site
            rows = torch.arange(len(trials))
            at = (out[rows, pos] - ref[rows, pos]).abs().amax(-1)
            assert (at > 1e-4).all(), site
            later = (t > pos[:, None]) & (t < trials.lengths[:, None])
            changed = ((out - ref).abs().amax(-1)[later] > 1e-4).float().mean()
            if site == f"resid.{len(getattr(model, 'blocks', [])) - 1}":
                # the top residual stream feeds only its own position's read-out
                assert torch.allclose(out[later], ref[later], atol=1e-6), site
            else:
                assert changed > 0.5, site


def test_dropout_only_in_training_mode():
    """Eval mode is deterministic; train mode applies dropout (outputs differ between calls)."""
    torch.manual_seed(0)
    m = symlib.make_model("gru", d_model=16, dropout=0.5)
    x = MULTI.sample(4, "all", gen(107)).tokens
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    assert not torch.equal(m(x), m(x))


def test_greedy_rollout_keeps_given_tokens_and_cuts_at_e():
    """greedy_rollout keeps every ungraded input, starts with B and has nothing after its first E past the trigger."""
    m = small_model("gru", d_model=16, seed=4)
    tr = MULTI.sample(10, "all", gen(108))
    out = symlib.greedy_rollout(m, tr.tokens, tr.task_mask, extra=5)
    assert out.shape == (10, tr.tokens.shape[1] + 5)
    ungraded_given = (~tr.task_mask) & (tr.tokens != 0)
    assert torch.equal(out[:, : tr.tokens.shape[1]][ungraded_given], tr.tokens[ungraded_given])
    cut = cut_at_end(out, tr.trigger_pos)
    assert torch.equal(cut, out)


# ---- configuration errors ---------------------------------------------------------

def test_unknown_arch_lists_valid_ones():
    """An unknown architecture raises a ValueError listing every valid one."""
    with pytest.raises(ValueError) as e:
        ModelConfig(arch="mamba")
    assert "mamba" in str(e.value)
    assert all(a in str(e.value) for a in ARCHS)


def test_odd_lstm_width_is_rejected():
    """An LSTM's [h; c] state needs an even d_model; the error names the width."""
    with pytest.raises(ValueError, match="17"):
        ModelConfig(arch="lstm", d_model=17)
    assert symlib.make_model("lstm", d_model=18).state_size("state") == 18


def test_heads_must_divide_width():
    """d_model not divisible by n_heads raises a ValueError naming both sizes."""
    with pytest.raises(ValueError) as e:
        ModelConfig(arch="transformer", d_model=30, n_heads=4)
    assert "30" in str(e.value) and "4" in str(e.value)
    with pytest.raises(ValueError) as e:
        ModelConfig(arch="transformer_nope", d_model=30, n_heads=4)
    assert "30" in str(e.value) and "4" in str(e.value)


def test_state_sizes_and_sites():
    """State sizes: GRU d, LSTM [h; c] = d, Transformer d at every residual site; sites are named as documented."""
    for arch in ARCHS:
        m = symlib.make_model(arch, d_model=16)
        for site in m.sites:
            assert m.state_size(site) in (16, 8)
        assert m.state_size(None) == 16
    assert symlib.make_model("gru", d_model=16).sites == ("state", "embed")
    assert symlib.make_model("transformer", d_model=16).sites == ("embed", "resid.0", "resid.1")
    with pytest.raises(ValueError, match="resid.0"):
        symlib.make_model("transformer", d_model=16).states(torch.ones(1, 3, dtype=torch.long), "resid.7")
