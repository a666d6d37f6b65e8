# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Model Alignment Search: do different networks hold the *same* count?
#
# - **What it shows:** one alignment per network, learned jointly, and count swaps *between*
#   networks: a GRU's count written into an LSTM, a Transformer's into a GRU. The matrix of
#   cross-network IIA (source x target, changed test pairs, with the untrained alignments as
#   the control) beside two similarity measures that do not intervene (linear CKA and RSA);
#   how many dimensions the shared count needs; model stitching as a baseline; the
#   counterfactual-latent loss, which aligns a network no behavioural gradient runs through;
#   and a network trained on another task aligned through the program's variables.
# - **Runtime (2-core CPU, default size):** about 11 minutes with the networks trained (the size
#   sweep is half of it); the test suite runs it at a tiny size in under a minute. Every
#   search is cached in `data/das_store`, so a rerun costs seconds.
# - **GPU:** optional; searches run on CUDA when `DEVICE` picks it.

# %% tags=["parameters"]
NETWORKS = "gru:0,gru:1,gru:2,lstm:0,transformer:0"  # comma-separated arch:seed items, MultiObject networks
N_UNITS = 16  # dims of each network's aligned count subspace
UNITS = "1,2,4,8,16"  # subspace sizes for cross-network IIA against size
MAX_STEPS = 400  # cap on the steps of the joint searches over all networks (each stops earlier once converged)
SWEEP_STEPS = 200  # cap on each search of the size sweep, the stitching and the CL experiment (each stops earlier once converged)
SWEEP_ZSCORED = True  # the size sweep also on z-scored states (each network normalised), beside raw ones
CROSS_TASK = "singleobject"  # a GRU trained on this task is aligned with the first GRU ("" skips it)
SEED = 0  # seed of the counterfactual pairs and the alignments
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
from symlib.intervene import mas
from symlib.book import plotting
from symlib.analyses.findings import FINDINGS_TRAIN
from symlib.analyses.similarity import condition_states, similarity_matrices
from symlib.analyses.stats import format_ci, mean_ci

t_start = time.perf_counter()
smoke = symlib.smoke_mode(SMOKE)
# every check runs before any network is trained or anything is written (symlib/analyses/params.py): NETWORKS
# items arch:seed (two or more, none twice, seeds >= 0), subspace sizes no wider than the networks' state
checked = symlib.params.check_notebook("06_model_alignment_search", globals())
specs = checked["NETWORKS"]  # (arch, seed) pairs
fig_tag = "-".join(f"{a}{s}" for a, s in specs) + f"_s{SEED}"  # figures named after the networks and the seed
units = sorted(set(checked["UNITS"]))
task = symlib.make_task("multiobject")
train_kw = dict(symlib.params.SMOKE_TRAIN_DYNAMICS) if smoke else {}  # the test suite's tiny networks and searches
mas_smoke = symlib.params.SMOKE_MAS
size = ({k: mas_smoke[k] for k in ("n_train", "n_val", "n_test", "eval_every")} if smoke
        else dict(n_train=10_000, n_val=1_000, n_test=1_000, eval_every=50))
n_units = symlib.params.SMOKE_UNITS if smoke else N_UNITS
units = [u for u in units if u <= 8] if smoke else units
max_steps, sweep_steps = (mas_smoke["max_steps"], mas_smoke["max_steps"]) if smoke else (MAX_STEPS, SWEEP_STEPS)
# the joint searches stop once converged (best validation changed-pair IIA gains < 0.005 over 1000 steps) or at the cap
base = mas.MASConfig(n_units=n_units, max_steps=max_steps, seed=SEED, **size)  # converged or capped (no loss rule by default)
print(f"{len(specs)} networks; joint search {n_units} dims, at most {max_steps} steps; size sweep {units}, at most {sweep_steps} steps each")

# %% [markdown]
# ## 1. The networks
# The book's MultiObject networks (chapter 02's recipe; trained now if missing). Each is
# frozen from here on: only the alignments learn.

