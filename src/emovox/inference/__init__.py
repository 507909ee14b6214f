"""Using a trained recognizer without torch: the runtime that ``predict``, ``timeline`` and ``serve`` prefer.

A recognizer directory may hold a ``runtime/`` folder (written by ``emovox export``, and by
``emovox train`` for the audio recognizers it covers): the backbone as an ONNX graph cut after the
highest hidden state the head reads, with the pooling inside it, plus the head as numpy arrays and a
JSON record. This package runs it with numpy, soundfile, soxr and onnxruntime only:

- ``prediction``: what a prediction is and how inputs are checked, shared with the torch ``Recognizer``;
- ``frontend``: Whisper's log-mel spectrogram and wav2vec2's waveform normalisation in numpy;
- ``head``: standardise, combine layers, classify, calibrate: one numpy function over pooled states;
- ``runtime``: ``Runtime``, the recognizer that runs all of it (engine ``onnx`` or ``onnx-int8``).

Nothing here imports torch, transformers, scikit-learn or scipy (an import-linter contract and a
test in a fresh interpreter keep it so).
"""
