"""symlib.analyses.params: one description of every chapter's parameters, checked before any work.

The checks are called directly here (milliseconds each): every bad input gives one short
message naming the parameter as typed, its value and the one rule it breaks. A few
end-to-end runs check that a chapter run with papermill stops in its first code cell and
leaves its data folder empty, and that a sweep refuses a bad value with status 2, writing
nothing.
"""
import ast
import functools
import json
from dataclasses import asdict
from pathlib import Path

import papermill
import pytest
import yaml

import symlib
from symlib.analyses import compare, params
from symlib.book import sweep
from symlib.networks.models import ARCH_NAMES, ModelConfig, make_model

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = sorted(p.stem for p in NB_DIR.glob("0[0-8]_*.ipynb"))


@functools.lru_cache(maxsize=None)
def _defaults(chapter: str) -> dict:
    """The chapter's parameters cell, as values."""
    return {n: ast.literal_eval(p["default"]) for n, p in papermill.inspect_notebook(str(NB_DIR / f"{chapter}.ipynb")).items()}


def _problems(chapter: str, **changes) -> list[str]:
    return params.problems(chapter, {**_defaults(chapter), **changes})


@pytest.fixture
def no_smoke(monkeypatch):
    monkeypatch.delenv("SYMLIB_SMOKE", raising=False)


# ---- the descriptions ------------------------------------------------------------------

@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_chapter_describes_exactly_its_parameters_and_its_defaults_pass(chapter, monkeypatch):
    """The description names every parameter of the notebook's parameters cell and no other; the
    notebook's first cells check it (so a sweep finds it); the defaults pass at both sizes."""
    assert list(params.CHAPTERS[chapter].rules) and set(params.CHAPTERS[chapter].rules) == set(_defaults(chapter))
    assert params.notebook_chapter(NB_DIR / f"{chapter}.ipynb") == chapter
    for smoke in ("0", "1"):
        monkeypatch.setenv("SYMLIB_SMOKE", smoke)
        assert _problems(chapter) == []


def test_the_books_and_the_makefiles_parameters_pass():
    """Every chapter of `make book` with its parameters passes its chapter's check."""
    from symlib.book import build as book
    for c in book.CHAPTERS:
        assert params.problems(c.notebook, {**_defaults(c.notebook), **c.params}) == [], c.name
    for chapter, changes in [("03_das_alignment", dict(COMPARE=True)),
                             ("05_learning_dynamics", dict(ARCHS="gru,lstm", SEEDS="0,1,2", N_CHECKPOINTS=6, COLD_CHECK=2)),
                             ("06_model_alignment_search", dict(NETWORKS="gru:0,gru:1,lstm:0,transformer:0", UNITS="1,4,16",
                                                                MAX_STEPS=20000, SWEEP_STEPS=20000, CROSS_TASK=""))]:
        assert _problems(chapter, **changes) == []


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_sizes_are_read_as_the_models_build_them(arch):
    """Sites, state widths and the widths an architecture takes agree with the networks symlib builds."""
    for d in (16, 32, 128):
        model = make_model(arch, vocab_size=9, d_model=d)
        assert params.sites_of(arch) == model.sites and params.default_site(arch) == model.default_site
        for site in model.sites:
            assert params.state_width(arch, d, site) == model.state_size(site)
    for d in (2, 3, 5, 6, 33):
        try:
            ModelConfig(arch=arch, d_model=d)
            builds = True
        except ValueError:
            builds = False
        assert (params.width_problem(arch, d) is None) == builds, d


def test_smoke_sizes_are_defined_once():
    """compare's smoke sizes are params'; the search's is search.BUDGETS['smoke']."""
    from symlib.intervene.search import BUDGETS
    assert compare.SMOKE_TRAIN is params.SMOKE_TRAIN
    assert compare.SMOKE_SEARCH == {**BUDGETS["smoke"], "n_test_heldout": params.SMOKE_HELDOUT}
    for chapter in CHAPTERS:
        src = (NB_DIR / f"{chapter}.py").read_text()
        assert "n_train_trials=256" not in src and "max_steps=24" not in src, chapter


# ---- bad input, one message each -------------------------------------------------------

