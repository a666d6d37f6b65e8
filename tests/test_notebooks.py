"""Notebook hygiene and papermill runs with non-default parameters.

nbval runs every notebook at smoke size as part of ``make test``; these tests check what
nbval cannot: the jupytext pairs agree, nothing is committed with outputs, and a notebook
run with other parameters writes the metrics it documents.
"""
import json
import os
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

symlib_alignments = ("orthogonal", "linear", "revnet", "boundless")

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
PAIRS = sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.py"))


def test_every_notebook_has_its_twin():
    """Each numbered .py has an .ipynb twin and vice versa."""
    ipynbs = sorted(p.stem for p in NB_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert PAIRS and PAIRS == ipynbs


@pytest.mark.parametrize("name", PAIRS)
def test_pair_holds_the_same_cells(name):
    """The .py (what people edit) and the .ipynb (what people open) hold the same cells."""
    py = jupytext.read(NB_DIR / f"{name}.py")
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    assert [(c.cell_type, c.source.strip()) for c in py.cells] == [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("name", PAIRS)
def test_committed_without_outputs_and_with_parameters(name):
    """No outputs or execution counts are committed; exactly one cell is tagged parameters
    and it defines SEED, SMOKE, DEVICE and RESULTS_PATH."""
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for name_ in ("SEED", "SMOKE", "DEVICE", "RESULTS_PATH"):
        assert f"\n{name_} = " in "\n" + params[0].source


def _run(nb, tmp_path, **params):
    out = tmp_path / "out.ipynb"
    return papermill.execute_notebook(str(NB_DIR / nb), str(out), parameters=params, cwd=str(NB_DIR),
                                      progress_bar=False, kernel_name="python3")


def test_train_notebook_with_other_parameters(tmp_path):
    """02 with ARCH=lstm, TASK=singleobject writes the metrics the README documents."""
    res = tmp_path / "m.json"
    _run("02_train_models.ipynb", tmp_path, ARCH="lstm", TASK="singleobject", SEED=3, D_MODEL=32, SMOKE=True, RESULTS_PATH=str(res))
    m = json.loads(res.read_text())
    for key in ("trial_acc_train", "trial_acc_heldout", "trial_acc_out_of_range", "steps_to_solve", "seconds_to_solve", "run_dir"):
        assert key in m
    assert m["arch"] == "lstm" and m["task"] == "singleobject" and m["d_model"] == 32
    assert 0.0 <= m["trial_acc_train"] <= 1.0 and m["steps"] > 0
    run_dir = Path(m["run_dir"])
    assert run_dir.name.startswith("singleobject-lstm-d32-s3-") and (run_dir / "latest.pt").exists()  # smoke sizes: not the book's recipe
    assert Path(os.environ["SYMLIB_DATA"]) in run_dir.parents  # tests never write into the reader's data/


def test_bad_architecture_fails_fast_and_writes_nothing(tmp_path):
    """An unknown ARCH stops 02 with the valid choices named, and leaves no run behind."""
    runs = Path(os.environ["SYMLIB_DATA"]) / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("02_train_models.ipynb", tmp_path, ARCH="rnn", SMOKE=True)
    assert "valid choices" in str(err.value) and "transformer" in str(err.value)
    after = set(runs.iterdir()) if runs.exists() else set()
    assert after == before


def test_negative_patience_fails_fast_and_writes_nothing(tmp_path):
    """PATIENCE=-2 (which once saved an untrained GRU as the book's) stops 02 at once, naming the
    parameter as typed, its value and what is allowed; no run is left behind."""
    runs = Path(os.environ["SYMLIB_DATA"]) / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("02_train_models.ipynb", tmp_path, PATIENCE=-2, SMOKE=True)
    assert "PATIENCE=-2 is not allowed" in str(err.value) and ">= 0" in str(err.value)
    after = set(runs.iterdir()) if runs.exists() else set()
    assert after == before


def test_das_notebook_with_other_parameters(tmp_path):
    """03 on an LSTM with a boundless alignment: test-split IIA and changed-pair IIA, every control with
    both numbers on the same test pairs, the learned size and boundary, the sweep with its timing; with
    COMPARE its table has one row per architecture and alignment function, each with its own controls.
    SWEEP given as a number (papermill passes numbers) works."""
    res = tmp_path / "m.json"
    _run("03_das_alignment.ipynb", tmp_path, ARCH="lstm", ALIGNMENT="boundless", COMPARE=True, SWEEP=2, SMOKE=True, RESULTS_PATH=str(res))
    m = json.loads(res.read_text())
    for key in ("iia_test", "iia_changed_test", "iia_token_test", "iia_changed_test_heldout", "controls", "learned_n_units",
                "boundary", "iia_vs_units", "sweep_seconds", "seconds", "steps", "table", "number_line"):
        assert key in m, key
    assert m["arch"] == "lstm" and isinstance(m["learned_n_units"], int) and 0 <= m["learned_n_units"] <= 32
    assert isinstance(m["boundary"], float)
    assert set(m["controls"]) == {"no_swap", "initial", "wrong_labels", "wrong_program"}
    # each control on its own changed pairs and on the main search's changed pairs
    assert all({"iia_test", "iia_changed_test", "iia_changed_main"} <= set(c) for c in m["controls"].values())
    assert m["control_max_changed_main"] == max(m["controls"][c]["iia_changed_main"] for c in ("initial", "wrong_labels", "wrong_program"))
    assert list(m["iia_vs_units"]) == ["2"]
    assert [(r["arch"], r["alignment"]) for r in m["table"]] == [(a, k) for a in ("gru", "lstm", "transformer") for k in symlib_alignments]
    for row in m["table"]:
        assert {"iia_test", "iia_changed_test"} <= set(row) and set(row["controls"]) == set(m["controls"])
        # every row says whether its search converged; at smoke size (20-40 steps) none can: not hidden
        assert row["converged"] is False, row
    assert m["converged"] is False and m["illustration_steps"] == 20 and m["budget_curve"]
    assert oct(res.stat().st_mode & 0o044) == oct(0o044), "metrics are readable by others"


def _runs():
    runs = Path(os.environ["SYMLIB_DATA"]) / "runs"
    return set(runs.iterdir()) if runs.exists() else set()


def test_das_notebook_rejects_bad_input_before_any_work(tmp_path):
    """A subspace wider than the state fails in the first cells, before a network is trained, naming both sizes."""
    before = _runs()
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("03_das_alignment.ipynb", tmp_path, N_UNITS=500, SEED=11, SMOKE=True)
    assert "500" in str(err.value) and "32" in str(err.value)
    assert _runs() == before


def test_das_notebook_checks_run_dir_against_arch_and_task(tmp_path):
    """RUN_DIR holding an LSTM on MultiObject with TASK=singleobject stops at once, naming what the run holds."""
    res = tmp_path / "m.json"
    _run("02_train_models.ipynb", tmp_path, ARCH="lstm", SEED=5, D_MODEL=32, SMOKE=True, RESULTS_PATH=str(res))
    run_dir = json.loads(res.read_text())["run_dir"]
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("03_das_alignment.ipynb", tmp_path, RUN_DIR=run_dir, ARCH="lstm", TASK="singleobject", SMOKE=True)
    assert "lstm" in str(err.value) and "multiobject" in str(err.value) and "singleobject" in str(err.value)


def test_compare_notebook_with_other_parameters(tmp_path):
    """04 on an LSTM and SingleObject with Up-Up's resp_count and phase: its table has one row per
    cell with raw and changed-pair IIA and the controls; Up-Down has no resp_count, so it is left out."""
    res = tmp_path / "m.json"
    _run("04_compare_programs.ipynb", tmp_path, ARCHS="lstm", TASKS="singleobject", PROGRAMS="up_down,up_up",
         VARIABLES="resp_count,phase", SEEDS="0,1", SMOKE=True, RESULTS_PATH=str(res))
    m = json.loads(res.read_text())
    cells = {(r["program"], r["variable"], r["seed"]) for r in m["table"]}
    assert cells == {(p, v, s) for s in (0, 1) for p, v in (("up_down", "phase"), ("up_up", "resp_count"), ("up_up", "phase"))}
    for row in m["table"]:
        assert row["arch"] == "lstm" and row["task"] == "singleobject"
        for key in ("iia_test", "iia_changed_test", "no_swap_iia_test", "initial_iia_changed_test",
                    "wrong_labels_iia_changed_test", "wrong_program_iia_changed_test", "wrong_program_iia_changed_main",
                    "control_max_changed_test", "margin_changed_test", "verdict"):
            assert key in row, key
    for key in ("follows", "sameobject", "attention", "out_of_range", "double", "count_phase", "phase"):
        assert key in m, key


def test_compare_notebook_rejects_bad_input_before_any_work(tmp_path):
    """An unknown program in PROGRAMS stops 04 in its first cells, naming the valid ones, before any training."""
    before = _runs()
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("04_compare_programs.ipynb", tmp_path, PROGRAMS="up_down,down_up", SEED=13, SMOKE=True)
    assert "down_up" in str(err.value) and "ctx_distr" in str(err.value)
    assert _runs() == before


def test_dynamics_notebook_with_other_parameters(tmp_path):
    """05 on two LSTM seeds with every checkpoint writes, per seed, IIA and accuracy at each
    checkpoint, and per architecture the correlation and the lag."""
    res = tmp_path / "m.json"
    _run("05_learning_dynamics.ipynb", tmp_path, ARCHS="lstm", SEEDS="5,6", SEED=6, N_CHECKPOINTS=0, COLD_CHECK=0,
         SMOKE=True, RESULTS_PATH=str(res))
    m = json.loads(res.read_text())
    assert set(m["iia_by_checkpoint"]) == {"lstm"} and set(m["iia_by_checkpoint"]["lstm"]) == {"5", "6"}
    for rows in m["iia_by_checkpoint"]["lstm"].values():
        assert [r["step"] for r in rows] == [0, 25, 50]  # every checkpoint of a 50-step smoke run
        for r in rows:
            for key in ("iia_changed_test", "iia_test", "trial_acc_train", "trial_acc_heldout", "search_steps", "converged"):
                assert key in r, key
    assert set(m["correlation"]["lstm"]) >= {"r", "lo", "hi"} and "mean_lag" in m["lag"]["lstm"]
    assert m["warm_vs_cold"] is None and m["transformer_programs"] is None
    assert any("searches converged" in line for line in m["summary"])  # what the README block prints


def test_dynamics_notebook_rejects_bad_input_before_any_work(tmp_path):
    """An unknown architecture stops 05 in its first cells, naming the valid ones, before any training."""
    before = _runs()
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("05_learning_dynamics.ipynb", tmp_path, ARCHS="gru,cnn", SEEDS="7", SEED=7, SMOKE=True)
    assert "cnn" in str(err.value) and "transformer_nope" in str(err.value)
    assert _runs() == before


def test_mas_notebook_with_other_parameters(tmp_path):
    """06 on three networks (two LSTM seeds and a GRU), two sizes and no cross-task network writes
    the matrices it documents, in the order of NETWORKS."""
    res = tmp_path / "m.json"
    _run("06_model_alignment_search.ipynb", tmp_path, NETWORKS="lstm:5,gru:5,lstm:6", UNITS="1,2", CROSS_TASK="",
         SMOKE=True, RESULTS_PATH=str(res))
    m = json.loads(res.read_text())
    assert m["names"] == ["lstm:5", "gru:5", "lstm:6"]
    for key in ("mas_iia", "mas_iia_normalised", "mas_control", "mas_control_normalised", "cka", "rsa", "stitch_iia"):
        assert len(m[key]) == 3 and all(len(row) == 3 for row in m[key]), key
    # smoke searches of 10 steps cannot converge under the 1000-step plateau rule: said so, not hidden
    assert m["search"]["converged"] is False and m["search_normalised"]["converged"] is False
    assert "before convergence" in m["search"]["stopped_because"]
    assert m["cka"][0][0] == pytest.approx(1.0)
    # the size sweep on raw and z-scored states
    assert set(m["mas_iia_vs_units"]) == {"GRU-LSTM, raw", "GRU-LSTM, z-scored"}
    assert all(set(pts) == {"1", "2"} for pts in m["mas_iia_vs_units"].values())
    assert any(line.startswith("- GRU-LSTM: cross IIA on z-scored states 1 dims") for line in m["summary"])
    assert set(m["cl_iia"]) == {"lstm:5 -> gru:5", "gru:5 -> gru:5"}
    assert m["cross_task"] is None
    # every other search says whether it converged (none can in 10 steps), and the budget is stated
    whats = [r["what"] for r in m["sweep_searches"]]
    assert whats == ["alone", "GRU-LSTM, raw 1 dims", "GRU-LSTM, raw 2 dims", "GRU-LSTM, z-scored 1 dims",
                     "GRU-LSTM, z-scored 2 dims", "rotation", "linear", "z-scored", "stitching", "CL", "behavioural"]
    assert not any(r["converged"] for r in m["sweep_searches"]) and all(r["steps"] <= 30 for r in m["sweep_searches"])
    assert m["budget"] == {"max_steps": 10, "sweep_steps": 10, "plateau_steps": 1000, "plateau_tol": 0.005}
    assert len(m["summary"]) >= 5 and all(line.startswith("- ") for line in m["summary"])  # what the README block prints
    assert any("Budget:" in line for line in m["summary"])


def test_mas_notebook_rejects_bad_input_before_any_work(tmp_path):
    """A malformed NETWORKS item stops 06 in its first cells, before any network is trained."""
    before = _runs()
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("06_model_alignment_search.ipynb", tmp_path, NETWORKS="gru:0,gru", SMOKE=True)
    assert "arch:seed" in str(err.value)
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("06_model_alignment_search.ipynb", tmp_path, NETWORKS="gru:0,rnn:1", SMOKE=True)
    assert "rnn" in str(err.value) and "transformer" in str(err.value)
    assert _runs() == before


def test_own_model_notebook_with_other_parameters(tmp_path):
    """07 with a Llama at its last block and no MAS writes the DAS results the README documents."""
    pytest.importorskip("transformers")
    res = tmp_path / "m.json"
    _run("07_your_own_model.ipynb", tmp_path, HF_FAMILY="llama", HF_LAYER=-1, BOOK_NETWORK="", SEED=4, SMOKE=True,
         RESULTS_PATH=str(res))
    m = json.loads(res.read_text())
    assert m["hf_family"] == "llama" and m["hf_layer"] == -1 and m["mas_iia_changed_test"] is None
    for key in ("own_das", "hf_das"):
        d = m[key]
        assert 0 <= d["iia_test"] <= 1 and 0 <= d["iia_changed_test"] <= 1
        assert set(d["controls"]) == {"no_swap", "initial", "wrong_labels", "wrong_program"}
    assert 0 <= m["own_trial_acc"] <= 1 and 0 <= m["hf_trial_acc"] <= 1
    assert all(m["errors"].values()) and len(m["errors"]) == 4


def test_own_model_notebook_rejects_bad_input_before_any_work(tmp_path):
    """An unknown HuggingFace family or book network stops 07 before anything is trained, naming the choices."""
    before = _runs()
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("07_your_own_model.ipynb", tmp_path, HF_FAMILY="bert", SMOKE=True)
    assert "gpt2" in str(err.value) and "llama" in str(err.value)
    with pytest.raises(papermill.PapermillExecutionError) as err:
        _run("07_your_own_model.ipynb", tmp_path, BOOK_NETWORK="rnn:0", SMOKE=True)
    assert "rnn" in str(err.value) and "gru" in str(err.value)
    assert _runs() == before
