"""`make book` in a fresh clone, timed: install, the whole book, and each chapter.

Goal: the book (install included, from an empty data folder) in <= 20 minutes on the
2-core development machine. Clones this repository's committed HEAD into a temporary
folder, runs `make book` there (JOBS=N to choose how many chapters run at once; default:
the book's own choice) and reads the book runner's `out/book_times.json`.

    python benchmarks/bench_book.py [--jobs N] [--keep]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import symlib
from report import write_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=None, help="chapters at once (make book JOBS=N)")
    ap.add_argument("--keep", action="store_true", help="keep the clone (its out/, data/ and figures/)")
    ap.add_argument("--out", default=str(symlib.REPO_ROOT / "out" / "bench_book.json"))
    args = ap.parse_args()
    clone = Path(tempfile.mkdtemp(prefix="bench-book-")) / "symlib"
    subprocess.run(["git", "clone", "-q", str(symlib.REPO_ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    t0 = time.perf_counter()
    subprocess.run(["make", "venv"], cwd=clone, check=True, stdout=subprocess.DEVNULL)
    t_install = time.perf_counter() - t0
    subprocess.run(["make", "book", *([f"JOBS={args.jobs}"] if args.jobs else [])], cwd=clone, check=True)
    total = time.perf_counter() - t0
    times = json.loads((clone / "out" / "book_times.json").read_text())
    rows = [{"part": "install (make venv)", "seconds": round(t_install, 1), "started": 0.0}]
    rows += [{"part": name, "seconds": r["seconds"], "started": round(t_install + (r["started"] or 0), 1)}
             for name, r in sorted(times["chapters"].items(), key=lambda kv: kv[1]["started"] or 0)]
    rows.append({"part": "make book, all", "seconds": round(total, 1), "started": 0.0})
    write_report(args.out, times["threads"], "cpu", rows,
                 [("part", "{r[part]}"), ("started at (s)", "{r[started]}"), ("seconds", "{r[seconds]}")],
                 commit=commit, jobs=times["jobs"], torch_threads_per_chapter=times["threads"])
    print(f"make book: {total / 60:.1f} min (install {t_install / 60:.1f} min) at {commit}, {times['jobs']} chapter(s) at once")
    if not args.keep:
        shutil.rmtree(clone.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
