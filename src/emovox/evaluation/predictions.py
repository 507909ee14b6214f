"""Per-utterance predictions, the file every run directory keeps, and the run directories holding them.

``predictions.csv`` (and ``valid_predictions.csv``) has one row per utterance: ``id,fold,true,pred``
then one ``p_<label>`` column per label in label-set order. They are what everything after
training reads: the pooled metrics, confidence intervals, ``emovox compare`` and ``emovox vote``
(whose output is itself a run directory). One reader and one writer, so a file written by one
step is read back the same way by every other, and a broken file is an ``EmovoxError`` naming it
instead of a ``KeyError`` deep inside numpy.

A run directory here is what ``emovox cv`` (and ``emovox vote``) write: ``results.json``
(``label_set``, ``protocol``, ``speaker_independent``), the run's ``predictions.csv`` (every test
prediction), ``fold_k/predictions.csv`` (fold k's test part), ``fold_k/valid_predictions.csv``
(its validation part, the data on which combinations are chosen) and ``splits/fold_k/*.jsonl``
(the utterances with their speakers).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emovox.atomic import atomic_write_text
from emovox.errors import EmovoxError

PREDICTIONS = "predictions.csv"
VALID_PREDICTIONS = "valid_predictions.csv"
FIXED_COLUMNS = ("id", "fold", "true", "pred")


class PredictionsError(EmovoxError):
    """A predictions file or run directory is missing, malformed, or does not match another."""


@dataclass(frozen=True)
class PredictionTable:
    """The rows of one predictions file; ``true``/``pred`` are class indices into ``labels``."""

    path: Path
    labels: tuple[str, ...]
    ids: tuple[str, ...]
    folds: tuple[str, ...]
    true: np.ndarray
    pred: np.ndarray
    probs: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: Sequence[str]) -> PredictionTable:
        """These rows, in this order (every id must be present)."""
        index = {uid: i for i, uid in enumerate(self.ids)}
        rows = np.array([index[uid] for uid in ids], dtype=np.int64)
        return PredictionTable(
            self.path,
            self.labels,
            tuple(ids),
            tuple(self.folds[i] for i in rows),
            self.true[rows],
            self.pred[rows],
            self.probs[rows],
        )

    def aligned_with(self, ref: PredictionTable) -> Alignment:
        """These rows in ``ref``'s order, if both hold the same utterances, and where their truths disagree.

        Comparing or voting over runs needs the same test utterances with the same labels; each
        caller words the refusal for its own command.
        """
        only_ref = sorted(set(ref.ids) - set(self.ids))
        only_self = sorted(set(self.ids) - set(ref.ids))
        if only_ref or only_self:
            return Alignment(only_ref, only_self, None, np.zeros(0, dtype=np.int64))
        table = self.subset(ref.ids)
        return Alignment([], [], table, np.flatnonzero(table.true != ref.true))


@dataclass(frozen=True)
class Alignment:
    """``PredictionTable.aligned_with``: ids only on one side, the aligned table, indices whose truth differs."""

    only_ref: list[str]
    only_other: list[str]
    table: PredictionTable | None
    disagree: np.ndarray


def write_predictions(path: Path, rows: Iterable, labels: Sequence[str], preds: Sequence[int] | None = None) -> None:
    """One row per utterance: id, fold, true and predicted label, and every class probability.

    ``rows`` yields ``(id, fold name, true class index, probabilities)``. The prediction is the
    argmax of the probabilities unless ``preds`` gives it (a hard vote, whose vote shares can tie).
    """
    lines = ["id,fold,true,pred," + ",".join(f"p_{label}" for label in labels)]
    for n, (uid, fold, t, p) in enumerate(rows):
        pred = int(np.argmax(p)) if preds is None else int(preds[n])
        lines.append(",".join([_csv(str(uid)), _csv(str(fold)), labels[t], labels[pred]] + [f"{x:.6f}" for x in p]))
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def _csv(value: str) -> str:
    """RFC 4180 quoting, so ids with commas, quotes or line breaks read back intact."""
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def load_predictions(path: Path, labels: Sequence[str] | None = None) -> PredictionTable:
    """Read a predictions file; ``labels`` (default: the order of its ``p_`` columns) must match them."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"{path}: predictions file not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = list(reader.fieldnames or [])
        absent = [c for c in FIXED_COLUMNS if c not in columns]
        if absent:
            raise PredictionsError(
                f"{path}: column(s) {', '.join(absent)} missing; a predictions file has id,fold,true,pred,p_<label>..."
            )
        found = tuple(c[2:] for c in columns if c.startswith("p_"))
        wanted = tuple(labels) if labels is not None else found
        if found != wanted:
            raise PredictionsError(
                f"{path}: probability columns are for labels {list(found)}, expected {list(wanted)} in this order"
            )
        if not wanted:
            raise PredictionsError(f"{path}: no p_<label> probability columns")
        index = {label: i for i, label in enumerate(wanted)}
        ids, folds, true, pred, probs = [], [], [], [], []
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            for column in ("true", "pred"):
                if row[column] not in index:
                    raise PredictionsError(f"{where}: {column} label {row[column]!r} is not one of {list(wanted)}")
            try:
                probs.append([float(row[f"p_{label}"]) for label in wanted])
            except (TypeError, ValueError):
                raise PredictionsError(f"{where}: a probability is not a number") from None
            ids.append(row["id"])
            folds.append(row["fold"])
            true.append(index[row["true"]])
            pred.append(index[row["pred"]])
    seen: set[str] = set()
    for uid in ids:
        if uid in seen:
            raise PredictionsError(f"{path}: utterance {uid!r} is listed twice")
        seen.add(uid)
    p = np.asarray(probs, dtype=np.float64).reshape(len(ids), len(wanted))
    if not np.isfinite(p).all():
        raise PredictionsError(f"{path}: probabilities must be finite numbers")
    return PredictionTable(
        path, wanted, tuple(ids), tuple(folds), np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64), p
    )


