"""Model Alignment Search, stitching and the similarity baselines, on hand-built networks
whose answer is known (``HandCounter``: the count in one hidden unit)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import symlib
from symlib.intervene import mas
from symlib.analyses.similarity import condition_states, linear_cka, rsa, similarity_matrices

from helpers import MULTI, HandCounter, gen, permuted_counter, small_model, wrap

FAST = dict(n_units=1, n_train=1200, n_val=200, n_test=300, max_steps=300, eval_every=50, lr=1e-2, patience=3)


def counters():
    """A: count in unit 0 of 8; B: count in unit 5 of 12 (other units shuffled); C: no count unit."""
    a = wrap(HandCounter(uniform_demo=True), "rnn")
    perm = [3, 7, 1, 9, 2, 0, 4, 11, 6, 10, 8, 5]
    b = wrap(permuted_counter(perm, uniform_demo=True), "rnn")
    c = wrap(HandCounter(with_count=False, uniform_demo=True), "rnn")
    return a, b, c, perm.index(0)


def test_permuted_counter_still_solves_the_task():
    a, b, c, _ = counters()
    trials = MULTI.sample(200, "train", gen(3))
    assert symlib.evaluate(b, trials)["trial_acc"] == 1.0
    assert torch.equal(a(trials.tokens).argmax(-1), b(trials.tokens).argmax(-1))


def test_mas_finds_the_planted_count_across_networks():
    """Two counters of different widths with the count in different units: every direction
    between them swaps the count (IIA >= 0.95), each alignment picks its count unit; into and
    out of the network without a count, the swap fails; untrained alignments score low."""
    a, b, c, unit_b = counters()
    res = mas.run_mas([("A", a, MULTI), ("B", b, MULTI), ("C", c, MULTI)], progress=False,
                      directions=[("A", "A"), ("B", "B"), ("A", "B"), ("B", "A")], **FAST)
    M = res.matrix()
    assert res.names == ["A", "B", "C"]
    assert M.shape == (3, 3) and not np.isnan(M).any()
    for s, t in [(0, 0), (1, 1), (0, 1), (1, 0)]:
        assert M[s, t] >= 0.95, (s, t, M)
    assert M[2, 0] < 0.5 and M[2, 1] < 0.5  # C holds no count to give
    assert abs(float(res.alignments["A"].Q.detach()[0, 0])) > 0.95
    assert abs(float(res.alignments["B"].Q.detach()[unit_b, 0])) > 0.95
    ctl = res.matrix("initial_iia_changed_test")
    assert np.nanmax(ctl[:2, :2]) < 0.6
    t = res.table.set_index(["source", "target"])
    assert t.loc[("A", "B"), "trained_by"] == "behaviour" and t.loc[("A", "C"), "trained_by"] == "none"


def test_diagonal_pairs_are_the_das_pairs():
    """A MAS direction from a network to itself uses the same test pairs as DAS with the same seed."""
    a, b, _, _ = counters()
    res = mas.run_mas({"A": (a, MULTI), "B": (b, MULTI)}, progress=False, directions="self", **{**FAST, "max_steps": 50})
    das = symlib.run_das(a, MULTI, progress=False, **{**FAST, "max_steps": 50})
    t = res.table.set_index(["source", "target"])
    assert t.loc[("A", "A"), "n_test"] == das.metrics["n_test"]
    assert t.loc[("A", "A"), "n_changed_test"] == das.metrics["n_changed_test"]


def test_cl_loss_alone_aligns_an_inaccessible_network():
    """B is treated as causally inaccessible: its directions learn only from the CL loss, yet a
    behavioural test of A -> B swaps the count as well as full MAS does (>= 0.9)."""
    a, b, _, unit_b = counters()
    res = mas.run_mas([("A", a, MULTI), ("B", b, MULTI)], progress=False, directions=[("A", "A"), ("B", "A")],
                      cl_directions=[("A", "B"), ("B", "B")], **{**FAST, "max_steps": 400})
    t = res.table.set_index(["source", "target"])
    assert t.loc[("A", "B"), "trained_by"] == "cl"
    assert t.loc[("A", "B"), "cl_matched"] > 0.5
    assert t.loc[("A", "B"), "iia_changed_test"] >= 0.9, res.table
    assert abs(float(res.alignments["B"].Q.detach()[unit_b, 0])) > 0.9


def test_cl_loss_matches_its_formula():
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    # row 0: identical (0); row 1: MSE (0 + 16) / 2 = 8, cos = -1 -> 0.5 * (8 + 2) = 5
    assert float(mas.cl_loss(h, t)) == pytest.approx(2.5)


def test_cl_targets_have_the_counterfactual_program_state():
    """Each natural state picked for the CL loss comes from a position whose program state is the
    pair's counterfactual state."""
    a, _, _, _ = counters()
    prog = symlib.make_program("up_down", MULTI)
    net = mas.MASNetwork("A", a, MULTI)
    keys, H = mas.natural_pool(net, prog, 300, 0)
    pairs = symlib.make_pairs(MULTI, "up_down", "count", 300, seed=4)
    need = mas._state_keys(prog, mas.counterfactual_states(pairs, prog, "count"))
    Hn, ok = mas.cl_targets(need, keys, H, 0)
    assert ok.float().mean() > 0.5
    # matched exactly where some pool state has the needed program state, and then with one such state
    same = (need[:, None, :] == keys[None, :, :]).all(-1)  # (N, M)
    assert torch.equal(ok, same.any(1)) and not ok.all()
    picked = (Hn[:, None, :] == H[None, :, :]).all(-1)
    assert (picked & same)[ok].any(1).all() and (Hn[~ok] == 0).all()
    # the hand-built counter's unit 0 is the count: the natural state's count is the source's
    assert torch.allclose(Hn[ok, 0], pairs.source_value[ok].float())


