"""The intervention explorer (symlib.book.widgets): its views, marks, store lookup and speed.

Networks here are hand-built (``HandCounter``: unit 0 holds the count) or tiny, so every
test runs in seconds; nothing is searched unless a test asks for it (and then a stand-in
is called).
"""
import re

import pytest
import torch

pytest.importorskip("ipywidgets")

import symlib
from symlib.analyses import explain
from symlib.book import widgets
from symlib.intervene.alignment import make_alignment

from helpers import MULTI, HandCounter, small_model, wrap


def hand():
    return wrap(HandCounter(uniform_demo=True, d=8), "rnn")


def row_positions(html: str, row: str, cls: str) -> list[int]:
    """data-pos of the tokens with class ``sx-<cls>`` in the table row ``sx-row-<row>``."""
    m = re.search(rf'<tr class="sx-row-{row}"[^>]*>(.*?)</tr>', html)
    assert m, f"no row {row}"
    return [int(p) for c, p in re.findall(r'<span class="([^"]*)" data-pos="(\d+)"', m.group(1)) if f"sx-{cls}" in c.split()]


def test_explorer_config_is_chapter_03s_default_search():
    """The explorer looks up exactly the search chapter 03 stores by default (and at smoke size, its smoke search)."""
    ch03 = symlib.DASConfig(program="up_down", variable="count", alignment="orthogonal", n_units=16, seed=0, max_steps=20000,
                            n_train=10000, n_val=1000, n_test=1000, n_test_heldout=500, eval_every=50)
    assert ch03.plateau_steps == 1000 and ch03.plateau_tol == 0.005 and ch03.patience == 0  # to convergence, as chapter 03's main search
    assert widgets.explorer_config(smoke=False) == ch03
    ch03_smoke = symlib.DASConfig(program="up_down", variable="count", alignment="orthogonal", n_units=16, seed=0, max_steps=20,
                                  n_train=256, n_val=128, n_test=128, n_test_heldout=64, eval_every=10)
    assert widgets.explorer_config(smoke=True) == ch03_smoke
    # Up-Up's own name for its number variable is searched as "count", as chapter 04 does
    assert widgets.explorer_config("up_up", "demo_count", smoke=False, task=MULTI).variable == "count"


def test_explain_pair_default_view_swaps_a_different_value():
    """The opening view writes a count that differs from the target's, so the program's answer changes."""
    r = widgets.explain_pair(hand(), MULTI, make_alignment("orthogonal", 8, [1], seed=0))
    assert (r["target_value"], r["source_value"]) == (4, 9)
    assert r["changed"]
    after = r["program"].split(" | ")[1].split()
    assert after.count("R") == 9 and r["expects"]["responses"] == 9
    assert "expects 9 response tokens" in re.sub("<[^>]+>", "", r["text"])


def test_a_position_on_the_last_demo_follows_n():
    """Reading after the source's last demo token (its whole count), moving source N changes the value read."""
    ex = widgets.explorer({"hand": (hand(), MULTI)}, alignment=make_alignment("orthogonal", 8, [1], seed=0),
                          include_runs=False, store=False)
    assert ex.w_spos.value == 9 and ex.last_view["source_value"] == 9  # the 9th of 9 demos
    ex.w_sc.value = 12
    assert ex.w_spos.value == 12 and ex.last_view["source_value"] == 12 and ex.last_view["expects"]["responses"] == 12
    ex.w_spos.value = 3
    ex.w_sc.value = 5  # elsewhere the position stays
    assert ex.w_spos.value == 3 and ex.last_view["source_value"] == 3


def test_moving_target_count_keeps_the_source_trial():
    ex = widgets.explorer({"hand": (hand(), MULTI)}, alignment=make_alignment("orthogonal", 8, [1], seed=0),
                          include_runs=False, store=False)
    before = ex.last_view
    ex.w_tc.value = 11
    after = ex.last_view
    assert after["source_words"] == before["source_words"]
    assert after["target_words"] != before["target_words"] and after["target_words"].count("R") == 11
    ex.w_sc.value = 12  # and the other way round
    assert ex.last_view["target_words"] == after["target_words"]
    ex.w_seed.value = 3  # the seed draws other demo tokens for both
    assert ex.last_view["source_words"] != after["source_words"] or ex.last_view["target_words"] != after["target_words"]


