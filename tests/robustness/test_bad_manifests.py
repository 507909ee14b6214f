"""Bad corpus tables and label problems: each is an ``EmovoxError`` that says what to do, and the
policies that let a run go on (skip a transcript-less utterance, drop a class a fold cannot
learn) list everything they leave out.

Policies under test:
- duplicate ids, missing audio files, empty label cells: ``CorpusError`` when the manifest is
  read (missing audio can be skipped with the reader's ``?on_missing_audio=skip``);
- no transcript for a text model: part of ``on_bad_audio`` (skip and report, or error);
- a class with no training utterance in a fold: ``on_missing_class: error`` (default) names the
  fold and class; ``drop`` leaves that class's validation/test utterances out of that fold only;
- a recognizer whose label set does not cover the data's labels: ``RecognizerError``.
"""

from __future__ import annotations

import csv
import json
import sys

import pytest
import yaml
from helpers import tiny_config, tone, tone_rows, write_manifest, write_wav

from emovox.config import config_from_dict
from emovox.corpora import load_corpus
from emovox.errors import CorpusError, EmovoxError, RecognizerError
from emovox.training.runner import run_cv

THREE = {"low": 180.0, "high": 520.0, "surprised": 350.0}


def test_duplicate_ids_name_both_lines(tmp_path):
    rows = tone_rows(tmp_path, speakers=1, per_class=2)
    rows[3]["id"] = rows[0]["id"]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    with pytest.raises(CorpusError, match=r"line 5: id 'spk0_low_0' was already used on line 2"):
        load_corpus(f"manifest:{manifest}")


def test_missing_audio_files_are_named_and_skippable_only_on_request(tmp_path):
    rows = tone_rows(tmp_path, speakers=1, per_class=2)
    rows.append({"id": "gone", "path": "wav/gone.wav", "label": "low", "speaker": "spk0"})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    with pytest.raises(CorpusError) as info:
        load_corpus(f"manifest:{manifest}")
    assert "1 audio file(s) are missing" in str(info.value) and "gone.wav" in str(info.value)
    assert "on_missing_audio=skip" in str(info.value)
    corpus = load_corpus(f"manifest:{manifest}?on_missing_audio=skip")
    assert "gone" not in corpus and len(corpus) == 4


def test_an_empty_label_cell_names_the_line(tmp_path):
    rows = tone_rows(tmp_path, speakers=1, per_class=1)
    rows[1]["label"] = ""
    manifest = write_manifest(tmp_path / "m.csv", rows)
    with pytest.raises(CorpusError, match="line 3: the label cell is empty"):
        load_corpus(f"manifest:{manifest}")


def test_missing_transcripts_for_a_text_model_error_or_skip(tmp_path):
    rows = tone_rows(tmp_path)
    rows[2]["text"] = ""
    rows[7]["text"] = "   "
    manifest = write_manifest(tmp_path / "m.csv", rows)
    data = tiny_config(manifest, tmp_path / "cache", model={"backbone": "bert-base"}, folds=[1])
    with pytest.raises(EmovoxError, match=f"utterance {rows[2]['id']} .*has no transcript, which a text model needs"):
        run_cv(config_from_dict(dict(data, on_bad_audio="error")), tmp_path / "strict", progress=False)
    res = run_cv(config_from_dict(dict(data, on_bad_audio="skip")), tmp_path / "skip", progress=False)
    assert [(s["id"], s["kind"]) for s in res["skipped"]] == [(rows[2]["id"], "transcript"), (rows[7]["id"], "transcript")]
    assert all("add a text column" in s["reason"] for s in res["skipped"])
    assert f"| {rows[7]['id']} | all | transcript |" in (tmp_path / "skip" / "report.md").read_text()


@pytest.fixture(scope="module")
def surprise_only_in_spk0(tmp_path_factory):
    """Three classes, but "surprised" is spoken by one speaker only: the folds that test or
    validate on that speaker have no "surprised" utterance to train on."""
    root = tmp_path_factory.mktemp("missing-class")
    rows = tone_rows(root, labels={k: v for k, v in THREE.items() if k != "surprised"})
    for k in range(3):
        rel = f"wav/spk0_surprised_{k}.wav"
        write_wav(root / rel, tone(THREE["surprised"], 0.3 + 0.05 * k))
        rows.append({"id": f"spk0_surprised_{k}", "path": rel, "label": "surprised", "speaker": "spk0", "text": "oh"})
    return write_manifest(root / "m.csv", rows)


def test_class_absent_from_a_folds_training_part_is_a_clear_error(surprise_only_in_spk0, tmp_path):
    cfg = config_from_dict(tiny_config(surprise_only_in_spk0, tmp_path / "cache"))
    with pytest.raises(EmovoxError) as info:
        run_cv(cfg, tmp_path / "run", progress=False)
    message = str(info.value)
    assert message.startswith("fold ") and "['surprised'] have no training utterance in this fold" in message
    assert "on_missing_class: drop" in message and "labels=" in message


