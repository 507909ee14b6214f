"""``emovox cv`` over several corpora, end to end on the EmoDB pseudo-corpora with a tiny frozen backbone.

What is checked is what the runs wrote: the per-corpus breakdown (absent classes noted, UA over the
classes present), the train -> test matrix and its heatmap, ECE per test corpus against a direct
numpy computation, the baseline on the same folds, the text-only control (with transcripts for the
corpus that has none from a stand-in ASR, cached), ``emovox corpus matrix`` and the model card of a
recognizer trained on all the corpora.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import balanced_accuracy_score
from typer.testing import CliRunner

from emovox.cli import app
from emovox.errors import ConfigError, EmovoxError
from emovox.evaluation.predictions import read_predictions

runner = CliRunner()
LABELS = ["angry", "fearful", "happy", "neutral", "sad"]


def _config(path: Path, specs: dict[str, str], protocol: str, cache: Path, **extra) -> Path:
    cfg = {
        "name": path.stem,
        "corpus": list(specs.values()),
        "labels": {"keep": "all", "merge": {"calm": "neutral"}},
        "protocol": protocol,
        "cache_dir": str(cache),
        "model": {"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen", "head": "logistic", "C": [0.1, 1.0]},
        "train": {"threads": 1},
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cv(config: Path, out: Path, *extra: str) -> dict:
    r = runner.invoke(app, ["cv", str(config), "--out", str(out), "--quiet", *extra], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return json.loads((out / "results.json").read_text())


class FakeAsr:
    """Stands in for Whisper (``emovox.inference.asr.get_transcriber``): a transcript from the clip's length, and a count."""

    calls = 0

    def transcribe(self, clips, *, max_new_tokens=None):
        assert max_new_tokens == 96  # Whisper looping on a language it hardly knows must not hold up a batch
        FakeAsr.calls += len(clips)
        return [f"a clip of {len(c) // 1600} tenths" for c in clips]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("multi-cv")


@pytest.fixture(scope="module")
def loco(pseudo_corpora, work) -> Path:
    out = work / "runs" / "loco"
    _cv(_config(work / "loco.yaml", pseudo_corpora, "leave-one-corpus-out", work / "cache"), out)
    return out


@pytest.fixture(scope="module")
def in_corpus(pseudo_corpora, work) -> Path:
    cfg = _config(work / "in.yaml", pseudo_corpora, "in-corpus:2", work / "cache", validation="paper",
                  baseline=False, control={"text": True, "asr": "stand-in-whisper"})  # fmt: skip
    out = work / "runs" / "in-corpus"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("emovox.inference.asr.get_transcriber", lambda config: FakeAsr())
        FakeAsr.calls = 0
        _cv(cfg, out)
        first = FakeAsr.calls
        _cv(cfg, work / "runs" / "in-corpus-again")  # another run of the same clips: transcripts come from the cache
        assert (first, FakeAsr.calls) == (24, 24)  # gamma's 24 clips, transcribed once
    return out


def _rows(run: Path, corpus: str | None = None):
    ids, y, probs = read_predictions(run / "predictions.csv", LABELS)
    keep = [i for i, uid in enumerate(ids) if corpus is None or uid.startswith(f"{corpus}/")]
    return [ids[i] for i in keep], np.array([y[i] for i in keep]), probs[keep]