def test_stitching_maps_a_whole_state():
    a, b, c, _ = counters()
    res = mas.run_stitching([("A", a, MULTI), ("B", b, MULTI)], progress=False, directions=[("A", "B")],
                            **{**FAST, "max_steps": 400, "lr": 1e-2})
    row = res.table.iloc[0]
    assert (row.source, row.target) == ("A", "B")
    assert row.iia_changed_test >= 0.9, res.table
    assert row.initial_iia_changed_test < row.iia_changed_test


def test_cross_task_pairs_read_the_source_program():
    """A SingleObject network as source of a MultiObject one: pairs come from each network's own
    task, the swapped value from the source's program, and the planted count still transfers."""
    single = symlib.make_task("singleobject")
    a, _, _, _ = counters()
    # a SingleObject counter: the single demo word (id 3) counts up, R (id 4) counts down, T is 5
    s_net = HandCounter(uniform_demo=True)
    with torch.no_grad():
        w = s_net.rnn.weight_ih_l0
        w.zero_()
        w[0, 3], w[0, 4], w[1, 5] = 1.0, -1.0, 1.0
        s_net.out.weight.zero_()
        s_net.out.weight[4, 0], s_net.out.weight[4, 1] = 10.0, -10.0
        s_net.out.weight[[3, 5], 2] = 20.0
    s = wrap(s_net, "rnn")
    assert single.vocab[3:6] == ("D", "R", "T"), single.vocab
    assert symlib.evaluate(s, single.sample(200, "train", gen(2)))["trial_acc"] == 1.0
    res = mas.run_mas([("multi", a, MULTI), ("single", s, single)], progress=False, **FAST)
    M = res.matrix()
    assert M.min() >= 0.9, res.table


def test_bad_input_is_refused_before_any_work():
    a, b, _, _ = counters()
    nets = [("A", a, MULTI), ("B", b, MULTI)]
    with pytest.raises(ValueError, match="not in this search; networks: A, B"):
        mas.run_mas(nets, directions=[("A", "Z")], progress=False)
    with pytest.raises(ValueError, match="wider than network 'A'"):
        mas.run_mas(nets, n_units=9, progress=False)
    with pytest.raises(ValueError, match="variables they share"):
        mas.run_mas([mas.MASNetwork("A", a, MULTI, program="up_up"), mas.MASNetwork("B", b, MULTI)],
                    variable="resp_count", progress=False)
    with pytest.raises(ValueError, match="unique"):
        mas.run_mas([("A", a, MULTI), ("A", b, MULTI)], progress=False)
    with pytest.raises(ValueError, match="MAS alignment function"):
        mas.run_mas(nets, alignment="revnet", progress=False)


