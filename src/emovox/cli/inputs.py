"""What ``emovox predict`` reads: audio files, folders of them, and manifests (CSV/TSV/JSONL rows with a path and
optionally a cut, a transcript, a speaker or a corpus), each turned into ``Job`` records; ``InputError`` names the
input that is missing, empty or not audio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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
