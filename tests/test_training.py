"""Training: config checks, determinism, exact resume, checkpoints, the lr schedule, losses."""
import json
import math
import os
import shutil
import stat

import pytest
import torch
import torch.nn as nn

import symlib
from symlib.networks.models import check_task
from symlib.networks.training import TrainConfig, is_checkpoint_step, lr_at, run_config, sequence_loss, train, training_loss

from helpers import MULTI, gen, small_model

TINY = dict(arch="gru", d_model=16, eval_every=4, n_eval_trials=32, progress=False, device="cpu")


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _history_without_clock(history, drop=("seconds",)):
    """Evaluation records without wall-clock fields; NaN losses made comparable."""
    out = []
    for rec in history:
        r = {k: v for k, v in rec.items() if k not in drop}
        r = {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        out.append(r)
    return out


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """One small run saved to disk: 26 steps (checkpoints at 0, 25 and the final 26)."""
    run_dir = tmp_path_factory.mktemp("runs") / "r26"
    res = train(max_steps=26, run_dir=run_dir, **{**TINY, "eval_every": 13})
    return run_dir, res


# ---- configuration ------------------------------------------------------------------

@pytest.mark.parametrize("bad,valid", [({"task": "nope"}, symlib.TASK_NAMES), ({"arch": "nope"}, symlib.ARCH_NAMES),
                                       ({"response_input": "nope"}, ("free", "teacher"))])
def test_bad_config_raises_before_writing(tmp_path, bad, valid):
    """An unknown task/arch/response_input raises a ValueError listing the valid choices, and nothing is written."""
    run_dir = tmp_path / "r"
    with pytest.raises(ValueError) as e:
        train(run_dir=run_dir, progress=False, device="cpu", **bad)
    for v in valid:
        assert v in str(e.value)
    assert not run_dir.exists()
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_bad_width_raises_before_writing(tmp_path):
    """An odd LSTM width is rejected by TrainConfig before the run folder is made."""
    with pytest.raises(ValueError, match="15"):
        train(arch="lstm", d_model=15, run_dir=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_default_response_input_and_unk_p():
    """Defaults follow the original: RNNs free running without voids, Transformers teacher-forced with unk_p 0.2."""
    assert (TrainConfig(arch="gru").response_input, TrainConfig(arch="gru").unk_p) == ("free", 0.0)
    assert (TrainConfig(arch="transformer").response_input, TrainConfig(arch="transformer").unk_p) == ("teacher", 0.2)


# ---- determinism and resume ----------------------------------------------------------

def test_training_is_deterministic():
    """Two runs with the same config give identical weights and identical evaluation history."""
    a = train(max_steps=12, run_dir=None, **TINY)
    b = train(max_steps=12, run_dir=None, **TINY)
    assert _same_weights(a.model, b.model)
    assert _history_without_clock(a.history) == _history_without_clock(b.history)
    assert [r["step"] for r in a.history] == [0, 4, 8, 12]
    # and training did something
    c = train(max_steps=12, run_dir=None, **{**TINY, "seed": 1})
    assert not _same_weights(a.model, c.model)


def test_resume_gives_the_same_run(tmp_path):
    """8 steps, then train() again to 16 on the same run_dir, equals one 16-step run: weights and history."""
    one = train(max_steps=16, run_dir=None, **TINY)
    run_dir = tmp_path / "r"
    half = train(max_steps=8, run_dir=run_dir, **TINY)
    assert half.history[-1]["step"] == 8
    two = train(max_steps=16, run_dir=run_dir, **TINY)
    assert _same_weights(one.model, two.model)
    # the resumed run's step-8 record says why that first call stopped; everything else is equal
    drop = ("seconds", "stopped_because")
    assert _history_without_clock(one.history, drop) == _history_without_clock(two.history, drop)
    assert two.summary["steps"] == 16 and "16" in two.summary["stopped_because"]
    # a finished run called again with the same budget does not train further
    again = train(max_steps=16, run_dir=run_dir, **TINY)
    assert _same_weights(two.model, again.model)
    assert len(again.history) == len(two.history)


# ---- checkpoints ---------------------------------------------------------------------

def test_checkpoint_schedule():
    """is_checkpoint_step: every 25 steps to 200, 50 to 1000, 250 to 5000, then 1000."""
    steps = [s for s in range(0, 7001) if is_checkpoint_step(s)]
    assert steps[:9] == [0, 25, 50, 75, 100, 125, 150, 175, 200]
    assert [s for s in steps if 200 < s <= 1000] == list(range(250, 1001, 50))
    assert [s for s in steps if 1000 < s <= 5000] == list(range(1250, 5001, 250))
    assert [s for s in steps if s > 5000] == [6000, 7000]


def test_checkpoints_written_on_schedule_and_loadable(saved_run):
    """Checkpoints exist at the scheduled steps and the final one; each loads safely (weights_only) with its step and config."""
    run_dir, res = saved_run
    assert symlib.checkpoint_steps(run_dir) == [0, 25, 26]
    for step in (0, 25, 26):
        path = run_dir / "ckpt" / f"step_{step:06d}.pt"
        st = torch.load(path, weights_only=True)
        assert st["step"] == step
        model, cfg, s = symlib.load_checkpoint(path, device="cpu")
        assert s == step and cfg == res.config and not model.training
    final, _, _ = symlib.load_checkpoint(run_dir / "ckpt" / "step_000026.pt", device="cpu")
    assert _same_weights(final, res.model)
    first, _, _ = symlib.load_checkpoint(run_dir / "ckpt" / "step_000000.pt", device="cpu")
    assert not _same_weights(first, res.model)
    assert json.loads((run_dir / "config.json").read_text())["max_steps"] == 26


def test_load_run(saved_run):
    """load_run gives the last model and the history; a missing step raises a ValueError listing the saved steps."""
    run_dir, res = saved_run
    loaded = symlib.load_run(run_dir, device="cpu")
    assert _same_weights(loaded.model, res.model)
    assert _history_without_clock(loaded.history) == _history_without_clock(res.history)
    at25 = symlib.load_run(run_dir, step=25, device="cpu")
    assert not _same_weights(at25.model, res.model)
    with pytest.raises(ValueError) as e:
        symlib.load_run(run_dir, step=7, device="cpu")
    assert "[0, 25, 26]" in str(e.value)


def test_load_checkpoint_rejects_missing_and_foreign_files(tmp_path):
    """load_checkpoint: a missing file raises FileNotFoundError, a non-symlib file a ValueError."""
    with pytest.raises(FileNotFoundError):
        symlib.load_checkpoint(tmp_path / "nothing.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a symlib checkpoint"):
        symlib.load_checkpoint(tmp_path / "other.pt")


def test_different_config_in_run_dir(saved_run, tmp_path):
    """A run_dir holding another config raises (naming the field) unless overwrite=True, which starts afresh."""
    src, _ = saved_run
    run_dir = tmp_path / "copy"
    shutil.copytree(src, run_dir)
    before = (run_dir / "config.json").read_text()
    with pytest.raises(ValueError, match="seed"):
        train(max_steps=4, run_dir=run_dir, **{**TINY, "seed": 3})
    assert (run_dir / "config.json").read_text() == before
    res = train(max_steps=4, run_dir=run_dir, overwrite=True, **{**TINY, "seed": 3})
    assert [r["step"] for r in res.history] == [0, 4]
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 3
    assert symlib.checkpoint_steps(run_dir) == [0, 4]


# ---- schedule and losses -------------------------------------------------------------

def test_lr_schedule():
    """lr_at: lr * s / warmup for s = step + 1 <= warmup, then lr * (warmup / s) ** 0.25."""
    cfg = TrainConfig(lr=1e-3, warmup_steps=10)
    for step in range(0, 200):
        s = step + 1
        want = 1e-3 * s / 10 if s <= 10 else 1e-3 * (10 / s) ** 0.25
        assert lr_at(step, cfg) == pytest.approx(want, rel=1e-12)
    lrs = [lr_at(s, cfg) for s in range(200)]
    assert max(lrs) == pytest.approx(1e-3) and lrs.index(max(lrs)) == 9
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))


