# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Your own network, and HuggingFace models
#
# - **What it shows:** how to bring a network symlib did not build. A plain PyTorch module,
#   written here without any symlib code, and a small GPT-2 built by HuggingFace
#   `transformers` from a config (no weights downloaded) each learn MultiObject with the
#   book's training loop, get a DAS search with its controls, and are compared with a book
#   GRU through Model Alignment Search. Also: what symlib needs from your network, and the
#   messages you get when it does not fit.
# - **Runtime (2-core CPU, default size):** about 3 minutes; the test suite runs it at a tiny
#   size in well under a minute. Trained networks are kept in `data/runs/` and searches in
#   `data/das_store`, so a rerun costs seconds.
# - **Needs:** the HuggingFace part needs the optional extra (`pip install "symlib[hf]"`,
#   which `make book` installs); without it that part is skipped with a message.

# %% tags=["parameters"]
OWN_STEPS = 400  # training steps (at most) for your own module
HF_FAMILY = "gpt2"  # gpt2 or llama: the HuggingFace architecture, built from a config
HF_LAYER = 0  # which block's output (the residual stream after it) to intervene on; -1: the last
HF_STEPS = 400  # training steps (at most) for the HuggingFace model
D_MODEL = 64  # width of both networks
LR = 2e-3  # learning rate of both (the book's networks use 5e-4 over thousands of steps)
N_UNITS = 16  # dims of each aligned count subspace (DAS and MAS)
DAS_STEPS = 300  # steps of the DAS search on your module (its learned controls get the same)
HF_DAS_STEPS = 100  # ... and on the HuggingFace model, whose steps cost about 6x more on a CPU
N_TRAIN = 2000  # counterfactual training pairs of each search (validation 500, test 1000)
MAS_STEPS = 300  # steps of the joint MAS search
BOOK_NETWORK = "gru:0"  # the book network (arch:seed, chapter 02's recipe) to compare with; "" skips MAS
SEED = 0  # seed of the networks' weights, the training data and the counterfactual pairs
USE_STORE = True  # reuse networks in data/runs and searches in data/das_store
SMOKE = False  # tiny run for the test suite; the test suite also sets SYMLIB_SMOKE to 1
DEVICE = "auto"  # auto (CUDA when present), cpu or cuda
RESULTS_PATH = ""  # path for this notebook's key metrics as JSON; empty: write nothing

# %%
import importlib.util
import shutil
import time
from dataclasses import replace

import pandas as pd
import torch
import torch.nn as nn

import symlib
from symlib.intervene import mas
from symlib.book import plotting
from symlib.analyses.findings import FINDINGS_TRAIN

t_start = time.perf_counter()
smoke = symlib.smoke_mode(SMOKE)
# every check runs before anything is trained or written (symlib/analyses/params.py): each value, a HuggingFace
# block the model has, subspaces no wider than the networks, BOOK_NETWORK as arch:seed
checked = symlib.params.check_notebook("07_your_own_model", globals())
book_spec = checked["BOOK_NETWORK"]  # (arch, seed), or None: no MAS
have_hf = importlib.util.find_spec("transformers") is not None
device = symlib.resolve_device(DEVICE)
task = symlib.make_task("multiobject")
own_smoke = symlib.params.SMOKE_OWN_MODEL  # the test suite's tiny networks and searches
d_model = own_smoke["d_model"] if smoke else D_MODEL
n_units = symlib.params.SMOKE_UNITS if smoke else N_UNITS
train_size = own_smoke["train"] if smoke else dict(n_eval_trials=200, eval_every=25)
own_steps, hf_steps = (own_smoke["steps"], own_smoke["steps"]) if smoke else (OWN_STEPS, HF_STEPS)
das_size = (dict(symlib.params.SMOKE_MAS) if smoke
            else dict(n_train=N_TRAIN, n_val=500, n_test=1_000, eval_every=25, max_steps=DAS_STEPS))
das_cfg = symlib.DASConfig(program="up_down", variable="count", n_units=n_units, seed=SEED, patience=4, **das_size)
hf_das_cfg = replace(das_cfg, max_steps=das_cfg.max_steps if smoke else HF_DAS_STEPS)
runs = symlib.runs_dir() / "07_your_own_model"
if not USE_STORE:
    shutil.rmtree(runs, ignore_errors=True)
print(f"device {device}; networks {d_model} wide; DAS {das_cfg.max_steps} / {hf_das_cfg.max_steps} steps, {n_units} dims;"
      f" HuggingFace {'available' if have_hf else 'NOT installed: that part is skipped'}")

