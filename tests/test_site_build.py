"""symlib.book.site, the rendered book's builder, without a browser: its input checks (bad input stops it
before anything is written, saying what it looked for), the widgets it draws from saved state, the
landing page's contents, and one small build. The site in Chromium: tests/test_site.py (``-m browser``)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from symlib.book import site

REPO = Path(__file__).resolve().parent.parent


def _notebook(path: Path, executed: bool = True, heading: str = "# 00 · A chapter", **metadata) -> Path:
    code = {"cell_type": "code", "metadata": {}, "source": "print(1 + 1)", "execution_count": 1 if executed else None,
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "2\n"}] if executed else []}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                          "language": "python"}, **metadata},
          "cells": [{"cell_type": "markdown", "metadata": {}, "source": heading + "\n\nSome text."}, code]}
    path.write_text(json.dumps(nb))
    return path


def _run(tmp_path, notebooks, out=None, docs=REPO / "docs", capsys=None):
    out = out or tmp_path / "html"
    rc = site.main(["--notebooks", str(notebooks), "--out", str(out), "--docs", str(docs)])
    return rc, capsys.readouterr().err if capsys else ""


def test_no_executed_chapter_is_an_error_before_any_work(tmp_path, capsys):
    """A folder with no NN_*.ipynb, or only unexecuted ones, stops the builder (exit 2), naming what it
    looked for and what it found; no output folder is made."""
    nbs = tmp_path / "out"
    nbs.mkdir()
    (nbs / "notes.ipynb").write_text("{}")  # not a chapter's name
    rc, err = _run(tmp_path, nbs, capsys=capsys)
    assert rc == 2 and "no executed chapter" in err and str(nbs / "[0-9][0-9]_*.ipynb") in err and "make book" in err
    assert not (tmp_path / "html").exists()

    shutil.copy(REPO / "notebooks" / "00_quickstart.ipynb", nbs)  # the committed notebook: no outputs
    _notebook(nbs / "01_other.ipynb", executed=False)
    rc, err = _run(tmp_path, nbs, capsys=capsys)
    assert rc == 2 and "found only unexecuted: 00_quickstart.ipynb, 01_other.ipynb" in err
    assert not (tmp_path / "html").exists()


def test_missing_folders_and_a_foreign_output_folder_are_errors(tmp_path, capsys):
    nbs = tmp_path / "out"
    nbs.mkdir()
    _notebook(nbs / "00_chapter.ipynb")
    rc, err = _run(tmp_path, tmp_path / "nowhere", capsys=capsys)
    assert rc == 2 and "no folder" in err and "nowhere" in err
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "conf.py").write_text("")
    rc, err = _run(tmp_path, nbs, docs=docs, capsys=capsys)
    assert rc == 2 and "index.md" in err
    # an output folder holding something else is left alone
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, err = _run(tmp_path, nbs, out=out, capsys=capsys)
    assert rc == 2 and "not an earlier build" in err and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_executed_chapters_in_name_order(tmp_path):
    for name, executed in (("02_b", True), ("00_a", True), ("01_skip", False), ("10_c", True), ("xx_d", True)):
        _notebook(tmp_path / f"{name}.ipynb", executed=executed)
    (tmp_path / "03_broken.ipynb").write_text("{not json")
    assert [p.name for p in site.executed_chapters(tmp_path)] == ["00_a.ipynb", "02_b.ipynb", "10_c.ipynb"]


def test_widgets_drawn_from_saved_state():
    """A finished progress bar (tqdm's HBox) becomes static HTML at its final value; the widget state is dropped."""
    state = {
        "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_label", "IPY_MODEL_bar", "IPY_MODEL_count"]}},
        "label": {"model_name": "HTMLModel", "state": {"value": "train: 100%"}},
        "bar": {"model_name": "FloatProgressModel", "state": {"value": 24.0, "max": 24.0}},
        "count": {"model_name": "HTMLModel", "state": {"value": "24/24"}},
        "slider": {"model_name": "IntSliderModel", "state": {"value": 3, "description": "N"}},
    }
    nb = {"metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {"state": state}}}, "cells": [
        {"cell_type": "code", "outputs": [{"output_type": "display_data", "data": {
            "application/vnd.jupyter.widget-view+json": {"model_id": "box"}, "text/plain": "0%"}}]},
        {"cell_type": "code", "outputs": [{"output_type": "display_data", "data": {
            "application/vnd.jupyter.widget-view+json": {"model_id": "slider"}, "text/plain": "IntSlider(...)"}}]}]}
    out = site.static_widgets(nb)
    assert "widgets" not in out["metadata"]
    bar, slider = (c["outputs"][0]["data"] for c in out["cells"])
    assert list(bar) == ["text/html"] and '<progress value="24.0" max="24.0">' in bar["text/html"]
    assert "train: 100%" in bar["text/html"] and "snapshot" not in bar["text/html"]
    assert "<b>N</b> <code>3</code>" in slider["text/html"] and "snapshot of an interactive widget" in slider["text/html"]


def test_contents_lists_pages_chapters_and_chapters_not_run():
    text = site.contents(site._order(["library", "zzz", "science"]), [("00_a", "00 · A")], [("01_b", "01 · B")])
    assert text.index("science") < text.index("library") < text.index("zzz")  # the reading order, then the rest
    assert "00 · A <chapters/00_a>" in text and "- 01 · B (`01_b`) — **not run**" in text


def test_build_a_small_site(tmp_path):
    """One executed chapter of two, and the repository's docs: an index, the chapter's page, the other
    chapter listed as not run, every docs page built, nothing that points to another host."""
    nbs, sources = tmp_path / "out", tmp_path / "sources"
    nbs.mkdir()
    sources.mkdir()
    _notebook(nbs / "00_first.ipynb", heading="# 00 · First")
    _notebook(sources / "00_first.ipynb", executed=False, heading="# 00 · First")
    _notebook(sources / "01_second.ipynb", executed=False, heading="# 01 · Second")
    index = site.build(nbs, tmp_path / "html", REPO / "docs", sources=sources)
    text = re.sub(r"<[^>]+>", "", index.read_text())
    assert "00 · First" in text and "01 · Second (01_second) — not run" in text
    assert (index.parent / "chapters" / "00_first.html").exists()
    for page in (REPO / "docs").glob("*.md"):
        assert (index.parent / f"{page.stem}.html").exists(), page.name
    for page in index.parent.rglob("*.html"):
        assert not re.findall(r'<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)="(?:https?:)?//', page.read_text()), page.name
    # a later build may replace this one: its own earlier output is not a foreign folder
    assert site.check_inputs(nbs, index.parent, REPO / "docs") == [nbs / "00_first.ipynb"]
