"""MAS speed: a step over several networks against a DAS step on one of them.

Goal (issue 9): a MAS step over two networks costs <= 2.5x a DAS step on one of them (same
batch and subspace size), measured in one run; steps/s for 2 and 5 networks.

    python benchmarks/bench_mas.py [--threads 2] [--device cpu] [--steps 100]

Networks: the book's MultiObject runs (GRU seeds 0-2, LSTM and Transformer seed 0; trained
first when missing). Each row times ``--steps`` training steps of ``symlib.run_mas`` with
every direction between its networks (source = target included; a one-network search *is*
a DAS search: the same interchange, continuation, loss and Adam step), batch 128 per target
network, 16 dims, no early stop; states and pairs are computed before the clock starts, and
one validation pass on 100 pairs at the last step is inside it.
"""
from __future__ import annotations

import argparse
import json

import torch

import symlib
from symlib.intervene import mas
from report import write_report

NETWORKS = {"gru:0": ("gru", 0), "gru:1": ("gru", 1), "gru:2": ("gru", 2), "lstm:0": ("lstm", 0), "transformer:0": ("transformer", 0)}
ROWS = [("DAS: gru:0 alone", ["gru:0"]), ("MAS: gru:0 + gru:1", ["gru:0", "gru:1"]),
        ("MAS: gru:0 + lstm:0", ["gru:0", "lstm:0"]), ("MAS: 5 networks", list(NETWORKS))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", default=str(symlib.REPO_ROOT / "out" / "bench_mas.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = symlib.make_task("multiobject")
    models = {}
    for name, (arch, seed) in NETWORKS.items():
        kw = {"max_steps": 1000} if arch == "transformer" else {}
        models[name] = symlib.load_or_train("multiobject", arch, seed, device=args.device, progress=False, **kw).model
    cfg = mas.MASConfig(n_units=16, batch_size=128, n_train=4000, n_val=100, n_test=100, max_steps=args.steps,
                        eval_every=args.steps, patience=0, target_iia=2.0)
    rows = []
    for label, names in ROWS:
        res = mas.run_mas([(n, models[n], task) for n in names], cfg, progress=False, evaluate_all=False, controls=False)
        s = res.metrics["seconds"]
        rows.append({"search": label, "networks": len(names), "directions": len(names) ** 2, "steps": res.metrics["steps"],
                     "seconds": round(s, 2), "ms_per_step": round(1000 * s / res.metrics["steps"], 1),
                     "steps_per_s": round(res.metrics["steps"] / s, 2)})
        print(json.dumps(rows[-1]))
    base = rows[0]["ms_per_step"]
    for r in rows:
        r["x_das_step"] = round(r["ms_per_step"] / base, 2)
    write_report(args.out, args.threads, args.device, rows, [
        ("search", "{r[search]}"), ("directions", "{r[directions]}"), ("ms / step", "{r[ms_per_step]}"),
        ("steps/s", "{r[steps_per_s]}"), ("x a DAS step", "{r[x_das_step]}")])


if __name__ == "__main__":
    main()
