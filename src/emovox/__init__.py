"""emovox: speech emotion recognition from transcripts and audio.

The one obvious entry point for using a trained model is ``emovox.Recognizer`` (torch, the
``train`` extra), or ``emovox.Runtime`` for a recognizer's runtime (onnxruntime + numpy); the rest of
the package is organised along the path every experiment travels (see ARCHITECTURE in the
README): corpora -> splits -> data -> backbones/models -> training -> metrics/reporting.
"""

from emovox.version import __version__

__all__ = ["Recognizer", "Runtime", "load_corpus", "__version__"]


def __getattr__(name: str):
    # Lazy: importing emovox must not import torch/transformers (the CLI starts faster).
    if name == "Recognizer":
        from emovox.inference.recognizer import Recognizer

        return Recognizer
    if name == "Runtime":
        from emovox.inference.runtime import Runtime

        return Runtime
    if name == "load_corpus":
        from emovox.corpora import load_corpus

        return load_corpus
    raise AttributeError(f"module 'emovox' has no attribute {name!r}")
