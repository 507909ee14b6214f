"""The runtime of an audio recognizer: what inference needs without torch, written into its directory.

``write_runtime`` (``emovox export MODEL_DIR``; ``emovox train`` calls it for the recognizers it
covers) writes ``MODEL_DIR/runtime/`` (layout: ``emovox.inference.runtime``):

- the encoder as ONNX: the backbone's front-end output (log-mel for Whisper, the normalised waveform
  for the wav2vec2 family) -> the pooled hidden states the head reads, ``[B, L, W]``. The graph stops
  after the highest of those states (``Backbone.stop_after``): the main recipe's head reads states
  2-5 of Whisper-base, so its graph runs encoder layers 1-5 and never layer 6 nor the final norm.
  Which states the head reads is read off its weights: a concatenating head whose columns of a layer
  are all zero (a logistic head chosen on a layer subset) does not read that layer. Pooling (mean,
  statistics, attention, ...) is inside the graph, over all frames of an unpadded clip; batch and
  time axes are dynamic.
- the head as numpy arrays (standardisation, layer combination, classifier, temperature:
  ``emovox.inference.head``) and the front end's arrays (Whisper's mel filter bank);
- ``runtime.json``: labels, front-end and speech-check settings, the states the graph outputs, and
  the sha256 of every file (and of the recognizer files it came from).

Every export is checked: torch (the recognizer's own padded, masked path) and the runtime run the
same sample clips (several lengths, and two of equal length as one batch); the float runtime must
agree within ``tolerance`` or the export is refused. ``int8`` also writes ``encoder.int8.onnx``
(``onnxruntime.quantization.quantize_dynamic`` on the MatMuls, weights int8 per channel) and
reports its agreement, which is the user's to weigh against its speed.

Exporter: ``torch.onnx.export(dynamo=False)`` (TorchScript-based, opset 17): it works offline with
dynamic axes, and onnxruntime runs its graphs unchanged (the dynamo exporter needs ``onnxscript``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emovox.atomic import sha256_file
from emovox.audio import SAMPLE_RATE
from emovox.errors import EmovoxError
from emovox.inference import runtime as rt
from emovox.inference.activity import DEFAULT as SPEECH_CHECK
from emovox.inference.export_head import head_of, read_positions
from emovox.inference.frontend import Waveform, WhisperLogMel
from emovox.models.pooling import pool
from emovox.version import __version__

OPSET = 17
#: families whose backbone runs without padding masks in one traced graph
SSL_FAMILIES = ("wav2vec2", "hubert", "wavlm", "unispeech")
EXPORTABLE = SSL_FAMILIES + ("whisper",)
#: poolings the graph computes (``last``/``eos`` are for text)
POOLINGS = ("mean", "sum", "max", "stats", "attention")


class ExportError(EmovoxError):
    """A recognizer cannot be exported (text model, unsupported family) or the export is unusable."""


# --- what can be exported -------------------------------------------------------------------------


def unsupported(model) -> str | None:
    """Why ``model`` has no runtime, or None when it can have one.

    Covered: the ``classifier`` kind over one audio backbone reading the utterance itself, of the
    Whisper or wav2vec2 families (wav2vec2, HuBERT, WavLM, UniSpeech), in any mode (frozen,
    fine-tuned, top layers fine-tuned), with any audio pooling and a linear, MLP or logistic head.
    """
    from emovox.models.classifier import ClassifierModel

    if not isinstance(model, ClassifierModel):
        return f"a runtime is written for single-backbone audio classifiers; this recognizer is a {model.kind!r} model"
    branch = model.branch
    if branch.modality != "audio":
        return ("a runtime is written for audio recognizers; this one reads transcripts (its tokenizer and text model are "
                "not part of an audio graph)")
    if branch.cfg.input != "utterance":
        return f"this recognizer's branch reads the {branch.cfg.input}, not the utterance alone"
    family = branch.backbone.spec.family
    if family not in EXPORTABLE:
        return f"a runtime covers the {', '.join(EXPORTABLE)} families; this recognizer's backbone is {family!r}"
    if branch.pooling not in POOLINGS:
        return f"pooling {branch.pooling!r} is not an audio pooling the runtime computes ({', '.join(POOLINGS)})"
    return None


def frontend_of(backbone) -> tuple[WhisperLogMel | Waveform, dict[str, np.ndarray]]:
    """The numpy front end equal to the backbone's feature extractor, and its arrays."""
    fe = backbone.processor
    if backbone.spec.family == "whisper":
        if float(getattr(fe, "dither", 0.0) or 0.0) != 0.0:
            raise ExportError("the Whisper feature extractor adds random dither; a runtime reproduces deterministic ones only")
        filters = np.asarray(fe.mel_filters, dtype=np.float32)  # what the extractor's torch path multiplies by
        frontend = WhisperLogMel(filters.astype(np.float64), backbone.max_samples, int(fe.n_fft), int(fe.hop_length),
                                 int(fe.sampling_rate))
        return frontend, {"mel_filters": filters}
    return Waveform(backbone.max_samples, bool(getattr(fe, "do_normalize", False))), {}


