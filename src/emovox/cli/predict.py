"""``emovox predict`` (clips, folders, manifests) and ``emovox timeline`` (long recordings)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import typer

from emovox.cli import app
from emovox.cli.engine import ENGINE_HELP, ENGINES
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
    context: str | None = None  # the previous utterance's transcript (context recognizers); None: a dialogue's first
    #: a ``dialogue`` manifest's earlier rows of this row's dialogue as (speaker, text), oldest first: the
    #: recognizer, once loaded, turns them into ``context`` in the format it was trained on (``with_history``)
    history: tuple[tuple[str | None, str], ...] | None = None
    #: who spoke it, and which corpus it belongs to: recognizers that standardise clips per speaker (corpus)
    #: classify each speaker's clips together (``Recognizer.normalization``)
    speaker: str | None = None
    corpus: str | None = None


def audio_suffixes() -> set[str]:
    import soundfile as sf

    return {"." + f.lower() for f in sf.available_formats()} | {".aif", ".oga", ".opus"}


def expand_inputs(inputs: list[Path]) -> list[Job]:
    """Files as given; folders -> every audio file in them (recursively, sorted); tables -> their rows."""
    jobs: list[Job] = []
    suffixes = audio_suffixes()
    for p in inputs:
        if p.is_dir():
            from emovox.corpora.base import files_under

            found = [f for f in files_under(p, tuple(suffixes)) if f.is_file()]  # follows linked folders
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


MANIFEST_COLUMNS = "path and/or text; optional: id, start, end, label, context, dialogue, speaker, corpus"


def manifest_jobs(path: Path) -> list[Job]:
    """Rows of a manifest: ``path`` (relative to the manifest) and/or ``text`` (a transcript-only row
    for recognizers that read text alone); optional ``id``, ``start``, ``end``, ``label``, and the
    previous utterance for context recognizers: a ``context`` column (its transcript; empty for a
    dialogue's first utterance), or a ``dialogue`` column, whose rows are taken in manifest order
    and each row's context is made from the rows before it in the same dialogue (the row just
    before, or as many turns, with the ``speaker`` column's names, as the recognizer was trained on)."""
    from emovox.corpora.tables import read_table

    columns, rows = read_table(path, "manifest")
    if "path" not in columns and "text" not in columns:
        raise InputError(f"manifest {path}: needs a 'path' or a 'text' column (found {columns}); {MANIFEST_COLUMNS}")
    if "context" in columns and "dialogue" in columns:
        raise InputError(f"manifest {path}: give the previous utterance by 'context' or by 'dialogue', not both")
    jobs, previous = [], {}
    for line, row in rows:
        where = f"manifest {path}, line {line}"
        text = None if row.get("text") is None else str(row["text"])
        if row.get("path") is None and text is None:
            raise InputError(f"{where}: neither a path nor a text: nothing to predict")
        audio = None if row.get("path") is None else (path.parent / str(row["path"])).expanduser()
        start, end = _seconds(row.get("start"), where, "start"), _seconds(row.get("end"), where, "end")
        name = row.get("id")
        if name is None:
            cut = start is not None or end is not None
            if audio is None:
                name = f"{path.name}:{line}"
            else:
                name = f"{audio}@{start or 0:g}-{end if end is not None else 'end'}" if cut else audio
        history = None
        if "dialogue" in columns:
            dialogue = str(row.get("dialogue"))
            history = tuple(previous.get(dialogue, ()))
            context = history[-1][1] if history else None  # the paper's context; `with_history` reformats it
            speaker = None if row.get("speaker") is None else str(row["speaker"])
            previous[dialogue] = [*history, (speaker, text)]
        else:
            context = None if row.get("context") is None else str(row["context"])
        label = row.get("label")
        speaker_name = None if row.get("speaker") is None else str(row["speaker"])
        corpus_name = None if row.get("corpus") is None else str(row["corpus"])
        jobs.append(Job(str(name), audio, start, end, text, None if label is None else str(label), context, history,
                        speaker_name, corpus_name))
    if not jobs:
        raise InputError(f"manifest {path} has no rows")
    return jobs


def with_history(jobs: list[Job], rec) -> list[Job]:
    """Jobs whose context is their dialogue's earlier rows, formatted as ``rec`` was trained to read them."""
    if "context_text" not in rec.fields:
        return jobs
    def context(history) -> str | None:  # no context when the row just before has no transcript, as for one turn
        return rec.context_text(history) if history and history[-1][1] is not None else None

    return [replace(j, context=context(j.history)) if j.history is not None else j for j in jobs]


def with_groups(jobs: list[Job], speaker: str | None, corpus: str | None) -> list[Job]:
    """``--speaker`` / ``--corpus`` name every input's speaker (corpus); a manifest column says it per row instead."""
    for flag, value, field in (("--speaker", speaker, "speaker"), ("--corpus", corpus, "corpus")):
        if value is None:
            continue
        named = [j.name for j in jobs if getattr(j, field) is not None and getattr(j, field) != value]
        if named:
            raise InputError(f"{flag} {value!r}, but the manifest names another {field} for {named[0]}; use one or the other")
        jobs = [replace(j, **{field: value}) for j in jobs]
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


#: Exit status of ``predict`` when some inputs could not be predicted (the others were written);
#: 2 is a usage or input error before anything was predicted, as everywhere in emovox.
PARTIAL_FAILURE_EXIT = 3


def run_predictions(rec, jobs: list[Job], *, batch_size: int, progress: bool, on_bad_audio: str) -> Iterator[dict]:
    """Predict ``jobs`` a few batches at a time (never all audio in memory); yields one row per job, in input order.

    A job that cannot be predicted becomes a row with ``label`` None and an ``error`` (``on_bad_audio="skip"``),
    or raises (``"error"``).
    """
    from emovox.audio import SAMPLE_RATE, check_min_duration, load_audio
    from emovox.errors import AudioError
    from emovox.progress import progress_bar

    bar = progress_bar(total=len(jobs), unit="file", desc="predict", disable=not progress)
    ready: dict[int, dict] = {}
    following = 0
    try:
        for indices in prediction_chunks(rec, jobs, max(1, batch_size) * 4):
            part = [jobs[i] for i in indices]
            rows: list[dict | None] = [None] * len(part)
            todo, clips, texts, contexts, groups = [], [], [], [], []
            for k, job in enumerate(part):
                if rec.needs_text and job.text is not None and not rec.needs_audio:
                    clip = None  # the model reads the transcript only: the audio is not decoded
                elif job.path is None:
                    what = "audio" if not rec.needs_text else "audio (or, for a text-only recognizer, a transcript)"
                    error = f"{job.name}: this recognizer needs {what}, and the row has no path"
                    if on_bad_audio == "error":
                        raise InputError(error)
                    rows[k] = failed_row(job, error)
                    continue
                else:
                    try:
                        clip = check_min_duration(load_audio(job.path, job.start, job.end), job.name)
                    except AudioError as exc:
                        if on_bad_audio == "error":
                            raise
                        rows[k] = failed_row(job, str(exc))
                        continue
                todo.append(k)
                clips.append(clip)
                texts.append(job.text if rec.needs_text else None)
                contexts.append(job.context if "context_text" in rec.fields else None)
                groups.append((job.speaker, job.corpus))
            if todo:
                preds = _predict_batch(rec, clips, texts, contexts, groups, batch_size, on_bad_audio, [part[k] for k in todo])
                for k, clip, pred in zip(todo, clips, preds, strict=True):
                    job = part[k]
                    if isinstance(pred, str):
                        rows[k] = failed_row(job, pred)
                        continue
                    row = {"input": job.name, **replace(pred, source=None).to_dict()}  # with the recognizer's speech flag
                    if clip is not None:
                        if len(clip) / SAMPLE_RATE > rec.max_seconds + 1e-6:
                            row["seconds"] = round(len(clip) / SAMPLE_RATE, 3)
                            row["seconds_used"] = rec.max_seconds
                    if job.reference is not None:
                        row["reference"] = job.reference
                    rows[k] = row
            for i, row in zip(indices, rows, strict=True):
                ready[i] = row
            bar.update(len(part))
            while following in ready:  # in input order, as soon as every earlier row is there
                yield ready.pop(following)
                following += 1
    finally:
        bar.close()


def prediction_chunks(rec, jobs: list[Job], size: int) -> Iterator[list[int]]:
    """Indices of ``jobs`` to predict together: consecutive chunks of ``size``, or, for a recognizer that
    standardises clips with their speaker's (corpus's) statistics, all the clips of one speaker (corpus)
    together, whatever the order of the rows, so that every clip sees the statistics of them all."""
    mode = getattr(rec, "normalization", "none")
    if mode == "none":
        for first in range(0, len(jobs), size):
            yield list(range(first, min(first + size, len(jobs))))
        return
    groups: dict[str | None, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(getattr(job, mode), []).append(i)
    for key, indices in groups.items():
        if key is None:  # no group: each clip on its own statistics-free footing, in ordinary chunks
            for first in range(0, len(indices), size):
                yield indices[first : first + size]
        else:
            yield indices


def failed_row(job: Job, error: str) -> dict:
    row = {"input": job.name, "label": None, "probabilities": None, "error": error}
    if job.reference is not None:
        row["reference"] = job.reference
    return row


def _predict_batch(rec, clips, texts, contexts, groups, batch_size, on_bad_audio, jobs) -> list:
    """Predictions of arrays and/or transcripts; with ``skip``, an input the model refuses becomes its error message."""
    from emovox.errors import AudioError

    def run(c, t, ctx, g):
        context = ctx if any(x is not None for x in ctx) else None
        speakers, corpora = [x[0] for x in g], [x[1] for x in g]
        return rec.predict(None if all(x is None for x in c) else c, text=t, context=context, batch_size=batch_size,
                           speaker=speakers, corpus=corpora)

    if on_bad_audio == "error":
        return run(clips, texts, contexts, groups)
    try:
        return run(clips, texts, contexts, groups)
    except AudioError:  # find which one, keep the others
        out = []
        for job, c, t, ctx, g in zip(jobs, clips, texts, contexts, groups, strict=True):
            try:
                out.append(run([c], [t], [ctx], [g])[0])
            except AudioError as exc:
                out.append(f"{job.name}: {exc}")
        return out


#: Optional columns of the CSV, in this order, after ``input,label,p_<label>...``; ``error`` is always there.
CSV_EXTRA = ("speech", "transcript", "reference", "seconds", "seconds_used")


def format_rows(rows: list[dict], labels: tuple[str, ...], fmt: str) -> str:
    """JSON (a list of objects) or CSV (``input,label,p_<label>...,[speech,transcript,reference,seconds,seconds_used],error``)."""
    if fmt == "json":
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    buf = io.StringIO()
    extra = [c for c in CSV_EXTRA if any(c in r for r in rows)]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["input", "label", *[f"p_{label}" for label in labels], *extra, "error"])
    for r in rows:
        probs = r.get("probabilities") or {}
        cells = [r["input"], r.get("label") or "", *[f"{probs[label]:.6f}" if label in probs else "" for label in labels]]
        cells += [str(r[c]).lower() if isinstance(r.get(c), bool) else r.get(c, "") for c in extra]
        w.writerow(cells + [r.get("error", "")])
    return buf.getvalue()


def write_rows(rows: list[dict], labels: tuple[str, ...], out: Path | None, fmt: str) -> str:
    """``format_rows`` written to ``out`` (unless None or '-'); returns the text."""
    text = format_rows(rows, labels, fmt)
    if out is not None and str(out) != "-":
        from emovox.atomic import atomic_write_text

        atomic_write_text(out, text)
    return text


def load_recognizer(model_dir: Path, asr: str | None, asr_language: str | None, engine: str = "auto",
                    threads: int | None = None):
    """The recognizer ``predict``, ``timeline`` and ``serve`` run: its runtime or torch (``emovox.cli.engine``)."""
    from emovox.cli.engine import open_recognizer

    return open_recognizer(model_dir, engine, asr=asr, asr_language=asr_language, threads=threads)


ASR_HELP = "Whisper model (local directory or hub id) that transcribes audio for recognizers reading transcripts."
ASR_LANG_HELP = "Language the ASR transcribes (code or name, e.g. de); default: the recognizer's, else detected."
ENGINE_OPTION = typer.Option("auto", "--engine", metavar="|".join(ENGINES), help=ENGINE_HELP)


@app.command()
def predict(
    model_dir: Path = typer.Argument(..., metavar="MODEL_DIR", help="Recognizer directory from `emovox train`."),
    inputs: list[Path] = typer.Argument(
        None, metavar="INPUT", help="Audio files, folders of audio files, or manifests (.csv/.tsv/.jsonl with a path column)."
    ),
    text: str = typer.Option(
        None, "--text", metavar="TEXT", help="Transcript of the one INPUT (or, with no INPUT, the text to classify)."
    ),
    context: str = typer.Option(
        None, "--context", metavar="TEXT",
        help="Context recognizers: the previous utterance's transcript (of the one input; several turns as "
        "Recognizer.context_text formats them). Many inputs: a manifest's 'context' or 'dialogue' (+ 'speaker') column.",
    ),
    speaker: str = typer.Option(
        None, "--speaker", metavar="NAME",
        help="Who spoke the inputs (a folder of one person's clips): a recognizer that standardises clips per speaker "
        "takes the statistics of all of them. Many speakers: a manifest 'speaker' column.",
    ),
    corpus_name: str = typer.Option(
        None, "--corpus", metavar="NAME", help="Which corpus the inputs belong to (recognizers that standardise per corpus); "
        "or a manifest 'corpus' column.",
    ),
    json_out: Path = typer.Option(None, "--json", metavar="FILE", help="Write the predictions as JSON here ('-' for stdout)."),
    csv_out: Path = typer.Option(
        None, "--csv", metavar="FILE", help="Write the predictions as CSV here ('-' for stdout); combines with --json."
    ),
    asr: str = typer.Option(None, "--asr", metavar="MODEL", help=ASR_HELP),
    asr_language: str = typer.Option(None, "--asr-language", metavar="LANG", help=ASR_LANG_HELP),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Clips per forward pass."),
    on_bad_audio: str = typer.Option(
        "skip", "--on-bad-audio", metavar="skip|error",
        help=f"skip: predict every readable input, report the others (stderr, 'error' column) and exit {PARTIAL_FAILURE_EXIT}; "
        "error: stop at the first one (exit 2).",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar, table or summary; warnings still go to stderr."),
    engine: str = ENGINE_OPTION,
    shard: str = typer.Option(None, "--shard", help="i/n: predict only shard i of n of the inputs (1-based); needs --out."),
    out: Path = typer.Option(None, "--out", help="Write the predictions as parquet (rows keyed by id and input index)."),
    ray: bool = typer.Option(False, "--ray", help="Predict on Ray Data (actor pool); needs --out and the ray extra."),
    ray_address: str = typer.Option(None, "--ray-address", help="--ray: a running Ray cluster (default: start one here)."),
    ray_actors: int = typer.Option(1, "--ray-actors", min=1, help="--ray: actors, one CPU each; leave a CPU for Ray's reader."),
    ray_cpus: int = typer.Option(None, "--ray-cpus", min=1, help="--ray without --ray-address: CPUs of the local Ray instance."),
) -> None:
    """Label and class probabilities of every input, in input order.

    Exit status: 0 when every input was predicted; 3 when some could not be (the others are
    still written, the failed ones listed on stderr and in the outputs with their reason); 2
    when nothing was predicted (bad arguments, no recognizer, --on-bad-audio error).
    """
    import time

    t0 = time.time()
    if on_bad_audio not in ("error", "skip"):
        raise EmovoxError(f"--on-bad-audio {on_bad_audio!r}: use skip or error")
    if json_out is not None and csv_out is not None and str(json_out) == str(csv_out):
        raise EmovoxError(f"--json and --csv both name {json_out}; give each its own file (at most one of them '-')")
    inputs = list(inputs or [])
    if not inputs and text is None:
        raise EmovoxError(
            "nothing to predict: give INPUT files/folders/manifests, or --text for a recognizer that reads transcripts"
        )
    jobs = expand_inputs(inputs) if inputs else [Job("--text", None, text=text)]
    rec = load_recognizer(model_dir, asr, asr_language, engine)
    jobs = with_history(jobs, rec)
    jobs = with_groups(jobs, speaker, corpus_name)
    if context is not None:
        if "context_text" not in rec.fields:
            raise EmovoxError(f"{model_dir} reads no previous utterance (no context branch); drop --context")
        if len(jobs) != 1:
            raise EmovoxError(
                f"--context is the previous utterance of one input, but the inputs hold {len(jobs)}; "
                "put it in a manifest 'context' column, or give a 'dialogue' column"
            )
        jobs = [replace(jobs[0], context=context)]
    elif "context_text" in rec.fields and not any(j.context is not None for j in jobs):
        from emovox.cli.output import warn

        warn(
            f"{model_dir} reads the previous utterance of a dialogue, and none was given (--context, or a manifest's "
            "'context' or 'dialogue' column): every input is scored as a dialogue's first utterance"
        )
    if text is not None and not rec.needs_text:
        raise EmovoxError(
            f"{model_dir} listens to audio only (modality {rec.modality}); --text is for recognizers that read transcripts"
        )
    if inputs and text is not None:
        if len(jobs) != 1:
            raise EmovoxError(
                f"--text is the transcript of one input, but the inputs hold {len(jobs)} clips; "
                "put transcripts in a manifest 'text' column"
            )
        jobs = [replace(jobs[0], text=text)]
    if shard is not None or out is not None or ray:
        if out is None:
            raise EmovoxError("--shard and --ray write parquet parts: give --out part-i.parquet (then `emovox merge`)")
        from emovox.cli.parts import predict_parts
        from emovox.data.shards import Shard

        part = Shard.parse(shard)
        rows = predict_parts(
            rec, model_dir, jobs, shard=part, out=out, batch_size=batch_size, on_bad_audio=on_bad_audio, progress=not quiet,
            rows_of=run_predictions, job_type=Job, ray=ray, ray_address=ray_address, ray_actors=ray_actors, ray_cpus=ray_cpus,
            engine=rec.engine,
        )  # fmt: skip
        failed = [r for r in rows if r.get("error")]
        unreadable = f" ({len(failed)} unreadable)" if failed else ""
        typer.echo(f"shard {part}: {len(rows)} of {len(jobs)} inputs -> {out}{unreadable}")
        if failed:  # the same contract as the plain path: the part is written, the failures named, exit 3
            from emovox.cli.output import list_failures

            list_failures(rows, [str(r.get("input", "?")) for r in rows], [str(out)])
            raise typer.Exit(PARTIAL_FAILURE_EXIT)
        return
    progress = not quiet and len(jobs) > batch_size
    rows = list(run_predictions(rec, jobs, batch_size=batch_size, progress=progress, on_bad_audio=on_bad_audio))
    report_predictions(rows, jobs, rec, json_out=json_out, csv_out=csv_out, quiet=quiet, seconds=time.time() - t0)
    if any(r.get("error") for r in rows):
        raise typer.Exit(PARTIAL_FAILURE_EXIT)


def report_predictions(
    rows: list[dict], jobs: list[Job], rec, *, json_out: Path | None, csv_out: Path | None, quiet: bool, seconds: float
) -> None:
    """Write the outputs, print the table (unless ``quiet`` or stdout carries data), then the warnings and a summary."""
    from rich.console import Console

    from emovox.cli.output import (
        display_names,
        list_failures,
        predictions_table,
        shorten,
        stderr_console,
        warn,
    )

    written = []
    for out, fmt in ((json_out, "json"), (csv_out, "csv")):
        if out is None:
            continue
        text = write_rows(rows, rec.labels, out, fmt)
        if str(out) == "-":
            typer.echo(text, nl=False)
        else:
            written.append(str(out))
    to_stdout = any(o is not None and str(o) == "-" for o in (json_out, csv_out))
    names, folder = display_names([j.name for j in jobs], [j.path for j in jobs])
    if not quiet and not to_stdout:
        console = Console(highlight=False)
        if folder is not None and len(jobs) > 1:
            console.print("files in " + shorten(str(folder), console.width - 9, keep_end=True), highlight=False, markup=False)
        console.print(predictions_table(rows, names, rec.labels, console.width))
        console.file.flush()  # the table before the warnings, when both streams go to one terminal or log
    list_failures(rows, names, written)
    cropped = [n for r, n in zip(rows, names, strict=True) if "seconds_used" in r]
    if cropped:
        warn(
            f"{len(cropped)} input(s) longer than {rec.max_seconds:g} s were cropped to their first {rec.max_seconds:g} s, as in "
            f"training ({', '.join(cropped[:3])}{', ...' if len(cropped) > 3 else ''}); use `emovox timeline` for long recordings"
        )
    silent = [n for r, n in zip(rows, names, strict=True) if r.get("speech") is False]
    if silent:
        warn(
            f"no speech found in {len(silent)} input(s) ({', '.join(silent[:3])}{', ...' if len(silent) > 3 else ''}): "
            "silence or steady noise; their labels say nothing about an emotion"
        )
    if not quiet:
        done = sum(1 for r in rows if not r.get("error"))
        where = f"; wrote {' and '.join(written)}" if written else ""
        stderr_console().print(
            f"predicted {done} of {len(rows)} input(s) in {seconds:.1f} s (engine {rec.engine}){where}", markup=False
        )


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
    from emovox.inference.segments import SegmentConfig, plot_timeline, predict_timeline

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
    rec = load_recognizer(model_dir, asr, asr_language, engine)
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
