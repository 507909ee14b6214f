"""Manifests: any corpus as a CSV/TSV/JSONL table, and the export that writes one.

A manifest is the escape hatch for corpora without a reader and the audit trail for those with
one: ``emovox corpus export`` writes every corpus in this form and reading it back gives the
same utterances.

Columns: ``path`` and ``label`` are required; ``id``, ``corpus_label``, ``text``, ``speaker``,
``session``, ``dialogue``, ``turn``, ``start``, ``end``, ``cut`` and ``corpus`` are optional;
other columns are ignored. Relative paths are relative to the manifest file. Without ``id`` the id
is the file name without extension (plus ``@start-end`` for cuts). Without ``speaker`` the speaker
is ``unknown`` (see ``UNKNOWN_SPEAKER``). Labels are free strings, except that emotion words are
read as emovox's canonical names in any case (``fear``, ``Anger``, ``joy`` -> ``fearful``,
``angry``, ``happy``; ``emovox.labels.canonical_label``) so that a manifest pools with the other
corpora; the cell as written stays in ``corpus_label`` (unless a ``corpus_label`` column gives it).
``corpus`` names each row's corpus (an exported pool of corpora keeps it); without it every row
belongs to the manifest's corpus (its file name, or ``?name=``). When ``start``/``end`` are given
the utterance is that segment of the file (``cut`` true) unless a ``cut`` column says false --
which is how an export keeps IEMOCAP's dialogue timestamps on whole-utterance files.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

from emovox.corpora.base import Corpus, Utterance
from emovox.corpora.spec import ON_MISSING_AUDIO, UNKNOWN_SPEAKER, Option, Reader, boolean, missing_audio, name_list
from emovox.corpora.tables import TABLE_SUFFIXES, read_table
from emovox.errors import CorpusError
from emovox.labels import canonical_label

#: Column order of an exported manifest.
MANIFEST_COLUMNS = (
    "id",
    "path",
    "label",
    "corpus_label",
    "text",
    "speaker",
    "session",
    "dialogue",
    "turn",
    "start",
    "end",
    "cut",
    "corpus",
)
REQUIRED_COLUMNS = ("path", "label")

OPTIONS = (
    Option("labels", None, "the label set in this order (comma-separated); rows with other labels are left out", name_list),
    ON_MISSING_AUDIO,
)


def read_manifest(
    path: Path, *, spec: str = "", labels: tuple[str, ...] | None = None, on_missing_audio: str = "error"
) -> Corpus:
    """Read a CSV/TSV/JSONL manifest (see the module docstring for its columns)."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    spec = spec or f"manifest:{path}"
    if labels is not None:
        from emovox.corpora.spec import canonical_names

        labels = canonical_names(spec, labels)
    columns, rows = read_table(path, "manifest")
    absent = [c for c in REQUIRED_COLUMNS if c not in columns]
    if absent:
        raise CorpusError(f"manifest {path}: required column(s) {', '.join(absent)} missing; found columns {columns}")
    utterances: list[Utterance] = []
    missing: list[Path] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        u = _utterance(row, path, line)
        if labels is not None and u.label not in labels:
            continue
        if u.id in seen:
            raise CorpusError(
                f"manifest {path}, line {line}: id {u.id!r} was already used on line {seen[u.id]}; "
                "ids must be unique (add or fix the id column)"
            )
        seen[u.id] = line
        if not u.audio.is_file():  # type: ignore[union-attr]
            missing.append(u.audio)  # type: ignore[arg-type]
            continue
        utterances.append(u)
    dropped = missing_audio(spec, missing, on_missing_audio)
    if not utterances:
        raise CorpusError(f"{spec}: the manifest holds no utterances" + (f" with labels {list(labels)}" if labels else ""))
    label_set = labels if labels is not None else tuple(sorted({u.label for u in utterances}))
    return Corpus(path.stem, utterances, label_set, spec, dropped)