def test_history_records_the_schedule():
    """The lr in each evaluation record is lr_at(step)."""
    res = train(max_steps=8, run_dir=None, **TINY)
    for rec in res.history:
        assert rec["lr"] == pytest.approx(lr_at(rec["step"], res.config))


@pytest.mark.parametrize("arch,response_input", [("gru", "free"), ("gru", "teacher"), ("lstm", "free"), ("transformer", "teacher"), ("transformer", "free")])
def test_both_response_inputs_train(arch, response_input):
    """Free-running and teacher-forced training both run, give finite losses and change the weights."""
    kw = {**TINY, "arch": arch, "eval_every": 3}
    res = train(max_steps=3, run_dir=None, response_input=response_input, batch_size=32, n_train_trials=64, **kw)
    assert res.config.response_input == response_input
    assert math.isfinite(res.history[-1]["train_loss"])
    torch.manual_seed(res.config.seed)
    init = symlib.build_model(res.config.model_config())
    assert not _same_weights(init, res.model)


@pytest.mark.parametrize("arch", ["gru", "lstm", "transformer"])
def test_training_loss_equals_sequence_loss(arch):
    """training_loss (non-pad logits only) has the same value as sequence_loss on the full logits."""
    m = small_model(arch, d_model=16, seed=5)
    tr = MULTI.sample(16, "all", gen(200))
    fed = m.free_run_tokens(tr.tokens, tr.task_mask)
    for inputs in (tr.tokens, fed):
        with torch.no_grad():
            a = training_loss(m, inputs, tr.tokens)
            b = sequence_loss(m(inputs), tr.tokens)
        assert a.item() == pytest.approx(b.item(), rel=1e-5, abs=1e-6)
    # gradients agree too
    m.zero_grad()
    training_loss(m, fed, tr.tokens).backward()
    g1 = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    sequence_loss(m(fed), tr.tokens).backward()
    for x, y in zip(g1, (p.grad for p in m.parameters())):
        assert torch.allclose(x, y, atol=1e-5)


