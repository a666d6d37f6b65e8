# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Is there a number variable inside? Distributed Alignment Search
#
# - **What it shows:** whether a trained network holds a *count* that can be swapped between
#   trials like a program's variable: a learned alignment (DAS), interchange-intervention
#   accuracy (IIA) on test pairs, IIA on the pairs where the swap *changes* the answer, the
#   controls that say what chance looks like, a number line scored out of sample, IIA against
#   subspace size, four alignment functions, gradience by count, and an explorer.
# - **Runtime (2-core CPU, default size):** about 8 minutes from a trained network (500 s
#   measured); a rerun with its searches cached, about 6 s. `COMPARE = True` adds two more
#   architectures with every alignment function and its controls (tens of minutes; the
#   searches are cached). Networks come from notebook 02 (trained here if missing).
# - **GPU:** optional; every search runs on CUDA when `DEVICE` picks it.

# %% tags=["parameters"]
ARCH = "gru"  # network to study: gru, lstm, transformer, transformer_nope
TASK = "multiobject"  # multiobject, singleobject, sameobject, multiobject_mod4, multiobject_round3
SEED = 0  # seed of the network (as in notebook 02) and of the counterfactual pairs
RUN_DIR = ""  # a run saved by notebook 02 (its ARCH and TASK must match); empty: data/runs/<task>-<arch>-d128-s<seed>, trained now if missing
PROGRAM = "up_down"  # the hypothesis: up_down, up_up or ctx_distr
VARIABLE = "count"  # count, phase, count_phase (two blocks), full, null, or a program variable (demo_count, resp_count)
N_UNITS = 16  # dims of each aligned block
ALIGNMENT = "orthogonal"  # orthogonal (classic DAS), linear, revnet, boundless
MAX_STEPS = 20000  # cap of the main search and its learned controls; each stops once converged (best validation changed-pair IIA gains < 0.005 over 1000 steps)
ILLUSTRATION_STEPS = 600  # cap of the size sweep (section 5) and the other alignment functions (section 6): illustrations, each says whether it converged
BOUNDLESS_MAX_STEPS = 1500  # budget of boundless searches, which stop once their size has converged
N_TRAIN = 10000  # counterfactual training pairs
N_VAL = 1000  # validation pairs: stop the search, pick the best alignment
N_TEST = 1000  # test pairs: every number reported
N_TEST_HELDOUT = 500  # test pairs on held-out counts (4, 9, 14, 17); 0: none
SWEEP = "1,2,4,8,16,32"  # subspace sizes for the sweep (comma-separated)
COMPARE = False  # also search every architecture with every alignment function and its controls
USE_STORE = True  # reuse searches cached in data/das_store (a rerun pays only for what is new)
SMOKE = False  # tiny run for the test suite; the test suite also sets SYMLIB_SMOKE to 1
DEVICE = "auto"  # auto (CUDA when present), cpu or cuda
RESULTS_PATH = ""  # path for this notebook's key metrics as JSON; empty: write nothing

# %%
import time
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

import symlib
from symlib.book import plotting
from symlib.intervene.controls import CHANGED_CONTROLS, run_das_with_controls
from symlib.intervene.das import make_search_pairs
from symlib.book.widgets import intervention_explorer

t_start = time.perf_counter()
smoke = symlib.smoke_mode(SMOKE)
# every check runs before any network is trained or anything is written (symlib/analyses/params.py): each value,
# a RUN_DIR that matches ARCH and TASK, a VARIABLE the PROGRAM has, subspaces no wider than the state
checked = symlib.params.check_notebook("03_das_alignment", globals())
sweep = checked["SWEEP"][: 2 if smoke else None]
train_kw = dict(symlib.params.SMOKE_TRAIN) if smoke else {}  # the test suite's tiny run
run_cfg = symlib.networks.training.run_config(RUN_DIR) if RUN_DIR else symlib.TrainConfig(task=TASK, arch=ARCH, seed=SEED, **train_kw)

def budget(kind: str, illustration: bool = False) -> int:
    """The step cap of a search with alignment ``kind``: boundless runs until its size converges; the
    main search until it converges (``MAX_STEPS`` only guards against one that never settles); the
    illustrations of sections 5 and 6 at a smaller, stated cap."""
    if smoke:
        return symlib.params.SMOKE_BOUNDLESS_STEPS if kind == "boundless" else symlib.params.SMOKE_SEARCH["max_steps"]
    if kind == "boundless":
        return BOUNDLESS_MAX_STEPS
    return ILLUSTRATION_STEPS if illustration else MAX_STEPS


