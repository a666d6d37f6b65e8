"""Training speed: steps/s and time to solve MultiObject for GRU, LSTM and Transformer.

Goal (issue 2): a width-128 GRU on MultiObject, 2 CPU threads, reaches trial accuracy
>= 0.99 on training *and* held-out counts in <= 30 s of training.

    python benchmarks/bench_train.py [--archs gru,lstm,transformer] [--threads 2] [--device cpu]

"seconds" count training only: evaluations (every 25 steps, 1500 trials) are excluded,
checkpoint writing is not (runs here keep nothing on disk).
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
    ap.add_argument("--archs", default="gru,lstm,transformer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(symlib.REPO_ROOT / "out" / "bench_train.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for arch in args.archs.split(","):
        t0 = time.perf_counter()
        r = symlib.train(arch=arch, seed=args.seed, max_steps=args.max_steps, run_dir=None, device=args.device, progress=False)
        wall = time.perf_counter() - t0
        s = r.summary
        row = {"arch": arch, "steps": s["steps"], "train_seconds": s["seconds"], "wall_seconds": round(wall, 1),
               "steps_per_s": round(s["steps"] / s["seconds"], 2), "steps_to_solve": s["steps_to_solve"],
               "seconds_to_solve": s["seconds_to_solve"], "final_trial_acc_train": s["trial_acc_train"],
               "final_trial_acc_heldout": s["trial_acc_heldout"], "best_trial_acc_train": s["best_trial_acc_train"],
               "response_input": r.config.response_input}
        rows.append(row)
        print(json.dumps(row))
    write_report(args.out, args.threads, args.device, rows, [
        ("arch", "{r[arch]}"), ("steps/s", "{r[steps_per_s]}"), ("steps to solve", "{r[steps_to_solve]}"),
        ("seconds to solve", "{r[seconds_to_solve]}"), ("input in response phase", "{r[response_input]}")])

if __name__ == "__main__":
    main()
