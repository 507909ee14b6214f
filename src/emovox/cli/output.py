"""Terminal output shared by the commands: tables that fit the terminal, and warnings on stderr.

Tables are for people and must stay readable in an 80-column terminal: file names are shown
relative to the folder the inputs share (the folder is named once, above the table), over-long
cells are shortened on one line (``…`` keeps the end of a path, where the file name is) instead
of folding a path over six lines, and a table that cannot show every column drops the ones a
person needs least. Machines read ``--json``/``--csv``, which always hold everything in full.

Warnings go to stderr whatever ``--quiet`` says: ``--quiet`` silences progress and tables, never
what the user must know about the answer (cropped input, no speech, failed inputs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

#: The fewest characters a shortened cell keeps.
MIN_CELL = 12
#: Failures listed one by one on stderr; beyond that a count and where to find the rest.
MAX_LISTED = 20


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """One warning on stderr, shown even with ``--quiet``."""
    stderr_console().print(f"[yellow]warning:[/] {escape(message)}")


def shorten(text: str, width: int, *, keep_end: bool = False) -> str:
    """``text`` cut to ``width`` characters with ``…``; ``keep_end`` keeps the end (a path's file name)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    return "…" + text[-(width - 1) :] if keep_end else text[: width - 1] + "…"


def common_folder(paths: Sequence[Path]) -> Path | None:
    """The deepest folder holding every path, or None when there is none worth naming."""
    if not paths:
        return None
    try:
        common = Path(os.path.commonpath([str(Path(p).resolve().parent) for p in paths]))
    except ValueError:  # different drives
        return None
    return None if common == Path(common.anchor) else common


def display_names(names: Sequence[str], paths: Sequence[Path | None]) -> tuple[list[str], Path | None]:
    """Names for a table: a file given by path is shown relative to the inputs' common folder; ids stay as they are."""
    files = [p for n, p in zip(names, paths, strict=True) if p is not None and n == str(p)]
    folder = common_folder(files)
    if folder is None:
        return list(names), None
    shown = []
    for n, p in zip(names, paths, strict=True):
        if p is not None and n == str(p):
            shown.append(os.path.relpath(Path(p).resolve(), folder))
        else:
            shown.append(n)
    return shown, folder


def _strip_name(error: str, *names: str) -> str:
    """An error message without the leading ``<file>: `` that the row already shows."""
    for name in names:
        if name and error.startswith(name + ": "):
            return error[len(name) + 2 :]
    return error


def predictions_table(rows: Sequence[dict], names: Sequence[str], labels: Sequence[str], width: int) -> Table:
    """One row per input, in input order: the label and every class probability when they fit in ``width``
    columns, else the label's probability and the runner-up; a failed input shows its reason in ``error``.
    ``reference`` (a manifest's label), ``transcript`` and ``error`` appear when some row has them."""
    speech_flag = any(r.get("speech") is False for r in rows)
    reference = any(r.get("reference") is not None for r in rows)
    flexible = [c for c in ("transcript", "error") if any(r.get(c) for r in rows)]
    name_width = min(max([len("input"), *(len(n) for n in names)]), max(MIN_CELL, width // 3))
    label_width = max(len("label"), *(len(label) for label in labels))
    # a column costs its content plus a space of padding on each side and a separator
    fixed = name_width + label_width + 6
    if speech_flag:
        fixed += len("speech") + 3
    if reference:
        fixed += max(len("reference"), *(len(str(r.get("reference", ""))) for r in rows)) + 3
    full = fixed + sum(max(len(label), 5) + 3 for label in labels)
    compact = fixed + 5 + 3 + label_width + 6 + 3
    wide = full + (MIN_CELL + 3) * len(flexible) <= width
    room = max(MIN_CELL, (width - (full if wide else compact)) // max(len(flexible), 1) - 3)
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("input", no_wrap=True, max_width=name_width)
    table.add_column("label", style="bold", no_wrap=True)
    if wide:
        for label in labels:
            table.add_column(escape(label), justify="right", no_wrap=True)
    else:
        table.add_column("p", justify="right", no_wrap=True)
        table.add_column("runner-up", no_wrap=True)
    if speech_flag:
        table.add_column("speech", no_wrap=True)
    if reference:
        table.add_column("reference", no_wrap=True)
    for column in flexible:
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=room, style="red" if column == "error" else None)
    for r, name in zip(rows, names, strict=True):
        cells = [escape(shorten(name, name_width, keep_end=True))]
        probs = r.get("probabilities")
        if r.get("error") or not probs:
            cells += ["-"] + ([""] * len(labels) if wide else ["", ""])
        else:
            cells.append(escape(r["label"]))
            if wide:
                cells += [f"{probs[label]:.3f}" for label in labels]
            else:
                ranked = sorted(probs.items(), key=lambda kv: -kv[1])
                second = f"{escape(ranked[1][0])} {ranked[1][1]:.3f}" if len(ranked) > 1 else ""
                cells += [f"{probs[r['label']]:.3f}", second]
        if speech_flag:
            cells.append("[yellow]none[/]" if r.get("speech") is False else "")
        if reference:
            cells.append(escape(str(r.get("reference") or "")))
        if "transcript" in flexible:
            cells.append(escape(r.get("transcript") or ""))
        if "error" in flexible:
            cells.append(escape(_strip_name(r.get("error") or "", r["input"], name)))
        table.add_row(*cells)
    return table


def list_failures(rows: Sequence[dict], names: Sequence[str], written: Sequence[str]) -> None:
    """Every failed input with its reason, on stderr (the first ``MAX_LISTED``; the rest are counted)."""
    failed = [(name, r) for r, name in zip(rows, names, strict=True) if r.get("error")]
    if not failed:
        return
    console = stderr_console()
    where = f" (also in the 'error' column of {escape(' and '.join(written))})" if written else ""
    console.print(f"[red]{len(failed)} of {len(rows)} input(s) could not be predicted[/]{where}:")
    for name, r in failed[:MAX_LISTED]:
        console.print(f"  {escape(name)}: {escape(_strip_name(r['error'], r['input'], name))}")
    if len(failed) > MAX_LISTED:
        console.print(f"  ... and {len(failed) - MAX_LISTED} more" + ("" if written else "; --json/--csv FILE lists them all"))
