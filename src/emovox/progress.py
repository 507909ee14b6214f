"""Progress bars that read well in a terminal and in a log file.

tqdm redraws a bar in place with carriage returns, and draws nested bars by moving the cursor
with ANSI escape codes. In a terminal that is what we want; in a log (``emovox cv ... 2> run.log``,
CI, nohup, a job scheduler) it turns into thousands of half-lines and escape codes per epoch.
So every bar in emovox comes from ``progress_bar``, which looks at where it draws:

- stderr is a terminal: plain tqdm. A bar opened while another one is open is *nested*: it is
  drawn below its parent and erased when it closes (``leave=False``), so only the outermost
  bars stay on screen as a summary.
- anything else: only the outermost open bar reports, as one plain line (no ``\\r``, no escape
  codes) every ``LOG_INTERVAL`` seconds and a last line when it closes; nested bars are silent.

``set_postfix`` never forces a redraw here: tqdm's iterator keeps its count in a local variable
and only stores it when it draws, so a forced redraw from inside the loop shows a stale count
(the frozen ``train`` bar showed ``0/15`` for every epoch that way).
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Iterable
from typing import IO, Any

from tqdm.std import tqdm as _std_tqdm

#: Seconds between two lines of a bar in a log (non-terminal stderr).
LOG_INTERVAL = float(os.environ.get("EMOVOX_PROGRESS_SECONDS", "30"))

_LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"

_open: weakref.WeakSet = weakref.WeakSet()  # enabled bars not yet closed


def is_terminal(stream: IO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream (pytest's capture, CliRunner)
        return False


class _Registered:
    """Keeps ``_open`` in step with the bars that are really open (closed or garbage-collected)."""

    def close(self) -> None:
        _open.discard(self)
        super().close()  # type: ignore[misc]

    def set_postfix(self, ordered_dict=None, refresh: bool = False, **kwargs) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)  # type: ignore[misc]


class _TerminalBar(_Registered, _std_tqdm):
    pass


class _LineBar(_Registered, _std_tqdm):
    pass


class _Lines:
    """A file for tqdm that turns each redraw into one plain line."""

    def __init__(self, stream: IO):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        for piece in text.replace("\n", "\r").split("\r"):
            piece = piece.rstrip()
            if piece and piece != self.last:  # tqdm's closing redraw repeats the last line
                self.stream.write(piece + "\n")
                self.last = piece

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(
    iterable: Iterable | None = None,
    *,
    desc: str | None = None,
    total: float | None = None,
    unit: str = "it",
    disable: bool = False,
    leave: bool | None = None,
    file: IO | None = None,
    **kwargs: Any,
):
    """A tqdm bar (same arguments and methods) that suits where it is drawn; see the module docstring.

    ``leave`` is honoured in a terminal (default: keep outermost bars, erase nested ones); in a log
    the outermost bar always ends with a summary line.
    """
    stream = file if file is not None else sys.stderr
    nested = any(not b.disable for b in _open)
    if disable:
        return _std_tqdm(iterable, desc=desc, total=total, unit=unit, disable=True)
    if is_terminal(stream):
        bar = _TerminalBar(
            iterable, desc=desc, total=total, unit=unit, leave=(not nested) if leave is None else leave, file=stream,
            dynamic_ncols=True, **kwargs,
        )
    elif nested:
        return _std_tqdm(iterable, desc=desc, total=total, unit=unit, disable=True)
    else:
        kwargs.pop("position", None)
        bar = _LineBar(
            iterable, desc=desc, total=total, unit=unit, leave=True, file=_Lines(stream), position=0, ascii=True,
            mininterval=LOG_INTERVAL, maxinterval=max(LOG_INTERVAL, 1.0), bar_format=_LINE_FORMAT, **kwargs,
        )
    _open.add(bar)
    return bar
