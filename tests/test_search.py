"""The search engine (symlib.intervene.search): the stopping rule and ``converged``, the validation loss,
and the results store's keys (a search cached under other code or without a measure asked for
is not returned)."""
from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

import symlib
from symlib.intervene import search, store as store_mod
from symlib.intervene.iia import evaluate_alignment

from helpers import MULTI, HandCounter, wrap

SMALL = dict(n_units=1, n_train=1000, n_val=200, n_test=200, eval_every=25, lr=1e-2, progress=False)


def _fake_search(history, plateau_steps=100, plateau_tol=0.01, behavioural=True):
    cfg = types.SimpleNamespace(plateau_steps=plateau_steps, plateau_tol=plateau_tol, target_iia=0.995, patience=0,
                                max_steps=10_000)
    s = search.Search(cfg, {}, directions=[types.SimpleNamespace(model=None)] if behavioural else [])
    s.history = list(history)
    return s


def test_plateau_gain_is_the_gain_of_the_running_best_over_the_window():
    h = [{"step": st, "val_iia": 0.5, "val_iia_changed": v, "val_loss": 1.0}
         for st, v in [(50, 0.30), (100, 0.60), (150, 0.55), (200, 0.62), (250, 0.61)]]
    assert _fake_search(h[:1]).plateau_gain() is None  # shorter than the window
    # at step 250 the window starts at 150: best then 0.60, best now 0.62
    assert _fake_search(h).plateau_gain() == pytest.approx(0.02)
    # a noisy dip never counts as a loss: the running best only rises
    assert _fake_search(h[:3]).plateau_gain() == pytest.approx(0.30)  # at 150: best at <= 50 was 0.30
    # no changed pairs: trial IIA decides; CL-only: minus the loss
    h2 = [{"step": st, "val_iia": v, "val_iia_changed": None, "val_loss": 1.0} for st, v in [(100, 0.4), (200, 0.41)]]
    assert _fake_search(h2).plateau_gain() == pytest.approx(0.01)
    h3 = [{"step": st, "val_iia": 0.0, "val_loss": v} for st, v in [(100, 0.5), (200, 0.2)]]
    assert _fake_search(h3, behavioural=False).plateau_gain() == pytest.approx(0.3)


def test_a_search_that_finds_the_variable_converges_and_says_so():
    model = wrap(HandCounter(uniform_demo=True), "rnn")
    res = symlib.run_das(model, MULTI, max_steps=2000, **SMALL)
    m = res.metrics
    assert m["converged"] is True and m["stopped_because"].startswith("converged"), m["stopped_because"]
    assert m["steps"] < 2000 and m["iia_changed_test"] >= 0.95
    assert [r["step"] for r in res.history] == list(range(25, m["steps"] + 1, 25))
    assert all("val_iia_changed" in r for r in res.history)


def test_a_flat_search_stops_on_its_plateau_and_a_capped_one_is_not_converged():
    """No count unit: IIA stays flat, so the plateau rule stops the search long before the cap (converged:
    more steps would not help); the same search with a cap below the window is reported as not converged."""
    model = wrap(HandCounter(with_count=False, uniform_demo=True), "rnn")
    flat = symlib.run_das(model, MULTI, max_steps=5000, plateau_steps=200, plateau_tol=0.02, **SMALL)
    assert flat.metrics["converged"] is True and flat.metrics["steps"] < 1000, flat.metrics["stopped_because"]
    assert "gained" in flat.metrics["stopped_because"]
    capped = symlib.run_das(model, MULTI, max_steps=100, plateau_steps=200, **SMALL)
    assert capped.metrics["converged"] is False and capped.metrics["steps"] == 100
    assert "before convergence" in capped.metrics["stopped_because"]
    untrained = symlib.run_das(model, MULTI, train_alignment=False, max_steps=100, **SMALL)
    assert untrained.metrics["converged"] is None


def test_loss_rule_alone_does_not_call_a_search_converged():
    model = wrap(HandCounter(with_count=False, uniform_demo=True), "rnn")
    res = symlib.run_das(model, MULTI, max_steps=5000, plateau_steps=0, patience=2, **SMALL)
    assert res.metrics["converged"] is False and "not converged" in res.metrics["stopped_because"]


