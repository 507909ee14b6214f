"""Spanish MEACorpus 2023 / EmoSPeech 2024: a table of id, transcript and label plus audio clips.

Releases differ in file and column names, so every name is an option with the common default.
The path is the release folder (with ``csv=`` naming the table when there is more than one) or
the table itself. Audio is ``<audio_dir>/<id><ext>`` or, with ``path_col``, the file a column
names (relative to ``audio_dir``).

Speakers: the release does not say who speaks (clips are cut from YouTube videos), so every
utterance gets the speaker ``unknown`` unless ``speaker_col`` names a column. A speaker-
independent split therefore sees one speaker group and refuses, rather than pretending that
utterances of the same YouTuber in train and test are speaker-independent. Use a stratified
split or the official train/test tables instead.
"""

from __future__ import annotations

from pathlib import Path

from emovox.corpora.base import Corpus, Utterance
from emovox.corpora.spec import (
    ON_MISSING_AUDIO,
    UNKNOWN_SPEAKER,
    Option,
    Reader,
    missing_audio,
    name_list,
    select_labels,
    text,
)
from emovox.corpora.tables import TABLE_SUFFIXES, read_table
from emovox.errors import CorpusError
from emovox.labels import MEACORPUS_CODES, MEACORPUS_LABELS

AUDIO_DIR_CANDIDATES = ("audio", "audios", "wav", "wavs", "segments")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")

OPTIONS = (
    Option("csv", None, "the table (CSV/TSV/JSONL) relative to PATH; default: the only table in PATH", text),
    Option(
        "audio_dir",
        None,
        f"audio folder relative to the table's folder; default: the first of {', '.join(AUDIO_DIR_CANDIDATES)} that exists",
        text,
    ),
    Option("id_col", "id", "column holding the clip id", text),
    Option("text_col", "transcription", "column holding the transcript", text),
    Option("label_col", "label", "column holding the label (neutral, disgust, anger, joy, sadness, fear)", text),
    Option("path_col", None, "column holding the audio file name (instead of <id><ext>)", text),
    Option("speaker_col", None, "column holding a speaker id, if the release has one", text),
    Option("audio_ext", "auto", "extension of <id><ext>, e.g. .wav; auto tries .wav .flac .mp3 .ogg", text),
    Option("labels", None, "keep only these labels, in this order (comma-separated)", name_list),
    ON_MISSING_AUDIO,
)


def read_meacorpus(
    root: Path,
    *,
    spec: str = "",
    csv: str | None = None,
    audio_dir: str | None = None,
    id_col: str = "id",
    text_col: str = "transcription",
    label_col: str = "label",
    path_col: str | None = None,
    speaker_col: str | None = None,
    audio_ext: str = "auto",
    labels: tuple[str, ...] | None = None,
    on_missing_audio: str = "error",
) -> Corpus:
    """Read a MEACorpus/EmoSPeech release (see the module docstring for the options)."""
    root = Path(root).expanduser()
    # A table given by name may be a link: its audio is looked up beside the link, not its target.
    root = root.parent.resolve() / root.name if root.is_file() else root.resolve()
    spec = spec or f"meacorpus:{root}"
    table = _find_table(root, csv, spec)
    base = table.parent
    audio_root = _audio_root(base, audio_dir, spec)
    label_set = select_labels(spec, MEACORPUS_LABELS, labels)

    columns, rows = read_table(table, "MEACorpus table")
    needed = [c for c in (id_col, text_col, label_col, path_col, speaker_col) if c is not None]
    absent = [c for c in needed if c not in columns]
    if absent:
        raise CorpusError(
            f"{spec}: column(s) {', '.join(absent)} not in {table} (columns: {', '.join(columns)}); "
            "name the right ones with ?id_col=...&text_col=...&label_col=..."
        )
    utterances, missing = [], []
    for line, row in rows:
        where = f"{table}, line {line}"
        utt_id, raw_label = row.get(id_col), row.get(label_col)
        if utt_id is None or raw_label is None:
            raise CorpusError(f"{where}: empty {id_col if utt_id is None else label_col} cell")
        code = str(raw_label).strip().lower()
        if code not in MEACORPUS_CODES:
            raise CorpusError(f"{where}: unknown label {raw_label!r}; MEACorpus labels are {', '.join(MEACORPUS_CODES)}")
        label = MEACORPUS_CODES[code]
        if label not in label_set:
            continue
        audio = _audio_path(audio_root, str(utt_id), row.get(path_col) if path_col else None, audio_ext)
        if not audio.is_file():
            missing.append(audio)
            continue
        speaker = row.get(speaker_col) if speaker_col else None
        transcript = row.get(text_col)
        utterances.append(
            Utterance(
                id=str(utt_id),
                speaker=str(speaker) if speaker is not None else UNKNOWN_SPEAKER,
                label=label,
                corpus_label=code,
                audio=audio,
                text=str(transcript) if transcript is not None else None,
            )
        )
    dropped = missing_audio(spec, missing, on_missing_audio)
    if not utterances:
        raise CorpusError(f"{spec}: {table} holds no utterances with labels {list(label_set)}")
    return Corpus("meacorpus", utterances, label_set, spec, dropped)


def _find_table(root: Path, csv: str | None, spec: str) -> Path:
    if root.is_file():
        if csv is not None:
            raise CorpusError(f"{spec}: csv= is for a release folder; the path already names the table {root}")
        return root
    if not root.is_dir():
        raise CorpusError(f"{spec}: {root} does not exist; point at the MEACorpus release folder or its CSV")
    if csv is not None:
        table = root / csv
        if not table.is_file():
            raise CorpusError(f"{spec}: table {table} not found (option csv={csv})")
        return table
    tables = sorted(
        p for p in root.iterdir() if p.suffix.lower() in TABLE_SUFFIXES and p.is_file() and not p.name.startswith("._")
    )
    if len(tables) != 1:
        found = ", ".join(p.name for p in tables) or "none"
        raise CorpusError(
            f"{spec}: expected exactly one table (CSV/TSV/JSONL) in {root}, found {found}; choose one with ?csv=NAME"
        )
    return tables[0]


def _audio_root(base: Path, audio_dir: str | None, spec: str) -> Path:
    if audio_dir is not None:
        folder = base / audio_dir
        if not folder.is_dir():
            raise CorpusError(f"{spec}: audio folder {folder} not found (option audio_dir={audio_dir})")
        return folder
    for name in AUDIO_DIR_CANDIDATES:
        if (base / name).is_dir():
            return base / name
    return base


def _audio_path(audio_root: Path, utt_id: str, file_cell: object, audio_ext: str) -> Path:
    if file_cell is not None:
        return audio_root / str(file_cell)
    if Path(utt_id).suffix.lower() in AUDIO_EXTENSIONS:
        return audio_root / utt_id
    if audio_ext != "auto":
        return audio_root / f"{utt_id}{audio_ext if audio_ext.startswith('.') else '.' + audio_ext}"
    for ext in AUDIO_EXTENSIONS:
        candidate = audio_root / f"{utt_id}{ext}"
        if candidate.is_file():
            return candidate
    return audio_root / f"{utt_id}{AUDIO_EXTENSIONS[0]}"


READER = Reader("meacorpus", "Spanish MEACorpus 2023 / EmoSPeech 2024 (table + audio folder)", read_meacorpus, OPTIONS)
