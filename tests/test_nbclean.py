"""The git filter that keeps notebooks clean: committed notebooks pass through unchanged, a notebook
saved with outputs comes out as committed, and git then sees no change."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from symlib.book.nbclean import clean

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SCRIPT = ROOT / "symlib" / "book" / "nbclean.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_are_already_clean(path):
    text = path.read_text(encoding="utf-8")
    assert clean(text) == text


def as_saved_by_jupyterlab(text: str) -> str:
    """What running every cell and saving adds: outputs, counts, kernel info, widget state, cell timing."""
    nb = json.loads(text)
    nb["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    for i, cell in enumerate(nb["cells"]):
        cell["metadata"]["execution"] = {"iopub.status.busy": "2026-11-24T02:00:00Z"}
        if cell["cell_type"] == "code":
            cell["execution_count"] = i + 1
            cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["ran ✓\n"]}]
    return json.dumps(nb, indent=2)


def test_a_saved_notebook_is_stripped_back_to_the_committed_one():
    text = NOTEBOOKS[0].read_text(encoding="utf-8")
    saved = as_saved_by_jupyterlab(text)
    assert saved != text and clean(saved) == text
    out = subprocess.run([sys.executable, str(SCRIPT)], input=saved, capture_output=True, text=True, check=True).stdout
    assert out == text


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_sees_no_change_after_saving_with_outputs(tmp_path):
    """With the filter installed as make installs it, a notebook saved with outputs is not a change,
    and an edit to its text still is."""
    repo = tmp_path / "book"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "symlib" / "book").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "symlib" / "book" / "nbclean.py")
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    nb = repo / "notebooks" / NOTEBOOKS[0].name
    nb.write_text(NOTEBOOKS[0].read_text(encoding="utf-8"), encoding="utf-8")

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                              capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("config", "filter.nbclean.clean", "python3 symlib/book/nbclean.py")
    git("add", ".")
    git("commit", "-qm", "book")
    nb.write_text(as_saved_by_jupyterlab(nb.read_text(encoding="utf-8")), encoding="utf-8")
    assert git("diff") == ""  # git status may still list the file (its size changed) until the index is refreshed:
    git("add", "-u")          # then nothing is staged and nothing is modified
    assert git("status", "--porcelain") == "" and git("diff", "--cached") == ""
    data = json.loads(nb.read_text(encoding="utf-8"))
    data["cells"][0]["source"].append("\nAn edit.")
    nb.write_text(json.dumps(data), encoding="utf-8")
    assert git("status", "--porcelain").strip() == f"M notebooks/{nb.name}"