size = dict(n_train=N_TRAIN, n_val=N_VAL, n_test=N_TEST, n_test_heldout=N_TEST_HELDOUT, eval_every=50)
if smoke:  # the test suite's tiny searches
    size.update({k: v for k, v in symlib.params.SMOKE_SEARCH.items() if k != "max_steps"},
                n_test_heldout=min(N_TEST_HELDOUT, symlib.params.SMOKE_HELDOUT))
das_cfg = symlib.DASConfig(program=PROGRAM, variable=VARIABLE, alignment=ALIGNMENT, n_units=N_UNITS, seed=SEED,
                           max_steps=budget(ALIGNMENT), **size)
task = symlib.make_task(TASK)
width = symlib.params.state_width(run_cfg.arch, run_cfg.d_model)  # the state the search intervenes on
store = symlib.ResultsStore() if USE_STORE else None
das_cfg

# %% [markdown]
# ## 1. The network
# Loaded from notebook 02's run (its best checkpoint, judged on training-count trials), or
# trained now if there is none.

# %%
run = symlib.load_or_train(TASK, ARCH, SEED, run_dir=RUN_DIR, device=DEVICE, **({} if RUN_DIR else train_kw))
model, arch = run.model, run.config.arch
# figures are named after the run and the search, so a run with another seed or hypothesis keeps its own
tag = f"{run.run_dir.name}_{PROGRAM}-{VARIABLE}_{ALIGNMENT}{N_UNITS}"
print(f"{arch} on {run.config.task}: trial accuracy {run.summary['best_trial_acc_train']:.3f} (training counts), "
      f"{run.summary['best_trial_acc_heldout']:.3f} (held out); sites {model.sites}, default {model.default_site!r}")

# %% [markdown]
# ## 2. Counterfactual pairs, in three splits
# Each pair: a target trial intervened after token *i*, a source trial read after token *j*
# (both drawn among demo and response tokens), and the program's counterfactual sequence.
# The search learns on *training* pairs; *validation* pairs decide when it stops and which
# alignment it keeps; every number below is measured on *test* pairs (their own seed), and
# on test pairs whose trials use the counts held out of training (4, 9, 14, 17).
#
# Many swaps do not change the program's answer (swapping a 3 for a 3, or a count the
# program is about to overwrite). A network that ignores the swap gets those right for free,
# so we report IIA on the **changed** pairs beside raw IIA.

# %%
pairs = make_search_pairs(task, das_cfg)
for name, p in pairs.items():
    print(f"{name:13s} {len(p):6d} pairs; the swap changes the program's answer in {float(p.changed.float().mean()):.0%}")
test = pairs["test"]
i = int(torch.nonzero(test.changed)[0])
print("example counterfactual:", task.decode(test.tokens[i]), f"(swap after token {int(test.pos[i])})")

# %% [markdown]
# ## 3. The search and its controls
# The network is frozen; only the alignment learns, by the cross-entropy of the network's
# predictions on the counterfactual after the swap. **IIA** is the fraction of test pairs on
# which the intervened network produces the program's counterfactual exactly (every response
# and the final `E`). The controls run on the same test pairs, for the same alignment function:
# - **no swap**: the network left alone: the chance level of raw IIA (0 on changed pairs by construction);
# - **initial**: the alignment as initialised, untrained;
# - **wrong labels**: the same search trained and tested on a fixed permutation of the swapped
#   values: a map flexible enough to fit any labelling scores high here too;
# - **wrong program**: the same search against another program's labels (Up-Up for Up-Down).
#
# Each search runs until it has **converged**: its best validation IIA on changed pairs has
# gained less than `plateau_tol=0.005` over the last 1000 steps (or its validation trial IIA reached
# `target_iia=0.995`).
# A search stopped by its step cap instead says so (`converged` False) and is not a finding.
# The left panel below is the search's validation curve: how IIA grows with the budget.

# %%
main = run_das_with_controls(model, task, das_cfg, store=store)
m = main.metrics
ctl = m["controls"]
print(f"DAS: IIA {m['iia_test']:.3f} on test pairs, {m['iia_changed_test']:.3f} on changed ones "
      f"({m['steps']} steps, {m['seconds']:.0f} s, {m['stopped_because']}); best control on changed pairs {m['control_max_changed_test']:.3f}")
print("learned controls: " + ", ".join(f"{k} {v['steps']} steps, {'converged' if v['converged'] else 'not converged'}"
                                       for k, v in ctl.items() if v.get("steps") is not None))
