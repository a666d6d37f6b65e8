# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Learning dynamics: when does the number variable appear?
#
# - **What it shows:** an alignment search at checkpoints across training, next to the task
#   accuracy at the same steps, for several seeds of each architecture: does the count
#   variable appear with the behaviour, before it, or after? How strongly do the two go
#   together (a correlation with its interval), which rises first (a lag), and how graded is
#   the variable along the way (IIA by pair of values, accuracy and IIA by count)?
# - **Runtime (2-core CPU, default size):** 90 searches, now each to convergence (a warm
#   start needs at least the 1000 steps of the plateau rule unless its IIA reaches `target_iia=0.995`), so
#   hours rather than the 43 minutes the 150-step warm starts took (not yet remeasured);
#   `make dynamics-full` (GRU and LSTM, 6 checkpoints) takes under an hour (its provenance in
#   `results/dynamics/` says how long, on which machine). A Transformer's search
#   costs about four times a GRU's. Every search is cached, so a rerun takes a minute or two.
#   The test suite runs it at a tiny size in under a minute.
# - **GPU:** optional; training and searches run on CUDA when `DEVICE` picks it.

# %% tags=["parameters"]
ARCHS = "gru,lstm,transformer"  # architectures: gru, lstm, transformer, transformer_nope
SEEDS = "0,1,2"  # network seeds (three or more give an interval over seeds)
SEED = 0  # the seed looked at closely (gradience, warm against cold) and of the counterfactual pairs
TASK = "multiobject"  # the task the networks learn
AFTER_SOLVE = 200  # steps of training after the task is solved (200: the book's own runs, shared with chapters 02-04)
N_CHECKPOINTS = 10  # checkpoints searched per run, spread over it (0: every checkpoint)
WARM_STEPS = 0  # cap on a search warm-started from the previous checkpoint's alignment (0: the fresh cap, 20 000); every search stops on the convergence rule
COLD_CHECK = 3  # checkpoints of one run searched again from scratch, to check warm starts (0: skip)
USE_STORE = True  # reuse searches cached in data/das_store
SMOKE = False  # tiny run for the test suite; the test suite also sets SYMLIB_SMOKE to 1
DEVICE = "auto"  # auto (CUDA when present), cpu or cuda
RESULTS_PATH = ""  # path for this notebook's key metrics as JSON; empty: write nothing

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

import symlib
from symlib.analyses import dynamics
from symlib.book import plotting
from symlib.analyses.findings import FINDINGS_TRAIN
from symlib.analyses.stats import format_ci, mean_ci

t_start = time.perf_counter()
smoke = symlib.smoke_mode(SMOKE)
# every check runs before any network is trained or anything is written (symlib/analyses/params.py):
# each value, seeds unique and >= 0, SEED one of SEEDS
checked = symlib.params.check_notebook("05_learning_dynamics", globals())
archs, seeds = checked["ARCHS"], checked["SEEDS"]
fig_tag = f"{'-'.join(archs)}_s{'-'.join(map(str, seeds))}"  # figures named after what they show, so no run overwrites another's
train_kw = dict(symlib.params.SMOKE_TRAIN_DYNAMICS) if smoke else {}  # the test suite's tiny runs
search = dict(dynamics.DYNAMICS_SEARCH, seed=SEED)
if smoke:  # ... and searches
    search.update(symlib.params.SMOKE_SEARCH, n_units=symlib.params.SMOKE_UNITS)
warm_steps = symlib.params.SMOKE_WARM_STEPS if smoke else (WARM_STEPS or None)
warm_cap = warm_steps or search["max_steps"]  # what caps a warm start
n_ckpt = N_CHECKPOINTS or None
print(f"{len(archs)} architecture(s) x {len(seeds)} seeds; search at each checkpoint: "
      f"{search['alignment']}, {search['n_units']} dims, to convergence (validation changed-pair IIA gaining < "
      f"{search.get('plateau_tol', 0)} over {search.get('plateau_steps', 0)} steps), capped at {search['max_steps']} steps fresh, "
      f"{warm_cap} warm")

