"""README blocks printed from committed results: no number in the README (or docs/results.md) is typed by hand.

A block is what lies between ``<!-- name:start -->`` and ``<!-- name:end -->`` in a markdown
file. ``write_block`` replaces it; ``read_block`` gives it back (the tests compare it with
what the results print). As a command, a list of lines saved in a results JSON (a chapter's
``summary``) goes into a block, with where it came from (its provenance) under it::

    python -m symlib report results/mas/06_model_alignment_search.json --key summary --readme docs/results.md --block mas
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .provenance import provenance_path


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of the block ``name`` in a markdown file."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def read_block(path: str | Path, name: str) -> str:
    """The text between the markers of block ``name`` in ``path`` (stripped)."""
    start, end = markers(name)
    doc = Path(path).read_text()
    if doc.count(start) != 1 or doc.count(end) != 1 or doc.index(start) > doc.index(end):
        raise ValueError(f"{path} must hold {start!r} then {end!r}, once each")
    return doc.split(start)[1].split(end)[0].strip()


def write_block(path: str | Path, name: str, text: str) -> None:
    """Replace the block ``name`` of ``path`` with ``text``; the markers are checked before anything is written."""
    read_block(path, name)
    start, end = markers(name)
    doc = Path(path).read_text()
    head, rest = doc.split(start)
    Path(path).write_text(f"{head}{start}\n{text.strip()}\n{end}{rest.split(end)[1]}")


def source_line(result: str | Path, shown: str | None = None) -> str:
    """Where a committed result came from, in one sentence, from its provenance file
    (``shown``: how to name the result in it; default as given)."""
    p = provenance_path(result)
    if not p.exists():
        raise FileNotFoundError(f"{result} has no provenance ({p}); write it with python -m symlib provenance")
    d = json.loads(p.read_text())
    m = d["machine"]
    where = m["cuda"] or f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s)"
    commit = (d.get("commit") or "unknown")[:7] + (" with uncommitted changes" if d.get("uncommitted_changes") else "")
    return (f"From `{shown or result}`, made by `{d['command'].strip()}` at commit {commit} on {d['started'][:10]} "
            f"({where}; {d['wall_seconds'] / 60:.0f} min).")


def json_block(result: str | Path, key: str, shown: str | None = None) -> str:
    """The lines saved under ``key`` in a results JSON, then ``source_line``."""
    lines = json.loads(Path(result).read_text())[key]
    if isinstance(lines, str):
        lines = [lines]
    return "\n".join(lines) + "\n\n" + source_line(result, shown)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m symlib report", description=__doc__.split("\n\n")[0])
    ap.add_argument("result", help="a committed results JSON")
    ap.add_argument("--key", default="summary", help="the list of lines in it to print (default summary)")
    ap.add_argument("--readme", default="", help="also write them into this markdown file's block")
    ap.add_argument("--block", default="", help="the block's name (with --readme)")
    args = ap.parse_args(argv)
    if bool(args.readme) != bool(args.block):
        ap.error("--readme and --block go together")
    text = json_block(args.result, args.key)
    print(text)
    if args.readme:
        write_block(args.readme, args.block, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
