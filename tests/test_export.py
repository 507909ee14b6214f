"""``emovox export``: a recognizer's runtime (ONNX encoder, numpy head; int8 on request), checked against torch.

What the runtime computes is tested in ``tests/test_runtime.py``; here, the command."""

from __future__ import annotations

import json
import shutil

from helpers import tone, write_wav
from typer.testing import CliRunner

from emovox.cli import app
from emovox.inference.export import ExportError
from emovox.inference.runtime import has_runtime

runner = CliRunner()


def test_cli_export_with_int8_report_and_check_files(audio_recognizer_dir, tmp_path):
    model_dir = tmp_path / "rec"
    shutil.copytree(audio_recognizer_dir, model_dir)
    a = write_wav(tmp_path / "clips" / "a.wav", tone(515, 1.1))
    write_wav(tmp_path / "clips" / "b.wav", tone(185, 0.9))
    report = tmp_path / "report.json"
    r = runner.invoke(app, ["export", str(model_dir), "--int8", "--check", str(a.parent), "--report", str(report), "--quiet"])
    assert r.exit_code == 0, r.output
    data = json.loads(report.read_text())
    assert data["fp32"]["samples"] == 2 and data["sample_seconds"] == [1.1, 0.9]
    assert data["fp32"]["max_abs_diff"] < 1e-4 and data["int8"]["label_agreement"] == 1.0
    assert data["runtime"] == str(model_dir / "runtime") and data["layers"] == [2]  # the tiny wav2vec2's last state
    assert (model_dir / "runtime" / "encoder.int8.onnx").is_file()
    assert "onnx-int8" in r.output and "same label" in r.output
    info = json.loads((model_dir / "emovox.json").read_text())
    assert info["runtime"]["engines"] == ["onnx", "onnx-int8"] and "runtime/encoder.int8.onnx" in info["files"]


def test_text_recognizers_are_refused_in_one_line(text_recognizer_dir):
    r = runner.invoke(app, ["export", str(text_recognizer_dir)])
    assert isinstance(r.exception, ExportError) and "audio recognizers" in str(r.exception)
    assert not has_runtime(text_recognizer_dir)
