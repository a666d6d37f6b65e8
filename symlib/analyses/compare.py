"""Which program does a network run? Program comparison across tasks and architectures.

Each *cell* of the comparison is one network (architecture, task, seed) and one hypothesis
(program, variable, intervention site), searched with DAS and measured with its controls on
the same test pairs (see ``controls``). ``compare_cell`` runs one cell and returns a flat
dict of numbers, which is what a sweep (``python -m symlib sweep``) collects into a table;
``compare_table`` runs a list of cells in this process (the book's default subset).

Programs are compared on *changed* pairs (those where the swap changes what the program
says should happen): raw IIA ranks hypotheses by how seldom their swaps change anything.
The verdict for a cell (``verdict``) asks for both a high changed-pair IIA and a wide
margin over the best control that can score on changed pairs: the initial alignment, the
wrong-label search and the wrong-program search (``controls.CHANGED_CONTROLS``). The
wrong-program control is the other program's own search (measured in full), so where that
program is also a row of the table the two share one search in the results store.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..utils import check_choice
from ..game.counterfactuals import make_pairs, pairs_from_trials
from ..game.programs import intervention_positions, make_program
from ..game.tasks import Task, make_task, resolve_counts
from ..networks.models import ARCH_NAMES, greedy_rollout
from ..networks.training import evaluate, load_or_train
from ..intervene.controls import CHANGED_CONTROLS, run_das_with_controls
from ..intervene.das import DASConfig
from ..intervene.iia import evaluate_alignment
from ..intervene.store import model_fingerprint
from . import params as params_mod
from .findings import FINDINGS_SEARCH, FINDINGS_TRAIN
from .stats import summarise

#: The comparison's search budget: the findings' budget (every cell; stated in the book and the README),
#: so searches made by ``make findings`` or chapter 03 are reused from the results store.
COMPARE_SEARCH = dict(FINDINGS_SEARCH, n_units=16, alignment="orthogonal")
#: Controls of every cell. The wrong program (Up-Up for Up-Down, Up-Down for the others) is the
#: other program's own search: a table with that program's row finds it in the results store.
COMPARE_CONTROLS: tuple[str, ...] = ("no_swap", "initial", "wrong_labels", "wrong_program")
#: Training overrides per architecture (as in the findings: Transformers capped, best checkpoint used).
COMPARE_TRAIN = FINDINGS_TRAIN
#: Per program, the variables that stand for "the number", "phase" and "both".
PROGRAM_VARIABLES: dict[str, dict[str, tuple[str, ...]]] = {
    "up_down": {"number": ("count",), "phase": ("phase",), "both": ("count_phase",)},
    "up_up": {"number": ("demo_count", "resp_count"), "phase": ("phase",), "both": ("count_phase",)},
    "ctx_distr": {"number": ("count",), "phase": ("phase",), "both": ("count_phase",)},
}
#: A cell "aligns" when changed-pair IIA >= ALIGNED_IIA and beats its best control by >= ALIGNED_MARGIN;
#: "partly" when changed-pair IIA >= PARTLY_IIA with that margin; otherwise "no".
ALIGNED_IIA, PARTLY_IIA, ALIGNED_MARGIN = 0.9, 0.5, 0.5
#: Columns of a comparison row that hold measured values.
VALUE_COLUMNS = ("iia_test", "iia_changed_test", "frac_changed_test", "iia_changed_test_heldout", "control_max_changed_test",
                 "control_max_changed_main", "margin_changed_test") + tuple(
    f"{c}_{k}" for c in COMPARE_CONTROLS for k in ("iia_test", "iia_changed_test", "iia_changed_main"))


def sites_of(arch: str) -> tuple[str, ...]:
    """The intervention sites of an architecture at the book's default size."""
    check_choice("architecture", arch, ARCH_NAMES)
    return params_mod.sites_of(arch)