def test_evaluate_counts_correct_trials():
    """evaluate: a model that outputs exactly the next token scores trial and token accuracy 1."""

    class Oracle(symlib.SequenceModel):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, tokens):
            nxt = torch.nn.functional.pad(tokens[:, 1:], (0, 1))
            return torch.nn.functional.one_hot(nxt, 9).float() * 10 + self.w

    tr = MULTI.sample(50, "all", gen(201))
    ev = symlib.evaluate(Oracle(), tr)
    assert ev["trial_acc"] == 1.0 and ev["token_acc"] == 1.0
    ev = symlib.evaluate(small_model("gru", seed=6), tr)
    assert 0.0 <= ev["trial_acc"] < 1.0


@pytest.mark.parametrize("arch", ["gru", "lstm"])
@pytest.mark.parametrize("task_name", ["multiobject", "multiobject_mod4"])
def test_fused_free_running_loss_equals_free_run_then_loss(arch, task_name):
    """The RNNs' fused free-running loss has the value and gradients of a free run followed by the loss."""
    from symlib.networks.training import free_running_loss, training_loss

    task = symlib.make_task(task_name)
    b = task.sample(48, "train", torch.Generator().manual_seed(5))
    torch.manual_seed(0)
    model = symlib.make_model(arch, vocab_size=task.vocab_size, d_model=32, dropout=0.0)
    ref = training_loss(model, model.free_run_tokens(b.tokens, b.task_mask), b.tokens)
    fused = free_running_loss(model, b.tokens, b.task_mask)
    g_ref = torch.autograd.grad(ref, list(model.parameters()))
    g_fused = torch.autograd.grad(fused, list(model.parameters()))
    assert torch.allclose(ref, fused, atol=1e-6)
    assert all(torch.allclose(a, c, atol=1e-6) for a, c in zip(g_ref, g_fused))


# ---- what a run remembers: its files, its task, load_or_train with a RUN_DIR ----------

