"""``emovox export``: write a recognizer's runtime (ONNX encoder + numpy head, optionally int8), checked against torch."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from emovox.cli import app


@app.command()
def export(
    model_dir: Path = typer.Argument(
        ..., metavar="MODEL_DIR", help="Recognizer directory from `emovox train` (audio recognizers)."
    ),
    int8: bool = typer.Option(False, "--int8", help="Also write runtime/encoder.int8.onnx: dynamic int8 MatMuls."),
    check: list[Path] = typer.Option(
        None, "--check", metavar="AUDIO",
        help="Audio files or folders to compare torch and the runtime on (default: synthetic clips).",
    ),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="Largest accepted probability difference of the float runtime."),
    report: Path = typer.Option(None, "--report", metavar="FILE", help="Write the export report as JSON here."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Write MODEL_DIR/runtime: what predict, timeline and serve run without torch, and how closely it agrees with torch.

    The encoder graph stops after the highest hidden state the head reads; pooling is in the
    graph, the front end and the head run in numpy. `train` writes it already for the
    recognizers it covers; export again for --int8, or after changing the recognizer.
    """
    import time

    from rich.console import Console
    from rich.table import Table

    from emovox.audio import load_audio
    from emovox.cli.inputs import expand_inputs
    from emovox.inference.export import ExportError, unsupported, write_runtime  # torch: the train extra (else one line, no bar)
    from emovox.inference.recognizer import Recognizer
    from emovox.progress import progress_bar

    t0 = time.time()
    stages = ["load", "export", "check", *(("int8", "check int8") if int8 else ())]
    bar = progress_bar(total=len(stages), desc="export", unit="step", disable=quiet)
    done: list[str] = []

    def on_stage(name: str) -> None:
        if done:
            bar.update(1)
        done.append(name)
        bar.set_postfix_str(name)

    try:
        on_stage("load")
        rec = Recognizer.load(model_dir)
        why = unsupported(rec.model)
        if why is not None:
            raise ExportError(f"{model_dir}: {why}; run it with torch (`--engine torch`, the default for it)")
        samples = None
        if check:
            jobs = expand_inputs(list(check))
            samples = [load_audio(j.path, j.start, j.end) for j in jobs]
        result = write_runtime(rec.model, model_dir, int8=int8, samples=samples, tolerance=tolerance, on_stage=on_stage)
        bar.update(1)
    finally:
        bar.close()
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    title = f"{result.runtime}: hidden states {result.layers} ({result.runs}), input {result.input} with dynamic batch and time"
    table = Table(title=title, show_edge=False)
    for col in ("engine", "encoder", "size", "max |p_runtime - p_torch|", "same label"):
        table.add_column(col, justify="left" if col in ("engine", "encoder") else "right")
    rows = [("onnx", "encoder.onnx", result.size_bytes, result.fp32)]
    if result.int8 is not None:
        rows.append(("onnx-int8", "encoder.int8.onnx", result.int8_size_bytes, result.int8))
    for name, path, size, agreement in rows:
        table.add_row(name, path, f"{size / 1e6:.1f} MB", f"{agreement.max_abs_diff:.2e}", f"{agreement.label_agreement:.0%}")
    Console().print(table)
    typer.echo(
        f"checked on {result.fp32.samples} clips of {', '.join(f'{s:g}' for s in result.sample_seconds)} s; "
        f"{time.time() - t0:.1f} s in all"
    )
    if result.int8 is not None and result.int8.label_agreement < 1.0:
        typer.echo("note: int8 changes the label of some check clips; compare on your own data with --check", err=True)
