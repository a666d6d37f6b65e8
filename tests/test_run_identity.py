"""A run's identity is its whole recipe: ``load_or_train`` never returns a network another recipe
trained, a run is finished only once it has ended by its own rule, settings out of range are
refused before any work, and the book's recipe keeps its plain name, which every chapter asks for."""
import json
from pathlib import Path

import pytest

from symlib.analyses import params
from symlib.networks import training
from symlib.book.build import CHAPTERS
from symlib.analyses.findings import FINDINGS_TRAIN
from symlib.networks.training import TrainConfig, run_finished, load_or_train, load_run, run_config, train

TINY = dict(d_model=16, eval_every=4, n_eval_trials=16, n_train_trials=64, batch_size=16)
QUIET = dict(device="cpu", progress=False)
NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """``runs_dir()`` is a fresh folder."""
    monkeypatch.setattr(training, "runs_dir", lambda: tmp_path)
    return tmp_path


# ---- another recipe is never returned --------------------------------------------------------

def test_another_recipe_is_not_returned(runs):
    """Asked with another step cap or learning rate, load_or_train trains that recipe's run in its own
    folder (it used to return the run already under the plain name), and leaves the other runs as they were."""
    a = load_or_train(max_steps=8, **TINY, **QUIET)
    b = load_or_train(max_steps=12, **TINY, **QUIET)
    assert b.config.max_steps == 12 and b.history[-1]["step"] == 12 and b.run_dir != a.run_dir
    c = load_or_train(max_steps=8, **{**TINY, "lr": 1e-3}, **QUIET)
    assert c.config.lr == 1e-3 and c.run_dir not in (a.run_dir, b.run_dir)
    assert load_run(a.run_dir).history[-1]["step"] == 8 and run_config(a.run_dir).lr == 5e-4
    again = load_or_train(max_steps=8, **TINY, **QUIET)  # each recipe gets its own run back
    assert again.run_dir == a.run_dir and again.config == a.config


@pytest.mark.parametrize("other,there,asked", [({"lr": 1e-3}, "lr=0.001 there", "lr=0.0005 asked"),
                                               ({"max_steps": 12}, "max_steps=12 there", "max_steps=8 asked")])
def test_a_folder_holding_another_recipe_stops_with_what_is_there_and_what_was_asked(runs, other, there, asked):
    """A run of another recipe sitting in the asked recipe's folder (as an older version named every run,
    or a Transformer trained by hand for 3000 steps where the book asks for 1000) is not returned: a
    ValueError says what the folder holds and what was asked, and the folder is left alone."""
    recipe = {**TINY, "max_steps": 8}
    folder = runs / TrainConfig(**recipe).run_name()
    train(run_dir=folder, **{**recipe, **other}, **QUIET)
    before = (folder / "latest.pt").stat().st_mtime_ns
    with pytest.raises(ValueError) as e:
        load_or_train(**recipe, **QUIET)
    msg = str(e.value)
    assert str(folder) in msg and there in msg and asked in msg and "another recipe" in msg
    assert (folder / "latest.pt").stat().st_mtime_ns == before


def test_run_dir_with_another_recipe_asked_is_refused(runs):
    """With RUN_DIR, a recipe field asked for that the run does not have raises instead of being ignored."""
    folder = runs / "r"
    train(run_dir=folder, max_steps=8, **TINY, **QUIET)
    assert load_or_train(run_dir=folder, max_steps=8, **QUIET).config.max_steps == 8  # its own recipe: fine
    with pytest.raises(ValueError, match="max_steps=8 there, max_steps=12 asked"):
        load_or_train(run_dir=folder, max_steps=12, **QUIET)


# ---- finished means: ended by its own rule ---------------------------------------------------

def test_a_run_interrupted_after_going_on_with_a_longer_budget_is_not_finished(runs, monkeypatch):
    """Ctrl-C just after a finished 8-step run goes on towards 12 steps leaves a folder whose config says 12
    but whose last record says "max_steps=8 reached": not finished (it used to be taken as finished and
    returned at step 9); load_or_train goes on to 12."""
    folder = runs / "r"
    train(run_dir=folder, max_steps=8, **TINY, **QUIET)
    assert run_finished(folder)
    real = training._Run.after_step

    def interrupted(self, *a, **kw):
        out = real(self, *a, **kw)
        if self.step == 9:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(training._Run, "after_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(run_dir=folder, max_steps=12, **TINY, **QUIET)
    monkeypatch.setattr(training._Run, "after_step", real)
    assert json.loads((folder / "metrics.json").read_text())[-1]["stopped_because"] == "max_steps=8 reached"
    assert run_config(folder).max_steps == 12
    assert not run_finished(folder) and not run_finished(folder, TrainConfig(max_steps=12, **TINY))
    got = load_or_train(run_dir=folder, **QUIET)
    assert got.history[-1]["step"] == 12 and got.summary["stopped_because"] == "max_steps=12 reached"


def test_a_run_saved_with_a_negative_patience_is_not_finished_and_is_refused(runs):
    """What chapter 02 saved with PATIENCE=-2 (an untrained network "solved" at its first evaluation) is
    not a finished run, and loading it says its config is not allowed."""
    folder = runs / "r"
    train(run_dir=folder, max_steps=8, **TINY, **QUIET)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "patience": -2}))
    hist = json.loads((folder / "metrics.json").read_text())[:2]
    hist[-1]["stopped_because"] = "solved: trial accuracy on training counts >= 0.99 for -2 evaluations"
    (folder / "metrics.json").write_text(json.dumps(hist))
    assert hist[-1]["trial_acc_train"] < 0.99 and not run_finished(folder)
    with pytest.raises(ValueError, match="patience=-2 is not allowed"):
        load_or_train(run_dir=folder, **QUIET)


