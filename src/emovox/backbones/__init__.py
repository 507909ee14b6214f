"""Backbones: one uniform wrapper around every pretrained text and speech model emovox uses.

A backbone turns a batch of raw items (16 kHz clips, texts, or (previous utterance, text)
pairs) into frame/token states plus a mask of which positions are real. Everything above it
(pooling, heads, fusion, the feature cache) sees only ``Encoded`` and never needs to know which
architecture produced it. Each batch is padded only to its own longest item, and the padding
never changes a real item's states: a padded batch gives what the items give one by one.

``loader.load_backbone`` builds one from a registry name, a hub id, or a local directory (an HF model
directory or one written by ``Backbone.save``); ``tiny=True`` builds a small random model of
the same class with an offline tokenizer/feature extractor, for tests and smoke runs.

One job a module: ``registry`` (names -> specs), ``base`` (``Backbone``, ``Encoded``), ``loader`` (``load_backbone``,
checked ``from_pretrained``), the families' builders (``text``, ``audio``, ``speech``, ``whisper``, ``s2t``,
``speecht5``, ``smile``, ``llm``), ``tiny`` (small random builds), ``architectures`` (stored configs for offline
profiling) and ``gguf`` (conversion). This file imports nothing: importing the registry loads no torch.
"""
