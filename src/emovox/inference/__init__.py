"""Using a trained recognizer: the pipeline's application stage.

The torch side (the ``train`` extra):

- ``recognizer``: ``Recognizer``, a recognizer directory loaded with torch; ``predict`` on files or arrays;
- ``segments``: long recordings, streamed and segmented (vad or fixed), one prediction per segment;
- ``asr``: Whisper transcription for recognizers that read transcripts;
- ``export``: writes a recognizer's ``runtime/`` (ONNX encoder + numpy head), checked against torch.

The torch-free side, which ``predict``, ``timeline`` and ``serve`` prefer: a recognizer directory may hold a
``runtime/`` folder (written by ``emovox export``, and by ``emovox train`` for the audio recognizers it covers):
the backbone as an ONNX graph cut after the highest hidden state the head reads, with the pooling inside it,
plus the head as numpy arrays and a JSON record. These modules run it with numpy, soundfile, soxr and
onnxruntime only:

- ``prediction``: what a prediction is and how inputs are checked, shared with the torch ``Recognizer``;
- ``frontend``: Whisper's log-mel spectrogram and wav2vec2's waveform normalisation in numpy;
- ``head``: standardise, combine layers, classify, calibrate: one numpy function over pooled states;
- ``runtime``: ``Runtime``, the recognizer that runs all of it (engine ``onnx`` or ``onnx-int8``);
- ``activity``: ``has_speech``, the energy check that flags silence and steady noise.

None of those five (nor ``segments``) imports torch, transformers, scikit-learn or scipy: an import-linter
contract and a test in a fresh interpreter keep it so. This file imports nothing, so importing the runtime
never loads the torch side.
"""
