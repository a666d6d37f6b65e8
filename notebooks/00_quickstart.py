# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Quickstart: a GRU learns to count
#
# - **What it shows:** a small recurrent network, trained only to predict the next token
#   of a counting game, ends up answering exactly like a symbolic counting program.
# - **Runtime:** about a minute on a laptop CPU (2 threads); a few seconds in smoke mode.
# - **GPU:** not needed; used automatically when present (`DEVICE = "auto"`).
#
# The game (MultiObject): the network sees `B`, then N demo tokens (`D0`, `D1`, `D2` at
# random), then the trigger `T`; it must then produce exactly N response tokens `R` and
# the end token `E`. Nobody tells it to count; it only ever learns to predict the next token.

# %% tags=["parameters"]
SEED = 0  # random seed for data, weights and dropout
SMOKE = False  # tiny run for the test suite; the test suite also sets SYMLIB_SMOKE to 1
DEVICE = "auto"  # auto (CUDA when present), cpu or cuda
RESULTS_PATH = ""  # path for this notebook's key metrics as JSON; empty: write nothing
MAX_STEPS = 3000  # upper bound on training steps (the book's; chapter 02 and later chapters reuse this run); training stops once solved

# %%
import symlib
from symlib.book.plotting import plot_learning_curves, save_figure

smoke = symlib.smoke_mode(SMOKE)
symlib.params.check_notebook("00_quickstart", globals())  # every parameter, before anything is trained or written
# smoke: the test suite's tiny run (symlib.params.SMOKE_TRAIN), shared with notebooks 02 and 03
cfg = symlib.TrainConfig(task="multiobject", arch="gru", seed=SEED,
                         **(symlib.params.SMOKE_TRAIN if smoke else dict(max_steps=MAX_STEPS)))
task = cfg.make_task()
cfg

# %% [markdown]
# ## 1. Train
# The original recipe: Adam (lr 5e-4, warm-up then a slow decay), batches of 128 drawn from
# one fixed set of 1000 training trials, the network fed its own answers in the response
# phase. Counts 4, 9, 14 and 17 never appear in training. The run is saved under `data/runs/`
# and resumed if it is already there, so running this notebook twice costs nothing.

# %%
result = symlib.train(cfg, device=DEVICE)
summary = result.summary
print({k: summary[k] for k in ("steps", "seconds", "trial_acc_train", "trial_acc_heldout", "steps_to_solve", "seconds_to_solve")})

# %%
fig = plot_learning_curves(result.history, title="GRU on MultiObject: trial accuracy while training")
save_figure(fig, f"00_learning_curve_{result.run_dir.name}")  # named after the run, so another recipe or seed keeps its own
assert summary["steps"] > 0 and len(result.history) >= 2
if not smoke:
    assert summary["trial_acc_train"] >= 0.99 and summary["trial_acc_heldout"] >= 0.99, summary

# %% [markdown]
# Why `steps` and `steps_to_solve` differ, and what a dip in the curve means: the run counts as
# *solved* at its first evaluation with trial accuracy at least `solve_threshold=0.99` on training and held-out
# counts, but it trains on until accuracy has held for `patience` evaluations in a row. A small
# network with `dropout=0.5`, fed its own answers, can lose its solution for an evaluation or two
# on the way (one wrong token spoils a whole trial, so trial accuracy falls steeply); the run
# keeps its best checkpoint, which is what the later chapters load.

# %%
after = [h for h in result.history if summary["steps_to_solve"] is not None and h["step"] > summary["steps_to_solve"]]
dip = min(after, key=lambda h: h["trial_acc_train"]) if after else None
print(f"solved at step {summary['steps_to_solve']}; stopped at step {summary['steps']} ({summary['stopped_because']}); "
      f"best checkpoint: step {summary['best_step']} (trial accuracy {summary['best_trial_acc_train']:.3f})")
if dip is not None and dip["trial_acc_train"] < 0.99:
    print(f"after solving, the lowest evaluation: {dip['trial_acc_train']:.3f} at step {dip['step']}, recovered by the end")

# %% [markdown]
# ## 2. Does it count?
# Give it trials it never saw, including held-out counts (4, 9, 14, 17) and counts beyond
# anything it trained on (21-30). The network sees the demo tokens and `T`; everything after
# `T` is its own answer, fed back to it token by token. Beside each answer is the program's.

# %%
import torch

counts = torch.tensor([3, 9, 14, 17, 20, 24] if not smoke else [3, 5])
trials = task.trials_for_counts(counts, torch.Generator().manual_seed(SEED))
answers = symlib.greedy_rollout(result.model, trials.tokens.to(result.model.device), trials.task_mask.to(result.model.device)).cpu()
right = 0
for n, want, got in zip(counts.tolist(), trials.tokens, answers):
    w, g = task.decode(want).split(" T ")[1], task.decode(got).split(" T ")[1]
    right += w == g
    print(f"N={n:2d}  program: {w:<45}\n       network: {g:<45} {'ok' if w == g else 'WRONG'}")

# %%
assert answers.shape[0] == len(counts) and (answers[:, 0] == task.B).all()
if not smoke:
    # every count inside the trained range, held-out ones included, must be right
    assert right >= int((counts <= 20).sum()), right

# %% [markdown]
# ## Summary
# The GRU solves the game, held-out counts included, after a few hundred steps. Counts beyond
# 20 are where it starts to slip: it learned numbers only as far as it saw them. Whether its
# hidden state holds a *number variable* that behaves like the program's counter is the
# question of notebook 03; notebook 01 introduces the programs, 02 trains any architecture.
# The book's page *The science in brief* (`docs/science.md`) tells the whole story in one page.

# %%
symlib.write_results(RESULTS_PATH, {
    "trial_acc_train": summary["trial_acc_train"], "trial_acc_heldout": summary["trial_acc_heldout"],
    "trial_acc_out_of_range": summary["trial_acc_out_of_range"], "steps_to_solve": summary["steps_to_solve"],
    "seconds_to_solve": summary["seconds_to_solve"], "rollouts_right": int(right), "run_dir": str(result.run_dir),
})