BAD = [
    # the known holes
    ("03_das_alignment", dict(N_UNITS=0), ["N_UNITS=0 is not allowed", "a whole number >= 1"]),
    ("03_das_alignment", dict(SWEEP="16,256"), ["SWEEP='16,256' is not allowed", "256 dims", "128 dims"]),
    ("04_compare_programs", dict(SEEDS="0,0"), ["SEEDS='0,0' is not allowed", "repeats 0"]),
    ("06_model_alignment_search", dict(N_UNITS=200), ["N_UNITS=200 is not allowed", "wider", "128 dims"]),
    ("06_model_alignment_search", dict(UNITS="1,500"), ["UNITS='1,500' is not allowed", "500 dims", "128 dims"]),
    ("06_model_alignment_search", dict(NETWORKS="gru:0,gru:-1"), ["NETWORKS='gru:0,gru:-1'", "item 'gru:-1'", ">= 0"]),
    ("07_your_own_model", dict(HF_LAYER=5), ["HF_LAYER=5 is not allowed", "from -2 to 1", "2-block model"]),
    ("03_das_alignment", dict(N_UNITS="16"), ["N_UNITS='16' is not allowed", "a whole number >= 1"]),
    ("04_compare_programs", dict(MAX_STEPS="600"), ["MAX_STEPS='600' is not allowed", "a whole number >= 1"]),
    ("02_train_models", dict(SEED="abc"), ["SEED='abc' is not allowed", "a whole number >= 0"]),
    ("05_learning_dynamics", dict(N_CHECKPOINTS=1), ["N_CHECKPOINTS=1 is not allowed", "0 (every checkpoint) or a whole number >= 2"]),
    # and more kinds
    ("02_train_models", dict(MAX_STEPS=0), ["MAX_STEPS=0 is not allowed", "-1 (the book's cap"]),
    ("02_train_models", dict(MAX_STEPS=-5), ["MAX_STEPS=-5 is not allowed"]),
    ("02_train_models", dict(D_MODEL=33, ARCH="lstm"), ["D_MODEL=33 is not allowed", "even"]),
    ("02_train_models", dict(D_MODEL=1), ["D_MODEL=1 is not allowed", ">= 2"]),
    ("02_train_models", dict(UNK_P=1.0), ["UNK_P=1.0 is not allowed", "[0, 1)"]),
    ("02_train_models", dict(RESPONSE_INPUT="forced"), ["RESPONSE_INPUT='forced' is not allowed", "original, free, teacher"]),
    ("02_train_models", dict(TASK="multiobjet"), ["TASK='multiobjet'", "did you mean 'multiobject'"]),
    ("02_train_models", dict(DEVICE="gpu"), ["DEVICE='gpu' is not allowed", "auto", "cpu", "cuda"]),
    ("02_train_models", dict(SMOKE="yes"), ["SMOKE='yes' is not allowed", "True or False"]),
    ("03_das_alignment", dict(N_TRAIN=100), ["N_TRAIN=100 is not allowed", ">= 128"]),
    ("03_das_alignment", dict(N_TEST=0), ["N_TEST=0 is not allowed", ">= 1"]),
    ("03_das_alignment", dict(N_TEST_HELDOUT=-1), ["N_TEST_HELDOUT=-1 is not allowed", ">= 0"]),
    ("03_das_alignment", dict(MAX_STEPS=-3), ["MAX_STEPS=-3 is not allowed"]),
    ("03_das_alignment", dict(ALIGNMENT="orthogonl"), ["ALIGNMENT='orthogonl'", "did you mean 'orthogonal'"]),
    ("03_das_alignment", dict(PROGRAM="updown"), ["PROGRAM='updown'", "up_down, up_up, ctx_distr"]),
    ("03_das_alignment", dict(VARIABLE="cuont"), ["VARIABLE='cuont'", "did you mean 'count'"]),
    ("03_das_alignment", dict(VARIABLE="resp_count"), ["VARIABLE='resp_count'", "program up_down has no resp_count"]),
    ("03_das_alignment", dict(VARIABLE="count_phase"), ["VARIABLE='count_phase'", "boundless"]),
    ("03_das_alignment", dict(RUN_DIR="/no/such/run"), ["RUN_DIR='/no/such/run' is not allowed", "no such folder"]),
    ("03_das_alignment", dict(SWEEP=""), ["SWEEP='' is not allowed", "at least one size"]),
    ("03_das_alignment", dict(SWEEP="1,x"), ["SWEEP='1,x'", "item 'x'", "a whole number >= 1"]),
    ("03_das_alignment", dict(COMPARE="no"), ["COMPARE='no' is not allowed", "True or False"]),
    ("04_compare_programs", dict(PROGRAMS="up_down,down_up"), ["item 'down_up'", "ctx_distr"]),
    ("04_compare_programs", dict(PROGRAMS="up_down", VARIABLES="resp_count"), ["VARIABLES='resp_count'", "no program in PROGRAMS"]),
    ("04_compare_programs", dict(VARIABLES="count,full"), ["VARIABLES='count,full'", "item 'full'"]),
    ("04_compare_programs", dict(SEEDS="0,-1"), ["SEEDS='0,-1'", "item -1", ">= 0"]),
    ("04_compare_programs", dict(ARCHS=""), ["ARCHS='' is not allowed", "at least one item"]),
    ("04_compare_programs", dict(GRID_TABLE="/no/such/results.csv"), ["GRID_TABLE=", "no such file", "make compare-grid"]),
    ("05_learning_dynamics", dict(N_CHECKPOINTS=-2), ["N_CHECKPOINTS=-2 is not allowed"]),
    ("05_learning_dynamics", dict(WARM_STEPS=-1), ["WARM_STEPS=-1 is not allowed", "0 (the fresh search's cap) or a whole number >= 1"]),
    ("05_learning_dynamics", dict(AFTER_SOLVE=-200), ["AFTER_SOLVE=-200 is not allowed", ">= 0"]),
    ("05_learning_dynamics", dict(COLD_CHECK=2.5), ["COLD_CHECK=2.5 is not allowed"]),
    ("05_learning_dynamics", dict(SEEDS="0,1", SEED=3), ["SEED=3 is not allowed", "one of SEEDS (0, 1)"]),
    ("05_learning_dynamics", dict(SEEDS="0,1,1"), ["SEEDS='0,1,1'", "repeats 1"]),
    ("05_learning_dynamics", dict(ARCHS="gru,gru"), ["ARCHS='gru,gru'", "repeats gru"]),
    ("05_learning_dynamics", dict(TASK="counting"), ["TASK='counting' is not allowed", "multiobject"]),
    ("06_model_alignment_search", dict(NETWORKS="gru:0"), ["NETWORKS='gru:0' is not allowed", "at least 2 networks"]),
    ("06_model_alignment_search", dict(NETWORKS="gru:0,gru:0"), ["NETWORKS='gru:0,gru:0'", "repeats gru:0"]),
    ("06_model_alignment_search", dict(NETWORKS="gru:0,gru"), ["item 'gru' must be arch:seed"]),
    ("06_model_alignment_search", dict(NETWORKS="gru:0,rnn:1"), ["unknown architecture 'rnn'", "transformer"]),
    ("06_model_alignment_search", dict(UNITS=""), ["UNITS='' is not allowed", "at least one size"]),
    ("06_model_alignment_search", dict(UNITS="0,4"), ["UNITS='0,4'", "item 0"]),
    ("06_model_alignment_search", dict(CROSS_TASK="single"), ["CROSS_TASK='single'", "or empty"]),
    ("06_model_alignment_search", dict(SWEEP_STEPS=0), ["SWEEP_STEPS=0 is not allowed", ">= 1"]),
    ("07_your_own_model", dict(HF_LAYER=-3), ["HF_LAYER=-3 is not allowed"]),
    ("07_your_own_model", dict(LR=0), ["LR=0 is not allowed", "> 0"]),
    ("07_your_own_model", dict(LR=-1e-3), ["LR=-0.001 is not allowed", "> 0"]),
    ("07_your_own_model", dict(D_MODEL=20, HF_FAMILY="llama"), ["D_MODEL=20 is not allowed", "multiple of 8"]),
    ("07_your_own_model", dict(N_UNITS=80), ["N_UNITS=80 is not allowed", "D_MODEL=64"]),
    ("07_your_own_model", dict(BOOK_NETWORK="gru"), ["BOOK_NETWORK='gru' is not allowed", "arch:seed", "or empty"]),
    ("07_your_own_model", dict(BOOK_NETWORK="gru:x"), ["BOOK_NETWORK='gru:x'", "the seed must be a whole number >= 0"]),
    ("07_your_own_model", dict(HF_FAMILY="bert"), ["HF_FAMILY='bert' is not allowed", "gpt2, llama"]),
    ("07_your_own_model", dict(OWN_STEPS=0), ["OWN_STEPS=0 is not allowed", ">= 1"]),
    ("08_explorer", dict(PROGRAM="up_up", VARIABLE="count_demo"), ["VARIABLE='count_demo'", "did you mean"]),
    ("08_explorer", dict(PROGRAM="ctx_distr", VARIABLE="resp_count"), ["VARIABLE='resp_count'", "program ctx_distr has no resp_count"]),
    ("08_explorer", dict(ARCH="GRU"), ["ARCH='GRU' is not allowed", "did you mean 'gru'"]),
    ("00_quickstart", dict(MAX_STEPS=0), ["MAX_STEPS=0 is not allowed"]),
    ("01_tasks_and_programs", dict(N_PAIRS=0), ["N_PAIRS=0 is not allowed"]),
    ("01_tasks_and_programs", dict(RESULTS_PATH=str(NB_DIR)), ["RESULTS_PATH=", "is a folder"]),
]


