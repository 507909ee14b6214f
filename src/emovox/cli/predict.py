"""``emovox predict`` (clips, folders, manifests) and ``emovox timeline`` (long recordings)."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import typer

from emovox.audio import SAMPLE_RATE
from emovox.cli import app
from emovox.corpora.base import files_under
from emovox.errors import EmovoxError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")


class InputError(EmovoxError):
    """An input given to ``emovox predict`` is missing, empty or not audio."""


@dataclass(frozen=True)
class Job:
    """One thing to predict: a file, or the ``[start, end]`` cut of one (manifest rows)."""

    name: str
    path: Path | None
    start: float | None = None
    end: float | None = None
    text: str | None = None
    reference: str | None = None


def audio_suffixes() -> set[str]:
    import soundfile as sf

    return {"." + f.lower() for f in sf.available_formats()} | {".aif", ".oga", ".opus"}


def expand_inputs(inputs: list[Path]) -> list[Job]:
    """Files as given; folders -> every audio file in them (recursively, sorted); tables -> their rows."""
    jobs: list[Job] = []
    suffixes = audio_suffixes()
    for p in inputs:
        if p.is_dir():
            found = [f for f in files_under(p, tuple(suffixes)) if f.is_file()]  # follows symlinked folders
            if not found:
                raise InputError(f"{p}: the folder holds no audio files ({', '.join(sorted(suffixes))})")
            jobs.extend(Job(str(f), f) for f in found)
        elif p.is_file() and p.suffix.lower() in TABLE_SUFFIXES:
            jobs.extend(manifest_jobs(p))
        elif p.is_file():
            jobs.append(Job(str(p), p))
        else:
            raise InputError(
                f"{p}: no such file or folder; INPUT is an audio file, a folder of them, or a manifest (.csv/.tsv/.jsonl)"
            )
    return jobs


def manifest_jobs(path: Path) -> list[Job]:
    """Rows of a manifest: ``path`` (relative to the manifest) and optional ``id``, ``text``, ``start``, ``end``, ``label``."""
    from emovox.corpora.tables import read_table

    columns, rows = read_table(path, "manifest")
    if "path" not in columns:
        raise InputError(f"manifest {path}: needs a 'path' column (found {columns}); optional: id, text, start, end, label")
    jobs = []
    for line, row in rows:
        where = f"manifest {path}, line {line}"
        if row.get("path") is None:
            raise InputError(f"{where}: the path cell is empty")
        audio = (path.parent / str(row["path"])).expanduser()
        start, end = _seconds(row.get("start"), where, "start"), _seconds(row.get("end"), where, "end")
        name = row.get("id")
        if name is None:
            name = (
                f"{audio}@{start or 0:g}-{end if end is not None else 'end'}" if start is not None or end is not None else audio
            )
        text = row.get("text")
        label = row.get("label")
        jobs.append(Job(str(name), audio, start, end, None if text is None else str(text), None if label is None else str(label)))
    if not jobs:
        raise InputError(f"manifest {path} has no rows")
    return jobs


def _seconds(value: Any, where: str, column: str) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or x < 0:
        raise InputError(f"{where}: {column} {value!r} is not a number of seconds")
    return x


def run_predictions(rec, jobs: list[Job], *, batch_size: int, progress: bool, on_bad_audio: str) -> Iterator[dict]:
    """Predict ``jobs`` a few batches at a time (never all audio in memory); yields one row per job."""
    from tqdm.auto import tqdm

    from emovox.audio import load_audio
    from emovox.errors import AudioError

    chunk = max(1, batch_size) * 4
    bar = tqdm(total=len(jobs), unit="file", desc="predict", disable=not progress, file=sys.stderr)
    for first in range(0, len(jobs), chunk):
        part = jobs[first : first + chunk]
        clips, texts, keep = [], [], []
        for job in part:
            if rec.needs_text and job.text is not None:
                clips.append(None)  # the model reads the transcript only
            else:
                try:
                    clips.append(load_audio(job.path, job.start, job.end))
                except AudioError as exc:
                    if on_bad_audio == "error":
                        raise
                    yield {"input": job.name, "error": str(exc)}
                    continue
            texts.append(job.text if rec.needs_text else None)
            keep.append(job)
        if keep:
            if all(c is None for c in clips):
                preds = rec.predict(None, text=texts, batch_size=batch_size)
            else:
                preds = _predict_mixed(rec, clips, texts, batch_size, on_bad_audio, keep)
            for job, pred, clip in zip(keep, preds, clips, strict=True):
                if isinstance(pred, dict):
                    yield pred
                    continue
                row = replace(pred, source=job.name).to_dict()
                row = {"input": row.pop("source"), **row}
                if job.reference is not None:
                    row["reference"] = job.reference
                if clip is not None and len(clip) / SAMPLE_RATE > rec.max_seconds + 1e-6:
                    row["seconds_used"] = rec.max_seconds
                    row["seconds"] = round(len(clip) / SAMPLE_RATE, 3)
                yield row
        bar.update(len(part))
    bar.close()


def _predict_mixed(rec, clips, texts, batch_size, on_bad_audio, jobs) -> list:
    """Arrays and transcripts together; with ``skip``, a clip the model refuses becomes an error row."""
    from emovox.errors import AudioError

    if on_bad_audio == "error":
        return rec.predict(clips, text=texts, batch_size=batch_size)
    try:
        return rec.predict(clips, text=texts, batch_size=batch_size)
    except AudioError:
        out = []
        for job, c, t in zip(jobs, clips, texts, strict=True):
            try:
                out.append(rec.predict([c], text=[t], batch_size=batch_size)[0])
            except AudioError as exc:
                out.append({"input": job.name, "error": f"{job.name}: {exc}"})
        return out


def write_rows(rows: list[dict], labels: tuple[str, ...], out: Path | None, fmt: str) -> str:
    """JSON (a list of objects) or CSV (``input,label,p_<label>...,transcript,reference,error``)."""
    if fmt == "json":
        text = json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    else:
        buf = io.StringIO()
        extra = [c for c in ("transcript", "reference", "seconds", "seconds_used", "error") if any(c in r for r in rows)]
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["input", "label", *[f"p_{label}" for label in labels], *extra])
        for r in rows:
            probs = r.get("probabilities", {})
            w.writerow(
                [r["input"], r.get("label", ""), *[f"{probs[label]:.6f}" if label in probs else "" for label in labels]]
                + [r.get(c, "") for c in extra]
            )
        text = buf.getvalue()
    if out is not None and str(out) != "-":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    return text


def print_rows(rows: list[dict], labels: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False)
    table.add_column("input", overflow="fold")
    table.add_column("label", style="bold")
    for label in labels:
        table.add_column(label, justify="right")
    extra = [c for c in ("reference", "transcript", "error") if any(c in r for r in rows)]
    for c in extra:
        table.add_column(c, overflow="fold")
    for r in rows:
        if "error" in r:
            table.add_row(r["input"], "[red]error[/]", *[""] * len(labels), *[r.get(c, "") for c in extra])
            continue
        probs = [f"{r['probabilities'][label]:.3f}" for label in labels]
        table.add_row(r["input"], r["label"], *probs, *[r.get(c, "") for c in extra])
    Console().print(table)


def load_recognizer(model_dir: Path, asr: str | None, asr_language: str | None):
    from emovox.asr import AsrConfig
    from emovox.recognizer import Recognizer

    rec = Recognizer.load(model_dir)
    if asr is not None or asr_language is not None:
        base = rec.asr
        model = asr or (base.model if base is not None else None)
        if model is None:
            raise EmovoxError("--asr-language needs an ASR model: pass --asr WHISPER_DIR_OR_HUB_ID")
        rec.asr = AsrConfig(model, asr_language if asr_language is not None else (base.language if base else None))
    return rec


ASR_HELP = "Whisper model (local directory or hub id) that transcribes audio for recognizers reading transcripts."
ASR_LANG_HELP = "Language the ASR transcribes (code or name, e.g. de); default: the recognizer's, else detected."


@app.command()
def predict(
    model_dir: Path = typer.Argument(..., help="Recognizer directory from `emovox train`."),
    inputs: list[Path] = typer.Argument(
        None, help="Audio files, folders of audio files, or manifests (.csv/.tsv/.jsonl with a path column)."
    ),
    text: str = typer.Option(None, "--text", help="Transcript of the one INPUT (or, with no INPUT, the text to classify)."),
    json_out: Path = typer.Option(None, "--json", help="Write the predictions as JSON here ('-' for stdout)."),
    csv_out: Path = typer.Option(None, "--csv", help="Write the predictions as CSV here ('-' for stdout)."),
    asr: str = typer.Option(None, "--asr", help=ASR_HELP),
    asr_language: str = typer.Option(None, "--asr-language", help=ASR_LANG_HELP),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Clips per forward pass."),
    on_bad_audio: str = typer.Option("error", "--on-bad-audio", help="error | skip (report the file and go on)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar, no table."),
    shard: str = typer.Option(None, "--shard", help="i/n: predict only shard i of n of the inputs (1-based); needs --out."),
    out: Path = typer.Option(None, "--out", help="Write the predictions as parquet (rows keyed by id and input index)."),
    ray: bool = typer.Option(False, "--ray", help="Predict on Ray Data (actor pool); needs --out and the ray extra."),
    ray_address: str = typer.Option(None, "--ray-address", help="--ray: a running Ray cluster (default: start one here)."),
    ray_actors: int = typer.Option(1, "--ray-actors", min=1, help="--ray: actors, one CPU each; leave a CPU for Ray's reader."),
    ray_cpus: int = typer.Option(None, "--ray-cpus", min=1, help="--ray without --ray-address: CPUs of the local Ray instance."),
) -> None:
    """Print the label and class probabilities of every input."""
    if on_bad_audio not in ("error", "skip"):
        raise EmovoxError(f"--on-bad-audio {on_bad_audio!r}: use error or skip")
    if json_out is not None and csv_out is not None:
        raise EmovoxError("choose one of --json and --csv")
    inputs = list(inputs or [])
    if not inputs and text is None:
        raise EmovoxError(
            "nothing to predict: give INPUT files/folders/manifests, or --text for a recognizer that reads transcripts"
        )
    rec = load_recognizer(model_dir, asr, asr_language)
    if text is not None and not rec.needs_text:
        raise EmovoxError(
            f"{model_dir} listens to audio only (modality {rec.modality}); --text is for recognizers that read transcripts"
        )
    if inputs:
        jobs = expand_inputs(inputs)
        if text is not None:
            if len(jobs) != 1:
                raise EmovoxError(
                    f"--text is the transcript of one input, but the inputs hold {len(jobs)} clips; "
                    "put transcripts in a manifest 'text' column"
                )
            jobs = [replace(jobs[0], text=text)]
    else:
        jobs = [Job("--text", None, text=text)]
    if shard is not None or out is not None or ray:
        if out is None:
            raise EmovoxError("--shard and --ray write parquet parts: give --out part-i.parquet (then `emovox merge`)")
        from emovox.cli.parts import predict_parts
        from emovox.data.shards import Shard

        part = Shard.parse(shard)
        rows = predict_parts(
            rec, model_dir, jobs, shard=part, out=out, batch_size=batch_size, on_bad_audio=on_bad_audio, progress=not quiet,
            rows_of=run_predictions, job_type=Job, ray=ray, ray_address=ray_address, ray_actors=ray_actors, ray_cpus=ray_cpus,
        )  # fmt: skip
        failed = sum("error" in r for r in rows)
        typer.echo(f"shard {part}: {len(rows)} of {len(jobs)} inputs -> {out}" + (f" ({failed} unreadable)" if failed else ""))
        return
    progress = not quiet and len(jobs) > batch_size
    rows = list(run_predictions(rec, jobs, batch_size=batch_size, progress=progress, on_bad_audio=on_bad_audio))
    stdout = any(o is not None and str(o) == "-" for o in (json_out, csv_out))
    if json_out is not None:
        out = write_rows(rows, rec.labels, json_out, "json")
    elif csv_out is not None:
        out = write_rows(rows, rec.labels, csv_out, "csv")
    if stdout:
        typer.echo(out, nl=False)
    elif not quiet:
        print_rows(rows, rec.labels)
    cropped = [r for r in rows if "seconds_used" in r]
    if cropped and not stdout:
        typer.echo(
            f"note: {len(cropped)} input(s) longer than {rec.max_seconds:g} s were cropped to their first {rec.max_seconds:g} s, "
            "as in training; use `emovox timeline` for long recordings",
            err=True,
        )
    failed = [r for r in rows if "error" in r]
    if failed:
        typer.echo(f"{len(failed)} of {len(rows)} inputs could not be read (see 'error')", err=True)


@app.command()
def timeline(
    model_dir: Path = typer.Argument(..., help="Recognizer directory from `emovox train`."),
    audio: Path = typer.Argument(..., help="A long recording (any length: it is streamed, never loaded whole)."),
    mode: str = typer.Option("vad", "--mode", help="vad (energy-based voice activity) | fixed (overlapping windows)."),
    window: float = typer.Option(4.0, "--window", help="fixed: window length in seconds."),
    overlap: float = typer.Option(1.0, "--overlap", help="fixed: overlap of consecutive windows in seconds."),
    max_segment: float = typer.Option(
        10.0, "--max-segment", help="vad: longer speech is split into pieces of this many seconds."
    ),
    min_silence: float = typer.Option(0.4, "--min-silence", help="vad: a pause this long (s) ends a segment."),
    min_speech: float = typer.Option(0.3, "--min-speech", help="vad: shorter bursts (s) are ignored."),
    threshold_db: float = typer.Option(None, "--threshold-db", help="vad: fixed energy threshold in dBFS (default: adaptive)."),
    json_out: Path = typer.Option(None, "--json", help="Write the timeline (start, end, label, probabilities) as JSON here."),
    plot: Path = typer.Option(None, "--plot", help="Write a PNG plot of the timeline here."),
    asr: str = typer.Option(None, "--asr", help=ASR_HELP),
    asr_language: str = typer.Option(None, "--asr-language", help=ASR_LANG_HELP),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    quiet: bool = typer.Option(False, "--quiet"),
) -> None:
    """Segment a long recording, predict every segment, and report the timeline."""
    from rich.console import Console
    from rich.table import Table

    from emovox.segments import SegmentConfig, plot_timeline, predict_timeline

    config = SegmentConfig(
        mode=mode, window=window, overlap=overlap, max_segment=max_segment, min_silence=min_silence,
        min_speech=min_speech, threshold_db=threshold_db,
    )
    rec = load_recognizer(model_dir, asr, asr_language)
    if not audio.is_file():
        raise InputError(f"{audio}: audio file not found")
    tl = predict_timeline(rec, audio, config, batch_size=batch_size, progress=not quiet)
    if json_out is not None:
        tl.write_json(json_out)
    if plot is not None:
        plot_timeline(tl, plot)
    if quiet:
        return
    console = Console()
    table = Table(show_edge=False, title=f"{audio.name}: {len(tl.entries)} segments over {tl.duration:.1f} s ({mode})")
    for col in ("start", "end", "label", "p"):
        table.add_column(col, justify="right" if col != "label" else "left")
    shown = tl.entries if len(tl.entries) <= 40 else tl.entries[:20] + tl.entries[-20:]
    for i, e in enumerate(shown):
        if len(tl.entries) > 40 and i == 20:
            table.add_row("...", "", f"({len(tl.entries) - 40} more)", "")
        table.add_row(f"{e.start:.2f}", f"{e.end:.2f}", e.label, f"{e.probabilities[e.label]:.3f}")
    console.print(table)
    shares = ", ".join(f"{k} {v:.1f} s" for k, v in tl.label_seconds().items())
    console.print(f"time per label: {shares}")
    for what, path in (("timeline", json_out), ("plot", plot)):
        if path is not None:
            console.print(f"{what}: {path}")
