"""The findings report is made only from a saved tidy table, and lands between markers in a markdown file."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from symlib import findings
from symlib.das import DASConfig

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


def test_write_between_markers_replaces_only_the_block(tmp_path):
    md = tmp_path / "R.md"
    md.write_text(f"head\n{findings.README_START}\nold\n{findings.README_END}\ntail\n")
    findings.write_between_markers(md, "new\nlines")
    assert md.read_text() == f"head\n{findings.README_START}\nnew\nlines\n{findings.README_END}\ntail\n"
    bad = tmp_path / "B.md"
    bad.write_text("no markers here\n")
    with pytest.raises(ValueError, match="findings:start"):
        findings.write_between_markers(bad, "x")
    assert bad.read_text() == "no markers here\n"  # nothing written


def test_report_command_prints_and_writes_without_running_anything(tmp_path):
    csv = tmp_path / "t.csv"
    tidy().to_csv(csv, index=False)
    md = tmp_path / "R.md"
    md.write_text(f"# R\n{findings.README_START}\n{findings.README_END}\n")
    out = subprocess.run([sys.executable, "-m", "symlib.findings", "--report", str(csv), "--readme", str(md)],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() in md.read_text() and "IIA on changed test pairs" in out
    err = subprocess.run([sys.executable, "-m", "symlib.findings", "--readme", str(md)], capture_output=True, text=True, cwd=ROOT)
    assert err.returncode != 0 and "--readme needs --report" in err.stderr


def test_readme_findings_are_the_committed_results():
    """The README's findings block is exactly what --report prints from the committed tidy table."""
    committed = ROOT / "results" / "findings" / "multiobject-up_down-count-orthogonal.csv"
    if not committed.exists():
        pytest.skip("no committed findings yet")
    readme = (ROOT / "README.md").read_text()
    block = readme.split(findings.README_START)[1].split(findings.README_END)[0].strip()
    cmd = "python -m symlib.findings --report results/findings/multiobject-up_down-count-orthogonal.csv"
    budget_ = asdict(DASConfig(**{**findings.FINDINGS_SEARCH, "max_steps": int(pd.read_csv(committed).max_steps.iloc[0])}))
    assert block == findings.findings_report(pd.read_csv(committed), budget_, cmd)


def test_provenance_names_command_commit_machine_and_wall_time(tmp_path):
    from datetime import datetime, timedelta, timezone
    from symlib.provenance import provenance_path, write_provenance
    import json
    result = tmp_path / "t.csv"
    result.write_text("a\n1\n")
    t0 = datetime(2026, 12, 7, 7, 0, tzinfo=timezone.utc)
    p = write_provenance(result, "python -m symlib.findings --seeds 0", t0, t0 + timedelta(seconds=90.5), seeds=[0])
    assert p == provenance_path(result) == tmp_path / "t.provenance.json"
    d = json.loads(p.read_text())
    assert d["command"] == "python -m symlib.findings --seeds 0" and d["wall_seconds"] == 90.5 and d["seeds"] == [0]
    assert d["started"] == "2026-12-07T07:00:00+00:00" and d["machine"]["cores"] >= 1 and d["torch"]
    if (ROOT / ".git").exists():
        assert len(d["commit"]) == 40 and isinstance(d["uncommitted_changes"], bool)
