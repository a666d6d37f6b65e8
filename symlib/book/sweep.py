"""A resumable parameter sweep over a notebook or a function, executed by Dask.

One YAML file says what to run and over which parameters::

    python -m symlib sweep grid.yaml [--workers N] [--threads-per-worker T]
                                     [--scheduler ADDRESS] [--retry-failed] [--dry-run]
                                     [--save-table CSV | --restore CSV]

    # grid.yaml
    notebook: ../notebooks/03_das_alignment.ipynb   # or  function: mypkg.module.cell_function
    out: out/sweeps/alignment                         # output folder (relative: to the cwd)
    grid:                                             # every combination is a cell
      ARCH: [gru, lstm]
      SEED: [0, 1, 2]
    fixed:                                            # passed to every cell
      MAX_STEPS: 300
      DEVICE: cpu

Keys (no others are accepted):

- ``notebook``: a notebook with a cell tagged ``parameters``, run with papermill; a relative
  path is looked up in the YAML file's folder, then in the current directory. If it has a
  ``RESULTS_PATH`` parameter, each cell passes ``<cell dir>/metrics.json`` and reads its
  metrics from there (``symlib.write_results`` writes it). Exactly one of ``notebook`` and
  ``function``.
- ``function``: a dotted name (``package.module.function``) called with the cell's
  parameters as keyword arguments; it returns a dict of metrics (or None). If it has an
  attribute ``validate_params`` (a callable taking a cell's params, raising ValueError),
  it is called on every cell before any cell runs.
- ``out``: the output folder.
- ``grid``: parameter -> list of values, the cells being every combination (a cartesian
  product); or a list of such mappings, a union of products, e.g. to add single cells::

      grid:
        - {ARCH: [gru, lstm], SEED: [0, 1, 2]}     # 6 cells
        - {ARCH: [transformer], SEED: [0], MAX_STEPS: [1000]}   # and one more

  A grid value must be a list: a single value goes under ``fixed`` (or in ``[...]``).
- ``fixed`` (optional): parameter -> value, the same in every cell.

What it writes (workers must see the same file system as the caller)::

    <out>/spec.yaml                       the resolved spec (written at the start)
    <out>/results.csv                     one row per cell (written at the end)
    <out>/cells/<cell id>/result.json     params, status (ok/failed), error, metrics, seconds, finished_at, commit, machine
    <out>/cells/<cell id>/metrics.json    everything the cell reported (e.g. a ``table`` of rows)
    <out>/cells/<cell id>/<stem>.ipynb    the executed notebook (notebook cells)

A cell id is a readable slug of its grid values and a short hash of all its parameters,
e.g. ``ARCH=gru_SEED=0-3fa2c1d9``. results.csv has the parameters as columns, then
``cell``, ``status`` (ok, failed or pending), ``error`` (``Type: message``), ``seconds``, ``finished_at`` (UTC),
``commit`` (of the code that ran the cell, ``+changes`` when its work tree had uncommitted ones),
``machine`` (the CPU, cores and any CUDA device of the worker that ran it: a sweep resumed or restored
elsewhere says which cells ran where), then the cell's scalar metrics (nested dicts flattened to ``a.b``; lists left out, they
stay in metrics.json). A metric named like a parameter or one of those columns becomes
``metrics.<name>``.

Resuming: a cell is done once its result.json says ``ok``; a rerun skips it, so an
interrupted sweep (Ctrl-C, a killed job) is finished by running the same command again.
result.json is written atomically, and only when the cell has finished; a cell starting
again first removes what an interrupted attempt left. A failing cell records its error
and the others go on; a rerun reports it as failed again without running it (a failure
is usually deterministic, and rerunning it would hide it in a long sweep) unless
``--retry-failed`` (``retry_failed=True``) is given, e.g. after fixing the cause.
Changing a parameter (also a fixed one) changes the cell ids, so those cells run anew.

Saving and restoring: ``--save-table CSV`` writes the table as it stands (pending cells
included) with its provenance (``CSV.provenance.json``), e.g. into a committed results
folder; ``--restore CSV`` gives the cells that have no result yet the finished rows of such a
table (their scalar metrics, seconds, commit and machine; ``restored_from`` in result.json), so a fresh
checkout goes on from a committed sweep and runs only what the table lacks.

Before any cell runs, the spec is checked, and a mistake raises a ValueError (the command
prints it and exits with status 2, creating nothing, also with ``--dry-run``): missing or
unknown keys, an ``out`` that is a file, a missing notebook or function, parameter names the
notebook's parameters cell or the function's signature does not have, and every cell's
values: for one of the book's chapters (a notebook whose first cell runs
``symlib.analyses.params.check_notebook``), the chapter's own check with the notebook's defaults filled
in, the same one its first cell runs (types, ranges, choices, list items, cross-checks such as
a subspace no wider than the network's state); for a function with a ``validate_params`` hook
(``symlib.analyses.compare.compare_cell``'s checks ``symlib.analyses.params``), that hook; otherwise the
well-known parameters' choices (``arch``/``archs``, ``task``/``tasks``, ``program``/``programs``,
``variable``/``variables``, ``alignment`` and ``device``, in any case; the plural ones take
comma-separated lists). Each problem is said once, naming the parameter as the grid spells it,
its value and what is allowed, and the cells that have it when not all do.

Three ways to execute it:

1. A local cluster (the default): ``python -m symlib sweep grid.yaml`` starts a
   ``distributed.LocalCluster`` of one single-threaded worker process per core (at most
   one per pending cell; ``--workers``, ``--threads-per-worker`` change that). Each cell's
   torch uses cores / (workers x threads) threads (OMP_NUM_THREADS in the workers, which
   notebook kernels inherit, and ``torch.set_num_threads``). Nothing is started when no
   cell is pending.
2. An existing cluster: ``python -m symlib sweep grid.yaml --scheduler tcp://host:8786``
   (``run_sweep(..., scheduler=address)`` or ``client=Client(...)``); the cluster is neither
   created nor closed, and its workers' thread settings are left as they are.
3. SLURM, with dask-jobqueue (``pip install dask-jobqueue``; not a dependency of symlib)::

       from dask.distributed import Client
       from dask_jobqueue import SLURMCluster
       from symlib.book.sweep import run_sweep

       cluster = SLURMCluster(cores=4, memory="16GB", walltime="02:00:00")
       cluster.scale(jobs=10)
       run_sweep("grid.yaml", client=Client(cluster))

   or by hand: ``dask scheduler`` on the login node, ``sbatch`` jobs that each run
   ``dask worker tcp://LOGIN:8786 --nworkers 4 --nthreads 1``, then
   ``python -m symlib sweep grid.yaml --scheduler tcp://LOGIN:8786``.

Networks that several cells need are trained once: ``load_or_train`` holds a file lock
per run while it trains, so a second worker waits and then loads it.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import inspect
import json
import logging
import os
import re
import signal
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import product
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import yaml

from ..utils import THREAD_VARS, Terminated, atomic_write_json, atomic_write_text, cpu_cores, json_ready, parse_list, raise_terminated

#: The keys a sweep file may have.
SPEC_KEYS: tuple[str, ...] = ("notebook", "function", "out", "grid", "fixed")
#: The notebook parameter through which a cell learns where to write its metrics.
RESULTS_PARAM = "RESULTS_PATH"
#: The columns of results.csv after the parameters and before the metrics.
TABLE_COLUMNS: tuple[str, ...] = ("cell", "status", "error", "seconds", "finished_at", "commit", "machine")
#: Plural parameter names (comma-separated lists) and the singular name whose choices they take.
PLURALS = {"archs": "arch", "tasks": "task", "programs": "program", "variables": "variable"}
#: How many traceback lines a failed cell keeps in its result.json.
TRACEBACK_LINES = 15
_SLUG_MAX = 100


def known_choices() -> dict[str, tuple[str, ...]]:
    """The valid values of the well-known parameters (lower-case names), from symlib's registries."""
    from ..intervene.alignment import ALIGNMENT_NAMES
    from ..game.counterfactuals import VARIABLE_NAMES
    from ..networks.models import ARCH_NAMES
    from ..game.programs import PROGRAM_NAMES
    from ..game.tasks import TASK_NAMES
    return {"arch": ARCH_NAMES, "task": TASK_NAMES, "program": PROGRAM_NAMES, "variable": VARIABLE_NAMES,
            "alignment": ALIGNMENT_NAMES, "device": ("auto", "cpu", "cuda")}