def validate_params(params: dict) -> None:
    """Check one cell's parameters before anything runs (``symlib.analyses.params``, chapter ``compare_cell``):
    a ``ParamError`` (a ValueError) names each bad parameter, its value and what is allowed.

    Parameters not given take ``compare_cell``'s defaults. Used by ``symlib.book.sweep`` on every
    cell of a grid before the first one starts, and by ``compare_table`` and ``compare_cell``.
    """
    if params.get("alignment") == "boundless":
        raise ValueError("the comparison uses fixed-size alignments; boundless learns its size (chapter 03)")
    values = {**_cell_defaults(), **params}
    if values.get("site") is None:
        values["site"] = ""
    params_mod.check("compare_cell", values, local=False)


def _cell_defaults() -> dict:
    return {n: p.default for n, p in inspect.signature(compare_cell).parameters.items() if p.default is not p.empty}


#: The tiny size of the test suite (``smoke=True``): a small network and short searches (``symlib.analyses.params``).
SMOKE_TRAIN = params_mod.SMOKE_TRAIN
SMOKE_SEARCH = dict(params_mod.SMOKE_SEARCH, n_test_heldout=params_mod.SMOKE_HELDOUT)


def load_network(arch: str, task: str, seed: int, device: str, progress: bool, train_steps: int | None, smoke: bool = False):
    """The network of a cell: ``data/runs/<task>-<arch>-d<width>-s<seed>``, trained first when missing."""
    kw = dict(SMOKE_TRAIN) if smoke else dict(COMPARE_TRAIN.get(arch, {}))
    if train_steps:
        kw["max_steps"] = int(train_steps)
    return load_or_train(task, arch, int(seed), device=device, progress=progress, **kw)


def cell_result(arch: str, task: str, program: str, variable: str, seed: int = 0, site: str = "", n_units: int = 16,
                max_steps: int = COMPARE_SEARCH["max_steps"], n_train: int = COMPARE_SEARCH["n_train"],
                n_val: int = COMPARE_SEARCH["n_val"], n_test: int = COMPARE_SEARCH["n_test"],
                n_test_heldout: int = COMPARE_SEARCH["n_test_heldout"], train_steps: int = 0,
                controls: str = ",".join(COMPARE_CONTROLS), device: str = "auto", store: bool = True, progress: bool = False,
                smoke: bool = False):
    """The network (a ``RunResult``) and the search with its controls (a ``DASResult``) behind one cell.

    With the results store on (the default), a cell already run returns at once, so a chapter
    can read a cell's per-pair rows and alignment after a sweep computed it.
    """
    validate_params(dict(arch=arch, task=task, program=program, variable=variable, seed=seed, site=site, n_units=n_units,
                         max_steps=max_steps, n_train=n_train, n_val=n_val, n_test=n_test, n_test_heldout=n_test_heldout,
                         train_steps=train_steps, controls=controls, device=device, smoke=smoke))
    run = load_network(arch, task, seed, device, progress, train_steps, smoke)
    t = make_task(task)
    # the program's own name for its number variable is searched as "count" (the same pairs and
    # labels), so a search cached under either name is found
    searched = "count" if variable == make_program(program, t).number_variable else variable
    cfg = DASConfig(program=program, variable=searched, site=site or None, n_units=int(n_units), max_steps=int(max_steps),
                    n_train=int(n_train), n_val=int(n_val), n_test=int(n_test), n_test_heldout=int(n_test_heldout),
                    eval_every=COMPARE_SEARCH["eval_every"], alignment=COMPARE_SEARCH["alignment"], seed=int(seed))
    if smoke:
        cfg = replace(cfg, **SMOKE_SEARCH)
    return run, run_das_with_controls(run.model, t, cfg, controls=controls, progress=progress, store=store)


