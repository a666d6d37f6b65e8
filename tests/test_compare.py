"""symlib.analyses.compare: one comparison cell, its verdict, the per-network summary, and the chapter-04 analyses."""
import math

import pandas as pd
import pytest
import torch

from symlib.analyses import compare
from symlib.intervene.das import DASConfig, run_das
from symlib.networks.models import make_model
from symlib.book.sweep import run_sweep
from symlib.game.tasks import make_task


def test_validate_params_names_valid_choices():
    compare.validate_params(dict(arch="lstm", task="sameobject", program="up_up", variable="resp_count"))
    compare.validate_params(dict(arch="transformer", task="multiobject", program="ctx_distr", variable="count", site="embed"))
    with pytest.raises(ValueError, match="valid choices: count, phase"):
        compare.validate_params(dict(program="up_down", variable="resp_count"))  # Up-Down has no resp_count
    with pytest.raises(ValueError, match="resid.0"):
        compare.validate_params(dict(arch="transformer", site="state"))
    with pytest.raises(ValueError, match="transformer_nope"):
        compare.validate_params(dict(arch="cnn"))


@pytest.mark.parametrize("iia, ctl, want", [(0.95, 0.02, "aligns"), (0.95, 0.5, "no"), (0.7, 0.1, "partly"),
                                            (0.45, 0.0, "no"), (None, 0.0, "no"), (0.92, None, "aligns")])
def test_verdict(iia, ctl, want):
    assert compare.verdict(iia, ctl) == want


def test_compare_cell_row_and_follows():
    """A smoke-size cell returns every documented number; its margin and verdict are over every control
    that can score on changed pairs, the wrong program (Up-Down for Up-Up) included; each control is
    also given on the cell's own changed pairs; the summary picks the widest margin per network."""
    row = compare.compare_cell("gru", "multiobject", "up_up", "demo_count", seed=0, smoke=True)
    for key in ("iia_test", "iia_changed_test", "frac_changed_test", "iia_changed_test_heldout", "no_swap_iia_test",
                "initial_iia_changed_test", "wrong_labels_iia_changed_test", "wrong_program_iia_changed_test",
                "control_max_changed_test", "control_max_changed_main", "margin_changed_test", "verdict", "site"):
        assert key in row, key
    assert row["variable"] == "demo_count" and row["site"] == "state"
    scoring = ("initial", "wrong_labels", "wrong_program")
    assert row["control_max_changed_test"] == max(row[f"{c}_iia_changed_test"] for c in scoring)
    assert row["control_max_changed_main"] == max(row[f"{c}_iia_changed_main"] for c in scoring)
    assert math.isclose(row["margin_changed_test"], row["iia_changed_test"] - row["control_max_changed_test"])
    assert row["verdict"] == compare.verdict(row["iia_changed_test"], row["control_max_changed_test"])
    # the wrong program is Up-Down's own search: its cell finds it in the store, and scores it as a row
    other = compare.compare_cell("gru", "multiobject", "up_down", "count", seed=0, smoke=True)
    assert other["cached"] and other["iia_changed_test"] == row["wrong_program_iia_changed_test"]
    # a second call with the store finds the same search (searched as "count": Up-Up's number variable)
    again = compare.compare_cell("gru", "multiobject", "up_up", "demo_count", seed=0, smoke=True)
    assert again["cached"] and again["iia_changed_test"] == row["iia_changed_test"]
    fake = pd.DataFrame([dict(arch="gru", task="multiobject", program=p, variable=v, site="state", seed=s,
                              iia_test=0.9, iia_changed_test=x + 0.01 * s, control_max_changed_test=0.05,
                              margin_changed_test=x + 0.01 * s - 0.05, frac_changed_test=0.9)
                         for s in (0, 1, 2) for p, v, x in (("up_down", "count", 0.93), ("up_up", "demo_count", 0.4),
                                                            ("up_down", "phase", 0.99))])
    s = compare.summarise_compare(fake)
    assert len(s) == 3 and (s.n == 3).all() and (s.iia_changed_test_lo <= s.iia_changed_test).all()
    f = compare.follows(s)
    assert f.loc[0, "program"] == "up_down" and f.loc[0, "variable"] == "count"  # phase is not a number variable
    assert f.loc[0, "verdict"] == "aligns" and f.loc[0, "runner_up"].startswith("up_up demo_count: 0.41")


def test_attention_to_demo_shares_sum_to_one():
    task = make_task("multiobject")
    model = make_model("transformer", vocab_size=task.vocab_size, d_model=32, n_layers=2)
    att = compare.attention_to_demo(model, task, n_trials=16)
    assert len(att) == 2 * model.config.n_heads
    assert ((att.to_demo + att.to_response + att.to_bos - 1).abs() < 1e-4).all()
    assert att.spread.between(0, 1.0001).all()
    with pytest.raises(ValueError, match="Transformer"):
        compare.attention_to_demo(make_model("gru", vocab_size=task.vocab_size, d_model=16), task)


def test_accuracy_by_count_of_an_untrained_network():
    """An untrained network's own answers are counted from its output: one row per count, errors measured."""
    task = make_task("sameobject")
    model = make_model("gru", vocab_size=task.vocab_size, d_model=16)
    acc = compare.accuracy_by_count(model, task, (1, 5, 9), n_per_count=8)
    assert list(acc["count"]) == [1, 5, 9]
    assert (acc.frac_short + acc.frac_long <= 1).all() and acc.trial_acc.between(0, 1).all()


def test_out_of_range_iia_on_a_planted_counter():
    """A hand-built counter counts past 20 and DAS finds its count axis: swapping in counts 21-30
    works (IIA near 1, the network itself perfect there); the untrained alignment does not."""
    from helpers import HandCounter, wrap
    task = make_task("multiobject")
    model = wrap(HandCounter(), "rnn")
    kw = dict(variable="count", n_units=1, n_train=1500, n_val=300, n_test=300, max_steps=400, eval_every=50, lr=1e-2,
              loss_on="task_mask")
    res = run_das(model, task, DASConfig(**kw), progress=False)
    out = compare.out_of_range_iia(model, task, res.alignment, n=200)
    assert out["n"] == 200 and out["network_acc_source_counts"] == 1.0
    assert out["iia"] >= 0.95 and out["iia_changed"] >= 0.95, out
    fresh = run_das(model, task, DASConfig(**kw), progress=False, train_alignment=False)
    assert compare.out_of_range_iia(model, task, fresh.alignment, n=200)["iia_changed"] < 0.5


def test_compare_cells_as_a_sweep(tmp_path):
    """compare_cell as a sweep's function: a bad variable is refused before any cell runs; good cells land in results.csv."""
    spec = {"function": "symlib.analyses.compare.compare_cell", "out": str(tmp_path / "bad"),
            "grid": {"program": ["up_down"], "variable": ["resp_count"]}, "fixed": {"smoke": True}}
    with pytest.raises(ValueError, match="resp_count"):
        run_sweep(spec, workers=1, progress=False)
    assert not (tmp_path / "bad").exists()
    spec = {"function": "symlib.analyses.compare.compare_cell", "out": str(tmp_path / "ok"),
            "grid": {"program": ["up_down", "ctx_distr"]}, "fixed": {"smoke": True, "arch": "lstm", "task": "singleobject"}}
    df = run_sweep(spec, workers=1, threads_per_worker=1, progress=False)
    assert list(df.status) == ["ok", "ok"], df.get("error")
    assert {"iia_changed_test", "control_max_changed_test", "verdict"} <= set(df.columns)
    assert (tmp_path / "ok" / "results.csv").exists()