# %% [markdown]
# ## 1. What symlib needs from your network
# Three things, and nothing else:
#
# 1. **A forward pass from tokens to logits**: `tokens` of shape (batch, length), integer
#    ids of the task's vocabulary, to `logits` of shape (batch, length, vocab), position *t*
#    predicting token *t*+1. Causal: position *t* may not look at later tokens.
# 2. **A site**: the name of the submodule whose output holds the state to intervene on
#    (`model.named_modules()` lists them).
# 3. **Where time is** in that output. For `nn.GRU`, `nn.LSTM` and `nn.RNN` symlib reads it
#    off `batch_first` and intervenes on the recurrent state itself, so a swapped count flows on
#    through the recurrence. Any other module's output must be (batch, length, d) with time on
#    the axis you give as `time_dim`; the output at the chosen position is replaced.
#
# Here is a network written the way you would write it, with no symlib in it: an embedding, a
# GRU and a read-out.

# %%
class MyCounter(nn.Module):
    def __init__(self, vocab_size: int, d: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d)
        self.rnn = nn.GRU(d, d, batch_first=True)
        self.readout = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, vocab_size))

    def forward(self, tokens):
        h, _ = self.rnn(self.embed(tokens))
        return self.readout(h)


torch.manual_seed(SEED)
own = symlib.wrap_model(MyCounter(task.vocab_size, d_model), site="rnn")
print(f"wrapped {own.kind} at site {own.site_name!r}: state of {own.state_size()} numbers per position, time on axis {own.time_dim}")

# %% [markdown]
# ### When a network does not fit
# symlib checks what it can when you wrap a network and the rest on the first pass, and says
# what is wrong in words rather than failing later with a shape error. Three common cases: a
# site whose output has no time axis (here a module that averages over time), a bidirectional
# GRU (its state at step *t* already depends on later tokens) and an LSTM with `proj_size`
# (its `h` and `c` differ in width).

# %%
class MeanOverTime(nn.Module):
    def forward(self, h):
        return h.mean(1)


class PooledNet(MyCounter):
    def __init__(self, vocab_size, d):
        super().__init__(vocab_size, d)
        self.pool = MeanOverTime()

    def forward(self, tokens):
        h, _ = self.rnn(self.embed(tokens))
        return self.readout(h + self.pool(h)[:, None])


errors = {}
attempts = {
    "a site with no time axis": lambda: symlib.wrap_model(PooledNet(task.vocab_size, 8), site="pool", time_dim=1).state_size(),
    "a bidirectional GRU": lambda: symlib.wrap_model(nn.Sequential(nn.GRU(8, 8, batch_first=True, bidirectional=True)), site="0"),
    "an LSTM with proj_size": lambda: symlib.wrap_model(nn.Sequential(nn.LSTM(8, 8, proj_size=4)), site="0"),
    "a site that is not there": lambda: symlib.wrap_model(MyCounter(task.vocab_size, 8), site="gru"),
}
for what, attempt in attempts.items():
    try:
        attempt()
        errors[what] = None
    except ValueError as e:
        errors[what] = str(e)
    print(f"{what}:\n    {errors[what]}\n")
assert all(errors.values()), "each misfit must be refused with a message"

# %% [markdown]
# ## 2. Train it with the book's loop
# `symlib.train(model=...)` trains any wrapped network on a task with the book's recipe (Adam,
# warm-up, trials of the training counts, evaluation on fresh trials of training, held-out and
# out-of-range counts). `arch` picks the recipe; here we feed the true tokens at the response
# positions (`response_input="teacher"`), which is faster than the book's free running for a
# module symlib cannot step through itself. With `run_dir` the run is kept and a rerun resumes
# it.

# %%
own_run = symlib.train(task="multiobject", arch="gru", model=own, response_input="teacher", seed=SEED,
                       max_steps=own_steps, run_dir=runs / f"own_gru-d{d_model}-s{SEED}", device=DEVICE,
                       lr=LR, patience=2, **train_size)
own_model = own_run.model.eval()
test_trials = task.sample(1000 if not smoke else 128, "train", torch.Generator().manual_seed(SEED + 99), unk_p=0.0)
heldout_trials = task.sample(1000 if not smoke else 128, "heldout", torch.Generator().manual_seed(SEED + 98), unk_p=0.0)
own_acc = {"train counts": symlib.evaluate(own_model, test_trials)["trial_acc"],
           "held-out counts": symlib.evaluate(own_model, heldout_trials)["trial_acc"]}
print(f"your module: {own_run.summary['steps']} steps; trial accuracy on fresh trials", {k: round(v, 3) for k, v in own_acc.items()})

