# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Train a network on a counting task
#
# - **What it shows:** train any of the three architectures on any task variant, watch
#   trial accuracy on training, held-out and out-of-range counts, and save the run (with
#   checkpoints dense early and sparse later) for the alignment and learning-dynamics chapters.
# - **Runtime (2-thread CPU, default size):** GRU ~1 min, LSTM ~30 s, Transformer ~3-4 min (1000 steps).
# - **GPU:** optional; helps the Transformer most. `DEVICE = "auto"` uses CUDA when present.
#
# Run it for another architecture or task with papermill, e.g.
# `papermill notebooks/02_train_models.ipynb out.ipynb -p ARCH lstm -p TASK singleobject`.

# %% tags=["parameters"]
TASK = "multiobject"  # multiobject, singleobject, sameobject, multiobject_mod4, multiobject_round3
ARCH = "gru"  # gru, lstm, transformer, transformer_nope
SEED = 0  # random seed for data, weights and dropout
D_MODEL = 128  # width of the intervened state; an LSTM state is [h; c], so its hidden size is half of it
MAX_STEPS = -1  # upper bound on training steps; -1: the book's, 3000 for RNNs and 1000 for Transformers; training stops once solved (see PATIENCE)
PATIENCE = 8  # evaluations in a row at 0.99 trial accuracy or more on training counts before stopping; 0 never stops early
RESPONSE_INPUT = "original"  # original (RNNs free-running, Transformers teacher-forced), free or teacher
UNK_P = -1.0  # void-token rate while training; -1 means the original: 0.2 for Transformers, 0 for RNNs
SMOKE = False  # tiny run for the test suite; the test suite also sets SYMLIB_SMOKE to 1
DEVICE = "auto"  # auto (CUDA when present), cpu or cuda
RESULTS_PATH = ""  # path for this notebook's key metrics as JSON; empty: write nothing

# %%
import torch

import symlib
from symlib.book.plotting import plot_learning_curves, save_figure

smoke = symlib.smoke_mode(SMOKE)
# Every check on the parameters happens here, before anything is trained or written (symlib/analyses/params.py):
# an unknown TASK or ARCH, a width the architecture cannot take, or a step cap or patience
# out of range stops the notebook now, naming the parameter, its value and what is allowed.
symlib.params.check_notebook("02_train_models", globals())
recipe = dict(task=TASK, arch=ARCH, seed=SEED, d_model=D_MODEL, max_steps=None if MAX_STEPS == -1 else MAX_STEPS,
              patience=PATIENCE, response_input=None if RESPONSE_INPUT == "original" else RESPONSE_INPUT,
              unk_p=None if UNK_P < 0 else UNK_P)
if smoke:  # the test suite's tiny run (symlib.params.SMOKE_TRAIN) at this notebook's D_MODEL
    recipe.update({k: v for k, v in symlib.params.SMOKE_TRAIN.items() if k != "d_model"})
cfg = symlib.TrainConfig(**recipe)
device = symlib.resolve_device(DEVICE)
tag = cfg.run_name()  # figures named after the run (task, arch, width, seed, and a hash of any other recipe)
print(cfg, device, sep="\n")
print("run folder:", symlib.runs_dir() / cfg.run_name(),
      "(the book's recipe)" if not cfg.changes() else f"(differs from the book's recipe in {', '.join(cfg.changes())})")

# %% [markdown]
# ## 1. Train
# The original recipe (`docs/science.md`): Adam at lr 5e-4 with 100 warm-up steps and a
# `(100/step)^0.25` decay, batches of 128 from one fixed set of 1000 trials, cross-entropy on
# every non-pad token. Every 25 steps the network is evaluated on fresh trials of training,
# held-out and out-of-range counts. The original's early stopping never fired; here training
# stops once training-count accuracy has stayed >= `solve_threshold=0.99` for `PATIENCE` evaluations.
#
# The run is saved under `data/runs/`, in a folder named after its whole recipe: the book's
# recipe (this notebook's defaults) in `<task>-<arch>-d<width>-s<seed>`, which the later chapters
# load; any other setting (another `MAX_STEPS` or `PATIENCE`, say) in a folder of its own, whose
# name ends in a short hash of what differs, so no later chapter takes it for the book's network.
# Interrupt it (Kernel > Interrupt) and run the cell again to resume where it left off. A run
# that has ended by its own rule (solved, or at `MAX_STEPS`) is simply loaded.

# %%
result = symlib.train(cfg, device=DEVICE)
s = result.summary
print({k: s[k] for k in ("steps", "seconds", "trial_acc_train", "trial_acc_heldout", "trial_acc_out_of_range", "steps_to_solve", "seconds_to_solve", "stopped_because")})

# %% [markdown]
# ## 2. Learning curves
# Trial accuracy is all-or-nothing: a trial counts only if every response and the final `E`
# are right, so it stays near zero until the network counts, then rises steeply.

# %%
fig = plot_learning_curves(result.history, title=f"{cfg.arch} on {cfg.task} (seed {cfg.seed})")
save_figure(fig, f"02_learning_curves_{tag}")
assert len(result.history) >= 2 and result.history[-1]["step"] == s["steps"]
assert result.history[-1]["train_loss"] < result.history[1]["train_loss"] + 1e-6 or smoke  # it learned something

