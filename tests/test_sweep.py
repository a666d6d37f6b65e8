"""The Dask sweep: grid expansion, cell ids, validation before running, the results table,
failed cells, resuming after an interruption, notebook cells, an existing cluster, and the
run lock that keeps two processes from training the same network at once.

Most tests share one small in-process cluster (threads, so the cells see this process's
sys.path and nothing is imported twice); the notebook test and the interrupted command
line start their own local cluster of worker processes, as a user's run does.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from distributed import Client, LocalCluster

from symlib.book import sweep
from symlib.networks.models import ARCH_NAMES
from symlib.book.sweep import cell_id, expand_grid, list_cells, load_spec, run_sweep, validate

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture(scope="module")
def client():
    """One worker with two threads in this process, shared by the module's tests."""
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        yield c


def _spec(tmp_path, function="sweep_cells.square", grid=None, fixed=None, **extra) -> dict:
    spec = {"function": function, "out": str(tmp_path / "out"), "grid": grid or {"x": [1, 2, 3]}, **extra}
    if fixed is not None:
        spec["fixed"] = fixed
    return spec


def _events(marker: Path, x) -> list[str]:
    f = marker / f"{x}.log"
    return [line.split()[0] for line in f.read_text().splitlines()] if f.exists() else []


# ---- the grid and cell ids ----------------------------------------------------------

def test_expand_grid_products_lists_of_products_and_fixed():
    """A mapping is a cartesian product; a list of mappings is their union (duplicates once);
    fixed values reach every cell."""
    cells = expand_grid({"grid": {"a": [1, 2], "b": ["u", "v"]}, "fixed": {"c": 0}})
    assert cells == [{"a": 1, "b": "u", "c": 0}, {"a": 1, "b": "v", "c": 0},
                     {"a": 2, "b": "u", "c": 0}, {"a": 2, "b": "v", "c": 0}]
    cells = expand_grid({"grid": [{"a": [1, 2], "b": ["u"]}, {"a": [3]}, {"a": [1], "b": ["u"]}], "fixed": {"c": 0}})
    assert cells == [{"a": 1, "b": "u", "c": 0}, {"a": 2, "b": "u", "c": 0}, {"a": 3, "c": 0}]


def test_cell_ids_are_stable_distinct_and_safe_folder_names(tmp_path):
    """Ids repeat across calls, differ between cells (also when only a fixed value differs),
    show the grid values, and hold no path separators or spaces."""
    params = {"arch": "gru", "task": "multiobject", "seed": 0, "steps": 300}
    a = cell_id(params, fixed={"steps": 300})
    assert a == cell_id(dict(reversed(list(params.items()))), fixed={"steps": 300})
    assert a.startswith("arch=gru_seed=0_task=multiobject-") and len(a.split("-")[-1]) == 8
    assert cell_id({**params, "steps": 400}, fixed={"steps": 400}) != a
    odd = cell_id({"path": "a/b c", "archs": "gru,lstm", "lr": 1e-3, "flag": True})
    assert "/" not in odd and " " not in odd and not odd.startswith(".")
    spec = _spec(tmp_path, grid=[{"x": [1, 2, 3], "y": [0, 1]}, {"x": [10], "y": [0]}], fixed={"marker": ""})
    ids = [c.id for c in list_cells(spec)]
    assert len(set(ids)) == len(ids) == 7 and ids == [c.id for c in list_cells(spec)]
    assert all(c.dir == tmp_path / "out" / "cells" / c.id for c in list_cells(spec))
    (tmp_path / "f").mkdir()
    for i in ids + [odd]:
        (tmp_path / "f" / i).mkdir()


# ---- validation before anything runs -------------------------------------------------

