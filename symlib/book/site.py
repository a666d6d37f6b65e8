"""The rendered book: the executed chapters and the pages of docs/ as one static HTML site.

    python -m symlib site [--notebooks out] [--out out/html] [--docs docs]

``make book`` runs this last (``make book-html`` runs it alone). It executes nothing: it takes
the chapters papermill wrote (``<notebooks>/NN_*.ipynb`` with outputs, in name order), copies
them beside the pages of ``docs/`` into a temporary source folder, writes the landing page's
table of contents there (``contents.inc``, which ``docs/index.md`` includes) and renders it
all with Sphinx and MyST-NB into ``<out>/index.html``.

The site needs no network, to build or to read: the theme's styles and scripts come from its
pip package, widgets (progress bars, the explorer) are drawn as static HTML from the state
papermill saved (no widget scripts from a CDN) and math shows as TeX (no MathJax; see
``docs/conf.py``). A chapter of ``notebooks/`` with no executed copy is listed on the landing
page as not run.

Exit status: 0 when the site was built, 1 when Sphinx failed, 2 for bad input (nothing is
written: no executed chapter, no docs/index.md, or an output folder that is not a site).
"""
from __future__ import annotations

import argparse
import html
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..paths import REPO_ROOT

#: Pages of docs/ in reading order; any other docs/*.md page follows them, by name.
PAGE_ORDER = ("science", "choices", "running", "parameters", "library", "results", "earlier_results")
CHAPTER_GLOB = "[0-9][0-9]_*.ipynb"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_executed(nb: dict | None) -> bool:
    """Whether a notebook was run: a code cell with an execution count or outputs."""
    return bool(nb) and any(c.get("cell_type") == "code" and (c.get("execution_count") is not None or c.get("outputs"))
                            for c in nb.get("cells", []))


def executed_chapters(folder: Path) -> list[Path]:
    """The executed notebooks ``NN_*.ipynb`` in ``folder``, in name order."""
    return [p for p in sorted(Path(folder).glob(CHAPTER_GLOB)) if is_executed(_read(p))]


def title(nb: dict, fallback: str) -> str:
    """The notebook's first ``# `` heading, else ``fallback``."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


# ---- widgets as static HTML --------------------------------------------------------------------

CONTROLS = ("SliderModel", "DropdownModel", "ButtonModel", "CheckboxModel", "TextModel")  # what a reader would move


def _text(x) -> str:
    """A notebook's text field (a string or a list of lines) as one string; '' for None."""
    return "" if x is None else "".join(x) if isinstance(x, list) else str(x)


def _widget_html(ref: str, state: dict) -> str:
    """One saved widget (``IPY_MODEL_<id>`` or ``<id>``) and its children as plain HTML."""
    model = state.get(ref.removeprefix("IPY_MODEL_"))
    if model is None:
        return ""
    name, s = model.get("model_name", ""), model.get("state", {})
    classes = " ".join(["sx-static", *s.get("_dom_classes", [])])
    if s.get("children"):
        flow = "row" if name == "HBoxModel" else "column"
        inner = "".join(_widget_html(c, state) for c in s["children"])
        return f'<div class="{classes}" style="display: flex; flex-flow: {flow} wrap; gap: 0.2em 1em">{inner}</div>'
    label = f"<b>{html.escape(s['description'])}</b> " if s.get("description") else ""
    if name in ("HTMLModel", "HTMLMathModel"):
        return f'<div class="{classes}">{label}{s.get("value", "")}</div>'  # HTML the notebook itself wrote
    if "Progress" in name:
        return f'<progress value="{s.get("value", 0)}" max="{s.get("max", 100)}"></progress>'
    if name == "ButtonModel":
        return f"<button disabled>{html.escape(s.get('description', ''))}</button>"
    if name == "OutputModel":  # what was printed or displayed into it: its HTML, else its text
        return "".join(_text(o.get("data", {}).get("text/html")) or
                       f"<pre>{html.escape(_text(o.get('data', {}).get('text/plain') or o.get('text', '')))}</pre>"
                       for o in s.get("outputs", []))
    if "value" in s or "index" in s:
        value = s.get("value", s.get("index"))
        if "Dropdown" in name and isinstance(value, int) and s.get("_options_labels"):
            value = s["_options_labels"][value]
        return f'<div class="{classes}">{label}<code>{html.escape(str(value))}</code></div>'
    return ""


def _tree(model_id: str, state: dict) -> list[str]:
    """A saved widget's id and those of all its children."""
    kids = state.get(model_id, {}).get("state", {}).get("children", [])
    return [model_id] + [i for c in kids for i in _tree(c.removeprefix("IPY_MODEL_"), state)]