# %% [markdown]
# ## 1. Runs that go on after solving
# Each network trains with the book's recipe and stops once it has answered every training
# trial correctly for `AFTER_SOLVE` more steps (200 is the book's own rule, so the seed-0
# networks of chapter 02 are reused; a longer stretch trains new runs beside them).
# Checkpoints are saved every 25 steps up to step 200, every 50 to 1000, then sparser: dense
# where learning happens. GRUs and LSTMs of several seeds train together as one batched
# network (each seed with its own data, dropout and stopping point: the same as training
# them alone, up to float rounding).

# %%
runs = {}
for a in archs:
    kw = {**FINDINGS_TRAIN.get(a, {}), **train_kw}
    runs[a] = dict(zip(seeds, dynamics.train_runs(a, seeds, TASK, AFTER_SOLVE, device=DEVICE, progress=True, **kw)))
solved = []
for a, by_seed in runs.items():
    for s, path in by_seed.items():
        r = symlib.networks.training.load_run(path, device="cpu")
        solved.append({"arch": a, "seed": s, "steps": r.summary["steps"], "steps_to_solve": r.summary["steps_to_solve"],
                       "trial_acc_train": r.summary["trial_acc_train"], "trial_acc_heldout": r.summary["trial_acc_heldout"],
                       "checkpoints": len(symlib.networks.training.checkpoint_steps(path))})
solved = pd.DataFrame(solved)
solved

# %% [markdown]
# ## 2. IIA at every checkpoint
# At each chosen checkpoint one DAS search looks for Up-Down's count (orthogonal, 16 dims),
# on the **same test pairs** for every checkpoint and seed, and measures IIA on the changed
# test pairs (those whose answer the swap changes), raw IIA, and the untrained alignment as
# the control. The first search of a run starts fresh; each later one starts from the
# alignment found at the checkpoint before, since a network a few dozen steps further on
# holds its variables nearly where it did, so it reaches its plateau sooner. Every search,
# warm or fresh, runs until it converges (its best validation IIA on changed pairs gains
# less than `plateau_tol=0.005` over 1000 steps) or hits its cap; the `converged` column says which.
# Section 6 checks that warm starts do not bias the result. Task accuracy is what training measured at the same step:
# trials of training counts, of held-out counts (4, 9, 14, 17) and beyond training (21-30).

# %%
tables, results = [], {}
for a, by_seed in runs.items():
    for s, path in by_seed.items():
        steps = dynamics.pick_checkpoints(path, n_ckpt)
        d = dynamics.iia_over_training(path, search, steps=steps, warm=True, warm_steps=warm_steps,
                                       store=USE_STORE, device=DEVICE, progress=True)
        tables.append(d.table)
        results[(a, s)] = d.results
dyn = pd.concat(tables, ignore_index=True)
cols = ["arch", "seed", "step", "iia_changed_test", "iia_test", "initial_iia_changed_test", "trial_acc_train",
        "trial_acc_heldout", "trial_acc_out_of_range", "search_steps", "converged", "cached"]
print(f"{int(dyn.converged.sum())} of {len(dyn)} searches converged; the rest hit their cap "
      f"({search['max_steps']} steps fresh, {warm_cap} warm)")
dyn[cols].round(3)

# %%
assert dyn.iia_changed_test.between(0, 1).all() and dyn.trial_acc_train.between(0, 1).all()
assert len(dyn) == sum(len(dynamics.pick_checkpoints(p, n_ckpt)) for by in runs.values() for p in by.values())


# %%
def mean_curve(d, value, grid):
    """The mean over seeds of each seed's curve, interpolated onto ``grid`` (steps)."""
    curves = [np.interp(grid, g.step, g[value]) for _, g in d.groupby("seed")]
    return np.mean(curves, axis=0)


lines = [("iia_changed_test", "IIA, changed pairs", "C0", "-"), ("trial_acc_train", "accuracy, training counts", "C3", "--"),
         ("trial_acc_heldout", "accuracy, held-out counts", "C1", ":"), ("initial_iia_changed_test", "control (untrained alignment)", "0.5", "-")]
