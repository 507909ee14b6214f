"""``emovox predict``: clips, folders and manifests (``cli.inputs`` reads them) through one recognizer, in
length-grouped batches, to a table, CSV or JSON; a bad clip is reported in its row, never lost work."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import typer

from emovox.cli import app
from emovox.cli.engine import ASR_HELP, ASR_LANG_HELP, ENGINE_OPTION, open_recognizer
from emovox.cli.inputs import InputError, Job, expand_inputs, with_groups, with_history
from emovox.errors import EmovoxError

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
    rec = open_recognizer(model_dir, engine, asr=asr, asr_language=asr_language)
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