def test_mas_results_say_whether_the_search_converged():
    a = wrap(HandCounter(uniform_demo=True), "rnn")
    res = symlib.run_mas([("A", a, MULTI)], progress=False, directions="self", max_steps=30,
                         **{k: v for k, v in SMALL.items() if k != "progress"})
    assert res.metrics["converged"] is False and (res.table["converged"] == False).all()  # noqa: E712


def test_validation_loss_scores_the_tokens_the_search_scores():
    """With loss_on="task_mask" the loss that decides stopping is the task-mask loss, not every token's."""
    model = wrap(HandCounter(uniform_demo=True), "rnn")
    res = symlib.run_das(model, MULTI, loss_on="task_mask", max_steps=25, **SMALL)
    pairs = symlib.intervene.das.make_search_pairs(MULTI, res.config)
    from symlib.intervene.iia import PairStates
    st = PairStates.compute(model, pairs["val"], model.check_site(None))
    d = search.Direction(model, model.check_site(None), {"val": st}, res.alignment)
    s = search.Search(res.config, {"alignment": res.alignment}, [d], loss_on="task_mask")
    v = s.validate()["val_loss"]
    assert v == pytest.approx(evaluate_alignment(model, res.alignment, st, free_running=False, loss_on="task_mask")["loss"])
    assert v != pytest.approx(evaluate_alignment(model, res.alignment, st, free_running=False)["loss"], rel=1e-3)


def test_store_does_not_return_a_search_without_the_token_iia_asked_for(tmp_path):
    model = wrap(HandCounter(uniform_demo=True), "rnn")
    st = symlib.ResultsStore(tmp_path)
    kw = dict(max_steps=25, **SMALL)
    first = symlib.run_das_batch(model, MULTI, [symlib.DASConfig(**{k: v for k, v in kw.items() if k != "progress"})],
                                 progress=False, store=st, token_iia=False)[0]
    assert first.metrics["iia_token_test"] is None
    again = symlib.run_das_batch(model, MULTI, [first.config], progress=False, store=st, token_iia=False)[0]
    assert again.metrics.get("cached") is True
    with_token = symlib.run_das_batch(model, MULTI, [first.config], progress=False, store=st, token_iia=True)[0]
    assert with_token.metrics.get("cached") is not True and with_token.metrics["iia_token_test"] is not None
    # and the richer entry now answers both
    assert symlib.run_das_batch(model, MULTI, [first.config], progress=False, store=st, token_iia=False)[0].metrics.get("cached")


def test_store_keys_change_with_the_measuring_code(monkeypatch, tmp_path):
    """A search cached by other code (another fingerprint of the modules that make pairs, labels and
    metrics) is never returned."""
    model = wrap(HandCounter(uniform_demo=True), "rnn")
    st = symlib.ResultsStore(tmp_path)
    cfg = symlib.DASConfig(**{k: v for k, v in dict(max_steps=25, **SMALL).items() if k != "progress"})
    symlib.run_das(model, MULTI, cfg, progress=False, store=st)
    assert symlib.run_das(model, MULTI, cfg, progress=False, store=st).metrics.get("cached") is True
    monkeypatch.setattr(store_mod, "_CODE_FINGERPRINT", "other-code")
    assert symlib.run_das(model, MULTI, cfg, progress=False, store=st).metrics.get("cached") is not True
    # the fingerprint covers the modules that label pairs and measure IIA
    assert {"game/programs", "game/counterfactuals", "intervene/iia", "intervene/search"} <= set(store_mod.MEASURING_MODULES)
    assert all((Path(symlib.__file__).parent / f"{m}.py").exists() for m in store_mod.MEASURING_MODULES)


def test_search_config_checks_its_stopping_rule():
    for bad, match in [(dict(plateau_steps=-1), "plateau_steps"), (dict(plateau_tol=1.5), "plateau_tol"),
                       (dict(patience=-2), "patience"), (dict(lr=0.0), "lr")]:
        with pytest.raises(ValueError, match=match):
            symlib.DASConfig(**bad)
        with pytest.raises(ValueError, match=match):
            symlib.MASConfig(**bad)