@dataclass(frozen=True)
class Cell:
    """One cell of a sweep: its id, its full parameters and its folder."""
    id: str
    params: dict
    dir: Path


# ---- the spec ------------------------------------------------------------------------

def load_spec(path: str | Path) -> dict:
    """Read a sweep file; a relative ``notebook`` is resolved against the file's folder, then the cwd.

    Raises a ValueError when the file is missing, is not YAML or does not hold a mapping.
    The spec itself is checked by ``validate``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sweep file not found: {path}")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path} should hold a mapping with the keys {', '.join(SPEC_KEYS)}; "
                         f"it holds a {type(spec).__name__}")
    nb = spec.get("notebook")
    if isinstance(nb, str) and nb and not Path(nb).expanduser().is_absolute():
        here, cwd = path.resolve().parent / nb, Path.cwd() / nb
        # Neither exists: keep the first place looked, so validate's message names it.
        spec["notebook"] = str(here if here.exists() or not cwd.exists() else cwd.resolve())
    return spec


def _subgrids(spec: dict) -> list[dict]:
    """The grid as a list of parameter -> values mappings, each checked (non-empty, values lists)."""
    grid = spec.get("grid")
    grids = grid if isinstance(grid, list) else [grid]
    if grid is None or not grids:
        raise ValueError("the grid is empty: give 'grid' as parameter -> list of values (or a list of such mappings)")
    for i, g in enumerate(grids):
        where = "grid" if not isinstance(grid, list) else f"grid[{i}]"
        if not isinstance(g, dict):
            raise ValueError(f"{where} should be a mapping parameter -> list of values, not a {type(g).__name__} ({g!r})")
        if not g:
            raise ValueError(f"{where} is empty: give at least one parameter with a list of values")
        for name, values in g.items():
            if not isinstance(name, str):
                raise ValueError(f"{where}: parameter names must be strings, got {name!r}")
            if not isinstance(values, (list, tuple)):
                raise ValueError(f"{where}: {name}: {values!r} is not a list; a grid parameter takes a list of values "
                                 f"({name}: [{values!r}]), or put a single value under 'fixed:'")
            if not values:
                raise ValueError(f"{where}: {name} has an empty list of values, so the grid has no cells")
    return grids


def _fixed(spec: dict) -> dict:
    fixed = spec.get("fixed")
    if fixed is None:
        return {}
    if not isinstance(fixed, dict):
        raise ValueError(f"'fixed' should be a mapping parameter -> value, not a {type(fixed).__name__}")
    return fixed


def expand_grid(spec: dict) -> list[dict]:
    """Every cell's parameters: one dict per grid combination (grid values first, then ``fixed``).

    With ``grid`` a list of mappings the cells are the union of their products, in order;
    a combination listed twice is kept once.
    """
    fixed = _fixed(spec)
    cells, seen = [], set()
    for g in _subgrids(spec):
        names = list(g)
        for combo in product(*(g[n] for n in names)):
            params = {**dict(zip(names, combo)), **fixed}
            key = _canonical(params)
            if key not in seen:
                seen.add(key)
                cells.append(params)
    return cells


def _canonical(params: dict) -> str:
    try:
        return json.dumps(json_ready(params, None), sort_keys=True, separators=(",", ":"))
    except TypeError as e:  # e.g. a YAML date
        raise ValueError(f"parameter values must be numbers, strings, booleans, None, lists or mappings ({e}): "
                         f"{params!r}") from None


def _slug(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._+=-]+", "-", text.replace(",", "+").replace(" ", ""))
    return text.strip("-").lstrip(".")


def cell_id(params: dict, fixed: dict | tuple | list = ()) -> str:
    """A cell's folder name: a readable slug of its parameters and a short stable hash of all of them.

    The slug shows ``name=value`` for the parameters not named in ``fixed`` (run_sweep passes
    the spec's ``fixed``, so only the grid values show), in sorted order, cut to 100
    characters; the hash (8 hex digits of the SHA-1 of the parameters as JSON with sorted
    keys) covers every parameter, so cells differing only in a fixed value differ too.
    E.g. ``arch=gru_seed=0_task=multiobject-3fa2c1d9``.
    """
    digest = hashlib.sha1(_canonical(params).encode()).hexdigest()[:8]
    parts = []
    for name in sorted(params):
        if name in fixed:
            continue
        value = params[name]
        text = json.dumps(json_ready(value, None), separators=(",", ":")) if isinstance(value, (list, tuple, dict)) else str(value)
        value = text.strip("[]")
        slug = _slug(value)
        if value.startswith("-") and not slug.startswith("-"):  # a negative number keeps its sign: n_units=-4, not 4
            slug = "-" + slug
        parts.append(f"{_slug(name)}={slug}")
    slug = "_".join(parts)[:_SLUG_MAX].rstrip("_-") or "cell"
    return f"{slug}-{digest}"


def list_cells(spec: dict) -> list[Cell]:
    """The sweep's cells, in grid order, with their ids and folders (``<out>/cells/<id>``)."""
    fixed = _fixed(spec)
    root = Path(spec["out"]).expanduser() / "cells"
    cells = []
    for params in expand_grid(spec):
        cid = cell_id(params, fixed)
        cells.append(Cell(cid, params, root / cid))
    return cells


def _import_target(name: str) -> Callable:
    """Import a dotted name: the longest importable module prefix, then attributes."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", name):
        raise ValueError(f"function {name!r} should be a dotted name such as package.module.function")
    parts = name.split(".")
    error = None
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is not None and module_name != e.name and not module_name.startswith(e.name + "."):
                raise ValueError(f"function {name!r}: importing module {module_name!r} failed: "
                                 f"ModuleNotFoundError: {e}") from None
            error = error or e
            continue
        except Exception as e:
            raise ValueError(f"function {name!r}: importing module {module_name!r} failed: "
                             f"{type(e).__name__}: {e}") from None
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                raise ValueError(f"function {name!r}: module {module_name!r} has no attribute {'.'.join(parts[i:])!r}"
                                 + (f" (and importing {'.'.join(parts[:i + 1])!r} failed: {error})" if error else ""))
            obj = getattr(obj, attr)
        if not callable(obj):
            raise ValueError(f"function {name!r} is a {type(obj).__name__}, not a callable")
        return obj
    raise ValueError(f"function {name!r}: cannot import module {parts[0]!r} ({error}); "
                     f"is it on the Python path (PYTHONPATH, or run from its folder)?")


def _notebook_parameters(path: Path) -> dict:
    """The notebook's parameters cell as papermill reads it: name -> {"default": source text, ...}."""
    try:
        import papermill
    except ImportError:
        raise ValueError("notebook sweeps need papermill: pip install -e '.[book]'") from None
    try:
        return dict(papermill.inspect_notebook(str(path)))
    except Exception as e:
        raise ValueError(f"cannot read the parameters of notebook {path}: {type(e).__name__}: {e}") from None


def _check_value(name: str, value: Any, choices: dict[str, tuple[str, ...]]) -> str | None:
    """A problem with a well-known parameter's value, or None."""
    key = name.lower()
    singular = PLURALS.get(key, key)
    if singular not in choices or value is None:
        return None
    valid = choices[singular]
    if key in PLURALS:
        try:
            items = parse_list(value, str, name)
        except ValueError as e:
            return f"parameter {name!r}: {e}"
    else:
        items = [value]
    bad = [v for v in items if not isinstance(v, str) or v not in valid]
    if bad:
        return f"parameter {name!r}: unknown value {bad[0]!r}; valid choices: {', '.join(valid)}"
    return None


def validate(spec: dict) -> None:
    """Check a sweep spec before anything runs; raise a ValueError saying every problem found.

    Checks the keys, the grid's shape, that ``out`` is no file, that the notebook exists or the
    function imports, the parameter names (the notebook's parameters cell, the function's
    signature unless it takes ``**kwargs``), required function arguments, and every cell's
    values: by the notebook's chapter check (``symlib.analyses.params``) when it has one, else by the
    function's ``validate_params`` hook, else the well-known parameters' choices (``known_choices``).
    """
    if not isinstance(spec, dict):
        raise ValueError(f"a sweep spec is a mapping with the keys {', '.join(SPEC_KEYS)}; got a {type(spec).__name__}")
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise ValueError(f"unknown key(s) in the sweep spec: {', '.join(map(str, unknown))}; "
                         f"valid keys: {', '.join(SPEC_KEYS)}")
    has_nb, has_fn = bool(spec.get("notebook")), bool(spec.get("function"))
    if has_nb == has_fn:
        raise ValueError("the sweep spec needs exactly one of 'notebook' (a path) and 'function' (a dotted name), "
                         f"{'not both' if has_nb else 'found neither'}; valid keys: {', '.join(SPEC_KEYS)}")
    missing = [k for k in ("out", "grid") if k not in spec]
    if missing:
        raise ValueError(f"the sweep spec is missing {' and '.join(map(repr, missing))}; valid keys: {', '.join(SPEC_KEYS)}")
    if not isinstance(spec["out"], (str, Path)) or not str(spec["out"]):
        raise ValueError(f"'out' should be a folder path, got {spec['out']!r}")
    out = Path(spec["out"]).expanduser()
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"'out' should be a folder, but {p} is a file" + (f" (in the path {out})" if p != out else ""))
            break
    fixed = _fixed(spec)
    grids = _subgrids(spec)
    both = sorted({n for g in grids for n in g} & set(fixed))
    if both:
        raise ValueError(f"parameter(s) {', '.join(both)} are both in 'grid' and in 'fixed'; keep each in one place")
    cells = expand_grid(spec)
    names = list(dict.fromkeys(n for params in cells for n in params))
    if RESULTS_PARAM in names:
        raise ValueError(f"{RESULTS_PARAM} is set by the sweep (each cell's metrics.json); leave it out of grid and fixed")

    problems: list[str] = []
    fn = None
    if has_nb:
        path = Path(spec["notebook"]).expanduser()
        if not path.is_file():
            raise ValueError(f"notebook not found: {path} (a relative path is looked up in the YAML file's folder, "
                             "then in the current directory)")
        nb_params = _notebook_parameters(path)
        valid = [n for n in nb_params if n != RESULTS_PARAM]
        what, takes_any = f"notebook {path.name}", False
    else:
        fn = _import_target(spec["function"])
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        takes_any = sig is None or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        valid = [] if sig is None else [n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        what = f"function {spec['function']}"
    if not takes_any:
        for n in names:
            if n not in valid:
                hint = [v for v in valid if v.lower() == n.lower()]
                problems.append(f"unknown parameter {n!r} for {what}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                + f"; its parameters: {', '.join(valid) or 'none (no cell tagged parameters)'}")
    if fn is not None and sig is not None:
        required = [n for n, p in sig.parameters.items()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for params in cells:
            lacking = [n for n in required if n not in params]
            if lacking:
                problems.append(f"{what} needs {', '.join(lacking)}, which a cell ({cell_id(params, fixed)}) does not set; "
                                "add it to 'grid' or 'fixed'")
                break
    # the values: a chapter's own check (symlib.analyses.params) for a notebook that has one, else the
    # function's validate_params hook, else the well-known names' choices
    chapter = _notebook_chapter(path) if has_nb else None
    hook = getattr(fn, "validate_params", None) if fn is not None else None
    if chapter is not None and not problems:
        defaults = {n: _literal(p.get("default")) for n, p in nb_params.items()}
        problems += _cell_problems(cells, fixed, lambda params: _chapter_check(chapter, {**defaults, **params}, path.parent))
    elif callable(hook) and not problems:
        problems += _cell_problems(cells, fixed, hook)
    elif chapter is None and not callable(hook):
        choices = known_choices()
        for params in cells:
            for n, v in params.items():
                msg = _check_value(n, v, choices)
                if msg and msg not in problems:
                    problems.append(msg)
    if len(problems) == 1:
        raise ValueError(problems[0])
    if problems:
        raise ValueError(f"the sweep spec has {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))


def _notebook_chapter(path: Path) -> str | None:
    from ..analyses import params
    return params.notebook_chapter(path)


def _literal(text: Any) -> Any:
    """A notebook parameter's default as a value (papermill gives its source text); the text when it is no literal."""
    import ast
    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return text


def _chapter_check(chapter: str, values: dict, folder: Path) -> None:
    """A notebook cell's parameters checked as the chapter's first cell checks them (relative paths from its folder)."""
    from ..analyses import params
    params.raise_problems(params.problems(chapter, values, local=False, base=folder))


def _cell_problems(cells: list[dict], fixed: dict, check: Callable[[dict], None]) -> list[str]:
    """``check`` (raising a ValueError) on every cell: each distinct problem once, saying in which cells
    (none named when every cell has it)."""
    found: dict[str, list[str]] = {}
    for params in cells:
        try:
            check(dict(params))
        except ValueError as e:
            for msg in _split_problems(str(e)):
                found.setdefault(msg, []).append(cell_id(params, fixed))
    out = []
    for msg, ids in found.items():
        if len(ids) == len(cells):
            out.append(msg)
        else:
            out.append(f"{msg} [in {len(ids)} of {len(cells)} cells, e.g. {ids[0]}]" if len(ids) > 1 else f"{msg} [in cell {ids[0]}]")
    return out


def _split_problems(text: str) -> list[str]:
    """The problems in a ParamError's message (one, or a list of them after a heading)."""
    lines = text.splitlines()
    if len(lines) > 1 and all(line.startswith("  - ") for line in lines[1:]):
        return [line[4:] for line in lines[1:]]
    return [text]


def _resolved(spec: dict | str | Path) -> dict:
    """A copy of the spec with ``out`` and ``notebook`` made absolute (relative to the cwd)."""
    spec = load_spec(spec) if isinstance(spec, (str, Path)) else dict(spec)
    for key in ("out", "notebook"):
        if isinstance(spec.get(key), (str, Path)) and str(spec[key]):
            spec[key] = str(Path(spec[key]).expanduser().absolute())
    return spec


# ---- one cell (runs on a worker) ----------------------------------------------------

def _stale_files(cell_dir: Path, notebook: str | None) -> list[Path]:
    names = ["result.json", "metrics.json"] + ([f"{Path(notebook).stem}.ipynb"] if notebook else [])
    return [cell_dir / n for n in names] + list(cell_dir.glob(".*.tmp"))


def flatten_metrics(metrics: Any, prefix: str = "") -> dict:
    """Scalar metrics with nested dicts flattened to ``a.b`` keys; lists and other objects left out."""
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise TypeError(f"a cell should report a dict of metrics, not a {type(metrics).__name__}")
    flat: dict = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_metrics(v, key + "."))
        elif v is None or isinstance(v, (bool, int, float, str, np.generic)):
            flat[key] = v
        elif getattr(v, "ndim", None) == 0 and hasattr(v, "item"):  # 0-d tensor or array
            flat[key] = v.item()
    return flat


def _error_record(e: BaseException) -> dict:
    """Type, message and the last lines of the traceback of a cell's exception."""
    ename, evalue = getattr(e, "ename", None), getattr(e, "evalue", None)
    if ename:  # papermill's PapermillExecutionError: the notebook's own exception
        lines = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(getattr(e, "traceback", None) or [])).splitlines()
        return {"type": ename, "message": str(evalue), "traceback": "\n".join(lines[-TRACEBACK_LINES:])}
    lines = "".join(traceback.format_exception(type(e), e, e.__traceback__)).splitlines()
    return {"type": type(e).__name__, "message": str(e), "traceback": "\n".join(lines[-TRACEBACK_LINES:])}


def _result(params: dict, status: str, error: dict | None, metrics: dict, seconds: float) -> dict:
    from ..analyses.provenance import code_version, machine_name
    code = code_version()  # a sweep resumed over several sittings may span commits: each cell says which made it
    commit = (code["commit"] or "unknown")[:12] + ("+changes" if code["uncommitted_changes"] else "")
    return {"params": json_ready(params, None), "status": status, "error": error, "metrics": json_ready(metrics),
            "seconds": round(seconds, 3), "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": commit, "machine": machine_name()}


def run_cell(cell_dir: str, params: dict, function: str | None = None, notebook: str | None = None,
             torch_threads: int | None = None) -> dict:
    """Run one cell and write its result.json; return that record. This is the task a worker runs.

    Removes what an earlier, interrupted attempt left, runs the function or the notebook,
    and writes ``result.json`` atomically once it has finished (status ``ok``, or ``failed``
    with the error: an exception in the cell does not escape). ``torch_threads``: the
    number of torch threads for this cell (None: leave as is).
    """
    d = Path(cell_dir)
    d.mkdir(parents=True, exist_ok=True)
    for p in _stale_files(d, notebook):
        p.unlink(missing_ok=True)
    if torch_threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(torch_threads))
    _undo_dask_malloc_trim()
    t0 = time.perf_counter()
    try:
        if function:
            raw = _import_target(function)(**params)
            metrics = flatten_metrics(raw)
            if raw is not None:
                try:
                    atomic_write_json(d / "metrics.json", raw)
                except TypeError:  # objects JSON cannot hold: keep the scalars
                    atomic_write_json(d / "metrics.json", metrics)
        else:
            metrics = flatten_metrics(_run_notebook(Path(notebook), params, d))
        record = _result(params, "ok", None, metrics, time.perf_counter() - t0)
    except Exception as e:
        record = _result(params, "failed", _error_record(e), {}, time.perf_counter() - t0)
    atomic_write_json(d / "result.json", record, digits=None)
    return record


#: what a Dask nanny puts in its workers' environment (``distributed.nanny.pre-spawn-environ``)
_DASK_MALLOC_TRIM = "65536"


def _undo_dask_malloc_trim() -> None:
    """Give a Dask worker (and the notebook kernels it starts) glibc's usual allocator again.

    A nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so they hand memory
    back to the system quickly. Setting it also fixes glibc's mmap threshold at 128 KiB,
    so every larger tensor torch frees is unmapped and the next one faulted in anew: a DAS
    search ran 2.5x slower in such a worker, more time in the kernel than in torch
    (benchmarks/bench_dask_sweep.py). Here, on glibc, the worker's thresholds are set to the
    largest that glibc's own dynamic rule would reach (mmap 32 MiB, trim 64 MiB), and the
    variable is dropped so that kernels started from the worker do not inherit it. A value
    someone set on purpose (anything but Dask's) is left alone.
    """
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") != _DASK_MALLOC_TRIM:
        return  # not in a Dask worker, already done, or set on purpose
    os.environ.pop("MALLOC_TRIM_THRESHOLD_")
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 64 << 20)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to undo
        pass