def test_mas_runs_on_book_networks_of_other_widths():
    """A GRU of width 16, an LSTM ([h; c], 12 dims) and a Transformer residual stream of 16 in one search."""
    nets = [("gru", small_model("gru", 16), MULTI), ("lstm", small_model("lstm", 12), MULTI),
            ("tf", small_model("transformer", 16), MULTI)]
    res = mas.run_mas(nets, progress=False, n_units=4, n_train=256, n_val=64, n_test=64, max_steps=4, eval_every=2)
    assert res.matrix().shape == (3, 3)
    assert {m.d for m in res.alignments.values()} == {12, 16}
    assert res.metrics["steps"] >= 2


# ---- similarity baselines ---------------------------------------------------------------

def test_cka_known_cases():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6))
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(X, X) == pytest.approx(1.0)
    assert linear_cka(X, 3.0 * X @ Q) == pytest.approx(1.0)  # rotation and scale
    assert linear_cka(X, np.hstack([X, np.zeros((50, 3))])) == pytest.approx(1.0)  # other width
    assert linear_cka(X, rng.normal(size=(50, 6))) < 0.5
    with pytest.raises(ValueError, match="same rows"):
        linear_cka(X, X[:10])


def test_rsa_known_cases():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 5))
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert rsa(X, X) == pytest.approx(1.0)
    assert rsa(X, 2.0 * X @ Q, rdm_method="euclidean") == pytest.approx(1.0)
    # agrees with a plain computation: Spearman between correlation-distance RDMs
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr
    Y = rng.normal(size=(20, 7))
    ref = spearmanr(pdist(X, "correlation"), pdist(Y, "correlation")).statistic
    assert rsa(X, Y) == pytest.approx(ref, abs=1e-9)


def test_similarity_matrices_on_condition_states():
    a, b, c, _ = counters()
    states = {n: condition_states(m, MULTI, n_trials=100) for n, m in (("A", a), ("B", b), ("C", c))}
    sim = similarity_matrices(states)
    assert sim["names"] == ["A", "B", "C"]
    for k in ("cka", "rsa"):
        M = sim[k]
        assert M.shape == (3, 3) and np.allclose(M, M.T) and np.allclose(np.diag(M), 1)
    assert sim["cka"][0, 1] > 0.95  # the same function, units reordered


def test_searches_are_cached(tmp_path):
    """A second identical call loads the search from the store: the same table and maps, no training."""
    a, b, _, _ = counters()
    nets = [("A", a, MULTI), ("B", b, MULTI)]
    kw = {**FAST, "max_steps": 20, "eval_every": 10}
    first = mas.run_mas(nets, progress=False, store=tmp_path, **kw)
    again = mas.run_mas(nets, progress=False, store=tmp_path, **kw)
    assert again.metrics.get("cached") and not first.metrics.get("cached")
    assert again.table.equals(first.table)
    assert torch.equal(again.alignments["B"].Q, first.alignments["B"].Q)
    other = mas.run_mas(nets, progress=False, store=tmp_path, **{**kw, "seed": 1})
    assert not other.metrics.get("cached")
    st = mas.run_stitching(nets, progress=False, store=tmp_path, directions=[("A", "B")], **kw)
    st2 = mas.run_stitching(nets, progress=False, store=tmp_path, directions=[("A", "B")], **kw)
    assert st2.metrics.get("cached") and st2.table.equals(st.table)


