"""The book's findings over network seeds: searches and controls, a tidy table, intervals.

One code path serves the README's findings table (``make findings``), notebook 03's
architecture comparison and the findings tier of the tests (at a reduced size)::

    python -m symlib findings --archs gru,lstm,transformer --seeds 0,1,2

For every architecture and seed it loads (or trains) the network, runs the search with
its learnable controls in one batched pass, measures every control on the same test
pairs, and writes one row per (architecture, seed, measure). ``summarise_findings`` gives
the mean and a 95% bootstrap interval over seeds. Searches are cached in the results
store, so a rerun or an added seed pays only for what is new.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..paths import REPO_ROOT, data_dir
from ..utils import check_choice, parse_list
from ..game.tasks import make_task
from ..networks.training import load_or_train
from ..intervene.controls import CHANGED_CONTROLS, CONTROL_NAMES, run_das_with_controls
from ..intervene.das import DASConfig
from ..intervene.search import BUDGETS
from .provenance import command_line, provenance_path, write_provenance
from .report import json_block, source_line, write_block
from .stats import format_ci, summarise

#: The search budget of the book's findings: every search (and learned control) to convergence
#: (``search.BUDGETS["finding"]``), plus test pairs on held-out counts.
FINDINGS_SEARCH = dict(BUDGETS["finding"], n_test_heldout=500)
#: The networks' recipe per architecture, spelled out: the book's (``TrainConfig``'s defaults, as chapter 02
#: trains them), the Transformer capped at 1000 steps (its best checkpoint is used). Each entry must equal the
#: default, so the runs are the book's own (``data/runs/<task>-<arch>-d128-s<seed>``; tests/test_run_identity.py).
FINDINGS_TRAIN = {"transformer": {"max_steps": 1000}, "transformer_nope": {"max_steps": 1000}}
MEASURES = ("das",) + CONTROL_NAMES
#: iia_changed_main: on the main search's changed pairs (for a control; the search's own iia_changed_test for "das")
VALUE_COLUMNS = ("iia_test", "iia_changed_test", "iia_changed_main", "iia_test_heldout", "iia_changed_test_heldout")


def findings_table(archs=("gru", "lstm", "transformer"), seeds=(0, 1, 2), task: str = "multiobject",
                   search: dict | None = None, train: dict | None = None, controls=CONTROL_NAMES,
                   store=True, device: str = "auto", progress: bool = True, jobs: int = 1) -> pd.DataFrame:
    """Run the search and its controls for every architecture and network seed; return tidy rows.

    search: DASConfig fields (default ``FINDINGS_SEARCH``: program up_down, variable count,
    orthogonal, 16 dims). train: TrainConfig overrides merged over ``FINDINGS_TRAIN``, for every
    architecture, or per architecture as ``{arch: overrides}`` (every key an architecture name).
    One row per (arch, seed, measure), measure being ``das`` or a control. jobs: (arch, seed)
    cells computed at once, each in its own process with one torch thread (on a 2-core CPU,
    ``jobs=2`` finishes sooner than one process with two threads); the rows are the same, in the
    same order, up to float rounding.
    """
    from ..networks.models import ARCH_NAMES
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs!r}")
    for a in archs:  # before any process starts or any network is trained
        check_choice("architecture", a, ARCH_NAMES)
    per_arch = bool(train) and all(k in ARCH_NAMES for k in train)
    cfg = DASConfig(**{**FINDINGS_SEARCH, **(search or {})})
    cells = [(arch, int(seed), {**FINDINGS_TRAIN.get(arch, {}), **((train or {}).get(arch, {}) if per_arch else (train or {}))})
             for arch in archs for seed in seeds]
    args = [(arch, seed, kw, task, cfg, controls, store, device) for arch, seed, kw in cells]
    if jobs == 1 or len(cells) == 1:
        rows = [_cell_rows(*a, progress=progress) for a in args]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        # the longest cells (Transformers) first, so that no worker is left with one at the end
        order = sorted(range(len(cells)), key=lambda i: not cells[i][0].startswith("transformer"))
        rows = [None] * len(cells)
        with ProcessPoolExecutor(min(jobs, len(cells)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread) as ex:
            futures = {ex.submit(_cell_rows, *args[i], progress=False): i for i in order}
            for n, f in enumerate(as_completed(futures), 1):
                i = futures[f]
                rows[i] = f.result()
                if progress:
                    print(f"findings: {cells[i][0]} seed {cells[i][1]} done ({n}/{len(cells)})", flush=True)
    return pd.DataFrame([r for cell in rows for r in cell])


def _one_thread() -> None:
    """A worker process of ``findings_table(jobs=...)``: one torch thread, so workers share the cores."""
    import torch
    torch.set_num_threads(1)


def _cell_rows(arch: str, seed: int, train_kw: dict, task: str, cfg: DASConfig, controls, store, device: str,
               progress: bool = True) -> list[dict]:
    """The rows of one (arch, seed) cell of ``findings_table``: the network (loaded or trained), its search and controls."""
    t = make_task(task)
    run = load_or_train(task, arch, seed, device=device, progress=progress, **train_kw)
    t0 = time.perf_counter()
    res = run_das_with_controls(run.model, t, cfg, controls=controls, progress=progress, store=store, seed=seed)
    base = {"arch": arch, "seed": seed, "task": task, "program": cfg.program, "variable": cfg.variable,
            "alignment": cfg.alignment, "n_units": res.metrics["n_units"], "max_steps": cfg.max_steps,
            "trial_acc_train": run.summary.get("best_trial_acc_train"),
            "trial_acc_heldout": run.summary.get("best_trial_acc_heldout"),
            "steps_to_solve": run.summary.get("steps_to_solve"), "network_step": run.summary.get("best_step")}
    m = res.metrics
    rows = [{**base, "measure": "das", **{k: m.get(k) for k in VALUE_COLUMNS}, "iia_changed_main": m.get("iia_changed_test"),
             "steps": m["steps"], "converged": m.get("converged"), "seconds": round(time.perf_counter() - t0, 1),
             "cached": bool(m.get("cached"))}]
    for name, c in m["controls"].items():
        # a fixed control (no swap, initial) trains nothing: nothing to converge
        rows.append({**base, "measure": name, **{k: c.get(k) for k in VALUE_COLUMNS}, "iia_changed_main": c.get("iia_changed_main"),
                     "steps": c.get("steps"), "converged": c.get("converged")})
    return rows


def summarise_findings(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% bootstrap interval over seeds, per (arch, measure)."""
    cols = [c for c in VALUE_COLUMNS if c in df and df[c].notna().any()]
    out = summarise(df, by=["arch", "measure"], values=cols)
    order = {m: i for i, m in enumerate(MEASURES)}
    return out.sort_values(["arch", "measure"], key=lambda s: s.map(order) if s.name == "measure" else s).reset_index(drop=True)