def _run_notebook(path: Path, params: dict, cell_dir: Path) -> dict:
    """Execute the notebook with papermill into the cell folder; return the metrics it wrote."""
    import papermill

    metrics_path = cell_dir / "metrics.json"
    parameters = dict(params)
    if RESULTS_PARAM in papermill.inspect_notebook(str(path)):
        parameters[RESULTS_PARAM] = str(metrics_path)
    papermill.execute_notebook(str(path), str(cell_dir / f"{path.stem}.ipynb"), parameters=parameters,
                               cwd=str(path.parent), progress_bar=False, kernel_name="python3")
    return json.loads(metrics_path.read_text()) if metrics_path.exists() else {}


# ---- the table ----------------------------------------------------------------------

def _read_result(cell_dir: Path) -> dict | None:
    """A cell's result.json, or None when it has none (or an unreadable one: pending)."""
    try:
        record = json.loads((cell_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("status") in ("ok", "failed") else None


def _error_text(error: Any) -> str | None:
    if not error:
        return None
    if isinstance(error, dict):
        return f"{error.get('type', 'Error')}: {error.get('message', '')}"
    return str(error)


def results_table(spec: dict | str | Path, write: bool = True) -> pd.DataFrame:
    """Every cell's result as one tidy table (see the module docstring for its columns).

    Cells without a result are ``pending``. write: also save ``<out>/results.csv`` atomically.
    """
    spec = _resolved(spec)
    cells = list_cells(spec)
    param_cols = list(dict.fromkeys(n for c in cells for n in c.params))
    taken = set(param_cols) | set(TABLE_COLUMNS)
    rows, metric_cols = [], {}
    for c in cells:
        rec = _read_result(c.dir)
        row = {**c.params, "cell": c.id, "status": "pending", "error": None, "seconds": np.nan, "finished_at": None,
               "commit": None, "machine": None}
        if rec is not None:
            row.update(status=rec["status"], error=_error_text(rec.get("error")), seconds=rec.get("seconds", np.nan),
                       finished_at=rec.get("finished_at"), commit=rec.get("commit"), machine=rec.get("machine"))
            for k, v in (rec.get("metrics") or {}).items():
                col = f"metrics.{k}" if k in taken else k
                metric_cols.setdefault(col, None)
                row[col] = v
        rows.append(row)
    df = pd.DataFrame(rows, columns=param_cols + list(TABLE_COLUMNS) + list(metric_cols))
    if write:
        atomic_write_text(Path(spec["out"]) / "results.csv", df.to_csv(index=False))
    return df


# ---- running ------------------------------------------------------------------------

@contextlib.contextmanager
def _dask_client(n_pending: int, workers: int | None, threads_per_worker: int | None, scheduler: str | None,
                 client: Any) -> Iterator[tuple[Any, int | None]]:
    """Yield (client, torch threads per cell): the given client, one to ``scheduler``, or a new local cluster's."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise ImportError(f"sweeps run their cells on Dask ({e}): pip install -e '.[sweep]' (make installs it)") from e

    if client is not None:
        yield client, None
        return
    if scheduler:
        with Client(scheduler) as c:
            yield c, None
        return
    threads = max(1, int(threads_per_worker or 1))
    n = max(1, int(workers)) if workers else max(1, min(n_pending, cpu_cores() // threads))
    torch_threads = max(1, cpu_cores() // (n * threads))
    env = {v: str(torch_threads) for v in THREAD_VARS}
    saved = {k: os.environ.get(k) for k in (*THREAD_VARS, "MALLOC_TRIM_THRESHOLD_", "PYTHONHASHSEED")}
    try:
        cluster = LocalCluster(n_workers=n, threads_per_worker=threads, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR, env=env)
    finally:  # the nanny sets its pre-spawn variables in this process's environment: undo that
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with cluster, Client(cluster) as c:
        yield c, torch_threads


def _prepare(spec: dict | str | Path) -> dict:
    spec = _resolved(spec)
    validate(spec)
    return spec


def run_sweep(spec: dict | str | Path, workers: int | None = None, threads_per_worker: int | None = None,
              scheduler: str | None = None, client: Any = None, progress: bool = True,
              retry_failed: bool = False) -> pd.DataFrame:
    """Run every pending cell of a sweep on Dask and return the results table (also in results.csv).

    spec: a mapping or a path to the YAML file (see the module docstring). workers,
    threads_per_worker: the local cluster's layout (default: one single-threaded worker per
    core, at most one per pending cell). scheduler: the address of a running cluster to
    use instead; client: a ``distributed.Client`` to use instead (neither is closed).
    retry_failed: also rerun the cells whose earlier attempt failed (by default they are
    reported as failed again). Raises a ValueError before any cell runs if the spec is
    invalid. With no cell pending, no cluster is started.
    """
    return _run(_prepare(spec), workers, threads_per_worker, scheduler, client, progress, retry_failed)


def _run(spec: dict, workers, threads_per_worker, scheduler, client, progress: bool, retry_failed: bool) -> pd.DataFrame:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    out = Path(spec["out"])
    cells = list_cells(spec)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "spec.yaml", yaml.safe_dump(json_ready(spec, None), sort_keys=False))
    before = {c.id: (_read_result(c.dir) or {}).get("status") for c in cells}
    pending = [c for c in cells if before[c.id] is None or (before[c.id] == "failed" and retry_failed)]
    ran_ok = ran_failed = 0
    if pending:
        with _dask_client(len(pending), workers, threads_per_worker, scheduler, client) as (dc, torch_threads):
            from distributed import as_completed

            token = uuid.uuid4().hex[:8]
            futures = {dc.submit(run_cell, str(c.dir), c.params, spec.get("function"), spec.get("notebook"),
                                 torch_threads, key=f"sweep-{c.id}-{token}", pure=False): c for c in pending}
            bar = tqdm(total=len(futures), desc=f"sweep {out.name}", unit="cell", disable=not progress)
            try:
                for fut in as_completed(futures):
                    c = futures[fut]
                    try:
                        record = fut.result()
                    except Exception as e:  # the task itself could not run (a worker died, ...)
                        record = _result(c.params, "failed", _error_record(e), {}, 0.0)
                        atomic_write_json(c.dir / "result.json", record, digits=None)
                    if record["status"] == "ok":
                        ran_ok += 1
                    else:
                        ran_failed += 1
                    bar.update(1)
                    bar.set_postfix(failed=ran_failed, refresh=False)
            except BaseException:
                dc.cancel(list(futures))
                raise
            finally:
                bar.close()
    df = results_table(spec)
    if progress:
        skipped = sum(1 for c in cells if before[c.id] == "ok")
        old_failed = sum(1 for c in cells if before[c.id] == "failed" and not retry_failed)
        failed = ran_failed + old_failed
        note = f" ({old_failed} from an earlier run, not retried; --retry-failed reruns them)" if old_failed else ""
        print(f"sweep {out}: {len(cells)} cells: {ran_ok} done, {skipped} skipped (finished before), "
              f"{failed} failed{note}; wall {time.perf_counter() - t0:.1f} s; table: {out / 'results.csv'}")
    return df


# ---- command line -------------------------------------------------------------------

def _print_plan(spec: dict, retry_failed: bool) -> None:
    df = results_table(spec, write=False)
    target = f"function {spec['function']}" if spec.get("function") else f"notebook {spec['notebook']}"
    print(f"{len(df)} cells of {target} -> {spec['out']}")
    for cell, status in zip(df["cell"], df["status"]):
        print(f"  {status:8s} {cell}")
    counts = df["status"].value_counts()
    n_ok, n_failed, n_pending = (int(counts.get(s, 0)) for s in ("ok", "failed", "pending"))
    runs = n_pending + (n_failed if retry_failed else 0)
    print(f"{n_ok} done, {n_failed} failed, {n_pending} pending: a run would run {runs} cell(s)"
          + ("" if retry_failed or not n_failed else " (failed cells rerun only with --retry-failed)"))


def save_table(grid, out, command: str, threads: int = 1) -> Path:
    """Save a sweep's table as it stands (finished cells and pending ones) at ``out``, with its
    provenance: ``command``, this checkout's commit, the machine, and the span from the first finished cell's
    start to the last one's end (a sweep resumed over several sittings spans them all; the report says when
    its cells finished). ``threads``: torch threads per cell (the sweep's ``--threads-per-worker``)."""
    from ..analyses.provenance import provenance, provenance_path
    df = results_table(grid, write=False)
    done = df[df.status == "ok"]
    if not len(done):
        raise ValueError(f"no cell of {grid} has finished: nothing to save")
    ends = pd.to_datetime(done.finished_at, utc=True)
    started = (ends - pd.to_timedelta(done.seconds, unit="s")).min().to_pydatetime()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, df.to_csv(index=False))
    def tally(col: str) -> dict:  # how many finished cells each value (commit, machine) ran
        return done[col].astype(object).fillna("not recorded").value_counts().sort_index().to_dict()
    rec = provenance(command, started, ends.max().to_pydatetime(), threads, cells=f"{len(done)} of {len(df)} finished",
                     cell_seconds=round(float(done.seconds.sum()), 1), cell_commits=sorted(tally("commit")),
                     cell_machines=tally("machine"))
    atomic_write_json(provenance_path(out), rec)
    return out


