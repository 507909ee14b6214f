"""Figures by corpus: each test corpus's scores, the train -> test matrix, and calibration.

A pooled figure over several corpora hides what matters most about them: how the model does on
each, and on a corpus it never heard. So a run over several corpora reports, from the same test
predictions as its headline:

- **per corpus** (``per_corpus``): WA, UA, macro-F1, weighted-F1, n, the classes the corpus's test
  utterances have, the ones it lacks (UA is the mean recall over the classes *present*, as
  ``emovox.evaluation.metrics`` defines it, so an absent class neither helps nor hurts; the report says which
  are absent), the UA of a constant prediction (``1 / classes present``) and the expected
  calibration error (``emovox.evaluation.metrics.expected_calibration_error``): a recognizer on a corpus it
  never heard should not claim in-corpus confidence.
- **the train -> test matrix** (``corpus_matrix``): one cell per (training corpora, test corpus)
  pair of the run's folds, pooled over the folds that share it: leave-one-corpus-out gives
  ``ravdess+ased -> emodb`` and so on, ``cross-corpus:emodb`` gives ``emodb -> ravdess`` and
  ``emodb -> ased``, ``in-corpus:K`` the diagonal ``emodb -> emodb``. Each cell carries the labels
  the training and test sides share and the chance level. ``emovox corpus matrix`` puts the cells of
  several runs into one matrix.

The standard baseline's predictions on the same folds get the same breakdown, side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from emovox.corpora.base import Corpus
from emovox.evaluation.metrics import HEADLINE, compute_metrics, expected_calibration_error

if TYPE_CHECKING:
    from emovox.training.folds import FoldOutcome

#: Columns of ``corpus_matrix.csv`` (one row per cell).
MATRIX_COLUMNS = (
    "train", "test", "n", "ua", "wa", "macro_f1", "ece", "shared_labels", "chance_ua", "classes_present",
    "absent_classes", "baseline_ua", "folds",
)  # fmt: skip


def scores(ids: Sequence[str], y_true: Sequence[int], probs: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """The figures of one group of test predictions (a corpus, a matrix cell)."""
    probs = np.asarray(probs, dtype=float)
    m = compute_metrics(list(y_true), probs.argmax(1).tolist(), labels)
    present = [labels[i] for i in sorted(set(int(t) for t in y_true))]
    return {
        "n": len(ids),
        **{k: getattr(m, k) for k in HEADLINE},
        "ece": expected_calibration_error(probs, np.asarray(y_true)),
        "classes_present": present,
        "absent_classes": [label for label in labels if label not in present],
        "chance_ua": 1.0 / len(present),
    }


def _rows(outcomes: Sequence[FoldOutcome]):
    for o in outcomes:
        for uid, t, p in zip(o.ids, o.y_true, o.probs, strict=True):
            yield o, uid, int(t), p


def per_corpus(outcomes: Sequence[FoldOutcome], corpus: Corpus) -> dict[str, dict[str, Any]]:
    """Scores of each corpus's test predictions (pooled over folds), in the corpus's order."""
    groups: dict[str, tuple[list, list, list]] = {name: ([], [], []) for name in corpus.corpora or [corpus.name]}
    for _, uid, t, p in _rows(outcomes):
        name = corpus[uid].corpus or corpus.name
        ids, ys, ps = groups.setdefault(name, ([], [], []))
        ids.append(uid)
        ys.append(t)
        ps.append(p)
    return {name: scores(ids, ys, np.stack(ps), corpus.labels) for name, (ids, ys, ps) in groups.items() if ids}


def training_corpora(outcome: FoldOutcome, corpus: Corpus) -> list[str]:
    """The corpora a fold's model learned from: its training part's, and its validation part's when that
    is held out (strict validation chooses on it; paper validation is the test fold itself)."""
    parts = ("train", "valid") if outcome.fold.validation == "strict" else ("train",)
    present = {name for part in parts for name in outcome.fold.corpora(corpus, part)}
    return [name for name in corpus.corpora if name in present]


def matrix_cells(outcomes: Sequence[FoldOutcome], corpus: Corpus, baseline: Sequence[FoldOutcome] | None = None) -> list[dict]:
    """One cell per (training corpora, test corpus) pair, pooled over the folds that share it."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for o, uid, t, p in _rows(outcomes):
        key = ("+".join(training_corpora(o, corpus)), corpus[uid].corpus or corpus.name)
        cell = cells.setdefault(key, {"ids": [], "y": [], "p": [], "folds": [], "trained": set()})
        cell["ids"].append(uid)
        cell["y"].append(t)
        cell["p"].append(p)
        if o.fold.index not in cell["folds"]:
            cell["folds"].append(o.fold.index)
            parts = ("train", "valid") if o.fold.validation == "strict" else ("train",)
            cell["trained"] |= {corpus[i].label for part in parts for i in o.fold.parts()[part]}
    base = {}
    if baseline:
        for o, uid, t, p in _rows(baseline):
            key = ("+".join(training_corpora(o, corpus)), corpus[uid].corpus or corpus.name)
            b = base.setdefault(key, ([], [], []))
            b[0].append(uid)
            b[1].append(t)
            b[2].append(p)
    out = []
    for (train, test), cell in cells.items():
        s = scores(cell["ids"], cell["y"], np.stack(cell["p"]), corpus.labels)
        shared = [label for label in s["classes_present"] if label in cell["trained"]]
        b = base.get((train, test))
        out.append(
            {
                "train": train, "test": test, **s, "shared_labels": len(shared),
                "baseline_ua": scores(b[0], b[1], np.stack(b[2]), corpus.labels)["ua"] if b else None,
                "folds": sorted(cell["folds"]),
            }
        )  # fmt: skip
    return out


