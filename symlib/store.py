"""A results store: every search cached under a key made of what produced it.

The key is a hash of the network's weights (so a checkpoint is identified by what it
is, not where it lies), the task, the search config and the measurement version. A
rerun of a notebook or a grid finds its searches here and pays only for what is new; an
interrupted grid resumes, because each finished search is saved at once, atomically.

Layout: ``data/das_store/<key[:2]>/<key>/`` holding ``result.json`` (config, metrics,
history), ``rows.npz`` (per test pair) and ``alignment.pt`` (weights only).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .paths import data_dir
from .utils import atomic_write_json

#: Bump when what a search measures changes, so old entries are not reused.
MEASUREMENT_VERSION = "3"


def _hash_tensors(h, tensors: dict) -> None:
    for name, t in sorted(tensors.items()):
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash a network's weights and kind: equal networks get equal fingerprints."""
    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    h.update(type(model).__name__.encode())
    if cfg is not None and hasattr(cfg, "to_json"):
        h.update(cfg.to_json().encode())
    _hash_tensors(h, model.state_dict())
    return h.hexdigest()


def tensors_fingerprint(tensors: dict) -> str:
    """Hash a dict of tensors (e.g. an alignment's state dict)."""
    h = hashlib.sha256()
    _hash_tensors(h, tensors)
    return h.hexdigest()


class ResultsStore:
    """Searches cached on disk under ``root`` (default ``data/das_store``)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else data_dir() / "das_store"

    def key(self, model, task, cfg, trained: bool = True, init: dict | None = None) -> str:
        """The key of a search: the network's weights, the task, the config, the measurement
        version and, for a warm start, the weights of the alignment it started from."""
        d = {"model": model_fingerprint(model), "task": [task.name, task.unk_p], "config": asdict(cfg),
             "trained": trained, "version": MEASUREMENT_VERSION}
        if init is not None:
            d["init"] = tensors_fingerprint(init)
        blob = json.dumps(d, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def __contains__(self, key: str) -> bool:
        return (self.path(key) / "result.json").exists()

    def get(self, key: str):
        """Return the cached ``DASResult`` for ``key``, or None."""
        from .alignment import alignment_from_description
        from .das import DASConfig, DASResult
        p = self.path(key)
        if not (p / "result.json").exists():
            return None
        meta = json.loads((p / "result.json").read_text())
        align = alignment_from_description(meta["alignment"])
        align.load_state_dict(torch.load(p / "alignment.pt", weights_only=True, map_location="cpu"))
        with np.load(p / "rows.npz") as z:
            rows = {k: z[k] for k in z.files}
        metrics = dict(meta["metrics"], cached=True)
        return DASResult(align.eval(), DASConfig(**meta["config"]), metrics, meta["history"], rows)

    def put(self, key: str, result) -> Path:
        """Save a result under ``key`` atomically (a half-written entry is never visible)."""
        def write(tmp: Path) -> None:
            atomic_write_json(tmp / "result.json", {"config": asdict(result.config), "metrics": result.metrics,
                                                    "history": result.history, "alignment": result.alignment.describe()},
                              digits=None)  # exact: a cached result must equal the fresh one
            torch.save({k: v.detach().cpu() for k, v in result.alignment.state_dict().items()}, tmp / "alignment.pt")
            np.savez(tmp / "rows.npz", **{k: np.asarray(v) for k, v in result.rows.items()})
        return write_dir_atomically(self.path(key), write)

    def clear(self) -> None:
        """Remove every cached search."""
        shutil.rmtree(self.root, ignore_errors=True)


def write_dir_atomically(final: Path, write) -> Path:
    """Fill a fresh folder with ``write(tmp_folder)`` and move it to ``final`` in one step,
    replacing what was there: a half-written folder is never visible under ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def resolve_store(store) -> ResultsStore | None:
    """Turn ``store`` (None/False, True, a path or a ResultsStore) into a store or None."""
    if store is None or store is False:
        return None
    if store is True:
        return ResultsStore()
    if isinstance(store, ResultsStore):
        return store
    return ResultsStore(store)