@pytest.mark.parametrize("change,words", [
    ({"grid": {"x": 3}}, ["x", "not a list", "fixed"]),
    ({"grid": {}}, ["empty"]),
    ({"grid": []}, ["empty"]),
    ({"grid": {"x": []}}, ["x", "empty list"]),
    ({"grid": [{"x": [1]}, 5]}, ["grid[1]", "mapping"]),
    ({"fixed": {"x": 1}}, ["x", "both"]),
    ({"fixed": [1]}, ["fixed", "mapping"]),
    ({"extra": 1}, ["extra", "notebook, function, out, grid, fixed"]),
    ({"notebook": "nb.ipynb"}, ["exactly one", "notebook", "function"]),
    ({"function": None}, ["exactly one", "neither"]),
    ({"out": None}, ["out"]),
    ({"function": "sweep_cells.nope"}, ["sweep_cells", "nope"]),
    ({"function": "no_such_module_xyz.f"}, ["no_such_module_xyz"]),
    ({"function": "symlib.no_such_module.cell"}, ["symlib", "no_such_module"]),
    ({"grid": {"x": [1], "RESULTS_PATH": ["a"]}}, ["RESULTS_PATH"]),
])
def test_bad_specs_raise_before_anything_is_written(tmp_path, change, words):
    """Shape and target mistakes raise a ValueError naming what is wrong; out is not created."""
    spec = {**_spec(tmp_path), **change}
    with pytest.raises(ValueError) as e:
        run_sweep(spec, progress=False)
    for w in words:
        assert w in str(e.value)
    assert not (tmp_path / "out").exists()


def test_unknown_parameter_names_and_values_rejected_before_any_cell_runs(tmp_path):
    """An unknown name lists the function's parameters; an unknown arch lists ARCH_NAMES;
    plural names are checked item by item; the validate_params hook sees every cell."""
    with pytest.raises(ValueError) as e:
        run_sweep(_spec(tmp_path, grid={"x": [1], "z": [1]}, fixed={"marker": str(tmp_path)}), progress=False)
    assert "'z'" in str(e.value) and "x, y, marker" in str(e.value)
    with pytest.raises(ValueError) as e:
        run_sweep(_spec(tmp_path, "sweep_cells.with_arch", grid={"x": [1, 2], "arch": ["gru", "cnn"]}), progress=False)
    assert "'arch'" in str(e.value) and "'cnn'" in str(e.value) and all(a in str(e.value) for a in ARCH_NAMES)
    with pytest.raises(ValueError) as e:
        validate({"function": "sweep_cells.anything", "out": "o", "grid": {"x": [1]},
                  "fixed": {"arch": "gru", "Tasks": "multiobject,nope", "DEVICE": "gpu"}})
    assert "2 problems" in str(e.value) and "'nope'" in str(e.value) and "'gpu'" in str(e.value)
    with pytest.raises(ValueError) as e:
        run_sweep(_spec(tmp_path, "sweep_cells.checked", grid={"x": [1, -2]}), progress=False)
    assert "x must be >= 0, got -2" in str(e.value)
    with pytest.raises(ValueError) as e:
        run_sweep(_spec(tmp_path, "sweep_cells.square", grid={"y": [1]}), progress=False)
    assert "needs x" in str(e.value)
    assert not (tmp_path / "out").exists()
    validate({"function": "sweep_cells.with_arch", "out": "o", "grid": {"x": [1], "arch": list(ARCH_NAMES)}})


def test_cli_bad_input_exits_2_without_creating_out(tmp_path, capsys):
    """The command prints the problem and exits with status 2; --dry-run runs nothing."""
    out = tmp_path / "out"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"function": "sweep_cells.with_arch", "out": str(out), "grid": {"x": [1], "arch": ["cnn"]}}))
    assert sweep.main([str(bad)]) == 2
    assert "'cnn'" in capsys.readouterr().err
    bad.write_text(yaml.safe_dump({"notebook": "missing.ipynb", "out": str(out), "grid": {"x": [1]}}))
    assert sweep.main([str(bad)]) == 2
    assert "notebook not found" in capsys.readouterr().err
    bad.write_text("grid: [unclosed")
    assert sweep.main([str(bad)]) == 2
    assert sweep.main([str(tmp_path / "nothing.yaml")]) == 2
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"function": "sweep_cells.square", "out": str(out), "grid": {"x": [1, 2]}}))
    assert sweep.main([str(good), "--dry-run"]) == 0
    assert "0 done, 0 failed, 2 pending" in capsys.readouterr().out
    assert not out.exists()