# %% [markdown]
# ## 3. A HuggingFace model from a config
# `symlib.networks.hf.tiny_gpt2(task)` builds a `GPT2LMHeadModel` with the task's 9-token vocabulary
# from a `GPT2Config` (random weights; nothing is downloaded); `symlib.networks.hf.tiny_llama` does the
# same for Llama. Any causal LM you build or load from local files works the same way:
# `symlib.networks.hf.wrap_hf(model, layer=k)` (or `site="transformer.h.0"`) puts it behind the book's
# interface at the residual stream after block *k*, and unwraps the output object into logits.
# It trains with the book's Transformer recipe (teacher forcing and void tokens).

# %%
hf_model, hf_acc, hf_run = None, None, None
if have_hf:
    import symlib.networks.hf

    net = symlib.networks.hf.tiny_hf(HF_FAMILY, task, d_model=d_model, n_layer=symlib.params.HF_BLOCKS,
                            n_head=4 if d_model % 4 == 0 else 1, seed=SEED)
    print(f"{type(net).__name__}: {sum(p.numel() for p in net.parameters()):,} parameters; blocks {symlib.networks.hf.block_names(net)}")
    hf = symlib.networks.hf.wrap_hf(net, layer=HF_LAYER)
    hf_run = symlib.train(task="multiobject", arch="transformer", model=hf, seed=SEED, max_steps=hf_steps,
                          run_dir=runs / f"{HF_FAMILY}-d{d_model}-s{SEED}", device=DEVICE, lr=LR, patience=2, **train_size)
    hf_model = hf_run.model.eval()
    hf_acc = {"train counts": symlib.evaluate(hf_model, test_trials)["trial_acc"],
              "held-out counts": symlib.evaluate(hf_model, heldout_trials)["trial_acc"]}
    print(f"{HF_FAMILY} at {hf.site_name}: {hf_run.summary['steps']} steps; trial accuracy on fresh trials",
          {k: round(v, 3) for k, v in hf_acc.items()})
else:
    print('transformers is not installed: pip install "symlib[hf]" to run this part')

# %% [markdown]
# Training curves of both (trial accuracy on fresh trials of the training counts):

# %%
fig, ax = plotting.plt.subplots(figsize=(6, 3))
for label, run in (("your module (GRU)", own_run), (f"{HF_FAMILY} (HuggingFace)", hf_run)):
    if run is not None:
        ax.plot([h["step"] for h in run.history], [h["trial_acc_train"] for h in run.history], marker=".", label=label)
ax.set(xlabel="training step", ylabel="trial accuracy", ylim=(-0.02, 1.02), title="Learning MultiObject")
ax.legend()
plotting.save_figure(fig, f"07_training_s{SEED}")

# %% [markdown]
# ## 4. DAS on both, with controls
# The same search as chapter 03: is there a subspace of the state at one position that holds
# Up-Down's count, so that swapping it between trials changes the network's answer the way the
# program says? Reported on test pairs, raw and on **changed** pairs (those whose answer the
# swap changes), beside the controls on the same pairs: the alignment before training, the
# no-swap baseline, wrong labels, and a wrong program. The GPT-2's search gets fewer steps
# (`HF_DAS_STEPS`), as each costs about six times your GRU's on a CPU; its number is what that
# budget found, not a proof that nothing is there.

# %%
def das_summary(model, cfg):
    r = symlib.run_das_with_controls(model, task, cfg, progress=True, store=USE_STORE)
    m = r.metrics
    return r, {"iia_test": m["iia_test"], "iia_changed_test": m["iia_changed_test"],
               "controls": {k: {"iia_test": v.get("iia_test"), "iia_changed_test": v.get("iia_changed_test")}
                            for k, v in m["controls"].items()},
               "control_max_changed_test": m["control_max_changed_test"], "steps": m.get("steps")}


own_res, own_das = das_summary(own_model, das_cfg)
hf_res, hf_das = das_summary(hf_model, hf_das_cfg) if hf_model is not None else (None, None)
rows = []
for label, d in (("your module (GRU)", own_das), (f"{HF_FAMILY} block {HF_LAYER}", hf_das)):
    if d is not None:
        rows.append({"network": label, "DAS": d["iia_changed_test"],
                     **{f"control: {k.replace('_', ' ')}": v["iia_changed_test"] for k, v in d["controls"].items()}})
table = pd.DataFrame(rows).set_index("network")
print("IIA on changed test pairs (raw IIA in the metrics JSON):")
table.round(3)

# %%
fig = plotting.plot_iia_bars({r["network"]: {k: v for k, v in r.items() if k != "network"} for r in rows},
                             title="IIA on changed test pairs, Up-Down count, each with its own controls")
