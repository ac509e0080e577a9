"""Shared command-line plumbing: console, progress bars, echoing choices, JSON output, errors."""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from geo.core.result import AnalysisResult, jsonable

#: Help text of every command's ``--store`` option.
STORE_HELP = "Store: a DuckDB file path or postgresql:// URL (default $HARMSPOT_STORE, else ./harmspot.duckdb)."

console = Console(stderr=True, highlight=False)


@contextmanager
def progress_bar(label: str, total: int | None = None, enabled: bool = True):
    """A rich progress bar on stderr; yields a callback ``cb(done, total, text)``."""
    if not enabled:
        yield lambda *a, **k: None
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[item]}"), TimeElapsedColumn(), console=console,
                  transient=False) as prog:
        task = prog.add_task(label, total=total, item="")

        def cb(done, tot=None, text=""):
            prog.update(task, completed=done, total=tot if tot is not None else total, item=str(text)[-50:])

        yield cb


def echo_choices(result: AnalysisResult | list) -> None:
    """Print every automatic choice (cell size, bandwidth, period, weight table...) to stderr."""
    choices = result.choices if isinstance(result, AnalysisResult) else result
    for c in choices:
        if c.automatic:
            console.print(f"[cyan]i[/] {c.message()}")


def echo_params(result: AnalysisResult) -> None:
    p = result.params
    bits = ", ".join(f"{k}={v}" for k, v in p.items() if not isinstance(v, (dict, list)) or len(str(v)) < 60)
    console.print(f"[dim]parameters: {bits}[/]")
    if result.weight_table:
        w = result.weight_table
        console.print(f"[dim]weight table: {w.get('name')} v{w.get('version')}"
                      f"{' (proactive offences included)' if w.get('proactive_included') else ' (drugs, weapons possession, ASB weigh 0)'}[/]")
    if result.period is not None:
        console.print(f"[dim]period: {result.period.label() if hasattr(result.period, 'label') else result.period}[/]")


def print_json(obj) -> None:
    """One JSON object on one line on stdout (the last line scripts read)."""
    sys.stdout.write(json.dumps(jsonable(obj), default=str) + "\n")
    sys.stdout.flush()
