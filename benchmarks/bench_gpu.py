"""The README's speed figures on one device (made for CUDA): a DAS step, MAS steps up to five
networks, five seeds trained together, IIA over the checkpoints of one run.

Each part does what its CPU benchmark does, with the device named (the CPU scripts fix the CPU):

- ``das``: ``bench_das.py``'s DAS step (the seed-0 GRU, Up-Down count, orthogonal, 16 dims,
  batch 128: ms per step, mean and median of 100 after 5 warm-up steps) and seconds from the
  trained network to validation trial IIA >= 0.95;
- ``mas``: ``bench_mas.py``'s rows (DAS on gru:0 alone, MAS on two GRUs, a GRU and an LSTM, and
  five networks: three GRUs, an LSTM and a Transformer), 100 steps each;
- ``seeds``: ``bench_seeds.py``'s five GRU seeds trained to solved as one batched network, and
  seed 0 alone for comparison (the batched network is the lever on a GPU);
- ``dynamics``: ``bench_dynamics.py``'s warm-started searches at every checkpoint of the seed-0
  GRU's run (>= 15 checkpoints).

The book's networks are loaded from data/runs, or trained there first (on this device) when
missing, as the CPU benchmarks do. ``--tiny`` runs every part at a toy size on small untrained
or briefly trained networks kept in a temporary folder (seconds on a CPU: the check that the
script works, ``benchmarks/gpu.sh --dry-run``); its figures mean nothing.

    python benchmarks/bench_gpu.py [--device cuda] [--tiny] [--parts das,mas,seeds,dynamics] [--out out/bench_gpu.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

PARTS = ("das", "mas", "seeds", "dynamics")


def device_name(device: str) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def sizes(tiny: bool) -> dict:
    """Every size a part uses: the README's at full size, toy ones with ``tiny``."""
    if tiny:
        return dict(d_model=16, n_units=4, batch=32, das_steps=5, das_pairs=dict(n_train=256, n_val=64, n_test=64),
                    das_cap=6, mas_steps=3, mas_pairs=dict(n_train=128, n_val=32, n_test=32), seeds=[0, 1],
                    train=dict(d_model=16, max_steps=10, eval_every=5, n_eval_trials=32, n_train_trials=64),
                    dyn_train=dict(d_model=16, max_steps=50, eval_every=25, n_eval_trials=32, n_train_trials=64),
                    dyn_search=dict(n_train=128, n_val=32, n_test=32, max_steps=4, eval_every=2, n_units=4), dyn_warm=2)
    return dict(d_model=128, n_units=16, batch=128, das_steps=100, das_pairs={}, das_cap=3000, mas_steps=100,
                mas_pairs=dict(n_train=4000, n_val=100, n_test=100), seeds=[0, 1, 2, 3, 4], train={},
                dyn_train=None, dyn_search=None, dyn_warm="default")


def networks(device: str, tiny: bool, names) -> dict:
    """The networks the DAS and MAS parts use: the book's (trained if missing) or tiny untrained ones."""
    import symlib
    from bench_mas import NETWORKS
    out = {}
    for name in names:
        arch, seed = NETWORKS[name]
        if tiny:
            torch.manual_seed(seed)
            m = symlib.make_model(arch, vocab_size=symlib.make_task("multiobject").vocab_size, d_model=16).to(device)
        else:
            kw = {"max_steps": 1000} if arch == "transformer" else {}
            m = symlib.load_or_train("multiobject", arch, seed, device=device, progress=False, **kw).model
        out[name] = m.eval()
    return out


def part_das(device: str, tiny: bool, S: dict) -> list[dict]:
    import symlib
    from bench_das import ms_per_step
    from symlib.intervene.das import make_search_pairs
    from symlib.intervene.iia import PairStates
    model = networks(device, tiny, ["gru:0"])["gru:0"]
    task = symlib.make_task("multiobject")
    cfg = symlib.DASConfig(max_steps=S["das_cap"], target_iia=0.95, n_units=S["n_units"], batch_size=S["batch"],
                           **({"eval_every": 3} if tiny else {}), **S["das_pairs"])
    pairs = make_search_pairs(task, cfg)
    mean_ms, median_ms = ms_per_step(model, PairStates.compute(model, pairs["train"], model.default_site),
                                     n_units=S["n_units"], steps=S["das_steps"], batch=S["batch"])
    res = symlib.run_das(model, task, cfg, pairs=pairs, progress=False)
    m = res.metrics
    return [{"part": "das", "what": f"DAS step, gru:0 (orthogonal, {S['n_units']} dims, batch {S['batch']})", "ms_per_step_mean": round(mean_ms, 2),
             "ms_per_step_median": round(median_ms, 2), "steps_per_s": round(1000 / mean_ms, 1),
             "seconds_to_iia_0.95": m["seconds_to_iia_0.95"], "iia_changed_test": m["iia_changed_test"], "search_steps": m["steps"]}]


