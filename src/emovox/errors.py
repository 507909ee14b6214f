"""Errors a user can cause.

Every problem that comes from the user's data, configuration or command line is raised as an
``EmovoxError`` subclass whose message names the file (or key) and says what to do. The CLI
prints these as one readable line instead of a traceback; anything else is a bug in emovox.
"""

from __future__ import annotations


class EmovoxError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class AudioError(EmovoxError):
    """An audio file is missing, unreadable, empty, corrupt or holds non-finite samples."""


class TooShortError(AudioError):
    """A clip holds less audio than ``emovox.audio.MIN_SECONDS``."""


class CorpusError(EmovoxError):
    """A corpus on disk does not match the layout its reader expects."""


class SplitError(EmovoxError):
    """A protocol cannot be applied to a corpus (too few speakers, leakage, bad spec)."""


class ConfigError(EmovoxError):
    """A configuration file or ``--set`` override is invalid."""


class BackboneError(EmovoxError):
    """A backbone name, hub id or local directory cannot be resolved or loaded."""


class RecognizerError(EmovoxError):
    """A recognizer directory is missing, incomplete, of an unknown schema or inconsistent."""


class LLMError(EmovoxError):
    """An LLM set-up is unusable: GGUF file, prompt template, label words or answer parsing."""


class EmovoxWarning(UserWarning):
    """Something worth a user's attention that does not stop the work (shown once on stderr by the CLI)."""


class MissingExtraError(EmovoxError):
    """What was asked for needs packages of an optional extra (``emovox[train]``: torch, transformers, ...)."""


#: Top-level modules of the ``train`` extra, which a plain ``pip install emovox`` (the runtime) lacks.
TRAIN_MODULES = frozenset({
    "torch", "transformers", "peft", "accelerate", "sklearn", "scipy", "matplotlib", "onnx", "tokenizers",
    "sentencepiece", "yaml",
})


def missing_extra(exc: ModuleNotFoundError, what: str = "this") -> MissingExtraError | None:
    """The ``MissingExtraError`` for a module of the ``train`` extra that could not be imported, else None."""
    name = (exc.name or "").split(".")[0]
    if name not in TRAIN_MODULES:
        return None
    return MissingExtraError(
        f"{what} needs {name}, which comes with the train extra (torch, transformers, scikit-learn, ...): "
        "pip install 'emovox[train]'"
    )


class UngroupedWarning(EmovoxWarning):
    """A recognizer that normalises per speaker (corpus) classified clips without their group's statistics.

    Services and timelines classify one clip (segment) at a time by design: they filter this class and
    say it once instead."""
