"""Reports: the numbers in every table, CSV that parses back, valid PNGs, the speaker-independence flag."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from rich.console import Console

from emovox.evaluation.metrics import CVResult, aggregate, compute_metrics
from emovox.evaluation.reporting import (
    confusion_markdown,
    folds_csv,
    per_class_csv,
    per_class_markdown,
    plot_confusion,
    plot_learning_curves,
    print_summary,
    report_markdown,
    write_json,
    write_report,
)

LABELS = ("angry", "happy", "neutral", "sad")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cv_result(seed: int = 0, speaker_independent: bool | None = True, protocol: str = "leave-one-session-out") -> CVResult:
    rng = np.random.default_rng(seed)
    folds = []
    for _ in range(5):
        y_true = [str(x) for x in rng.choice(LABELS, size=40)]
        y_pred = [t if rng.random() < 0.7 else str(rng.choice(LABELS)) for t in y_true]
        folds.append(compute_metrics(y_true, y_pred, LABELS))
    return aggregate(
        folds, fold_names=[f"Session{k}" for k in range(1, 6)], protocol=protocol, speaker_independent=speaker_independent
    )


def exact_result() -> CVResult:
    """Two folds with WA 0.5 and 1.0: mean 75.00, population std 25.00."""
    f1 = compute_metrics(["angry", "sad"], ["angry", "angry"], LABELS)
    f2 = compute_metrics(["happy", "sad"], ["happy", "sad"], LABELS)
    return aggregate(
        [f1, f2], fold_names=["speakers 01,02", "speakers 03,04"], protocol="speaker-groups:2", speaker_independent=True
    )


def test_not_speaker_independent_results_are_flagged_everywhere() -> None:
    flagged = cv_result(2, speaker_independent=False, protocol="holdout:0.2")
    report = report_markdown(flagged, "RAVDESS")
    assert "**NOT speaker-independent** (protocol `holdout:0.2`)" in report.splitlines()[2]
    assert "NOT speaker-independent" not in report_markdown(cv_result(1), "IEMOCAP")
    console = Console(record=True, width=160)
    print_summary(flagged, LABELS, console)
    assert "NOT speaker-independent" in console.export_text()


def test_folds_and_per_class_markdown() -> None:
    result = exact_result()
    text = report_markdown(result, "EmoDB")
    assert "# EmoDB" in text
    # F1: angry 2/3, sad 0 -> macro 1/3; weighted by true count (angry 1, sad 1) -> also 1/3
    assert "| 1 | speakers 01,02 | 2 | 50.00 | 50.00 | 33.33 | 33.33 |" in text
    assert "| 2 | speakers 03,04 | 2 | 100.00 | 100.00 | 100.00 | 100.00 |" in text
    assert "| mean ± std |  |  | 75.00 ± 25.00 | 75.00 ± 25.00 | 66.67 ± 33.33 |" in text
    # pooled: truth angry sad happy sad, pred angry angry happy sad -> WA 3/4
    assert f"| pooled | all folds | 4 | 75.00 | {100 * (1 + 1 + 0.5) / 3:.2f} |" in text
    per_class = per_class_markdown(result.pooled)
    assert "| angry | 50.00 | 100.00 | 66.67 | 1 |" in per_class
    assert "| neutral | 0.00 | 0.00 | 0.00 | 0 |" in per_class
    cm = confusion_markdown(result.pooled).splitlines()
    assert cm[0] == "| true \\ predicted | angry | happy | neutral | sad |"
    assert cm[5] == "| sad | 1 | 0 | 0 | 1 |"
    assert confusion_markdown(result.pooled, normalized=True).splitlines()[5] == "| sad | 50.0 | 0.0 | 0.0 | 50.0 |"


def test_csv_parses_back_to_the_same_numbers() -> None:
    result = cv_result(3)
    rows = list(csv.DictReader(io.StringIO(folds_csv(result))))
    assert [r["fold"] for r in rows] == ["1", "2", "3", "4", "5", "mean", "std", "pooled"]
    for row, m in zip(rows, result.folds, strict=False):  # then mean, std, pooled
        assert (float(row["wa"]), float(row["ua"]), float(row["macro_f1"])) == (m.wa, m.ua, m.macro_f1)
        assert float(row["weighted_f1"]) == m.weighted_f1
        assert int(row["n"]) == m.n
    assert float(rows[5]["ua"]) == result.mean.ua and float(rows[6]["ua"]) == result.std.ua
    assert float(rows[7]["macro_f1"]) == result.pooled.macro_f1
    assert float(rows[7]["weighted_f1"]) == result.pooled.weighted_f1

    classes = list(csv.DictReader(io.StringIO(per_class_csv(result.pooled))))
    assert [c["label"] for c in classes] == list(LABELS)
    for c in classes:
        s = result.pooled.per_class[c["label"]]
        assert (float(c["precision"]), float(c["recall"]), float(c["f1"]), int(c["support"])) == (
            s.precision, s.recall, s.f1, s.support,
        )



def test_write_json_round_trips(tmp_path) -> None:
    result = cv_result(5)
    path = write_json(tmp_path / "sub" / "results.json", result)
    data = json.loads(path.read_text())
    assert data["mean"]["ua"] == result.mean.ua
    assert CVResult.from_dict(data) == result
    write_json(path, {"plain": [1, 2]})
    assert json.loads(path.read_text()) == {"plain": [1, 2]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # no temp files left


def _png_pixels(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000
    return matplotlib.image.imread(path)


def test_confusion_png(tmp_path) -> None:
    result = cv_result(6)
    path = plot_confusion(result.pooled, tmp_path / "cm.png", "IEMOCAP pooled")
    pixels = _png_pixels(path)
    height, width = pixels.shape[:2]
    assert width > 1.5 * height  # two panels side by side
    assert pixels[..., :3].std() > 0.05  # a drawn picture, not a blank canvas


def test_learning_curves_png(tmp_path) -> None:
    history = [
        [{"epoch": e, "train_loss": 1.5 / e, "valid_loss": 1.6 / e + 0.1 * f, "valid_ua": 0.5 + 0.05 * e} for e in range(1, 6)]
        for f in range(3)
    ]
    history[2] = [{"epoch": e, "train_loss": 1.0 / e, "valid_ua": 0.4 + 0.1 * e} for e in range(1, 4)]  # no valid loss
    pixels = _png_pixels(plot_learning_curves(history, tmp_path / "curves.png", "Whisper + OPT"))
    assert pixels[..., :3].std() > 0.05
    with pytest.raises(ValueError, match="at least one epoch"):
        plot_learning_curves([[]], tmp_path / "empty.png")


def test_print_summary_shows_folds_mean_pooled_and_confusion() -> None:
    result = exact_result()
    console = Console(record=True, width=160)
    print_summary(result, LABELS, console, title="EmoDB")
    text = console.export_text()
    assert "speakers 01,02" in text and "speakers 03,04" in text
    assert "75.00 ± 25.00" in text
    assert "Weighted-F1" in text
    assert "pooled" in text
    assert "NOT speaker-independent" not in text
    sad_row = next(line for line in text.splitlines() if line.strip(" │|").startswith("sad") and "%" in line)
    assert "1 (50%)" in sad_row
    with pytest.raises(ValueError, match="differ"):
        print_summary(result, ["x"], console)


def test_write_report_writes_every_artefact(tmp_path) -> None:
    result = cv_result(7, speaker_independent=False, protocol="holdout:0.2")
    history = [
        [
            {"epoch": 1, "train_loss": 1.0, "valid_loss": 1.1, "valid_ua": 0.5},
            {"epoch": 2, "train_loss": 0.8, "valid_loss": 1.0, "valid_ua": 0.6},
        ]
    ]
    paths = write_report(result, tmp_path / "run", "RAVDESS", history=history)
    assert set(paths) == {"markdown", "folds_csv", "per_class_csv", "json", "confusion_png", "curves_png"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert "NOT speaker-independent" in paths["markdown"].read_text()
    assert CVResult.from_dict(json.loads(paths["json"].read_text())) == result
