"""``emovox timeline``: segment a long recording (streamed, never loaded whole), predict every segment, report."""

from __future__ import annotations

from pathlib import Path

import typer

from emovox.cli import app
from emovox.cli.engine import ASR_HELP, ASR_LANG_HELP, ENGINE_OPTION, open_recognizer
from emovox.cli.inputs import InputError


@app.command()
def timeline(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR", help="Recognizer directory from `emovox train`."),
    audio: Path = typer.Argument(..., metavar="AUDIO", help="A long recording (any length: it is streamed, never loaded whole)."),
    mode: str = typer.Option(
        "vad", "--mode", metavar="vad|fixed", help="vad (energy-based voice activity) | fixed (overlapping windows)."
    ),
    window: float = typer.Option(4.0, "--window", help="fixed: window length in seconds."),
    overlap: float = typer.Option(1.0, "--overlap", help="fixed: overlap of consecutive windows in seconds."),
    max_segment: float = typer.Option(
        10.0, "--max-segment", help="vad: longer speech is split into pieces of this many seconds."
    ),
    min_silence: float = typer.Option(0.4, "--min-silence", help="vad: a pause this long (s) ends a segment."),
    min_speech: float = typer.Option(0.3, "--min-speech", help="vad: shorter bursts (s) are ignored."),
    threshold_db: float = typer.Option(None, "--threshold-db", help="vad: fixed energy threshold in dBFS (default: adaptive)."),
    json_out: Path = typer.Option(
        None, "--json", metavar="FILE", help="Write the timeline (start, end, label, probabilities) as JSON here."
    ),
    plot: Path = typer.Option(None, "--plot", metavar="FILE", help="Write a PNG plot of the timeline here."),
    asr: str = typer.Option(None, "--asr", metavar="MODEL", help=ASR_HELP),
    asr_language: str = typer.Option(None, "--asr-language", metavar="LANG", help=ASR_LANG_HELP),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Segments per forward pass."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar or table; warnings still go to stderr."),
    engine: str = ENGINE_OPTION,
) -> None:
    """Segment a long recording, predict every segment, and report the timeline."""
    from rich.console import Console
    from rich.table import Table

    from emovox.cli.output import warn
    from emovox.inference.segments import SegmentConfig
    from emovox.inference.timeline import plot_timeline, predict_timeline

    config = SegmentConfig(
        mode=mode, window=window, overlap=overlap, max_segment=max_segment, min_silence=min_silence,
        min_speech=min_speech, threshold_db=threshold_db,
    )
    if not audio.is_file():
        raise InputError(f"{audio}: audio file not found")
    if plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:  # say so before the work, not after it
            from emovox.errors import MissingExtraError

            raise MissingExtraError("--plot needs matplotlib, which comes with the train extra: pip install 'emovox[train]' "
                                    "(or pip install matplotlib)")
    rec = open_recognizer(model_dir, engine, asr=asr, asr_language=asr_language)
    if getattr(rec, "normalization", "none") != "none":
        from emovox.cli.output import warn

        warn(f"{model_dir} standardises clips with their {rec.normalization}'s statistics; a timeline classifies each "
             "segment on its own, without them")
    tl = predict_timeline(rec, audio, config, batch_size=batch_size, progress=not quiet)
    if json_out is not None:
        tl.write_json(json_out)
    if plot is not None:
        plot_timeline(tl, plot)
    console = Console(highlight=False)
    if not tl.speech_found:
        what = "no segment" if not tl.entries else f"{len(tl.entries)} segment(s), none of them speech-like"
        warn(
            f"no speech found in {audio.name} ({tl.duration:.1f} s, {mode}: {what}); "
            "silence or steady noise has no emotion to report"
        )
    elif not quiet:
        flagged = any(e.speech is False for e in tl.entries)
        title = f"{audio.name}: {len(tl.entries)} segments over {tl.duration:.1f} s ({mode}, engine {rec.engine})"
        table = Table(show_edge=False, title=title)
        for col in ("start", "end", "label", "p", *(("speech",) if flagged else ())):
            table.add_column(col, justify="left" if col in ("label", "speech") else "right")
        shown = tl.entries if len(tl.entries) <= 40 else tl.entries[:20] + tl.entries[-20:]
        for i, e in enumerate(shown):
            if len(tl.entries) > 40 and i == 20:
                table.add_row("...", "", f"({len(tl.entries) - 40} more)", "", *(("",) if flagged else ()))
            cells = [f"{e.start:.2f}", f"{e.end:.2f}", e.label, f"{e.probabilities[e.label]:.3f}"]
            table.add_row(*cells, *(("[yellow]none[/]" if e.speech is False else "",) if flagged else ()))
        console.print(table)
        shares = ", ".join(f"{k} {v:.1f} s" for k, v in tl.label_seconds().items())
        console.print(f"time per label: {shares}")
    if not quiet:
        for what, path in (("timeline", json_out), ("plot", plot)):
            if path is not None:
                console.print(f"{what}: {path}", markup=False)