def test_wrong_label_control_scores_low_where_the_real_search_scores_high():
    """MAS trained and tested on permuted swapped values (relabel=True) cannot fit them with a
    rotation: far below the real search on the same networks."""
    a, b, _, _ = counters()
    nets = [("A", a, MULTI), ("B", b, MULTI)]
    real = mas.run_mas(nets, progress=False, **FAST)
    ctl = mas.run_mas(nets, progress=False, relabel=True, **FAST)
    assert np.nanmin(real.matrix()) >= 0.95
    assert np.nanmax(ctl.matrix()) < 0.5, ctl.table
    with pytest.raises(ValueError, match="relabel"):
        mas.run_mas(nets, progress=False, **{**FAST, "relabel": True, "cl_eps": 0.1})


def test_state_keys_tell_every_program_state_apart():
    """Ctx-Distr's program state has six fields; two states that differ only in an override (none,
    -1, against 15 or 31) are different states, and the CL loss must not pull one toward the other."""
    task = symlib.make_task("multiobject")
    prog = symlib.make_program("ctx_distr", task)
    base = {"count_override": torch.tensor([-1]), "demos": torch.tensor([3]), "n": torch.tensor([5]),
            "phase": torch.tensor([1]), "phase_override": torch.tensor([-1]), "resps": torch.tensor([2])}
    other = [dict(base, count_override=torch.tensor([v])) for v in (15, 31)]
    pool = mas._state_keys(prog, base)
    for o in other:
        need = mas._state_keys(prog, o)
        assert not torch.equal(need, pool)
        _, ok = mas.cl_targets(need, pool, torch.ones(1, 4), 0)
        assert not ok.any()
    _, ok = mas.cl_targets(mas._state_keys(prog, base), pool, torch.ones(1, 4), 0)
    assert ok.all()


def test_normalisation_lets_mas_align_networks_of_different_scales():
    """Two counters with the count in unit 0, one at scale 1, the other at scale 20 with an offset of 7:
    a rotation cannot carry a value across (it keeps lengths and has no offset), so orthogonal MAS fails
    between them; with each network's states z-scored (normalise=True) it swaps the count both ways, and
    an affine map (linear with an offset) matches them without normalisation."""
    from helpers import scaled_counter
    a = wrap(scaled_counter(1.0, 0.0, uniform_demo=True), "rnn")
    b = wrap(scaled_counter(20.0, 7.0, uniform_demo=True), "rnn")
    trials = MULTI.sample(200, "train", gen(3))
    assert symlib.evaluate(b, trials)["trial_acc"] == 1.0
    assert torch.equal(a(trials.tokens).argmax(-1), b(trials.tokens).argmax(-1))
    nets = [("A", a, MULTI), ("B", b, MULTI)]
    kw = {**FAST, "max_steps": 400, "plateau_steps": 0}
    raw = mas.run_mas(nets, progress=False, **kw).matrix()
    norm = mas.run_mas(nets, progress=False, normalise=True, **kw)
    M = norm.matrix()
    assert M[0, 1] >= 0.95 and M[1, 0] >= 0.95, M
    assert raw[0, 1] < 0.5 and raw[1, 0] < 0.5, raw
    # the statistics travel with the alignment: B's count unit has mean ~ 7 + 20 * mean count
    sd = norm.alignments["B"].state_dict()
    assert float(sd["mean"][0]) > 50 and float(sd["std"][0]) > 20 * float(norm.alignments["A"].state_dict()["std"][0]) * 0.9
    aff = mas.run_mas(nets, progress=False, alignment="affine", **{**kw, "max_steps": 1500}).matrix()
    assert aff[0, 1] >= 0.9 and aff[1, 0] >= 0.9, aff


def test_normalised_searches_are_cached_with_their_statistics(tmp_path):
    from helpers import scaled_counter
    b = wrap(scaled_counter(20.0, 7.0, uniform_demo=True), "rnn")
    st = symlib.ResultsStore(tmp_path)
    kw = {**FAST, "max_steps": 50}
    first = mas.run_mas([("B", b, MULTI)], progress=False, normalise=True, directions="self", store=st, **kw)
    again = mas.run_mas([("B", b, MULTI)], progress=False, normalise=True, directions="self", store=st, **kw)
    assert again.metrics.get("cached") is True
    assert torch.equal(again.alignments["B"].mean, first.alignments["B"].mean)
    assert again.matrix().tolist() == first.matrix().tolist()
    das = symlib.run_das(b, MULTI, normalise=True, progress=False, store=st, **kw)
    das2 = symlib.run_das(b, MULTI, normalise=True, progress=False, store=st, **kw)
    assert das2.metrics.get("cached") is True and torch.equal(das2.alignment.std, das.alignment.std)


