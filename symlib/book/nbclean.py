"""Keep the chapters' notebooks clean in git: a filter that strips what running and saving adds.

Running a chapter in JupyterLab and saving it writes outputs, execution counts, widget state
and kernel details into the ``.ipynb``; the book keeps its notebooks without them (the
executed copies live in ``out/``). ``make`` installs this script as a git *clean* filter for
``notebooks/*.ipynb`` (see ``.gitattributes``), so git sees a saved notebook as unchanged
unless its code or text changed::

    git config filter.nbclean.clean "python3 symlib/book/nbclean.py"

It reads a notebook on stdin and writes the stripped notebook to stdout; with file arguments
it strips those files in place. Standard library only: git runs it with the system Python.
"""
from __future__ import annotations

import json
import sys

KEEP_NOTEBOOK_METADATA = ("jupytext", "kernelspec")
KEEP_CELL_METADATA = ("tags", "lines_to_next_cell")  # jupytext keeps the second to round-trip the .py


def clean(text: str) -> str:
    """The notebook ``text`` without outputs, execution counts, or metadata beyond what the book keeps."""
    if not text.strip():
        return text
    nb = json.loads(text)
    nb["metadata"] = {k: v for k, v in nb.get("metadata", {}).items() if k in KEEP_NOTEBOOK_METADATA}
    for cell in nb.get("cells", []):
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in KEEP_CELL_METADATA}
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    if not argv:
        sys.stdout.write(clean(sys.stdin.read()))
        return 0
    for path in argv:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = clean(text)
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