# how IIA grows with the budget: the best validation changed-pair IIA reached by each number of steps
budget_curve = [(h["step"], h["val_iia_changed"]) for h in main.history if h.get("val_iia_changed") is not None]
best_by = lambda n: max((v for st, v in budget_curve if st <= n), default=None)
print("best validation changed-pair IIA by step: " + ", ".join(
    f"{n}: {best_by(n):.3f}" for n in (250, 500, 1000, 2000, 4000, 8000) if n <= m["steps"] and best_by(n) is not None))
if "iia_changed_test_heldout" in m:
    print(f"on held-out counts: IIA {m['iia_test_heldout']:.3f}, changed {m['iia_changed_test_heldout']:.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
if main.history:
    axes[0].plot([h["step"] for h in main.history], [h["val_iia"] for h in main.history], "-", lw=1, label="all validation pairs")
    axes[0].plot([h["step"] for h in main.history], [h["val_iia_changed"] for h in main.history], "-", lw=1, label="changed pairs")
    if not smoke and m["steps"] > ILLUSTRATION_STEPS:
        axes[0].axvline(ILLUSTRATION_STEPS, color="grey", ls=":", lw=1)
        axes[0].text(ILLUSTRATION_STEPS, 0.05, f" {ILLUSTRATION_STEPS} steps\n (the illustrations' cap)", fontsize=7, color="grey")
axes[0].set_xlabel("DAS step"); axes[0].set_ylabel("validation trial IIA"); axes[0].set_ylim(-0.02, 1.02); axes[0].grid(alpha=0.3)
axes[0].legend(frameon=False, fontsize=8, loc="lower right")
axes[0].set_title(f"{arch}: the search ({ALIGNMENT}, {N_UNITS} dims), "
                  f"{'converged' if m['converged'] else 'stopped at its cap'} at step {m['steps']}", fontsize=10, loc="left")
bars = {"DAS": m, **ctl}
x = np.arange(len(bars))
axes[1].bar(x - 0.2, [v["iia_test"] for v in bars.values()], 0.4, label="all test pairs", color="#9ecae1", edgecolor="black", linewidth=0.4)
axes[1].bar(x + 0.2, [v["iia_changed_test"] or 0 for v in bars.values()], 0.4, label="changed pairs", color="#2b7bba", edgecolor="black", linewidth=0.4)
axes[1].set_xticks(x, [k.replace("_", " ") for k in bars], rotation=15)
axes[1].set_ylabel("trial IIA (test)"); axes[1].set_ylim(0, 1.05); axes[1].legend(frameon=False, fontsize=8)
axes[1].set_title(f"{arch}: {PROGRAM} {VARIABLE} against its controls", fontsize=10, loc="left")
fig.tight_layout()
plotting.save_figure(fig, f"03_controls_{tag}")
# changed: on each one's own changed pairs; on DAS's: on the pairs DAS's counterfactual changes (the same subset for all)
print(f"{'':14s} {'IIA':>6s} {'changed':>8s} {'on DAS changed':>15s}")
for k, v in bars.items():
    print(f"{k:14s} {v['iia_test']:6.3f} {v['iia_changed_test']:8.3f} {v.get('iia_changed_main', v['iia_changed_test']):15.3f}")
assert 0.0 <= m["iia_test"] <= 1.0 and set(ctl) == set(symlib.CONTROL_NAMES)
if not smoke and arch in ("gru", "lstm") and TASK == "multiobject" and PROGRAM == "up_down" and VARIABLE == "count":
    # finding 1: recurrent networks hold an Up-Down count, far above every control on the changed pairs
    assert m["iia_changed_test"] >= 0.85 and m["iia_changed_test"] > m["control_max_changed_test"] + 0.3, (m, ctl)

# %% [markdown]
# ## 4. A number line, scored out of sample
# Project natural states (every demo and response position of fresh trials) on the learned
# subspace, fit a linear read-out of the program's count on half of the trials and score it on
# the other half. Beside it: random subspaces of the same size. If random subspaces read the
# count as well, the number line shows only that the count is linearly decodable from the
# state, not that the aligned subspace *is* the count. The sharper test is a 1-dim alignment
# (section 5): its single coordinate, with no fitting at all.

# %%
states = symlib.natural_states(model, task, PROGRAM, n_trials=64 if smoke else 400, seed=SEED)
line = symlib.number_line(main.alignment.cpu(), states, n_random=5 if smoke else 20, seed=SEED)
main.alignment.to(model.device)
fig = plotting.plot_number_line(line["coord_test"], line["value_test"], line["phase_test"],
                                title=f"{arch}: held-out states on the learned subspace (r = {line['r_test']:.3f}; random subspaces {line['r_test_random_mean']:.3f})")
plotting.save_figure(fig, f"03_number_line_{tag}")
print(f"r on held-out trials: learned {line['r_test']:.3f}, random {line['n_units']}-dim subspaces {line['r_test_random_mean']:.3f} "
      f"[{line['r_test_random_p05']:.3f}, {line['r_test_random_p95']:.3f}]; in-sample {line['r_fit']:.3f}")
assert np.isfinite(line["r_test"])

# %% [markdown]
# ## 5. How many dimensions does the count need?
# Every size runs under the same rule and the illustrations' cap (`ILLUSTRATION_STEPS`), all
# in one batched pass over the frozen network; each size says whether it converged within it.

# %%
t0 = time.perf_counter()
sweep_res = symlib.subspace_sweep(model, task, replace(das_cfg, alignment="orthogonal", max_steps=budget("orthogonal", True)), sweep, store=store)
sweep_seconds = max(r.metrics["seconds"] for r in sweep_res.values()) if sweep_res else 0.0
iia_vs_units = {k: {"iia_test": r.metrics["iia_test"], "iia_changed_test": r.metrics["iia_changed_test"], "steps": r.metrics["steps"],
                    "converged": r.metrics["converged"]} for k, r in sweep_res.items()}
for k, v in iia_vs_units.items():
    print(f"n_units={k:3d}: IIA {v['iia_test']:.3f}, changed {v['iia_changed_test']:.3f} "
          f"({v['steps']} steps, {'converged' if v['converged'] else 'not converged'})")
print(f"the sweep of {len(sweep_res)} sizes searched in {sweep_seconds:.0f} s; the main search took {m['seconds']:.0f} s "
      f"(this call: {time.perf_counter() - t0:.0f} s, cached searches are loaded)")
own = None
if 1 in sweep_res:
    own = symlib.number_line(sweep_res[1].alignment.cpu(), states, n_random=0, seed=SEED)["r_own_coordinate"]
    print(f"the 1-dim alignment's own coordinate against the count, no fitting: r = {own:.3f}")
fig = plotting.plot_iia_vs_units({f"{arch}: all pairs": {k: v["iia_test"] for k, v in iia_vs_units.items()},
                                  f"{arch}: changed pairs": {k: v["iia_changed_test"] for k, v in iia_vs_units.items()}},
                                 chance=ctl["no_swap"]["iia_test"], title=f"{arch}: test IIA against subspace size (at most {budget('orthogonal', True)} steps each)")
plotting.save_figure(fig, f"03_iia_vs_units_{tag}")
assert all(0 <= v["iia_test"] <= 1 for v in iia_vs_units.values())

# %% [markdown]
# ## 6. Alignment functions and architectures
# Classic DAS rotates (orthogonal). A general invertible linear map, a nonlinear reversible
# network (revnet) and a rotation that learns its own subspace size (boundless) are the
# alternatives. The more expressive a map, the more it could fit labels that no variable
# explains, so each alignment function gets its own controls, on the same test pairs. With
# `COMPARE`, every architecture gets every alignment function. (An affine map, a linear one
# with an offset, is left out: within one network its offset cancels and it searches exactly
# what the linear map does; it matters between networks, chapter 06.) Apart from the main
# search, these run at the illustrations' cap; the `converged` column says which finished.

# %%
archs = ["gru", "lstm", "transformer"] if COMPARE else [arch]
table = []
for a in archs:
    net = model if a == arch else symlib.load_or_train(TASK, a, SEED, device=DEVICE, **train_kw).model
    for kind in [k for k in symlib.ALIGNMENT_NAMES if k != "affine"]:
        res = main if (a == arch and kind == ALIGNMENT) else run_das_with_controls(
            net, task, replace(das_cfg, alignment=kind, max_steps=budget(kind, illustration=True)), store=store, progress=False,
            token_iia=False, full_controls=())  # illustrations: IIA on pairs, without the free-running token IIA
        r = res.metrics
        table.append({"arch": a, "alignment": kind, "iia_test": r["iia_test"], "iia_changed_test": r["iia_changed_test"],
                      "iia_changed_test_heldout": r.get("iia_changed_test_heldout"), "n_units": r["n_units"],
                      "learned_n_units": r["learned_n_units"], "boundary": r["boundary"], "steps": r["steps"], "seconds": r["seconds"],
                      "stopped_because": r["stopped_because"], "converged": r["converged"],
                      "control_max_changed_test": r["control_max_changed_test"], "controls": r["controls"]})
        print(f"{a:12s} {kind:10s} IIA {r['iia_test']:.3f} changed {r['iia_changed_test']:.3f} "
              f"({r['steps']} steps, {'converged' if r['converged'] else 'not converged'}) | controls on changed: "
              + ", ".join(f"{k} {v['iia_changed_test']:.3f}" for k, v in r["controls"].items())
              + (f" | boundless kept {r['n_units']} dims (boundary {r['boundary']:.2f})" if kind == "boundless" else ""))
fig = plotting.plot_iia_bars({f"{row['arch']}\n{row['alignment']}": {"DAS": row["iia_changed_test"],
                              **{f"control: {k.replace('_', ' ')}": v["iia_changed_test"] for k, v in row["controls"].items() if k in CHANGED_CONTROLS}}
                              for row in table}, title=f"IIA on changed test pairs, {PROGRAM} {VARIABLE}, each alignment with its own controls")
plotting.save_figure(fig, f"03_iia_table_all_{tag}" if COMPARE else f"03_iia_table_{tag}")
boundless = next(row for row in table if row["arch"] == arch and row["alignment"] == "boundless")
assert all(0 <= row["iia_test"] <= 1 for row in table) and 0 <= boundless["learned_n_units"] <= width

# %% [markdown]
# ## 7. Gradience: which swaps work?
# IIA on the changed test pairs, broken down one quantity at a time: by the count value swapped
# in, and by the target trial's N. Each bar carries its number of pairs and a 95% interval, so
# a value few pairs reach reads as uncertain. (Crossed with each other, the test pairs would
# spread over some 400 cells, most with a pair or two: too thin to read.)

# %%
fig = plotting.plot_iia_by_value(main.rows, title=f"{arch}: which swaps work")
plotting.save_figure(fig, f"03_iia_by_count_{tag}")
ch = main.rows["changed"].astype(bool)
by_value = pd.Series(main.rows["correct"][ch].astype(float)).groupby(main.rows["source_value"][ch]).agg(["mean", "size"])
print("IIA on changed pairs by swapped-in count (mean, pairs):")
print(by_value.round(3).T.to_string())
assert by_value["size"].sum() == ch.sum()

# %% [markdown]
# ## 8. Explore
# Pick a target trial and where to intervene, a source trial and where to read it, and see
# the program's counterfactual beside what the intervened network does by itself (the
# network's answer after `|` is its own, fed back token by token). Needs a live kernel.

# %%
explorer = intervention_explorer(model, task, main.alignment, PROGRAM, VARIABLE) if VARIABLE != "count_phase" else None
explorer

# %% [markdown]
# ## Summary
# - The changed-pair IIA against the best control that can score there is the number to read:
#   raw IIA and the no-swap control share the free points of swaps that change nothing.
# - A search is a finding only once it has converged; the validation curve shows how far a
#   shorter budget would have stopped from its plateau.
# - Recurrent networks hold a count that can be swapped like Up-Down's variable, also on
#   counts held out of training; a Transformer's state at one position does not.
# - A number line fitted on the learned subspace says little on its own (random subspaces
#   read the count too); a 1-dim alignment's own coordinate is the sharper evidence.
# - `make findings` repeats the main search and its controls over network seeds, with intervals:
#   its committed result follows.

# %% [markdown]
# ## The finding over seeds
# The same search and controls over three seeds of each architecture, every search to
# convergence, as committed in `results/findings/` (the README prints the same block):

# %%
from IPython.display import Markdown

from symlib.analyses.findings import full_run

Markdown(full_run("findings"))

# %%
symlib.write_results(RESULTS_PATH, {
    "arch": arch, "task": TASK, "program": PROGRAM, "variable": VARIABLE, "alignment": ALIGNMENT, "n_units": m["n_units"],
    "max_steps": das_cfg.max_steps, "illustration_steps": budget("orthogonal", True), "n_test": m["n_test"], "converged": m["converged"],
    "budget_curve": budget_curve,
    **{k: m.get(k) for k in ("iia_test", "iia_changed_test", "iia_token_test", "iia_test_heldout", "iia_changed_test_heldout",
                             "iia_val", "steps", "best_step", "seconds", "stopped_because", "learned_n_units", "boundary",
                             "control_max_changed_test", "control_max_changed_main", "changed_fraction_test")},
    "controls": ctl, "iia_vs_units": iia_vs_units, "sweep_seconds": sweep_seconds, "table": table,
    "number_line": {k: line[k] for k in ("r_test", "r2_test", "r_fit", "r_test_random_mean", "r_test_random_p05", "r_test_random_p95", "n_units")},
    "r_own_coordinate_1dim": own,
    "iia_by_source_value": {int(v): {"iia_changed_test": float(r["mean"]), "n": int(r["size"])} for v, r in by_value.iterrows()},
    "notebook_seconds": round(time.perf_counter() - t_start, 1),
})