fig, axes = plt.subplots(1, len(archs), figsize=(5.2 * len(archs), 3.8), squeeze=False, sharey=True)
for ax, a in zip(axes[0], archs):
    d = dyn[dyn.arch == a]
    grid = np.unique(d.step)
    for value, label, colour, style in lines:
        for _, g in d.groupby("seed"):
            ax.plot(g.step, g[value], color=colour, ls=style, lw=0.8, alpha=0.45)
        ax.plot(grid, mean_curve(d, value, grid), color=colour, ls=style, lw=2.4, label=label)
    ax.set_title(f"{a}: {d.seed.nunique()} seeds (thin), mean (bold)", fontsize=10, loc="left")
    ax.set_xlabel("training step")
    ax.set_ylim(-0.03, 1.03)
axes[0][0].set_ylabel("IIA / trial accuracy")
axes[0][-1].legend(fontsize=8, loc="lower right")
fig.tight_layout()
plotting.save_figure(fig, f"05_iia_and_accuracy_over_training_{fig_tag}")

# %% [markdown]
# ## 3. Do IIA and accuracy go together?
# Pearson r between IIA on changed pairs and trial accuracy on training counts, across the
# checkpoints of each seed and pooled over seeds, with a 95% bootstrap interval (pairs of
# values resampled together). Checkpoints of one run are not independent draws, so read
# the interval as how stable r is over the checkpoints chosen, not as a test.

# %%
corr = []
for a in archs:
    c = dynamics.correlation(dyn[dyn.arch == a]).assign(arch=a)
    corr.append(c)
corr = pd.concat(corr, ignore_index=True)[["arch", "seed", "r", "lo", "hi", "n"]]
pooled = corr[corr.seed == "pooled"].set_index("arch")
corr.round(3)

# %%
fig, axes = plt.subplots(1, len(archs), figsize=(4.2 * len(archs), 3.6), squeeze=False, sharey=True)
for ax, a in zip(axes[0], archs):
    d = dyn[dyn.arch == a]
    for s, g in d.groupby("seed"):
        ax.plot(g.trial_acc_train, g.iia_changed_test, "o-", ms=4, lw=0.8, alpha=0.8, label=f"seed {s}")
    p = pooled.loc[a]
    ax.set_title(f"{a}: r = {format_ci(p.r, p.lo, p.hi, 2)}", fontsize=10, loc="left")
    ax.set_xlabel("trial accuracy, training counts")
    ax.plot([0, 1], [0, 1], color="0.8", lw=0.8, zorder=0)
axes[0][0].set_ylabel("IIA, changed test pairs")
axes[0][-1].legend(fontsize=8)
fig.tight_layout()
plotting.save_figure(fig, f"05_iia_against_accuracy_{fig_tag}")

# %% [markdown]
# ## 4. Which rises first?
# For each seed, the step at which each curve has made 25%, 50% and 75% of its rise (from its
# first value to its highest, interpolated between checkpoints). The lag is IIA's step minus
# accuracy's: negative when the variable is in place before the behaviour.

# %%
lags = {a: dynamics.lag(dyn[dyn.arch == a]) for a in archs}
lag_table = pd.DataFrame([{"arch": a, "mean lag (steps)": format_ci(v["mean_lag"], v["lo"], v["hi"], 0, v["n"]),
                           "IIA first (share of crossings)": v["iia_first"]} for a, v in lags.items()])
lag_table

# %%
pd.concat([v["by_group"].assign(arch=a) for a, v in lags.items()], ignore_index=True).round(1)

# %% [markdown]
# ## 5. Gradience along the way
# How graded is the variable while it forms? For the closest-looked-at seed, IIA on the
# changed test pairs by the value swapped in (rows) and the value the target held (columns)
# at three moments: the first checkpoint that answers a fifth of the trials, the first that
# answers most of them, and the last. Then, over all its checkpoints, accuracy by count and
# IIA by count, side by side: do the larger counts come later?

