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
                "control_max_changed_test", "control_max_changed_main", "margin_changed_test", "verdict", "site", "network"):
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
    assert other["network"] == row["network"] and len(row["network"]) == 12  # one network, one fingerprint
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


def _sweep_csv(tmp_path):
    """A comparison sweep's table mid-way: two seeds of one hypothesis (one hit its cap), one of another at 4 dims,
    a pending cell and a failed one."""
    base = dict(task="multiobject", program="up_down", variable="count", site=None, n_units=None, error=None)
    rows = [dict(base, arch="gru", seed=0, cell="a", status="ok", iia_test=0.96, iia_changed_test=0.95,
                 control_max_changed_test=0.40, margin_changed_test=0.55, converged=True, finished_at="2026-12-07T12:42:49+00:00",
                 **{"metrics.site": "state"}),
            dict(base, arch="gru", seed=1, cell="b", status="ok", iia_test=0.92, iia_changed_test=0.91,
                 control_max_changed_test=0.30, margin_changed_test=0.61, converged=False, finished_at="2026-12-07T20:01:00+00:00",
                 commit="0123456789ab",
                 **{"metrics.site": "state"}),
            dict(base, arch="gru", seed=0, n_units=4, cell="c", status="ok", iia_test=0.6, iia_changed_test=0.55,
                 control_max_changed_test=0.02, margin_changed_test=0.53, converged=True, finished_at="2026-12-07T13:00:00+00:00",
                 **{"metrics.site": "state"}),
            dict(base, arch="lstm", task="sameobject", seed=0, cell="d", status="pending"),
            dict(base, arch="lstm", task="sameobject", seed=1, cell="e", status="failed", error="ValueError: x")]
    p = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def test_sweep_report_states_what_finished_what_converged_and_what_is_pending(tmp_path):
    text = compare.sweep_report(_sweep_csv(tmp_path))
    assert text.startswith("3 of 5 cells finished, 1 failed; 1 pending")
    rows = [l for l in text.splitlines() if l.startswith("| gru")]
    assert rows == ["| gru · multiobject | up_down count (4 dims) | 1 | 0.550 | 0.600 | 0.020 | 0.530 | partly | 1/1 |",
                    "| gru · multiobject | up_down count | 2 | 0.930 [0.910, 0.950] | 0.940 | 0.350 | 0.580 | aligns | 1/2 |"]
    assert "1 cell(s) stopped at the cap: b." in text
    assert "training" not in text  # this table records no network: nothing to say about it
    assert "Pending: lstm · sameobject (1 cells)." in text
    assert "between 2026-12-07T12:42 and 2026-12-07T20:01 UTC; the code's commit per cell: 0123456 (1), not recorded (2)." in text
    assert "Machine per cell" not in text  # no cell of this table recorded one


def test_sweep_report_names_the_machine_each_cell_ran_on(tmp_path):
    df = pd.read_csv(_sweep_csv(tmp_path))
    df["machine"] = ["AMD EPYC, 2 cores", None, "AMD EPYC, 2 cores", None, None]
    df.to_csv(tmp_path / "results.csv", index=False)
    text = compare.sweep_report(tmp_path / "results.csv")
    assert "Machine per cell: AMD EPYC, 2 cores (2), not recorded (1)." in text


def test_sweep_report_says_when_cells_of_one_network_ran_on_different_trainings(tmp_path):
    """A sweep resumed on another machine retrains what its earlier cells found trained: the report names
    the networks whose cells differ in best step or in weights, and is quiet where they agree."""
    base = dict(task="multiobject", program="up_down", variable="count", site=None, n_units=None, error=None,
                status="ok", iia_test=0.9, iia_changed_test=0.9, control_max_changed_test=0.1, margin_changed_test=0.8,
                converged=True, finished_at="2026-12-07T12:00:00+00:00", **{"metrics.site": "state"})
    rows = [dict(base, arch="gru", seed=0, cell="a", network_step=750, network=None),
            dict(base, arch="gru", seed=0, cell="b", variable="phase", network_step=750, network="aaa"),
            dict(base, arch="lstm", seed=1, cell="c", network_step=400, network="bbb"),
            dict(base, arch="lstm", seed=1, cell="d", variable="phase", network_step=400, network="ccc"),
            dict(base, arch="lstm", seed=2, cell="e", network_step=450, network=None),
            dict(base, arch="lstm", seed=2, cell="f", variable="phase", network_step=500, network=None)]
    p = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    text = compare.sweep_report(p)
    assert ("different trainings of it (same recipe and seed, trained in different sittings): "
            "lstm · multiobject seed 1 (best steps 400); lstm · multiobject seed 2 (best steps 450, 500).") in text
    pd.DataFrame(rows[:2]).to_csv(p, index=False)
    assert "Every network's cells ran on one training of it (the same best checkpoint, and the same weights where recorded)." \
        in compare.sweep_report(p)