def test_highlighting_marks_exactly_the_differing_tokens():
    """Red marks sit on exactly the positions where network and program differ; orange on exactly the
    network's own tokens that the swap changed; grey on the tokens given to it."""
    torch.manual_seed(0)
    ex = widgets.explorer({"hand": (hand(), MULTI)}, alignment=make_alignment("orthogonal", 8, [2], seed=1),
                          include_runs=False, store=False)
    seen_diff = False
    for view in (dict(widgets.DEFAULT_VIEW), dict(target_count=8, target_pos=4, source_count=2, source_pos=1, seed=0),
                 dict(target_count=7, target_pos=9, source_count=5, source_pos=4, seed=2)):
        r = ex.set_view(**view)
        p, prog, net, plain = r["target_pos"], r["program_words"], r["network_words"], r["plain_words"]
        want = [i for i in range(p + 1, max(len(prog), len(net))) if (prog[i:i + 1] or [None]) != (net[i:i + 1] or [None])]
        html = ex.w_main.value
        assert r["diff"] == want
        assert row_positions(html, "network", "diff") == want
        assert row_positions(html, "program", "diff") == [i for i in want if i < len(prog)]
        changed = [i for i in range(p + 1, len(net)) if r["network_own"][i] and (plain[i:i + 1] or [None]) != [net[i]]]
        assert row_positions(html, "network", "changed") == changed
        given = [i for i in range(p + 1, len(net)) if not r["network_own"][i]]
        assert row_positions(html, "network", "given") == given
        assert all(not prog_mask for i, prog_mask in enumerate(r["program_mask"]) if i in given)
        seen_diff |= bool(want)
    assert seen_diff, "no view differed: the test checked nothing"
    # the row builder on its own: exactly the marked cells carry the class
    out = widgets.tokens_html(["B", "D0", "T", "R", "E"], 1, {3: ["diff"], 4: ["diff", "own"]})
    assert [int(p) for c, p in re.findall(r'class="([^"]*)" data-pos="(\d+)"', out) if "sx-diff" in c] == [3, 4]


def test_demo_phase_swap_says_what_the_program_adds():
    """A smaller count written during the demos: the program adds demo tokens after the |, and says how many
    responses it now expects; those demo tokens are given to the network, not its own output."""
    ex = widgets.explorer({"hand": (hand(), MULTI)}, alignment=make_alignment("orthogonal", 8, [1], seed=0),
                          include_runs=False, store=False)
    r = ex.set_view(target_count=8, target_pos=4, source_count=2, source_pos=1, seed=0)
    text = re.sub("<[^>]+>", "", r["text"])
    assert r["expects"] == {"demos": 6, "trigger": True, "responses": 8}
    assert "the program adds 6 demo tokens" in text and "expects 8 response tokens" in text
    p = r["target_pos"]
    given = row_positions(ex.w_main.value, "network", "given")
    assert given == list(range(p + 1, p + 8))  # 6 demo tokens and T
    assert "own greedy output" in ex.w_main.value
    # in the response phase: "more response tokens"
    r = ex.set_view(target_count=7, target_pos=9, source_count=5, source_pos=4)
    assert "expects 5 more response tokens" in re.sub("<[^>]+>", "", r["text"])


def test_store_lookup_finds_a_stored_alignment_without_searching(tmp_path, monkeypatch):
    model = hand()
    store = symlib.ResultsStore(tmp_path / "store")
    cfg = widgets.explorer_config()
    align = make_alignment("orthogonal", 8, [cfg.n_units if cfg.n_units <= 8 else 1], seed=0)
    res = symlib.DASResult(align, cfg, {"iia_test": 0.9, "iia_changed_test": 0.8, "n_units": align.block_sizes[0]}, [], {})
    symlib.intervene.das.cache_result(store, store.key(model, MULTI, cfg), res)

    def no_search(*a, **k):
        raise AssertionError("the explorer searched although the store holds the alignment")

    monkeypatch.setattr(widgets, "run_das", no_search)
    ex = widgets.explorer({"hand": (model, MULTI)}, include_runs=False, store=store)
    assert ex.align is not None and ex.searches == 0
    assert ex.w_search.layout.display == "none"
    assert "results store" in ex.w_status.value and "0.800" in ex.w_status.value
    assert 'class="sx-row-network"' in ex.w_main.value


