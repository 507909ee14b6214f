"""`emovox cv` / `train` / `evaluate` end to end on tiny models and a synthetic speaker corpus."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tone_manifest
from typer.testing import CliRunner

from emovox.cli import app
from emovox.config import config_from_dict
from emovox.errors import EmovoxError


def tiny_config(manifest: Path, tmp: Path, **model) -> dict:
    return {
        "name": "tiny",
        "corpus": f"manifest:{manifest}",
        "protocol": "speaker-groups:4",
        "validation": "strict",
        "cache_dir": str(tmp / "cache"),
        "model": {"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen", **model},
        "train": {"lr": 0.01, "batch_size": 4, "max_epochs": 3, "patience": 3, "threads": 1},
    }


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_tone_manifest(tmp_path_factory.mktemp("corpus"))


def test_cv_frozen_writes_every_artifact_and_does_not_retrain_finished_folds(manifest, tmp_path):
    from emovox.training.runner import run_cv

    cfg = config_from_dict(tiny_config(manifest, tmp_path, layer_weights=True))
    out = tmp_path / "run"
    res = run_cv(cfg, out, progress=False)
    assert [len(f["confusion"]) for f in res["folds"]] == [2, 2, 2, 2]
    for key in ("folds", "mean", "std", "pooled"):
        for metric in ("wa", "ua", "macro_f1"):
            assert key in res and (metric in res[key] if key != "folds" else metric in res[key][0])
    assert res["protocol"] == "speaker-groups:4" and res["label_set"] == ["high", "low"]
    assert res["pooled"]["n"] == 24
    for name in ("results.json", "report.md", "folds.csv", "per_class.csv", "predictions.csv", "confusion.png", "learning_curves.png", "config.yaml"):
        assert (out / name).is_file(), name
    for k in range(1, 5):
        assert (out / f"fold_{k}" / "best_model.safetensors").is_file()
        assert (out / "splits" / f"fold_{k}" / "test.jsonl").is_file()
    # predictions: every utterance once, probabilities sum to one, pooled WA recomputable from the file
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24 and len({r["id"] for r in rows}) == 24
    probs = np.array([[float(r["p_high"]), float(r["p_low"])] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    assert np.mean([r["true"] == r["pred"] for r in rows]) == pytest.approx(res["pooled"]["wa"])
    # features came from the cache on the second run, and finished folds were not retrained
    stamps = {k: (out / f"fold_{k}" / "done.json").stat().st_mtime_ns for k in range(1, 5)}
    res2 = run_cv(cfg, out, progress=False)
    assert {k: (out / f"fold_{k}" / "done.json").stat().st_mtime_ns for k in range(1, 5)} == stamps
    assert res2["pooled"] == res["pooled"]
    # a different config in the same directory is refused instead of mixing results
    other = config_from_dict(tiny_config(manifest, tmp_path, layer_weights=False))
    with pytest.raises(EmovoxError, match="different config"):
        run_cv(other, out, progress=False)


def test_cv_finetune_end_to_end_same_seed_same_predictions(manifest, tmp_path):
    from emovox.training.runner import run_cv

    data = tiny_config(manifest, tmp_path, mode="finetune")
    data["train"].update(max_epochs=1, lr=1e-3)
    data["folds"] = [1, 2]
    a = run_cv(config_from_dict(data), tmp_path / "a", progress=False)
    b = run_cv(config_from_dict(data), tmp_path / "b", progress=False)
    assert len(a["folds"]) == 2
    assert (tmp_path / "a" / "predictions.csv").read_text() == (tmp_path / "b" / "predictions.csv").read_text()
    assert a["pooled"] == b["pooled"]


def test_cli_train_then_evaluate_round_trip(manifest, tmp_path):
    import yaml

    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(manifest, tmp_path, layer_weights=True)))
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(cfg_path), "--out", str(tmp_path / "rec"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "rec" / "emovox.json").is_file() and (tmp_path / "rec" / "weights.safetensors").is_file()
    assert not list((tmp_path / "rec").rglob("*.bin")) and not list((tmp_path / "rec").rglob("*.pt"))
    r = runner.invoke(app, ["evaluate", str(tmp_path / "rec"), f"manifest:{manifest}", "--json", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n"] == 24 and len(m["predictions"]) == 24
    # the metrics are those of the predictions it lists (scikit-learn's balanced accuracy is UA)
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    truth, scored = [r["true"] for r in m["predictions"]], [r["pred"] for r in m["predictions"]]
    assert m["ua"] == pytest.approx(balanced_accuracy_score(truth, scored)) and m["wa"] == pytest.approx(accuracy_score(truth, scored))
    # the recognizer predicts each file the same way evaluate scored it: same label, same probabilities
    from emovox.inference.recognizer import Recognizer

    rec = Recognizer.load(tmp_path / "rec")
    files = [str(manifest.parent / "wav" / f"{r['id']}.wav") for r in m["predictions"]]
    predicted = rec.predict(files)
    for row, pred in zip(m["predictions"], predicted, strict=True):
        assert pred.label == row["pred"], row["id"]
        assert pred.probabilities == pytest.approx(row["probabilities"], abs=2e-6), row["id"]  # JSON keeps 6 decimals
    one = rec.predict(files[0])  # one file alone, not in a batch: the same numbers
    assert one.probabilities == pytest.approx(m["predictions"][0]["probabilities"], abs=2e-6)


def test_cli_cv_prints_summary(manifest, tmp_path):
    import os

    import yaml

    cfg = tiny_config(manifest, tmp_path)
    del cfg["train"]["threads"]  # unset: the run takes every core it may use
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["cv", str(cfg_path), "--out", str(tmp_path / "run"), "--quiet", "--set", "train.max_epochs=1"])
    assert r.exit_code == 0, r.output
    assert "pooled" in r.output and "UA" in r.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["name"] == "tiny" and results["environment"]["threads"] == len(os.sched_getaffinity(0))
