"""ONNX export: float and int8 graphs checked against torch with onnxruntime, dynamic batch and time."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import tone, write_wav
from typer.testing import CliRunner

from emovox.cli import app
from emovox.export import ExportError, OnnxRecognizer, clip_input, export_onnx
from emovox.recognizer import Recognizer


@pytest.fixture(scope="module", params=["audio", "whisper"])
def exported(request, tmp_path_factory):
    """(recognizer, report) for a frozen-features wav2vec2 and an end-to-end Whisper recognizer."""
    rec_dir = request.getfixturevalue(f"{request.param}_recognizer_dir")
    rec = Recognizer.load(rec_dir)
    report = export_onnx(rec, tmp_path_factory.mktemp("onnx") / "model.onnx", int8=True)
    return rec, report


def test_float_export_matches_torch_and_int8_is_reported(exported):
    rec, report = exported
    assert report.fp32.max_abs_diff < 1e-4 and report.fp32.label_agreement == 1.0 and report.fp32.samples == 5
    assert report.int8 is not None and report.int8.samples == 5
    assert 0.0 < report.int8.max_abs_diff < 0.2  # quantised: close, not identical
    model = onnx.load(report.int8_onnx)
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in model.graph.node)
    assert not any(n.op_type == "ConvInteger" for n in model.graph.node)  # only MatMuls are quantised
    # dynamic axes: batch and time are symbolic in the saved graph
    dims = [d.dim_param or d.dim_value for d in onnx.load(report.onnx).graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and dims[-1] == "time"


def test_onnx_runs_alone_on_new_lengths_and_batches(exported):
    rec, report = exported
    runner = OnnxRecognizer(report.onnx)
    assert runner.labels == rec.labels
    clips = [tone(515, 0.73), tone(185, 2.31), tone(515, 1.5), tone(185, 1.5)]  # lengths never seen in the export
    probs = runner.predict_proba(clips)
    reference = rec.predict_proba(clips)
    np.testing.assert_allclose(probs, reference, atol=1e-4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # a batch of equal-length clips in one run equals the clips one by one
    feats = np.stack(runner.inputs(clips[2:]))
    batched = runner.predict_arrays(feats)
    np.testing.assert_allclose(batched, np.stack([runner.predict_arrays(f[None])[0] for f in feats]), atol=1e-5)
    # the stored preprocessing is the backbone's own
    np.testing.assert_array_equal(runner.inputs([clips[0]])[0], rec.backbone.preprocess([clips[0]])[report.input][0].numpy())


def test_text_recognizers_and_bad_outputs_are_refused(text_recognizer_dir, audio_recognizer_dir, tmp_path):
    with pytest.raises(ExportError, match="audio recognizers"):
        export_onnx(Recognizer.load(text_recognizer_dir), tmp_path / "t.onnx")
    with pytest.raises(ExportError, match=r"\*\.onnx"):
        export_onnx(Recognizer.load(audio_recognizer_dir), tmp_path / "t.bin")
    with pytest.raises(ExportError, match="not found"):
        OnnxRecognizer(tmp_path / "none.onnx")
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(b"not a model")
    with pytest.raises(ExportError, match="cannot load"):
        OnnxRecognizer(plain)


def test_cli_export_with_int8_report_and_check_files(audio_recognizer_dir, tmp_path):
    a = write_wav(tmp_path / "clips" / "a.wav", tone(515, 1.1))
    write_wav(tmp_path / "clips" / "b.wav", tone(185, 0.9))
    out, report = tmp_path / "m.onnx", tmp_path / "report.json"
    r = CliRunner().invoke(
        app,
        ["export", str(audio_recognizer_dir), "--onnx", str(out), "--int8", "--check", str(a.parent), "--report", str(report)],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(report.read_text())
    assert data["fp32"]["samples"] == 2 and data["sample_seconds"] == [1.1, 0.9]
    assert data["fp32"]["max_abs_diff"] < 1e-4 and data["int8"]["label_agreement"] == 1.0
    assert out.is_file() and (tmp_path / "m.int8.onnx").is_file()
    assert "int8" in r.output and "same label" in r.output
    r = CliRunner().invoke(app, ["export", str(audio_recognizer_dir), "--onnx", str(tmp_path / "x.txt")])
    assert isinstance(r.exception, ExportError)


def test_clip_input_crops_like_the_backbone(audio_recognizer_dir):
    rec = Recognizer.load(audio_recognizer_dir)
    long = tone(300, 12.0)
    x = clip_input(rec.backbone.processor, "wav2vec2", long, rec.backbone.max_seconds)
    assert x.shape == (160_000,)
    np.testing.assert_array_equal(x, rec.backbone.preprocess([long])["input_values"][0].numpy())
