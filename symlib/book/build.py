"""Run the book: every chapter at its default size, two at a time where they do not depend
on each other.

    python -m symlib book [--jobs N] [--only CHAPTER,...] [--out out] [--dry-run]

``make book`` runs this. Each chapter is executed with papermill into ``<out>/<name>.ipynb``
(outputs and widget state kept), its metrics go to ``<out>/<name>.json`` and what the kernel
printed to ``<out>/logs/<name>.log``. A chapter starts once the chapters it needs have
finished (chapter 03 needs the GRU that chapter 00 trains, say); among those ready, the one
earlier in ``CHAPTERS`` goes first.

Why two at a time: on a small CPU a DAS step of these networks is too small to keep two
threads busy (one thread: 1.5x the time of two), so two chapters with one thread each do
about 1.25x the work of one chapter with two. Training is different: a Transformer trains
1.75x slower on one thread, and a network's weights depend, in float rounding, on the thread
count that trained it. So the chapters that train the book's networks (00, 02) run first,
one at a time with every core (``alone``), and give the same networks as a reader training
them in JupyterLab; the others (01, 03-08) then run two at a time with one thread each,
chapters 03 and 06 (the longest) first. Every chapter runs at a reader's size (see ``CHAPTERS``):
what it reports as a finding converges, its illustrations stop at a stated cap, and chapters 05
and 06 show their full runs from results/ beside their own. ``--jobs 1`` runs every chapter one after another with
every core. Torch threads per chapter that is not alone: the cores divided by the jobs.

Exit status: 0 when every chapter ran, 1 when one failed (the chapters running then
finish, no other starts), 2 for bad input, 130 on Ctrl-C and 143 on SIGTERM (the
running chapters are stopped; what they trained and searched is kept in ``data/``, so the
same command goes on from there).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..paths import REPO_ROOT
from ..utils import THREAD_VARS, Terminated, atomic_write_json, cpu_cores, raise_terminated


@dataclass(frozen=True)
class Chapter:
    """One executed notebook of the book: ``name`` is its output's name, ``notebook`` the file it runs."""

    name: str
    notebook: str
    params: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    alone: bool = False  # run with no other chapter, with every core (chapters that train the book's networks)


#: The book, in the order chapters start when several are ready: the networks first (each alone),
#: then the analyses two at a time, the longest (03 and 06) first.
CHAPTERS: tuple[Chapter, ...] = (
    Chapter("00_quickstart", "00_quickstart", alone=True),
    Chapter("02_train_models_gru", "02_train_models", {"ARCH": "gru"}, needs=("00_quickstart",), alone=True),
    Chapter("02_train_models_lstm", "02_train_models", {"ARCH": "lstm"}, alone=True),
    Chapter("02_train_models_transformer", "02_train_models", {"ARCH": "transformer"}, alone=True),  # the book's cap: 1000 steps
    # the analyses, longest first: 03 and 06 start side by side, the shorter ones fill in around them. A reader's
    # size: the searches a chapter reports as findings run to convergence; its illustrations run at a smaller,
    # stated cap (ILLUSTRATION_STEPS, MAX_STEPS of chapter 04, SWEEP_STEPS of chapter 06), and chapters 05 and 06
    # take the book's seed-0 networks and show their full runs at convergence (results/) beside their own
    Chapter("03_das_alignment", "03_das_alignment", {"ILLUSTRATION_STEPS": 300}, needs=("02_train_models_gru",)),
    Chapter("06_model_alignment_search", "06_model_alignment_search",
            {"NETWORKS": "gru:0,lstm:0,transformer:0", "UNITS": "1,16", "CROSS_TASK": "", "SWEEP_STEPS": 150},
            needs=("02_train_models_gru", "02_train_models_lstm", "02_train_models_transformer")),
    Chapter("07_your_own_model", "07_your_own_model", needs=("02_train_models_gru",)),
    Chapter("04_compare_programs", "04_compare_programs", {"MAX_STEPS": 300},
            needs=("02_train_models_gru", "02_train_models_transformer")),
    Chapter("01_tasks_and_programs", "01_tasks_and_programs"),
    Chapter("08_explorer", "08_explorer", needs=("03_das_alignment",)),
    Chapter("05_learning_dynamics", "05_learning_dynamics",
            {"ARCHS": "gru,lstm", "SEEDS": "0", "N_CHECKPOINTS": 6, "WARM_STEPS": 300, "COLD_CHECK": 0},
            needs=("02_train_models_gru", "02_train_models_lstm")),
)


def check_plan(chapters: Sequence[Chapter]) -> None:
    """Raise a ValueError for a repeated name, a need that is not a chapter, or a cycle."""
    names = [c.name for c in chapters]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"chapter names must be unique; repeated: {', '.join(dup)}")
    for c in chapters:
        missing = [n for n in c.needs if n not in names]
        if missing:
            raise ValueError(f"{c.name} needs {', '.join(missing)}, which is not a chapter; chapters: {', '.join(names)}")
    done: set[str] = set()
    left = list(chapters)
    while left:
        ready = [c for c in left if set(c.needs) <= done]
        if not ready:
            raise ValueError(f"these chapters need each other in a cycle: {', '.join(c.name for c in left)}")
        done |= {c.name for c in ready}
        left = [c for c in left if c.name not in done]


