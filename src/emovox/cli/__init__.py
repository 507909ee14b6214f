"""The ``emovox`` command.

Each command group lives in its own module under ``emovox.cli`` and registers itself on
``app`` when imported. The modules are imported on demand (``_commands.COMMANDS`` says which
module defines which command): ``emovox predict`` loads the prediction commands only, so a
prediction with a recognizer's runtime starts without importing anything of training. This
module assembles them and turns ``EmovoxError`` into one readable line and exit code 2 instead
of a traceback (and a missing ``emovox[train]`` package into one that says what to install).
"""

from __future__ import annotations

import importlib
import sys

import typer
from typer.core import TyperCommand, TyperGroup

from emovox.errors import EmovoxError
from emovox.version import __version__


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


class _CommandsOnDemand(Group):
    """The root group: a command's module is imported when the command is asked for (all of them to list them)."""

    def _load(self, module: str) -> None:
        importlib.import_module(f"emovox.cli.{module}")
        for info in app.registered_commands:
            name = info.name or typer.main.get_command_name(info.callback.__name__)
            if name not in self.commands:
                self.add_command(typer.main.get_command_from_info(
                    info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode,
                ), name)  # fmt: skip
        for info in app.registered_groups:
            if info.name not in self.commands:
                self.add_command(typer.main.get_group_from_info(
                    info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode,
                    suggest_commands=app.suggest_commands,
                ), info.name)  # fmt: skip

    def _load_all(self) -> None:
        from emovox.cli._commands import COMMANDS

        for module in dict.fromkeys(COMMANDS.values()):
            self._load(module)

    def list_commands(self, ctx):
        self._load_all()
        return super().list_commands(ctx)

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in self.commands:
            from emovox.cli._commands import COMMANDS

            if cmd_name in COMMANDS:
                self._load(COMMANDS[cmd_name])
            else:
                self._load_all()  # an unknown name: click's "did you mean" needs every name
        return super().get_command(ctx, cmd_name)


class Typer(typer.Typer):
    """``typer.Typer`` made of ``Command``s and ``Group``s; every command group of emovox is one."""

    def __init__(self, *args, cls=None, **kwargs):
        super().__init__(*args, cls=cls or Group, **kwargs)

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or Command, **kwargs)


app = Typer(
    cls=_CommandsOnDemand,
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
    except ModuleNotFoundError as exc:  # a plain `pip install emovox` (the runtime) lacks what training needs
        from emovox.errors import missing_extra

        error = missing_extra(exc, f"`emovox {' '.join(sys.argv[1:2])}`".replace(" `", "`"))
        if error is None:
            raise
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
