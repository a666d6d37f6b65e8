"""Where a committed result came from.

``provenance(command, started, ended)`` returns the command, the code's commit, the machine,
the date and the wall time as a dict; ``write_provenance`` writes it as JSON beside the result
it describes (``<result>.provenance.json``). Floats differ between machines in their last
digits, so a number quoted from a committed result says which machine made it; this is that
record. As a command, for a result made by something else (a notebook run by papermill)::

    python -m symlib provenance RESULT --command "make mas-full" --started 2026-12-07T07:20:00Z

The machine's ``torch_threads`` is the count the run used when a JSON result records it (the
chapters write ``torch_threads``), else this process's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from ..paths import REPO_ROOT


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_version() -> dict:
    """The commit of the code that runs (None outside a git checkout) and whether its work tree had
    uncommitted changes to code (the README's and docs/results.md's blocks and results/, which result commands write, do not count)."""
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)README.md", ":(exclude)docs/results.md",
                  ":(exclude)results")
    return {"commit": _git("rev-parse", "HEAD"), "uncommitted_changes": None if status is None else bool(status)}


def machine_name() -> str:
    """This machine in a few words, for a record that has no room for the whole ``machine`` entry (a
    sweep cell's): the CPU model and cores, and the CUDA device when torch sees one."""
    cuda = _cuda_name()
    return f"{_cpu_model()}, {os.cpu_count()} cores" + (f", {cuda}" if cuda else "")


def _cuda_name() -> str | None:
    """The first CUDA device's name, or None when torch sees none."""
    import torch
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def provenance(command: str, started: datetime, ended: datetime, torch_threads: int | None = None, **extra) -> dict:
    """The record of one run: ``command`` as typed, the commit (and whether the work tree had
    uncommitted changes), UTC start and end, wall seconds, the machine (CPU model, cores,
    torch threads: ``torch_threads`` when given, the run's own count, else this process's; CUDA
    device if any), Python and torch versions; ``extra`` is added as is."""
    import torch
    return {
        "command": command,
        **code_version(),
        "started": started.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "ended": ended.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round((ended - started).total_seconds(), 1),
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "torch_threads": torch_threads or torch.get_num_threads(),
                    "cuda": _cuda_name(),
                    "platform": platform.platform()},
        "python": platform.python_version(),
        "torch": torch.__version__,
        **extra,
    }


def provenance_path(result: str | Path) -> Path:
    """``results/x.csv`` -> ``results/x.provenance.json``."""
    result = Path(result)
    return result.with_name(result.stem + ".provenance.json")


def write_provenance(result: str | Path, command: str, started: datetime, ended: datetime | None = None,
                     torch_threads: int | None = None, **extra) -> Path:
    """Write the provenance of ``result`` beside it; returns the path written."""
    ended = ended or datetime.now(timezone.utc)
    path = provenance_path(result)
    path.write_text(json.dumps(provenance(command, started, ended, torch_threads, **extra), indent=2) + "\n")
    return path


def command_line() -> str:
    """This process's command as typed (``python -m symlib findings ...``)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py") and "symlib" in Path(argv[0]).parts:
        argv[0] = "-m symlib." + Path(argv[0]).stem
    return "python " + " ".join(argv)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m symlib provenance", description="Write RESULT.provenance.json beside RESULT.")
    ap.add_argument("result")
    ap.add_argument("--command", required=True, help="what made the result, as a user would type it")
    ap.add_argument("--started", required=True, help="UTC start, ISO 8601 (2026-12-07T07:20:00Z)")
    ap.add_argument("--ended", default="", help="UTC end, ISO 8601 (default: now)")
    ap.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE", help="more fields, as text")
    ap.add_argument("--commit", default="", help="the commit the result was computed at, when not this checkout's HEAD "
                                                  "(e.g. a run from a clean clone); its measuring code must be HEAD's")
    args = ap.parse_args(argv)
    if not Path(args.result).exists():
        ap.error(f"no result at {args.result}")
    extra = {}
    for kv in args.extra:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            ap.error(f"--extra takes KEY=VALUE, got {kv!r}")
        extra[k] = v
    started = datetime.fromisoformat(args.started.replace("Z", "+00:00"))
    if args.commit:
        full = _git("rev-parse", "--verify", args.commit + "^{commit}")
        if full is None:
            ap.error(f"--commit {args.commit!r} is not a commit of this repository")
        extra.update(commit=full, uncommitted_changes=False)
    ended = datetime.fromisoformat(args.ended.replace("Z", "+00:00")) if args.ended else None
    # the run's own thread count (a notebook's kernel) when its result records it, not this process's
    print(write_provenance(args.result, args.command, started, ended, _recorded_threads(args.result), **extra))
    return 0


def _recorded_threads(result: str | Path) -> int | None:
    """``torch_threads`` as a JSON result records it (the chapters write the count their kernel ran
    with), or None."""
    try:
        d = json.loads(Path(result).read_text())
    except (OSError, ValueError):
        return None
    t = d.get("torch_threads") if isinstance(d, dict) else None
    return t if isinstance(t, int) and not isinstance(t, bool) and t > 0 else None


if __name__ == "__main__":
    sys.exit(main())