# %%
a0 = archs[0]
d0 = dyn[(dyn.arch == a0) & (dyn.seed == SEED)].sort_values("step")
moments = {}
for label, level in (("early", 0.2), ("middle", 0.8)):
    hit = d0[d0.trial_acc_train >= level]
    if len(hit):
        moments[label] = int(hit.step.iloc[0])
moments["final"] = int(d0.step.iloc[-1])
fig, axes = plt.subplots(1, len(moments), figsize=(4.6 * len(moments), 3.9), squeeze=False)
for ax, (label, step) in zip(axes[0], moments.items()):
    t = dynamics.iia_by_values(results[(a0, SEED)][step])
    M = t.pivot(index="source_value", columns="target_value", values="iia")
    im = ax.imshow(M.to_numpy(dtype=float), origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(M.shape[1]), M.columns, fontsize=6)
    ax.set_yticks(range(M.shape[0]), M.index, fontsize=6)
    acc = float(d0[d0.step == step].trial_acc_train.iloc[0])
    ax.set_title(f"{label}: step {step} (accuracy {acc:.2f})", fontsize=9, loc="left")
    ax.set_xlabel("target's count")
axes[0][0].set_ylabel("count swapped in")
fig.colorbar(im, ax=axes[0].tolist(), label="IIA, changed pairs")
plotting.save_figure(fig, f"05_gradience_heatmaps_{fig_tag}")

# %%
path0 = runs[a0][SEED]
steps0 = list(d0.step)
acc_count = dynamics.accuracy_over_training(path0, steps0, counts="all", n_per_count=16 if smoke else 60,
                                            device=DEVICE, seed=SEED)
iia_count = pd.concat([dynamics.iia_by_values(results[(a0, SEED)][s], by="target_count", against=None).assign(step=s)
                       for s in steps0], ignore_index=True)
A = acc_count.pivot(index="count", columns="step", values="trial_acc")
B = iia_count.pivot(index="target_count", columns="step", values="iia").reindex(A.index)  # held-out counts: no pairs
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
for ax, M, title in ((axes[0], A, "trial accuracy by count"), (axes[1], B, "IIA by the target's count (changed pairs)")):
    im = ax.imshow(M.to_numpy(dtype=float), origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(M.shape[1]), M.columns, fontsize=6, rotation=90)
    ax.set_yticks(range(M.shape[0]), M.index, fontsize=6)
    ax.set_xlabel("training step")
    ax.set_title(f"{a0}, seed {SEED}: {title}", fontsize=9, loc="left")
axes[0].set_ylabel("count")
fig.colorbar(im, ax=axes.tolist(), label="accuracy / IIA")
plotting.save_figure(fig, f"05_per_count_over_training_{fig_tag}")


# %%
def first_step(M, level=0.9):
    """Per row (count), the first step whose value reaches ``level`` (NaN: never)."""
    out = {}
    for n, row in M.iterrows():
        hit = row[row >= level]
        out[n] = float(hit.index[0]) if len(hit) else np.nan
    return pd.Series(out)


trained_counts = [n for n in A.index if n in symlib.game.tasks.COUNT_SETS["train"]]
when = first_step(A.loc[trained_counts])
rho = spearmanr(when.index, when.values, nan_policy="omit")
print(f"first step with accuracy >= 0.9, by count: {when.dropna().astype(int).to_dict()}")
print(f"Spearman rho between count and that step: {rho.statistic:.2f} (p = {rho.pvalue:.3f}, {when.notna().sum()} counts)")

# %% [markdown]
# ## 6. Do warm starts bias the result?
# A few checkpoints of the closest-looked-at run searched again from a fresh alignment with
# the full budget, against their warm-started searches above.

