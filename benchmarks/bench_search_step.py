"""Milliseconds per search step for each alignment function, and for a user's own GRU module.

One step as ``run_das_with_controls`` takes it: the search and its two learned controls
(wrong labels, wrong program) batched, on the book's seed-0 GRU (width 128, Up-Down count,
16 dims, batch 128 per member); and one orthogonal search (no controls) on a plain PyTorch
GRU module of width 64 wrapped with ``symlib.wrap_model`` (as in chapter 07), measured first.

    python benchmarks/bench_search_step.py [--threads 2] [--steps 100]

Each figure is (time of a (steps + 10)-step search - time of a 10-step search) / steps, so
pair making, state precomputation and the final evaluation cancel out; validation is off.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
import torch.nn as nn

import symlib
from symlib.intervene.controls import control_configs
from report import write_report


class MyCounter(nn.Module):
    """A user's module with no symlib inside (chapter 07's)."""

    def __init__(self, vocab_size: int, d: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d)
        self.rnn = nn.GRU(d, d, batch_first=True)
        self.readout = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, vocab_size))

    def forward(self, tokens):
        return self.readout(self.rnn(self.embed(tokens))[0])


def ms_per_step(model, task, cfgs, steps: int) -> float:
    # a warm-up search first: the first call in a process pays one-time costs that would otherwise
    # land in the 10-step run and shrink the difference
    symlib.run_das_batch(model, task, [replace(c, max_steps=5) for c in cfgs], progress=False, token_iia=False)
    times = []
    for n in (10, steps + 10):
        t0 = time.perf_counter()
        symlib.run_das_batch(model, task, [replace(c, max_steps=n) for c in cfgs], progress=False, token_iia=False)
        times.append(time.perf_counter() - t0)
    return 1000 * (times[1] - times[0]) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", default=str(symlib.REPO_ROOT / "out" / "bench_search_step.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = symlib.make_task("multiobject")
    base = symlib.DASConfig(program="up_down", variable="count", n_units=16, seed=0, n_train=2000, n_val=200,
                            n_test=200, n_test_heldout=0, eval_every=100_000)
    torch.manual_seed(0)
    own = symlib.wrap_model(MyCounter(task.vocab_size, 64), site="rnn")
    out = {"your GRU module, orthogonal": round(ms_per_step(own, task, [base], args.steps), 1)}
    print(f"your GRU module, orthogonal: {out['your GRU module, orthogonal']} ms/step", flush=True)
    gru = symlib.load_or_train("multiobject", "gru", 0, device="cpu").model
    for kind in symlib.ALIGNMENT_NAMES:
        c = replace(base, alignment=kind)
        out[f"book GRU, {kind} + 2 controls"] = round(ms_per_step(gru, task, [c, *control_configs(c, task).values()], args.steps), 1)
        print(f"{kind:10s} with its controls: {out[f'book GRU, {kind} + 2 controls']} ms/step", flush=True)
    write_report(args.out, args.threads, "cpu", [{"search": k, "ms": v} for k, v in out.items()],
                 [("search (one step)", "{r[search]}"), ("ms", "{r[ms]:.1f}")], steps=args.steps)


if __name__ == "__main__":
    main()
