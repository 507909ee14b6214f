"""``emovox profile``: parameters and GFLOPs of the registry backbones, next to the paper's."""

from __future__ import annotations

import json

import typer

from emovox.cli import app


@app.command("profile")
def profile_command(
    names: list[str] | None = typer.Argument(None, help="Registry names to profile (default: all of them)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {name, hub_id, modality, params_m, gflops}."),
    tokens: int = typer.Option(100, "--tokens", min=1, help="Text utterance length in tokens (paper: 100)."),
    seconds: float = typer.Option(10.0, "--seconds", min=0.1, help="Audio utterance length in seconds (paper: 10)."),
) -> None:
    """Trainable parameters (M) and GFLOPs per utterance of each backbone, built offline.

    GFLOPs count one per multiply-add, as fvcore (the IEMOCAP paper's counter) does.
    """
    # Imported here so that `emovox --help` stays fast.
    from emovox.profiling import DEFAULT_SECONDS, DEFAULT_TOKENS, profile_all

    if as_json:
        rows = profile_all(names or None, tokens=tokens, seconds=seconds)
        payload = [
            {
                "name": row.name,
                "hub_id": row.hub_id,
                "modality": row.modality,
                "params_m": round(row.params_m, 4),
                "gflops": round(row.gflops, 4),
            }
            for row in rows
        ]
        typer.echo(json.dumps(payload, indent=2))
        return

    from rich import box
    from rich.console import Console
    from rich.table import Table

    from emovox.backbones.architectures import PAPER_TABLE1

    console = Console()
    with console.status("profiling") as status:
        rows = profile_all(
            names or None, tokens=tokens, seconds=seconds, progress=lambda name: status.update(f"profiling {name}")
        )

    # The paper's values are for its own utterance length; beside any other they mislead.
    compare = tokens == DEFAULT_TOKENS and seconds == DEFAULT_SECONDS
    numbers = ["Params (M)", "Paper", "Diff", "GFLOPs", "Paper", "Diff"] if compare else ["Params (M)", "GFLOPs"]
    lengths = {"text": f"{tokens} tokens", "audio": f"{seconds:g} s"}
    notes: list[str] = []
    for modality in dict.fromkeys(row.modality for row in rows):
        table = Table(
            title=f"{modality.capitalize()} backbones: trainable parameters, GFLOPs per utterance of "
            f"{lengths.get(modality, modality)}",
            box=box.SIMPLE_HEAD,
        )
        table.add_column("Name", overflow="fold")
        for header in numbers:
            table.add_column(header, justify="right", no_wrap=True)
        for row in (r for r in rows if r.modality == modality):
            cells = [row.name, f"{row.params_m:.2f}"]
            if compare:
                cells += [_num(row.paper_params_m), _diff(row.params_diff)]
            cells.append(f"{row.gflops:.2f}")
            if compare:
                cells += [_num(row.paper_gflops), _diff(row.gflops_diff)]
                paper = PAPER_TABLE1.get(row.name)
                if paper is not None and paper.note:
                    notes.append(f"{row.name}: {paper.note}")
            table.add_row(*cells)
        console.print(table)

    console.print("GFLOPs count one per multiply-add (fvcore, as the paper); Paper = IEMOCAP paper, Table 1.")
    for note in notes:
        console.print(f"* {note}")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _diff(value: float | None) -> str:
    if value is None:
        return "-"
    text = f"{100 * value:+.1f}%".replace("-0.0%", "0.0%").replace("+0.0%", "0.0%")
    return text if abs(value) <= 0.02 else f"[bold red]{text}[/]"