def findings_markdown(summary: pd.DataFrame, value: str = "iia_changed_test", table: pd.DataFrame | None = None) -> str:
    """One markdown table: a row per architecture, a column per measure, cells 'mean [lo, hi]'.

    On changed pairs the no-swap control is left out: it scores 0 there by construction.
    ``table``: the tidy table the summary came from; a cell any of whose searches stopped at
    its step cap before converging is marked with a dagger, explained under the table.
    """
    shown = ("das",) + CHANGED_CONTROLS if "changed" in value else MEASURES
    measures = [m for m in shown if m in set(summary["measure"])]
    lines = ["| architecture | " + " | ".join(measures) + " | seeds |", "|---|" + "---|" * (len(measures) + 1)]
    for arch, g in summary.groupby("arch", sort=False):
        cells = []
        for m in measures:
            r = g[g["measure"] == m]
            cell = format_ci(r[value].iloc[0], r[f"{value}_lo"].iloc[0], r[f"{value}_hi"].iloc[0]) if len(r) and value in r else ""
            capped = capped_seeds(table, arch, m) if table is not None else []
            cells.append(cell + (f" †({len(capped)})" if capped else ""))
        lines.append(f"| {arch} | " + " | ".join(cells) + f" | {int(g['n'].iloc[0])} |")
    if table is not None:
        if any(capped_seeds(table, a, m) for a in set(summary["arch"]) for m in measures):
            lines.append("\n† (k): k seeds' searches stopped at the step cap before converging; not a converged finding.")
        else:
            lines.append("\nEvery search converged (no cell stopped at its step cap).")
    return "\n".join(lines)


def capped_seeds(table: pd.DataFrame, arch: str, measure: str) -> list[int]:
    """The seeds whose search for (arch, measure) stopped at its cap before converging (``converged`` False)."""
    if "converged" not in table:
        return []
    rows = table[(table.arch == arch) & (table.measure == measure)]
    return [int(s) for s, c in zip(rows.seed, rows.converged) if c is False or c == False]  # noqa: E712 (read back from CSV)


