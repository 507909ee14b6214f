"""S2T (Speech2Text) encoder as a backbone: Kaldi-style fbank, per-clip convolutional subsampler.

Imported only when an S2T backbone is built: transformers' speech_to_text module is slow to
import and most runs never need it.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers.models.speech_to_text.modeling_speech_to_text import (
    Speech2TextEncoder,
    Speech2TextPreTrainedModel,
)

from emovox.audio import SAMPLE_RATE
from emovox.backbones.audio import AudioBackbone, PerClip, length_mask, stack_time_major, swapped
from emovox.backbones.base import Encoded
from emovox.backbones.registry import BackboneSpec


class Speech2TextEncoderOnly(Speech2TextPreTrainedModel):
    """The S2T encoder alone; checkpoint keys ``model.encoder.*`` map onto ``encoder.*``."""

    def __init__(self, config):
        super().__init__(config)
        self.encoder = Speech2TextEncoder(config)
        self.post_init()


class Speech2TextBackbone(AudioBackbone):
    """S2T encoder on 80-bin Kaldi-style fbank with utterance CMVN (numpy, no torchaudio)."""

    def __init__(self, spec: BackboneSpec, model, feature_extractor, *, max_tokens: int, max_seconds: float):
        config = model.config
        super().__init__(spec, model, feature_extractor, max_tokens=max_tokens, max_seconds=max_seconds,
                         hidden_size=config.d_model, num_layers=config.encoder_layers + 1,
                         min_samples=400)  # one 25 ms fbank window

    def preprocess(self, items: list) -> dict[str, torch.Tensor]:
        # The extractor's per-utterance normalisation divides each fbank bin by its standard deviation over the
        # clip, with no floor: a bin that is constant over the clip (a pure tone, digital silence in a band) gives
        # 0 / 0. Mean-subtracted, such a bin is 0, which is what it becomes here instead of NaN.
        extract = self.feature_extractor
        feats = [
            np.nan_to_num(
                extract(clip, sampling_rate=SAMPLE_RATE, padding="longest", return_tensors="np")["input_features"][0],
                nan=0.0, posinf=0.0, neginf=0.0,
            )
            for clip in self._clips(items)
        ]
        features, mask = stack_time_major(feats)
        return {"input_features": features, "attention_mask": mask}

    def forward(self, inputs: dict, all_layers: bool = False) -> Encoded:
        features, attention = inputs["input_features"], inputs["attention_mask"]
        encoder = self.model.encoder
        lengths = attention.sum(dim=-1)
        with swapped(encoder, "conv", PerClip(encoder.conv, lengths, 1, 1)):
            out = encoder(features, attention_mask=attention, output_hidden_states=all_layers)
        hidden = torch.stack(tuple(out.hidden_states)) if all_layers else out.last_hidden_state
        frames = encoder._get_feat_extract_output_lengths(lengths)
        return Encoded(hidden=hidden, mask=length_mask(frames, hidden.shape[-2]))