@pytest.mark.parametrize("chapter,changes,words", BAD, ids=[f"{c[:2]}-{'-'.join(f'{k}={v}' for k, v in ch.items())}"
                                                            for c, ch, _ in BAD])
def test_bad_input_gets_one_short_message(chapter, changes, words, no_smoke):
    """One message, naming the parameter as typed and its value first, then the one rule broken."""
    got = _problems(chapter, **changes)
    assert len(got) == 1, got
    msg = got[0]
    assert any(msg.startswith(f"{k}=") for k in changes), msg
    for w in words:
        assert w in msg, (w, msg)
    assert len(msg) < 260 and "\n" not in msg, msg


def test_smoke_size_checks_against_the_smoke_network(monkeypatch):
    """At the smoke size a subspace must fit the tiny network (32 dims)."""
    monkeypatch.setenv("SYMLIB_SMOKE", "1")
    assert _problems("03_das_alignment", N_UNITS=500) == [
        "N_UNITS=500 is not allowed: 500 dims is wider than the network's state (32 dims at the smoke size)"]
    monkeypatch.setenv("SYMLIB_SMOKE", "0")
    assert _problems("03_das_alignment", N_UNITS=100) == []
    assert _problems("03_das_alignment", N_UNITS=100, SMOKE=True) != []


