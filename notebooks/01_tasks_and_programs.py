# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Tasks and programs
#
# - **What it shows:** the counting games the networks learn, the three symbolic programs
#   that could solve them, and the *counterfactual sequences* that interventions are judged by.
# - **Runtime:** a few seconds on CPU; nothing is trained.
# - **GPU:** not used.
#
# The book's page *The science in brief* (`docs/science.md`) summarises the whole study in one page; this
# chapter makes its first half concrete.

# %% tags=["parameters"]
SEED = 0  # random seed for the example trials
SMOKE = False  # tiny run for the test suite; the test suite also sets SYMLIB_SMOKE to 1
DEVICE = "cpu"  # unused here since nothing is trained; kept so every chapter takes the same parameters
RESULTS_PATH = ""  # path for this notebook's key metrics as JSON; empty: write nothing
N_PAIRS = 4000  # counterfactual pairs per program and variable in section 4

# %%
import torch

import symlib
from symlib.book.plotting import draw_sequences, plot_program_trace, save_figure

smoke = symlib.smoke_mode(SMOKE)
symlib.params.check_notebook("01_tasks_and_programs", globals())  # every parameter, before any work
n_pairs = 300 if smoke else N_PAIRS
g = torch.Generator().manual_seed(SEED)

# %% [markdown]
# ## 1. The tasks
# Every trial is `B`, N demo tokens, the trigger `T`, the response tokens, then `E`. Only the
# responses and the final `E` can be predicted from what came before, so only they are graded
# (thick outlines below): a trial is *solved* when all of them are right.
#
# | task | demo tokens | response |
# |---|---|---|
# | MultiObject | `D0 D1 D2` at random | `R` |
# | SingleObject | `D` | `R` |
# | SameObject | `D` | `D` (only `T` separates the phases) |
# | MultiObject Mod-4 | as MultiObject | N mod 4 `R`s |
# | MultiObject Round-3 | as MultiObject | N rounded to a multiple of 3 |

# %%
rows = []
for name in symlib.TASK_NAMES:
    task = symlib.make_task(name)
    tr = task.trials_for_counts(torch.tensor([7]), g)
    rows.append((name, tr.tokens[0], tr.task_mask[0]))
# each task has its own vocabulary, so each row is drawn with its own
import matplotlib.pyplot as plt

fig, axes = plt.subplots(len(rows), 1, figsize=(9, 0.75 * len(rows) + 0.6))
for ax, (name, toks, mask) in zip(axes, rows):
    task = symlib.make_task(name)
    n = int((toks != 0).sum())
    for i, t in enumerate(toks[:n].tolist()):
        w = task.vocab[t]
        colour = {"B": "#bbb", "T": "#e6a100", "E": "#444", "R": "#2b7bba"}.get(w, "#4daf4a")
        if name == "sameobject" and i > int((toks == task.T).nonzero()[0]):
            colour = "#2b7bba" if w == "D" else colour
        ax.add_patch(plt.Rectangle((i, 0.1), 0.92, 0.8, facecolor=colour, edgecolor="black", linewidth=2.2 if mask[i] else 0.4))
        ax.text(i + 0.46, 0.5, w, ha="center", va="center", fontsize=8, color="white" if colour in ("#444", "#2b7bba") else "black")
    ax.set_xlim(-0.2, 19.5); ax.set_ylim(0, 1); ax.axis("off")
    ax.set_title(name, fontsize=9, loc="left")
fig.suptitle("One trial of each task, N = 7 (graded tokens outlined)", fontsize=10, x=0.01, ha="left")
fig.tight_layout()
save_figure(fig, f"01_tasks_s{SEED}")

