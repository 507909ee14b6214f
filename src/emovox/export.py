"""ONNX export of audio recognizers, checked against torch, with optional dynamic int8.

What the ONNX graph computes: model input (the backbone's own preprocessing output: the
normalised waveform for wav2vec2-family models, the log-mel spectrogram for Whisper) ->
class probabilities, with dynamic ``batch`` and ``time`` axes. The graph takes *unpadded*
clips: a batch is clips of equal length (e.g. the fixed windows of a long recording), and clips
of different lengths are run one by one. That is what makes the export exact: the torch
backbones hide padding with per-clip loops over Python lengths, which a traced graph would
freeze to the lengths of the example input; without padding those loops are not needed, and
the graph follows any length. The preprocessing (a numpy feature extractor) stays outside the
graph and is stored in the ONNX metadata, so ``OnnxRecognizer`` needs the ``.onnx`` file only.

Exporter: PyTorch 2.13's default ``torch.onnx.export(dynamo=True)`` needs ``onnxscript``, which
emovox does not depend on; the TorchScript-based exporter (``dynamo=False``) works offline with
``dynamic_axes`` and gives graphs onnxruntime runs unchanged, so it is used here (opset 17).

int8: ``onnxruntime.quantization.quantize_dynamic`` on MatMul only (the transformer's linear
layers; convolutions and the classifier's softmax stay float), weights int8 per channel,
activations quantised on the fly.

Every export is checked: torch and onnxruntime run the same sample clips (several lengths, and
a batch of two) and the report gives the largest absolute probability difference and the
fraction of clips given the same label.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from emovox.errors import EmovoxError

if TYPE_CHECKING:
    from emovox.recognizer import Recognizer

SAMPLE_RATE = 16_000
OPSET = 17
#: families whose backbone runs without padding masks in one traced graph
SSL_FAMILIES = ("wav2vec2", "hubert", "wavlm", "unispeech")
EXPORTABLE = SSL_FAMILIES + ("whisper",)
METADATA_KEY = "emovox"


class ExportError(EmovoxError):
    """A recognizer cannot be exported (text model, unsupported family) or the export is unusable."""


# --- the exported computation -------------------------------------------------------------------


class _UnpaddedBackbone(nn.Module):
    """The recognizer's backbone for equal-length clips: its own forward, with an all-true mask
    made from the input's shape (so it follows the traced dynamic axes) and without the per-clip
    front-end loop, which only exists to keep padding out of GroupNorm statistics."""

    def __init__(self, backbone):
        super().__init__()
        self.inner = backbone
        self.spec = backbone.spec
        self.hidden_size = backbone.hidden_size
        self.num_layers = backbone.num_layers

    def forward(self, inputs: dict, all_layers: bool = False):
        if self.spec.family == "whisper":
            x = inputs["input_features"]  # [B, mel, frames]
            batch = {"input_features": x, "attention_mask": torch.ones_like(x[:, 0, :], dtype=torch.long)}
        else:
            x = inputs["input_values"]  # [B, samples]
            batch = {"input_values": x, "attention_mask": torch.ones_like(x, dtype=torch.long)}
        per_clip = getattr(self.inner, "per_clip_cnn", None)
        if per_clip:
            self.inner.per_clip_cnn = False
        try:
            return self.inner(batch, all_layers=all_layers)
        finally:
            if per_clip:
                self.inner.per_clip_cnn = per_clip


class ProbabilityGraph(nn.Module):
    """``model input -> class probabilities`` for one tensor input (what is exported)."""

    def __init__(self, recognizer: Recognizer):
        super().__init__()
        self.model = recognizer.model
        self.unpadded = _UnpaddedBackbone(recognizer.backbone)
        self.input_name = input_name(recognizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _swapped_backbone(self.model.branch, self.unpadded):
            logits = self.model.forward_backbone_inputs({self.input_name: x})
        return torch.softmax(logits.float(), dim=-1)


@contextmanager
def _swapped_backbone(branch: nn.Module, replacement: nn.Module):
    original = branch._modules["backbone"]
    branch._modules["backbone"] = replacement
    try:
        yield
    finally:
        branch._modules["backbone"] = original


def input_name(recognizer: Recognizer) -> str:
    return "input_features" if recognizer.backbone.spec.family == "whisper" else "input_values"


def check_exportable(recognizer: Recognizer) -> None:
    if not hasattr(recognizer.model, "forward_backbone_inputs") or recognizer.backbone is None:
        raise ExportError(
            f"ONNX export is for single-backbone audio classifiers; this recognizer is a {recognizer.info.get('kind')!r} model"
        )
    if recognizer.modality != "audio":
        raise ExportError(
            f"ONNX export is for audio recognizers; this one reads {recognizer.modality} "
            "(its tokenizer and text model are not part of an audio graph)"
        )
    family = recognizer.backbone.spec.family
    if family not in EXPORTABLE:
        raise ExportError(f"ONNX export supports the {', '.join(EXPORTABLE)} families; this recognizer's backbone is {family!r}")
    if getattr(recognizer, "normalization", "none") != "none":
        raise ExportError(
            f"this recognizer standardises clips with their {recognizer.normalization}'s statistics, which one "
            "clip-at-a-time graph cannot gather; use it through emovox (predict, Recognizer) instead"
        )


# --- preprocessing outside the graph ---------------------------------------------------------------


@dataclass(frozen=True)
class Preprocessing:
    """How a 16 kHz clip becomes the graph's input; stored as JSON in the ONNX metadata."""

    family: str
    input_name: str
    max_seconds: float
    feature_extractor: dict

    def build(self):
        """The transformers feature extractor, rebuilt from its stored config (no files needed)."""
        import transformers

        name = self.feature_extractor.get("feature_extractor_type", "")
        cls = getattr(transformers, name, None)
        if cls is None or not name.endswith("FeatureExtractor"):
            raise ExportError(f"the export's preprocessing names an unknown feature extractor {name!r}")
        return cls.from_dict(self.feature_extractor)


