"""HuggingFace causal LMs and a user's own modules in symlib: wrapping, training, DAS, MAS, and the
messages a misfit gets. Tiny configs built locally; nothing is downloaded."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import symlib
from symlib.intervene import mas
from symlib.networks.training import load_checkpoint

pytest.importorskip("transformers")
import symlib.networks.hf as H  # noqa: E402

TASK = symlib.make_task("multiobject")


def trials(n=6, seed=0):
    return TASK.sample(n, "train", torch.Generator().manual_seed(seed), unk_p=0.0)


@pytest.mark.parametrize("family,first,n", [("gpt2", "transformer.h.0", 2), ("llama", "model.layers.0", 2)])
def test_block_names_and_layers(family, first, n):
    net = H.tiny_hf(family, TASK, d_model=16, n_layer=n, n_head=2, **({"n_kv_head": 1} if family == "llama" else {}))
    names = H.block_names(net)
    assert names[0] == first and len(names) == n
    assert H.wrap_hf(net).site_name == names[-1] and H.wrap_hf(net, layer=0).site_name == names[0]
    with pytest.raises(ValueError, match=r"has 2 blocks .* layer=5 is not one of them"):
        H.wrap_hf(net, layer=5)
    with pytest.raises(ValueError, match="not both"):
        H.wrap_hf(net, layer=0, site=first)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_states_and_swaps_follow_the_residual_stream(family):
    """Planted case: at the last block, the residual at position p feeds only logits at p (the final
    norm and the head act per position). So writing the source's state into the target at p must
    give the source's logits at p exactly and leave every other position as it was; writing the
    target's own state back changes nothing."""
    net = H.tiny_hf(family, TASK, d_model=16, n_layer=2, n_head=2, **({"n_kv_head": 1} if family == "llama" else {}))
    model = H.wrap_hf(net.eval(), layer=-1)
    tgt, src = trials(5, 1).tokens, trials(5, 2).tokens
    L = min(tgt.shape[1], src.shape[1])
    tgt, src = tgt[:, :L], src[:, :L]
    S_t, S_s = model.states(tgt), model.states(src)
    assert S_t.shape == (5, L, 16) and model.state_size() == 16
    pos = torch.tensor([1, 2, 3, 4, 5])
    rows = torch.arange(5)
    with torch.no_grad():
        base = model(tgt)
        same = model.run_with_state(tgt, None, pos, S_t[rows, pos])
        swapped = model.run_with_state(tgt, None, pos, S_s[rows, pos])
        src_logits = model(src)
    assert torch.allclose(same, base, atol=1e-5)
    assert torch.allclose(swapped[rows, pos], src_logits[rows, pos], atol=1e-4)
    keep = torch.ones_like(tgt, dtype=torch.bool)
    keep[rows, pos] = False
    assert torch.allclose(swapped[keep], base[keep], atol=1e-5)
    assert not torch.allclose(swapped[rows, pos], base[rows, pos], atol=1e-3)


def test_an_earlier_block_changes_later_positions_only():
    """At block 0 a swap at p reaches positions >= p (attention is causal) and none before it."""
    model = H.wrap_hf(H.tiny_gpt2(TASK, d_model=16, n_layer=2, n_head=2, dropout=0.0).eval(), layer=0)
    tgt, src = trials(4, 3).tokens, trials(4, 4).tokens
    L = min(tgt.shape[1], src.shape[1])
    tgt, src = tgt[:, :L], src[:, :L]
    pos = torch.tensor([3, 3, 3, 3])
    with torch.no_grad():
        base = model(tgt)
        out = model.run_with_state(tgt, None, pos, model.states(src)[:, 3])
    assert torch.allclose(out[:, :3], base[:, :3], atol=1e-5)
    assert not torch.allclose(out[:, 3:], base[:, 3:], atol=1e-3)


