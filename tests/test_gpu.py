"""Every path on CUDA: training (one network and several seeds batched), DAS with controls, MAS,
learning dynamics, a sweep cell and a HuggingFace model. Marked ``gpu``: skipped where no CUDA
device is present and left out of the default run; ``pytest -m gpu tests/test_gpu.py`` runs them."""
import pytest
import torch

import symlib
from symlib.intervene import mas

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TASK = symlib.make_task("multiobject")
TRAIN = dict(d_model=32, max_steps=30, eval_every=10, n_eval_trials=64, n_train_trials=256, progress=False)
SEARCH = dict(n_train=256, n_val=64, n_test=64, eval_every=5, max_steps=10, n_units=4)


def on_cuda(model) -> bool:
    return all(p.device.type == "cuda" for p in model.parameters())


@pytest.mark.parametrize("arch", ["gru", "lstm", "transformer"])
def test_train_and_das_with_controls_on_cuda(arch, tmp_path):
    run = symlib.train(task="multiobject", arch=arch, run_dir=tmp_path / arch, device="cuda", **TRAIN)
    assert on_cuda(run.model) and run.summary["steps"] == 30
    res = symlib.run_das_with_controls(run.model.eval(), TASK, symlib.DASConfig(**SEARCH), progress=False)
    assert 0 <= res.metrics["iia_changed_test"] <= 1 and set(res.metrics["controls"]) == set(symlib.CONTROL_NAMES)
    assert next(res.alignment.parameters()).device.type in ("cuda", "cpu")
    again, cfg, _ = symlib.load_checkpoint(tmp_path / arch / "latest.pt", device="cuda")
    assert on_cuda(again)


def test_batched_seeds_on_cuda():
    from symlib.networks.batched import train_seeds
    runs = train_seeds([0, 1], run_dirs=None, device="cuda", task="multiobject", arch="gru", **TRAIN)
    assert len(runs) == 2 and all(on_cuda(r.model) for r in runs)


def test_mas_on_cuda():
    nets = []
    for arch in ("gru", "lstm"):
        m = symlib.make_model(arch, vocab_size=TASK.vocab_size, d_model=16).cuda().eval()
        nets.append(mas.MASNetwork(arch, m, TASK))
    r = mas.run_mas(nets, mas.MASConfig(**SEARCH), progress=False)
    assert r.matrix("iia_changed_test").shape == (2, 2)


def test_dynamics_on_cuda(tmp_path):
    from symlib.analyses.dynamics import iia_over_training
    symlib.train(task="multiobject", arch="gru", run_dir=tmp_path / "g", device="cuda", **TRAIN)
    steps = symlib.checkpoint_steps(tmp_path / "g")[:2]
    dyn = iia_over_training(tmp_path / "g", symlib.DASConfig(**SEARCH), steps=steps, warm_steps=5, store=False,
                            device="cuda", progress=False)
    assert len(dyn.table) >= len(steps)


def test_sweep_cell_on_cuda(tmp_path):
    from symlib.book import sweep
    spec = {"function": "sweep_cells.das_cell", "out": str(tmp_path / "out"), "grid": {"seed": [0, 1]},
            "fixed": {"device": "cuda"}}
    table = sweep.run_sweep(spec, workers=1, progress=False)
    assert (table["status"] == "done").all() and set(table["device"]) == {"cuda"}


def test_huggingface_on_cuda():
    hf_mod = pytest.importorskip("symlib.networks.hf")
    pytest.importorskip("transformers")
    model = hf_mod.wrap_hf(hf_mod.tiny_gpt2(TASK, d_model=16, n_layer=1, n_head=2))
    run = symlib.train(task="multiobject", arch="transformer", model=model, device="cuda", **{**TRAIN, "d_model": 128})
    assert on_cuda(run.model)
    res = symlib.run_das_with_controls(run.model.eval(), TASK, symlib.DASConfig(**SEARCH), progress=False)
    assert 0 <= res.metrics["iia_test"] <= 1
