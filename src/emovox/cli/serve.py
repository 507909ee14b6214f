"""``emovox serve`` (the HTTP service, see ``emovox.serve``) and ``emovox demo`` (the same, with its page opened)."""

from __future__ import annotations

from pathlib import Path

import typer

from emovox.cli import app
from emovox.cli.engine import ASR_HELP, ASR_LANG_HELP, ENGINE_OPTION, open_recognizer

MODEL_DIR_HELP = "Recognizer directory from `emovox train`."


def _config(max_upload_mb: float, max_seconds: float, max_timeline_seconds: float, max_queue: int, max_batch: int):
    from emovox.serve.limits import ServeConfig

    return ServeConfig(
        max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_seconds=max_seconds, max_queue=max_queue, max_batch=max_batch,
        max_timeline_seconds=max_timeline_seconds,
    )


def _prepare(model_dir: Path, asr: str | None, asr_language: str | None, threads: int | None, engine: str):
    rec = open_recognizer(model_dir, engine, asr=asr, asr_language=asr_language, threads=threads)
    describe = getattr(rec, "describe", None)
    typer.echo(f"emovox: serving {model_dir} with {describe() if callable(describe) else f'engine {rec.engine}'}", err=True)
    norm = getattr(rec, "normalization", "none")
    if norm != "none":
        typer.echo(f"emovox: {model_dir} standardises clips with their {norm}'s statistics; a request holds one clip, so "
                   "each is classified " + ("by its unnormalised head" if _has_fallback(rec) else "with the training "
                   "statistics") + " (emovox predict with a manifest's speaker column gathers a speaker's clips)", err=True)
    if rec.needs_text and rec.asr is not None:
        from emovox.inference.asr import get_transcriber

        get_transcriber(rec.asr)  # load Whisper now: the first request should not wait for it, and a bad --asr fails here
    return rec


@app.command()
def serve(
    model_dir: Path = typer.Argument(..., help=MODEL_DIR_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port."),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", help="Larger uploads are refused with 413."),
    max_seconds: float = typer.Option(60.0, "--max-seconds", help="Longer recordings are refused by /predict with 422."),
    max_timeline_seconds: float = typer.Option(
        600.0, "--max-timeline-seconds", help="Longer recordings are refused by /timeline with 422."
    ),
    max_queue: int = typer.Option(32, "--max-queue", min=1, help="Requests waiting for inference; beyond that 503."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Waiting requests predicted together in one batch."),
    asr: str = typer.Option(None, "--asr", help=ASR_HELP),
    asr_language: str = typer.Option(None, "--asr-language", help=ASR_LANG_HELP),
    threads: int = typer.Option(None, "--threads", min=1, help="Inference threads, torch or onnxruntime (default: all cores)."),
    engine: str = ENGINE_OPTION,
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve a recognizer over HTTP: the demo page at /, POST /predict, POST /timeline, GET /health, GET /labels, /docs."""
    from emovox.serve.app import serve as run

    config = _config(max_upload_mb, max_seconds, max_timeline_seconds, max_queue, max_batch)
    rec = _prepare(model_dir, asr, asr_language, threads, engine)
    run(rec, host=host, port=port, config=config, log_level=log_level)


@app.command()
def demo(
    model_dir: Path = typer.Argument(..., help=MODEL_DIR_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", help="Larger uploads are refused."),
    max_seconds: float = typer.Option(60.0, "--max-seconds", help="Longest clip for one prediction."),
    max_timeline_seconds: float = typer.Option(600.0, "--max-timeline-seconds", help="Longest recording for a timeline."),
    asr: str = typer.Option(None, "--asr", help=ASR_HELP),
    asr_language: str = typer.Option(None, "--asr-language", help=ASR_LANG_HELP),
    threads: int = typer.Option(None, "--threads", min=1, help="Inference threads, torch or onnxruntime (default: all cores)."),
    engine: str = ENGINE_OPTION,
    browser: bool = typer.Option(True, "--browser/--no-browser", help="Open the page in the default web browser."),
) -> None:
    """Try a recognizer in the browser: serve it and open its page (upload or record a clip, type a transcript)."""
    import webbrowser

    from emovox.serve.app import serve as run

    config = _config(max_upload_mb, max_seconds, max_timeline_seconds, 32, 8)
    rec = _prepare(model_dir, asr, asr_language, threads, engine)

    def started(url: str) -> None:
        typer.echo(f"emovox demo: {url} (Ctrl+C to stop)")
        if browser and not webbrowser.open(url):
            typer.echo("no web browser could be opened here: open the address above yourself")

    run(rec, host=host, port=port, config=config, log_level="warning", on_started=started)


def _has_fallback(rec) -> bool:
    """Whether a normalising recognizer (either engine) keeps an unnormalised head for clips without statistics."""
    head = getattr(rec, "head", None)
    if head is not None:
        return getattr(head, "fallback", None) is not None
    return getattr(getattr(rec, "model", None), "fallback", None) is not None
