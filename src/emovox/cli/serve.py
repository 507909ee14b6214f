"""``emovox serve``: the HTTP service (see ``emovox.serve``)."""

from __future__ import annotations

from pathlib import Path

import typer

from emovox.cli import app
from emovox.cli.predict import ASR_HELP, ASR_LANG_HELP, load_recognizer


@app.command()
def serve(
    model_dir: Path = typer.Argument(..., help="Recognizer directory from `emovox train`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", help="Larger uploads are refused with 413."),
    max_seconds: float = typer.Option(60.0, "--max-seconds", help="Longer recordings are refused with 422."),
    max_queue: int = typer.Option(32, "--max-queue", min=1, help="Requests waiting for inference; beyond that 503."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Waiting requests predicted together in one batch."),
    asr: str = typer.Option(None, "--asr", help=ASR_HELP),
    asr_language: str = typer.Option(None, "--asr-language", help=ASR_LANG_HELP),
    threads: int = typer.Option(None, "--threads", min=1, help="torch threads for inference (default: all cores)."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve a recognizer over HTTP: POST /predict, GET /health, GET /labels, /docs."""
    from emovox.serve import ServeConfig
    from emovox.serve import serve as run

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    config = ServeConfig(
        max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_seconds=max_seconds, max_queue=max_queue, max_batch=max_batch
    )
    rec = load_recognizer(model_dir, asr, asr_language)
    if rec.needs_text and rec.asr is not None:
        from emovox.asr import get_transcriber

        get_transcriber(rec.asr)  # load Whisper now: the first request should not wait for it, and a bad --asr fails here
    run(rec, host=host, port=port, config=config, log_level=log_level)
