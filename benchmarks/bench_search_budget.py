"""How a search's IIA grows with its step budget, at several learning rates, on the book's seed-0 GRU.

One batched pass of searches (Up-Down count, orthogonal, 16 dims, 10 000 / 1 000 pairs, batch
128), one per learning rate, each run the whole budget with no early stop; prints, for each,
the best validation changed-pair IIA reached by 250, 500, 1000, 2000, ... steps, the step
at which the convergence rule (best validation changed-pair IIA gaining < 0.005 over 1000
steps) would have stopped it, and the test changed-pair IIA of its best alignment.

    python benchmarks/bench_search_budget.py [--lrs 0.001,0.003,0.01,0.03] [--steps 4000] [--threads 2]

``--rule``: instead, run each schedule in ``--schedules`` (``lr`` or ``lr/drops``: a plateau first
divides the rate by 10, ``drops`` times, before it counts as convergence) under the book's
stopping rule, capped at 20 000 steps, and print the steps each took to converge and its test
changed-pair IIA: does a larger rate, or one that drops, reach the book's plateau (lr 0.001,
no drops) in fewer steps?

    python benchmarks/bench_search_budget.py --rule [--schedules 0.001,0.003,0.01,0.003/1,0.01/2]

The network is the book's (trained now when missing, as chapter 02 trains it).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

import symlib
from report import write_report


def rule_stop(curve: list[tuple[int, float]], window: int = 1000, tol: float = 0.005) -> int | None:
    """The first evaluation step at which the convergence rule holds on ``curve`` (step, value)."""
    for step, _ in curve:
        if step < window:
            continue
        now = max(v for s, v in curve if s <= step)
        then = max((v for s, v in curve if s <= step - window), default=curve[0][1])
        if now - then < tol:
            return step
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lrs", default="0.001,0.003,0.01,0.03")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="out/bench_search_budget.json")
    ap.add_argument("--rule", action="store_true", help="run the schedules under the book's stopping rule")
    ap.add_argument("--schedules", default="0.001,0.003,0.01,0.003/1,0.01/2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.rule:
        return under_the_rule(args)
    lrs = [float(x) for x in args.lrs.split(",")]
    run = symlib.load_or_train("multiobject", "gru", 0, progress=False)
    base = symlib.DASConfig(n_units=16, max_steps=args.steps, eval_every=50, target_iia=2.0, plateau_steps=0, seed=0)
    t0 = time.perf_counter()
    results = symlib.run_das_batch(run.model, symlib.make_task("multiobject"), [replace(base, lr=lr) for lr in lrs],
                                   progress=True, token_iia=False)
    seconds = time.perf_counter() - t0
    rows = []
    budgets = [b for b in (250, 500, 1000, 2000, 4000, 8000, 16000) if b <= args.steps]
    for lr, r in zip(lrs, results):
        curve = [(h["step"], h["val_iia_changed"]) for h in r.history]
        best = {b: max(v for s, v in curve if s <= b) for b in budgets}
        rows.append({"lr": lr, **{f"best_by_{b}": round(v, 4) for b, v in best.items()}, "rule_stop": rule_stop(curve),
                     "test_changed": r.metrics["iia_changed_test"], "best_step": r.metrics["best_step"]})
    columns = [("lr", "{r[lr]:g}")] + [(f"best by {b}", f"{{r[best_by_{b}]:.3f}}") for b in budgets] + [
        ("rule stops at", "{r[rule_stop]}"), ("test changed IIA (best alignment)", "{r[test_changed]:.3f}")]
    write_report(args.out, args.threads, "cpu", rows, columns, steps=args.steps, seconds=round(seconds, 1))


def under_the_rule(args) -> None:
    """Each schedule searched to convergence by the book's rule, in one batched pass."""
    schedules = []
    for item in args.schedules.split(","):
        lr, _, drops = item.partition("/")
        schedules.append((float(lr), int(drops or 0)))
    run = symlib.load_or_train("multiobject", "gru", 0, progress=False)
    base = symlib.DASConfig(n_units=16, seed=0)  # the book's finding budget: to convergence, capped at 20 000 steps
    t0 = time.perf_counter()
    results = symlib.run_das_batch(run.model, symlib.make_task("multiobject"),
                                   [replace(base, lr=lr, lr_drops=d) for lr, d in schedules], progress=True, token_iia=False)
    seconds = time.perf_counter() - t0
    rows = []
    for (lr, d), r in zip(schedules, results):
        m = r.metrics
        drops = [h["step"] for h in r.history if "lr_scale" in h]
        rows.append({"lr": lr, "drops": d, "dropped_at": drops, "steps": m["steps"], "converged": m["converged"],
                     "best_step": m["best_step"], "val_changed": m["iia_changed_val"], "test_changed": m["iia_changed_test"],
                     "test_changed_heldout": m.get("iia_changed_test_heldout")})
    book = rows[0]
    for r in rows:
        r["steps_vs_first"] = round(r["steps"] / book["steps"], 2)
    columns = [("lr", "{r[lr]:g}"), ("drops", "{r[drops]}"), ("dropped at step", "{r[dropped_at]}"), ("steps", "{r[steps]}"),
               ("steps / first row's", "{r[steps_vs_first]}"), ("converged", "{r[converged]}"),
               ("val changed IIA", "{r[val_changed]:.3f}"), ("test changed IIA", "{r[test_changed]:.3f}")]
    out = args.out.replace(".json", "_rule.json")
    write_report(out, args.threads, "cpu", rows, columns, seconds=round(seconds, 1), rule=f"best validation changed-pair IIA gaining < {base.plateau_tol} over {base.plateau_steps} steps (or trial IIA {base.target_iia}), cap {base.max_steps}")


if __name__ == "__main__":
    main()