# ---- running ------------------------------------------------------------------------

def test_results_table_columns_and_files(tmp_path, client):
    """results.csv: parameters, cell, status, error, seconds, then flattened scalar metrics;
    a list metric stays in metrics.json; spec.yaml is written."""
    spec = _spec(tmp_path, grid=[{"x": [1, 2], "y": [0, 10]}, {"x": [5]}], fixed={"marker": ""})
    df = run_sweep(spec, client=client, progress=False)
    assert list(df.columns) == ["x", "y", "marker", "cell", "status", "error", "seconds", "finished_at", "commit", "machine", "nested.half", "nested.name", "sq"]
    assert list(df.status) == ["ok"] * 5 and df.error.isna().all() and (df.seconds >= 0).all()
    assert list(df.sq) == [1, 11, 4, 14, 25] and list(df["nested.half"]) == [0.5, 0.5, 1.0, 1.0, 2.5]
    csv = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(csv.columns) == list(df.columns) and list(csv.sq) == list(df.sq)
    cell = tmp_path / "out" / "cells" / df.cell[0]
    assert json.loads((cell / "metrics.json").read_text())["table"] == [{"a": 1}, {"a": 2}]
    rec = json.loads((cell / "result.json").read_text())
    assert set(rec) == {"params", "status", "error", "metrics", "seconds", "finished_at", "commit", "machine"}
    from symlib.analyses.provenance import machine_name
    assert rec["machine"] == machine_name() and "cores" in rec["machine"] and list(df.machine) == [rec["machine"]] * 5
    assert rec["params"] == {"x": 1, "y": 0, "marker": ""} and rec["status"] == "ok" and rec["error"] is None
    assert yaml.safe_load((tmp_path / "out" / "spec.yaml").read_text())["function"] == "sweep_cells.square"


def test_failed_cell_recorded_others_go_on_not_rerun_unless_retry(tmp_path, client):
    """A raising cell is recorded as failed (type, message, traceback); a rerun reports it
    without running it; retry_failed reruns it (and only it)."""
    marker = tmp_path / "m"
    marker.mkdir()
    spec = _spec(tmp_path, "sweep_cells.fail_if", fixed={"bad": 2, "marker": str(marker)})
    df = run_sweep(spec, client=client, progress=False)
    assert list(df.status) == ["ok", "failed", "ok"] and list(df.x) == [1, 2, 3]
    assert df.error[1] == "RuntimeError: cell x=2 fails on purpose" and pd.isna(df.error[0])
    rec = json.loads((tmp_path / "out" / "cells" / df.cell[1] / "result.json").read_text())
    assert rec["status"] == "failed" and rec["error"]["type"] == "RuntimeError" and "fail_if" in rec["error"]["traceback"]
    df2 = run_sweep(spec, client=client, progress=False)
    assert list(df2.status) == ["ok", "failed", "ok"]
    assert [len(_events(marker, x)) for x in (1, 2, 3)] == [2, 1, 2]  # start+end, start, start+end: nothing rerun
    run_sweep(spec, client=client, progress=False, retry_failed=True)
    assert [_events(marker, x) for x in (1, 2, 3)] == [["start", "end"], ["start", "start"], ["start", "end"]]


def test_resume_removes_stale_outputs_and_runs_only_unfinished(tmp_path, client):
    """A cell whose result.json is missing (an interrupted attempt) runs again, and the
    metrics.json and temp file that attempt left are gone; finished cells are not rerun."""
    marker = tmp_path / "m"
    marker.mkdir()
    spec = _spec(tmp_path, "sweep_cells.fail_if", fixed={"bad": 2, "marker": str(marker)})
    cells = {c.params["x"]: c for c in list_cells(spec)}
    run_sweep(spec, client=client, progress=False)
    d = cells[2].dir
    (d / "result.json").unlink()
    (d / "metrics.json").write_text('{"stale": 1}')
    (d / ".result.json.abc.tmp").write_text("half")
    (cells[3].dir / "result.json").unlink()
    assert list(sweep.results_table(spec, write=False).status) == ["ok", "pending", "pending"]
    df = run_sweep(spec, client=client, progress=False)
    assert list(df.status) == ["ok", "failed", "ok"] and "stale" not in df.columns
    assert not (d / "metrics.json").exists() and not list(d.glob(".*.tmp"))
    assert [_events(marker, x).count("start") for x in (1, 2, 3)] == [1, 2, 2]


