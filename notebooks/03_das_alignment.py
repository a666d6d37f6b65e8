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
#   trials like a program's variable: interchange interventions, learned alignments (DAS),
#   interchange-intervention accuracy (IIA) against subspace size, four alignment functions,
#   the controls that say what chance looks like, a "number line", and an explorer.
# - **Runtime (2-thread CPU, default size):** about 7 minutes; the architecture x alignment
#   comparison (`COMPARE = True`, `make book-compare`) adds about 15, mostly the Transformer's
#   searches. Networks come from notebook 02 (trained here if missing). Searches stop at
#   `MAX_STEPS`; more steps raise IIA a little.
# - **GPU:** optional; every search runs on CUDA when `DEVICE` picks it.

# %% tags=["parameters"]
ARCH = "gru"  # network to study in depth: gru, lstm, transformer, transformer_nope
TASK = "multiobject"  # multiobject, singleobject, sameobject, multiobject_mod4, multiobject_round3
SEED = 0  # seed of the network (as in notebook 02) and of the counterfactual pairs
RUN_DIR = ""  # a run saved by notebook 02; empty: data/runs/<task>-<arch>-d128-s<seed>, trained now if missing
PROGRAM = "up_down"  # the hypothesis: up_down, up_up or ctx_distr
VARIABLE = "count"  # count, phase, count_phase (two blocks), full (every variable), null
N_UNITS = 16  # dims of each aligned block
ALIGNMENT = "orthogonal"  # orthogonal (classic DAS), linear, revnet, boundless
MAX_STEPS = 600  # upper bound on DAS steps per search; early stopping may end one sooner
N_TRAIN = 10000  # counterfactual training pairs
N_VAL = 1000  # held-out counterfactual pairs that IIA is measured on
SWEEP = "1,2,4,8,16,32"  # n_units values for the subspace-size sweep
COMPARE = False  # also search GRU, LSTM and Transformer with every alignment function; adds about 15 minutes on CPU
SMOKE = False  # tiny run for the test suite; the test suite also sets SYMLIB_SMOKE to 1
DEVICE = "auto"  # auto (CUDA when present), cpu or cuda
RESULTS_PATH = ""  # path for this notebook's key metrics as JSON; empty: write nothing

# %%
import time

import numpy as np
import torch

import symlib
from symlib import plotting
from symlib.widgets import intervention_explorer

smoke = symlib.smoke_mode(SMOKE)
das_cfg = symlib.DASConfig(
    program=PROGRAM, variable=VARIABLE, alignment=ALIGNMENT, n_units=N_UNITS, seed=SEED,
    max_steps=20 if smoke else MAX_STEPS, n_train=256 if smoke else N_TRAIN, n_val=128 if smoke else N_VAL,
    eval_every=10 if smoke else 50,
)
sweep = [int(x) for x in SWEEP.split(",")][: 2 if smoke else None]
train_kw = dict(d_model=32, max_steps=24, eval_every=8, n_eval_trials=64, n_train_trials=256) if smoke else {}
task = symlib.make_task(TASK)
symlib.utils.check_choice("architecture", ARCH, symlib.ARCH_NAMES)  # fail now, not after training
t_start = time.perf_counter()
das_cfg

# %% [markdown]
# ## 1. The network
# Loaded from notebook 02's run (its best checkpoint, judged on training-count trials), or
# trained now if there is none.

# %%
run = symlib.load_or_train(TASK, ARCH, SEED, run_dir=RUN_DIR, device=DEVICE, **train_kw)
model = run.model
print(f"{ARCH}: trial accuracy {run.summary['best_trial_acc_train']:.3f} (training counts), "
      f"{run.summary['best_trial_acc_heldout']:.3f} (held out); sites {model.sites}, default {model.default_site!r}")

# %% [markdown]
# ## 2. Counterfactual pairs
# Each pair: a target trial intervened after token *i*, a source trial read after token *j*
# (both drawn among demo and response tokens), and the program's counterfactual sequence.
# The same pairs are used by every search below, so the numbers are comparable.

# %%
prog = symlib.make_program(PROGRAM, task)
train_pairs = symlib.make_pairs(task, prog, VARIABLE, das_cfg.n_train, seed=SEED)
val_pairs = symlib.make_pairs(task, prog, VARIABLE, das_cfg.n_val, seed=SEED + 7919)
print(f"{len(train_pairs)} training and {len(val_pairs)} validation pairs; the swap changes the "
      f"program's answer in {float(val_pairs.changed.float().mean()):.0%} of them")
i = int(torch.nonzero(val_pairs.changed)[0])
print("example counterfactual:", task.decode(val_pairs.tokens[i]), f"(swap after token {int(val_pairs.pos[i])})")

# %% [markdown]
# ## 3. The search
# The network is frozen; only the alignment learns. Its loss is the cross-entropy of the
# network's predictions on the counterfactual sequence after the swap. **IIA** is then
# measured on held-out pairs: the fraction where the intervened network produces the
# program's counterfactual exactly (every response and the final `E`).

