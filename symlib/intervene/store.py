"""The results store: every search (DAS, MAS, stitching) cached under a key made of what produced it.

The key is a hash of the networks' weights (so a checkpoint is identified by what it
is, not where it lies), the task, the search config, every option that changes what is
measured, the measurement version and a fingerprint of the code that makes pairs, labels
and metrics (``code_fingerprint``): a search cached by other code is never returned. A
rerun of a notebook or a grid finds its searches here and pays only for what is new; an
interrupted grid resumes, because each finished search is saved at once, atomically.

Layout: ``data/das_store/[<kind>/]<key[:2]>/<key>/`` holding ``result.json`` (config,
metrics, history, ...), ``maps.pt`` or ``alignment.pt`` (weights only) and, for DAS,
``rows.npz`` (per test pair). DAS entries sit at the top (kind ""), MAS and stitching
under ``mas/``.
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

from ..paths import data_dir
from ..utils import atomic_write_json

#: Bump when what a search measures changes in a way the code fingerprint cannot see.
MEASUREMENT_VERSION = "4"

#: The modules whose code decides a search's pairs, labels, training and metrics.
MEASURING_MODULES = ("game/tasks", "game/programs", "game/counterfactuals", "networks/models", "networks/hooked",
                     "intervene/alignment", "intervene/iia", "intervene/search", "intervene/das", "intervene/mas",
                     "intervene/controls", "intervene/store")

_CODE_FINGERPRINT: str | None = None


def code_fingerprint() -> str:
    """Hash the source of the modules that make pairs, labels and metrics (``MEASURING_MODULES``):
    any edit to them gives new keys, so no cached search made by other code is returned."""
    global _CODE_FINGERPRINT
    if _CODE_FINGERPRINT is None:
        here = Path(__file__).resolve().parent.parent  # symlib/
        h = hashlib.sha256()
        for name in MEASURING_MODULES:
            h.update(name.encode())
            h.update((here / f"{name}.py").read_bytes())
        _CODE_FINGERPRINT = h.hexdigest()[:16]
    return _CODE_FINGERPRINT


def make_key(parts: dict) -> str:
    """The store key of a search described by ``parts`` (JSON-able), with the measurement
    version and the code fingerprint added."""
    d = {**parts, "version": MEASUREMENT_VERSION, "code": code_fingerprint()}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:32]


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
        """The key of a search on one network: the network's weights, the task, the config (any dataclass), whether it was
        trained and, for a warm start, the weights of the alignment it started from (plus the
        measurement version and code fingerprint, see ``make_key``)."""
        d = {"model": model_fingerprint(model), "task": [task.name, task.unk_p], "config": asdict(cfg), "trained": trained}
        if init is not None:
            d["init"] = tensors_fingerprint(init)
        return make_key(d)

    def path(self, key: str, kind: str = "") -> Path:
        """The folder of entry ``key`` of ``kind`` ("" for DAS, "mas" for MAS and stitching)."""
        return (self.root / kind if kind else self.root) / key[:2] / key

    def __contains__(self, key: str) -> bool:
        return (self.path(key) / "result.json").exists()

    # ---- entries of any kind: a JSON record, named state dicts, named arrays ----

    def save_entry(self, key: str, record: dict, maps: dict | None = None, arrays: dict | None = None,
                   kind: str = "", maps_file: str = "maps.pt") -> Path:
        """Save ``record`` (JSON, floats exact), ``maps`` (name -> state dict) and ``arrays``
        (name -> array) under ``key`` atomically: a half-written entry is never visible."""
        def write(tmp: Path) -> None:
            atomic_write_json(tmp / "result.json", record, digits=None)  # exact: a cached result must equal the fresh one
            if maps is not None:
                torch.save({k: {n: v.detach().cpu() for n, v in sd.items()} for k, sd in maps.items()}, tmp / maps_file)
            if arrays is not None:
                np.savez(tmp / "rows.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        return write_dir_atomically(self.path(key, kind), write)

    def load_entry(self, key: str, kind: str = "", maps_file: str = "maps.pt") -> tuple | None:
        """(record, maps, arrays) saved under ``key``, or None (maps/arrays None where not saved)."""
        p = self.path(key, kind)
        if not (p / "result.json").exists():
            return None
        record = json.loads((p / "result.json").read_text())
        maps = torch.load(p / maps_file, weights_only=True, map_location="cpu") if (p / maps_file).exists() else None
        arrays = None
        if (p / "rows.npz").exists():
            with np.load(p / "rows.npz") as z:
                arrays = {k: z[k] for k in z.files}
        return record, maps, arrays

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