def test_the_one_rule_broken_not_every_rule(no_smoke):
    """Chapter 05 used to recite every range; now each message says its own rule, and two bad
    parameters give two messages."""
    msg = _problems("05_learning_dynamics", N_CHECKPOINTS=1)[0]
    assert "AFTER_SOLVE" not in msg and "WARM_STEPS" not in msg and "COLD_CHECK" not in msg
    got = _problems("05_learning_dynamics", WARM_STEPS=-1, COLD_CHECK=-1)
    assert [m.split("=")[0] for m in got] == ["WARM_STEPS", "COLD_CHECK"]
    with pytest.raises(params.ParamError) as e:
        params.check("05_learning_dynamics", {**_defaults("05_learning_dynamics"), "WARM_STEPS": -1, "COLD_CHECK": -1})
    assert str(e.value).startswith("2 parameters are not allowed:\n  - WARM_STEPS=-1")


def test_run_dir_is_checked_against_arch_task_and_width(tmp_path, no_smoke):
    """RUN_DIR without a saved run, of another architecture, or narrower than N_UNITS is refused
    from its config.json alone."""
    (tmp_path / "empty").mkdir()
    assert "no config.json" in _problems("03_das_alignment", RUN_DIR=str(tmp_path / "empty"))[0]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(asdict(symlib.TrainConfig(arch="lstm", task="singleobject", d_model=16))))
    msg = _problems("03_das_alignment", RUN_DIR=str(run))[0]
    assert msg.startswith("RUN_DIR=") and "an lstm trained on singleobject" in msg and "ARCH='gru'" in msg
    mine = dict(RUN_DIR=str(run), ARCH="lstm", TASK="singleobject")
    assert _problems("03_das_alignment", **mine, N_UNITS=20, SWEEP="1,2") == [
        "N_UNITS=20 is not allowed: 20 dims is wider than the network's state (16 dims, the network in RUN_DIR)"]
    assert _problems("03_das_alignment", **mine)[0].startswith("SWEEP='1,2,4,8,16,32' is not allowed: 32 dims")
    assert _problems("03_das_alignment", **mine, N_UNITS=8, SWEEP="1,2") == []


