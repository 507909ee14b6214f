"""Using a trained recognizer: ``Recognizer.predict`` and ``emovox predict`` on tiny trained models."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import tone, write_wav
from typer.testing import CliRunner

from emovox.cli import app
from emovox.errors import AudioError, EmovoxError, RecognizerError
from emovox.inference.recognizer import Prediction, Recognizer

runner = CliRunner()


@pytest.fixture(scope="module")
def audio_rec(audio_recognizer_dir) -> Recognizer:
    return Recognizer.load(audio_recognizer_dir)


@pytest.fixture(scope="module")
def text_rec(text_recognizer_dir) -> Recognizer:
    return Recognizer.load(text_recognizer_dir)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {
        "high": write_wav(root / "high.wav", tone(515, 0.8)),
        "low": write_wav(root / "low.wav", tone(185, 0.8)),
        "low8k": write_wav(root / "sub" / "low8k.wav", tone(185, 0.8, sr=8000), sr=8000),
    }


# --- directory --------------------------------------------------------------------------------


def test_recognizer_directory_is_complete_and_documented(audio_recognizer_dir):
    d = audio_recognizer_dir
    info = json.loads((d / "emovox.json").read_text())
    assert info["labels"] == ["high", "low"] and info["modality"] == "audio" and info["schema_version"] == 2
    assert info["kind"] == "classifier" and info["fields"] == ["audio"] and info["model"]["mode"] == "frozen"
    assert (d / "weights.safetensors").is_file() and list((d / "branches" / "audio").glob("*.safetensors"))
    assert set(info["files"]) == {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and p.name != "emovox.json"}  # all it owns
    assert not list(d.rglob("*.bin")) and not list(d.rglob("*.pt"))  # weights only as safetensors
    card = (d / "README.md").read_text()
    assert "manifest:" in card and "high, low" in card and "validation UA" in card


# --- Python API -------------------------------------------------------------------------------


def test_predict_one_file_a_list_and_arrays(audio_rec, clips):
    one = audio_rec.predict(clips["high"])
    assert isinstance(one, Prediction) and one.label == "high" and one.source == str(clips["high"])
    assert set(one.probabilities) == {"high", "low"}
    assert sum(one.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    many = audio_rec.predict([clips["low"], str(clips["high"]), clips["low8k"], tone(520, 1.2)])
    assert [p.label for p in many] == ["low", "high", "low", "high"]
    assert many[3].source is None and many[2].source == str(clips["low8k"])
    # the list path and the single path give the same numbers; so does predict_proba on the array
    assert many[1].probabilities == pytest.approx(one.probabilities, abs=1e-5)
    probs = audio_rec.predict_proba([tone(520, 1.2)])[0]
    assert probs == pytest.approx([many[3].probabilities["high"], many[3].probabilities["low"]], abs=1e-5)
    # a steady synthetic tone holds no speech (emovox.inference.activity): the prediction says so
    assert one.to_dict() == {"label": "high", "probabilities": one.probabilities, "source": str(clips["high"]), "speech": False}


def test_audio_recognizer_refuses_transcripts_and_bad_inputs(audio_rec, clips, tmp_path):
    with pytest.raises(RecognizerError, match="audio only"):
        audio_rec.predict(clips["high"], text="hello")
    with pytest.raises(RecognizerError, match="nothing to predict"):
        audio_rec.predict()
    with pytest.raises(AudioError, match="not found"):
        audio_rec.predict(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="shorter than the 0.1 s minimum"):
        audio_rec.predict(np.zeros(100, dtype=np.float32))
    with pytest.raises(AudioError, match="1-D float"):
        audio_rec.predict(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(RecognizerError, match="expected an audio path"):
        audio_rec.predict([42])


def test_text_recognizer_reads_transcripts_and_needs_asr_for_audio(text_rec, clips):
    assert text_rec.needs_text and text_rec.asr is None
    one = text_rec.predict(text="I feel sad and tired")
    # a training sentence of class "low" (tests/helpers.py TEXTS): the trained recognizer says so
    assert one.transcript == "I feel sad and tired" and one.label == "low"
    many = text_rec.predict(text=["I feel sad and tired", "what a wonderful surprise"])
    assert [p.transcript for p in many] == ["I feel sad and tired", "what a wonderful surprise"]
    assert [p.label for p in many] == ["low", "high"]
    assert many[0].probabilities == pytest.approx(one.probabilities, abs=1e-6)
    # audio with its transcript: the transcript decides, the clip is named as the source
    with_audio = text_rec.predict(clips["high"], text="I feel sad and tired")
    assert with_audio.probabilities == pytest.approx(one.probabilities, abs=1e-6) and with_audio.source == str(clips["high"])
    with pytest.raises(RecognizerError, match="--asr"):
        text_rec.predict(clips["high"])
    with pytest.raises(RecognizerError, match="one transcript"):
        text_rec.predict([clips["high"], clips["low"]], text=["only one"])
    with pytest.raises(AudioError, match="pass it as text="):  # a transcript passed where audio goes
        text_rec.predict("I feel sad and tired")


def test_asr_setting_is_validated_and_saved(text_recognizer_dir, tmp_path):
    from emovox.inference.asr import AsrConfig

    d = tmp_path / "rec"
    shutil.copytree(text_recognizer_dir, d)
    rec = Recognizer.load(d, asr=AsrConfig("/nowhere/whisper", "German"))
    assert rec.asr == AsrConfig("/nowhere/whisper", "de")
    rec.save(d)
    assert json.loads((d / "emovox.json").read_text())["asr"] == {"model": "/nowhere/whisper", "language": "de", "batch_size": 8}
    assert Recognizer.load(d).asr.language == "de"
    info = json.loads((d / "emovox.json").read_text())
    info["asr"] = {"model": "x", "language": "klingon"}
    (d / "emovox.json").write_text(json.dumps(info))
    with pytest.raises(RecognizerError, match="klingon"):
        Recognizer.load(d)


def test_load_names_what_is_wrong(audio_recognizer_dir, tmp_path):
    with pytest.raises(RecognizerError, match="not found"):
        Recognizer.load(tmp_path / "nothing")
    with pytest.raises(RecognizerError, match="no emovox.json"):
        Recognizer.load(tmp_path)
    d = tmp_path / "rec"
    shutil.copytree(audio_recognizer_dir, d)
    info = json.loads((d / "emovox.json").read_text())
    (d / "emovox.json").write_text(json.dumps(dict(info, modality="smell")))
    with pytest.raises(RecognizerError, match="modality"):
        Recognizer.load(d)


# --- CLI --------------------------------------------------------------------------------------


def test_cli_predicts_files_folders_and_manifests_as_json(audio_recognizer_dir, clips, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "id,path,label,start,end\n"
        f"cut_high,{clips['high']},high,0.1,0.6\n"
        f"whole_low,{clips['low']},low,,\n"
    )
    out = tmp_path / "preds.json"
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(clips["high"]), str(clips["low8k"].parent), str(manifest), "--json", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())
    assert [(row["input"], row["label"]) for row in rows] == [
        (str(clips["high"]), "high"), (str(clips["low8k"]), "low"), ("cut_high", "high"), ("whole_low", "low"),
    ]
    assert rows[2]["reference"] == "high" and "transcript" not in rows[0]
    assert "whole_low" in r.output and "reference" in r.output  # the table


def test_cli_csv_to_stdout_and_long_clip_note(audio_recognizer_dir, clips, tmp_path):
    long = write_wav(tmp_path / "long.wav", tone(180, 11.0))
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(clips["high"]), str(long), "--csv", "-"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["label"] for row in rows] == ["high", "low"]
    assert float(rows[0]["p_high"]) + float(rows[0]["p_low"]) == pytest.approx(1.0, abs=1e-5)
    assert rows[1]["seconds"] == "11.0" and rows[1]["seconds_used"] == "10.0"
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(long)])
    assert "cropped to their first 10 s" in r.stderr


def test_cli_skips_bad_audio_when_asked(audio_recognizer_dir, clips, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(clips["low"], folder / "good.wav")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(folder), "--on-bad-audio", "error"])
    assert isinstance(r.exception, AudioError) and "broken.wav" in str(r.exception)
    out = tmp_path / "p.json"
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(folder), "--json", str(out)])  # skip is the default
    assert r.exit_code == 3, r.output  # some inputs failed, the others were written
    rows = {Path(row["input"]).name: row for row in json.loads(out.read_text())}
    assert rows["good.wav"]["label"] == "low" and "broken.wav" in rows["broken.wav"]["error"]
    assert "1 of 2 input(s) could not be predicted" in r.stderr


def test_cli_text_recognizer(text_recognizer_dir, tmp_path):
    r = runner.invoke(app, ["predict", str(text_recognizer_dir), "--text", "I feel sad and tired", "--json", "-"])
    assert r.exit_code == 0, r.output
    [row] = json.loads(r.stdout)
    assert row["transcript"] == "I feel sad and tired" and row["input"] == "--text"
    # transcripts from a manifest's text column: no audio is decoded, so the files need not be audio
    manifest = tmp_path / "t.jsonl"
    (tmp_path / "a.wav").write_bytes(b"not read")
    manifest.write_text(json.dumps({"path": "a.wav", "text": "what a wonderful surprise"}) + "\n")
    r = runner.invoke(app, ["predict", str(text_recognizer_dir), str(manifest), "--json", "-"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["transcript"] == "what a wonderful surprise"
    # transcript-only rows (no path column at all) for a text recognizer, named by manifest line
    manifest = tmp_path / "only-text.csv"
    manifest.write_text("text\nwhat a wonderful surprise\nI feel sad and tired\n")
    r = runner.invoke(app, ["predict", str(text_recognizer_dir), str(manifest), "--json", "-", "--quiet"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [x["input"] for x in rows] == ["only-text.csv:2", "only-text.csv:3"]
    assert [x["transcript"] for x in rows] == ["what a wonderful surprise", "I feel sad and tired"]


def test_cli_manifest_rows_without_audio_for_an_audio_recognizer_fail_by_name(audio_recognizer_dir, clips, tmp_path):
    manifest = tmp_path / "mixed.csv"
    manifest.write_text(f"id,path,text\nok,{clips['high']},\nnoaudio,,just words\n")
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(manifest), "--json", "-", "--quiet"])
    assert r.exit_code == 3, r.output  # one predicted, one failed
    ok, bad = json.loads(r.stdout)
    assert ok["label"] is not None and bad["label"] is None
    assert "noaudio" in bad["error"] and "no path" in bad["error"]
    (tmp_path / "neither.csv").write_text("id,path,text\nx,,\n")
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(tmp_path / "neither.csv")])
    assert isinstance(r.exception, EmovoxError) and "line 2: neither a path nor a text" in str(r.exception)
    r = runner.invoke(app, ["predict", str(audio_recognizer_dir), str(clips["high"]), "--context", "hello"])
    assert isinstance(r.exception, EmovoxError) and "no context branch" in str(r.exception)


@pytest.mark.parametrize(
    "args, message",
    [
        (["{audio}", "{clip}", "--text", "hi"], "listens to audio only"),
        (["{audio}"], "nothing to predict"),
        (["{audio}", "{missing}"], "no such file or folder"),
        (["{audio}", "{clip}", "--json", "-", "--csv", "-"], "give each its own file"),
        (["{text}", "{clip}"], "--asr"),
        (["{empty}", "{clip}"], "not a recognizer directory"),
        (["{audio}", "{clip}", "--asr-language", "de"], "needs an ASR model"),
    ],
)
def test_cli_errors_are_emovox_errors(args, message, audio_recognizer_dir, text_recognizer_dir, clips, tmp_path):
    values = {
        "audio": audio_recognizer_dir, "text": text_recognizer_dir, "clip": clips["high"],
        "missing": tmp_path / "nope.wav", "empty": tmp_path,
    }
    r = runner.invoke(app, ["predict", *[a.format(**values) for a in args]])
    assert r.exit_code != 0
    assert isinstance(r.exception, EmovoxError), r.exception
    assert message in str(r.exception)