def restore_table(grid, table) -> dict:
    """Give a sweep's cells the results a saved table holds (``--save-table``), so that a fresh
    checkout goes on from a committed sweep instead of running it again.

    For every row of ``table`` with status ``ok`` whose ``cell`` id is a cell of ``grid`` that has no
    result.json yet, writes that cell's result.json from the row: its scalar metrics, seconds,
    finished_at, and the commit and machine that ran it, plus ``restored_from`` (the table's path). A cell that
    already has a result is left as it is; failed and pending rows are not restored (those cells run).
    metrics.json is not restored (a saved table holds only the scalar metrics). Returns the counts
    ``restored``, ``kept`` (had a result), ``not_in_grid`` (ok rows whose id no cell of the grid has:
    the grid's parameters changed since). Raises a ValueError, before writing anything, for a file
    that is not a saved table.
    """
    spec = _resolved(grid)
    table = Path(table)
    try:
        df = pd.read_csv(table)
    except (OSError, ValueError) as e:
        raise ValueError(f"--restore {str(table)!r}: cannot read it as a CSV table ({type(e).__name__}: {e})") from None
    missing = [c for c in ("cell", "status") if c not in df.columns]
    if missing:
        raise ValueError(f"--restore {str(table)!r}: not a sweep's saved table (no column {', '.join(missing)}; "
                         "`python -m symlib sweep GRID --save-table CSV` writes one)")
    cells = list_cells(spec)
    params = set(n for c in cells for n in c.params)
    metric_cols = [c for c in df.columns if c not in params and c not in TABLE_COLUMNS]
    rows = {r["cell"]: r for r in df[df.status == "ok"].to_dict("records")}
    counts = {"restored": 0, "kept": 0, "not_in_grid": len(set(rows) - {c.id for c in cells})}
    for c in cells:
        row = rows.get(c.id)
        if row is None:
            continue
        if _read_result(c.dir) is not None:
            counts["kept"] += 1
            continue
        metrics = {(k[len("metrics."):] if k.startswith("metrics.") else k): row[k]
                   for k in metric_cols if not pd.isna(row[k])}
        commit, machine = row.get("commit"), row.get("machine")
        record = {"params": json_ready(c.params, None), "status": "ok", "error": None,
                  "metrics": json_ready(metrics, None), "seconds": float(row["seconds"]),
                  "finished_at": row.get("finished_at"), "commit": None if pd.isna(commit) else commit,
                  "machine": None if machine is None or pd.isna(machine) else machine, "restored_from": str(table)}
        c.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(c.dir / "result.json", record, digits=None)
        counts["restored"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    """The command line; returns 0 (all ok), 1 (some cell failed), 2 (invalid input), 130 (interrupted:
    Ctrl-C) or 143 (terminated: SIGTERM); finished cells are kept either way."""
    ap = argparse.ArgumentParser(prog="python -m symlib sweep", description=__doc__.split("\n\n")[0],
                                 epilog="The YAML format and the ways to execute: see the docstring of symlib/book/sweep.py.")
    ap.add_argument("grid", help="the sweep's YAML file")
    ap.add_argument("--workers", type=int, default=None, help="local cluster: worker processes (default: cores, "
                                                              "at most the pending cells)")
    ap.add_argument("--threads-per-worker", type=int, default=None, help="local cluster: threads per worker (default 1)")
    ap.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, e.g. tcp://host:8786")
    ap.add_argument("--retry-failed", action="store_true", help="rerun cells whose earlier attempt failed")
    ap.add_argument("--dry-run", action="store_true", help="list the cells and what a run would do; run nothing")
    ap.add_argument("--save-table", default="", metavar="CSV", help="save the table as it stands (pending cells "
                    "included) at CSV with its provenance (CSV.provenance.json); run nothing")
    ap.add_argument("--command", default="", help="with --save-table: what ran the cells, as typed (default: the sweep's command)")
    ap.add_argument("--restore", default="", metavar="CSV", help="give cells without a result the results of a table "
                    "saved with --save-table (e.g. a committed one), so a run goes on from there; run nothing")
    args = ap.parse_args(argv)
    for name in ("workers", "threads_per_worker"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    try:
        spec = _prepare(args.grid)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        _print_plan(spec, args.retry_failed)
        return 0
    if args.save_table and args.restore:
        print("error: --save-table and --restore are two steps: run one, then the other", file=sys.stderr)
        return 2
    if args.restore:
        try:
            n = restore_table(spec, args.restore)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"restored {n['restored']} cell(s) from {args.restore}; {n['kept']} already had a result (kept); "
              f"{n['not_in_grid']} finished row(s) of the table are not cells of this grid")
        return 0
    if args.save_table:
        try:
            out = save_table(spec, args.save_table, args.command or f"python -m symlib sweep {args.grid}",
                             args.threads_per_worker or 1)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"saved {out} and its provenance")
        return 0
    # SIGTERM (`kill`, a batch system ending the job) stops the sweep like Ctrl-C does
    previous = signal.signal(signal.SIGTERM, raise_terminated) if _in_main_thread() else None
    try:
        df = _run(spec, args.workers, args.threads_per_worker, args.scheduler, None, True, args.retry_failed)
    except KeyboardInterrupt as e:
        print("\ninterrupted: finished cells are kept; run the same command again to go on", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 1 if (df["status"] == "failed").any() else 0


def _in_main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
