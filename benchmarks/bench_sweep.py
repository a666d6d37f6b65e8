"""Batched searches: a subspace sweep as one batched pass against a single search, same budget, same run.

Goal (issue 6): the subspace sweep (6 sizes: 1, 2, 4, 8, 16, 32; the same step budget each)
as one batched search in <= 2.5x the time of a single 16-dim search.

    python benchmarks/bench_sweep.py [--arch gru] [--steps 300] [--threads 2] [--device cpu]

Both run exactly ``--steps`` steps (no early stopping) on the same pairs, no results store;
the single search runs first, then the sweep, then the single search again (the mean of the
two single runs is the reference, which evens out a drifting host). Pair generation and
state precomputation are inside both timings.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import symlib
from report import write_report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="gru")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--sizes", default="1,2,4,8,16,32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(symlib.REPO_ROOT / "out" / "bench_sweep.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = symlib.make_task("multiobject")
    model = symlib.load_or_train("multiobject", args.arch, 0, device=args.device, progress=False,
                                 **({"max_steps": 1000} if args.arch.startswith("transformer") else {})).model
    cfg = symlib.DASConfig(max_steps=args.steps, target_iia=2.0, patience=0)
    sizes = symlib.utils.parse_list(args.sizes, int, "sizes")

    def single():
        t0 = time.perf_counter()
        r = symlib.run_das(model, task, cfg, n_units=16, progress=False)
        return time.perf_counter() - t0, r

    s1, r16 = single()
    t0 = time.perf_counter()
    sweep = symlib.subspace_sweep(model, task, cfg, sizes, progress=False)
    sweep_s = time.perf_counter() - t0
    s2, _ = single()
    ref = (s1 + s2) / 2
    row = {"arch": args.arch, "steps": args.steps, "sizes": sizes, "single_16_seconds": round(ref, 1),
           "single_runs": [round(s1, 1), round(s2, 1)], "sweep_seconds": round(sweep_s, 1), "ratio": round(sweep_s / ref, 2),
           "separate_estimate_seconds": round(ref * len(sizes), 1),
           "iia_changed_test_by_size": {k: round(r.metrics["iia_changed_test"], 3) for k, r in sweep.items()},
           "same_16_as_single": abs(sweep[16].metrics["iia_test"] - r16.metrics["iia_test"]) <= 0.01 if 16 in sweep else None}
    print(json.dumps(row))
    write_report(args.out, args.threads, args.device, [row], [
        ("arch", "{r[arch]}"), ("steps", "{r[steps]}"), ("one 16-dim search (s)", "{r[single_16_seconds]}"),
        ("sweep of 6 sizes, batched (s)", "{r[sweep_seconds]}"), ("ratio", "{r[ratio]}"),
        ("6 separate searches (estimate, s)", "{r[separate_estimate_seconds]}")])


if __name__ == "__main__":
    main()