# --- the exported computation -------------------------------------------------------------------


class _UnpaddedBackbone(nn.Module):
    """The recognizer's backbone for equal-length clips: its own forward, with an all-true mask
    made from the input's shape (so it follows the traced dynamic axes) and without the per-clip
    front-end loop, which only exists to keep padding out of GroupNorm statistics."""

    def __init__(self, backbone):
        super().__init__()
        self.inner = backbone

    def forward(self, x: torch.Tensor, all_layers: bool = False):
        if self.inner.spec.family == "whisper":  # x: [B, mel, frames]
            batch = {"input_features": x, "attention_mask": torch.ones_like(x[:, 0, :], dtype=torch.long)}
        else:  # x: [B, samples]
            batch = {"input_values": x, "attention_mask": torch.ones_like(x, dtype=torch.long)}
        per_clip = getattr(self.inner, "per_clip_cnn", None)
        if per_clip:
            self.inner.per_clip_cnn = False
        try:
            return self.inner(batch, all_layers=all_layers)
        finally:
            if per_clip:
                self.inner.per_clip_cnn = per_clip


class EncoderGraph(nn.Module):
    """``front-end output [B, ...] -> pooled hidden states [B, L, W]`` for the states in ``states``."""

    def __init__(self, branch, states: Sequence[int]):
        super().__init__()
        self.backbone = _UnpaddedBackbone(branch.backbone)
        self.states = list(states)
        self.top = max(self.states)
        self.pooling = branch.pooling
        self.attention = branch.attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.backbone.inner.stop_after(self.top):
            enc = self.backbone(x, all_layers=True)
        hidden = torch.stack([enc.hidden[i] for i in self.states])  # [L, B, T, H]
        if self.attention is not None:
            pooled = self.attention(hidden, enc.mask)
        else:
            pooled = pool(hidden, enc.mask, self.pooling)
        return pooled.transpose(0, 1)


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
    runtime: str
    exporter: str
    opset: int
    input: str
    layers: list[int]
    runs: str
    dynamic_axes: dict
    seconds: float
    size_bytes: int
    fp32: Agreement
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


def runs_description(backbone, top: int) -> str:
    """Which part of the encoder a graph ending at hidden state ``top`` runs, in words."""
    last = backbone.num_layers - 1
    if top >= last:
        return f"all {last} encoder layers"
    skipped = "" if backbone.spec.family != "whisper" and not getattr(backbone.model.config, "do_stable_layer_norm", False) \
        else "; the final layer norm is not run"
    return f"encoder layers 1-{top} of {last}{skipped}" if top else f"the embeddings only (no encoder layer){skipped}"