# %%
cold = None
if COLD_CHECK:
    pick = [steps0[i] for i in np.unique(np.linspace(len(steps0) // 3, len(steps0) - 1, COLD_CHECK).round().astype(int))]
    cold = dynamics.iia_over_training(path0, search, steps=pick, warm=False, store=USE_STORE, device=DEVICE, progress=True).table
    cold = cold[["step", "iia_changed_test"]].rename(columns={"iia_changed_test": "cold"}).merge(
        d0[["step", "iia_changed_test"]].rename(columns={"iia_changed_test": "warm"}), on="step")
    cold["warm - cold"] = cold.warm - cold.cold
    print(cold.round(3).to_string(index=False))

# %% [markdown]
# ## 7. Transformers: which solution do they learn?
# Chapter 04 found that a trained Transformer holds no Up-Down count at one position, and
# that Ctx-Distr's count (recount from the context) is no evidence either, since a swap of it
# only flips the next stop-or-go decision. Over training, does the Transformer pass through
# a count-like solution before it settles? Ctx-Distr gets the wrong-label control (a search
# of its own that learns permuted labels, the dotted line): where that control reaches the
# main search, the IIA says nothing about a variable. Runs when `ARCHS` has a Transformer.

# %%
tf_arch = next((a for a in archs if a.startswith("transformer")), None)
tf = None
if tf_arch:
    path_tf = runs[tf_arch][SEED]
    steps_tf = dynamics.pick_checkpoints(path_tf, n_ckpt)
    ctx = dynamics.iia_over_training(path_tf, dict(search, program="ctx_distr"), steps=steps_tf, warm_steps=warm_steps,
                                     controls=("initial", "wrong_labels"), store=USE_STORE, device=DEVICE, progress=True).table
    ud = dyn[(dyn.arch == tf_arch) & (dyn.seed == SEED)]
    tf = ud[["step", "iia_changed_test", "trial_acc_train"]].rename(columns={"iia_changed_test": "up_down"}).merge(
        ctx[["step", "iia_changed_test", "wrong_labels_iia_changed_test"]].rename(
            columns={"iia_changed_test": "ctx_distr", "wrong_labels_iia_changed_test": "ctx_distr_wrong_labels"}), on="step")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for col, style in (("up_down", "-"), ("ctx_distr", "-"), ("ctx_distr_wrong_labels", ":"), ("trial_acc_train", "--")):
        ax.plot(tf.step, tf[col], style, marker="o", ms=3, label=col.replace("_", " "))
    ax.set_xlabel("training step")
    ax.set_ylabel("IIA (changed pairs) / accuracy")
    ax.set_title(f"{tf_arch}, seed {SEED}: Up-Down against Ctx-Distr over training", fontsize=10, loc="left")
    ax.legend(fontsize=8)
    fig.tight_layout()
    plotting.save_figure(fig, f"05_transformer_programs_over_training_{fig_tag}")
    print(tf.round(3).to_string(index=False))
else:
    print("no Transformer in ARCHS; set ARCHS='gru,lstm,transformer' to run this section")

# %% [markdown]
# ## 8. What the dynamics show
# The numbers below are computed from this run of the chapter; the full run at convergence
# follows them.

# %%
final = dyn.sort_values("step").groupby(["arch", "seed"]).tail(1)
lines_out = []
for a in archs:
    f = final[final.arch == a]
    ci = mean_ci(f.iia_changed_test.to_numpy())
    p, lg = pooled.loc[a], lags[a]
    if ci["mean"] < 0.3:  # nothing rises: a crossing of a flat, noisy curve times nothing
        lines_out.append(
            f"- {a}: final IIA on changed pairs {format_ci(ci['mean'], ci['lo'], ci['hi'], 3, ci['n'])} over {len(f)} seeds "
            f"(the alignment its last search started from, the previous checkpoint's, at most {f.initial_iia_changed_test.max():.3f}): "
            f"no count variable appears, so its correlation with "
            f"accuracy (r = {format_ci(p.r, p.lo, p.hi, 2)}) and its lag measure noise, not a variable.")
        continue
    lines_out.append(
        f"- {a}: final IIA on changed pairs {format_ci(ci['mean'], ci['lo'], ci['hi'], 3, ci['n'])} over {len(f)} seeds "
        f"(the alignment its last search started from, the previous checkpoint's, already at most "
        f"{f.initial_iia_changed_test.max():.3f}: a warm start, not a floor); "
        f"r(IIA, accuracy) = {format_ci(p.r, p.lo, p.hi, 2)} pooled over {int(p.n)} checkpoints; "
        f"IIA's rise minus accuracy's: {format_ci(lg['mean_lag'], lg['lo'], lg['hi'], 0, lg['n'])} steps "
        f"(IIA first in {lg['iia_first']:.0%} of crossings).")
strong = [a for a in archs if pooled.loc[a].lo >= 0.7]  # the interval's lower end above 0.7
lines_out.append(f"- The study's 'strong correlation' (here: pooled r with its interval above 0.7) holds for: "
                 f"{', '.join(strong) or 'none'}; not for: {', '.join(a for a in archs if a not in strong) or 'none'}.")
if tf is not None and len(tf):
    margin = (tf.ctx_distr - tf.ctx_distr_wrong_labels).max()
    lines_out.append(f"- {tf_arch}, seed {SEED}: Up-Down's count stays at most {tf.up_down.max():.3f} over training; Ctx-Distr "
                     f"rises with accuracy (to {tf.ctx_distr.iloc[-1]:.3f}) but so does its wrong-label control "
                     f"({tf.ctx_distr_wrong_labels.iloc[-1]:.3f}), and Ctx-Distr exceeds it by at most {margin:.3f}: the search fits any "
                     f"labelling of the few pairs a Ctx-Distr swap changes, so neither curve shows the solution changing kind.")
if cold is not None and len(cold):
    lines_out.append(f"- Warm against cold starts at {len(cold)} checkpoints: mean difference {cold['warm - cold'].mean():+.3f}, "
                     f"largest {cold['warm - cold'].abs().max():.3f}.")
lines_out.append(f"- {int(dyn.converged.sum())} of {len(dyn)} searches converged (warm starts: "
                 f"{int(dyn[dyn.start == 'warm'].converged.sum())} of {int((dyn.start == 'warm').sum())}, a median of "
                 f"{dyn[dyn.start == 'warm'].search_steps.median():.0f} steps; fresh: {dyn[dyn.start == 'cold'].search_steps.median():.0f}).")
lines_out.append(f"- Larger counts later? Spearman rho between count and the first step at accuracy >= 0.9: "
                 f"{rho.statistic:.2f} ({a0}, seed {SEED}).")
print("\n".join(lines_out))

# %% [markdown]
# ### The full run, at convergence
# The chapter at a larger size (GRU and LSTM, seeds 0-2, six checkpoints each, every search to convergence), as committed in `results/dynamics/` by `make dynamics-full` (the
# book's results page, docs/results.md, prints the same block). Where this run is smaller or stops its searches earlier, read
# its numbers above as an illustration and these as the finding.

# %%
from IPython.display import Markdown

from symlib.analyses.findings import full_run

Markdown(full_run("dynamics"))

# %%
symlib.write_results(RESULTS_PATH, {
    "iia_by_checkpoint": {a: {int(s): g[["step", "iia_changed_test", "iia_test", "initial_iia_changed_test", "trial_acc_train",
                                         "trial_acc_heldout", "trial_acc_out_of_range", "search_steps", "converged"]].to_dict("records")
                              for s, g in dyn[dyn.arch == a].groupby("seed")} for a in archs},
    "correlation": {a: {k: float(pooled.loc[a][k]) for k in ("r", "lo", "hi", "n")} for a in archs},
    "correlation_by_seed": corr[corr.seed != "pooled"].to_dict("records"),
    "lag": {a: {k: v[k] for k in ("mean_lag", "lo", "hi", "n", "iia_first")} for a, v in lags.items()},
    "runs": solved.to_dict("records"),
    "gradience_moments": moments,
    "count_first_step_spearman": {"rho": rho.statistic, "p": rho.pvalue},
    "warm_vs_cold": None if cold is None else cold.to_dict("records"),
    "transformer_programs": None if tf is None else tf.to_dict("records"),
    "summary": lines_out,
    "notebook_seconds": round(time.perf_counter() - t_start, 1),
    "torch_threads": torch.get_num_threads(),
})