def test_engine_trains_searches_of_two_networks_in_one_loop():
    """Searches on different networks run side by side; each stops on its own rule and equals its lone run."""
    a = wrap(HandCounter(uniform_demo=True), "rnn")
    b = wrap(HandCounter(with_count=False, uniform_demo=True), "rnn")
    cfg = symlib.DASConfig(n_units=1, n_train=600, n_val=200, n_test=200, eval_every=25, lr=1e-2, max_steps=150)
    pairs = symlib.intervene.das.make_search_pairs(MULTI, cfg)
    from symlib.intervene.iia import PairStates

    def make(model):
        site = model.check_site(None)
        al = symlib.intervene.das.new_alignment(cfg, model.state_size(site))
        st = {k: PairStates.compute(model, p, site) for k, p in pairs.items()}
        d = search.Direction(model, site, st, al, batch_seed=symlib.game.counterfactuals.split_seed(cfg.seed, "batches"))
        return search.Search(cfg, {"alignment": al}, [d])

    together = [make(a), make(b)]
    search.train(together, progress=False)
    for s, model in zip(together, (a, b)):
        alone = make(model)
        search.train([alone], progress=False)
        assert s.steps == alone.steps and s.stopped == alone.stopped
        for k, v in s.maps["alignment"].state_dict().items():
            assert torch.allclose(v, alone.maps["alignment"].state_dict()[k], atol=1e-5)


def test_all_frozen_restores_every_model_even_when_one_fails():
    """Models frozen before a failing one are given back their mode and gradient flags."""
    from symlib.intervene.search import all_frozen
    a, b = torch.nn.Linear(2, 2).train(), torch.nn.Linear(2, 2).train()

    class Broken:
        training = True

        def parameters(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with all_frozen([a, Broken()]):
            pass
    assert a.training and all(p.requires_grad for p in a.parameters())
    with all_frozen([a, b]):
        assert not a.training and not any(p.requires_grad for p in b.parameters())
    assert b.training and all(p.requires_grad for p in b.parameters())


def test_lr_drops_go_on_at_a_tenth_of_the_rate_on_each_plateau(monkeypatch):
    """``lr_drops``: a plateau first divides the search's learning rate by 10 (judged again over a new window),
    and counts as convergence only once the drops are spent. In one batch, only that search's rate drops."""
    model = wrap(HandCounter(with_count=False, uniform_demo=True), "rnn")
    kw = dict(max_steps=5000, plateau_steps=200, plateau_tol=0.02, **{k: v for k, v in SMALL.items() if k != "progress"})
    seen = []
    real_step = torch.optim.Adam.step

    def step(self, *a, **k):
        seen.append([g["lr"] for g in self.param_groups])
        return real_step(self, *a, **k)
    monkeypatch.setattr(torch.optim.Adam, "step", step)
    plain, dropping = symlib.run_das_batch(model, MULTI, [symlib.DASConfig(**kw), symlib.DASConfig(**kw, lr_drops=2)],
                                           progress=False, token_iia=False)
    drops = [r["step"] for r in dropping.history if "lr_scale" in r]
    assert [r["lr_scale"] for r in dropping.history if "lr_scale" in r] == pytest.approx([0.1, 0.01])
    assert drops[0] == plain.metrics["steps"] and drops[1] >= drops[0] + 200
    assert dropping.metrics["converged"] is True and dropping.metrics["steps"] >= drops[1] + 200
    # the optimiser saw the plain search at 1e-2 throughout, the other at 1e-2, then 1e-3 after its first drop, 1e-4 after its second
    assert all(lrs[0] == 1e-2 for lrs in seen[:plain.metrics["steps"]])
    assert seen[drops[0] - 1][1] == 1e-2 and seen[drops[0]][1] == pytest.approx(1e-3) and seen[drops[1]][1] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="plateau_steps=0"):
        symlib.DASConfig(lr_drops=1, plateau_steps=0)
    with pytest.raises(ValueError, match="lr_drops must be >= 0"):
        symlib.DASConfig(lr_drops=-1)