def static_widgets(nb: dict) -> dict:
    """``nb`` with each widget output replaced by static HTML drawn from its saved state (a note says
    when it has controls: they move only in a live kernel); the widget state itself is dropped."""
    state = nb.get("metadata", {}).pop("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            view = out.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
            if view is None or view.get("model_id") not in state:
                continue
            body = _widget_html(view["model_id"], state)
            if any(state.get(m, {}).get("model_name", "").endswith(CONTROLS) for m in _tree(view["model_id"], state)):
                body += ('<p class="sx-static-note" style="font-style: italic">A snapshot of an interactive widget: '
                         'it moves only with a live kernel (open the chapter in JupyterLab).</p>')
            out["data"] = {"text/html": body}
    return nb


# ---- the landing page's contents ---------------------------------------------------------------

def contents(pages: list[str], chapters: list[tuple[str, str]], not_run: list[tuple[str, str]]) -> str:
    """MyST for the landing page: a toctree of the docs pages, one of the chapters, and the chapters not run."""
    lines = ["```{toctree}", ":caption: About the book", ":maxdepth: 1", "", *pages, "```", "",
             "```{toctree}", ":caption: Chapters", ":maxdepth: 1", "", *[f"{t} <chapters/{n}>" for n, t in chapters], "```", ""]
    if not_run:
        lines += ["Not run (no executed copy was found when this site was built):", ""]
        lines += [f"- {t} (`{n}`) — **not run**" for n, t in not_run]
        lines.append("")
    return "\n".join(lines)


def _order(pages: list[str]) -> list[str]:
    first = [p for p in PAGE_ORDER if p in pages]
    return first + sorted(p for p in pages if p not in first)


# ---- the build ---------------------------------------------------------------------------------

def check_inputs(notebooks: Path, out: Path, docs: Path) -> list[Path]:
    """The executed chapters to render; a ValueError saying what is wrong otherwise (nothing is written)."""
    notebooks, out, docs = Path(notebooks), Path(out), Path(docs)
    if not notebooks.is_dir():
        raise ValueError(f"no folder {notebooks}: run the chapters first (make book writes them to out/)")
    chapters = executed_chapters(notebooks)
    if not chapters:
        found = sorted(p.name for p in notebooks.glob(CHAPTER_GLOB))
        raise ValueError(f"no executed chapter in {notebooks}: looked for {notebooks / CHAPTER_GLOB} with outputs"
                         + (f" (found only unexecuted: {', '.join(found)})" if found else "")
                         + "; run the chapters first (make book)")
    for need in ("conf.py", "index.md"):
        if not (docs / need).is_file():
            raise ValueError(f"no {docs / need}: the book's pages and settings live in docs/")
    if out.exists() and any(out.iterdir()) and not (out / ".buildinfo").exists():
        raise ValueError(f"{out} holds files that are not an earlier build of the site; give an empty or new folder")
    return chapters


def build(notebooks: Path, out: Path, docs: Path = REPO_ROOT / "docs", sources: Path = REPO_ROOT / "notebooks",
          quiet: bool = True) -> Path:
    """Render the executed chapters in ``notebooks`` and the pages of ``docs`` into ``out``; returns
    ``out/index.html``. ``sources`` holds the chapters' notebooks: those with no executed copy
    (``<stem>.ipynb`` or ``<stem>_*.ipynb``) are listed as not run. Raises ValueError for bad input
    before anything is written, RuntimeError when Sphinx fails."""
    chapters = check_inputs(notebooks, out, docs)
    out, docs = Path(out).resolve(), Path(docs).resolve()
    with tempfile.TemporaryDirectory(prefix="symlib-site-") as tmp:
        src = Path(tmp) / "docs"
        shutil.copytree(docs, src, ignore=shutil.ignore_patterns("_build", ".*"))
        for sibling in ("figures", "results"):  # pages may show ../figures/x.png: keep such paths working
            if (docs.parent / sibling).is_dir():
                (Path(tmp) / sibling).symlink_to(docs.parent / sibling)
        (src / "chapters").mkdir()
        stems = [p.stem for p in sorted(Path(sources).glob(CHAPTER_GLOB))]  # the book's chapters
        shown = []
        for path in chapters:
            nb = static_widgets(json.loads(path.read_text()))
            (src / "chapters" / path.name).write_text(json.dumps(nb))
            # a chapter run more than once (02 per architecture, 04 per sweep) has its variant in its title
            stem = next((s for s in stems if path.stem.startswith(s + "_")), None)
            variant = f" ({path.stem[len(stem) + 1:].replace('_', ' ')})" if stem else ""
            shown.append((path.stem, title(nb, path.stem) + variant))
        run = {p.stem for p in chapters}
        not_run = [(s, title(_read(Path(sources) / f"{s}.ipynb") or {}, s)) for s in stems
                   if s not in run and not any(r.startswith(s + "_") for r in run)]
        pages = _order([p.stem for p in src.glob("*.md") if p.stem != "index"])
        (src / "contents.inc").write_text(contents(pages, shown, not_run))
        if out.exists():
            shutil.rmtree(out)  # an earlier build (check_inputs): no page of a removed chapter is left behind
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-d", str(Path(tmp) / "doctrees"), *(["-q"] if quiet else []),
               str(src), str(out)]
        if subprocess.run(cmd).returncode != 0:
            raise RuntimeError(f"sphinx-build failed (command: {' '.join(cmd)})")
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m symlib site", description=__doc__.split("\n\n")[0])
    ap.add_argument("--notebooks", default=str(REPO_ROOT / "out"), help="folder of executed chapters (default out/)")
    ap.add_argument("--out", default=str(REPO_ROOT / "out" / "html"), help="folder for the site (default out/html)")
    ap.add_argument("--docs", default=str(REPO_ROOT / "docs"), help="the book's pages and conf.py (default docs/)")
    ap.add_argument("--verbose", action="store_true", help="show Sphinx's progress, not only its warnings")
    args = ap.parse_args(argv)
    try:
        index = build(Path(args.notebooks), Path(args.out), Path(args.docs), quiet=not args.verbose)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"the book's site: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
