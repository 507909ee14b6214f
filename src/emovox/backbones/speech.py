"""Build the speech backbone of any family: which model and wrapper classes, which feature extractor.

Kept apart from ``emovox.backbones.audio`` so that the import graph stays a tree: the family
modules (``whisper``, ``s2t``, ``speecht5``) build on ``audio``'s ``AudioBackbone`` and helpers,
and only this module knows all of them. Those three are imported only when their family is built
(transformers' speech_to_text and speecht5 modules are slow to import and most runs need neither).
"""

from __future__ import annotations

from typing import Any

from emovox.audio import SAMPLE_RATE
from emovox.backbones.audio import SSL_MODEL_CLASSES, AudioBackbone, SSLBackbone
from emovox.backbones.base import describe, from_pretrained_checked
from emovox.backbones.registry import BackboneSpec
from emovox.backbones.tiny import build_seeded, tiny_audio_config, tiny_feature_extractor
from emovox.errors import BackboneError


def _load_feature_extractor(spec: BackboneSpec, config) -> Any:
    from transformers import AutoFeatureExtractor, Wav2Vec2FeatureExtractor

    try:
        return AutoFeatureExtractor.from_pretrained(spec.hub_id)
    except Exception as exc:  # missing file, offline, unknown extractor type: all resolved below
        if spec.family in SSL_MODEL_CLASSES:
            # Some pretraining-only checkpoints ship no preprocessor config. fairseq normalises
            # the waveform exactly for the layer-norm ("large") models, not the group-norm ones.
            return Wav2Vec2FeatureExtractor(
                feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                do_normalize=config.feat_extract_norm == "layer", return_attention_mask=True,
            )
        raise BackboneError(
            f"could not load the feature extractor of '{spec.name}' from '{spec.hub_id}' "
            f"({describe(exc)}); offline? download the model once and pass its local directory"
        ) from None


def build_audio_backbone(spec: BackboneSpec, *, tiny: bool, max_tokens: int, max_seconds: float,
                         seed: int) -> AudioBackbone:
    import transformers

    family = spec.family
    if family == "whisper":
        from emovox.backbones.whisper import WhisperBackbone, WhisperEncoderOnly

        model_cls, backbone_cls = WhisperEncoderOnly, WhisperBackbone
    elif family == "speech_to_text":
        from emovox.backbones.s2t import Speech2TextBackbone, Speech2TextEncoderOnly

        model_cls, backbone_cls = Speech2TextEncoderOnly, Speech2TextBackbone
    elif family == "speecht5":
        from emovox.backbones.speecht5 import SpeechT5Backbone, SpeechT5SpeechEncoderOnly

        model_cls, backbone_cls = SpeechT5SpeechEncoderOnly, SpeechT5Backbone
    elif family in SSL_MODEL_CLASSES:
        model_cls, backbone_cls = getattr(transformers, SSL_MODEL_CLASSES[family]), SSLBackbone
    else:
        raise BackboneError(f"'{family}' is not an audio backbone family")
    if tiny:
        config = tiny_audio_config(spec)
        model = build_seeded(model_cls, config, seed)
        feature_extractor = tiny_feature_extractor(spec, config)
    else:
        model = from_pretrained_checked(model_cls, spec)
        feature_extractor = _load_feature_extractor(spec, model.config)
    return backbone_cls(spec, model, feature_extractor, max_tokens=max_tokens, max_seconds=max_seconds)