def _ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE computed directly: bin by confidence (15 equal widths, right-closed), |accuracy - confidence| by bin weight."""
    conf, right = probs.max(1), (probs.argmax(1) == y).astype(float)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    return float(sum(abs(right[which == b].mean() - conf[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))  # fmt: skip


def test_leave_one_corpus_out_reports_every_corpus(loco: Path) -> None:
    r = json.loads((loco / "results.json").read_text())
    assert r["label_set"] == LABELS and r["fold_names"] == ["alpha", "beta", "gamma"]
    per = r["per_corpus"]
    assert list(per) == ["alpha", "beta", "gamma"] and [per[c]["n"] for c in per] == [20, 36, 24]
    assert per["gamma"]["absent_classes"] == ["happy"] and per["gamma"]["chance_ua"] == 0.25
    assert per["alpha"]["absent_classes"] == [] and per["alpha"]["chance_ua"] == 0.2
    for name in per:
        _, y, probs = _rows(loco, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert per[name]["ua"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)), abs=1e-12)
        assert per[name]["ece"] == pytest.approx(_ece(probs, y), abs=1e-6)  # predictions.csv rounds probabilities
    # the baseline ran on the same folds and is broken down the same way
    assert list(r["baseline"]["per_corpus"]) == ["alpha", "beta", "gamma"]
    assert [f["ua"] for f in r["baseline"]["folds"]] == pytest.approx(
        [r["baseline"]["per_corpus"][c]["ua"] for c in ("alpha", "beta", "gamma")])
    # run records name every corpus
    assert list(r["environment"]["corpora"]) == ["alpha", "beta", "gamma"]
    assert [c["name"] for c in json.loads((loco / "run.json").read_text())["corpora"]] == ["alpha", "beta", "gamma"]
    assert [c["name"] for c in r["corpora"]] == ["alpha", "beta", "gamma"]
    assert r["label_policy"] == {"keep": "all", "merge": {"calm": "neutral"}}
    report = (loco / "report.md").read_text()
    assert "## Per corpus" in report and "**gamma** has no test utterance of happy" in report
    assert "| gamma | 24 | 4/5 |" in report


def test_leave_one_corpus_out_writes_the_train_test_matrix(loco: Path) -> None:
    r = json.loads((loco / "results.json").read_text())
    with (loco / "corpus_matrix.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(x["train"], x["test"]) for x in rows] == [("beta+gamma", "alpha"), ("alpha+gamma", "beta"), ("alpha+beta", "gamma")]
    gamma = rows[2]
    assert (gamma["shared_labels"], float(gamma["chance_ua"]), gamma["absent_classes"]) == ("4", 0.25, "happy")
    assert rows[0]["shared_labels"] == "5"  # alpha has every class; beta+gamma trained on all five
    for row, cell in zip(rows, r["corpus_matrix"], strict=True):
        assert float(row["ua"]) == pytest.approx(r["per_corpus"][row["test"]]["ua"])
        assert float(row["baseline_ua"]) == pytest.approx(r["baseline"]["per_corpus"][row["test"]]["ua"])
        assert cell["folds"] == [["alpha", "beta", "gamma"].index(row["test"]) + 1]
    png = (loco / "corpus_matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "## Train -> test" in (loco / "report.md").read_text()


def test_in_corpus_run_with_the_text_control(in_corpus: Path) -> None:
    r = json.loads((in_corpus / "results.json").read_text())
    assert r["fold_names"][:2] == ["alpha speaker 01", "alpha speaker 02"]
    assert [(c["train"], c["test"]) for c in r["corpus_matrix"]] == [("alpha", "alpha"), ("beta", "beta"), ("gamma", "gamma")]
    text = r["control"]["text"]
    # alpha's transcripts name the emotion: the words alone give every label away; beta's two RAVDESS sentences are
    # read in every emotion, and gamma's stand-in ASR text says only how long a clip is
    assert text["per_corpus"]["alpha"]["ua"] == 1.0
    assert text["per_corpus"]["beta"]["ua"] < 0.6
    assert "given" in text["transcripts"] and "24 asr" in text["transcripts"]
    with (in_corpus / "control_text" / "transcripts.csv").open() as f:
        sources = {row["id"].split("/")[0]: row["source"] for row in csv.DictReader(f)}
    assert sources == {"alpha": "given", "beta": "given", "gamma": "asr"}
    assert (in_corpus / "control_text" / "fold_1" / "predictions.csv").is_file()
    report = (in_corpus / "report.md").read_text()
    assert "## Text-only control" in report and "| alpha | 20 |" in report


def test_a_finished_run_takes_a_new_control_without_retraining(in_corpus: Path, work: Path) -> None:
    """Other transcripts (ASR for every clip): the control is refitted on them, the folds are read back."""
    before = {p: p.stat().st_mtime_ns for p in in_corpus.glob("fold_*/done.json")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("emovox.inference.asr.get_transcriber", lambda config: FakeAsr())
        FakeAsr.calls = 0
        r = _cv(work / "in.yaml", in_corpus, "--set", "control.transcripts=asr")
    assert FakeAsr.calls == 56  # alpha's and beta's clips; gamma's come from the cache
    assert r["control"]["text"]["transcripts"].startswith("80 asr")
    assert r["control"]["text"]["per_corpus"]["alpha"]["ua"] < 1.0  # the stand-in ASR does not hear alpha's words
    assert {p: p.stat().st_mtime_ns for p in in_corpus.glob("fold_*/done.json")} == before


def test_a_text_control_without_transcripts_or_asr_is_refused_before_training(pseudo_corpora, work) -> None:
    cfg = _config(work / "no-asr.yaml", pseudo_corpora, "in-corpus:2", work / "cache", validation="paper", control="text")
    r = runner.invoke(app, ["cv", str(cfg), "--out", str(work / "runs" / "no-asr"), "--quiet"])
    assert isinstance(r.exception, ConfigError) and "control.asr" in str(r.exception)
    assert not (work / "runs" / "no-asr" / "fold_1").exists()


def test_cross_corpus_and_one_matrix_from_several_runs(pseudo_corpora, work, loco: Path, in_corpus: Path) -> None:
    cross = work / "runs" / "from-beta"
    r = _cv(_config(work / "loco.yaml", pseudo_corpora, "leave-one-corpus-out", work / "cache"), cross,
            "--set", "protocol=cross-corpus:beta")  # fmt: skip
    assert r["fold_names"] == ["beta -> alpha+gamma"] and list(r["per_corpus"]) == ["alpha", "gamma"]
    assert [(c["train"], c["test"]) for c in r["corpus_matrix"]] == [("beta", "alpha"), ("beta", "gamma")]
    out = work / "matrix"
    m = runner.invoke(app, ["corpus", "matrix", str(cross), str(in_corpus), "--out", str(out)], env={"COLUMNS": "200"})
    assert m.exit_code == 0, m.output
    with (out / "corpus_matrix.csv").open() as f:
        cells = {(x["train"], x["test"]): x for x in csv.DictReader(f)}
    assert set(cells) == {("beta", "alpha"), ("beta", "gamma"), ("alpha", "alpha"), ("beta", "beta"), ("gamma", "gamma")}
    assert cells["beta", "beta"]["run"] == str(in_corpus)
    assert (out / "corpus_matrix.png").is_file()
    twice = runner.invoke(app, ["corpus", "matrix", str(in_corpus), str(work / "runs" / "in-corpus-again")])
    assert isinstance(twice.exception, EmovoxError) and "both measure alpha -> alpha" in str(twice.exception)


def test_a_recognizer_of_several_corpora_cards_its_corpora_and_held_out_figures(pseudo_corpora, work, loco) -> None:
    _cv(work / "loco.yaml", work / "runs" / "loco-fold-1", "--set", "folds=[1]")  # one fold of it: not an evaluation
    import os
    import shutil

    older = work / "runs" / "loco-older"  # an earlier finished run of the same protocol: the newest one is quoted
    shutil.copytree(loco, older, dirs_exist_ok=True)
    stamp = (loco / "results.json").stat().st_mtime - 3600
    os.utime(older / "results.json", (stamp, stamp))
    out = work / "recognizer"
    r = runner.invoke(app, ["train", str(work / "loco.yaml"), "--out", str(out), "--quiet", "--runs-dir", str(work / "runs")])
    assert r.exit_code == 0, r.output
    assert f"model card quotes {loco / 'results.json'}" in r.output  # found: same corpora, labels and model
    assert "loco-fold-1" not in r.output and "loco-older" not in r.output
    info = json.loads((out / "emovox.json").read_text())
    assert info["training"]["corpus"] == list(pseudo_corpora.values())
    assert [c["name"] for c in info["training"]["corpora"]] == ["alpha", "beta", "gamma"]
    evaluations = {ev["protocol"]: ev for ev in info["training"]["corpus_evaluations"]}
    ev = evaluations["leave-one-corpus-out"]  # (and the cross-corpus run of the test above, when it ran first)
    assert ev["results"] == str(loco / "results.json") and list(ev["per_corpus"]) == ["alpha", "beta", "gamma"]
    card = (out / "README.md").read_text()
    assert "## Corpora" in card and "## Leave-one-corpus-out" in card
    assert "| 3 | neutral | neutral | 01, 02 | n |" in card  # RAVDESS's neutral (01) and calm (02), ASED's n
    loco_ua = json.loads((loco / "results.json").read_text())["per_corpus"]["gamma"]["ua"]
    assert f"| gamma (no happy) | 24 | 4 | {loco_ua:.4f} |" in card


def test_evaluate_on_a_corpus_with_other_labels(pseudo_corpora, work) -> None:
    """A recognizer scored on a corpus it was not trained on: labels it does not know are refused with a hint, or
    (--labels shared) left out and counted; where the corpus lacks some of its labels, its answers are also scored
    restricted to the corpus's labels (equal to scikit-learn on the renormalised probabilities it lists)."""
    recognizers = {}
    keep = {"beta": {"keep": ["angry", "calm", "fearful", "happy", "neutral", "sad"]},
            "gamma": {"keep": ["angry", "fearful", "neutral", "sad"]}}  # what each has
    for name in ("beta", "gamma"):
        cfg = _config(work / f"only-{name}.yaml", {name: pseudo_corpora[name]}, "leave-one-speaker-out", work / "cache",
                      baseline=False, labels=keep[name])  # fmt: skip
        out = work / f"recognizer-{name}"
        r = runner.invoke(app, ["train", str(cfg), "--out", str(out), "--quiet", "--no-runtime"])
        assert r.exit_code == 0, r.output
        recognizers[name] = out

    refused = runner.invoke(app, ["evaluate", str(recognizers["gamma"]), pseudo_corpora["beta"], "--quiet"])
    assert refused.exit_code != 0
    assert "['calm', 'happy'] are not among the recognizer's" in str(refused.exception) + refused.output
    assert "--labels shared" in str(refused.exception) + refused.output

    js = work / "gamma-on-beta.json"
    r = runner.invoke(app, ["evaluate", str(recognizers["gamma"]), pseudo_corpora["beta"], "--labels", "shared", "--quiet",
                            "--json", str(js)], env={"COLUMNS": "200"})  # fmt: skip
    assert r.exit_code == 0, r.output
    record = json.loads(js.read_text())
    assert record["left_out"] == {"calm": 6, "happy": 6} and "left out (labels the recognizer does not know): calm 6, happy 6" in r.output
    assert record["utterances"] == 24 and {p["true"] for p in record["predictions"]} == {"angry", "fearful", "neutral", "sad"}
    assert record["restricted"] is None  # beta has every label gamma's recognizer knows

    js = work / "beta-on-gamma.json"
    r = runner.invoke(app, ["evaluate", str(recognizers["beta"]), pseudo_corpora["gamma"], "--labels", "shared", "--quiet",
                            "--json", str(js)], env={"COLUMNS": "200"})  # fmt: skip
    assert r.exit_code == 0, r.output
    record = json.loads(js.read_text())
    rows = record["predictions"]
    assert record["left_out"] == {} and len(rows) == 24
    answers = record["restricted"]["answers"]
    assert answers == ["angry", "fearful", "neutral", "sad"]
    true = [p["true"] for p in rows]
    assert record["ua"] == pytest.approx(balanced_accuracy_score(true, [p["pred"] for p in rows]))
    restricted = [max(answers, key=lambda a, p=p: p["probabilities"][a]) for p in rows]
    assert record["restricted"]["ua"] == pytest.approx(balanced_accuracy_score(true, restricted))
    assert "answers restricted to the 4 labels the corpus has (angry, fearful, neutral, sad): WA" in r.output