def test_device_cuda_is_refused_only_where_it_runs(no_smoke):
    """DEVICE cuda in a notebook on a machine without CUDA is refused; a sweep (cells may run elsewhere) only checks the name."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert "no CUDA device" in _problems("02_train_models", DEVICE="cuda")[0]
    assert params.problems("02_train_models", {**_defaults("02_train_models"), "DEVICE": "cuda"}, local=False) == []


def test_check_notebook_returns_parsed_lists_and_whole_numbers_as_int(no_smoke):
    ns = {**_defaults("06_model_alignment_search"), "N_UNITS": 16.0, "UNITS": 4, "NETWORKS": "gru:0, lstm:1"}
    got = params.check_notebook("06_model_alignment_search", ns)
    assert got["NETWORKS"] == [("gru", 0), ("lstm", 1)] and got["UNITS"] == [4]
    assert ns["N_UNITS"] == 16 and type(ns["N_UNITS"]) is int and ns["UNITS"] == 4  # lists keep the text given
    ns = {**_defaults("02_train_models"), "UNK_P": -1}
    params.check_notebook("02_train_models", ns)
    assert ns["UNK_P"] == -1.0 and type(ns["UNK_P"]) is float


# ---- compare_cell, a sweep's function ----------------------------------------------------

@pytest.mark.parametrize("cell,words", [
    (dict(seed="zero"), ["seed='zero' is not allowed", "a whole number >= 0"]),
    (dict(n_units=0), ["n_units=0 is not allowed", ">= 1"]),
    (dict(n_units=-4), ["n_units=-4 is not allowed", ">= 1"]),
    (dict(n_units=500), ["n_units=500 is not allowed", "128 dims"]),
    (dict(n_units=70, variable="count_phase"), ["n_units=70", "2 blocks = 140 dims"]),
    (dict(n_units=100, arch="lstm", site="embed"), ["n_units=100", "64 dims at site 'embed'"]),
    (dict(max_steps=0), ["max_steps=0 is not allowed", ">= 1"]),
    (dict(n_test=0), ["n_test=0 is not allowed"]),
    (dict(train_steps=-1), ["train_steps=-1 is not allowed"]),
    (dict(controls="initial,wrong"), ["controls='initial,wrong'", "item 'wrong'"]),
    (dict(device="tpu"), ["device='tpu' is not allowed"]),
    (dict(program="up_down", variable="resp_count"), ["variable='resp_count'", "valid choices: count, phase"]),
    (dict(arch="transformer", site="state"), ["site='state' is not allowed", "resid.0"]),
])
def test_compare_cell_values_are_checked(cell, words):
    with pytest.raises(ValueError) as e:
        compare.validate_params(cell)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    compare.validate_params(dict(arch="transformer", site="resid.1", n_units=64, device="cuda"))  # cuda: the cell may run elsewhere


# ---- sweeps: a bad value exits with status 2 and writes nothing ----------------------------

def _sweep_file(tmp_path, spec: dict) -> Path:
    f = tmp_path / "grid.yaml"
    f.write_text(yaml.safe_dump(spec))
    return f


@pytest.mark.parametrize("grid,fixed,words", [
    ({"seed": ["zero"]}, {}, ["seed='zero' is not allowed"]),
    ({"n_units": [0, -4, 500]}, {}, ["n_units=0 is not allowed", "n_units=-4 is not allowed", "n_units=500 is not allowed",
                                     "[in cell n_units=-4-"]),
    ({"seed": [0, 1]}, {"max_steps": 0}, ["max_steps=0 is not allowed"]),
])
def test_function_sweep_bad_values_exit_2_and_write_nothing(tmp_path, capsys, grid, fixed, words):
    out = tmp_path / "out"
    f = _sweep_file(tmp_path, {"function": "symlib.analyses.compare.compare_cell", "out": str(out), "grid": grid,
                               **({"fixed": fixed} if fixed else {})})
    for args in ([str(f), "--dry-run"], [str(f)]):
        assert sweep.main(args) == 2
        err = capsys.readouterr().err
        for w in words:
            assert w in err, (w, err)
            assert err.count(w) == 1, err  # each problem once
        assert "Traceback" not in err
        if fixed:
            assert "[in" not in err  # every cell has it: no cell named
    assert not out.exists()


def test_notebook_sweep_checks_values_with_the_notebooks_defaults(tmp_path, capsys, no_smoke):
    """A grid over chapter 03 is checked as its first cell checks it: names as the notebook spells them."""
    out = tmp_path / "out"
    f = _sweep_file(tmp_path, {"notebook": str(NB_DIR / "03_das_alignment.ipynb"), "out": str(out),
                               "grid": {"N_UNITS": [0, 16], "SWEEP": ["16,256"]}})
    assert sweep.main([str(f), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "N_UNITS=0 is not allowed" in err and "SWEEP='16,256' is not allowed: 256 dims" in err
    f = _sweep_file(tmp_path, {"notebook": str(NB_DIR / "06_model_alignment_search.ipynb"), "out": str(out),
                               "grid": {"NETWORKS": ["gru:0,gru:-1"]}, "fixed": {"UNITS": "1,500"}})
    assert sweep.main([str(f)]) == 2
    assert "item 'gru:-1'" in capsys.readouterr().err
    f = _sweep_file(tmp_path, {"notebook": str(NB_DIR / "04_compare_programs.ipynb"), "out": str(out),
                               "grid": {"GRID_TABLE": ["no_such.csv"]}})
    assert sweep.main([str(f)]) == 2  # relative paths are read from the notebook's folder, where papermill runs it
    assert "GRID_TABLE='no_such.csv' is not allowed: no such file" in capsys.readouterr().err
    assert not out.exists()
    sweep.validate({"notebook": str(NB_DIR / "03_das_alignment.ipynb"), "out": str(out), "grid": {"N_UNITS": [4, 8]}})


def test_sweep_out_that_is_a_file_and_negative_cell_ids(tmp_path, capsys):
    """An `out` that is a file (or inside one) is refused without a traceback; -4 shows as -4 in a cell id."""
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "below"):
        f = _sweep_file(tmp_path, {"function": "symlib.analyses.compare.compare_cell", "out": str(out), "grid": {"seed": [0]}})
        assert sweep.main([str(f), "--dry-run"]) == 2
        assert "is a file" in capsys.readouterr().err
    assert sweep.cell_id({"n_units": -4}).startswith("n_units=-4-")
    assert sweep.cell_id({"x": [-1, 2]}).startswith("x=-1+2-")
    assert sweep.cell_id({"n_units": 4}) != sweep.cell_id({"n_units": -4})


# ---- end to end: a chapter stops in its first code cell, its data folder empty -------------

@pytest.mark.parametrize("notebook,changes,words", [
    ("02_train_models.ipynb", dict(SEED="abc"), ["SEED='abc' is not allowed"]),
    ("03_das_alignment.ipynb", dict(N_UNITS=0), ["N_UNITS=0 is not allowed"]),
    ("03_das_alignment.ipynb", dict(SWEEP="16,256"), ["SWEEP='16,256' is not allowed", "256 dims"]),
    ("06_model_alignment_search.ipynb", dict(N_UNITS=200), ["N_UNITS=200 is not allowed"]),
    ("07_your_own_model.ipynb", dict(HF_LAYER=5), ["HF_LAYER=5 is not allowed"]),
])
def test_chapter_fails_in_its_first_code_cell_leaving_data_empty(tmp_path, monkeypatch, notebook, changes, words):
    data, figures = tmp_path / "data", tmp_path / "figures"
    monkeypatch.setenv("SYMLIB_DATA", str(data))
    monkeypatch.setenv("SYMLIB_FIGURES", str(figures))
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(NB_DIR / notebook), str(tmp_path / "out.ipynb"), parameters={"SMOKE": True, **changes},
                                   cwd=str(NB_DIR), progress_bar=False, kernel_name="python3")
    e = err.value
    assert e.ename == "ParamError" and "check_notebook" in e.source, (e.ename, e.source)
    for w in words:
        assert w in e.evalue, (w, e.evalue)
    assert not data.exists() or not any(data.iterdir())
    assert not figures.exists() or not any(figures.iterdir())
