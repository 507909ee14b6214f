"""``Runtime``: a recognizer's ``runtime/`` run with onnxruntime and numpy, without torch.

Layout, inside the recognizer directory (written by ``emovox.inference.export.write_runtime``)::

    MODEL_DIR/runtime/
      runtime.json         labels, front end, which hidden states the encoder outputs, the head's
                           settings, the speech check, the sha256 of every file below and of the
                           recognizer files it was exported from, the export's own agreement check
      encoder.onnx         front-end output -> per-layer pooled states [B, L, W], cut after the
                           highest hidden state the head reads (float32)
      encoder.int8.onnx    the same with dynamic int8 MatMuls (``emovox export --int8``)
      head.safetensors     the head's arrays (``emovox.inference.head``)
      frontend.safetensors the front end's arrays (Whisper's mel filter bank)

``Runtime`` answers like ``emovox.Recognizer`` for the audio recognizers it covers: the same
``predict`` arguments, checks, errors and ``Prediction`` records (``emovox.inference.prediction``),
plus ``engine`` (``onnx`` or ``onnx-int8``). The encoder graph takes unpadded clips: clips of equal
length share one run, others run one by one, so padding never changes an answer.

Only JSON, safetensors and ONNX files are read, each checked against its sha256 first; a runtime
left over from another version of the recognizer's weights is refused, not run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emovox.atomic import file_problem
from emovox.audio import MIN_SECONDS, SAMPLE_RATE
from emovox.errors import RecognizerError
from emovox.inference.activity import SpeechCheck, has_speech
from emovox.inference.frontend import FrontEnd, frontend_from_dict
from emovox.inference.head import Head, probabilities
from emovox.inference.prediction import Prediction, decode_inputs, group_names, request, to_prediction, warn_ungrouped

RUNTIME_DIR = "runtime"
MANIFEST = "runtime.json"
ENCODER = "encoder.onnx"
ENCODER_INT8 = "encoder.int8.onnx"
HEAD = "head.safetensors"
FRONTEND = "frontend.safetensors"
#: Bump when a runtime's files change meaning; older emovox refuses newer runtimes by name.
FORMAT = 1
#: The engines a runtime offers (``torch`` is ``emovox.Recognizer``).
ENGINES = ("onnx", "onnx-int8")
#: Names of the encoder graph's input and output.
INPUT, OUTPUT = "input", "pooled"


def runtime_dir(model_dir: str | Path) -> Path:
    return Path(model_dir) / RUNTIME_DIR


def has_runtime(model_dir: str | Path) -> bool:
    """Whether the recognizer directory holds a runtime (``emovox export`` writes one)."""
    return (runtime_dir(model_dir) / MANIFEST).is_file()


def read_manifest(model_dir: str | Path) -> dict:
    """``runtime/runtime.json``, checked against the recognizer's ``emovox.json``."""
    model_dir = Path(model_dir)
    path = runtime_dir(model_dir) / MANIFEST
    meta_path = model_dir / "emovox.json"
    if not meta_path.is_file():
        raise RecognizerError(f"{model_dir}: not a recognizer directory (no emovox.json); train one with `emovox train`")
    if not path.is_file():
        raise RecognizerError(
            f"{model_dir}: holds no runtime ({RUNTIME_DIR}/{MANIFEST}); write one with `emovox export {model_dir}` "
            "(needs emovox[train]), or run it with --engine torch"
        )
    manifest, info = _json(path), _json(meta_path)
    if manifest.get("format") != FORMAT:
        raise RecognizerError(
            f"{path}: runtime format {manifest.get('format')!r}; this emovox reads format {FORMAT}: "
            f"export the recognizer again with this emovox (`emovox export {model_dir}`)"
        )
    recorded = info.get("files") or {}
    stale = sorted(rel for rel, digest in (manifest.get("source") or {}).items() if recorded.get(rel) != digest)
    if stale:
        raise RecognizerError(
            f"{path}: exported from other weights than this recognizer's ({', '.join(stale)} changed since); "
            f"export it again: `emovox export {model_dir}`"
        )
    if manifest.get("labels") != info.get("labels"):
        raise RecognizerError(f"{path}: its labels differ from {meta_path}'s; export the recognizer again")
    return manifest


