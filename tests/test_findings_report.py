"""The findings report is made only from a saved tidy table, and lands between markers in a markdown file."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from symlib.analyses import findings
from symlib.intervene.das import DASConfig

ROOT = Path(__file__).resolve().parent.parent


def tidy(capped_lstm_seed: int | None = None) -> pd.DataFrame:
    """A tidy table as ``findings_table`` writes it: 2 architectures x 3 seeds x (das + controls)."""
    rng = np.random.default_rng(0)
    rows = []
    for arch, level in (("gru", 0.98), ("lstm", 0.99)):
        for seed in (0, 1, 2):
            base = {"arch": arch, "seed": seed, "task": "multiobject", "program": "up_down", "variable": "count",
                    "alignment": "orthogonal", "n_units": 16, "max_steps": 20000, "trial_acc_train": 1.0,
                    "trial_acc_heldout": 1.0, "steps_to_solve": 300 + seed, "network_step": 500 + 25 * seed}
            v = level + rng.uniform(-0.01, 0.01)
            rows.append({**base, "measure": "das", "iia_test": v, "iia_changed_test": v - 0.001, "iia_changed_main": v - 0.001,
                         "iia_test_heldout": v, "iia_changed_test_heldout": v - 0.002, "steps": 2000 + 100 * seed,
                         "converged": not (arch == "lstm" and seed == capped_lstm_seed)})
            for m in findings.CONTROL_NAMES:
                c = rng.uniform(0.0, 0.1)
                rows.append({**base, "measure": m, "iia_test": c, "iia_changed_test": None if m == "no_swap" else c,
                             "iia_changed_main": None if m == "no_swap" else c, "iia_test_heldout": c,
                             "iia_changed_test_heldout": None if m == "no_swap" else c,
                             "steps": 1500 if m in ("wrong_labels", "wrong_program") else None,
                             "converged": True if m in ("wrong_labels", "wrong_program") else None})
    return pd.DataFrame(rows)


def budget():
    return asdict(DASConfig(**findings.FINDINGS_SEARCH))


def test_report_states_budget_means_and_capped_cells(tmp_path):
    df = tidy(capped_lstm_seed=2)
    csv = tmp_path / "t.csv"
    df.to_csv(csv, index=False)
    back = pd.read_csv(csv)  # the report is made from the file, as --report reads it
    text = findings.findings_report(back, budget(), "CMD")
    g = df[(df.arch == "gru") & (df.measure == "das")].iia_changed_test.mean()
    assert f"{g:.3f}" in text  # the mean over seeds, computed, not typed
    assert "capped at 20000 steps" in text and "< 0.005 over 1000 steps" in text and "network seeds 0, 1, 2" in text
    assert "†(1)" in text and text.count("†(1)") == 1  # only the LSTM's DAS cell, one seed capped
    assert "gru 2000-2200; lstm 2000-2200" in text and text.endswith("Printed by `CMD`.")
    assert "Every search converged" in findings.findings_report(tidy(), budget(), "CMD")


def test_write_block_replaces_only_the_block(tmp_path):
    from symlib.analyses.report import markers, read_block, write_block
    start, end = markers("findings")
    md = tmp_path / "R.md"
    md.write_text(f"head\n{start}\nold\n{end}\ntail\n")
    write_block(md, "findings", "new\nlines")
    assert md.read_text() == f"head\n{start}\nnew\nlines\n{end}\ntail\n" and read_block(md, "findings") == "new\nlines"
    bad = tmp_path / "B.md"
    bad.write_text(f"no markers here\n{end}\n")
    with pytest.raises(ValueError, match="findings:start"):
        write_block(bad, "findings", "x")
    assert bad.read_text() == f"no markers here\n{end}\n"  # nothing written


def test_report_command_prints_and_writes_without_running_anything(tmp_path):
    csv = tmp_path / "t.csv"
    tidy().to_csv(csv, index=False)
    md = tmp_path / "R.md"
    from symlib.analyses.report import markers
    md.write_text("# R\n" + "\n".join(markers("findings")) + "\n")
    out = subprocess.run([sys.executable, "-m", "symlib.analyses.findings", "--report", str(csv), "--readme", str(md)],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() in md.read_text() and "IIA on changed test pairs" in out
    err = subprocess.run([sys.executable, "-m", "symlib.analyses.findings", "--readme", str(md)], capture_output=True, text=True, cwd=ROOT)
    assert err.returncode != 0 and "need --report" in err.stderr


def test_readme_findings_are_the_committed_results(monkeypatch):
    """The README's findings block is exactly what --report prints from the committed tidy table."""
    committed = ROOT / "results" / "findings" / "multiobject-up_down-count-orthogonal.csv"
    if not committed.exists():
        pytest.skip("no committed findings yet")
    from symlib.analyses.report import read_block
    block = read_block(ROOT / "README.md", "findings")
    monkeypatch.chdir(ROOT)  # the block names the table by its path from the repository root
    assert block == findings.findings_block("results/findings/multiobject-up_down-count-orthogonal.csv")
    assert "made by `" in block and "make findings" in block  # its provenance is committed too