def read_predictions(path: Path, labels: Sequence[str]) -> tuple[list[str], list[int], np.ndarray]:
    """Ids, true class indices and float32 probabilities of a predictions file (the runner's view)."""
    table = load_predictions(path, labels)
    return list(table.ids), table.true.tolist(), table.probs.astype(np.float32)


# --- run directories --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFold:
    """One fold of a run: its test predictions and, when the run saved them, its validation predictions."""

    index: int
    test: PredictionTable
    valid: PredictionTable | None

    @property
    def name(self) -> str:
        return self.test.folds[0] if self.test.folds else f"fold {self.index}"


@dataclass(frozen=True)
class Run:
    """What a run directory says about its predictions (see the module docstring)."""

    path: Path
    labels: tuple[str, ...]
    protocol: str
    speaker_independent: bool | None
    results: dict

    @property
    def name(self) -> str:
        return str(self.results.get("name") or self.path.name)

    def predictions(self) -> PredictionTable:
        """Every test prediction: the run's ``predictions.csv`` (or the folds' together)."""
        top = self.path / PREDICTIONS
        if top.is_file():
            return load_predictions(top, self.labels)
        folds = self.folds()
        if not folds:
            raise PredictionsError(f"{self.path}: no {PREDICTIONS} and no fold_k/{PREDICTIONS}; is this a finished run?")
        tables = [f.test for f in folds]
        return PredictionTable(
            self.path,
            self.labels,
            tuple(i for t in tables for i in t.ids),
            tuple(x for t in tables for x in t.folds),
            np.concatenate([t.true for t in tables]),
            np.concatenate([t.pred for t in tables]),
            np.concatenate([t.probs for t in tables]),
        )

    def folds(self, *, need_valid: bool = False) -> list[RunFold]:
        """The folds with test predictions, by index; ``need_valid`` refuses folds without validation ones."""
        found = []
        for d in self.path.glob("fold_*"):
            m = re.fullmatch(r"fold_(\d+)", d.name)
            if m and d.is_dir() and (d / PREDICTIONS).is_file():
                found.append((int(m.group(1)), d))
        out = []
        for index, d in sorted(found):
            valid_path = d / VALID_PREDICTIONS
            if need_valid and not valid_path.is_file():
                raise PredictionsError(
                    f"{valid_path}: missing; choosing members or weights needs every fold's validation predictions "
                    "(runs of emovox versions that write them), or --choose-on test (optimistic)"
                )
            valid = load_predictions(valid_path, self.labels) if valid_path.is_file() else None
            out.append(RunFold(index, load_predictions(d / PREDICTIONS, self.labels), valid))
        return out

    def speakers(self) -> dict[str, str]:
        """Utterance id -> speaker, from the audited splits (``splits/fold_k/*.jsonl``)."""
        files = sorted((self.path / "splits").glob("fold_*/*.jsonl"))
        if not files:
            raise PredictionsError(
                f"{self.path}: no splits/fold_k/*.jsonl, so the speaker of each utterance is unknown; "
                "speaker-level resampling needs a run directory written by emovox cv"
            )
        out: dict[str, str] = {}
        for f in files:
            for line in f.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    record = json.loads(line)
                    out[str(record["id"])] = str(record["speaker"])
        return out


def load_run(path: Path) -> Run:
    """Read a run directory's ``results.json`` (label set, protocol); predictions load on demand."""
    path = Path(path)
    if not path.is_dir():
        raise PredictionsError(f"{path}: not a directory; give a run directory written by emovox cv or emovox vote")
    record = path / "results.json"
    if not record.is_file():
        raise PredictionsError(f"{path}: no results.json, so this is not a finished run directory")
    try:
        results = json.loads(record.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PredictionsError(f"{record}: not valid JSON ({exc.msg})") from None
    labels = results.get("label_set") or results.get("labels")
    if not labels:
        raise PredictionsError(f"{record}: no label_set; cannot tell which class each probability column is")
    return Run(path, tuple(labels), str(results.get("protocol", "")), results.get("speaker_independent"), results)
