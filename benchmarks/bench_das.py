"""DAS speed: milliseconds per alignment step and time from a trained network to IIA >= 0.95.

Goal (issue 3): GRU width 128, count variable, n_units 16, batch 128, 2 CPU threads:
<= 25 ms per DAS step, and <= 60 s from a trained network to validation trial IIA >= 0.95.
(The reference code: about 1 s per step on the same kind of machine.)

    python benchmarks/bench_das.py [--archs gru,lstm,transformer] [--threads 2] [--device cpu]

Networks are loaded from data/runs (trained first if missing, as notebook 02 does).
"ms/step" times 100 bare training steps (interchange, continuation, backward, Adam) after
5 warm-up steps; "seconds to IIA 0.95" is a whole run_das call from the frozen network
(no results store): pair generation and state precomputation excluded, validation every
50 steps included.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import symlib
from symlib.intervene.das import make_search_pairs
from symlib.intervene.iia import PairStates, das_loss, frozen, scored_logits
from report import write_report


def ms_per_step(model, states: PairStates, n_units=16, steps=100, batch=128):
    """Mean and median milliseconds of one orthogonal DAS training step."""
    site = model.default_site
    align = symlib.make_alignment("orthogonal", model.state_size(site), [n_units], seed=0).to(model.device)
    opt = torch.optim.Adam(align.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    times = []
    with frozen(model):
        for i in range(steps + 5):
            idx = torch.randint(len(states), (batch,), generator=g)
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            tokens, mask, pos, ht, hs, swap = states.batch(idx, model.device)
            logits, tgt, on_mask, _ = scored_logits(model, align, tokens, mask, pos, ht, hs, swap, site)
            loss = das_loss(logits, tgt, on_mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 5:
                times.append(time.perf_counter() - t0)
    times.sort()
    return 1000 * sum(times) / len(times), 1000 * times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="gru,lstm,transformer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--out", default=str(symlib.REPO_ROOT / "out" / "bench_das.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    task = symlib.make_task("multiobject")
    cfg = symlib.DASConfig(max_steps=args.max_steps, target_iia=0.95)
    t0 = time.perf_counter()
    pairs = make_search_pairs(task, cfg)
    gen_s = time.perf_counter() - t0
    rows = []
    for arch in args.archs.split(","):
        model = symlib.load_or_train("multiobject", arch, 0, device=args.device, progress=False,
                                     **({"max_steps": 1000} if arch.startswith("transformer") else {})).model
        mean_ms, median_ms = ms_per_step(model, PairStates.compute(model, pairs["train"], model.default_site))
        res = symlib.run_das(model, task, cfg, pairs=pairs, progress=False)
        m = res.metrics
        row = {"arch": arch, "ms_per_step_mean": round(mean_ms, 1), "ms_per_step_median": round(median_ms, 1),
               "steps_per_s": round(1000 / mean_ms, 1), "seconds_to_iia_0.95": m["seconds_to_iia_0.95"],
               "iia_test": m["iia_test"], "iia_changed_test": m["iia_changed_test"], "steps": m["steps"],
               "stopped_because": m["stopped_because"]}
        rows.append(row)
        print(json.dumps(row))
    print(f"pairs: {sum(len(p) for p in pairs.values())} generated in {gen_s:.1f} s")
    write_report(args.out, args.threads, args.device, rows, [
        ("arch", "{r[arch]}"), ("ms / DAS step (mean, median)", "{r[ms_per_step_mean]}, {r[ms_per_step_median]}"),
        ("steps/s", "{r[steps_per_s]}"), ("seconds to validation IIA 0.95", "{r[seconds_to_iia_0.95]}"),
        ("test IIA (changed pairs) when stopped", "{r[iia_test]:.3f} ({r[iia_changed_test]:.3f})")], pair_generation_seconds=round(gen_s, 2))


if __name__ == "__main__":
    main()
