"""Which engine runs a recognizer for ``predict``, ``timeline`` and ``serve``: its runtime, or torch.

``auto`` (the default) takes the recognizer's runtime when it has one (``MODEL_DIR/runtime``, written
by ``emovox train`` or ``emovox export``): onnxruntime and numpy, no torch imported, the same answers.
Otherwise, or with ``--engine torch``, the recognizer is rebuilt in torch (``emovox[train]``).
``onnx-int8`` runs the runtime's int8 encoder (``emovox export --int8``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from emovox.errors import EmovoxError, MissingExtraError, missing_extra

ENGINES = ("auto", "torch", "onnx", "onnx-int8")
NO_ASR = "--asr-language needs an ASR model: pass --asr WHISPER_DIR_OR_HUB_ID"
ENGINE_HELP = (
    "auto: the recognizer's runtime (ONNX, no torch) when it has one, else torch; torch; onnx; "
    "onnx-int8 (the runtime's int8 encoder, `emovox export --int8`)."
)
ENGINE_OPTION = typer.Option("auto", "--engine", metavar="|".join(ENGINES), help=ENGINE_HELP)
ASR_HELP = "Whisper model (local directory or hub id) that transcribes audio for recognizers reading transcripts."
ASR_LANG_HELP = "Language the ASR transcribes (code or name, e.g. de); default: the recognizer's, else detected."


def open_recognizer(model_dir: Path, engine: str = "auto", *, asr: str | None = None, asr_language: str | None = None,
                    threads: int | None = None):
    """A ``Runtime`` or a torch ``Recognizer`` for ``model_dir``, as ``engine`` asks (see the module docstring)."""
    from emovox.inference.runtime import has_runtime

    if engine not in ENGINES:
        raise EmovoxError(f"--engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "auto":
        engine = "onnx" if has_runtime(model_dir) else "torch"
        if engine == "torch" and not _torch_installed():
            raise MissingExtraError(
                f"{model_dir} has no runtime (runtime/), and running it with torch needs the train extra: "
                f"pip install 'emovox[train]' (then `emovox export {model_dir}` writes a runtime)"
            )
    if engine != "torch":
        from emovox.inference.runtime import Runtime

        runtime = Runtime.load(model_dir, int8=engine == "onnx-int8", threads=threads)
        if asr is None and asr_language is not None and not runtime.info.get("asr"):
            raise EmovoxError(NO_ASR)
        return runtime  # it reads audio only: an ASR model would transcribe for nothing
    try:
        return _torch_recognizer(model_dir, asr, asr_language, threads)
    except ModuleNotFoundError as exc:
        error = missing_extra(exc, "--engine torch")
        if error is None:
            raise
        raise error from None


def _torch_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def _torch_recognizer(model_dir: Path, asr: str | None, asr_language: str | None, threads: int | None):
    import torch

    from emovox.inference.asr import AsrConfig
    from emovox.inference.recognizer import Recognizer

    if threads is not None:
        torch.set_num_threads(threads)
    rec = Recognizer.load(model_dir)
    if asr is not None or asr_language is not None:
        base = rec.asr
        model = asr or (base.model if base is not None else None)
        if model is None:
            raise EmovoxError(NO_ASR)
        rec.asr = AsrConfig(model, asr_language if asr_language is not None else (base.language if base else None))
    return rec
