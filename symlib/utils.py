"""Seeding, device choice, atomic file writes and small shared helpers."""
from __future__ import annotations

import json
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``None`` into CUDA when present, else CPU; check explicit choices."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"DEVICE={device!r} was asked for but no CUDA device is available; use 'cpu' or 'auto'.")
    return dev


def check_choice(kind: str, value: str, valid: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``valid``; else raise a ValueError listing the valid ones."""
    valid = list(valid)
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid choices: {', '.join(valid)}")
    return value


def choose_names(value: Any, valid: Iterable[str], what: str) -> tuple[str, ...]:
    """Names picked from ``valid`` however a user gives them: True (all of them), False, None or ""
    (none), a comma-separated string (``"no_swap,initial"``) or a sequence of names. Unknown names
    raise a ValueError listing the valid ones (``what``: what a name is, for the message)."""
    valid = tuple(valid)
    if value is True:
        return valid
    if value is False or value is None:
        return ()
    names = tuple(parse_list(value, str, what))
    for n in names:
        check_choice(what, n, valid)
    return names


#: The environment variables that set how many threads torch and its libraries use.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def cpu_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class Terminated(KeyboardInterrupt):
    """SIGTERM turned into an interruption, so a command ends on ``kill`` as it does on Ctrl-C."""


def raise_terminated(signum, frame):
    """A SIGTERM handler: ``signal.signal(signal.SIGTERM, raise_terminated)``."""
    raise Terminated()


def _file_mode() -> int:
    """The mode a newly created file normally gets: 0o666 minus the process umask."""
    try:  # Linux: read the umask without changing it (changing it is not thread-safe)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temporary file next to ``path`` (same file system, so ``os.replace`` is atomic), with the
    normal mode rather than ``mkstemp``'s owner-only 0o600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, _file_mode())
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file so no half-written file is left.

    The file gets the normal mode of a new file (0o666 minus the umask), like ``open(path, "w")``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def json_ready(obj: Any, digits: int | None = 6) -> Any:
    """``obj`` made plain for JSON, recursively through dicts, lists and tuples.

    Floats are rounded to ``digits`` significant digits (None: kept exact), so float32 noise
    such as 0.9649999737739563 is written as 0.965; NaN and infinities become None (JSON has
    no NaN, so they are written as ``null``). NumPy scalars, 0-d and larger tensors and arrays
    become Python numbers and lists; paths become strings; ints, bools, strings and None stay.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if not math.isfinite(x):
            return None
        return float(f"{x:.{digits}g}") if digits else x
    if isinstance(obj, dict):
        return {_json_key(k): json_ready(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v, digits) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return json_ready(obj.tolist(), digits)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _json_key(k: Any) -> Any:
    if isinstance(k, np.integer):
        return int(k)
    if isinstance(k, np.floating):
        return float(k)
    return k if k is None or isinstance(k, (str, int, float, bool)) else str(k)


def atomic_write_json(path: str | Path, obj: Any, digits: int | None = 6) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (mode as ``atomic_write_text``).

    Floats are written rounded to ``digits`` significant digits (None: exact); NaN and
    infinities are written as ``null``, since JSON has no NaN. See ``json_ready``.
    """
    text = json.dumps(json_ready(obj, digits), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(path, text + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file, so an interrupted save leaves nothing behind.

    The file gets the normal mode of a new file (0o666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def parse_list(value: Any, kind: type = int, name: str = "value") -> list:
    """Read a list parameter the way a notebook receives it, as a list of ``kind``.

    Accepts a comma-separated string (``"1,2,4"``, ``" 1, 2 "``, ``"[1, 2]"``, ``"gru,lstm"``),
    a single number (papermill passes ``-p SWEEP 16`` as the int 16; ``16.0`` counts as 16 when
    ``kind`` is int), or a list/tuple. An empty string (or None) gives ``[]``. An item that is
    not a ``kind`` raises a ValueError naming the parameter ``name`` and the item.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text[:1] + text[-1:] in ("[]", "()"):
            text = text[1:-1]
        items: list = [s.strip() for s in text.split(",")]
        items = [s for s in items if s]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        items = [value]
    else:
        raise ValueError(f"{name}={value!r}: expected a comma-separated string or a list of {kind.__name__}, "
                         f"got a {type(value).__name__}")
    return [_parse_item(item, kind, name, value) for item in items]


def _parse_item(item: Any, kind: type, name: str, whole: Any) -> Any:
    def bad(why: str = "") -> ValueError:
        return ValueError(f"{name}: item {item!r} of {whole!r} is not a valid {kind.__name__}{why}")

    if isinstance(item, str):
        item = item.strip()
    if isinstance(item, (bool, np.bool_)):
        raise bad(" (a bool)")
    if kind is str:
        if not isinstance(item, str) or not item:
            raise bad()
        return item
    if kind is int:
        if isinstance(item, (int, np.integer)):
            return int(item)
        if isinstance(item, str):
            try:
                return int(item)
            except ValueError:
                pass  # "16.0" is read below
        try:
            x = float(item)
        except (TypeError, ValueError):
            raise bad() from None
        if not math.isfinite(x) or x != int(x):
            raise bad(" (not a whole number)")
        return int(x)
    if kind is float:
        try:
            x = float(item)
        except (TypeError, ValueError):
            raise bad() from None
        return x
    try:
        return kind(item)
    except (TypeError, ValueError):
        raise bad() from None


def write_results(path: str | Path | None, metrics: dict) -> None:
    """Write a notebook's key metrics as JSON to ``path`` (no-op when ``path`` is empty).

    Floats are rounded to 6 significant digits and NaN/infinity are written as ``null``
    (see ``atomic_write_json``).
    """
    if path:
        atomic_write_json(path, metrics)


def finish_bar(bar) -> None:
    """Mark a tqdm bar that stopped early by design (solved, converged) as finished: in a notebook
    it turns green at full width rather than red at the step it stopped. None: nothing."""
    if bar is None or bar.total is None or bar.n >= bar.total:
        return
    bar.total = bar.n
    if getattr(bar, "container", None) is not None:  # a notebook bar's widget keeps its own maximum
        bar.container.children[1].max = bar.n
    bar.refresh()


def smoke_mode(flag: bool = False) -> bool:
    """True when a notebook should run at its tiny test size: ``SMOKE`` or ``$SYMLIB_SMOKE=1`` (set by the test suite)."""
    return bool(flag) or os.environ.get("SYMLIB_SMOKE", "") == "1"