def test_compare_command_writes_the_readme_block_with_provenance(tmp_path):
    import json
    import subprocess
    import sys
    from symlib.analyses.report import read_block
    csv = _sweep_csv(tmp_path)
    md = tmp_path / "README.md"
    md.write_text("x\n<!-- compare:start -->\nold\n<!-- compare:end -->\ny\n")
    args = [sys.executable, "-m", "symlib", "compare", "--report", str(csv), "--readme", str(md)]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode != 0 and "no provenance" in out.stderr and "old" in md.read_text()  # nothing written
    prov = {"command": "make compare-seeds", "started": "2026-12-07T12:37:00+00:00", "wall_seconds": 600, "commit": "abcdef0123",
            "uncommitted_changes": False, "machine": {"cuda": None, "cpu": "a CPU", "cores": 2, "torch_threads": 1}}
    (tmp_path / "results.provenance.json").write_text(json.dumps(prov))
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    block = read_block(md, "compare")
    assert block.startswith("3 of 5 cells finished") and "made by `make compare-seeds` at commit abcdef0" in block
    assert block == out.stdout.strip()


def test_a_sweeps_table_is_saved_with_its_provenance_as_it_stands(tmp_path):
    """``--sweep``: the table of a sweep mid-way (pending cells kept) and a provenance spanning its cells' times."""
    import json
    import subprocess
    import sys
    import yaml
    from symlib.book.sweep import cell_id
    out = tmp_path / "sweep"
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"function": "symlib.analyses.compare.compare_cell", "out": str(out),
                                    "grid": [{"arch": ["gru"], "task": ["multiobject"], "program": ["up_down"],
                                              "variable": ["count"], "seed": [0, 1]}]}))
    params = {"arch": "gru", "program": "up_down", "seed": 0, "task": "multiobject", "variable": "count"}
    cell = out / "cells" / cell_id(params)
    cell.mkdir(parents=True)
    (cell / "result.json").write_text(json.dumps({"params": params, "status": "ok", "error": None,
                                                  "seconds": 60.0, "finished_at": "2026-12-07T12:01:00+00:00",
                                                  "metrics": {"iia_changed_test": 0.9, "converged": True, "site": "state"}}))
    csv = tmp_path / "results" / "04_seeds.csv"
    r = subprocess.run([sys.executable, "-m", "symlib", "sweep", str(grid), "--save-table", str(csv), "--command", "make x"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(csv)
    assert sorted(df.status) == ["ok", "pending"] and compare.sweep_report(csv).startswith("1 of 2 cells finished; 1 pending")
    prov = json.loads((tmp_path / "results" / "04_seeds.provenance.json").read_text())
    assert prov["started"] == "2026-12-07T12:00:00+00:00" and prov["ended"] == "2026-12-07T12:01:00+00:00"
    assert prov["cells"] == "1 of 2 finished" and prov["machine"]["torch_threads"] == 1 and prov["command"] == "make x"
    empty = tmp_path / "empty.yaml"
    empty.write_text(grid.read_text().replace(str(out), str(tmp_path / "none")))
    r = subprocess.run([sys.executable, "-m", "symlib", "sweep", str(empty), "--save-table", str(tmp_path / "e.csv")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no cell" in r.stderr and not (tmp_path / "e.csv").exists()
