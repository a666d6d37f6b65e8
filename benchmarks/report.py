"""Shared by the benchmark scripts: save the measurements as JSON and print a Markdown table."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import torch


def write_report(out: str, threads: int, device: str, rows: list[dict], columns: list[tuple[str, str]], **extra) -> None:
    """Save ``{"meta", "rows"}`` to ``out`` and print ``rows`` as a table; columns: (header, format with {r[...]})."""
    summary = extra.pop("summary", None)  # lines saying what the run found (symlib.analyses.report prints them into the README)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {threads} threads", "torch": torch.__version__,
            "device": device, **extra}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"meta": meta, "rows": rows, **({"summary": summary} if summary else {})}, indent=2))
    print("| " + " | ".join(h for h, _ in columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(fmt.format(r=r) for _, fmt in columns) + " |")