class Runtime:
    """An exported recognizer run by onnxruntime + numpy (see the module docstring)."""

    fields = frozenset({"audio"})
    modality = "audio"
    needs_text = False
    needs_audio = True
    asr = None

    def __init__(self, directory: Path, manifest: dict, info: dict, session, frontend: FrontEnd, head: Head,
                 speech: SpeechCheck, engine: str):
        self.directory = directory
        self.manifest = manifest
        self.info = info
        self.session = session
        self.frontend = frontend
        self.head = head
        self.speech = speech
        self.engine = engine
        self.labels = tuple(manifest["labels"])
        self.layers = tuple(manifest["encoder"]["layers"])

    @classmethod
    def load(cls, model_dir: str | Path, *, int8: bool = False, threads: int | None = None) -> Runtime:
        """The runtime of ``model_dir``; ``int8``: its int8 encoder (``emovox export --int8``)."""
        model_dir = Path(model_dir)
        manifest = read_manifest(model_dir)
        runtime = cls.open(runtime_dir(model_dir), manifest, _json(model_dir / "emovox.json"), int8=int8, threads=threads)
        runtime.directory = model_dir
        return runtime

    @classmethod
    def open(cls, folder: Path, manifest: dict, info: dict, *, int8: bool = False, threads: int | None = None) -> Runtime:
        """The runtime in ``folder`` described by ``manifest`` (``load`` reads and checks both from a recognizer
        directory; the export opens its work folder this way to check it before it replaces anything)."""
        import onnxruntime as ort
        from safetensors.numpy import load_file

        if int8 and not manifest.get("int8"):
            model_dir = folder.parent
            raise RecognizerError(
                f"{folder}: has no int8 encoder; write one with `emovox export {model_dir} --int8`, or use --engine onnx"
            )
        encoder = manifest["int8"]["file"] if int8 else manifest["encoder"]["file"]
        for rel in sorted({encoder, manifest["head"]["file"], manifest["frontend"]["file"]}):
            _verify(folder, rel, manifest)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # idle worker threads sleep instead of spinning for the next run: on a machine shared with other work (the
        # service's own request threads, other processes) spinning burns about a third more CPU per prediction
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # onnxruntime's warnings about unused initializers are not the user's business
        try:
            session = ort.InferenceSession(str(folder / encoder), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for unreadable models
            raise RecognizerError(
                f"{folder / encoder}: onnxruntime cannot load it ({exc}); export the recognizer again"
            ) from None
        head = Head.from_arrays(load_file(str(folder / manifest["head"]["file"])), manifest["head"])
        frontend = frontend_from_dict(manifest["frontend"], load_file(str(folder / manifest["frontend"]["file"])))
        speech = SpeechCheck.from_dict(manifest.get("speech_check") or {})
        return cls(folder.parent, manifest, info, session, frontend, head, speech, "onnx-int8" if int8 else "onnx")

    # -- what it is ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.info.get("name") or self.manifest.get("recognizer") or "unnamed")

    @property
    def max_seconds(self) -> float:
        """Clips are cropped to this many seconds, as in training (long recordings: ``emovox timeline``)."""
        return float(self.manifest["max_seconds"])

    @property
    def min_samples(self) -> int:
        return int(round(MIN_SECONDS * SAMPLE_RATE))

    def describe(self) -> str:
        """One line for logs: engine, encoder file and the hidden states it computes."""
        enc = self.manifest["encoder"]
        file = self.manifest["int8"]["file"] if self.engine == "onnx-int8" else enc["file"]
        return (f"engine {self.engine}: {RUNTIME_DIR}/{file}, hidden states {min(self.layers)}-{max(self.layers)} of "
                f"0-{enc['hidden_states'] - 1} read, {enc['runs']}")

    # -- computation ---------------------------------------------------------------------------
    def inputs(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The encoder input of each clip (no batch axis)."""
        return [self.frontend(c) for c in clips]

    def encode(self, features: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """Pooled states ``[N, L, W]`` of prepared inputs; equal shapes share a run of up to ``batch_size``."""
        groups: dict[tuple, list[int]] = {}
        for i, f in enumerate(features):
            groups.setdefault(f.shape, []).append(i)
        out: np.ndarray | None = None
        for idx in groups.values():
            for start in range(0, len(idx), max(1, batch_size)):
                part = idx[start : start + max(1, batch_size)]
                batch = np.stack([features[i] for i in part]).astype(np.float32, copy=False)
                pooled = self.session.run([OUTPUT], {INPUT: batch})[0]
                if out is None:
                    out = np.zeros((len(features), *pooled.shape[1:]), dtype=np.float32)
                out[part] = pooled
        if out is None:
            return np.zeros((0, len(self.layers), 0), dtype=np.float32)
        return out

    def pooled(self, clips: Sequence[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """``[N, L, W]``: the pooled hidden states the head reads (``layers``), per clip."""
        return self.encode(self.inputs(clips), batch_size)

    @property
    def normalization(self) -> str:
        """``none``, or ``speaker`` / ``corpus``: clips are standardised with their speaker's (corpus's)
        statistics, taken from the clips given to ``predict`` together (``emovox.Recognizer.normalization``)."""
        return self.head.normalize

    def predict_proba(self, items: Sequence[np.ndarray], batch_size: int = 8, *, groups=None) -> np.ndarray:
        """Class probabilities ``[N, C]`` of 16 kHz float arrays (``groups``: each clip's speaker or corpus,
        for a recognizer that normalises per speaker or corpus)."""
        if not len(items):
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return probabilities(self.pooled(items, batch_size), self.head, groups)

    def predict(self, inputs=None, text=None, *, context=None, context_audio=None, speaker=None, corpus=None,
                batch_size: int = 8):
        """One clip (path or 16 kHz array) -> ``Prediction``; a list -> list of ``Prediction``, in input order
        (``emovox.Recognizer.predict``'s arguments; this recognizer reads audio only)."""
        req = request(inputs, text, context, context_audio, fields=set(self.fields), name=self.name)
        audio, sources = decode_inputs(req, needs_audio=True, needs_text=False)
        groups = None
        if self.normalization != "none":
            groups = group_names(speaker if self.normalization == "speaker" else corpus, len(audio), self.normalization)
            warn_ungrouped(self.normalization, groups, fallback=self.head.fallback is not None)
        probs = self.predict_proba(audio, batch_size, groups=groups)
        preds = [
            to_prediction(self.labels, p, s, None, has_speech(a, check=self.speech))
            for p, s, a in zip(probs, sources, audio, strict=True)
        ]
        return preds[0] if req.single else preds


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RecognizerError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RecognizerError(f"{path}: expected a JSON object")
    return data


def _verify(folder: Path, rel: str, manifest: dict) -> None:
    digest = (manifest.get("files") or {}).get(rel)
    path = folder / rel
    if digest is None or "/" in rel or rel.startswith("."):
        raise RecognizerError(f"{folder / MANIFEST}: lists no checksum for {rel!r}; export the recognizer again")
    problem = file_problem(path, digest)
    if problem == "missing":
        raise RecognizerError(f"{path}: missing; the runtime is incomplete (export the recognizer again)")
    if problem == "damaged":
        raise RecognizerError(
            f"{path}: damaged or modified (its sha256 differs from the one recorded when it was exported); "
            "export the recognizer again"
        )


__all__ = ["ENGINES", "Prediction", "Runtime", "has_runtime", "read_manifest", "runtime_dir"]
