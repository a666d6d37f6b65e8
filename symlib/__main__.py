"""``python -m symlib <command> ...``: the book's commands in one place.

    python -m symlib book        run every chapter with papermill (what ``make book`` runs)
    python -m symlib site        render the executed chapters as a static HTML book
    python -m symlib sweep       run a sweep (a grid of notebook or function cells), resumable
    python -m symlib findings    the README's findings over seeds, or its report from a committed table
    python -m symlib compare     the README's table of a program-comparison sweep (chapter 04's seeds)
    python -m symlib report      print a committed result's summary (and write it into a README block)
    python -m symlib provenance  write where a result came from (commit, machine, command)
    python -m symlib nbclean     strip outputs from a notebook (the git filter)

``python -m symlib <command> --help`` gives a command's options.
"""
from __future__ import annotations

import importlib
import sys

#: command -> the module whose ``main(argv)`` runs it
COMMANDS = {
    "book": "symlib.book.build",
    "site": "symlib.book.site",
    "sweep": "symlib.book.sweep",
    "findings": "symlib.analyses.findings",
    "compare": "symlib.analyses.compare",
    "report": "symlib.analyses.report",
    "provenance": "symlib.analyses.provenance",
    "nbclean": "symlib.book.nbclean",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"python -m symlib: no command {command!r}; the commands are {', '.join(COMMANDS)} "
              "(python -m symlib --help)", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[command]).main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
