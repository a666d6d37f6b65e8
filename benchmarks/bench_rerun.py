"""A rerun of chapter 03 with its searches cached: seconds from start to the metrics JSON.

Goal (issue 6): <= 60 s on a 2-core CPU. Runs notebook 03 at its default size twice with
papermill (the first run fills data/das_store, unless `make book` already did) and reports
the second run's own clock (``notebook_seconds``) and papermill's wall time.

    python benchmarks/bench_rerun.py
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import symlib
from report import write_report


def run_once(out_dir: Path, tag: str) -> tuple[float, dict]:
    res = out_dir / f"{tag}.json"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "papermill", "--cwd", str(symlib.REPO_ROOT / "notebooks"),
                    str(symlib.REPO_ROOT / "notebooks" / "03_das_alignment.ipynb"), str(out_dir / f"{tag}.ipynb"),
                    "-p", "RESULTS_PATH", str(res)], check=True, capture_output=True)
    return time.perf_counter() - t0, json.loads(res.read_text())


def main():
    out = Path(tempfile.mkdtemp(prefix="bench-rerun-"))
    first_wall, first = run_once(out, "first")
    wall, m = run_once(out, "rerun")
    row = {"first_notebook_seconds": first["notebook_seconds"], "first_wall_seconds": round(first_wall, 1),
           "rerun_notebook_seconds": m["notebook_seconds"], "rerun_wall_seconds": round(wall, 1),
           "same_numbers": first["iia_test"] == m["iia_test"] and first["iia_vs_units"] == m["iia_vs_units"]}
    print(json.dumps(row))
    write_report(str(symlib.REPO_ROOT / "out" / "bench_rerun.json"), 2, "cpu", [row], [
        ("first run (s, notebook clock)", "{r[first_notebook_seconds]}"), ("rerun (s, notebook clock)", "{r[rerun_notebook_seconds]}"),
        ("rerun (s, papermill wall)", "{r[rerun_wall_seconds]}"), ("same numbers", "{r[same_numbers]}")])


if __name__ == "__main__":
    main()