def test_negative_patience_is_refused_before_any_work(runs):
    """patience=-2 stops train and load_or_train at once, naming the field, the value and what is allowed;
    nothing is written."""
    with pytest.raises(ValueError) as e:
        train(run_dir=runs / "r", patience=-2, **TINY, **QUIET)
    msg = str(e.value)
    assert "patience=-2" in msg and ">= 0" in msg and "0: never stop early" in msg
    with pytest.raises(ValueError, match="patience=-2 is not allowed"):
        load_or_train(patience=-2, **TINY, **QUIET)
    with pytest.raises(ValueError, match=r"warmup_steps=0 is not allowed.*>= 1"):
        TrainConfig(warmup_steps=0)
    assert not any(runs.iterdir())


# ---- the book's recipe keeps its plain name, and every chapter asks for it -------------------

def test_the_book_recipe_keeps_the_plain_name_and_any_other_gets_its_own():
    """The default recipe (spelled out or not) is ``<task>-<arch>-d<width>-s<seed>``, the name the book's
    networks have always had; every other recipe has a name of its own."""
    for arch in ("gru", "lstm", "transformer", "transformer_nope"):
        plain = f"multiobject-{arch}-d128-s0"
        assert TrainConfig(arch=arch).run_name() == plain
        assert TrainConfig(arch=arch, **FINDINGS_TRAIN.get(arch, {})).run_name() == plain  # make findings, chapters 04-07
    assert TrainConfig(max_steps=3000, patience=8.0, lr=5e-4, unk_p=0.0, response_input="free").run_name() == "multiobject-gru-d128-s0"
    assert TrainConfig(task="singleobject", arch="lstm", d_model=64, seed=2).run_name() == "singleobject-lstm-d64-s2"
    others = [TrainConfig(arch="transformer", max_steps=3000), TrainConfig(patience=0), TrainConfig(lr=1e-3),
              TrainConfig(**params.SMOKE_TRAIN), TrainConfig(**params.SMOKE_TRAIN_DYNAMICS)]  # the test suite's tiny runs
    names = [c.run_name() for c in others]
    assert len(set(names)) == len(names)
    assert all(n.startswith(f"multiobject-{c.arch}-d{c.d_model}-s0-") for n, c in zip(names, others))


def _parameters(notebook: str) -> dict:
    """The values of a chapter's parameters cell (its .py)."""
    src = (NB_DIR / f"{notebook}.py").read_text()
    cell = src.split('# %% tags=["parameters"]\n', 1)[1].split("\n# %%", 1)[0]
    ns: dict = {}
    exec(cell, ns)
    return ns


def test_chapters_00_and_02_train_the_networks_the_later_chapters_load():
    """Chapter 00's GRU and chapter 02's networks, at the parameters ``make book`` gives them, are the book's
    recipe: the plain names that chapters 03-08, compare and findings load (each trained once)."""
    p00, p02 = _parameters("00_quickstart"), _parameters("02_train_models")
    gru00 = TrainConfig(arch="gru", max_steps=p00["MAX_STEPS"])  # 1500 steps once: a second GRU for chapter 02 to train
    assert gru00 == TrainConfig(arch="gru") and gru00.run_name() == "multiobject-gru-d128-s0"
    chapters = [c for c in CHAPTERS if c.notebook == "02_train_models"]
    assert {c.params["ARCH"] for c in chapters} == {"gru", "lstm", "transformer"}
    for c in chapters:
        p = {**p02, **c.params}
        cfg = TrainConfig(task=p["TASK"], arch=p["ARCH"], seed=p["SEED"], d_model=p["D_MODEL"], patience=p["PATIENCE"],
                          max_steps=None if p["MAX_STEPS"] == -1 else p["MAX_STEPS"])
        assert cfg.run_name() == f"multiobject-{p['ARCH']}-d128-s0", c.name
        assert cfg == TrainConfig(arch=p["ARCH"], **FINDINGS_TRAIN.get(p["ARCH"], {}))