def test_mas_starts_from_given_alignments(tmp_path):
    """``init`` warm-starts MAS: from a solved search's alignments (or a DAS alignment of one network) the
    untrained control, which is then the starting alignments, already swaps the count; a cold start's does
    not. The start is part of the store's key, and a name that is not a network is refused before any work."""
    a, b, _, _ = counters()
    nets = [("A", a, MULTI), ("B", b, MULTI)]
    st = symlib.ResultsStore(tmp_path)
    solved = mas.run_mas(nets, progress=False, store=st, **FAST)
    assert np.nanmin(solved.matrix()) >= 0.95
    cold = mas.run_mas(nets, progress=False, store=st, **{**FAST, "max_steps": 10, "eval_every": 10})
    warm = mas.run_mas(nets, progress=False, store=st, init=solved.alignments, **{**FAST, "max_steps": 10, "eval_every": 10})
    assert not warm.metrics.get("cached")  # same config as ``cold``: the start tells them apart
    assert np.nanmax(cold.matrix("initial_iia_changed_test")) < 0.6
    assert np.nanmin(warm.matrix("initial_iia_changed_test")) >= 0.95
    das = symlib.run_das(a, MULTI, progress=False, **FAST)
    one = mas.run_mas(nets, progress=False, directions="self", init={"A": das.alignment}, **{**FAST, "max_steps": 10, "eval_every": 10})
    t = one.table.set_index(["source", "target"])
    assert t.loc[("A", "A"), "initial_iia_changed_test"] >= 0.95 > t.loc[("B", "B"), "initial_iia_changed_test"]
    with pytest.raises(ValueError, match="'Z', not a network"):
        mas.run_mas(nets, progress=False, store=st, init={"Z": das.alignment}, **FAST)
    with pytest.raises(ValueError, match="start network 'A'"):
        mas.run_mas(nets, progress=False, init={"A": solved.alignments["A"]}, **{**FAST, "n_units": 2})


def test_every_search_result_reads_the_same_way():
    """DAS, MAS and stitching results share one shape: ``converged``, ``steps``, ``maps``, ``curve()`` and
    ``to_frame()`` with the same first columns, so results of different recipes concatenate into one table."""
    import pandas as pd
    from symlib.intervene.search import SearchResult
    a, b, _, _ = counters()
    nets = [("A", a, MULTI), ("B", b, MULTI)]
    kw = {**FAST, "max_steps": 20, "eval_every": 10}
    das = symlib.run_das(a, MULTI, progress=False, **kw)
    res = mas.run_mas(nets, progress=False, directions="self", **kw)
    sti = mas.run_stitching(nets, progress=False, directions=[("A", "B")], **kw)
    for r in (das, res, sti):
        assert isinstance(r, SearchResult)
        assert r.converged is r.metrics["converged"] and r.steps == r.metrics["steps"] == 20
        assert list(r.curve()["step"]) == [h["step"] for h in r.history] == [10, 20]
    assert set(das.maps) == {"alignment"} and set(res.maps) == {"A", "B"} and set(sti.maps) == {"A>B"}
    table = pd.concat([das.to_frame("A"), res.to_frame(), sti.to_frame()], ignore_index=True)
    assert list(table.columns[:10]) == list(SearchResult.FRAME_COLUMNS)
    assert len(table) == 1 + 4 + 1
    assert table.loc[0, ["source", "target"]].tolist() == ["A", "A"]
    assert table.loc[0, "iia_changed_test"] == das.metrics["iia_changed_test"]
    assert table.loc[5, "alignment"] == "stitching" and table.loc[1, "alignment"] == "orthogonal"
    assert table.loc[1:4, "iia_changed_test"].tolist() == res.table["iia_changed_test"].tolist()
