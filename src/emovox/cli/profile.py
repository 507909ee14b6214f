"""``emovox profile``: parameters, GFLOPs and size on disk of the registry backbones, next to the papers'."""

from __future__ import annotations

import json

import typer

from emovox.cli import app


@app.command("profile")
def profile_command(
    names: list[str] | None = typer.Argument(None, help="Registry names to profile (default: all of them)."),
    as_json: bool = typer.Option(
        False, "--json", help="Print a JSON list of {name, hub_id, modality, params_m, gflops, size_mb}."
    ),
    tokens: int = typer.Option(100, "--tokens", min=1, help="Text utterance length in tokens (paper: 100)."),
    seconds: float = typer.Option(10.0, "--seconds", min=0.1, help="Audio utterance length in seconds (paper: 10)."),
) -> None:
    """Trainable parameters (M), GFLOPs per utterance and size on disk (MB) of each backbone, built offline.

    GFLOPs count one per multiply-add, as fvcore (the IEMOCAP paper's counter) does. Size is the
    fp32 safetensors data of every parameter and buffer (MB = 10^6 bytes), as the RAVDESS paper's Table 6.
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
                "gflops": round(row.gflops, 4) if row.gflops is not None else None,
                "size_mb": round(row.size_mb, 3) if row.size_mb is not None else None,
                **({"note": row.note} if row.note else {}),
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
        group = [r for r in rows if r.modality == modality]
        table = Table(
            title=f"{modality.capitalize()} backbones: trainable parameters, GFLOPs per utterance of "
            f"{lengths.get(modality, modality)}, fp32 size on disk",
            box=box.SIMPLE_HEAD,
        )
        table.add_column("Name", overflow="fold", min_width=10)
        for header in numbers + ["Disk MB"]:
            table.add_column(header, justify="right", no_wrap=True)
        for row in group:
            cells = [row.name, f"{row.params_m:.2f}"]
            if compare:
                cells += [_num(row.paper_params_m), _diff(row.params_diff)]
            cells.append(_num(row.gflops))
            if row.note:
                notes.append(row.note)
            if compare:
                cells += [_num(row.paper_gflops), _diff(row.gflops_diff)]
                paper = PAPER_TABLE1.get(row.name)
                if paper is not None and paper.note:
                    notes.append(f"{row.name}: {paper.note}")
            cells.append(_num(row.size_mb, 1))
            table.add_row(*cells)
        console.print(table)

    # The RAVDESS paper's Table 6 has a few audio models: their own small table keeps 80 columns readable.
    table6 = [r for r in rows if r.paper_size_mb is not None]
    if table6:
        table = Table(title="Size on disk (MB) beside the RAVDESS paper's Table 6", box=box.SIMPLE_HEAD)
        table.add_column("Name", overflow="fold", min_width=10)
        for header in ("Disk MB", "Paper", "Diff"):
            table.add_column(header, justify="right", no_wrap=True)
        for row in table6:
            table.add_row(row.name, _num(row.size_mb, 1), _num(row.paper_size_mb, 0), _diff(row.size_diff))
        console.print(table)

    console.print("GFLOPs count one per multiply-add (fvcore, as the paper); Paper = IEMOCAP paper, Table 1.")
    console.print(
        "Disk MB = fp32 safetensors data of all parameters and buffers (10^6 bytes, header excluded); "
        "its Paper = RAVDESS paper, Table 6 (fine-tuned model with its head)."
    )
    for note in notes:
        console.print(f"* {note}")


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _diff(value: float | None) -> str:
    if value is None:
        return "-"
    text = f"{100 * value:+.1f}%".replace("-0.0%", "0.0%").replace("+0.0%", "0.0%")
    return text if abs(value) <= 0.02 else f"[bold red]{text}[/]"
