"""SpeechT5's speech encoder as a backbone: speech prenet per clip, shared encoder batched.

Imported only when a SpeechT5 backbone is built (transformers' speecht5 module is slow to import).
"""

from __future__ import annotations

import torch
from transformers.models.speecht5.modeling_speecht5 import (
    SpeechT5EncoderWithSpeechPrenet,
    SpeechT5PreTrainedModel,
)

from emovox.audio import SAMPLE_RATE
from emovox.backbones.audio import AudioBackbone, conv_min_samples, length_mask, pad_dim, stack_time_major
from emovox.backbones.base import Encoded
from emovox.backbones.registry import BackboneSpec


class SpeechT5SpeechEncoderOnly(SpeechT5PreTrainedModel):
    """SpeechT5's speech prenet + encoder; keys ``speecht5.encoder.*`` map onto ``encoder.*``."""

    def __init__(self, config):
        super().__init__(config)
        self.encoder = SpeechT5EncoderWithSpeechPrenet(config)
        self.post_init()


class SpeechT5Backbone(AudioBackbone):
    """SpeechT5's speech encoder (prenet per clip, then the shared encoder, batched)."""

    def __init__(self, spec: BackboneSpec, model, feature_extractor, *, max_tokens: int, max_seconds: float):
        config = model.config
        min_samples = conv_min_samples(1, config.conv_kernel, config.conv_stride)
        super().__init__(spec, model, feature_extractor, max_tokens=max_tokens, max_seconds=max_seconds,
                         hidden_size=config.hidden_size, num_layers=config.encoder_layers + 1,
                         min_samples=min_samples)

    def preprocess(self, items: list) -> dict[str, torch.Tensor]:
        values = [
            self.feature_extractor(audio=clip, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_values"][0]
            for clip in self._clips(items)
        ]
        input_values, mask = stack_time_major(values)
        return {"input_values": input_values, "attention_mask": mask}

    def forward(self, inputs: dict, all_layers: bool = False) -> Encoded:
        values, attention = inputs["input_values"], inputs["attention_mask"]
        encoder = self.model.encoder
        lengths = [int(n) for n in attention.sum(dim=-1)]
        states = [encoder.prenet(values[i : i + 1, :n])[0] for i, n in enumerate(lengths)]
        frames = torch.tensor([s.shape[1] for s in states], device=values.device)
        longest = int(frames.max())
        hidden = torch.cat([pad_dim(s, 1, longest) for s in states], dim=0)
        mask = length_mask(frames, longest)
        out = encoder.wrapped_encoder(hidden_states=hidden, attention_mask=mask.long(),
                                      output_hidden_states=all_layers, return_dict=True)
        hidden = torch.stack(tuple(out.hidden_states)) if all_layers else out.last_hidden_state
        return Encoded(hidden=hidden, mask=mask)

    def freeze_feature_encoder(self) -> None:
        self.model.encoder.prenet.freeze_feature_encoder()