def _direct_iia(model, align, pairs):
    """Per pair, is every graded token right with the interchange done (teacher-forced)? And the
    free-running token rate: graded tokens right when the intervened network is fed its own answers,
    computed one position at a time with run_with_state (no symlib free-run code)."""
    align = align.eval()
    with torch.no_grad():
        h = align.interchange(model.state_at(pairs.tokens, None, pairs.pos), model.state_at(pairs.src_tokens, None, pairs.src_pos),
                              pairs.swap)
        pred = model.run_with_state(pairs.tokens, None, pairs.pos, h).argmax(-1)
        graded = pairs.task_mask[:, 1:]
        ok = ((pred[:, :-1] == pairs.tokens[:, 1:]) | ~graded).all(1)
        fed = pairs.tokens.clone()
        for t in range(pairs.tokens.shape[1] - 1):
            nxt = model.run_with_state(fed, None, pairs.pos, h)[:, t].argmax(-1)
            fed[:, t + 1] = torch.where(graded[:, t], nxt, fed[:, t + 1])
    right = (fed[:, 1:] == pairs.tokens[:, 1:]) & graded
    return ok, int(right.sum()) / int(graded.sum())


def test_train_das_and_mas_on_a_huggingface_model(tmp_path):
    """symlib.train(model=...) trains a wrapped GPT-2 (the loss falls; the run resumes from run_dir);
    DAS with controls and MAS beside a user's GRU run on it as on the book's networks; DAS's test numbers
    (per pair, changed pairs, free-running tokens, the no-swap control) equal a direct computation."""
    torch.manual_seed(0)
    hf = H.wrap_hf(H.tiny_gpt2(TASK, d_model=16, n_layer=1, n_head=2, seed=1))
    kw = dict(task="multiobject", arch="transformer", eval_every=10, n_eval_trials=32, n_train_trials=128,
              batch_size=32, progress=False, device="cpu")
    run = symlib.train(model=hf, max_steps=20, run_dir=tmp_path / "run", **kw)
    assert run.summary["steps"] == 20 and run.history[-1]["train_loss"] < run.history[1]["train_loss"]
    assert run.run_dir is not None and (tmp_path / "run" / "latest.pt").exists()
    with pytest.raises(ValueError, match="GPT2LMHeadModel you built yourself"):
        load_checkpoint(tmp_path / "run" / "latest.pt")
    again = H.wrap_hf(H.tiny_gpt2(TASK, d_model=16, n_layer=1, n_head=2, seed=1))
    more = symlib.train(model=again, max_steps=30, run_dir=tmp_path / "run", **kw)  # resumes at step 20
    assert more.summary["steps"] == 30 and [h["step"] for h in more.history][:3] == [0, 10, 20]
    assert symlib.train(model=H.wrap_hf(H.tiny_gpt2(TASK, d_model=16, n_layer=1, n_head=2)), max_steps=2, **kw).run_dir is None

    size = dict(n_train=64, n_val=32, n_test=32, eval_every=5, max_steps=5, n_units=4)
    res = symlib.run_das_with_controls(more.model.eval(), TASK, symlib.DASConfig(**size), progress=False)
    m = res.metrics
    assert set(m["controls"]) == set(symlib.CONTROL_NAMES)
    # the numbers are those of the alignment on this network, recomputed here through the wrapper's own passes
    test = symlib.intervene.das.make_search_pairs(TASK, symlib.DASConfig(**size))["test"]
    ok, token_rate = _direct_iia(more.model.eval(), res.alignment, test)
    assert np.array_equal(res.rows["correct"], ok.numpy())
    assert m["iia_test"] == pytest.approx(float(ok.float().mean()), abs=1e-12)
    assert m["iia_changed_test"] == pytest.approx(float(ok[test.changed].float().mean()), abs=1e-12)
    assert m["iia_token_test"] == pytest.approx(token_rate, abs=1e-12) and 0 < token_rate < 1
    with torch.no_grad():
        pred = more.model(test.tokens).argmax(-1)
    own = ((pred[:, :-1] == test.tokens[:, 1:]) | ~test.task_mask[:, 1:]).all(1)
    assert m["controls"]["no_swap"]["iia_test"] == pytest.approx(float(own.float().mean()), abs=1e-12)

    class MyGRU(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.rnn, self.out = nn.Embedding(9, 12), nn.GRU(12, 12, batch_first=True), nn.Linear(12, 9)

        def forward(self, tokens):
            return self.out(self.rnn(self.emb(tokens))[0])

    own = symlib.wrap_model(MyGRU(), "rnn").eval()
    r = mas.run_mas([mas.MASNetwork("gpt2", more.model.eval(), TASK), mas.MASNetwork("own", own, TASK)],
                    mas.MASConfig(**size), progress=False)
    assert r.matrix("iia_changed_test").shape == (2, 2)


def test_train_refuses_an_unwrapped_module():
    with pytest.raises(TypeError, match="wrap your GPT2LMHeadModel with symlib.wrap_model"):
        symlib.train(model=H.tiny_gpt2(TASK, d_model=16, n_layer=1, n_head=2), max_steps=1, progress=False)


def test_a_users_module_that_does_not_fit_gets_a_message():
    class Mean(nn.Module):
        def forward(self, h):
            return h.mean(1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.rnn, self.pool, self.out = nn.Embedding(9, 8), nn.GRU(8, 8, batch_first=True), Mean(), nn.Linear(8, 9)

        def forward(self, tokens):
            h = self.rnn(self.emb(tokens))[0]
            return self.out(h + self.pool(h)[:, None])

    with pytest.raises(ValueError, match=r"output of 'pool' has shape \(1, 8\).*3 axes"):
        symlib.wrap_model(Net(), "pool", time_dim=1).state_size()
    with pytest.raises(ValueError, match=r"the tokens are 5 long: its axis 0 is not time"):
        symlib.wrap_model(Net(), "emb", time_dim=0).states(torch.ones(3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="bidirectional GRU"):
        symlib.wrap_model(nn.Sequential(nn.GRU(8, 8, bidirectional=True)), "0")
    with pytest.raises(ValueError, match="proj_size=4"):
        symlib.wrap_model(nn.Sequential(nn.LSTM(8, 8, proj_size=4)), "0")
    # a site that fits (the embedding, time on axis 1) works
    assert symlib.wrap_model(Net(), "emb", time_dim=1).states(torch.ones(3, 5, dtype=torch.long)).shape == (3, 5, 8)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", [nn.GRU, nn.RNN])
def test_one_layer_scan_equals_the_step_loop(kind, batch_first):
    """A one-layer GRU/RNN is read and intervened on with whole-sequence calls (``_scan``); states,
    logits after a swap at per-row positions, and the final state equal the step-by-step loop's."""
    torch.manual_seed(0)
    rnn = kind(6, 10, batch_first=batch_first)
    model = symlib.wrap_model(nn.Sequential(rnn), "0")
    x = torch.randn(5, 9, 6) if batch_first else torch.randn(9, 5, 6)
    pos, h = torch.tensor([0, 3, 8, 5, 7]), torch.randn(5, 10)
    got = {}
    for path in ("scan", "loop"):
        if path == "loop":
            model._single_state = lambda: False
        cap: list = []
        with torch.no_grad(), model.patched(capture=cap):
            rnn(x)
        with torch.no_grad(), model.patched(replace=(pos, h), capture=cap):
            out, h_n = rnn(x)
        got[path] = (cap[0], cap[1], out, h_n)
    for a, b in zip(got["scan"], got["loop"]):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    # a search's step needs nothing before pos: the scan then skips the first call, and what follows pos is the same
    del model._single_state
    with torch.no_grad(), model.patched(replace=(pos, h), prefix=False):
        out_np, h_np = rnn(x)
    full, _ = got["scan"][2], got["scan"][3]
    tb = lambda y: y if batch_first else y.transpose(0, 1)
    after = torch.arange(9)[None, :] >= pos[:, None]
    assert torch.allclose(tb(out_np)[after], tb(full)[after], atol=1e-6) and torch.allclose(h_np, got["scan"][3], atol=1e-6)
    assert (tb(out_np)[~after] == 0).all()
