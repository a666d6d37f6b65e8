"""Where the book keeps things: repository root, data/ and figures/.

Notebooks never use paths relative to the current directory (nbval runs kernels in
the notebook's folder, papermill in the caller's), so every path comes from here.
"""
from __future__ import annotations

import os
from pathlib import Path

#: The repository root (the folder holding ``symlib/``).
REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Return the data folder (``$SYMLIB_DATA`` when set), creating it if needed."""
    p = Path(os.environ.get("SYMLIB_DATA", REPO_ROOT / "data"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def figures_dir() -> Path:
    """Return the figures folder (``$SYMLIB_FIGURES`` when set), creating it if needed."""
    p = Path(os.environ.get("SYMLIB_FIGURES", REPO_ROOT / "figures"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def runs_dir() -> Path:
    """Return ``data/runs``, where training runs live."""
    p = data_dir() / "runs"
    p.mkdir(parents=True, exist_ok=True)
    return p