# %% [markdown]
# ## 3. Accuracy by count
# Which counts does it get right? Held-out counts (4, 9, 14, 17) test interpolation; 21-30
# are beyond anything seen in training. Measured on the run's best checkpoint, the network
# the later chapters load.

# %%
import matplotlib.pyplot as plt
import numpy as np

task = cfg.make_task()
best = symlib.load_run(result.run_dir, step="best", device=DEVICE).model if (result.run_dir / "best.pt").exists() else result.model
counts = list(range(1, 31))
gen = torch.Generator().manual_seed(SEED + 99)
acc = []
for c in counts:
    trials = task.trials_for_counts(torch.full((32 if smoke else 200,), c), gen, unk_p=0.0)
    acc.append(symlib.evaluate(best, trials)["trial_acc"])
acc_by = {"training counts": np.mean([a for c, a in zip(counts, acc) if c <= 20 and c not in symlib.HELDOUT_COUNTS]),
          "held-out counts": np.mean([a for c, a in zip(counts, acc) if c in symlib.HELDOUT_COUNTS]),
          "21-30": np.mean([a for c, a in zip(counts, acc) if c > 20])}
print(f"{cfg.arch}, best checkpoint (step {s['best_step']}): trial accuracy "
      + ", ".join(f"{k} {v:.3f}" for k, v in acc_by.items())
      + ("; it carries on counting past 20" if acc_by["21-30"] >= 0.5 else "; past 20 it mostly fails: it learned numbers only as far as it saw them"))
fig, ax = plt.subplots(figsize=(8, 3))
colours = ["#d95f02" if c in symlib.HELDOUT_COUNTS else "#7570b3" if c > 20 else "#1b9e77" for c in counts]
ax.bar(counts, acc, color=colours)
ax.set_xlabel("count N"); ax.set_ylabel("trial accuracy"); ax.set_ylim(0, 1.05)
ax.set_title(f"{cfg.arch} on {cfg.task}: green trained, orange held out, purple beyond 20", fontsize=10, loc="left")
fig.tight_layout()
save_figure(fig, f"02_accuracy_by_count_{tag}")
assert len(acc) == 30 and all(0.0 <= a <= 1.0 for a in acc)

# %% [markdown]
# ## 4. Checkpoints for learning dynamics
# Checkpoints are dense early (every 25 steps to 200) and sparse later, so the chapters on
# learning dynamics can replay how alignment emerges. Each loads safely (weights only) and
# records the config that made it, so a loaded network knows the task it was trained on
# (`model.task_name`): the alignment chapters refuse counterfactual pairs of another task
# rather than report a meaningless IIA.

# %%
steps = symlib.checkpoint_steps(result.run_dir)
print(f"{len(steps)} checkpoints:", steps[:12], "..." if len(steps) > 12 else "")
first, _, first_step = symlib.load_checkpoint(result.run_dir / "ckpt" / f"step_{steps[0]:06d}.pt")
print("step", first_step, "trial accuracy at the first checkpoint:", symlib.evaluate(first, task.sample(64, "train", gen, unk_p=0.0))["trial_acc"])
print("trained on:", first.task_name)
assert steps[0] == 0 and steps[-1] == s["steps"] and first.task_name == result.model.task_name == cfg.task

# %%
print(f"best checkpoint: step {s['best_step']}, trial accuracy {s['best_trial_acc_train']:.3f} (training counts), "
      f"{s['best_trial_acc_heldout']:.3f} (held out); later chapters load this one")
if not smoke and cfg.task == "multiobject":
    # at the default size every architecture solves MultiObject, held-out counts included. The
    # last step may fall in one of the dips Transformers show while training, so check the best
    # checkpoint (chosen on training counts only) that later chapters use.
    assert s["steps_to_solve"] is not None, s
    assert s["best_trial_acc_train"] >= 0.99 and s["best_trial_acc_heldout"] >= 0.95, s

# %% [markdown]
# ## Summary
# The run, its learning curves and its checkpoints are saved under `data/runs/`; notebook 03
# loads them to search for a count variable inside the network.

# %%
symlib.write_results(RESULTS_PATH, {
    "task": cfg.task, "arch": cfg.arch, "seed": cfg.seed, "d_model": cfg.d_model,
    "trial_acc_train": s["trial_acc_train"], "trial_acc_heldout": s["trial_acc_heldout"],
    "trial_acc_out_of_range": s["trial_acc_out_of_range"], "token_acc_train": s["token_acc_train"],
    "steps": s["steps"], "seconds": s["seconds"], "steps_to_solve": s["steps_to_solve"],
    "seconds_to_solve": s["seconds_to_solve"], "stopped_because": s["stopped_because"],
    "best_step": s["best_step"], "best_trial_acc_train": s["best_trial_acc_train"], "best_trial_acc_heldout": s["best_trial_acc_heldout"],
    "accuracy_by_count": dict(zip(counts, acc)), "run_dir": str(result.run_dir), "device": str(device),
})