def width(chapters: Sequence[Chapter]) -> int:
    """How many chapters could run at once: the most that sit at one depth of the plan (``alone``
    chapters not counted)."""
    by_name = {c.name: c for c in chapters}
    depth: dict[str, int] = {}

    def d(name: str) -> int:  # the plan has no cycle (check_plan)
        if name not in depth:
            depth[name] = 1 + max((d(n) for n in by_name[name].needs if n in by_name), default=-1)
        return depth[name]

    levels = [d(c.name) for c in chapters if not c.alone]
    return max((levels.count(k) for k in set(levels)), default=1)


def select(chapters: Sequence[Chapter], only: Sequence[str]) -> list[Chapter]:
    """The chapters named in ``only`` and everything they need, in book order (all when empty)."""
    by_name = {c.name: c for c in chapters}
    unknown = [n for n in only if n not in by_name]
    if unknown:
        raise ValueError(f"unknown chapter {', '.join(map(repr, unknown))}; chapters: {', '.join(by_name)}")
    if not only:
        return list(chapters)
    want: set[str] = set()
    stack = list(only)
    while stack:
        n = stack.pop()
        if n not in want:
            want.add(n)
            stack.extend(by_name[n].needs)
    return [c for c in chapters if c.name in want]


def papermill_command(c: Chapter, out: Path, notebooks: Path) -> list[str]:
    """The papermill call that runs chapter ``c`` into ``out``."""
    cmd = [sys.executable, "-m", "papermill", "--cwd", str(notebooks), "--no-progress-bar",
           str(notebooks / f"{c.notebook}.ipynb"), str(out / f"{c.name}.ipynb")]
    for k, v in {**c.params, "RESULTS_PATH": str(out / f"{c.name}.json")}.items():
        cmd += ["-p", k, str(v)]
    return cmd


def cells_done(path: Path) -> tuple[int, int] | None:
    """(code cells finished, code cells) of a notebook papermill is writing; None while unreadable."""
    try:
        nb = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    done = sum(1 for c in code if c.get("metadata", {}).get("papermill", {}).get("status") == "completed")
    return done, len(code)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


@dataclass
class _Job:
    chapter: Chapter
    proc: subprocess.Popen
    log: object
    start: float
    threads: int


