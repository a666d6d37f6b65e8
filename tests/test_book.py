"""The book runner (symlib.book.build): plans, order, parallelism, failures, interruption, papermill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from symlib.book import build as book
from symlib.book.build import Chapter, check_plan, run_book, select, width


def stamp_command(tmp: Path, fail: set[str] = frozenset(), seconds: float = 0.3):
    """A fake chapter: writes its start and end time and its thread setting, sleeps, exits 1 when named in ``fail``."""
    def command(c: Chapter, out: Path) -> list[str]:
        code = textwrap.dedent(f"""
            import json, os, sys, time
            t0 = time.time(); time.sleep({seconds})
            json.dump({{"start": t0, "end": time.time(), "threads": os.environ.get("OMP_NUM_THREADS")}},
                      open({str(tmp / (c.name + '.stamp'))!r}, "w"))
            sys.exit(1 if {c.name!r} in {sorted(fail)!r} else 0)
        """)
        return [sys.executable, "-c", code]
    return command


def stamps(tmp: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in tmp.glob("*.stamp")}


PLAN = (
    Chapter("a", "a"),
    Chapter("slow", "slow"),
    Chapter("b", "b", needs=("a",)),
    Chapter("c", "c", needs=("b", "slow")),
    Chapter("d", "d"),
)


def test_the_book_plan_is_valid_and_every_notebook_exists():
    check_plan(book.CHAPTERS)
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    for c in book.CHAPTERS:
        assert (notebooks / f"{c.notebook}.ipynb").exists(), c.notebook
    # every chapter of the book runs in make book, each with parameters the notebook has
    ran = {c.notebook for c in book.CHAPTERS}
    have = {p.stem for p in notebooks.glob("[0-9][0-9]_*.ipynb")}
    assert have == ran
    for c in book.CHAPTERS:
        src = (notebooks / f"{c.notebook}.py").read_text().split('# %% tags=["parameters"]')[1].split("# %%")[0]
        for k in c.params:
            assert f"\n{k} = " in src, (c.name, k)
    assert width(book.CHAPTERS) >= 2


def test_bad_plans_are_named():
    with pytest.raises(ValueError, match="repeated: a"):
        check_plan([Chapter("a", "a"), Chapter("a", "b")])
    with pytest.raises(ValueError, match="needs zz, which is not a chapter; chapters: a, b"):
        check_plan([Chapter("a", "a"), Chapter("b", "b", needs=("zz",))])
    with pytest.raises(ValueError, match="cycle: a, b"):
        check_plan([Chapter("a", "a", needs=("b",)), Chapter("b", "b", needs=("a",))])


def test_select_adds_what_a_chapter_needs_in_book_order_and_names_unknown_ones():
    assert [c.name for c in select(PLAN, ["c"])] == ["a", "slow", "b", "c"]
    assert [c.name for c in select(PLAN, [])] == [c.name for c in PLAN]
    with pytest.raises(ValueError, match="unknown chapter 'e'; chapters: a, slow, b, c, d"):
        select(PLAN, ["e"])
    assert width(PLAN) == 3 and width(select(PLAN, ["b"])) == 1


def test_chapters_start_after_what_they_need_and_never_more_than_jobs_at_once(tmp_path):
    out = tmp_path / "out"
    report = run_book(PLAN, out, jobs=2, threads=3, command=stamp_command(tmp_path), poll=0.05, stream=open(os.devnull, "w"))
    s = stamps(tmp_path)
    assert set(s) == {"a", "slow", "b", "c", "d"}
    assert all(r["status"] == "ok" for r in report["chapters"].values())
    assert s["b"]["start"] >= s["a"]["end"]
    assert s["c"]["start"] >= max(s["b"]["end"], s["slow"]["end"])
    for name, r in s.items():  # at any chapter's start, at most two are running
        assert sum(o["start"] <= r["start"] < o["end"] for o in s.values()) <= 2, name
    # the threads each chapter ran with are the ones the report gives; only the last one started may have
    # every core (whether it does depends on whether its neighbour was reaped first: timing, so not asserted
    # here; test_the_last_chapter_to_start_alone_gets_every_thread holds it where it is certain)
    assert {n: int(r["threads"]) for n, r in s.items()} == {n: r["threads"] for n, r in report["chapters"].items()}
    last = max(s, key=lambda n: s[n]["start"])
    assert {r["threads"] for n, r in s.items() if n != last} == {"3"}
    assert s[last]["threads"] in ("3", "6")
    # the first two in book order start first, together
    first = sorted(s, key=lambda n: s[n]["start"])[:2]
    assert set(first) == {"a", "slow"}
    times = json.loads((out / "book_times.json").read_text())
    assert times["jobs"] == 2 and set(times["chapters"]) == set(s)
    assert all((out / "logs" / f"{n}.log").exists() for n in s)


def test_alone_chapters_run_with_every_thread_and_nothing_beside_them(tmp_path):
    plan = [Chapter("train", "t", alone=True), Chapter("x", "x"), Chapter("y", "y"), Chapter("train2", "t", alone=True),
            Chapter("z", "z")]
    run_book(plan, tmp_path / "out", jobs=2, threads=1, command=stamp_command(tmp_path, seconds=0.3), poll=0.02,
             stream=open(os.devnull, "w"))
    s = stamps(tmp_path)
    for name in ("train", "train2"):
        others = [o for n, o in s.items() if n != name]
        assert not any(o["start"] < s[name]["end"] and s[name]["start"] < o["end"] for o in others), name
        assert s[name]["threads"] == "2"
    assert s["x"]["threads"] == s["y"]["threads"] == "1"
    assert s["x"]["start"] < s["y"]["end"] and s["y"]["start"] < s["x"]["end"]  # the two analyses ran side by side
    assert s["train2"]["start"] < s["z"]["start"]  # z, later in book order, waited for train2


def test_the_last_chapter_to_start_alone_gets_every_thread(tmp_path):
    """Nothing beside it and nothing after it: one thread would leave the other cores idle."""
    plan = [Chapter("x", "x"), Chapter("y", "y"), Chapter("z", "z", needs=("x", "y"))]
    run_book(plan, tmp_path / "out", jobs=2, threads=1, command=stamp_command(tmp_path, seconds=0.2), poll=0.02,
             stream=open(os.devnull, "w"))
    s = stamps(tmp_path)
    assert s["x"]["threads"] == s["y"]["threads"] == "1" and s["z"]["threads"] == "2"


def test_a_chain_gets_every_thread(tmp_path):
    report = run_book(select(PLAN, ["b"]), tmp_path / "out", jobs=2, threads=None, command=stamp_command(tmp_path, seconds=0),
                      poll=0.02, stream=open(os.devnull, "w"))
    assert report["jobs"] == 1
    assert report["threads"] == book.cpu_cores()


def test_a_failed_chapter_stops_the_book_and_skips_what_needs_it(tmp_path):
    out = tmp_path / "out"
    report = run_book(PLAN, out, jobs=1, command=stamp_command(tmp_path, fail={"a"}, seconds=0), poll=0.02,
                      stream=open(os.devnull, "w"))
    st = {n: r["status"] for n, r in report["chapters"].items()}
    assert st["a"] == "failed" and st["b"] == "skipped" and st["c"] == "skipped"
    assert set(stamps(tmp_path)) == {"a"}  # nothing else was started
    assert report["chapters"]["a"]["returncode"] == 1


def test_main_rejects_bad_input_and_lists_the_plan(capsys):
    assert book.main(["--only", "99_nothing"]) == 2
    assert "unknown chapter '99_nothing'; chapters: 00_quickstart" in capsys.readouterr().err
    assert book.main(["--jobs", "0"]) == 2
    assert book.main(["--only", "03_das_alignment", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["00_quickstart", "02_train_models_gru", "03_das_alignment"]
    assert "alone" in lines[0] and "alone" not in lines[2]


def test_sigterm_stops_the_running_chapters(tmp_path):
    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        import symlib.utils
        from symlib.book import build as book
        def command(c, out):
            return [sys.executable, "-c", "import os, time; open({str(pids)!r}, 'a').write(str(os.getpid()) + '\\\\n'); time.sleep(60)"]
        signal.signal(signal.SIGTERM, symlib.utils.raise_terminated)
        try:
            book.run_book([book.Chapter("x", "x"), book.Chapter("y", "y")], Path({str(tmp_path / 'out')!r}), jobs=2, command=command, poll=0.05)
        except KeyboardInterrupt as e:
            sys.exit(143 if isinstance(e, symlib.utils.Terminated) else 130)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.1)
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 143
    time.sleep(0.2)
    for pid in children:  # the chapters' processes are gone, not left running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    times = json.loads((tmp_path / "out" / "book_times.json").read_text())
    assert {r["status"] for r in times["chapters"].values()} == {"interrupted"}


def test_papermill_runs_a_chapter_with_its_parameters(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("papermill")
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("ARCH = 'gru'\nRESULTS_PATH = ''", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("import json, os\njson.dump({'arch': ARCH, 'threads': os.environ['OMP_NUM_THREADS']}, "
                                          "open(RESULTS_PATH, 'w'))")]
    nbformat.write(nb, nbs / "02_tiny.ipynb")
    out = tmp_path / "out"
    chapter = Chapter("02_tiny_lstm", "02_tiny", {"ARCH": "lstm"})
    monkeypatch.chdir(tmp_path)  # a relative out folder is taken from where the command runs, not from the kernel's folder
    report = run_book([chapter], Path("out"), jobs=1, threads=1, notebooks=nbs, poll=0.1, stream=open(os.devnull, "w"))
    assert report["chapters"]["02_tiny_lstm"]["status"] == "ok", (out / "logs" / "02_tiny_lstm.log").read_text()
    assert json.loads((out / "02_tiny_lstm.json").read_text()) == {"arch": "lstm", "threads": "1"}
    assert book.cells_done(out / "02_tiny_lstm.ipynb") == (3, 3)  # papermill adds the injected-parameters cell