def write_manifest(corpus: Corpus, out: Path, *, relative: bool = False) -> Path:
    """Write ``corpus`` as a manifest (CSV, TSV or JSONL by the suffix of ``out``).

    Audio paths are absolute unless ``relative``, which writes them relative to ``out``'s folder
    so that the manifest and the audio can be moved together.
    """
    out = Path(os.path.abspath(Path(out).expanduser()))
    suffix = out.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise CorpusError(f"{out}: unknown manifest type {suffix!r}; name the file *.csv, *.tsv or *.jsonl")
    records = [_record(u, out.parent, relative) for u in corpus.utterances]
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".jsonl", ".ndjson"):
        with out.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    else:
        with out.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            for r in records:
                writer.writerow({k: _cell(v) for k, v in r.items()})
    return out


# --- internals ---------------------------------------------------------------------------


def _record(u: Utterance, base: Path, relative: bool) -> dict[str, Any]:
    if u.audio is None:
        raise CorpusError(
            f"utterance {u.id!r} has no audio file; a manifest needs a path for every utterance, so a text-only "
            "corpus (e.g. meld:) cannot be exported as one"
        )
    audio = os.path.abspath(u.audio)
    return {
        "id": u.id,
        "path": os.path.relpath(audio, base) if relative else audio,
        "label": u.label,
        "corpus_label": u.corpus_label,
        "text": u.text,
        "speaker": u.speaker,
        "session": u.session,
        "dialogue": u.dialogue,
        "turn": u.turn,
        "start": u.start,
        "end": u.end,
        "cut": u.cut,
        "corpus": u.corpus,
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def _utterance(row: dict[str, Any], manifest: Path, line: int) -> Utterance:
    where = f"manifest {manifest}, line {line}"
    raw_path, label = row.get("path"), row.get("label")
    if raw_path is None:
        raise CorpusError(f"{where}: the path cell is empty; every row needs an audio path")
    if label is None:
        raise CorpusError(f"{where}: the label cell is empty; every row needs a label")
    audio = Path(os.path.abspath(manifest.parent / Path(str(raw_path)).expanduser()))
    start = _number(row.get("start"), float, "start", where)
    end = _number(row.get("end"), float, "end", where)
    if start is not None and start < 0:
        raise CorpusError(f"{where}: start {start} is negative")
    if start is not None and end is not None and end <= start:
        raise CorpusError(f"{where}: end {end} is not after start {start}")
    cut_raw = row.get("cut")
    if cut_raw is None:
        cut = start is not None or end is not None
    elif isinstance(cut_raw, bool):
        cut = cut_raw
    else:
        try:
            cut = boolean(str(cut_raw))
        except ValueError:
            raise CorpusError(f"{where}: cut {cut_raw!r} is not true or false") from None
    utt_id = row.get("id")
    if utt_id is None:
        utt_id = audio.stem
        if cut:
            utt_id += f"@{start or 0:g}-" + (f"{end:g}" if end is not None else "end")
    label = str(label)
    canonical = canonical_label(label)
    return Utterance(
        id=str(utt_id),
        speaker=_text(row.get("speaker")) or UNKNOWN_SPEAKER,
        label=canonical,
        corpus_label=_text(row.get("corpus_label")) or label,
        audio=audio,
        session=_text(row.get("session")),
        dialogue=_text(row.get("dialogue")),
        turn=_number(row.get("turn"), int, "turn", where),
        start=start,
        end=end,
        text=_text(row.get("text")),
        cut=cut,
        corpus=_text(row.get("corpus")),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _number(value: Any, kind: type, column: str, where: str) -> Any:
    if value is None:
        return None
    try:
        if kind is int:
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError
            return int(as_float)
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
        return number
    except (TypeError, ValueError):
        expected = "a whole number" if kind is int else "a number of seconds"
        raise CorpusError(f"{where}: {column} {value!r} is not {expected}") from None


READER = Reader("manifest", "CSV/TSV/JSONL table with path,label and optional columns", read_manifest, OPTIONS)