# %%
nets, rows = [], []
for arch, seed in specs:
    run = symlib.load_or_train("multiobject", arch, seed, device=DEVICE, progress=True, **{**FINDINGS_TRAIN.get(arch, {}), **train_kw})
    name = f"{arch}:{seed}"
    nets.append(mas.MASNetwork(name, run.model, task))
    rows.append({"network": name, "width": nets[-1].width, "site": nets[-1].site,
                 "trial_acc_train": run.summary["trial_acc_train"], "trial_acc_heldout": run.summary["trial_acc_heldout"]})
names = [n.name for n in nets]
pd.DataFrame(rows)

# %% [markdown]
# ## 2. One alignment per network, swaps between them
# Every network gets its own rotation, and all of them train together on every direction:
# a count read from network *s* through its rotation is written into network *t* through
# *t*'s, and *t* must then answer as Up-Down says it would with that count. The diagonal
# (*s* = *t*) swaps within one network, as DAS does. Each cell is IIA on the **changed** test pairs (pairs
# whose right answer the swap changes); the control is the same matrix for the alignments
# before training, on the same pairs.

# %%
res = mas.run_mas(nets, base, progress=True, store=USE_STORE)
M = res.matrix("iia_changed_test")
C = res.matrix("initial_iia_changed_test")
print(f"joint search: {res.metrics['steps']} steps, {res.metrics['stopped_because']}"
      + (" (cached)" if res.metrics.get("cached") else f", {res.metrics['seconds']:.0f} s"))
res.table.round(3)

# %% [markdown]
# ### The same search on z-scored states
# A rotation keeps lengths and has no offset, so it can only carry a count between two
# networks that keep it at the same scale around the same centre. The networks here do not:
# an LSTM's state holds its cell state, whose coordinates grow far beyond a GRU's, and each
# network's states have their own mean. With `normalise=True` each network's states are
# z-scored (the mean and standard deviation of each coordinate over the network's natural
# states, kept with its alignment) before its rotation, and the z-scoring is undone after the
# interchange: a count read from one network is written into another *in that network's own
# units*. Within one network this changes only the geometry the rotation works in.

# %%
res_norm = mas.run_mas(nets, base, progress=True, store=USE_STORE, normalise=True)
M_norm = res_norm.matrix("iia_changed_test")
print(f"normalised joint search: {res_norm.metrics['steps']} steps, {res_norm.metrics['stopped_because']}")
norm_tbl = res.table[["source", "target", "iia_changed_test"]].rename(columns={"iia_changed_test": "raw states"})
norm_tbl["z-scored states"] = [M_norm[names.index(s), names.index(t)] for s, t in zip(norm_tbl.source, norm_tbl.target)]
norm_tbl["control (z-scored, untrained)"] = [res_norm.matrix("initial_iia_changed_test")[names.index(s), names.index(t)]
                                             for s, t in zip(norm_tbl.source, norm_tbl.target)]
assert M_norm.shape == M.shape
norm_tbl.round(3)

# %% [markdown]
# The diagonal of a joint search is not quite DAS: each network's one rotation must serve
# every direction at once. For reference, each network's rotation searched for itself
# alone (only *s* = *t*, on the same pairs, at most `SWEEP_STEPS` steps):

# %%
# the same rule as the joint search, with its own cap: a search that hits it is an illustration, and says so
sweep_cfg = mas.MASConfig(**{**vars(base), "max_steps": sweep_steps})
sweep_runs = []  # (what, result) of every search below, for the count of those that converged


def converged_mark(r, what):
    sweep_runs.append((what, r))
    return "" if r.metrics["converged"] else " (capped)"
alone = mas.run_mas(nets, sweep_cfg, progress=True, store=USE_STORE, directions="self", evaluate_all=False)
alone_diag = {r.source: r.iia_changed_test for r in alone.table.itertuples()}
alone_label = f"alone ({alone.metrics['steps']} steps{converged_mark(alone, 'alone')})"
pd.DataFrame({"network": names, "joint search": np.diag(M), alone_label: [alone_diag[n] for n in names]}).round(3)