def test_nothing_pending_starts_no_cluster(tmp_path, client):
    """A finished sweep reruns without contacting any scheduler (this address has none)."""
    spec = _spec(tmp_path)
    run_sweep(spec, client=client, progress=False)
    t0 = time.perf_counter()
    df = run_sweep(spec, scheduler="tcp://127.0.0.1:9", progress=False)
    assert list(df.status) == ["ok"] * 3 and time.perf_counter() - t0 < 5


def test_existing_scheduler_is_used_and_left_running(tmp_path, client, capsys):
    """--scheduler ADDRESS: cells run on that cluster, which is still up afterwards."""
    address = client.scheduler.address
    spec_file = tmp_path / "grid.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(tmp_path, grid={"x": [4, 5]})))
    assert sweep.main([str(spec_file), "--scheduler", address]) == 0
    assert "2 done, 0 skipped" in capsys.readouterr().out
    assert list(pd.read_csv(tmp_path / "out" / "results.csv").sq) == [16, 25]
    assert client.submit(sum, [1, 2]).result() == 3


def test_interrupted_command_resumes_and_every_cell_finishes_once(tmp_path, client):
    """Kill the command (and its workers) after some cells finished; a rerun runs only the
    rest, and every cell ends exactly once (the one cut off mid-way starts twice)."""
    marker = tmp_path / "m"
    marker.mkdir()
    spec = _spec(tmp_path, "sweep_cells.slow", grid={"x": [0, 1, 2, 3, 4, 5]},
                 fixed={"seconds": 0.8, "marker": str(marker)})
    spec_file = tmp_path / "grid.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "symlib.book.sweep", str(spec_file), "--workers", "1"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    results = tmp_path / "out" / "cells"
    deadline = time.time() + 60
    try:
        while len(list(results.glob("*/result.json"))) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    done_before = {json.loads(p.read_text())["params"]["x"] for p in results.glob("*/result.json")}
    assert 2 <= len(done_before) < 6, err.decode()[-2000:]
    df = run_sweep(spec_file, client=client, progress=False)
    assert list(df.status) == ["ok"] * 6
    for x in range(6):
        ev = _events(marker, x)
        assert ev.count("end") == 1, (x, ev)
        if x in done_before:
            assert ev == ["start", "end"], (x, ev)


