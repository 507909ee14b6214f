"""Whisper transcripts for recognizers that read text: configuration, errors, and the real Whisper-base."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from emovox.audio import load_audio
from emovox.cli import app
from emovox.inference.asr import (
    AsrConfig,
    AsrError,
    Transcriber,
    get_transcriber,
    normalize_language,
)
from emovox.inference.recognizer import Recognizer


@pytest.mark.parametrize("given, code", [("de", "de"), ("German", "de"), ("<|es|>", "es"), (None, None), ("", None)])
def test_language_codes_and_names(given, code):
    assert normalize_language(given) == code
    assert AsrConfig("x", given).language == code


def test_bad_settings_are_asr_errors():
    with pytest.raises(AsrError, match="klingon"):
        AsrConfig("openai/whisper-base", "klingon")
    with pytest.raises(AsrError, match="hub id"):
        AsrConfig("  ")
    with pytest.raises(AsrError, match="unknown key"):
        AsrConfig.from_dict({"model": "m", "beam": 5})
    with pytest.raises(AsrError, match="expected"):
        AsrConfig.from_dict(["m"])
    assert AsrConfig.from_dict("some/whisper") == AsrConfig("some/whisper")
    assert AsrConfig.from_dict(AsrConfig("m", "fr").to_dict()) == AsrConfig("m", "fr")


def test_models_that_cannot_transcribe_are_refused(audio_recognizer_dir, tmp_path):
    with pytest.raises(AsrError, match="not found"):
        Transcriber(AsrConfig(str(tmp_path / "missing")))
    with pytest.raises(AsrError, match="not Whisper"):
        Transcriber(AsrConfig(str(audio_recognizer_dir / "branches" / "audio")))  # a wav2vec2 directory
    with pytest.raises(AsrError, match="no config.json"):
        Transcriber(AsrConfig(str(tmp_path)))
    # HF_HUB_OFFLINE is set by conftest: a hub id that is not cached fails with advice, not a traceback
    with pytest.raises(AsrError, match="local Whisper directory"):
        Transcriber(AsrConfig("openai/whisper-emovox-test-does-not-exist"))


@pytest.mark.slow
def test_whisper_base_transcribes_emodb_for_a_text_recognizer(whisper_base_dir, emodb_dir, text_recognizer_dir, tmp_path):
    wav = emodb_dir / "wav" / "03a01Wa.wav"
    expected = "Der Lappen liegt auf dem Eisschrank!"
    config = AsrConfig(str(whisper_base_dir), "de")
    assert get_transcriber(config) is get_transcriber(AsrConfig(str(whisper_base_dir), "german"))  # loaded once

    rec = Recognizer.load(text_recognizer_dir, asr=config)
    pred = rec.predict(wav)
    assert pred.transcript == expected and pred.source == str(wav)
    # the label is exactly what the recognizer says about that transcript
    assert pred.probabilities == pytest.approx(rec.predict(text=expected).probabilities, abs=1e-6)

    # a cap on the transcript's tokens (the text control's guard against Whisper looping) cuts it short
    capped = get_transcriber(config).transcribe(load_audio(wav), max_new_tokens=3)
    assert capped[0] and len(capped[0]) < len(expected) and expected.startswith(capped[0].rstrip(".,!? "))

    # the same through the CLI, with the ASR chosen on the command line
    r = CliRunner().invoke(
        app,
        ["predict", str(text_recognizer_dir), str(wav), "--asr", str(whisper_base_dir), "--asr-language", "de", "--json", "-"],
    )
    assert r.exit_code == 0, r.output
    [row] = json.loads(r.stdout)
    assert row["transcript"] == expected and row["label"] == pred.label

    # and recorded in the recognizer directory (and its model card), so that a plain `emovox predict` finds it
    d = tmp_path / "rec"
    shutil.copytree(text_recognizer_dir, d)
    rec.save(d)
    assert Recognizer.load(d).asr == config
    assert f"`{whisper_base_dir}` (language de)" in (d / "README.md").read_text()