def test_a_json_block_carries_where_its_lines_came_from(tmp_path):
    from datetime import datetime, timezone
    from symlib.analyses.provenance import write_provenance
    from symlib.analyses.report import json_block, markers
    res = tmp_path / "m.json"
    res.write_text('{"summary": ["- one", "- two"]}')
    with pytest.raises(FileNotFoundError, match="no provenance"):
        json_block(res, "summary")
    write_provenance(res, "make mas-full", datetime(2026, 12, 7, 7, tzinfo=timezone.utc), datetime(2026, 12, 7, 8, tzinfo=timezone.utc))
    text = json_block(res, "summary")
    assert text.startswith("- one\n- two\n\nFrom `") and "made by `make mas-full`" in text and "2026-12-07" in text and "60 min" in text
    md = tmp_path / "R.md"
    md.write_text("x\n" + "\n".join(markers("mas")) + "\n")
    out = subprocess.run([sys.executable, "-m", "symlib.analyses.report", str(res), "--readme", str(md), "--block", "mas"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == text and text in md.read_text()


def test_provenance_names_command_commit_machine_and_wall_time(tmp_path):
    import json
    from datetime import datetime, timedelta, timezone
    from symlib.analyses.provenance import provenance_path, write_provenance
    result = tmp_path / "t.csv"
    result.write_text("a\n1\n")
    t0 = datetime(2026, 12, 7, 7, 0, tzinfo=timezone.utc)
    p = write_provenance(result, "python -m symlib findings --seeds 0", t0, t0 + timedelta(seconds=90.5), seeds=[0])
    assert p == provenance_path(result) == tmp_path / "t.provenance.json"
    d = json.loads(p.read_text())
    assert d["command"] == "python -m symlib findings --seeds 0" and d["wall_seconds"] == 90.5 and d["seeds"] == [0]
    assert d["started"] == "2026-12-07T07:00:00+00:00" and d["machine"]["cores"] >= 1 and d["torch"]
    if (ROOT / ".git").exists():
        assert len(d["commit"]) == 40 and isinstance(d["uncommitted_changes"], bool)


def test_provenance_command_for_a_result_made_elsewhere(tmp_path):
    import json
    res = tmp_path / "m.json"
    res.write_text("{}")
    run = lambda *a: subprocess.run([sys.executable, "-m", "symlib.analyses.provenance", *a], capture_output=True, text=True, cwd=ROOT)
    ok = run(str(res), "--command", "make mas-full", "--started", "2026-12-07T07:00:00Z", "--ended", "2026-12-07T07:30:00Z",
             "--extra", "searches=from the store")
    assert ok.returncode == 0, ok.stderr
    d = json.loads((tmp_path / "m.provenance.json").read_text())
    assert d["command"] == "make mas-full" and d["searches"] == "from the store" and d["started"] == "2026-12-07T07:00:00+00:00"
    assert d["wall_seconds"] == 1800
    res.write_text('{"torch_threads": 7}')  # the run's own count wins over this process's
    assert run(str(res), "--command", "x", "--started", "2026-12-07T07:00:00Z").returncode == 0
    assert json.loads((tmp_path / "m.provenance.json").read_text())["machine"]["torch_threads"] == 7
    res.write_text("{}")
    bad = run(str(tmp_path / "none.json"), "--command", "x", "--started", "2026-12-07T07:00:00Z")
    assert bad.returncode != 0 and "no result at" in bad.stderr
    bad = run(str(res), "--command", "x", "--started", "2026-12-07T07:00:00Z", "--extra", "novalue")
    assert bad.returncode != 0 and "KEY=VALUE" in bad.stderr
    if (ROOT / ".git").exists():
        assert run(str(res), "--command", "x", "--started", "2026-12-07T07:00:00Z", "--commit", "HEAD").returncode == 0
        d = json.loads((tmp_path / "m.provenance.json").read_text())
        assert len(d["commit"]) == 40 and d["uncommitted_changes"] is False
        bad = run(str(res), "--command", "x", "--started", "2026-12-07T07:00:00Z", "--commit", "nosuchcommit")
        assert bad.returncode != 0 and "is not a commit" in bad.stderr


@pytest.mark.parametrize("page,block,result", [("docs/results.md", "mas", "results/mas/06_model_alignment_search.json"),
                                               ("docs/results.md", "dynamics", "results/dynamics/05_learning_dynamics.json"),
                                               ("README.md", "peers", "results/peers/bench_peers.json")])
def test_readme_chapter_blocks_are_the_committed_results(page, block, result, monkeypatch):
    """A full run's block (chapters 05 and 06 on docs/results.md, pyvene in the README) is exactly its committed
    summary and provenance (empty before the run); the Makefile target that makes the result writes it there."""
    from symlib.analyses.report import json_block, read_block
    monkeypatch.chdir(ROOT)
    text = read_block(ROOT / page, block)
    assert f"--readme {page} --block {block}" in (ROOT / "Makefile").read_text()
    if not (ROOT / result).exists():
        assert text == ""
        return
    assert text == json_block(result, "summary")


def test_readme_compare_block_is_the_committed_sweep_table(monkeypatch):
    """Chapter 04's seeds table in the README is what ``python -m symlib compare --report`` prints from the committed
    table, with its provenance (empty before the table is committed)."""
    from symlib.analyses.compare import sweep_report
    from symlib.analyses.report import read_block, source_line
    monkeypatch.chdir(ROOT)
    text = read_block(ROOT / "README.md", "compare")
    csv = "results/compare/04_seeds.csv"
    if not (ROOT / csv).exists():
        assert text == ""
        return
    assert text == sweep_report(csv) + "\n\n" + source_line(csv)


def test_full_run_is_the_readme_block_and_says_when_missing(monkeypatch):
    """What a chapter shows as its full run is the README's block of the same name; a result not
    committed yet says how to make it; an unknown name is refused."""
    from symlib.analyses import report
    assert findings.full_run("findings") == report.read_block(ROOT / "README.md", "findings")
    monkeypatch.setitem(findings.FULL_RUNS, "mas", ("results/mas/not-there.json", "make mas-full"))
    assert "make mas-full" in findings.full_run("mas") and "not committed yet" in findings.full_run("mas")
    with pytest.raises(ValueError, match="known: findings"):
        findings.full_run("nope")