def run_book(chapters: Sequence[Chapter], out: Path, jobs: int = 2, threads: int | None = None,
             command: Callable[[Chapter, Path], list[str]] | None = None, notebooks: Path | None = None,
             poll: float = 0.5, status_every: float = 60.0, stream=None) -> dict:
    """Run ``chapters`` with at most ``jobs`` at once, each after the chapters it needs.

    ``command(chapter, out)`` gives the process to run (default: papermill on the chapter's
    notebook); each gets ``threads`` torch threads (default: cores // jobs) through the
    usual environment variables, an ``alone`` chapter every core (``threads * jobs``) with no
    other chapter beside it, and so does the last chapter to start when nothing else is running. Among the chapters ready to start, the earliest in ``chapters``
    goes first; while it waits to run alone, no later chapter starts. After a failure no
    chapter starts; those running finish. Returns ``{"chapters": {name: {"status",
    "seconds", "started", "log"}}, "seconds", "jobs", "threads"}`` and writes it to
    ``<out>/book_times.json``; chapters not run are ``skipped``.
    """
    check_plan(chapters)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    jobs = min(jobs, width(chapters))  # a chain of chapters gets every thread
    stream = stream or sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    threads = max(1, threads or cpu_cores() // jobs)
    notebooks = Path(notebooks or REPO_ROOT / "notebooks")
    command = command or (lambda c, o: papermill_command(c, o, notebooks))
    out = Path(out).resolve()  # the kernels run in notebooks/: a relative RESULTS_PATH would land there
    (out / "logs").mkdir(parents=True, exist_ok=True)
    env_for = {n: {**os.environ, **{v: str(n) for v in THREAD_VARS}} for n in (threads, threads * jobs)}
    pending = list(chapters)
    running: list[_Job] = []
    status: dict[str, dict] = {}
    t0 = time.perf_counter()
    last_status = t0

    def entry(state: str, job: _Job | None = None, **extra) -> dict:
        """A chapter's line in book_times.json."""
        if job is None:
            return {"status": state, "seconds": 0.0, "started": None, "log": None, **extra}
        return {"status": state, "seconds": round(time.perf_counter() - job.start, 1), "started": round(job.start - t0, 1),
                "threads": job.threads, "log": str(out / "logs" / f"{job.chapter.name}.log"), **extra}

    def say(text: str) -> None:
        print(("\r\033[K" if tty else "") + text, file=stream, flush=True)

    seen: dict[str, tuple] = {}  # notebook -> (mtime, cells): read a notebook again only when it changed

    def progress(job: _Job) -> str:
        path = out / f"{job.chapter.name}.ipynb"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = None
        if mtime is not None and seen.get(job.chapter.name, (None,))[0] != mtime:
            seen[job.chapter.name] = (mtime, cells_done(path))
        cells = seen.get(job.chapter.name, (None, None))[1]
        part = f"{cells[0]}/{cells[1]} cells, " if cells else ""
        return f"{job.chapter.name} ({part}{_clock(time.perf_counter() - job.start)})"

    say(f"the book: {len(chapters)} notebook run(s), {jobs} at a time, {threads} torch thread(s) each; "
        f"executed notebooks in {out}/, logs in {out}/logs/")
    try:
        while pending or running:
            failed = {n for n, s in status.items() if s["status"] in ("failed", "skipped")}
            for c in [c for c in pending if set(c.needs) & failed]:
                pending.remove(c)
                why = f"needs {', '.join(sorted(set(c.needs) & failed))}"
                status[c.name] = entry("skipped", why=why)
                say(f"  skipped  {c.name}: it {why}")
            done = {n for n, s in status.items() if s["status"] == "ok"}
            while len(running) < jobs and not failed and not any(j.chapter.alone for j in running):
                ready = next((c for c in pending if set(c.needs) <= done), None)
                if ready is None or (ready.alone and running):
                    break
                pending.remove(ready)
                log_path = out / "logs" / f"{ready.name}.log"
                log = open(log_path, "w")
                # a chapter with no other beside it and none left to start after it would leave cores idle on
                # one thread: it gets every core, as an alone chapter does
                last = not running and not pending
                n_threads = threads * jobs if ready.alone or last else threads
                proc = subprocess.Popen(command(ready, out), stdout=log, stderr=subprocess.STDOUT, env=env_for[n_threads],
                                        cwd=REPO_ROOT, start_new_session=True)
                running.append(_Job(ready, proc, log, time.perf_counter(), n_threads))
                say(f"  started  {ready.name}  [{_clock(time.perf_counter() - t0)}]"
                    + (f" alone, {n_threads} thread(s)" if (ready.alone or last) and jobs > 1 else ""))
            if failed and not running:
                for c in pending:
                    status[c.name] = entry("skipped", why="an earlier chapter failed")
                pending = []
                break
            time.sleep(poll)
            for job in list(running):
                rc = job.proc.poll()
                if rc is None:
                    continue
                running.remove(job)
                job.log.close()
                secs = time.perf_counter() - job.start
                name = job.chapter.name
                status[name] = entry("ok", job) if rc == 0 else entry("failed", job, returncode=rc)
                if rc == 0:
                    say(f"  finished {name} in {_clock(secs)}  [{_clock(time.perf_counter() - t0)}]")
                else:
                    say(f"  FAILED   {name} (exit {rc}) after {_clock(secs)}: see {out / 'logs' / (name + '.log')} "
                        f"and {out / (name + '.ipynb')}; no further chapter is started")
            now = time.perf_counter()
            if running and now - last_status >= (min(2.0, status_every) if tty else status_every):
                line = f"[{_clock(now - t0)}] running " + " | ".join(progress(j) for j in running) + \
                       f" | {len([s for s in status.values() if s['status'] == 'ok'])} of {len(chapters)} done"
                if tty:
                    print("\r\033[K" + line[:200], end="", file=stream, flush=True)
                else:
                    say(line)
                last_status = now
    except KeyboardInterrupt:
        for job in running:
            _stop(job.proc)
            job.log.close()
            status[job.chapter.name] = entry("interrupted", job)
        raise
    finally:
        total = time.perf_counter() - t0
        report = {"chapters": status, "seconds": round(total, 1), "jobs": jobs, "threads": threads}
        atomic_write_json(out / "book_times.json", report)
    say(f"the book took {_clock(total)} ({total:.1f} s); times per chapter in {out / 'book_times.json'}")
    return report


def _stop(proc: subprocess.Popen, wait: float = 10.0) -> None:
    """End a chapter's process group (papermill and its kernel): SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m symlib book", description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=None, help="chapters at once (default: 2 on a machine with 2 or more cores, else 1)")
    ap.add_argument("--only", default="", help="comma-separated chapters to run, with the chapters they need")
    ap.add_argument("--out", default=str(REPO_ROOT / "out"), help="folder for executed notebooks, metrics and logs (default out/)")
    ap.add_argument("--dry-run", action="store_true", help="list what would run, in what order; run nothing")
    args = ap.parse_args(argv)
    jobs = args.jobs if args.jobs is not None else (2 if cpu_cores() >= 2 else 1)
    try:
        if jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {jobs}")
        chapters = select(CHAPTERS, [s.strip() for s in args.only.split(",") if s.strip()])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for c in chapters:
            extra = " ".join(f"{k}={v}" for k, v in c.params.items())
            print(f"{c.name:30s} {c.notebook}.ipynb" + (f" {extra}" if extra else "") + (" alone" if c.alone else "")
                  + (f" (after {', '.join(c.needs)})" if c.needs else ""))
        return 0
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        report = run_book(chapters, Path(args.out), jobs=jobs)
    except KeyboardInterrupt as e:
        print("\ninterrupted: networks and searches finished so far are kept in data/; the same command goes on from there",
              file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if all(s["status"] == "ok" for s in report["chapters"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