def test_sigterm_ends_the_command_as_an_interruption(tmp_path):
    """`kill` (SIGTERM, also how a batch system ends a job) stops the command with status 143 and
    its message; finished cells are kept for the rerun."""
    spec = _spec(tmp_path, "sweep_cells.slow", grid={"x": [0, 1, 2, 3, 4, 5]}, fixed={"seconds": 1.0})
    spec_file = tmp_path / "grid.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "symlib.book.sweep", str(spec_file), "--workers", "1"], cwd=tmp_path,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    results = tmp_path / "out" / "cells"
    deadline = time.time() + 60
    try:
        while not list(results.glob("*/result.json")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err.decode()[-2000:]
    assert "run the same command again" in err.decode()
    done = len(list(results.glob("*/result.json")))
    assert 1 <= done < 6
    assert sweep.main([str(spec_file), "--dry-run"]) == 0


def test_notebook_cells_on_a_local_cluster(tmp_path):
    """A notebook with a parameters cell runs once per cell on a one-worker local cluster;
    the executed notebook is kept and the metrics it wrote reach results.csv."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('A = 0\nB = "b"\nRESULTS_PATH = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(textwrap.dedent("""\
        import json, os
        malloc = os.environ.get("MALLOC_TRIM_THRESHOLD_", "unset")
        if RESULTS_PATH:
            with open(RESULTS_PATH, "w") as f:
                json.dump({"a2": A * 2, "b": B, "nested": {"k": A + 1}, "table": [{"r": 1}], "malloc": malloc}, f)"""))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "nbs").mkdir()
    nbformat.write(nb, tmp_path / "nbs" / "tiny.ipynb")
    spec_file = tmp_path / "nbs" / "grid.yaml"
    spec_file.write_text(yaml.safe_dump({"notebook": "tiny.ipynb", "out": str(tmp_path / "out"),
                                         "grid": {"A": [1, 2]}, "fixed": {"B": "z"}}))
    assert load_spec(spec_file)["notebook"] == str(tmp_path / "nbs" / "tiny.ipynb")
    with pytest.raises(ValueError) as e:
        validate({**load_spec(spec_file), "grid": {"a": [1]}})
    assert "'a'" in str(e.value) and "did you mean 'A'" in str(e.value) and "A, B" in str(e.value)
    df = run_sweep(spec_file, workers=1, threads_per_worker=1, progress=False)
    assert list(df.status) == ["ok", "ok"], df.error.tolist()
    assert list(df.a2) == [2, 4] and list(df.b) == ["z", "z"] and list(df["nested.k"]) == [2, 3] and "table" not in df
    # the kernel does not inherit the Dask nanny's MALLOC_TRIM_THRESHOLD_ (2.5x slower torch)
    assert list(df.malloc) == ["unset", "unset"]
    executed = nbformat.read(tmp_path / "out" / "cells" / df.cell[1] / "tiny.ipynb", as_version=4)
    assert any("A = 2" in c.source for c in executed.cells)
    assert list(pd.read_csv(tmp_path / "out" / "results.csv").a2) == [2, 4]


def test_dask_malloc_trim_is_undone_in_cells_but_a_chosen_value_kept(monkeypatch):
    """A worker's cell drops the nanny's MALLOC_TRIM_THRESHOLD_=65536 (kernels it starts would
    inherit it); a value set on purpose stays."""
    from symlib.book import sweep

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    sweep._undo_dask_malloc_trim()
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    sweep._undo_dask_malloc_trim()
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "1000000"


# ---- the run lock -------------------------------------------------------------------

LOCK_SCRIPT = r"""
import json, os, sys, time
from dataclasses import asdict
from pathlib import Path
import symlib.networks.training as tr

here, me = Path(sys.argv[1]), sys.argv[2]

def fake_train(cfg, run_dir, **kw):  # a run that ends by its own rule: at its max_steps
    t0 = time.time()
    time.sleep(1.0)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg)))
    (run_dir / "latest.pt").write_text("x")
    (run_dir / "metrics.json").write_text(json.dumps([
        {"step": 0}, {"step": cfg.max_steps, "stopped_because": f"max_steps={cfg.max_steps} reached"}]))
    with open(here / "trained.log", "a") as f:
        f.write(f"{me} {t0} {time.time()}\n")

tr.train = fake_train
tr.load_run = lambda path, step=None, device="auto": "loaded"
(here / f"ready-{me}").touch()
while not all((here / f"ready-{i}").exists() for i in "ab"):
    time.sleep(0.01)