def training_markdown(df: pd.DataFrame) -> str:
    """One markdown row per architecture: the networks' accuracy and steps to solve, over seeds."""
    nets = df[df.measure == "das"]
    lines = ["| architecture | seeds | trial accuracy, training counts | held-out counts (4, 9, 14, 17) | steps to solve | checkpoint used (step) |",
             "|---|---|---|---|---|---|"]
    for arch, g in nets.groupby("arch", sort=False):
        fmt = lambda col: ", ".join("-" if pd.isna(v) else (f"{v:.3f}" if isinstance(v, float) and v <= 1 else str(int(v))) for v in g[col])
        lines.append(f"| {arch} | {', '.join(map(str, g.seed))} | {fmt('trial_acc_train')} | {fmt('trial_acc_heldout')} | "
                     f"{fmt('steps_to_solve')} | {fmt('network_step')} |")
    return "\n".join(lines)


def findings_report(df: pd.DataFrame, budget: dict, command: str) -> str:
    """The findings as markdown, made only from the tidy table ``df`` (as saved by ``main``):
    the budget, the networks, IIA on changed and on all test pairs, held-out counts, steps and
    whether each search converged. ``command``: the command that printed it, stated under it."""
    summary = summarise_findings(df)
    das = df[df.measure == "das"]
    seeds = sorted(int(s) for s in set(das.seed))
    out = [f"{das.task.iloc[0]}, {das.program.iloc[0]} {das.variable.iloc[0]}, {das.alignment.iloc[0]} "
           f"{int(das.n_units.iloc[0])} dims; every search to convergence (best validation changed-pair IIA gaining "
           f"< {budget['plateau_tol']} over {budget['plateau_steps']} steps, or validation trial IIA {budget['target_iia']}), "
           f"capped at {budget['max_steps']} steps; {budget['n_train']} train / {budget['n_val']} val / {budget['n_test']} "
           f"test pairs (+ {budget['n_test_heldout']} on held-out counts); network seeds {', '.join(map(str, seeds))}.",
           "", "The networks (best checkpoint, judged on training counts):", "", training_markdown(df),
           "", "IIA on changed test pairs, mean [95% bootstrap interval over seeds]:", "",
           findings_markdown(summary, "iia_changed_test", df),
           "", "Raw IIA on all test pairs:", "", findings_markdown(summary, "iia_test")]
    if "iia_changed_test_heldout" in summary and summary["iia_changed_test_heldout"].notna().any():
        out += ["", "IIA on changed test pairs with held-out counts (4, 9, 14, 17):", "",
                findings_markdown(summary, "iia_changed_test_heldout")]
    steps = das.groupby("arch", sort=False).steps.agg(["min", "max"])
    out += ["", "Steps each main search took (min-max over seeds): "
            + "; ".join(f"{a} {int(r['min'])}-{int(r['max'])}" for a, r in steps.iterrows()) + ".",
            "", f"Printed by `{command}`."]
    return "\n".join(out)


def findings_block(csv: str | Path, shown: str | None = None) -> str:
    """The README's findings block: ``findings_report`` of the saved tidy table at ``csv``, and
    where it came from when a provenance file lies beside it (``shown``: how the text names the
    table; default as given)."""
    df = pd.read_csv(csv)
    budget = asdict(DASConfig(**{**FINDINGS_SEARCH, "max_steps": int(df.max_steps.iloc[0])}))
    text = findings_report(df, budget, f"python -m symlib findings --report {shown or csv}")
    return text + ("\n\n" + source_line(csv, shown) if provenance_path(csv).exists() else "")


#: How the findings figure names each measure, in its order.
FIGURE_LABELS = {"das": "DAS (the search)", "initial": "untrained alignment", "wrong_labels": "wrong labels",
                 "wrong_program": "wrong program (Up-Up)"}