def part_mas(device: str, tiny: bool, S: dict) -> list[dict]:
    from bench_mas import ROWS
    from symlib.intervene import mas
    import symlib
    task = symlib.make_task("multiobject")
    models = networks(device, tiny, sorted({n for _, names in ROWS for n in names}))
    cfg = mas.MASConfig(n_units=S["n_units"], batch_size=S["batch"], max_steps=S["mas_steps"], eval_every=S["mas_steps"],
                        patience=0, target_iia=2.0, **S["mas_pairs"])
    rows = []
    for label, names in ROWS:
        res = mas.run_mas([(n, models[n], task) for n in names], cfg, progress=False, evaluate_all=False, controls=False)
        s = res.metrics["seconds"]
        rows.append({"part": "mas", "what": label, "directions": len(names) ** 2, "steps": res.metrics["steps"],
                     "ms_per_step": round(1000 * s / res.metrics["steps"], 2), "steps_per_s": round(res.metrics["steps"] / s, 2)})
    for r in rows:
        r["x_das_step"] = round(r["ms_per_step"] / rows[0]["ms_per_step"], 2)
    return rows


def part_seeds(device: str, tiny: bool, S: dict) -> list[dict]:
    from symlib.networks.batched import train_seeds
    from symlib.networks.training import train
    seeds = S["seeds"]
    t0 = time.perf_counter()
    bat = train_seeds(seeds, arch="gru", run_dirs=None, device=device, progress=False, **S["train"])
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    lone = train(arch="gru", seed=seeds[0], run_dir=None, device=device, progress=False, **S["train"])
    alone = time.perf_counter() - t0
    return [{"part": "seeds", "what": f"{len(seeds)} GRU seeds trained together, to solved", "seconds": round(batched, 1),
             "steps_to_solve": [r.summary["steps_to_solve"] for r in bat]},
            {"part": "seeds", "what": f"seed {seeds[0]} alone, the same recipe", "seconds": round(alone, 1),
             "steps_to_solve": [lone.summary["steps_to_solve"]],
             "batched_vs_one_alone_x_seeds": round(len(seeds) * alone / batched, 2)}]


def part_dynamics(device: str, tiny: bool, S: dict) -> list[dict]:
    import symlib
    from symlib.analyses.dynamics import iia_over_training
    from symlib.paths import runs_dir
    if tiny:
        run = runs_dir() / "tiny-gru-dynamics"
        symlib.train(task="multiobject", arch="gru", run_dir=run, device=device, progress=False, **S["dyn_train"])
        kw = dict(cfg=symlib.DASConfig(**S["dyn_search"]), warm_steps=S["dyn_warm"])
    else:
        symlib.load_or_train("multiobject", "gru", 0, device=device, progress=False)
        run = runs_dir() / "multiobject-gru-d128-s0"
        kw = {}
    steps = symlib.checkpoint_steps(run)
    t0 = time.perf_counter()
    table = iia_over_training(run, warm=True, store=None, device=device, progress=False, **kw).table
    secs = time.perf_counter() - t0
    return [{"part": "dynamics", "what": f"IIA over training, {len(steps)} checkpoints of {run.name} (warm)",
             "checkpoints": len(steps), "seconds": round(secs, 1), "final_iia_changed": float(table.iia_changed_test.iloc[-1])}]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy sizes in a temporary data folder: checks the script, measures nothing")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--tests", default=None, help="the GPU tests' outcome to record (gpu.sh passes pytest's last line)")
    ap.add_argument("--out", default=None, help="JSON to write (default: out/bench_gpu.json, out/bench_gpu_tiny.json with --tiny)")
    a = ap.parse_args(argv)
    parts = [p for p in a.parts.split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise SystemExit(f"unknown part(s) {bad}; choose from {', '.join(PARTS)}")
    if a.threads:
        torch.set_num_threads(a.threads)
    if torch.device(a.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here (torch.cuda.is_available() is False); use --device cpu --tiny to check the script")
    tmp = None
    if a.tiny and "SYMLIB_DATA" not in os.environ:  # never write the reader's data/ with toy runs
        tmp = tempfile.TemporaryDirectory(prefix="symlib-gpu-tiny-")
        os.environ["SYMLIB_DATA"] = tmp.name
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import symlib
    from report import write_report
    out = a.out or str(symlib.REPO_ROOT / "out" / ("bench_gpu_tiny.json" if a.tiny else "bench_gpu.json"))
    S = sizes(a.tiny)
    name = device_name(a.device)
    print(f"device: {name}{' (tiny sizes: the figures mean nothing)' if a.tiny else ''}", flush=True)
    rows, errors, seconds = [], {}, {}
    for part in parts:
        t0 = time.perf_counter()
        try:
            got = globals()[f"part_{part}"](a.device, a.tiny, S)
            rows += got
            for r in got:
                print(json.dumps(r), flush=True)
        except Exception as e:  # the other parts still run; the script fails at the end
            errors[part] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        seconds[part] = round(time.perf_counter() - t0, 1)
        print(f"{part}: {seconds[part]} s{' (failed)' if part in errors else ''}", flush=True)
    for r in rows:
        r["figure"] = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("part", "what", "figure"))
    write_report(out, torch.get_num_threads(), name, rows, [("part", "{r[part]}"), ("what", "{r[what]}"), ("figures", "{r[figure]}")],
                 device_name=name, tiny=a.tiny, part_seconds=seconds, errors=errors, gpu_tests=a.tests,
                 cuda=torch.version.cuda, when=time.strftime("%Y-%m-%d %H:%M:%S"))
    print(f"written: {out}")
    if tmp is not None:
        tmp.cleanup()
    if errors:
        raise SystemExit(f"failed: {', '.join(errors)}")


if __name__ == "__main__":
    main()
