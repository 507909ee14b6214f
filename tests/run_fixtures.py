"""Hand-made run directories (the files ``emovox cv`` writes), for tests of what reads finished runs.

``make_run(path, labels, folds)`` writes ``results.json``, ``predictions.csv``,
``fold_k/predictions.csv``, ``fold_k/valid_predictions.csv`` and ``splits/fold_k/*.jsonl`` from
plain rows, so a test states exactly which utterance each run predicts how.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emovox.evaluation.predictions import write_predictions

#: A row: (utterance id, speaker, true label, probabilities in label order).
Row = tuple[str, str, str, Sequence[float]]


def onehot(labels: Sequence[str], label: str, confidence: float = 0.8) -> list[float]:
    """Probabilities that put ``confidence`` on ``label`` and spread the rest evenly."""
    rest = (1.0 - confidence) / (len(labels) - 1)
    return [confidence if x == label else rest for x in labels]


def make_run(
    path: Path,
    labels: Sequence[str],
    folds: dict[int, dict[str, list[Row]]],
    *,
    protocol: str = "leave-one-speaker-out",
    speaker_independent: bool | None = True,
    preds: dict[tuple[int, str], Sequence[str]] | None = None,
) -> Path:
    """Write a run directory; ``folds[k]`` has ``"test"`` and optionally ``"valid"`` rows.

    ``preds[(k, part)]`` overrides the ``pred`` column (default: argmax of the probabilities).
    """
    path = Path(path)
    labels = list(labels)
    index = {label: i for i, label in enumerate(labels)}
    all_rows = []
    for k, parts in sorted(folds.items()):
        name = f"fold {k}"
        fold_dir = path / f"fold_{k}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        for part, file in (("test", "predictions.csv"), ("valid", "valid_predictions.csv")):
            rows = parts.get(part)
            if rows is None:
                continue
            custom = (preds or {}).get((k, part))
            write_predictions(
                fold_dir / file,
                [(uid, name, index[t], np.asarray(p, dtype=float)) for uid, _, t, p in rows],
                labels,
                preds=[index[x] for x in custom] if custom is not None else None,
            )
            split_dir = path / "splits" / f"fold_{k}"
            split_dir.mkdir(parents=True, exist_ok=True)
            (split_dir / f"{part}.jsonl").write_text(
                "".join(json.dumps({"id": uid, "speaker": spk, "label": t}) + "\n" for uid, spk, t, _ in rows)
            )
        all_rows += [(uid, name, index[t], np.asarray(p, dtype=float)) for uid, _, t, p in parts["test"]]
    write_predictions(path / "predictions.csv", all_rows, labels)
    results = {"name": path.name, "label_set": labels, "protocol": protocol, "speaker_independent": speaker_independent}
    (path / "results.json").write_text(json.dumps(results))
    return path