def test_run_files_are_readable_json_with_the_normal_mode(saved_run):
    """metrics.json holds rounded floats and no NaN (null instead); every file of a run gets the
    normal mode (0o666 minus the umask), not mkstemp's owner-only 0o600."""
    run_dir, res = saved_run
    text = (run_dir / "metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)[0]["train_loss"] is None
    floats = [v for rec in json.loads(text) for v in rec.values() if isinstance(v, float)]
    assert floats and all(len(repr(v).replace("-", "").replace("0.", "").lstrip("0")) <= 12 for v in floats)
    assert all(float(f"{v:.6g}") == v for v in floats)
    # config.json is exact (a resumed run is compared with it)
    assert run_config(run_dir) == res.config
    mask = os.umask(0)
    os.umask(mask)
    for p in [run_dir / "config.json", run_dir / "metrics.json", run_dir / "latest.pt", run_dir / "best.pt",
              *sorted((run_dir / "ckpt").iterdir())]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p


def test_config_with_long_floats_resumes(tmp_path):
    """A config float with more than 6 digits survives config.json, so the run can be resumed."""
    run_dir = tmp_path / "r"
    kw = {**TINY, "lr": 3.3333333333e-4}
    train(max_steps=4, run_dir=run_dir, **kw)
    two = train(max_steps=8, run_dir=run_dir, **kw)
    assert two.summary["steps"] == 8 and run_config(run_dir).lr == 3.3333333333e-4


def test_networks_know_their_task(saved_run):
    """train, load_checkpoint and load_run set model.task_name from the run's config; a new network has None."""
    run_dir, res = saved_run
    assert symlib.SequenceModel.task_name is None and small_model("gru").task_name is None
    assert res.model.task_name == "multiobject"
    assert symlib.load_checkpoint(run_dir / "ckpt" / "step_000025.pt", device="cpu")[0].task_name == "multiobject"
    assert symlib.load_run(run_dir, step="best", device="cpu").model.task_name == "multiobject"
    mod4 = train(task="multiobject_mod4", max_steps=1, run_dir=None, **{**TINY, "n_eval_trials": 8})
    assert mod4.model.task_name == "multiobject_mod4"


def test_check_task(saved_run):
    """check_task: a network trained on another task, or one with another vocabulary, is refused;
    networks that carry no such information pass."""
    _, res = saved_run
    check_task(res.model, MULTI)  # its own task
    with pytest.raises(ValueError, match="trained on multiobject; the pairs are for singleobject"):
        check_task(res.model, symlib.make_task("singleobject"))
    # the same vocabulary is not enough: Mod-4 shares MultiObject's words
    with pytest.raises(ValueError, match="trained on multiobject; the pairs are for multiobject_mod4"):
        check_task(res.model, symlib.make_task("multiobject_mod4"))
    plain = small_model("gru")  # task unknown: only the vocabulary can be checked
    check_task(plain, MULTI)
    check_task(plain, symlib.make_task("multiobject_round3"))
    with pytest.raises(ValueError, match="9 token ids.*singleobject has 7"):
        check_task(plain, symlib.make_task("singleobject"))
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.gru, self.out = nn.Embedding(5, 8), nn.GRU(8, 8, batch_first=True), nn.Linear(8, 5)

        def forward(self, tokens):
            return self.out(self.gru(self.emb(tokens))[0])

    wrapped = symlib.wrap_model(Net(), site="gru")
    check_task(wrapped, symlib.make_task("singleobject"))  # a user's model: nothing known, nothing refused


def test_run_config(saved_run, tmp_path):
    """run_config reads a run's config; a folder without one, or no folder, gives a clear FileNotFoundError."""
    run_dir, res = saved_run
    assert run_config(run_dir) == res.config and run_config(str(run_dir)).arch == "gru"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_config(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        run_config(tmp_path)


def test_load_or_train_with_run_dir_follows_the_run(saved_run):
    """With run_dir, the run's config decides: no task/arch, or matching ones, load it (no training)."""
    run_dir, res = saved_run
    before = sorted(p.name for p in run_dir.rglob("*"))
    for kw in ({}, {"task": "multiobject"}, {"arch": "gru"}, {"task": "multiobject", "arch": "gru"}):
        got = symlib.load_or_train(run_dir=run_dir, device="cpu", progress=False, **kw)
        assert got.config == res.config and got.model.task_name == "multiobject"
    got = symlib.load_or_train("multiobject", "gru", 0, run_dir=str(run_dir), device="cpu", progress=False)  # notebook 03's call
    assert got.run_dir == run_dir and sorted(p.name for p in run_dir.rglob("*")) == before


@pytest.mark.parametrize("kw,asked", [({"task": "singleobject"}, "TASK='singleobject'"), ({"arch": "lstm"}, "ARCH='lstm'"),
                                      ({"task": "sameobject", "arch": "transformer"}, "TASK='sameobject' and ARCH='transformer'")])
def test_load_or_train_refuses_a_run_dir_of_another_task_or_arch(saved_run, kw, asked):
    """A RUN_DIR holding another task or architecture than asked for raises, naming both, instead of
    silently using the run (which made notebook 03 search the wrong pairs)."""
    run_dir, _ = saved_run
    with pytest.raises(ValueError) as e:
        symlib.load_or_train(run_dir=run_dir, device="cpu", progress=False, **kw)
    msg = str(e.value)
    assert "holds a gru trained on multiobject" in msg and asked in msg and "leave RUN_DIR empty" in msg


def test_load_or_train_checks_names_and_run_dir(tmp_path):
    """An unknown task or arch lists the valid ones; a run_dir without a run raises FileNotFoundError."""
    with pytest.raises(ValueError, match="singleobject"):
        symlib.load_or_train(task="nope", run_dir=tmp_path)
    with pytest.raises(ValueError, match="lstm"):
        symlib.load_or_train(arch="nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        symlib.load_or_train(run_dir=tmp_path)


def test_load_or_train_without_run_dir_defaults_to_multiobject_gru(tmp_path, monkeypatch):
    """Without run_dir, task None means multiobject and arch None gru; the run is trained under runs_dir(),
    in its recipe's folder (a tiny recipe: the plain name and a hash of what differs from the book's)."""
    monkeypatch.setattr(symlib.networks.training, "runs_dir", lambda: tmp_path)
    recipe = dict(d_model=16, max_steps=2, eval_every=2, n_eval_trials=8)
    kw = dict(recipe, device="cpu", progress=False)
    got = symlib.load_or_train(**kw)
    assert got.run_dir == tmp_path / TrainConfig(**recipe).run_name() and got.model.task_name == "multiobject"
    assert got.run_dir.name.startswith("multiobject-gru-d16-s0-")
    got = symlib.load_or_train(task="singleobject", seed=1, **kw)
    assert got.run_dir.name.startswith("singleobject-gru-d16-s1-") and got.config.task == "singleobject"