def test_drop_policy_leaves_the_class_out_of_those_folds_only_and_lists_it(surprise_only_in_spk0, tmp_path):
    cfg = config_from_dict(tiny_config(surprise_only_in_spk0, tmp_path / "cache", on_missing_class="drop"))
    out = tmp_path / "run"
    res = run_cv(cfg, out, progress=False)
    assert res["label_set"] == ["high", "low", "surprised"]
    dropped = [s for s in res["skipped"] if s["kind"] == "missing_class"]
    assert dropped and all(s["id"].startswith("spk0_surprised_") for s in dropped)
    # listed per fold, and each fold's done.json agrees with what that fold's splits say
    for fold_name in {s["fold"] for s in dropped}:
        fold_dir = next(d for d in out.glob("fold_*") if json.loads((d / "done.json").read_text())["name"] == fold_name)
        done = json.loads((fold_dir / "done.json").read_text())
        assert {s["id"] for s in done["skipped"]} == {s["id"] for s in dropped if s["fold"] == fold_name}
        with (fold_dir / "predictions.csv").open() as f:
            tested = {r["id"] for r in csv.DictReader(f)}
        assert not tested & {s["id"] for s in done["skipped"]}
        assert "surprised" in " ".join(s["reason"] for s in done["skipped"])
    # the test utterances of spk0's surprise were all dropped (no fold that tests spk0 learnt it),
    # every other utterance was tested exactly once
    with (out / "predictions.csv").open() as f:
        tested = [r["id"] for r in csv.DictReader(f)]
    corpus = load_corpus(f"manifest:{surprise_only_in_spk0}")
    test_dropped = {u.id for u in corpus if u.label == "surprised"}
    assert len(tested) == len(set(tested)) == len(corpus) - len(test_dropped)
    assert test_dropped <= {s["id"] for s in dropped}
    assert "missing class" in (out / "report.md").read_text().split("## Skipped utterances", 1)[1]


def test_a_misspelt_label_is_caught_as_a_class_no_fold_can_learn(tmp_path):
    rows = tone_rows(tmp_path)
    rows[5]["label"] = "hihg"  # a typo makes a class of one utterance
    manifest = write_manifest(tmp_path / "m.csv", rows)
    with pytest.raises(EmovoxError, match=r"class\(es\) \['hihg'\] have no training utterance"):
        run_cv(
            config_from_dict(tiny_config(manifest, tmp_path / "cache", on_bad_audio="error")), tmp_path / "run", progress=False
        )


def test_utterances_a_corpus_reader_dropped_are_listed_too(tmp_path):
    """The contract for readers that skip (``on_missing_audio=skip``): ``Corpus.dropped`` pairs."""
    manifest = write_manifest(tmp_path / "m.csv", tone_rows(tmp_path))
    corpus = load_corpus(f"manifest:{manifest}")
    corpus.dropped = [("spk9_low_0", f"{tmp_path}/wav/spk9_low_0.wav: audio file not found")]
    res = run_cv(
        config_from_dict(tiny_config(manifest, tmp_path / "cache", folds=[1])), tmp_path / "run", corpus=corpus, progress=False
    )
    assert res["skipped"] == [
        {"id": "spk9_low_0", "reason": f"{tmp_path}/wav/spk9_low_0.wav: audio file not found", "kind": "corpus"}
    ]
    assert "| spk9_low_0 | all | corpus |" in (tmp_path / "run" / "report.md").read_text()


def test_recognizer_label_set_not_matching_the_data(audio_recognizer_dir, tmp_path, monkeypatch, capsys):
    from emovox.cli import main

    rows = tone_rows(tmp_path, speakers=1, per_class=1)
    rows[0]["label"] = "furious"  # the recognizer knows high and low only
    manifest = write_manifest(tmp_path / "m.csv", rows)
    from emovox.inference.recognizer import Recognizer
    from emovox.training.final import evaluate_recognizer

    rec = Recognizer.load(audio_recognizer_dir)
    with pytest.raises(RecognizerError, match=r"labels \['furious'\] are not among the recognizer's \['high', 'low'\]"):
        evaluate_recognizer(rec, load_corpus(f"manifest:{manifest}"))
    monkeypatch.setattr(sys, "argv", ["emovox", "evaluate", str(audio_recognizer_dir), f"manifest:{manifest}"])
    with pytest.raises(SystemExit) as info:
        main()
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("error: ") and "furious" in err and len(err.splitlines()) == 1


def test_config_policies_are_validated(tmp_path):
    from emovox.config import load_config
    from emovox.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "m.csv", tmp_path / "cache", on_missing_class="ignore")))
    with pytest.raises(ConfigError, match="on_missing_class"):
        load_config(path)
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "m.csv", tmp_path / "cache", on_bad_audio="drop")))
    with pytest.raises(ConfigError, match="on_bad_audio"):
        load_config(path)
