"""symlib.networks.batched: seeds trained together equal seeds trained one by one (weights, histories,
run folders, resuming, a seed that stops while the others go on)."""
import pytest
import torch

from symlib.networks import batched, training
from symlib.networks.training import load_run, train

import helpers  # noqa: F401  (one torch thread)

KW = dict(d_model=16, eval_every=4, n_eval_trials=32, progress=False, device="cpu")


def _max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _losses(history):
    return [r["train_loss"] for r in history[1:]]


@pytest.mark.parametrize("arch, response_input", [("gru", "free"), ("lstm", "free"), ("gru", "teacher")])
def test_batched_equals_one_by_one(arch, response_input):
    lone = [train(arch=arch, seed=s, max_steps=8, run_dir=None, response_input=response_input, **KW) for s in (0, 1, 2)]
    bat = batched.train_seeds([0, 1, 2], arch=arch, max_steps=8, run_dirs=None, response_input=response_input, **KW)
    for a, b in zip(lone, bat):
        assert b.config.seed == a.config.seed
        assert _max_diff(a.model, b.model) < 1e-6
        assert _losses(b.history) == pytest.approx(_losses(a.history), abs=1e-6)
        assert [r["trial_acc_train"] for r in b.history] == [r["trial_acc_train"] for r in a.history]
        for key in ("loss_train", "loss_out_of_range", "token_acc_heldout", "trial_acc_heldout"):  # evaluated together
            assert [r[key] for r in b.history] == pytest.approx([r[key] for r in a.history], rel=2e-5, abs=1e-5), key
    assert _max_diff(bat[0].model, bat[1].model) > 1e-2  # the seeds really differ


def test_loss_rows_match_the_lone_network():
    """The read-out rows, in the lone network's order, give its loss exactly (dropout off)."""
    task = training.TrainConfig(**{k: v for k, v in KW.items() if k not in ("progress", "device")}).make_task()
    torch.manual_seed(0)
    model = training.build_model(training.TrainConfig(d_model=16).model_config()).eval()
    b = task.sample(16, training.COUNT_SETS["train"], torch.Generator().manual_seed(1))
    net = batched.StackedRNN([model])
    for feed in (b.task_mask, None):
        want = training.free_running_loss(model, b.tokens, feed) if feed is not None else training.training_loss(model, b.tokens, b.tokens)
        got, _ = batched.stacked_losses(net, net.params, [b.tokens], [feed], [torch.get_rng_state()], training=False)
        assert float(got[0].detach()) == pytest.approx(float(want.detach()), abs=1e-6)


def test_run_folders_resume_across_trainers(tmp_path):
    """Batched to step 4, then batched on to 8, equals lone 8-step runs; lone runs load and resume it."""
    dirs = [tmp_path / f"s{s}" for s in (0, 1)]
    batched.train_seeds([0, 1], arch="gru", max_steps=4, run_dirs=dirs, **KW)
    assert all((d / "ckpt" / "step_000000.pt").exists() and (d / "latest.pt").exists() for d in dirs)
    bat = batched.train_seeds([0, 1], arch="gru", max_steps=8, run_dirs=dirs, **KW)
    lone = [train(arch="gru", seed=s, max_steps=8, run_dir=None, **KW) for s in (0, 1)]
    for a, b in zip(lone, bat):
        assert _max_diff(a.model, b.model) < 1e-6
    # a lone trainer resumes a batched run folder
    more = train(arch="gru", seed=0, max_steps=12, run_dir=dirs[0], **KW)
    ref = train(arch="gru", seed=0, max_steps=12, run_dir=None, **KW)
    assert _max_diff(more.model, ref.model) < 1e-6
    assert load_run(dirs[1]).history[-1]["step"] == 8


def test_a_seed_that_stops_is_frozen_while_the_others_go_on(monkeypatch):
    real = training._Run.record

    def record(self, train_loss, metrics=None):
        rec = real(self, train_loss, metrics)
        if self.cfg.seed == 0 and self.step == 4:
            rec["stopped_because"] = "solved: (test)"
        return rec

    monkeypatch.setattr(training._Run, "record", record)
    bat = batched.train_seeds([0, 1], arch="gru", max_steps=8, run_dirs=None, **KW)
    monkeypatch.undo()
    assert bat[0].history[-1]["step"] == 4 and bat[1].history[-1]["step"] == 8
    a = train(arch="gru", seed=0, max_steps=4, run_dir=None, **KW)
    b = train(arch="gru", seed=1, max_steps=8, run_dir=None, **KW)
    assert _max_diff(a.model, bat[0].model) < 1e-6 and _max_diff(b.model, bat[1].model) < 1e-6


def test_transformers_train_one_by_one_and_bad_input():
    kw = {**KW, "d_model": 32}
    out = batched.train_seeds([0, 1], arch="transformer", max_steps=2, run_dirs=None, **kw)
    ref = train(arch="transformer", seed=1, max_steps=2, run_dir=None, **kw)
    assert _max_diff(out[1].model, ref.model) == 0
    with pytest.raises(ValueError, match="distinct"):
        batched.train_seeds([0, 0], run_dirs=None, **KW)
    with pytest.raises(ValueError, match="2 folders for 3 seeds"):
        batched.train_seeds([0, 1, 2], run_dirs=["a", "b"], **KW)
    with pytest.raises(ValueError, match="valid choices"):
        batched.train_seeds([0, 1], arch="cnn", run_dirs=None, **KW)


@pytest.mark.parametrize("arch", ["gru", "lstm"])
def test_stacked_evaluation_equals_evaluate_seed_by_seed(arch):
    """All seeds' evaluation sets in one teacher-forced pass give each seed what ``training.evaluate``
    gives it, its loss averaged over chunks of ``batch_size`` trials as evaluate does."""
    cfg = training.TrainConfig(arch=arch, d_model=16)
    task = cfg.make_task()
    models = []
    for s in (0, 1, 2):
        torch.manual_seed(s)
        models.append(training.build_model(cfg.model_config()).eval())
    sets = []
    for s in (0, 1, 2):
        ts = training.eval_sets(task, 40, s)
        for t in ts.values():  # grade one token per trial, at a position that varies, so that untrained networks get some trials right
            t.task_mask.zero_()
            rows = torch.arange(len(t))
            t.task_mask[rows, 1 + rows % (t.lengths - 1)] = True
        sets.append(ts)
    got = batched.StackedRNN(models).evaluate(batched.StackedRNN(models).params, sets, batch_size=16)
    trial = []
    for m, ts, g in zip(models, sets, got):
        want = {f"{k}_{n}": v for n, t in ts.items() for k, v in training.evaluate(m, t, batch_size=16).items()}
        assert set(g) == set(want)
        assert g == pytest.approx(want, abs=1e-5)
        trial += [g[k] for k in g if k.startswith("trial_acc")]
    assert any(0 < v < 1 for v in trial)  # the trial test is not all-or-nothing here