def clip_input(extractor, family: str, clip: np.ndarray, max_seconds: float) -> np.ndarray:
    """The graph input of one clip (no batch axis), exactly as the torch backbone makes it."""
    clip = np.asarray(clip, dtype=np.float32)[: int(round(max_seconds * SAMPLE_RATE))]
    if family == "whisper":
        return extractor(clip, sampling_rate=SAMPLE_RATE, padding="longest", return_tensors="np")["input_features"][0]
    return extractor(clip, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_values"][0]


def preprocessing_of(recognizer: Recognizer) -> Preprocessing:
    fe = recognizer.backbone.processor
    data = json.loads(fe.to_json_string())
    data.pop("mel_filters", None)  # recomputed from the sizes; a large array in the JSON otherwise
    return Preprocessing(recognizer.backbone.spec.family, input_name(recognizer), float(recognizer.backbone.max_seconds), data)


# --- running an exported model ---------------------------------------------------------------------


class OnnxRecognizer:
    """Predict with an exported ``.onnx`` file alone (onnxruntime + the stored preprocessing)."""

    def __init__(self, path: str | Path, *, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"{self.path}: ONNX file not found")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for unreadable models
            raise ExportError(f"{self.path}: onnxruntime cannot load it ({exc})") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise ExportError(f"{self.path}: not an emovox export (no '{METADATA_KEY}' metadata); export it with `emovox export`")
        info = json.loads(meta)
        self.labels = tuple(info["labels"])
        self.preprocessing = Preprocessing(**info["preprocessing"])
        self.extractor = self.preprocessing.build()

    def inputs(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        p = self.preprocessing
        return [clip_input(self.extractor, p.family, c, p.max_seconds) for c in clips]

    def predict_proba(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities ``[N, C]``; clips of equal length share one run, others run one by one."""
        out = np.zeros((len(clips), len(self.labels)), dtype=np.float32)
        feats = self.inputs(clips)
        groups: dict[tuple, list[int]] = {}
        for i, f in enumerate(feats):
            groups.setdefault(f.shape, []).append(i)
        for idx in groups.values():
            batch = np.stack([feats[i] for i in idx]).astype(np.float32)
            out[idx] = self.session.run(None, {"input": batch})[0]
        return out

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Run prepared graph inputs ``[B, ...]`` (equal lengths) directly."""
        return self.session.run(None, {"input": batch.astype(np.float32)})[0]


# --- export and check -------------------------------------------------------------------------------


@dataclass
class Agreement:
    max_abs_diff: float
    label_agreement: float
    samples: int

    def ok(self, tolerance: float) -> bool:
        return self.max_abs_diff <= tolerance and self.label_agreement == 1.0


@dataclass
class ExportReport:
    onnx: str
    exporter: str
    opset: int
    input: str
    dynamic_axes: dict
    seconds: float
    size_bytes: int
    fp32: Agreement
    int8_onnx: str | None = None
    int8_size_bytes: int | None = None
    int8: Agreement | None = None
    sample_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_clips(seed: int = 0) -> list[np.ndarray]:
    """Deterministic check clips: tones with noise at several lengths, plus two of equal length (a batch)."""
    rng = np.random.default_rng(seed)
    clips = []
    for seconds, freq in ((0.6, 180.0), (1.37, 520.0), (2.9, 330.0), (1.0, 200.0), (1.0, 480.0)):
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        x = 0.25 * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(len(t))
        clips.append(x.astype(np.float32))
    return clips


def export_onnx(
    recognizer: Recognizer,
    out: str | Path,
    *,
    int8: bool = False,
    samples: Sequence[np.ndarray] | None = None,
    tolerance: float = 1e-4,
    on_stage: Callable[[str], None] | None = None,
) -> ExportReport:
    """Write ``out`` (and ``<out>.int8.onnx`` with ``int8``), check both against torch, return the report.

    Raises ``ExportError`` when the float graph disagrees with torch by more than ``tolerance``
    (an export bug, never expected); int8 differences are reported, not enforced, since
    quantisation error is what a user weighs against the speed-up. ``on_stage`` is told the name of
    each stage as it starts (``export``, ``check``, ``int8``, ``check int8``), for progress.
    """
    import onnx

    stage = on_stage or (lambda name: None)

    check_exportable(recognizer)
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: name the output file *.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = ProbabilityGraph(recognizer).eval()
    prep = preprocessing_of(recognizer)
    extractor = recognizer.backbone.processor
    clips = list(samples) if samples is not None else sample_clips()
    if not clips:
        raise ExportError("no sample clips to check the export with")
    example = torch.from_numpy(clip_input(extractor, prep.family, clips[0], prep.max_seconds)[None])
    time_axis = 2 if prep.family == "whisper" else 1
    dynamic_axes = {"input": {0: "batch", time_axis: "time"}, "probabilities": {0: "batch"}}
    t0 = time.time()
    stage("export")
    with torch.inference_mode(False), torch.no_grad(), _quiet_export_warnings():
        torch.onnx.export(
            graph, (example,), str(out), dynamo=False, opset_version=OPSET, input_names=["input"],
            output_names=["probabilities"], dynamic_axes=dynamic_axes, do_constant_folding=True,
        )
    seconds = time.time() - t0
    model = onnx.load(str(out))
    meta = {"labels": list(recognizer.labels), "preprocessing": asdict(prep), "recognizer": recognizer.info.get("name"),
            "emovox_version": recognizer.info.get("emovox_version")}
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))

    stage("check")
    reference = _torch_reference(graph, extractor, prep, clips)
    fp32 = _agreement(OnnxRecognizer(out), extractor, prep, clips, reference)
    if not fp32.max_abs_diff <= tolerance:
        raise ExportError(
            f"{out}: the ONNX graph differs from torch by {fp32.max_abs_diff:.2e} (> {tolerance:g}); please report this"
        )
    report = ExportReport(
        str(out), "torch.onnx.export (TorchScript, dynamo=False)", OPSET, prep.input_name,
        {"input": {str(k): v for k, v in dynamic_axes["input"].items()}}, round(seconds, 2), out.stat().st_size, fp32,
        sample_seconds=[round(len(c) / SAMPLE_RATE, 3) for c in clips],
    )
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q = out.with_name(out.stem + ".int8.onnx")
        stage("int8")
        with _quiet_quantizer():
            quantize_dynamic(str(out), str(q), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8, per_channel=True)
        report.int8_onnx, report.int8_size_bytes = str(q), q.stat().st_size
        stage("check int8")
        report.int8 = _agreement(OnnxRecognizer(q), extractor, prep, clips, reference)
    return report


def _torch_reference(graph: ProbabilityGraph, extractor, prep: Preprocessing, clips) -> list[np.ndarray]:
    """The recognizer's own (padded, masked) torch path on each clip: what the export must match."""
    rec_model = graph.model
    with torch.inference_mode():
        return [torch.softmax(rec_model.forward_backbone_inputs(graph.unpadded.inner.preprocess([c])).float(), -1)[0].numpy()
                for c in clips]


def _agreement(runner: OnnxRecognizer, extractor, prep: Preprocessing, clips, reference) -> Agreement:
    probs = runner.predict_proba(clips)  # equal-length clips run as one batch: the batch axis is checked too
    ref = np.stack(reference)
    diff = float(np.abs(probs - ref).max())
    agree = float(np.mean(probs.argmax(1) == ref.argmax(1)))
    return Agreement(diff, agree, len(clips))


@contextmanager
def _quiet_export_warnings():
    """Silence what does not apply here: the legacy exporter's deprecation notice, tracer
    warnings about constant Python booleans (SDPA's ``is_causal``, constant for encoders)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # HF's feature-vector mask indexes with lengths - 1, which is never negative
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator of advanced indexing")
        yield


@contextmanager
def _quiet_quantizer():
    """onnxruntime's quantizer logs advice about shape-inference pre-processing on the root
    logger; dynamic MatMul quantisation does not need it."""
    import logging

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    f = _Drop()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)
