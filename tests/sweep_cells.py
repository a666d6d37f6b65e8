"""Tiny cell functions for tests/test_sweep.py (importable by the Dask workers: tests/ is on their path).

Each call appends a line to ``<marker>/<x>.log`` when ``marker`` is given, so a test can
count how often a cell started and finished.
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def _mark(marker: str, x, event: str) -> None:
    if marker:
        with open(Path(marker) / f"{x}.log", "a") as f:
            f.write(f"{event} {os.getpid()}\n")


def square(x, y=0, marker=""):
    """Metrics: x squared plus y, a nested dict (flattened to ``nested.*``) and a table (not a column)."""
    _mark(marker, x, "start")
    _mark(marker, x, "end")
    return {"sq": x * x + y, "nested": {"half": x / 2, "name": f"x{x}"}, "table": [{"a": 1}, {"a": 2}]}


def fail_if(x, bad=-1, marker=""):
    """Raises a RuntimeError when ``x == bad``; else returns ``{"x": x}``."""
    _mark(marker, x, "start")
    if x == bad:
        raise RuntimeError(f"cell x={x} fails on purpose")
    _mark(marker, x, "end")
    return {"x": x}


def slow(x, seconds=0.0, marker=""):
    """Sleeps ``seconds`` between its start and end markers."""
    _mark(marker, x, "start")
    time.sleep(seconds)
    _mark(marker, x, "end")
    return {"x": x}


def with_arch(x, arch="gru"):
    """A function with an ``arch`` parameter (its values are checked against symlib.ARCH_NAMES)."""
    return {"x": x}


def checked(x):
    """A function with a ``validate_params`` hook rejecting negative x."""
    return {"x": x}


def _no_negative(params: dict) -> None:
    if params["x"] < 0:
        raise ValueError(f"x must be >= 0, got {params['x']}")


checked.validate_params = _no_negative


def anything(**params):
    """Takes any parameter (so only their values are checked); reports how many it got."""
    return {"n_params": len(params)}


def das_cell(seed=0, device="cpu"):
    """A tiny trained GRU and a short DAS search on ``device``; metrics: where it ran and its IIA."""
    import symlib
    run = symlib.train(task="multiobject", arch="gru", d_model=16, max_steps=20, eval_every=10, n_eval_trials=32,
                       n_train_trials=128, seed=seed, run_dir=None, device=device, progress=False)
    res = symlib.run_das(run.model.eval(), symlib.make_task("multiobject"), n_train=128, n_val=32, n_test=32,
                         eval_every=5, max_steps=5, n_units=4, progress=False)
    return {"device": run.model.device.type, "iia_test": res.metrics["iia_test"]}