# %%
main = symlib.run_das(model, task, das_cfg, train_pairs, val_pairs)
m = main.metrics
print({k: m[k] for k in ("iia_trial", "iia_token", "steps", "seconds", "seconds_to_iia_0.95", "stopped_because", "learned_n_units")})

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot([h["step"] for h in main.history], [h["val_iia"] for h in main.history], "o-")
ax.set_xlabel("DAS step"); ax.set_ylabel("validation trial IIA"); ax.set_ylim(-0.02, 1.02); ax.grid(alpha=0.3)
ax.set_title(f"{ARCH}: aligning {PROGRAM} {VARIABLE} ({ALIGNMENT}, {N_UNITS} dims)", fontsize=10, loc="left")
fig.tight_layout()
plotting.save_figure(fig, f"03_das_curve_{ARCH}")
assert 0.0 <= m["iia_trial"] <= 1.0 and m["steps"] >= 1

# %% [markdown]
# ## 4. What chance looks like: controls
# An IIA means little alone. Four controls on the same validation pairs:
# - **no swap**: the network left alone (how often the counterfactual is what it would do anyway);
# - **random rotation**: the alignment as initialised, untrained;
# - **shuffled labels**: the search trained on pairs whose sources were shuffled;
# - **untrained network**: the same search on a randomly initialised network of the same kind.

# %%
def untrained_like(m):
    torch.manual_seed(SEED + 12345)
    return symlib.build_model(m.config).to(m.device).eval()


controls = symlib.das_controls(model, task, das_cfg, untrained_model=untrained_like(model), train_data=train_pairs, val_data=val_pairs)
bars = {"DAS": m["iia_trial"], **{k.replace("control_", "").replace("_iia", ""): v for k, v in controls.items()}}
for k, v in bars.items():
    print(f"{k:18s} trial IIA {v:.3f}")
fig, ax = plt.subplots(figsize=(5.5, 3))
ax.bar(list(bars), list(bars.values()), color=["#2b7bba"] + ["#aaaaaa"] * (len(bars) - 1))
ax.set_ylabel("trial IIA"); ax.set_ylim(0, 1.05); ax.set_title(f"{ARCH}: {PROGRAM} {VARIABLE} against controls", fontsize=10, loc="left")
plt.setp(ax.get_xticklabels(), rotation=20)
fig.tight_layout()
plotting.save_figure(fig, f"03_controls_{ARCH}")
if not smoke and ARCH in ("gru", "lstm") and PROGRAM == "up_down" and VARIABLE == "count":
    # finding 1: recurrent networks hold an Up-Down count, far above every control
    assert m["iia_trial"] >= 0.9 and m["iia_trial"] > max(controls.values()) + 0.3, (m, controls)

# %% [markdown]
# ## 5. A number line
# Project the network's natural states (every demo and response position of fresh trials)
# onto the learned count subspace, and read off the single direction in it that best tracks
# the program's count. If the network counts like Up-Down, states line up by count, demo and
# response phase alike.

# %%
gen = torch.Generator().manual_seed(SEED + 5)
nat = task.sample(64 if smoke else 400, "train", gen, unk_p=0.0)
with torch.no_grad():
    states = model.states(nat.tokens.to(model.device), model.default_site)
trace = prog.trace(nat)
L = nat.tokens.shape[1]
idx = torch.arange(L)[None, :]
keep = (idx >= 1) & (idx < (nat.lengths - 1)[:, None]) & (idx != nat.trigger_pos[:, None])
H = states.detach().float().cpu()[keep]
value, phase = prog.read({k: v[keep] for k, v in trace.items()}, prog.number_variable).numpy(), trace["phase"][keep].numpy()
with torch.no_grad():
    Z = main.alignment.to("cpu").block(H, 0).numpy() if ALIGNMENT != "boundless" else main.alignment.to("cpu").aligned(H)[:, : main.alignment.n_units].numpy()
main.alignment.to(model.device)
X = np.c_[Z, np.ones(len(Z))]
w, *_ = np.linalg.lstsq(X, value.astype(float), rcond=None)
coord = X @ w
r = float(np.corrcoef(coord, value)[0, 1])
fig = plotting.plot_number_line(coord, value, phase, title=f"{ARCH}: states on the learned count direction (r = {r:.2f})")
plotting.save_figure(fig, f"03_number_line_{ARCH}")
print(f"correlation of the projection with the program's count: {r:.3f}")
assert np.isfinite(r)

# %% [markdown]
# ## 6. How many dimensions does the count need?
# Sweep the subspace size. A symbol-like variable should be swappable in few dimensions.

# %%
curve = {}
for k in sweep:
    if k == N_UNITS and ALIGNMENT == "orthogonal":
        curve[k] = m["iia_trial"]
        continue
    if k * train_pairs.swap.shape[1] > model.state_size():
        continue
    r_k = symlib.run_das(model, task, das_cfg, train_pairs, val_pairs, alignment="orthogonal", n_units=k, progress=False)
    curve[k] = r_k.metrics["iia_trial"]
    print(f"n_units={k:3d}: trial IIA {curve[k]:.3f} ({r_k.metrics['steps']} steps)")