# %%
mo = symlib.make_task("multiobject")
print("MultiObject vocabulary:", {w: i for i, w in enumerate(mo.vocab)})
tr = mo.sample(2000, "train", g)
assert mo.vocab[:3] == ("P", "B", "E") and mo.id("D0") == 3 and mo.id("T") == 7
assert ((tr.lengths == 2 * tr.counts + 3)).all()  # B + N demos + T + N responses + E
assert (tr.task_mask.sum(1) == tr.counts + 1).all()  # graded: the N responses and E
for name in symlib.TASK_NAMES:
    t = symlib.make_task(name)
    r = t.trials_for_counts(torch.tensor([1, 4, 5, 7]))
    print(f"{name:20s} N=1,4,5,7 -> responses {(r.tokens == t.R).sum(1).tolist() if name != 'sameobject' else (r.task_mask.sum(1) - 1).tolist()}")

# %% [markdown]
# ## 2. Which counts, and void tokens
# Counts are drawn uniformly from 1-20, but **4, 9, 14 and 17 never appear in training**:
# accuracy on them tests interpolation. Counts 21-30 test whether counting goes beyond the
# range ever seen. With *void tokens* on, each demo step may emit a `U` that does not count
# (the original trained Transformers this way, with probability `unk_p=0.2`).

# %%
seen = torch.bincount(tr.counts, minlength=31)
print("training counts drawn:", {c: int(seen[c]) for c in range(1, 21)})
assert all(int(seen[c]) == 0 for c in symlib.HELDOUT_COUNTS)
vt = symlib.make_task("multiobject", unk_p=0.3)
ex = vt.trials_for_counts(torch.tensor([5, 5]), g)
for t in ex.tokens:
    print(vt.decode(t))
real = ((ex.tokens >= 3) & (ex.tokens <= 5)).sum(1)
assert (real == 5).all()  # void tokens never change the count

# %% [markdown]
# ## 3. Three programs that could be doing the counting
# A program reads one token at a time and keeps variables. The convention everything rests
# on: the variables at position *i* are their values **after consuming token i**.
#
# - **Up-Down** keeps `count` and `phase`: each demo adds one, `T` flips the phase, each
#   response takes one away; it says `E` when the count is back at zero.
# - **Up-Up** keeps `demo_count`, `resp_count` and `phase`: both count up, and it says `E`
#   when they are equal.
# - **Ctx-Distr** keeps nothing from step to step: each time, it recomputes (demos seen minus
#   responses seen) from the whole history. This is the "anti-Markovian" hypothesis that
#   shallow Transformers are thought to follow.

# %%
task = symlib.make_task("singleobject")
trial = task.trials_for_counts(torch.tensor([5]), g)
fig, axes = plt.subplots(1, 3, figsize=(15, 3.2), sharey=True)
for ax, name in zip(axes, symlib.PROGRAM_NAMES):
    prog = symlib.make_program(name, task)
    trace = prog.trace(trial)
    if name == "ctx_distr":
        trace = {"count (recomputed)": torch.stack([prog.read({k: v[:, i] for k, v in trace.items()}, "count") for i in range(trace["phase"].shape[1])], 1), "phase": trace["phase"]}
    variables = [v for v in trace if v not in ("n", "demos", "resps", "count_override", "phase_override")]
    n = int(trial.lengths[0])
    for v in variables:
        ax.step(range(n), trace[v][0, :n].numpy(), where="mid", label=v, linewidth=2)
    ax.set_xticks(range(n)); ax.set_xticklabels(task.decode(trial.tokens[0]).split(), fontsize=8)
    ax.set_title(name, loc="left", fontsize=10); ax.grid(alpha=0.3); ax.legend(frameon=False, fontsize=8)
axes[0].set_ylabel("value after the token")
fig.tight_layout()
save_figure(fig, f"01_program_traces_s{SEED}")

# %% [markdown]
# All three programs make the same predictions on natural trials; the task generator and
# Up-Down agree on every graded token:

# %%
for name in symlib.TASK_NAMES:
    t = symlib.make_task(name)
    trials = t.sample(500, "all", g)
    for pname in symlib.PROGRAM_NAMES:
        prog = symlib.make_program(pname, t)
        trace = prog.trace(trials)
        for i in range(trials.tokens.shape[1] - 1):
            state = {k: v[:, i] for k, v in trace.items()}
            tok, on_mask = prog.next_token(state)
            rows_ = trials.task_mask[:, i + 1]
            assert torch.equal(tok[rows_], trials.tokens[rows_, i + 1]) and on_mask[rows_].all(), (name, pname, i)
