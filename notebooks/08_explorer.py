# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · The explorer: swap a count and watch the network follow
#
# - **What it shows:** one intervention at a time, chosen by hand. Pick a target trial and
#   where to stop it, a source trial and where to read it; the count the source holds there
#   is written into the target (through the alignment DAS learned, chapter 03), and the
#   program's counterfactual is shown beside what the network then answers by itself, with
#   both states on the network's learned number line.
# - **Runtime (2-core CPU):** a few seconds when the book has run (chapter 03 stored the
#   alignment this chapter reads); from nothing, the GRU is trained (about a minute) and its
#   alignment searched once (under a minute). A slider move is answered in well under 200 ms.
# - **GPU:** not needed. The explorer needs a live kernel to move; an executed copy shows it
#   at the state it was saved in.

# %% tags=["parameters"]
ARCH = "gru"  # the network opened first: gru, lstm, transformer, transformer_nope
TASK = "multiobject"  # multiobject, singleobject, sameobject, multiobject_mod4, multiobject_round3
SEED = 0  # seed of the network (as in notebook 02) and of the search (as in notebook 03)
PROGRAM = "up_down"  # the program opened first: up_down, up_up or ctx_distr
VARIABLE = "count"  # the variable opened first: count, phase, count_phase, full, null, or a program variable
USE_STORE = True  # read the alignment from data/das_store (chapter 03's search), searching once if it is absent
SMOKE = False  # tiny run for the test suite; the test suite also sets SYMLIB_SMOKE to 1
DEVICE = "auto"  # auto (CUDA when present), cpu or cuda
RESULTS_PATH = ""  # path for this notebook's key metrics as JSON; empty: write nothing

# %%
import time

import symlib
from symlib.book import widgets

t_start = time.perf_counter()
smoke = symlib.smoke_mode(SMOKE)
# every check runs before any network is trained or anything is written (symlib/analyses/params.py): each value,
# and a VARIABLE the PROGRAM has
symlib.params.check_notebook("08_explorer", globals())
# the sizes of notebooks 02 and 03 (smoke: their tiny run), so the book's network and search are reused
train_kw = dict(symlib.params.SMOKE_TRAIN) if smoke else {}
task = symlib.make_task(TASK)
cfg = widgets.explorer_config(PROGRAM, VARIABLE, seed=SEED, smoke=smoke, task=task)
store = symlib.ResultsStore() if USE_STORE else None
cfg

# %% [markdown]
# ## 1. The network and its alignment
# The network is notebook 02's run (trained now if missing). The alignment is the search
# chapter 03 runs by default (orthogonal, 16 dims, the book's step budget), looked up in the
# results store under a key made of the network's weights, the task and the search config:
# in `make book` chapter 03 has stored it, so nothing is searched here. Without it the
# search runs once and is stored for next time.

# %%
run = symlib.load_or_train(TASK, ARCH, SEED, device=DEVICE, **train_kw)
model, name = run.model, run.run_dir.name
found = widgets.stored_alignment(model, task, cfg, store) if store is not None else None
t0 = time.perf_counter()
result = found if found is not None else symlib.run_das(model, task, cfg, store=store if store is not None else False)
search_seconds = 0.0 if found is not None else time.perf_counter() - t0
m = result.metrics
print(f"{name}: trial accuracy {run.summary['best_trial_acc_train']:.3f} (training counts), "
      f"{run.summary['best_trial_acc_heldout']:.3f} (held out)")
print(f"alignment {'found in the results store' if found is not None else f'searched now ({search_seconds:.0f} s)'}: "
      f"IIA {m['iia_test']:.3f} on test pairs, {m['iia_changed_test']:.3f} on the pairs where the swap changes the answer")

