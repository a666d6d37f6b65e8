"""IIA over training: seconds for a search at every checkpoint of one GRU run.

Goal (issue 8): IIA at >= 15 checkpoints of one GRU run in <= 3 minutes on the 2-core CPU.
Uses the book's seed-0 GRU on MultiObject (trained first if missing), every checkpoint,
the chapter's search (``symlib.analyses.dynamics.DYNAMICS_SEARCH``, 16 dims, each search to
convergence, warm or fresh) with the ``initial`` control, no cache. ``--cold`` also runs every checkpoint from
a fresh alignment with the full budget, and reports how far the two disagree.

    python benchmarks/bench_dynamics.py [--cold] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import symlib
from symlib.analyses.dynamics import WARM_STEPS, iia_over_training
from symlib.paths import runs_dir
from symlib.networks.training import checkpoint_steps, load_or_train
from report import write_report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cold", action="store_true", help="also run every checkpoint cold, for the comparison")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    load_or_train("multiobject", "gru", seed=a.seed, device="cpu", progress=False)
    run = runs_dir() / f"multiobject-gru-d128-s{a.seed}"
    steps = checkpoint_steps(run)
    if len(steps) < 15:
        raise SystemExit(f"{run} has {len(steps)} checkpoints; the goal is about >= 15")
    row = {"run": run.name, "checkpoints": len(steps), "last_step": steps[-1], "warm_steps": WARM_STEPS,
           "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    warm = iia_over_training(run, warm=True, store=None, device="cpu", progress=False).table
    row["warm_seconds"] = round(time.perf_counter() - t0, 1)
    row["warm_final_iia_changed"] = float(warm.iia_changed_test.iloc[-1])
    if a.cold:
        t0 = time.perf_counter()
        cold = iia_over_training(run, warm=False, store=None, device="cpu", progress=False).table
        row["cold_seconds"] = round(time.perf_counter() - t0, 1)
        diff = (warm.iia_changed_test - cold.iia_changed_test)
        row["warm_minus_cold_mean"] = round(float(diff.mean()), 4)
        row["warm_minus_cold_max_abs"] = round(float(diff.abs().max()), 4)
        row["per_step"] = [{"step": int(s), "warm": round(float(w), 4), "cold": round(float(c), 4)}
                           for s, w, c in zip(warm.step, warm.iia_changed_test, cold.iia_changed_test)]
    print(json.dumps(row))
    cols = [("checkpoints", "{r[checkpoints]}"), ("warm (s)", "{r[warm_seconds]}"),
            ("final IIA, changed pairs", "{r[warm_final_iia_changed]:.3f}")]
    if a.cold:
        cols += [("cold (s)", "{r[cold_seconds]}"), ("warm - cold, mean", "{r[warm_minus_cold_mean]}"),
                 ("warm - cold, max |.|", "{r[warm_minus_cold_max_abs]}")]
    write_report(str(symlib.REPO_ROOT / "out" / "bench_dynamics.json"), torch.get_num_threads(), "cpu", [row], cols)


if __name__ == "__main__":
    main()
