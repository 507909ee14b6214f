"""The runtime: a recognizer's encoder as ONNX (cut after the highest state its head reads) and its head in
numpy give torch's answers, from files checked by sha256, without importing torch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import tone, train_tiny, write_wav

from emovox.errors import RecognizerError
from emovox.inference.export import ExportError, write_runtime
from emovox.inference.export_head import read_positions
from emovox.inference.recognizer import Recognizer
from emovox.inference.runtime import Runtime, has_runtime

LABELS = ["angry", "bored", "disgusted", "fearful", "happy", "neutral", "sad"]


def syllables(freq: float, seconds: float) -> np.ndarray:
    """A tone switched on and off four times a second: loud against its own pauses, as speech is."""
    x = tone(freq, seconds)
    t = np.arange(len(x)) / 16000
    return (x * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32)


def copy_recognizer(src, tmp_path_factory, name):
    out = tmp_path_factory.mktemp(name) / "rec"
    shutil.copytree(src, out)
    return out


@pytest.fixture(scope="module")
def logistic_dir(tmp_path_factory):
    """A tiny Whisper recognizer whose logistic head may only read states 0 and 1 of 0-2: `train` writes its runtime."""
    return train_tiny(
        tmp_path_factory.mktemp("rt-logistic"), "whisper-base", layers="all", combine="concat", head="logistic",
        C=[0.1, 1.0], layer_sets=[[0, 1]],
    )


def test_train_writes_a_runtime_cut_after_the_states_the_head_reads(logistic_dir):
    info = json.loads((logistic_dir / "emovox.json").read_text())
    manifest = json.loads((logistic_dir / "runtime" / "runtime.json").read_text())
    assert has_runtime(logistic_dir) and info["runtime"]["layers"] == [0, 1] == manifest["encoder"]["layers"]
    assert manifest["encoder"]["runs"] == "encoder layers 1-1 of 2; the final layer norm is not run"
    assert info["runtime"]["check"]["fp32"]["max_abs_diff"] < 1e-4
    # every runtime file is owned by the recognizer: emovox.json records its sha256 (and Recognizer.load checks it)
    for name in ("runtime.json", "encoder.onnx", "head.safetensors", "frontend.safetensors"):
        assert f"runtime/{name}" in info["files"]
    for name, digest in manifest["files"].items():
        assert info["files"][f"runtime/{name}"] == digest
    Recognizer.load(logistic_dir)
    # the graph holds one encoder layer: two layer norms (self-attention, feed-forward), no final norm
    import onnx

    ops = [n.op_type for n in onnx.load(str(logistic_dir / "runtime" / "encoder.onnx")).graph.node]
    assert ops.count("LayerNormalization") == 2


def test_runtime_answers_like_torch_on_files_arrays_and_batches(logistic_dir, tmp_path):
    rec, rt = Recognizer.load(logistic_dir), Runtime.load(logistic_dir)
    assert rt.engine == "onnx" and rec.engine == "torch" and rt.labels == rec.labels and rt.max_seconds == rec.max_seconds
    clips = [syllables(520, 0.73), tone(180, 1.31), tone(515, 1.0), tone(185, 1.0), np.zeros(16000, np.float32)]
    paths = [write_wav(tmp_path / f"c{i}.wav", c) for i, c in enumerate(clips)]
    ours, theirs = rt.predict(paths), rec.predict(paths)
    for a, b in zip(ours, theirs, strict=True):
        assert a.label == b.label and a.source == b.source and a.speech == b.speech
        np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()), atol=1e-4)
    assert [p.speech for p in ours] == [True, False, False, False, False]  # steady tones and silence hold no speech
    single = rt.predict(clips[0])
    assert single.label == ours[0].label and single.source is None
    np.testing.assert_allclose(rt.predict_proba(clips), rec.predict_proba(clips), atol=1e-4)
    # two clips of equal length share one run: the same as one by one
    together = rt.pooled(clips[2:4])
    apart = np.concatenate([rt.pooled([c]) for c in clips[2:4]])
    np.testing.assert_allclose(together, apart, atol=1e-5)
    assert together.shape == (2, 2, rt.manifest["encoder"]["width"])


def test_runtime_refuses_what_the_recognizer_refuses(logistic_dir, tmp_path):
    rt, rec = Runtime.load(logistic_dir), Recognizer.load(logistic_dir)
    for call in (
        lambda r: r.predict(tone(200, 1.0), text="hello"),
        lambda r: r.predict(),
        lambda r: r.predict(tone(200, 0.05)),
        lambda r: r.predict(tmp_path / "missing.wav"),
        lambda r: r.predict([tone(200, 1.0)], context="hi"),
        lambda r: r.predict(np.zeros((2, 100), np.float32)),
    ):
        with pytest.raises(Exception) as ours:
            call(rt)
        with pytest.raises(Exception) as theirs:
            call(rec)
        assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("fixture", ["audio_recognizer_dir", "whisper_recognizer_dir"])
def test_export_covers_wav2vec2_and_attention_pooling_with_int8(fixture, request, tmp_path_factory):
    """A frozen wav2vec2 probe (mean pooling, last state) and a Whisper classifier with learned attention pooling."""
    import onnx

    model_dir = copy_recognizer(request.getfixturevalue(fixture), tmp_path_factory, fixture)
    rec = Recognizer.load(model_dir)
    assert has_runtime(model_dir)  # `train` wrote one; exported again, with int8
    report = write_runtime(rec.model, model_dir, int8=True)
    assert report.fp32.max_abs_diff < 1e-4 and report.fp32.label_agreement == 1.0 and report.fp32.samples == 5
    assert report.int8 is not None and 0.0 < report.int8.max_abs_diff < 0.2
    ops = {n.op_type for n in onnx.load(str(model_dir / "runtime" / "encoder.int8.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"} and "ConvInteger" not in ops  # only MatMuls are quantised
    graph = onnx.load(str(model_dir / "runtime" / "encoder.onnx")).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and dims[-1] == "time"
    clips = [tone(515, 0.73), tone(185, 2.31), tone(515, 1.5), tone(185, 1.5)]  # lengths never seen in the export
    rt = Runtime.load(model_dir)
    np.testing.assert_allclose(rt.predict_proba(clips), Recognizer.load(model_dir).predict_proba(clips), atol=1e-4)
    rt8 = Runtime.load(model_dir, int8=True)
    assert rt8.engine == "onnx-int8" and rt8.predict_proba(clips).shape == (4, 2)
    # the front end is the backbone's own preprocessing (cropped to max_seconds)
    long = tone(300, 12.0)
    key = "input_features" if rec.backbone.spec.family == "whisper" else "input_values"
    np.testing.assert_allclose(rt.inputs([long])[0], rec.backbone.preprocess([long])[key][0].numpy(), atol=1e-4)


def test_text_recognizers_get_no_runtime(text_recognizer_dir, tmp_path):
    assert not has_runtime(text_recognizer_dir)
    with pytest.raises(ExportError, match="audio recognizers"):
        write_runtime(Recognizer.load(text_recognizer_dir).model, text_recognizer_dir)


def test_damaged_stale_or_missing_runtime_files_are_named(logistic_dir, tmp_path_factory):
    model_dir = copy_recognizer(logistic_dir, tmp_path_factory, "damaged")
    head = model_dir / "runtime" / "head.safetensors"
    data = bytearray(head.read_bytes())
    data[-1] ^= 1
    head.write_bytes(bytes(data))
    with pytest.raises(RecognizerError, match=r"head\.safetensors: damaged or modified"):
        Runtime.load(model_dir)
    with pytest.raises(RecognizerError, match="has no int8 encoder"):
        Runtime.load(logistic_dir, int8=True)

    stale = copy_recognizer(logistic_dir, tmp_path_factory, "stale")
    info = json.loads((stale / "emovox.json").read_text())
    info["files"]["weights.safetensors"] = "0" * 64  # the recognizer was saved again, its runtime was not
    (stale / "emovox.json").write_text(json.dumps(info))
    with pytest.raises(RecognizerError, match="exported from other weights"):
        Runtime.load(stale)

    newer = copy_recognizer(logistic_dir, tmp_path_factory, "newer")
    manifest = json.loads((newer / "runtime" / "runtime.json").read_text())
    manifest["format"] = 99
    (newer / "runtime" / "runtime.json").write_text(json.dumps(manifest))
    with pytest.raises(RecognizerError, match="runtime format 99"):
        Runtime.load(newer)

    bare = copy_recognizer(logistic_dir, tmp_path_factory, "bare")
    shutil.rmtree(bare / "runtime")
    assert not has_runtime(bare)
    with pytest.raises(RecognizerError, match="holds no runtime"):
        Runtime.load(bare)


def test_the_head_reads_the_layers_with_weight_and_refuses_a_graph_that_disagrees(logistic_dir, tmp_path_factory):
    rec = Recognizer.load(logistic_dir)
    assert read_positions(rec.model) == [0, 1]
    with torch.no_grad():
        rec.model.head.linear.weight[:, -1] = 0.5  # now the head reads state 2 too
    assert read_positions(rec.model) == [0, 1, 2]
    model_dir = copy_recognizer(logistic_dir, tmp_path_factory, "refused")
    with pytest.raises(ExportError, match="differs from torch"):
        write_runtime(rec.model, model_dir, tolerance=-1.0)  # an impossible tolerance: the export is refused ...
    assert json.loads((model_dir / "runtime" / "runtime.json").read_text())["encoder"]["layers"] == [0, 1]  # ... and the old one kept
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".runtime")]


# --- the real Whisper-base on real EmoDB clips ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def emodb_clips(emodb_dir):
    from emovox.audio import load_audio

    files = sorted((emodb_dir / "wav").glob("*.wav"))
    picked = files[:: len(files) // 8][:8]
    return [load_audio(f) for f in picked]


@pytest.fixture(scope="module")
def whisper_base_runtime(whisper_base_dir, emodb_clips, tmp_path_factory):
    """The main recipe's shape on the real Whisper-base: every state kept, a concatenating logistic-style head with
    weight on states 2-5 only (as every fold chose), standardised with real statistics; saved, then exported."""
    from emovox.backbones.loader import load_backbone
    from emovox.models.classifier import ClassifierConfig, ClassifierModel

    config = ClassifierConfig(backbone=str(whisper_base_dir), mode="frozen", layers="all", combine="concat", head="logistic")
    model = ClassifierModel(config, LABELS, load_backbone(str(whisper_base_dir))).eval()
    from emovox.data.examples import Example

    examples = [Example(str(i), 0, audio=c, length=len(c) / 16000) for i, c in enumerate(emodb_clips)]
    model.fit_statistics(examples)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(len(LABELS), 7, 512, generator=g) * 0.05
    w[:, [0, 1, 6]] = 0.0
    with torch.no_grad():
        model.head.linear.weight.copy_(w.reshape(len(LABELS), -1))
        model.head.linear.bias.copy_(torch.randn(len(LABELS), generator=g))
        model.temperature.fill_(1.3)
    out = tmp_path_factory.mktemp("whisper-base-rt") / "rec"
    Recognizer(model, LABELS, {"name": "whisper-base-runtime-test", "emovox_version": "test"}).save(out)
    report = write_runtime(model, out, samples=emodb_clips[:3])
    return out, report


def test_numpy_log_mel_equals_the_feature_extractor_and_emovox_whisper_input(whisper_base_dir, emodb_clips):
    from transformers import WhisperFeatureExtractor

    from emovox.backbones.loader import load_backbone
    from emovox.inference.export import frontend_of

    backbone = load_backbone(str(whisper_base_dir), max_seconds=4.0)
    frontend, _ = frontend_of(backbone)
    extractor = WhisperFeatureExtractor.from_pretrained(str(whisper_base_dir))
    for clip in [*emodb_clips, np.concatenate(emodb_clips[:3])]:  # the last one is cropped to 4 s
        ours = frontend(clip)
        cropped = clip[: 4 * 16000]
        theirs = extractor(cropped, sampling_rate=16000, padding="longest", return_tensors="np")["input_features"][0]
        assert ours.shape == theirs.shape == (80, len(cropped) // 160)
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
        np.testing.assert_allclose(ours, backbone.preprocess([clip])["input_features"][0].numpy(), atol=1e-4, rtol=0)


def test_whisper_base_runtime_runs_states_0_to_5_and_gives_torchs_answers_on_emodb(whisper_base_runtime, emodb_clips):
    import onnx

    model_dir, report = whisper_base_runtime
    assert report.layers == [2, 3, 4, 5] and report.runs == "encoder layers 1-5 of 6; the final layer norm is not run"
    ops = [n.op_type for n in onnx.load(str(model_dir / "runtime" / "encoder.onnx")).graph.node]
    assert ops.count("LayerNormalization") == 10  # 5 of Whisper-base's 6 layers, 2 norms each, no final norm
    rt, rec = Runtime.load(model_dir), Recognizer.load(model_dir)
    ours, theirs = rt.predict_proba(emodb_clips), rec.predict_proba(emodb_clips)
    assert np.abs(ours - theirs).max() <= 1e-3
    assert (ours.argmax(1) == theirs.argmax(1)).all()
    assert len(set(theirs.argmax(1))) > 1 and theirs.max(1).min() < 0.99  # answers that can differ


# --- every head the runtime covers, without training: heads set at random, then exported --------------------------


@pytest.mark.parametrize(
    "backbone, settings",
    [
        ("whisper-base", {"layers": "all", "combine": "weighted", "head": "mlp", "hidden": 16}),
        ("wavlm-base", {"layers": [0, 1], "combine": "concat", "head": "linear", "pooling": "stats", "standardize": False}),
        ("wav2vec2-large-xlsr-53", {"layers": [1], "combine": "weighted", "head": "linear", "pooling": "max"}),
    ],
    ids=["whisper-weighted-mlp", "wavlm-stats-unstandardised", "xlsr-max-one-layer"],
)
def test_every_head_shape_gives_torchs_answers(backbone, settings, tmp_path):
    from emovox.backbones.loader import load_backbone
    from emovox.data.examples import Example
    from emovox.models.classifier import ClassifierConfig, ClassifierModel

    config = ClassifierConfig(backbone=backbone, tiny=True, mode="frozen", **settings)
    torch.manual_seed(0)
    model = ClassifierModel(config, ["a", "b", "c"], load_backbone(backbone, tiny=True)).eval()
    clips = [tone(200 + 90 * k, 0.5 + 0.3 * k) + 0.05 * np.sin(np.arange(int((0.5 + 0.3 * k) * 16000)) / (3 + k)).astype(np.float32)
             for k in range(4)]
    model.fit_statistics([Example(str(i), 0, audio=c, length=len(c) / 16000) for i, c in enumerate(clips)])
    with torch.no_grad():
        for p in model.head.parameters():
            p.copy_(torch.randn_like(p))
        if model.reducer.weights is not None:
            model.reducer.weights.weights.copy_(torch.randn_like(model.reducer.weights.weights))
    Recognizer(model, ["a", "b", "c"], {"name": "heads"}).save(tmp_path / "rec")
    report = write_runtime(model, tmp_path / "rec", samples=clips)
    assert report.fp32.max_abs_diff < 1e-4
    np.testing.assert_allclose(Runtime.load(tmp_path / "rec").predict_proba(clips), Recognizer.load(tmp_path / "rec").predict_proba(clips),
                               atol=1e-4)


def test_the_mel_projection_without_sparse_structure_is_the_dense_product():
    from emovox.inference.frontend import WhisperLogMel

    rng = np.random.default_rng(0)
    filters = np.abs(rng.standard_normal((201, 8))) * (rng.random((201, 8)) < 0.1)
    power = np.abs(rng.standard_normal((50, 201)))
    banded = WhisperLogMel(filters, 16000)
    assert banded._sparse is not None
    np.testing.assert_allclose(banded._mel(power), power @ filters, rtol=1e-12)
    filters[:, 3] = 0.0  # an empty filter: the dense product
    empty = WhisperLogMel(filters, 16000)
    assert empty._sparse is None
    np.testing.assert_allclose(empty._mel(power), power @ filters, rtol=1e-12)
