"""The README stays a front page: short, every result in it generated, its figure committed."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import pandas as pd

from symlib.analyses.findings import findings_figure, summarise_findings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FINDINGS_CSV = ROOT / "results" / "findings" / "multiobject-up_down-count-orthogonal.csv"


def _hand_written(text: str) -> str:
    """The README without its generated blocks (<!-- name:start --> .. <!-- name:end -->) and code fences."""
    text = re.sub(r"<!-- (\w+):start -->.*?<!-- \1:end -->", "", text, flags=re.S)
    return re.sub(r"```.*?```", "", text, flags=re.S)


def test_readme_is_short():
    hand = _hand_written(README.read_text())
    assert len(hand.splitlines()) <= 200, "the README's own text has grown past 200 lines: move detail to docs/"


def test_no_decimal_typed_by_hand():
    hand = _hand_written(README.read_text()).replace("Python 3.11", "")
    decimals = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", hand)
    assert not decimals, f"numbers typed by hand outside the generated blocks: {decimals}"


def test_the_check_sees_a_typed_number():
    """The rule above can fail: a number written outside a block is caught, one inside is not."""
    text = "IIA was 0.953 here.\n<!-- x:start -->\n0.421\n<!-- x:end -->\n```\n1.5\n```\n"
    assert re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", _hand_written(text)) == ["0.953"]


def test_every_linked_file_exists():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#]+)\)", text)
    assert "results/findings/findings.png" in targets
    missing = [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()]
    assert not missing, f"the README links to files that are not there: {missing}"


def test_findings_figure_drawn_from_the_table(tmp_path):
    out = tmp_path / "f.png"
    fig = findings_figure(FINDINGS_CSV, out)
    assert out.stat().st_size > 10_000
    ax = fig.axes[0]
    assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == ["gru", "lstm", "transformer"]
    heights = [b.get_height() for b in ax.patches[:3]]  # the first measure (the search), per architecture
    s = summarise_findings(pd.read_csv(FINDINGS_CSV))
    assert heights == pytest.approx(list(s[s.measure == "das"].set_index("arch").loc[["gru", "lstm", "transformer"], "iia_changed_test"]))


def test_findings_figure_cli_needs_report():
    from symlib.analyses.findings import main
    with pytest.raises(SystemExit):
        main(["--figure", "x.png"])


#: Decimals a chapter's prose may state: the recipe's and the rules' own constants, not results
#: (void-token rate, the solve threshold, the convergence rule, the verdict thresholds).
RULE_CONSTANTS = {"0.2", "0.99", "0.005", "0.995", "0.9", "0.5"}


def test_chapter_prose_types_no_result():
    """A chapter's markdown quotes no measured number by hand: results are printed by its cells."""
    import json
    found = {}
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            src = re.sub(r"`[^`]*`", "", _hand_written("".join(cell["source"])))
            extra = set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", src)) - RULE_CONSTANTS
            if extra:
                found.setdefault(nb.name, set()).update(extra)
    assert not found, f"numbers typed into chapter prose: {found}"


def test_the_rule_constants_in_chapter_prose_are_the_librarys():
    """The decimals chapter prose may quote are the recipe's own constants, not results; each is held
    here to the value the code uses, so a change of recipe fails this test instead of leaving prose stale."""
    import symlib
    from symlib.analyses import compare
    from symlib.intervene import search
    cfg, tf = symlib.TrainConfig(), symlib.TrainConfig(arch="transformer")
    held = {
        "0.99": cfg.solve_threshold,                      # 00, 02: solved
        "0.5": cfg.dropout,                               # 00: dropout; 04: partly / margin
        "0.2": tf.unk_p,                                  # 01: void tokens for Transformers
        "0.005": search.BUDGETS["finding"]["plateau_tol"],  # 03, 05, 06: the plateau rule
        "0.995": symlib.DASConfig().target_iia,           # 03, 05: converged at this validation IIA
        "0.9": compare.ALIGNED_IIA,                       # 04: aligns
    }
    assert set(held) == RULE_CONSTANTS
    assert all(float(k) == v for k, v in held.items()), held
    assert compare.PARTLY_IIA == compare.ALIGNED_MARGIN == 0.5