def write_runtime(
    model,
    model_dir: str | Path,
    *,
    int8: bool = False,
    samples: Sequence[np.ndarray] | None = None,
    tolerance: float = 1e-4,
    on_stage: Callable[[str], None] | None = None,
) -> ExportReport:
    """Write ``model_dir/runtime/`` for ``model`` (the recognizer saved in ``model_dir``), check it, and
    record it in ``emovox.json``; returns the report.

    Raises ``ExportError`` when the recognizer cannot have a runtime (``unsupported``) or when the float
    runtime disagrees with torch by more than ``tolerance`` (an export bug, never expected; nothing is
    then written). ``on_stage`` is told the name of each stage as it starts (``export``, ``check``,
    ``int8``, ``check int8``), for progress.
    """
    import onnx
    from safetensors.numpy import save_file

    from emovox.models.directory import record_files

    stage = on_stage or (lambda name: None)
    why = unsupported(model)
    if why is not None:
        raise ExportError(why)
    model_dir = Path(model_dir)
    meta_path = model_dir / "emovox.json"
    info = json.loads(meta_path.read_text(encoding="utf-8"))
    if not isinstance(info.get("files"), dict):
        raise ExportError(f"{meta_path}: a runtime is added to directories written by this emovox; train it again")
    model = model.eval()
    branch, backbone = model.branch, model.branch.backbone
    positions = read_positions(model)
    states = [branch.layer_index[j] for j in positions]
    frontend, frontend_arrays = frontend_of(backbone)
    head = head_of(model, positions)
    clips = list(samples) if samples is not None else sample_clips()
    if not clips:
        raise ExportError("no sample clips to check the export with")

    work = Path(tempfile.mkdtemp(dir=model_dir, prefix=".runtime-"))  # hidden: never one of the recognizer's files
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp's 0700 would hide the runtime from other users of the recognizer
    try:
        stage("export")
        t0 = time.time()
        graph = EncoderGraph(branch, states).eval()
        example = torch.from_numpy(frontend(clips[0])[None])
        time_axis = 2 if isinstance(frontend, WhisperLogMel) else 1
        dynamic_axes = {rt.INPUT: {0: "batch", time_axis: "time"}, rt.OUTPUT: {0: "batch"}}
        with torch.inference_mode(False), torch.no_grad(), _quiet_export_warnings():
            torch.onnx.export(
                graph, (example,), str(work / rt.ENCODER), dynamo=False, opset_version=OPSET, input_names=[rt.INPUT],
                output_names=[rt.OUTPUT], dynamic_axes=dynamic_axes, do_constant_folding=True,
            )
        onnx.checker.check_model(str(work / rt.ENCODER))
        seconds = time.time() - t0
        save_file(head.arrays(), str(work / rt.HEAD))
        save_file(frontend_arrays, str(work / rt.FRONTEND))
        sources = {rel: digest for rel, digest in info["files"].items()
                   if rel == "weights.safetensors" or rel.startswith("branches/")}
        manifest = {
            "format": rt.FORMAT,
            "emovox_version": __version__,
            "recognizer": info.get("name"),
            "labels": list(info["labels"]),
            "max_seconds": float(backbone.max_seconds),
            "family": backbone.spec.family,
            "frontend": {**frontend.to_dict(), "file": rt.FRONTEND},
            "encoder": {
                "file": rt.ENCODER, "input": rt.INPUT, "output": rt.OUTPUT, "layers": states,
                "hidden_states": backbone.num_layers, "runs": runs_description(backbone, max(states)),
                "pooling": branch.pooling, "width": branch.width,
                "opset": OPSET,
            },
            "int8": None,
            "head": {**head.settings(), "file": rt.HEAD},
            "speech_check": SPEECH_CHECK.to_dict(),
            "source": sources,
            "files": {},
        }
        _write_manifest(work, manifest)

        stage("check")
        reference = _torch_reference(model, clips)
        fp32 = _agreement(rt.Runtime.open(work, manifest, info), clips, reference)
        if not fp32.max_abs_diff <= tolerance:
            raise ExportError(
                f"{model_dir}: the runtime differs from torch by {fp32.max_abs_diff:.2e} (> {tolerance:g}); please report this"
            )
        report = ExportReport(
            str(model_dir / rt.RUNTIME_DIR), "torch.onnx.export (TorchScript, dynamo=False)", OPSET,
            "input_features" if isinstance(frontend, WhisperLogMel) else "input_values", states, manifest["encoder"]["runs"],
            {rt.INPUT: {str(k): v for k, v in dynamic_axes[rt.INPUT].items()}}, round(seconds, 2),
            (work / rt.ENCODER).stat().st_size, fp32, sample_seconds=[round(len(c) / SAMPLE_RATE, 3) for c in clips],
        )  # fmt: skip
        manifest["check"] = {"fp32": asdict(fp32), "sample_seconds": report.sample_seconds}
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            stage("int8")
            with _quiet_quantizer():
                quantize_dynamic(str(work / rt.ENCODER), str(work / rt.ENCODER_INT8), op_types_to_quantize=["MatMul"],
                                 weight_type=QuantType.QInt8, per_channel=True)
            manifest["int8"] = {"file": rt.ENCODER_INT8, "quantization": "dynamic int8 MatMul, weights per channel"}
            _write_manifest(work, manifest)
            stage("check int8")
            report.int8 = _agreement(rt.Runtime.open(work, manifest, info, int8=True), clips, reference)
            report.int8_size_bytes = (work / rt.ENCODER_INT8).stat().st_size
            manifest["check"]["int8"] = asdict(report.int8)
        _write_manifest(work, manifest)
        target = model_dir / rt.RUNTIME_DIR
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record_files(model_dir, runtime={
        "format": rt.FORMAT, "engines": ["onnx", *(["onnx-int8"] if int8 else [])], "layers": states,
        "runs": manifest["encoder"]["runs"], "check": manifest["check"],
    })  # fmt: skip
    return report


def _write_manifest(folder: Path, manifest: dict) -> None:
    from emovox.atomic import atomic_write_json

    manifest["files"] = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != rt.MANIFEST}
    atomic_write_json(folder / rt.MANIFEST, manifest)


def _torch_reference(model, clips) -> np.ndarray:
    """The recognizer's own (padded, masked) torch path on each clip: what the runtime must match."""
    backbone = model.branch.backbone
    with torch.inference_mode():
        return np.stack([
            torch.softmax(model.forward_backbone_inputs(backbone.preprocess([c])).float(), -1)[0].numpy() for c in clips
        ])


def _agreement(runtime: rt.Runtime, clips, reference: np.ndarray) -> Agreement:
    probs = runtime.predict_proba(clips)  # equal-length clips run as one batch: the batch axis is checked too
    diff = float(np.abs(probs - reference).max())
    agree = float(np.mean(probs.argmax(1) == reference.argmax(1)))
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