def test_absent_alignment_shows_the_search_button(tmp_path, monkeypatch):
    model = hand()
    store = symlib.ResultsStore(tmp_path / "store")
    calls = []

    def fake_search(m, task, cfg, store=None, progress=True):
        calls.append((cfg, store))
        return symlib.DASResult(make_alignment("orthogonal", 8, [1], seed=0), cfg,
                                {"iia_test": 0.5, "iia_changed_test": 0.4, "n_units": 1}, [], {})

    monkeypatch.setattr(widgets, "run_das", fake_search)
    ex = widgets.explorer({"hand": (model, MULTI)}, include_runs=False, store=store)
    assert calls == [] and ex.align is None
    assert ex.w_search.layout.display != "none"
    assert re.fullmatch(r"search now \(~\d+ s\)", ex.w_search.description)
    assert "No stored search" in ex.w_status.value
    assert 'class="sx-row-network"' not in ex.w_main.value and 'class="sx-row-program"' in ex.w_main.value
    ex.w_search.click()  # the reader asks: one search, saved in the explorer's store
    assert len(calls) == 1 and calls[0][1] is store and calls[0][0] == widgets.explorer_config()
    assert ex.align is not None and ex.w_search.layout.display == "none"
    assert 'class="sx-row-network"' in ex.w_main.value


def test_explorer_lists_trained_runs_and_loads_one(tmp_path):
    """Runs with a latest.pt under the runs folder are offered; choosing one loads it (and a tiny
    network trained here works end to end)."""
    root = tmp_path / "runs"
    symlib.train(symlib.TrainConfig(d_model=16, max_steps=8, eval_every=8, n_eval_trials=16, n_train_trials=64),
                 run_dir=root / "tiny-gru", progress=False)
    (root / "empty").mkdir()
    ex = widgets.explorer({"hand": (hand(), MULTI)}, include_runs=True, runs_root=root,
                          store=symlib.ResultsStore(tmp_path / "store"))
    assert list(ex.w_network.options) == ["hand", "tiny-gru"]
    ex.w_network.value = "tiny-gru"
    assert ex.net.model.state_size() == 16 and ex.align is None
    assert ex.w_program.value == "up_down" and list(ex.w_program.options) == list(symlib.PROGRAM_NAMES)
    assert 'class="sx-row-program"' in ex.w_main.value


def test_fast_rollout_equals_the_generic_one():
    """The explorer's step-by-step rollout of a symlib RNN from the swapped state equals network_rollout's."""
    model = small_model("gru", d_model=16, seed=1)
    pairs = symlib.make_pairs(MULTI, "up_down", "count", n=24, seed=3)
    align = make_alignment("orthogonal", 16, [4], seed=0)
    site = model.check_site(None)
    from symlib.intervene.iia import PairStates
    st = PairStates.compute(model, pairs, site)
    fast = explain.intervened_rollout(model, align, pairs.tokens, pairs.task_mask, pairs.pos, st.H_t, st.H_s, pairs.swap, site)
    slow = symlib.network_rollout(model, align, pairs, site)
    assert torch.equal(fast, slow)


def test_a_slider_move_is_fast():
    """A move redraws in well under the 200 ms budget on a small network (the notebook times a width-128 GRU)."""
    model = small_model("gru", d_model=32, seed=0)
    ex = widgets.explorer({"gru": (model, MULTI)}, alignment=make_alignment("orthogonal", 32, [4], seed=0),
                          include_runs=False, store=False)
    t = ex.time_updates()
    assert t["n"] == 10 and t["median_ms"] < 200


def test_intervention_explorer_still_works_for_chapter_03():
    ex = symlib.book.widgets.intervention_explorer(hand(), MULTI, make_alignment("orthogonal", 8, [1], seed=0), "up_down", "count")
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert ex.align is not None and ex.last_view["network_words"] is not None
    # other variables: phase swaps have no number line, but a view
    ex.w_variable.value = "phase"
    assert ex.last_view is not None and ex.last_view["variable"] == "phase"


def test_number_line_r_is_held_out_as_in_the_book():
    """The explorer's number line is scored as chapter 03 scores it (``analysis.number_line``): fitted on half
    the natural trials, r on the other half; not the in-sample r, which a noisy block inflates."""
    from symlib.analyses.analysis import natural_states, number_line
    model = hand()
    align = make_alignment("orthogonal", 8, [3], seed=1)  # a block that mixes the count with other units
    fit = explain.readout_fit(explain.ExplorerNetwork("hand", model, MULTI), "up_down", align, None, 40, 0)
    st = natural_states(model, MULTI, "up_down", n_trials=40, seed=0, site=None)
    book = number_line(align, st, block=0, n_random=0, test_fraction=0.5, seed=0)
    assert fit["r"] == pytest.approx(book["r_test"], abs=1e-9)
    assert fit["r"] != pytest.approx(book["r_fit"], abs=1e-6)