print(tr.load_or_train("multiobject", "gru", 0, progress=False))
"""


def test_two_processes_asking_for_one_network_train_it_once(tmp_path):
    """load_or_train holds a file lock while training: of two processes asking for the same
    run at the same moment, one trains and the other waits, then loads it."""
    env = {**os.environ, "SYMLIB_DATA": str(tmp_path / "data")}
    procs = [subprocess.Popen([sys.executable, "-c", LOCK_SCRIPT, str(tmp_path), me], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for me in "ab"]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1].decode()[-2000:] for o in outs]
    assert [o[0].decode().strip() for o in outs] == ["loaded", "loaded"]
    assert len((tmp_path / "trained.log").read_text().splitlines()) == 1
    assert list((tmp_path / "data" / "runs").glob(".*.lock"))


def test_run_lock_serialises_holders(tmp_path):
    """run_lock: a second holder (another process) waits until the first lets go."""
    from symlib.networks.training import run_lock
    script = ("import sys, time\nfrom symlib.networks.training import run_lock\nprint('waiting', flush=True)\n"
              "with run_lock(sys.argv[1]):\n    print(time.time())\n")
    with run_lock(tmp_path / "run"):
        p = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "run")], cwd=REPO, stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"waiting"
        time.sleep(0.3)
        assert p.poll() is None
        released = time.time()
    assert float(p.communicate(timeout=60)[0]) >= released
    assert (tmp_path / ".run.lock").exists()


def test_a_saved_table_restores_into_a_fresh_checkout_and_only_the_rest_runs(tmp_path, client, capsys):
    """--save-table then --restore into an empty out folder: the finished cells come back with their
    metrics, seconds and commit (the table saved again is the same text), a cell that already has a
    result is kept, and the next run runs only the cells the table lacked."""
    marker = tmp_path / "m"
    marker.mkdir()
    spec = _spec(tmp_path, grid={"x": [1, 2, 3]}, fixed={"marker": str(marker)})
    spec_file = tmp_path / "grid.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    run_sweep(spec, client=client, progress=False)
    cells = {c.params["x"]: c for c in list_cells(spec)}
    (cells[3].dir / "result.json").unlink()                   # x=3 pending in the saved table
    saved = tmp_path / "results" / "t.csv"
    assert sweep.main([str(spec_file), "--save-table", str(saved)]) == 0
    before = json.loads((cells[1].dir / "result.json").read_text())
    # a fresh checkout: nothing under out/ (x=2 already has another result there, which must be kept)
    import shutil
    shutil.rmtree(tmp_path / "out")
    kept = {"params": cells[2].params, "status": "ok", "error": None, "metrics": {"sq": -1}, "seconds": 1.0,
            "finished_at": "2026-12-07T00:00:00+00:00", "commit": "abc"}
    cells[2].dir.mkdir(parents=True)
    (cells[2].dir / "result.json").write_text(json.dumps(kept))
    capsys.readouterr()
    assert sweep.main([str(spec_file), "--restore", str(saved)]) == 0
    assert "restored 1 cell(s)" in capsys.readouterr().out
    rec = json.loads((cells[1].dir / "result.json").read_text())
    assert rec["restored_from"] == str(saved) and rec["commit"] == before["commit"]
    assert rec["machine"] == before["machine"] and rec["machine"]  # where it ran, not where it was restored
    prov = json.loads((tmp_path / "results" / "t.provenance.json").read_text())
    assert prov["cell_machines"] == {before["machine"]: 2} and prov["cells"] == "2 of 3 finished"
    assert rec["seconds"] == before["seconds"] and rec["metrics"] == {"sq": 1, "nested.half": 0.5, "nested.name": "x1"}
    assert json.loads((cells[2].dir / "result.json").read_text()) == kept
    assert list(sweep.results_table(spec, write=False).status) == ["ok", "ok", "pending"]
    starts = [len(_events(marker, x)) for x in (1, 2, 3)]
    df = run_sweep(spec, client=client, progress=False)
    assert [len(_events(marker, x)) - s for x, s in zip((1, 2, 3), starts)] == [0, 0, 2]  # only x=3 ran
    assert list(df.sq) == [1, -1, 9]
    # the x=1 row round-trips: saved again, it is the same text as in the first table
    again = tmp_path / "again.csv"
    assert sweep.main([str(spec_file), "--save-table", str(again)]) == 0
    assert pd.read_csv(again).iloc[0].to_csv() == pd.read_csv(saved).iloc[0].to_csv()


def test_restore_refuses_a_file_that_is_not_a_saved_table(tmp_path, capsys):
    spec_file = tmp_path / "grid.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(tmp_path)))
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert sweep.main([str(spec_file), "--restore", str(bad)]) == 2
    assert "not a sweep's saved table (no column cell, status" in capsys.readouterr().err
    assert sweep.main([str(spec_file), "--restore", str(tmp_path / "missing.csv")]) == 2
    assert "cannot read it" in capsys.readouterr().err and not (tmp_path / "out" / "cells").exists()