def compare_cell(arch: str = "gru", task: str = "multiobject", program: str = "up_down", variable: str = "count",
                 seed: int = 0, site: str = "", n_units: int = 16, max_steps: int = COMPARE_SEARCH["max_steps"],
                 n_train: int = COMPARE_SEARCH["n_train"], n_val: int = COMPARE_SEARCH["n_val"],
                 n_test: int = COMPARE_SEARCH["n_test"], n_test_heldout: int = COMPARE_SEARCH["n_test_heldout"],
                 train_steps: int = 0, controls: str = ",".join(COMPARE_CONTROLS), device: str = "auto",
                 store: bool = True, progress: bool = False, smoke: bool = False) -> dict:
    """Search one hypothesis on one network, with its controls on the same test pairs.

    The network is loaded from ``data/runs`` (trained first when missing; ``train_steps`` caps
    training, 0: the book's default). Returns a flat dict: the cell's parameters, the
    network's accuracy, ``network`` (a fingerprint of its weights: training is repeatable on one
    machine, not across machines, so cells that ran elsewhere may hold another network of the same
    recipe and seed), ``iia_test``, ``iia_changed_test``, ``frac_changed_test`` (how often a
    swap changes the answer), ``iia_changed_test_heldout``, each control's ``<name>_iia_test``,
    ``<name>_iia_changed_test`` (on its own changed pairs) and ``<name>_iia_changed_main`` (on
    this cell's changed pairs), ``control_max_changed_test`` and ``control_max_changed_main``
    (the best of each over every control that can score on changed pairs, the wrong program
    included), ``margin_changed_test`` (changed-pair IIA minus ``control_max_changed_test``)
    and ``verdict``. ``smoke``: the test suite's tiny network and searches.
    """
    params = dict(arch=arch, task=task, program=program, variable=variable, site=site)
    t0 = time.perf_counter()
    run, res = cell_result(arch, task, program, variable, seed, site, n_units, max_steps, n_train, n_val, n_test,
                           n_test_heldout, train_steps, controls, device, store, progress, smoke)
    m = res.metrics
    row = {**params, "site": site or run.model.default_site, "seed": int(seed), "n_units": int(n_units),
           "max_steps": res.config.max_steps, "network_step": run.summary.get("best_step"),
           "network": model_fingerprint(run.model)[:12],
           "trial_acc_train": run.summary.get("best_trial_acc_train"),
           "trial_acc_heldout": run.summary.get("best_trial_acc_heldout"),
           "iia_test": m.get("iia_test"), "iia_changed_test": m.get("iia_changed_test"),
           "frac_changed_test": m["n_changed_test"] / max(m["n_test"], 1),
           "iia_changed_test_heldout": m.get("iia_changed_test_heldout"),
           "iia_token_test": m.get("iia_token_test"), "steps": m.get("steps"), "stopped_because": m.get("stopped_because"),
           "converged": m.get("converged"),
           "search_seconds": round(time.perf_counter() - t0, 1), "cached": bool(m.get("cached"))}
    for name, c in m["controls"].items():
        if c.get("steps") is not None:  # a learned control: did it converge?
            row[f"{name}_converged"] = c.get("converged")
        row[f"{name}_iia_test"] = c.get("iia_test")
        row[f"{name}_iia_changed_test"] = c.get("iia_changed_test")
        row[f"{name}_iia_changed_main"] = c.get("iia_changed_main")
    row["control_max_changed_test"] = m.get("control_max_changed_test")
    row["control_max_changed_main"] = m.get("control_max_changed_main")
    row["margin_changed_test"] = _margin(row["iia_changed_test"], row["control_max_changed_test"])
    row["verdict"] = verdict(row["iia_changed_test"], row["control_max_changed_test"])
    return row


compare_cell.validate_params = validate_params


def _margin(iia, ctl):
    return None if iia is None or ctl is None else float(iia) - float(ctl)


def verdict(iia_changed: float | None, control_max: float | None) -> str:
    """"aligns", "partly" or "no" for a changed-pair IIA and its best control (see ``ALIGNED_IIA``).

    control_max: the best changed-pair IIA over every control that can score there (the
    initial alignment, wrong labels, the wrong program: ``control_max_changed_test``)."""
    if iia_changed is None or pd.isna(iia_changed):
        return "no"
    margin = float(iia_changed) - (0.0 if control_max is None or pd.isna(control_max) else float(control_max))
    if margin < ALIGNED_MARGIN:
        return "no"
    return "aligns" if iia_changed >= ALIGNED_IIA else ("partly" if iia_changed >= PARTLY_IIA else "no")