fig = plotting.plot_iia_vs_units({f"{ARCH} (orthogonal)": curve}, chance=controls["control_no_swap_iia"], title=f"{ARCH}: IIA against subspace size")
plotting.save_figure(fig, f"03_iia_vs_units_{ARCH}")
assert all(0 <= v <= 1 for v in curve.values())

# %% [markdown]
# ## 7. Alignment functions and architectures
# Classic DAS rotates (orthogonal). A general invertible linear map, a nonlinear reversible
# network (revnet) and a rotation with a *learned* subspace size (boundless, which needs no
# sweep) are the alternatives. Every alignment function runs on `ARCH`; with `COMPARE`, every
# architecture gets every alignment function and the controls, on the same pairs.

# %%
archs = ["gru", "lstm", "transformer"] if COMPARE else [ARCH]
table, learned_units, seconds = {}, {}, {}
for arch in archs:
    net = model if arch == ARCH else symlib.load_or_train(TASK, arch, SEED, device=DEVICE, **train_kw).model
    row = {}
    for kind in symlib.ALIGNMENT_NAMES:
        if arch == ARCH and kind == ALIGNMENT:
            res = main
        else:
            res = symlib.run_das(net, task, das_cfg, train_pairs, val_pairs, alignment=kind, progress=False)
        row[kind] = res.metrics["iia_trial"]
        seconds[f"{arch}/{kind}"] = res.metrics["seconds"]
        if kind == "boundless":
            learned_units[arch] = res.metrics["learned_n_units"]
    ctl = controls if arch == ARCH else symlib.das_controls(net, task, das_cfg, untrained_model=untrained_like(net), train_data=train_pairs, val_data=val_pairs)
    row.update({f"control: {k.replace('control_', '').replace('_iia', '').replace('_', ' ')}": v for k, v in ctl.items()})
    table[arch] = row
    print(arch, {k: round(v, 3) for k, v in row.items()}, "boundless kept", learned_units.get(arch), "dims")

fig = plotting.plot_iia_bars(table, title=f"Trial IIA of {PROGRAM} {VARIABLE} ({N_UNITS} dims; boundless learns its own)")
plotting.save_figure(fig, "03_iia_table")
cols = list(next(iter(table.values())))
print("| architecture | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
for arch, row in table.items():
    print(f"| {arch} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
if not smoke and COMPARE and PROGRAM == "up_down" and VARIABLE == "count":
    # findings 1 and 2: recurrent networks align with an Up-Down count; a Transformer's
    # single-position count swap transfers far less well
    assert table["gru"]["orthogonal"] >= 0.9 and table["lstm"]["orthogonal"] >= 0.9, table
    assert table["transformer"]["orthogonal"] < table["gru"]["orthogonal"], table

# %% [markdown]
# ## 8. Gradience: which swaps work?
# IIA broken down by the count value swapped in and the target trial's N. Larger numbers
# are often less precise.

# %%
va, vb, M = symlib.iia_table(main.rows, "source_value", "target_count")
fig = plotting.plot_iia_matrix(va, vb, M, title=f"{ARCH}: trial IIA by swapped-in count and target N")
plotting.save_figure(fig, f"03_iia_by_count_{ARCH}")
by_value = {int(v): float(np.nanmean(row)) for v, row in zip(va, M)}
print("IIA by swapped-in count:", {k: round(v, 2) for k, v in by_value.items()})
assert M.shape == (len(va), len(vb))

# %% [markdown]
# ## 9. Explore
# Pick a target trial and where to intervene, a source trial and where to read it, and see
# the program's counterfactual beside what the intervened network does by itself (the
# network's answer after `|` is its own, fed back token by token). Needs a live kernel.

# %%
explorer = intervention_explorer(model, task, main.alignment, PROGRAM, VARIABLE) if VARIABLE != "count_phase" else None
explorer

# %% [markdown]
# ## Summary
# - The recurrent networks hold a count that can be swapped like Up-Down's variable; the
#   controls show how far above chance that is.
# - The Transformer's state at one position does not carry a transferable count in the same
#   way, as expected of a context-distributed (Ctx-Distr-like) solution.
# - The sweep shows how many dimensions the count needs; boundless DAS finds a size itself.

# %%
symlib.write_results(RESULTS_PATH, {
    "arch": ARCH, "task": TASK, "program": PROGRAM, "variable": VARIABLE, "alignment": ALIGNMENT, "n_units": N_UNITS,
    "iia_trial": m["iia_trial"], "iia_token": m["iia_token"], "steps": m["steps"], "seconds": m["seconds"],
    "seconds_to_iia_0.95": m["seconds_to_iia_0.95"],
    "learned_n_units": learned_units.get(ARCH, m["learned_n_units"]),
    **controls, "iia_vs_units": curve, "table": table, "learned_n_units_by_arch": learned_units,
    "search_seconds": seconds, "number_line_r": r, "iia_by_source_value": by_value,
    "notebook_seconds": round(time.perf_counter() - t_start, 1),
})
