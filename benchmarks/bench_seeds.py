"""Seeds trained together: five GRU seeds to solved, one after another and as one batched network.

Goals: 5 GRU seeds (MultiObject, the book's recipe) trained to solved in <= 60 s on the 2-core
CPU (issue 8), and in <= 2.5x the time of one seed alone (issue 23). Nothing is saved
(``run_dir=None``); reports both wall times, each seed's time alone, each seed's steps to solve
and its final accuracy both ways, and the batched time over the mean time of one seed alone.

    python benchmarks/bench_seeds.py [--arch gru] [--seeds 0,1,2,3,4] [--skip-lone]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import symlib
from symlib.networks.batched import train_seeds
from symlib.networks.training import train
from report import write_report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="gru")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--skip-lone", action="store_true", help="time only the batched run")
    a = ap.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    row = {"arch": a.arch, "seeds": seeds, "threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    bat = train_seeds(seeds, arch=a.arch, run_dirs=None, device="cpu", progress=False)
    row["batched_seconds"] = round(time.perf_counter() - t0, 1)
    row["batched_steps_to_solve"] = [r.summary["steps_to_solve"] for r in bat]
    row["batched_acc_train"] = [r.summary["trial_acc_train"] for r in bat]
    if not a.skip_lone:
        lone, secs = [], []
        for s in seeds:
            t0 = time.perf_counter()
            lone.append(train(arch=a.arch, seed=s, run_dir=None, device="cpu", progress=False))
            secs.append(time.perf_counter() - t0)
        row["lone_seconds"] = round(sum(secs), 1)
        row["lone_seconds_each"] = [round(x, 1) for x in secs]
        row["ratio_to_one_seed"] = round(row["batched_seconds"] / (sum(secs) / len(secs)), 2)
        row["lone_steps_to_solve"] = [r.summary["steps_to_solve"] for r in lone]
        row["lone_acc_train"] = [r.summary["trial_acc_train"] for r in lone]
        row["speedup"] = round(row["lone_seconds"] / row["batched_seconds"], 2)
    print(json.dumps(row))
    if not a.skip_lone:
        print(f"ratio {len(seeds)} seeds batched / one seed alone: {row['ratio_to_one_seed']}")
    cols = [("arch", "{r[arch]}"), ("seeds", "{r[seeds]}"), ("batched (s)", "{r[batched_seconds]}"),
            ("steps to solve, batched", "{r[batched_steps_to_solve]}")]
    if not a.skip_lone:
        cols += [("one by one (s)", "{r[lone_seconds]}"), ("steps to solve, one by one", "{r[lone_steps_to_solve]}"),
                 ("speed-up", "{r[speedup]}x"), ("batched / one seed alone (mean)", "{r[ratio_to_one_seed]}x")]
    write_report(str(symlib.REPO_ROOT / "out" / f"bench_seeds_{a.arch}.json"), torch.get_num_threads(), "cpu", [row], cols)


if __name__ == "__main__":
    main()