# %%
def heat(ax, M, labels, title, vmin=0.0, vmax=1.0, annot=None):
    im = ax.imshow(M, vmin=vmin, vmax=vmax, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            if not np.isnan(M[i, j]):
                txt = f"{M[i, j]:.2f}" if annot is None else annot[i][j]
                ax.text(j, i, txt, ha="center", va="center", fontsize=7, color="white" if M[i, j] < 0.6 else "black")
    ax.set_title(title, fontsize=9, loc="left")
    return im


annot = [[f"{M[i, j]:.2f}\n({C[i, j]:.2f})" for j in range(len(names))] for i in range(len(names))]
C_norm = res_norm.matrix("initial_iia_changed_test")
annot_n = [[f"{M_norm[i, j]:.2f}\n({C_norm[i, j]:.2f})" for j in range(len(names))] for i in range(len(names))]
fig, axes = plt.subplots(1, 2, figsize=(2.4 * len(names) + 3, 1.0 * len(names) + 1.8))
for ax, mat, ann, title in ((axes[0], M, annot, "raw states"), (axes[1], M_norm, annot_n, "z-scored states (normalise=True)")):
    im = heat(ax, mat, names, f"MAS, {title}: count IIA on changed test pairs\n(in brackets: untrained alignments)", annot=ann)
    ax.set_xlabel("target network (continues from the swapped state)")
axes[0].set_ylabel("source network (gives its count)")
fig.colorbar(im, ax=list(axes), fraction=0.03)
plotting.save_figure(fig, f"06_mas_matrix_{fig_tag}")
assert M.shape == (len(names), len(names)) and np.nanmin(M) >= 0 and np.nanmax(M) <= 1

# %% [markdown]
# ## 3. What similarity measures that do not intervene say
# Linear CKA and RSA compare the *shapes* of two networks' states: each network's mean
# state for every program condition (count value, phase), matched condition by condition.
# Neither asks whether the networks *use* what they hold. MAS is directed (source to
# target), so for the comparison each pair's MAS score is the mean of its two directions.

# %%
cond = {n.name: condition_states(n.model, task, n_trials=100 if smoke else 400, seed=SEED) for n in nets}
sim = similarity_matrices(cond)
M_sym = (M + M.T) / 2
fig, axes = plt.subplots(1, 3, figsize=(4.0 * 3, 0.8 * len(names) + 2.2))
for ax, (mat, title) in zip(axes, ((M_sym, "MAS (mean of both directions)"), (sim["cka"], "linear CKA"), (sim["rsa"], "RSA (Spearman)"))):
    heat(ax, mat, names, title)
fig.tight_layout()
plotting.save_figure(fig, f"06_mas_cka_rsa_{fig_tag}")
iu = np.triu_indices(len(names), 1)
pairs_tbl = pd.DataFrame({"a": [names[i] for i in iu[0]], "b": [names[j] for j in iu[1]], "mas": M_sym[iu],
                          "cka": sim["cka"][iu], "rsa": sim["rsa"][iu]})
rho_cka = spearmanr(pairs_tbl.mas, pairs_tbl.cka).statistic if len(pairs_tbl) > 2 else float("nan")
rho_rsa = spearmanr(pairs_tbl.mas, pairs_tbl.rsa).statistic if len(pairs_tbl) > 2 else float("nan")
print(f"rank correlation over network pairs: MAS with CKA {rho_cka:.2f}, MAS with RSA {rho_rsa:.2f}")
pairs_tbl.round(3)

# %% [markdown]
# ## 4. How many dimensions does the shared count need?
# Two networks at a time, one search per subspace size, each under the same rule and cap; the
# cross-network IIA is the mean of the two cross directions (changed test pairs). Between
# architectures the raw states differ in scale (section 2), so each pair is searched on raw
# states and, with `SWEEP_ZSCORED`, on z-scored ones: a size that suffices only once scales
# match is a size the count needs, not one the rotation can afford.

# %%
def first_of(arch_prefix, skip=None):
    return next((n for n in nets if n.name.split(":")[0].startswith(arch_prefix) and n is not skip), None)


g0 = first_of("gru") or nets[0]
partners = {"GRU-GRU": first_of("gru", skip=g0), "GRU-LSTM": first_of("lstm"), "GRU-Transformer": first_of("transformer")}
partners = {k: v for k, v in partners.items() if v is not None and v is not g0}
vs_units, sweep_rows = {}, []
for pair, other in partners.items():
    for zscored in ((False, True) if SWEEP_ZSCORED else (False,)):
        label = f"{pair}, {'z-scored' if zscored else 'raw'}"
        vs_units[label] = {}
        for k in units:
            if k > min(g0.width, other.width):
                continue
            r = mas.run_mas([g0, other], sweep_cfg, progress=False, store=USE_STORE, n_units=k, normalise=zscored)
            t = r.table.set_index(["source", "target"])
            cross = [t.loc[(g0.name, other.name)], t.loc[(other.name, g0.name)]]
            vs_units[label][k] = float(np.mean([c.iia_changed_test for c in cross]))
            sweep_rows.append({"pair": pair, "a": g0.name, "b": other.name, "states": "z-scored" if zscored else "raw", "n_units": k,
                               "cross_iia_changed": vs_units[label][k], "a -> b": cross[0].iia_changed_test,
                               "b -> a": cross[1].iia_changed_test, "control": float(np.mean([c.initial_iia_changed_test for c in cross])),
                               "steps": r.metrics["steps"], "converged": r.metrics["converged"]})
            converged_mark(r, f"{label} {k} dims")
fig = plotting.plot_iia_vs_units(vs_units, title=f"cross-network count IIA (changed pairs) against subspace size, at most {sweep_steps} steps each")
fig.axes[0].set_ylabel("cross-network IIA (changed pairs)")
plotting.save_figure(fig, f"06_mas_iia_vs_units_{fig_tag}")
pd.DataFrame(sweep_rows).round(3)

# %% [markdown]
# ### Why counts do not pass into the LSTM
# A rotation keeps lengths. A GRU's state is bounded (|h| <= 1), while an LSTM's state holds
# its cell state, which is not; if the LSTM keeps its count at a larger scale, no rotation
# can write a GRU's count into it at the scale it needs. Two ways round it: a general
# invertible linear map per network (`alignment="linear"`, which can rescale; capped at
# three times the steps) and rotations on z-scored states (`normalise=True`, as above). The
# same two networks, each way:

# %%
scale_rows, linear_pair = [], None
lstm_net = first_of("lstm")
for n in nets:
    H = symlib.natural_states(n.model, task, "up_down", n_trials=100 if smoke else 400, seed=SEED, site=n.site)["H"]
    scale_rows.append({"network": n.name, "largest |state| coordinate": float(np.abs(H).max()), "mean coordinate sd": float(H.std(0).mean())})
if lstm_net is not None and lstm_net is not g0:
    lin = mas.run_mas([g0, lstm_net], sweep_cfg, progress=True, store=USE_STORE, alignment="linear", max_steps=3 * sweep_steps)
    rot = mas.run_mas([g0, lstm_net], sweep_cfg, progress=False, store=USE_STORE, n_units=n_units)
    zs = mas.run_mas([g0, lstm_net], sweep_cfg, progress=False, store=USE_STORE, n_units=n_units, normalise=True)
    linear_pair = rot.table[["source", "target", "iia_changed_test"]].rename(
        columns={"iia_changed_test": f"rotation, {rot.metrics['steps']} steps{converged_mark(rot, 'rotation')}"})
    linear_pair[f"linear, {lin.metrics['steps']} steps{converged_mark(lin, 'linear')}"] = lin.table.iia_changed_test.to_numpy()
    linear_pair["control (linear, untrained)"] = lin.table.initial_iia_changed_test.to_numpy()
    linear_pair[f"rotation on z-scored states, {zs.metrics['steps']} steps{converged_mark(zs, 'z-scored')}"] = zs.table.iia_changed_test.to_numpy()
    print(linear_pair.round(3).to_string(index=False))
pd.DataFrame(scale_rows).round(3)

# %% [markdown]
# ## 5. Model stitching
# The baseline that asks the most of a map and the least of a variable: the target's whole
# state is replaced by an affine map of the source's state (its own state discarded), trained
# on the target's behaviour. Its pairs swap every program variable (count and phase), the only
# counterfactual a whole-state swap can follow; it shows how much *all* of one network's state
# can stand in for another's, not where a count lives.

# %%
stitch_dirs = [(g0.name, o.name) for o in partners.values()] + [(o.name, g0.name) for o in partners.values()]
stitch = mas.run_stitching(nets, sweep_cfg, progress=True, store=USE_STORE, directions=stitch_dirs)
print(f"stitching: {stitch.metrics['steps']} steps{converged_mark(stitch, 'stitching') or ', converged'}")
S = stitch.matrix("iia_changed_test")
st_tbl = stitch.table[["source", "target", "iia_changed_test", "iia_test", "initial_iia_changed_test"]].copy()
st_tbl["mas_count_iia_changed"] = [M[names.index(s), names.index(t)] for s, t in zip(st_tbl.source, st_tbl.target)]
st_tbl.round(3)

# %% [markdown]
# ## 6. Aligning a network no behaviour flows through: the counterfactual-latent loss
# Suppose network B can be read but not run forward from an edited state. MAS can still
# align it: the directions *into* B learn only from the counterfactual-latent (CL) loss,
# which pulls B's intervened state toward a natural state of B whose Up-Down state (count,
# phase, demo count) is the counterfactual one, `0.5 * (MSE + (1 - cos))`. The directions
# into A learn from A's behaviour as before. Then B's behaviour is *tested*: how much of the
# behavioural MAS IIA into B does the CL loss alone recover?

# %%
A, B = nets[0], nets[1]
cl_res = mas.run_mas([A, B], sweep_cfg, progress=True, store=USE_STORE, directions=[(A.name, A.name), (B.name, A.name)],
                     cl_directions=[(A.name, B.name), (B.name, B.name)])
beh_res = mas.run_mas([A, B], sweep_cfg, progress=False, store=USE_STORE)
print(f"CL search: {cl_res.metrics['steps']} steps{converged_mark(cl_res, 'CL') or ', converged'}; "
      f"behavioural: {beh_res.metrics['steps']} steps{converged_mark(beh_res, 'behavioural') or ', converged'}")
tc, tb = cl_res.table.set_index(["source", "target"]), beh_res.table.set_index(["source", "target"])
cl_rows = []
for d in [(A.name, B.name), (B.name, B.name)]:
    cl_rows.append({"direction": f"{d[0]} -> {d[1]}", "behavioural MAS": tb.loc[d, "iia_changed_test"], "CL only": tc.loc[d, "iia_changed_test"],
                    "control": tc.loc[d, "initial_iia_changed_test"], "pairs with a natural state": tc.loc[d, "cl_matched"]})
cl_tbl = pd.DataFrame(cl_rows)
cl_tbl["recovered"] = cl_tbl["CL only"] / cl_tbl["behavioural MAS"]
cl_tbl.round(3)

# %% [markdown]
# ## 7. Across tasks
# A GRU trained on another task (its own vocabulary) and the first GRU on MultiObject: the
# pairs take each network's trials from its own task, and the count swapped is read by the
# source's program and written by the target's. A shared count makes the swap work even
# though the two networks never saw the same sequence.

# %%
cross = None
if CROSS_TASK:
    other_task = symlib.make_task(CROSS_TASK)
    run_x = symlib.load_or_train(CROSS_TASK, "gru", SEED, device=DEVICE, progress=True, **train_kw)
    xnet = mas.MASNetwork(f"gru:{SEED} ({CROSS_TASK})", run_x.model, other_task)
    cross = mas.run_mas([g0, xnet], sweep_cfg, progress=True, store=USE_STORE)
    converged_mark(cross, "cross-task")
    print(f"{xnet.name}: trial accuracy {run_x.summary['trial_acc_train']:.3f}")
    print(cross.table[["source", "target", "iia_changed_test", "iia_test", "initial_iia_changed_test"]].round(3).to_string(index=False))
else:
    print("CROSS_TASK is empty: no cross-task alignment")

# %% [markdown]
# ## 8. What MAS shows here
# Computed from this run of the chapter.

# %%
off = ~np.eye(len(names), dtype=bool)
kind = [n.split(":")[0] for n in names]
grp = lambda f: np.array([M[i, j] for i in range(len(names)) for j in range(len(names)) if i != j and f(kind[i], kind[j])])
gru_gru = grp(lambda a, b: a == b == "gru")
lines_out = [f"- Each network into itself, in the joint search: {', '.join(f'{n} {M[i, i]:.3f}' for i, n in enumerate(names))}; "
             f"searched alone: {', '.join(f'{n} {alone_diag[n]:.3f}' for n in names)}; untrained alignments at most {np.nanmax(C):.3f}."]
worst = max(names, key=lambda n: alone_diag[n] - M[names.index(n), names.index(n)])
if alone_diag[worst] - M[names.index(worst), names.index(worst)] > 0.2:
    w = names.index(worst)
    lines_out.append(f"- Sharing costs {worst} most: {alone_diag[worst]:.3f} alone, {M[w, w]:.3f} in the joint search, where it takes "
                     f"counts from the others at {np.nanmean(np.delete(M[:, w], w)):.3f} and gives them at {np.nanmean(np.delete(M[w], w)):.3f}: "
                     f"within this budget its one rotation does not manage both to swap its own count and to accept the others'.")
if len(gru_gru):
    ci = mean_ci(gru_gru)
    lines_out.append(f"- GRU to GRU across seeds: {format_ci(ci['mean'], ci['lo'], ci['hi'], 3, ci['n'])} over {len(gru_gru)} directions.")
grp_n = lambda f: np.array([M_norm[i, j] for i in range(len(names)) for j in range(len(names)) if i != j and f(kind[i], kind[j])])
for a, b in (("gru", "lstm"), ("gru", "transformer"), ("lstm", "transformer")):
    v, vn = grp(lambda x, y: {x, y} == {a, b}), grp_n(lambda x, y: {x, y} == {a, b})
    if len(v):
        lines_out.append(f"- {a.upper()} and {b.capitalize() if b == 'transformer' else b.upper()}: mean cross IIA {v.mean():.3f} "
                         f"(range {v.min():.3f}-{v.max():.3f}) on raw states, {vn.mean():.3f} ({vn.min():.3f}-{vn.max():.3f}) z-scored.")
lines_out.append(f"- Joint searches: raw states {res.metrics['steps']} steps, {'converged' if res.metrics.get('converged') else 'not converged (cap)'}; "
                 f"z-scored {res_norm.metrics['steps']} steps, {'converged' if res_norm.metrics.get('converged') else 'not converged (cap)'}.")
for label, pts in vs_units.items():
    if pts:
        best = max(pts.values())
        enough = min((k for k, v in pts.items() if v >= 0.9 * best), default=None)
        pair, states = label.split(", ")
        lines_out.append(f"- {pair}: cross IIA on {states} states {', '.join(f'{k} dims {v:.2f}' for k, v in sorted(pts.items()))}; "
                         f"{enough} dims reach 90% of the best.")
tf_i = [i for i, k in enumerate(kind) if k.startswith("transformer")]
gru_i = [i for i, k in enumerate(kind) if k == "gru"]
if tf_i and gru_i:
    i, j = gru_i[0], tf_i[0]
    lines_out.append(f"- {names[i]} and {names[j]}: CKA {sim['cka'][i, j]:.2f}, RSA {sim['rsa'][i, j]:.2f}, "
                     f"MAS {M_sym[i, j]:.2f} (changed pairs, both directions).")
lines_out.append(f"- Rank correlation over network pairs: MAS with CKA {rho_cka:.2f}, with RSA {rho_rsa:.2f}.")
if linear_pair is not None:
    lp = linear_pair.set_index(["source", "target"])
    into = lp.loc[(g0.name, lstm_net.name)]
    lines_out.append(f"- {g0.name} -> {lstm_net.name}: {into.iloc[0]:.3f} with rotations, {into.iloc[1]:.3f} with linear maps, "
                     f"{into.iloc[3]:.3f} with rotations on z-scored states "
                     f"({lstm_net.name} into itself {lp.loc[(lstm_net.name, lstm_net.name)].iloc[1]:.3f} linear, "
                     f"{lp.loc[(lstm_net.name, lstm_net.name)].iloc[3]:.3f} z-scored); largest state coordinate "
                     + ", ".join(f"{r['network']} {r['largest |state| coordinate']:.1f}" for r in scale_rows) + ".")
lines_out.append(f"- Stitching (whole raw state, count and phase pairs): {', '.join(f'{r.source} -> {r.target} {r.iia_changed_test:.2f}' for r in stitch.table.itertuples())}.")
lines_out.append(f"- CL loss alone into {B.name}: " + "; ".join(
    f"{r['direction']} {r['CL only']:.3f} against {r['behavioural MAS']:.3f} behavioural ({r['recovered']:.0%})"
    for r in cl_tbl.to_dict("records")) + ".")
if cross is not None:
    lines_out.append(f"- Across tasks ({CROSS_TASK} GRU with {g0.name}): "
                     + ", ".join(f"{r.source} -> {r.target} {r.iia_changed_test:.3f}" for r in cross.table.itertuples() if r.source != r.target) + ".")
capped = [what for what, r in sweep_runs if not r.metrics["converged"]]
lines_out.append(f"- Budget: joint searches capped at {max_steps} steps, the others at {sweep_steps}; "
                 f"{len(sweep_runs) - len(capped)} of {len(sweep_runs)} other searches converged"
                 + (f"; capped (illustrations, not findings): {', '.join(capped)}." if capped else "."))
print("\n".join(lines_out))

# %% [markdown]
# ### The full run, at convergence
# The chapter at a larger size (the seed-0 GRU, LSTM and Transformer, every search to
# convergence), as committed in `results/mas/` by `make mas-full` (the book's results page,
# docs/results.md, prints the same block). Where this run is smaller or stops its searches earlier, read its numbers above as an
# illustration and these as the finding.

# %%
from IPython.display import Markdown

from symlib.analyses.findings import full_run

Markdown(full_run("mas"))


# %%
def as_list(X):
    return [[None if np.isnan(v) else float(v) for v in row] for row in np.asarray(X, dtype=float)]


symlib.write_results(RESULTS_PATH, {
    "names": names,
    "mas_iia": as_list(M),
    "mas_iia_normalised": as_list(M_norm),
    "mas_iia_test": as_list(res.matrix("iia_test")),
    "mas_control": as_list(C),
    "mas_control_normalised": as_list(C_norm),
    "alone_iia": [alone_diag[n] for n in names],
    "cka": as_list(sim["cka"]),
    "rsa": as_list(sim["rsa"]),
    "stitch_iia": as_list(S),
    "cl_iia": {r["direction"]: {k: r[k] for k in ("behavioural MAS", "CL only", "control", "recovered", "pairs with a natural state")}
               for r in cl_tbl.to_dict("records")},
    "mas_iia_vs_units": {label: {str(k): v for k, v in pts.items()} for label, pts in vs_units.items()},
    "linear_pair": None if linear_pair is None else linear_pair.to_dict("records"),
    "state_scale": scale_rows,
    "cross_task": None if cross is None else {"task": CROSS_TASK, "table": cross.table.to_dict("records")},
    "rank_correlation": {"cka": rho_cka, "rsa": rho_rsa},
    "search": {"steps": res.metrics["steps"], "stopped_because": res.metrics["stopped_because"], "converged": res.metrics["converged"]},
    "search_normalised": {"steps": res_norm.metrics["steps"], "stopped_because": res_norm.metrics["stopped_because"],
                          "converged": res_norm.metrics["converged"]},
    "sweep_searches": [{"what": what, "steps": r.metrics["steps"], "converged": r.metrics["converged"]} for what, r in sweep_runs],
    "summary": lines_out,
    "budget": {"max_steps": max_steps, "sweep_steps": sweep_steps, "plateau_steps": base.plateau_steps, "plateau_tol": base.plateau_tol},
    "notebook_seconds": round(time.perf_counter() - t_start, 1),
    "torch_threads": torch.get_num_threads(),
})
