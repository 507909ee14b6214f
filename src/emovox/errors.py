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