def folds_with_absent_classes(outcomes: Sequence[FoldOutcome], labels: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(fold name, classes its test part lacks) of every fold whose test part lacks a class."""
    found = []
    for o in outcomes:
        present = set(int(t) for t in o.y_true)
        absent = [label for i, label in enumerate(labels) if i not in present]
        if absent:
            found.append((o.fold.name, absent))
    return found


# --- report ---------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def per_corpus_markdown(payload: dict) -> str:
    """The report's "Per corpus" section (the recipe, and the baseline where it ran)."""
    per = payload.get("per_corpus") or {}
    if len(per) < 2 and not any(r["absent_classes"] for r in per.values()):
        return ""
    base = (payload.get("baseline") or {}).get("per_corpus") or {}
    labels = payload.get("label_set") or []
    lines = [
        "## Per corpus",
        "",
        "Each corpus's test predictions, pooled over the folds that test it. UA is the mean recall over the classes "
        "the corpus's test utterances have (an absent class is left out, not scored 0); chance is the UA of a "
        "constant prediction (1 / classes present); ECE is the expected calibration error (15 equal-width "
        "confidence bins).",
        "",
        "| corpus | n | classes | UA (%) | WA (%) | macro-F1 (%) | chance UA (%) | ECE | baseline UA (%) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for name, r in per.items():
        b = base.get(name)
        lines.append(
            f"| {name} | {r['n']} | {len(r['classes_present'])}/{len(labels)} | {_pct(r['ua'])} | {_pct(r['wa'])} | "
            f"{_pct(r['macro_f1'])} | {_pct(r['chance_ua'])} | {r['ece']:.3f} | {_pct(b['ua']) if b else '-'} |"
        )
        if r["absent_classes"]:
            notes.append(
                f"- **{name}** has no test utterance of {', '.join(r['absent_classes'])}: its UA is over the "
                f"{len(r['classes_present'])} classes present ({', '.join(r['classes_present'])})."
            )
    for name, absent in payload.get("folds_absent_classes") or []:
        notes.append(f"- fold **{name}**: no test utterance of {', '.join(absent)}; its UA is over the classes present.")
    if notes:
        lines += ["", "Absent classes:", "", *notes]
    return "\n".join(lines) + "\n"


def matrix_markdown(cells: Sequence[dict]) -> str:
    """The report's "Train -> test" section: one row per cell (the heatmap is corpus_matrix.png)."""
    if not cells:
        return ""
    lines = [
        "## Train -> test",
        "",
        "UA of each (training corpora -> test corpus) pair of this run's folds, with the classes both sides have "
        "(shared) and the chance level; `corpus_matrix.csv` has every column, `corpus_matrix.png` the heatmap. "
        "`emovox corpus matrix RUN...` joins the cells of several runs (e.g. each corpus alone -> the others, "
        "and in-corpus:K for the diagonal).",
        "",
        "| train | test | n | shared labels | chance UA (%) | UA (%) | baseline UA (%) | ECE |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cells:
        lines.append(
            f"| {c['train']} | {c['test']} | {c['n']} | {c['shared_labels']} | {_pct(c['chance_ua'])} | {_pct(c['ua'])} | "
            f"{_pct(c.get('baseline_ua'))} | {c['ece']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def matrix_csv_rows(cells: Sequence[dict]) -> list[list[Any]]:
    return [
        [c.get(k) if k not in ("classes_present", "absent_classes", "folds") else " ".join(map(str, c.get(k) or []))
         for k in MATRIX_COLUMNS]
        for c in cells
    ]  # fmt: skip
