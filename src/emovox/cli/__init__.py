"""The ``emovox`` command.

Each command group lives in its own module under ``emovox.cli`` and registers itself on
``app`` when imported; this module only assembles them and turns ``EmovoxError`` into one
readable line and exit code 2 instead of a traceback.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperCommand, TyperGroup

from emovox import __version__
from emovox.errors import EmovoxError


class _FlagsTakeNoValue:
    """Help shows no ``<bool>`` placeholder after a flag (``--quiet``, ``--help``): a flag takes no value."""

    def get_params(self, ctx):
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""
        return params


class Command(_FlagsTakeNoValue, TyperCommand):
    pass


class Group(_FlagsTakeNoValue, TyperGroup):
    pass


class Typer(typer.Typer):
    """``typer.Typer`` made of ``Command``s and ``Group``s; every command group of emovox is one."""

    def __init__(self, *args, cls=None, **kwargs):
        super().__init__(*args, cls=cls or Group, **kwargs)

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or Command, **kwargs)


app = Typer(
    name="emovox",
    help="Speech emotion recognition from transcripts and audio: train, evaluate, predict, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"emovox {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """emovox: speech emotion recognition."""


# --- command modules: each import registers its commands on `app` ------------------------
from emovox.cli import _commands  # noqa: E402,F401


def _readable_warnings() -> None:
    """emovox's own warnings as one ``warning: ...`` line on stderr, without a source-file prefix."""
    import warnings

    from emovox.errors import EmovoxWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EmovoxWarning):
            typer.echo(f"warning: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2.

    typer/click keep handling usage errors (missing argument, bad option) in standalone mode,
    with their usage line and exit code 2; anything that is not an ``EmovoxError`` is a bug
    and keeps its traceback.
    """
    _readable_warnings()
    try:
        app()
    except EmovoxError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