# %% [markdown]
# ## 2. The explorer
# The rows, top to bottom: the **target trial** (yellow: where the swap happens, `|` right
# after it), the **source trial** (yellow: where the value is read), the **program**'s
# counterfactual, the **network**'s answer after the swap, and the network's answer without
# it. After the `|`, bold blue tokens are the network's own greedy output, fed back to it
# one by one; grey italic ones are given to it (demo tokens and `T` come from the
# environment, here the program's counterfactual, and are never predicted). Red marks a
# token where network and program differ; an orange underline, a token the swap changed
# in the network's own output. Below, the learned number line: the count read out of the
# aligned subspace for natural states of every count (the ticks), the target's state
# before the swap (○), the source's (▲) and the target's after it (●).
#
# What to try:
# - **The opening view** stops a trial of N = 6 after its 4th demo token (count 4) and writes
#   in the count 9, read after the 9th demo of an N = 9 trial. The program has no demo left
#   to show (its count is past N), so `T` comes at once and it expects 9 responses, not 6.
#   Does the network answer 9 `R`s, although it saw only 4 demos?
# - **Move `source N` and `source: read after token`**: the value written in changes, and so
#   do the number of responses the program expects and, if the network holds the count
#   there, the network's row. On the number line ● jumps onto ▲.
# - **Swap a smaller count during the demos** (say source N = 2): the program then adds
#   demo tokens after the `|` until its count reaches N (grey: given, not predicted), and
#   the network must keep counting from the written value.
# - **Move `target: swap after token` past `T`** into the responses: the program now
#   expects as many *more* responses as the value written in.
# - **Held-out counts** (4, 9, 14, 17) never occurred in training: does the swap still work?
# - **Another variable or program** (`phase`, Up-Up): when the store has no search for it,
#   the button offers one ("search now", with its estimated time), which is then stored.
# - **Another network** (an LSTM, or a Transformer from notebook 02): a Transformer holds
#   no count at one position (chapter 03), and it shows.
# - **Moving `target N` keeps the source trial** (each trial has its own seed), and
#   `demo-token seed` draws other demo tokens for both.

# %%
explorer = widgets.explorer(network=name, program=PROGRAM, variable=VARIABLE, store=store if store is not None else False,
                            alignment=None if store is not None else result.alignment, seed=SEED, smoke=smoke)
explorer

# %% [markdown]
# ## 3. Three views, as text
# The same explorer's views for three slider settings, printed so that a copy without a
# kernel shows them too: the opening view (a demo-phase swap past N), a smaller count
# swapped in during the demos (the program adds demo tokens), and a swap in the response
# phase.

# %%
def show(view: dict) -> dict:
    """Print a view as lines of words, the explanation without its HTML tags."""
    import re
    p = view["target_pos"]
    line = lambda w: " ".join(w[: p + 1]) + " | " + " ".join(w[p + 1:]) if w is not None else "(no alignment)"
    print(re.sub("<[^>]+>", "", view["text"]))
    print("  program (swapped): ", line(view["program_words"]))
    print("  network (swapped): ", line(view["network_words"]), "  <- agrees" if view["agree"] else "  <- differs")
    print("  network (no swap): ", line(view["plain_words"]))
    print()
    return {k: view[k] for k in ("target_value", "source_value", "changed", "agree", "expects")}


views = {
    "opening": dict(widgets.DEFAULT_VIEW),
    "smaller_count_in_demo": dict(target_count=8, target_pos=4, source_count=2, source_pos=1, seed=0),
    "response_phase": dict(target_count=7, target_pos=9, source_count=5, source_pos=4, seed=0),
}
shown = {}
for key, v in views.items():
    explorer.set_view(**v)
    shown[key] = show(explorer.last_view)
explorer.set_view(**widgets.DEFAULT_VIEW)
assert shown["opening"]["changed"] and shown["opening"]["source_value"] != shown["opening"]["target_value"]
assert shown["smaller_count_in_demo"]["expects"]["demos"] > 0

# %% [markdown]
# ## 4. How fast the explorer answers
# A slider move recomputes only what depends on it: trials are drawn once per (count, seed),
# each trial's states at every position once, the network's run without the swap once per
# target trial; a move costs the program's counterfactual, one intervened rollout of the
# network and the HTML. Timed here over ten moves of every slider (the Python side; the
# browser test, `make test-browser`, measures the page).

# %%
timing = explorer.time_updates()
print(f"a slider move: median {timing['median_ms']:.0f} ms, max {timing['max_ms']:.0f} ms over {timing['n']} moves "
      f"({model.kind}, state width {model.state_size()})")

# %%
symlib.write_results(RESULTS_PATH, {
    "network": name, "arch": ARCH, "task": TASK, "program": PROGRAM, "variable": VARIABLE,
    "store_key": store.key(model, task, cfg) if store is not None else None,
    "found_in_store": found is not None, "search_seconds": round(search_seconds, 1),
    "iia_test": m["iia_test"], "iia_changed_test": m["iia_changed_test"],
    "views": shown, "update_ms_median": timing["median_ms"], "update_ms_max": timing["max_ms"],
    "notebook_seconds": round(time.perf_counter() - t_start, 1),
})
