"""Dask sweep overhead: a grid of trivial cells on a local cluster, then a rerun of the finished sweep.

Goal (the sweep issue): 20 trivial cells on a local cluster of 2 workers finish in <= 60 s,
cluster start included; a rerun of the finished sweep takes <= 10% of the first run.

    python benchmarks/bench_dask_sweep.py [--cells 20] [--workers 2]

Both timings are ``run_sweep`` calls in this process (symlib already imported): the first
starts a ``LocalCluster`` of ``--workers`` single-threaded worker processes (each imports
symlib), runs every cell and writes the table; the rerun finds every cell done and starts
no cluster. For reference, the rerun as a command (``python -m symlib sweep``, a fresh
process importing torch and symlib) is timed too. The sweep's folder is a temporary one.

Then the cost of torch work inside a Dask worker: one short DAS search (``--das-steps``,
single-threaded) in a plain process, in a process with ``MALLOC_TRIM_THRESHOLD_=65536``
(what a Dask nanny gives its workers; it made DAS 2.5x slower there), and as a sweep cell,
where symlib undoes that setting. The last should match the first.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import symlib
from report import write_report
from symlib.book.sweep import run_sweep

HERE = Path(__file__).resolve().parent


def trivial_cell(x: int) -> dict:
    """The benchmark's cell: no work, one metric."""
    return {"x2": 2 * x}


def das_cell(steps: int = 150) -> dict:
    """A short DAS search (Up-Down count, 16 dims) on an untrained seed-0 GRU; its own seconds.

    The network needs no training: the search's cost does not depend on its weights."""
    import torch

    from symlib.intervene.das import run_das

    torch.manual_seed(0)
    model = symlib.make_model("gru")
    t0 = time.perf_counter()
    run_das(model, symlib.make_task("multiobject"), variable="count", n_units=16, max_steps=steps, n_train=2000,
            n_val=200, n_test=200, eval_every=10 * steps, seed=0, progress=False)
    return {"das_seconds": time.perf_counter() - t0}


def _das_in_process(env_extra: dict, steps: int) -> float:
    """``das_cell`` in a fresh single-threaded process with extra environment variables."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra,
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    code = f"import json, torch; torch.set_num_threads(1); import bench_dask_sweep as b; print(json.dumps(b.das_cell({steps})))"
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["das_seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--das-steps", type=int, default=150, help="steps of the DAS search timed in and out of a sweep")
    ap.add_argument("--out", default=str(symlib.REPO_ROOT / "out" / "bench_dask_sweep.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dask-sweep-"))
    try:
        spec = {"function": "bench_dask_sweep.trivial_cell", "out": str(tmp / "sweep"), "grid": {"x": list(range(args.cells))}}
        t0 = time.perf_counter()
        df = run_sweep(spec, workers=args.workers, threads_per_worker=1, progress=False)
        first = time.perf_counter() - t0
        assert (df.status == "ok").all() and list(df.x2) == [2 * x for x in range(args.cells)], df
        t0 = time.perf_counter()
        df = run_sweep(spec, workers=args.workers, threads_per_worker=1, progress=False)
        rerun = time.perf_counter() - t0
        assert (df.status == "ok").all()
        spec_file = tmp / "grid.yaml"
        spec_file.write_text(yaml.safe_dump(spec))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "symlib.book.sweep", str(spec_file)], env=env, check=True, capture_output=True)
        rerun_cli = time.perf_counter() - t0
        # torch work in a cell: the same DAS search in a plain process, in a process with the
        # Dask nanny's MALLOC_TRIM_THRESHOLD_=65536, and as a sweep cell (symlib undoes that setting)
        plain = _das_in_process({}, args.das_steps)
        nanny = _das_in_process({"MALLOC_TRIM_THRESHOLD_": "65536"}, args.das_steps)
        cell = run_sweep({"function": "bench_dask_sweep.das_cell", "out": str(tmp / "das"), "grid": {"steps": [args.das_steps]}},
                         workers=1, threads_per_worker=1, progress=False)
        assert (cell.status == "ok").all(), cell.error.tolist()
        in_cell = float(cell.das_seconds.iloc[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    row = {"cells": args.cells, "workers": args.workers, "first_run_seconds": round(first, 2),
           "rerun_seconds": round(rerun, 3), "rerun_ratio": round(rerun / first, 4),
           "rerun_cli_seconds": round(rerun_cli, 2), "goal_first_run_60s": first <= 60, "goal_rerun_10pct": rerun <= 0.1 * first,
           "das_steps": args.das_steps, "das_plain_seconds": round(plain, 2), "das_nanny_malloc_seconds": round(nanny, 2),
           "das_sweep_cell_seconds": round(in_cell, 2)}
    print(json.dumps(row))
    write_report(args.out, args.workers, "cpu", [row], [
        ("cells", "{r[cells]}"), ("workers", "{r[workers]}"), ("first run, cluster start included (s)", "{r[first_run_seconds]}"),
        ("rerun, all done (s)", "{r[rerun_seconds]}"), ("rerun / first", "{r[rerun_ratio]:.1%}"),
        ("rerun as a command, imports included (s)", "{r[rerun_cli_seconds]}"),
        ("DAS search: plain process / Dask's malloc setting / sweep cell (s)",
         "{r[das_plain_seconds]} / {r[das_nanny_malloc_seconds]} / {r[das_sweep_cell_seconds]}")], cores=os.cpu_count())


if __name__ == "__main__":
    main()