plotting.save_figure(fig, f"07_das_s{SEED}")

# %% [markdown]
# ## 5. The same count as a book network? Model Alignment Search
# MAS (chapter 06) learns one alignment per network and swaps the count *between* them: read
# from your module, written into the book's GRU, and so on. Widths may differ; each network
# keeps its own site.

# %%
mas_res = None
if book_spec is not None:
    arch, bseed = book_spec
    smoke_train = symlib.params.SMOKE_TRAIN_DYNAMICS if smoke else {}
    book = symlib.load_or_train("multiobject", arch, bseed, device=DEVICE, **{**FINDINGS_TRAIN.get(arch, {}), **smoke_train})
    nets = [mas.MASNetwork(BOOK_NETWORK, book.model, task), mas.MASNetwork("your module", own_model, task)]
    if hf_model is not None:
        nets.append(mas.MASNetwork(HF_FAMILY, hf_model, task))
    mas_steps = symlib.params.SMOKE_MAS["max_steps"] if smoke else MAS_STEPS
    mas_cfg = mas.MASConfig(n_units=n_units, seed=SEED, patience=4, **{**das_size, "max_steps": mas_steps})
    mas_res = mas.run_mas(nets, mas_cfg, progress=True, store=USE_STORE)
    M, C = (pd.DataFrame(mas_res.matrix(col), index=mas_res.names, columns=mas_res.names)
            for col in ("iia_changed_test", "initial_iia_changed_test"))
    fig = plotting.plot_iia_matrix(mas_res.names, mas_res.names, M.values, xlabel="target", ylabel="source", origin="upper",
                                   annotate=True, title="MAS: IIA on changed test pairs (rows: source, columns: target)")
    plotting.save_figure(fig, f"07_mas_s{SEED}")
    print("IIA on changed test pairs (rows: source, columns: target):")
    display(M.round(3))
    print("control (untrained alignments), same pairs:")
    display(C.round(3))
    own_self = float(M.loc[BOOK_NETWORK, BOOK_NETWORK])
    print(f"The book network into itself: {own_self:.3f} here, where one alignment per network serves every direction "
          f"and the joint search ran {mas_res.metrics['steps']} steps ({mas_res.metrics['stopped_because']}); "
          "chapter 03 searches it alone, to convergence, and chapter 06 runs MAS to convergence.")
else:
    print("MAS skipped (BOOK_NETWORK is empty)")

# %% [markdown]
# ## Summary
# The cell below states what this run found, from its own numbers.

# %%
def say(label, acc, das):
    if das is None:
        return f"- {label}: not run."
    gap = das["iia_changed_test"] - (das["control_max_changed_test"] or 0)
    verdict = "holds a swappable count" if das["iia_changed_test"] >= 0.5 and gap >= 0.2 else "shows no swappable count at this site"
    return (f"- {label}: trial accuracy {acc['train counts']:.3f} (held-out counts {acc['held-out counts']:.3f}); "
            f"DAS changed-pair IIA {das['iia_changed_test']:.3f} against the best control {das['control_max_changed_test']:.3f}: {verdict}.")


lines = [say("Your module (GRU)", own_acc, own_das), say(f"{HF_FAMILY} at block {HF_LAYER}", hf_acc, hf_das)]
if mas_res is not None:
    off = [(s, t, float(M.loc[s, t])) for s in M.index for t in M.columns if s != t]
    lines.append("- MAS across networks (changed pairs): " + "; ".join(f"{s} -> {t} {v:.2f}" for s, t, v in off) + ".")
print("\n".join(lines))

# %%
symlib.write_results(RESULTS_PATH, {
    "own_trial_acc": own_acc["train counts"], "own_trial_acc_heldout": own_acc["held-out counts"],
    "hf_family": HF_FAMILY if hf_model is not None else None, "hf_layer": HF_LAYER,
    "hf_trial_acc": hf_acc["train counts"] if hf_acc else None,
    "hf_trial_acc_heldout": hf_acc["held-out counts"] if hf_acc else None,
    "own_das": own_das, "hf_das": hf_das,
    "mas_iia_changed_test": None if mas_res is None else {s: {t: float(M.loc[s, t]) for t in M.columns} for s in M.index},
    "mas_control_changed_test": None if mas_res is None else {s: {t: float(C.loc[s, t]) for t in C.columns} for s in C.index},
    "train_steps": {"own": own_run.summary["steps"], "hf": hf_run.summary["steps"] if hf_run else None},
    "errors": errors, "device": str(device), "smoke": smoke,
    "notebook_seconds": round(time.perf_counter() - t_start, 1),
})