def compare_table(cells: list[dict], progress: bool = True, **common) -> pd.DataFrame:
    """Run ``compare_cell`` for every cell (dicts of its parameters) in this process; one row each."""
    for c in cells:
        validate_params({**common, **c})
    rows = []
    for i, c in enumerate(cells):
        if progress:
            print(f"[{i + 1}/{len(cells)}] " + ", ".join(f"{k}={v}" for k, v in c.items()), flush=True)
        rows.append(compare_cell(**{**common, **c}))
    return pd.DataFrame(rows)


def summarise_compare(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% bootstrap interval over seeds per (arch, task, program, variable, site, n_units), with a verdict."""
    df = df[df.get("status", "ok") == "ok"] if "status" in df else df
    cols = [c for c in VALUE_COLUMNS if c in df and df[c].notna().any()]
    if "n_units" not in df:
        df = df.assign(n_units=COMPARE_SEARCH["n_units"])
    df = df.assign(n_units=df.n_units.fillna(COMPARE_SEARCH["n_units"]).astype(int))
    out = summarise(df, by=["arch", "task", "program", "variable", "site", "n_units"], values=cols)
    out["verdict"] = [verdict(a, b) for a, b in zip(out["iia_changed_test"], out.get("control_max_changed_test", [None] * len(out)))]
    return out


def follows(summary: pd.DataFrame) -> pd.DataFrame:
    """Per network (arch, task): the number-variable hypothesis with the best changed-pair margin.

    Only the book's subspace size (16 dims) competes when the table has it.

    Returns one row per (arch, task): ``program``, ``variable``, ``site``, ``iia_changed_test``,
    ``margin_changed_test``, ``verdict`` and ``runner_up`` (the next best program and its
    changed-pair IIA), the evidence for "which program does it follow".
    """
    number = {v for p in PROGRAM_VARIABLES.values() for v in p["number"]}
    summary = summary[summary.variable.isin(number)]
    if "n_units" in summary and (summary.n_units == COMPARE_SEARCH["n_units"]).any():
        summary = summary[summary.n_units == COMPARE_SEARCH["n_units"]]  # one budget: other sizes are a sweep, not a rival
    rows = []
    for (arch, task), g in summary.groupby(["arch", "task"], sort=False):
        g = g.sort_values("margin_changed_test", ascending=False)
        best = g.iloc[0]
        others = g[g.program != best.program]
        runner = f"{others.iloc[0].program} {others.iloc[0].variable}: {others.iloc[0].iia_changed_test:.3f}" if len(others) else "-"
        rows.append({"arch": arch, "task": task, "program": best.program, "variable": best.variable, "site": best.site,
                     "iia_changed_test": best.iia_changed_test, "margin_changed_test": best.margin_changed_test,
                     "verdict": best.verdict, "runner_up": runner, "n_seeds": int(best.n)})
    return pd.DataFrame(rows)


# -- beyond the original: where answers go wrong, attention, counts out of range ----------------

@torch.no_grad()
def accuracy_by_count(model, task: Task, counts="all", n_per_count: int = 200, seed: int = 0) -> pd.DataFrame:
    """Trial accuracy per demo count, and the signed error of the network's own response count.

    The network runs free (its own outputs fed back) from ``T``; ``produced`` is how many
    response tokens it emits before ``E`` (capped at count + 10). Rows: count, trial_acc,
    mean_error (produced - count), frac_short, frac_long.
    """
    counts = resolve_counts(counts)
    g = torch.Generator().manual_seed(seed)
    rows = []
    resp = task.id(task.resp_word)
    for n in counts:
        tr = task.sample(n_per_count, (n,), g, unk_p=0.0)
        acc = evaluate(model, tr)["trial_acc"]
        out = greedy_rollout(model, tr.tokens.to(model.device), tr.task_mask.to(model.device), extra=10).cpu()
        after = torch.arange(out.shape[1])[None, :] > tr.trigger_pos[:, None]
        is_end = (out == task.E) & after
        end = torch.where(is_end.any(1), is_end.float().argmax(1), torch.full((len(tr),), out.shape[1]))
        produced = (((out == resp) & after) & (torch.arange(out.shape[1])[None, :] < end[:, None])).sum(1)
        err = (produced - n).float()
        rows.append({"count": n, "trial_acc": acc, "mean_error": float(err.mean()),
                     "frac_short": float((err < 0).float().mean()), "frac_long": float((err > 0).float().mean())})
    return pd.DataFrame(rows)


@torch.no_grad()
def attention_to_demo(model, task: Task, n_trials: int = 200, counts="train", seed: int = 0) -> pd.DataFrame:
    """Where a Transformer attends from its response positions, per layer and head.

    For every response token (``T`` and each response word, the positions whose next token is
    scored), the share of attention on demo tokens, on earlier response tokens (including
    ``T``) and on ``B``. A context-distributed count spreads attention over the demo tokens; a
    count carried in the residual stream would not need to. Rows: layer, head, to_demo,
    to_response, to_bos, entropy (nats) and spread (entropy of the attention restricted to
    demo tokens, over the log of their number: 1 is uniform over the demo).
    """
    if not hasattr(model, "attention_weights"):
        raise ValueError("attention_to_demo needs a Transformer (a model with attention_weights); "
                         f"got {type(model).__name__}")
    counts = resolve_counts(counts)
    g = torch.Generator().manual_seed(seed)
    tr = task.sample(n_trials, counts, g, unk_p=0.0)
    tokens = tr.tokens.to(model.device)
    was = model.training
    model.eval()
    try:
        atts = model.attention_weights(tokens)
    finally:
        model.train(was)
    L = tokens.shape[1]
    idx = torch.arange(L, device=tokens.device)[None, :]
    demo = (idx > 0) & (idx < tr.trigger_pos.to(tokens.device)[:, None])
    resp_keys = (idx >= tr.trigger_pos.to(tokens.device)[:, None]) & (tokens != 0)
    # queries: T and the response words (their next token is graded); not E, not padding
    query = (idx >= tr.trigger_pos.to(tokens.device)[:, None]) & (idx < tr.lengths.to(tokens.device)[:, None] - 1)
    rows = []
    for layer, att in enumerate(atts):
        a = att.permute(0, 2, 1, 3)[query]  # (n_queries, heads, L)
        qrow = query.nonzero()[:, 0]
        d, r = demo[qrow][:, None, :].float(), resp_keys[qrow][:, None, :].float()
        to_demo, to_resp, to_bos = (a * d).sum(-1), (a * r).sum(-1), a[..., 0]
        ent = -(a.clamp_min(1e-12).log() * a).sum(-1)
        ad = a * d / (a * d).sum(-1, keepdim=True).clamp_min(1e-12)
        nd = d.sum(-1).clamp_min(2)
        spread = -(ad.clamp_min(1e-12).log() * ad).sum(-1) / nd.log()
        for h in range(a.shape[1]):
            rows.append({"layer": layer, "head": h, "to_demo": float(to_demo[:, h].mean()), "to_response": float(to_resp[:, h].mean()),
                         "to_bos": float(to_bos[:, h].mean()), "entropy": float(ent[:, h].mean()), "spread": float(spread[:, h].mean())})
    return pd.DataFrame(rows)


def out_of_range_iia(model, task: Task, align, program: str = "up_down", variable: str = "count", n: int = 500,
                     target_counts="train", source_counts="out_of_range", site: str | None = None, seed: int = 0) -> dict:
    """IIA of a learned alignment when the swapped-in values come from other counts.

    Targets are trials on ``target_counts`` and sources on ``source_counts`` (e.g. a source
    whose count lies beyond training, 21..30): does the aligned subspace carry a count the
    network never saw? Returns ``iia``, ``iia_changed``, ``n`` and ``n_changed``, and the
    network's own trial accuracy on ``source_counts`` for reference.
    """
    prog = make_program(program, task)
    g = torch.Generator().manual_seed(seed)
    tc = resolve_counts(target_counts)
    sc = resolve_counts(source_counts)
    tgt = task.sample(n, tc, g, unk_p=0.0)
    src = task.sample(n, sc, g, unk_p=0.0)
    pos, spos = intervention_positions(tgt, g), intervention_positions(src, g)
    pairs = pairs_from_trials(prog, variable, tgt, pos, src, spos, None, g)
    ev = evaluate_alignment(model, align, pairs, site, free_running=False)
    own = evaluate(model, task.sample(n, sc, g, unk_p=0.0))["trial_acc"]
    return {"iia": ev["iia"], "iia_changed": ev["iia_changed"], "n": ev["n"], "n_changed": ev["n_changed"],
            "network_acc_source_counts": own}


# -- a sweep's table, and the README's report of it --------------------------------------------

def read_sweep_table(csv) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A comparison sweep's ``results.csv`` (``python -m symlib sweep notebooks/grids/04_seeds.yaml``) as
    (every cell with its status, the finished cells' rows): a cell run at the network's default site names
    it only in its metrics, and gets it in ``site`` here."""
    raw = pd.read_csv(csv)
    done = raw[raw.status == "ok"].copy()
    if "metrics.site" in done:
        done["site"] = done["site"].astype(object).fillna(done["metrics.site"]) if "site" in done else done["metrics.site"]
    return raw, done


def _f3(x) -> str:
    return "-" if x is None or pd.isna(x) else f"{x:.3f}"


def sweep_report(csv, shown: str | None = None) -> str:
    """The README's account of a comparison sweep, finished or not: one row per hypothesis with the mean
    changed-pair IIA [95% interval over the seeds finished], raw IIA, the best control on the same pairs,
    the margin, the verdict and how many of its searches converged; then what is still pending."""
    raw, done = read_sweep_table(csv)
    n, n_ok = len(raw), len(done)
    pending, failed = raw[raw.status == "pending"], raw[~raw.status.isin(["ok", "pending"])]
    lines = [f"{n_ok} of {n} cells finished" + (f", {len(failed)} failed" if len(failed) else "")
             + (f"; {len(pending)} pending (the sweep resumes where it stopped)" if len(pending) else "") + ". "
             f"Each search to convergence (the findings' rule and cap, {COMPARE_SEARCH['max_steps']} steps); "
             "IIA on changed test pairs, mean [95% bootstrap interval] over the seeds finished; the best control "
             "(untrained alignment, wrong labels, wrong program) on the same pairs. A hypothesis **aligns** when its "
             f"changed-pair IIA is at least {ALIGNED_IIA} and at least {ALIGNED_MARGIN} above its best control, **partly** "
             f"from {PARTLY_IIA} with that margin.", ""]
    if n_ok:
        summary = summarise_compare(done)
        by = ["arch", "task", "program", "variable", "site", "n_units"]
        d = done.assign(n_units=done.get("n_units", pd.Series(COMPARE_SEARCH["n_units"], index=done.index))
                        .fillna(COMPARE_SEARCH["n_units"]).astype(int))
        conv = d.groupby(by, dropna=False).converged.agg(lambda c: f"{int((c == True).sum())}/{len(c)}")  # noqa: E712
        lines += ["| network | hypothesis | seeds | changed IIA | raw IIA | best control | margin | verdict | converged |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in summary.to_dict("records"):
            net = f"{r['arch']} · {r['task']}" + ("" if r["site"] in ("state", "resid.0") else f" @ {r['site']}")
            hyp = f"{r['program']} {r['variable']}" + ("" if r["n_units"] == COMPARE_SEARCH["n_units"] else f" ({r['n_units']} dims)")
            ci = "" if pd.isna(r["iia_changed_test_lo"]) or r["n"] < 2 else f" [{r['iia_changed_test_lo']:.3f}, {r['iia_changed_test_hi']:.3f}]"
            lines.append(f"| {net} | {hyp} | {r['n']} | {_f3(r['iia_changed_test'])}{ci} | {_f3(r.get('iia_test'))} | "
                         f"{_f3(r.get('control_max_changed_test'))} | {_f3(r.get('margin_changed_test'))} | {r['verdict']} | "
                         f"{conv[tuple(r[k] for k in by)]} |")
        capped = d[d.converged != True]  # noqa: E712
        lines += ["", "Every search converged (no cell stopped at its step cap)." if not len(capped) else
                  f"{len(capped)} cell(s) stopped at the cap: " + ", ".join(capped.cell) + "."]
        note = networks_note(d)
        lines += ["", note] if note else []
    if len(pending):
        groups = pending.groupby(["arch", "task"], sort=False).size()
        lines += ["", "Pending: " + ", ".join(f"{a} · {t} ({k} cells)" for (a, t), k in groups.items()) + "."]
    if "finished_at" in done and done.finished_at.notna().any():
        commits = (done.commit.astype(object) if "commit" in done else pd.Series(None, index=done.index, dtype=object)).fillna("not recorded")
        by_commit = ", ".join(f"{c[:7] if c != 'not recorded' else c} ({k})" for c, k in commits.value_counts(sort=False).sort_index().items())
        lines += ["", f"Cells finished between {done.finished_at.min()[:16]} and {done.finished_at.max()[:16]} UTC; "
                      f"the code's commit per cell: {by_commit}."]
        if "machine" in done and done.machine.notna().any():  # recorded by sweeps since 2026-12-08
            machines = done.machine.astype(object).fillna("not recorded").value_counts(sort=False).sort_index()
            lines[-1] += " Machine per cell: " + ", ".join(f"{m} ({k})" for m, k in machines.items()) + "."
    lines += ["", f"Printed by `python -m symlib compare --report {shown or csv}`."]
    return "\n".join(lines)


def networks_note(done: pd.DataFrame) -> str | None:
    """Whether every finished cell of one network (architecture, task, seed) ran on one training of it
    (None for a table that records neither ``network_step`` nor ``network``).

    Training is repeatable on one machine, not across machines: a sweep resumed elsewhere retrains a
    network that its earlier cells found trained, and may get another one. Two cells used different
    networks when their best checkpoints differ (``network_step``) or their weights' fingerprints do
    (``network``, where recorded)."""
    if "network_step" not in done and "network" not in done:
        return None
    mixed = []
    for (arch, task, seed), g in done.groupby(["arch", "task", "seed"], sort=True):
        steps = sorted(set(g.network_step.dropna().astype(int))) if "network_step" in g else []
        prints = set(g.network.dropna()) if "network" in g else set()
        if len(steps) > 1 or len(prints) > 1:
            mixed.append(f"{arch} · {task} seed {int(seed)} (best steps {', '.join(map(str, steps))})")
    if not mixed:
        return ("Every network's cells ran on one training of it (the same best checkpoint"
                + (", and the same weights where recorded)." if "network" in done and done.network.notna().any() else ")."))
    return ("Cells of one network that ran on different trainings of it (same recipe and seed, trained in "
            "different sittings): " + "; ".join(mixed) + ".")


def main(argv=None) -> int:
    """``python -m symlib compare --report CSV [--readme README.md]``: a comparison sweep's table in the README
    (the table as a sweep stands, with its provenance: ``python -m symlib sweep GRID --save-table CSV``)."""
    import argparse
    import sys
    from .report import source_line, write_block
    ap = argparse.ArgumentParser(prog="python -m symlib compare", description=main.__doc__.split(": ", 1)[1])
    ap.add_argument("--report", required=True, help="a comparison sweep's results table (CSV)")
    ap.add_argument("--readme", default="", help="also write it between the compare markers of this markdown file")
    ap.add_argument("--block", default="compare", help="the README block's name (default compare)")
    args = ap.parse_args(argv)
    text = sweep_report(args.report)
    if args.readme:
        try:
            text += "\n\n" + source_line(args.report)
        except FileNotFoundError as e:  # a README block says where its numbers came from, or is not written
            print(f"python -m symlib compare: {e}", file=sys.stderr)
            return 2
    print(text)
    if args.readme:
        write_block(args.readme, args.block, text)
    return 0
