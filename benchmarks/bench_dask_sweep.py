"""Dask sweep overhead: a grid of trivial cells on a local cluster, then a rerun of the finished sweep.

Goal (the sweep issue): 20 trivial cells on a local cluster of 2 workers finish in <= 60 s,
cluster start included; a rerun of the finished sweep takes <= 10% of the first run.

    python benchmarks/bench_dask_sweep.py [--cells 20] [--workers 2]

Both timings are ``run_sweep`` calls in this process (symlib already imported): the first
starts a ``LocalCluster`` of ``--workers`` single-threaded worker processes (each imports
symlib), runs every cell and writes the table; the rerun finds every cell done and starts
no cluster. For reference, the rerun as a command (``python -m symlib.sweep``, a fresh
process importing torch and symlib) is timed too. The sweep's folder is a temporary one.
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
from symlib.sweep import run_sweep

HERE = Path(__file__).resolve().parent


def trivial_cell(x: int) -> dict:
    """The benchmark's cell: no work, one metric."""
    return {"x2": 2 * x}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
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
        subprocess.run([sys.executable, "-m", "symlib.sweep", str(spec_file)], env=env, check=True, capture_output=True)
        rerun_cli = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    row = {"cells": args.cells, "workers": args.workers, "first_run_seconds": round(first, 2),
           "rerun_seconds": round(rerun, 3), "rerun_ratio": round(rerun / first, 4),
           "rerun_cli_seconds": round(rerun_cli, 2), "goal_first_run_60s": first <= 60, "goal_rerun_10pct": rerun <= 0.1 * first}
    print(json.dumps(row))
    write_report(args.out, args.workers, "cpu", [row], [
        ("cells", "{r[cells]}"), ("workers", "{r[workers]}"), ("first run, cluster start included (s)", "{r[first_run_seconds]}"),
        ("rerun, all done (s)", "{r[rerun_seconds]}"), ("rerun / first", "{r[rerun_ratio]:.1%}"),
        ("rerun as a command, imports included (s)", "{r[rerun_cli_seconds]}")], cores=os.cpu_count())


if __name__ == "__main__":
    main()