def findings_figure(csv: str | Path, path: str | Path):
    """The findings as one figure, made only from the saved tidy table at ``csv``: per architecture,
    IIA on changed test pairs of the search and of each control (on their own changed pairs), the
    mean as a bar, the 95% bootstrap interval over seeds as a line, every seed as a dot. Saved at
    ``path`` (PNG); returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np
    df = pd.read_csv(csv)
    summary = summarise_findings(df)
    measures = [m for m in FIGURE_LABELS if m in set(summary.measure)]
    archs = list(dict.fromkeys(summary.arch))
    colours = dict(zip(measures, ["#1f5fa8", "#b8b8b8", "#8c8c8c", "#d9a441"]))
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    w = 0.8 / len(measures)
    for j, m in enumerate(measures):
        x = np.arange(len(archs)) + (j - (len(measures) - 1) / 2) * w
        s = summary[summary.measure == m].set_index("arch").reindex(archs)
        ax.bar(x, s.iia_changed_test, w, color=colours[m], label=FIGURE_LABELS[m], edgecolor="black", linewidth=0.4)
        ax.vlines(x, s.iia_changed_test_lo, s.iia_changed_test_hi, color="black", linewidth=1.2)
        for xi, a in zip(x, archs):
            seeds = df[(df.arch == a) & (df.measure == m)].iia_changed_test
            ax.scatter(np.full(len(seeds), xi), seeds, s=9, color="white", edgecolor="black", linewidth=0.6, zorder=3)
    das = df[df.measure == "das"]
    n = das.groupby("arch").seed.nunique()
    ax.set_xticks(range(len(archs)))
    ax.set_xticklabels([f"{a}\n({n[a]} seeds)" for a in archs])
    ax.set_ylabel("IIA on changed test pairs")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False, fontsize=8, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    ax.set_title(f"{das.task.iloc[0]}: is there an {das.program.iloc[0]} {das.variable.iloc[0]}? "
                 f"({das.alignment.iloc[0]}, {int(das.n_units.iloc[0])} dims; bars: mean, lines: 95% interval, dots: seeds)",
                 fontsize=8.5, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return fig


#: The book's full runs, committed under results/: name -> (result, the command that makes it).
FULL_RUNS = {
    "findings": ("results/findings/multiobject-up_down-count-orthogonal.csv", "make findings"),
    "mas": ("results/mas/06_model_alignment_search.json", "make mas-full"),
    "dynamics": ("results/dynamics/05_learning_dynamics.json", "make dynamics-full"),
}


def full_run(name: str) -> str:
    """A full run's summary as markdown, from its committed result (what the README's block of the
    same name holds), for a chapter to show beside its reader-size run; a sentence saying how to
    make it when it is not committed yet."""
    if name not in FULL_RUNS:
        raise ValueError(f"full_run: no full run named {name!r}; known: {', '.join(FULL_RUNS)}")
    rel, command = FULL_RUNS[name]
    if not (REPO_ROOT / rel).exists():
        return f"*The full run (`{command}`) is not committed yet: `{rel}` is missing.*"
    if rel.endswith(".csv"):
        return findings_block(REPO_ROOT / rel, shown=rel)
    return json_block(REPO_ROOT / rel, "summary", shown=rel)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m symlib findings", description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", default="gru,lstm,transformer")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--task", default="multiobject")
    ap.add_argument("--program", default="up_down")
    ap.add_argument("--variable", default="count")
    ap.add_argument("--alignment", default="orthogonal")
    ap.add_argument("--n-units", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=FINDINGS_SEARCH["max_steps"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="(arch, seed) cells at once, one process and one torch thread each (default 1)")
    ap.add_argument("--out", default="", help="CSV for the tidy table (default data/findings/<task>-<program>-<variable>-<alignment>.csv)")
    ap.add_argument("--report", default="", help="print the findings from this saved tidy table (CSV) and run nothing")
    ap.add_argument("--readme", default="", help="with --report: also write them between the findings markers of this markdown file")
    ap.add_argument("--figure", default="", help="with --report: also draw them into this PNG (findings_figure)")
    args = ap.parse_args(argv)
    if (args.readme or args.figure) and not args.report:
        ap.error("--readme and --figure need --report CSV")
    if args.report:
        text = findings_block(args.report)
        print(text)
        if args.readme:
            write_block(args.readme, "findings", text)
        if args.figure:
            findings_figure(args.report, args.figure)
            print(f"figure: {args.figure}")
        return 0
    started = datetime.now(timezone.utc)
    archs = parse_list(args.archs, str, "archs")
    seeds = parse_list(args.seeds, int, "seeds")
    search = {"program": args.program, "variable": args.variable, "alignment": args.alignment, "n_units": args.n_units,
              "max_steps": args.max_steps}
    DASConfig(**{**FINDINGS_SEARCH, **search})  # bad names fail before any training
    from ..networks.models import ARCH_NAMES
    for a in archs:
        check_choice("architecture", a, ARCH_NAMES)
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    df = findings_table(archs, seeds, args.task, search, device=args.device, jobs=args.jobs)
    out = args.out or str(data_dir() / "findings" / f"{args.task}-{args.program}-{args.variable}-{args.alignment}.csv")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    summary = summarise_findings(df)
    summary.to_csv(out.replace(".csv", "-summary.csv"), index=False)
    write_provenance(out, command_line(), started, archs=archs, seeds=seeds,
                     searches_run_here=int((~df[df.measure == "das"].cached.astype(bool)).sum()))
    print("\n" + findings_block(out))  # what --report prints, and make findings-readme writes into the README
    print(f"\ntables: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