def test_inner_corpora_holds_out_each_training_corpus_in_turn(pseudo_corpora, work, monkeypatch) -> None:
    """``inner: corpora``: a leave-one-corpus-out fold chooses its head by how it carries from one training corpus to
    the other (each inner group is exactly one training corpus, the test corpus in none), and says so; a training part
    of one corpus holds out speaker groups instead; and the setting is refused where nothing cross-validates."""
    import emovox.models.logistic as logistic

    seen = []
    real = logistic.fit_logistic

    def spy(*args, **kwargs):
        seen.append((list(kwargs["groups"]), kwargs["inner_groups"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(logistic, "fit_logistic", spy)
    model = {"backbone": "wav2vec2-base", "tiny": True, "mode": "frozen", "head": "logistic", "C": [0.1, 1.0],
             "select": "inner-logloss", "inner": "corpora"}
    config = _config(work / "loco-inner.yaml", pseudo_corpora, "leave-one-corpus-out", work / "cache", baseline=False,
                     model=model)  # fmt: skip
    r = _cv(config, work / "runs" / "loco-inner")
    assert len(seen) == 3
    for fold, (groups, k) in zip(r["fold_names"], seen, strict=True):
        training = sorted(set(pseudo_corpora) - {fold})
        assert sorted(set(groups)) == training and k == 2
        inner = logistic.speaker_groups(groups, k)  # what fit_logistic makes of them: one group per corpus
        assert {c: set(inner[np.array(groups) == c]) for c in training} == {training[0]: {0}, training[1]: {1}}
        done = json.loads((work / "runs" / "loco-inner" / f"fold_{r['fold_names'].index(fold) + 1}" / "done.json").read_text())
        assert done["choices"]["inner"] == "corpora: " + ", ".join(training)
    seen.clear()
    one = _cv(config, work / "runs" / "from-beta-inner", "--set", "protocol=cross-corpus:beta")
    assert one["fold_names"] == ["beta -> alpha+gamma"]
    groups, k = seen[0]
    assert k == 4 and {g.split("/")[0] for g in groups} == {"beta"} and len(set(groups)) >= 2  # beta's training speakers
    done = json.loads((work / "runs" / "from-beta-inner" / "fold_1" / "done.json").read_text())
    assert done["choices"]["inner"] == "speakers (one training corpus)"
    bad = runner.invoke(app, ["cv", str(config), "--out", str(work / "runs" / "bad"), "--set", "model.select=valid-ua"])
    assert bad.exit_code != 0 and "needs select: inner-logloss" in bad.output + str(bad.exception)
