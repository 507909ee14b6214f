"""emovox's version, in a module of its own so that any layer can record it without importing the root package
(whose lazy ``Recognizer`` and ``Runtime`` sit above most of the tree)."""

__version__ = "0.1.0"