print("every program predicts every graded token of 500 trials of each task")

# %% [markdown]
# ## 4. Counterfactuals: where the programs part ways
# An *interchange intervention* takes a target trial, stops after token *i*, overwrites some
# variables with the values a *source* trial had at its own position *j*, and lets the
# program roll on to `E`. The result is the **counterfactual sequence**: what a network that
# truly held that variable should do if its state were swapped the same way.
#
# The worked example: a target with N = 4 is intervened at its first `R`; the source state is
# taken after the 2nd demo token of another trial (count 2, demo phase).

# %%
task = symlib.make_task("singleobject")
prog = symlib.make_program("up_down", task)
target = task.trials_for_counts(torch.tensor([4]))
pos = target.trigger_pos + 1  # the first R
both, _ = symlib.counterfactual(prog, target, pos, {"count": torch.tensor([2]), "phase": torch.tensor([0])})
count_only, _ = symlib.counterfactual(prog, target, pos, {"count": torch.tensor([2])})
print("swap count and phase:", task.decode(both[0]))
print("swap count only:     ", task.decode(count_only[0]))
assert task.decode(both[0]) == "B D D D D T R D D T R R R R E"
assert task.decode(count_only[0]) == "B D D D D T R R R E"

# %%
mo = symlib.make_task("multiobject")
target = mo.trials_for_counts(torch.tensor([6]), torch.Generator().manual_seed(SEED))
source = mo.trials_for_counts(torch.tensor([3]), torch.Generator().manual_seed(SEED + 1))
pos, spos = target.trigger_pos + 2, torch.tensor([2])  # after the target's 2nd R; after the source's 2nd demo
rows = [("target (N=6)", target.tokens[0], target.task_mask[0]), ("source (N=3)", source.tokens[0], source.task_mask[0])]
marks = [int(pos[0]), int(spos[0])]
for name in symlib.PROGRAM_NAMES:
    p = symlib.make_program(name, mo)
    pairs = symlib.pairs_from_trials(p, "count", target, pos, source, spos)
    rows.append((f"{name}: swap count", pairs.tokens[0], pairs.task_mask[0]))
    marks.append(int(pos[0]))
fig = draw_sequences(mo, rows, title="Swap the count after the target's 2nd R with the source's after its 2nd demo (red bar: the swap)", mark=marks)
save_figure(fig, f"01_counterfactuals_s{SEED}")

# %% [markdown]
# Up-Down says: count is now 2, so two more `R`s. Up-Up's number variable is the demo count,
# so it answers until its response count reaches 2 — it already has, so `E`. Ctx-Distr
# recomputes from the tokens, so the swap changes one decision at most. Over many random
# pairs, how often does a swap change the sequence at all? (A swap that changes nothing
# cannot tell a network that holds the variable from one that ignores it.)

# %%
changed = {}
for name in symlib.PROGRAM_NAMES:
    for var in ("count", "phase", "full"):
        pairs = symlib.make_pairs(mo, name, var, n=n_pairs, seed=SEED)
        changed[f"{name}/{var}"] = float(pairs.changed.float().mean())
for k, v in changed.items():
    print(f"{k:22s} counterfactual differs from the natural continuation in {v:.0%} of pairs")
assert changed["up_down/count"] > 0.8 and changed["ctx_distr/count"] < changed["up_down/count"]

# %% [markdown]
# ## Summary
# - The tasks are simple; the graded tokens are the responses and `E`.
# - On natural trials the three programs are indistinguishable; under interventions they
#   disagree, and that disagreement is what lets an intervention tell them apart.
# - Notebook 02 trains networks on these tasks; notebook 03 asks which program's variables
#   can be found — and swapped — inside them.

# %%
symlib.write_results(RESULTS_PATH, {"changed_fraction": changed, "n_pairs": n_pairs})
